//! The SD×4 upscaler's UNet: diffusers `UNet2DConditionModel` (spec §2.1–2.2).

use anyhow::{bail, Result};

use super::blocks::{Downsample2D, ResnetBlock2D, TimeEmbedding, Transformer2D, Upsample2D, PER_IMAGE_SILU};
use super::Loader;
use crate::config::UNet2DConfig;
use crate::ops::concat::concat_channels;
use crate::ops::conv::{conv2d, ConvWeight};
use crate::ops::layout::{nchw_to_nhwc, nhwc_to_nchw};
use crate::ops::norm::{group_norm_w, NormWeight};
use crate::{Recorder, Tensor};

pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub downsampler: Option<Downsample2D>,
}

pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub upsampler: Option<Upsample2D>,
}

pub struct MidBlock {
    pub resnets: [ResnetBlock2D; 2],
    pub attention: Transformer2D,
}

pub struct UNet2D {
    pub config: UNet2DConfig,
    pub conv_in: ConvWeight,
    pub time_embedding: TimeEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: NormWeight,
    pub conv_out: ConvWeight,
}

/// Per-forward inputs. `sample [B, in_channels, H, W]` (PyTorch layout, latents then the
/// low-res image), `timestep [B]` f32, `class_labels [B]` u32 ids (`Tensor::from_u32`),
/// `encoder_hidden_states [B, 77, cross_attention_dim]`.
pub struct UNetInputs<'a> {
    pub sample: &'a Tensor,
    pub timestep: &'a Tensor,
    pub class_labels: Option<&'a Tensor>,
    pub encoder_hidden_states: &'a Tensor,
}

impl UNet2D {
    pub fn load(l: &mut Loader, config: &UNet2DConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let boc = &c.block_out_channels;
        let n = boc.len();
        let temb = c.time_embed_dim();
        let g = c.norm_num_groups;
        let eps = c.norm_eps as f32;
        let ctx = c.cross_attention_dim;

        let mut down_blocks = Vec::new();
        let mut out_ch = boc[0];
        for i in 0..n {
            let in_ch = out_ch;
            out_ch = boc[i];
            let cross = c.down_block_types[i] == "CrossAttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                let p = format!("down_blocks.{i}");
                resnets.push(ResnetBlock2D::load(l, &format!("{p}.resnets.{j}"), if j == 0 { in_ch } else { out_ch }, out_ch, Some(temb), g, eps)?);
                if cross {
                    attentions.push(Transformer2D::load(
                        l,
                        &format!("{p}.attentions.{j}"),
                        out_ch,
                        ctx,
                        c.heads(i),
                        c.only_cross_attention.get(i),
                        g,
                        c.use_linear_projection,
                    )?);
                }
            }
            let downsampler =
                if i + 1 < n { Some(Downsample2D::load(l, &format!("down_blocks.{i}.downsamplers.0"), out_ch, c.downsample_padding)?) } else { None };
            down_blocks.push(DownBlock { resnets, attentions, downsampler });
        }

