//! The job's GPU engine: the sampler step captured once per job and group size (the UNet on
//! the CFG pairs of up to N windows, or on their positive samples without guidance, the DDIM
//! step, the latents written back into the sample), the decode chunk captured once, both in one arena, at the tiles
//! [`tile_choice`](crate::pipeline::tile_choice) picked; and the host-side cut and blend of
//! tiles. The streaming loop that drives it is [`job`](crate::pipeline::job).
//!
//! The decode multiplies on f16 operands where `--f16-operands` allows (the tensor cores; f32
//! storage and accumulation). A chunk whose values overflow f16's range there comes out
//! non-finite, never quietly wrong (an infinite operand turns its products, the GroupNorm after
//! it and everything downstream to inf or NaN), so it is decoded again with f32 operands: a
//! second decode graph, captured the first time it is needed, in the same arena.

use std::cell::{Cell, RefCell};

use anyhow::{bail, ensure, Context, Result};

use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::ops::concat::copy;
use crate::ops::layout::nfhwc_to_ncfhw;
use crate::ops::noise::{gaussian_noise, source_frames};
use crate::ops::sampler::{add_noise_into, scale_into, StepSlots};
use crate::pipeline::chunks::{fuse_chunk_into, ChunkWeights};
use crate::pipeline::interrupt;
use crate::pipeline::graphs::{check_decoded, check_job_models, plan_graphs, record_step, StepInputs};
use crate::pipeline::graphs::{DECODE_CHUNK, LATENT_CHANNELS, LR_CHANNELS};
use crate::pipeline::noise::Stream;
use crate::pipeline::options::JobOptions;
use crate::pipeline::scheduler::DdimStep;
use crate::pipeline::tile_choice::JobTiles;
use crate::pipeline::tiles::TilePlan;
use crate::pipeline::windows::WINDOW;
use crate::step_values::{Scalar, StepValues};
use crate::{DType, Gpu, Recorder, Tensor};

/// What a window's noise is keyed by: the seed, and per frame of the window the absolute padded
/// frame whose noise it takes (`ops::noise::source_frames`: rescheduled for the initial
/// latents, the frame itself for the LR augmentation), as u32 tables on the GPU; and the LR
/// augmentation's (√ᾱ, √(1−ᾱ)).
pub(crate) struct WindowNoise {
    seed: u64,
    latent_frames: Tensor,
    lr_frames: Tensor,
    lr_coeffs: [f64; 2],
}

impl WindowNoise {
    /// The window starting at padded frame `start`.
    pub(crate) fn new(gpu: &Gpu, seed: u64, start: usize, lr_coeffs: [f64; 2]) -> Result<WindowNoise> {
        let frames = start as u64..(start + WINDOW) as u64;
        let table = |stream| -> Result<Tensor> { Tensor::from_u32(gpu, &source_frames(seed, stream, frames.clone())?, &[WINDOW]) };
        Ok(WindowNoise { seed, latent_frames: table(Stream::Latent)?, lr_frames: table(Stream::LowRes)?, lr_coeffs })
    }
}

/// One captured sampler step for `k` windows in one UNet call, with its inputs.
struct StepGraph {
    inputs: StepInputs,
    graph: crate::kernel::Graph,
}

/// The per-job GPU state: the captured sampler steps (for the UNet's tile size; one per group
/// size up to the job's windows per call, since a run's last group may be short) and one
/// captured decode chunk (for the VAE's tile size), and the tiles.
pub(crate) struct Engine<'g> {
    pub(crate) gpu: &'g Gpu,
    /// `steps[k − 1]` runs k windows per UNet call.
    steps: Vec<StepGraph>,
    values: StepValues,
    /// The ILT weights ÷ the VAE's scaling factor ([`fuse_chunk_into`]).
    chunk_weights: ChunkWeights,
    vae_in: Tensor,
    vae_out: Tensor,
    vae_graph: crate::kernel::Graph,
    vae: &'g Te3dVaeDecoder,
    /// Whether `vae_graph` multiplies on f16 operands and a chunk that overflows them is
    /// decoded again with f32 operands ([`JobOptions::redecode_overflow`]).
    redecode_overflow: bool,
    /// The decode on f32 operands, reading `vae_in`, and its output: captured at the first
    /// overflow.
    exact_vae: RefCell<Option<(crate::kernel::Graph, Tensor)>>,
    /// Decodes (chunks, or VAE tiles of one) run again with f32 operands.
    pub(crate) redecoded: Cell<usize>,
    pub(crate) tiles: JobTiles,
}

