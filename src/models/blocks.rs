//! The 2-D building blocks shared by the SD×4 UNet and VAE (diffusers `resnet.py`,
//! `attention.py`, `transformer_2d.py`, `downsampling.py`, `upsampling.py`).
//! Activations: channels-last `[N, H, W, C]`; token sequences `[N, L, C]`.

use anyhow::{bail, Result};

use super::Loader;
use crate::ops::attention::{attention, attention_qkv, AttnOpts};
use crate::ops::conv::{conv2d, conv2d_normed, conv3d_normed, conv_transpose2d, ConvKind, ConvWeight};
use crate::ops::elementwise::{unary, Unary};
use crate::ops::embed::{embedding_lookup, timestep_embedding_as};
use crate::ops::matmul::{linear, linear_add, linear_geglu, GegluWeight, LinearInput, LinearWeight};
use crate::ops::input::Input;
use crate::ops::residual::Residual;
use crate::ops::norm::{group_norm_apply, group_norm_table_w, GnTable, GroupNormOpts, NormWeight};
use crate::ops::winograd::{conv2d_winograd, conv3d_winograd, WinogradWeight};
use crate::ops::resize::upsample_nearest_to;
use crate::{Recorder, Tensor};

/// Per-image GroupNorm statistics (2-D models: every image is its own "window").
pub const PER_IMAGE: GroupNormOpts = GroupNormOpts { frames: 1, pooled: false, silu: false };
pub const PER_IMAGE_SILU: GroupNormOpts = GroupNormOpts { frames: 1, pooled: false, silu: true };

/// diffusers `ResnetBlock2D` (time_scale_shift "default", output_scale_factor 1, no dropout):
/// `h = conv1(SiLU(GN1(x))) [+ time_emb_proj(SiLU(temb))]; h = conv2(SiLU(GN2(h)));
/// out = shortcut(x) + h`. Both additions happen in the convolutions' stores.
pub struct ResnetBlock2D {
    pub norm1: NormWeight,
    pub conv1: NormedConv,
    pub time_emb_proj: Option<LinearWeight>,
    pub norm2: NormWeight,
    pub conv2: NormedConv,
    pub conv_shortcut: Option<ConvWeight>,
    pub groups: usize,
    pub eps: f32,
    /// GroupNorm statistics over all frames of a video window (the video UNets' `ResnetBlock3D`
    /// normalises the 5-D tensor) instead of per image.
    pub pooled: bool,
}

impl ResnetBlock2D {
    /// `temb_channels`: width of the time embedding, or `None` (VAE resnets have no temb).
    pub fn load(l: &mut Loader, prefix: &str, cin: usize, cout: usize, temb_channels: Option<usize>, groups: usize, eps: f32) -> Result<Self> {
        Ok(ResnetBlock2D {
            norm1: l.norm(&format!("{prefix}.norm1"), cin)?,
            conv1: NormedConv::load(l, &format!("{prefix}.conv1"), &[cout, cin, 3, 3], 1.0)?,
            time_emb_proj: match temb_channels {
                Some(t) => Some(l.linear(&format!("{prefix}.time_emb_proj"), cout, t, true)?),
                None => None,
            },
            norm2: l.norm(&format!("{prefix}.norm2"), cout)?,
            conv2: NormedConv::load(l, &format!("{prefix}.conv2"), &[cout, cout, 3, 3], 1.0)?,
            conv_shortcut: if cin != cout { Some(l.conv2d(&format!("{prefix}.conv_shortcut"), cout, cin, 1)?) } else { None },
            groups,
            eps,
            pooled: false,
        })
    }

