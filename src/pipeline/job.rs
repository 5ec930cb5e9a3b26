//! The upscaling job (issue 9): a y4m stream in, a y4m stream at 4× out, frame by frame.
//!
//! What it does, per spec §4.3 (the released pipeline) with this engine's seeded noise:
//!
//! * Reads frames as they arrive; each is converted to RGB in [−1, 1] on the GPU
//!   ([`ops::color`](crate::ops::color): chroma upsampling, matrix, range) and
//!   reflect-padded to a multiple of 8 ([`LatentPad`]: the SD×4 UNet's latent is the LR frame).
//! * Windows of 8 frames, stride 4 ([`windows`]); a window runs as soon as its frames are read
//!   (or the stream has ended and the tail is mirror-padded). With `--windows-per-call N`
//!   ([`groups`]), up to N windows run together, as one UNet call of batch 2N per step, once
//!   the last of them can run.
//! * Per window and tile, built on the GPU ([`Engine::load_sample`]): the initial latents from
//!   the Philox noise kernel (`ops::noise`, keyed by the seed, the absolute padded frame, so
//!   rescheduled as released, and the absolute pixel), and the LR frames with their noise
//!   augmentation (`ops::sampler::add_noise_into`); then one captured graph per job and group
//!   size (UNet on the CFG pair [negative, positive] of each window of the group; the
//!   guidance combine and the DDIM step in one kernel,
//!   `ops::sampler::guided_ddim_step_into`, on f32 latents whatever the UNet's dtype; the new
//!   latents into both batch elements), replayed every step with the timestep and the per-step
//!   scalars (a, b, guidance) written before the replay. Nothing is read back inside the step
//!   loop.
//! * Spatial tiles ([`tiles`](crate::pipeline::tiles), `--tile`): when the padded latent is
//!   larger than a tile, each window runs tile by tile, every tile through all DDIM steps (the
//!   step graph is captured once for the tile size; all tiles have that size). A tile's sample
//!   is cut from the whole frame's, so its noise is the whole-frame noise at those pixels
//!   (keyed by absolute position) and nothing depends on where tiles fall. One tile: the final
//!   latents stay on the GPU. Several: the tiles' final latents are read back once per tile and
//!   blended on the host with feathered weights summing to 1 ([`TilePlan::blend`]), not pasted
//!   as released (spec §4.3). `--tile auto`
//!   picks the tile per model from its largest tensor, measured on a small probe graph, and
//!   the adapter's binding limit, so the VAE decoder (at ×4 resolution) and the UNet may get
//!   different tiles.
//! * ILT fuse of the whole frame's final latents on the GPU, straight into the decoder's input
//!   ([`fuse_chunk_into`], ÷ the VAE's scaling factor folded into the weights), TE-3DVAE
//!   decode in chunks of 4 frames (one captured graph for the VAE tile size, replayed per chunk
//!   and tile; the tiles' ×4 pixels blended with the same plan's feathered weights recomputed
//!   at ×4), crop to 4W × 4H, then clamp and RGB → YUV in the input's chroma format, depth and
//!   range on the GPU. One tile covering the frame skips every cut and blend: the untiled job,
//!   byte for byte.
//! * Each output frame is written as soon as no later window can change it; input frames no
//!   later window needs are dropped, so memory is bounded by the window size.
//!
//! Not here yet: a GPU blend of the tiles (they are read back and blended on the host; the
//! untiled job reads back only decoded pixels). `--frames START:END` runs only the
//! windows touching the segment (see [`windows::segment_plan`]); `--plan` ([`plan`]) prints
//! what a run would do.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};

use crate::models::unet::UNetInputs;
use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::ops::concat::copy;
use crate::ops::layout::nfhwc_to_ncfhw;
use crate::ops::noise::{gaussian_noise, source_frames};
use crate::ops::sampler::{add_noise_into, guided_ddim_step_into, scale_into, StepSlots};
use crate::pipeline::chunks::{fuse_chunk_into, ChunkWeights};
use crate::pipeline::groups::{self, Grouping, WindowsPerCall};
use crate::pipeline::interrupt;
use crate::pipeline::noise::Stream;
pub use crate::pipeline::progress::Progress;
use crate::pipeline::scheduler::{Ddim, DdimStep, LowResNoise};
use crate::pipeline::tiles::{tile_for_binding, LatentPad, TileOptions, TilePlan, TileSize, BUFFER_HEADROOM, SCALE};
use crate::pipeline::windows::{self, FrameRange, Ilt, STRIDE, WINDOW};
use crate::step_values::{Scalar, StepValues};
use crate::ops::color;
use crate::video::color::{MatrixChoice, YuvParams};
use crate::video::y4m::{Frame, FrameFormat, Reader, Writer};
use crate::{DType, Gpu, Recorder, Tensor};

/// Latent channels of the SD×4 family.
const LATENT_CHANNELS: usize = 4;
/// Channels of the (RGB) low-res conditioning image.
const LR_CHANNELS: usize = 3;
/// Frames per VAE decode chunk (as released).
pub const DECODE_CHUNK: usize = 4;

/// Text embeddings `[1, L, D]` on the host (from the text encoder or a `--prompt-embeds` file).
#[derive(Clone, Debug)]
pub struct PromptEmbeds {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl PromptEmbeds {
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<PromptEmbeds> {
        if shape.len() != 3 || shape[0] != 1 || shape.iter().product::<usize>() != data.len() {
            bail!("prompt embeddings must be [1, L, D] with matching data, got shape {shape:?} and {} values", data.len());
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!("prompt embeddings hold a non-finite value at {i}");
        }
        Ok(PromptEmbeds { data, shape })
    }

    /// Reads `prompt_embeds [1, L, D]` from a safetensors file (as `encode-prompt` writes it).
    pub fn from_file(path: &std::path::Path) -> Result<PromptEmbeds> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
        let t = st.tensor("prompt_embeds").with_context(|| format!("{}: no tensor 'prompt_embeds'", path.display()))?;
        let data: Vec<f32> = match t.dtype() {
            safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            safetensors::Dtype::F16 => t.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            d => bail!("{}: prompt_embeds is {d:?}; expected F32 or F16", path.display()),
        };
        PromptEmbeds::new(data, t.shape().to_vec()).with_context(|| format!("{}", path.display()))
    }
}

/// What the job does.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// DDIM steps (≥ 1).
    pub steps: usize,
    /// Classifier-free guidance scale.
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
    /// `--windows-per-call`: windows denoised together in one UNet call ([`groups`]).
    pub windows_per_call: WindowsPerCall,
}

/// What the job did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobStats {
    pub frames_in: usize,
    pub frames_out: usize,
    pub windows: usize,
    /// `--frames` asked for frames past the end of the stream: the input's length (the segment
    /// was cut there).
    pub cut_at: Option<usize>,
    /// Most input frames held at once (bounded by the window size, not the clip length).
    pub max_frames_held: usize,
    /// GPU buffer bytes the device's pool created after the second group of windows (the second
    /// window at one window per UNet call): 0 when GPU memory is flat in the clip's length (from
    /// the third group on, every group reuses what an earlier one freed). A number, not a list
    /// per window, so the stats stay bounded too.
    pub gpu_bytes_created_late: u64,
    /// The spatial tiles the job ran (UNet and VAE), in words.
    pub tiles: String,
    /// Windows per UNet call, and why.
    pub windows_per_call: Grouping,
}

/// The spatial tiles of a job over the padded latent: the UNet's, the VAE's (in latent
/// pixels) and the VAE's ×4 in output pixels (same tiles, weights recomputed at that size).
#[derive(Clone, Debug)]
pub struct JobTiles {
    pub unet: TilePlan,
    pub vae: TilePlan,
    pub vae_px: TilePlan,
    /// `--tile auto`: the measured bytes per latent pixel of the UNet's and the VAE's largest
    /// tensors.
    pub measured: Option<(f64, f64)>,
}

impl JobTiles {
    /// One tile of the whole padded latent for both models (the untiled job).
    pub fn whole(ph: usize, pw: usize) -> JobTiles {
        JobTiles::new(TilePlan::new(ph, pw, ph.max(pw), 0).expect("one tile"), TilePlan::new(ph, pw, ph.max(pw), 0).expect("one tile"))
    }
    pub fn new(unet: TilePlan, vae: TilePlan) -> JobTiles {
        let vae_px = vae.scaled(SCALE);
        JobTiles { unet, vae, vae_px, measured: None }
    }
    /// In words, for the job's summary.
    pub fn summary(&self) -> String {
        format!("UNet {}; VAE {}", self.unet.summary(), self.vae.summary())
    }
}

/// Latent side of the probe graphs `--tile auto` measures (a multiple of 8; every activation
/// of both models scales with the tile's pixels, attention included: it is flash-style). Where
/// the probe itself exceeds the binding limit (a tiny simulated limit), 8 is tried.
const PROBE: usize = 16;

/// Picks the job's tiles over the `ph`×`pw` padded latent: `--tile N` for both models, or for
/// `--tile auto` the largest tile each model's biggest tensor allows under the adapter's binding
/// limit (and its buffer limit, after
/// [`BUFFER_HEADROOM`](crate::pipeline::tiles::BUFFER_HEADROOM)). The bytes per latent pixel
/// are measured, not assumed: both graphs are captured once at a 16×16 probe
/// latent (8×8 where that does not fit) and their largest tensors (arena activations, the
/// sample and the decode input) divided by its pixels (an upper bound: the few tensors that do
/// not grow with the tile only raise it). Where that bound asks for tiles, the whole frame's
/// graph is also recorded (never allocated) and its largest tensor checked exactly: one tile
/// when it fits.
#[allow(clippy::too_many_arguments)]
fn choose_tiles(gpu: &Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, ph: usize, pw: usize, unet_dtype: DType, vae_dtype: DType) -> Result<JobTiles> {
    opts.tiles.check().map_err(anyhow::Error::msg)?;
    let mut measured = None;
    let (ut, vt) = match opts.tiles.tile {
        TileSize::Fixed(n) => (n, n),
        TileSize::Auto => {
            let probe = match Engine::new(gpu, unet, vae, opts, PROBE, PROBE, unet_dtype, vae_dtype) {
                Ok(p) => p,
                Err(_) => Engine::new(gpu, unet, vae, opts, PROBE / 2, PROBE / 2, unet_dtype, vae_dtype).context("--tile auto: capturing the models at an 8x8 probe latent")?,
            };
            let px = {
                let (h, w) = probe.tiles.unet.tile_size();
                (h * w) as f64
            };
            let step = probe.step(1);
            let unet_px = step.graph.largest_tensor_bytes().max(step.sample.bytes()) as f64 / px;
            let vae_px = probe.vae_graph.largest_tensor_bytes().max(probe.vae_in.bytes()) as f64 / px;
            drop(probe);
            let (limit, buffer) = (gpu.max_binding(), gpu.limits.max_buffer_size);
            log::info!("--tile auto: largest tensor per latent pixel: UNet {unet_px:.0} B, VAE decoder {vae_px:.0} B; binding limit {limit} B, buffer limit {buffer} B");
            measured = Some((unet_px, vae_px));
            let pick = |what: &str, per_px: f64| {
                tile_for_binding(limit, buffer, per_px, ph, pw).map(|c| c.tile).map_err(|e| anyhow::anyhow!("--tile auto: the {what}'s largest tensor takes {per_px:.0} bytes per latent pixel: {e}"))
            };
            let (mut ut, mut vt) = (pick("UNet", unet_px)?, pick("VAE decoder", vae_px)?);
            // Where the probe's bound asks for tiles, the whole frame recorded exactly (nothing
            // allocated) may still fit: the TE-3DVAE splits an upsampling over the binding limit
            // into frame groups, which a small probe never needs.
            let fits = |largest: Result<u64>| largest.is_ok_and(|b| b <= limit.min((BUFFER_HEADROOM * buffer as f64) as u64));
            let whole = ph.max(pw);
            if ut < whole && fits(whole_frame_largest(gpu, |rec| unet_step_largest(rec, unet, opts, ph, pw, unet_dtype))) {
                ut = whole;
            }
            if vt < whole && fits(whole_frame_largest(gpu, |rec| vae_chunk_largest(rec, vae, ph, pw, vae_dtype))) {
                log::info!("--tile auto: the VAE decoder fits the whole frame once it splits its upsamplings");
                vt = whole;
            }
            (ut, vt)
        }
    };
    let plan = |t: usize| opts.tiles.plan(ph, pw, t).map_err(anyhow::Error::msg);
    Ok(JobTiles { measured, ..JobTiles::new(plan(ut)?, plan(vt)?) })
}

