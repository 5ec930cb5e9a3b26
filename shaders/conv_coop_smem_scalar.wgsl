// Staged tiles of the cooperative conv as scalar f16.
var<workgroup> As: array<f16, BM * AS_STRIDE>;  // [BM][BK]  (row-major, padded)
var<workgroup> Bs: array<f16, BK * BS_STRIDE>;  // [BK][BN]  (row-major, padded)

fn store_a(row: u32, kq: u32, v: vec4<f16>) {
    let a = row * AS_STRIDE + 4u * kq;
    As[a] = v.x;
    As[a + 1u] = v.y;
    As[a + 2u] = v.z;
    As[a + 3u] = v.w;
}

fn store_b(k: u32, nq: u32, v: vec4<f16>) {
    let o = k * BS_STRIDE + 4u * nq;
    Bs[o] = v.x;
    Bs[o + 1u] = v.y;
    Bs[o + 2u] = v.z;
    Bs[o + 3u] = v.w;
}

fn load_a(row: u32, k: u32) -> FA {
    return coopLoadT<FA>(&As[row * AS_STRIDE + k], AS_STRIDE);
}

fn load_b(k: u32, col: u32) -> FB {
    return coopLoadT<FB>(&Bs[k * BS_STRIDE + col], BS_STRIDE);
}
