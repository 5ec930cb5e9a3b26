//! The job sized to the GPU's memory: `--tile auto` and `--windows-per-call auto` keep what the
//! job allocates within the device memory this process may use, where the driver or
//! `--gpu-memory` says how much that is ([`Gpu::memory`](crate::Gpu::memory)). Elsewhere they plan for
//! the binding limit alone ([`tile_choice`](crate::pipeline::tile_choice)).
//!
//! What the job holds on the GPU once its models are loaded:
//! * the weights: already allocated when this runs, so already out of what is available;
//! * one arena for the captured graphs, planned by lifetime: the decode chunk and the sampler
//!   steps share it and never run at once, each later plan reusing the earlier ones' buffers
//!   where they are large enough, so it holds about the largest plan (often somewhat more);
//! * the graphs' inputs outside the arena (each step's sample and latents and context, the
//!   decode's input) and the job's own tensors (every window's final latents until its chunks
//!   are decoded, a fused chunk, the noise of a window, the colour conversion of a frame).
//!
//! The arena's part is planned exactly: the engine's graphs ([`graphs`](crate::pipeline::graphs))
//! are recorded at the tiles being weighed, in the engine's order, into a dry arena
//! ([`Arena::dry`]) that shares its imagined buffers between them as the engine's arena does,
//! with nothing allocated and no kernel timed; the engine's arena then comes out at exactly
//! that plan (`tile_choice::tests::tile_auto_fits_the_gpu_memory`, where nothing is tuned). Where
//! the tuner is on, its choices only take tensors away (a norm applied as the next kernel
//! loads), and the engine times new shapes before its arena exists (`graphs::plan_graphs`), so
//! no candidate's tensors come on top of it. Not planned: the decode on f32 operands that a
//! chunk overflowing f16 operands is captured for, into the same arena, at its first overflow
//! (with the default f32 VAE its plan is the f16-operand one's). The rest is counted from the shapes (`Need::outside`). A tile, or a number
//! of windows per call, is kept when its arena plan plus the rest is within [`HEADROOM`] of
//! what is available.

use anyhow::Result;

use crate::gpu::arena::Arena;
use crate::gpu::human_bytes;
use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::ops::sampler::StepSlots;
use crate::pipeline::graphs::{plan_graphs, record_decode, record_step, StepInputs, DECODE_CHUNK, LATENT_CHANNELS, LR_CHANNELS};
use crate::pipeline::options::JobOptions;
use crate::pipeline::tiles::{LATENT_MULTIPLE, SCALE};
use crate::pipeline::windows::WINDOW;
use crate::step_values::StepValues;
use crate::{DType, Gpu, Recorder};

/// The share of the available memory the job plans to fill: the rest is left for the
/// allocator's blocks and rounding, and the driver.
pub const HEADROOM: f64 = 0.9;

/// What a job's tiles and window groups are weighed with: the models, the frame and the
/// memory budget.
pub(crate) struct Need<'a> {
    pub gpu: &'a Gpu,
    pub unet: &'a VideoUNet,
    pub vae: &'a Te3dVaeDecoder,
    pub opts: &'a JobOptions,
    /// The latent the job runs: padded to multiples of 8 where tiled, the frame's own size where
    /// one tile covers it (`LatentPad::unpadded`).
    pub frame: (usize, usize),
    pub unet_dtype: DType,
    pub vae_dtype: DType,
    /// Bytes the job may allocate: [`HEADROOM`] of what is available.
    pub budget: u64,
    /// What was available, for messages.
    pub available: u64,
}

