// Flash attention: out = softmax(Q·Kᵀ·scale [+ causal mask])·V per (batch, head), with an online
// softmax over key tiles, so the Lq×Lk score matrix never leaves workgroup memory.
//
// One workgroup of 256 threads owns BQ = 4·RG query rows of one (batch, head) and walks the keys
// BK = CG·TN at a time (CG = 256 / RG). Thread (rg, cg) owns rows rg·4 .. rg·4+3 of the tile, the
// score columns cg·TN .. cg·TN+TN−1, and the output columns (vec4 units) cg, cg+CG, cg+2·CG, ...
// For each key tile:
//   1. S = Q·Kᵀ in chunks of DC channels staged (transposed) through `su`;
//   2. the tile's row maxima are reduced across the CG threads of a row through `su`; the row's
//      running max, the output accumulators and the per-thread partial row sums are rescaled;
//   3. P = exp2(S − max) goes to `sp`, then V is staged KS keys at a time through `su` and
//      O += P·V. The per-thread partial row sums are only added up once, at the end.
// Scores are kept in log2 units (scale·log2 e folded into p.scale) so exp2 replaces exp.
//
// Constants from the dispatcher: DH (head width, a multiple of 4), RG, TN (2 or 4), KS (keys per
// staged V block, a multiple of 4 dividing BK), UF (floats in `su`), PS (row stride of `sp`),
// CAUSAL (query i sees keys <= i).
//
// Long key ranges can be cut into several dispatches that carry (O, running max, row sum) in the
// f32 state buffer `st` (flags bit 0: first part, bit 1: last part): lavapipe stops any shader
// loop after 65 535 iterations in total, and the engine splits the keys there.

const TM: u32 = 4u;
const NT: u32 = 256u;
const CG: u32 = NT / RG;
const BQ: u32 = RG * TM;
const BK: u32 = CG * TN;
const DC: u32 = 16u;
const DH4: u32 = DH / 4u;
const NCH: u32 = (DH4 + CG - 1u) / CG;
// Transposed Q and K chunks, [DC][BQ + 4] and [DC][BK + 4]: the padding spreads the scattered
// writes over banks while keeping rows vec4-aligned for the reads.
const QSTR: u32 = BQ + 4u;
const KSTR: u32 = BK + 4u;
const KOFF: u32 = DC * QSTR;
const MASKED: f32 = -3.0e38;
const M_INIT: f32 = -1.0e30;

