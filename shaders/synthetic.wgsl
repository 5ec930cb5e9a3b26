// Seeded random weights written straight into a kernel's packed layout (src/ops/synthetic.rs).
// The generator is weights::Synthetic, its host twin: element i of a tensor is
// mean + half_width·u(i), u(i) = 24 bits of mix32(mix32(i + key0) ^ key1) as an exact f32 on
// [−1, 1).
// MODE (const):
//   0 zero: out[i] = 0 for i < n (the layout's padding, before the fills).
//   1 fill: for entry e of the row table (dst_row, base, stride) and column c < cols,
//           out[dst_row·row_len + col0 + c·col_step] = (mean + half_width·u(base + c·stride))·factor.
//           Workgroup (x, y) does columns 256x… of entry first + y: no division, and the
//           entry is uniform across the workgroup (a software driver's SIMD loop loads it once).

struct Params {
    n: u32,          // MODE 0: elements
    first: u32,      // MODE 1: the row table entry of workgroup row 0
    cols: u32,
    row_len: u32,
    col0: u32,
    col_step: u32,
    key0: u32,
    key1: u32,
    mean: f32,
    half_width: f32,
    factor: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

// Wellons' "lowbias32".
fn mix32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    return x ^ (x >> 16u);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if (MODE == 0u) {
        let i = wg_index(wid, nwg) * 256u + lid;
        if (i < p.n) {
            out[i] = T(0.0);
        }
        return;
    }
    let c = wid.x * 256u + lid;
    if (c >= p.cols) {
        return;
    }
    let e = 3u * (p.first + wid.y);
    let dst = rows[e] * p.row_len + p.col0 + c * p.col_step;
    let src = rows[e + 1u] + c * rows[e + 2u];
    let w = mix32(mix32(src + p.key0) ^ p.key1);
    let u = f32(i32(w >> 8u) - 8388608) * (1.0 / 8388608.0);
    out[dst] = T((p.mean + p.half_width * u) * p.factor);
}
