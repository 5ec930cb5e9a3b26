//! Model configs, read from the `config.json` files diffusers writes, so a downloaded model folder
//! just works. `Default` is the real Stable Diffusion ×4 upscaler config (spec §2.1, §2.6).
//! Settings the engine does not implement are rejected with a message, never ignored.

use std::path::Path;

pub mod clip_text;
pub mod video_vae;
pub use clip_text::ClipTextConfig;
pub use video_vae::VideoVaeConfig;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The largest width, count or group number a config may give: far beyond any released model
/// (widths ≤ 1280, ≤ 1000 class embeddings), and small enough that no product of a few of them
/// overflows. Larger values are corrupt or hostile configs.
pub const MAX_DIM: usize = 1 << 16;

/// Refuses a config value that must be a positive, finite number (a norm's epsilon, a VAE's
/// scaling factor): zero, negative or non-finite ones make NaNs or silently wrong output.
pub fn require_positive(name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        bail!("{name} {v}: must be a positive, finite number (the released configs give 1e-5 for epsilons, 0.08333 for the upscaler's scaling_factor)");
    }
    Ok(())
}

/// A value diffusers allows as either one number/bool for all blocks or one per block.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for block `i` (the last entry past the end). An empty list, which
    /// [`UNet2DConfig::validate`] refuses, reads as `T::default()` rather than panicking.
    pub fn get(&self, i: usize) -> T
    where
        T: Default,
    {
        match self {
            PerBlock::One(v) => v.clone(),
            PerBlock::Each(v) => v.get(i).or(v.last()).cloned().unwrap_or_default(),
        }
    }
    fn len_ok(&self, n: usize) -> bool {
        match self {
            PerBlock::One(_) => true,
            PerBlock::Each(v) => v.len() == n,
        }
    }
    fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        match self {
            PerBlock::One(v) => f(v),
            PerBlock::Each(v) => v.iter().any(f),
        }
    }
}

/// diffusers `UNet2DConditionModel` (the SD×4 upscaler's UNet).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    /// diffusers quirk: in SD-era configs this is the number of heads, not their width.
    pub attention_head_dim: PerBlock<usize>,
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: usize,
    pub only_cross_attention: PerBlock<bool>,
    pub use_linear_projection: bool,
    pub num_class_embeds: Option<usize>,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub act_fn: String,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub mid_block_type: Option<String>,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub center_input_sample: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub time_embedding_type: String,
    pub transformer_layers_per_block: PerBlock<usize>,
    pub dual_cross_attention: bool,
    pub sample_size: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub attention_type: String,
    pub time_embedding_dim: Option<usize>,
    pub timestep_post_act: Option<String>,
    pub time_cond_proj_dim: Option<usize>,
    pub encoder_hid_dim: Option<usize>,
    pub cross_attention_norm: Option<String>,
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        UNet2DConfig {
            in_channels: 7,
            out_channels: 4,
            block_out_channels: vec![256, 512, 512, 1024],
            down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
                .map(String::from)
                .to_vec(),
            up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
                .map(String::from)
                .to_vec(),
            layers_per_block: 2,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            cross_attention_dim: 1024,
            only_cross_attention: PerBlock::Each(vec![true, true, true, false]),
            use_linear_projection: true,
            num_class_embeds: Some(1000),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            act_fn: "silu".into(),
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            center_input_sample: false,
            class_embed_type: None,
            addition_embed_type: None,
            time_embedding_type: "positional".into(),
            transformer_layers_per_block: PerBlock::One(1),
            dual_cross_attention: false,
            sample_size: Some(128),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
            time_embedding_dim: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            encoder_hid_dim: None,
            cross_attention_norm: None,
        }
    }
}