        let top = boc[n - 1];
        let mid_block = MidBlock {
            resnets: [
                ResnetBlock2D::load(l, "mid_block.resnets.0", top, top, Some(temb), g, eps)?,
                ResnetBlock2D::load(l, "mid_block.resnets.1", top, top, Some(temb), g, eps)?,
            ],
            attention: Transformer2D::load(l, "mid_block.attentions.0", top, ctx, c.heads(n - 1), false, g, c.use_linear_projection)?,
        };
        if c.mid_block_scale_factor != 1.0 {
            bail!("mid_block_scale_factor {} is not supported (SD×4 uses 1)", c.mid_block_scale_factor);
        }

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_ch = rev[0];
        for i in 0..n {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            // diffusers indexes the reversed per-block settings for the up path.
            let level = n - 1 - i;
            let cross = c.up_block_types[i] == "CrossAttnUpBlock2D";
            let layers = c.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                let p = format!("up_blocks.{i}");
                resnets.push(ResnetBlock2D::load(l, &format!("{p}.resnets.{j}"), rin + skip, out_ch, Some(temb), g, eps)?);
                if cross {
                    attentions.push(Transformer2D::load(
                        l,
                        &format!("{p}.attentions.{j}"),
                        out_ch,
                        ctx,
                        c.heads(level),
                        c.only_cross_attention.get(level),
                        g,
                        c.use_linear_projection,
                    )?);
                }
            }
            let upsampler = if i + 1 < n { Some(Upsample2D::load(l, &format!("up_blocks.{i}.upsamplers.0"), out_ch)?) } else { None };
            up_blocks.push(UpBlock { resnets, attentions, upsampler });
        }

        Ok(UNet2D {
            config: c.clone(),
            conv_in: l.conv2d("conv_in", boc[0], c.in_channels, 3)?,
            time_embedding: TimeEmbedding::load(l, c)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: l.norm("conv_norm_out", boc[0])?,
            conv_out: l.conv2d("conv_out", c.out_channels, boc[0], 3)?,
        })
    }

    /// One forward pass; returns the predicted `[B, out_channels, H, W]` (PyTorch layout).
    /// `taps`, when given, receives named channels-last intermediates (for tests).
    pub fn forward(&self, rec: &mut Recorder, inp: &UNetInputs, mut taps: Option<&mut Vec<(String, Tensor)>>) -> Result<Tensor> {
        let c = &self.config;
        let dtype = inp.sample.dtype();
        let s = inp.sample.shape();
        if s.len() != 4 || s[1] != c.in_channels {
            bail!("unet: sample must be [B, {}, H, W], got {:?}", c.in_channels, s);
        }
        let (b, h, w) = (s[0], s[2], s[3]);
        if inp.timestep.shape() != [b] {
            bail!("unet: timestep must be [{b}] (one per batch element), got {:?}", inp.timestep.shape());
        }
        let e = inp.encoder_hidden_states.shape();
        if e.len() != 3 || e[0] != b || e[2] != c.cross_attention_dim {
            bail!("unet: encoder_hidden_states must be [{b}, L, {}], got {e:?}", c.cross_attention_dim);
        }
        let mut tap = |name: &str, t: &Tensor| {
            if let Some(v) = taps.as_deref_mut() {
                v.push((name.to_string(), t.clone()));
            }
        };

        let temb_silu = self.time_embedding.forward_silu(rec, inp.timestep, inp.class_labels, dtype)?;
        let ctx = inp.encoder_hidden_states;

        let x = nchw_to_nhwc(rec, inp.sample)?;
        let mut x = conv2d(rec, &x, &self.conv_in, 1, 1)?;
        tap("conv_in", &x);
        let mut skips = vec![x.clone()];
        for (i, blk) in self.down_blocks.iter().enumerate() {
            for (j, r) in blk.resnets.iter().enumerate() {
                x = r.forward(rec, &x, Some(&temb_silu))?;
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(rec, &x, ctx)?;
                }
                skips.push(x.clone());
            }
            if let Some(d) = &blk.downsampler {
                x = d.forward(rec, &x)?;
                skips.push(x.clone());
            }
            tap(&format!("down_blocks.{i}"), &x);
        }

        x = self.mid_block.resnets[0].forward(rec, &x, Some(&temb_silu))?;
        x = self.mid_block.attention.forward(rec, &x, ctx)?;
        x = self.mid_block.resnets[1].forward(rec, &x, Some(&temb_silu))?;
        tap("mid_block", &x);

        // Sizes that are not multiples of 2^levels make diffusers pass each up-sampler the size
        // of the next skip (spec §9).
        let levels = self.up_blocks.iter().filter(|u| u.upsampler.is_some()).count();
        let forward_upsample_size = h % (1 << levels) != 0 || w % (1 << levels) != 0;
        for (i, blk) in self.up_blocks.iter().enumerate() {
            for (j, r) in blk.resnets.iter().enumerate() {
                let skip = skips.pop().expect("skip stack matches the block layout");
                x = concat_channels(rec, &[&x, &skip])?;
                drop(skip);
                x = r.forward(rec, &x, Some(&temb_silu))?;
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(rec, &x, ctx)?;
                }
            }
            if let Some(u) = &blk.upsampler {
                let size = if forward_upsample_size {
                    skips.last().map(|s| (s.shape()[1], s.shape()[2]))
                } else {
                    None
                };
                x = u.forward(rec, &x, size)?;
            }
            tap(&format!("up_blocks.{i}"), &x);
        }

        let x = group_norm_w(rec, &x, c.norm_num_groups, c.norm_eps as f32, &self.conv_norm_out, PER_IMAGE_SILU)?;
        let x = conv2d(rec, &x, &self.conv_out, 1, 1)?;
        nhwc_to_nchw(rec, &x)
    }
}
