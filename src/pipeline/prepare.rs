//! The job's setup before its first frame is read: the latent's padding, the spatial tiles, the
//! windows per UNet call and the engine (its captured graphs and their arena).
//!
//! Under `--tile auto`, a GPU that runs out of memory while the engine is built is planned for
//! again with less, up to [`MEMORY_RETRIES`] times, with a note on stderr: the memory the job
//! plans for is then capped, as `--gpu-memory` caps it, so that the plan's budget (its
//! [`HEADROOM`] of what is available beside the weights) is three quarters of what the failed
//! engine needed (its planned bytes, or what its allocations came to at the failure where the
//! driver reports them and that is less). That is
//! the path where the driver reports more memory than it then gives, or another program took
//! some since. (Not GL's: wgpu's GL backend reports no failed allocation.) Fixed tiles
//! (`--tile N`) are not changed: the error says what to lower. Nothing has been read or
//! written when this runs, so a plan made again loses no frame.

use anyhow::Result;

use crate::gpu::{human_bytes, out_of_memory};
use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::pipeline::engine::Engine;
use crate::pipeline::groups::{self, Grouping};
use crate::pipeline::memory_plan::{Need, HEADROOM};
use crate::pipeline::options::JobOptions;
use crate::pipeline::progress::Progress;
use crate::pipeline::tile_choice::{choose_tiles, JobTiles};
use crate::pipeline::tiles::{LatentPad, TileSize};
use crate::pipeline::windows;
use crate::{DType, Gpu};

/// How many times `--tile auto` plans again after the GPU ran out of memory building the
/// engine: each takes three quarters of the memory of the try before, so the last plans for
/// under a quarter of the first.
pub const MEMORY_RETRIES: usize = 5;

/// The share of a failed engine's bytes the next try plans for.
const RETRY_SHARE: f64 = 0.75;

/// What the job runs with: its padding of the LR frame, its windows per call, and the engine
/// (which holds the tiles).
pub(crate) struct Prepared<'g> {
    pub pad: LatentPad,
    pub grouping: Grouping,
    pub engine: Engine<'g>,
}

/// Plans and builds the job for an `h`×`w` input (see the module doc); `progress` hears of each
/// plan made again for less memory ([`Progress::Note`]). The memory cap a retry sets holds for
/// this job's planning only: the GPU's own (or `--gpu-memory`'s) is put back after.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare<'g>(gpu: &'g Gpu, unet: &VideoUNet, vae: &'g Te3dVaeDecoder, opts: &JobOptions, (h, w): (usize, usize), dtypes: (DType, DType), progress: &mut impl FnMut(Progress)) -> Result<Prepared<'g>> {
    let cap = gpu.memory_cap();
    let prepared = prepare_within(gpu, unet, vae, opts, (h, w), dtypes, progress);
    gpu.set_memory_cap(cap);
    prepared
}

