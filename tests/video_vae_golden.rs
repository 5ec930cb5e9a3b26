//! The tiny video VAE decoders against the official code's own outputs (tests/data/te3dvae and
//! tests/data/uav_vae3d, made by tools/golden_video_vae.py): DiffVSR's TE-3DVAE and
//! Upscale-A-Video's vae_3d, weights read from `.pt` checkpoints in the official layout through
//! the native reader, final outputs and intermediates compared in f32 and f16 storage, run
//! through a captured graph (the same path `forward` uses). Also the full-size key check.
//!
//! f32 is held to 1e-5, as the video UNets: measured 1.4e-6 to 1.7e-6 on lavapipe.

use std::path::{Path, PathBuf};

use diffvsr_wgpu::models::registry::ModelKind;
use diffvsr_wgpu::golden::check_model;
use diffvsr_wgpu::testutil::test_gpu;
use diffvsr_wgpu::weights::WeightStore;
use diffvsr_wgpu::{DType, Gpu, GpuOptions, Recorder};

fn data(model: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(model).join(name)
}

/// Runs `kind` on the golden inputs `io` and checks the output and every tap against the reference.
fn check(kind: ModelKind, model: &str, io: &str, dtype: DType, tol: f64) {
    let gpu = test_gpu();
    if dtype == DType::F16 && !gpu.has_f16() {
        eprintln!("skipped: adapter lacks SHADER_F16");
        return;
    }
    let t0 = std::time::Instant::now();
    let r = check_model(&gpu, kind, &data(model, "config.json"), &data(model, "weights.pt"), &data(model, io), dtype).unwrap();
    eprintln!("{model} {io} {}: {} ({:.1} s)", dtype.name(), r.lines.join(", "), t0.elapsed().as_secs_f64());
    r.assert_within(&format!("{model} {io} {dtype:?}"), tol, 2);
}

#[test]
fn te3dvae_matches_official_f32_4_frames() {
    check(ModelKind::Te3dVaeDecoder, "te3dvae", "io_f4.safetensors", DType::F32, 1e-5);
}

/// f32 storage with `--f16-operands`: where the adapter has cooperative matrices, the
/// convolutions, linear layers and attention multiply on them with operands rounded to f16 (f32 accumulation and storage, as
/// PyTorch's TF32 default does). The decode must still match the official fp32 one, at every tap,
/// within forward's tolerance for this mode (6.9e-4 measured on Mesa 26's lavapipe). Elsewhere
/// the option changes nothing and the test says it skipped.
#[test]
fn te3dvae_on_f16_operands_matches_official_f32() {
    let gpu = Gpu::new(&GpuOptions { f16_operands: true, ..GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    if !diffvsr_wgpu::ops::conv::on_f16_operands(&gpu, DType::F32) {
        eprintln!("skipped: the adapter has no cooperative matrices (or no f16) to take f16 operands");
        return;
    }
    let r = check_model(&gpu, ModelKind::Te3dVaeDecoder, &data("te3dvae", "config.json"), &data("te3dvae", "weights.pt"), &data("te3dvae", "io_f4.safetensors"), DType::F32).unwrap();
    eprintln!("te3dvae f32 on f16 operands: {}", r.lines.join(", "));
    r.assert_within("te3dvae io_f4 f32 on f16 operands", diffvsr_wgpu::forward::default_tolerance(DType::F32, true), 2);
}

/// `--winograd`: the temporal resnets' 3×3×3 convolutions by Winograd's F(2×2, 3×3) (all of
/// them here: the tiny config's channels are multiples of 4) must match the official decode at
/// every tap within the direct path's tolerances, in f32 and f16 storage (measured on CI's
/// lavapipe: 1.6e-6 and 2.0e-3 at the output, as the direct path's 1.7e-6 and 1.9e-3).
#[test]
fn te3dvae_by_winograd_matches_official() {
    let gpu = Gpu::new(&GpuOptions { winograd: true, ..GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F16, 1e-2)] {
        if dtype == DType::F16 && !gpu.has_f16() {
            eprintln!("f16 skipped: adapter lacks SHADER_F16");
            continue;
        }
        let r = check_model(&gpu, ModelKind::Te3dVaeDecoder, &data("te3dvae", "config.json"), &data("te3dvae", "weights.pt"), &data("te3dvae", "io_f4.safetensors"), dtype).unwrap();
        eprintln!("te3dvae by Winograd {}: {}", dtype.name(), r.lines.join(", "));
        r.assert_within(&format!("te3dvae io_f4 by Winograd {dtype:?}"), tol, 2);
    }
}

#[test]
fn te3dvae_matches_official_f16_4_frames() {
    check(ModelKind::Te3dVaeDecoder, "te3dvae", "io_f4.safetensors", DType::F16, 1e-2);
}

#[test]
fn te3dvae_matches_official_f32_8_frames() {
    check(ModelKind::Te3dVaeDecoder, "te3dvae", "io_f8.safetensors", DType::F32, 1e-5);
}

#[test]
fn uav_vae3d_matches_official_f32() {
    check(ModelKind::UavVae3dDecoder, "uav_vae3d", "io_f3.safetensors", DType::F32, 1e-5);
}

#[test]
fn uav_vae3d_matches_official_f16() {
    check(ModelKind::UavVae3dDecoder, "uav_vae3d", "io_f3.safetensors", DType::F16, 1e-2);
}

/// `(name, shape)` lines of a key list written by the spec's derive_shapes.py.
fn key_list(path: &Path) -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, shape) = l.split_once('\t').unwrap();
            let dims = shape.trim_matches(['[', ']']).split(',').filter(|d| !d.trim().is_empty()).map(|d| d.trim().parse().unwrap()).collect();
            (name.to_string(), dims)
        })
        .collect()
}

