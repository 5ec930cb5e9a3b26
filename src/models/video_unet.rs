//! The video UNets: DiffVSR `UNet3DVSRModel` (spec §4.1) and Upscale-A-Video `UNetVideoModel`
//! (spec §3.2). One implementation; the two differ only in tensor names and in DiffVSR's
//! multi-scale temporal attention (MSTA, `msatten`).
//!
//! Layout: the UNet's I/O is PyTorch's `[B, C, F, H, W]`; inside, activations are frames
//! `[B·F, H, W, C]` (frame index fastest within a batch element, as the reference's `(b f)`), viewed
//! as `[B, F, H, W, C]` where a layer works across frames (temporal convs, temporal attention,
//! GroupNorm pooled over the window).

use anyhow::{bail, Result};

use super::blocks::{BasicTransformerBlock, ResnetBlock2D};
use super::unet::{Parts, Place, SpatialTransformer, TemporalStep, UNetCore, UNetInputs};
use super::Loader;
use crate::config::{VideoUNetConfig, VideoUNetKind, TEMPORAL_GROUPS};
use crate::ops::conv::{conv2d, conv2d_add, conv3d_normed, conv_transpose2d, conv_transpose2d_add, ConvWeight};
use crate::ops::elementwise::add_assign;
use crate::ops::layout::{ncfhw_to_nfhwc, nfhwc_to_ncfhw};
use crate::ops::matmul::{linear, linear_add, LinearInput, LinearWeight};
use crate::ops::residual::Residual;
use crate::ops::norm::{group_norm_table_w, GroupNormOpts, NormWeight};
use crate::ops::resize::resize_bilinear;
use crate::ops::temporal_attention::{relative_position_bias, temporal_attention_qkv, Rope};
use crate::{Recorder, Tensor};

/// Epsilon of the GroupNorms in the temporal layers (`ResnetBlock3DCNN`/`ResnetBlock3D` defaults,
/// the transformer-input norm).
const TEMPORAL_EPS: f32 = 1e-6;

/// The checkpoint's module names, which differ between the two releases.
#[derive(Copy, Clone, Debug)]
pub struct Names {
    pub down_temporal: &'static str,
    pub mid_temporal: &'static str,
    pub up_temporal: &'static str,
    pub resnet_t: &'static str,
    pub resnet_s: &'static str,
}

impl Names {
    pub fn of(kind: VideoUNetKind) -> Names {
        match kind {
            VideoUNetKind::DiffVsr => Names {
                down_temporal: "down_temporal_blocks",
                mid_temporal: "mid_temporal_block",
                up_temporal: "up_temporal_blocks",
                resnet_t: "resblocks_3d_t",
                resnet_s: "resblocks_3d_s",
            },
            VideoUNetKind::Uav => Names {
                down_temporal: "down_temp_blocks",
                mid_temporal: "mid_temp_block",
                up_temporal: "up_temp_blocks",
                resnet_t: "resblocks_3d_temporal",
                resnet_s: "resblocks_3d_spatial",
            },
        }
    }
}

/// `[B·F, H, W, C]` viewed as `[B, F, H, W, C]`.
fn video(x: &Tensor, frames: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || !s[0].is_multiple_of(frames) {
        bail!("video UNet: {s:?} is not [B·F, H, W, C] with F = {frames}");
    }
    x.reshape(&[s[0] / frames, frames, s[1], s[2], s[3]])
}

/// `ResnetBlock3DCNN`: temporal convolutions (kernel (kt,1,1), then (3,1,1); zero padding in
/// time), GroupNorm(32, eps 1e-6) pooled over the window's frames, optional time embedding:
/// `h = conv1(SiLU(GN1(x))) [+ time_emb_proj(SiLU(temb))]; out = x + conv2(SiLU(GN2(h)))`.
pub struct TemporalResnet {
    pub norm1: NormWeight,
    pub conv1: ConvWeight,
    pub time_emb_proj: Option<LinearWeight>,
    pub norm2: NormWeight,
    pub conv2: ConvWeight,
}

