//! The UNet skeleton shared by the SD×4 UNet (`sd_unet.rs`, spec §2.1–2.2) and the video UNets
//! (`video_unet.rs`, spec §3.2, §4.1): conv_in, the down levels (resnets, transformers, a
//! downsampler, and for video a temporal module after the level), the mid block, the up levels
//! with their skip concatenations, and the output norm and conv. The 2-D UNet is this skeleton
//! over single frames (F = 1) with no temporal modules.
//!
//! Activations inside: frames `[B·F, H, W, C]`, channels-last, frame index fastest within a
//! batch element.

use std::convert::Infallible;

use anyhow::{bail, Result};

use super::blocks::{Downsample2D, ResnetBlock2D, TimeEmbedding, Upsample2D};
use super::Loader;
use crate::config::UNet2DConfig;
use crate::ops::concat::concat;
use crate::ops::input::Input;
use crate::ops::conv::{conv2d, conv2d_normed, ConvWeight};
use crate::ops::norm::{group_norm_table_w, GroupNormOpts, NormWeight};
use crate::{Recorder, Tensor};

/// The transformer a UNet puts after its resnets (`Transformer2DModel` or `Transformer3DModel`).
pub trait SpatialTransformer {
    /// `x [B·F, H, W, C]`, `ctx [B, Lc, D]`.
    fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor, frames: usize) -> Result<Tensor>;
}

/// A module a video UNet runs after a level (`TemporalModule3D`); the 2-D UNet has none
/// ([`Infallible`]).
pub trait TemporalStep {
    /// `x [B·F, H, W, C]`, `temb_silu [B, T]`.
    fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: &Tensor, frames: usize) -> Result<Tensor>;
}

impl TemporalStep for Infallible {
    fn forward(&self, _: &mut Recorder, _: &Tensor, _: &Tensor, _: usize) -> Result<Tensor> {
        match *self {}
    }
}

/// One level of the down or up path.
pub struct Level<A, T> {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<A>,
    pub downsampler: Option<Downsample2D>,
    pub upsampler: Option<Upsample2D>,
    /// The temporal module run after the level, with its checkpoint name (the tap's name).
    pub temporal: Option<(String, T)>,
}

/// Where a temporal module may sit: after down level `i`, in the mid block, after up level `i`.
#[derive(Copy, Clone, Debug)]
pub enum Place {
    Down(usize),
    Mid,
    Up(usize),
}

/// How a UNet variant builds the parts that differ.
pub trait Parts {
    type Attn: SpatialTransformer;
    type Temporal: TemporalStep;
    /// The transformer at `prefix` (`heads` heads, `only_cross` as configured for its level).
    fn attention(&mut self, l: &mut Loader, prefix: &str, dim: usize, heads: usize, only_cross: bool) -> Result<Self::Attn>;
    /// The temporal module at `place`, if this UNet has one there: (checkpoint name, module).
    fn temporal(&mut self, l: &mut Loader, place: Place, channels: usize) -> Result<Option<(String, Self::Temporal)>>;
}

/// Per-forward inputs. `sample [B, in_channels, H, W]` (2-D) or `[B, in_channels, F, H, W]`
/// (video), PyTorch layout, latents then the low-res image; `timestep [B]` f32; `class_labels
/// [B]` u32 ids (`Tensor::from_u32`); `encoder_hidden_states [B, 77, cross_attention_dim]`.
pub struct UNetInputs<'a> {
    pub sample: &'a Tensor,
    pub timestep: &'a Tensor,
    pub class_labels: Option<&'a Tensor>,
    pub encoder_hidden_states: &'a Tensor,
    /// The batch is classifier-free guidance's pair `[negatives | positives]` whose halves hold
    /// the same sample, timesteps and class labels; only `encoder_hidden_states` differ (the
    /// sampler's batch, spec §2.4–2.5). The layers before the first text attention (conv_in, the
    /// first down level and its temporal module, the next level's first resnet) then run once,
    /// on the first half, and their outputs and skips serve both halves. The caller vouches
    /// for the equality; the result is the same as without.
    pub cfg_pair: bool,
}

