//! The video UNets: DiffVSR `UNet3DVSRModel` (spec §4.1) and Upscale-A-Video `UNetVideoModel`
//! (spec §3.2). One implementation; the two differ only in tensor names and in DiffVSR's
//! multi-scale temporal attention (MSTA, `msatten`).
//!
//! Layout: the UNet's I/O is PyTorch's `[B, C, F, H, W]`; inside, activations are frames
//! `[B·F, H, W, C]` (frame index fastest within a batch element, as the reference's `(b f)`), viewed
//! as `[B, F, H, W, C]` where a layer works across frames (temporal convs, temporal attention,
//! GroupNorm pooled over the window).

use anyhow::{bail, Result};

use super::blocks::{add_per_batch, Attention, BasicTransformerBlock, Downsample2D, ResnetBlock2D, TimeEmbedding, Upsample2D};
use super::Loader;
use crate::config::{VideoUNetConfig, VideoUNetKind, TEMPORAL_GROUPS};
use crate::ops::concat::concat_channels;
use crate::ops::conv::{conv2d, conv3d, conv_transpose2d, ConvWeight};
use crate::ops::elementwise::{add, unary, Unary};
use crate::ops::layout::{ncfhw_to_nfhwc, nfhwc_to_ncfhw};
use crate::ops::matmul::{linear, LinearWeight};
use crate::ops::norm::{group_norm_w, layer_norm_w, GroupNormOpts, NormWeight};
use crate::ops::resize::resize_bilinear;
use crate::ops::temporal_attention::{relative_position_bias, temporal_attention_rope, Rope};
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

fn conv_any(l: &mut Loader, prefix: &str, shape: &[usize]) -> Result<ConvWeight> {
    let w = l.raw(&format!("{prefix}.weight"), shape)?;
    let b = l.raw(&format!("{prefix}.bias"), &[shape[0]])?;
    ConvWeight::from_torch(l.gpu, &w, shape, Some(&b), l.dtype)
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
            conv1: conv_any(l, &format!("{prefix}.conv1"), &[c, c, kt, 1, 1])?,
            time_emb_proj: match temb_channels {
                Some(t) => Some(l.linear(&format!("{prefix}.time_emb_proj"), c, t, true)?),
                None => None,
            },
            norm2: l.norm(&format!("{prefix}.norm2"), c)?,
            conv2: conv_any(l, &format!("{prefix}.conv2"), &[c, c, 3, 1, 1])?,
        })
    }

    /// `x [B·F, H, W, C]`, `temb_silu [B, T]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, temb_silu: Option<&Tensor>, frames: usize) -> Result<Tensor> {
        let opts = GroupNormOpts { frames, pooled: true, silu: true };
        let x5 = video(x, frames)?;
        let h = group_norm_w(rec, &x5, TEMPORAL_GROUPS, TEMPORAL_EPS, &self.norm1, opts)?;
        let mut h = conv3d(rec, &h, &self.conv1)?;
        if let (Some(p), Some(t)) = (&self.time_emb_proj, temb_silu) {
            let t = linear(rec, t, p)?;
            h = add_per_batch(rec, &h, &t)?;
        }
        let h = group_norm_w(rec, &h, TEMPORAL_GROUPS, TEMPORAL_EPS, &self.norm2, opts)?;
        let h = conv3d(rec, &h, &self.conv2)?;
        add(rec, x, &h.reshape(x.shape())?)
    }
}

/// `TemporalAttention`: self-attention over the frame axis at every pixel, RoPE on the first 32
/// channels of each head (by the checkpoint's `rotary_emb.freqs`), T5 relative-position bias
/// (`time_rel_pos_bias`), `to_out.0` with bias.
pub struct TemporalAttn {
    pub to_q: LinearWeight,
    pub to_k: LinearWeight,
    pub to_v: LinearWeight,
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
        let a = Attention::load(l, prefix, dim, dim, heads, false)?;
        let rel_table = l.raw(&format!("{prefix}.time_rel_pos_bias.relative_attention_bias.weight"), &[32, heads])?;
        // Nominally 10000^(−2j/32), but the reference rotates by the stored values.
        let rope_freqs = l.raw(&format!("{prefix}.rotary_emb.freqs"), &[16])?;
        Ok(TemporalAttn { to_q: a.to_q, to_k: a.to_k, to_v: a.to_v, to_out: a.to_out, rel_table, rope_freqs, heads })
    }

    /// `x [B, F, H, W, C]` (already normalised) → `[B, F, H, W, C]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let f = x.shape()[1];
        let q = linear(rec, x, &self.to_q)?;
        let k = linear(rec, x, &self.to_k)?;
        let v = linear(rec, x, &self.to_v)?;
        let bias = relative_position_bias(&self.rel_table, self.heads, f)?;
        let bias = Tensor::from_f32(rec.gpu(), &bias, &[self.heads, f, f], x.dtype())?;
        let o = temporal_attention_rope(rec, &q, &k, &v, self.heads, &bias, Rope::Freqs(&self.rope_freqs))?;
        linear(rec, &o, &self.to_out)
    }
}

