// Copies one input of a concatenation into its slot of the output (ops/concat.rs).
// The input is viewed as [rows, ci] and lands in out viewed [rows, co] at column `off`:
// channel concat of channels-last tensors has rows = the product of the leading dims; concat
// along axis 0 is rows = 1, ci = the input's element count, off = the elements before it.
// The Rust side prepends `alias V`: the unit one load moves, and the unit ci, co and off count
// in. It is vec4<u32> (16 bytes, the widest load) when every row segment is a multiple of 16
// bytes, else vec4<T> or T. A pure copy never looks at the values, so raw words are fine.
// Each thread moves 4 units strided by the workgroup size: four independent loads in flight
// per thread keep enough bytes moving to cover memory latency.

struct Params {
    n: u32,    // units to copy: rows * ci
    ci: u32,
    co: u32,
    off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> dst: array<V>;

fn dst_index(i: u32) -> u32 {
    let row = i / p.ci;
    return row * p.co + p.off + (i - row * p.ci);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i0 = wg_index(wid, nwg) * 1024u + lid;
    let i1 = i0 + 256u;
    let i2 = i0 + 512u;
    let i3 = i0 + 768u;
    // All loads before any store: the compiler cannot assume src and dst don't alias.
    var v0: V;
    var v1: V;
    var v2: V;
    var v3: V;
    if (i0 < p.n) { v0 = src[i0]; }
    if (i1 < p.n) { v1 = src[i1]; }
    if (i2 < p.n) { v2 = src[i2]; }
    if (i3 < p.n) { v3 = src[i3]; }
    if (i0 < p.n) { dst[dst_index(i0)] = v0; }
    if (i1 < p.n) { dst[dst_index(i1)] = v1; }
    if (i2 < p.n) { dst[dst_index(i2)] = v2; }
    if (i3 < p.n) { dst[dst_index(i3)] = v3; }
}
