// The model's RGB output -> one YUV plane (ops/color.rs, CPU twin video::color::rgb_to_frame).
// Input channels-last [H, W, 3] in [−1, 1], clamped and mapped to [0, 1] as the pipeline does.
// One invocation per sample of the plane written: the plane's code value is an affine function
// of RGB (offset + c·rgb, matrix and range folded in); a subsampled chroma axis (f luma samples
// per chroma sample, 2 or 4) averages with video::color::downsample_chroma's taps (centred: the
// box of its f luma samples; co-sited: the triangle of 2f − 1 around the first, [1 2 1]/4 or
// [1 2 3 4 3 2 1]/16; edges clamped), rows first, in the same order; then rounded half away from
// zero and clamped to 0..2^depth − 1. Luma is the same kernel with neither axis subsampled.

struct Params {
    w: u32,
    h: u32,
    pw: u32,        // size of the plane written
    ph: u32,
    sub_x: u32,
    sub_y: u32,
    co_x: u32,
    co_y: u32,
    off: f32,
    cr: f32,
    cg: f32,
    cb: f32,
    max_code: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rgb: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn code(x: u32, y: u32) -> f32 {
    let i = 3u * (y * p.w + x);
    let r = clamp(f32(rgb[i]), -1.0, 1.0) * 0.5 + 0.5;
    let g = clamp(f32(rgb[i + 1u]), -1.0, 1.0) * 0.5 + 0.5;
    let b = clamp(f32(rgb[i + 2u]), -1.0, 1.0) * 0.5 + 0.5;
    return p.off + (p.cr * r + p.cg * g + p.cb * b);
}

// 1/f for the subsampling factors (2 or 4), as constants: exact, where a WGSL division may be
// off by 2.5 ULP.
fn inv(f: u32) -> f32 {
    return select(0.5, 0.25, f == 4u);
}

// The number of taps of a subsampled axis: f centred, 2f − 1 co-sited.
fn tap_count(f: u32, co: u32) -> u32 {
    return select(f, 2u * f - 1u, co != 0u);
}

// Luma index of tap t of output sample k along an axis of n luma samples, f per chroma sample,
// with its weight.
fn tap_at(k: u32, t: u32, n: u32, f: u32, co: u32) -> vec2<f32> {
    let c = i32(f * k);
    var i: i32;
    var wt: f32;
    if (co != 0u) {
        let d = i32(t) - i32(f - 1u);
        i = c + d;
        wt = f32(i32(f) - abs(d)) * (inv(f) * inv(f));
    } else {
        i = c + i32(t);
        wt = inv(f);
    }
    return vec2<f32>(f32(clamp(i, 0, i32(n) - 1)), wt);
}

fn row(kx: u32, y: u32) -> f32 {
    if (p.sub_x == 1u) {
        return code(kx, y);
    }
    let taps = tap_count(p.sub_x, p.co_x);
    var s = 0.0;
    for (var t = 0u; t < taps; t++) {
        let a = tap_at(kx, t, p.w, p.sub_x, p.co_x);
        s += a.y * code(u32(a.x), y);
    }
    return s;
}

fn round_away(v: f32) -> f32 {
    let t = trunc(v);
    if (abs(v - t) >= 0.5) {
        return t + sign(v);
    }
    return t;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.pw * p.ph) {
        return;
    }
    let kx = i % p.pw;
    let ky = i / p.pw;
    var v: f32;
    if (p.sub_y == 1u) {
        v = row(kx, ky);
    } else {
        let taps = tap_count(p.sub_y, p.co_y);
        v = 0.0;
        for (var t = 0u; t < taps; t++) {
            let a = tap_at(ky, t, p.h, p.sub_y, p.co_y);
            v += a.y * row(kx, u32(a.x));
        }
    }
    out[i] = u32(clamp(round_away(v), 0.0, p.max_code));
}
