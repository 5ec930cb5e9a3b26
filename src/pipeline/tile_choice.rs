//! The job's spatial tiles: `--tile N` or `WxH` for both models, or what `--tile auto` picks per
//! model from the adapter's binding limit, the GPU's memory where it is known
//! ([`memory_plan`](crate::pipeline::memory_plan)) and the work each tiling costs
//! ([`TileOptions::cheapest`](crate::pipeline::tiles::TileOptions::cheapest)); the plans over
//! the frame ([`tiles`](crate::pipeline::tiles)) that the engine runs.

use anyhow::{Context, Result};

use crate::models::video_unet::VideoUNet;
use crate::models::video_vae::Te3dVaeDecoder;
use crate::pipeline::graphs::check_job_models;
use crate::pipeline::memory_plan::{decode_largest, step_largest, Need};
use crate::pipeline::options::JobOptions;
use crate::pipeline::tiles::{tensor_limit, tile_for_binding, TileBound, TileDims, TilePlan, TileSize, SCALE};
use crate::{DType, Gpu};

/// The spatial tiles of a job over its latent (padded to multiples of 8 where there are several,
/// or one over the frame's own size: [`JobTiles::whole_at`]): the UNet's, the VAE's (in latent
/// pixels) and the VAE's ×4 in output pixels (same tiles, weights recomputed at that size).
#[derive(Clone, Debug)]
pub struct JobTiles {
    pub unet: TilePlan,
    pub vae: TilePlan,
    pub vae_px: TilePlan,
    /// `--tile auto`: the measured bytes per latent pixel of the UNet's and the VAE's largest
    /// tensors.
    pub measured: Option<(f64, f64)>,
    /// `--tile auto` where the GPU's memory is known: what it planned for.
    pub memory: Option<MemoryTiles>,
}

/// What `--tile auto` planned for where the device memory is known ([`memory_plan`](crate::pipeline::memory_plan)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryTiles {
    /// Bytes available when the tiles were chosen, and the share of it the job plans to use.
    pub available: u64,
    pub budget: u64,
    /// Whether memory, not the binding limit, set each model's tile.
    pub unet_limited: bool,
    pub vae_limited: bool,
}

impl JobTiles {
    /// One tile of the whole latent for both models (the untiled job), of any size.
    pub fn whole(ph: usize, pw: usize) -> JobTiles {
        JobTiles::new(TilePlan::whole(ph, pw), TilePlan::whole(ph, pw))
    }
    /// Whether one tile covers the latent for both models.
    pub fn is_whole(&self) -> bool {
        self.unet.is_whole() && self.vae.is_whole()
    }
    /// The same choice (one tile for both models) over an `h`×`w` latent: the unpadded frame.
    pub fn whole_at(&self, h: usize, w: usize) -> JobTiles {
        JobTiles { measured: self.measured, memory: self.memory, ..JobTiles::whole(h, w) }
    }
    pub fn new(unet: TilePlan, vae: TilePlan) -> JobTiles {
        let vae_px = vae.scaled(SCALE);
        JobTiles { unet, vae, vae_px, measured: None, memory: None }
    }
    /// In words, for the job's summary.
    pub fn summary(&self) -> String {
        let by_memory = |limited: bool| match self.memory {
            Some(m) if limited => format!(" (to fit the GPU's memory: {} available)", crate::gpu::human_bytes(m.available)),
            _ => String::new(),
        };
        let m = self.memory.unwrap_or_default();
        format!("UNet {}{}; VAE {}{}", self.unet.summary(), by_memory(m.unet_limited), self.vae.summary(), by_memory(m.vae_limited))
    }
}

/// Whatever the tiles, the job holds a window's final latents for the whole `ph`×`pw` padded
/// latent (f32, 4 channels × 8 frames: 128 bytes a pixel) in one buffer: refused before
/// anything runs where that passes the GPU's largest buffer (a 4096×4096 input where buffers
/// stop at 2 GiB − 1, as on DX12), rather than after the first window's steps: `upscale` asks
/// before it loads the models.
pub(crate) fn check_whole_frame(ph: usize, pw: usize, max_buffer: u64) -> Result<()> {
    let bytes = (crate::pipeline::graphs::LATENT_CHANNELS * crate::pipeline::windows::WINDOW * 4) as u64 * (ph * pw) as u64;
    if bytes > max_buffer {
        anyhow::bail!(
            "a {pw}x{ph} (padded) input's window of latents takes {} ({bytes} bytes) in one buffer, over this GPU's largest buffer ({max_buffer} bytes, max_buffer_size), whatever the tiles: \
             scale or crop the input to fewer pixels first (ffmpeg … -vf scale=…)",
            crate::gpu::human_bytes(bytes),
        );
    }
    Ok(())
}

