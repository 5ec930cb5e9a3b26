// Temporal attention: for every (batch, pixel, head), attention over the NF frames of a
// channels-last video [B, NF, H, W, heads·DH], with RoPE on the first 32 channels of each head
// of q and k (position = frame index) and an additive bias[head, i, j] (T5 relative positions).
//
// One thread per (batch, pixel, head, query frame i); the NF ≤ 16 scores stay in registers. The
// frames are the fastest-varying thread index, so the NF threads reading the same key row sit in
// one subgroup and share each load. Constants: DH (head width, multiple of 4), NF, ROPE.
//
// q, k and v may be one stacked projection [B, NF, H, W, 3·C] bound three times: rows of ld4
// vectors, k and v at koff4, voff4 within a row (separate tensors: ld4 = C/4, offsets 0).

struct Params {
    n: u32,        // threads: B·H·W·heads·NF
    hw: u32,
    heads: u32,
    c4: u32,       // channels / 4
    scale: f32,    // dh^-1/2, applied to q
    ld4: u32,      // input row stride, vec4s
    koff4: u32,    // k's and v's offsets within an input row, vec4s
    voff4: u32,
    // (cos θ, sin θ) of channel pairs 4c, 4c+1 and 4c+2, 4c+3 at position f: rope[f·8 + c].
    rope: array<vec4<f32>, 128>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<T>>;
@group(0) @binding(4) var<storage, read> bias: array<T>;
@group(0) @binding(5) var<storage, read_write> o: array<vec4<T>>;

const DH4: u32 = DH / 4u;

// The NF scores of each thread, sc[j·256 + lid]: workgroup memory rather than a private array,
// which NVIDIA's compiler puts in (slow) local memory when indexed by a loop variable (measured:
// time independent of the storage dtype, so not memory-bound). At most 16 KiB.
var<workgroup> sc: array<f32, NF * 256u>;

// Rotates the interleaved pairs (x0, x1), (x2, x3) by the angles whose cos/sin are in cs.
fn rotate(x: vec4<f32>, cs: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(x.x * cs.x - x.y * cs.y, x.y * cs.x + x.x * cs.y,
                     x.z * cs.z - x.w * cs.w, x.w * cs.z + x.z * cs.w);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = wg_index(wid, nwg) * 256u + lid;
    if (t >= p.n) {
        return;
    }
    let i = t % NF;
    let rest = t / NF;
    let head = rest % p.heads;
    let pos = rest / p.heads;
    let b = pos / p.hw;
    let px = pos % p.hw;
    // Input row of frame f, in vec4 units: ((b·NF + f)·HW + px)·ld4 + head·DH/4; the output's
    // the same with C/4.
    let base = (b * NF * p.hw + px) * p.ld4 + head * DH4;
    let fstride = p.hw * p.ld4;
    let qrow = base + i * fstride;
    let kbase = base + p.koff4;
    let vbase = base + p.voff4;
    let orow = ((b * NF + i) * p.hw + px) * p.c4 + head * DH4;

    for (var j = 0u; j < NF; j++) {
        sc[j * 256u + lid] = 0.0;
    }
    for (var d4 = 0u; d4 < DH4; d4++) {
        var qv = vec4<f32>(q[qrow + d4]) * p.scale;
        let rot = ROPE && d4 < 8u;
        if (rot) {
            qv = rotate(qv, p.rope[i * 8u + d4]);
        }
        for (var j = 0u; j < NF; j++) {
            var kv = vec4<f32>(k[kbase + j * fstride + d4]);
            if (rot) {
                kv = rotate(kv, p.rope[j * 8u + d4]);
            }
            sc[j * 256u + lid] += dot(qv, kv);
        }
    }
    let bb = (head * NF + i) * NF;
    var mx = -3.0e38;
    for (var j = 0u; j < NF; j++) {
        let x = sc[j * 256u + lid] + f32(bias[bb + j]);
        sc[j * 256u + lid] = x;
        mx = max(mx, x);
    }
    var sum = 0.0;
    for (var j = 0u; j < NF; j++) {
        let e = exp(sc[j * 256u + lid] - mx);
        sc[j * 256u + lid] = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var d4 = 0u; d4 < DH4; d4++) {
        var acc = vec4<f32>(0.0);
        for (var j = 0u; j < NF; j++) {
            acc += sc[j * 256u + lid] * vec4<f32>(v[vbase + j * fstride + d4]);
        }
        o[orow + d4] = vec4<T>(acc * inv);
    }
}
