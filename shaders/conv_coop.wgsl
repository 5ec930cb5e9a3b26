// Cooperative-matrix implicit-GEMM convolution (f16 storage, f16 × f16 → f32 on FS×FS×FS
// fragments: FS = 16, or 8 where the adapter has only those). Prepended by conv_geom.wgsl, one
// of conv_x_{vec4,scalar,pair}.wgsl and one of conv_x_{plain,norm}.wgsl (see ops/conv/mod.rs): a
// normalised input is loaded as stored and normalised as it is staged, so the loads stay in
// flight during the multiplies. The preamble enables f16 and
// wgpu_cooperative_matrix and declares FS and the fragment types FA, FB, FC.
//
// The multiplies are the cooperative GEMM core's (coop_gemm.wgsl, shared with the matmul, with
// coop_tiles_s4.wgsl's vec4<f16> staged tiles); this file is the convolution's side of it: which
// output tile a workgroup owns (with its phase: a transposed convolution's, or Winograd's plane),
// the rows' geometry, the im2col loads tap by tap and the epilogue. NSG (8, or 4 for grids too
// small to fill the GPU) subgroups each own a 4·FS square block: with 8, BN = 4 blocks gives a
// 128 × 256 tile at FS = 16 and BN = 2 blocks a 256 × 128 one; 4 subgroups halve the rows. The
// epilogue goes through a per-subgroup FS×FS f32 scratch tile (adds the bias and any residual,
// converts to f16, scatters rows: transposed phases and edge tiles have no constant output
// stride).
// Extra consts: SG (subgroup size; the host only picks this kernel when it is fixed and the
// loads below divide evenly among the invocations), NSG, BN, PREFETCH, KSTEP.

@group(0) @binding(2) var<storage, read> wt: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

const KQ: u32 = BK / 4u;
const A_LOADS: u32 = BM * KQ / NI;
const B_LOADS: u32 = BK * BN / 4u / NI;

var<workgroup> Cs: array<f32, NSG * FS * FS>;   // one FS×FS tile per subgroup
var<workgroup> rows: array<vec4<i32>, BM>;      // row_info of the tile's rows

// The next K step's global loads, held in registers while the current step multiplies, so
// their latency overlaps the matrix work.
var<private> ra: array<vec4<T>, A_LOADS>;
var<private> rb: array<vec4<T>, B_LOADS>;
// Where each of ra's vectors finds its normalisation (x_norm_at; unused for a plain input).
var<private> rn: array<u32, A_LOADS>;

// The workgroup's output tile: its first row and channel, its phase (a transposed convolution's,
// with its (py, px), or Winograd's plane), K steps per tap (nck), and `spare`: past the end of a
// folded grid (it computes a clamped tile and stores nothing).
struct Tile {
    m0: u32,
    n0: u32,
    phase: u32,
    py: u32,
    px: u32,
    nck: u32,
    spare: bool,
}

fn tile_begin(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Tile {
    let idx = wg_index(wid, nwg);
    let tn_i = idx % p.tiles_n;
    let rest = idx / p.tiles_n;
    let tm_i = rest % p.tiles_m;
    let phase = min(rest / p.tiles_m, PHASES - 1u);
    set_phase(phase);
    // K runs tap by tap, BK channels at a time (channels past Cin are zero on both sides).
    let t = Tile(tm_i * BM, tn_i * BN, phase, phase / 2u, phase % 2u, (p.cin + BK - 1u) / BK, rest / p.tiles_m >= PHASES);
    for (var r = lid; r < BM; r += NI) {
        rows[r] = row_info(t.m0 + r, t.py, t.px);
        x_norm_row(r, rows[r]);
    }
    return t;
}

// Only the time taps that reach a frame of this tile.
fn k_range(t: Tile) -> vec2<u32> {
    let live = live_time_taps(t.m0, BM);
    return live * (KH * KW * t.nck);
}

// Loads K step `ks` (tap ks / nck, channels (ks % nck)·BK..) of this thread's share of the
// A and B tiles into ra / rb.
fn fetch(t: Tile, ks: u32, lid: u32) {
    let tap = ks / t.nck;
    let c0 = (ks % t.nck) * BK;
    let tt = tap / (KH * KW);
    let ty = (tap / KW) % KH;
    let tx = tap % KW;
    let a_kq = lid % KQ;
    for (var r = 0u; r < A_LOADS; r++) {
        let row = (lid + r * NI) / KQ;
        let ri = rows[row];
        let pix = tap_pixel(ri, tt, ty, tx);
        ra[r] = load_x4(pix, c0 + 4u * a_kq);
        rn[r] = x_norm_at(row, ri, tt, pix, c0 + 4u * a_kq);
    }
    let cout_q = p.cout_p / 4u;
    let w_row = (t.phase * TAPS + tap) * p.cin_p + c0;
    for (var r = 0u; r < B_LOADS; r++) {
        let l = lid + r * NI;
        let k = l / (BN / 4u);
        let nq = t.n0 / 4u + l % (BN / 4u);
        var b = vec4<T>(0.0);
        if (nq < cout_q) {
            b = wt[(w_row + k) * cout_q + nq];
        }
        rb[r] = b;
    }
}

// Writes the fetched registers into the staged tiles.
fn stage_tiles(t: Tile, ks: u32, lid: u32) {
    for (var r = 0u; r < A_LOADS; r++) {
        put_a(((lid + r * NI) / KQ) * AS + (lid % KQ) * 4u, vec4<f16>(x_normed(ra[r], rn[r])));
    }
    for (var r = 0u; r < B_LOADS; r++) {
        let l = lid + r * NI;
        put_b((l / (BN / 4u)) * BS + (l % (BN / 4u)) * 4u, vec4<f16>(rb[r]));
    }
}

// Writes accumulator `c` (rows m.., columns n.. of the output) through this subgroup's scratch.
// Every subgroup calls it the same number of times (it holds workgroup barriers).
fn store_c(c: FC, sg: u32, lane: u32, m: u32, n: u32, t: Tile) {
    coopStoreT(c, &Cs[sg * (FS * FS)], FS);
    workgroupBarrier();
    // Each lane copies `per` consecutive elements of one row (the host checks FS·FS % SG == 0
    // and per <= FS).
    let per = FS * FS / SG;
    let r = (lane * per) / FS;
    let col = (lane * per) % FS;
    let mm = m + r;
    if (mm < p.m && !t.spare) {
        let o = out_offset(split_m(mm), t.py, t.px);
        for (var e = 0u; e < per; e++) {
            let nn = n + col + e;
            if (nn < p.cout) {
                out[o + nn] = T(Cs[sg * (FS * FS) + r * FS + col + e] + f32(bias[nn]) + residual(o, nn));
            }
        }
    }
    workgroupBarrier();
}

fn store_pair(t: Tile, ca: FC, cb: FC, i: u32, jp: u32, sg: u32, lane: u32, lid: u32) {
    let m = t.m0 + (sg / SGN) * SB + i * FS;
    let n = t.n0 + (sg % SGN) * SB + 2u * jp * FS;
    store_c(ca, sg, lane, m, n, t);
    store_c(cb, sg, lane, m, n + FS, t);
}
