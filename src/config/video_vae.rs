//! The video VAE decoders' config (DiffVSR TE-3DVAE, Upscale-A-Video `vae_3d`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::VaeConfig;

/// GroupNorm(32) is hard-coded throughout the TE-3DVAE decoder, whatever the config says.
pub const TE_GROUPS: usize = 32;

/// The official video VAE configs as published (DiffVSR `configs/vae_config.json`, UAV
/// `configs/vae_3d_config.json`); fields the decoder does not read are ignored.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct VideoVaeConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub up_block_types: Option<Vec<String>>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub act_fn: String,
    pub scaling_factor: f64,
    pub force_upcast: bool,
    /// UAV `vae_video` (LR-conditioned decoder): not supported.
    pub condition_img: bool,
}

impl Default for VideoVaeConfig {
    /// DiffVSR's TE-3DVAE config (`configs/vae_config.json`).
    fn default() -> Self {
        VideoVaeConfig {
            class_name: Some("AutoencoderKLTemporalDecoder".into()),
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512],
            up_block_types: None,
            layers_per_block: 2,
            norm_num_groups: 32,
            act_fn: "silu".into(),
            scaling_factor: 0.08333,
            force_upcast: true,
            condition_img: false,
        }
    }
}

impl VideoVaeConfig {
    /// UAV's `vae_3d` config (`configs/vae_3d_config.json`).
    pub fn uav_vae3d() -> Self {
        VideoVaeConfig {
            class_name: Some("AutoencoderKL3D".into()),
            up_block_types: Some(vec!["UpDecoderBlock3D".into(); 3]),
            force_upcast: false,
            ..Self::default()
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        crate::weights::check_regular_file(path, "config")?;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("config {} is not a valid video VAE config", path.display()))
    }

    fn validate_common(&self) -> Result<()> {
        crate::config::require_positive("scaling_factor", self.scaling_factor)?;
        if self.block_out_channels.is_empty() || self.block_out_channels.contains(&0) || self.latent_channels == 0 || self.out_channels == 0 {
            bail!("block_out_channels, latent_channels and out_channels must be non-empty / positive");
        }
        if self.act_fn != "silu" {
            bail!("unsupported act_fn '{}' (only silu)", self.act_fn);
        }
        let max = crate::config::MAX_DIM;
        if self.block_out_channels.iter().chain([&self.latent_channels, &self.out_channels, &self.in_channels, &self.layers_per_block]).any(|&v| v > max) {
            bail!("a channel or layer count exceeds {max}: the config is corrupt");
        }
        if self.condition_img {
            bail!("condition_img (UAV's LR-conditioned vae_video) is not supported");
        }
        Ok(())
    }

    /// Checks a TE-3DVAE config (`AutoencoderKLTemporalDecoder`).
    pub fn validate_te3dvae(&self) -> Result<()> {
        self.validate_common()?;
        if let Some(c) = &self.class_name {
            if c != "AutoencoderKLTemporalDecoder" {
                bail!("config class '{c}' is not a TE-3DVAE (AutoencoderKLTemporalDecoder)");
            }
        }
        if self.layers_per_block == 0 {
            bail!("layers_per_block must be at least 1");
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % TE_GROUPS != 0) {
            bail!("TE-3DVAE block_out_channels must be multiples of 32 (GroupNorm(32) is hard-coded), found {c}");
        }
        Ok(())
    }

