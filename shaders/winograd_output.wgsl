// Winograd F(2×2, 3×3) output transform (ops/winograd; winograd_tiles.wgsl comes first): the 16
// product planes M[ξ] of
// [N, BTH, TW, Cout] for the band of tile rows ty0 .. ty0 + BTH (`plane` vec4 units apart) → its
// rows of y [N, H, W, Cout] channels-last:
//   y[n, 2ty + a, 2tx + b, c] = (Aᵀ m A)[a][b] (+ bias[c]) (+ res[(pixel / res_rep)·C + c]),
//   m[i][j] = M[4·i + j][n, ty, tx, c],  Aᵀ = [1 1 1 0; 0 1 −1 −1],
// for the positions inside the image (an odd H or W drops the last tile's second row or column).
// pixel being the output pixel's index (res_rep 1: a residual of y's shape; the pixels per batch
// element: a time embedding per batch element, ops/residual.rs). Computed in f32 from the stored
// planes, then stored in T. Specialised by HAS_BIAS and HAS_RES (without them, their bindings
// repeat the planes'). One invocation per (tile, four channels).

@group(0) @binding(1) var<storage, read> m: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> bias: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> res: array<vec4<T>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<T>>;

fn mp(xi: u32, u: u32) -> vec4<f32> {
    return vec4<f32>(m[xi * p.plane + u]);
}

// Aᵀ applied to column j of m: (m0j + m1j + m2j, m1j − m2j − m3j).
struct Pair {
    s0: vec4<f32>,
    s1: vec4<f32>,
}

fn column(j: u32, u: u32) -> Pair {
    let a = mp(j, u);
    let b = mp(4u + j, u);
    let c = mp(8u + j, u);
    let d = mp(12u + j, u);
    return Pair(a + b + c, b - c - d);
}

fn store(img: u32, yy: u32, xx: u32, c: u32, val: vec4<f32>) {
    if (yy >= p.h || xx >= p.w) {
        return;
    }
    let px = (img * p.h + yy) * p.w + xx;
    let o = px * p.cv + c;
    var r = val;
    if (HAS_BIAS) {
        r += vec4<f32>(bias[c]);
    }
    if (HAS_RES) {
        r += vec4<f32>(res[(px / p.res_rep) * p.cv + c]);
    }
    y[o] = vec4<T>(r);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let u = wg_index(wid, nwg) * 256u + lid;
    if (u >= p.units) {
        return;
    }
    let t = tile_at(u);
    let k0 = column(0u, u);
    let k1 = column(1u, u);
    let k2 = column(2u, u);
    let k3 = column(3u, u);
    // (Aᵀ m) A: row a of Aᵀ m is (k0.sa, k1.sa, k2.sa, k3.sa).
    let y0 = 2u * t.ty;
    let x0 = 2u * t.tx;
    store(t.img, y0, x0, t.c4, k0.s0 + k1.s0 + k2.s0);
    store(t.img, y0, x0 + 1u, t.c4, k1.s0 - k2.s0 - k3.s0);
    store(t.img, y0 + 1u, x0, t.c4, k0.s1 + k1.s1 + k2.s1);
    store(t.img, y0 + 1u, x0 + 1u, t.c4, k1.s1 - k2.s1 - k3.s1);
}
