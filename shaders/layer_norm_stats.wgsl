// LayerNorm's statistics only (layer_norm_row.wgsl precedes this file): per row (K, mean, 1/σ, 0),
// for a matmul that applies them as it loads the row (matmul_a_ln.wgsl), with the arithmetic of
// layer_norm.wgsl's pass, so the two give the matmul the same operands.

@group(0) @binding(2) var<storage, read_write> table: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg_index(wid, nwg) * (256u / TS) + lid / TS;
    let r = row_stats(lid, row);
    if (row < p.rows && lid % TS == 0u) {
        table[row] = vec4<f32>(r.shift, r.mean, r.rstd, 0.0);
    }
}
