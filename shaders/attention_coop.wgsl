// Attention on cooperative matrices (tensor cores): f16 products with f32 accumulation on
// FS×FS×FS fragments (FS = 16, or 8 where the adapter has only those; the preamble declares FS and
// the fragment types FA, FB, FC). Same operands and layouts as attention.wgsl (no causal mask).
// Storage T is f16, or f32 rounded to f16 operands (`--f16-operands`); the host appends the Q
// loader that fits it: attention_coop_q_direct.wgsl or attention_coop_q_staged.wgsl.
//
// A workgroup is NSG = 4·QS subgroups of SG = FS·FS/8 (32 at FS = 16, 8 at FS = 8: the host checks)
// and owns BQ = QS·FS query rows of one (batch, head) (QS = 2 or 4 strips: the tuner's choice);
// keys go BK = 4·FS at a time, in one pass:
//   S = Q·Kᵀ per tile into workgroup memory; the 8 columns each invocation reads of one row give,
//   through subgroup shuffles, the row's tile max; P = exp2(S − m) in f16 for a reference max m
//   per row; O += P·V in accumulators that stay in registers for the whole key loop; O / l at
//   the end, l the row's sum of exponentials.
// A cooperative accumulator cannot be rescaled row by row, so m is raised only when a row's
// scores pass it by more than TAU (P then stays at most 2^TAU, well inside f16): only then does
// the workgroup move its accumulators through workgroup memory to scale their rows by
// exp2(m_old − m_new). After the first tiles that is rare (the running max settles), so the
// products are those of one pass (two passes, which this replaced, did Q·Kᵀ twice).
//
// Subgroup sg computes the S fragment (rows FS·(sg/4).., keys FS·(sg%4)..) and the NO = DH/(4·FS)
// output fragments (rows FS·(sg%QS).., columns FS·(sg/QS + 4t)..), t < NO (at most 8). Each row's
// products, softmax and sums are the same whatever QS is (a row rescales only by its own factor,
// 1 where it did not raise its max), so both tiles give the same bits.
// A wider query tile stages each K and V tile once for twice the rows (half the staging and
// barriers per product), on twice the invocations.
// K is staged DC channels at a time ([BK][DC]), V VK keys at a time ([VK][DH]), both in `kv`.
// Q fragments are read straight from f16 memory, or from f32 memory staged DC channels at a time
// in `kv` after K (`stage_q`, `q_frag`). The host shifts the last query tile back so that all BQ rows
// exist (needs Lq >= BQ); overlapping rows are computed twice with the same result.
//
// Constants from the host: SG, QS, DH (multiple of 64, <= 512, and <= 256 at FS = 8), NO, DC, VK (both
// multiples of FS, VK dividing BK), KVF (f16 elements of `kv`, a multiple of 4), LDQ (row stride of q in elements;
// a constant because cooperative loads want one).

const NSG: u32 = 4u * QS;
const NI: u32 = NSG * SG;
const BQ: u32 = QS * FS;
const BK: u32 = 4u * FS;
// Softmax statistics: BK / 8 invocations per row of scores, 8 columns each (BQ·BK/8 = NI), lanes
// of one subgroup (RI divides SG).
const RI: u32 = BK / 8u;
const KST: u32 = DC + 8u;
const VST: u32 = DH + 8u;
const SST: u32 = BK + 4u;
const PST: u32 = BK + 8u;
const DH4: u32 = DH / 4u;
const NEG: f32 = -3.0e38;
const M_INIT: f32 = -1.0e30;
// How far (log2) a row's scores may pass its reference max before the accumulators are rescaled.
const TAU: f32 = 8.0;

