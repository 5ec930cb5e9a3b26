// Portable implicit-GEMM convolution (any adapter, f32 or f16 storage, f32 accumulation).
// Prepended by conv_geom.wgsl, one of conv_x_{vec4,scalar,pair}.wgsl and one of
// conv_x_{plain,norm}.wgsl (see ops/conv/mod.rs).
//
// Workgroup tile BM × BN (output positions × output channels), K in steps of BK channels of one
// tap. 256 threads as WG_M × WG_N, each owning a 4 × 4 block: rows 4·tm.., columns 4·tn...
// Extra consts: BN (16, 32 or 64), BK = 16.

@group(0) @binding(2) var<storage, read> wt: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

const WG: u32 = 256u;
const WG_N: u32 = BN / 4u;
const WG_M: u32 = WG / WG_N;
const BM: u32 = WG_M * 4u;
const KQ: u32 = BK / 4u;
// vec4 loads per thread per K step.
const A_LOADS: u32 = BM * KQ / WG;
const B_VECS: u32 = BK * WG_N;

// [BM][BK/4]: a row's channels as vectors, in the storage type: a normalised input
// (conv_x_norm.wgsl) is rounded to T by this store as the norm's own pass rounds its output, and
// no compiler can skip the rounding.
var<workgroup> As: array<vec4<T>, BM * KQ>;
var<workgroup> Bs: array<vec4<f32>, BK * WG_N>; // [BK][BN/4]
var<workgroup> rows: array<vec4<i32>, BM>;       // row_info of the tile's rows

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let idx = wg_index(wid, nwg);
    let tn_i = idx % p.tiles_n;
    let rest = idx / p.tiles_n;
    let tm_i = rest % p.tiles_m;
    let phase = rest / p.tiles_m;
    if (phase >= PHASES) {
        return; // padding workgroups of a folded grid (uniform per workgroup)
    }
    set_phase(phase);
    let py = phase / 2u;
    let px = phase % 2u;
    let m0 = tm_i * BM;
    let n0 = tn_i * BN;

    for (var r = t; r < BM; r += WG) {
        rows[r] = row_info(m0 + r, py, px);
        x_norm_row(r, rows[r]);
    }
    workgroupBarrier();
    let a_kq = t % KQ;

    let tm = t / WG_N;
    let tn = t % WG_N;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let w_phase = phase * TAPS * p.cin_p;
    let cout_q = p.cout_p / 4u;

    // Only the time taps that reach a frame of this tile (see live_time_taps).
    let live = live_time_taps(m0, BM);
    for (var tap = live.x * (KH * KW); tap < live.y * (KH * KW); tap++) {
        let tt = tap / (KH * KW);
        let ty = (tap / KW) % KH;
        let tx = tap % KW;
        let w_tap = (w_phase + tap * p.cin_p) * cout_q;
        for (var c0 = 0u; c0 < p.cin; c0 += BK) {
            for (var r = 0u; r < A_LOADS; r++) {
                let row = (t + r * WG) / KQ;
                let ri = rows[row];
                let pix = tap_pixel(ri, tt, ty, tx);
                let ci = c0 + 4u * a_kq;
                As[t + r * WG] = x_normed(load_x4(pix, ci), x_norm_at(row, ri, tt, pix, ci));
            }
            for (var l = t; l < B_VECS; l += WG) {
                let k = l / WG_N;
                let nq = n0 / 4u + l % WG_N;
                var b = vec4<f32>(0.0);
                if (nq < cout_q) {
                    b = vec4<f32>(wt[w_tap + (c0 + k) * cout_q + nq]);
                }
                Bs[l] = b;
            }
            workgroupBarrier();
            for (var kq = 0u; kq < KQ; kq++) {
                let b0 = Bs[(4u * kq) * WG_N + tn];
                let b1 = Bs[(4u * kq + 1u) * WG_N + tn];
                let b2 = Bs[(4u * kq + 2u) * WG_N + tn];
                let b3 = Bs[(4u * kq + 3u) * WG_N + tn];
                let a0 = vec4<f32>(As[(4u * tm) * KQ + kq]);
                let a1 = vec4<f32>(As[(4u * tm + 1u) * KQ + kq]);
                let a2 = vec4<f32>(As[(4u * tm + 2u) * KQ + kq]);
                let a3 = vec4<f32>(As[(4u * tm + 3u) * KQ + kq]);
                // Explicit fma: every specialisation (tile, load) adds the same roundings, so
                // the tuner's candidates and the normalising loads change no bit.
                acc0 = fma(vec4<f32>(a0.w), b3, fma(vec4<f32>(a0.z), b2, fma(vec4<f32>(a0.y), b1, fma(vec4<f32>(a0.x), b0, acc0))));
                acc1 = fma(vec4<f32>(a1.w), b3, fma(vec4<f32>(a1.z), b2, fma(vec4<f32>(a1.y), b1, fma(vec4<f32>(a1.x), b0, acc1))));
                acc2 = fma(vec4<f32>(a2.w), b3, fma(vec4<f32>(a2.z), b2, fma(vec4<f32>(a2.y), b1, fma(vec4<f32>(a2.x), b0, acc2))));
                acc3 = fma(vec4<f32>(a3.w), b3, fma(vec4<f32>(a3.z), b2, fma(vec4<f32>(a3.y), b1, fma(vec4<f32>(a3.x), b0, acc3))));
            }
            workgroupBarrier();
        }
    }

    let nb = n0 + 4u * tn;
    var bv = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (nb + j < p.cout) {
            bv[j] = f32(bias[nb + j]);
        }
    }
    let mr = m0 + 4u * tm;
    store_row(mr, nb, acc0 + bv, py, px);
    store_row(mr + 1u, nb, acc1 + bv, py, px);
    store_row(mr + 2u, nb, acc2 + bv, py, px);
    store_row(mr + 3u, nb, acc3 + bv, py, px);
}

// Output row m, channels n..n+3 (those below Cout).
fn store_row(m: u32, n: u32, v: vec4<f32>, py: u32, px: u32) {
    if (m >= p.m) {
        return;
    }
    let o = out_offset(split_m(m), py, px);
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.cout) {
            out[o + n + j] = T(v[j] + residual(o, n + j));
        }
    }
}