/// DiffVSR's multi-scale branch: a stride-2 3×3 conv, its own temporal attention and LayerNorm,
/// a 4×4 stride-2 transposed conv back up.
pub struct Msta {
    pub down: ConvWeight,
    pub attn: TemporalAttn,
    pub norm: NormWeight,
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
            let w = l.raw(&format!("{prefix}.temporal_up_conv.weight"), &[dim, dim, 4, 4])?;
            let b = l.raw(&format!("{prefix}.temporal_up_conv.bias"), &[dim])?;
            Some(Msta {
                down: l.conv2d(&format!("{prefix}.temporal_down_conv"), dim, dim, 3)?,
                attn: TemporalAttn::load(l, &format!("{prefix}.attn_temporal_small"), dim, heads)?,
                norm: l.norm(&format!("{prefix}.norm_temporal_small"), dim)?,
                up: ConvWeight::from_torch_transposed(l.gpu, &w, &[dim, dim, 4, 4], Some(&b), l.dtype)?,
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
        let (hh, ww) = (s[1], s[2]);
        let b = &self.base;
        let tokens = x.reshape(&[s[0], hh * ww, s[3]])?;
        let n = layer_norm_w(rec, &tokens, &b.norm1, 1e-5)?;
        let a = b.attn1.forward(rec, &n, if b.only_cross_attention { ctx } else { &n })?;
        let x = add(rec, &tokens, &a)?;
        let n = layer_norm_w(rec, &x, &b.norm2, 1e-5)?;
        let a = b.attn2.forward(rec, &n, ctx)?;
        let x = add(rec, &x, &a)?;

        let x5 = video(&x.reshape(&s)?, frames)?;
        let n = layer_norm_w(rec, &x5, &self.norm_temporal, 1e-5)?;
        let a = self.attn_temporal.forward(rec, &n)?;
        let mut x5 = add(rec, &x5, &a)?;
        if let Some(m) = &self.msta {
            // The down branch starts from the block's input to the temporal step, not from A.
            let xin = video(&x.reshape(&s)?, frames)?;
            let d = conv2d(rec, &xin, &m.down, 2, 1)?;
            let n = layer_norm_w(rec, &d, &m.norm, 1e-5)?;
            let a = m.attn.forward(rec, &n)?;
            let sm = add(rec, &d, &a)?;
            let mut u = conv_transpose2d(rec, &sm, &m.up)?;
            let us = u.shape().to_vec();
            if us[2] != hh || us[3] != ww {
                let r = resize_bilinear(rec, &u.reshape(&[us[0] * us[1], us[2], us[3], us[4]])?, (hh, ww))?;
                u = r.reshape(x5.shape())?;
            }
            let u = unary(rec, Unary::Scale(0.5), &u)?;
            x5 = add(rec, &x5, &u)?;
        }

        let x = x5.reshape(&[s[0], hh * ww, s[3]])?;
        let n = layer_norm_w(rec, &x, &b.norm3, 1e-5)?;
        let f = b.ff.forward(rec, &n)?;
        add(rec, &x, &f)?.reshape(&s)
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
        let h = group_norm_w(rec, &y, self.groups, TEMPORAL_EPS, &self.norm, per_frame)?;
        let h = linear(rec, &h, &self.proj_in)?;
        let h = self.block.forward(rec, &h, ctx, frames)?;
        let h = linear(rec, &h, &self.proj_out)?;
        add(rec, &h, &y)
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
        let h = conv2d(rec, &h, &self.shift_conv, 1, 0)?;
        add(rec, x, &h)
    }
}

pub struct VideoLevel {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer3D>,
    pub downsampler: Option<Downsample2D>,
    pub upsampler: Option<Upsample2D>,
    pub temporal: Option<TemporalModule3D>,
}

pub struct VideoUNet {
    pub config: VideoUNetConfig,
    pub kind: VideoUNetKind,
    pub conv_in: ConvWeight,
    pub time_embedding: TimeEmbedding,
    pub down_blocks: Vec<VideoLevel>,
    pub mid_resnets: [ResnetBlock2D; 2],
    pub mid_attention: Transformer3D,
    pub mid_temporal: Option<TemporalModule3D>,
    pub up_blocks: Vec<VideoLevel>,
    pub conv_norm_out: NormWeight,
    pub conv_out: ConvWeight,
}

/// Per-forward inputs, as the 2-D UNet's but with `sample [B, in_channels, F, H, W]` (latents
/// then the low-res frames).
pub type VideoUNetInputs<'a> = super::sd_unet::UNetInputs<'a>;

impl VideoUNet {
    pub fn load(l: &mut Loader, config: &VideoUNetConfig) -> Result<Self> {
        config.validate()?;
        let kind = config.kind()?;
        let names = Names::of(kind);
        let msatten = config.msatten();
        let c = config.base_2d();
        if !c.use_linear_projection {
            bail!("video UNet: only use_linear_projection = true is supported (as released)");
        }
        if c.mid_block_scale_factor != 1.0 {
            bail!("mid_block_scale_factor {} is not supported (the released models use 1)", c.mid_block_scale_factor);
        }
        let boc = &c.block_out_channels;
        let n = boc.len();
        let temb = c.time_embed_dim();
        let (g, eps, ctx) = (c.norm_num_groups, c.norm_eps as f32, c.cross_attention_dim);
        let resnet = |l: &mut Loader, p: &str, cin: usize, cout: usize| -> Result<ResnetBlock2D> {
            let mut r = ResnetBlock2D::load(l, p, cin, cout, Some(temb), g, eps)?;
            r.pooled = true;
            Ok(r)
        };

        let mut down_blocks = Vec::new();
        let mut out_ch = boc[0];
        for (i, &level_ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = level_ch;
            let cross = c.down_block_types[i] == "CrossAttnDownBlock2D";
            let p = format!("down_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                resnets.push(resnet(l, &format!("{p}.resnets.{j}"), if j == 0 { in_ch } else { out_ch }, out_ch)?);
                if cross {
                    attentions.push(Transformer3D::load(l, &format!("{p}.attentions.{j}"), out_ch, ctx, c.heads(i), c.only_cross_attention.get(i), g, msatten)?);
                }
            }
            let downsampler = if i + 1 < n { Some(Downsample2D::load(l, &format!("{p}.downsamplers.0"), out_ch, c.downsample_padding)?) } else { None };
            let temporal = if config.down_temporal_idx.contains(&i) {
                Some(TemporalModule3D::load(l, &format!("{}.{i}", names.down_temporal), &names, out_ch, temb)?)
            } else {
                None
            };
            down_blocks.push(VideoLevel { resnets, attentions, downsampler, upsampler: None, temporal });
        }

        let top = boc[n - 1];
        let mid_resnets = [resnet(l, "mid_block.resnets.0", top, top)?, resnet(l, "mid_block.resnets.1", top, top)?];
        let mid_attention = Transformer3D::load(l, "mid_block.attentions.0", top, ctx, c.heads(n - 1), false, g, msatten)?;
        let mid_temporal = if config.mid_temporal { Some(TemporalModule3D::load(l, names.mid_temporal, &names, top, temb)?) } else { None };

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_ch = rev[0];
        for i in 0..n {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let level = n - 1 - i;
            let cross = c.up_block_types[i] == "CrossAttnUpBlock2D";
            let layers = c.layers_per_block + 1;
            let p = format!("up_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                resnets.push(resnet(l, &format!("{p}.resnets.{j}"), rin + skip, out_ch)?);
                if cross {
                    attentions.push(Transformer3D::load(
                        l,
                        &format!("{p}.attentions.{j}"),
                        out_ch,
                        ctx,
                        c.heads(level),
                        c.only_cross_attention.get(level),
                        g,
                        msatten,
                    )?);
                }
            }
            let upsampler = if i + 1 < n { Some(Upsample2D::load(l, &format!("{p}.upsamplers.0"), out_ch)?) } else { None };
            let temporal = if config.up_temporal_idx.contains(&i) {
                Some(TemporalModule3D::load(l, &format!("{}.{i}", names.up_temporal), &names, out_ch, temb)?)
            } else {
                None
            };
            up_blocks.push(VideoLevel { resnets, attentions, downsampler: None, upsampler, temporal });
        }
        // The shared RoPE module's inverse frequencies: each temporal attention rotates by its own
        // copy (`<attn>.rotary_emb.freqs`, the same parameter), so this one is not used.
        l.raw("temporal_rotary_emb.freqs", &[16])?;

        Ok(VideoUNet {
            config: config.clone(),
            kind,
            conv_in: l.conv2d("conv_in", boc[0], c.in_channels, 3)?,
            time_embedding: TimeEmbedding::load(l, &c)?,
            down_blocks,
            mid_resnets,
            mid_attention,
            mid_temporal,
            up_blocks,
            conv_norm_out: l.norm("conv_norm_out", boc[0])?,
            conv_out: l.conv2d("conv_out", c.out_channels, boc[0], 3)?,
        })
    }

