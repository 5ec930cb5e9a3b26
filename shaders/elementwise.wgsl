// Elementwise kernels. Layout-agnostic: they see flat arrays.
// Entry `main` is specialised by the const OP (see ops/elementwise.rs):
//   binary ops (a, b -> out), b broadcast as a viewed [outer, rep, inner], b viewed [outer, 1, inner]:
//     0 add, 1 mul, 2 sub
//   unary ops (a -> out), `alpha` a scalar parameter or a per-step value:
//     10 scale (alpha * x), 11 silu, 12 gelu (erf)
//   14 mix: out = sigmoid(alpha) * a + (1 - sigmoid(alpha)) * b   (same shapes)

struct Params {
    n: u32,       // output elements
    inner: u32,
    rep: u32,
    alpha: f32,
    alpha_slot: u32,  // index of alpha in `step_values`, or 0xFFFFFFFF to use `alpha` itself
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
// Unary ops bind `a` again as `b` (unused) so every variant has the same layout.
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
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
    var r: f32;
    if (OP < 10u) {
        let bi = (i / (p.inner * p.rep)) * p.inner + i % p.inner;
        let x = f32(a[i]);
        let y = f32(b[bi]);
        if (OP == 0u) { r = x + y; } else if (OP == 1u) { r = x * y; } else { r = x - y; }
    } else if (OP == 14u) {
        let s = 1.0 / (1.0 + exp(-alpha()));
        r = s * f32(a[i]) + (1.0 - s) * f32(b[i]);
    } else {
        let x = f32(a[i]);
        if (OP == 10u) { r = alpha() * x; } else if (OP == 11u) { r = silu_f32(x); } else { r = gelu_f32(x); }
    }
    out[i] = T(r);
}
