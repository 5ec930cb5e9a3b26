// The input transform's loads of a GroupNorm's output (then SiLU when SILU), normalised as they
// load (winograd_input.wgsl): x is the norm's input, `norm` its [segments, 3, C] table of scales,
// shifts K and offsets (group_norm_finalize.wgsl), segments of p.seg_frames images. The
// arithmetic is group_norm_apply.wgsl's, rounded to T as that pass stores it, so the planes are
// the norm's pass then the plain transform's (to the bit in f32; a driver may round the f16
// conversion here and that pass's store differently). Zero padding is not loaded: it stays
// zero, the padding of the norm's output.
@group(0) @binding(3) var<storage, read> norm: array<vec4<f32>>;

fn load_x(i: u32, img: u32, c4: u32) -> vec4<f32> {
    let at = (img / p.seg_frames) * 3u * p.cv + c4;
    let y = fma(vec4<f32>(x[i]) - norm[at + p.cv], norm[at], norm[at + 2u * p.cv]);
    if (SILU) {
        return vec4<f32>(vec4<T>(y / (vec4<f32>(1.0) + exp(-y))));
    }
    return vec4<f32>(vec4<T>(y));
}
