//! The residual epilogue of the matmul and convolution kernels: a tensor added to their output
//! as it is stored (after the bias), instead of a separate elementwise pass that reads the
//! output back, reads the residual and writes the sum.
//!
//! Both kernels see their output as flat rows of N values (output positions × channels, or
//! tokens × features) and add `res[(row / rep) · N + col]`: `rep` is 1 for a tensor of the
//! output's own shape ([`Residual::Same`], a residual connection) and the rows per batch element
//! for a `[B, N]` vector ([`Residual::PerBatch`], a time embedding onto every pixel of an image or
//! of a video window's frames).

use anyhow::{ensure, Result};

use crate::tensor::{DType, Tensor};

/// What a matmul or convolution adds to its output.
#[derive(Copy, Clone, Debug)]
pub enum Residual<'a> {
    /// A tensor with the output's elements and last axis (a residual connection; any view of the
    /// same rows, e.g. tokens `[N, L, C]` onto `[N, H, W, C]`).
    Same(&'a Tensor),
    /// `[B, N]`: row b is added to every output row of the b-th of B equal parts of the output.
    PerBatch(&'a Tensor),
}

impl<'a> Residual<'a> {
    pub fn tensor(&self) -> &'a Tensor {
        match self {
            Residual::Same(t) | Residual::PerBatch(t) => t,
        }
    }

    /// Output rows sharing one residual row, for an output of `out_shape` (rows of its last axis)
    /// in `dtype`; an error naming both shapes when the residual does not fit.
    pub fn rep(&self, what: &str, out_shape: &[usize], dtype: DType) -> Result<u32> {
        let t = self.tensor();
        ensure!(t.dtype() == dtype, "{what}: the residual is {} but the output is {}", t.dtype().name(), dtype.name());
        let n = out_shape.last().copied().unwrap_or(1);
        let rows = out_shape.iter().product::<usize>() / n.max(1);
        let s = t.shape();
        match self {
            Residual::Same(_) => {
                ensure!(
                    t.numel() == rows * n && s.last() == Some(&n),
                    "{what}: residual {s:?} does not match the output {out_shape:?}"
                );
                Ok(1)
            }
            Residual::PerBatch(_) => {
                ensure!(
                    s.len() == 2 && s[1] == n && s[0] > 0 && rows.is_multiple_of(s[0]),
                    "{what}: per-batch residual {s:?} must be [B, {n}] with B dividing the output's {rows} rows ({out_shape:?})"
                );
                Ok((rows / s[0]) as u32)
            }
        }
    }
}

pub mod cpu {
    /// `out[r, c] += res[(r / rep) · n + c]`.
    pub fn add(out: &mut [f32], res: &[f32], n: usize, rep: usize) {
        for (i, o) in out.iter_mut().enumerate() {
            let (r, c) = (i / n, i % n);
            *o += res[(r / rep) * n + c];
        }
    }
}
