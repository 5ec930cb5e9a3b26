// Cooperative-matrix implicit-GEMM convolution (f16 storage, f16 × f16 → f32 on FS×FS×FS
// fragments: FS = 16, or 8 where the adapter has only those). Prepended by conv_geom.wgsl, one
// of conv_x_{vec4,scalar,pair}.wgsl and one of conv_x_{plain,norm}.wgsl (see ops/conv/mod.rs): a
// normalised input is loaded as stored and normalised as it is staged, so the loads stay in
// flight during the multiplies. The preamble enables f16 and
// wgpu_cooperative_matrix and declares FS and the fragment types FA, FB, FC.
//
// Workgroup tile BM × BN × BK (BK = 2·FS) staged through workgroup memory as vec4<f16>, with
// PREFETCH the next K step's global loads in flight during this step's multiplies (else each
// step is loaded, then staged: fewer live registers). NSG (8, or 4 for grids
// too small to fill the GPU) subgroups of SG lanes, each owning an SB × SB block (SB = 4·FS) as
// 4 × 4 f32 accumulators, arranged SGM × SGN: with 8, BN = 4·SB gives a 2·SB × 4·SB tile
// (128 × 256 at FS = 16) and BN = 2·SB a 4·SB × 2·SB tile; 4 subgroups halve the rows. The
// accumulators and fragments are named variables, not arrays: an array of cooperative matrices
// indexed in a loop can end up in local memory. The epilogue goes through a per-subgroup FS×FS
// f32 scratch tile (adds the bias and any residual, converts to f16, scatters rows: transposed
// phases and edge tiles have no constant output stride).
// Extra consts: SG (subgroup size; the host only picks this kernel when it is fixed and the
// loads below divide evenly among the invocations), NSG, BN, PREFETCH.

@group(0) @binding(2) var<storage, read> wt: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

const WG: u32 = NSG * SG;
const SB: u32 = 4u * FS;
const SGN: u32 = BN / SB;
const SGM: u32 = NSG / SGN;
const BM: u32 = SGM * SB;
const BK: u32 = 2u * FS;
const KQ: u32 = BK / 4u;
// Row strides of the staged tiles, padded by 16 bytes so the rows one matrix load reads fall
// into different banks.
const AS_STRIDE: u32 = BK + 8u;
const BS_STRIDE: u32 = BN + 8u;
const A_LOADS: u32 = BM * KQ / WG;
const B_LOADS: u32 = BK * BN / 4u / WG;

var<workgroup> As: array<vec4<f16>, BM * AS_STRIDE / 4u>;  // [BM][BK]  (row-major, padded)
var<workgroup> Bs: array<vec4<f16>, BK * BS_STRIDE / 4u>;  // [BK][BN]  (row-major, padded)
var<workgroup> Cs: array<f32, NSG * FS * FS>;   // one FS×FS tile per subgroup
var<workgroup> rows: array<vec4<i32>, BM>;      // row_info of the tile's rows

// The staged tiles are vec4<f16> (one 8-byte store per four channels); a cooperative load
// then counts its offset and stride in vectors (checked on NVIDIA: scalar units are wrong).
fn load_a(row: u32, k: u32) -> FA {
    return coopLoadT<FA>(&As[row * (AS_STRIDE / 4u) + k / 4u], AS_STRIDE / 4u);
}

fn load_b(k: u32, col: u32) -> FB {
    return coopLoadT<FB>(&Bs[k * (BS_STRIDE / 4u) + col / 4u], BS_STRIDE / 4u);
}

// The next K step's global loads, held in registers while the current step multiplies, so
// their latency overlaps the matrix work.
var<private> ra: array<vec4<T>, A_LOADS>;
var<private> rb: array<vec4<T>, B_LOADS>;
// Where each of ra's vectors finds its normalisation (x_norm_at; unused for a plain input).
var<private> rn: array<u32, A_LOADS>;