/// Latent side of the probe graphs `--tile auto` measures (a multiple of 8; every activation
/// of both models scales with the tile's pixels, attention included: it is flash-style). Where
/// the probe itself exceeds the binding limit (a tiny simulated limit), 8 is tried.
pub(crate) const PROBE: usize = 16;

/// Picks the job's tiles over the `ph`×`pw` padded latent (where the choice is one tile, the
/// job then runs the frame's own size: `run_job`): `--tile N` or `WxH` for both
/// models, or for `--tile auto`, per model, the tiles of fewest pixels processed
/// ([`TileOptions::cheapest`](crate::pipeline::tiles::TileOptions::cheapest), rectangles
/// included) within what its biggest tensor allows under the adapter's binding limit (and its
/// buffer limit, after [`BUFFER_HEADROOM`](crate::pipeline::tiles::BUFFER_HEADROOM)) and,
/// where the GPU's memory is known, within the memory plan's square
/// ([`Need::tiles`]), the chosen pair planned again ([`Need::fits`]). The bytes per latent pixel
/// are measured, not assumed: both graphs are recorded at a 16×16 probe latent (8×8 where
/// that does not fit; planned, never allocated) and their largest tensors (arena activations, the sample and the decode
/// input) divided by its pixels (an upper bound: the few tensors that do
/// not grow with the tile only raise it). Where that bound asks for tiles, the whole frame's
/// graph is also recorded (never allocated) and its largest tensor checked exactly: one tile
/// when it fits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn choose_tiles(gpu: &Gpu, unet: &VideoUNet, vae: &Te3dVaeDecoder, opts: &JobOptions, ph: usize, pw: usize, unet_dtype: DType, vae_dtype: DType) -> Result<JobTiles> {
    opts.tiles.check().map_err(anyhow::Error::msg)?;
    // A model or prompt that makes no job is named before any graph is recorded (here, by the
    // windows per call's memory plan, or by the engine).
    check_job_models(unet, opts)?;
    let mut measured = None;
    let mut memory = None;
    let (ut, vt) = match opts.tiles.tile {
        TileSize::Fixed { rows, cols } => ((rows, cols), (rows, cols)),
        TileSize::Auto => {
            // The bytes per latent pixel: both graphs recorded at a probe tile and planned, with
            // nothing allocated, run or timed (at 8×8 where the probe's tensors pass the
            // binding limit, which recording refuses).
            let probe = |t: usize| -> Result<(f64, f64)> {
                let px = (t * t) as f64;
                Ok((step_largest(gpu, unet, opts, (t, t), unet_dtype)? as f64 / px, decode_largest(gpu, vae, (t, t), vae_dtype)? as f64 / px))
            };
            // (Where 8×8 fails too, the 16×16 probe's error is the one that says why.)
            let (unet_px, vae_px) = probe(PROBE).or_else(|e| probe(PROBE / 2).map_err(|_| e)).context("--tile auto: recording the models at a probe latent")?;
            let (limit, buffer) = (gpu.max_binding(), gpu.limits.max_buffer_size);
            log::info!("--tile auto: largest tensor per latent pixel: UNet {unet_px:.0} B, VAE decoder {vae_px:.0} B; binding limit {limit} B, buffer limit {buffer} B");
            measured = Some((unet_px, vae_px));
            let pick = |what: &str, per_px: f64| {
                tile_for_binding(limit, buffer, per_px, ph, pw).map_err(|e| anyhow::anyhow!("--tile auto: the {what}'s largest tensor takes {per_px:.0} bytes per latent pixel: {e}"))
            };
            let (mut ub, mut vb) = (pick("UNet", unet_px)?, pick("VAE decoder", vae_px)?);
            // Where the probe's bound asks for tiles, the whole frame recorded exactly (nothing
            // allocated) may still fit: the TE-3DVAE splits an upsampling over the binding limit
            // into frame groups, which a small probe never needs.
            let fits = |largest: Result<u64>| largest.is_ok_and(|b| b <= tensor_limit(limit, buffer));
            let whole = ph.max(pw);
            if ub.area < ph * pw && fits(step_largest(gpu, unet, opts, (ph, pw), unet_dtype)) {
                ub = TileBound::whole(ph, pw);
            }
            if vb.area < ph * pw && fits(decode_largest(gpu, vae, (ph, pw), vae_dtype)) {
                log::info!("--tile auto: the VAE decoder fits the whole frame once it splits its upsamplings");
                vb = TileBound::whole(ph, pw);
            }
            let at = |s: usize| (s.min(ph), s.min(pw));
            let need = Need::new(gpu, unet, vae, opts, (ph, pw), unet_dtype, vae_dtype)?;
            if let Some(need) = &need {
                let (u, v) = need.tiles(ub.side, vb.side)?;
                let (ul, vl) = (u < ub.side.min(whole), v < vb.side.min(whole));
                if ul || vl {
                    log::info!("--tile auto: tiles for the GPU's memory: UNet {u} (binding limit: {}), VAE {v} (binding limit: {})", ub.side, vb.side);
                }
                // A side memory lowered bounds the pixels by its square: what was planned.
                if ul {
                    ub = TileBound::square(u, ph, pw);
                }
                if vl {
                    vb = TileBound::square(v, ph, pw);
                }
                memory = Some(MemoryTiles { available: need.available, budget: need.budget, unet_limited: ul, vae_limited: vl });
            }
            // Within what fits, the tiles that process the fewest pixels (overlaps counted),
            // rectangles included.
            let (cu, cv) = (opts.tiles.cheapest(ph, pw, ub), opts.tiles.cheapest(ph, pw, vb));
            let (su, sv) = (at(ub.side), at(vb.side));
            // The bound counts pixels at the probe's bytes per pixel; the tiles chosen are
            // recorded once more to be sure their largest tensor fits (else the square).
            let cu = if cu != su && !fits(step_largest(gpu, unet, opts, cu, unet_dtype)) { su } else { cu };
            let cv = if cv != sv && !fits(decode_largest(gpu, vae, cv, vae_dtype)) { sv } else { cv };
            // The memory plan weighed squares: other tiles are kept only where the two graphs,
            // planned again at them, still fit (a rectangle may hold more pixels than the square).
            let (cu, cv) = match &need {
                Some(need) if (cu, cv) != (su, sv) => {
                    let kept = fitting_pair((cu, cv), (su, sv), |u, v| need.fits(u, v))?;
                    if kept != (cu, cv) {
                        log::info!("--tile auto: the tiles of fewest pixels ({} UNet, {} VAE) do not fit the GPU's memory with both graphs planned: {}, {}", wxh(cu), wxh(cv), wxh(kept.0), wxh(kept.1));
                    }
                    kept
                }
                _ => (cu, cv),
            };
            for (what, c, s) in [("UNet", cu, su), ("VAE", cv, sv)] {
                if c != s {
                    log::info!("--tile auto: {what} tiles of {} process fewer pixels than the largest square that fits ({})", wxh(c), wxh(s));
                }
            }
            let m = memory.unwrap_or_default();
            for (what, t, by_memory) in [("UNet", cu, m.unet_limited), ("VAE decoder", cv, m.vae_limited)] {
                refuse_seams(opts, ph, pw, what, t, by_memory.then_some(m.available))?;
            }
            (cu, cv)
        }
    };
    let plan = |t: TileDims| opts.tiles.plan(ph, pw, t).map_err(anyhow::Error::msg);
    Ok(JobTiles { measured, memory, ..JobTiles::new(plan(ut)?, plan(vt)?) })
}