struct Params {
    lq: u32,
    lk: u32,
    heads: u32,
    nqt: u32,
    ldk4: u32,     // row strides of k, v in vec4 units
    ldv4: u32,
    ldo: u32,      // output row stride (elements)
    qoff: u32,     // channel offset of head 0 in q (elements)
    koff4: u32,    // ... in k and v (vec4 units)
    voff4: u32,
    kv_div: u32,
    scale: f32,    // softmax scale · log2(e)
    groups: u32,   // workgroups that own a tile: batch · heads · nqt
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<T>>;
@group(0) @binding(4) var<storage, read_write> o: array<T>;

// The staged K, V (and f32 storage's Q) and P are vec4<f16> arrays: one 8-byte store per four
// values. A cooperative load then counts its offset and stride in vectors (SPIR-V measures the
// stride in the pointer's element type): the offsets and strides below are the f16 ones divided
// by 4 (all are multiples of 4).
var<workgroup> kv: array<vec4<f16>, KVF / 4u>;
var<workgroup> ss: array<f32, BQ * SST>;
var<workgroup> ps: array<vec4<f16>, BQ * PST / 4u>;
// Per query row: the factor its accumulators are scaled by this tile, then 1 / l for the output.
var<workgroup> rowf: array<f32, BQ>;
// 1 + the last tile at which some row raised its reference max.
var<workgroup> rescaled_at: atomic<u32>;

// Four f16 at f16 offset i (a multiple of 4) of `kv`.
fn put4(i: u32, x: vec4<f16>) {
    kv[i / 4u] = x;
}

// K rows k0 .. k0+BK, channels d0 .. d0+DC of the head → kv as [BK][KST]; missing keys are zero.
fn stage_k(kbase4: u32, k0: u32, d0: u32, lid: u32) {
    for (var e = lid; e < BK * DC / 4u; e += NI) {
        let r = e / (DC / 4u);
        let c4 = e % (DC / 4u);
        let key = k0 + r;
        let x = vec4<f16>(k[kbase4 + min(key, p.lk - 1u) * p.ldk4 + d0 / 4u + c4]);
        put4(r * KST + c4 * 4u, select(vec4<f16>(0.0h), x, key < p.lk));
    }
}

// V rows k0 .. k0+VK, all DH channels → kv as [VK][VST].
fn stage_v(vbase4: u32, k0: u32, lid: u32) {
    for (var e = lid; e < VK * DH4; e += NI) {
        let r = e / DH4;
        let c4 = e % DH4;
        let key = k0 + r;
        let x = vec4<f16>(v[vbase4 + min(key, p.lk - 1u) * p.ldv4 + c4]);
        put4(r * VST + c4 * 4u, select(vec4<f16>(0.0h), x, key < p.lk));
    }
}

fn max4(w: vec4<f32>) -> f32 {
    return max(max(w.x, w.y), max(w.z, w.w));
}

// Scaled scores of row `row`, keys k0+col .. k0+col+8 of the tile in `ss`; missing keys NEG.
// (Vectors, not a private array: loop-indexed arrays land in local memory on NVIDIA.)
fn scores(k0: u32, row: u32, col: u32) -> mat2x4<f32> {
    let i = row * SST + col;
    let key = vec4<u32>(k0 + col) + vec4<u32>(0u, 1u, 2u, 3u);
    let lk = vec4<u32>(p.lk);
    let xa = vec4<f32>(ss[i], ss[i + 1u], ss[i + 2u], ss[i + 3u]) * p.scale;
    let xb = vec4<f32>(ss[i + 4u], ss[i + 5u], ss[i + 6u], ss[i + 7u]) * p.scale;
    return mat2x4<f32>(select(vec4<f32>(NEG), xa, key < lk), select(vec4<f32>(NEG), xb, key + 4u < lk));
}

@compute @workgroup_size(NI)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    // Workgroups past the end (slack of the 2-D folding) redo the last tile and store the same
    // values: an early return would put the cooperative operations in non-uniform control flow.
    let w = min(wg_index(wid, nwg), p.groups - 1u);
    let qt = w % p.nqt;
    let bh = w / p.nqt;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let kb = b / p.kv_div;
    let q0 = min(qt * BQ, p.lq - BQ);
    let kbase4 = kb * p.lk * p.ldk4 + p.koff4 + h * DH4;
    let vbase4 = kb * p.lk * p.ldv4 + p.voff4 + h * DH4;
    // Q fragment rows of this subgroup's S fragment.
    let s_strip = sg / 4u;
    let s_kf = sg % 4u;
    let qtile = (b * p.lq + q0) * LDQ + p.qoff + h * DH;
    let qrow = qtile + FS * s_strip * LDQ;
    let ntiles = (p.lk + BK - 1u) / BK;

