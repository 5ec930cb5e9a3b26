// Sampling-loop kernels (see src/ops/sampler.rs). Flat and layout-agnostic; arithmetic in f32
// whatever the storage types: X for `x`, Y for `y`, T for `out` (the job keeps its latents in
// f32 while an f16 UNet writes `y`). Entry `main` is specialised by the const OP:
//   0 axpby:  out[i] = A·x[i] + B·y[i]
//             (the DDIM step with y = v; the low-res noise augmentation with y = noise)
//   1 guided: out[i] = A·x[i] + B·(u + G·(c − u)), u = y[i], c = y[n + i]
//             (CFG fused into the DDIM step; y = [negative; positive])
//   2 blend:  out[i] = wp·x[i] + wn·y[i], per frame f = i / frame:
//             (wp, wn) = (w[f], 1 − w[f]) or, when WPAIR, (w[2f], w[2f + 1])
// A, B and G are each a constant parameter or a per-step value (slot in `step_values`).

struct Params {
    n: u32,       // output elements
    frame: u32,   // elements per frame (blend)
    a: f32,
    a_slot: u32,  // index of A in `step_values`, or 0xFFFFFFFF to use `a` itself
    b: f32,
    b_slot: u32,
    g: f32,
    g_slot: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<X>;
@group(0) @binding(2) var<storage, read> y: array<Y>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
// Per-step values (src/step_values.rs); bound to `x` when every scalar is a constant.
@group(0) @binding(4) var<storage, read> step_values: array<f32>;
// Blend weights; bound to `x` by the other ops.
@group(0) @binding(5) var<storage, read> weights: array<f32>;

fn scalar(v: f32, slot: u32) -> f32 {
    if (slot == 0xFFFFFFFFu) {
        return v;
    }
    return step_values[slot];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    var r: f32;
    if (OP == 0u) {
        r = scalar(p.a, p.a_slot) * f32(x[i]) + scalar(p.b, p.b_slot) * f32(y[i]);
    } else if (OP == 1u) {
        let u = f32(y[i]);
        let c = f32(y[p.n + i]);
        let v = u + scalar(p.g, p.g_slot) * (c - u);
        r = scalar(p.a, p.a_slot) * f32(x[i]) + scalar(p.b, p.b_slot) * v;
    } else {
        let f = i / p.frame;
        var wp: f32;
        var wn: f32;
        if (WPAIR) {
            wp = weights[2u * f];
            wn = weights[2u * f + 1u];
        } else {
            wp = weights[f];
            wn = 1.0 - wp;
        }
        r = wp * f32(x[i]) + wn * f32(y[i]);
    }
    out[i] = T(r);
}
