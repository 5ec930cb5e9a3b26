// YUV planes -> the model's RGB input (ops/color.rs, CPU twin ops::color::cpu::yuv_to_rgb).
// One invocation per luma sample: chroma is upsampled bilinearly at the variant's siting with
// clamped edges (exactly video::color::upsample_chroma's taps and lerps), converted with the
// matrix and range folded into the coefficients below, clamped to [0, 1] (the released pipeline
// reads 8-bit RGB from its video decoder, so colours outside the RGB cube, such as limited-range
// super-whites, never reach the model) and written channels-last [H, W, 3] as 2·rgb − 1. Planes
// hold one sample per u32.

struct Params {
    w: u32,
    h: u32,
    cw: u32,        // chroma plane size (unused for mono)
    ch: u32,
    mono: u32,      // 1: no chroma planes, R = G = B = Y'
    sub_x: u32,     // luma samples per chroma sample along x / y: 1, 2 or 4
    sub_y: u32,
    co_x: u32,      // chroma co-sited with the first luma column / row it covers (else centred)
    co_y: u32,
    yo: f32,        // Y offset (code values)
    co: f32,        // chroma offset
    ay: f32,        // 1 / Y scale
    arv: f32,       // R += arv·(V − co)
    agu: f32,       // G −= agu·(U − co) + agv·(V − co)
    agv: f32,
    abu: f32,       // B += abu·(U − co)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> py: array<u32>;
@group(0) @binding(2) var<storage, read> pu: array<u32>;
@group(0) @binding(3) var<storage, read> pv: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

struct Tap {
    i0: u32,
    i1: u32,
    f: f32,
}

// 1/f for the subsampling factors (2 or 4), as constants: exact, where a WGSL division may be
// off by 2.5 ULP.
fn inv(f: u32) -> f32 {
    return select(0.5, 0.25, f == 4u);
}

// Chroma tap of luma index i along an axis with n chroma samples, each shared by f luma samples:
// co-sited, chroma sample k sits at luma f·k; centred, at the middle of its f luma samples.
fn tap(i: u32, n: u32, f: u32, co: u32) -> Tap {
    var c = f32(i);
    if (f > 1u) {
        if (co != 0u) {
            c = f32(i) * inv(f);
        } else {
            c = (f32(i) + 0.5) * inv(f) - 0.5;
        }
    }
    c = clamp(c, 0.0, f32(n - 1u));
    let i0 = u32(floor(c));
    return Tap(i0, min(i0 + 1u, n - 1u), c - f32(i0));
}

fn up(plane: u32, tx: Tap, ty: Tap) -> f32 {
    var p00: f32; var p01: f32; var p10: f32; var p11: f32;
    if (plane == 1u) {
        p00 = f32(pu[ty.i0 * p.cw + tx.i0]); p01 = f32(pu[ty.i0 * p.cw + tx.i1]);
        p10 = f32(pu[ty.i1 * p.cw + tx.i0]); p11 = f32(pu[ty.i1 * p.cw + tx.i1]);
    } else {
        p00 = f32(pv[ty.i0 * p.cw + tx.i0]); p01 = f32(pv[ty.i0 * p.cw + tx.i1]);
        p10 = f32(pv[ty.i1 * p.cw + tx.i0]); p11 = f32(pv[ty.i1 * p.cw + tx.i1]);
    }
    let top = p00 + (p01 - p00) * tx.f;
    let bot = p10 + (p11 - p10) * tx.f;
    return top + (bot - top) * ty.f;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.w * p.h) {
        return;
    }
    let x = i % p.w;
    let y = i / p.w;
    let yl = (f32(py[i]) - p.yo) * p.ay;
    var r = yl;
    var g = yl;
    var b = yl;
    if (p.mono == 0u) {
        let tx = tap(x, p.cw, p.sub_x, p.co_x);
        let ty = tap(y, p.ch, p.sub_y, p.co_y);
        let u = up(1u, tx, ty) - p.co;
        let v = up(2u, tx, ty) - p.co;
        r = yl + p.arv * v;
        g = yl - (p.agu * u + p.agv * v);
        b = yl + p.abu * u;
    }
    let rgb = clamp(vec3<f32>(r, g, b), vec3<f32>(0.0), vec3<f32>(1.0));
    out[3u * i] = T(2.0 * rgb.x - 1.0);
    out[3u * i + 1u] = T(2.0 * rgb.y - 1.0);
    out[3u * i + 2u] = T(2.0 * rgb.z - 1.0);
}
