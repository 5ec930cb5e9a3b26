//! The job's two graphs as they are recorded: the sampler step (the UNet on the CFG pairs of
//! k windows, or on their positive samples without guidance, the DDIM step, the new latents
//! into the sample) and the decode chunk;
//! and the checks that the models and prompts make a job at all (`check_job_models`,
//! `check_decoded`). The engine ([`engine`](crate::pipeline::engine)) captures the step
//! through `record_step` and the decode through the same `forward` call as
//! `record_decode`, into its arena, and replays them; the memory plan
//! ([`memory_plan`](crate::pipeline::memory_plan)) and the tile choice
//! ([`tile_choice`](crate::pipeline::tile_choice)) record the very same graphs into a dry
//! arena to weigh a tile before anything is allocated, so what is weighed is what runs.

use anyhow::{bail, Result};

use crate::models::unet::UNetInputs;
use crate::gpu::arena::Arena;
use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::ops::sampler::{ddim_step_into, guided_ddim_step_into, scale_into, StepSlots};
use crate::pipeline::options::JobOptions;
use crate::pipeline::tiles::SCALE;
use crate::pipeline::windows::WINDOW;
use crate::step_values::{Scalar, StepValues};
use crate::{DType, Gpu, Recorder, Tensor};

/// Latent channels of the SD×4 family.
pub(crate) const LATENT_CHANNELS: usize = 4;
/// Channels of the (RGB) low-res conditioning image.
pub(crate) const LR_CHANNELS: usize = 3;
/// Frames per VAE decode chunk (as released).
pub const DECODE_CHUNK: usize = 4;

/// Whether the UNet and the prompts make a DiffVSR job: the UNet takes the latents and the LR
/// image (7 channels) and gives latents (4), and both prompts' embeddings have its
/// cross-attention width and the same shape. Checked before anything is recorded, so that a
/// mismatch is named rather than met as a shape error deep in a graph.
pub(crate) fn check_job_models(unet: &VideoUNet, opts: &JobOptions) -> Result<()> {
    let c = &unet.config.base;
    if c.in_channels != LATENT_CHANNELS + LR_CHANNELS || c.out_channels != LATENT_CHANNELS {
        bail!(
            "the UNet has {} input and {} output channels; the DiffVSR sampler needs 7 and 4 (a unet_3d_config.json beside the checkpoints overrides the release's: correct it, or remove it)",
            c.in_channels,
            c.out_channels
        );
    }
    for (name, e) in [("prompt", &opts.positive), ("negative prompt", &opts.negative)] {
        if e.shape[2] != c.cross_attention_dim {
            bail!("{name} embeddings are {:?} but the UNet's cross_attention_dim is {}: they come from another text encoder", e.shape, c.cross_attention_dim);
        }
    }
    if opts.positive.shape != opts.negative.shape {
        bail!("prompt embeddings {:?} and negative prompt embeddings {:?} differ in shape", opts.positive.shape, opts.negative.shape);
    }
    check_noise_level(opts.noise_level, c.num_class_embeds, "its config")
}

/// The noise level is the UNet's class label: past its table of `rows` (from `config`, as the
/// message names it) the lookup would clamp to the last row (a kernel cannot refuse it), an
/// upscale conditioned on another level.
pub(crate) fn check_noise_level(level: u32, rows: Option<usize>, config: &str) -> Result<()> {
    match rows {
        Some(0) => bail!("this UNet has no noise-level embeddings (num_class_embeds 0 in {config}): the DiffVSR sampler needs them"),
        Some(n) if level as usize >= n => {
            bail!("--noise-level {level}: this UNet has noise-level embeddings for 0 to {} only (num_class_embeds {n} in {config}): give --noise-level {} or less", n - 1, n - 1)
        }
        _ => Ok(()),
    }
}

/// Whether the decoder gave `out` for the latents of shape `input` (`[1, 4, 4, h, w]`) as the
/// pipeline needs: their RGB at ×4 (`[1, 3, 4, 4h, 4w]`).
pub(crate) fn check_decoded(out: &[usize], input: &[usize]) -> Result<()> {
    let want = [1, LR_CHANNELS, DECODE_CHUNK, SCALE * input[3], SCALE * input[4]];
    if out != want {
        bail!(
            "the VAE decoder gives {out:?} for latents {input:?}; the pipeline needs a ×4 decoder ({want:?}) (a vae_config.json beside the checkpoints overrides the release's: correct it, or remove it)"
        );
    }
    Ok(())
}

