// A GroupNorm pass's input as one tensor (see group_norm_x_pair.wgsl for the other case).
@group(0) @binding(1) var<storage, read> x: array<VT>;

// Vector `cvec` of pixel `pix`.
fn xv(pix: u32, cvec: u32) -> VT {
    return x[pix * p.cv + cvec];
}