impl TemporalResnet {
    pub fn load(l: &mut Loader, prefix: &str, c: usize, kt: usize, temb_channels: Option<usize>) -> Result<Self> {
        Ok(TemporalResnet {
            norm1: l.norm(&format!("{prefix}.norm1"), c)?,
            conv1: l.conv(&format!("{prefix}.conv1"), &[c, c, kt, 1, 1])?,
            time_emb_proj: match temb_channels {
                Some(t) => Some(l.linear(&format!("{prefix}.time_emb_proj"), c, t, true)?),
                None => None,
            },
            norm2: l.norm(&format!("{prefix}.norm2"), c)?,
            conv2: l.conv(&format!("{prefix}.conv2"), &[c, c, 3, 1, 1])?,
        })
    }

    /// `x [B·F, H, W, C]`, `temb_silu [B, T]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: Option<&Tensor>, frames: usize) -> Result<Tensor> {
        let opts = GroupNormOpts { frames, pooled: true, silu: true };
        let x5 = video(x, frames)?;
        let norm1 = group_norm_table_w(rec, &x5, TEMPORAL_GROUPS, TEMPORAL_EPS, &self.norm1, opts)?;
        let t = match (&self.time_emb_proj, temb_silu) {
            (Some(p), Some(t)) => Some(linear(rec, t, p)?),
            _ => None,
        };
        let h = conv3d_normed(rec, &x5, &norm1, &self.conv1, t.as_ref().map(Residual::PerBatch))?;
        let norm2 = group_norm_table_w(rec, &h, TEMPORAL_GROUPS, TEMPORAL_EPS, &self.norm2, opts)?;
        conv3d_normed(rec, &h, &norm2, &self.conv2, Some(Residual::Same(&x5)))?.reshape(x.shape())
    }
}

/// `TemporalAttention`: self-attention over the frame axis at every pixel, RoPE on the first 32
/// channels of each head (by the checkpoint's `rotary_emb.freqs`), T5 relative-position bias
/// (`time_rel_pos_bias`), `to_out.0` with bias.
pub struct TemporalAttn {
    /// `to_q | to_k | to_v`, stacked (read in place by the attention kernel).
    pub qkv: LinearWeight,
    pub to_out: LinearWeight,
    /// `time_rel_pos_bias.relative_attention_bias.weight [32, heads]`, expanded per window length.
    pub rel_table: Vec<f32>,
    /// `rotary_emb.freqs [16]`: the RoPE inverse frequencies as the checkpoint stores them (f16
    /// checkpoints round them), which the reference rotates by.
    pub rope_freqs: Vec<f32>,
    pub heads: usize,
}

impl TemporalAttn {
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, heads: usize) -> Result<Self> {
        let qkv = l.stacked_linear(&["to_q", "to_k", "to_v"].map(|n| format!("{prefix}.{n}")), &[dim, dim], false)?;
        let to_out = l.linear(&format!("{prefix}.to_out.0"), dim, dim, true)?;
        let rel_table = l.raw(&format!("{prefix}.time_rel_pos_bias.relative_attention_bias.weight"), &[32, heads])?;
        // Nominally 10000^(−2j/32), but the reference rotates by the stored values.
        let rope_freqs = l.raw(&format!("{prefix}.rotary_emb.freqs"), &[16])?;
        Ok(TemporalAttn { qkv, to_out, rel_table, rope_freqs, heads })
    }

    /// `res + TA(x)` for `x [B, F, H, W, C]` (normalised, or a LayerNorm's input applied by the
    /// projection; the sum formed as `to_out` stores) → `[B, F, H, W, C]`.
    pub fn forward_add(&self, rec: &mut Recorder, x: impl Into<LinearInput>, res: &Tensor) -> Result<Tensor> {
        let x = x.into();
        let f = x.shape()[1];
        let qkv = linear(rec, &x, &self.qkv)?;
        let bias = relative_position_bias(&self.rel_table, self.heads, f)?;
        let bias = Tensor::from_f32(rec.gpu(), &bias, &[self.heads, f, f], x.dtype())?;
        let o = temporal_attention_qkv(rec, &qkv, self.heads, &bias, Rope::Freqs(&self.rope_freqs))?;
        linear_add(rec, &o, &self.to_out, Residual::Same(res))
    }
}