#[allow(clippy::too_many_arguments)]
fn prepare_within<'g>(gpu: &'g Gpu, unet: &VideoUNet, vae: &'g Te3dVaeDecoder, opts: &JobOptions, (h, w): (usize, usize), (unet_dtype, vae_dtype): (DType, DType), progress: &mut impl FnMut(Progress)) -> Result<Prepared<'g>> {
    let mut retries = 0;
    loop {
        let pad = LatentPad::new(h, w);
        let (ph, pw) = pad.padded();
        let mut tiles = choose_tiles(gpu, unet, vae, opts, ph, pw, unet_dtype, vae_dtype).map_err(|e| after(e, retries))?;
        // Tiles need multiples of 8; one tile for both models runs the frame at its own size, as
        // the release does (its UNet steps up to each skip's size), not on mirrored rows.
        let pad = if tiles.is_whole() && pad.may_run_unpadded(gpu.offset_alignment()) {
            tiles = tiles.whole_at(h, w);
            LatentPad::unpadded(h, w)
        } else {
            pad
        };
        let grouping = windows_per_call(gpu, unet, vae, opts, &tiles, (unet_dtype, vae_dtype)).map_err(|e| after(e, retries))?;
        let e = match Engine::tiled(gpu, unet, vae, opts, tiles.clone(), grouping.windows, unet_dtype, vae_dtype) {
            Ok(engine) => return Ok(Prepared { pad, grouping, engine }),
            Err(e) => e,
        };
        let Some(oom) = out_of_memory(&e) else { return Err(after(e, retries)) };
        if opts.tiles.tile != TileSize::Auto || retries == MEMORY_RETRIES {
            return Err(after(e, retries).context(format!("tiles that ran out of memory: {}", tiles.summary())));
        }
        let wanted = oom.wanted;
        // The failed engine's buffers went with it; the pool's free ones go too, and the
        // staging of its writes (as `Need::new` lets them go). An out-of-memory error kept from
        // a submission is this one; a lost device stays.
        if let Err(kept) = gpu.settle() {
            if out_of_memory(&kept).is_none() {
                return Err(after(kept, retries));
            }
        }
        let held = gpu.held_bytes().unwrap_or_else(|| gpu.pool.stats().live_bytes);
        let planned = Need::unbounded(gpu, unet, vae, opts, (tiles.unet.height, tiles.unet.width), unet_dtype, vae_dtype).job_bytes(tiles.unet.tile_size(), tiles.vae.tile_size(), grouping.windows).map_err(|e| after(e, retries))?;
        let needed = wanted.map_or(planned, |b| planned.min(b.saturating_sub(held)));
        let target = (RETRY_SHARE * needed as f64) as u64;
        let cap = held + (target as f64 / HEADROOM) as u64;
        let cap = gpu.memory_cap().map_or(cap, |c| c.min(cap));
        gpu.set_memory_cap(Some(cap));
        retries += 1;
        progress(Progress::Note(format!(
            "the GPU ran out of memory building the job ({}; {} per UNet call; about {} planned beside the weights): planning again with {} available beside them (try {retries} of {MEMORY_RETRIES}; --gpu-memory {} plans so from the start)",
            tiles.summary(),
            count_windows(grouping.windows),
            human_bytes(planned),
            human_bytes(cap.saturating_sub(held)),
            mib(cap),
        )));
        log::info!("after running out of memory: {e:#}");
    }
}

/// `bytes` as `--gpu-memory` takes it, in whole MiB rounded down (so that it plans no more).
fn mib(bytes: u64) -> String {
    format!("{}MiB", bytes >> 20)
}

/// `e`, saying where it came after plans made again for less memory.
fn after(e: anyhow::Error, retries: usize) -> anyhow::Error {
    match retries {
        0 => e,
        n => e.context(format!("--tile auto, after the GPU ran out of memory and the job was planned again for less {}", if n == 1 { "once".to_string() } else { format!("{n} times") })),
    }
}

fn count_windows(n: usize) -> String {
    if n == 1 {
        "1 window".into()
    } else {
        format!("{n} windows")
    }
}

/// The windows a run denoises, where known before it reads a frame: those of the `--frames`
/// segment (up to its END, or the input's length when that is known), or of the whole input.
fn run_windows(opts: &JobOptions) -> Option<usize> {
    let (start, end) = opts.frames.map_or((0, None), |r| (r.start, r.end));
    windows::windows_to_run(opts.input_frames, start, end)
}

