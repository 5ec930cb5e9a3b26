//! The upscaling job (issue 9): a y4m stream in, a y4m stream at 4× out, frame by frame.
//!
//! What it does, per spec §4.3 (the released pipeline) with this engine's seeded noise:
//!
//! * Reads frames as they arrive; each is converted to RGB in [−1, 1] on the GPU
//!   ([`ops::color`](crate::ops::color): chroma upsampling, matrix, range); the SD×4 UNet's
//!   latent is the LR frame, at its own size where one tile covers it for both models (as
//!   released), else reflect-padded to a multiple of 8 for the tiles ([`LatentPad`]).
//! * Windows of 8 frames, stride 4 ([`windows`]); a window runs as soon as its frames are read
//!   (or the stream has ended and the tail is mirror-padded). With `--windows-per-call N`
//!   ([`groups`]), up to N windows run together, as one UNet call of batch 2N per step (N
//!   without guidance), once the last of them can run.
//! * Per window and tile, built on the GPU (`Engine::load_sample`): the initial latents from
//!   the Philox noise kernel (`ops::noise`, keyed by the seed, the absolute padded frame, so
//!   rescheduled as released, and the absolute pixel), and the LR frames with their noise
//!   augmentation (`ops::sampler::add_noise_into`); then one captured graph per job and group
//!   size (UNet on the CFG pair [negative, positive] of each window of the group; the
//!   guidance combine and the DDIM step in one kernel,
//!   `ops::sampler::guided_ddim_step_into`, on f32 latents whatever the UNet's dtype; the new
//!   latents into both batch elements; at a guidance of 1 or less, as released, the UNet on
//!   the positive prompt alone and a plain DDIM step), replayed every step with the timestep and the per-step
//!   scalars (a, b, guidance) written before the replay. Nothing is read back inside the step
//!   loop.
//! * Spatial tiles ([`tiles`](crate::pipeline::tiles), `--tile`): when the padded latent is
//!   larger than a tile, each window runs tile by tile, every tile through all DDIM steps (the
//!   step graph is captured once for the tile size; all tiles have that size). A tile's sample
//!   is cut from the whole frame's, so its noise is the whole-frame noise at those pixels
//!   (keyed by absolute position) and nothing depends on where tiles fall. One tile: the final
//!   latents stay on the GPU. Several: the tiles' final latents are read back once per tile and
//!   blended on the host with feathered weights summing to 1 ([`TilePlan::blend`](crate::pipeline::tiles::TilePlan::blend)), not pasted
//!   as released (spec §4.3). `--tile auto`
//!   picks the tile per model from its largest tensor, measured on a small probe graph, and
//!   the adapter's binding limit, so the VAE decoder (at ×4 resolution) and the UNet may get
//!   different tiles.
//! * ILT fuse of the whole frame's final latents on the GPU, straight into the decoder's input
//!   ([`fuse_chunk_into`](crate::pipeline::chunks::fuse_chunk_into), ÷ the VAE's scaling factor folded into the weights), TE-3DVAE
//!   decode in chunks of 4 frames (one captured graph for the VAE tile size, replayed per chunk
//!   and tile; the tiles' ×4 pixels blended with the same plan's feathered weights recomputed
//!   at ×4), crop to 4W × 4H, then clamp and RGB → YUV in the input's chroma format, depth and
//!   range on the GPU. One tile covering the frame skips every cut and blend: the untiled job,
//!   byte for byte.
//! * Each output frame is written as soon as no later window can change it; input frames no
//!   later window needs are dropped, so memory is bounded by the window size.
//!
//! The tiles are blended on the host: their pixels by design (a GPU blend would hold a whole
//! chunk's pixels on the GPU, memory tiling exists to spare), their latents because each
//! tile's are read back once, after all its steps (README "Upscaling"); the untiled job reads
//! back only decoded pixels. `--frames START:END` runs only the
//! windows touching the segment (see [`windows::segment_plan`]); `--plan`
//! ([`plan`](crate::pipeline::plan)) prints what a run would do.
//!
//! This file is the streaming loop ([`run_job`]). Its setup before the first frame (padding,
//! tiles, windows per call, the engine; planned again for less where the GPU runs out of
//! memory) is [`prepare`](crate::pipeline::prepare). The GPU side it drives (the captured steps
//! and decode, the tiles) is [`engine`](crate::pipeline::engine); the `upscale` command around
//! it (models, files, progress, the GIF preview) is [`upscale`](crate::pipeline::upscale).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::ops::color;
use crate::pipeline::engine::{Engine, WindowInput, WindowNoise};
use crate::pipeline::graphs::{DECODE_CHUNK, LR_CHANNELS};
use crate::pipeline::groups::{self, Grouping};
use crate::pipeline::interrupt;
use crate::pipeline::prepare::{prepare, Prepared};
use crate::pipeline::options::JobOptions;
use crate::pipeline::progress::Progress;
use crate::pipeline::scheduler::{Ddim, LowResNoise};
use crate::pipeline::source::FrameSource;
use crate::pipeline::tiles::{LatentPad, SCALE};
use crate::pipeline::windows::{self, WINDOW};
use crate::video::color::YuvParams;
use crate::video::y4m::{Frame, FrameFormat, Writer};
use crate::{DType, Gpu, Tensor};

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
    /// `--tile auto` where the GPU's memory was known (the driver's figure, `--gpu-memory`, or
    /// less after running out of memory: `prepare`): the bytes it planned the job for, beside
    /// the weights.
    pub planned_memory: Option<u64>,
    /// Windows per UNet call, and why.
    pub windows_per_call: Grouping,
    /// Decodes (chunks, or VAE tiles of one) that overflowed f16 operands and ran again on f32
    /// operands ([`JobOptions::redecode_overflow`]).
    pub redecoded: usize,
    /// Wall time spent denoising (every window's steps, until the GPU has finished them) and
    /// decoding (the chunks, their conversion to the output format and their writing).
    pub denoising: std::time::Duration,
    pub decoding: std::time::Duration,
}

