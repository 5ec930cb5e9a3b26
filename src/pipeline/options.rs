//! What a job is given: its options and the prompt embeddings.

use anyhow::{bail, Context, Result};

use crate::pipeline::groups::WindowsPerCall;
use crate::pipeline::tiles::TileOptions;
use crate::pipeline::windows::{FrameRange, Ilt};
use crate::video::color::MatrixChoice;

/// The largest prompt-embeddings file read: 64 MiB, far above a prompt's (77 × 1024 f32 is 308
/// KiB).
const MAX_EMBEDS_FILE: u64 = 64 << 20;

/// Text embeddings `[1, L, D]` on the host (from the text encoder or a `--prompt-embeds` file).
#[derive(Clone, Debug)]
pub struct PromptEmbeds {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl PromptEmbeds {
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<PromptEmbeds> {
        if shape.len() == 2 && shape.iter().product::<usize>() == data.len() {
            bail!("prompt embeddings are {shape:?}; they must be [1, L, D]: save them with a batch axis (t.unsqueeze(0) in PyTorch), or make them with encode-prompt");
        }
        if shape.len() != 3 || shape[0] != 1 || shape.iter().product::<usize>() != data.len() {
            bail!("prompt embeddings must be [1, L, D] with matching data, got shape {shape:?} and {} values: make them with encode-prompt", data.len());
        }
        if shape[1] == 0 || shape[2] == 0 {
            bail!("prompt embeddings {shape:?} hold no token: the cross-attention needs at least one (encode-prompt writes 77)");
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!("prompt embeddings hold a non-finite value at {i}");
        }
        Ok(PromptEmbeds { data, shape })
    }

    /// Reads `prompt_embeds [1, L, D]` from a safetensors file (as `encode-prompt` writes it).
    pub fn from_file(path: &std::path::Path) -> Result<PromptEmbeds> {
        // A regular file of a sane size: `/dev/zero` or a stray video would be read whole.
        crate::weights::check_regular_file(path, "prompt embeddings")?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if size > MAX_EMBEDS_FILE {
            bail!("prompt embeddings {}: {size} bytes, more than a prompt's ({} at most): give a file encode-prompt wrote", path.display(), MAX_EMBEDS_FILE);
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
        let Ok(t) = st.tensor("prompt_embeds") else {
            let mut names = st.names();
            names.sort();
            let held = if names.is_empty() { "none".to_string() } else { crate::checkpoint::listed(names.iter().map(|n| format!("'{}'", crate::checkpoint::shown(n))), names.len()) };
            bail!("{}: no tensor 'prompt_embeds' (it holds {held}): give a file encode-prompt wrote", path.display());
        };
        let data: Vec<f32> = match t.dtype() {
            safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            safetensors::Dtype::F16 => t.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            safetensors::Dtype::BF16 => t.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            d => bail!("{}: prompt_embeds is {d:?}; it must be F32, F16 or BF16: make it with encode-prompt", path.display()),
        };
        PromptEmbeds::new(data, t.shape().to_vec()).with_context(|| format!("{}", path.display()))
    }
}

/// What the job does.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// DDIM steps (≥ 1).
    pub steps: usize,
    /// Classifier-free guidance scale; at 1 or less no guidance ([`JobOptions::cfg_halves`]).
    pub guidance: f32,
    /// Low-res noise level (also the UNet's class label), 0…350.
    pub noise_level: u32,
    /// Seeds all noise (latents, LR augmentation, rescheduling permutations).
    pub seed: u64,
    pub ilt: Ilt,
    /// Positive and negative prompt embeddings, each `[1, 77, D]`.
    pub positive: PromptEmbeds,
    pub negative: PromptEmbeds,
    /// YUV ↔ RGB matrix.
    pub matrix: MatrixChoice,
    /// `--frames START:END`: emit only these output frames (None: all).
    pub frames: Option<FrameRange>,
    /// `--tile`, `--tile-overlap`: spatial tiles of the UNet and the VAE.
    pub tiles: TileOptions,
    /// `--windows-per-call`: windows denoised together in one UNet call ([`groups`](crate::pipeline::groups)).
    pub windows_per_call: WindowsPerCall,
    /// The input's frame count where known before reading (a file, from its size): a call
    /// never holds more windows than the run has.
    pub input_frames: Option<usize>,
    /// Where the decoder multiplies f32 storage on f16 operands (`--f16-operands`), a chunk
    /// whose decode overflowed f16's range is decoded again with f32 operands (`auto`, the
    /// default), instead of stopping the job (`on`).
    pub redecode_overflow: bool,
}

impl JobOptions {
    /// The UNet's batch per window: 2, classifier-free guidance's pair [negative, positive],
    /// where the scale guides; 1, the positive prompt alone, at a scale of 1 or less. The released
    /// pipeline guides only above 1 (`do_classifier_free_guidance = guidance_scale > 1.0`) and
    /// otherwise runs the UNet on the positive prompt and takes its prediction as it is.
    pub fn cfg_halves(&self) -> usize {
        cfg_halves(self.guidance)
    }
}

/// The UNet's samples per window at a guidance scale ([`JobOptions::cfg_halves`]).
pub fn cfg_halves(guidance: f32) -> usize {
    if guidance > 1.0 {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_embeds_are_checked() {
        assert!(PromptEmbeds::new(vec![0.0; 6], vec![1, 2, 3]).is_ok());
        assert!(PromptEmbeds::new(vec![0.0; 6], vec![2, 1, 3]).is_err());
        assert!(PromptEmbeds::new(vec![0.0; 5], vec![1, 2, 3]).is_err());
        assert!(PromptEmbeds::new(vec![f32::NAN; 6], vec![1, 2, 3]).is_err());
        assert!(PromptEmbeds::new(vec![], vec![1, 0, 3]).unwrap_err().to_string().contains("no token"));
        // A [L, D] export (no batch axis) is told how to add it.
        assert!(PromptEmbeds::new(vec![0.5; 6], vec![2, 3]).unwrap_err().to_string().contains("t.unsqueeze(0)"));
        // BF16 files read; a wrong file lists at most 20 of its names.
        let dir = crate::testutil::scratch_dir("embeds");
        let bf16: Vec<u8> = [0.5f32, -2.0, 1.5, 0.25, 3.0, -1.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![1, 2, 3], &bf16).unwrap();
        let p = dir.join("bf16.safetensors");
        safetensors::serialize_to_file([("prompt_embeds", view)], None, &p).unwrap();
        assert_eq!(PromptEmbeds::from_file(&p).unwrap().data, vec![0.5, -2.0, 1.5, 0.25, 3.0, -1.0]);
        let names: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
        let one = [0u8; 4];
        let views: Vec<(&str, _)> = names.iter().map(|n| (n.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &one).unwrap())).collect();
        let p = dir.join("other.safetensors");
        safetensors::serialize_to_file(views, None, &p).unwrap();
        let e = PromptEmbeds::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("'t19', … and 10 more") && !e.contains("'t20'"), "{e}");
        // Only regular files are read: a device would be read without end.
        #[cfg(unix)]
        assert!(PromptEmbeds::from_file(std::path::Path::new("/dev/zero")).unwrap_err().to_string().contains("not a regular file"));
    }
}
