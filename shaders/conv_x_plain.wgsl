// The input as it is stored (no normalisation on load; see conv_x_norm.wgsl for the other case).

// Where x_normed finds this element's normalisation (unused here).
fn x_norm_at(pix: i32, ci: u32) -> u32 {
    return 0u;
}

// The loaded channels as the convolution multiplies them.
fn x_normed(v: vec4<T>, at: u32) -> vec4<T> {
    return v;
}
