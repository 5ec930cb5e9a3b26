// Staged tiles of the cooperative conv as vec4<f16> (one 8-byte store per four channels).
// A cooperative load's stride counts the array's elements (vectors here) when STRIDE_VEC.
var<workgroup> As: array<vec4<f16>, BM * AS_STRIDE / 4u>;  // [BM][BK]  (row-major, padded)
var<workgroup> Bs: array<vec4<f16>, BK * BS_STRIDE / 4u>;  // [BK][BN]  (row-major, padded)

fn store_a(row: u32, kq: u32, v: vec4<f16>) {
    As[row * (AS_STRIDE / 4u) + kq] = v;
}

fn store_b(k: u32, nq: u32, v: vec4<f16>) {
    Bs[k * (BS_STRIDE / 4u) + nq] = v;
}

fn load_a(row: u32, k: u32) -> FA {
    return coopLoadT<FA>(&As[row * (AS_STRIDE / 4u) + k / 4u], select(AS_STRIDE, AS_STRIDE / 4u, STRIDE_VEC));
}

fn load_b(k: u32, col: u32) -> FB {
    return coopLoadT<FB>(&Bs[k * (BS_STRIDE / 4u) + col / 4u], select(BS_STRIDE, BS_STRIDE / 4u, STRIDE_VEC));
}