/// DiffVSR's multi-scale branch: a stride-2 3×3 conv, its own temporal attention and LayerNorm,
/// a 4×4 stride-2 transposed conv back up.
pub struct Msta {
    pub down: ConvWeight,
    pub attn: TemporalAttn,
    pub norm: NormWeight,
    /// `temporal_up_conv` times 0.5, the branch's weight in the block's sum (exact: a power of
    /// two; the bilinear resize that may follow is linear, so the factor commutes with it).
    pub up: ConvWeight,
}

/// The video `BasicTransformerBlock`: `x += attn1(LN1 x)`, `x += attn2(LN2 x, text)`, then the
/// temporal step over frames, then `x += FF(LN3 x)`. Temporal step without MSTA:
/// `x += TA(LN_t x)`; with MSTA (spec §4.1): `x = [x + TA(LN_t x)] + 0.5·Up([D + TA_s(LN_s D)])`
/// with `D = Down(x)` and `Up` bilinearly resized to x's size when it differs.
pub struct VideoTransformerBlock {
    pub base: BasicTransformerBlock,
    pub attn_temporal: TemporalAttn,
    pub norm_temporal: NormWeight,
    pub msta: Option<Msta>,
}

impl VideoTransformerBlock {
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, ctx_dim: usize, heads: usize, only_cross: bool, msatten: bool) -> Result<Self> {
        let msta = if msatten {
            Some(Msta {
                down: l.conv2d(&format!("{prefix}.temporal_down_conv"), dim, dim, 3)?,
                attn: TemporalAttn::load(l, &format!("{prefix}.attn_temporal_small"), dim, heads)?,
                norm: l.norm(&format!("{prefix}.norm_temporal_small"), dim)?,
                up: l.conv_transposed_scaled(&format!("{prefix}.temporal_up_conv"), dim, dim, 4, 0.5)?,
            })
        } else {
            None
        };
        Ok(VideoTransformerBlock {
            base: BasicTransformerBlock::load(l, prefix, dim, ctx_dim, heads, only_cross)?,
            attn_temporal: TemporalAttn::load(l, &format!("{prefix}.attn_temporal"), dim, heads)?,
            norm_temporal: l.norm(&format!("{prefix}.norm_temporal"), dim)?,
            msta,
        })
    }

    /// `x [B·F, H, W, C]` (tokens of each frame), `ctx [B, Lc, D]` (shared by a batch element's frames).
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor, frames: usize) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let tokens = x.reshape(&[s[0], s[1] * s[2], s[3]])?;
        let out = self.base.forward_with(rec, &tokens, ctx, |rec, x| {
            let x5 = video(&x.reshape(&s)?, frames)?;
            let t = self.temporal_step(rec, &x5)?;
            t.reshape(x.shape())
        })?;
        out.reshape(&s)
    }

    /// The temporal step on `x [B, F, H, W, C]`: `x + TA(LN_t x)`, plus the MSTA branch.
    fn temporal_step(&self, rec: &mut Recorder, x5: &Tensor) -> Result<Tensor> {
        let (hh, ww) = (x5.shape()[2], x5.shape()[3]);
        let n = LinearInput::layer_normed(x5, &self.norm_temporal, 1e-5);
        let out = self.attn_temporal.forward_add(rec, n, x5)?;
        let Some(m) = &self.msta else { return Ok(out) };
        // The down branch starts from the block's input to the temporal step, not from A.
        let d = conv2d(rec, x5, &m.down, 2, 1)?;
        let n = LinearInput::layer_normed(&d, &m.norm, 1e-5);
        let sm = m.attn.forward_add(rec, n, &d)?;
        // `m.up` carries the 0.5.
        let (h2, w2) = (2 * sm.shape()[2], 2 * sm.shape()[3]);
        if (h2, w2) == (hh, ww) {
            return conv_transpose2d_add(rec, &sm, &m.up, Residual::Same(&out));
        }
        let u = conv_transpose2d(rec, &sm, &m.up)?;
        let us = u.shape().to_vec();
        let r = resize_bilinear(rec, &u.reshape(&[us[0] * us[1], us[2], us[3], us[4]])?, (hh, ww))?;
        add_assign(rec, &r.reshape(out.shape())?, &out)
    }
}

