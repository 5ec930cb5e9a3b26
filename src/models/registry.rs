//! The model registry: every model the engine runs, by name (`--model`), with its loading
//! (strict: every tensor named, shaped and used), default dtype, and inputs. `forward`,
//! the golden tests and the pipeline build models through here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::clip_text::{ClipTextConfig, ClipTextModel};
use super::release;
use super::sd_unet::{UNet2D, UNetInputs};
use super::sd_vae::VaeDecoder;
use super::video_unet::{VideoUNet, VideoUNetInputs};
use super::video_vae::{Te3dVaeDecoder, UavVae3dDecoder, VideoVaeConfig};
use super::Loader;
use crate::config::{UNet2DConfig, VaeConfig, VideoUNetConfig, VideoUNetKind};
use crate::weights::WeightStore;
use crate::{DType, Gpu, Recorder, Tensor};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Unet,
    VaeDecoder,
    TextEncoder,
    /// DiffVSR `UNet3DVSRModel`.
    DiffvsrUnet,
    /// Upscale-A-Video `UNetVideoModel`.
    UavUnet,
    /// DiffVSR's TE-3DVAE decoder.
    Te3dVaeDecoder,
    /// Upscale-A-Video's `vae_3d` decoder.
    UavVae3dDecoder,
}

impl std::str::FromStr for ModelKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "unet" => Ok(ModelKind::Unet),
            "vae-decoder" => Ok(ModelKind::VaeDecoder),
            "text-encoder" => Ok(ModelKind::TextEncoder),
            "diffvsr-unet" => Ok(ModelKind::DiffvsrUnet),
            "uav-unet" => Ok(ModelKind::UavUnet),
            "te3dvae-decoder" => Ok(ModelKind::Te3dVaeDecoder),
            "uav-vae3d-decoder" => Ok(ModelKind::UavVae3dDecoder),
            o => bail!("unknown model '{o}': use unet, vae-decoder, text-encoder, diffvsr-unet, uav-unet, te3dvae-decoder or uav-vae3d-decoder"),
        }
    }
}

impl std::fmt::Display for ModelKind {
    /// The name `--model` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Unet => "unet",
            ModelKind::VaeDecoder => "vae-decoder",
            ModelKind::TextEncoder => "text-encoder",
            ModelKind::DiffvsrUnet => "diffvsr-unet",
            ModelKind::UavUnet => "uav-unet",
            ModelKind::Te3dVaeDecoder => "te3dvae-decoder",
            ModelKind::UavVae3dDecoder => "uav-vae3d-decoder",
        })
    }
}

/// The model, loaded and ready to capture a forward.
// One model value per load, moved once: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Unet(Box<UNet2D>),
    VaeDecoder(VaeDecoder),
    TextEncoder(ClipTextModel),
    VideoUnet(Box<VideoUNet>),
    Te3dVaeDecoder(Te3dVaeDecoder),
    UavVae3dDecoder(UavVae3dDecoder),
}

/// The default storage dtype: f16 for the UNet where the adapter has it; f32 for the VAE
/// decoder (it overflows in f16, which is why diffusers upcasts it).
pub fn default_dtype(gpu: &Gpu, model: ModelKind) -> DType {
    match model {
        ModelKind::Unet | ModelKind::DiffvsrUnet | ModelKind::UavUnet if gpu.has_f16() => DType::F16,
        _ => DType::F32,
    }
}

/// Loads `kind` strictly from a weights file or folder (see [`load_model_from`]).
pub fn load_model(gpu: &Gpu, kind: ModelKind, config: Option<&Path>, weights: &Path, dtype: DType) -> Result<Model> {
    // A text_encoder/ folder may hold f32 and f16 copies of the same weights: take one.
    let weights = if kind == ModelKind::TextEncoder && weights.is_dir() { release::text_encoder_weights(weights)? } else { weights.to_path_buf() };
    let weights = weights.as_path();
    let mut store = WeightStore::open(weights)?;
    load_model_from(gpu, kind, config, &mut store, dtype).with_context(|| format!("loading {}", weights.display()))
}

