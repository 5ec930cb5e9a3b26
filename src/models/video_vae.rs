//! The video VAE decoders: DiffVSR's TE-3DVAE (`AutoencoderKLTemporalDecoder`, spec §4.2) and
//! Upscale-A-Video's `vae_3d` (`AutoencoderKLVideo` with `UpDecoderBlock3D`, spec §3.4).
//!
//! Both take `latents [B, latent_channels, F, h, w]` (PyTorch layout, already divided by the
//! scaling factor) and return `[B, out_channels, F, H, W]`. Inside, activations are
//! channels-last frames `[B·F, H, W, C]` (frame index fastest within a batch element), which is
//! also `[B, F, H, W, C]` for the 3-D convolutions and the temporal attention.
//! Only the decoders run: the encoder's weights in a full checkpoint are skipped by name.

use anyhow::{bail, Result};

use super::blocks::{FeedForward, NormedConv, Qkv, ResnetBlock2D, Upsample2D, PER_IMAGE, PER_IMAGE_SILU};
use super::sd_vae::{VaeDecoder, UNUSED_PREFIXES};
use super::Loader;
use crate::ops::concat::concat;
use crate::ops::conv::{conv2d, conv2d_normed, conv3d, ConvWeight};
use crate::ops::elementwise::{add, mix, unary, Unary};
use crate::ops::embed::timestep_embedding_as;
use crate::ops::layout::{ncfhw_to_nfhwc, nfhwc_to_ncfhw};
use crate::ops::matmul::{linear, linear_add, LinearInput, LinearWeight};
use crate::ops::residual::Residual;
use crate::ops::norm::{group_norm_table_w, GroupNormOpts, NormWeight};
use crate::ops::temporal_attention::{temporal_attention_qkv, Rope};
use crate::{DType, Recorder, Tensor};

pub use crate::config::video_vae::TE_GROUPS;
pub use crate::config::VideoVaeConfig;

/// `latents [B, C, F, h, w]` → channels-last frames `[B·F, h, w, C]`, with F.
fn video_in(rec: &mut Recorder, latents: &Tensor, channels: usize, what: &str) -> Result<(Tensor, usize, usize)> {
    let s = latents.shape();
    if s.len() != 5 || s[1] != channels {
        bail!("{what}: latents must be [B, {channels}, F, h, w], got {s:?}");
    }
    let (b, f) = (s[0], s[2]);
    let x = ncfhw_to_nfhwc(rec, latents)?;
    Ok((x.reshape(&[b * f, s[3], s[4], channels])?, b, f))
}

/// A learned scalar (`mix_factor [1]`).
fn scalar(l: &mut Loader, name: &str) -> Result<f32> {
    Ok(l.raw(name, &[1])?[0])
}

/// TE-3DVAE `TemporalResnetBlock` (in = out channels, no time embedding):
/// `x + conv2(SiLU(GN2(conv1(SiLU(GN1(x))))))` with 3×3×3 convolutions (zero padding in time)
/// and GroupNorm(32, eps 1e-5) pooled over each batch element's frames. `conv2` may hold its
/// weights times a constant (see [`SpatioTemporalResBlock`]).
pub struct TemporalResnetBlock {
    pub norm1: NormWeight,
    pub conv1: NormedConv,
    pub norm2: NormWeight,
    pub conv2: NormedConv,
}

impl TemporalResnetBlock {
    /// `branch_scale`: a factor folded into `conv2`, so forward gives `x + branch_scale·branch`.
    pub fn load(l: &mut Loader, prefix: &str, c: usize, branch_scale: f32) -> Result<Self> {
        Ok(TemporalResnetBlock {
            norm1: l.norm(&format!("{prefix}.norm1"), c)?,
            conv1: NormedConv::load(l, &format!("{prefix}.conv1"), &[c, c, 3, 3, 3], 1.0)?,
            norm2: l.norm(&format!("{prefix}.norm2"), c)?,
            conv2: NormedConv::load(l, &format!("{prefix}.conv2"), &[c, c, 3, 3, 3], branch_scale)?,
        })
    }

    /// `x [B, F, H, W, C]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let gn = GroupNormOpts { frames: x.shape()[1], pooled: true, silu: true };
        let norm1 = group_norm_table_w(rec, x, TE_GROUPS, 1e-5, &self.norm1, gn)?;
        let h = self.conv1.forward(rec, x, &norm1, None)?;
        let norm2 = group_norm_table_w(rec, &h, TE_GROUPS, 1e-5, &self.norm2, gn)?;
        self.conv2.forward(rec, &h, &norm2, Some(Residual::Same(x)))
    }
}

