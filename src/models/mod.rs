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

use anyhow::{Context, Result};

use crate::ops::conv::ConvWeight;
use crate::ops::matmul::{GegluWeight, LinearWeight};
use crate::ops::norm::NormWeight;
use crate::ops::pack::Src;
use crate::weights::{to_f32, RawTensor, Synthetic, WeightStore};
use crate::{DType, Gpu, Tensor};

/// Uploads a model's weights from a [`WeightStore`], by name and expected shape.
pub struct Loader<'a> {
    pub gpu: &'a Gpu,
    pub store: &'a mut WeightStore,
    /// Storage dtype of weights and activations.
    pub dtype: DType,
    /// Where a synthetic store's weights are generated, straight into their packed layouts: on
    /// the GPU (the default on a hardware adapter) or on the host (on a software adapter, whose
    /// kernels run on the host anyway, slower than the host's own parallel loops).
    pub generate_on_gpu: bool,
}

impl<'a> Loader<'a> {
    pub fn new(gpu: &'a Gpu, store: &'a mut WeightStore, dtype: DType) -> Self {
        store.model_weights();
        Loader { gpu, store, dtype, generate_on_gpu: !gpu.is_software() }
    }

    /// The weights `names`, each of `shape`, checked and marked used: a checkpoint's elements
    /// as stored (packed straight from the mapped file), or a synthetic store's generators (made
    /// straight into the packed layouts: a full-size model's ~10⁹ random values are never laid
    /// out in PyTorch's order, and on a GPU never cross the bus).
    fn weights(&mut self, names: &[String], shape: &[usize]) -> Result<Vec<Values<'_>>> {
        let mut gens = Vec::new();
        for n in names {
            match self.store.synthetic_tensor(n, shape) {
                Some(g) => gens.push(Values::Synthetic(g)),
                None => self.store.claim(n, shape)?,
            }
        }
        if !gens.is_empty() {
            return Ok(gens);
        }
        let store: &WeightStore = self.store;
        names
            .iter()
            .map(|n| {
                let raw = store.raw(n)?;
                Ok(if Src::reads_stored(raw.dtype) { Values::Stored(raw) } else { Values::Host(to_f32(&raw.data, raw.dtype).with_context(|| format!("tensor '{n}'"))?) })
            })
            .collect()
    }

    /// [`weights`](Self::weights) of one name.
    fn weight(&mut self, name: String, shape: &[usize]) -> Result<Values<'_>> {
        Ok(self.weights(&[name], shape)?.pop().expect("one weight"))
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
        Ok(self.conv_packed(prefix, shape, scale, self.dtype)?.0)
    }

    /// [`conv_scaled`](Self::conv_scaled) packed in f32 whatever the model's dtype, with the
    /// bias's values: the source of a weight transformed on the GPU (Winograd's,
    /// [`WinogradWeight::from_direct`](crate::ops::winograd::WinogradWeight::from_direct)).
    pub fn conv_scaled_f32(&mut self, prefix: &str, shape: &[usize], scale: f32) -> Result<(ConvWeight, Vec<f32>)> {
        self.conv_packed(prefix, shape, scale, DType::F32)
    }

    fn conv_packed(&mut self, prefix: &str, shape: &[usize], scale: f32, dtype: DType) -> Result<(ConvWeight, Vec<f32>)> {
        let b = scaled(self.store.take(&format!("{prefix}.bias"), &shape[..1])?, scale);
        let (gpu, on_gpu) = (self.gpu, self.generate_on_gpu);
        let w = self.weight(format!("{prefix}.weight"), shape)?;
        let cw = ConvWeight::pack(gpu, w.src(), scale, shape, Some(&b), dtype, w.on_gpu(on_gpu))?;
        Ok((cw, b))
    }

    /// A ConvTranspose2d: `prefix.weight [cin, cout, k, k]` (PyTorch's transposed layout) and
    /// `prefix.bias [cout]`, scaled like [`conv_scaled`](Self::conv_scaled).
    pub fn conv_transposed_scaled(&mut self, prefix: &str, cin: usize, cout: usize, k: usize, scale: f32) -> Result<ConvWeight> {
        let shape = [cin, cout, k, k];
        let b = scaled(self.store.take(&format!("{prefix}.bias"), &[cout])?, scale);
        let (gpu, dtype, on_gpu) = (self.gpu, self.dtype, self.generate_on_gpu);
        let w = self.weight(format!("{prefix}.weight"), &shape)?;
        ConvWeight::pack_transposed(gpu, w.src(), scale, &shape, Some(&b), dtype, w.on_gpu(on_gpu))
    }

    /// An `Upsample2D`'s Conv2d `prefix.weight [c, c, 3, 3]` and `prefix.bias [c]`, folded into
    /// the nearest ×2 upsampling before it ([`ConvWeight::of_upsampling`]); with `keep_conv`, the
    /// 3×3 convolution itself as well, for upsamplings to other sizes.
    pub fn upsampling_conv(&mut self, prefix: &str, c: usize, keep_conv: bool) -> Result<(ConvWeight, Option<ConvWeight>)> {
        let shape = [c, c, 3, 3];
        let b = self.store.take(&format!("{prefix}.bias"), &[c])?;
        let (gpu, dtype, on_gpu) = (self.gpu, self.dtype, self.generate_on_gpu);
        let w = self.weight(format!("{prefix}.weight"), &shape)?;
        // The sums of kernel taps are made on the host, from the weight's values in f32.
        let host: std::borrow::Cow<[f32]> = match &w {
            Values::Stored(r) => to_f32(&r.data, r.dtype)?.into(),
            Values::Host(v) => v.as_slice().into(),
            Values::Synthetic(g) => g.values(c * c * 9).into(),
        };
        let folded = ConvWeight::of_upsampling(gpu, &host, &shape, Some(&b), dtype).with_context(|| format!("{prefix}.weight"))?;
        let conv = if keep_conv { Some(ConvWeight::pack(gpu, w.src(), 1.0, &shape, Some(&b), dtype, w.on_gpu(on_gpu))?) } else { None };
        Ok((folded, conv))
    }

    /// A 1×1 Conv2d `prefix.weight [cout, cin, 1, 1]` with bias, as the linear map it is on
    /// channels-last pixels.
    pub fn conv1x1_as_linear(&mut self, prefix: &str, cout: usize, cin: usize) -> Result<LinearWeight> {
        self.stacked_linear(&[prefix.to_string()], &[cout, cin, 1, 1], true)
    }

    /// A Linear `prefix.weight [out, in]`, with `prefix.bias [out]` when `bias`.
    pub fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<LinearWeight> {
        self.stacked_linear(&[prefix.to_string()], &[out, inp], bias)
    }

    /// Linears with one input stacked into one `[Σ out, in]` Linear (output channels in the order
    /// of `prefixes`): `prefix.weight` of `weight_shape` (`[out, in]`, or `[out, in, 1, 1]` for
    /// 1×1 convolutions) and, with `bias`, `prefix.bias [out]` each. One GEMM reads the input once
    /// where three would read it three times (an attention's q, k and v).
    pub fn stacked_linear(&mut self, prefixes: &[String], weight_shape: &[usize], bias: bool) -> Result<LinearWeight> {
        let (out, inp) = (weight_shape[0], weight_shape[1]);
        let mut b = Vec::with_capacity(prefixes.len() * out);
        if bias {
            for p in prefixes {
                b.extend(self.store.take(&format!("{p}.bias"), &[out])?);
            }
        }
        let (gpu, dtype, on_gpu) = (self.gpu, self.dtype, self.generate_on_gpu);
        let names: Vec<String> = prefixes.iter().map(|p| format!("{p}.weight")).collect();
        let parts = self.weights(&names, weight_shape)?;
        let srcs: Vec<Src<'_>> = parts.iter().map(Values::src).collect();
        let lw = LinearWeight::pack(gpu, &srcs, out, inp, dtype, parts.iter().all(|p| p.on_gpu(on_gpu)))?;
        if bias {
            lw.with_bias(gpu, &b)
        } else {
            Ok(lw)
        }
    }

    /// A GEGLU projection `prefix.weight [2·inner, in]` with `prefix.bias`, packed for
    /// [`linear_geglu`](crate::ops::matmul::linear_geglu).
    pub fn geglu(&mut self, prefix: &str, inner: usize, inp: usize) -> Result<GegluWeight> {
        let b = self.store.take(&format!("{prefix}.bias"), &[2 * inner])?;
        let (gpu, dtype, on_gpu) = (self.gpu, self.dtype, self.generate_on_gpu);
        let w = self.weight(format!("{prefix}.weight"), &[2 * inner, inp])?;
        GegluWeight::pack(gpu, w.src(), Some(&b), inner, inp, dtype, w.on_gpu(on_gpu))
    }

    /// A GroupNorm/LayerNorm's `prefix.weight` and `prefix.bias`, both `[c]`.
    pub fn norm(&mut self, prefix: &str, c: usize) -> Result<NormWeight> {
        let g = self.store.take(&format!("{prefix}.weight"), &[c])?;
        let b = self.store.take(&format!("{prefix}.bias"), &[c])?;
        NormWeight::from_torch(self.gpu, &g, &b)
    }
}