impl<'a> Need<'a> {
    /// The budget of `gpu` now, where its memory is known; `None` where it is not.
    #[allow(clippy::too_many_arguments)]
    pub fn new(gpu: &'a Gpu, unet: &'a VideoUNet, vae: &'a Te3dVaeDecoder, opts: &'a JobOptions, frame: (usize, usize), unet_dtype: DType, vae_dtype: DType) -> Result<Option<Need<'a>>> {
        // Free buffers the pool keeps (a probe's, the text encoder's) count as held: let them
        // go. So do the staging buffers of writes not yet submitted (the weights' uploads, as
        // much again as the weights): a submission flushes them, and once it is done they free.
        gpu.settle()?;
        let Some(m) = gpu.memory() else { return Ok(None) };
        log::info!("device memory: {}", m.describe());
        Ok(Some(Need { gpu, unet, vae, opts, frame, unet_dtype, vae_dtype, budget: (HEADROOM * m.available as f64) as u64, available: m.available }))
    }

    /// A need whatever the GPU's memory (no budget): for what a plan takes
    /// ([`Need::job_bytes`]).
    #[allow(clippy::too_many_arguments)]
    pub fn unbounded(gpu: &'a Gpu, unet: &'a VideoUNet, vae: &'a Te3dVaeDecoder, opts: &'a JobOptions, frame: (usize, usize), unet_dtype: DType, vae_dtype: DType) -> Need<'a> {
        Need { gpu, unet, vae, opts, frame, unet_dtype, vae_dtype, budget: u64::MAX, available: u64::MAX }
    }

    /// The bytes the job allocates beside its weights with UNet tile `ut`, VAE tile `vt` and `k`
    /// windows per call, as the plan counts them: the arena and what lies outside it.
    pub fn job_bytes(&self, ut: (usize, usize), vt: (usize, usize), k: usize) -> Result<u64> {
        Ok(self.arena(Some(ut), Some(vt), k)? + self.outside(ut, vt, k))
    }

    /// The arena bytes of the engine's graphs, planned in one dry arena in the engine's order
    /// (`Engine::tiled`: the decode chunk at VAE tile `vt`, then the sampler steps at UNet tile
    /// `ut` from `k` windows per call down to 1): what the engine would create, the buffers of
    /// one plan reused by the next. Either model alone with the other `None`.
    pub fn arena(&self, ut: Option<(usize, usize)>, vt: Option<(usize, usize)>, k: usize) -> Result<u64> {
        let arena = Arena::dry(self.gpu);
        self.gpu.tuner().untimed(|| plan_graphs(self.gpu, self.unet, self.vae, self.opts, ut, vt, k, (self.unet_dtype, self.vae_dtype), &arena))?;
        Ok(arena.peak_bytes())
    }

    /// Bytes outside the arena with UNet tile `ut`, VAE tile `vt` and `k` windows per call
    /// (the steps for 1 to k windows are all captured), rounded up as the buffer pool rounds.
    pub fn outside(&self, (uh, uw): (usize, usize), (vh, vw): (usize, usize), k: usize) -> u64 {
        let (ph, pw) = self.frame;
        let (u, v, frame) = ((uh * uw) as f64, (vh * vw) as f64, (ph * pw) as f64);
        let (ud, vd) = (self.unet_dtype.size() as f64, self.vae_dtype.size() as f64);
        let (l, d) = (self.opts.positive.shape[1] as f64, self.opts.positive.shape[2] as f64);
        let (c, lr, f) = (LATENT_CHANNELS as f64, LR_CHANNELS as f64, WINDOW as f64);
        let halves = self.opts.cfg_halves() as f64;
        let steps: f64 = (1..=k)
            .map(|g| {
                let g = g as f64;
                // The sample [2g, 7, 8, th, tw] (g without guidance), the f32 latents [g, 4, 8,
                // th, tw], the context.
                halves * g * (c + lr) * f * u * ud + g * c * f * u * 4.0 + halves * g * l * d * ud
            })
            .sum();
        let decode_in = c * DECODE_CHUNK as f64 * v * vd;
        // Final latents held: the previous window's and the group's; a fused chunk; a window's
        // noise (f32) and LR tile; one output frame's RGB (f32) and input frame's.
        let finals = (k as f64 + 1.0) * c * f * frame * 4.0;
        let chunk = c * DECODE_CHUNK as f64 * frame * 4.0;
        let window = (c + lr) * f * u * 4.0 + lr * f * u * ud;
        let frames = lr * (SCALE * SCALE) as f64 * frame * 4.0 * 2.0 + lr * frame * 4.0;
        (1.25 * (steps + decode_in + finals + chunk + window + frames)) as u64
    }

    /// The job's tiles within the budget, at most the binding limit's `ut` and `vt` (sides):
    /// each model's largest tile whose plan alone (with what lies outside the arena) fits, then,
    /// where the two plans share the arena less tightly than that, both tiles lowered by the
    /// same share of their sides until the shared arena fits.
    pub fn tiles(&self, ut: usize, vt: usize) -> Result<(usize, usize)> {
        let (ph, pw) = self.frame;
        let at = |s: usize| (s.min(ph), s.min(pw));
        let least = self.least();
        // What lies outside the arena, for each pair of tiles weighed (the other model at its
        // largest while one is searched alone).
        let alone_u = |t: (usize, usize)| Ok(self.arena(Some(t), None, 1)? + self.outside(t, at(vt), 1));
        let alone_v = |t: (usize, usize)| Ok(self.arena(None, Some(t), 1)? + self.outside(at(ut), t, 1));
        let u = largest_tile(self.frame, self.budget, least, ut, alone_u)?.map_err(|n| self.too_small("UNet's sampler step", n))?;
        let v = largest_tile(self.frame, self.budget, least, vt, alone_v)?.map_err(|n| self.too_small("VAE decoder's chunk", n))?;
        let both = |u: usize, v: usize| self.job_bytes(at(u), at(v), 1);
        let n = both(u, v)?;
        if n <= self.budget {
            return Ok((u, v));
        }
        log::info!("--tile auto: the two models' plans share the arena less tightly than either alone ({} for both): lowering both tiles", human_bytes(n));
        // Both tiles lowered together, by the same share of their sides, so that neither model
        // is squeezed to a sliver to make room for the other (lowering one alone left the VAE
        // 24-pixel tiles beside a UNet that filled the budget): the largest share that fits.
        const SHARES: usize = 64;
        let m = LATENT_MULTIPLE;
        let scaled = |f: usize| ((u * f / SHARES / m * m).max(least), (v * f / SHARES / m * m).max(least));
        let fits = |f: usize| -> Result<bool> {
            let (a, b) = scaled(f);
            Ok(both(a, b)? <= self.budget)
        };
        let smallest = both(least, least)?;
        if smallest > self.budget {
            return Err(self.too_small("UNet and VAE decoder together", smallest));
        }
        let (a, b) = if fits(1)? { scaled(last_true(1, SHARES, fits)?) } else { (least, least) };
        // Then each tile raised again as far as the other allows, the UNet's first: its tiles
        // run every step, the VAE's once a chunk.
        let a = m * last_true(a / m, u / m, |k| Ok(both(k * m, b)? <= self.budget))?;
        let b = m * last_true(b / m, v / m, |k| Ok(both(a, k * m)? <= self.budget))?;
        Ok((a, b))
    }

    /// Whether the engine's graphs at UNet tiles `u` and VAE tiles `v`, one window per call,
    /// fit the budget.
    pub fn fits(&self, u: (usize, usize), v: (usize, usize)) -> Result<bool> {
        Ok(self.job_bytes(u, v, 1)? <= self.budget)
    }

    /// The smallest tile side weighed: 8, or above a fixed `--tile-overlap`.
    fn least(&self) -> usize {
        self.opts.tiles.overlap.map_or(LATENT_MULTIPLE, |o| o.div_ceil(LATENT_MULTIPLE) * LATENT_MULTIPLE + LATENT_MULTIPLE)
    }

    /// What no tile fitting says: the need of the smallest tile against what is available.
    pub fn too_small(&self, what: &str, need: u64) -> anyhow::Error {
        let least = self.least();
        let overlap = match self.opts.tiles.overlap {
            Some(o) => format!(" (tiles stay above --tile-overlap {o}: a smaller overlap allows smaller tiles)"),
            None => String::new(),
        };
        anyhow::anyhow!(
            "the {what} does not fit the GPU's memory even in {least}x{least} tiles{overlap}: it needs {}, and {} is available (of which the job plans to use {:.0}%); \
             close other programs using the GPU, or use one with more memory (--gpu-memory, if set, caps what is planned for)",
            human_bytes(need),
            human_bytes(self.available),
            HEADROOM * 100.0
        )
    }

    /// The most windows per call, up to `most`, whose steps at UNet tile `ut` (with the decode
    /// at VAE tile `vt`) fit the budget; at least 1.
    pub fn most_windows(&self, ut: (usize, usize), vt: (usize, usize), most: usize) -> Result<usize> {
        for k in (2..=most).rev() {
            if self.job_bytes(ut, vt, k)? <= self.budget {
                return Ok(k);
            }
        }
        Ok(1)
    }
}

