// Helpers shared by every kernel (the engine prepends this file after the preamble).

// Flat workgroup index when the dispatch was folded into 2-D (see `kernel::grid`).
fn wg_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// erfc(z) for z >= 0 with relative error < 1.2e-7 (Numerical Recipes' Chebyshev fit).
// WGSL has no erf. Working with erfc keeps GELU's negative tail accurate (1 + erf(z) cancels).
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    return t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
}

// Exact (erf) GELU, as PyTorch's default `gelu`: 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(−x/√2).
fn gelu_f32(x: f32) -> f32 {
    let z = x * 0.70710678118654752;
    let r = erfc_pos(abs(z));
    return 0.5 * x * select(r, 2.0 - r, z >= 0.0);
}
