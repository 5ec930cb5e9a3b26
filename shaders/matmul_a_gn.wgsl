// The a operand is a GroupNorm's input, normalised as it loads (ops/matmul, `linear` of an
// `Input::GroupNormed`: a transformer's proj_in after its norm, a VAE attention's q/k/v): a's
// rows are pixels, p.seg_px to a statistics segment, and `gn_table` is the norm's
// [segments, 3, K] table of scales, shifts and offsets (group_norm_finalize.wgsl). The
// arithmetic is group_norm_apply.wgsl's (without SiLU), rounded to T as that pass stores it
// (ln_one's caller stores it as T; ln_four returns T), so both paths give the product the same
// operands.
@group(0) @binding(6) var<storage, read> gn_table: array<f32>;

alias AT = vec4<T>;

// Where the row's segment starts in the table (as bits: an index, not a value).
fn ln_row(row: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<f32>((row / p.seg_px) * 3u * p.k), 0.0, 0.0, 0.0);
}

fn ln_one(x: f32, r: vec4<f32>, k: u32) -> f32 {
    let t = bitcast<u32>(r.x) + k;
    return fma(x - gn_table[t + p.k], gn_table[t], gn_table[t + 2u * p.k]);
}

fn ln_four(x: AT, r: vec4<f32>, k: u32) -> AT {
    let t = bitcast<u32>(r.x) + k;
    let scale = vec4<f32>(gn_table[t], gn_table[t + 1u], gn_table[t + 2u], gn_table[t + 3u]);
    let u = t + p.k;
    let shift = vec4<f32>(gn_table[u], gn_table[u + 1u], gn_table[u + 2u], gn_table[u + 3u]);
    let v = u + p.k;
    let offset = vec4<f32>(gn_table[v], gn_table[v + 1u], gn_table[v + 2u], gn_table[v + 3u]);
    return AT(fma(vec4<f32>(x) - shift, scale, offset));
}
