// The input as it is stored (no normalisation on load; see conv_x_norm.wgsl for the other case).

// What the loads of row r need of its row_info (nothing here).
fn x_norm_row(r: u32, ri: vec4<i32>) {
}

// Where x_normed finds this element's normalisation (unused here).
fn x_norm_at(r: u32, ri: vec4<i32>, tt: u32, pix: i32, ci: u32) -> u32 {
    return 0u;
}

// The loaded channels as the convolution multiplies them.
fn x_normed(v: vec4<T>, at: u32) -> vec4<T> {
    return v;
}