impl UNetInputs<'_> {
    /// The first half of `sample`, if the batch is a CFG pair (see [`UNetInputs::cfg_pair`]),
    /// else all of it.
    pub fn unique_sample(&self) -> Result<Tensor> {
        let b = self.sample.shape()[0];
        if !self.cfg_pair {
            return Ok(self.sample.clone());
        }
        if !b.is_multiple_of(2) {
            bail!("unet: a CFG pair needs an even batch, got {b}");
        }
        self.sample.narrow(0, 0, b / 2)
    }
}

pub struct UNetCore<A, T> {
    pub config: UNet2DConfig,
    pub conv_in: ConvWeight,
    pub time_embedding: TimeEmbedding,
    pub down_blocks: Vec<Level<A, T>>,
    pub mid_resnets: [ResnetBlock2D; 2],
    pub mid_attention: A,
    pub mid_temporal: Option<(String, T)>,
    pub up_blocks: Vec<Level<A, T>>,
    pub conv_norm_out: NormWeight,
    pub conv_out: ConvWeight,
    /// GroupNorm statistics over all frames of a window (the video UNets' `ResnetBlock3D` and
    /// output norm normalise the 5-D tensor) instead of per frame.
    pub pooled: bool,
}

impl<A: SpatialTransformer, T: TemporalStep> UNetCore<A, T> {
    /// Loads the skeleton of `c` (diffusers' `UNet2DConditionModel` naming), with `parts`
    /// supplying the transformers and temporal modules.
    pub fn load<P: Parts<Attn = A, Temporal = T>>(l: &mut Loader, c: &UNet2DConfig, pooled: bool, parts: &mut P) -> Result<Self> {
        c.validate()?;
        if c.mid_block_scale_factor != 1.0 {
            bail!("mid_block_scale_factor {} is not supported (the released models use 1)", c.mid_block_scale_factor);
        }
        let boc = &c.block_out_channels;
        let n = boc.len();
        let temb = c.time_embed_dim();
        let (g, eps) = (c.norm_num_groups, c.norm_eps as f32);
        let resnet = |l: &mut Loader, p: &str, cin: usize, cout: usize| -> Result<ResnetBlock2D> {
            let mut r = ResnetBlock2D::load(l, p, cin, cout, Some(temb), g, eps)?;
            r.pooled = pooled;
            Ok(r)
        };

        let mut down_blocks = Vec::new();
        let mut out_ch = boc[0];
        for (i, &level_ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = level_ch;
            let cross = c.down_block_types[i].starts_with("CrossAttn");
            let p = format!("down_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                resnets.push(resnet(l, &format!("{p}.resnets.{j}"), if j == 0 { in_ch } else { out_ch }, out_ch)?);
                if cross {
                    attentions.push(parts.attention(l, &format!("{p}.attentions.{j}"), out_ch, c.heads(i), c.only_cross_attention.get(i))?);
                }
            }
            let downsampler = if i + 1 < n { Some(Downsample2D::load(l, &format!("{p}.downsamplers.0"), out_ch, c.downsample_padding)?) } else { None };
            let temporal = parts.temporal(l, Place::Down(i), out_ch)?;
            down_blocks.push(Level { resnets, attentions, downsampler, upsampler: None, temporal });
        }

        let top = boc[n - 1];
        let mid_resnets = [resnet(l, "mid_block.resnets.0", top, top)?, resnet(l, "mid_block.resnets.1", top, top)?];
        let mid_attention = parts.attention(l, "mid_block.attentions.0", top, c.heads(n - 1), false)?;
        let mid_temporal = parts.temporal(l, Place::Mid, top)?;

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_ch = rev[0];
        for i in 0..n {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            // diffusers indexes the reversed per-block settings for the up path.
            let level = n - 1 - i;
            let cross = c.up_block_types[i].starts_with("CrossAttn");
            let layers = c.layers_per_block + 1;
            let p = format!("up_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                resnets.push(resnet(l, &format!("{p}.resnets.{j}"), rin + skip, out_ch)?);
                if cross {
                    attentions.push(parts.attention(l, &format!("{p}.attentions.{j}"), out_ch, c.heads(level), c.only_cross_attention.get(level))?);
                }
            }
            let upsampler = if i + 1 < n { Some(Upsample2D::load_any_size(l, &format!("{p}.upsamplers.0"), out_ch)?) } else { None };
            let temporal = parts.temporal(l, Place::Up(i), out_ch)?;
            up_blocks.push(Level { resnets, attentions, downsampler: None, upsampler, temporal });
        }

        Ok(UNetCore {
            config: c.clone(),
            conv_in: l.conv2d("conv_in", boc[0], c.in_channels, 3)?,
            time_embedding: TimeEmbedding::load(l, c)?,
            down_blocks,
            mid_resnets,
            mid_attention,
            mid_temporal,
            up_blocks,
            conv_norm_out: l.norm("conv_norm_out", boc[0])?,
            conv_out: l.conv2d("conv_out", c.out_channels, boc[0], 3)?,
            pooled,
        })
    }