/// What one window of a group brings: its 8 padded LR frames `[3][8][ph][pw]` in [−1, 1] and
/// its noise.
pub(crate) struct WindowInput {
    pub(crate) lr: Vec<f32>,
    pub(crate) noise: WindowNoise,
}

impl<'g> Engine<'g> {
    /// One tile of `ph`×`pw` for both models, one window per UNet call.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    fn new(gpu: &'g Gpu, unet: &VideoUNet, vae: &'g Te3dVaeDecoder, opts: &JobOptions, ph: usize, pw: usize, unet_dtype: DType, vae_dtype: DType) -> Result<Engine<'g>> {
        Engine::tiled(gpu, unet, vae, opts, JobTiles::whole(ph, pw), 1, unet_dtype, vae_dtype)
    }

    /// The graphs for the tiles' sizes (the UNet's steps at the UNet tile for 1 to
    /// `per_call` windows per call, the decode at the VAE tile).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tiled(gpu: &'g Gpu, unet: &VideoUNet, vae: &'g Te3dVaeDecoder, opts: &JobOptions, tiles: JobTiles, per_call: usize, unet_dtype: DType, vae_dtype: DType) -> Result<Engine<'g>> {
        check_job_models(unet, opts)?;
        if tiles.unet.tiles.len() > 1 && per_call > 1 {
            bail!("internal: windows are grouped only when the frame is one UNet tile");
        }
        let values = StepValues::new(gpu, &StepSlots::NAMES)?;

        // The steps and the decode never run at the same time: one arena holds about the largest
        // of the plans, not their sum. Safe because nothing of a step's activations is read after
        // it runs (its result goes into its latents), and the decode's output is read as soon as
        // it has run, before the next step (the arena refuses any other use: `kernel::Arena`). The decode is planned first: its tensors (at 4× the
        // latent's size) are the larger, and a later plan reuses only buffers that hold its
        // tensors; then the steps from the most windows per call down.
        // Kernel shapes the tuner has not met are timed as they are captured, each candidate on
        // tensors of its own: done first, on graphs planned and never allocated, so that those
        // tensors never come on top of the decode's arena (the memory plan counts the arena).
        if gpu.tuner().times() {
            let (ut, vt) = (tiles.unet.tile_size(), tiles.vae.tile_size());
            plan_graphs(gpu, unet, vae, opts, Some(ut), Some(vt), per_call.max(1), (unet_dtype, vae_dtype), &crate::kernel::Arena::dry(gpu))?;
        }
        let arena = crate::kernel::Arena::for_gpu(gpu);
        let (vh, vw) = tiles.vae.tile_size();
        let vae_in = Tensor::empty(gpu, &[1, LATENT_CHANNELS, DECODE_CHUNK, vh, vw], vae_dtype)?;
        let mut rec = Recorder::capture_in(gpu, &arena);
        let vae_out = vae.forward(&mut rec, &vae_in)?;
        let vae_graph = rec.into_graph()?;
        check_decoded(vae_out.shape(), vae_in.shape())?;
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
        let redecode_overflow = opts.redecode_overflow && crate::ops::conv::on_f16_operands(gpu, vae_dtype);
        Ok(Engine { gpu, steps, values, chunk_weights, vae_in, vae_out, vae_graph, vae, redecode_overflow, exact_vae: RefCell::new(None), redecoded: Cell::new(0), tiles })
    }

    /// The captured decode chunk (its arena holds the steps' too).
    #[cfg(test)]
    pub(crate) fn decode_graph(&self) -> &crate::kernel::Graph {
        &self.vae_graph
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
    pub(crate) fn decode_fused(&self, prev: Option<&Tensor>, cur: Option<&Tensor>) -> Result<Vec<f32>> {
        let gpu = self.gpu;
        let plan = &self.tiles.vae;
        let mut rec = gpu.recorder();
        if plan.tiles.len() == 1 {
            fuse_chunk_into(&mut rec, prev, cur, &self.chunk_weights, &self.vae_in)?;
            rec.submit();
            return self.run_decode();
        }
        let chunk = Tensor::empty(gpu, &[1, LATENT_CHANNELS, DECODE_CHUNK, plan.height, plan.width], DType::F32)?;
        fuse_chunk_into(&mut rec, prev, cur, &self.chunk_weights, &chunk)?;
        rec.submit();
        let latents = chunk.to_f32(gpu)?;
        // Each tile's pixels blended in as they come: the host holds the chunk and one tile.
        let px = &self.tiles.vae_px;
        let mut rgb = vec![0f32; LR_CHANNELS * DECODE_CHUNK * px.height * px.width];
        for t in 0..plan.tiles.len() {
            let out = self.decode(&cut_planes(plan, &latents, LATENT_CHANNELS * DECODE_CHUNK, t))?;
            add_tile_planes(px, &mut rgb, LR_CHANNELS * DECODE_CHUNK, t, &out);
        }
        Ok(rgb)
    }

    /// Denoises a group of windows (at most the engine's windows per call) through all steps.
    /// One UNet tile covering the frame: [`Engine::load_sample`] builds each window's sample
    /// on the GPU in its batch slot, all steps run once for the group, and each window's final
    /// latents stay on the GPU (copied out of the step's state). Several tiles (one window per
    /// group): per tile, the sample of the tile, all steps, and the tile's final latents read
    /// back; the tiles are blended with the plan's feathered weights. Returns each window's final
    /// latents `[1, 4, 8, ph, pw]`, f32, on the GPU.
    pub(crate) fn denoise_group(&mut self, group: &[WindowInput], steps: &[DdimStep], guidance: f32, mut on_step: impl FnMut(usize)) -> Result<Vec<Tensor>> {
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
        let mut whole = vec![0f32; LATENT_CHANNELS * WINDOW * plan.height * plan.width];
        for (t, tile) in plan.tiles.iter().enumerate() {
            self.load_sample(1, 0, &cut_planes(&plan, &group[0].lr, LR_CHANNELS * WINDOW, t), &group[0].noise, tile.rows.start as u32, tile.cols.start as u32)?;
            self.run_steps(1, steps, guidance, |s| on_step(t * n + s))?;
            add_tile_planes(&plan, &mut whole, LATENT_CHANNELS * WINDOW, t, &self.step(1).inputs.latents.to_f32(self.gpu)?);
        }
        Ok(vec![Tensor::from_f32(self.gpu, &whole, &[1, LATENT_CHANNELS, WINDOW, plan.height, plan.width], DType::F32)?])
    }

    /// Writes one tile's sample on the GPU into batch slot `slot` of the `k`-window step: the
    /// f32 latents `[4][8][th][tw]` from the initial noise (rescheduled, keyed by absolute frame
    /// and the tile's position (y0, x0) in the padded frame), and each CFG half of the sample
    /// `[7][8][th][tw]`: channels 0–3 those latents, channels 4–6 the LR tile (`[3][8][th][tw]`)
    /// augmented with its own noise (`ops::sampler::add_noise_into`).
    fn load_sample(&self, k: usize, slot: usize, lr_tile: &[f32], window: &WindowNoise, y0: u32, x0: u32) -> Result<()> {
        let gpu = self.gpu;
        let step = self.step(k);
        let s = step.inputs.sample.shape().to_vec();
        let (th, tw, dt) = (s[3], s[4], step.inputs.sample.dtype());
        let lr = Tensor::from_f32(gpu, lr_tile, &[1, LR_CHANNELS, WINDOW, th, tw], dt)?;
        let latents = step.inputs.latents.narrow(0, slot, 1)?;
        let mut rec = gpu.recorder();
        let z = gaussian_noise(&mut rec, &window.latent_frames, window.seed, Stream::Latent, y0, x0, [th, tw, LATENT_CHANNELS], DType::F32)?;
        let z = nfhwc_to_ncfhw(&mut rec, &z.reshape(&[1, WINDOW, th, tw, LATENT_CHANNELS])?)?;
        copy(&mut rec, &z, &latents)?;
        let e = gaussian_noise(&mut rec, &window.lr_frames, window.seed, Stream::LowRes, y0, x0, [th, tw, LR_CHANNELS], dt)?;
        let e = nfhwc_to_ncfhw(&mut rec, &e.reshape(&[1, WINDOW, th, tw, LR_CHANNELS])?)?;
        let [c0, c1] = window.lr_coeffs.map(|c| Scalar::Const(c as f32));
        for half in step.inputs.halves_of(slot) {
            let b = step.inputs.sample.narrow(0, half, 1)?;
            scale_into(&mut rec, &latents, &Scalar::Const(1.0), &b.narrow(1, 0, LATENT_CHANNELS)?)?;
            add_noise_into(&mut rec, &lr, &e, &c0, &c1, &b.narrow(1, LATENT_CHANNELS, LR_CHANNELS)?)?;
        }
        rec.submit();
        Ok(())
    }

    /// Denoises a group of windows through all steps from samples built on the host (each
    /// `[2, 7, 8, h, w]`, both halves' latents alike; without guidance only the first half is
    /// taken); returns their final latents on the GPU.
    #[cfg(test)]
    fn denoise(&mut self, samples: &[&[f32]], steps: &[DdimStep], guidance: f32, on_step: impl FnMut(usize)) -> Result<Vec<Tensor>> {
        let k = samples.len();
        let step = self.step(k);
        let half = step.inputs.sample.numel() / (step.inputs.halves * k);
        let lat = step.inputs.latents.numel() / k;
        for (slot, s) in samples.iter().enumerate() {
            for (h, b) in step.inputs.halves_of(slot).enumerate() {
                step.inputs.sample.narrow(0, b, 1)?.write_f32(self.gpu, &s[h * half..(h + 1) * half])?;
            }
            step.inputs.latents.narrow(0, slot, 1)?.write_f32(self.gpu, &s[..lat])?;
        }
        self.run_steps(k, steps, guidance, on_step)?;
        (0..k).map(|slot| self.final_latents(k, slot)).collect()
    }

    /// All DDIM steps of the `k`-window step on its latents in place (one replay of the
    /// captured step each), paced by [`one_ahead`]: `on_step` hears of each step once the GPU
    /// has run it. Nothing is read back.
    fn run_steps(&mut self, k: usize, steps: &[DdimStep], guidance: f32, mut on_step: impl FnMut(usize)) -> Result<()> {
        let gpu = self.gpu;
        one_ahead(
            steps.len(),
            |i| {
                let s = &steps[i];
                StepSlots::set(&mut self.values, &s.coeffs, guidance)?;
                self.values.upload(self.gpu)?;
                let step = self.step(k);
                step.inputs.timestep.write_f32(self.gpu, &vec![s.t as f32; step.inputs.halves * k])?;
                step.graph.run(self.gpu)
            },
            |index| gpu.wait_for(index),
            |done| {
                on_step(done);
                interrupt::check()
            },
        )
    }

    /// A copy of slot `slot`'s latents after the last step of the `k`-window step (the next
    /// group's steps overwrite them).
    fn final_latents(&self, k: usize, slot: usize) -> Result<Tensor> {
        let latents = self.step(k).inputs.latents.narrow(0, slot, 1)?;
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
        self.run_decode()
    }

    /// Runs the decode of what `vae_in` holds and reads its RGB back; where that overflowed f16
    /// operands (a non-finite value) and [`Engine::redecode_overflow`], runs the decode on f32
    /// operands instead (the graph's input is left as written: nothing is done in place on it).
    fn run_decode(&self) -> Result<Vec<f32>> {
        let gpu = self.gpu;
        self.vae_graph.run(gpu)?;
        let rgb = self.vae_out.to_f32(gpu)?;
        if !self.redecode_overflow || rgb.iter().all(|v| v.is_finite()) {
            return Ok(rgb);
        }
        let mut exact = self.exact_vae.borrow_mut();
        if exact.is_none() {
            log::warn!("a decode chunk overflowed f16 operands: decoding it, and any other that does, again with f32 operands (slower; --f16-operands off decodes every chunk so)");
            let arena = self.vae_graph.arena().clone();
            let graph = gpu.with_exact_operands(|| -> Result<_> {
                let mut rec = Recorder::capture_in(gpu, &arena);
                let out = self.vae.forward(&mut rec, &self.vae_in)?;
                Ok((rec.into_graph()?, out))
            });
            *exact = Some(graph.context("capturing the decode on f32 operands, for a chunk that overflowed f16 operands")?);
        }
        let (graph, out) = exact.as_ref().expect("captured above");
        graph.run(gpu)?;
        self.redecoded.set(self.redecoded.get() + 1);
        out.to_f32(gpu)
    }
}

