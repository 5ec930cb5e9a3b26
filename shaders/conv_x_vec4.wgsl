// Input binding for Cin % 4 == 0: four channels of a pixel load as one vector.
@group(0) @binding(1) var<storage, read> x: array<vec4<T>>;

// Channels ci..ci+3 of pixel `pix` (-1: zero padding), zero past Cin.
fn load_x4(pix: i32, ci: u32) -> vec4<T> {
    if (pix < 0 || ci >= p.cin) {
        return vec4<T>(0.0);
    }
    return x[(u32(pix) * p.cin + ci) / 4u];
}
