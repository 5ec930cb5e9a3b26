//! The SD×4 upscaler's UNet: diffusers `UNet2DConditionModel` (spec §2.1–2.2), the shared UNet
//! skeleton (`unet.rs`) over single images with `Transformer2DModel`s.

use std::convert::Infallible;

use anyhow::{bail, Result};

use super::blocks::Transformer2D;
use super::unet::{Parts, Place, SpatialTransformer, UNetCore};
use super::Loader;
use crate::config::UNet2DConfig;
use crate::ops::layout::{nchw_to_nhwc, nhwc_to_nchw};
use crate::{Recorder, Tensor};

pub use super::unet::UNetInputs;

pub struct UNet2D {
    pub config: UNet2DConfig,
    pub core: UNetCore<Transformer2D, Infallible>,
}

impl SpatialTransformer for Transformer2D {
    fn forward(&self, rec: &mut Recorder, x: &Tensor, ctx: &Tensor, _frames: usize) -> Result<Tensor> {
        Transformer2D::forward(self, rec, x, ctx)
    }
}

/// The SD×4 UNet's transformers; no temporal modules.
struct Sd<'c>(&'c UNet2DConfig);

impl Parts for Sd<'_> {
    type Attn = Transformer2D;
    type Temporal = Infallible;
    fn attention(&mut self, l: &mut Loader, prefix: &str, dim: usize, heads: usize, only_cross: bool) -> Result<Transformer2D> {
        let c = self.0;
        Transformer2D::load(l, prefix, dim, c.cross_attention_dim, heads, only_cross, c.norm_num_groups, c.use_linear_projection)
    }
    fn temporal(&mut self, _: &mut Loader, _: Place, _: usize) -> Result<Option<(String, Infallible)>> {
        Ok(None)
    }
}

impl UNet2D {
    pub fn load(l: &mut Loader, config: &UNet2DConfig) -> Result<Self> {
        Ok(UNet2D { config: config.clone(), core: UNetCore::load(l, config, false, &mut Sd(config))? })
    }

    /// One forward pass; returns the predicted `[B, out_channels, H, W]` (PyTorch layout).
    /// Intermediates are tapped (see [`Recorder::tap`]) channels-last.
    pub fn forward(&self, rec: &mut Recorder, inp: &UNetInputs) -> Result<Tensor> {
        let c = &self.config;
        let s = inp.sample.shape();
        if s.len() != 4 || s[1] != c.in_channels {
            bail!("unet: sample must be [B, {}, H, W], got {:?}", c.in_channels, s);
        }
        let temb_silu = self.core.time_embedding(rec, inp, s[0])?;
        let x = nchw_to_nhwc(rec, &inp.unique_sample()?)?;
        let x = self.core.forward(rec, &x, &temb_silu, inp.encoder_hidden_states, 1, inp.cfg_pair)?;
        nhwc_to_nchw(rec, &x)
    }
}
