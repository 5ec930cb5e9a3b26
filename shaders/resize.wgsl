// Spatial resize of channels-last [N, H, W, C] -> [N, Ho, Wo, C] (ops/resize.rs).
// The Rust side prepends `alias V` / `alias VF` / `const VW`: V is T or vec4<T> so each thread
// moves VW channels with one load (C % 4 == 0 uses vec4); VF is the f32 twin used for blending.
// MODE 0: PyTorch legacy `nearest`: src = min(floor(dst * scale), in - 1), scale = in / out
//         computed in f32 on the host (WGSL division is not correctly rounded; multiplication is).
// MODE 1: bilinear, align_corners = false, antialias off, as PyTorch's upsample_bilinear2d:
//         src = max(scale * (dst + 0.5) - 0.5, 0); i0 = min(floor(src), in - 1);
//         i1 = i0 + (i0 < in - 1); l1 = clamp(src - i0, 0, 1); l0 = 1 - l1; equal sizes copy.

struct Params {
    n: u32,        // output vectors: N * Ho * Wo * cv
    cv: u32,       // C / VW
    hi: u32,
    wi: u32,
    ho: u32,
    wo: u32,
    scale_h: f32,  // hi / ho in f32
    scale_w: f32,  // wi / wo in f32
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> dst: array<V>;

// One source coordinate of the bilinear filter: (i0, i1, l0, l1).
struct Lin {
    i0: u32,
    i1: u32,
    l0: f32,
    l1: f32,
}

fn linear_coord(d: u32, n_in: u32, n_out: u32, scale: f32) -> Lin {
    if (n_in == n_out) {
        return Lin(d, d, 1.0, 0.0);
    }
    let s = max(scale * (f32(d) + 0.5) - 0.5, 0.0);
    let i0 = min(u32(floor(s)), n_in - 1u);
    let i1 = i0 + select(0u, 1u, i0 < n_in - 1u);
    let l1 = clamp(s - f32(i0), 0.0, 1.0);
    return Lin(i0, i1, 1.0 - l1, l1);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let c = i % p.cv;
    let pix = i / p.cv;
    let xo = pix % p.wo;
    let rest = pix / p.wo;
    let yo = rest % p.ho;
    let img = rest / p.ho;
    let base = img * p.hi;
    if (MODE == 0u) {
        let ys = min(u32(floor(f32(yo) * p.scale_h)), p.hi - 1u);
        let xs = min(u32(floor(f32(xo) * p.scale_w)), p.wi - 1u);
        dst[i] = src[((base + ys) * p.wi + xs) * p.cv + c];
    } else {
        let ly = linear_coord(yo, p.hi, p.ho, p.scale_h);
        let lx = linear_coord(xo, p.wi, p.wo, p.scale_w);
        let r0 = (base + ly.i0) * p.wi;
        let r1 = (base + ly.i1) * p.wi;
        let x00 = VF(src[(r0 + lx.i0) * p.cv + c]);
        let x01 = VF(src[(r0 + lx.i1) * p.cv + c]);
        let x10 = VF(src[(r1 + lx.i0) * p.cv + c]);
        let x11 = VF(src[(r1 + lx.i1) * p.cv + c]);
        // Same association as PyTorch's kernel, so rounding matches closely.
        let r = ly.l0 * (lx.l0 * x00 + lx.l1 * x01) + ly.l1 * (lx.l0 * x10 + lx.l1 * x11);
        dst[i] = V(r);
    }
}
