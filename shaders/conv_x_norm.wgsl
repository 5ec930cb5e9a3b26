// The convolution's input is a GroupNorm's output (then SiLU when SILU), normalised as it loads
// (ops/conv/mod.rs, `conv2d_normed`): x is the norm's input, `norm` its [segments, 3, Cin] table of
// scales, shifts K and offsets (group_norm_finalize.wgsl), segments of p.seg_frames frames. The
// arithmetic is group_norm_apply.wgsl's, rounded to T as that pass stores it, so both paths give
// the convolution the same operands. Needs Cin % 4 == 0 (conv_x_vec4.wgsl's loads).
@group(0) @binding(6) var<storage, read> norm: array<vec4<f32>>;

// The segment of each row of the tile, for a norm pooled over several frames (a clip): every
// tap of a row reads a frame of the row's clip (the host checks that a 3-D convolution's clips
// lie within segments), so one division per row, in x_norm_row, serves all of its loads.
var<workgroup> row_seg: array<u32, BM>;

// Called with row r's row_info as the kernel sets up its tile.
fn x_norm_row(r: u32, ri: vec4<i32>) {
    if (p.seg_frames > 1u && ri.x >= 0) {
        row_seg[r] = u32(ri.x) / p.seg_frames;
    }
}

// The table index (in vectors) of channels ci..ci+3 of pixel `pix`, read by time tap `tt` of
// the tile's row r (row_info `ri`), or NO_NORM where the load is zero padding (which stays zero:
// the padding is the norm's output's). A norm per frame has the tap's frame as its segment.
const NO_NORM: u32 = 0xffffffffu;

fn x_norm_at(r: u32, ri: vec4<i32>, tt: u32, pix: i32, ci: u32) -> u32 {
    if (pix < 0 || ci >= p.cin) {
        return NO_NORM;
    }
    var seg = u32(ri.x + i32(tt) - i32(p.pt));
    if (p.seg_frames > 1u) {
        seg = row_seg[r];
    }
    return (seg * 3u * p.cin + ci) / 4u;
}

fn x_normed(v: vec4<T>, at: u32) -> vec4<T> {
    if (at == NO_NORM) {
        return vec4<T>(0.0);
    }
    let cq = p.cin / 4u;
    let y = fma(vec4<f32>(v) - norm[at + cq], norm[at], norm[at + 2u * cq]);
    if (SILU) {
        return vec4<T>(y / (vec4<f32>(1.0) + exp(-y)));
    }
    return vec4<T>(y);
}
