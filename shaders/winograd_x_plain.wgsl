// The input transform's loads of x as stored (winograd_input.wgsl): element `i` (vec4 units) of
// image `img`, channels 4·c4 ...
fn load_x(i: u32, img: u32, c4: u32) -> vec4<f32> {
    return vec4<f32>(x[i]);
}
