// Staged tiles of the cooperative GEMM core (coop_gemm.wgsl) as scalar f16 arrays: coopLoadT
// offsets and strides count f16 elements (the unambiguous form).
const TV: u32 = 1u;
var<workgroup> As: array<f16, BM * AS>;
var<workgroup> Bs: array<f16, BK * BS>;

fn put_a(i: u32, v: vec4<f16>) {
    As[i] = v.x;
    As[i + 1u] = v.y;
    As[i + 2u] = v.z;
    As[i + 3u] = v.w;
}

fn put_b(i: u32, v: vec4<f16>) {
    Bs[i] = v.x;
    Bs[i + 1u] = v.y;
    Bs[i + 2u] = v.z;
    Bs[i + 3u] = v.w;
}
