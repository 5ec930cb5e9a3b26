// Staged tiles of the cooperative GEMM core (coop_gemm.wgsl) as vec4<f16> arrays: one 8-byte
// store per vec4 instead of four 2-byte ones. coopLoadT then counts offsets and strides in vec4
// elements (SPIR-V measures the stride in the pointer's element type), so every offset and
// stride is divided by TV = 4.
const TV: u32 = 4u;
var<workgroup> As: array<vec4<f16>, BM * AS / 4u>;
var<workgroup> Bs: array<vec4<f16>, BK * BS / 4u>;

fn put_a(i: u32, v: vec4<f16>) {
    As[i / 4u] = v;
}

fn put_b(i: u32, v: vec4<f16>) {
    Bs[i / 4u] = v;
}
