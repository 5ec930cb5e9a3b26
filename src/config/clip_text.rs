//! The CLIP text encoder's config (transformers `CLIPTextConfig`, the fields the text tower uses).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// transformers `CLIPTextConfig` (the fields the text tower uses). `Default` is the SD×4
/// upscaler's `text_encoder/config.json` (spec §2.7); unsupported settings are refused.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// Only used by `CLIPTextModelWithProjection`; read for completeness.
    pub projection_dim: usize,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 512,
        }
    }
}

impl ClipTextConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::weights::check_regular_file(path, "config")?;
        let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Self = serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display()))?;
        c.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    pub fn validate(&self) -> Result<()> {
        crate::config::require_positive("layer_norm_eps", self.layer_norm_eps)?;
        if self.hidden_act != "gelu" {
            bail!("unsupported hidden_act '{}' (only exact \"gelu\"; OpenAI CLIP's quick_gelu is not implemented)", self.hidden_act);
        }
        let h = self.num_attention_heads;
        if h == 0 || self.hidden_size == 0 || !self.hidden_size.is_multiple_of(h) {
            bail!("hidden_size {} does not split into {h} heads", self.hidden_size);
        }
        if !self.head_dim().is_multiple_of(4) {
            bail!("head width {} is not a multiple of 4 (the attention kernel's vector width)", self.head_dim());
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            bail!("vocab_size, max_position_embeddings, num_hidden_layers and intermediate_size must be positive");
        }
        let max = crate::config::MAX_DIM;
        if [self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.max_position_embeddings].iter().any(|&v| v > max) {
            bail!("vocab_size, hidden_size, intermediate_size, num_hidden_layers or max_position_embeddings exceeds {max}: the config is corrupt");
        }
        Ok(())
    }

    /// 2·MACs of one forward over `batch` sequences of `len` tokens (linears and attention matmuls).
    pub fn flops(&self, batch: usize, len: usize) -> f64 {
        let (d, i, l) = (self.hidden_size as f64, self.intermediate_size as f64, len as f64);
        let per_layer = l * (4.0 * d * d + 2.0 * d * i) + 2.0 * l * l * d;
        2.0 * batch as f64 * self.num_hidden_layers as f64 * per_layer
    }
}