/// The largest tensor `record` plans in a capture that is never allocated or run.
fn whole_frame_largest(gpu: &Gpu, record: impl FnOnce(&mut Recorder) -> Result<()>) -> Result<u64> {
    let mut rec = Recorder::capture(gpu);
    record(&mut rec)?;
    Ok(rec.planned_largest())
}

/// Records the UNet's forward on one window's CFG pair at `ph`×`pw` (inputs planned too).
fn unet_step_largest(rec: &mut Recorder, unet: &VideoUNet, opts: &JobOptions, ph: usize, pw: usize, dtype: DType) -> Result<()> {
    let (l, d) = (opts.positive.shape[1], opts.positive.shape[2]);
    let sample = rec.empty(&[2, LATENT_CHANNELS + LR_CHANNELS, WINDOW, ph, pw], dtype)?;
    let ctx = rec.empty(&[2, l, d], dtype)?;
    let timestep = rec.empty(&[2], DType::F32)?;
    let labels = rec.empty(&[2], DType::U32)?;
    unet.forward(rec, &UNetInputs { sample: &sample, timestep: &timestep, class_labels: Some(&labels), encoder_hidden_states: &ctx })?;
    Ok(())
}

/// Records the VAE decoder's forward on one chunk at `ph`×`pw` (its input planned too).
fn vae_chunk_largest(rec: &mut Recorder, vae: &Te3dVaeDecoder, ph: usize, pw: usize, dtype: DType) -> Result<()> {
    let x = rec.empty(&[1, LATENT_CHANNELS, DECODE_CHUNK, ph, pw], dtype)?;
    vae.forward(rec, &x)?;
    Ok(())
}

/// What a window's noise is keyed by: the seed, and per frame of the window the absolute padded
/// frame whose noise it takes (`ops::noise::source_frames`: rescheduled for the initial
/// latents, the frame itself for the LR augmentation), as u32 tables on the GPU; and the LR
/// augmentation's (√ᾱ, √(1−ᾱ)).
struct WindowNoise {
    seed: u64,
    latent_frames: Tensor,
    lr_frames: Tensor,
    lr_coeffs: [f64; 2],
}

impl WindowNoise {
    /// The window starting at padded frame `start`.
    fn new(gpu: &Gpu, seed: u64, start: usize, lr_coeffs: [f64; 2]) -> Result<WindowNoise> {
        let frames = start as u64..(start + WINDOW) as u64;
        let table = |stream| -> Result<Tensor> { Tensor::from_u32(gpu, &source_frames(seed, stream, frames.clone())?, &[WINDOW]) };
        Ok(WindowNoise { seed, latent_frames: table(Stream::Latent)?, lr_frames: table(Stream::LowRes)?, lr_coeffs })
    }
}

/// One captured sampler step for `k` windows in one UNet call (batch 2k: the windows'
/// negative halves, then their positive halves, as the guided step reads a CFG pair).
struct StepGraph {
    /// `[2k, 7, 8, h, w]` in the UNet's dtype: batch g < k is window slot g's negative half,
    /// k + g its positive half; channels 0–3 latents, 4–6 noisy LR.
    sample: Tensor,
    /// `[k, 4, 8, h, w]`, f32: the latents between steps (spec §2.5: the release steps fp16
    /// latents; f32 is the harmless improvement), copied into both halves of `sample`.
    latents: Tensor,
    /// `[2k]`.
    timestep: Tensor,
    graph: crate::kernel::Graph,
}

/// The per-job GPU state: the captured sampler steps (for the UNet's tile size; one per group
/// size up to the job's windows per call, since a run's last group may be short) and one
/// captured decode chunk (for the VAE's tile size), and the tiles.
struct Engine<'g> {
    gpu: &'g Gpu,
    /// `steps[k − 1]` runs k windows per UNet call.
    steps: Vec<StepGraph>,
    values: StepValues,
    /// The ILT weights ÷ the VAE's scaling factor ([`fuse_chunk_into`]).
    chunk_weights: ChunkWeights,
    vae_in: Tensor,
    vae_out: Tensor,
    vae_graph: crate::kernel::Graph,
    tiles: JobTiles,
}

/// What one window of a group brings: its 8 padded LR frames `[3][8][ph][pw]` in [−1, 1] and
/// its noise.
struct WindowInput {
    lr: Vec<f32>,
    noise: WindowNoise,
}

