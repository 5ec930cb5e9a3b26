// A GroupNorm pass's input as a channel pair (ops/input.rs, `Input::Pair`): x's p.pair_cv1
// vectors of channels then x2's, read from both so their concatenation is never written. Pixel
// P of the pair is pixel P % p.pair_rows_a of x and P % p.pair_rows_b of x2 (a part with fewer
// pixels repeats). V divides both parts' channel counts, so a vector lies in one part. X2_BINDING
// is the binding after the pass's others.
@group(0) @binding(1) var<storage, read> x: array<VT>;
@group(0) @binding(X2_BINDING) var<storage, read> x2: array<VT>;

// Vector `cvec` of pixel `pix`.
fn xv(pix: u32, cvec: u32) -> VT {
    if (cvec < p.pair_cv1) {
        return x[(pix % p.pair_rows_a) * p.pair_cv1 + cvec];
    }
    return x2[(pix % p.pair_rows_b) * (p.cv - p.pair_cv1) + cvec - p.pair_cv1];
}