/// One input frame at the latent's size (padded where the job is tiled): RGB `[3][ph][pw]` in
/// [−1, 1].
type PaddedFrame = Vec<f32>;

/// Runs the whole job; see the module doc. Errors name the frame; frames already written are
/// whole. The writer is flushed after every frame so a downstream reader sees them at once.
#[allow(clippy::too_many_arguments)]
pub fn run_job<W: Write>(
    gpu: &Gpu,
    unet: &VideoUNet,
    unet_dtype: DType,
    vae: &Te3dVaeDecoder,
    vae_dtype: DType,
    mut reader: impl FrameSource,
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
    let in_params = YuvParams { matrix: opts.matrix.resolve(in_fmt.width, in_fmt.height), range: header.range, depth: header.depth };
    let out_params = YuvParams { matrix: opts.matrix.resolve(out_fmt.width, out_fmt.height), range: writer.header().range, depth: writer.header().depth };
    let (h, w) = (in_fmt.height as usize, in_fmt.width as usize);
    let steps = Ddim::released().steps(opts.steps).map_err(anyhow::Error::msg)?;
    let lr_coeffs = LowResNoise::released().coeffs(opts.noise_level).map_err(anyhow::Error::msg)?;
    progress(Progress::Preparing { tuning: gpu.tuner().is_on() });
    let Prepared { pad, grouping, mut engine } = prepare(gpu, unet, vae, opts, (h, w), (unet_dtype, vae_dtype), &mut progress)?;
    let (ph, pw) = pad.padded();
    let plane = ph * pw;
    let per_call = grouping.windows;
    let mut stats = JobStats { tiles: engine.tiles.summary(), planned_memory: engine.tiles.memory.map(|m| m.available), windows_per_call: grouping, ..JobStats::default() };

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
    // How many frames this run writes, once the clip's length is known (for progress; until
    // then END − START is only a bound, and the reporter may know the length from the file).
    let frames_total = |total: Option<usize>| total.map(|t| emit(Some(t)).len());

    // A stream cut inside a frame (an upstream ffmpeg stopped) ends the clip at its last whole
    // frame, as ffmpeg reads it: those frames are upscaled and written, then the cut is the
    // job's error.
    let mut cut: Option<anyhow::Error> = None;
    loop {
        if i > last_window {
            break;
        }
        // Read until the group's last window can run, or the stream ends.
        let group = groups::next_group(i, per_call, last_window);
        while total.is_none() && !windows::window_ready(group.end - 1, read, None) {
            interrupt::check()?;
            let next = match reader.next_frame() {
                Err(e) if e.downcast_ref::<crate::video::y4m::Y4mError>().is_some_and(|y| y.cut) => {
                    cut = Some(e);
                    None
                }
                r => r?,
            };
            match next {
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
        // A START past the end is an error, an empty stream too (without --frames it is not:
        // its output is the header alone).
        if let (Some(t), Some(r)) = (total, opts.frames) {
            if r.start >= t {
                return Err(cut.map_or_else(|| anyhow::anyhow!(r.past_the_end(t, "the input")), |e| CutInput::after(e, t, r.start..r.start)));
            }
        }
        if total == Some(0) {
            break;
        }
        let mut group = group;
        if let Some(t) = total {
            if i >= windows::window_count(t) {
                break;
            }
            group.end = group.end.min(windows::window_count(t));
        }
        let windows_total = total.map(windows::window_count);
        let inputs = group.clone().map(|w| window_input(gpu, w, total, &held, plane, opts.seed, lr_coeffs)).collect::<Result<Vec<_>>>()?;
        let n_steps = steps.len() * engine.tiles.unet.tiles.len();
        let k = inputs.len();
        let started = std::time::Instant::now();
        let zs = engine.denoise_group(&inputs, &steps, opts.guidance, |s| progress(Progress::Step { window: i, group: k, windows: windows_total, step: s, steps: n_steps }))?;
        // Waits for the GPU, so that the time is the steps' and not the decode's after them (a
        // pause of the queue once a group, not a readback in the loop).
        gpu.sync()?;
        stats.denoising += started.elapsed();
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
    stats.redecoded = engine.redecoded.get();
    match cut {
        Some(e) => Err(CutInput::after(e, read, want)),
        None => Ok(stats),
    }
}

/// The input ended inside a frame: the clip was taken to end at its last whole frame, and the
/// output frames `written` of them were upscaled and written.
#[derive(Debug)]
pub struct CutInput {
    /// The input's whole frames.
    pub whole_frames: usize,
    /// The output frames written (empty: none).
    pub written: std::ops::Range<usize>,
    cause: String,
}

impl CutInput {
    fn after(e: anyhow::Error, whole_frames: usize, written: std::ops::Range<usize>) -> anyhow::Error {
        CutInput { whole_frames, written, cause: format!("{e:#}") }.into()
    }
}

impl std::fmt::Display for CutInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.whole_frames;
        write!(f, "{}: the input ends inside frame {n}", self.cause)?;
        let (a, b) = (self.written.start, self.written.end);
        match (n, a < b) {
            (0, _) => write!(f, ", before any whole frame: no frame was written"),
            (_, false) => write!(f, ": its {n} whole frames end before --frames {a}: no frame was written"),
            (_, true) => write!(
                f,
                ", so the clip was taken to end at its {n} whole frames: output frames {a}..{b} were upscaled and written (a stream whose source stopped mid-frame{})",
                if b == n { "; make it again to upscale the rest" } else { "" }
            ),
        }
    }
}

impl std::error::Error for CutInput {}

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
    let started = std::time::Instant::now();
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
            // Decoded again on f32 operands where that was allowed: the UNet's latents, or the
            // decoder in f32, overflowed.
            let fix = if engine.gpu.has_f16() || engine.gpu.f16_operands() {
                "try --no-f16 (f32 storage and operands throughout)"
            } else {
                "it ran in f32 already: a huge --guidance, or the models' weights or configs (their scaling factors and epsilons), are the likely cause"
            };
            bail!("output frame {f}: a non-finite value (at {i}): the UNet or the VAE decoder overflowed its dtype; {fix}");
        }
        let frame = rgb_to_output_frame(engine.gpu, &out, out_fmt, out_params).with_context(|| format!("converting output frame {f} to YUV"))?;
        interrupt::check()?;
        writer.write_frame(&frame).with_context(|| format!("writing output frame {f}"))?;
        writer.flush().with_context(|| format!("writing output frame {f}"))?;
        stats.frames_out += 1;
        progress(Progress::Frames { done: stats.frames_out, total });
    }
    stats.decoding += started.elapsed();
    progress(Progress::Decoded { took: started.elapsed() });
    Ok(())
}

