//! Two windows of the job against the official DiffVSR pipeline (issue 9).
//!
//! `tests/data/pipeline_window/windows.safetensors` was made by `tools/golden_pipeline.py`: the
//! released `StableDiffusionUpscalePipeline.__call__` (with inference_tile.py's scheduler
//! override) on the tiny UNet and TE-3DVAE of `tests/data/diffvsr_unet` and `tests/data/te3dvae`,
//! 12 frames (two 8-frame windows, stride 4), LR 8×16 (and 12×20 in `windows_12x20.safetensors`), 2 DDIM steps, guidance 5, noise level
//! 50, with its noise (initial latents, LR augmentation, the rescheduling's shuffle) and prompt
//! embeddings given, all in f32. Here the same inputs go through the job's pieces: the released
//! schedules ([`Ddim::released`], [`LowResNoise::released`]), [`add_noise`], the rescheduling
//! rule ([`rescheduled_source`]) fed the official shuffle, the sample layout of `run_job`, the
//! captured step graph (both windows in one UNet call in the f32 run, one per call in the f16
//! run), the ILT fuse on the GPU and the decode of [`engine::denoise_and_decode_windows`].

use crate::golden::rel_l2;
use crate::models::registry::{load_model, Model, ModelKind};
use crate::ops::sampler::cpu::add_noise;
use crate::pipeline::engine;
use crate::pipeline::options::{JobOptions, PromptEmbeds};
use crate::pipeline::noise::rescheduled_source;
use crate::pipeline::scheduler::{Ddim, LowResNoise};
use crate::pipeline::windows::{Ilt, STRIDE, WINDOW};
use crate::testutil::test_gpu;
use crate::video::color::MatrixChoice;
use crate::weights::WeightStore;
use crate::DType;

