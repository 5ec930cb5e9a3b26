// Winograd F(2×2, 3×3) weight transform (ops/winograd): U = G g Gᵀ of every 3×3 kernel g,
//   G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
// from the direct convolution's packed f32 weight [KT·9][cin_p][cout_p] (ops/conv/weight.rs:
// row (tap, ci), tap = (kt·3 + ky)·3 + kx, holds w[co][ci][tap] in column co) to planes
// ξ = 4·i + j of [KT][dst_cin][dst_cout] in T, `dst_plane` elements apart. The 2-D products
// read [16][Cin][Cout] (dst_cin = Cin, dst_cout = Cout); each of the 3-D products' (KT, 1, 1)
// convolution weights is one plane in the packed layout itself (dst_cin = cin_p,
// dst_cout = cout_p: the padding's zeros transform to zeros), planes at aligned offsets. f32
// arithmetic in the order of the CPU twin (cpu::transform_weight), rounded to T once. One
// invocation per (kt, ci, co), consecutive co in neighbouring invocations (coalesced reads and
// writes).

struct Params {
    units: u32,     // KT·dst_cin·dst_cout
    dst_cin: u32,
    dst_cout: u32,
    cin_p: u32,
    cout_p: u32,
    dst_plane: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> u: array<T>;

// Row i of G applied to (a, b, d): G g's rows (and, on a row, (G g) Gᵀ's columns).
fn g_row(i: u32, a: f32, b: f32, d: f32) -> f32 {
    switch i {
        case 0u: { return a; }
        case 1u: { return 0.5 * (a + b + d); }
        case 2u: { return 0.5 * (a - b + d); }
        default: { return d; }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = wg_index(wid, nwg) * 256u + lid;
    if (e >= p.units) {
        return;
    }
    let co = e % p.dst_cout;
    let rest = e / p.dst_cout;
    let ci = rest % p.dst_cin;
    let kt = rest / p.dst_cin;
    var k: array<f32, 9>;
    for (var t = 0u; t < 9u; t++) {
        k[t] = g[((kt * 9u + t) * p.cin_p + ci) * p.cout_p + co];
    }
    for (var i = 0u; i < 4u; i++) {
        // Row i of G g: G's row i over each column of g; then G's rows over that row.
        let r0 = g_row(i, k[0], k[3], k[6]);
        let r1 = g_row(i, k[1], k[4], k[7]);
        let r2 = g_row(i, k[2], k[5], k[8]);
        for (var j = 0u; j < 4u; j++) {
            u[(4u * i + j) * p.dst_plane + e] = T(g_row(j, r0, r1, r2));
        }
    }
}