/// The full-size decoder, built from the released config (the built-in default, which the
/// config test checks against the published file where a clone is at hand) with synthetic
/// weights, takes exactly the official checkpoint's decoder keys and shapes (every other key is
/// under a prefix the decoder skips: the encoder), and, when `run`, runs one small forward.
fn full_size(kind: ModelKind, model: &str, total_keys: usize, frames: usize, latent: (usize, usize), run: bool) {
    use diffvsr_wgpu::models::registry::{load_model_from, Inputs};
    use diffvsr_wgpu::models::sd_vae::UNUSED_PREFIXES;
    let gpu = test_gpu();
    let t0 = std::time::Instant::now();
    let official = key_list(&data(model, "full_keys.txt"));
    assert_eq!(official.len(), total_keys, "{model}: key list length");
    let mut want: Vec<(String, Vec<usize>)> = official.into_iter().filter(|(n, _)| !UNUSED_PREFIXES.iter().any(|p| n.starts_with(p))).collect();
    want.sort();
    let dtype = if gpu.has_f16() { DType::F16 } else { DType::F32 };
    let mut store = WeightStore::synthetic(3);
    let m = load_model_from(&gpu, kind, None, &mut store, dtype).unwrap();
    let mut got = store.requested().to_vec();
    got.sort();
    let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).collect();
    let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).collect();
    assert!(missing.is_empty() && extra.is_empty() && got.len() == want.len(), "{model}: not taken {missing:?}; not in the official list {extra:?}");

    let t_load = t0.elapsed().as_secs_f64();
    if !run {
        return;
    }
    let (h, w) = latent;
    let mut rng = diffvsr_wgpu::testutil::Rng::new(5);
    let lat = diffvsr_wgpu::Tensor::from_f32(&gpu, &rng.normals(4 * frames * h * w, 1.0), &[1, 4, frames, h, w], dtype).unwrap();
    let inputs = Inputs { tensors: vec![("latents".into(), lat)], ids: None, cfg_pair: false };
    let mut rec = Recorder::capture(&gpu);
    let out = m.forward(&mut rec, &inputs).unwrap();
    let graph = rec.into_graph().unwrap();
    graph.run(&gpu).unwrap();
    assert_eq!(out.shape(), &[1, 3, frames, 4 * h, 4 * w]);
    let v = out.to_f32(&gpu).unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "{model}: non-finite output");
    eprintln!("full {model}: {} keys taken, {} dispatches, load {t_load:.1} s, total {:.1} s", got.len(), graph.dispatches(), t0.elapsed().as_secs_f64());
}