    /// Checks a UAV `vae_3d` config and returns the equivalent 2-D decoder config.
    pub fn vae3d_as_2d(&self) -> Result<VaeConfig> {
        self.validate_common()?;
        let n = self.block_out_channels.len();
        let types = self.up_block_types.clone().unwrap_or_else(|| vec!["UpDecoderBlock3D".into(); n]);
        if types.len() != n {
            bail!("up_block_types must have one entry per block_out_channels entry");
        }
        if let Some(t) = types.iter().find(|t| *t != "UpDecoderBlock3D") {
            bail!("unsupported video VAE up block type '{t}' (only UpDecoderBlock3D: UAV's vae_3d)");
        }
        let c = VaeConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            latent_channels: self.latent_channels,
            block_out_channels: self.block_out_channels.clone(),
            up_block_types: vec!["UpDecoderBlock2D".into(); n],
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            act_fn: self.act_fn.clone(),
            scaling_factor: self.scaling_factor,
            mid_block_add_attention: true,
            use_post_quant_conv: true,
            force_upcast: self.force_upcast,
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(p: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
    }

    #[test]
    fn official_and_golden_configs_parse() {
        // The configs as published, where a clone of the official code is at hand.
        if let Some(p) = crate::testutil::official_file("DiffVSR/configs/vae_config.json") {
            let te = VideoVaeConfig::from_file(&p).unwrap();
            te.validate_te3dvae().unwrap();
            assert_eq!((te.block_out_channels.clone(), te.layers_per_block, te.latent_channels), (vec![128, 256, 512], 2, 4));
        }
        if let Some(p) = crate::testutil::official_file("Upscale-A-Video/configs/vae_3d_config.json") {
            let c2 = VideoVaeConfig::from_file(&p).unwrap().vae3d_as_2d().unwrap();
            assert_eq!((c2.block_out_channels, c2.norm_num_groups, c2.layers_per_block), (vec![128, 256, 512], 32, 2));
        }
        let te = VideoVaeConfig::default();
        assert_eq!((te.block_out_channels.clone(), te.layers_per_block, te.latent_channels), (vec![128, 256, 512], 2, 4));
        let c2 = VideoVaeConfig::uav_vae3d().vae3d_as_2d().unwrap();
        assert_eq!((c2.block_out_channels, c2.norm_num_groups, c2.layers_per_block), (vec![128, 256, 512], 32, 2));
        VideoVaeConfig::from_file(&data("te3dvae/config.json")).unwrap().validate_te3dvae().unwrap();
        VideoVaeConfig::from_file(&data("uav_vae3d/config.json")).unwrap().vae3d_as_2d().unwrap();
        VideoVaeConfig::default().validate_te3dvae().unwrap();
        VideoVaeConfig::uav_vae3d().vae3d_as_2d().unwrap();
    }

    #[test]
    fn unsupported_video_vae_settings_are_refused() {
        let e = |j: &str| serde_json::from_str::<VideoVaeConfig>(j).unwrap();
        let msg = e(r#"{"up_block_types": ["UpDecoderBlock3D_plus", "UpDecoderBlock3D_plus", "UpDecoderBlock3D_plus"]}"#).vae3d_as_2d().unwrap_err().to_string();
        assert!(msg.contains("UpDecoderBlock3D_plus"), "{msg}");
        let msg = e(r#"{"condition_img": true}"#).vae3d_as_2d().unwrap_err().to_string();
        assert!(msg.contains("condition_img"), "{msg}");
        let msg = e(r#"{"block_out_channels": [48, 64]}"#).validate_te3dvae().unwrap_err().to_string();
        assert!(msg.contains("multiples of 32"), "{msg}");
        let msg = e(r#"{"_class_name": "AutoencoderKL3D"}"#).validate_te3dvae().unwrap_err().to_string();
        assert!(msg.contains("AutoencoderKL3D"), "{msg}");
        // Zero divisors and empty lists are errors, never a panic.
        let msg = e(r#"{"norm_num_groups": 0}"#).vae3d_as_2d().unwrap_err().to_string();
        assert!(msg.contains("norm_num_groups"), "{msg}");
        for j in [r#"{"block_out_channels": []}"#, r#"{"block_out_channels": [0, 0, 0]}"#, r#"{"latent_channels": 0}"#] {
            let msg = e(j).vae3d_as_2d().unwrap_err().to_string();
            assert!(msg.contains("block_out_channels"), "{j}: {msg}");
            let msg = e(j).validate_te3dvae().unwrap_err().to_string();
            assert!(msg.contains("block_out_channels"), "{j}: {msg}");
        }
        let msg = e(r#"{"layers_per_block": 4611686018427387904}"#).validate_te3dvae().unwrap_err().to_string();
        assert!(msg.contains("exceeds"), "{msg}");
        let msg = e(r#"{"up_block_types": []}"#).vae3d_as_2d().unwrap_err().to_string();
        assert!(msg.contains("one entry per"), "{msg}");
    }
}