/// The sampler step's inputs for `k` windows per UNet call (batch 2k under guidance: the
/// windows' negative halves, then their positive halves, as the guided step reads a CFG pair;
/// batch k without: the positive prompt alone, [`JobOptions::cfg_halves`]), kept outside the
/// graph's arena: the caller writes them between replays.
pub(crate) struct StepInputs {
    /// `[halves·k, 7, 8, h, w]` in the UNet's dtype: batch g < k is window slot g's negative
    /// half, k + g its positive half (without guidance, g is the window's one sample, for the
    /// positive prompt); channels 0–3 latents, 4–6 noisy LR.
    pub sample: Tensor,
    /// `[k, 4, 8, h, w]`, f32: the latents between steps (spec §2.5: the release steps fp16
    /// latents; f32 is the harmless improvement), copied into each half of `sample`.
    pub latents: Tensor,
    /// `[halves·k]`.
    pub timestep: Tensor,
    /// `[halves·k]`: the noise level.
    labels: Tensor,
    /// `[halves·k, 77, d]`: k negative prompts, then k positive ones (the sample's batch order);
    /// k positive ones without guidance.
    context: Tensor,
    /// 2 (the CFG pair) or 1 ([`JobOptions::cfg_halves`]).
    pub halves: usize,
}

impl StepInputs {
    /// On the GPU, for a step that runs.
    pub fn new(gpu: &Gpu, opts: &JobOptions, (th, tw): (usize, usize), k: usize, dtype: DType) -> Result<StepInputs> {
        let (l, d, halves) = (opts.positive.shape[1], opts.positive.shape[2], opts.cfg_halves());
        let prompts = if halves == 2 { vec![&opts.negative, &opts.positive] } else { vec![&opts.positive] };
        let ctx: Vec<f32> = prompts.iter().flat_map(|e| std::iter::repeat_n(e.data.as_slice(), k).flatten().copied()).collect();
        let b = halves * k;
        Ok(StepInputs {
            sample: Tensor::empty(gpu, &[b, LATENT_CHANNELS + LR_CHANNELS, WINDOW, th, tw], dtype)?,
            latents: Tensor::empty(gpu, &[k, LATENT_CHANNELS, WINDOW, th, tw], DType::F32)?,
            timestep: Tensor::from_f32(gpu, &vec![0.0; b], &[b], DType::F32)?,
            labels: Tensor::from_u32(gpu, &vec![opts.noise_level; b], &[b])?,
            context: Tensor::from_f32(gpu, &ctx, &[b, l, d], dtype)?,
            halves,
        })
    }

    /// Of the same shapes and never allocated, for a step that is only planned: tensors of a
    /// capture that never ends, which a graph recorded with them binds as outside its arena.
    pub fn placeholders(gpu: &Gpu, opts: &JobOptions, (th, tw): (usize, usize), k: usize, dtype: DType) -> Result<StepInputs> {
        let (l, d, halves) = (opts.positive.shape[1], opts.positive.shape[2], opts.cfg_halves());
        let b = halves * k;
        let never = Recorder::capture(gpu);
        Ok(StepInputs {
            sample: never.empty(&[b, LATENT_CHANNELS + LR_CHANNELS, WINDOW, th, tw], dtype)?,
            latents: never.empty(&[k, LATENT_CHANNELS, WINDOW, th, tw], DType::F32)?,
            timestep: never.empty(&[b], DType::F32)?,
            labels: never.empty(&[b], DType::U32)?,
            context: never.empty(&[b, l, d], dtype)?,
            halves,
        })
    }

    /// The sample's batch elements of window slot `slot`: its halves, negative first.
    pub fn halves_of(&self, slot: usize) -> impl Iterator<Item = usize> {
        let k = self.latents.shape()[0];
        (0..self.halves).map(move |h| h * k + slot)
    }
}

