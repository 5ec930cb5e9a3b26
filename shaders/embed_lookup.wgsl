// Embedding table lookup (ops/embed.rs): out[i, :] = table[min(ids[i], V - 1), :].
// Out-of-range ids are clamped to the last row: a shader cannot report an error, and reading
// past the table would be undefined. The Rust side prepends `alias V` / `const VW`
// (vec4<T> rows when D % 4 == 0); `dv` and indices count in V.

struct Params {
    n: u32,      // n_ids * dv
    dv: u32,     // D / VW
    rows: u32,   // V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<V>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<V>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let row = i / p.dv;
    let col = i - row * p.dv;
    let id = min(ids[row], p.rows - 1u);
    out[i] = table[id * p.dv + col];
}