impl UNet2DConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        c.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(c)
    }

    /// Heads of the attention in down-block level `i` (diffusers' `num_attention_heads or attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(i)
    }

    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    pub fn validate(&self) -> Result<()> {
        require_positive("norm_eps", self.norm_eps)?;
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!("block_out_channels, down_block_types and up_block_types must have the same non-zero length");
        }
        for (what, ok) in [
            ("attention_head_dim", self.attention_head_dim.len_ok(n)),
            ("num_attention_heads", self.num_attention_heads.as_ref().is_none_or(|h| h.len_ok(n))),
            ("only_cross_attention", self.only_cross_attention.len_ok(n)),
            ("transformer_layers_per_block", self.transformer_layers_per_block.len_ok(n)),
        ] {
            if !ok {
                bail!("{what} must have one entry per block ({n})");
            }
        }
        let zero = |v: &usize| *v == 0;
        if self.attention_head_dim.any(zero) || self.num_attention_heads.as_ref().is_some_and(|h| h.any(zero)) {
            bail!("attention_head_dim / num_attention_heads must be positive (a head count of 0 cannot split the channels)");
        }
        if self.norm_num_groups == 0 {
            bail!("norm_num_groups must be positive, found 0");
        }
        if self.block_out_channels.contains(&0) || self.cross_attention_dim == 0 || self.in_channels == 0 || self.out_channels == 0 {
            bail!("block_out_channels entries, cross_attention_dim, in_channels and out_channels must be positive");
        }
        let big = |v: &usize| *v > MAX_DIM;
        if self.block_out_channels.iter().any(big)
            || [self.cross_attention_dim, self.in_channels, self.out_channels, self.norm_num_groups, self.layers_per_block].iter().any(big)
            || self.num_class_embeds.as_ref().is_some_and(big)
            || self.attention_head_dim.any(big)
            || self.num_attention_heads.as_ref().is_some_and(|h| h.any(big))
        {
            bail!("a channel count, head count, group count, layer count or num_class_embeds exceeds {MAX_DIM}: the config is corrupt");
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "CrossAttnDownBlock2D" {
                bail!("unsupported down block type '{t}' (supported: DownBlock2D, CrossAttnDownBlock2D)");
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "CrossAttnUpBlock2D" {
                bail!("unsupported up block type '{t}' (supported: UpBlock2D, CrossAttnUpBlock2D)");
            }
        }
        if let Some(m) = &self.mid_block_type {
            if m != "UNetMidBlock2DCrossAttn" {
                bail!("unsupported mid_block_type '{m}'");
            }
        }
        if self.act_fn != "silu" {
            bail!("unsupported act_fn '{}' (only silu)", self.act_fn);
        }
        if self.resnet_time_scale_shift != "default" {
            bail!("unsupported resnet_time_scale_shift '{}'", self.resnet_time_scale_shift);
        }
        if self.time_embedding_type != "positional" {
            bail!("unsupported time_embedding_type '{}'", self.time_embedding_type);
        }
        if self.class_embed_type.is_some() || self.addition_embed_type.is_some() || self.dual_cross_attention || self.center_input_sample {
            bail!("class_embed_type, addition_embed_type, dual_cross_attention and center_input_sample are not supported");
        }
        if self.conv_in_kernel != 3 || self.conv_out_kernel != 3 || self.attention_type != "default" {
            bail!("only conv_in_kernel = conv_out_kernel = 3 and attention_type 'default' are supported");
        }
        if self.time_embedding_dim.is_some()
            || self.timestep_post_act.is_some()
            || self.time_cond_proj_dim.is_some()
            || self.encoder_hid_dim.is_some()
            || self.cross_attention_norm.is_some()
        {
            bail!("time_embedding_dim, timestep_post_act, time_cond_proj_dim, encoder_hid_dim and cross_attention_norm are not supported");
        }
        if (0..n).any(|i| self.transformer_layers_per_block.get(i) != 1) {
            bail!("transformer_layers_per_block other than 1 is not supported");
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            bail!("every block_out_channels entry must be a multiple of norm_num_groups ({})", self.norm_num_groups);
        }
        for i in 0..n {
            if !self.block_out_channels[i].is_multiple_of(self.heads(i)) {
                bail!("block {i}: {} channels do not split into {} heads", self.block_out_channels[i], self.heads(i));
            }
        }
        Ok(())
    }
}

