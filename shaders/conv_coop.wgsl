// Cooperative-matrix implicit-GEMM convolution (f16 storage, f16 × f16 → f32 16×16×16).
// Prepended by conv_geom.wgsl and one of conv_x_{vec4,scalar}.wgsl (see ops/conv.rs); the
// preamble enables f16 and wgpu_cooperative_matrix.
//
// Workgroup tile BM × BN × BK (BM = 128, BK = 32) staged through workgroup memory as f16; 8
// subgroups of SG lanes in a 2 (M) × 4 (N) grid, each owning 64 × BN/4 of the tile as FM × FN
// 16×16 f32 accumulators. The epilogue goes through a per-subgroup 16×16 f32 scratch tile
// (adds the bias, converts to f16, and scatters the rows: transposed phases and edge tiles
// have no constant output stride).
// Extra consts: SG (subgroup size; the host only picks this kernel when it is fixed), BN (128
// or 256).

@group(0) @binding(2) var<storage, read> wt: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

const NSG: u32 = 8u;
const WG: u32 = NSG * SG;
const BM: u32 = 128u;
const BK: u32 = 32u;
const KQ: u32 = BK / 4u;
const FM: u32 = 4u;                 // 64 rows per subgroup
const FN: u32 = BN / 64u;           // BN/4 columns per subgroup
// Row strides of the staged tiles, padded by 16 bytes so the rows a matrix load reads together
// fall into different banks.
const AS_STRIDE: u32 = BK + 8u;
const BS_STRIDE: u32 = BN + 8u;
const A_LOADS: u32 = BM * KQ / WG;
const B_LOADS: u32 = BK * BN / 4u / WG;

var<workgroup> As: array<f16, BM * AS_STRIDE>;  // [BM][BK]  (row-major, padded)
var<workgroup> Bs: array<f16, BK * BS_STRIDE>;  // [BK][BN]  (row-major, padded)
var<workgroup> Cs: array<f32, NSG * 256u>;      // one 16×16 tile per subgroup

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

    var pos: array<Pos, A_LOADS>;
    var live: array<bool, A_LOADS>;
    for (var r = 0u; r < A_LOADS; r++) {
        let m = m0 + (t + r * WG) / KQ;
        live[r] = m < p.m;
        pos[r] = split_m(min(m, p.m - 1u));
    }
    let a_kq = t % KQ;

    // This subgroup's corner in the tile.
    let sm = (sg / 4u) * 64u;
    let sn = (sg % 4u) * (BN / 4u);
    var acc: array<coop_mat16x16<f32, C>, FM * FN>;
    let w_phase = phase * TAPS * p.cin_p;
    let cout_q = p.cout_p / 4u;

    for (var tap = 0u; tap < TAPS; tap++) {
        var offs: array<i32, A_LOADS>;
        for (var r = 0u; r < A_LOADS; r++) {
            offs[r] = select(-1, tap_offset(pos[r], tap, py, px), live[r]);
        }
        let w_tap = (w_phase + tap * p.cin_p) * cout_q;
        for (var c0 = 0u; c0 < p.cin; c0 += BK) {
            for (var r = 0u; r < A_LOADS; r++) {
                let v = load_x4(offs[r], c0 + 4u * a_kq);
                let a = ((t + r * WG) / KQ) * AS_STRIDE + 4u * a_kq;
                As[a] = v.x;
                As[a + 1u] = v.y;
                As[a + 2u] = v.z;
                As[a + 3u] = v.w;
            }
            for (var r = 0u; r < B_LOADS; r++) {
                let l = t + r * WG;
                let k = l / (BN / 4u);
                let nq = l % (BN / 4u);
                var b = vec4<T>(0.0);
                if (n0 / 4u + nq < cout_q) {
                    b = wt[w_tap + (c0 + k) * cout_q + n0 / 4u + nq];
                }
                let o = k * BS_STRIDE + 4u * nq;
                Bs[o] = b.x;
                Bs[o + 1u] = b.y;
                Bs[o + 2u] = b.z;
                Bs[o + 3u] = b.w;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < BK; kk += 16u) {
                var a: array<coop_mat16x16<f16, A>, FM>;
                for (var i = 0u; i < FM; i++) {
                    a[i] = coopLoadT<coop_mat16x16<f16, A>>(&As[(sm + 16u * i) * AS_STRIDE + kk], AS_STRIDE);
                }
                for (var j = 0u; j < FN; j++) {
                    let b = coopLoadT<coop_mat16x16<f16, B>>(&Bs[kk * BS_STRIDE + sn + 16u * j], BS_STRIDE);
                    for (var i = 0u; i < FM; i++) {
                        acc[i * FN + j] = coopMultiplyAdd(a[i], b, acc[i * FN + j]);
                    }
                }
            }
            workgroupBarrier();
        }
    }

    // Epilogue: each lane writes 256 / SG consecutive channels of one row per 16×16 tile.
    let per = 256u / SG;
    let r = (lane * per) / 16u;
    let c = (lane * per) % 16u;
    for (var i = 0u; i < FM; i++) {
        let m = m0 + sm + 16u * i + r;
        let q = split_m(min(m, p.m - 1u));
        let o = out_offset(q, py, px);
        for (var j = 0u; j < FN; j++) {
            coopStoreT(acc[i * FN + j], &Cs[sg * 256u], 16u);
            workgroupBarrier();
            let n = n0 + sn + 16u * j + c;
            if (m < p.m && !spare) {
                for (var e = 0u; e < per; e++) {
                    if (n + e < p.cout) {
                        out[o + n + e] = T(Cs[sg * 256u + r * 16u + c + e] + f32(bias[n + e]));
                    }
                }
            }
            workgroupBarrier();
        }
    }
}
