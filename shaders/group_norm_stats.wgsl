// GroupNorm pass 1 of 3: partial statistics of one chunk of pixels of one segment, for one block
// of whole groups (see ops/norm.rs for the geometry).
//
// x is channels-last, viewed as [segments, seg_px, C] and read as vectors of V channels (V divides
// the group width, so a vector never straddles two groups) through xv (group_norm_x_one.wgsl, or
// group_norm_x_pair.wgsl for a channel pair). Thread `lid` owns one vector slot of
// the channel block (`slot`) and walks the chunk's pixels `row, row + rows, ...`, so its V
// channels never change and every row of threads reads one contiguous span of memory.
//
// Numerics: values are shifted by K = the group's first element in the segment before summing,
// so Σ(x−K)² − (Σ(x−K))²/n does not cancel catastrophically when |mean| ≫ std (K is a sample of
// the group, so |mean − K| is of the order of the standard deviation). Each thread sums at most
// ITER values; partials are combined by a tree here and in the finalize pass.

struct Params {
    cv: u32,        // vectors per pixel (C / V)
    cg: u32,        // channels per group
    groups: u32,
    gpb: u32,       // groups per channel block
    cgv: u32,       // vectors per group (cg / V)
    lanes: u32,     // vector slots per block (gpb * cgv), <= 256
    rows: u32,      // pixel rows in flight per workgroup (256 / lanes)
    rows_p2: u32,   // rows rounded up to a power of two
    seg_px: u32,    // pixels per statistics segment (H·W, or F·H·W when pooled)
    chunk_px: u32,  // pixels per workgroup (a multiple of 4 * rows)
    nchunks: u32,   // chunks per segment
    nblk: u32,      // channel blocks
    total_wg: u32,  // segments * nchunks * nblk (the grid may hold a few more)
    pair_cv1: u32,  // a channel pair's vectors in its first part (group_norm_x_pair.wgsl)
    pair_rows_a: u32,
    pair_rows_b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// [segments, nchunks, groups] of (Σ(x−K), Σ(x−K)²), then [segments, groups] of (K, 0) for the
// finalize pass (so it need not bind x for one element per group)
@group(0) @binding(2) var<storage, read_write> part: array<vec2<f32>>;

var<workgroup> red: array<vec2<f32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = wg_index(wid, nwg);
    if (w >= p.total_wg) {
        return;
    }
    let blk = w % p.nblk;
    let rest = w / p.nblk;
    let chunk = rest % p.nchunks;
    let seg = rest / p.nchunks;
    let row = lid / p.lanes;
    let slot = lid % p.lanes;
    let g = blk * p.gpb + slot / p.cgv;
    let live = row < p.rows && g < p.groups;
    let cvec = blk * p.lanes + slot;
    let base = seg * p.seg_px;

    var s = VF(0.0);
    var q = VF(0.0);
    if (live) {
        let shift = VF(first(VF(xv(base, (g * p.cg) / V))));
        let px1 = min(chunk * p.chunk_px + p.chunk_px, p.seg_px);
        let last = px1 - 1u;
        let step = p.rows;
        // Four independent loads per trip keep several memory requests in flight per thread.
        for (var px = chunk * p.chunk_px + row; px < px1; px += 4u * step) {
            let pb = px + step;
            let pc = px + 2u * step;
            let pd = px + 3u * step;
            let va = VF(xv(base + px, cvec));
            let vb = VF(xv(base + min(pb, last), cvec));
            let vc = VF(xv(base + min(pc, last), cvec));
            let vd = VF(xv(base + min(pd, last), cvec));
            let da = va - shift;
            let db = select(VF(0.0), vb - shift, pb < px1);
            let dc = select(VF(0.0), vc - shift, pc < px1);
            let dd = select(VF(0.0), vd - shift, pd < px1);
            s += (da + db) + (dc + dd);
            q += (da * da + db * db) + (dc * dc + dd * dd);
        }
    }
    red[lid] = vec2<f32>(hsum(s), hsum(q));
    workgroupBarrier();
    // Tree over the rows; slot k of row 0 ends up with the chunk's sums for that slot.
    for (var stride = p.rows_p2 / 2u; stride > 0u; stride = stride / 2u) {
        if (row < stride && row + stride < p.rows) {
            red[lid] += red[lid + stride * p.lanes];
        }
        workgroupBarrier();
    }
    if (lid < p.gpb) {
        let gg = blk * p.gpb + lid;
        if (gg < p.groups) {
            var acc = vec2<f32>(0.0);
            for (var k = 0u; k < p.cgv; k++) {
                acc += red[lid * p.cgv + k];
            }
            part[(seg * p.nchunks + chunk) * p.groups + gg] = acc;
            if (chunk == 0u) {
                let k = first(VF(xv(base, (gg * p.cg) / V)));
                part[(p.total_wg / p.nblk) * p.groups + seg * p.groups + gg] = vec2<f32>(k, 0.0);
            }
        }
    }
}