/// The first pair of (UNet, VAE) tiles that `fits`: the pair chosen `c`, then each of its
/// tiles beside the other model's square, then the squares `s`, which the memory plan has
/// fitted already (not weighed again).
fn fitting_pair(c: (TileDims, TileDims), s: (TileDims, TileDims), mut fits: impl FnMut(TileDims, TileDims) -> Result<bool>) -> Result<(TileDims, TileDims)> {
    for (u, v) in [c, (c.0, s.1), (s.0, c.1)] {
        if fits(u, v)? {
            return Ok((u, v));
        }
    }
    Ok(s)
}

/// `--tile auto` never picks tiles that sit side by side without `--tile-overlap 0`: only
/// 8-pixel sides cut the frame without an overlap (an overlap must be below the side, in steps
/// of 8), and their unblended seams would show in every frame. Such tiles come only from a
/// GPU memory (`available`, where it set them) or binding limit far below the job's; the error
/// says which and the ways out.
fn refuse_seams(opts: &JobOptions, ph: usize, pw: usize, what: &str, t: TileDims, available: Option<u64>) -> Result<()> {
    let cuts = t.0 < ph || t.1 < pw;
    if !cuts || opts.tiles.overlap.is_some() || opts.tiles.overlap_for(ph, pw, t) > 0 {
        return Ok(());
    }
    let (cause, fix) = match available {
        Some(a) => (format!("the GPU's memory ({} available to the job)", crate::gpu::human_bytes(a)), "Free GPU memory (or raise --gpu-memory)"),
        None => ("the adapter's binding limit".to_string(), "Use a GPU with a larger binding limit"),
    };
    anyhow::bail!(
        "--tile auto: {cause} fits the {what} only in tiles of {}, which cannot overlap: their seams would show in every frame. {fix}, or accept seams with --tile-overlap 0 (or a fixed --tile)",
        wxh(t)
    )
}

