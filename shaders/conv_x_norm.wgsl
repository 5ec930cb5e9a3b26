// The convolution's input is a GroupNorm's output (then SiLU when SILU), normalised as it loads
// (ops/conv/mod.rs, `conv2d_normed`): x is the norm's input, `norm` its [segments, 3, Cin] table of
// scales, shifts K and offsets (group_norm_finalize.wgsl), segments of p.seg_px pixels. The
// arithmetic is group_norm_apply.wgsl's, rounded to T as that pass stores it, so both paths give
// the convolution the same operands. Needs Cin % 4 == 0 (conv_x_vec4.wgsl's loads).
@group(0) @binding(6) var<storage, read> norm: array<vec4<f32>>;

// The table index (in vectors) of channels ci..ci+3 of pixel `pix`, or NO_NORM where the load
// is zero padding (which stays zero: the padding is the norm's output's).
const NO_NORM: u32 = 0xffffffffu;

fn x_norm_at(pix: i32, ci: u32) -> u32 {
    if (pix < 0 || ci >= p.cin) {
        return NO_NORM;
    }
    let seg = u32(pix) / p.seg_px;
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
