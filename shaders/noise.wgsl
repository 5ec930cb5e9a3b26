// Counter-based Gaussian noise (see src/ops/noise.rs and src/pipeline/noise.rs, its host twin).
// Philox4x32-10 keyed by the 64-bit seed, counter = (x0 + x, y0 + y, frames[f], stream); then
// Box–Muller on the four words. WGSL has no 64-bit integers: the 32×32→64 products are built
// from 16-bit halves (`mul_hi`; the low word is the wrapping u32 product).
// MODE (const):
//   0 normals:   out [F, H, W, C] (channels-last, C ≤ 4) = the first C of the four normals
//   1 raw words: out [F, H, W, 4] (u32) = the four Philox output words (for exact tests)
//   2 mul_wide:  frames viewed as [n, 2] operand pairs → out [n, 2] = (high, low) of the product

struct Params {
    key0: u32,    // seed, low word
    key1: u32,    // seed, high word
    stream: u32,
    y0: u32,
    x0: u32,
    h: u32,
    w: u32,
    c: u32,       // channels written per pixel
    n: u32,       // pixels F·H·W (MODE 2: pairs)
}

@group(0) @binding(0) var<uniform> p: Params;
// Source frame index of each output frame (MODE 2: the operand pairs).
@group(0) @binding(1) var<storage, read> frames: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

const M0: u32 = 0xD2511F53u;
const M1: u32 = 0xCD9E8D57u;
const W0: u32 = 0x9E3779B9u;
const W1: u32 = 0xBB67AE85u;
const PI: f32 = 3.14159265358979;

// High word of the 64-bit product a·b.
fn mul_hi(a: u32, b: u32) -> u32 {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    // Bits 16..47 of the product, summed without overflow (each term < 2^16).
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var rnd = 0u; rnd < 10u; rnd++) {
        if (rnd > 0u) {
            k = k + vec2<u32>(W0, W1);
        }
        let hi0 = mul_hi(M0, c.x);
        let lo0 = M0 * c.x;
        let hi1 = mul_hi(M1, c.z);
        let lo1 = M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// A word → a uniform in (0, 1), exact in f32.
fn uniform01(r: u32) -> f32 {
    return (f32(r >> 9u) + 0.5) * (1.0 / 8388608.0);
}

fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let rho = sqrt(-2.0 * log(uniform01(a)));
    let theta = PI * (2.0 * uniform01(b) - 1.0);
    return rho * vec2<f32>(cos(theta), sin(theta));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    if (MODE == 2u) {
        let a = frames[2u * i];
        let b = frames[2u * i + 1u];
        out[2u * i] = T(mul_hi(a, b));
        out[2u * i + 1u] = T(a * b);
        return;
    }
    let hw = p.h * p.w;
    let f = i / hw;
    let rem = i % hw;
    let y = rem / p.w;
    let x = rem % p.w;
    let r = philox4x32_10(vec4<u32>(p.x0 + x, p.y0 + y, frames[f], p.stream), vec2<u32>(p.key0, p.key1));
    if (MODE == 1u) {
        for (var k = 0u; k < 4u; k++) {
            out[4u * i + k] = T(r[k]);
        }
        return;
    }
    let z = vec4<f32>(box_muller(r.x, r.y), box_muller(r.z, r.w));
    for (var k = 0u; k < p.c; k++) {
        out[p.c * i + k] = T(z[k]);
    }
}
