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
// Per-thread state lives in vectors and matrices indexed only by constants: private arrays with
// loop indices end up in local memory on NVIDIA's compiler (naga bounds every loop, which
// blocks unrolling); measured, the array version ran at 1 TFLOP/s on an H200.
//   s0..s3     scores of key columns cg·TN + j for the thread's 4 rows (s2, s3 unused if TN = 2)
//   m4, l4     running max and partial row sum of the 4 rows
//   acc0..3    output chunk c (columns 4·(cg + CG·c) ..+4) as mat4x4, column i = row i
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
    groups: u32,   // workgroups that own a tile: batch · heads · nqt
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

fn sp_set(i: u32, x: f32) {
    sp[i >> 2u][i & 3u] = x;
}

// Carried state of row `row` (split dispatches): O's vec4 column c4, the running max, the sum.
fn st_base(bh: u32, row: u32) -> u32 {
    return (bh * p.lq + row) * (DH + 2u);
}

fn st_vec(bh: u32, row: u32, c4: u32) -> vec4<f32> {
    if (row >= p.lq || c4 >= DH4) {
        return vec4<f32>(0.0);
    }
    let e = st_base(bh, row) + 4u * c4;
    return vec4<f32>(st[e], st[e + 1u], st[e + 2u], st[e + 3u]);
}

fn st_m(bh: u32, row: u32) -> f32 {
    return select(M_INIT, st[st_base(bh, row) + DH], row < p.lq);
}

fn st_l(bh: u32, row: u32) -> f32 {
    return select(0.0, st[st_base(bh, row) + DH + 1u], row < p.lq);
}

fn st_chunk(bh: u32, rows: vec4<u32>, c4: u32) -> mat4x4<f32> {
    return mat4x4<f32>(st_vec(bh, rows.x, c4), st_vec(bh, rows.y, c4), st_vec(bh, rows.z, c4), st_vec(bh, rows.w, c4));
}

fn scale_cols(a: mat4x4<f32>, f: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a[0] * f.x, a[1] * f.y, a[2] * f.z, a[3] * f.w);
}

// Writes one row's vec4 of output column c4: normalised to `o` in the last part, else raw to
// the state (the row's max and sum are written by the cg == 0 thread, see `emit_stats`).
fn emit(ob: u32, bh: u32, row: u32, c4: u32, x: vec4<f32>, inv: f32, last: bool) {
    if (row >= p.lq || c4 >= DH4) {
        return;
    }
    if (last) {
        let r = x * inv;
        let e = ob + row * p.ldo + 4u * c4;
        o[e] = T(r.x);
        o[e + 1u] = T(r.y);
        o[e + 2u] = T(r.z);
        o[e + 3u] = T(r.w);
    } else {
        let e = st_base(bh, row) + 4u * c4;
        st[e] = x.x;
        st[e + 1u] = x.y;
        st[e + 2u] = x.z;
        st[e + 3u] = x.w;
    }
}

fn emit_chunk(ob: u32, bh: u32, rows: vec4<u32>, c4: u32, a: mat4x4<f32>, inv: vec4<f32>, last: bool) {
    emit(ob, bh, rows.x, c4, a[0], inv.x, last);
    emit(ob, bh, rows.y, c4, a[1], inv.y, last);
    emit(ob, bh, rows.z, c4, a[2], inv.z, last);
    emit(ob, bh, rows.w, c4, a[3], inv.w, last);
}

fn emit_stats(bh: u32, row: u32, m: f32, l: f32) {
    if (row < p.lq) {
        st[st_base(bh, row) + DH] = m;
        st[st_base(bh, row) + DH + 1u] = l;
    }
}