/// Submits `n` pieces of GPU work in order, keeping the host one piece ahead of the GPU: piece
/// `i + 1` is submitted before waiting for piece `i`, after which `done(i + 1)` is called. The
/// GPU never waits for the host (the next piece is queued while one runs), and the host never
/// runs far ahead of the GPU: submitting does not wait, so without the waits every step of a
/// window would be queued in a moment, the progress would count steps submitted, not run (its
/// ETA timing the submissions), and a stop would wait for the whole queue to drain.
fn one_ahead<I>(n: usize, mut submit: impl FnMut(usize) -> Result<I>, mut wait: impl FnMut(I) -> Result<()>, mut done: impl FnMut(usize) -> Result<()>) -> Result<()> {
    let mut running = None;
    for i in 0..n {
        let index = submit(i)?;
        if let Some(before) = running.replace(index) {
            wait(before)?;
            done(i)?;
        }
    }
    if let Some(last) = running {
        wait(last)?;
        done(n)?;
    }
    Ok(())
}

/// Captures the sampler step for `k` windows per UNet call at a `th`×`tw` latent in `arena`
/// ([`record_step`]), with its inputs on the GPU.
#[allow(clippy::too_many_arguments)]
fn capture_step(gpu: &Gpu, arena: &crate::kernel::Arena, unet: &VideoUNet, opts: &JobOptions, tile: (usize, usize), k: usize, values: &StepValues, dtype: DType) -> Result<StepGraph> {
    let inputs = StepInputs::new(gpu, opts, tile, k, dtype)?;
    let mut rec = Recorder::capture_in(gpu, arena);
    record_step(&mut rec, unet, &inputs, values)?;
    let graph = rec.into_graph()?;
    Ok(StepGraph { inputs, graph })
}