/// Builds `kind` from `config` (the built-in SD×4 config when `None`) with weights from `store`,
/// failing on any missing, misshapen or unexpected tensor.
pub fn load_model_from(gpu: &Gpu, kind: ModelKind, config: Option<&Path>, store: &mut WeightStore, dtype: DType) -> Result<Model> {
    gpu.require_dtype(dtype)?;
    // What a config file says is checked as the model loads: its errors name the file (a
    // release folder's override is read without being asked for).
    let named = |e: anyhow::Error| match config {
        Some(p) => e.context(format!("with the config {}", p.display())),
        None => e,
    };
    let mut l = Loader::new(gpu, store, dtype);
    let m = match kind {
        ModelKind::Unet => {
            let c = match config {
                Some(p) => UNet2DConfig::from_file(p)?,
                None => UNet2DConfig::default(),
            };
            Model::Unet(Box::new(UNet2D::load(&mut l, &c).map_err(named)?))
        }
        ModelKind::VaeDecoder => {
            let c = match config {
                Some(p) => VaeConfig::from_file(p)?,
                None => VaeConfig::default(),
            };
            Model::VaeDecoder(VaeDecoder::load(&mut l, &c).map_err(named)?)
        }
        ModelKind::TextEncoder => {
            let c = match config {
                Some(p) => ClipTextConfig::from_file(p)?,
                None => ClipTextConfig::default(),
            };
            Model::TextEncoder(ClipTextModel::load(&mut l, &c).map_err(named)?)
        }
        ModelKind::DiffvsrUnet | ModelKind::UavUnet => {
            let vk = if kind == ModelKind::DiffvsrUnet { VideoUNetKind::DiffVsr } else { VideoUNetKind::Uav };
            let c = match config {
                Some(p) => VideoUNetConfig::from_file(p, vk)?,
                None => VideoUNetConfig::official(vk),
            };
            let is = c.kind().map_err(named)?;
            if is != vk {
                return Err(named(anyhow::anyhow!("the config describes the {is} UNet, but the {vk} UNet is being loaded: give that model's config")));
            }
            Model::VideoUnet(Box::new(VideoUNet::load(&mut l, &c).map_err(named)?))
        }
        ModelKind::Te3dVaeDecoder => {
            let c = match config {
                Some(p) => VideoVaeConfig::from_file(p)?,
                None => VideoVaeConfig::default(),
            };
            Model::Te3dVaeDecoder(Te3dVaeDecoder::load(&mut l, &c).map_err(named)?)
        }
        ModelKind::UavVae3dDecoder => {
            let c = match config {
                Some(p) => VideoVaeConfig::from_file(p)?,
                None => VideoVaeConfig::uav_vae3d(),
            };
            Model::UavVae3dDecoder(UavVae3dDecoder::load(&mut l, &c).map_err(named)?)
        }
    };
    store.finish().map_err(named)?;
    // Hand the load's freed temporaries (weights packed in f32 before a transform on the GPU)
    // back to the driver: the pool would otherwise keep them for activations that never ask.
    gpu.pool.trim();
    Ok(m)
}

/// Named input tensors of a forward, uploaded.
pub struct Inputs {
    pub tensors: Vec<(String, Tensor)>,
    /// Token ids `[batch, tokens]` on the host (the text encoder gathers its embeddings there).
    pub ids: Option<(Vec<u32>, usize)>,
    /// A UNet batch that is a CFG pair ([`UNetInputs::cfg_pair`]; see [`Inputs::into_cfg_pair`]).
    pub cfg_pair: bool,
}

impl Inputs {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t).with_context(|| format!("the inputs file has no tensor '{name}'"))
    }

    /// These UNet inputs as classifier-free guidance's pair (`forward --cfg-pair`): the UNet then
    /// shares the layers before the text enters between the two halves, as the sampler runs it.
    /// With `equalize` (synthesized inputs) the sample's second half becomes a copy of its first;
    /// otherwise (an inputs file) the halves must already be equal. Timesteps and class labels
    /// must be equal across the halves either way.
    pub fn into_cfg_pair(mut self, gpu: &Gpu, equalize: bool) -> Result<Inputs> {
        let sample = self.get("sample").context("--cfg-pair is for the UNets, whose inputs have a 'sample'")?;
        let b = sample.shape()[0];
        if !b.is_multiple_of(2) {
            bail!("--cfg-pair needs an even batch (a negative and a positive half), got {b}");
        }
        fn halves_differ<T: PartialEq>(v: &[T]) -> bool {
            v[..v.len() / 2] != v[v.len() / 2..]
        }
        let mut v = sample.to_f32(gpu)?;
        if equalize {
            let half = v.len() / 2;
            let (first, second) = v.split_at_mut(half);
            second.copy_from_slice(first);
            sample.write_f32(gpu, &v)?;
        } else if halves_differ(&v) {
            bail!("--cfg-pair: the two halves of 'sample' differ; a CFG pair has the same sample for its negative and positive prompt (drop --cfg-pair)");
        }
        if halves_differ(&self.get("timestep")?.to_f32(gpu)?) {
            bail!("--cfg-pair: the two halves of 'timestep' differ");
        }
        if let Ok(labels) = self.get("class_labels") {
            if halves_differ(&labels.to_u32(gpu)?) {
                bail!("--cfg-pair: the two halves of 'class_labels' differ");
            }
        }
        self.cfg_pair = true;
        Ok(self)
    }

    /// Refuses class labels (the noise level) past the UNet's table of `rows`: the lookup on the
    /// GPU would clamp them to its last row, a forward conditioned on another level.
    pub fn check_class_labels(&self, gpu: &Gpu, rows: Option<usize>) -> Result<()> {
        let (Ok(labels), Some(rows)) = (self.get("class_labels"), rows) else { return Ok(()) };
        if let Some(&bad) = labels.to_u32(gpu)?.iter().find(|&&l| l as usize >= rows) {
            bail!("'class_labels' holds {bad}, but this UNet has class (noise-level) embeddings for 0 to {} only (num_class_embeds {rows})", rows.saturating_sub(1));
        }
        Ok(())
    }
}