/// diffusers `AutoencoderKL` (only the decoder runs).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub act_fn: String,
    pub scaling_factor: f64,
    pub mid_block_add_attention: bool,
    pub use_post_quant_conv: bool,
    pub force_upcast: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512],
            up_block_types: vec!["UpDecoderBlock2D".into(); 3],
            layers_per_block: 2,
            norm_num_groups: 32,
            act_fn: "silu".into(),
            scaling_factor: 0.08333,
            mid_block_add_attention: true,
            use_post_quant_conv: true,
            force_upcast: true,
        }
    }
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        c.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        require_positive("scaling_factor", self.scaling_factor)?;
        if self.block_out_channels.is_empty() || self.up_block_types.len() != self.block_out_channels.len() {
            bail!("up_block_types must have one entry per block_out_channels entry");
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            bail!("unsupported VAE up block type '{t}'");
        }
        if self.act_fn != "silu" {
            bail!("unsupported act_fn '{}' (only silu)", self.act_fn);
        }
        if self.norm_num_groups == 0 {
            bail!("norm_num_groups must be positive, found 0");
        }
        if self.block_out_channels.contains(&0) || self.latent_channels == 0 || self.out_channels == 0 {
            bail!("block_out_channels entries, latent_channels and out_channels must be positive");
        }
        if self.block_out_channels.iter().chain([&self.latent_channels, &self.out_channels, &self.in_channels, &self.norm_num_groups, &self.layers_per_block]).any(|&v| v > MAX_DIM) {
            bail!("a channel, group or layer count exceeds {MAX_DIM}: the config is corrupt");
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            bail!("every block_out_channels entry must be a multiple of norm_num_groups ({})", self.norm_num_groups);
        }
        Ok(())
    }
}

/// Which released video UNet a config or checkpoint is: the architectures are one, the tensor
/// names and MSTA differ.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VideoUNetKind {
    /// DiffVSR `UNet3DVSRModel` (spec §4.1).
    DiffVsr,
    /// Upscale-A-Video `UNetVideoModel` (spec §3.2).
    Uav,
}

impl std::fmt::Display for VideoUNetKind {
    /// The model's name as people know it (in messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VideoUNetKind::DiffVsr => "DiffVSR (UNet3DVSRModel)",
            VideoUNetKind::Uav => "Upscale-A-Video (UNetVideoModel)",
        })
    }
}

/// A video UNet config as the official repos publish it (DiffVSR `configs/unet_3d_config.json`,
/// UAV `configs/unet_video_config.json`): the SD×4 UNet's settings with `*3D` block names plus the
/// temporal-layer settings.
#[derive(Clone, Debug, Deserialize)]
pub struct VideoUNetConfig {
    #[serde(flatten)]
    pub base: UNet2DConfig,
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "all_levels")]
    pub down_temporal_idx: Vec<usize>,
    #[serde(default = "yes")]
    pub mid_temporal: bool,
    #[serde(default = "all_levels")]
    pub up_temporal_idx: Vec<usize>,
    /// DiffVSR's multi-scale temporal attention; the DiffVSR code defaults it on, UAV lacks it.
    #[serde(default)]
    pub msatten: Option<bool>,
    #[serde(default)]
    pub temporal_module_config: Option<serde_json::Value>,
    #[serde(default)]
    pub video_condition: Option<bool>,
    #[serde(default)]
    pub downsample_2x: bool,
    #[serde(default)]
    pub use_first_frame: bool,
    #[serde(default)]
    pub use_relative_position: bool,
}

fn all_levels() -> Vec<usize> {
    vec![0, 1, 2, 3]
}
fn yes() -> bool {
    true
}

/// GroupNorm groups the temporal layers hard-code (spec §9).
pub const TEMPORAL_GROUPS: usize = 32;

impl VideoUNetConfig {
    /// The released DiffVSR or UAV config (spec §4.1, §3.2).
    pub fn official(kind: VideoUNetKind) -> Self {
        VideoUNetConfig {
            base: UNet2DConfig {
                down_block_types: ["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"].map(String::from).to_vec(),
                up_block_types: ["CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"].map(String::from).to_vec(),
                mid_block_type: None,
                ..UNet2DConfig::default()
            },
            class_name: Some(match kind {
                VideoUNetKind::DiffVsr => "UNet3DVSRModel".into(),
                VideoUNetKind::Uav => "UNetVideoModel".into(),
            }),
            down_temporal_idx: all_levels(),
            mid_temporal: true,
            up_temporal_idx: all_levels(),
            msatten: Some(kind == VideoUNetKind::DiffVsr),
            temporal_module_config: None,
            video_condition: Some(false),
            downsample_2x: false,
            use_first_frame: false,
            use_relative_position: false,
        }
    }