/// Records the sampler step on `inputs`: the UNet on the k CFG pairs, then guidance and DDIM
/// (η = 0, v-prediction) in one pass, in place on the f32 latents — x ← a·x + b·(v_u + g·(v_c −
/// v_u)) with a, b, g the per-step scalars of `values` — and x into both CFG halves of the sample.
/// Without guidance (one half), the UNet on the k positive samples and x ← a·x + b·v.
pub(crate) fn record_step(rec: &mut Recorder, unet: &VideoUNet, inputs: &StepInputs, values: &StepValues) -> Result<()> {
    let StepInputs { sample, latents, timestep, labels, context, halves } = inputs;
    let pair = *halves == 2;
    let v = unet.forward(rec, &UNetInputs { sample, timestep, class_labels: Some(labels), encoder_hidden_states: context, cfg_pair: pair })?;
    let [a, b, g] = StepSlots::scalars(values)?;
    if pair {
        guided_ddim_step_into(rec, latents, &v, &a, &b, &g, latents)?;
    } else {
        ddim_step_into(rec, latents, &v, &a, &b, latents)?;
    }
    load_latents(rec, inputs)
}

/// The f32 latents `[k, 4, 8, h, w]` into the latent channels of each half of each window slot
/// of the sample (`[halves·k, 7, 8, h, w]`, in the UNet's dtype): one copy per batch element,
/// since a view spans whole leading batch elements only.
fn load_latents(rec: &mut Recorder, inputs: &StepInputs) -> Result<()> {
    for slot in 0..inputs.latents.shape()[0] {
        let z = inputs.latents.narrow(0, slot, 1)?;
        for half in inputs.halves_of(slot) {
            scale_into(rec, &z, &Scalar::Const(1.0), &inputs.sample.narrow(0, half, 1)?.narrow(1, 0, LATENT_CHANNELS)?)?;
        }
    }
    Ok(())
}

/// Records the decode chunk at a `th`×`tw` latent tile on a placeholder input (outside the
/// arena, as the engine's is); returns the input's bytes.
pub(crate) fn record_decode(rec: &mut Recorder, vae: &Te3dVaeDecoder, (th, tw): (usize, usize), dtype: DType) -> Result<u64> {
    let never = Recorder::capture(rec.gpu());
    let input = never.empty(&[1, LATENT_CHANNELS, DECODE_CHUNK, th, tw], dtype)?;
    let out = vae.forward(rec, &input)?;
    check_decoded(out.shape(), input.shape())?;
    Ok(input.bytes())
}

