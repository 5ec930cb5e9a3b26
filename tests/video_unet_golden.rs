//! The tiny video UNets against the official code's own outputs (tests/data/diffvsr_unet,
//! tests/data/uav_unet; made by tools/golden_video_unet.py): final outputs and intermediates, f32
//! and f16 storage, weights read natively from the official `.pt` checkpoint layout, run through a
//! captured graph (the path `forward` uses).

use std::path::{Path, PathBuf};

use diffvsr_wgpu::forward::{load_inputs, load_model, ModelKind};
use diffvsr_wgpu::models::nhwc_to_nchw_host;
use diffvsr_wgpu::testutil::{rel_l2, test_gpu};
use diffvsr_wgpu::weights::WeightStore;
use diffvsr_wgpu::{DType, Recorder};

fn data(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir).join(name)
}

fn check(kind: ModelKind, dir: &str, dtype: DType, tol: f64) {
    let gpu = test_gpu();
    if dtype == DType::F16 && !gpu.has_f16() {
        eprintln!("skipped: adapter lacks SHADER_F16");
        return;
    }
    let t0 = std::time::Instant::now();
    let model = load_model(&gpu, kind, Some(&data(dir, "config.json")), &data(dir, "unet.pt"), dtype).unwrap();
    let io_path = data(dir, "io.safetensors");
    let inputs = load_inputs(&gpu, kind, &io_path, dtype).unwrap();
    let mut golden = WeightStore::open(&io_path).unwrap();

    let mut taps = Vec::new();
    let mut rec = Recorder::capture(&gpu);
    let out = model.forward(&mut rec, &inputs, Some(&mut taps)).unwrap();
    let graph = rec.into_graph();
    graph.run(&gpu);

    let mut report = Vec::new();
    let mut worst = 0.0f64;
    for (name, t) in &taps {
        let key = format!("tap.{name}");
        if !golden.contains(&key) {
            continue;
        }
        let shape = golden.shape(&key).unwrap();
        let want = golden.take(&key, &shape).unwrap();
        let got = nhwc_to_nchw_host(&t.to_f32(&gpu).unwrap(), t.shape());
        let e = rel_l2(&got, &want);
        worst = worst.max(e);
        report.push(format!("{name}: {e:.2e}"));
    }
    let shape = golden.shape("output").unwrap();
    assert_eq!(out.shape(), shape.as_slice());
    let want = golden.take("output", &shape).unwrap();
    let e = rel_l2(&out.to_f32(&gpu).unwrap(), &want);
    report.push(format!("output: {e:.2e}"));
    eprintln!("{dir} {} ({} dispatches, {:.1} s): {}", dtype.name(), graph.dispatches(), t0.elapsed().as_secs_f64(), report.join(", "));
    assert!(worst <= tol && e <= tol, "{dir} {:?} relative L2 above {tol:.0e}: {}", dtype, report.join(", "));
    assert!(report.len() >= 10, "{dir}: intermediates were not compared: {report:?}");
}

#[test]
fn diffvsr_unet_matches_official_f32() {
    check(ModelKind::DiffvsrUnet, "diffvsr_unet", DType::F32, 1e-4);
}

#[test]
fn diffvsr_unet_matches_official_f16() {
    check(ModelKind::DiffvsrUnet, "diffvsr_unet", DType::F16, 1e-2);
}

#[test]
fn uav_unet_matches_official_f32() {
    check(ModelKind::UavUnet, "uav_unet", DType::F32, 1e-4);
}

#[test]
fn uav_unet_matches_official_f16() {
    check(ModelKind::UavUnet, "uav_unet", DType::F16, 1e-2);
}