struct Params {
    lq: u32,
    lk: u32,
    heads: u32,
    nqt: u32,      // query tiles per (batch, head)
    ldq: u32,      // row strides (elements)
    ldk: u32,
    ldv: u32,
    ldo: u32,
    qoff: u32,     // channel offsets of head 0 (elements): fused QKV tensors
    koff: u32,
    voff: u32,
    kv_div: u32,   // K/V batch = batch / kv_div (K/V shared by kv_div consecutive batch entries)
    k_begin: u32,  // key range of this dispatch
    k_end: u32,
    flags: u32,
    scale: f32,    // softmax scale · log2(e)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read_write> o: array<T>;
@group(0) @binding(5) var<storage, read_write> st: array<f32>;

var<workgroup> sp: array<vec4<f32>, BQ * PS / 4u>;
var<workgroup> su: array<vec4<f32>, UF / 4u>;

fn su_set(i: u32, x: f32) {
    su[i >> 2u][i & 3u] = x;
}

fn max4(w: vec4<f32>) -> f32 {
    return max(max(w.x, w.y), max(w.z, w.w));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wg = wg_index(wid, nwg);
    let qt = wg % p.nqt;
    let bh = wg / p.nqt;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let kb = b / p.kv_div;
    let q0 = qt * BQ;
    let rg = lid / CG;
    let cg = lid % CG;
    let qbase = b * p.lq * p.ldq + p.qoff + h * DH;
    let kbase = kb * p.lk * p.ldk + p.koff + h * DH;
    let vbase = kb * p.lk * p.ldv + p.voff + h * DH;
    let first = (p.flags & 1u) != 0u;
    let last = (p.flags & 2u) != 0u;

    var m: array<f32, TM>;
    var l: array<f32, TM>;
    var acc: array<vec4<f32>, TM * NCH>;
    for (var i = 0u; i < TM; i++) {
        let row = q0 + rg * TM + i;
        m[i] = M_INIT;
        l[i] = 0.0;
        for (var c = 0u; c < NCH; c++) {
            acc[i * NCH + c] = vec4<f32>(0.0);
        }
        if (!first && row < p.lq) {
            let sb = (bh * p.lq + row) * (DH + 2u);
            m[i] = st[sb + DH];
            // The carried row sum is a total: one thread of the row holds it.
            l[i] = select(0.0, st[sb + DH + 1u], cg == 0u);
            for (var c = 0u; c < NCH; c++) {
                let c4 = cg + CG * c;
                if (c4 < DH4) {
                    let e = sb + 4u * c4;
                    acc[i * NCH + c] = vec4<f32>(st[e], st[e + 1u], st[e + 2u], st[e + 3u]);
                }
            }
        }
    }

    var kend = p.k_end;
    if (CAUSAL) {
        // Keys past the tile's last row are masked for every row: skip them.
        kend = min(kend, q0 + BQ);
    }

    for (var k0 = p.k_begin; k0 < kend; k0 += BK) {
        // 1. S = Q·Kᵀ for this tile.
        var s: array<f32, TM * TN>;
        for (var e = 0u; e < TM * TN; e++) {
            s[e] = 0.0;
        }
        for (var d0 = 0u; d0 < DH; d0 += DC) {
            workgroupBarrier();
            for (var e = lid; e < BQ * DC; e += NT) {
                let r = e / DC;
                let d = d0 + e % DC;
                var x = 0.0;
                if (q0 + r < p.lq && d < DH) {
                    x = f32(q[qbase + (q0 + r) * p.ldq + d]);
                }
                su_set((e % DC) * QSTR + r, x);
            }
            for (var e = lid; e < BK * DC; e += NT) {
                let r = e / DC;
                let d = d0 + e % DC;
                var x = 0.0;
                if (k0 + r < kend && d < DH) {
                    x = f32(k[kbase + (k0 + r) * p.ldk + d]);
                }
                su_set(KOFF + (e % DC) * KSTR + r, x);
            }
            workgroupBarrier();
            for (var d = 0u; d < DC; d++) {
                let qv = su[(d * QSTR) / 4u + rg];
                let ka = KOFF + d * KSTR + cg * TN;
                let k4 = su[ka / 4u];
                var kv: vec4<f32>;
                if (TN == 4u) {
                    kv = k4;
                } else {
                    kv = select(k4.xyxy, k4.zwzw, (ka & 2u) != 0u);
                }
                for (var i = 0u; i < TM; i++) {
                    for (var j = 0u; j < TN; j++) {
                        s[i * TN + j] += qv[i] * kv[j];
                    }
                }
            }
        }

        // 2. Scale, mask, and the tile's row maxima.
        var tmax: array<f32, TM>;
        for (var i = 0u; i < TM; i++) {
            let row = q0 + rg * TM + i;
            var mx = MASKED;
            for (var j = 0u; j < TN; j++) {
                let key = k0 + cg * TN + j;
                var x = s[i * TN + j] * p.scale;
                if (key >= kend || (CAUSAL && key > row)) {
                    x = MASKED;
                }
                s[i * TN + j] = x;
                mx = max(mx, x);
            }
            tmax[i] = mx;
        }
        workgroupBarrier();
        for (var i = 0u; i < TM; i++) {
            su_set((rg * TM + i) * CG + cg, tmax[i]);
        }
        workgroupBarrier();
        for (var i = 0u; i < TM; i++) {
            var mx = MASKED;
            for (var c = 0u; c < CG / 4u; c++) {
                mx = max(mx, max4(su[((rg * TM + i) * CG) / 4u + c]));
            }
            let mn = max(m[i], mx);
            let alpha = exp2(m[i] - mn);
            m[i] = mn;
            var ps = 0.0;
            for (var j = 0u; j < TN; j++) {
                let e = exp2(s[i * TN + j] - mn);
                s[i * TN + j] = e;
                ps += e;
            }
            l[i] = l[i] * alpha + ps;
            for (var c = 0u; c < NCH; c++) {
                acc[i * NCH + c] *= alpha;
            }
            let pa = (rg * TM + i) * PS + cg * TN;
            if (TN == 4u) {
                sp[pa / 4u] = vec4<f32>(s[i * TN], s[i * TN + 1u], s[i * TN + 2u], s[i * TN + 3u]);
            } else {
                for (var j = 0u; j < TN; j++) {
                    sp[(pa + j) / 4u][(pa + j) & 3u] = s[i * TN + j];
                }
            }
        }

        // 3. O += P·V, KS keys of V at a time.
        for (var kk0 = 0u; kk0 < BK; kk0 += KS) {
            if (k0 + kk0 >= kend) {
                break;
            }
            workgroupBarrier();
            for (var e = lid; e < KS * DH; e += NT) {
                let key = k0 + kk0 + e / DH;
                var x = 0.0;
                if (key < kend) {
                    x = f32(v[vbase + key * p.ldv + e % DH]);
                }
                su_set(e, x);
            }
            workgroupBarrier();
            for (var kk = 0u; kk < KS; kk += 4u) {
                var pv: array<vec4<f32>, TM>;
                for (var i = 0u; i < TM; i++) {
                    pv[i] = sp[((rg * TM + i) * PS + kk0 + kk) / 4u];
                }
                for (var c = 0u; c < NCH; c++) {
                    let c4 = cg + CG * c;
                    if (c4 < DH4) {
                        let v0 = su[kk * DH4 + c4];
                        let v1 = su[(kk + 1u) * DH4 + c4];
                        let v2 = su[(kk + 2u) * DH4 + c4];
                        let v3 = su[(kk + 3u) * DH4 + c4];
                        for (var i = 0u; i < TM; i++) {
                            acc[i * NCH + c] += pv[i].x * v0 + pv[i].y * v1 + pv[i].z * v2 + pv[i].w * v3;
                        }
                    }
                }
            }
        }
    }

    // Add up the partial row sums of the CG threads of each row.
    workgroupBarrier();
    for (var i = 0u; i < TM; i++) {
        su_set((rg * TM + i) * CG + cg, l[i]);
    }
    workgroupBarrier();
    for (var i = 0u; i < TM; i++) {
        let row = q0 + rg * TM + i;
        if (row >= p.lq) {
            continue;
        }
        var lt = 0.0;
        for (var c = 0u; c < CG / 4u; c++) {
            let w = su[((rg * TM + i) * CG) / 4u + c];
            lt += (w.x + w.y) + (w.z + w.w);
        }
        if (last) {
            let inv = select(0.0, 1.0 / lt, lt > 0.0);
            let ob = (b * p.lq + row) * p.ldo + h * DH;
            for (var c = 0u; c < NCH; c++) {
                let c4 = cg + CG * c;
                if (c4 < DH4) {
                    let r = acc[i * NCH + c] * inv;
                    o[ob + 4u * c4] = T(r.x);
                    o[ob + 4u * c4 + 1u] = T(r.y);
                    o[ob + 4u * c4 + 2u] = T(r.z);
                    o[ob + 4u * c4 + 3u] = T(r.w);
                }
            }
        } else {
            let sb = (bh * p.lq + row) * (DH + 2u);
            if (cg == 0u) {
                st[sb + DH] = m[i];
                st[sb + DH + 1u] = lt;
            }
            for (var c = 0u; c < NCH; c++) {
                let c4 = cg + CG * c;
                if (c4 < DH4) {
                    let r = acc[i * NCH + c];
                    st[sb + 4u * c4] = r.x;
                    st[sb + 4u * c4 + 1u] = r.y;
                    st[sb + 4u * c4 + 2u] = r.z;
                    st[sb + 4u * c4 + 3u] = r.w;
                }
            }
        }
    }
}
