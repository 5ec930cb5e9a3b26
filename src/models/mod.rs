//! Models built from the kernel library. Each module reads like the spec: one Rust struct per
//! PyTorch module, holding its weights under the checkpoint's own names, with a `forward` that
//! records kernel calls. Activations are channels-last inside (see `tensor.rs`).

pub mod blocks;
pub mod sd_unet;
pub mod sd_vae;
pub mod clip_text;
pub mod video_unet;
pub mod video_vae;
pub mod registry;
pub mod release;
pub mod unet;

use anyhow::Result;

use crate::ops::conv::ConvWeight;
use crate::ops::matmul::{GegluWeight, LinearWeight};
use crate::ops::norm::NormWeight;
use crate::weights::WeightStore;
use crate::{DType, Gpu, Tensor};

/// Uploads a model's weights from a [`WeightStore`], by name and expected shape.
pub struct Loader<'a> {
    pub gpu: &'a Gpu,
    pub store: &'a mut WeightStore,
    /// Storage dtype of weights and activations.
    pub dtype: DType,
}

impl<'a> Loader<'a> {
    pub fn new(gpu: &'a Gpu, store: &'a mut WeightStore, dtype: DType) -> Self {
        Loader { gpu, store, dtype }
    }

    pub fn raw(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.store.take(name, shape)
    }

    /// A tensor uploaded in the model's dtype.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let v = self.store.take(name, shape)?;
        Tensor::from_f32(self.gpu, &v, shape, self.dtype)
    }

    /// `prefix.weight [cout, cin, k, k]` and `prefix.bias [cout]` of a Conv2d.
    pub fn conv2d(&mut self, prefix: &str, cout: usize, cin: usize, k: usize) -> Result<ConvWeight> {
        self.conv(prefix, &[cout, cin, k, k])
    }

    /// `prefix.weight` of any Conv2d/Conv3d shape (`[cout, cin, kh, kw]` or `[cout, cin, kt, kh, kw]`)
    /// and `prefix.bias [cout]`.
    pub fn conv(&mut self, prefix: &str, shape: &[usize]) -> Result<ConvWeight> {
        self.conv_scaled(prefix, shape, 1.0)
    }

    /// [`conv`](Self::conv) with weight and bias multiplied by `scale` (on the host, before the
    /// upload): a constant factor on the layer's output folded into the layer, so the output
    /// can go straight into a residual sum.
    pub fn conv_scaled(&mut self, prefix: &str, shape: &[usize], scale: f32) -> Result<ConvWeight> {
        let w = scaled(self.store.take(&format!("{prefix}.weight"), shape)?, scale);
        let b = scaled(self.store.take(&format!("{prefix}.bias"), &shape[..1])?, scale);
        ConvWeight::from_torch(self.gpu, &w, shape, Some(&b), self.dtype)
    }

    /// A ConvTranspose2d: `prefix.weight [cin, cout, k, k]` (PyTorch's transposed layout) and `prefix.bias [cout]`.
    pub fn conv_transposed(&mut self, prefix: &str, cin: usize, cout: usize, k: usize) -> Result<ConvWeight> {
        self.conv_transposed_scaled(prefix, cin, cout, k, 1.0)
    }

    /// [`conv_transposed`](Self::conv_transposed) scaled like [`conv_scaled`](Self::conv_scaled).
    pub fn conv_transposed_scaled(&mut self, prefix: &str, cin: usize, cout: usize, k: usize, scale: f32) -> Result<ConvWeight> {
        let shape = [cin, cout, k, k];
        let w = scaled(self.store.take(&format!("{prefix}.weight"), &shape)?, scale);
        let b = scaled(self.store.take(&format!("{prefix}.bias"), &[cout])?, scale);
        ConvWeight::from_torch_transposed(self.gpu, &w, &shape, Some(&b), self.dtype)
    }

    /// A 1×1 Conv2d `prefix.weight [cout, cin, 1, 1]` with bias, as the linear map it is on
    /// channels-last pixels.
    pub fn conv1x1_as_linear(&mut self, prefix: &str, cout: usize, cin: usize) -> Result<LinearWeight> {
        let w = self.store.take(&format!("{prefix}.weight"), &[cout, cin, 1, 1])?;
        let b = self.store.take(&format!("{prefix}.bias"), &[cout])?;
        LinearWeight::from_torch_with_bias(self.gpu, &w, Some(&b), cout, cin, self.dtype)
    }

    /// A Linear `prefix.weight [out, in]`, with `prefix.bias [out]` when `bias`.
    pub fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<LinearWeight> {
        let w = self.store.take(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias { Some(self.store.take(&format!("{prefix}.bias"), &[out])?) } else { None };
        LinearWeight::from_torch_with_bias(self.gpu, &w, b.as_deref(), out, inp, self.dtype)
    }

    /// Linears with one input stacked into one `[Σ out, in]` Linear (output channels in the order
    /// of `prefixes`): `prefix.weight` of `weight_shape` (`[out, in]`, or `[out, in, 1, 1]` for
    /// 1×1 convolutions) and, with `bias`, `prefix.bias [out]` each. One GEMM reads the input once
    /// where three would read it three times (an attention's q, k and v).
    pub fn stacked_linear(&mut self, prefixes: &[String], weight_shape: &[usize], bias: bool) -> Result<LinearWeight> {
        let (out, inp) = (weight_shape[0], weight_shape[1]);
        let mut w = Vec::with_capacity(prefixes.len() * out * inp);
        let mut b = Vec::with_capacity(prefixes.len() * out);
        for p in prefixes {
            w.extend(self.store.take(&format!("{p}.weight"), weight_shape)?);
            if bias {
                b.extend(self.store.take(&format!("{p}.bias"), &[out])?);
            }
        }
        LinearWeight::from_torch_with_bias(self.gpu, &w, bias.then_some(&b[..]), prefixes.len() * out, inp, self.dtype)
    }

    /// A GEGLU projection `prefix.weight [2·inner, in]` with `prefix.bias`, packed for
    /// [`linear_geglu`](crate::ops::matmul::linear_geglu).
    pub fn geglu(&mut self, prefix: &str, inner: usize, inp: usize) -> Result<GegluWeight> {
        let w = self.store.take(&format!("{prefix}.weight"), &[2 * inner, inp])?;
        let b = self.store.take(&format!("{prefix}.bias"), &[2 * inner])?;
        GegluWeight::from_torch(self.gpu, &w, Some(&b), inner, inp, self.dtype)
    }

    /// A GroupNorm/LayerNorm's `prefix.weight` and `prefix.bias`, both `[c]`.
    pub fn norm(&mut self, prefix: &str, c: usize) -> Result<NormWeight> {
        let g = self.store.take(&format!("{prefix}.weight"), &[c])?;
        let b = self.store.take(&format!("{prefix}.bias"), &[c])?;
        NormWeight::from_torch(self.gpu, &g, &b)
    }
}

fn scaled(mut v: Vec<f32>, s: f32) -> Vec<f32> {
    if s != 1.0 {
        v.iter_mut().for_each(|x| *x *= s);
    }
    v
}

/// Host-side NHWC → NCHW permute, for comparing intermediate activations with references.
pub fn nhwc_to_nchw_host(v: &[f32], shape: &[usize]) -> Vec<f32> {
    let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![0.0; v.len()];
    for ni in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ci in 0..c {
                    out[((ni * c + ci) * h + y) * w + x] = v[((ni * h + y) * w + x) * c + ci];
                }
            }
        }
    }
    out
}