    /// Checks the per-batch inputs against a batch of `b` and returns `SiLU(temb) [B, T]`, which
    /// every resnet projects.
    pub fn time_embedding(&self, rec: &mut Recorder, inp: &UNetInputs, b: usize) -> Result<Tensor> {
        let c = &self.config;
        if inp.timestep.shape() != [b] {
            bail!("unet: timestep must be [{b}] (one per batch element), got {:?}", inp.timestep.shape());
        }
        let e = inp.encoder_hidden_states.shape();
        if e.len() != 3 || e[0] != b || e[2] != c.cross_attention_dim {
            bail!("unet: encoder_hidden_states must be [{b}, L, {}], got {e:?}", c.cross_attention_dim);
        }
        self.time_embedding.forward_silu(rec, inp.timestep, inp.class_labels, inp.sample.dtype())
    }

    /// The skeleton's forward on frames `x [B·F, H, W, in_channels]` → `[B·F, H, W,
    /// out_channels]`, or with `cfg_pair` on the first CFG half `x [B·F/2, ..]` of a batch of B
    /// (see [`UNetInputs::cfg_pair`]). Taps (see [`Recorder::tap`]) carry the checkpoint's module
    /// names and always the whole batch.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: &Tensor, ctx: &Tensor, frames: usize, cfg_pair: bool) -> Result<Tensor> {
        let c = &self.config;
        let (h, w) = (x.shape()[1], x.shape()[2]);
        let f = frames;
        let mut half = Half::new(temb_silu, cfg_pair)?;
        let mut x = conv2d(rec, x, &self.conv_in, 1, 1)?;
        half.tap(rec, "conv_in", &x)?;
        let mut skips = vec![x.clone()];
        for (i, blk) in self.down_blocks.iter().enumerate() {
            for (j, r) in blk.resnets.iter().enumerate() {
                x = r.forward_frames(rec, &x, Some(half.temb()), f)?;
                if let Some(a) = blk.attentions.get(j) {
                    // The text enters here: from now on each half is its own.
                    x = half.widen(rec, &x)?;
                    x = a.forward(rec, &x, ctx, f)?;
                    rec.tap(&format!("down_blocks.{i}.attentions.{j}"), &x);
                }
                skips.push(x.clone());
            }
            if let Some(d) = &blk.downsampler {
                x = d.forward(rec, &x)?;
                skips.push(x.clone());
            }
            half.tap(rec, &format!("down_blocks.{i}"), &x)?;
            // Skips are taken before the level's temporal module (spec §3.2).
            if let Some((name, t)) = &blk.temporal {
                x = t.forward(rec, &x, half.temb(), f)?;
                half.tap(rec, name, &x)?;
            }
        }

