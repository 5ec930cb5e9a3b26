// Batched transpose [batch, R, S] -> [batch, S, R] through a workgroup tile, so both the reads
// (along S) and the writes (along R) are contiguous runs (ops/layout.rs).
// NCHW -> NHWC is R = C, S = H*W; NHWC -> NCHW is R = H*W, S = C; the video permutes
// [B, C, F, H, W] <-> [B, F, H, W, C] are the same with F*H*W in place of H*W.
// One workgroup per TR x TS tile (32 x 8 threads): each thread loads 8 elements and stores 8,
// so several loads are in flight per thread. The tile is f32 whatever T is (exact for f16) and
// padded to TS + 1 columns, so the column-wise reads hit distinct banks.

const TR: u32 = 32u;   // tile extent along R (the output's contiguous axis)
const TS: u32 = 64u;   // tile extent along S (the input's contiguous axis)

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

var<workgroup> tile: array<f32, 2080>;   // TR * (TS + 1)

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

    for (var j = 0u; j < TR; j += 8u) {
        let lr = lid.y + j;
        let row = tr * TR + lr;
        for (var h = 0u; h < TS; h += 32u) {
            let col = ts * TS + lid.x + h;
            if (row < p.r && col < p.s) {
                tile[lr * (TS + 1u) + lid.x + h] = f32(src[base + row * p.s + col]);
            }
        }
    }
    workgroupBarrier();
    let ocol = tr * TR + lid.x;
    for (var j = 0u; j < TS; j += 8u) {
        let ls = lid.y + j;
        let orow = ts * TS + ls;
        if (orow < p.s && ocol < p.r) {
            dst[base + orow * p.r + ocol] = T(tile[lid.x * (TS + 1u) + ls]);
        }
    }
}
