// LayerNorm over the last axis: x viewed [rows, C], read as vectors of V channels. This part
// computes a row's statistics (`row_stats`); layer_norm.wgsl applies them, layer_norm_stats.wgsl
// writes them to a table for a matmul that normalises as it loads (matmul_a_ln.wgsl).
//
// A team of TS threads (a power of two) owns one row; 256 / TS rows per workgroup. Each thread
// keeps its E vectors of the row in registers, so x is read once and the variance is the exact
// two-pass Σ(x − mean)². Values are first shifted by the row's first element K: x − K is exact
// when |mean| ≫ σ, and the mean of x − K is of the order of σ, so neither the mean's rounding
// nor x − mean loses digits to the offset. Team sums go through a workgroup-memory tree; TS and
// E are compile-time constants. Every multiply-add is an explicit fma, so no compiler can fuse
// one kernel's and not another's: the statistics pass and the LayerNorm pass give the same bits.

struct Params {
    rows: u32,
    cv: u32,        // vectors per row (C / V)
    eps: f32,
    inv_c: f32,     // 1 / C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<VT>;

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

// A row's values shifted by K (this thread's E vectors of it), K, their mean and 1/σ.
struct RowStats {
    v: array<VF, E>,
    shift: f32,
    mean: f32,
    rstd: f32,
}

// The statistics of the calling thread's row (all 256 threads must call it; rows past the end
// read the last row).
fn row_stats(lid: u32, row: u32) -> RowStats {
    let lane = lid % TS;
    let ok = row < p.rows;
    let base = row * p.cv;
    var r: RowStats;
    r.shift = first(VF(x[min(row, p.rows - 1u) * p.cv]));
    let shift = VF(r.shift);
    var s = VF(0.0);
    for (var k = 0u; k < E; k++) {
        let j = lane + k * TS;
        if (ok && j < p.cv) {
            r.v[k] = VF(x[base + j]) - shift;
        } else {
            r.v[k] = VF(0.0);
        }
        s += r.v[k];
    }
    r.mean = team_sum(lid, hsum(s)) * p.inv_c;
    var q = VF(0.0);
    for (var k = 0u; k < E; k++) {
        if (lane + k * TS < p.cv) {
            let d = r.v[k] - VF(r.mean);
            q = fma(d, d, q);
        }
    }
    r.rstd = inverseSqrt(fma(team_sum(lid, hsum(q)), p.inv_c, p.eps));
    return r;
}
