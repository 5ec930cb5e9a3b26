// LayerNorm's pass: y = (x − K − mean)·(1/σ)·γ + β over each row (statistics: layer_norm_row.wgsl,
// which precedes this file).

@group(0) @binding(2) var<storage, read> gamma: array<VF>;
@group(0) @binding(3) var<storage, read> beta: array<VF>;
@group(0) @binding(4) var<storage, read_write> out: array<VT>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TS;
    let row = wg_index(wid, nwg) * (256u / TS) + lid / TS;
    let r = row_stats(lid, row);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cv;
    for (var k = 0u; k < E; k++) {
        let j = lane + k * TS;
        if (j < p.cv) {
            // fma: no compiler may round this differently in matmul_a_ln.wgsl.
            out[base + j] = VT(fma((r.v[k] - VF(r.mean)) * r.rstd, gamma[j], beta[j]));
        }
    }
}