/// TE-3DVAE `SpatioTemporalResBlock`: `s = ResnetBlock2D(x)` per frame (eps 1e-6),
/// `t = TemporalResnetBlock(s)`, then diffusers' `AlphaBlender` ("learned",
/// `switch_spatial_to_temporal_mix`): `(1 − σ(m))·s + σ(m)·t`.
///
/// With `t = s + branch` that blend is `s + σ(m)·branch`, so σ(m) is folded into the temporal
/// block's last convolution at load and its residual store forms the blend: no separate pass.
pub struct SpatioTemporalResBlock {
    pub spatial: ResnetBlock2D,
    /// Its `conv2` holds σ(`time_mixer.mix_factor`) × the checkpoint's weights and bias.
    pub temporal: TemporalResnetBlock,
}

impl SpatioTemporalResBlock {
    pub fn load(l: &mut Loader, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        let mix_factor = scalar(l, &format!("{prefix}.time_mixer.mix_factor"))?;
        let blend = 1.0 / (1.0 + (-mix_factor).exp());
        Ok(SpatioTemporalResBlock {
            spatial: ResnetBlock2D::load(l, &format!("{prefix}.spatial_res_block"), cin, cout, None, TE_GROUPS, 1e-6)?,
            temporal: TemporalResnetBlock::load(l, &format!("{prefix}.temporal_res_block"), cout, blend)?,
        })
    }

    /// `x [B·F, H, W, Cin]` → `[B·F, H, W, Cout]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, frames: usize) -> Result<Tensor> {
        let s = self.spatial.forward(rec, x, None)?;
        self.forward_temporal(rec, &s, frames)
    }

    /// The temporal half on the spatial block's output `s [B·F, H, W, Cout]`.
    pub fn forward_temporal(&self, rec: &mut Recorder, s: &Tensor, frames: usize) -> Result<Tensor> {
        let sh = s.shape().to_vec();
        let s5 = s.reshape(&[sh[0] / frames, frames, sh[1], sh[2], sh[3]])?;
        self.temporal.forward(rec, &s5)?.reshape(&sh)
    }
}

/// Self-attention over frames with one head (`to_q/k/v` without bias, `to_out.0` with bias;
/// scale dh^-1/2), on tokens laid out `[B·F, L, C]`.
pub struct FrameAttention {
    /// `to_q | to_k | to_v`, stacked.
    pub qkv: LinearWeight,
    pub to_out: LinearWeight,
}

impl FrameAttention {
    pub fn load(l: &mut Loader, prefix: &str, c: usize) -> Result<Self> {
        Ok(FrameAttention {
            qkv: l.stacked_linear(&["to_q", "to_k", "to_v"].map(|n| format!("{prefix}.{n}")), &[c, c], false)?,
            to_out: l.linear(&format!("{prefix}.to_out.0"), c, c, true)?,
        })
    }

    /// `res + attention(x)` for `x [B·F, L, C]` (the sum formed as `to_out` stores);
    /// `zero_bias [1, F, F]` (no positional bias in this model).
    pub fn forward_add(&self, rec: &mut Recorder, x: impl Into<LinearInput>, frames: usize, zero_bias: &Tensor, res: &Tensor) -> Result<Tensor> {
        let x = x.into();
        let s = x.shape().to_vec();
        let qkv = linear(rec, x, &self.qkv)?.reshape(&[s[0] / frames, frames, 1, s[1], 3 * s[2]])?;
        let o = temporal_attention_qkv(rec, &qkv, 1, zero_bias, Rope::None)?;
        linear_add(rec, &o.reshape(&s)?, &self.to_out, Residual::Same(res))
    }
}

/// `VideoTransformerBlock` (ff_in, two self-attentions over frames, GEGLU feed-forwards,
/// LayerNorms eps 1e-5): `z += FF_in(LN_in(z)); z += A1(LN1(z)); z += A2(LN2(z)); z += FF(LN3(z))`.
pub struct VideoTransformerBlock {
    pub norm_in: NormWeight,
    pub ff_in: FeedForward,
    pub norm1: NormWeight,
    pub attn1: FrameAttention,
    pub norm2: NormWeight,
    pub attn2: FrameAttention,
    pub norm3: NormWeight,
    pub ff: FeedForward,
}