/// Windows through the job's engine, for the pipeline golden test (`pipeline::golden_window`):
/// builds the [`Engine`] for an `h`×`w` latent with `per_call` windows per UNet call, denoises
/// `samples` (each `[2, 7, 8, h, w]` laid out as [`run_job`](crate::pipeline::job::run_job) builds it; window i starts at frame
/// 4i) in groups of `per_call` through `opts.steps` released DDIM steps, and, when `decode`,
/// decodes every chunk as [`run_job`](crate::pipeline::job::run_job) does ([`Engine::decode_fused`]: the ILT fuse on the GPU, ÷
/// the VAE's scaling factor). Returns each window's final latents `[4][8][h][w]` and the decoded
/// chunks `[3][4][4h][4w]` (before the clamp), one more than the windows.
#[cfg(test)]
pub(crate) type FinalsAndChunks = (Vec<Vec<f32>>, Vec<Vec<f32>>);

#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn denoise_and_decode_windows(gpu: &Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, h: usize, w: usize, per_call: usize, unet_dtype: DType, vae_dtype: DType, samples: &[Vec<f32>], decode: bool) -> Result<FinalsAndChunks> {
    let steps = crate::pipeline::scheduler::Ddim::released().steps(opts.steps).map_err(anyhow::Error::msg)?;
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

