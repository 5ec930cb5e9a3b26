// Batched transpose [batch, R, S] -> [batch, S, R] through a workgroup tile, so both the reads
// (along S) and the writes (along R) are contiguous runs of TILE elements (ops/layout.rs).
// NCHW -> NHWC is R = C, S = H*W; NHWC -> NCHW is R = H*W, S = C; the video permutes
// [B, C, F, H, W] <-> [B, F, H, W, C] are the same with F*H*W in place of H*W.
// One workgroup per TILE x TILE tile, TILE x ROWS threads, each moving TILE / ROWS elements.
// (A 32 x 64 tile with 8 elements per thread measured slower on an H200: 1.26 ms against
// 1.00 ms for [16, 256, 128, 128] f16.)
// The tile is f32 whatever T is (exact for f16) and padded to TILE + 1 columns, so the
// column-wise reads hit distinct banks.

const TILE: u32 = 32u;
const ROWS: u32 = 8u;

struct Params {
    r: u32,
    s: u32,
    tiles_r: u32,
    tiles_s: u32,
    tiles: u32,   // batch * tiles_r * tiles_s
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

var<workgroup> tile: array<f32, 1056>;   // TILE * (TILE + 1)

@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = wg_index(wid, nwg);
    if (w >= p.tiles) {
        return;   // uniform per workgroup: padding of a folded 2-D grid
    }
    let ts = w % p.tiles_s;
    let rest = w / p.tiles_s;
    let tr = rest % p.tiles_r;
    let b = rest / p.tiles_r;
    let base = b * p.r * p.s;

    let col = ts * TILE + lid.x;
    for (var j = 0u; j < TILE; j += ROWS) {
        let row = tr * TILE + lid.y + j;
        if (row < p.r && col < p.s) {
            tile[(lid.y + j) * (TILE + 1u) + lid.x] = f32(src[base + row * p.s + col]);
        }
    }
    workgroupBarrier();
    let ocol = tr * TILE + lid.x;
    for (var j = 0u; j < TILE; j += ROWS) {
        let orow = ts * TILE + lid.y + j;
        if (orow < p.s && ocol < p.r) {
            dst[base + orow * p.r + ocol] = T(tile[lid.x * (TILE + 1u) + lid.y + j]);
        }
    }
}
