// The a operand is a LayerNorm's input, normalised as it loads (ops/matmul, `linear` of an
// `Input::LayerNormed`): `ln_table` holds each row's (K, mean, 1/σ, 0) (layer_norm_stats.wgsl)
// and γ, β are the norm's f32 weights over a's columns. The arithmetic is layer_norm.wgsl's,
// rounded to T as that pass stores it (ln_one's caller stores it as T; ln_four returns T), so both
// paths give the product the same operands. The cooperative kernel holds its fetched vectors as
// stored (AT) and normalises them as it stages.
@group(0) @binding(6) var<storage, read> ln_table: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> ln_gamma: array<f32>;
@group(0) @binding(8) var<storage, read> ln_beta: array<f32>;

alias AT = vec4<T>;

fn ln_row(row: u32) -> vec4<f32> {
    return ln_table[min(row, arrayLength(&ln_table) - 1u)];
}

fn ln_one(x: f32, r: vec4<f32>, k: u32) -> f32 {
    return fma(((x - r.x) - r.y) * r.z, ln_gamma[k], ln_beta[k]);
}

fn ln_four(x: AT, r: vec4<f32>, k: u32) -> AT {
    let g = vec4<f32>(ln_gamma[k], ln_gamma[k + 1u], ln_gamma[k + 2u], ln_gamma[k + 3u]);
    let b = vec4<f32>(ln_beta[k], ln_beta[k + 1u], ln_beta[k + 2u], ln_beta[k + 3u]);
    return AT(fma(((vec4<f32>(x) - vec4<f32>(r.x)) - vec4<f32>(r.y)) * r.z, g, b));
}