    /// `x [N, H, W, Cin]`; `temb_silu [N, T]` is `SiLU(temb)`, computed once per forward.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: Option<&Tensor>) -> Result<Tensor> {
        self.forward_frames(rec, x, temb_silu, 1)
    }

    /// [`forward`](Self::forward) on video frames `x [B·F, H, W, Cin]` (F = `frames`, frame index
    /// fastest): `temb_silu [B, T]` is shared by a batch element's frames, and with `pooled` the
    /// norms' statistics span its F frames. `x` may be a channel pair (the up path's activation
    /// and skip, [`Input::channels`]): norm1, conv1 and the shortcut read both, so the
    /// concatenation is never written.
    pub fn forward_frames(&self, rec: &mut Recorder, x: impl Into<Input>, temb_silu: Option<&Tensor>, frames: usize) -> Result<Tensor> {
        let x = &x.into();
        let opts = GroupNormOpts { frames, pooled: self.pooled, silu: true };
        // Each norm (+ SiLU) is applied by the convolution after it, in its own pass or as the
        // convolution loads (conv::Fuse).
        let norm1 = group_norm_table_w(rec, x, self.groups, self.eps, &self.norm1, opts)?;
        let h = match (&self.time_emb_proj, temb_silu) {
            (Some(p), Some(t)) => {
                let t = linear(rec, t, p)?;
                self.conv1.forward(rec, x, &norm1, Some(Residual::PerBatch(&t)))?
            }
            _ => self.conv1.forward(rec, x, &norm1, None)?,
        };
        let norm2 = group_norm_table_w(rec, &h, self.groups, self.eps, &self.norm2, opts)?;
        let skip = match &self.conv_shortcut {
            Some(s) => conv2d(rec, x, s, 1, 0)?,
            None => x.materialise(rec)?.into_owned(),
        };
        self.conv2.forward(rec, &h, &norm2, Some(Residual::Same(&skip)))
    }
}

/// A resnet's 3×3 convolution (stride 1, padding 1), or the TE-3DVAE's 3×3×3 one, of the
/// GroupNorm (+ SiLU) of its input: direct, or by Winograd's F(2×2, 3×3) (`ops::winograd`) where
/// `--winograd` asks for it ([`crate::Gpu::winograd`]) and the channels are multiples of 4 (the
/// norm then applied as its input transform loads).
pub enum NormedConv {
    Direct(ConvWeight),
    Winograd(WinogradWeight),
}

impl NormedConv {
    /// `prefix.weight` of `shape` (`[Cout, Cin, 3, 3]` or `[Cout, Cin, 3, 3, 3]`) and
    /// `prefix.bias`, both times `scale`.
    pub fn load(l: &mut Loader, prefix: &str, shape: &[usize], scale: f32) -> Result<Self> {
        let (cout, cin) = (shape[0], shape[1]);
        if !l.gpu.winograd() || !cin.is_multiple_of(4) || !cout.is_multiple_of(4) {
            return Ok(NormedConv::Direct(l.conv_scaled(prefix, shape, scale)?));
        }
        // Packed as the direct convolution's weight (generated on the GPU where the loader does),
        // transformed on the GPU.
        let (direct, b) = l.conv_scaled_f32(prefix, shape, scale)?;
        Ok(NormedConv::Winograd(WinogradWeight::from_direct(l.gpu, &direct, Some(&b), l.dtype)?))
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        match self {
            NormedConv::Direct(w) => w.cout,
            NormedConv::Winograd(w) => w.cout,
        }
    }

    /// The convolution of `x` normalised by `norm` (its table), plus `res` where given: `x` is
    /// `[.., H, W, Cin]` (or a channel pair) for a 2-D convolution, `[B, F, H, W, Cin]` for a
    /// 3-D one.
    pub fn forward(&self, rec: &mut Recorder, x: impl Into<Input>, norm: &GnTable, res: Option<Residual>) -> Result<Tensor> {
        let x = x.into();
        match self {
            NormedConv::Direct(w) if w.kind == ConvKind::Conv3d => {
                let x = x.materialise(rec)?.into_owned();
                conv3d_normed(rec, &x, norm, w, res)
            }
            NormedConv::Direct(w) => conv2d_normed(rec, x, norm, w, 1, 1, res),
            NormedConv::Winograd(w) => {
                // The input transform applies the norm as it loads; a channel pair is normalised
                // (and so concatenated) in the norm's own pass first.
                let (h, n) = match x {
                    Input::Tensor(t) => (t, Some(norm)),
                    pair => (group_norm_apply(rec, pair, norm)?, None),
                };
                if w.is_3d() {
                    conv3d_winograd(rec, &h, n, w, res)
                } else {
                    conv2d_winograd(rec, &h, n, w, res)
                }
            }
        }
    }
}