/// Seeded random inputs of batch `b` at latent size `h`×`w` for `model` (for benchmarks and
/// full-size checks): timesteps 981, noise level 20.
pub fn random_inputs(gpu: &Gpu, model: &Model, (b, h, w): (usize, usize, usize), dtype: DType) -> Result<Inputs> {
    let mut rng = crate::rng::Rng::new(7);
    let mut t = |name: &str, shape: &[usize]| -> Result<(String, Tensor)> {
        let n = shape.iter().product();
        Ok((name.to_string(), Tensor::from_f32(gpu, &rng.normals(n, 1.0), shape, dtype)?))
    };
    let tensors = match model {
        Model::Unet(u) => {
            let c = &u.config;
            vec![
                t("sample", &[b, c.in_channels, h, w])?,
                ("timestep".into(), Tensor::from_f32(gpu, &vec![981.0; b], &[b], DType::F32)?),
                ("class_labels".into(), Tensor::from_u32(gpu, &vec![20; b], &[b])?),
                t("encoder_hidden_states", &[b, 77, c.cross_attention_dim])?,
            ]
        }
        Model::VaeDecoder(v) => vec![t("latents", &[b, v.config.latent_channels, h, w])?],
        Model::TextEncoder(m) => {
            // B sequences of H·W tokens (2x77x1: the CFG pair of prompts).
            let ids = (0..b * h * w).map(|_| rng.below(m.config.vocab_size as u32)).collect();
            return Ok(Inputs { tensors: Vec::new(), ids: Some((ids, b)), cfg_pair: false });
        }
        Model::VideoUnet(u) => {
            // A window of 8 frames.
            let c = &u.config.base;
            vec![
                t("sample", &[b, c.in_channels, 8, h, w])?,
                ("timestep".into(), Tensor::from_f32(gpu, &vec![981.0; b], &[b], DType::F32)?),
                ("class_labels".into(), Tensor::from_u32(gpu, &vec![20; b], &[b])?),
                t("encoder_hidden_states", &[b, 77, c.cross_attention_dim])?,
            ]
        }
        // One decode chunk of the official pipelines: 4 frames (DiffVSR), 3 frames (UAV).
        Model::Te3dVaeDecoder(v) => vec![t("latents", &[b, v.config.latent_channels, 4, h, w])?],
        Model::UavVae3dDecoder(v) => vec![t("latents", &[b, v.config.latent_channels, 3, h, w])?],
    };
    Ok(Inputs { tensors, ids: None, cfg_pair: false })
}