/// Where a weight's values come from (see [`Loader`]'s `weights`).
enum Values<'s> {
    /// A checkpoint's elements as stored (f32, f16, bf16), read straight from the file.
    Stored(RawTensor<'s>),
    /// A checkpoint's elements of another dtype, converted to f32.
    Host(Vec<f32>),
    Synthetic(Synthetic),
}

impl Values<'_> {
    fn src(&self) -> Src<'_> {
        match self {
            Values::Stored(r) => Src::Stored(r),
            Values::Host(v) => Src::Values(v),
            Values::Synthetic(g) => Src::Synthetic(g),
        }
    }

    /// Whether to make the packed weight on the GPU: a synthetic weight, where the loader
    /// generates on the GPU.
    fn on_gpu(&self, generate_on_gpu: bool) -> bool {
        generate_on_gpu && matches!(self, Values::Synthetic(_))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_stored_exactly, fresh_seed, test_gpu};

    /// Every layout a loader packs (conv 2-D, 3-D and transposed, scaled or not; linear with and
    /// without bias, stacked, from a 1×1 conv; GEGLU; an upsampler's folded conv), at awkward
    /// sizes: a synthetic store's weights, generated on the GPU or on the host, equal a
    /// checkpoint of the same store's values packed on the host, in f32 bit for bit and in f16 to
    /// the device's rounding.
    #[test]
    fn synthetic_weights_equal_their_checkpoint() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let build = |l: &mut Loader| -> Vec<(&'static str, Tensor)> {
            let c = l.conv("c2", &[7, 5, 3, 3]).unwrap();
            let c3 = l.conv_scaled("c3", &[9, 33, 3, 1, 1], 0.7).unwrap();
            let ct = l.conv_transposed_scaled("ct", 6, 7, 4, 0.25).unwrap();
            let lin = l.linear("lin", 33, 7, false).unwrap();
            let linb = l.linear("linb", 5, 77, true).unwrap();
            let qkv = l.stacked_linear(&["q".into(), "k".into(), "v".into()], &[5, 7], true).unwrap();
            let p = l.conv1x1_as_linear("p", 7, 33).unwrap();
            let ff = l.geglu("ff", 6, 5).unwrap();
            let (up, up_conv) = l.upsampling_conv("up", 6, true).unwrap();
            vec![
                ("conv", c.w),
                ("conv bias", c.bias),
                ("conv3d ×0.7", c3.w),
                ("conv-transpose ×0.25", ct.w),
                ("conv-transpose bias", ct.bias),
                ("linear", lin.w),
                ("linear with bias", linb.w),
                ("stacked", qkv.w),
                ("stacked bias", qkv.bias.unwrap()),
                ("1×1 conv as linear", p.w),
                ("GEGLU", ff.lin.w),
                ("GEGLU bias", ff.lin.bias.unwrap()),
                ("upsampling folded", up.w),
                ("upsampling folded bias", up.bias),
                ("upsampling conv", up_conv.unwrap().w),
            ]
        };
        let path = crate::testutil::scratch_dir("synthetic").join(format!("{seed}.safetensors"));
        for (dt, on_gpu) in [(DType::F32, true), (DType::F16, true), (DType::F32, false), (DType::F16, false)] {
            let mut synthetic = WeightStore::synthetic(seed);
            let got = build(&mut Loader { generate_on_gpu: on_gpu, ..Loader::new(&gpu, &mut synthetic, dt) });
            let mut values = WeightStore::synthetic(seed);
            let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = synthetic.requested().iter().map(|(n, s)| (n.clone(), s.clone(), values.take(n, s).unwrap())).collect();
            let views: Vec<(&str, &[usize], &[f32])> = tensors.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())).collect();
            crate::weights::save_f32(&path, &views).unwrap();
            let mut file = WeightStore::open(&path).unwrap();
            let want = build(&mut Loader::new(&gpu, &mut file, dt));
            file.finish().unwrap();
            for ((what, g), (_, w)) in got.iter().zip(&want) {
                assert_eq!(g.shape(), w.shape(), "{what}");
                let what = format!("seed {seed}, {what}, {}, generated on the {}", dt.name(), if on_gpu { "GPU" } else { "host" });
                assert_stored_exactly(&what, &g.to_f32(&gpu).unwrap(), &w.to_f32(&gpu).unwrap(), dt);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}