fn data(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

/// Relative L2 error allowed on the final latents, the fused latents and the decoded frames,
/// with the UNet in f32 (measured on lavapipe: at most 6.4e-6; the host's f64 schedule against
/// diffusers' f32 tables is inside that). Swapping the CFG halves moves the official final
/// latents by 31%.
const TOL_F32: f64 = 2e-5;
/// The same with the UNet in f16 storage (the job's default where the adapter has f16; the
/// latents stay f32 between steps): measured on lavapipe at most 8.1e-3. One f16 UNet forward is
/// about 2e-3 from f32 (`tests/video_unet_golden.rs`), and guidance 5 scales the difference of
/// the two CFG halves' forwards by 5.
const TOL_F16: f64 = 2e-2;

/// Frames `frames` of every channel of a `[C][F][h][w]` tensor, as `[C][frames][h][w]`.
fn frames_of(x: &[f32], channels: usize, total: usize, frames: std::ops::Range<usize>, plane: usize) -> Vec<f32> {
    (0..channels).flat_map(|c| x[(c * total + frames.start) * plane..(c * total + frames.end) * plane].to_vec()).collect()
}

#[test]
fn two_windows_match_official_pipeline() {
    two_windows_match("windows.safetensors", &[DType::F32, DType::F16]);
}

/// The same at an LR size whose sides are no multiples of 8 (12×20), which the release runs at
/// its own size (its UNet steps up to each skip's size: 12 → 6 → 3 → 2 rows, 20 → 10 → 5 → 3
/// columns), as the job does where one tile covers the frame (`LatentPad::unpadded`). The f32
/// UNet only: the f16 path at odd sizes is the video UNet goldens'.
#[test]
fn two_windows_at_sides_off_the_multiples_of_8_match_official_pipeline() {
    two_windows_match("windows_12x20.safetensors", &[DType::F32]);
}

fn two_windows_match(file: &str, unet_dtypes: &[DType]) {
    let gpu = test_gpu();
    let mut g = WeightStore::open(&data(&format!("pipeline_window/{file}"))).unwrap();
    let mut take = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let shape = g.shape(name).unwrap_or_else(|| panic!("the golden has no '{name}'"));
        (g.take(name, &shape).unwrap(), shape)
    };
    let (lr, lr_shape) = take("lr");
    let (lr_noise, _) = take("lr_noise");
    let (z0, _) = take("latents_init");
    let (perm, _) = take("permutation");
    let (pos, pos_shape) = take("prompt_embeds");
    let (neg, neg_shape) = take("negative_prompt_embeds");
    let (unet_lowres, _) = take("unet_lowres");
    let (timesteps, _) = take("timesteps");
    let (labels, _) = take("class_labels");
    let (window_init, _) = take("window_init");
    let (window_final, _) = take("window_final");
    let (fused, _) = take("fused");
    let (decoded, _) = take("decoded");
    let (scalars, _) = take("scalars");
    let [guidance, noise_level, scaling] = [scalars[0], scalars[1], scalars[2]];
    let (frames, h, w) = (lr_shape[2], lr_shape[3], lr_shape[4]);
    assert_eq!((lr_shape[..2].to_vec(), frames), (vec![1, 3], 12));
    let windows = (frames - WINDOW) / STRIDE + 1;
    let steps = timesteps.len();
    let plane = h * w;
    let lat = 4 * WINDOW * plane;

    // What the official pipeline fed its UNet: the released timesteps, the noise level as
    // the class label of both CFG halves, the LR image noised once with the low-res schedule.
    let ours: Vec<f32> = Ddim::released().steps(steps).unwrap().iter().map(|s| s.t as f32).collect();
    assert_eq!(ours, timesteps, "DDIM timesteps");
    assert_eq!(labels, [noise_level; 2], "class labels");
    let [c0, c1] = LowResNoise::released().coeffs(noise_level as u32).unwrap();
    let noisy = add_noise(&lr, &lr_noise, c0 as f32, c1 as f32);
    let noisy_w0 = frames_of(&noisy, 3, frames, 0..WINDOW, plane);
    let e = rel_l2(&noisy_w0, &unet_lowres[..noisy_w0.len()]);
    assert!(e < 1e-6, "noisy LR image: relative L2 {e:.2e}");

    // The rescheduling: the engine's rule, fed the official shuffle, gives the latents each
    // official window started from, exactly.
    let perm: [usize; 4] = std::array::from_fn(|k| perm[k] as usize);
    let mut starts = Vec::new();
    for (i, want) in window_init.chunks_exact(lat).enumerate() {
        let src: Vec<usize> = (0..WINDOW).map(|k| rescheduled_source((STRIDE * i + k) as u64, |_| perm) as usize).collect();
        let init: Vec<f32> = (0..4).flat_map(|c| src.iter().flat_map(|&f| z0[(c * frames + f) * plane..(c * frames + f + 1) * plane].to_vec()).collect::<Vec<_>>()).collect();
        assert_eq!(init, want, "window {i}'s initial latents (sources {src:?}, shuffle {perm:?})");
        starts.push(init);
    }
    assert_ne!(starts[1][..plane], starts[0][..plane], "window 1 starts from other noise than window 0");

    let opts = JobOptions {
        steps,
        guidance,
        noise_level: noise_level as u32,
        seed: 0,
        ilt: Ilt::Released,
        positive: PromptEmbeds::new(pos, pos_shape).unwrap(),
        negative: PromptEmbeds::new(neg, neg_shape).unwrap(),
        matrix: MatrixChoice::Auto,
        frames: None,
        tiles: Default::default(),
        windows_per_call: Default::default(),
        input_frames: None,
        redecode_overflow: true,
    };
    // run_job's samples: both CFG halves [latents (4 channels) ++ noisy LR (3)], each [C][8][h][w].
    let samples: Vec<Vec<f32>> = starts
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let mut half = z.clone();
            half.extend(frames_of(&noisy, 3, frames, STRIDE * i..STRIDE * i + WINDOW, plane));
            let mut sample = half.clone();
            sample.extend_from_slice(&half);
            sample
        })
        .collect();
    let vae_dt = DType::F32;
    let vae = match load_model(&gpu, ModelKind::Te3dVaeDecoder, Some(&data("te3dvae/config.json")), &data("te3dvae/weights.pt"), vae_dt).unwrap() {
        Model::Te3dVaeDecoder(v) => v,
        _ => unreachable!(),
    };
    assert_eq!(vae.config.scaling_factor as f32, scaling, "the VAE config's scaling_factor");
    for (unet_dt, tol) in [(DType::F32, TOL_F32), (DType::F16, TOL_F16)] {
        if !gpu.dtypes().contains(&unet_dt) || !unet_dtypes.contains(&unet_dt) {
            continue;
        }
        let unet = match load_model(&gpu, ModelKind::DiffvsrUnet, Some(&data("diffvsr_unet/config.json")), &data("diffvsr_unet/unet.pt"), unet_dt).unwrap() {
            Model::VideoUnet(u) => u,
            _ => unreachable!(),
        };
        // The decode (f32 in both runs, as released) is compared once: an f16 UNet changes only
        // the latents it gets, and each decoded chunk costs seconds on lavapipe. The f32 run
        // denoises both windows in one UNet call (`--windows-per-call 2`: batch 4, the
        // windows' negative halves then their positive halves), the f16 run one per call.
        let decode = unet_dt == DType::F32;
        let per_call = if unet_dt == DType::F32 { 2 } else { 1 };
        let (finals, chunks) = engine::denoise_and_decode_windows(&gpu, &unet, &vae, &opts, h, w, per_call, unet_dt, vae_dt, &samples, decode).unwrap();
        assert_eq!((finals.len(), chunks.len()), (windows, if decode { windows + 1 } else { 0 }));
        let mut report = Vec::new();
        for (i, (got, want)) in finals.iter().zip(window_final.chunks_exact(lat)).enumerate() {
            report.push((format!("window {i} final latents"), rel_l2(got, want)));
        }
        // The fuse rule against `fuse_latents`; the GPU fuse itself is in the decoded frames.
        let ours_fused = fuse_on_host(&finals, frames, plane);
        report.push(("fused latents".into(), rel_l2(&ours_fused, &fused)));
        // The decoded frames: chunk k holds frames 4k…4k+3 of the [3][F][4h][4w] output.
        if decode {
            compare_decoded(&chunks, &decoded, frames, plane, &mut report);
        }
        let text: Vec<String> = report.iter().map(|(n, e)| format!("{n} {e:.2e}")).collect();
        eprintln!("official pipeline, two windows at {h}x{w}, UNet {unet_dt:?}, {per_call} per call: {}", text.join(", "));
        assert!(report.iter().all(|(_, e)| *e <= tol), "UNet {unet_dt:?}: relative L2 above {tol:.0e}: {}", text.join(", "));
    }
}