    pub fn from_file(path: &Path, default_kind: VideoUNetKind) -> Result<Self> {
        let mut c: Self = read_json(path)?;
        if c.class_name.is_none() {
            c.class_name = Some(match default_kind {
                VideoUNetKind::DiffVsr => "UNet3DVSRModel".into(),
                VideoUNetKind::Uav => "UNetVideoModel".into(),
            });
        }
        c.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(c)
    }

    pub fn kind(&self) -> Result<VideoUNetKind> {
        match self.class_name.as_deref() {
            Some("UNet3DVSRModel") => Ok(VideoUNetKind::DiffVsr),
            Some("UNetVideoModel") => Ok(VideoUNetKind::Uav),
            Some(o) => bail!("video UNet _class_name \"{}\": expected UNet3DVSRModel (DiffVSR) or UNetVideoModel (Upscale-A-Video)", o.escape_debug()),
            None => bail!("the video UNet config has no _class_name: expected UNet3DVSRModel (DiffVSR) or UNetVideoModel (Upscale-A-Video)"),
        }
    }

    pub fn msatten(&self) -> bool {
        self.msatten.unwrap_or(self.kind().ok() == Some(VideoUNetKind::DiffVsr))
    }

    /// The 2-D settings with the `*3D` block names mapped to their 2-D counterparts (the layouts
    /// are the same; the 3-D blocks add temporal layers).
    pub fn base_2d(&self) -> UNet2DConfig {
        let mut b = self.base.clone();
        let map = |v: &mut Vec<String>| v.iter_mut().for_each(|t| *t = t.replace("3D", "2D"));
        map(&mut b.down_block_types);
        map(&mut b.up_block_types);
        if b.mid_block_type.as_deref() == Some("UNetMidBlock3DCrossAttn") {
            b.mid_block_type = Some("UNetMidBlock2DCrossAttn".into());
        }
        b
    }