impl<'g> Engine<'g> {
    /// One tile of `ph`×`pw` for both models, one window per UNet call.
    #[allow(clippy::too_many_arguments)]
    fn new(gpu: &'g Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, ph: usize, pw: usize, unet_dtype: DType, vae_dtype: DType) -> Result<Engine<'g>> {
        Engine::tiled(gpu, unet, vae, opts, JobTiles::whole(ph, pw), 1, unet_dtype, vae_dtype)
    }

    /// The graphs for the tiles' sizes (the UNet's steps at the UNet tile for 1 to
    /// `per_call` windows per call, the decode at the VAE tile).
    #[allow(clippy::too_many_arguments)]
    fn tiled(gpu: &'g Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, tiles: JobTiles, per_call: usize, unet_dtype: DType, vae_dtype: DType) -> Result<Engine<'g>> {
        let c = &unet.config.base;
        if c.in_channels != LATENT_CHANNELS + LR_CHANNELS || c.out_channels != LATENT_CHANNELS {
            bail!("the UNet has {} input and {} output channels; the DiffVSR sampler needs 7 and 4", c.in_channels, c.out_channels);
        }
        for (name, e) in [("prompt", &opts.positive), ("negative prompt", &opts.negative)] {
            if e.shape[2] != c.cross_attention_dim {
                bail!("{name} embeddings are {:?} but the UNet's cross_attention_dim is {}: they come from another text encoder", e.shape, c.cross_attention_dim);
            }
        }
        if opts.positive.shape != opts.negative.shape {
            bail!("prompt embeddings {:?} and negative prompt embeddings {:?} differ in shape", opts.positive.shape, opts.negative.shape);
        }
        if tiles.unet.tiles.len() > 1 && per_call > 1 {
            bail!("internal: windows are grouped only when the frame is one UNet tile");
        }
        let values = StepValues::new(gpu, &StepSlots::NAMES)?;

        // The steps and the decode never run at the same time: one arena holds about the largest
        // of the plans, not their sum. Safe because nothing of a step's activations is read after
        // it runs (its result goes into its latents), and the decode's output is read as soon as
        // it has run, before the next step. The decode is planned first: its tensors (at 4× the
        // latent's size) are the larger, and a later plan reuses only buffers that hold its
        // tensors; then the steps from the most windows per call down.
        let arena = crate::kernel::Arena::for_gpu(gpu);
        let (vh, vw) = tiles.vae.tile_size();
        let vae_in = Tensor::empty(gpu, &[1, LATENT_CHANNELS, DECODE_CHUNK, vh, vw], vae_dtype)?;
        let mut rec = Recorder::capture_in(gpu, &arena);
        let vae_out = vae.forward(&mut rec, &vae_in)?;
        let vae_graph = rec.into_graph()?;
        let want = [1, LR_CHANNELS, DECODE_CHUNK, SCALE * vh, SCALE * vw];
        if vae_out.shape() != want {
            bail!("the VAE decoder gives {:?} for latents {:?}; the pipeline needs a ×4 decoder ({want:?})", vae_out.shape(), vae_in.shape());
        }
        let mut steps = (1..=per_call.max(1))
            .rev()
            .map(|k| {
                let step = capture_step(gpu, &arena, unet, opts, tiles.unet.tile_size(), k, &values, unet_dtype);
                if per_call > 1 {
                    step.with_context(|| format!("capturing the sampler step for {k} windows per UNet call (--windows-per-call {} asked for; 1 needs the least memory)", per_call))
                } else {
                    step
                }
            })
            .collect::<Result<Vec<_>>>()?;
        steps.reverse();
        let chunk_weights = ChunkWeights::new(gpu, opts.ilt, vae.config.scaling_factor as f32)?;
        Ok(Engine { gpu, steps, values, chunk_weights, vae_in, vae_out, vae_graph, tiles })
    }

    /// The captured step for `k` windows per call.
    fn step(&self, k: usize) -> &StepGraph {
        &self.steps[k - 1]
    }

    /// Decodes the chunk that becomes final when window `cur` ends ([`fuse_chunk_into`]: window
    /// 0's first half, the ILT blend of `prev`'s second half with `cur`'s first, or after the last
    /// window `prev`'s second half; each `[1, 4, 8, ph, pw]` f32 on the GPU) to RGB
    /// `[3][4][4ph][4pw]`. One VAE tile: fused straight into the decoder's input. Several: the
    /// fused chunk is read back, cut per VAE tile, and the tiles' ×4 pixels blended with the ×4
    /// plan's feathered weights.
    fn decode_fused(&self, prev: Option<&Tensor>, cur: Option<&Tensor>) -> Result<Vec<f32>> {
        let gpu = self.gpu;
        let plan = &self.tiles.vae;
        let mut rec = gpu.recorder();
        if plan.tiles.len() == 1 {
            fuse_chunk_into(&mut rec, prev, cur, &self.chunk_weights, &self.vae_in)?;
            rec.submit();
            self.vae_graph.run(gpu)?;
            return self.vae_out.to_f32(gpu);
        }
        let chunk = Tensor::empty(gpu, &[1, LATENT_CHANNELS, DECODE_CHUNK, plan.height, plan.width], DType::F32)?;
        fuse_chunk_into(&mut rec, prev, cur, &self.chunk_weights, &chunk)?;
        rec.submit();
        let latents = chunk.to_f32(gpu)?;
        let outs = (0..plan.tiles.len()).map(|t| self.decode(&cut_planes(plan, &latents, LATENT_CHANNELS * DECODE_CHUNK, t))).collect::<Result<Vec<_>>>()?;
        Ok(blend_planes(&self.tiles.vae_px, &outs, LR_CHANNELS * DECODE_CHUNK))
    }

    /// Denoises a group of windows (at most the engine's windows per call) through all steps.
    /// One UNet tile covering the frame: [`Engine::load_sample`] builds each window's sample
    /// on the GPU in its batch slot, all steps run once for the group, and each window's final
    /// latents stay on the GPU (copied out of the step's state). Several tiles (one window per
    /// group): per tile, the sample of the tile, all steps, and the tile's final latents read
    /// back; the tiles are blended with the plan's feathered weights. Returns each window's final
    /// latents `[1, 4, 8, ph, pw]`, f32, on the GPU.
    fn denoise_group(&mut self, group: &[WindowInput], steps: &[DdimStep], guidance: f32, mut on_step: impl FnMut(usize)) -> Result<Vec<Tensor>> {
        let plan = self.tiles.unet.clone();
        let k = group.len();
        ensure!((1..=self.steps.len()).contains(&k), "internal: a group of {k} windows; the engine runs 1 to {}", self.steps.len());
        if plan.tiles.len() == 1 {
            for (slot, w) in group.iter().enumerate() {
                self.load_sample(k, slot, &w.lr, &w.noise, 0, 0)?;
            }
            self.run_steps(k, steps, guidance, on_step)?;
            return (0..k).map(|slot| self.final_latents(k, slot)).collect();
        }
        ensure!(k == 1, "internal: windows are grouped only when the frame is one UNet tile");
        let n = steps.len();
        let mut outs = Vec::with_capacity(plan.tiles.len());
        for (t, tile) in plan.tiles.iter().enumerate() {
            self.load_sample(1, 0, &cut_planes(&plan, &group[0].lr, LR_CHANNELS * WINDOW, t), &group[0].noise, tile.rows.start as u32, tile.cols.start as u32)?;
            self.run_steps(1, steps, guidance, |s| on_step(t * n + s))?;
            outs.push(self.step(1).latents.to_f32(self.gpu)?);
        }
        let whole = blend_planes(&plan, &outs, LATENT_CHANNELS * WINDOW);
        Ok(vec![Tensor::from_f32(self.gpu, &whole, &[1, LATENT_CHANNELS, WINDOW, plan.height, plan.width], DType::F32)?])
    }

    /// Writes one tile's sample on the GPU into batch slot `slot` of the `k`-window step: the
    /// f32 latents `[4][8][th][tw]` from the initial noise (rescheduled, keyed by absolute frame
    /// and the tile's position (y0, x0) in the padded frame), and both CFG halves of the sample
    /// `[7][8][th][tw]`: channels 0–3 those latents, channels 4–6 the LR tile (`[3][8][th][tw]`)
    /// augmented with its own noise (`ops::sampler::add_noise_into`).
    fn load_sample(&self, k: usize, slot: usize, lr_tile: &[f32], window: &WindowNoise, y0: u32, x0: u32) -> Result<()> {
        let gpu = self.gpu;
        let step = self.step(k);
        let s = step.sample.shape().to_vec();
        let (th, tw, dt) = (s[3], s[4], step.sample.dtype());
        let lr = Tensor::from_f32(gpu, lr_tile, &[1, LR_CHANNELS, WINDOW, th, tw], dt)?;
        let latents = step.latents.narrow(0, slot, 1)?;
        let mut rec = gpu.recorder();
        let z = gaussian_noise(&mut rec, &window.latent_frames, window.seed, Stream::Latent, y0, x0, [th, tw, LATENT_CHANNELS], DType::F32)?;
        let z = nfhwc_to_ncfhw(&mut rec, &z.reshape(&[1, WINDOW, th, tw, LATENT_CHANNELS])?)?;
        copy(&mut rec, &z, &latents)?;
        let e = gaussian_noise(&mut rec, &window.lr_frames, window.seed, Stream::LowRes, y0, x0, [th, tw, LR_CHANNELS], dt)?;
        let e = nfhwc_to_ncfhw(&mut rec, &e.reshape(&[1, WINDOW, th, tw, LR_CHANNELS])?)?;
        let [c0, c1] = window.lr_coeffs.map(|c| Scalar::Const(c as f32));
        for half in [slot, k + slot] {
            let b = step.sample.narrow(0, half, 1)?;
            scale_into(&mut rec, &latents, &Scalar::Const(1.0), &b.narrow(1, 0, LATENT_CHANNELS)?)?;
            add_noise_into(&mut rec, &lr, &e, &c0, &c1, &b.narrow(1, LATENT_CHANNELS, LR_CHANNELS)?)?;
        }
        rec.submit();
        Ok(())
    }

    /// Denoises a group of windows through all steps from samples built on the host (each
    /// `[2, 7, 8, h, w]`, both halves' latents alike); returns their final latents on the GPU.
    #[cfg(test)]
    fn denoise(&mut self, samples: &[&[f32]], steps: &[DdimStep], guidance: f32, on_step: impl FnMut(usize)) -> Result<Vec<Tensor>> {
        let k = samples.len();
        let step = self.step(k);
        let half = step.sample.numel() / (2 * k);
        let lat = step.latents.numel() / k;
        for (slot, s) in samples.iter().enumerate() {
            step.sample.narrow(0, slot, 1)?.write_f32(self.gpu, &s[..half])?;
            step.sample.narrow(0, k + slot, 1)?.write_f32(self.gpu, &s[half..])?;
            step.latents.narrow(0, slot, 1)?.write_f32(self.gpu, &s[..lat])?;
        }
        self.run_steps(k, steps, guidance, on_step)?;
        (0..k).map(|slot| self.final_latents(k, slot)).collect()
    }

    /// All DDIM steps of the `k`-window step on its latents in place (one replay of the
    /// captured step each). Nothing is read back.
    fn run_steps(&mut self, k: usize, steps: &[DdimStep], guidance: f32, mut on_step: impl FnMut(usize)) -> Result<()> {
        for (i, s) in steps.iter().enumerate() {
            StepSlots::set(&mut self.values, &s.coeffs, guidance)?;
            self.values.upload(self.gpu)?;
            let step = self.step(k);
            step.timestep.write_f32(self.gpu, &vec![s.t as f32; 2 * k])?;
            step.graph.run(self.gpu)?;
            on_step(i + 1);
            interrupt::check()?;
        }
        Ok(())
    }

    /// A copy of slot `slot`'s latents after the last step of the `k`-window step (the next
    /// group's steps overwrite them).
    fn final_latents(&self, k: usize, slot: usize) -> Result<Tensor> {
        let latents = self.step(k).latents.narrow(0, slot, 1)?;
        let out = Tensor::empty(self.gpu, latents.shape(), DType::F32)?;
        let mut rec = self.gpu.recorder();
        copy(&mut rec, &latents, &out)?;
        rec.submit();
        Ok(out)
    }

    /// Decodes a chunk of 4 latent frames (`[4][4][h][w]`, already ÷ the scaling factor) to RGB
    /// `[3][4][4h][4w]`.
    fn decode(&self, latents: &[f32]) -> Result<Vec<f32>> {
        self.vae_in.write_f32(self.gpu, latents)?;
        self.vae_graph.run(self.gpu)?;
        self.vae_out.to_f32(self.gpu)
    }
}

/// Captures the sampler step for `k` windows per UNet call at a `th`×`tw` latent in `arena`:
/// the UNet on the k CFG pairs, then guidance and DDIM (η = 0, v-prediction) in one pass, in
/// place on the f32 latents — x ← a·x + b·(v_u + g·(v_c − v_u)) — and x into both CFG halves of
/// the sample.
#[allow(clippy::too_many_arguments)]
fn capture_step(gpu: &Gpu, arena: &crate::kernel::Arena, unet: &VideoUNet, opts: &JobOptions, (th, tw): (usize, usize), k: usize, values: &StepValues, dtype: DType) -> Result<StepGraph> {
    let (l, d) = (opts.positive.shape[1], opts.positive.shape[2]);
    // The context: k negative prompts, then k positive ones (the sample's batch order).
    let ctx: Vec<f32> = [&opts.negative.data, &opts.positive.data].iter().flat_map(|e| std::iter::repeat_n(e.as_slice(), k).flatten().copied()).collect();
    let ctx = Tensor::from_f32(gpu, &ctx, &[2 * k, l, d], dtype)?;
    let sample = Tensor::empty(gpu, &[2 * k, LATENT_CHANNELS + LR_CHANNELS, WINDOW, th, tw], dtype)?;
    let timestep = Tensor::from_f32(gpu, &vec![0.0; 2 * k], &[2 * k], DType::F32)?;
    let labels = Tensor::from_u32(gpu, &vec![opts.noise_level; 2 * k], &[2 * k])?;
    let latents = Tensor::empty(gpu, &[k, LATENT_CHANNELS, WINDOW, th, tw], DType::F32)?;
    let mut rec = Recorder::capture_in(gpu, arena);
    let v = unet.forward(&mut rec, &UNetInputs { sample: &sample, timestep: &timestep, class_labels: Some(&labels), encoder_hidden_states: &ctx })?;
    let [a, b, g] = StepSlots::scalars(values)?;
    guided_ddim_step_into(&mut rec, &latents, &v, &a, &b, &g, &latents)?;
    load_latents(&mut rec, &latents, &sample)?;
    let graph = rec.into_graph()?;
    Ok(StepGraph { sample, latents, timestep, graph })
}

/// The f32 latents `[k, 4, 8, h, w]` into the latent channels of both CFG halves of each
/// window slot of `sample` (`[2k, 7, 8, h, w]`, in the UNet's dtype): one copy per batch element,
/// since a view spans whole leading batch elements only.
fn load_latents(rec: &mut Recorder, latents: &Tensor, sample: &Tensor) -> Result<()> {
    let k = latents.shape()[0];
    for slot in 0..k {
        let z = latents.narrow(0, slot, 1)?;
        for half in [slot, k + slot] {
            scale_into(rec, &z, &Scalar::Const(1.0), &sample.narrow(0, half, 1)?.narrow(1, 0, LATENT_CHANNELS)?)?;
        }
    }
    Ok(())
}

/// Windows through the job's engine, for the pipeline golden test (`pipeline::golden_window`):
/// builds the [`Engine`] for an `h`×`w` latent with `per_call` windows per UNet call, denoises
/// `samples` (each `[2, 7, 8, h, w]` laid out as [`run_job`] builds it; window i starts at frame
/// 4i) in groups of `per_call` through `opts.steps` released DDIM steps, and, when `decode`,
/// decodes every chunk as [`run_job`] does ([`Engine::decode_fused`]: the ILT fuse on the GPU, ÷
/// the VAE's scaling factor). Returns each window's final latents `[4][8][h][w]` and the decoded
/// chunks `[3][4][4h][4w]` (before the clamp), one more than the windows.
#[cfg(test)]
pub(crate) type FinalsAndChunks = (Vec<Vec<f32>>, Vec<Vec<f32>>);

#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn denoise_and_decode_windows(gpu: &Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, h: usize, w: usize, per_call: usize, unet_dtype: DType, vae_dtype: DType, samples: &[Vec<f32>], decode: bool) -> Result<FinalsAndChunks> {
    let steps = Ddim::released().steps(opts.steps).map_err(anyhow::Error::msg)?;
    let mut engine = Engine::tiled(gpu, unet, vae, opts, JobTiles::whole(h, w), per_call, unet_dtype, vae_dtype)?;
    let (mut finals, mut chunks) = (Vec::new(), Vec::new());
    let mut prev: Option<Tensor> = None;
    for group in samples.chunks(per_call) {
        let group: Vec<&[f32]> = group.iter().map(Vec::as_slice).collect();
        for z in engine.denoise(&group, &steps, opts.guidance, |_| {})? {
            if decode {
                chunks.push(engine.decode_fused(prev.as_ref(), Some(&z))?);
            }
            finals.push(z.to_f32(gpu)?);
            prev = Some(z);
        }
    }
    if decode {
        chunks.push(engine.decode_fused(prev.as_ref(), None)?);
    }
    Ok((finals, chunks))
}

/// Tile `t` of `planes` stacked `[h][w]` planes (`data`: `[planes][h][w]` over the plan's
/// whole size), as `[planes][th][tw]`.
fn cut_planes(plan: &TilePlan, data: &[f32], planes: usize, t: usize) -> Vec<f32> {
    let size = plan.height * plan.width;
    assert_eq!(data.len(), planes * size);
    data.chunks_exact(size).flat_map(|p| plan.cut(p, t)).collect()
}

/// The feathered blend of every tile's `[planes][th][tw]` into `[planes][h][w]`.
fn blend_planes(plan: &TilePlan, tiles: &[Vec<f32>], planes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(planes * plan.height * plan.width);
    for p in 0..planes {
        let plane: Vec<Vec<f32>> = plan
            .tiles
            .iter()
            .zip(tiles)
            .map(|(t, d)| {
                let n = t.rows.len() * t.cols.len();
                d[p * n..(p + 1) * n].to_vec()
            })
            .collect();
        out.extend(plan.blend(&plane));
    }
    out
}

/// One input frame, padded: RGB `[3][ph][pw]` in [−1, 1].
type PaddedFrame = Vec<f32>;

/// Runs the whole job; see the module doc. Errors name the frame; frames already written are
/// whole. The writer is flushed after every frame so a downstream reader sees them at once.
#[allow(clippy::too_many_arguments)]
pub fn run_job<R: Read, W: Write>(
    gpu: &Gpu,
    unet: &VideoUNet,
    unet_dtype: DType,
    vae: &Te3dVaeDecoder,
    vae_dtype: DType,
    mut reader: Reader<R>,
    writer: &mut Writer<W>,
    opts: &JobOptions,
    mut progress: impl FnMut(Progress),
) -> Result<JobStats> {
    if opts.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let header = reader.header().clone();
    let in_fmt = header.format();
    let out_fmt = writer.header().format();
    if out_fmt.width != SCALE as u32 * in_fmt.width || out_fmt.height != SCALE as u32 * in_fmt.height {
        bail!("the output header is {}x{}; the input is {}x{} and the job upscales ×{SCALE}", out_fmt.width, out_fmt.height, in_fmt.width, in_fmt.height);
    }
    let in_params = YuvParams { matrix: opts.matrix.resolve(in_fmt.height), range: header.range, depth: header.depth };
    let out_params = YuvParams { matrix: opts.matrix.resolve(out_fmt.height), range: writer.header().range, depth: writer.header().depth };
    let pad = LatentPad::new(in_fmt.height as usize, in_fmt.width as usize);
    let (ph, pw) = pad.padded();
    let plane = ph * pw;
    let steps = Ddim::released().steps(opts.steps).map_err(anyhow::Error::msg)?;
    let lr_coeffs = LowResNoise::released().coeffs(opts.noise_level).map_err(anyhow::Error::msg)?;
    let tiles = choose_tiles(gpu, unet, vae, opts, ph, pw, unet_dtype, vae_dtype)?;
    let grouping = opts.windows_per_call.resolve(&group_context(gpu, &tiles)).map_err(anyhow::Error::msg)?;
    let per_call = grouping.windows;
    let mut stats = JobStats { tiles: tiles.summary(), windows_per_call: grouping, ..JobStats::default() };
    let mut engine = Engine::tiled(gpu, unet, vae, opts, tiles, per_call, unet_dtype, vae_dtype)?;

    let mut held: BTreeMap<usize, PaddedFrame> = BTreeMap::new();
    let mut total: Option<usize> = None;
    let mut read = 0usize;
    let mut prev: Option<Tensor> = None; // the previous window's final latents [1, 4, 8, h, w], f32
    let mut created_after_second = 0u64; // the pool's created bytes after group 2 (stats)
    let mut groups_done = 0usize;
    // A segment runs the windows that touch its frames (`windows::segment_plan`): from the
    // first reaching START to the last reaching END − 1 (or the clip's last). Input frames
    // before the first window's earliest possible read are read past, not kept; none are read
    // after the last window's. Noise is keyed by absolute frame, so each window and each
    // decoded chunk is the whole run's, byte for byte.
    let (start_frame, end_frame) = match opts.frames {
        Some(r) => (r.start, r.end),
        None => (0, None),
    };
    let last_window = end_frame.map_or(usize::MAX, windows::last_window_for);
    let first_read = windows::segment_first_read(start_frame);
    let mut i = windows::first_window_for(start_frame); // next window
    // Output frames to write: START up to END and the clip's end.
    let emit = |total: Option<usize>| start_frame..end_frame.unwrap_or(usize::MAX).min(total.unwrap_or(usize::MAX));
    // How many frames this run writes, once known (for progress).
    let frames_total = |total: Option<usize>| Some(emit(total).len()).filter(|_| emit(total).end != usize::MAX);

    loop {
        if i > last_window {
            break;
        }
        // Read until the group's last window can run, or the stream ends.
        let group = groups::next_group(i, per_call, last_window);
        while total.is_none() && !windows::window_ready(group.end - 1, read, None) {
            interrupt::check()?;
            match reader.read_frame()? {
                Some(_) if read < first_read => read += 1,
                Some(frame) => {
                    let padded = frame_to_padded_rgb(gpu, &frame, &in_params, &pad).with_context(|| format!("converting input frame {read} to RGB"))?;
                    held.insert(read, padded);
                    read += 1;
                    stats.max_frames_held = stats.max_frames_held.max(held.len());
                }
                None => total = Some(read),
            }
        }
        if total == Some(0) {
            break;
        }
        let mut group = group;
        if let Some(t) = total {
            if start_frame >= t {
                bail!("--frames {start_frame}:{}: the input has only {t} frames (0 to {})", end_frame.map_or(String::new(), |e| e.to_string()), t - 1);
            }
            if i >= windows::window_count(t) {
                break;
            }
            group.end = group.end.min(windows::window_count(t));
        }
        let windows_total = total.map(windows::window_count);
        let inputs = group.clone().map(|w| window_input(gpu, w, total, &held, plane, opts.seed, lr_coeffs)).collect::<Result<Vec<_>>>()?;
        let n_steps = steps.len() * engine.tiles.unet.tiles.len();
        let k = inputs.len();
        let zs = engine.denoise_group(&inputs, &steps, opts.guidance, |s| progress(Progress::Step { window: i, group: k, windows: windows_total, step: s, steps: n_steps }))?;
        for z in zs {
            // Chunk i (padded frames 4i…4i+3) is final now: window 0's first half, or the ILT
            // blend of the previous window's second half with this window's first half. A
            // segment's first window (i > 0) has no previous window: its first half is before
            // START.
            if i == 0 || prev.is_some() {
                emit_chunk(&engine, prev.as_ref(), Some(&z), i, emit(total), &pad, out_fmt, &out_params, writer, &mut stats, frames_total(total), &mut progress)?;
            }
            prev = Some(z);
            i += 1;
            stats.windows += 1;
        }
        groups_done += 1;
        let created = gpu.pool.stats().created_bytes;
        match groups_done {
            2 => created_after_second = created,
            g if g > 2 => stats.gpu_bytes_created_late = created - created_after_second,
            _ => {}
        }
        let keep = windows::first_input_needed(i, read, total);
        held.retain(|&k, _| k >= keep);
    }
    if let (Some(t), Some(p)) = (total, &prev) {
        // The last window's second half, copied (only once the clip's last window has run).
        if i == windows::window_count(t) {
            emit_chunk(&engine, Some(p), None, i, emit(total), &pad, out_fmt, &out_params, writer, &mut stats, frames_total(total), &mut progress)?;
        }
    }
    stats.frames_in = read;
    writer.flush()?;
    let want = emit(total);
    if want.end == usize::MAX {
        // Only a whole run or an open segment can get here without the length, and both read
        // to the end of the stream.
        bail!("internal: the stream's length is unknown at the end of the job");
    }
    if stats.frames_out != want.len() {
        bail!("internal: wrote {} frames; expected frames {}..{}", stats.frames_out, want.start, want.end);
    }
    if let (Some(e), Some(t)) = (end_frame, total) {
        if e > t {
            stats.cut_at = Some(t);
        }
    }
    Ok(stats)
}

/// Window `w`'s input: its LR frames `[3][8][ph][pw]` from the held input frames (mirror
/// padding only once the stream's length `total` is known) and its noise tables; the noise and
/// the augmentation are added on the GPU, tile by tile ([`Engine::load_sample`]).
#[allow(clippy::too_many_arguments)]
fn window_input(gpu: &Gpu, w: usize, total: Option<usize>, held: &BTreeMap<usize, PaddedFrame>, plane: usize, seed: u64, lr_coeffs: [f64; 2]) -> Result<WindowInput> {
    let frames: [usize; WINDOW] = match total {
        Some(t) => windows::window_frames(t, w),
        None => std::array::from_fn(|k| windows::window_start(w) + k),
    };
    let mut lr = vec![0f32; LR_CHANNELS * WINDOW * plane];
    for (k, &src) in frames.iter().enumerate() {
        let f = held.get(&src).with_context(|| format!("internal: input frame {src} was dropped before window {w} used it"))?;
        for c in 0..LR_CHANNELS {
            let o = (c * WINDOW + k) * plane;
            lr[o..o + plane].copy_from_slice(&f[c * plane..(c + 1) * plane]);
        }
    }
    Ok(WindowInput { lr, noise: WindowNoise::new(gpu, seed, windows::window_start(w), lr_coeffs)? })
}

/// What `--windows-per-call` decides on: the adapter, the UNet's tiles and `--tile auto`'s
/// measurement.
fn group_context(gpu: &Gpu, tiles: &JobTiles) -> groups::GroupContext {
    let (th, tw) = tiles.unet.tile_size();
    groups::GroupContext {
        software: gpu.info.device_type == wgpu::DeviceType::Cpu,
        unet_tiles: tiles.unet.tiles.len(),
        tile_px: th * tw,
        largest_per_px: tiles.measured.map(|(u, _)| u),
        max_binding: gpu.max_binding(),
    }
}

/// Decodes latent chunk `k` (padded frames 4k…4k+3: what window `cur` = k makes final, fused
/// with `prev` = window k − 1 by [`Engine::decode_fused`]) and writes the frames among them in
/// `emit` (real input frames, within the `--frames` segment); a chunk with none is not decoded.
#[allow(clippy::too_many_arguments)]
fn emit_chunk<W: Write>(
    engine: &Engine,
    prev: Option<&Tensor>,
    cur: Option<&Tensor>,
    k: usize,
    emit: std::ops::Range<usize>,
    pad: &LatentPad,
    out_fmt: FrameFormat,
    out_params: &YuvParams,
    writer: &mut Writer<W>,
    stats: &mut JobStats,
    total: Option<usize>,
    progress: &mut impl FnMut(Progress),
) -> Result<()> {
    let first = k * DECODE_CHUNK;
    if !(first..first + DECODE_CHUNK).any(|f| emit.contains(&f)) {
        return Ok(());
    }
    let (ph, pw) = pad.padded();
    let rgb = engine.decode_fused(prev, cur)?;
    let (oh, ow) = (SCALE * ph, SCALE * pw);
    let (rows, cols) = pad.output_crop();
    let (h, w) = (rows.len(), cols.len());
    for j in 0..DECODE_CHUNK {
        let f = first + j;
        if !emit.contains(&f) {
            continue;
        }
        // The frame's crop, channels-last [h][w][3] in [−1, 1] (clamped by the encoder).
        let mut out = vec![0f32; 3 * h * w];
        for c in 0..LR_CHANNELS {
            let src = &rgb[(c * DECODE_CHUNK + j) * oh * ow..(c * DECODE_CHUNK + j + 1) * oh * ow];
            for y in 0..h {
                let s = &src[(rows.start + y) * ow + cols.start..(rows.start + y) * ow + cols.start + w];
                for (x, &v) in s.iter().enumerate() {
                    out[3 * (y * w + x) + c] = v;
                }
            }
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            bail!("output frame {f}: a non-finite value (at {i}): the UNet or the VAE decoder overflowed its dtype; try --no-f16");
        }
        let frame = rgb_to_output_frame(engine.gpu, &out, out_fmt, out_params).with_context(|| format!("converting output frame {f} to YUV"))?;
        interrupt::check()?;
        writer.write_frame(&frame).with_context(|| format!("writing output frame {f}"))?;
        writer.flush().with_context(|| format!("writing output frame {f}"))?;
        stats.frames_out += 1;
        progress(Progress::Frames { done: stats.frames_out, total });
    }
    Ok(())
}

/// An input frame → the model's LR input, padded: `[3][ph][pw]` in [−1, 1]. Chroma upsampling,
/// the YUV matrix and the code range run on the GPU (`ops::color::yuv_to_rgb`, whose CPU twin
/// is `video::color::frame_to_rgb`); the reflect padding on the host.
fn frame_to_padded_rgb(gpu: &Gpu, frame: &Frame, params: &YuvParams, pad: &LatentPad) -> Result<PaddedFrame> {
    let planes = color::upload_frame(gpu, frame)?;
    let mut rec = gpu.recorder();
    let uv = planes.uv.as_ref().map(|(u, v)| (u, v));
    let rgb = color::yuv_to_rgb(&mut rec, &planes.y, uv, &frame.format, params, DType::F32)?;
    rec.submit();
    let hwc = rgb.to_f32(gpu)?;
    let n = hwc.len() / LR_CHANNELS;
    let mut out = Vec::new();
    for c in 0..LR_CHANNELS {
        let p: Vec<f32> = (0..n).map(|i| hwc[LR_CHANNELS * i + c]).collect();
        out.extend(pad.pad_plane(&p));
    }
    Ok(out)
}

/// A decoded frame, cropped, channels-last `[h][w][3]` in [−1, 1] → an output frame of
/// `format`: the clamp, the YUV matrix, the code range, chroma downsampling and rounding run on
/// the GPU (`ops::color::rgb_to_yuv`, whose CPU twin is `video::color::rgb_to_frame`).
fn rgb_to_output_frame(gpu: &Gpu, hwc: &[f32], format: FrameFormat, params: &YuvParams) -> Result<Frame> {
    let t = Tensor::from_f32(gpu, hwc, &[format.height as usize, format.width as usize, LR_CHANNELS], DType::F32)?;
    let mut rec = gpu.recorder();
    let planes = color::rgb_to_yuv(&mut rec, &t, &format, params)?;
    rec.submit();
    color::download_frame(gpu, &planes, format)
}

/// The released prompt (spec §4.3).
pub const DEFAULT_PROMPT: &str = "clear, high quality, high-resolution, 4K";
/// The released negative prompt (spec §4.3).
pub const DEFAULT_NEGATIVE_PROMPT: &str = "low quality, blurry, low-resolution, noisy, unsharp, weird textures, worst quality";

/// What the `upscale` command was given.
#[derive(Clone, Debug)]
pub struct UpscaleArgs {
    /// Input y4m file (`None`: stdin).
    pub input: Option<std::path::PathBuf>,
    /// Output y4m file (`None`: stdout).
    pub output: Option<std::path::PathBuf>,
    /// The release folder (DiffVSR_UNet.pt, TE-3DVAE.pt, upscaler4x/, config overrides).
    pub weights: std::path::PathBuf,
    pub steps: usize,
    pub guidance: f32,
    pub noise_level: u32,
    pub seed: u64,
    pub ilt: Ilt,
    pub matrix: MatrixChoice,
    pub prompt: String,
    pub negative_prompt: String,
    /// `prompt_embeds` files (from `encode-prompt`) for the prompt and the negative prompt; the
    /// text encoder is not loaded when both are given.
    pub prompt_embeds: Option<std::path::PathBuf>,
    pub negative_prompt_embeds: Option<std::path::PathBuf>,
    pub quiet: bool,
    /// `--frames START:END`: only these output frames.
    pub frames: Option<FrameRange>,
    /// `--gif PREVIEW.gif`: a small animated preview of the frames written.
    pub gif: Option<std::path::PathBuf>,
    /// `--tile`, `--tile-overlap`.
    pub tiles: TileOptions,
    /// `--windows-per-call`.
    pub windows_per_call: WindowsPerCall,
    /// `--random-weights SEED`: seeded synthetic weights in place of the checkpoints (the
    /// configs as usual: built in, or the overrides in `weights`), and random prompt
    /// embeddings where none are given, for timing the job without the release. The output is
    /// not an upscale.
    pub random_weights: Option<u64>,
}

/// True when `e` comes from a closed output pipe (the downstream reader quit).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::video::y4m::Y4mError>().is_some_and(|y| y.is_broken_pipe())
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prompt embeddings (positive, negative): from files where given, else from the release's text
/// encoder (loaded once, both prompts encoded in one batch).
fn prompt_embeds(gpu: &Gpu, a: &UpscaleArgs) -> Result<(PromptEmbeds, PromptEmbeds)> {
    let from_file = |p: &Option<std::path::PathBuf>| p.as_deref().map(PromptEmbeds::from_file).transpose();
    let (mut pos, mut neg) = (from_file(&a.prompt_embeds)?, from_file(&a.negative_prompt_embeds)?);
    if pos.is_none() || neg.is_none() {
        let enc = crate::models::clip_text::TextEncoder::load(gpu, &a.weights, DType::F32).context("loading the text encoder (or give --prompt-embeds and --negative-prompt-embeds)")?;
        let mut rec = gpu.recorder();
        let e = enc.encode(&mut rec, &[&a.negative_prompt, &a.prompt])?;
        rec.submit();
        let v = e.to_f32(gpu)?;
        let s = e.shape();
        let half = v.len() / 2;
        if neg.is_none() {
            neg = Some(PromptEmbeds::new(v[..half].to_vec(), vec![1, s[1], s[2]]).context("the negative prompt's embeddings")?);
        }
        if pos.is_none() {
            pos = Some(PromptEmbeds::new(v[half..].to_vec(), vec![1, s[1], s[2]]).context("the prompt's embeddings")?);
        }
    }
    Ok((pos.expect("set above"), neg.expect("set above")))
}

/// The `upscale` command: loads the models from the release folder, then runs [`run_job`] from
/// the input to the output with progress on stderr.
pub fn upscale(gpu: &Gpu, a: &UpscaleArgs) -> Result<JobStats> {
    use crate::models::registry::{default_dtype, load_model, Model, ModelKind};
    use crate::models::release;
    if a.noise_level > crate::pipeline::scheduler::MAX_NOISE_LEVEL {
        bail!("--noise-level {}: at most {}", a.noise_level, crate::pipeline::scheduler::MAX_NOISE_LEVEL);
    }
    if a.steps == 0 || a.steps > 1000 {
        bail!("--steps {}: between 1 and 1000", a.steps);
    }
    a.tiles.check().map_err(anyhow::Error::msg)?;
    // Open the input first: a malformed stream is reported before minutes of model loading.
    let input: Box<dyn Read> = match &a.input {
        Some(p) => Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => Box::new(std::io::stdin().lock()),
    };
    let reader = Reader::new(std::io::BufReader::new(input))?;
    let out_header = reader.header().scaled(SCALE as u32)?;

    let unet_dtype = default_dtype(gpu, ModelKind::DiffvsrUnet);
    let vae_dtype = default_dtype(gpu, ModelKind::Te3dVaeDecoder);
    let (uw, mut uc) = release::video_unet(&a.weights);
    let (vw, mut vc) = release::video_vae(&a.weights);
    if a.weights.as_os_str().is_empty() {
        // `--random-weights` without `--weights`: the built-in configs, not files in the
        // working folder.
        (uc, vc) = (None, None);
    }
    let load = |kind, config: Option<&std::path::Path>, weights: &std::path::Path, dtype| match a.random_weights {
        Some(seed) => crate::models::registry::load_model_from(gpu, kind, config, &mut crate::weights::WeightStore::synthetic(seed), dtype),
        None => load_model(gpu, kind, config, weights, dtype),
    };
    let embeds_given = a.prompt_embeds.is_some() && a.negative_prompt_embeds.is_some();
    if a.random_weights.is_none() {
        // Everything missing at once, before minutes of loading.
        let missing = release::missing_for_upscale(&a.weights, !embeds_given);
        if !missing.is_empty() {
            bail!(
                "{} is not a complete DiffVSR release: no {}. Run 'diffvsr-wgpu fetch-weights' or give --weights DIR{}",
                a.weights.display(),
                missing.join(", no "),
                if embeds_given { "" } else { " (the text encoder is not needed with --prompt-embeds and --negative-prompt-embeds)" }
            );
        }
    }
    let loading = std::time::Instant::now();
    // The prompts first: the text encoder is loaded, run and freed before the video models, so
    // it never shares the GPU with them, and a missing one is reported before their load.
    let encoded = if a.random_weights.is_some() && !embeds_given { None } else { Some(prompt_embeds(gpu, a)?) };
    // The encoder's buffers went back to the pool: hand them to the driver.
    gpu.pool.trim();
    let unet = match load(ModelKind::DiffvsrUnet, uc.as_deref(), &uw, unet_dtype)? {
        Model::VideoUnet(u) => u,
        _ => bail!("internal: {} did not load as a video UNet", uw.display()),
    };
    let vae = match load(ModelKind::Te3dVaeDecoder, vc.as_deref(), &vw, vae_dtype)? {
        Model::Te3dVaeDecoder(v) => v,
        _ => bail!("internal: {} did not load as the TE-3DVAE decoder", vw.display()),
    };
    let (positive, negative) = match (encoded, a.random_weights) {
        (Some(e), _) => e,
        (None, seed) => {
            // --random-weights without both embeddings files: random ones of the UNet's width.
            let d = unet.config.base.cross_attention_dim;
            let mut rng = crate::rng::Rng::new(seed.unwrap_or_default() ^ 0x5EED);
            let mut random = || PromptEmbeds::new(rng.normals(77 * d, 1.0), vec![1, 77, d]);
            (random()?, random()?)
        }
    };
    if !a.quiet {
        // Waits for the uploads: the time is the models' on the GPU, not only read and queued.
        gpu.sync()?;
        eprintln!(
            "models loaded in {:.1} s (UNet {}, TE-3DVAE {}; {} on the GPU)",
            loading.elapsed().as_secs_f64(),
            unet_dtype.name(),
            vae_dtype.name(),
            crate::gpu::human_bytes(gpu.pool.stats().live_bytes)
        );
    }
    if a.random_weights.is_some() && !a.quiet {
        eprintln!("--random-weights: synthetic weights, the output is not an upscale (a timing run)");
    }
    let opts = JobOptions { steps: a.steps, guidance: a.guidance, noise_level: a.noise_level, seed: a.seed, ilt: a.ilt, positive, negative, matrix: a.matrix, frames: a.frames, tiles: a.tiles, windows_per_call: a.windows_per_call };

    let output: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = Writer::new(std::io::BufWriter::new(output), out_header)?;
    // --gif: each frame also goes to the preview as it is written.
    let preview = match &a.gif {
        Some(p) => {
            let h = writer.header();
            let params = YuvParams { matrix: opts.matrix.resolve(h.height), range: h.range, depth: h.depth };
            Some(std::rc::Rc::new(std::cell::RefCell::new(crate::video::preview::GifPreview::create(p, h, params)?)))
        }
        None => None,
    };
    if let Some(p) = &preview {
        let p = p.clone();
        writer.on_frame(Box::new(move |f| p.borrow_mut().push(f).map_err(|e| std::io::Error::other(format!("--gif: {e:#}")))));
    }
    // The clip's length, for the ETA, when the input is a file (from its size).
    // (Only a regular file: a named pipe must not be read twice.)
    let input_frames = match &a.input {
        Some(p) if std::fs::metadata(p).is_ok_and(|m| m.is_file()) => y4m_file_frames(p).ok().and_then(|(_, t)| t),
        _ => None,
    };
    let mut reporter = crate::pipeline::progress::Reporter::new(std::io::stderr(), crate::pipeline::progress::Style::for_stderr(), a.steps, a.frames, input_frames);
    let mut frames_done = 0usize;
    let result = run_job(gpu, &unet, unet_dtype, &vae, vae_dtype, reader, &mut writer, &opts, |p| {
        if let Progress::Frames { done, .. } = p {
            frames_done = done;
        }
        if !a.quiet {
            reporter.event(p);
        }
    });
    reporter.clear();
    let elapsed = reporter.elapsed();
    drop(writer);
    // The preview is closed (its trailer written) whether the job ended, failed or stopped.
    let gif = preview.map(|p| std::rc::Rc::try_unwrap(p).ok().expect("the writer and its hook are gone").into_inner().finish());
    let stats = match result {
        // After Ctrl-C, an error is the stop itself, or its echo (a pipeline's other ends got
        // the signal too: a truncated input, a closed output).
        Err(e) if interrupt::requested() || interrupt::is_interrupted(&e) => {
            let start = a.frames.map_or(0, |r| r.start);
            let end = a.frames.and_then(|r| r.end).map_or(String::new(), |e| e.to_string());
            let detail = if frames_done == 0 {
                "stopped before any output frame was written".to_string()
            } else {
                format!(
                    "stopped after {frames_done} whole output frames (frames {start}..{}); the rest can be run later with --frames {}:{end} and the parts joined",
                    start + frames_done,
                    start + frames_done
                )
            };
            return Err(interrupt::Interrupted { detail }.into());
        }
        r => r?,
    };
    if let Some(g) = gif {
        g?;
    }
    if !a.quiet {
        let g = &stats.windows_per_call;
        eprintln!("{} frames in, {} out, {} windows, {:.1} s; tiles: {}; windows per UNet call: {} ({})", stats.frames_in, stats.frames_out, stats.windows, elapsed.as_secs_f64(), stats.tiles, g.windows, g.why);
    }
    if let (Some(t), Some(r)) = (stats.cut_at, a.frames) {
        // Said even with --quiet: the output is shorter than asked.
        eprintln!("note: --frames {}:{}: the input has only {t} frames; wrote frames {}..{t} ({} frames)", r.start, r.end.map_or(String::new(), |e| e.to_string()), r.start, stats.frames_out);
    }
    Ok(stats)
}

/// A y4m file's header and frame count (from its size; `None` when the size is not a whole
/// number of plain frames, or the path is not a regular file, e.g. a pipe).
pub fn y4m_file_frames(p: &std::path::Path) -> Result<(crate::video::y4m::Header, Option<usize>)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let meta = f.metadata().with_context(|| format!("reading {}", p.display()))?;
    let size = meta.len();
    // The header line, as written (its length locates the first frame).
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while f.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
        if line.len() > 4096 {
            bail!("{}: not a y4m stream header (no end of line in 4096 bytes)", p.display());
        }
    }
    let reader = Reader::new(std::io::Cursor::new([line.as_slice(), b"\n"].concat()))?;
    let h = reader.header().clone();
    let fb = 6 + h.format().frame_bytes().context("the frame size overflows")? as u64;
    let body = size - (line.len() as u64 + 1).min(size);
    // Exact when no FRAME line carries parameters (as ffmpeg writes them).
    let t = (meta.is_file() && body % fb == 0).then_some((body / fb) as usize);
    Ok((h, t))
}