/// The decoded chunks (`[3][4][4h][4w]` each) against the official `[3][F][4h][4w]` decode,
/// raw and clamped to [−1, 1] as both pipelines write frames.
fn compare_decoded(chunks: &[Vec<f32>], decoded: &[f32], frames: usize, plane: usize, report: &mut Vec<(String, f64)>) {
        let clamp = |v: &[f32]| v.iter().map(|x| x.clamp(-1.0, 1.0)).collect::<Vec<_>>();
        let px = 16 * plane;
        let mut rgb = vec![0f32; decoded.len()];
        for (k, chunk) in chunks.iter().enumerate() {
            for c in 0..3 {
                for j in 0..4 {
                    let f = 4 * k + j;
                    rgb[(c * frames + f) * px..(c * frames + f + 1) * px].copy_from_slice(&chunk[(c * 4 + j) * px..(c * 4 + j + 1) * px]);
                }
            }
        }
        report.push(("decoded".into(), rel_l2(&rgb, decoded)));
        report.push(("clamped frames".into(), rel_l2(&clamp(&rgb), &clamp(decoded))));
}

/// The windows' final latents fused by the rule the job's chunks follow (`pipeline::chunks`):
/// window 0's first half, then per later window the released ILT blend of the previous window's
/// second half with its first half, then the last window's second half. `[4][F][h][w]`, for
/// comparison with the official `fuse_latents`. (`windows::frame_sources` states the same rule
/// for a clip the job has mirror-padded to a multiple of 8 frames; the golden hands the pipeline
/// 12 frames, unpadded.)
fn fuse_on_host(finals: &[Vec<f32>], frames: usize, plane: usize) -> Vec<f32> {
    use crate::pipeline::windows::ilt_weights;
    let last = finals.len() - 1;
    let mut out = vec![0f32; 4 * frames * plane];
    for f in 0..frames {
        let (b, j) = (f / STRIDE, f % STRIDE);
        let parts = if b == 0 {
            vec![(0, j, 1.0)]
        } else if b > last {
            vec![(last, STRIDE + j, 1.0)]
        } else {
            let (wp, wc) = ilt_weights(Ilt::Released, j);
            vec![(b - 1, STRIDE + j, wp), (b, j, wc)]
        };
        for c in 0..4 {
            let o = (c * frames + f) * plane;
            for &(i, k, wt) in &parts {
                let src = &finals[i][(c * WINDOW + k) * plane..(c * WINDOW + k + 1) * plane];
                for (d, s) in out[o..o + plane].iter_mut().zip(src) {
                    *d += wt * s;
                }
            }
        }
    }
    out
}
