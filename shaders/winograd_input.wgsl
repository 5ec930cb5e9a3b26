// Winograd F(2×2, 3×3) input transform (ops/winograd; winograd_tiles.wgsl comes first):
// x [N, H, W, C] channels-last → V, 16 planes ξ = 4·i + j of [N, BTH, TW, C] for the band of
// tile rows ty0 .. ty0 + BTH, `plane` vec4 units apart:
//   V[ξ][n, ty, tx, c] = (Bᵀ d B)[i][j],  d = x[n, 2ty − 1 .. 2ty + 3, 2tx − 1 .. 2tx + 3, c]
// (zero outside the image: the convolution's padding of 1), with
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
// Each entry is a sum of four inputs with signs ±1, computed in f32 and stored in T. The inputs
// come through load_x: as stored (winograd_x_plain.wgsl) or through a GroupNorm
// (winograd_x_norm.wgsl).
// One invocation per (tile, four channels): adjacent lanes take adjacent channels, so every
// load and store of a subgroup is one contiguous span where C is wide.

@group(0) @binding(1) var<storage, read> x: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<T>>;

fn at(img: u32, y: i32, xx: i32, c: u32) -> vec4<f32> {
    if (y < 0 || xx < 0 || u32(y) >= p.h || u32(xx) >= p.w) {
        return vec4<f32>(0.0);
    }
    return load_x(((img * p.h + u32(y)) * p.w + u32(xx)) * p.cv + c, img, c);
}

// Bᵀ applied to one column of the 4×4 patch: rows 0..3 of Bᵀ d for that column.
struct Col {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

fn column(img: u32, y0: i32, xx: i32, c: u32) -> Col {
    let d0 = at(img, y0, xx, c);
    let d1 = at(img, y0 + 1, xx, c);
    let d2 = at(img, y0 + 2, xx, c);
    let d3 = at(img, y0 + 3, xx, c);
    return Col(d0 - d2, d1 + d2, d2 - d1, d1 - d3);
}

// One row i of Bᵀ d (its four columns a, b, c, d) times B, into planes 4·i .. 4·i + 3.
fn store_row(i: u32, u: u32, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) {
    let base = 4u * i * p.plane + u;
    v[base] = vec4<T>(a - c);
    v[base + p.plane] = vec4<T>(b + c);
    v[base + 2u * p.plane] = vec4<T>(c - b);
    v[base + 3u * p.plane] = vec4<T>(b - d);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let u = wg_index(wid, nwg) * 256u + lid;
    if (u >= p.units) {
        return;
    }
    let t = tile_at(u);
    let y0 = i32(2u * t.ty) - 1;
    let x0 = i32(2u * t.tx) - 1;
    let k0 = column(t.img, y0, x0, t.c4);
    let k1 = column(t.img, y0, x0 + 1, t.c4);
    let k2 = column(t.img, y0, x0 + 2, t.c4);
    let k3 = column(t.img, y0, x0 + 3, t.c4);
    store_row(0u, u, k0.r0, k1.r0, k2.r0, k3.r0);
    store_row(1u, u, k0.r1, k1.r1, k2.r1, k3.r1);
    store_row(2u, u, k0.r2, k1.r2, k2.r2, k3.r2);
    store_row(3u, u, k0.r3, k1.r3, k2.r3, k3.r3);
}
