// Copies one input of a concatenation into its slot of the output (ops/concat.rs).
// The input is viewed as [rows, ci] and lands in out viewed [rows, co] at column `off`:
// channel concat of channels-last tensors has rows = the product of the leading dims; concat
// along axis 0 is rows = 1, ci = the input's element count, off = the elements before it.
// The Rust side prepends `alias V` / `const VW`: all of ci, co and off are counted in V
// (vec4<T> when each is a multiple of 4, so one thread moves 4 elements with one load).

struct Params {
    n: u32,    // vectors to copy: rows * ci
    ci: u32,
    co: u32,
    off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> dst: array<V>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let row = i / p.ci;
    let col = i - row * p.ci;
    dst[row * p.co + p.off + col] = src[i];
}