    /// One forward pass; returns `[B, out_channels, F, H, W]` (PyTorch layout). `taps`, when given,
    /// receives named intermediates `[B·F, H, W, C]` under the checkpoint's module names.
    pub fn forward(&self, rec: &mut Recorder, inp: &VideoUNetInputs, mut taps: Option<&mut Vec<(String, Tensor)>>) -> Result<Tensor> {
        let c = self.config.base_2d();
        let names = Names::of(self.kind);
        let dtype = inp.sample.dtype();
        let s = inp.sample.shape();
        if s.len() != 5 || s[1] != c.in_channels {
            bail!("video unet: sample must be [B, {}, F, H, W], got {:?}", c.in_channels, s);
        }
        let (b, f, h, w) = (s[0], s[2], s[3], s[4]);
        if inp.timestep.shape() != [b] {
            bail!("video unet: timestep must be [{b}] (one per batch element), got {:?}", inp.timestep.shape());
        }
        let e = inp.encoder_hidden_states.shape();
        if e.len() != 3 || e[0] != b || e[2] != c.cross_attention_dim {
            bail!("video unet: encoder_hidden_states must be [{b}, L, {}], got {e:?}", c.cross_attention_dim);
        }
        let mut tap = |name: &str, t: &Tensor| {
            if let Some(v) = taps.as_deref_mut() {
                v.push((name.to_string(), t.clone()));
            }
        };

        let temb_silu = self.time_embedding.forward_silu(rec, inp.timestep, inp.class_labels, dtype)?;
        let ctx = inp.encoder_hidden_states;

        let x = ncfhw_to_nfhwc(rec, inp.sample)?;
        let x = x.reshape(&[b * f, h, w, c.in_channels])?;
        let mut x = conv2d(rec, &x, &self.conv_in, 1, 1)?;
        tap("conv_in", &x);
        let mut skips = vec![x.clone()];
        for (i, blk) in self.down_blocks.iter().enumerate() {
            for (j, r) in blk.resnets.iter().enumerate() {
                x = r.forward_frames(rec, &x, Some(&temb_silu), f)?;
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(rec, &x, ctx, f)?;
                    tap(&format!("down_blocks.{i}.attentions.{j}"), &x);
                }
                skips.push(x.clone());
            }
            if let Some(d) = &blk.downsampler {
                x = d.forward(rec, &x)?;
                skips.push(x.clone());
            }
            tap(&format!("down_blocks.{i}"), &x);
            // Skips are taken before the level's temporal module (spec §3.2).
            if let Some(t) = &blk.temporal {
                x = t.forward(rec, &x, &temb_silu, f)?;
                tap(&format!("{}.{i}", names.down_temporal), &x);
            }
        }

