// GroupNorm pass 3 of 3: y = (x − K)·scale + offset (then SiLU when SILU), with the same
// workgroup geometry as the statistics pass, so each thread loads its V channels' table once.
// x is read through xv (group_norm_x_one.wgsl, or group_norm_x_pair.wgsl for a channel pair,
// whose output is then their normalised concatenation).
//
// Workgroups run in the reverse order of the statistics pass: the chunks read last by pass 1 are
// the likeliest to still be in the L2 cache when this pass starts.

struct Params {
    cv: u32,
    cg: u32,
    groups: u32,
    gpb: u32,
    cgv: u32,
    lanes: u32,
    rows: u32,
    rows_p2: u32,
    seg_px: u32,
    chunk_px: u32,
    nchunks: u32,
    nblk: u32,
    total_wg: u32,
    pair_cv1: u32,
    pair_rows_a: u32,
    pair_rows_b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> table: array<VF>;
@group(0) @binding(3) var<storage, read_write> out: array<VT>;

fn finish(v: VF) -> VT {
    if (SILU) {
        return VT(v / (VF(1.0) + exp(-v)));
    }
    return VT(v);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let fw = wg_index(wid, nwg);
    if (fw >= p.total_wg) {
        return;
    }
    let w = p.total_wg - 1u - fw;
    let blk = w % p.nblk;
    let rest = w / p.nblk;
    let chunk = rest % p.nchunks;
    let seg = rest / p.nchunks;
    let row = lid / p.lanes;
    let slot = lid % p.lanes;
    let g = blk * p.gpb + slot / p.cgv;
    if (row >= p.rows || g >= p.groups) {
        return;
    }
    let cvec = blk * p.lanes + slot;
    let base = seg * p.seg_px;
    let tb = seg * 3u * p.cv + cvec;
    let a = table[tb];
    let k = table[tb + p.cv];
    let b = table[tb + 2u * p.cv];
    let px1 = min(chunk * p.chunk_px + p.chunk_px, p.seg_px);
    let last = px1 - 1u;
    let step = p.rows;
    // All four loads are issued before any store (storage buffers may alias as far as the
    // compiler knows, so it would not hoist loads above stores itself).
    for (var px = chunk * p.chunk_px + row; px < px1; px += 4u * step) {
        let ia = (base + px) * p.cv + cvec;
        let ib = (base + min(px + step, last)) * p.cv + cvec;
        let ic = (base + min(px + 2u * step, last)) * p.cv + cvec;
        let id = (base + min(px + 3u * step, last)) * p.cv + cvec;
        let va = VF(xv(base + px, cvec));
        let vb = VF(xv(base + min(px + step, last), cvec));
        let vc = VF(xv(base + min(px + 2u * step, last), cvec));
        let vd = VF(xv(base + min(px + 3u * step, last), cvec));
        // fma: the kernels that apply the table as they load (conv_x_norm.wgsl, matmul_a_gn.wgsl)
        // compute the same bits, whatever a compiler would fuse.
        out[ia] = finish(fma(va - k, a, b));
        if (px + step < px1) { out[ib] = finish(fma(vb - k, a, b)); }
        if (px + 2u * step < px1) { out[ic] = finish(fma(vc - k, a, b)); }
        if (px + 3u * step < px1) { out[id] = finish(fma(vd - k, a, b)); }
    }
}