    pub fn validate(&self) -> Result<()> {
        let kind = self.kind()?;
        let b = self.base_2d();
        b.validate()?;
        let n = b.block_out_channels.len();
        if self.down_temporal_idx.iter().chain(&self.up_temporal_idx).any(|&i| i >= n) {
            bail!("down_temporal_idx / up_temporal_idx name a level beyond the {n} blocks");
        }
        if self.video_condition.unwrap_or(kind == VideoUNetKind::DiffVsr) {
            bail!("video_condition is not supported (the released models have it off)");
        }
        if self.downsample_2x || self.use_first_frame || self.use_relative_position {
            bail!("downsample_2x, use_first_frame and use_relative_position are not supported (the released models have them off)");
        }
        if kind == VideoUNetKind::Uav && self.msatten == Some(true) {
            bail!("msatten is a DiffVSR setting; UNetVideoModel has no multi-scale temporal attention");
        }
        if let Some(t) = &self.temporal_module_config {
            if let Some(a) = t.get("attention_block_types") {
                let empty = a.as_array().is_some_and(|v| v.iter().all(|x| x.as_str() == Some("")));
                if !empty {
                    bail!("temporal_module_config.attention_block_types {a}: only [\"\", \"\"] (no attention in the temporal modules, as released) is supported");
                }
            }
            if t.get("use_scale_shift").and_then(|v| v.as_bool()) == Some(true) {
                bail!("temporal_module_config.use_scale_shift is not supported");
            }
        }
        // Only levels with a transformer (a cross-attention down or up block, and the mid block)
        // have temporal attention, and only those and the temporal modules' levels have the
        // temporal layers' GroupNorm(32): plain DownBlock3D/UpBlock3D levels need neither.
        let attention = |i: usize| b.down_block_types[i].starts_with("CrossAttn") || b.up_block_types[n - 1 - i].starts_with("CrossAttn") || i == n - 1;
        let temporal = |i: usize| self.down_temporal_idx.contains(&i) || self.up_temporal_idx.contains(&(n - 1 - i)) || (self.mid_temporal && i == n - 1);
        for (i, &c) in b.block_out_channels.iter().enumerate() {
            if (attention(i) || temporal(i)) && c % TEMPORAL_GROUPS != 0 {
                bail!("block {i}: {c} channels; the temporal layers' GroupNorm(32) needs multiples of 32");
            }
            let dh = c / b.heads(i);
            if attention(i) && (dh < crate::ops::temporal_attention::ROPE_DIM || !dh.is_multiple_of(4)) {
                bail!("block {i}: temporal attention heads are {dh} wide; RoPE needs at least 32 and a multiple of 4");
            }
        }
        Ok(())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    crate::weights::check_regular_file(path, "config")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("config {} is not a valid model config", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_golden_configs_parse() {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sdx4");
        let u = UNet2DConfig::from_file(&d.join("unet_config.json")).unwrap();
        assert_eq!(u.block_out_channels, vec![32, 32, 32, 64]);
        assert_eq!(u.heads(3), 2);
        assert!(!u.only_cross_attention.get(3) && u.only_cross_attention.get(0));
        let v = VaeConfig::from_file(&d.join("vae_config.json")).unwrap();
        assert_eq!(v.block_out_channels, vec![32, 32, 64]);
    }

    #[test]
    fn sdx4_defaults_are_valid_and_unsupported_settings_are_refused() {
        let u = UNet2DConfig::default();
        u.validate().unwrap();
        assert_eq!((u.heads(1), u.time_embed_dim()), (8, 1024));
        VaeConfig::default().validate().unwrap();
        let bad: UNet2DConfig = serde_json::from_str(r#"{"act_fn": "gelu"}"#).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("act_fn"));
        let bad: UNet2DConfig = serde_json::from_str(r#"{"down_block_types": ["X","Y","Z","W"]}"#).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("'X'"));
    }

    /// Zero divisors, empty per-block lists and per-block lists of the wrong length are errors
    /// naming the setting, never a panic (the checks run before anything divides or indexes).
    #[test]
    fn degenerate_configs_are_errors_not_panics() {
        let unet = |j: &str| serde_json::from_str::<UNet2DConfig>(j).unwrap().validate().map_err(|e| e.to_string());
        for (j, want) in [
            (r#"{"norm_num_groups": 0}"#, "norm_num_groups"),
            (r#"{"attention_head_dim": 0}"#, "positive"),
            (r#"{"attention_head_dim": [8, 0, 8, 8]}"#, "positive"),
            (r#"{"attention_head_dim": []}"#, "attention_head_dim must have one entry per block (4)"),
            (r#"{"num_attention_heads": []}"#, "num_attention_heads must have one entry per block (4)"),
            (r#"{"num_attention_heads": [8, 8]}"#, "num_attention_heads must have one entry per block (4)"),
            (r#"{"num_attention_heads": 0}"#, "positive"),
            (r#"{"num_attention_heads": [8, 8, 0, 8]}"#, "positive"),
            (r#"{"only_cross_attention": []}"#, "only_cross_attention"),
            (r#"{"transformer_layers_per_block": []}"#, "transformer_layers_per_block"),
            (r#"{"block_out_channels": [], "down_block_types": [], "up_block_types": []}"#, "non-zero length"),
            (r#"{"block_out_channels": [256, 0, 512, 1024]}"#, "positive"),
            (r#"{"block_out_channels": [4611686018427387904, 512, 512, 1024]}"#, "exceeds"),
            (r#"{"num_class_embeds": 4611686018427387904}"#, "exceeds"),
            (r#"{"norm_eps": -1}"#, "norm_eps -1: must be a positive, finite number"),
            (r#"{"norm_eps": 0}"#, "norm_eps 0"),
        ] {
            let e = unet(j).unwrap_err();
            assert!(e.contains(want), "{j}: {e}");
        }
        // The same through the video UNet (which divides by the heads in its own checks).
        let e = serde_json::from_str::<VideoUNetConfig>(r#"{"_class_name": "UNetVideoModel", "num_attention_heads": [8, 8, 8, 0]}"#)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "{e}");
        let vae = |j: &str| serde_json::from_str::<VaeConfig>(j).unwrap().validate().unwrap_err().to_string();
        assert!(vae(r#"{"norm_num_groups": 0}"#).contains("norm_num_groups"));
        assert!(vae(r#"{"block_out_channels": [], "up_block_types": []}"#).contains("one entry per"));
        assert!(vae(r#"{"block_out_channels": [0, 0, 0]}"#).contains("positive"));
        assert!(vae(r#"{"scaling_factor": -0.08333}"#).contains("scaling_factor -0.08333: must be a positive"));
        let video_vae = |j: &str| serde_json::from_str::<VideoVaeConfig>(j).unwrap().validate_te3dvae().unwrap_err().to_string();
        assert!(video_vae(r#"{"scaling_factor": 0}"#).contains("scaling_factor 0: must be a positive"));
        let clip = serde_json::from_str::<ClipTextConfig>(r#"{"layer_norm_eps": -1}"#).unwrap();
        assert!(clip.validate().unwrap_err().to_string().contains("layer_norm_eps -1"));
        // Per-block values never panic on access, even unvalidated.
        assert_eq!(PerBlock::<usize>::Each(vec![]).get(3), 0);
        assert_eq!(PerBlock::Each(vec![1, 2]).get(5), 2);
        // Nesting deeper than serde_json's recursion limit is a parse error, not a stack overflow.
        let dir = crate::testutil::scratch_dir("config");
        let p = dir.join("deep.json");
        for key in ["attention_head_dim", "unknown_key"] {
            std::fs::write(&p, format!("{{\"{key}\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000))).unwrap();
            match UNet2DConfig::from_file(&p) {
                Err(e) => assert!(format!("{e:#}").contains("deep.json"), "{e:#}"),
                // serde_json skips an unknown key's value without recursing.
                Ok(_) => assert_eq!(key, "unknown_key"),
            }
        }
    }

    #[test]
    fn video_unet_configs_parse_and_validate() {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let c = VideoUNetConfig::from_file(&d.join("diffvsr_unet/config.json"), VideoUNetKind::Uav).unwrap();
        assert_eq!((c.kind().unwrap(), c.msatten()), (VideoUNetKind::DiffVsr, true));
        assert_eq!(c.base_2d().down_block_types[1], "CrossAttnDownBlock2D");
        let u = VideoUNetConfig::from_file(&d.join("uav_unet/config.json"), VideoUNetKind::DiffVsr).unwrap();
        assert_eq!((u.kind().unwrap(), u.msatten()), (VideoUNetKind::Uav, false));
        for k in [VideoUNetKind::DiffVsr, VideoUNetKind::Uav] {
            let o = VideoUNetConfig::official(k);
            o.validate().unwrap();
            assert_eq!((o.kind().unwrap(), o.msatten()), (k, k == VideoUNetKind::DiffVsr));
        }
        // The configs as published, where a clone of the official code is at hand.
        for (p, k) in [
            ("DiffVSR/configs/unet_3d_config.json", VideoUNetKind::DiffVsr),
            ("Upscale-A-Video/configs/unet_video_config.json", VideoUNetKind::Uav),
        ] {
            if let Some(p) = crate::testutil::official_file(p) {
                let c = VideoUNetConfig::from_file(&p, k).unwrap();
                assert_eq!((c.kind().unwrap(), c.msatten(), c.base.block_out_channels.clone()), (k, k == VideoUNetKind::DiffVsr, vec![256, 512, 512, 1024]));
            }
        }
        let bad = |j: &str| serde_json::from_str::<VideoUNetConfig>(j).unwrap().validate().unwrap_err().to_string();
        assert!(bad(r#"{"_class_name": "UNet3DVSRModel", "video_condition": true}"#).contains("video_condition"));
        assert!(bad(r#"{"_class_name": "UNetVideoModel", "temporal_module_config": {"attention_block_types": ["Temporal_Self", ""]}}"#).contains("attention_block_types"));
        assert!(bad(r#"{"_class_name": "X"}"#).contains("_class_name"));
        assert!(bad(r#"{"_class_name": "UNetVideoModel", "block_out_channels": [32, 32, 32, 48], "norm_num_groups": 16, "attention_head_dim": 1}"#).contains("multiples of 32"));
        assert!(bad(r#"{"_class_name": "UNetVideoModel", "block_out_channels": [32, 32, 32, 64], "attention_head_dim": 2}"#).contains("RoPE"));
    }
}