    // Softmax statistics: invocation v (lane-major, so a row's RI invocations are lanes of one
    // subgroup) covers row v/RI, columns 8·(v%RI) .. +8 of each tile.
    let vi = sg * SG + lane;
    let srow = vi / RI;
    let scol = (vi % RI) * 8u;
    var m_ref = M_INIT;
    var l_t = 0.0;
    // Workgroup memory starts undefined (the engine compiles without zero-initialisation); the
    // key loop's first barrier orders this before any atomicMax.
    if (lid == 0u) {
        atomicStore(&rescaled_at, 0u);
    }

    let o_strip = sg % QS;
    let o_cf = sg / QS;
    var o0: FC;
    var o1: FC;
    var o2: FC;
    var o3: FC;
    var o4: FC;
    var o5: FC;
    var o6: FC;
    var o7: FC;
    for (var t = 0u; t < ntiles; t++) {
        let k0 = t * BK;
        var acc: FC;
        for (var d0 = 0u; d0 < DH; d0 += DC) {
            workgroupBarrier();
            stage_k(kbase4, k0, d0, lid);
            stage_q(qtile, d0, lid);
            workgroupBarrier();
            for (var dd = 0u; dd < DC; dd += FS) {
                let a = q_frag(qrow, s_strip, d0 + dd, dd);
                let bm = coopLoad<FB>(&kv[(s_kf * FS * KST + dd) / 4u], KST / 4u);
                acc = coopMultiplyAdd(a, bm, acc);
            }
        }
        coopStoreT(acc, &ss[s_strip * FS * SST + s_kf * FS], SST);
        workgroupBarrier();
        let x = scores(k0, srow, scol);
        var tmax = max(max4(x[0]), max4(x[1]));
        for (var sh = 1u; sh < RI; sh <<= 1u) {
            tmax = max(tmax, subgroupShuffleXor(tmax, sh));
        }
        // The same decision in each of the row's invocations: they hold the same m_ref and tmax.
        let raise = tmax > m_ref + TAU;
        let m_new = select(m_ref, tmax, raise);
        let alpha = exp2(m_ref - m_new);
        m_ref = m_new;
        if (raise) {
            atomicMax(&rescaled_at, t + 1u);
        }
        if (vi % RI == 0u) {
            rowf[srow] = alpha;
        }
        let ea = exp2(x[0] - m_ref);
        let eb = exp2(x[1] - m_ref);
        let one = vec4<f32>(1.0);
        l_t = l_t * alpha + dot(ea, one) + dot(eb, one);
        let pa = vec4<f16>(ea);
        let pb = vec4<f16>(eb);
        let pi = (srow * PST + scol) / 4u;
        ps[pi] = pa;
        ps[pi + 1u] = pb;
        // Uniform across the workgroup (a barrier and one load): whether any row raised its max
        // at this tile. At the first tile the accumulators are still zero.
        if (workgroupUniformLoad(&rescaled_at) == t + 1u && t > 0u) {
            let r0 = FS * o_strip;
            o0 = rescale(o0, sg, lane, r0);
            if (NO > 1u) {
                o1 = rescale(o1, sg, lane, r0);
            }
            if (NO > 2u) {
                o2 = rescale(o2, sg, lane, r0);
                o3 = rescale(o3, sg, lane, r0);
            }
            if (NO > 4u) {
                o4 = rescale(o4, sg, lane, r0);
                o5 = rescale(o5, sg, lane, r0);
                o6 = rescale(o6, sg, lane, r0);
                o7 = rescale(o7, sg, lane, r0);
            }
        }
        for (var vk0 = 0u; vk0 < BK; vk0 += VK) {
            workgroupBarrier();
            stage_v(vbase4, k0 + vk0, lid);
            workgroupBarrier();
            for (var ks = 0u; ks < VK; ks += FS) {
                let a = coopLoadT<FA>(&ps[(o_strip * FS * PST + vk0 + ks) / 4u], PST / 4u);
                // In vectors: rows of V, then column fragments 4·FS apart.
                let vb = (ks * VST + o_cf * FS) / 4u;
                o0 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb], VST / 4u), o0);
                if (NO > 1u) {
                    o1 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + FS], VST / 4u), o1);
                }
                if (NO > 2u) {
                    o2 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + 2u * FS], VST / 4u), o2);
                    o3 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + 3u * FS], VST / 4u), o3);
                }
                if (NO > 4u) {
                    o4 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + 4u * FS], VST / 4u), o4);
                    o5 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + 5u * FS], VST / 4u), o5);
                    o6 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + 6u * FS], VST / 4u), o6);
                    o7 = coopMultiplyAdd(a, coopLoadT<FB>(&kv[vb + 7u * FS], VST / 4u), o7);
                }
            }
        }
    }
    // The row's sum over its RI invocations, all at the same reference max.
    for (var sh = 1u; sh < RI; sh <<= 1u) {
        l_t += subgroupShuffleXor(l_t, sh);
    }
    workgroupBarrier();
    if (vi % RI == 0u) {
        rowf[srow] = 1.0 / l_t;
    }

    // Out through `ss`: each subgroup stores one fragment to its own FS×FS slot, then its lanes
    // copy it to memory.
    let orow0 = b * p.lq + q0 + FS * o_strip;
    let ocol0 = h * DH + o_cf * FS;
    flush_out(o0, sg, lane, FS * o_strip, orow0, ocol0);
    if (NO > 1u) {
        flush_out(o1, sg, lane, FS * o_strip, orow0, ocol0 + 4u * FS);
    }
    if (NO > 2u) {
        flush_out(o2, sg, lane, FS * o_strip, orow0, ocol0 + 8u * FS);
        flush_out(o3, sg, lane, FS * o_strip, orow0, ocol0 + 12u * FS);
    }
    if (NO > 4u) {
        flush_out(o4, sg, lane, FS * o_strip, orow0, ocol0 + 16u * FS);
        flush_out(o5, sg, lane, FS * o_strip, orow0, ocol0 + 20u * FS);
        flush_out(o6, sg, lane, FS * o_strip, orow0, ocol0 + 24u * FS);
        flush_out(o7, sg, lane, FS * o_strip, orow0, ocol0 + 28u * FS);
    }
}

// Stores accumulator `c` (tile rows r0.., FS·o_strip for this subgroup) to memory rows row0..
// through this subgroup's FS×FS slot of `ss`, dividing each row by its sum (`rowf`).
fn flush_out(c: FC, sg: u32, lane: u32, r0: u32, row0: u32, col0: u32) {
    workgroupBarrier();
    coopStoreT(c, &ss[sg * (FS * FS)], FS);
    workgroupBarrier();
    for (var e = lane; e < FS * FS; e += SG) {
        o[(row0 + e / FS) * p.ldo + col0 + e % FS] = T(ss[sg * (FS * FS) + e] * rowf[r0 + e / FS]);
    }
}

// Accumulator `c` (tile rows r0..) with each row scaled by its factor in `rowf`, through this
// subgroup's FS×FS slot of `ss` (whose scores have been read by now).
fn rescale(c: FC, sg: u32, lane: u32, r0: u32) -> FC {
    let slot = sg * (FS * FS);
    coopStoreT(c, &ss[slot], FS);
    workgroupBarrier();
    for (var e = lane; e < FS * FS; e += SG) {
        ss[slot + e] *= rowf[r0 + e / FS];
    }
    workgroupBarrier();
    return coopLoadT<FC>(&ss[slot], FS);
}
