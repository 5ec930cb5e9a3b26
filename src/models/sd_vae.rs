//! The SD×4 upscaler's VAE decoder: diffusers `AutoencoderKL.decode` (spec §2.6).
//! Only the decoder runs: the encoder's weights in a full VAE file are skipped by name.

use anyhow::{bail, Result};

use super::blocks::{Qkv, ResnetBlock2D, Upsample2D, PER_IMAGE, PER_IMAGE_SILU};
use super::Loader;
use crate::config::VaeConfig;
use crate::ops::conv::{conv2d, conv2d_normed, ConvWeight};
use crate::ops::layout::{nchw_to_nhwc, nhwc_to_nchw};
use crate::ops::matmul::{linear_add, LinearInput, LinearWeight};
use crate::ops::residual::Residual;
use crate::ops::norm::{group_norm_table_w, GroupNormOpts, NormWeight};
use crate::{Recorder, Tensor};

/// Key prefixes of a full `AutoencoderKL` file that decoding never uses.
pub const UNUSED_PREFIXES: [&str; 2] = ["encoder.", "quant_conv."];

/// The mid block's single-head spatial self-attention with residual (diffusers `Attention` with
/// `residual_connection`, q/k/v/out biased). Accepts the old (`query`, `key`, `value`,
/// `proj_attn`) and current (`to_q`, `to_k`, `to_v`, `to_out.0`) names.
pub struct VaeAttention {
    pub group_norm: NormWeight,
    /// `to_q | to_k | to_v` (or `query | key | value`), stacked.
    pub qkv: Qkv,
    pub to_out: LinearWeight,
    pub groups: usize,
}

