// Elementwise kernels. Layout-agnostic: they see flat arrays, V elements per invocation (4 where
// every operand's length and the broadcast's inner size divide by 4, else 1). The prefix (see
// ops/elementwise.rs) defines VT (storage vector), VF (f32 vector), V and gelu_v.
// Entry `main` is specialised by the const OP:
//   0 add (a, b -> out), b broadcast as a viewed [outer, rep, inner], b viewed [outer, 1, inner]
//   unary ops (a -> out): 11 silu, 12 gelu (erf)
//   14 mix: out = sigmoid(alpha) * a + (1 - sigmoid(alpha)) * b   (same shapes), `alpha` a
//     scalar parameter or a per-step value

struct Params {
    n: u32,       // output vectors (elements / V)
    inner: u32,   // in elements
    rep: u32,
    alpha: f32,
    alpha_slot: u32,  // index of alpha in `step_values`, or 0xFFFFFFFF to use `alpha` itself
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<VT>;
// Unary ops bind `a` again as `b` (unused) so every variant has the same layout.
@group(0) @binding(2) var<storage, read> b: array<VT>;
@group(0) @binding(3) var<storage, read_write> out: array<VT>;
// Per-step values (see src/step_values.rs); bound to `a` when alpha is a constant.
@group(0) @binding(4) var<storage, read> step_values: array<f32>;

fn alpha() -> f32 {
    if (p.alpha_slot == 0xFFFFFFFFu) {
        return p.alpha;
    }
    return step_values[p.alpha_slot];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    var r: VF;
    let x = VF(a[i]);
    if (OP == 0u) {
        // The broadcast index of element V·i; V divides inner, so its V elements are contiguous.
        let e = i * V;
        let y = VF(b[((e / (p.inner * p.rep)) * p.inner + e % p.inner) / V]);
        r = x + y;
    } else if (OP == 14u) {
        let s = 1.0 / (1.0 + exp(-alpha()));
        r = s * x + (1.0 - s) * VF(b[i]);
    } else if (OP == 11u) {
        r = x / (VF(1.0) + exp(-x));
    } else {
        r = gelu_v(x);
    }
    out[i] = VT(r);
}
