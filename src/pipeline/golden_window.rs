//! One window of the job against the official DiffVSR pipeline (issue 9).
//!
//! `tests/data/pipeline_window/window.safetensors` was made by `tools/golden_pipeline.py`: the
//! released `StableDiffusionUpscalePipeline.__call__` (with inference_tile.py's scheduler
//! override) on the tiny UNet and TE-3DVAE of `tests/data/diffvsr_unet` and `tests/data/te3dvae`,
//! one 8-frame window, LR 8×16, 3 DDIM steps, guidance 5, noise level 50, with its noise
//! (initial latents, LR augmentation) and prompt embeddings given, all in f32. Here the same
//! inputs go through the job's pieces: the released schedules ([`Ddim::released`],
//! [`LowResNoise::released`]), [`add_noise`], the sample layout of `run_job`, and the captured
//! step graph and decode of [`job::denoise_and_decode_window`].

use crate::golden::rel_l2;
use crate::models::registry::{load_model, Model, ModelKind};
use crate::pipeline::job::{self, JobOptions, PromptEmbeds};
use crate::pipeline::scheduler::{add_noise, Ddim, LowResNoise};
use crate::pipeline::windows::{Ilt, WINDOW};
use crate::testutil::test_gpu;
use crate::video::color::MatrixChoice;
use crate::weights::WeightStore;
use crate::DType;

fn data(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

/// Relative L2 error allowed on the final latents and on the decoded frames, f32 on both sides
/// (measured on lavapipe: 4.6e-6 and 5.3e-6; the host's f64 schedule against diffusers' f32
/// tables is inside that). Swapping the CFG halves moves the official final latents by 31%.
const TOL: f64 = 2e-5;

#[test]
fn window_matches_official_pipeline() {
    let gpu = test_gpu();
    let dt = DType::F32;
    let mut g = WeightStore::open(&data("pipeline_window/window.safetensors")).unwrap();
    let mut take = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let shape = g.shape(name).unwrap_or_else(|| panic!("the golden has no '{name}'"));
        (g.take(name, &shape).unwrap(), shape)
    };
    let (lr, lr_shape) = take("lr");
    let (lr_noise, _) = take("lr_noise");
    let (z0, _) = take("latents_init");
    let (pos, pos_shape) = take("prompt_embeds");
    let (neg, neg_shape) = take("negative_prompt_embeds");
    let (unet_lowres, _) = take("unet_lowres");
    let (timesteps, _) = take("timesteps");
    let (labels, _) = take("class_labels");
    let (step_latents, _) = take("step_latents");
    let (decoded, _) = take("decoded");
    let (scalars, _) = take("scalars");
    let [guidance, noise_level, scaling] = [scalars[0], scalars[1], scalars[2]];
    let (h, w) = (lr_shape[3], lr_shape[4]);
    assert_eq!(lr_shape[..3], [1, 3, WINDOW]);
    let steps = timesteps.len();
    let plane = h * w;

    // What the official pipeline fed its UNet: the released timesteps, the noise level as
    // the class label of both CFG halves, the LR image noised once with the low-res schedule.
    let ours: Vec<f32> = Ddim::released().steps(steps).unwrap().iter().map(|s| s.t as f32).collect();
    assert_eq!(ours, timesteps, "DDIM timesteps");
    assert_eq!(labels, [noise_level; 2], "class labels");
    let noisy = add_noise(&lr, &lr_noise, LowResNoise::released().coeffs(noise_level as u32).unwrap());
    let e = rel_l2(&noisy, &unet_lowres[..noisy.len()]);
    assert!(e < 1e-6, "noisy LR image: relative L2 {e:.2e}");

    let unet = match load_model(&gpu, ModelKind::DiffvsrUnet, Some(&data("diffvsr_unet/config.json")), &data("diffvsr_unet/unet.pt"), dt).unwrap() {
        Model::VideoUnet(u) => u,
        _ => unreachable!(),
    };
    let vae = match load_model(&gpu, ModelKind::Te3dVaeDecoder, Some(&data("te3dvae/config.json")), &data("te3dvae/weights.pt"), dt).unwrap() {
        Model::Te3dVaeDecoder(v) => v,
        _ => unreachable!(),
    };
    assert_eq!(vae.config.scaling_factor as f32, scaling, "the VAE config's scaling_factor");
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
    };
    // run_job's sample: both CFG halves [latents (4 channels) ++ noisy LR (3)], each [C][8][h][w].
    let mut half = z0;
    half.extend_from_slice(&noisy);
    let mut sample = half.clone();
    sample.extend_from_slice(&half);
    let (latents, rgb) = job::denoise_and_decode_window(&gpu, &unet, &vae, &opts, h, w, dt, &sample).unwrap();

    let want = &step_latents[(steps - 1) * 4 * WINDOW * plane..];
    let e_lat = rel_l2(&latents, want);
    let e_rgb = rel_l2(&rgb, &decoded);
    // The pipeline's output frames are the decode clamped to [−1, 1] (checked by the script);
    // the job clamps the same way.
    let clamp = |v: &[f32]| v.iter().map(|x| x.clamp(-1.0, 1.0)).collect::<Vec<_>>();
    let e_frames = rel_l2(&clamp(&rgb), &clamp(&decoded));
    eprintln!("official pipeline window: final latents {e_lat:.2e}, decoded chunk {e_rgb:.2e}, clamped frames {e_frames:.2e}");
    assert!(e_lat <= TOL && e_rgb <= TOL && e_frames <= TOL, "relative L2 above {TOL:.0e}: final latents {e_lat:.2e}, decoded {e_rgb:.2e}, frames {e_frames:.2e}");
}