impl VaeAttention {
    /// The attention at `prefix`, under whichever names the store holds; `prefer_old`: the names
    /// to ask for when the store has neither (a synthetic store, as in full-size key checks of
    /// models saved with the old names).
    pub fn load_with(l: &mut Loader, prefix: &str, c: usize, groups: usize, prefer_old: bool) -> Result<Self> {
        let old = l.store.contains(&format!("{prefix}.query.weight")) || (prefer_old && !l.store.contains(&format!("{prefix}.to_q.weight")));
        let name = |new: &str, old_name: &str| format!("{prefix}.{}", if old { old_name } else { new });
        Ok(VaeAttention {
            group_norm: l.norm(&format!("{prefix}.group_norm"), c)?,
            qkv: Qkv::load_stacked(l, [name("to_q", "query"), name("to_k", "key"), name("to_v", "value")], c, true, false)?,
            to_out: l.linear(&name("to_out.0", "proj_attn"), c, c, true)?,
            groups,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let c = s[3];
        // The norm is applied by the q/k/v projection (norm::Fuse).
        let norm = group_norm_table_w(rec, x, self.groups, 1e-6, &self.group_norm, PER_IMAGE)?;
        let h = LinearInput::group_normed(&x.reshape(&[s[0], s[1] * s[2], c])?, &norm)?;
        let o = self.qkv.attend(rec, h, None, 1)?;
        linear_add(rec, &o, &self.to_out, Residual::Same(x))?.reshape(&s)
    }
}

pub struct VaeUpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

pub struct VaeDecoder {
    pub config: VaeConfig,
    pub post_quant_conv: Option<ConvWeight>,
    pub conv_in: ConvWeight,
    pub mid_resnets: [ResnetBlock2D; 2],
    pub mid_attention: Option<VaeAttention>,
    pub up_blocks: Vec<VaeUpBlock>,
    pub conv_norm_out: NormWeight,
    pub conv_out: ConvWeight,
}

impl VaeDecoder {
    pub fn load(l: &mut Loader, config: &VaeConfig) -> Result<Self> {
        Self::load_with(l, config, false)
    }

    /// [`Self::load`]; `old_attention_names`: see [`VaeAttention::load_with`].
    pub fn load_with(l: &mut Loader, config: &VaeConfig, old_attention_names: bool) -> Result<Self> {
        config.validate()?;
        let c = config;
        let g = c.norm_num_groups;
        let eps = 1e-6;
        let boc = &c.block_out_channels;
        let n = boc.len();
        let top = boc[n - 1];
        let lat = c.latent_channels;
        for p in UNUSED_PREFIXES {
            l.store.skip_prefix(p);
        }
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_ch = rev[0];
        for (i, &ch) in rev.iter().enumerate().take(n) {
            let prev = out_ch;
            out_ch = ch;
            let mut resnets = Vec::new();
            for j in 0..=c.layers_per_block {
                resnets.push(ResnetBlock2D::load(
                    l,
                    &format!("decoder.up_blocks.{i}.resnets.{j}"),
                    if j == 0 { prev } else { out_ch },
                    out_ch,
                    None,
                    g,
                    eps,
                )?);
            }
            let upsampler = if i + 1 < n { Some(Upsample2D::load(l, &format!("decoder.up_blocks.{i}.upsamplers.0"), out_ch)?) } else { None };
            up_blocks.push(VaeUpBlock { resnets, upsampler });
        }
        Ok(VaeDecoder {
            config: c.clone(),
            post_quant_conv: if c.use_post_quant_conv { Some(l.conv2d("post_quant_conv", lat, lat, 1)?) } else { None },
            conv_in: l.conv2d("decoder.conv_in", top, lat, 3)?,
            mid_resnets: [
                ResnetBlock2D::load(l, "decoder.mid_block.resnets.0", top, top, None, g, eps)?,
                ResnetBlock2D::load(l, "decoder.mid_block.resnets.1", top, top, None, g, eps)?,
            ],
            mid_attention: if c.mid_block_add_attention {
                Some(VaeAttention::load_with(l, "decoder.mid_block.attentions.0", top, g, old_attention_names)?)
            } else {
                None
            },
            up_blocks,
            conv_norm_out: l.norm("decoder.conv_norm_out", boc[0])?,
            conv_out: l.conv2d("decoder.conv_out", c.out_channels, boc[0], 3)?,
        })
    }

    /// `latents [B, latent_channels, h, w]` (PyTorch layout, already divided by the scaling
    /// factor, as `AutoencoderKL.decode` receives them) → `[B, out_channels, h·2^(n−1), w·2^(n−1)]`.
    pub fn forward(&self, rec: &mut Recorder, latents: &Tensor) -> Result<Tensor> {
        let s = latents.shape();
        if s.len() != 4 || s[1] != self.config.latent_channels {
            bail!("vae decoder: latents must be [B, {}, h, w], got {s:?}", self.config.latent_channels);
        }
        let x = nchw_to_nhwc(rec, latents)?;
        let x = self.decode_nhwc(rec, &x, 1)?;
        nhwc_to_nchw(rec, &x)
    }

    /// The decoder on channels-last latents `x [N, h, w, latent_channels]` → `[N, H, W, out]`.
    /// With `frames > 1`, `x` holds `N = B·F` video frames and every resnet's GroupNorm and
    /// `conv_norm_out` pool their statistics over each batch element's F frames (UAV's
    /// `vae_3d`, whose 2-D layers see 5-D tensors); the attention's norm stays per frame.
    pub fn decode_nhwc(&self, rec: &mut Recorder, x: &Tensor, frames: usize) -> Result<Tensor> {
        let g = self.config.norm_num_groups;
        let mut x = x.clone();
        if let Some(p) = &self.post_quant_conv {
            x = conv2d(rec, &x, p, 1, 0)?;
        }
        x = conv2d(rec, &x, &self.conv_in, 1, 1)?;
        rec.tap("decoder.conv_in", &x);
        x = self.mid_resnets[0].forward_frames(rec, &x, None, frames)?;
        if let Some(a) = &self.mid_attention {
            x = a.forward(rec, &x)?;
        }
        x = self.mid_resnets[1].forward_frames(rec, &x, None, frames)?;
        rec.tap("decoder.mid_block", &x);
        for (i, blk) in self.up_blocks.iter().enumerate() {
            for r in &blk.resnets {
                x = r.forward_frames(rec, &x, None, frames)?;
            }
            if let Some(u) = &blk.upsampler {
                x = u.forward(rec, &x, None)?;
            }
            rec.tap(&format!("decoder.up_blocks.{i}"), &x);
        }
        let gn = if frames > 1 { GroupNormOpts { frames, pooled: true, silu: true } } else { PER_IMAGE_SILU };
        let norm = group_norm_table_w(rec, &x, g, 1e-6, &self.conv_norm_out, gn)?;
        conv2d_normed(rec, &x, &norm, &self.conv_out, 1, 1, None)
    }
}