/// An attention's q, k, v projections: three Linears (cross-attention: k and v read the
/// context), or for self-attention `to_q | to_k | to_v` stacked into one Linear whose output
/// `[.., 3·dim]` the attention kernel reads in place.
// A few dozen per model, built once: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Qkv {
    Separate { to_q: LinearWeight, to_k: LinearWeight, to_v: LinearWeight },
    Stacked(LinearWeight),
}

impl Qkv {
    /// `to_q`, `to_k`, `to_v` under `prefix` (`[dim, dim]` or, with `conv1x1`, `[dim, dim, 1, 1]`
    /// weights), stacked.
    pub fn load_stacked(l: &mut Loader, names: [String; 3], dim: usize, bias: bool, conv1x1: bool) -> Result<Qkv> {
        let shape: &[usize] = if conv1x1 { &[dim, dim, 1, 1] } else { &[dim, dim] };
        Ok(Qkv::Stacked(l.stacked_linear(&names, shape, bias)?))
    }

    /// Multi-head attention of `x [N, L, dim]` to `ctx` (`None`: self-attention), unprojected.
    /// `x` may be a LayerNorm's input, applied by the projection that reads it.
    pub fn attend(&self, rec: &mut Recorder, x: impl Into<LinearInput>, ctx: Option<&Tensor>, heads: usize) -> Result<Tensor> {
        let x = x.into();
        match (self, ctx) {
            (Qkv::Stacked(w), None) => {
                let qkv = linear(rec, x, w)?;
                let dh = w.out_features / 3 / heads;
                attention_qkv(rec, &qkv, heads, AttnOpts { scale: (dh as f32).powf(-0.5), causal: false })
            }
            (Qkv::Stacked(_), Some(_)) => anyhow::bail!("a stacked q/k/v projection serves self-attention only"),
            (Qkv::Separate { to_q, to_k, to_v }, ctx) => {
                // Self-attention reads x three times: a norm of it is written once.
                let (x, ctx) = match ctx {
                    Some(c) => (x, c.clone()),
                    None => {
                        let t = x.materialise(rec)?;
                        (LinearInput::from(&t), t)
                    }
                };
                let q = linear(rec, x, to_q)?;
                let k = linear(rec, &ctx, to_k)?;
                let v = linear(rec, &ctx, to_v)?;
                let dh = to_q.out_features / heads;
                attention(rec, &q, &k, &v, heads, AttnOpts { scale: (dh as f32).powf(-0.5), causal: false })
            }
        }
    }
}

/// diffusers `Attention` as used by the UNet transformers: q/k/v without bias, `to_out.0` with
/// bias, `heads` heads, scale dh^-1/2.
pub struct Attention {
    pub qkv: Qkv,
    pub to_out: LinearWeight,
    pub heads: usize,
}