/// The largest tile side, at most `start` (a multiple of 8, or at least the frame's longer
/// side for the whole frame) and at least `least` (a multiple of 8: above a fixed
/// `--tile-overlap`), whose `need` for its tile's dimensions over the `frame` is within
/// `budget`: `start` when it fits, else the largest multiple of 8 below it that does, each
/// weighed with `need` (a side at or past a frame side covers that side). `Err(need at the
/// smallest side weighed)` when none fits.
pub fn largest_tile(frame: (usize, usize), budget: u64, least: usize, start: usize, need: impl Fn((usize, usize)) -> Result<u64>) -> Result<Result<usize, u64>> {
    let (ph, pw) = frame;
    let m = LATENT_MULTIPLE;
    let dims = |s: usize| (s.min(ph), s.min(pw));
    let fits = |s: usize| -> Result<(bool, u64)> {
        let n = need(dims(s))?;
        Ok((n <= budget, n))
    };
    let start = start.min(ph.max(pw));
    let (ok, n) = fits(start)?;
    if ok {
        return Ok(Ok(start));
    }
    let lo = (least / m).max(1); // in units of 8
    if start <= lo * m {
        return Ok(Err(n));
    }
    // Activations grow with the tile's pixels: a first guess at the side whose pixels scale the
    // need down to the budget, then a bisection between a side that fits and one that does not.
    let (th, tw) = dims(start);
    let target = (th * tw) as f64 * budget as f64 / n as f64;
    let short = ph.min(pw);
    let guess = if target >= (short * short) as f64 { target / short as f64 } else { target.sqrt() };
    let mut bad = start.div_ceil(m); // in units of 8: fails
    let mut guess = ((guess as usize) / m).clamp(lo, bad - 1);
    let mut good = loop {
        let (ok, n) = fits(guess * m)?;
        if ok {
            break guess;
        }
        if guess == lo {
            return Ok(Err(n));
        }
        bad = guess;
        guess = (guess / 2).max(lo);
    };
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if fits(mid * m)?.0 {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(Ok(good * m))
}

/// The largest `k` in `lo..=hi` for which `ok(k)` holds, given that it holds at `lo` and is
/// monotone (true, then false): a bisection.
fn last_true(lo: usize, hi: usize, ok: impl Fn(usize) -> Result<bool>) -> Result<usize> {
    let (mut good, mut bad) = (lo, hi + 1);
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if ok(mid)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good)
}

