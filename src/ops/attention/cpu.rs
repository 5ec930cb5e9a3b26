//! CPU reference of attention (f64 accumulation), same layouts as [`super::attention`].

use super::AttnOpts;

#[allow(clippy::too_many_arguments)]
pub fn attention(q: &[f32], k: &[f32], v: &[f32], b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize, opts: AttnOpts) -> Vec<f32> {
    let c = heads * dh;
    let mut out = vec![0f32; b * lq * c];
    let mut s = vec![0f64; lk];
    for bi in 0..b {
        let kb = bi / (b / bk);
        for h in 0..heads {
            for i in 0..lq {
                let qr = &q[(bi * lq + i) * c + h * dh..][..dh];
                let mut mx = f64::NEG_INFINITY;
                for (j, sj) in s.iter_mut().enumerate() {
                    let kr = &k[(kb * lk + j) * c + h * dh..][..dh];
                    let dot: f64 = qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    *sj = if opts.causal && j > i { f64::NEG_INFINITY } else { dot * opts.scale as f64 };
                    mx = mx.max(*sj);
                }
                let mut sum = 0.0;
                for sj in s.iter_mut() {
                    *sj = (*sj - mx).exp();
                    sum += *sj;
                }
                for d in 0..dh {
                    let mut acc = 0.0;
                    for (j, &pj) in s.iter().enumerate() {
                        acc += pj * v[(kb * lk + j) * c + h * dh + d] as f64;
                    }
                    out[(bi * lq + i) * c + h * dh + d] = (acc / sum) as f32;
                }
            }
        }
    }
    out
}