/// Adds tile `t`'s `[planes][th][tw]` into the feathered blend `out` (`[planes][h][w]`, from
/// zeros): after every tile in order, each plane is [`TilePlan::blend`] of the tiles' planes.
fn add_tile_planes(plan: &TilePlan, out: &mut [f32], planes: usize, t: usize, data: &[f32]) {
    let (size, n) = (plan.height * plan.width, data.len() / planes);
    assert_eq!((out.len(), data.len()), (planes * size, planes * n));
    for (o, d) in out.chunks_exact_mut(size).zip(data.chunks_exact(n)) {
        plan.add_tile(o, t, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::unet::UNetInputs;
    use crate::pipeline::scheduler::LowResNoise;
    use crate::pipeline::test_models::{micro_models, test_options, tiny_models};
    use crate::pipeline::tiles::SCALE;
    use crate::testutil::{assert_close, fresh_seed, test_gpu, Rng};

    /// The steps' pacing: step i + 1 is submitted before step i is waited for (the GPU is never
    /// left idle), each step is reported only after its wait, and a stop reported after a step
    /// submits nothing more.
    #[test]
    fn steps_are_reported_once_run_with_the_next_one_queued() {
        for n in [0, 1, 2, 5] {
            let log = RefCell::new(Vec::new());
            let note = |s: String| {
                log.borrow_mut().push(s);
                Ok(())
            };
            one_ahead(n, |i| note(format!("submit {i}")).map(|_| i), |i| note(format!("wait {i}")), |d| note(format!("done {d}"))).unwrap();
            let mut want = Vec::new();
            for i in 0..n {
                want.push(format!("submit {i}"));
                if i > 0 {
                    want.extend([format!("wait {}", i - 1), format!("done {i}")]);
                }
            }
            if n > 0 {
                want.extend([format!("wait {}", n - 1), format!("done {n}")]);
            }
            assert_eq!(log.into_inner(), want, "{n} steps");
        }
        let submitted = Cell::new(0);
        let stop = one_ahead(5, |i| anyhow::Ok(submitted.replace(i + 1)), |_| Ok(()), |d| if d == 2 { bail!("stopped") } else { Ok(()) });
        assert!(stop.is_err());
        assert_eq!(submitted.get(), 3, "steps 0 to 2 queued when step 2 is reported, no more");
    }

    /// The UNet's CFG-pair forward (halves shared, as the step runs it) at an `h`×`w` latent (f32), captured alone in an arena of its own.
    fn unet_alone(gpu: &crate::Gpu, unet: &VideoUNet, opts: &JobOptions, h: usize, w: usize) -> crate::kernel::Graph {
        let d = unet.config.base.cross_attention_dim;
        let sample = Tensor::empty(gpu, &[2, 7, WINDOW, h, w], DType::F32).unwrap();
        let ctx = Tensor::empty(gpu, &[2, 77, d], DType::F32).unwrap();
        let ts = Tensor::from_f32(gpu, &[1.0; 2], &[2], DType::F32).unwrap();
        let labels = Tensor::from_u32(gpu, &[opts.noise_level; 2], &[2]).unwrap();
        let mut rec = Recorder::capture(gpu);
        unet.forward(&mut rec, &UNetInputs { sample: &sample, timestep: &ts, class_labels: Some(&labels), encoder_hidden_states: &ctx, cfg_pair: true }).unwrap();
        rec.into_graph().unwrap()
    }

    /// Dispatches of [`unet_alone`]'s graph.
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
    /// the absolute frames and positions, `ops::sampler::cpu::add_noise`, both CFG halves alike;
    /// the f32 latents are the sample's. The captured step is the UNet and three sampler dispatches.
    /// (What the step computes, replayed over steps, is checked against the official pipeline by
    /// `pipeline::golden_window`.)
    #[test]
    fn gpu_window_sample_matches_the_host_construction() {
        use crate::pipeline::noise;
        use crate::ops::sampler::cpu::add_noise;
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
        let got = engine.step(1).inputs.sample.to_f32(&gpu).unwrap();
        assert_eq!(engine.step(1).inputs.latents.to_f32(&gpu).unwrap(), got[..LATENT_CHANNELS * WINDOW * h * w], "the f32 latents are the sample's");

        let batch = (LATENT_CHANNELS + LR_CHANNELS) * WINDOW * plane;
        let mut want = vec![0f32; 2 * batch];
        for k in 0..WINDOW {
            let f = (start + k) as u64;
            let z = noise::latent_noise(seed, f, y0, x0, h, w);
            let n = noise::noise_region(seed, Stream::LowRes, f as u32, LR_CHANNELS, y0, x0, h, w);
            let frame: Vec<f32> = (0..LR_CHANNELS).flat_map(|c| lr[(c * WINDOW + k) * plane..(c * WINDOW + k + 1) * plane].to_vec()).collect();
            let aug = add_noise(&frame, &n, coeffs[0] as f32, coeffs[1] as f32);
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

    /// Every tile's planes added in order, as the engine does.
    fn blend_planes(plan: &TilePlan, tiles: &[Vec<f32>], planes: usize) -> Vec<f32> {
        let mut out = vec![0f32; planes * plan.height * plan.width];
        for (t, d) in tiles.iter().enumerate() {
            add_tile_planes(plan, &mut out, planes, t, d);
        }
        out
    }

    /// The blend written out independently, as it was before tiles were added one by one:
    /// every tile's weighted values summed into each plane in tile order, from zeros.
    fn blend_reference(plan: &TilePlan, tiles: &[Vec<f32>], planes: usize) -> Vec<f32> {
        let (h, w) = (plan.height, plan.width);
        let mut out = vec![0f32; planes * h * w];
        for (t, data) in plan.tiles.iter().zip(tiles) {
            let (th, tw) = (t.rows.len(), t.cols.len());
            for p in 0..planes {
                for i in 0..th {
                    for j in 0..tw {
                        out[p * h * w + (t.rows.start + i) * w + t.cols.start + j] += t.weights[i * tw + j] * data[p * th * tw + i * tw + j];
                    }
                }
            }
        }
        out
    }

    /// The job's tile paths on the host: cutting a window's planes into UNet tiles and blending
    /// them back gives the window (a constant stays constant across seams; the planes added tile
    /// by tile are, to the bit, the blend summed in tile order, on a grid where four tiles
    /// overlap at the corners); and the VAE path —
    /// latent tiles cut, each "decoded" ×4 (here nearest-neighbour, which commutes with
    /// cutting), blended with the ×4 plan — equals decoding the whole chunk.
    #[test]
    fn tiles_cut_and_blend_back_in_latents_and_in_pixels() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (ph, pw) = (24, 40);
        let unet = TilePlan::new(ph, pw, (24, 24), 8).unwrap();
        let vae = TilePlan::new(ph, pw, (16, 16), 8).unwrap();
        let tiles = JobTiles::new(unet, vae);
        assert_eq!((tiles.unet.tiles.len(), tiles.vae.tiles.len()), (2, 2 * 4));
        assert!(tiles.summary().contains("2x1 = 2 tiles of 24x24") && tiles.summary().contains("4x2 = 8 tiles of 16x16"), "{}", tiles.summary());
        let planes = 5;
        let data = rng.normals(planes * ph * pw, 1.0);
        let plan = &tiles.unet;
        let cut: Vec<Vec<f32>> = (0..plan.tiles.len()).map(|t| cut_planes(plan, &data, planes, t)).collect();
        assert!(cut.iter().all(|c| c.len() == planes * 24 * 24));
        assert_close(&format!("UNet tiles blended back (seed {seed})"), &blend_planes(plan, &cut, planes), &data, 1e-6);
        // Tiles of other values than the frame's (so the blend is no identity), on the VAE's
        // 4x2 grid.
        let grid = &tiles.vae;
        let noisy: Vec<Vec<f32>> = (0..grid.tiles.len()).map(|t| cut_planes(grid, &data, planes, t).iter().map(|v| v + rng.normal()).collect()).collect();
        let (got, want) = (blend_planes(grid, &noisy, planes), blend_reference(grid, &noisy, planes));
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "tiles added one by one differ from the blend in tile order (seed {seed})");
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

    /// With tuning on, the graphs `plan_graphs` records (never allocated), which
    /// `Engine::tiled` plans before its arena exists, meet every kernel shape its captures
    /// meet: the captures then time nothing, so no candidate's tensors are allocated beside the
    /// engine's arena. (Micro models at an 8×8 latent:
    /// lavapipe times every candidate.)
    #[test]
    fn tuning_is_done_before_the_arena_exists() {
        use crate::gpu::{GpuOptions, TuneMode};
        let gpu = Gpu::new(&GpuOptions { tune: TuneMode::On, tune_cache: None, ..GpuOptions::from_env() }).unwrap();
        let dt = DType::F32;
        let (unet, vae) = micro_models(&gpu, dt);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(6), 1, 1);
        let (h, w) = (8, 8);
        plan_graphs(&gpu, &unet, &vae, &opts, Some((h, w)), Some((h, w)), 1, (dt, dt), &crate::kernel::Arena::dry(&gpu)).unwrap();
        let planned = gpu.tuner().picks().len();
        assert!(planned > 0, "nothing was tuned: the test shows nothing");
        Engine::tiled(&gpu, &unet, &vae, &opts, JobTiles::whole(h, w), 1, dt, dt).unwrap();
        assert_eq!(gpu.tuner().picks().len(), planned, "the captures met shapes the planned graphs did not");
    }

    /// A decode chunk whose latents reach past f16's range (in f32 storage) comes out non-finite
    /// on f16 operands, never quietly wrong, and the engine decodes it again on f32 operands:
    /// bit for bit what an engine on f32 operands decodes. A chunk in range runs once, on f16
    /// operands. Without `redecode_overflow` the non-finite chunk is returned, for the job's
    /// error. Needs an adapter with cooperative matrices (coop lavapipe, a GPU).
    #[test]
    fn a_decode_that_overflows_f16_operands_runs_again_on_f32_operands() {
        use crate::gpu::GpuOptions;
        let dt = DType::F32;
        let gpu = Gpu::new(&GpuOptions { f16_operands: true, ..GpuOptions::from_env() }).unwrap();
        gpu.set_poison(true);
        if !crate::ops::conv::on_f16_operands(&gpu, dt) {
            eprintln!("skipped: this adapter has no f16 operands (no cooperative matrices)");
            return;
        }
        let exact_gpu = Gpu::new(&GpuOptions { f16_operands: false, ..GpuOptions::from_env() }).unwrap();
        exact_gpu.set_poison(true);
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (unet, vae) = tiny_models(&gpu, dt);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut rng, seed, 1);
        let (h, w) = (8, 8);
        let engine = Engine::new(&gpu, &unet, &vae, &opts, h, w, dt, dt).unwrap();
        assert!(engine.redecode_overflow);
        let (exact_unet, exact_vae) = tiny_models(&exact_gpu, dt);
        let exact = Engine::new(&exact_gpu, &exact_unet, &exact_vae, &opts, h, w, dt, dt).unwrap();
        assert!(!exact.redecode_overflow, "f32 operands have nothing to decode again");

        let n = LATENT_CHANNELS * DECODE_CHUNK * h * w;
        let in_range = rng.normals(n, 1.0);
        let huge: Vec<f32> = rng.normals(n, 1.0).iter().map(|v| v * 1e6).collect();
        let on_f16 = engine.decode(&in_range).unwrap();
        assert_eq!(engine.redecoded.get(), 0, "a chunk in range runs once");
        let want = exact.decode(&in_range).unwrap();
        assert_ne!(on_f16, want, "the chunk in range ran on f32 operands: the test shows nothing");
        assert_close(&format!("in range, f16 operands vs f32, seed {seed}"), &on_f16, &want, 2e-3);

        let want = exact.decode(&huge).unwrap();
        assert!(want.iter().all(|v| v.is_finite()), "the huge latents overflow even f32 operands: the test shows nothing");
        let got = engine.decode(&huge).unwrap();
        assert_eq!(engine.redecoded.get(), 1);
        assert!(got == want, "the decode again on f32 operands differs from the f32 engine's (seed {seed})");
        // The exact graph stays; the next chunk in range runs on f16 operands again.
        assert_eq!(engine.decode(&in_range).unwrap(), on_f16);
        assert!(engine.decode(&huge).unwrap() == want);
        assert_eq!(engine.redecoded.get(), 2);

        let stopping = Engine::new(&gpu, &unet, &vae, &JobOptions { redecode_overflow: false, ..opts.clone() }, h, w, dt, dt).unwrap();
        let got = stopping.decode(&huge).unwrap();
        assert!(got.iter().any(|v| !v.is_finite()), "f16 operands did not overflow on latents of 1e6: the test shows nothing");
        assert_eq!(stopping.redecoded.get(), 0);
    }
}