// Loads K step `ks` (tap ks / nck, channels (ks % nck)·BK..) of this thread's share of the
// A and B tiles into ra / rb.
fn fetch(ks: u32, nck: u32, t: u32, phase: u32, n0: u32) {
    let tap = ks / nck;
    let c0 = (ks % nck) * BK;
    let tt = tap / (KH * KW);
    let ty = (tap / KW) % KH;
    let tx = tap % KW;
    let a_kq = t % KQ;
    for (var r = 0u; r < A_LOADS; r++) {
        let row = (t + r * WG) / KQ;
        let off = tap_offset(rows[row], tt, ty, tx);
        ra[r] = load_x4(off, c0 + 4u * a_kq);
        rn[r] = x_norm_at(off, c0 + 4u * a_kq);
    }
    let cout_q = p.cout_p / 4u;
    let w_row = (phase * TAPS + tap) * p.cin_p + c0;
    for (var r = 0u; r < B_LOADS; r++) {
        let l = t + r * WG;
        let k = l / (BN / 4u);
        let nq = n0 / 4u + l % (BN / 4u);
        var b = vec4<T>(0.0);
        if (nq < cout_q) {
            b = wt[(w_row + k) * cout_q + nq];
        }
        rb[r] = b;
    }
}

// Writes the fetched registers into the staged tiles.
fn stage(t: u32) {
    for (var r = 0u; r < A_LOADS; r++) {
        As[((t + r * WG) / KQ) * (AS_STRIDE / 4u) + t % KQ] = vec4<f16>(x_normed(ra[r], rn[r]));
    }
    for (var r = 0u; r < B_LOADS; r++) {
        let l = t + r * WG;
        Bs[(l / (BN / 4u)) * (BS_STRIDE / 4u) + l % (BN / 4u)] = vec4<f16>(rb[r]);
    }
}