/// An input frame → the model's LR input, padded: `[3][ph][pw]` in [−1, 1]. Chroma upsampling,
/// the YUV matrix, the code range and the clamp to the RGB cube run on the GPU
/// (`ops::color::yuv_to_rgb`, whose CPU twin is `ops::color::cpu::yuv_to_rgb`); the reflect
/// padding (where the job pads) on the host.
fn frame_to_padded_rgb(gpu: &Gpu, frame: &Frame, params: &YuvParams, pad: &LatentPad) -> Result<PaddedFrame> {
    let hwc = color::frame_to_rgb_f32(gpu, frame, params, gpu.max_binding())?;
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
    color::rgb_f32_to_frame(gpu, hwc, format, params, gpu.max_binding())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::groups::WindowsPerCall;
    use crate::pipeline::test_models::{micro_models, test_options};
    use crate::pipeline::windows::{FrameRange, STRIDE};
    use crate::testutil::{test_gpu, Rng};
    use crate::video::y4m::Reader;
    use std::io::Read;

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

    /// A stream of a header only is an empty output, but a START past its end (`--frames 3:5`
    /// on an empty pipe, whose length nothing told before) is an error.
    #[test]
    fn an_empty_stream_has_no_frame_to_start_at() {
        let gpu = test_gpu();
        let dt = DType::F32;
        let (unet, vae) = micro_models(&gpu, dt);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1);
        let run = |frames: Option<FrameRange>| micro_job(&gpu, (&unet, &vae), 0, &JobOptions { frames, ..opts.clone() });
        assert_eq!(run(None).unwrap(), b"YUV4MPEG2 W20 H12 F25:1 C444\n", "the header alone");
        let e = run(Some(FrameRange { start: 3, end: Some(5) })).unwrap_err().to_string();
        assert!(e.contains("--frames 3:5 starts past the end: the input has no frames"), "{e}");
    }

    /// Without guidance (a scale of 1 or less) the job runs the UNet on the positive prompt
    /// alone, one sample per window (`JobOptions::cfg_halves`), and writes the bytes of a guided
    /// job whose negative prompt is the positive one.
    #[test]
    fn a_job_without_guidance_is_the_positive_prompt_alone() {
        let gpu = test_gpu();
        let dt = DType::F32;
        let (unet, vae) = micro_models(&gpu, dt);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(6), 4, 1);
        let run = |o: JobOptions| micro_job(&gpu, (&unet, &vae), 3, &o).unwrap();
        let unguided = run(JobOptions { guidance: 0.5, ..opts.clone() });
        assert!(unguided == run(JobOptions { guidance: 3.0, negative: opts.positive.clone(), ..opts }));
    }

    /// The job of the micro models (f32) on a clip of `n` micro frames: the bytes it writes.
    fn micro_job(gpu: &Gpu, (unet, vae): (&VideoUNet, &Te3dVaeDecoder), n: usize, opts: &JobOptions) -> Result<Vec<u8>> {
        let reader = Reader::new(std::io::Cursor::new(micro_clip(n).0))?;
        let mut writer = Writer::new(Vec::new(), reader.header().scaled(4)?)?;
        run_job(gpu, unet, DType::F32, vae, DType::F32, reader, &mut writer, opts, |_| {})?;
        Ok(writer.into_inner())
    }

    /// A y4m clip of `n` 5×3 4:4:4 frames with varied pixels, and its header's length.
    fn micro_clip(n: usize) -> (Vec<u8>, usize) {
        clip_of(5, 3, n)
    }

    /// A y4m clip of `n` `w`×`h` 4:4:4 frames with varied pixels, and its header's length.
    fn clip_of(w: usize, h: usize, n: usize) -> (Vec<u8>, usize) {
        let mut data = format!("YUV4MPEG2 W{w} H{h} F25:1 C444\n").into_bytes();
        let header = data.len();
        for f in 0..n {
            data.extend_from_slice(b"FRAME\n");
            data.extend((0..3 * w * h).map(|i| (20 + (i * 13 + f * 7) % 200) as u8));
        }
        (data, header)
    }

    /// A frame whose sides are no multiples of 8 (20×12) runs at its own size where one tile
    /// covers it, as the release runs it (the engine at such a size against the release is
    /// `golden_window`'s), and padded to multiples of 8 where it is tiled, or where the GPU's
    /// views could not start at its planes (a 256-byte offset alignment: 4 planes of f16 are
    /// 1920 bytes; lavapipe's 32 and Intel's 64 divide them).
    #[test]
    fn one_tile_runs_the_frame_at_its_own_size() {
        use crate::pipeline::tiles::{TileOptions, TileSize};
        let run_in = |gpu: &Gpu, tiles: TileOptions, dt: DType| {
            let (unet, vae) = micro_models(gpu, dt);
            let opts = JobOptions { tiles, ..test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1) };
            let reader = Reader::new(std::io::Cursor::new(clip_of(20, 12, 4).0)).unwrap();
            let mut writer = Writer::new(Vec::new(), reader.header().scaled(4).unwrap()).unwrap();
            let stats = run_job(gpu, &unet, dt, &vae, dt, reader, &mut writer, &opts, |_| {}).unwrap();
            assert_eq!(stats.frames_out, 4);
            stats.tiles
        };
        let run = |gpu: &Gpu, tiles: TileOptions| run_in(gpu, tiles, DType::F32);
        let gpu = test_gpu();
        // In every storage dtype: the job's views of f16 planes start where the GPU allows.
        // (Under DIFFVSR_OFFSET_ALIGNMENT=256 the shared device pads it, as the strict one below.)
        let own = LatentPad::new(12, 20).may_run_unpadded(gpu.offset_alignment());
        let latent = if own { "20x12" } else { "24x16" };
        assert!(own || gpu.offset_alignment() > 64, "alignment {}", gpu.offset_alignment());
        for dt in gpu.dtypes() {
            let tiles = run_in(&gpu, TileOptions::default(), dt);
            assert!(tiles.starts_with(&format!("UNet one tile ({latent}, the whole latent)")) && tiles.contains(&format!("VAE one tile ({latent}")), "{dt:?}: {tiles}");
        }
        let tiles = run(&gpu, TileOptions { tile: TileSize::Fixed { rows: 16, cols: 16 }, overlap: None });
        assert!(tiles.contains("tiles of 16x16"), "{tiles}");
        let strict = crate::Gpu::new(&crate::gpu::GpuOptions { offset_alignment: Some(256), ..crate::gpu::GpuOptions::from_env() }).unwrap();
        let tiles = run(&strict, TileOptions::default());
        assert!(tiles.starts_with("UNet one tile (24x16, the whole latent)"), "{tiles}");
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
        // What --plan promises for a segment.
        assert!(seg.max_frames_held <= crate::pipeline::windows::max_frames_held(9, 2), "held {} input frames", seg.max_frames_held);
        assert!(got[header..] == want[header + 9 * frame..], "a segment at 2 windows per call: frames 9..{n} differ from the whole run's");
    }
}
