// Adds one to a counter: the last dispatch of every command buffer of kernels the engine submits
// (gpu/seal.rs). Every readback also copies the counter, so work that stopped before its end (a
// GPU timeout or out-of-memory that the backend did not report, as on Metal) is an error there,
// not frames computed from what that work never wrote.

@group(0) @binding(0) var<storage, read_write> count: array<u32, 1>;

@compute @workgroup_size(1)
fn main() {
    count[0] = count[0] + 1u;
}
