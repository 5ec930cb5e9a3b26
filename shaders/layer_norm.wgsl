// LayerNorm over the last axis: x viewed [rows, C], read as vectors of V channels.
//
// A team of TS threads (a power of two) owns one row; 256 / TS rows per workgroup. Each thread
// keeps its E vectors of the row in registers, so x is read once and the variance is the exact
// two-pass Σ(x − mean)². Values are first shifted by the row's first element K: x − K is exact
// when |mean| ≫ σ, and the mean of x − K is of the order of σ, so neither the mean's rounding
// nor x − mean loses digits to the offset. Team sums go through a workgroup-memory tree; TS and
// E are compile-time constants.

struct Params {
    rows: u32,
    cv: u32,        // vectors per row (C / V)
    eps: f32,
    inv_c: f32,     // 1 / C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<VT>;
@group(0) @binding(2) var<storage, read> gamma: array<VF>;
@group(0) @binding(3) var<storage, read> beta: array<VF>;
@group(0) @binding(4) var<storage, read_write> out: array<VT>;

var<workgroup> red: array<f32, 256>;

// Sum of `v` over the calling thread's team (all 256 threads must call it).
fn team_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    let lane = lid % TS;
    for (var stride = TS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let r = red[lid - lane];
    workgroupBarrier();   // red is reused by the next call
    return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TS;
    let row = wg_index(wid, nwg) * (256u / TS) + lid / TS;
    let ok = row < p.rows;
    let base = row * p.cv;

    let shift = VF(first(VF(x[min(row, p.rows - 1u) * p.cv])));
    var v: array<VF, E>;
    var s = VF(0.0);
    for (var k = 0u; k < E; k++) {
        let j = lane + k * TS;
        if (ok && j < p.cv) {
            v[k] = VF(x[base + j]) - shift;
        } else {
            v[k] = VF(0.0);
        }
        s += v[k];
    }
    let mean = team_sum(lid, hsum(s)) * p.inv_c;
    var q = VF(0.0);
    for (var k = 0u; k < E; k++) {
        if (lane + k * TS < p.cv) {
            let d = v[k] - VF(mean);
            q += d * d;
        }
    }
    let rstd = inverseSqrt(team_sum(lid, hsum(q)) * p.inv_c + p.eps);
    if (!ok) {
        return;
    }
    for (var k = 0u; k < E; k++) {
        let j = lane + k * TS;
        if (j < p.cv) {
            out[base + j] = VT((v[k] - VF(mean)) * rstd * gamma[j] + beta[j]);
        }
    }
}