/// `Transformer3DModel`: `y = resblock_temporal(x)` (kernel (3,1,1), no temb), then
/// `out = proj_out(block(proj_in(GN(y) per frame))) + y` (GN eps 1e-6, linear projections).
pub struct Transformer3D {
    pub resblock_temporal: TemporalResnet,
    pub norm: NormWeight,
    pub proj_in: LinearWeight,
    pub block: VideoTransformerBlock,
    pub proj_out: LinearWeight,
    pub groups: usize,
}

impl Transformer3D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, ctx_dim: usize, heads: usize, only_cross: bool, groups: usize, msatten: bool) -> Result<Self> {
        Ok(Transformer3D {
            resblock_temporal: TemporalResnet::load(l, &format!("{prefix}.resblock_temporal"), dim, 3, None)?,
            norm: l.norm(&format!("{prefix}.norm"), dim)?,
            proj_in: l.linear(&format!("{prefix}.proj_in"), dim, dim, true)?,
            block: VideoTransformerBlock::load(l, &format!("{prefix}.transformer_blocks.0"), dim, ctx_dim, heads, only_cross, msatten)?,
            proj_out: l.linear(&format!("{prefix}.proj_out"), dim, dim, true)?,
            groups,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor, frames: usize) -> Result<Tensor> {
        let y = self.resblock_temporal.forward(rec, x, None, frames)?;
        let per_frame = GroupNormOpts { frames, pooled: false, silu: false };
        // The norm is applied by proj_in, in its own pass or as proj_in loads (norm::Fuse).
        let norm = group_norm_table_w(rec, &y, self.groups, TEMPORAL_EPS, &self.norm, per_frame)?;
        let h = linear(rec, LinearInput::group_normed(&y, &norm)?, &self.proj_in)?;
        let h = self.block.forward(rec, &h, ctx, frames)?;
        linear_add(rec, &h, &self.proj_out, Residual::Same(&y))
    }
}

/// `TemporalModule3D` as released (no attention): `out = x + shift_conv(R2(R3(x, temb), temb))`
/// with R3 a temporal resnet ((5,1,1) then (3,1,1)) and R2 a 3×3 per-frame resnet, both with
/// GroupNorm(32, eps 1e-6) pooled over the window.
pub struct TemporalModule3D {
    pub resnet_t: TemporalResnet,
    pub resnet_s: ResnetBlock2D,
    pub shift_conv: ConvWeight,
}

impl TemporalModule3D {
    pub fn load(l: &mut Loader, prefix: &str, names: &Names, c: usize, temb: usize) -> Result<Self> {
        let mut resnet_s = ResnetBlock2D::load(l, &format!("{prefix}.{}", names.resnet_s), c, c, Some(temb), TEMPORAL_GROUPS, TEMPORAL_EPS)?;
        resnet_s.pooled = true;
        Ok(TemporalModule3D {
            resnet_t: TemporalResnet::load(l, &format!("{prefix}.{}", names.resnet_t), c, 5, Some(temb))?,
            resnet_s,
            shift_conv: l.conv2d(&format!("{prefix}.shift_conv"), c, c, 1)?,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: &Tensor, frames: usize) -> Result<Tensor> {
        let h = self.resnet_t.forward(rec, x, Some(temb_silu), frames)?;
        let h = self.resnet_s.forward_frames(rec, &h, Some(temb_silu), frames)?;
        conv2d_add(rec, &h, &self.shift_conv, 1, 0, Residual::Same(x))
    }
}

impl TemporalStep for TemporalModule3D {
    fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: &Tensor, frames: usize) -> Result<Tensor> {
        TemporalModule3D::forward(self, rec, x, temb_silu, frames)
    }
}

impl SpatialTransformer for Transformer3D {
    fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor, frames: usize) -> Result<Tensor> {
        Transformer3D::forward(self, rec, x, ctx, frames)
    }
}

pub struct VideoUNet {
    pub config: VideoUNetConfig,
    pub core: UNetCore<Transformer3D, TemporalModule3D>,
}

/// Per-forward inputs, as the 2-D UNet's but with `sample [B, in_channels, F, H, W]` (latents
/// then the low-res frames).
pub type VideoUNetInputs<'a> = UNetInputs<'a>;

/// The video UNets' transformers (with MSTA for DiffVSR) and temporal modules where the config
/// puts them.
struct Video<'c> {
    config: &'c VideoUNetConfig,
    names: Names,
    msatten: bool,
    temb: usize,
}