/// What `--plan` prints: the windows to run, the segment, the spatial tiles and a memory
/// estimate, without loading a model or reading a frame. The frame count comes from the input
/// file's size (a stream on stdin has no known length: the plan then gives the windows as they
/// will run). `max_binding` is the adapter's binding limit where known (for `--tile auto`,
/// whose tiles depend on the models' measured tensors and are picked when they load).
#[allow(clippy::too_many_arguments)]
pub fn plan(input: Option<&std::path::Path>, weights: Option<&std::path::Path>, frames: Option<FrameRange>, text_encoder: bool, tiles: TileOptions, windows_per_call: WindowsPerCall, max_binding: Option<u64>) -> Result<String> {
    use crate::gpu::human_bytes;
    use std::fmt::Write as _;
    let mut o = String::new();
    let (header, t): (crate::video::y4m::Header, Option<usize>) = match input {
        Some(p) => y4m_file_frames(p)?,
        None => (Reader::new(std::io::stdin().lock())?.header().clone(), None),
    };
    let fmt = header.format();
    let pad = LatentPad::new(fmt.height as usize, fmt.width as usize);
    let (ph, pw) = pad.padded();
    writeln!(o, "input:    {}x{} {:?} {}-bit, {}", fmt.width, fmt.height, fmt.chroma, fmt.depth, match t {
        Some(t) => format!("{t} frames (from the file size)"),
        None if input.is_some() => "frame count unknown (the file size is not a whole number of plain frames)".into(),
        None => "frame count unknown until the stream ends (stdin)".into(),
    })?;
    writeln!(o, "output:   {}x{} (x{SCALE}); latent {pw}x{ph} (input reflect-padded to multiples of 8)", SCALE as u32 * fmt.width, SCALE as u32 * fmt.height)?;
    tiles.check().map_err(anyhow::Error::msg)?;
    // The tile sizes the job tensors below are counted at (the whole latent where unknown).
    let (mut uh, mut uw, mut vh, mut vw) = (ph, pw, ph, pw);
    match tiles.tile {
        TileSize::Fixed(n) => {
            let p = tiles.plan(ph, pw, n).map_err(anyhow::Error::msg)?;
            (uh, uw) = p.tile_size();
            (vh, vw) = (uh, uw);
            writeln!(o, "tiles:    --tile {n}: UNet and VAE {} (VAE tiles x{SCALE} in output pixels, blended with the same feathered weights)", p.summary())?;
        }
        TileSize::Auto => {
            let limit = max_binding.map_or("unknown here (no adapter found)".to_string(), crate::gpu::human_bytes);
            let overlap = tiles.overlap.map_or("a quarter of the tile".to_string(), |v| v.to_string());
            writeln!(o, "tiles:    auto: picked when the models load, per model, from its largest tensor per latent pixel (measured on a {PROBE}x{PROBE} probe graph) and this adapter's binding limit ({limit}); one tile when the whole latent fits (by that measure, or by the whole frame's graph recorded exactly); overlap {overlap}; `--tile N` fixes the tiles (then listed here)")?;
        }
    }
    let (start, end) = match frames {
        Some(r) => (r.start, r.end),
        None => (0, None),
    };
    let seg_end = match (end, t) {
        (Some(e), Some(t)) => Some(e.min(t)),
        (e, t) => e.or(t),
    };
    if let Some(t) = t.filter(|&t| start >= t) {
        bail!("--frames {start}:{}: the input has only {t} frames", end.map_or(String::new(), |e| e.to_string()));
    }
    match (t, seg_end) {
        (Some(t), Some(e)) => {
            let p = windows::segment_plan(t, start, e).map_err(anyhow::Error::msg)?;
            let note = if end.is_some_and(|x| x > t) { format!(" (END cut to the input's {t} frames)") } else { String::new() };
            writeln!(o, "segment:  output frames {}..{}{note}; windows {}..{} of {}; input frames {}..{} used (earlier ones read past, none after read)", p.frames.start, p.frames.end, p.windows.start, p.windows.end, windows::window_count(t), p.reads.start, p.reads.end)?;
            let n = p.windows.len();
            for (k, i) in p.windows.clone().enumerate() {
                if n > 8 && k == 3 {
                    writeln!(o, "  … {} more windows …", n - 6)?;
                }
                if n > 8 && (3..n - 3).contains(&k) {
                    continue;
                }
                writeln!(o, "  window {i}: padded frames {}..{}, input frames {:?}", windows::window_start(i), windows::window_start(i) + WINDOW, windows::window_frames(t, i))?;
            }
        }
        (_, Some(e)) => {
            let (a, b) = (windows::first_window_for(start), windows::last_window_for(e));
            writeln!(o, "segment:  output frames {start}..{e}; windows {a}..{} (fewer if the stream is shorter); input frames from {} kept, none read past frame {}", b + 1, windows::segment_first_read(start), windows::segment_read_limit(e) - 1)?;
        }
        (_, None) => {
            writeln!(o, "segment:  output frames {start} to the end of the stream; windows of {WINDOW} frames at stride {STRIDE} from window {}, each run as soon as its frames have arrived; the tail is mirror-padded", windows::first_window_for(start))?;
        }
    }
    // Memory: weights from the checkpoint files; the job's own buffers exactly (f32 upper bound).
    let mut weight_bytes = 0u64;
    let mut wl = Vec::new();
    if let Some(w) = weights {
        let mut files = vec![crate::models::release::video_unet(w).0, crate::models::release::video_vae(w).0];
        if text_encoder {
            files.push(crate::models::release::text_encoder(w).0);
        }
        for f in files {
            let b = dir_or_file_bytes(&f);
            weight_bytes += b.unwrap_or(0);
            wl.push(format!("{} {}", f.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned()), b.map_or("missing".to_string(), human_bytes)));
        }
    } else {
        wl.push("not found (run fetch-weights or give --weights)".into());
    }
    // Windows per UNet call: a fixed count as given (one under fixed tiles smaller than the
    // frame); auto is picked when the models load, and counted here at its most.
    let g = match windows_per_call {
        WindowsPerCall::Fixed(n) if (uh, uw) == (ph, pw) => n,
        WindowsPerCall::Auto if (uh, uw) == (ph, pw) => (groups::GROUP_PIXELS / (ph * pw)).clamp(1, groups::MAX_AUTO),
        _ => 1,
    };
    match windows_per_call {
        WindowsPerCall::Fixed(_) => writeln!(o, "windows per UNet call: {g}")?,
        WindowsPerCall::Auto => writeln!(o, "windows per UNet call: auto: picked when the models load, {g} at most here (on a GPU, with the frame in one tile under --tile auto: as many as keep a call within one {}x{}-latent window's pixels, up to {}; else 1)", 128, 128, groups::MAX_AUTO)?,
    }
    let plane = (ph * pw) as u64;
    let f32b = 4u64;
    let gb = g as u64;
    let sample = gb * 2 * (LATENT_CHANNELS + LR_CHANNELS) as u64 * WINDOW as u64 * (uh * uw) as u64 * f32b;
    // The f32 latents between steps (a tile per window of a call), and the final latents of a
    // call's windows and the one before them (whole frames).
    let latents = LATENT_CHANNELS as u64 * WINDOW as u64 * (gb * (uh * uw) as u64 + (gb + 1) * plane) * f32b;
    let vae = (LATENT_CHANNELS + LR_CHANNELS * (SCALE * SCALE)) as u64 * DECODE_CHUNK as u64 * (vh * vw) as u64 * f32b;
    // Input frames, the call's windows' LR frames and one decoded chunk (when tiled, about as
    // much again: the UNet tiles' latents and the VAE tiles' outputs, until blended).
    let held = WINDOW + g * STRIDE;
    let host = held as u64 * LR_CHANNELS as u64 * plane * f32b
        + gb * LR_CHANNELS as u64 * WINDOW as u64 * plane * f32b
        + (LR_CHANNELS * SCALE * SCALE * DECODE_CHUNK) as u64 * plane * f32b;
    let call = if g == 1 { "the CFG window".to_string() } else { format!("{g} CFG windows") };
    writeln!(o, "memory (estimate):")?;
    writeln!(o, "  weights:          {} on disk ({}); on the device about this with f32 storage, about half with f16", human_bytes(weight_bytes), wl.join(", "))?;
    writeln!(o, "  job tensors:      {} ({call} [{},7,8,{uh},{uw}], the latents, {} windows' final latents, and the decode chunk in and out at {vw}x{vh}, f32)", human_bytes(sample + latents + vae), 2 * g, g + 1)?;
    writeln!(o, "  activations:      not estimated here: the UNet's and VAE's arena peaks need the graphs captured on the GPU (`forward --report` prints them per model; {g} windows per call is batch {})", 2 * g)?;
    writeln!(o, "  host:             {} (at most {held} input frames, {} LR frames and a decoded chunk; about twice the last when tiled), whatever the clip length", human_bytes(host), if g == 1 { "a window's".to_string() } else { format!("{g} windows'") })?;
    Ok(o)
}