/// The largest tensor of the sampler step for one window at a `th`×`tw` tile (its arena's and
/// its sample's), recorded and planned, never allocated, run or timed.
pub(crate) fn step_largest(gpu: &Gpu, unet: &VideoUNet, opts: &JobOptions, tile: (usize, usize), dtype: DType) -> Result<u64> {
    let values = StepValues::new(gpu, &StepSlots::NAMES)?;
    let inputs = StepInputs::placeholders(gpu, opts, tile, 1, dtype)?;
    let mut rec = Recorder::capture(gpu);
    gpu.tuner().untimed(|| record_step(&mut rec, unet, &inputs, &values))?;
    Ok(rec.planned_largest().max(inputs.sample.bytes()))
}

/// The largest tensor of the decode chunk at a `th`×`tw` latent tile (its arena's and its
/// input's), recorded and planned, never allocated, run or timed.
pub(crate) fn decode_largest(gpu: &Gpu, vae: &Te3dVaeDecoder, tile: (usize, usize), dtype: DType) -> Result<u64> {
    let mut rec = Recorder::capture(gpu);
    let input = gpu.tuner().untimed(|| record_decode(&mut rec, vae, tile, dtype))?;
    Ok(rec.planned_largest().max(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest side that fits, found by planning a few sides, over square and non-square
    /// frames; the whole frame when it fits; `Err` with the smallest tile's need when none does.
    #[test]
    fn largest_tile_finds_the_largest_side_that_fits() {
        let need = |(h, w): (usize, usize)| Ok((h * w) as u64 * 100 + 5_000);
        let brute = |frame: (usize, usize), budget: u64| {
            let d = |s: usize| (s.min(frame.0), s.min(frame.1));
            (1..=frame.0.max(frame.1) / 8).rev().map(|k| k * 8).find(|&s| need(d(s)).unwrap() <= budget)
        };
        for frame in [(64, 64), (24, 200), (200, 24), (8, 8), (136, 240)] {
            for budget in [1_000u64, 11_400, 11_500, 60_000, 300_000, 1_000_000, 4_000_000] {
                let got = largest_tile(frame, budget, 8, frame.0.max(frame.1), need).unwrap();
                match brute(frame, budget) {
                    Some(s) => assert_eq!(got, Ok(s), "frame {frame:?} budget {budget}"),
                    None => assert_eq!(got, Err(need((8, 8)).unwrap()), "frame {frame:?} budget {budget}"),
                }
            }
        }
        // A start below the frame (the binding limit's tile) is kept when it fits.
        assert_eq!(largest_tile((64, 64), u64::MAX, 8, 32, need).unwrap(), Ok(32));
        // Planning errors pass through.
        assert!(largest_tile((64, 64), 10, 8, 64, |_| anyhow::bail!("no")).is_err());
        // A least side (above a fixed overlap) is never gone below: none fits then.
        assert_eq!(largest_tile((64, 64), 11_500, 24, 64, need).unwrap(), Err(need((24, 24)).unwrap()));
        assert_eq!(largest_tile((64, 64), 300_000, 24, 64, need).unwrap(), Ok(brute((64, 64), 300_000).unwrap()));
    }
}
