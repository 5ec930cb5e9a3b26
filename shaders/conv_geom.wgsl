// Geometry shared by the convolution kernels (conv.wgsl, conv_coop.wgsl): implicit GEMM with
// M = output positions, N = Cout, K = taps × Cin, gathered from channels-last input on the fly.
//
// Specialisation consts (see ops/conv/mod.rs): KT, KH, KW (taps per axis; a transposed conv runs as
// four 2×2 phases), SH, SW (spatial stride), TRANSPOSED (bool: output pixel (2y+py, 2x+px) of
// phase (py, px)), PLANES (bool: the phases are PHASES independent convolutions of as many
// equal parts of x into the same parts of out, each with its own weight: Winograd's products,
// ops/winograd), PHASES (4 for TRANSPOSED, the parts for PLANES, else 1), HAS_RES (bool: add a
// residual as the output is stored); with a normalised input (conv_x_norm.wgsl), SILU.
//
// Input  x:   [NB, D, H, W, Cin]           (conv2d: D = 1, NB = N; or a channel pair of two
//                                          tensors, conv_x_pair.wgsl)
// Output out: [NB, D, HO·OS, WO·OS, Cout]  (OS = 2 when TRANSPOSED, else 1; depth stride 1)
// Weight w:   [PHASES][TAPS][CIN_P][COUT_P] as vec4 along Cout; rows ci >= Cin and columns
//             co >= Cout are zero, so weight loads need no bounds checks.
// With PLANES, x and out are [PHASES·NB, D, ..] and phase q reads and writes batch entries
// q·NB .. (q+1)·NB.

struct Params {
    nb: u32, d: u32, h: u32, w: u32,
    cin: u32, cout: u32, cin_p: u32, cout_p: u32,
    ho: u32, wo: u32, pt: u32, ph: u32,
    pw: u32, m: u32, tiles_m: u32, tiles_n: u32,
    res_rep: u32,
    // Frames per GroupNorm segment of a normalised input (conv_x_norm.wgsl); else unused.
    seg_frames: u32,
    // A channel pair's geometry (conv_x_pair.wgsl); else unused.
    pair_c1: u32, pair_rows_a: u32, pair_rows_b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// The residual epilogue (HAS_RES, see ops/residual.rs); without one the dispatch binds the bias
// here again.
@group(0) @binding(5) var<storage, read> res: array<T>;

const TAPS: u32 = KT * KH * KW;

// With PLANES, the frames before this workgroup's part of x and out (phase · NB · D); else 0.
// Set once by the kernel's entry point, before row_info.
var<private> plane_frames: u32;

fn set_phase(phase: u32) {
    plane_frames = select(0u, phase * p.nb * p.d, PLANES);
}

// An output position of the GEMM's M axis, split into its coordinates (depth folded in time).
struct Pos {
    b: u32, z: u32, y: u32, x: u32,
}

fn split_m(m: u32) -> Pos {
    var r: Pos;
    r.x = m % p.wo;
    let t = m / p.wo;
    r.y = t % p.ho;
    let t2 = t / p.ho;
    r.z = t2 % p.d;
    r.b = t2 / p.d;
    return r;
}

// What the K loop needs of output row `m` in phase (py, px), computed once per workgroup and
// kept in workgroup memory: (b·D + z, or -1 past the last row; front input frame z − pt; top
// input row; left input column), the last three for tap (0, 0, 0).
fn row_info(m: u32, py: u32, px: u32) -> vec4<i32> {
    if (m >= p.m) {
        return vec4<i32>(-1, 0, 0, 0);
    }
    let q = split_m(m);
    var pad_y = i32(p.ph);
    var pad_x = i32(p.pw);
    if (TRANSPOSED) {
        // Phase (py, px) of a k4 s2 p1 transposed conv is a 2×2 conv over rows y−1+py, y+py.
        pad_y = 1 - i32(py);
        pad_x = 1 - i32(px);
    }
    return vec4<i32>(i32(plane_frames + q.b * p.d + q.z), i32(q.z) - i32(p.pt), i32(q.y * SH) - pad_y, i32(q.x * SW) - pad_x);
}

// The time taps [first, end) that reach an input frame for some row of the tile m0 .. m0+bm;
// the others fall into the zero padding of every row of it (a tile within the first or last
// frames of a clip) and would only multiply zeros, so the K loops skip them. A tile's rows are
// consecutive, so their frames z run from that of its first row to that of its last, unless the
// tile wraps into the next batch entry (then any z). Uniform per workgroup. Needs m0 < p.m.
fn live_time_taps(m0: u32, bm: u32) -> vec2<u32> {
    if (KT == 1u) {
        return vec2<u32>(0u, 1u);
    }
    let per_frame = p.ho * p.wo;
    let f0 = m0 / per_frame;
    let f1 = (min(m0 + bm, p.m) - 1u) / per_frame;
    var z_lo = f0 % p.d;
    var z_hi = f1 % p.d;
    if (f1 - f0 >= p.d || z_hi < z_lo) {
        z_lo = 0u;
        z_hi = p.d - 1u;
    }
    // Tap tt of frame z reads input frame z − pt + tt, which must lie in 0 .. D.
    let first = max(i32(p.pt) - i32(z_hi), 0);
    let end = min(i32(KT), i32(p.d + p.pt) - i32(z_lo));
    return vec2<u32>(u32(first), u32(end));
}

// Index of the input pixel that tap (tt, ty, tx) of a row reads (its channel 0 is element
// pixel·Cin), or -1 where it falls into the zero padding (or the row is past the end). A pixel
// index, not an element offset: the loaders that need the pixel (a channel pair's, a
// normalisation's segment) then need no division by Cin.
fn tap_pixel(ri: vec4<i32>, tt: u32, ty: u32, tx: u32) -> i32 {
    let iz = ri.y + i32(tt);
    let iy = ri.z + i32(ty);
    let ix = ri.w + i32(tx);
    if (ri.x < 0 || iz < 0 || iz >= i32(p.d) || iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) {
        return -1;
    }
    // b·D + z + (iz − z) is the input frame of this tap.
    let frame = ri.x + i32(tt) - i32(p.pt);
    return (frame * i32(p.h) + iy) * i32(p.w) + ix;
}

// Element offset of output position `q` (channel 0) in phase (py, px).
// What the residual adds to output channel n of the output pixel at element offset o (from
// out_offset): res[(pixel / res_rep)·Cout + n].
fn residual(o: u32, n: u32) -> f32 {
    if (!HAS_RES) {
        return 0.0;
    }
    return f32(res[((o / p.cout) / p.res_rep) * p.cout + n]);
}

fn out_offset(q: Pos, py: u32, px: u32) -> u32 {
    if (TRANSPOSED) {
        let h2 = 2u * p.ho;
        let w2 = 2u * p.wo;
        return (((q.b * p.d + q.z) * h2 + 2u * q.y + py) * w2 + 2u * q.x + px) * p.cout;
    }
    return (((plane_frames + q.b * p.d + q.z) * p.ho + q.y) * p.wo + q.x) * p.cout;
}