impl Parts for Video<'_> {
    type Attn = Transformer3D;
    type Temporal = TemporalModule3D;
    fn attention(&mut self, l: &mut Loader, prefix: &str, dim: usize, heads: usize, only_cross: bool) -> Result<Transformer3D> {
        let c = &self.config.base;
        Transformer3D::load(l, prefix, dim, c.cross_attention_dim, heads, only_cross, c.norm_num_groups, self.msatten)
    }
    fn temporal(&mut self, l: &mut Loader, place: Place, ch: usize) -> Result<Option<(String, TemporalModule3D)>> {
        let (c, n) = (self.config, &self.names);
        let name = match place {
            Place::Down(i) if c.down_temporal_idx.contains(&i) => format!("{}.{i}", n.down_temporal),
            Place::Mid if c.mid_temporal => n.mid_temporal.to_string(),
            Place::Up(i) if c.up_temporal_idx.contains(&i) => format!("{}.{i}", n.up_temporal),
            _ => return Ok(None),
        };
        let m = TemporalModule3D::load(l, &name, n, ch, self.temb)?;
        Ok(Some((name, m)))
    }
}

impl VideoUNet {
    pub fn load(l: &mut Loader, config: &VideoUNetConfig) -> Result<Self> {
        config.validate()?;
        let kind = config.kind()?;
        let c = config.base_2d();
        if !c.use_linear_projection {
            bail!("video UNet: only use_linear_projection = true is supported (as released)");
        }
        let mut parts = Video { config, names: Names::of(kind), msatten: config.msatten(), temb: c.time_embed_dim() };
        let core = UNetCore::load(l, &c, true, &mut parts)?;
        // The shared RoPE module's inverse frequencies: each temporal attention rotates by its own
        // copy (`<attn>.rotary_emb.freqs`, the same parameter), so this one is not used.
        l.raw("temporal_rotary_emb.freqs", &[16])?;
        Ok(VideoUNet { config: config.clone(), core })
    }

    /// One forward pass; returns `[B, out_channels, F, H, W]` (PyTorch layout). Intermediates are
    /// tapped (see [`Recorder::tap`]) as `[B·F, H, W, C]` under the checkpoint's module names.
    pub fn forward(&self, rec: &mut Recorder, inp: &VideoUNetInputs) -> Result<Tensor> {
        let c = &self.core.config;
        let s = inp.sample.shape();
        if s.len() != 5 || s[1] != c.in_channels {
            bail!("video unet: sample must be [B, {}, F, H, W], got {:?}", c.in_channels, s);
        }
        let (b, f, h, w) = (s[0], s[2], s[3], s[4]);
        let temb_silu = self.core.time_embedding(rec, inp, b)?;
        let sample = inp.unique_sample()?;
        let x = ncfhw_to_nfhwc(rec, &sample)?;
        let x = x.reshape(&[sample.shape()[0] * f, h, w, c.in_channels])?;
        let x = self.core.forward(rec, &x, &temb_silu, inp.encoder_hidden_states, f, inp.cfg_pair)?;
        let x = x.reshape(&[b, f, h, w, c.out_channels])?;
        nfhwc_to_ncfhw(rec, &x)
    }
}
