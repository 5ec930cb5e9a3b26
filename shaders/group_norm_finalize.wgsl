// GroupNorm pass 2 of 3: one workgroup per (segment, group) combines the chunk partials into the
// mean and 1/σ, and folds them with the affine weights into a per-(segment, channel) table
//   scale = γ·rstd, shift K, offset = β − (mean − K)·scale
// so the apply pass computes y = (x − K)·scale + offset. Keeping K apart from mean − K means
// x − K is (nearly) exact when |mean| ≫ σ, where x·scale + (β − mean·scale) would cancel.

struct Params {
    c: u32,         // channels
    cg: u32,        // channels per group
    groups: u32,
    nchunks: u32,
    seg_px: u32,
    eps: f32,
    total_wg: u32,  // segments * groups
}

@group(0) @binding(0) var<uniform> p: Params;
// The statistics pass's partials, then its shifts K (see group_norm_stats.wgsl)
@group(0) @binding(1) var<storage, read> part: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
// [segments, 3, C]: scales, shifts K, offsets
@group(0) @binding(4) var<storage, read_write> table: array<f32>;

var<workgroup> red: array<vec2<f32>, 256>;
var<workgroup> stats: vec2<f32>;
var<workgroup> shift_k: f32;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = wg_index(wid, nwg);
    if (w >= p.total_wg) {
        return;
    }
    let seg = w / p.groups;
    let g = w % p.groups;
    var acc = vec2<f32>(0.0);
    for (var i = lid; i < p.nchunks; i += 256u) {
        acc += part[(seg * p.nchunks + i) * p.groups + g];
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let n = f32(p.seg_px) * f32(p.cg);
        // The shift K the statistics pass subtracted, stored after the partials.
        let k = part[p.total_wg * p.nchunks + w].x;
        let m = red[0].x / n;
        let var_ = max(red[0].y / n - m * m, 0.0);   // biased, as PyTorch
        stats = vec2<f32>(m, inverseSqrt(var_ + p.eps));
        shift_k = k;
    }
    workgroupBarrier();
    let st = stats;
    let k = shift_k;
    let tb = seg * 3u * p.c;
    for (var j = lid; j < p.cg; j += 256u) {
        let c = g * p.cg + j;
        let a = gamma[c] * st.y;
        table[tb + c] = a;
        table[tb + p.c + c] = k;
        table[tb + 2u * p.c + c] = beta[c] - st.x * a;
    }
}