#[test]
fn full_size_te3dvae_keys_match() {
    full_size(ModelKind::Te3dVaeDecoder, "te3dvae", 336, 2, (2, 4), false);
}

/// One full-size TE-3DVAE forward (2 frames of a 2×4 latent). On request only (`-- --ignored`):
/// about 20 s of lavapipe time, alone at the end of this file's run, and what it exercises is
/// checked elsewhere: the kernels at 512 channels and the dh-512 mid attention by their op tests,
/// the graph against the official code by the tiny goldens. On a GPU, `tools/gpu-session.sh` and
/// `tools/gpu-check.sh` run the full-size model through `forward --random-weights` instead, at
/// larger latents.
#[test]
#[ignore = "full size, slow on lavapipe; the GPU scripts run it through forward"]
fn full_size_te3dvae_runs() {
    full_size(ModelKind::Te3dVaeDecoder, "te3dvae", 336, 2, (2, 4), true);
}

#[test]
fn full_size_uav_vae3d_keys_match_and_it_runs() {
    full_size(ModelKind::UavVae3dDecoder, "uav_vae3d", 204, 3, (2, 4), true);
}

/// A decode whose last upsampling would not fit one storage binding (a 720p chunk in f32 on a
/// 2 GiB GPU; here a small config on a GPU opened with a 1 MiB binding limit) runs that
/// upsampler and the next resnet's spatial half a few frames at a time, with the same values as
/// the unsplit decode on an unlimited GPU.
#[test]
fn te3dvae_splits_an_upsampling_over_the_binding_limit() {
    use diffvsr_wgpu::models::registry::{load_model_from, random_inputs};
    use diffvsr_wgpu::testutil::rel_l2;
    use diffvsr_wgpu::{Gpu, GpuOptions};
    // block_out_channels [32, 64, 64]: the last upsampler's output is 64 channels at full size
    // (4 frames of 32×48: 1.5 MiB in f32), the resnet after it narrows to 32 (0.75 MiB).
    let dir = diffvsr_wgpu::testutil::scratch_dir("te3dvae-split");
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{"_class_name": "AutoencoderKLTemporalDecoder", "block_out_channels": [32, 64, 64], "in_channels": 3,
            "latent_channels": 4, "layers_per_block": 1, "out_channels": 3, "scaling_factor": 0.08333}"#,
    )
    .unwrap();
    let run = |gpu: &Gpu| {
        let model = load_model_from(gpu, ModelKind::Te3dVaeDecoder, Some(&config), &mut WeightStore::synthetic(5), DType::F32).unwrap();
        let inputs = random_inputs(gpu, &model, (1, 8, 12), DType::F32).unwrap();
        let mut rec = Recorder::capture(gpu);
        let out = model.forward(&mut rec, &inputs).unwrap();
        let graph = rec.into_graph().unwrap();
        graph.run(gpu).unwrap();
        (out.to_f32(gpu).unwrap(), graph.dispatches(), graph.largest_tensor_bytes())
    };
    let (want, n_whole, largest) = run(&test_gpu());
    let small = Gpu::new(&GpuOptions { max_binding: Some(1 << 20), ..GpuOptions::from_env() }).unwrap();
    small.set_poison(true);
    let (got, n_split, largest_split) = run(&small);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(largest > 1 << 20 && largest_split <= 1 << 20, "largest tensors {largest} and {largest_split} bytes");
    assert!(n_split > n_whole, "the split decode should run the upsampler in groups ({n_split} vs {n_whole} dispatches)");
    let e = rel_l2(&got, &want);
    assert!(e < 1e-6, "split and whole decodes differ by {e:e}");
}