        x = half.widen(rec, &x)?;
        x = self.mid_resnets[0].forward_frames(rec, &x, Some(temb_silu), f)?;
        x = self.mid_attention.forward(rec, &x, ctx, f)?;
        x = self.mid_resnets[1].forward_frames(rec, &x, Some(temb_silu), f)?;
        rec.tap("mid_block", &x);
        if let Some((name, t)) = &self.mid_temporal {
            x = t.forward(rec, &x, temb_silu, f)?;
            rec.tap(name, &x);
        }

        // Sizes that are not multiples of 2^levels make diffusers pass each up-sampler the size
        // of the next skip (spec §9).
        let levels = self.up_blocks.iter().filter(|u| u.upsampler.is_some()).count();
        let forward_upsample_size = h % (1 << levels) != 0 || w % (1 << levels) != 0;
        for (i, blk) in self.up_blocks.iter().enumerate() {
            for (j, r) in blk.resnets.iter().enumerate() {
                let skip = skips.pop().expect("skip stack matches the block layout");
                // The resnet reads x and its skip as one tensor of both's channels, without
                // writing it; a skip from the shared layers repeats over the two halves.
                x = r.forward_frames(rec, Input::channels(&x, &skip)?, Some(temb_silu), f)?;
                drop(skip);
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(rec, &x, ctx, f)?;
                    rec.tap(&format!("up_blocks.{i}.attentions.{j}"), &x);
                }
            }
            if let Some(u) = &blk.upsampler {
                let size = if forward_upsample_size { skips.last().map(|s| (s.shape()[1], s.shape()[2])) } else { None };
                x = u.forward(rec, &x, size)?;
            }
            rec.tap(&format!("up_blocks.{i}"), &x);
            if let Some((name, t)) = &blk.temporal {
                x = t.forward(rec, &x, temb_silu, f)?;
                rec.tap(name, &x);
            }
        }

        let opts = GroupNormOpts { frames: f, pooled: self.pooled, silu: true };
        let norm = group_norm_table_w(rec, &x, c.norm_num_groups, c.norm_eps as f32, &self.conv_norm_out, opts)?;
        conv2d_normed(rec, &x, &norm, &self.conv_out, 1, 1, None)
    }
}

/// The state of a CFG pair's shared layers ([`UNetInputs::cfg_pair`]): while `shared`, the
/// activations hold the first half of the batch only.
struct Half {
    shared: bool,
    /// `SiLU(temb)` of the whole batch, and of its first half.
    temb: Tensor,
    temb_half: Tensor,
}

impl Half {
    fn new(temb_silu: &Tensor, cfg_pair: bool) -> Result<Half> {
        let b = temb_silu.shape()[0];
        if cfg_pair && !b.is_multiple_of(2) {
            bail!("unet: a CFG pair needs an even batch, got {b}");
        }
        let temb_half = if cfg_pair { temb_silu.narrow(0, 0, b / 2)? } else { temb_silu.clone() };
        Ok(Half { shared: cfg_pair, temb: temb_silu.clone(), temb_half })
    }

    /// `SiLU(temb)` for the activations as they are now.
    fn temb(&self) -> &Tensor {
        if self.shared {
            &self.temb_half
        } else {
            &self.temb
        }
    }

    /// `x` for the whole batch: the shared half twice (both halves are equal up to here).
    fn widen(&mut self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        if !self.shared {
            return Ok(x.clone());
        }
        self.shared = false;
        concat(rec, &[x, x])
    }

    /// Taps `x` as the whole batch would hold it (a copy of both halves, only when taps are kept).
    fn tap(&self, rec: &mut Recorder, name: &str, x: &Tensor) -> Result<()> {
        if self.shared && rec.collects_taps() {
            let whole = concat(rec, &[x, x])?;
            rec.tap(name, &whole);
        } else {
            rec.tap(name, x);
        }
        Ok(())
    }
}