/// Tiles of `(rows, cols)` as the summaries write them: width x height.
fn wxh((rows, cols): TileDims) -> String {
    format!("{cols}x{rows}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::registry::{Model, ModelKind};
    use crate::pipeline::tiles::TileOptions;
    use crate::pipeline::engine::Engine;
    use crate::pipeline::test_models::{micro_models, test_options, tiny_models};
    use crate::testutil::{test_gpu, Rng};

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
        let opts = test_options(d, &mut Rng::new(3), 1, 1);
        let (ph, pw) = (24, 40);
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt).unwrap();
        let (un, vn) = (tiles.unet.tiles.len(), tiles.vae.tiles.len());
        assert!(un > 1 && vn > un, "{}", tiles.summary());
        Engine::tiled(&gpu, &unet, &vae, &opts, tiles.clone(), 1, dt, dt).unwrap();
        // A square UNet tile whose largest tensor (at the measured bytes per pixel) passes the limit.
        let (unet_px, _) = tiles.measured.unwrap();
        let s = ((limit as f64 / unet_px).sqrt() as usize / 8 + 1) * 8;
        let bigger = TilePlan::new(s, s, (s, s), 0).unwrap();
        let err = Engine::tiled(&gpu, &unet, &vae, &opts, JobTiles::new(bigger, tiles.vae.clone()), 1, dt, dt).err().expect("a larger UNet tile must not fit").to_string();
        assert!(err.contains("--tile") && err.contains("max_storage_buffer_binding_size"), "{err}");

        let gpu = test_gpu();
        let (unet, vae) = tiny_models(&gpu, dt);
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt).unwrap();
        assert_eq!((tiles.unet.tiles.len(), tiles.vae.tiles.len()), (1, 1), "{}", tiles.summary());
    }

    /// Where the chosen tiles do not fit with both graphs planned, the UNet's are kept before the
    /// VAE's (they run every step), and the squares, already fitted, are the last resort.
    #[test]
    fn the_fitting_pair_prefers_the_chosen_tiles() {
        // Chosen tiles of more pixels than the squares (as a rectangle under the binding limit
        // may be), and a planner that fits only the pairs it is given.
        let (c, s) = (((16, 40), (24, 16)), ((24, 24), (16, 16)));
        let only = |ok: Vec<(TileDims, TileDims)>| move |u: TileDims, v: TileDims| -> Result<bool> { Ok(ok.contains(&(u, v))) };
        assert_eq!(fitting_pair(c, s, only(vec![c, s])).unwrap(), c);
        assert_eq!(fitting_pair(c, s, only(vec![((16, 40), (16, 16)), ((24, 24), (24, 16))])).unwrap(), ((16, 40), (16, 16)));
        assert_eq!(fitting_pair(c, s, only(vec![((24, 24), (24, 16))])).unwrap(), ((24, 24), (24, 16)));
        assert_eq!(fitting_pair(c, s, only(vec![])).unwrap(), s);
        let mut asked = vec![];
        fitting_pair(c, s, |u, v| {
            asked.push((u, v));
            Ok(false)
        })
        .unwrap();
        assert_eq!(asked, [c, ((16, 40), (16, 16)), ((24, 24), (24, 16))], "the squares are not planned again");
        assert!(fitting_pair(c, s, |_, _| anyhow::bail!("planning failed")).is_err());
    }

    /// The whole frame's latents against the largest buffer: a 4096×4096 input is refused where
    /// buffers stop at 2 GiB − 1 and passes at 4 GiB; 4096×4088 passes at 2 GiB − 1.
    #[test]
    fn a_frame_whose_latents_pass_the_largest_buffer_is_refused_at_once() {
        let e = check_whole_frame(4096, 4096, i32::MAX as u64).unwrap_err().to_string();
        assert!(e.contains("4096x4096") && e.contains("2147483648 bytes") && e.contains("2147483647 bytes") && e.contains("scale or crop"), "{e}");
        assert!(check_whole_frame(4096, 4096, 4 << 30).is_ok());
        assert!(check_whole_frame(4088, 4096, i32::MAX as u64).is_ok());
    }

    /// A device of a memory test's own (what it holds moves only with that test), untuned also
    /// on a GPU (tuned choices may take tensors away, and the arena would be less than the
    /// plan), the tiny models in f32 on it, and job options for them from `seed`.
    fn untuned_tiny_job(seed: u64) -> (std::sync::Arc<Gpu>, Box<VideoUNet>, Te3dVaeDecoder, JobOptions) {
        use crate::gpu::GpuOptions;
        let gpu = Gpu::new(&GpuOptions { tune: crate::gpu::TuneMode::Off, tune_cache: None, ..GpuOptions::from_env() }).unwrap();
        let (unet, vae) = tiny_models(&gpu, DType::F32);
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(seed), 1, 1);
        (gpu, unet, vae, opts)
    }

    /// Where the GPU's memory is known (here a `--gpu-memory` cap, as lavapipe's heap is the
    /// host's), `--tile auto` keeps each model's need within the budget: one tile when roomy;
    /// with a budget under the larger model's whole-frame need, that model gets the tiles of
    /// fewest pixels within the largest square that fits (or that square), the job's summary
    /// says memory set it, and the engine builds; a budget no tile fits is an error naming
    /// memory.
    #[test]
    fn tile_auto_fits_the_gpu_memory() {
        use crate::pipeline::memory_plan::{Need, HEADROOM};
        let dt = DType::F32;
        let (gpu, unet, vae, opts) = untuned_tiny_job(3);
        let (ph, pw) = (24, 40);
        let choose = |cap: u64| {
            gpu.set_memory_cap(Some(cap));
            choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt)
        };
        let roomy = choose(u64::MAX / 2).unwrap();
        assert_eq!((roomy.unet.tiles.len(), roomy.vae.tiles.len()), (1, 1), "{}", roomy.summary());
        assert!(roomy.memory.is_some_and(|m| !m.unet_limited && !m.vae_limited), "{:?}", roomy.memory);

        let need = Need::new(&gpu, &unet, &vae, &opts, (ph, pw), dt, dt).unwrap().unwrap();
        let at = |s: usize| (s.min(ph), s.min(pw));
        let outside = need.outside(at(pw), at(pw), 1);
        let (nu, nv) = (need.arena(Some(at(pw)), None, 1).unwrap() + outside, need.arena(None, Some(at(pw)), 1).unwrap() + outside);
        let held = gpu.held_bytes().unwrap();
        // A budget of 70% of the larger model's whole-frame need: that model gets tiles.
        let budget = nu.max(nv) * 7 / 10;
        let tiles = choose(held + (budget as f64 / HEADROOM) as u64).unwrap();
        let m = tiles.memory.unwrap();
        let (ut, vt) = (tiles.unet.tile_size(), tiles.vae.tile_size());
        let both = |u: (usize, usize), v: (usize, usize)| need.arena(Some(u), Some(v), 1).unwrap() + need.outside(u, v, 1);
        assert!(both(ut, vt) <= m.budget, "tiles {ut:?}, {vt:?} need {} over the budget {}", both(ut, vt), m.budget);
        // Each limited model's tiles are those of fewest pixels (overlaps counted) within the
        // largest square that fits beside the other's, or that square where they do not fit.
        let largest = |fits: &dyn Fn((usize, usize)) -> bool| (1..=pw / 8).map(|k| 8 * k).filter(|&s| fits(at(s))).max().unwrap();
        if m.unet_limited {
            let s = largest(&|u| both(u, vt) <= m.budget);
            let c = opts.tiles.cheapest(ph, pw, TileBound::square(s, ph, pw));
            assert!(ut == c || (ut == at(s) && both(c, vt) > m.budget), "UNet: {ut:?}, cheapest {c:?}, square {s}");
        }
        if m.vae_limited {
            let s = largest(&|v| both(ut, v) <= m.budget);
            let c = opts.tiles.cheapest(ph, pw, TileBound::square(s, ph, pw));
            assert!(vt == c || (vt == at(s) && both(ut, c) > m.budget), "VAE: {vt:?}, cheapest {c:?}, square {s}");
        }
        let (what, limited, count) = if nu >= nv { ("UNet", m.unet_limited, tiles.unet.tiles.len()) } else { ("VAE", m.vae_limited, tiles.vae.tiles.len()) };
        assert!(limited && count > 1, "the {what} needs {} B whole, over the budget {}: {}", nu.max(nv), m.budget, tiles.summary());
        assert!(tiles.summary().contains("to fit the GPU's memory"), "{}", tiles.summary());
        eprintln!("whole frame: UNet {nu} B, VAE {nv} B; budget {}: {}", m.budget, tiles.summary());
        // The engine's arena is exactly what the dry plan of its graphs said.
        let plan = need.arena(Some(ut), Some(vt), 1).unwrap();
        let engine = Engine::tiled(&gpu, &unet, &vae, &opts, tiles, 1, dt, dt).unwrap();
        let arena = engine.decode_graph().planned_bytes();
        assert_eq!(arena, plan, "the engine's arena against the dry plan of its graphs");
        drop(engine);

        // A budget that fits 8×8 tiles and no 16-pixel side: those tiles cannot overlap, so
        // auto refuses them unless `--tile-overlap 0` accepts seams.
        let (b8, b16) = (both(at(8), at(8)), both(at(16), at(8)).min(both(at(8), at(16))));
        assert!(b8 < b16, "{b8} {b16}");
        let cap = held + (((b8 + b16) / 2) as f64 / HEADROOM) as u64;
        let err = choose(cap).expect_err("8-pixel tiles side by side").to_string();
        assert!(err.contains("only in tiles of 8x8, which cannot overlap") && err.contains("--tile-overlap 0") && err.contains("GPU's memory"), "{err}");
        let seams = JobOptions { tiles: TileOptions { overlap: Some(0), ..opts.tiles }, ..opts.clone() };
        gpu.set_memory_cap(Some(cap));
        let tiles = choose_tiles(&gpu, &unet, &vae, &seams, ph, pw, dt, dt).unwrap();
        assert!(tiles.summary().contains("8x8, side by side (no overlap)"), "{}", tiles.summary());

        let err = choose(held + 1000).expect_err("no tile fits a kilobyte").to_string();
        assert!(err.contains("does not fit the GPU's memory even in 8x8 tiles"), "{err}");
    }

    /// Tiles that cut the frame along an 8-pixel side have no overlap; `--tile auto` refuses
    /// them (naming the cause) unless `--tile-overlap` was given.
    #[test]
    fn tile_auto_refuses_tiles_without_overlap() {
        let opts = test_options(8, &mut Rng::new(1), 1, 1);
        let refuse = |o: &JobOptions, t: TileDims, available: Option<u64>| refuse_seams(o, 24, 40, "VAE decoder", t, available);
        for t in [(8, 8), (8, 40), (24, 8), (16, 8)] {
            let err = refuse(&opts, t, Some(5 << 20)).expect_err("side by side").to_string();
            assert!(err.contains("the GPU's memory (5.0 MiB available to the job) fits the VAE decoder only in tiles of") && err.contains("--tile-overlap 0"), "{t:?}: {err}");
            assert!(refuse(&opts, t, None).unwrap_err().to_string().contains("binding limit"), "{t:?}");
            let seams = JobOptions { tiles: TileOptions { overlap: Some(0), ..opts.tiles }, ..opts.clone() };
            refuse(&seams, t, None).unwrap();
        }
        // Overlapping tiles, one tile, and an 8-pixel side that does not cut the frame.
        for t in [(16, 16), (24, 40), (8, 16)] {
            let h = if t == (8, 16) { 8 } else { 24 };
            refuse_seams(&opts, h, 40, "UNet", t, None).unwrap();
        }
    }

    /// Under memory, the tiles of fewest pixels may be rectangles cut on both sides (within the
    /// memory plan's square): over a 48×72 latent, lowering the memory finds such tiles, which
    /// both graphs, planned again at them, fit; the engine's arena is exactly that plan.
    #[test]
    fn tiles_under_memory_may_be_rectangles() {
        use crate::pipeline::memory_plan::Need;
        let dt = DType::F32;
        let (gpu, unet, vae, opts) = untuned_tiny_job(5);
        let (ph, pw) = (48, 72);
        let held = gpu.held_bytes().unwrap();
        let rect = |d: TileDims| d.0 != d.1 && d.0 < ph && d.1 < pw;
        let mut found = None;
        for share in (30..=90).rev().step_by(15) {
            gpu.set_memory_cap(Some(held + 60_000_000 * share / 100));
            let tiles = choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, dt, dt).unwrap();
            let (u, v) = (tiles.unet.tile_size(), tiles.vae.tile_size());
            eprintln!("{share}% of 60 MB: {}", tiles.summary());
            if rect(u) || rect(v) {
                found = Some(tiles);
                break;
            }
        }
        let tiles = found.expect("no memory gave rectangular tiles cut on both sides");
        let need = Need::new(&gpu, &unet, &vae, &opts, (ph, pw), dt, dt).unwrap().unwrap();
        let (u, v) = (tiles.unet.tile_size(), tiles.vae.tile_size());
        assert!(need.fits(u, v).unwrap(), "{}", tiles.summary());
        let plan = need.arena(Some(u), Some(v), 1).unwrap();
        let engine = Engine::tiled(&gpu, &unet, &vae, &opts, tiles, 1, dt, dt).unwrap();
        assert_eq!(engine.decode_graph().planned_bytes(), plan);
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
        let dir = crate::testutil::scratch_dir("split-vae");
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
        let probe_only = tile_for_binding(gpu.max_binding(), gpu.limits.max_buffer_size, vae_px, ph, pw).unwrap().side;
        assert!(probe_only < pw, "the probe's bound alone already fits the frame ({probe_only}): the test shows nothing");
        assert_eq!((tiles.unet.tiles.len(), tiles.vae.tiles.len()), (1, 1), "{}", tiles.summary());
        let engine = Engine::tiled(&gpu, &unet, &vae, &opts, tiles, 1, dt, dt).unwrap();
        assert!(engine.decode_graph().largest_tensor_bytes() <= limit, "{} B", engine.decode_graph().largest_tensor_bytes());
    }

    /// What `--tile auto` picks for the released models (their configs, seeded random weights,
    /// the default dtypes: UNet f16 where the adapter has it, VAE f32) for a 720p output
    /// (180×320 LR, latent 184×320) on a GPU with a 2 GiB binding limit. Prints the measured
    /// bytes per latent pixel and the tiles; records the graphs, never allocating them. Slow on a software
    /// adapter (it builds the full-size models): `cargo test --lib released_tiles -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement by hand: full-size models, ~40 s on lavapipe"]
    fn released_tiles_for_720p_under_2_gib() {
        use crate::gpu::GpuOptions;
        use crate::models::registry::{default_dtype, load_model_from, Model, ModelKind};
        let gpu = Gpu::new(&GpuOptions { max_binding: Some(2 << 30), ..GpuOptions::from_env() }).unwrap();
        let (ud, vd) = (default_dtype(&gpu, ModelKind::DiffvsrUnet), default_dtype(&gpu, ModelKind::Te3dVaeDecoder));
        let mut store = crate::weights::WeightStore::synthetic(1);
        let Model::VideoUnet(unet) = load_model_from(&gpu, ModelKind::DiffvsrUnet, None, &mut store, ud).unwrap() else { unreachable!() };
        let Model::Te3dVaeDecoder(vae) = load_model_from(&gpu, ModelKind::Te3dVaeDecoder, None, &mut store, vd).unwrap() else { unreachable!() };
        let d = unet.config.base.cross_attention_dim;
        // Only the graphs' tensor sizes matter here, not the prompts.
        let opts = test_options(d, &mut Rng::new(3), 1, 1);
        let tiles = choose_tiles(&gpu, &unet, &vae, &opts, 184, 320, ud, vd).unwrap();
        let (u, v) = tiles.measured.unwrap();
        eprintln!("{}: UNet ({ud:?}) {u:.0} B, VAE ({vd:?}) {v:.0} B per latent pixel; at this adapter's binding limit ({} B): {}", gpu.describe(), gpu.max_binding(), tiles.summary());
        // A software adapter binds less than 2 GiB: the choice at exactly 2 GiB, from the same
        // measurements.
        let two = 2u64 << 30;
        assert!(v * (184.0 * 320.0) > two as f64, "one whole 720p VAE chunk would fit 2 GiB");
        let at = |per_px: f64| {
            let bound = crate::pipeline::tiles::tile_for_binding(two, u64::MAX, per_px, 184, 320).unwrap();
            opts.tiles.plan(184, 320, opts.tiles.cheapest(184, 320, bound)).unwrap()
        };
        let t2 = JobTiles::new(at(u), at(v));
        let (vh, vw) = t2.vae.tile_size();
        assert!(v * (vh * vw) as f64 <= two as f64);
        eprintln!("at a 2 GiB binding limit: {}", t2.summary());
    }

    /// What `--tile auto` picks for the released models (their configs, seeded random weights,
    /// the default dtypes: UNet f16 where the adapter has it, VAE f32) on GPUs of 8 to 48 GiB
    /// (`--gpu-memory`, weights included, with a 2 GiB binding limit and 4 GiB buffers planned
    /// for) at common input sizes: the table in README's "Upscaling". Plans only, past the
    /// 16×16 probe. Slow on a software adapter (the full-size models; minutes):
    /// `cargo test --lib released_tiles_by_gpu_memory -- --ignored --nocapture`.
    #[test]
    #[ignore = "README's tiles table, by hand: full-size models, minutes on lavapipe"]
    fn released_tiles_by_gpu_memory() {
        use crate::gpu::GpuOptions;
        use crate::models::registry::{default_dtype, load_model_from, Model, ModelKind};
        let gpu = Gpu::new(&GpuOptions { plan_limits: Some((2 << 30, 4 << 30)), ..GpuOptions::from_env() }).unwrap();
        let (ud, vd) = (default_dtype(&gpu, ModelKind::DiffvsrUnet), default_dtype(&gpu, ModelKind::Te3dVaeDecoder));
        let mut store = crate::weights::WeightStore::synthetic(1);
        let Model::VideoUnet(unet) = load_model_from(&gpu, ModelKind::DiffvsrUnet, None, &mut store, ud).unwrap() else { unreachable!() };
        let Model::Te3dVaeDecoder(vae) = load_model_from(&gpu, ModelKind::Te3dVaeDecoder, None, &mut store, vd).unwrap() else { unreachable!() };
        let opts = test_options(unet.config.base.cross_attention_dim, &mut Rng::new(3), 1, 1);
        eprintln!("{} (UNet {ud:?}, VAE {vd:?}); weights and the rest held: {} B", gpu.describe(), gpu.held_bytes().unwrap_or(0));
        for (name, w, h) in [("360p", 640, 360), ("480p", 854, 480), ("540p", 960, 540), ("720p", 1280, 720)] {
            let (ph, pw) = crate::pipeline::tiles::LatentPad::new(h, w).padded();
            for gib in [8u64, 12, 16, 24, 48] {
                gpu.set_memory_cap(Some(gib << 30));
                let started = std::time::Instant::now();
                let line = match choose_tiles(&gpu, &unet, &vae, &opts, ph, pw, ud, vd) {
                    Ok(t) => t.summary(),
                    Err(e) => format!("{e:#}"),
                };
                eprintln!("| {name} ({w}x{h}) | {gib} GiB | {line} | {:.1} s |", started.elapsed().as_secs_f64());
            }
        }
    }
}
