//! Portability beyond Vulkan: the tiny golden models run through wgpu's GL backend (Mesa's
//! llvmpipe on CI; any desktop GL 4.3 / GLES 3.1 driver elsewhere) and must match the same
//! references the Vulkan runs match, at the same tolerances. GL has no f16 storage: asking for it
//! is a clear error, not a failed shader build.
//!
//! One test, on one thread: wgpu's GL backend holds one context, and a second thread waiting on
//! it for long is reported as a deadlock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffvsr_wgpu::golden::check_model;
use diffvsr_wgpu::gpu::{Gpu, GpuOptions};
use diffvsr_wgpu::models::registry::{load_model, ModelKind};
use diffvsr_wgpu::DType;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

/// The GL adapter. On Linux it must exist (CI installs Mesa's EGL and GL drivers); elsewhere GL
/// is a fallback wgpu may not offer (macOS), and the test says it did not run.
fn gl_gpu() -> Option<Arc<Gpu>> {
    let _ = env_logger::builder().is_test(true).try_init();
    let opts = GpuOptions { backend: Some("gl".into()), ..GpuOptions::default() };
    match Gpu::new(&opts) {
        Ok(g) => {
            g.set_poison(true);
            eprintln!("GL device: {}", g.describe());
            Some(g)
        }
        Err(e) if cfg!(target_os = "linux") => {
            panic!("no GL adapter: {e:#}\nOn Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri")
        }
        Err(e) => {
            eprintln!("NOT RUN: no GL adapter on this platform ({e:#})");
            None
        }
    }
}

#[test]
fn tiny_goldens_match_through_gl() {
    let Some(gpu) = gl_gpu() else { return };
    // (model, config, weights, inputs and references, tolerance as in the Vulkan golden tests)
    let cases: [(ModelKind, &str, &str, &str, f64); 4] = [
        (ModelKind::Unet, "sdx4/unet_config.json", "sdx4/unet.safetensors", "sdx4/unet_io.safetensors", 1e-5),
        (ModelKind::VaeDecoder, "sdx4/vae_config.json", "sdx4/vae.safetensors", "sdx4/vae_io.safetensors", 1e-5),
        (ModelKind::DiffvsrUnet, "diffvsr_unet/config.json", "diffvsr_unet/unet.pt", "diffvsr_unet/io.safetensors", 1e-5),
        (ModelKind::Te3dVaeDecoder, "te3dvae/config.json", "te3dvae/weights.pt", "te3dvae/io_f4.safetensors", 1e-5),
    ];
    for (kind, config, weights, io, tol) in cases {
        let t0 = std::time::Instant::now();
        let r = check_model(&gpu, kind, &data(config), &data(weights), &data(io), DType::F32).unwrap();
        eprintln!("GL {io}: {} ({} dispatches, {:.1} s)", r.lines.join(", "), r.dispatches, t0.elapsed().as_secs_f64());
        r.assert_within(&format!("GL {io}"), tol, 2);
    }

    if !gpu.has_f16() {
        let err = load_model(&gpu, ModelKind::Unet, Some(&data("sdx4/unet_config.json")), &data("sdx4/unet.safetensors"), DType::F16)
            .err()
            .expect("f16 storage on an adapter without SHADER_F16 must be refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("SHADER_F16") && msg.contains("--dtype f32"), "{msg}");
    }
}