impl VideoTransformerBlock {
    pub fn load(l: &mut Loader, prefix: &str, c: usize) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(VideoTransformerBlock {
            norm_in: l.norm(&p("norm_in"), c)?,
            ff_in: FeedForward::load(l, &p("ff_in"), c)?,
            norm1: l.norm(&p("norm1"), c)?,
            attn1: FrameAttention::load(l, &p("attn1"), c)?,
            norm2: l.norm(&p("norm2"), c)?,
            attn2: FrameAttention::load(l, &p("attn2"), c)?,
            norm3: l.norm(&p("norm3"), c)?,
            ff: FeedForward::load(l, &p("ff"), c)?,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, z: &Tensor, frames: usize) -> Result<Tensor> {
        let zero_bias = Tensor::from_f32(rec.gpu(), &vec![0.0; frames * frames], &[1, frames, frames], z.dtype())?;
        // Each LayerNorm is applied by the projection after it (norm::Fuse).
        let n = LinearInput::layer_normed(z, &self.norm_in, 1e-5);
        let z = self.ff_in.forward_add(rec, n, z)?;
        let n = LinearInput::layer_normed(&z, &self.norm1, 1e-5);
        let z = self.attn1.forward_add(rec, n, frames, &zero_bias, &z)?;
        let n = LinearInput::layer_normed(&z, &self.norm2, 1e-5);
        let z = self.attn2.forward_add(rec, n, frames, &zero_bias, &z)?;
        let n = LinearInput::layer_normed(&z, &self.norm3, 1e-5);
        self.ff.forward_add(rec, n, &z)
    }
}

/// TE-3DVAE mid-block `MemoryEfficientVideoBlock`:
/// `a = Attn(GN32(x))` single-head over each frame's pixels (1×1-conv q/k/v, scale C^-1/2, not
/// yet projected); `e = video_time_embed(sinusoid(frame index))` ([cos | sin]);
/// `m = VideoTransformerBlock(a + e)` over frames; `out = x + proj_out(σ(mix)·a + (1 − σ(mix))·m)`.
pub struct MemoryEfficientVideoBlock {
    pub norm: NormWeight,
    /// The 1×1 convolutions `q | k | v`, stacked.
    pub qkv: Qkv,
    pub proj_out: LinearWeight,
    pub time_mix_block: VideoTransformerBlock,
    pub time_embed_0: LinearWeight,
    pub time_embed_2: LinearWeight,
    pub mix_factor: f32,
}

impl MemoryEfficientVideoBlock {
    pub fn load(l: &mut Loader, prefix: &str, c: usize) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(MemoryEfficientVideoBlock {
            norm: l.norm(&p("norm"), c)?,
            qkv: Qkv::load_stacked(l, [p("q"), p("k"), p("v")], c, true, true)?,
            proj_out: l.conv1x1_as_linear(&p("proj_out"), c, c)?,
            time_mix_block: VideoTransformerBlock::load(l, &p("time_mix_block"), c)?,
            time_embed_0: l.linear(&p("video_time_embed.0"), 4 * c, c, true)?,
            time_embed_2: l.linear(&p("video_time_embed.2"), c, 4 * c, true)?,
            mix_factor: scalar(l, &p("mix_factor"))?,
        })
    }

    /// `x [B·F, H, W, C]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, frames: usize) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (n, c) = (s[0], s[3]);
        let b = n / frames;
        // The norm is applied by the q/k/v projection (norm::Fuse).
        let norm = group_norm_table_w(rec, x, TE_GROUPS, 1e-6, &self.norm, PER_IMAGE)?;
        let h = LinearInput::group_normed(&x.reshape(&[n, s[1] * s[2], c])?, &norm)?;
        let a = self.qkv.attend(rec, h, None, 1)?;

        let idx: Vec<f32> = (0..frames).map(|i| i as f32).collect();
        let idx = Tensor::from_f32(rec.gpu(), &idx, &[frames], DType::F32)?;
        let e = timestep_embedding_as(rec, &idx, c, true, 0.0, x.dtype())?;
        let e = linear(rec, &e, &self.time_embed_0)?;
        let e = unary(rec, Unary::Silu, &e)?;
        let e = linear(rec, &e, &self.time_embed_2)?;
        let e = if b > 1 { concat(rec, &vec![&e; b])? } else { e };
        let xm = add(rec, &a, &e.reshape(&[n, 1, c])?)?;

        let m = self.time_mix_block.forward(rec, &xm, frames)?;
        let o = mix(rec, self.mix_factor, &a, &m)?;
        linear_add(rec, &o, &self.proj_out, Residual::Same(x))?.reshape(&s)
    }
}

