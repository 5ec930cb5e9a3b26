// Sinusoidal timestep embedding, diffusers `get_timestep_embedding` (ops/embed.rs):
// out[b, j] for j < 2*half is sin or cos of t[b] * freq[j % half]; with FLIP the cos half comes
// first; an odd `dim` leaves a zero last column. `freq` = exp(-ln(10000) * i / (half - shift)) is
// computed on the host in f32 as diffusers does: WGSL's exp is only accurate to a few ulp, and
// at t ~ 1000 every ulp of the frequency moves the angle by ~6e-5 rad.
// The argument t * freq is one correctly rounded f32 multiply, as in PyTorch; sin and cos use
// our own range reduction because WGSL's builtins are only specified on [-pi, pi].

struct Params {
    n: u32,      // B * dim
    dim: u32,
    half: u32,
    flip: u32,   // 1: [cos | sin]
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

// sin(x) (cos_phase = 0) or cos(x) (cos_phase = 1) to about 2 ulp for |x| < 1e4:
// Cody-Waite reduction by pi/2 in three parts (the first two have few enough bits that k times
// them is exact for |k| < 2^13), then the Cephes minimax polynomials on [-pi/4, pi/4].
fn sincos_f32(x: f32, cos_phase: u32) -> f32 {
    let kf = round(x * 0.636619772367581343);
    let r = ((x - kf * 1.5703125) - kf * 4.837512969970703125e-4) - kf * 7.54978995489188216e-8;
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    // sin(r + q*pi/2) for quadrant q; cos(x) = sin(x + pi/2) is quadrant q + 1.
    let q = (u32(i32(kf) & 3) + cos_phase) & 3u;
    let v = select(s, c, (q & 1u) == 1u);
    return select(v, -v, q >= 2u);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let b = i / p.dim;
    let j = i - b * p.dim;
    var r = 0.0;
    if (j < 2u * p.half) {
        let first = j < p.half;
        let k = select(j - p.half, j, first);
        let use_cos = first == (p.flip == 1u);
        r = sincos_f32(t[b] * freq[k], select(0u, 1u, use_cos));
    }
    out[i] = T(r);
}