/// Bytes of a file, or of all files under a folder.
fn dir_or_file_bytes(p: &std::path::Path) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?;
    if m.is_file() {
        return Some(m.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(p).ok()? {
        total += dir_or_file_bytes(&e.ok()?.path())?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::registry::{load_model, Model, ModelKind};
    use crate::testutil::{assert_close, fresh_seed, test_gpu, Rng};

    fn data(p: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
    }

    /// The tiny golden DiffVSR UNet and TE-3DVAE decoder.
    fn tiny_models(gpu: &crate::Gpu, dt: DType) -> (Box<crate::models::video_unet::VideoUNet>, crate::models::video_vae::Te3dVaeDecoder) {
        let unet = match load_model(gpu, ModelKind::DiffvsrUnet, Some(&data("diffvsr_unet/config.json")), &data("diffvsr_unet/unet.pt"), dt).unwrap() {
            Model::VideoUnet(u) => u,
            _ => unreachable!(),
        };
        let vae = match load_model(gpu, ModelKind::Te3dVaeDecoder, Some(&data("te3dvae/config.json")), &data("te3dvae/weights.pt"), dt).unwrap() {
            Model::Te3dVaeDecoder(v) => v,
            _ => unreachable!(),
        };
        (unet, vae)
    }

    /// The micro models of [`crate::testutil::write_micro_configs`] with synthetic weights.
    fn micro_models(gpu: &crate::Gpu, dt: DType) -> (Box<crate::models::video_unet::VideoUNet>, crate::models::video_vae::Te3dVaeDecoder) {
        use crate::weights::WeightStore;
        let dir = std::env::temp_dir().join(format!("diffvsr-micro-configs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (uc, vc) = crate::testutil::write_micro_configs(&dir).unwrap();
        let unet = match crate::models::registry::load_model_from(gpu, ModelKind::DiffvsrUnet, Some(&uc), &mut WeightStore::synthetic(11), dt).unwrap() {
            Model::VideoUnet(u) => u,
            _ => unreachable!(),
        };
        let vae = match crate::models::registry::load_model_from(gpu, ModelKind::Te3dVaeDecoder, Some(&vc), &mut WeightStore::synthetic(12), dt).unwrap() {
            Model::Te3dVaeDecoder(v) => v,
            _ => unreachable!(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        (unet, vae)
    }

    /// Job options for the tiny models: random prompt and negative-prompt embeddings of width
    /// `d`, `steps` released DDIM steps, guidance 5, noise level 50, the released ILT.
    fn test_options(d: usize, rng: &mut Rng, seed: u64, steps: usize) -> JobOptions {
        let mut embeds = || PromptEmbeds::new(rng.normals(77 * d, 1.0), vec![1, 77, d]).unwrap();
        let (positive, negative) = (embeds(), embeds());
        JobOptions { steps, guidance: 5.0, noise_level: 50, seed, ilt: Ilt::Released, positive, negative, matrix: MatrixChoice::Auto, frames: None, tiles: TileOptions::default(), windows_per_call: WindowsPerCall::Auto }
    }

    /// Dispatches of one uncaptured UNet forward on the job's CFG pair.
    /// The UNet's CFG-pair forward at an `h`×`w` latent (f32), captured alone in an arena of its own.
    fn unet_alone(gpu: &crate::Gpu, unet: &VideoUNet, opts: &JobOptions, h: usize, w: usize) -> crate::kernel::Graph {
        let d = unet.config.base.cross_attention_dim;
        let sample = Tensor::empty(gpu, &[2, 7, WINDOW, h, w], DType::F32).unwrap();
        let ctx = Tensor::empty(gpu, &[2, 77, d], DType::F32).unwrap();
        let ts = Tensor::from_f32(gpu, &[1.0; 2], &[2], DType::F32).unwrap();
        let labels = Tensor::from_u32(gpu, &[opts.noise_level; 2], &[2]).unwrap();
        let mut rec = Recorder::capture(gpu);
        unet.forward(&mut rec, &UNetInputs { sample: &sample, timestep: &ts, class_labels: Some(&labels), encoder_hidden_states: &ctx }).unwrap();
        rec.into_graph().unwrap()
    }

    fn unet_dispatches(gpu: &crate::Gpu, unet: &VideoUNet, opts: &JobOptions, h: usize, w: usize) -> usize {
        unet_alone(gpu, unet, opts, h, w).dispatches()
    }

    /// The step and the decode never run at once, so they share one arena: the engine holds
    /// less than the two plans made apart.
    #[test]
    fn step_and_decode_share_one_arena() {
        let gpu = test_gpu();
        let dt = DType::F32;
        let (unet, vae) = tiny_models(&gpu, dt);
        let seed = fresh_seed();
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(seed), seed, 1);
        let (h, w) = (8, 16);
        let engine = Engine::new(&gpu, &unet, &vae, &opts, h, w, dt, dt).unwrap();
        assert_eq!(engine.step(1).graph.planned_bytes(), engine.vae_graph.planned_bytes(), "one arena");
        let vae_alone = {
            let x = Tensor::empty(&gpu, &[1, LATENT_CHANNELS, DECODE_CHUNK, h, w], dt).unwrap();
            let mut rec = Recorder::capture(&gpu);
            let _out = vae.forward(&mut rec, &x).unwrap();
            rec.into_graph().unwrap().planned_bytes()
        };
        let step_alone = unet_alone(&gpu, &unet, &opts, h, w).planned_bytes();
        let shared = engine.step(1).graph.planned_bytes();
        eprintln!("activations: step alone {step_alone} B, decode alone {vae_alone} B, shared {shared} B");
        assert!(shared < step_alone + vae_alone, "shared {shared} B is not below {step_alone} + {vae_alone} B");
        assert!(shared >= step_alone.max(vae_alone) / 2, "shared {shared} B: implausibly small");
    }

    /// The sample `Engine::load_sample` builds on the GPU for a tile at (8, 24) of window 3
    /// (whose latent noise is rescheduled) equals the host construction: `pipeline::noise` at
    /// the absolute frames and positions, `scheduler::add_noise`, both CFG halves alike; the
    /// f32 latents are the sample's. The captured step is the UNet and three sampler dispatches.
    /// (What the step computes, replayed over steps, is checked against the official pipeline by
    /// `pipeline::golden_window`.)
    #[test]
    fn gpu_window_sample_matches_the_host_construction() {
        use crate::pipeline::noise;
        use crate::pipeline::scheduler::add_noise;
        let gpu = test_gpu();
        let dt = DType::F32;
        let (unet, vae) = tiny_models(&gpu, dt);
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut rng, seed, 1);
        let (h, w) = (8, 16);
        let engine = Engine::new(&gpu, &unet, &vae, &opts, h, w, dt, dt).unwrap();
        assert_eq!(engine.step(1).graph.dispatches(), unet_dispatches(&gpu, &unet, &opts, h, w) + 3, "the step is the UNet, one guided DDIM step and two copies");
        let plane = h * w;
        let lr = rng.normals(LR_CHANNELS * WINDOW * plane, 0.5);
        let (start, y0, x0) = (12, 8, 24);
        let coeffs = LowResNoise::released().coeffs(opts.noise_level).unwrap();
        engine.load_sample(1, 0, &lr, &WindowNoise::new(&gpu, seed, start, coeffs).unwrap(), y0, x0).unwrap();
        let got = engine.step(1).sample.to_f32(&gpu).unwrap();
        assert_eq!(engine.step(1).latents.to_f32(&gpu).unwrap(), got[..LATENT_CHANNELS * WINDOW * h * w], "the f32 latents are the sample's");

        let batch = (LATENT_CHANNELS + LR_CHANNELS) * WINDOW * plane;
        let mut want = vec![0f32; 2 * batch];
        for k in 0..WINDOW {
            let f = (start + k) as u64;
            let z = noise::latent_noise(seed, f, y0, x0, h, w);
            let n = noise::noise_region(seed, Stream::LowRes, f as u32, LR_CHANNELS, y0, x0, h, w);
            let frame: Vec<f32> = (0..LR_CHANNELS).flat_map(|c| lr[(c * WINDOW + k) * plane..(c * WINDOW + k + 1) * plane].to_vec()).collect();
            let aug = add_noise(&frame, &n, coeffs);
            for b in 0..2 {
                for c in 0..LATENT_CHANNELS {
                    let o = b * batch + (c * WINDOW + k) * plane;
                    want[o..o + plane].copy_from_slice(&z[c * plane..(c + 1) * plane]);
                }
                for c in 0..LR_CHANNELS {
                    let o = b * batch + ((LATENT_CHANNELS + c) * WINDOW + k) * plane;
                    want[o..o + plane].copy_from_slice(&aug[c * plane..(c + 1) * plane]);
                }
            }
        }
        assert_close(&format!("window sample (seed {seed})"), &got, &want, 1e-5);
    }

    /// Hands out at most `chunk` bytes per read and counts what it handed out.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        given: std::rc::Rc<std::cell::Cell<usize>>,
    }
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            self.given.set(self.pos);
            Ok(n)
        }
    }
    /// Records how much input had been handed out when the first output bytes came.
    struct Watch {
        out: Vec<u8>,
        given: std::rc::Rc<std::cell::Cell<usize>>,
        at_first_frame: Option<usize>,
    }
    impl Write for Watch {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.at_first_frame.is_none() && !self.out.is_empty() {
                self.at_first_frame = Some(self.given.get());
            }
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// 13 frames (3 windows, a mirrored tail): 13 frames out, the first before the input ends,
    /// never more input frames held than a window plus its look-back, and no new GPU buffer
    /// after the second window: memory is flat in the clip's length. (Micro models.)
    #[test]
    fn job_streams_three_windows_with_bounded_memory() {
        // A device of its own: its buffer pool sees only this job (other tests share test_gpu).
        let gpu = crate::Gpu::new(&crate::gpu::GpuOptions::from_env()).unwrap();
        let dt = DType::F32;
        let (unet, vae) = micro_models(&gpu, dt);
        // One window per call, as `auto` picks on a software adapter (on a GPU it would group
        // these small frames).
        let opts = JobOptions { windows_per_call: WindowsPerCall::Fixed(1), ..test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1) };
        let (w, h, n) = (5usize, 3usize, 13usize);
        let (data_in, header) = micro_clip(n);
        let frame_len = 6 + 3 * w * h;
        let total_len = data_in.len();
        let given = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = Reader::new(Trickle { data: data_in, pos: 0, chunk: 16, given: given.clone() }).unwrap();
        let out_header = reader.header().scaled(4).unwrap();
        let mut writer = Writer::new(Watch { out: Vec::new(), given: given.clone(), at_first_frame: None }, out_header).unwrap();
        let stats = run_job(&gpu, &unet, dt, &vae, dt, reader, &mut writer, &opts, |_| {}).unwrap();
        assert_eq!((stats.frames_in, stats.frames_out, stats.windows), (n, n, 3));
        assert!(stats.max_frames_held <= WINDOW + STRIDE, "held {} input frames", stats.max_frames_held);
        // GPU memory: the third window allocates nothing new (it reuses what the first freed).
        assert_eq!(stats.gpu_bytes_created_late, 0, "GPU buffer bytes created by the third window");
        let watch = writer.into_inner();
        let first = watch.at_first_frame.expect("frames were written");
        // Window 0 needs frames 0..8: the first output frame comes before frame 10 is read.
        assert!(first < header + 10 * frame_len && first < total_len, "first output after {first} of {total_len} input bytes");
        let out_frame = 6 + 3 * 16 * w * h;
        assert_eq!(watch.out.len(), b"YUV4MPEG2 W20 H12 F25:1 C444\n".len() + n * out_frame);
    }

    /// A y4m clip of `n` 5×3 4:4:4 frames with varied pixels, and its header's length.
    fn micro_clip(n: usize) -> (Vec<u8>, usize) {
        let (w, h) = (5usize, 3usize);
        let mut data = b"YUV4MPEG2 W5 H3 F25:1 C444\n".to_vec();
        let header = data.len();
        for f in 0..n {
            data.extend_from_slice(b"FRAME\n");
            data.extend((0..3 * w * h).map(|i| (20 + (i * 13 + f * 7) % 200) as u8));
        }
        (data, header)
    }

    /// Several windows per UNet call change no byte of the output: 13 frames (3 windows) at 1
    /// window per call, at 2 (windows 0–1, then a short group: 2), and a `--frames 9:13`
    /// segment at 2 (windows 1–2: window 1 now in the other batch slot) give the same frames;
    /// at 2 the job holds at most one more window stride of input frames. (Micro models.)
    #[test]
    fn windows_per_call_changes_no_byte() {
        let gpu = test_gpu();
        let dt = DType::F32;
        let (unet, vae) = micro_models(&gpu, dt);
        let n = 13;
        let (clip, _) = micro_clip(n);
        let run = |per_call: usize, frames: Option<FrameRange>| {
            let opts = JobOptions { frames, windows_per_call: WindowsPerCall::Fixed(per_call), ..test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1) };
            let reader = Reader::new(std::io::Cursor::new(clip.clone())).unwrap();
            let out_header = reader.header().scaled(4).unwrap();
            let mut writer = Writer::new(Vec::new(), out_header).unwrap();
            let stats = run_job(&gpu, &unet, dt, &vae, dt, reader, &mut writer, &opts, |_| {}).unwrap();
            assert_eq!(stats.windows_per_call.windows, per_call, "{:?}", stats.windows_per_call);
            (stats, writer.into_inner())
        };
        let header = b"YUV4MPEG2 W20 H12 F25:1 C444\n".len();
        let frame = 6 + 3 * 20 * 12;
        let (one, want) = run(1, None);
        assert_eq!((one.windows, want.len()), (3, header + n * frame));
        let (two, got) = run(2, None);
        assert_eq!((two.frames_out, two.windows), (n, 3));
        assert!(got == want, "2 windows per call: the output differs from 1 per call");
        assert!(two.max_frames_held <= WINDOW + 2 * STRIDE, "held {} input frames", two.max_frames_held);
        let (seg, got) = run(2, Some(FrameRange { start: 9, end: Some(n) }));
        assert_eq!((seg.frames_out, seg.windows), (n - 9, 2));
        assert!(got[header..] == want[header + 9 * frame..], "a segment at 2 windows per call: frames 9..{n} differ from the whole run's");
    }

    /// The job's tile paths on the host: cutting a window's planes into UNet tiles and blending
    /// them back gives the window (a constant stays constant across seams); and the VAE path —
    /// latent tiles cut, each "decoded" ×4 (here nearest-neighbour, which commutes with
    /// cutting), blended with the ×4 plan — equals decoding the whole chunk.
    #[test]
    fn tiles_cut_and_blend_back_in_latents_and_in_pixels() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (ph, pw) = (24, 40);
        let unet = TilePlan::new(ph, pw, 24, 8).unwrap();
        let vae = TilePlan::new(ph, pw, 16, 8).unwrap();
        let tiles = JobTiles::new(unet, vae);
        assert_eq!((tiles.unet.tiles.len(), tiles.vae.tiles.len()), (2, 2 * 4));
        assert!(tiles.summary().contains("2x1 = 2 tiles of 24x24") && tiles.summary().contains("4x2 = 8 tiles of 16x16"), "{}", tiles.summary());
        let planes = 5;
        let data = rng.normals(planes * ph * pw, 1.0);
        let plan = &tiles.unet;
        let cut: Vec<Vec<f32>> = (0..plan.tiles.len()).map(|t| cut_planes(plan, &data, planes, t)).collect();
        assert!(cut.iter().all(|c| c.len() == planes * 24 * 24));
        assert_close(&format!("UNet tiles blended back (seed {seed})"), &blend_planes(plan, &cut, planes), &data, 1e-6);
        let k = 0.25 + rng.uniform();
        let consts: Vec<Vec<f32>> = cut.iter().map(|c| vec![k; c.len()]).collect();
        assert!(blend_planes(plan, &consts, planes).iter().all(|v| (v - k).abs() < 1e-5));

        let up = |x: &[f32], h: usize, w: usize| -> Vec<f32> {
            x.chunks_exact(h * w).flat_map(|p| (0..SCALE * h).flat_map(move |y| (0..SCALE * w).map(move |c| p[(y / SCALE) * w + c / SCALE]))).collect()
        };
        let (vh, vw) = tiles.vae.tile_size();
        let decoded: Vec<Vec<f32>> = (0..tiles.vae.tiles.len()).map(|t| up(&cut_planes(&tiles.vae, &data, planes, t), vh, vw)).collect();
        let got = blend_planes(&tiles.vae_px, &decoded, planes);
        assert_close(&format!("VAE pixel tiles blended (seed {seed})"), &got, &up(&data, ph, pw), 1e-5);
        // One tile: the whole frame, weights exactly 1.
        let one = JobTiles::whole(ph, pw);
        assert_eq!((one.unet.tiles.len(), one.vae_px.tiles.len()), (1, 1));
        assert!(one.vae_px.tiles[0].weights.iter().all(|&w| w == 1.0));
    }

    /// `--tile auto` on a GPU with a small binding limit (as `DIFFVSR_MAX_BINDING` simulates):
    /// both models get several tiles, the VAE's smaller (its tensors at ×4 are the largest), and
    /// the graphs for those tiles capture within the limit; a UNet tile one step larger than
    /// auto's is refused with an error naming `--tile`. Without the limit: one tile each.
    #[test]
    fn tile_auto_fits_the_binding_limit() {
        use crate::gpu::GpuOptions;
        let dt = DType::F32;
        let limit = 3_000_000;
        let gpu = Gpu::new(&GpuOptions { max_binding: Some(limit), ..GpuOptions::from_env() }).unwrap();
        let (unet, vae) = tiny_models(&gpu, dt);
        let d = unet.config.base.cross_attention_dim;
        let mut rng = Rng::new(3);
        let e = PromptEmbeds::new(rng.normals(77 * d, 1.0), vec![1, 77, d]).unwrap();
        let opts = JobOptions { steps: 1, guidance: 5.0, noise_level: 50, seed: 1, ilt: Ilt::Released, positive: e.clone(), negative: e, matrix: MatrixChoice::Auto, frames: None, tiles: TileOptions::default(), windows_per_call: WindowsPerCall::Auto };
        let (ph, pw) = (24, 40);
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt).unwrap();
        let (un, vn) = (tiles.unet.tiles.len(), tiles.vae.tiles.len());
        assert!(un > 1 && vn > un, "{}", tiles.summary());
        Engine::tiled(&gpu, &unet, &vae, &opts, tiles.clone(), 1, dt, dt).unwrap();
        // A square UNet tile whose largest tensor (at the measured bytes per pixel) passes the limit.
        let (unet_px, _) = tiles.measured.unwrap();
        let s = ((limit as f64 / unet_px).sqrt() as usize / 8 + 1) * 8;
        let bigger = TilePlan::new(s, s, s, 0).unwrap();
        let err = Engine::tiled(&gpu, &unet, &vae, &opts, JobTiles::new(bigger, tiles.vae.clone()), 1, dt, dt).err().expect("a larger UNet tile must not fit").to_string();
        assert!(err.contains("--tile") && err.contains("max_storage_buffer_binding_size"), "{err}");

        let gpu = test_gpu();
        let (unet, vae) = tiny_models(&gpu, dt);
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt).unwrap();
        assert_eq!((tiles.unet.tiles.len(), tiles.vae.tiles.len()), (1, 1), "{}", tiles.summary());
    }

    /// `--tile auto` where the probe's per-pixel bound asks for tiles but the TE-3DVAE fits the
    /// whole frame once it splits its upsampling into frame groups: a decoder whose last
    /// upsampler is twice as wide as the resnet after it (block_out_channels [32, 64, 64], as
    /// the released decoder's 256 → 128), an 8×16 latent, a 1 MiB binding limit. The whole
    /// frame's graph, recorded exactly, fits: one VAE tile, and its graph captures within the
    /// limit. (The split decode's values: `tests/video_vae_golden.rs`.)
    #[test]
    fn tile_auto_lets_the_vae_split_instead_of_tiling() {
        use crate::gpu::GpuOptions;
        use crate::weights::WeightStore;
        let dt = DType::F32;
        let limit = 1 << 20;
        let gpu = Gpu::new(&GpuOptions { max_binding: Some(limit), ..GpuOptions::from_env() }).unwrap();
        let (unet, _) = micro_models(&gpu, dt);
        let dir = std::env::temp_dir().join(format!("diffvsr-split-vae-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("vae_config.json");
        std::fs::write(&config, r#"{"_class_name": "AutoencoderKLTemporalDecoder", "block_out_channels": [32, 64, 64], "in_channels": 3, "latent_channels": 4, "layers_per_block": 1, "out_channels": 3, "scaling_factor": 0.08333}"#).unwrap();
        let vae = match crate::models::registry::load_model_from(&gpu, ModelKind::Te3dVaeDecoder, Some(&config), &mut WeightStore::synthetic(2), dt).unwrap() {
            Model::Te3dVaeDecoder(v) => v,
            _ => unreachable!(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(4), 1, 1);
        let (ph, pw) = (8, 16);
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt).unwrap();
        let (_, vae_px) = tiles.measured.unwrap();
        let probe_only = tile_for_binding(gpu.max_binding(), gpu.limits.max_buffer_size, vae_px, ph, pw).unwrap().tile;
        assert!(probe_only < pw, "the probe's bound alone already fits the frame ({probe_only}): the test shows nothing");
        assert_eq!((tiles.unet.tiles.len(), tiles.vae.tiles.len()), (1, 1), "{}", tiles.summary());
        let engine = Engine::tiled(&gpu, &unet, &vae, &opts, tiles, 1, dt, dt).unwrap();
        assert!(engine.vae_graph.largest_tensor_bytes() <= limit, "{} B", engine.vae_graph.largest_tensor_bytes());
    }

    /// What `--tile auto` picks for the released models (their configs, seeded random weights,
    /// the default dtypes: UNet f16 where the adapter has it, VAE f32) for a 720p output
    /// (180×320 LR, latent 184×320) on a GPU with a 2 GiB binding limit. Prints the measured
    /// bytes per latent pixel and the tiles; captures only the probe graphs. Slow on a software
    /// adapter (it builds the full-size models): `cargo test --lib released_tiles -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn released_tiles_for_720p_under_2_gib() {
        use crate::gpu::GpuOptions;
        use crate::models::registry::{default_dtype, load_model_from, Model, ModelKind};
        let gpu = Gpu::new(&GpuOptions { max_binding: Some(2 << 30), ..GpuOptions::from_env() }).unwrap();
        let (ud, vd) = (default_dtype(&gpu, ModelKind::DiffvsrUnet), default_dtype(&gpu, ModelKind::Te3dVaeDecoder));
        let mut store = crate::weights::WeightStore::synthetic(1);
        let Model::VideoUnet(unet) = load_model_from(&gpu, ModelKind::DiffvsrUnet, None, &mut store, ud).unwrap() else { unreachable!() };
        let Model::Te3dVaeDecoder(vae) = load_model_from(&gpu, ModelKind::Te3dVaeDecoder, None, &mut store, vd).unwrap() else { unreachable!() };
        let d = unet.config.base.cross_attention_dim;
        let e = PromptEmbeds::new(vec![0.1; 77 * d], vec![1, 77, d]).unwrap();
        let opts = JobOptions { steps: 1, guidance: 5.0, noise_level: 50, seed: 1, ilt: Ilt::Released, positive: e.clone(), negative: e, matrix: MatrixChoice::Auto, frames: None, tiles: TileOptions::default(), windows_per_call: WindowsPerCall::Auto };
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, 184, 320, ud, vd).unwrap();
        let (u, v) = tiles.measured.unwrap();
        eprintln!("{}: UNet ({ud:?}) {u:.0} B, VAE ({vd:?}) {v:.0} B per latent pixel; at this adapter's binding limit ({} B): {}", gpu.describe(), gpu.max_binding(), tiles.summary());
        // A software adapter binds less than 2 GiB: the choice at exactly 2 GiB, from the same
        // measurements.
        let two = 2u64 << 30;
        assert!(v * (184.0 * 320.0) > two as f64, "one whole 720p VAE chunk would fit 2 GiB");
        let at = |per_px: f64| {
            let t = crate::pipeline::tiles::tile_for_binding(two, u64::MAX, per_px, 184, 320).unwrap().tile;
            TilePlan::new(184, 320, t, crate::pipeline::tiles::default_overlap(t)).unwrap()
        };
        let t2 = JobTiles::new(at(u), at(v));
        let (vh, vw) = t2.vae.tile_size();
        assert!(v * (vh * vw) as f64 <= two as f64);
        eprintln!("at a 2 GiB binding limit: {}", t2.summary());
    }

    #[test]
    fn tile_flags_are_checked() {
        use crate::pipeline::tiles::TileSize;
        let f = |tile: TileSize, overlap: Option<usize>| TileOptions { tile, overlap }.check();
        assert!(f(TileSize::Auto, None).is_ok() && f(TileSize::Fixed(64), Some(16)).is_ok() && f(TileSize::Fixed(64), Some(0)).is_ok());
        assert!(f(TileSize::Fixed(64), Some(12)).unwrap_err().contains("--tile-overlap 12: must be a multiple of 8"));
        assert!(f(TileSize::Fixed(64), Some(64)).unwrap_err().contains("--tile-overlap 64 must be below --tile 64"));
        assert!("60".parse::<TileSize>().unwrap_err().contains("--tile 60: must be a multiple of 8"));
        assert!("0".parse::<TileSize>().unwrap_err().contains("at least 8"));
        assert!("big".parse::<TileSize>().unwrap_err().contains("auto or a size"));
        assert_eq!("AUTO".parse::<TileSize>().unwrap(), TileSize::Auto);
        assert_eq!("128".parse::<TileSize>().unwrap(), TileSize::Fixed(128));
        // Auto with an overlap at least the tile it picked: named at plan time.
        let o = TileOptions { tile: TileSize::Auto, overlap: Some(32) };
        assert!(o.plan(64, 64, 32).unwrap_err().contains("picked by --tile auto"));
        assert_eq!(o.plan(16, 16, 32).unwrap().tiles.len(), 1);
    }

    #[test]
    fn prompt_embeds_are_checked() {
        assert!(PromptEmbeds::new(vec![0.0; 6], vec![1, 2, 3]).is_ok());
        assert!(PromptEmbeds::new(vec![0.0; 6], vec![2, 1, 3]).is_err());
        assert!(PromptEmbeds::new(vec![0.0; 5], vec![1, 2, 3]).is_err());
        assert!(PromptEmbeds::new(vec![f32::NAN; 6], vec![1, 2, 3]).is_err());
    }
}