// The 4×4 block V[keys kk..kk+4, columns 4·c4..+4] as a matrix whose column t is key kk+t.
fn v_block(kk: u32, c4: u32) -> mat4x4<f32> {
    return mat4x4<f32>(su[kk * DH4 + c4], su[(kk + 1u) * DH4 + c4], su[(kk + 2u) * DH4 + c4], su[(kk + 3u) * DH4 + c4]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wg = wg_index(wid, nwg);
    if (wg >= p.groups) {
        return; // slack of a 2-D folded grid (uniform per workgroup): it would write past `o`
    }
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
    let rows = vec4<u32>(q0 + rg * TM) + vec4<u32>(0u, 1u, 2u, 3u);

    var m4 = vec4<f32>(M_INIT);
    var l4 = vec4<f32>(0.0);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    if (!first) {
        m4 = vec4<f32>(st_m(bh, rows.x), st_m(bh, rows.y), st_m(bh, rows.z), st_m(bh, rows.w));
        // The carried row sum is a total: one thread of the row holds it.
        if (cg == 0u) {
            l4 = vec4<f32>(st_l(bh, rows.x), st_l(bh, rows.y), st_l(bh, rows.z), st_l(bh, rows.w));
        }
        acc0 = st_chunk(bh, rows, cg);
        if (NCH > 1u) {
            acc1 = st_chunk(bh, rows, cg + CG);
        }
        if (NCH > 2u) {
            acc2 = st_chunk(bh, rows, cg + 2u * CG);
            acc3 = st_chunk(bh, rows, cg + 3u * CG);
        }
    }

    var kend = p.k_end;
    if (CAUSAL) {
        // Keys past the tile's last row are masked for every row: skip them.
        kend = min(kend, q0 + BQ);
    }

    for (var k0 = p.k_begin; k0 < kend; k0 += BK) {
        // 1. S = Q·Kᵀ for this tile.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
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
                if (TN == 4u) {
                    s0 += qv * k4.x;
                    s1 += qv * k4.y;
                    s2 += qv * k4.z;
                    s3 += qv * k4.w;
                } else {
                    let kv = select(k4.xy, k4.zw, (ka & 2u) != 0u);
                    s0 += qv * kv.x;
                    s1 += qv * kv.y;
                }
            }
        }

        // 2. Scale, mask, and the tile's row maxima.
        let key0 = k0 + cg * TN;
        let causal = vec4<bool>(CAUSAL);
        s0 = select(s0 * p.scale, vec4<f32>(MASKED), (causal & (vec4<u32>(key0) > rows)) | vec4<bool>(key0 >= kend));
        s1 = select(s1 * p.scale, vec4<f32>(MASKED), (causal & (vec4<u32>(key0 + 1u) > rows)) | vec4<bool>(key0 + 1u >= kend));
        var tmax = max(s0, s1);
        if (TN == 4u) {
            s2 = select(s2 * p.scale, vec4<f32>(MASKED), (causal & (vec4<u32>(key0 + 2u) > rows)) | vec4<bool>(key0 + 2u >= kend));
            s3 = select(s3 * p.scale, vec4<f32>(MASKED), (causal & (vec4<u32>(key0 + 3u) > rows)) | vec4<bool>(key0 + 3u >= kend));
            tmax = max(tmax, max(s2, s3));
        }
        workgroupBarrier();
        su[rg * CG + cg] = tmax;
        workgroupBarrier();
        var mx = vec4<f32>(MASKED);
        for (var c = 0u; c < CG; c++) {
            mx = max(mx, su[rg * CG + c]);
        }
        let mn = max(m4, mx);
        let alpha = exp2(m4 - mn);
        m4 = mn;
        let e0 = exp2(s0 - mn);
        let e1 = exp2(s1 - mn);
        var esum = e0 + e1;
        let pa = (rg * TM) * PS + cg * TN;
        if (TN == 4u) {
            let e2 = exp2(s2 - mn);
            let e3 = exp2(s3 - mn);
            esum += e2 + e3;
            // Row i of P is (e0[i], e1[i], e2[i], e3[i]).
            let pt = transpose(mat4x4<f32>(e0, e1, e2, e3));
            sp[pa / 4u] = pt[0];
            sp[(pa + PS) / 4u] = pt[1];
            sp[(pa + 2u * PS) / 4u] = pt[2];
            sp[(pa + 3u * PS) / 4u] = pt[3];
        } else {
            sp_set(pa, e0.x);
            sp_set(pa + 1u, e1.x);
            sp_set(pa + PS, e0.y);
            sp_set(pa + PS + 1u, e1.y);
            sp_set(pa + 2u * PS, e0.z);
            sp_set(pa + 2u * PS + 1u, e1.z);
            sp_set(pa + 3u * PS, e0.w);
            sp_set(pa + 3u * PS + 1u, e1.w);
        }
        l4 = l4 * alpha + esum;
        acc0 = scale_cols(acc0, alpha);
        if (NCH > 1u) {
            acc1 = scale_cols(acc1, alpha);
        }
        if (NCH > 2u) {
            acc2 = scale_cols(acc2, alpha);
            acc3 = scale_cols(acc3, alpha);
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
                // Column i: P[row i, kk .. kk+4].
                let pr = (rg * TM * PS + kk0 + kk) / 4u;
                let pm = mat4x4<f32>(sp[pr], sp[pr + PS / 4u], sp[pr + PS / 2u], sp[pr + 3u * PS / 4u]);
                if (cg < DH4) {
                    acc0 += v_block(kk, cg) * pm;
                }
                if (NCH > 1u && cg + CG < DH4) {
                    acc1 += v_block(kk, cg + CG) * pm;
                }
                if (NCH > 2u && cg + 2u * CG < DH4) {
                    acc2 += v_block(kk, cg + 2u * CG) * pm;
                }
                if (NCH > 3u && cg + 3u * CG < DH4) {
                    acc3 += v_block(kk, cg + 3u * CG) * pm;
                }
            }
        }
    }

    // Add up the partial row sums of the CG threads of each row.
    workgroupBarrier();
    su[rg * CG + cg] = l4;
    workgroupBarrier();
    var lt = vec4<f32>(0.0);
    for (var c = 0u; c < CG; c++) {
        lt += su[rg * CG + c];
    }
    let inv = select(vec4<f32>(0.0), 1.0 / lt, lt > vec4<f32>(0.0));
    let ob = b * p.lq * p.ldo + h * DH;
    emit_chunk(ob, bh, rows, cg, acc0, inv, last);
    if (NCH > 1u) {
        emit_chunk(ob, bh, rows, cg + CG, acc1, inv, last);
    }
    if (NCH > 2u) {
        emit_chunk(ob, bh, rows, cg + 2u * CG, acc2, inv, last);
        emit_chunk(ob, bh, rows, cg + 3u * CG, acc3, inv, last);
    }
    if (!last && cg == 0u) {
        emit_stats(bh, rows.x, m4.x, lt.x);
        emit_stats(bh, rows.y, m4.y, lt.y);
        emit_stats(bh, rows.z, m4.z, lt.z);
        emit_stats(bh, rows.w, m4.w, lt.w);
    }
}