        x = self.mid_resnets[0].forward_frames(rec, &x, Some(&temb_silu), f)?;
        x = self.mid_attention.forward(rec, &x, ctx, f)?;
        x = self.mid_resnets[1].forward_frames(rec, &x, Some(&temb_silu), f)?;
        tap("mid_block", &x);
        if let Some(t) = &self.mid_temporal {
            x = t.forward(rec, &x, &temb_silu, f)?;
            tap(names.mid_temporal, &x);
        }

        let levels = self.up_blocks.iter().filter(|u| u.upsampler.is_some()).count();
        let forward_upsample_size = h % (1 << levels) != 0 || w % (1 << levels) != 0;
        for (i, blk) in self.up_blocks.iter().enumerate() {
            for (j, r) in blk.resnets.iter().enumerate() {
                let skip = skips.pop().expect("skip stack matches the block layout");
                x = concat_channels(rec, &[&x, &skip])?;
                drop(skip);
                x = r.forward_frames(rec, &x, Some(&temb_silu), f)?;
                if let Some(a) = blk.attentions.get(j) {
                    x = a.forward(rec, &x, ctx, f)?;
                    tap(&format!("up_blocks.{i}.attentions.{j}"), &x);
                }
            }
            if let Some(u) = &blk.upsampler {
                let size = if forward_upsample_size { skips.last().map(|s| (s.shape()[1], s.shape()[2])) } else { None };
                x = u.forward(rec, &x, size)?;
            }
            tap(&format!("up_blocks.{i}"), &x);
            if let Some(t) = &blk.temporal {
                x = t.forward(rec, &x, &temb_silu, f)?;
                tap(&format!("{}.{i}", names.up_temporal), &x);
            }
        }

        let pooled = GroupNormOpts { frames: f, pooled: true, silu: true };
        let x = group_norm_w(rec, &x, c.norm_num_groups, c.norm_eps as f32, &self.conv_norm_out, pooled)?;
        let x = conv2d(rec, &x, &self.conv_out, 1, 1)?;
        let x = x.reshape(&[b, f, h, w, c.out_channels])?;
        nfhwc_to_ncfhw(rec, &x)
    }
}
