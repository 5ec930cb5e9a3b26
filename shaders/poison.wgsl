// Fills the first n words of a binding with one word: a captured graph's activation, poisoned
// before its first dispatch on a poisoning device (kernel.rs, `Capture::poison_first_use`), so a
// kernel that leaves part of its output unwritten shows NaN there, not the values of whatever
// tensor held the memory before (arena slots are reused by lifetime, and kept across replays).

struct Params {
    n: u32,
    word: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i < p.n) {
        out[i] = p.word;
    }
}
