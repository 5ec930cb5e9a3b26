// Input bindings for a channel pair (ops/input.rs, `Input::Pair`): the input is two tensors'
// channels side by side, x's p.pair_c1 channels then x2's, read from both as they load so their
// concatenation is never written. Pixel P of the pair is pixel P % p.pair_rows_a of x and
// P % p.pair_rows_b of x2 (a part with fewer pixels repeats). Four channels per load, as
// conv_x_vec4.wgsl: both parts' channel counts are multiples of 4, so no load straddles them.
// X2_BINDING is the binding after the kernel's others.
@group(0) @binding(1) var<storage, read> x: array<vec4<T>>;
@group(0) @binding(X2_BINDING) var<storage, read> x2: array<vec4<T>>;

// Channels ci..ci+3 of pixel `pix` of the pair (-1: zero padding), zero past Cin.
fn load_x4(pix: i32, ci: u32) -> vec4<T> {
    if (pix < 0 || ci >= p.cin) {
        return vec4<T>(0.0);
    }
    if (ci < p.pair_c1) {
        return x[(pair_pixel(u32(pix), p.pair_rows_a) * p.pair_c1 + ci) / 4u];
    }
    let c2 = p.cin - p.pair_c1;
    return x2[(pair_pixel(u32(pix), p.pair_rows_b) * c2 + ci - p.pair_c1) / 4u];
}

// Pixel `px` of the pair in a part of `rows` pixels. The division only where the part repeats
// (it has fewer pixels than the pair): a division costs a GPU some twenty instructions, on
// every load of the K loop.
fn pair_pixel(px: u32, rows: u32) -> u32 {
    if (px < rows) {
        return px;
    }
    return px % rows;
}
