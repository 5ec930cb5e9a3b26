
// Q loader of attention_coop.wgsl for f32 storage (`--f16-operands`): a cooperative load cannot
// convert, so the tile's BQ rows are staged as f16, DC channels at a time, in `kv` after the K
// chunk (the host sizes `kv` for both; V, staged later, reuses the room).

const QST: u32 = DC + 8u;
const QOFF: u32 = BK * KST;

// Rows of the query tile (its first element at `qtile`), channels d0 .. d0+DC of the head → kv.
fn stage_q(qtile: u32, d0: u32, lid: u32) {
    for (var e = lid; e < BQ * DC / 4u; e += NI) {
        let r = e / (DC / 4u);
        let c = (e % (DC / 4u)) * 4u;
        let i = qtile + r * LDQ + d0 + c;
        put4(QOFF + r * QST + c, vec4<f16>(vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u])));
    }
}

// The Q fragment of this subgroup's strip, channels dd.. of the staged chunk.
fn q_frag(qrow: u32, strip: u32, d: u32, dd: u32) -> FA {
    return coopLoadT<FA>(&kv[(QOFF + strip * FS * QST + dd) / 4u], QST / 4u);
}