/// The windows per UNet call ([`groups`]): by the adapter, the tiles and the run's length, then,
/// where that is several and the GPU's memory is known, by what fits it ([`Need::most_windows`]).
pub(crate) fn windows_per_call(gpu: &Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, tiles: &JobTiles, (unet_dtype, vae_dtype): (DType, DType)) -> Result<Grouping> {
    let mut ctx = group_context(gpu, tiles, run_windows(opts));
    let grouping = opts.windows_per_call.resolve(&ctx).map_err(anyhow::Error::msg)?;
    if grouping.windows == 1 {
        return Ok(grouping);
    }
    let Some(need) = Need::new(gpu, unet, vae, opts, (tiles.unet.height, tiles.unet.width), unet_dtype, vae_dtype)? else {
        return Ok(grouping);
    };
    let (ut, vt) = (tiles.unet.tile_size(), tiles.vae.tile_size());
    ctx.memory_windows = Some((need.most_windows(ut, vt, grouping.windows)?, need.available));
    opts.windows_per_call.resolve(&ctx).map_err(anyhow::Error::msg)
}

/// What `--windows-per-call` decides on: the adapter, the UNet's tiles and `--tile auto`'s
/// measurement, and the run's windows where known.
fn group_context(gpu: &Gpu, tiles: &JobTiles, run_windows: Option<usize>) -> groups::GroupContext {
    let (th, tw) = tiles.unet.tile_size();
    groups::GroupContext {
        software: gpu.is_software(),
        unet_tiles: tiles.unet.tiles.len(),
        tile_px: th * tw,
        largest_per_px: tiles.measured.map(|(u, _)| u),
        max_binding: gpu.max_binding(),
        run_windows,
        memory_windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::groups::WindowsPerCall;
    use crate::pipeline::job::run_job;
    use crate::pipeline::test_models::{micro_models, test_options};
    use crate::testutil::Rng;
    use crate::video::y4m::{Reader, Writer};

    /// Where the GPU's memory is known (a `--gpu-memory` cap here), a call of more windows
    /// than fit it is refused before anything is captured, naming the most that fit; that many
    /// are taken.
    #[test]
    fn windows_per_call_fit_the_gpu_memory() {
        // A device of its own: what it holds moves only with this test.
        let gpu = crate::Gpu::new(&crate::gpu::GpuOptions::from_env()).unwrap();
        let dt = DType::F32;
        let (unet, vae) = micro_models(&gpu, dt);
        let with = |n| JobOptions { windows_per_call: WindowsPerCall::Fixed(n), ..test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1) };
        let (ph, pw) = (8, 16);
        let tiles = JobTiles::whole(ph, pw);
        gpu.set_memory_cap(Some(u64::MAX / 2));
        let opts = with(3);
        let need = Need::new(&gpu, &unet, &vae, &opts, (ph, pw), dt, dt).unwrap().unwrap();
        let n = |k| need.job_bytes((ph, pw), (ph, pw), k).unwrap();
        let (two, three) = (n(2), n(3));
        assert!(two < three, "{two} {three}");
        // A budget halfway between two windows' need and three's.
        let budget = (two + three) / 2;
        gpu.set_memory_cap(Some(gpu.held_bytes().unwrap() + (budget as f64 / HEADROOM) as u64));
        let e = windows_per_call(&gpu, &unet, &vae, &opts, &tiles, (dt, dt)).unwrap_err().to_string();
        assert!(e.contains("--windows-per-call 3") && e.contains("at most 2 fit"), "{e}");
        assert_eq!(windows_per_call(&gpu, &unet, &vae, &with(2), &tiles, (dt, dt)).unwrap().windows, 2);
    }

    /// A 4:4:4 y4m clip of `n` `w`×`h` frames with varied pixels.
    fn clip(w: usize, h: usize, n: usize) -> Vec<u8> {
        let mut data = format!("YUV4MPEG2 W{w} H{h} F25:1 C444\n").into_bytes();
        for f in 0..n {
            data.extend_from_slice(b"FRAME\n");
            data.extend((0..3 * w * h).map(|i| (20 + (i * 13 + f * 7) % 200) as u8));
        }
        data
    }

    /// A GPU that gives less memory than `--tile auto` planned for (one that reports none, as
    /// GL; here a simulated limit set once the models are loaded, which nothing reports): the
    /// engine for the whole frame runs out of memory, the job plans again for less with a note,
    /// and runs in tiles, writing the bytes of a run that planned for that memory from the
    /// start (`--gpu-memory`). Fixed tiles are not changed: their error stands.
    #[test]
    fn tile_auto_plans_again_where_the_gpu_runs_out_of_memory() {
        use crate::pipeline::job::JobStats;
        use crate::pipeline::tiles::{TileOptions, TileSize};
        let dt = DType::F32;
        let (w, h, n) = (40, 24, 4);
        let run = |gpu: &Gpu, (unet, vae): (&VideoUNet, &Te3dVaeDecoder), tiles: TileOptions| -> (Result<JobStats>, Vec<u8>, Vec<String>) {
            let opts = JobOptions { tiles, windows_per_call: WindowsPerCall::Fixed(1), ..test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1) };
            let reader = Reader::new(std::io::Cursor::new(clip(w, h, n))).unwrap();
            let mut writer = Writer::new(Vec::new(), reader.header().scaled(4).unwrap()).unwrap();
            let mut notes = Vec::new();
            let stats = run_job(gpu, unet, dt, vae, dt, reader, &mut writer, &opts, |p| {
                if let Progress::Note(m) = p {
                    notes.push(m)
                }
            });
            (stats, writer.into_inner(), notes)
        };
        // A device of its own: what it holds moves only with this test.
        // Untuned: a tuning round that ran out of memory keeps nothing, so a later run would time
        // the shapes again and might pick other tiles (a GPU; a software adapter tunes nothing).
        let small = crate::Gpu::new(&crate::gpu::GpuOptions { tune: crate::gpu::TuneMode::Off, ..crate::gpu::GpuOptions::from_env() }).unwrap();
        let (unet, vae) = micro_models(&small, dt);
        // What the models hold once their uploads are flushed (as `Need::new` counts it).
        small.settle().unwrap();
        let Some(held) = small.held_bytes() else {
            eprintln!("skipped: this adapter reports no allocations ({})", small.describe());
            return;
        };
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(5), 9, 1);
        let whole = Need::unbounded(&small, &unet, &vae, &opts, (h, w), dt, dt).job_bytes((h, w), (h, w), 1).unwrap();
        // Room beside the models for 4/5 of what the whole frame's job is planned to take (its
        // engine, what it allocates beside and the plan's margins).
        small.simulate_memory(Some(held + whole * 4 / 5));
        let fixed = TileOptions { tile: TileSize::Fixed { rows: h, cols: w }, overlap: None };
        let e = format!("{:#}", run(&small, (&unet, &vae), fixed).0.unwrap_err());
        assert!(e.contains("ran out of memory") && e.contains("smaller tiles"), "{e}");
        assert!(small.memory_cap().is_none(), "fixed tiles plan nothing again");
        let (stats, got, notes) = run(&small, (&unet, &vae), TileOptions::default());
        let stats = stats.unwrap();
        assert_eq!(stats.frames_out, n);
        assert!(!notes.is_empty() && notes.iter().all(|m| m.contains("ran out of memory") && m.contains("planning again")), "{notes:?}");
        assert!(stats.tiles.contains("tiles of") && stats.tiles.contains("to fit the GPU's memory"), "{}", stats.tiles);
        assert!(small.memory_cap().is_none(), "the cap of the retry holds for that job's planning only");
        // The same as a run planned for that memory from the start (`--gpu-memory`; its engine
        // built anew, none of the failed ones' state).
        let planned = stats.planned_memory.expect("the memory it planned for");
        small.settle().unwrap();
        small.set_memory_cap(Some(small.held_bytes().unwrap() + planned));
        let (again, want, notes) = run(&small, (&unet, &vae), TileOptions::default());
        assert_eq!((again.unwrap().tiles, notes.len()), (stats.tiles.clone(), 0));
        assert!(got == want, "the output after planning again differs from a run planned so from the start");
    }
}