pub struct TemporalUpBlock {
    pub resnets: Vec<SpatioTemporalResBlock>,
    pub upsampler: Option<Upsample2D>,
}

/// DiffVSR's TE-3DVAE decoder (`AutoencoderKLTemporalDecoder.decode`).
pub struct Te3dVaeDecoder {
    pub config: VideoVaeConfig,
    pub post_quant_conv: ConvWeight,
    pub conv_in: ConvWeight,
    pub mid_resnets: Vec<SpatioTemporalResBlock>,
    pub mid_attention: MemoryEfficientVideoBlock,
    pub up_blocks: Vec<TemporalUpBlock>,
    pub conv_norm_out: NormWeight,
    pub conv_out: ConvWeight,
    pub time_conv_out: ConvWeight,
}

impl Te3dVaeDecoder {
    pub fn load(l: &mut Loader, config: &VideoVaeConfig) -> Result<Self> {
        config.validate_te3dvae()?;
        let c = config;
        let boc = &c.block_out_channels;
        let n = boc.len();
        let top = boc[n - 1];
        let lat = c.latent_channels;
        for p in UNUSED_PREFIXES {
            l.store.skip_prefix(p);
        }
        let post_quant_conv = l.conv2d("post_quant_conv", lat, lat, 1)?;
        let conv_in = l.conv2d("decoder.conv_in", top, lat, 3)?;
        // MidBlockTemporalDecoder(num_layers = layers_per_block): all resnets have weights, but
        // its forward runs resnets[0], then (attention, resnets[1]) once: zip stops at the one
        // attention, so resnets beyond the second never run.
        let mut mid_resnets = Vec::new();
        for j in 0..c.layers_per_block {
            mid_resnets.push(SpatioTemporalResBlock::load(l, &format!("decoder.mid_block.resnets.{j}"), top, top)?);
        }
        let mid_attention = MemoryEfficientVideoBlock::load(l, "decoder.mid_block.attentions.0", top)?;
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_ch = rev[0];
        for (i, &ch) in rev.iter().enumerate() {
            let prev = out_ch;
            out_ch = ch;
            let mut resnets = Vec::new();
            for j in 0..=c.layers_per_block {
                resnets.push(SpatioTemporalResBlock::load(l, &format!("decoder.up_blocks.{i}.resnets.{j}"), if j == 0 { prev } else { out_ch }, out_ch)?);
            }
            let upsampler = if i + 1 < n { Some(Upsample2D::load(l, &format!("decoder.up_blocks.{i}.upsamplers.0"), out_ch)?) } else { None };
            up_blocks.push(TemporalUpBlock { resnets, upsampler });
        }
        Ok(Te3dVaeDecoder {
            config: c.clone(),
            post_quant_conv,
            conv_in,
            mid_resnets,
            mid_attention,
            up_blocks,
            conv_norm_out: l.norm("decoder.conv_norm_out", boc[0])?,
            conv_out: l.conv2d("decoder.conv_out", c.out_channels, boc[0], 3)?,
            time_conv_out: l.conv("decoder.time_conv_out", &[c.out_channels, c.out_channels, 3, 3, 3])?,
        })
    }

    /// `latents [B, latent_channels, F, h, w]` → `[B, out_channels, F, h·2^(n−1), w·2^(n−1)]`.
    /// Every frame window of the input is one `num_frames` group of the reference (the DiffVSR
    /// pipeline decodes chunks of 4 frames: pass F = 4 for the same result). F ≤ 16.
    pub fn forward(&self, rec: &mut Recorder, latents: &Tensor) -> Result<Tensor> {
        let (x, b, f) = video_in(rec, latents, self.config.latent_channels, "te3dvae decoder")?;
        let x = conv2d(rec, &x, &self.post_quant_conv, 1, 0)?;
        let mut x = conv2d(rec, &x, &self.conv_in, 1, 1)?;
        rec.tap("decoder.conv_in", &x);
        x = self.mid_resnets[0].forward(rec, &x, f)?;
        rec.tap("decoder.mid_block.resnets.0", &x);
        if self.mid_resnets.len() > 1 {
            x = self.mid_attention.forward(rec, &x, f)?;
            rec.tap("decoder.mid_block.attentions.0", &x);
            x = self.mid_resnets[1].forward(rec, &x, f)?;
        }
        rec.tap("decoder.mid_block", &x);
        // An upsampler whose output would not fit one storage binding runs together with the
        // next block's first resnet, a few frames at a time (see `upsample_into_resnet`).
        let mut deferred: Option<&Upsample2D> = None;
        for (i, blk) in self.up_blocks.iter().enumerate() {
            for r in &blk.resnets {
                x = match deferred.take() {
                    Some(u) => upsample_into_resnet(rec, u, r, &x, f)?,
                    None => r.forward(rec, &x, f)?,
                };
            }
            if let Some(u) = &blk.upsampler {
                if upsampled_image_bytes(&x, x.shape()[3]) * x.shape()[0] as u64 > rec.gpu().max_binding() {
                    deferred = Some(u);
                    continue;
                }
                x = u.forward(rec, &x, None)?;
            }
            rec.tap(&format!("decoder.up_blocks.{i}"), &x);
        }
        let norm = group_norm_table_w(rec, &x, TE_GROUPS, 1e-6, &self.conv_norm_out, PER_IMAGE_SILU)?;
        let x = conv2d_normed(rec, &x, &norm, &self.conv_out, 1, 1, None)?;
        let s = x.shape().to_vec();
        let x = x.reshape(&[b, f, s[1], s[2], s[3]])?;
        let x = conv3d(rec, &x, &self.time_conv_out)?;
        nfhwc_to_ncfhw(rec, &x)
    }
}