impl Attention {
    /// Cross-attention to a `ctx_dim`-wide context.
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, ctx_dim: usize, heads: usize, qkv_bias: bool) -> Result<Self> {
        Ok(Attention {
            qkv: Qkv::Separate {
                to_q: l.linear(&format!("{prefix}.to_q"), dim, dim, qkv_bias)?,
                to_k: l.linear(&format!("{prefix}.to_k"), dim, ctx_dim, qkv_bias)?,
                to_v: l.linear(&format!("{prefix}.to_v"), dim, ctx_dim, qkv_bias)?,
            },
            to_out: l.linear(&format!("{prefix}.to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// Self-attention, its q/k/v stacked.
    pub fn load_self(l: &mut Loader, prefix: &str, dim: usize, heads: usize) -> Result<Self> {
        Ok(Attention {
            qkv: Qkv::load_stacked(l, ["to_q", "to_k", "to_v"].map(|n| format!("{prefix}.{n}")), dim, false, false)?,
            to_out: l.linear(&format!("{prefix}.to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `x [N, L, dim]` attends to `ctx [N, Lc, ctx_dim]` (`None`: to itself); returns
    /// `res + attention`, the sum formed as `to_out` stores its output. `x` may be a
    /// LayerNorm's input ([`LinearInput::layer_normed`]).
    pub fn forward_add(&self, rec: &mut Recorder, x: impl Into<LinearInput>, ctx: Option<&Tensor>, res: &Tensor) -> Result<Tensor> {
        let o = self.qkv.attend(rec, x, ctx, self.heads)?;
        linear_add(rec, &o, &self.to_out, Residual::Same(res))
    }
}

/// diffusers `FeedForward` with GEGLU: `net.2(geglu(net.0.proj(x)))`, inner width 4·dim.
pub struct FeedForward {
    /// `net.0.proj`, gated as its product is stored.
    pub proj: GegluWeight,
    pub out: LinearWeight,
}

impl FeedForward {
    pub fn load(l: &mut Loader, prefix: &str, dim: usize) -> Result<Self> {
        Ok(FeedForward {
            proj: l.geglu(&format!("{prefix}.net.0.proj"), 4 * dim, dim)?,
            out: l.linear(&format!("{prefix}.net.2"), dim, 4 * dim, true)?,
        })
    }

    /// `res + FF(x)`, the sum formed as `net.2` stores its output. `x` may be a LayerNorm's
    /// input.
    pub fn forward_add(&self, rec: &mut Recorder, x: impl Into<LinearInput>, res: &Tensor) -> Result<Tensor> {
        let h = linear_geglu(rec, x, &self.proj)?;
        linear_add(rec, &h, &self.out, Residual::Same(res))
    }
}

/// diffusers `BasicTransformerBlock` (plain LayerNorms, eps 1e-5):
/// `x += attn1(LN1(x) [, text if only_cross]); x += attn2(LN2(x), text); x += FF(LN3(x))`.
pub struct BasicTransformerBlock {
    pub norm1: NormWeight,
    pub attn1: Attention,
    pub norm2: NormWeight,
    pub attn2: Attention,
    pub norm3: NormWeight,
    pub ff: FeedForward,
    pub only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, ctx_dim: usize, heads: usize, only_cross: bool) -> Result<Self> {
        Ok(BasicTransformerBlock {
            norm1: l.norm(&format!("{prefix}.norm1"), dim)?,
            attn1: if only_cross {
                Attention::load(l, &format!("{prefix}.attn1"), dim, ctx_dim, heads, false)?
            } else {
                Attention::load_self(l, &format!("{prefix}.attn1"), dim, heads)?
            },
            norm2: l.norm(&format!("{prefix}.norm2"), dim)?,
            attn2: Attention::load(l, &format!("{prefix}.attn2"), dim, ctx_dim, heads, false)?,
            norm3: l.norm(&format!("{prefix}.norm3"), dim)?,
            ff: FeedForward::load(l, &format!("{prefix}.ff"), dim)?,
            only_cross_attention: only_cross,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_with(rec, x, ctx, |_, x| Ok(x))
    }

    /// [`forward`](Self::forward) with `between` run on the residual stream after the
    /// cross-attention and before the feed-forward: where the video transformer block puts its
    /// temporal attention.
    pub fn forward_with(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        ctx: &Tensor,
        between: impl FnOnce(&mut Recorder, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        // Each LayerNorm is applied by the projection after it, in its own pass or as the
        // projection loads (norm::Fuse).
        let n = LinearInput::layer_normed(x, &self.norm1, 1e-5);
        let x = self.attn1.forward_add(rec, n, self.only_cross_attention.then_some(ctx), x)?;
        let n = LinearInput::layer_normed(&x, &self.norm2, 1e-5);
        let x = self.attn2.forward_add(rec, n, Some(ctx), &x)?;
        let x = between(rec, x)?;
        let n = LinearInput::layer_normed(&x, &self.norm3, 1e-5);
        self.ff.forward_add(rec, n, &x)
    }
}

/// diffusers `Transformer2DModel` with linear projections and one block:
/// `out = proj_out(block(proj_in(GN(x) as tokens))) + x`, GN eps 1e-6, per image.
pub struct Transformer2D {
    pub norm: NormWeight,
    pub proj_in: LinearWeight,
    pub block: BasicTransformerBlock,
    pub proj_out: LinearWeight,
    pub groups: usize,
}

impl Transformer2D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, ctx_dim: usize, heads: usize, only_cross: bool, groups: usize, linear_proj: bool) -> Result<Self> {
        let proj = |l: &mut Loader, name: &str| -> Result<LinearWeight> {
            if linear_proj {
                l.linear(&format!("{prefix}.{name}"), dim, dim, true)
            } else {
                l.conv1x1_as_linear(&format!("{prefix}.{name}"), dim, dim)
            }
        };
        Ok(Transformer2D {
            norm: l.norm(&format!("{prefix}.norm"), dim)?,
            proj_in: proj(l, "proj_in")?,
            block: BasicTransformerBlock::load(l, &format!("{prefix}.transformer_blocks.0"), dim, ctx_dim, heads, only_cross)?,
            proj_out: proj(l, "proj_out")?,
            groups,
        })
    }

    /// `x [N, H, W, C]`, `ctx [N, Lc, D]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        // The norm is applied by proj_in, in its own pass or as proj_in loads (norm::Fuse).
        let norm = group_norm_table_w(rec, x, self.groups, 1e-6, &self.norm, PER_IMAGE)?;
        let h = LinearInput::group_normed(&x.reshape(&[s[0], s[1] * s[2], s[3]])?, &norm)?;
        let h = linear(rec, h, &self.proj_in)?;
        let h = self.block.forward(rec, &h, ctx)?;
        linear_add(rec, &h, &self.proj_out, Residual::Same(x))?.reshape(&s)
    }
}

/// diffusers `Downsample2D` with a conv: 3×3, stride 2, padding `pad`.
pub struct Downsample2D {
    pub conv: ConvWeight,
    pub pad: usize,
}

impl Downsample2D {
    pub fn load(l: &mut Loader, prefix: &str, c: usize, pad: usize) -> Result<Self> {
        Ok(Downsample2D { conv: l.conv2d(&format!("{prefix}.conv"), c, c, 3)?, pad })
    }
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        conv2d(rec, x, &self.conv, 2, self.pad)
    }
}

/// diffusers `Upsample2D` with a conv: nearest ×2 (or nearest to `size`, as the UNet asks when
/// the latent is not a multiple of 2^levels), then 3×3 conv. The ×2 case runs as the transposed
/// convolution the two make together ([`ConvWeight::of_upsampling`]): 4/9 of the multiplies,
/// and the upsampled tensor is never written.
pub struct Upsample2D {
    /// The conv folded into the ×2 upsampling, a `ConvTranspose2d` weight.
    pub folded: ConvWeight,
    /// The 3×3 conv itself, for the UNets' other sizes; `None` in the VAE decoders, whose
    /// upsamplings always double.
    pub conv: Option<ConvWeight>,
}

impl Upsample2D {
    /// A VAE decoder's upsampler: ×2 only.
    pub fn load(l: &mut Loader, prefix: &str, c: usize) -> Result<Self> {
        let (folded, conv) = l.upsampling_conv(&format!("{prefix}.conv"), c, false)?;
        Ok(Upsample2D { folded, conv })
    }

    /// A UNet's upsampler: ×2, or to the size of a skip of odd size.
    pub fn load_any_size(l: &mut Loader, prefix: &str, c: usize) -> Result<Self> {
        let (folded, conv) = l.upsampling_conv(&format!("{prefix}.conv"), c, true)?;
        Ok(Upsample2D { folded, conv })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let r = x.shape().len();
        let doubled = (2 * x.shape()[r - 3], 2 * x.shape()[r - 2]);
        match (size, &self.conv) {
            (Some(s), Some(conv)) if s != doubled => {
                let h = upsample_nearest_to(rec, x, s)?;
                conv2d(rec, &h, conv, 1, 1)
            }
            (Some(s), None) if s != doubled => bail!("Upsample2D: an upsampling to {s:?} from {:?} needs its 3×3 conv, loaded only for UNets (load_any_size)", x.shape()),
            _ => conv_transpose2d(rec, x, &self.folded),
        }
    }
}

/// The UNets' time and noise-level embedding (diffusers `TimestepEmbedding` + `class_embedding`):
/// `temb = linear_2(SiLU(linear_1(sinusoid(t)))) + class_embedding[noise_level]`.
pub struct TimeEmbedding {
    pub linear_1: LinearWeight,
    pub linear_2: LinearWeight,
    /// `class_embedding.weight [num_class_embeds, time_embed_dim]`.
    pub class_embedding: Option<Tensor>,
    /// Width of the sinusoid (`block_out_channels[0]`), its order and shift.
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
}

impl TimeEmbedding {
    pub fn load(l: &mut Loader, c: &crate::config::UNet2DConfig) -> Result<Self> {
        let dim = c.block_out_channels[0];
        let temb = c.time_embed_dim();
        Ok(TimeEmbedding {
            linear_1: l.linear("time_embedding.linear_1", temb, dim, true)?,
            linear_2: l.linear("time_embedding.linear_2", temb, temb, true)?,
            class_embedding: match c.num_class_embeds {
                Some(k) => Some(l.tensor("class_embedding.weight", &[k, temb])?),
                None => None,
            },
            dim,
            flip_sin_to_cos: c.flip_sin_to_cos,
            freq_shift: c.freq_shift as f32,
        })
    }

    /// `SiLU(temb) [B, time_embed_dim]`: every resnet projects exactly this, so it is computed once.
    /// `timestep [B]` f32, `class_labels [B]` u32 ids (required when the model has a class embedding).
    pub fn forward_silu(&self, rec: &mut Recorder, timestep: &Tensor, class_labels: Option<&Tensor>, dtype: crate::DType) -> Result<Tensor> {
        let t_emb = timestep_embedding_as(rec, timestep, self.dim, self.flip_sin_to_cos, self.freq_shift, dtype)?;
        let temb = linear(rec, &t_emb, &self.linear_1)?;
        let temb = unary(rec, Unary::Silu, &temb)?;
        let temb = match &self.class_embedding {
            Some(table) => {
                let Some(ids) = class_labels else { anyhow::bail!("this UNet needs class_labels (the noise level)") };
                let b = timestep.shape().first().copied().unwrap_or(0);
                if ids.shape() != [b] {
                    anyhow::bail!(
                        "class_labels must be [{b}] (one noise level per batch element, like timestep), got {:?}",
                        ids.shape()
                    );
                }
                let ce = embedding_lookup(rec, table, ids)?;
                linear_add(rec, &temb, &self.linear_2, Residual::Same(&ce))?
            }
            None => linear(rec, &temb, &self.linear_2)?,
        };
        unary(rec, Unary::Silu, &temb)
    }
}
