// Input binding for any Cin (e.g. 3, 4, 7 at the networks' ends): scalar loads.
@group(0) @binding(1) var<storage, read> x: array<T>;

// Channels ci..ci+3 of pixel `pix` (-1: zero padding), zero past Cin.
fn load_x4(pix: i32, ci: u32) -> vec4<T> {
    var v = vec4<T>(0.0);
    if (pix < 0) {
        return v;
    }
    let o = u32(pix) * p.cin + ci;
    for (var j = 0u; j < 4u; j++) {
        if (ci + j < p.cin) {
            v[j] = x[o + j];
        }
    }
    return v;
}