/// The engine's graphs as `Engine::tiled` captures them, in its order (the decode chunk at
/// VAE tile `vt`, then the sampler steps at UNet tile `ut` from `k` windows per call down to
/// 1), recorded into `arena` on placeholder inputs and planned, never run: in a dry arena
/// ([`Arena::dry`]), what they need. Kernels the tuner has not met are timed as they are
/// recorded, unless the caller has paused it ([`Tuner::untimed`](crate::gpu::tune::Tuner::untimed)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_graphs(gpu: &Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, ut: Option<(usize, usize)>, vt: Option<(usize, usize)>, k: usize, (unet_dtype, vae_dtype): (DType, DType), arena: &Arena) -> Result<()> {
    if let Some(t) = vt {
        let mut rec = Recorder::capture_in(gpu, arena);
        record_decode(&mut rec, vae, t, vae_dtype)?;
        rec.into_plan();
    }
    if let Some(t) = ut {
        let values = StepValues::new(gpu, &StepSlots::NAMES)?;
        for g in (1..=k).rev() {
            let inputs = StepInputs::placeholders(gpu, opts, t, g, unet_dtype)?;
            let mut rec = Recorder::capture_in(gpu, arena);
            record_step(&mut rec, unet, &inputs, &values)?;
            rec.into_plan();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::options::PromptEmbeds;
    use crate::pipeline::test_models::{test_options, tiny_models};
    use crate::testutil::{test_gpu, Rng};

    /// Models and prompts that make no job are named, before anything is recorded.
    #[test]
    fn mismatched_models_and_prompts_are_named() {
        let gpu = test_gpu();
        let (unet, _) = tiny_models(&gpu, DType::F32);
        let d = unet.config.base.cross_attention_dim;
        let mut rng = Rng::new(1);
        let opts = test_options(d, &mut rng, 1, 1);
        check_job_models(&unet, &opts).unwrap();
        let other = test_options(d + 8, &mut rng, 1, 1);
        let err = check_job_models(&unet, &other).unwrap_err().to_string();
        assert!(err.contains("prompt embeddings are [1, 77,") && err.contains("cross_attention_dim") && err.contains("another text encoder"), "{err}");
        let short = JobOptions { negative: PromptEmbeds::new(rng.normals(70 * d, 1.0), vec![1, 70, d]).unwrap(), ..opts };
        assert!(check_job_models(&unet, &short).unwrap_err().to_string().contains("differ in shape"));
        // A noise level past the UNet's class table (1000 rows in the tiny config).
        let rows = unet.config.base.num_class_embeds.unwrap();
        check_job_models(&unet, &JobOptions { noise_level: rows as u32 - 1, ..test_options(d, &mut rng, 1, 1) }).unwrap();
        let err = check_job_models(&unet, &JobOptions { noise_level: rows as u32, ..test_options(d, &mut rng, 1, 1) }).unwrap_err().to_string();
        assert!(err.contains(&format!("for 0 to {} only", rows - 1)) && err.contains("give --noise-level"), "{err}");
        // An override config beside the checkpoints is read before anything loads (`upscale`,
        // `--plan`), and named.
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/diffvsr_unet/config.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["num_class_embeds"] = 10.into();
        let p = crate::testutil::scratch_dir("noise-level").join("unet_3d_config.json");
        std::fs::write(&p, json.to_string()).unwrap();
        crate::pipeline::upscale::noise_level_fits(&p, 9).unwrap();
        let err = crate::pipeline::upscale::noise_level_fits(&p, 10).unwrap_err().to_string();
        assert!(err.contains("0 to 9 only") && err.contains(&p.display().to_string()), "{err}");
        check_decoded(&[1, 3, 4, 32, 40], &[1, 4, 4, 8, 10]).unwrap();
        let err = check_decoded(&[1, 3, 4, 16, 20], &[1, 4, 4, 8, 10]).unwrap_err().to_string();
        assert!(err.contains("×4 decoder ([1, 3, 4, 32, 40])"), "{err}");
    }

    /// At a guidance scale of 1 or less the released pipeline guides nothing: it runs the UNet
    /// on the positive prompt alone and takes its prediction, whatever the negative prompt and
    /// the scale. So the step's batch is one per window, not a pair, and a window's latents at
    /// guidance 1, 0.5 and −2 are those of a guided run whose negative prompt is the positive
    /// one (where every scale gives v_c); guidance 1.5's are not.
    #[test]
    fn guidance_at_or_below_one_is_the_positive_prompt_alone() {
        use crate::pipeline::engine::denoise_and_decode_windows;
        let gpu = test_gpu();
        let dt = DType::F32;
        let (unet, vae) = tiny_models(&gpu, dt);
        let mut rng = Rng::new(crate::testutil::fresh_seed());
        let opts = test_options(unet.config.base.cross_attention_dim, &mut rng, 7, 1);
        let (h, w) = (8, 8);
        // One window's sample, both CFG halves alike, as the job builds it.
        let half = rng.normals((LATENT_CHANNELS + LR_CHANNELS) * WINDOW * h * w, 1.0);
        let sample = [half.clone(), half].concat();
        let run = |o: JobOptions| denoise_and_decode_windows(&gpu, &unet, &vae, &o, h, w, 1, dt, dt, std::slice::from_ref(&sample), false).unwrap().0;
        let batch = |g: f32| StepInputs::placeholders(&gpu, &JobOptions { guidance: g, ..opts.clone() }, (h, w), 2, dt).unwrap().sample.shape()[0];
        assert_eq!((batch(1.0), batch(0.5), batch(1.5)), (2, 2, 4), "the batch of two windows");
        let alone = run(JobOptions { guidance: 3.0, negative: opts.positive.clone(), ..opts.clone() });
        for g in [1.0, 0.5, -2.0] {
            assert!(run(JobOptions { guidance: g, ..opts.clone() }) == alone, "guidance {g}");
        }
        assert!(run(JobOptions { guidance: 1.5, ..opts }) != alone, "guidance 1.5 guides");
    }
}