/// Reads and uploads the inputs `kind` needs from a safetensors file.
///
/// Inputs are safetensors only (a PyTorch checkpoint may hold expanded views that are tiny on
/// disk and huge in memory), must be regular files (a FIFO would block), and every input's size
/// and frame count is checked against the GPU's binding limit and the model before anything is
/// allocated for it.
pub fn load_inputs(gpu: &Gpu, kind: ModelKind, path: &Path, dtype: DType) -> Result<Inputs> {
    crate::weights::check_regular_file(path, "inputs file")?;
    let mut head = Vec::with_capacity(512);
    {
        use std::io::Read;
        let f = std::fs::File::open(path).with_context(|| format!("cannot open inputs file {}", path.display()))?;
        f.take(512).read_to_end(&mut head).with_context(|| format!("cannot read inputs file {}", path.display()))?;
    }
    if crate::checkpoint::sniff(&head) != crate::checkpoint::Format::Other {
        bail!(
            "inputs file {} is a PyTorch checkpoint: --inputs takes safetensors only (save the inputs with safetensors.torch.save_file, \
             or 'diffvsr-wgpu convert' them)",
            path.display()
        );
    }
    let mut store = WeightStore::open(path)?;
    let limit = gpu.max_binding();
    let check = |name: &str, shape: &[usize]| -> Result<()> {
        let what = || format!("input '{name}' {shape:?} in {}", path.display());
        if shape.contains(&0) {
            bail!("{}: an axis of size 0 (every axis, frames included, must hold at least one element)", what());
        }
        let bytes = shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64)).filter(|&b| b <= limit);
        if bytes.is_none() {
            bail!("{}: larger than this GPU can bind ({} per tensor): use fewer frames or a smaller size", what(), crate::gpu::human_bytes(limit));
        }
        let max_f = crate::ops::temporal_attention::MAX_FRAMES;
        if matches!(kind, ModelKind::DiffvsrUnet | ModelKind::UavUnet | ModelKind::Te3dVaeDecoder) && shape.len() == 5 && shape[2] > max_f {
            bail!("{}: {} frames; the model takes 1 to {max_f} frames per window", what(), shape[2]);
        }
        Ok(())
    };
    if kind == ModelKind::TextEncoder {
        let name = "input_ids";
        let shape = store.shape(name).with_context(|| format!("inputs file {} has no tensor '{name}'", path.display()))?;
        check(name, &shape)?;
        if shape.len() != 2 {
            bail!("'{name}' must be [batch, tokens], found {shape:?}");
        }
        let ids = store
            .take(name, &shape)?
            .iter()
            .map(|&x| if x >= 0.0 && x.fract() == 0.0 { Ok(x as u32) } else { bail!("'{name}' must hold non-negative integers, found {x}") })
            .collect::<Result<_>>()?;
        return Ok(Inputs { tensors: Vec::new(), ids: Some((ids, shape[0])), cfg_pair: false });
    }
    let mut tensors = Vec::new();
    let mut take = |name: &str, as_dtype: Option<DType>, ids: bool| -> Result<()> {
        let shape = store.shape(name).with_context(|| format!("inputs file {} has no tensor '{name}'", path.display()))?;
        check(name, &shape)?;
        let v = store.take(name, &shape)?;
        let t = if ids {
            let ids: Vec<u32> = v
                .iter()
                .map(|&x| if x >= 0.0 && x.fract() == 0.0 { Ok(x as u32) } else { bail!("'{name}' must hold non-negative integers, found {x}") })
                .collect::<Result<_>>()?;
            Tensor::from_u32(gpu, &ids, &shape)?
        } else {
            Tensor::from_f32(gpu, &v, &shape, as_dtype.unwrap_or(dtype))?
        };
        tensors.push((name.to_string(), t));
        Ok(())
    };
    match kind {
        ModelKind::Unet | ModelKind::DiffvsrUnet | ModelKind::UavUnet => {
            take("sample", None, false)?;
            take("timestep", Some(DType::F32), false)?;
            let has_labels = take("class_labels", None, true);
            if let Err(e) = has_labels {
                if !e.to_string().contains("has no tensor") {
                    return Err(e);
                }
            }
            take("encoder_hidden_states", None, false)?;
        }
        ModelKind::VaeDecoder | ModelKind::Te3dVaeDecoder | ModelKind::UavVae3dDecoder => take("latents", None, false)?,
        ModelKind::TextEncoder => unreachable!("handled above"),
    }
    Ok(Inputs { tensors, ids: None, cfg_pair: false })
}

impl Model {
    /// Rows of the UNet's class (noise-level) embedding table, where it has one.
    pub fn class_embeds(&self) -> Option<usize> {
        match self {
            Model::Unet(u) => u.config.num_class_embeds,
            Model::VideoUnet(u) => u.config.base.num_class_embeds,
            _ => None,
        }
    }