/// Bytes of one image of `x [N, h, w, C]` upsampled ×2 with `c` channels.
fn upsampled_image_bytes(x: &Tensor, c: usize) -> u64 {
    let s = x.shape();
    (4 * s[1] * s[2] * c * x.dtype().size()) as u64
}

/// `r(u(x))` for an upsampler `u` whose output `[B·F, 2h, 2w, C]` exceeds the device's largest
/// storage binding (a 720p chunk's last upsampling: 4 × 720×1280 × 256 channels in f32 is
/// 3.8 GB against NVIDIA's 2 GiB): the upsampler and the resnet's per-frame spatial half run on
/// groups of frames that fit, their outputs (narrower: the resnet halves the channels) are
/// joined, and the temporal half runs on the whole window. Same values as unsplit: every
/// operation up to the join works on each image alone.
fn upsample_into_resnet(rec: &mut Recorder, u: &Upsample2D, r: &SpatioTemporalResBlock, x: &Tensor, frames: usize) -> Result<Tensor> {
    let n = x.shape()[0];
    let widest = x.shape()[3].max(r.spatial.conv1.cout());
    let per_image = upsampled_image_bytes(x, widest);
    let group = ((rec.gpu().max_binding() / per_image.max(1)) as usize).clamp(1, n);
    let mut parts = Vec::new();
    for first in (0..n).step_by(group) {
        let xs = x.narrow(0, first, group.min(n - first))?;
        let up = u.forward(rec, &xs, None)?;
        parts.push(r.spatial.forward(rec, &up, None)?);
    }
    let s = concat(rec, &parts.iter().collect::<Vec<_>>())?;
    r.forward_temporal(rec, &s, frames)
}

/// Upscale-A-Video's `vae_3d` decoder: the SD×4 VAE decoder ([`VaeDecoder`], old attention
/// names) applied to every frame, except that its resnets' GroupNorms and `conv_norm_out` pool
/// statistics over each batch element's F frames (the attention's norm is per frame).
pub struct UavVae3dDecoder {
    pub config: VideoVaeConfig,
    pub decoder: VaeDecoder,
}

impl UavVae3dDecoder {
    pub fn load(l: &mut Loader, config: &VideoVaeConfig) -> Result<Self> {
        let c2 = config.vae3d_as_2d()?;
        let mut decoder = VaeDecoder::load_with(l, &c2, true)?;
        // UAV's ResnetBlock3D normalises the 5-D chunk: statistics over all its frames.
        for r in decoder.mid_resnets.iter_mut().chain(decoder.up_blocks.iter_mut().flat_map(|b| b.resnets.iter_mut())) {
            r.pooled = true;
        }
        Ok(UavVae3dDecoder { config: config.clone(), decoder })
    }

    /// `latents [B, latent_channels, F, h, w]` → `[B, out_channels, F, H, W]` (the UAV pipeline
    /// decodes chunks of 3 frames).
    pub fn forward(&self, rec: &mut Recorder, latents: &Tensor) -> Result<Tensor> {
        let (x, b, f) = video_in(rec, latents, self.config.latent_channels, "uav vae_3d decoder")?;
        let x = self.decoder.decode_nhwc(rec, &x, f)?;
        let s = x.shape().to_vec();
        nfhwc_to_ncfhw(rec, &x.reshape(&[b, f, s[1], s[2], s[3]])?)
    }
}
