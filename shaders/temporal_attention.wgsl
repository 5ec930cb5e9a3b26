// Temporal attention: for every (batch, pixel, head), attention over the NF frames of a
// channels-last video [B, NF, H, W, heads·DH], with RoPE on the first 32 channels of each head
// of q and k (position = frame index) and an additive bias[head, i, j] (T5 relative positions).
//
// One thread per (batch, pixel, head, query frame i); its NF ≤ 16 scores stay in registers. The
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

// Frames go four at a time in named vec4 variables (frames 4g..4g+3 in group g < 4): a private
// array indexed by a loop variable lands in NVIDIA's local memory (slow; measured), and the
// workgroup-memory scores used before cost a read-modify-write per product. Frames past NF
// read the last frame and are masked out of the softmax.
const NEG: f32 = -3.0e38;

// Rotates the interleaved pairs (x0, x1), (x2, x3) by the angles whose cos/sin are in cs.
fn rotate(x: vec4<f32>, cs: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(x.x * cs.x - x.y * cs.y, x.y * cs.x + x.x * cs.y,
                     x.z * cs.z - x.w * cs.w, x.w * cs.z + x.z * cs.w);
}

// Channels 4·d4.. of frame j's key (RoPE-rotated where it applies).
fn key4(kbase: u32, fstride: u32, j: u32, d4: u32) -> vec4<f32> {
    let jj = min(j, NF - 1u);
    var kv = vec4<f32>(k[kbase + jj * fstride + d4]);
    if (ROPE && d4 < 8u) {
        kv = rotate(kv, p.rope[jj * 8u + d4]);
    }
    return kv;
}

// q · key of frames j0 .. j0+3 over channels 4·d4...
fn dots(qv: vec4<f32>, kbase: u32, fstride: u32, j0: u32, d4: u32) -> vec4<f32> {
    return vec4<f32>(dot(qv, key4(kbase, fstride, j0, d4)), dot(qv, key4(kbase, fstride, j0 + 1u, d4)),
                     dot(qv, key4(kbase, fstride, j0 + 2u, d4)), dot(qv, key4(kbase, fstride, j0 + 3u, d4)));
}

// Scores of frames j0 .. j0+3 with their biases (row `bb` of the bias), frames past NF masked.
fn logits(s: vec4<f32>, j0: u32, bb: u32) -> vec4<f32> {
    let j = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    let last = vec4<u32>(NF - 1u);
    let jj = min(j, last);
    let b = vec4<f32>(f32(bias[bb + jj.x]), f32(bias[bb + jj.y]), f32(bias[bb + jj.z]), f32(bias[bb + jj.w]));
    return select(vec4<f32>(NEG), s + b, j <= last);
}

// Σ over frames j0 .. j0+3 of w_j · v_j at channels 4·d4.. (masked frames have w = 0).
fn weigh(w: vec4<f32>, vbase: u32, fstride: u32, j0: u32, d4: u32) -> vec4<f32> {
    let last = NF - 1u;
    return w.x * vec4<f32>(v[vbase + min(j0, last) * fstride + d4])
        + w.y * vec4<f32>(v[vbase + min(j0 + 1u, last) * fstride + d4])
        + w.z * vec4<f32>(v[vbase + min(j0 + 2u, last) * fstride + d4])
        + w.w * vec4<f32>(v[vbase + min(j0 + 3u, last) * fstride + d4]);
}

fn max4(w: vec4<f32>) -> f32 {
    return max(max(w.x, w.y), max(w.z, w.w));
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

    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var d4 = 0u; d4 < DH4; d4++) {
        var qv = vec4<f32>(q[qrow + d4]) * p.scale;
        if (ROPE && d4 < 8u) {
            qv = rotate(qv, p.rope[i * 8u + d4]);
        }
        s0 += dots(qv, kbase, fstride, 0u, d4);
        if (NF > 4u) {
            s1 += dots(qv, kbase, fstride, 4u, d4);
        }
        if (NF > 8u) {
            s2 += dots(qv, kbase, fstride, 8u, d4);
        }
        if (NF > 12u) {
            s3 += dots(qv, kbase, fstride, 12u, d4);
        }
    }
    let bb = (head * NF + i) * NF;
    s0 = logits(s0, 0u, bb);
    s1 = logits(s1, 4u, bb);
    s2 = logits(s2, 8u, bb);
    s3 = logits(s3, 12u, bb);
    let mx = max(max(max4(s0), max4(s1)), max(max4(s2), max4(s3)));
    let e0 = exp(s0 - mx);
    let e1 = exp(s1 - mx);
    let e2 = exp(s2 - mx);
    let e3 = exp(s3 - mx);
    let one = vec4<f32>(1.0);
    let inv = 1.0 / (dot(e0, one) + dot(e1, one) + dot(e2, one) + dot(e3, one));
    for (var d4 = 0u; d4 < DH4; d4++) {
        var acc = weigh(e0, vbase, fstride, 0u, d4);
        if (NF > 4u) {
            acc += weigh(e1, vbase, fstride, 4u, d4);
        }
        if (NF > 8u) {
            acc += weigh(e2, vbase, fstride, 8u, d4);
        }
        if (NF > 12u) {
            acc += weigh(e3, vbase, fstride, 12u, d4);
        }
        o[orow + d4] = vec4<T>(acc * inv);
    }
}