    /// Records one forward of the model on `inp`; returns the output (PyTorch layout).
    /// Intermediates are tapped (see [`Recorder::tap`]).
    pub fn forward(&self, rec: &mut Recorder, inp: &Inputs) -> Result<Tensor> {
        match self {
            Model::Unet(u) => {
                let sample = inp.get("sample")?;
                let timestep = inp.get("timestep")?;
                let class_labels = inp.get("class_labels").ok();
                let ehs = inp.get("encoder_hidden_states")?;
                let b = sample.shape()[0];
                if timestep.numel() != b {
                    bail!("timestep has {} values for a batch of {b}", timestep.numel());
                }
                let timestep = timestep.reshape(&[b])?;
                u.forward(rec, &UNetInputs { sample, timestep: &timestep, class_labels, encoder_hidden_states: ehs, cfg_pair: inp.cfg_pair })
            }
            Model::VaeDecoder(v) => v.forward(rec, inp.get("latents")?),
            Model::TextEncoder(m) => {
                let (ids, batch) = inp.ids.as_ref().context("the text encoder's inputs need 'input_ids'")?;
                m.forward(rec, ids, *batch)
            }
            Model::VideoUnet(u) => {
                let sample = inp.get("sample")?;
                let b = sample.shape()[0];
                let timestep = inp.get("timestep")?;
                if timestep.numel() != b {
                    bail!("timestep has {} values for a batch of {b}", timestep.numel());
                }
                let timestep = timestep.reshape(&[b])?;
                let vi = VideoUNetInputs {
                    sample,
                    timestep: &timestep,
                    class_labels: inp.get("class_labels").ok(),
                    encoder_hidden_states: inp.get("encoder_hidden_states")?,
                    cfg_pair: inp.cfg_pair,
                };
                u.forward(rec, &vi)
            }
            Model::Te3dVaeDecoder(v) => v.forward(rec, inp.get("latents")?),
            Model::UavVae3dDecoder(v) => v.forward(rec, inp.get("latents")?),
        }
    }
}

/// Where `model`'s weights (and diffusers config, if any) are in the release that
/// `diffvsr-wgpu fetch-weights` put in the Hugging Face cache; an error saying what to run when
/// they are not there.
pub fn fetched_weights(model: ModelKind) -> Result<(PathBuf, Option<PathBuf>)> {
    if matches!(model, ModelKind::UavUnet | ModelKind::UavVae3dDecoder) {
        bail!(
            "Upscale-A-Video's weights are only on Google Drive: download them by hand (see README, \"Getting the weights\"), then pass --weights"
        );
    }
    release_weights(&crate::fetch::default_weights_dir()?, model)
}

/// Where `model`'s weights (and config override, if any) are in a release folder `dir`.
pub fn release_weights(dir: &Path, model: ModelKind) -> Result<(PathBuf, Option<PathBuf>)> {
    Ok(match model {
        ModelKind::DiffvsrUnet => release::video_unet(dir),
        ModelKind::Te3dVaeDecoder => release::video_vae(dir),
        ModelKind::Unet => release::component(dir, "unet")?,
        ModelKind::VaeDecoder => release::component(dir, "vae")?,
        ModelKind::TextEncoder => release::text_encoder(dir),
        ModelKind::UavUnet | ModelKind::UavVae3dDecoder => bail!("Upscale-A-Video's weights are not part of the DiffVSR release: pass --weights"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uav_weights_are_not_fetched_and_the_error_says_so() {
        for m in [ModelKind::UavUnet, ModelKind::UavVae3dDecoder] {
            let e = fetched_weights(m).unwrap_err().to_string();
            assert!(e.contains("Google Drive") && e.contains("--weights"), "{e}");
        }
    }

    /// A config that parses but does not describe the model (a release folder's override is
    /// read unasked) is named in the error, with the weights the job then loads.
    #[test]
    fn a_config_that_does_not_fit_the_model_is_named() {
        let gpu = crate::testutil::test_gpu();
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let sd_vae = data.join("sdx4/vae_config.json");
        let err = |r: Result<Model>| format!("{:#}", r.err().expect("the load fails"));
        let e = err(load_model(&gpu, ModelKind::Te3dVaeDecoder, Some(&sd_vae), &data.join("te3dvae/weights.pt"), DType::F32));
        assert!(e.contains("te3dvae/weights.pt") && e.contains("with the config") && e.contains("sdx4/vae_config.json"), "{e}");
        // An Upscale-A-Video UNet's config where the DiffVSR UNet loads.
        let uav = data.join("uav_unet/config.json");
        let e = err(load_model(&gpu, ModelKind::DiffvsrUnet, Some(&uav), &data.join("diffvsr_unet/unet.pt"), DType::F32));
        assert!(e.contains("uav_unet/config.json") && e.contains("describes the Upscale-A-Video (UNetVideoModel) UNet, but the DiffVSR (UNet3DVSRModel) UNet is being loaded"), "{e}");
    }
}
