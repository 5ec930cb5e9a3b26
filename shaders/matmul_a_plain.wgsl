// The a operand as stored (see matmul_a_ln.wgsl for the other case). AT is the type the
// cooperative kernel holds a's fetched vectors in until it stages them (as stored: f32 storage
// on f16 operands is rounded as it is staged).
alias AT = vec4<T>;

// What ln_one / ln_four need of a row of a (nothing here).
fn ln_row(row: u32) -> vec4<f32> {
    return vec4<f32>(0.0);
}

// Element k of a row as the product takes it (before its rounding to T).
fn ln_one(x: f32, r: vec4<f32>, k: u32) -> f32 {
    return x;
}

// Elements k..k+3 of a row as the product takes them.
fn ln_four(x: AT, r: vec4<f32>, k: u32) -> AT {
    return x;
}
