
// Q loader of attention_coop.wgsl for f16 storage: fragments straight from memory.

fn stage_q(qtile: u32, d0: u32, lid: u32) {}

// The Q fragment of rows qrow.. (this subgroup's strip), channels d.. of the head.
fn q_frag(qrow: u32, strip: u32, d: u32, dd: u32) -> FA {
    return coopLoadT<FA>(&q[qrow + d], LDQ);
}