// Writes accumulator `c` (rows m.., columns n.. of the output) through this subgroup's scratch.
// Every subgroup calls it the same number of times (it holds workgroup barriers).
fn store_c(c: FC, sg: u32, lane: u32, m: u32, n: u32, py: u32, px: u32, spare: bool) {
    coopStoreT(c, &Cs[sg * (FS * FS)], FS);
    workgroupBarrier();
    // Each lane copies `per` consecutive elements of one row (the host checks FS·FS % SG == 0
    // and per <= FS).
    let per = FS * FS / SG;
    let r = (lane * per) / FS;
    let col = (lane * per) % FS;
    let mm = m + r;
    if (mm < p.m && !spare) {
        let o = out_offset(split_m(mm), py, px);
        for (var e = 0u; e < per; e++) {
            let nn = n + col + e;
            if (nn < p.cout) {
                out[o + nn] = T(Cs[sg * (FS * FS) + r * FS + col + e] + f32(bias[nn]) + residual(o, nn));
            }
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let idx = wg_index(wid, nwg);
    let tn_i = idx % p.tiles_n;
    let rest = idx / p.tiles_n;
    let tm_i = rest % p.tiles_m;
    // Workgroups past the end of a folded grid run a clamped tile and store nothing (an early
    // return here would put the cooperative operations into non-uniform control flow for naga).
    let phases = select(1u, 4u, TRANSPOSED);
    let spare = rest / p.tiles_m >= phases;
    let phase = min(rest / p.tiles_m, phases - 1u);
    let py = phase / 2u;
    let px = phase % 2u;
    let m0 = tm_i * BM;
    let n0 = tn_i * BN;

    for (var r = t; r < BM; r += WG) {
        rows[r] = row_info(m0 + r, py, px);
    }
    workgroupBarrier();

    // This subgroup's corner in the tile.
    let sm = (sg / SGN) * SB;
    let sn = (sg % SGN) * SB;
    var c00: FC; var c01: FC; var c02: FC; var c03: FC;
    var c10: FC; var c11: FC; var c12: FC; var c13: FC;
    var c20: FC; var c21: FC; var c22: FC; var c23: FC;
    var c30: FC; var c31: FC; var c32: FC; var c33: FC;

    // K runs tap by tap, BK channels at a time (channels past Cin are zero on both sides), over
    // the time taps that reach a frame of this tile.
    let nck = (p.cin + BK - 1u) / BK;
    let live = live_time_taps(m0, BM);
    let ks_first = live.x * (KH * KW * nck);
    let ks_end = live.y * (KH * KW * nck);
    if (PREFETCH) {
        fetch(ks_first, nck, t, phase, n0);
    }
    for (var ks = ks_first; ks < ks_end; ks++) {
        if (!PREFETCH) {
            fetch(ks, nck, t, phase, n0);
        }
        stage(t);
        workgroupBarrier();
        if (PREFETCH && ks + 1u < ks_end) {
            fetch(ks + 1u, nck, t, phase, n0);
        }
        for (var kk = 0u; kk < BK; kk += FS) {
            let a0 = load_a(sm, kk);
            let a1 = load_a(sm + FS, kk);
            let a2 = load_a(sm + 2u * FS, kk);
            let a3 = load_a(sm + 3u * FS, kk);
            var b = load_b(kk, sn);
            c00 = coopMultiplyAdd(a0, b, c00);
            c10 = coopMultiplyAdd(a1, b, c10);
            c20 = coopMultiplyAdd(a2, b, c20);
            c30 = coopMultiplyAdd(a3, b, c30);
            b = load_b(kk, sn + FS);
            c01 = coopMultiplyAdd(a0, b, c01);
            c11 = coopMultiplyAdd(a1, b, c11);
            c21 = coopMultiplyAdd(a2, b, c21);
            c31 = coopMultiplyAdd(a3, b, c31);
            b = load_b(kk, sn + 2u * FS);
            c02 = coopMultiplyAdd(a0, b, c02);
            c12 = coopMultiplyAdd(a1, b, c12);
            c22 = coopMultiplyAdd(a2, b, c22);
            c32 = coopMultiplyAdd(a3, b, c32);
            b = load_b(kk, sn + 3u * FS);
            c03 = coopMultiplyAdd(a0, b, c03);
            c13 = coopMultiplyAdd(a1, b, c13);
            c23 = coopMultiplyAdd(a2, b, c23);
            c33 = coopMultiplyAdd(a3, b, c33);
        }
        workgroupBarrier();
    }

    let m = m0 + sm;
    let n = n0 + sn;
    store_c(c00, sg, lane, m, n, py, px, spare);
    store_c(c01, sg, lane, m, n + FS, py, px, spare);
    store_c(c02, sg, lane, m, n + 2u * FS, py, px, spare);
    store_c(c03, sg, lane, m, n + 3u * FS, py, px, spare);
    store_c(c10, sg, lane, m + FS, n, py, px, spare);
    store_c(c11, sg, lane, m + FS, n + FS, py, px, spare);
    store_c(c12, sg, lane, m + FS, n + 2u * FS, py, px, spare);
    store_c(c13, sg, lane, m + FS, n + 3u * FS, py, px, spare);
    store_c(c20, sg, lane, m + 2u * FS, n, py, px, spare);
    store_c(c21, sg, lane, m + 2u * FS, n + FS, py, px, spare);
    store_c(c22, sg, lane, m + 2u * FS, n + 2u * FS, py, px, spare);
    store_c(c23, sg, lane, m + 2u * FS, n + 3u * FS, py, px, spare);
    store_c(c30, sg, lane, m + 3u * FS, n, py, px, spare);
    store_c(c31, sg, lane, m + 3u * FS, n + FS, py, px, spare);
    store_c(c32, sg, lane, m + 3u * FS, n + 2u * FS, py, px, spare);
    store_c(c33, sg, lane, m + 3u * FS, n + 3u * FS, py, px, spare);
}
