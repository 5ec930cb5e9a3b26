//! CPU references of the matmul and linear layers (f64 accumulation).

/// `batch` products `[m, k] · [k, n] (+ bias)`, row-major; `b_shared`: one `b` for all.
#[allow(clippy::too_many_arguments)]
pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, batch: usize, m: usize, n: usize, k: usize, b_shared: bool) -> Vec<f32> {
    let mut out = vec![0f32; batch * m * n];
    for z in 0..batch {
        let az = &a[z * m * k..(z + 1) * m * k];
        let bz = if b_shared { b } else { &b[z * k * n..(z + 1) * k * n] };
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map(|c| c[j] as f64).unwrap_or(0.0);
                for l in 0..k {
                    s += az[i * k + l] as f64 * bz[l * n + j] as f64;
                }
                out[(z * m + i) * n + j] = s as f32;
            }
        }
    }
    out
}

/// PyTorch `nn.Linear`: `x [rows, in]`, `w [out, in]`, `bias [out]` → `[rows, out]`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, rows: usize, inp: usize, out: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = bias.map(|c| c[o] as f64).unwrap_or(0.0);
            for i in 0..inp {
                s += x[r * inp + i] as f64 * w[o * inp + i] as f64;
            }
            y[r * out + o] = s as f32;
        }
    }
    y
}
