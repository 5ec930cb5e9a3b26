//! Helpers for kernel tests and benchmarks: a seeded RNG, relative-L2 comparison, one shared
//! test device with output poisoning switched on, and the test process's scratch folder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use crate::gpu::Gpu;

pub use crate::rng::Rng;

/// A fresh seed per call, so repeated runs cover different inputs; printed on failure.
pub fn fresh_seed() -> u64 {
    if let Ok(s) = std::env::var("DIFFVSR_TEST_SEED") {
        if let Ok(v) = s.parse() {
            return v;
        }
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    t.as_nanos() as u64 ^ COUNTER.fetch_add(0x1234_5677, std::sync::atomic::Ordering::Relaxed)
}

pub use crate::golden::rel_l2;

/// The absolute error an f16 store may add to a value too small for f16's normal range: one
/// subnormal step, 2^-24 (a relative bound cannot hold there: an output of 1e-6 is stored to
/// within 6e-2 of itself).
pub const F16_SUBNORMAL_STEP: f64 = 5.960464477539063e-8;

/// Panics with a useful message when `rel_l2(got, want) > tol`, unless the difference is within
/// `tol` of `want`'s norm plus one [`F16_SUBNORMAL_STEP`] per element (RMS): outputs whose
/// values fall under f16's normal range (a tiny random input times everything) are then held
/// to what an f16 store can represent. Far below any f32 test's scale of error.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_l2(got, want);
    let diff = || got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum::<f64>().sqrt();
    let norm = || want.iter().map(|&w| (w as f64).powi(2)).sum::<f64>().sqrt();
    let within_floor = || got.len() == want.len() && e.is_finite() && diff() <= tol * norm() + F16_SUBNORMAL_STEP * (want.len() as f64).sqrt();
    // Not `e > tol`: a NaN error must fail too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(e <= tol) && !within_floor() {
        let bad = got.iter().zip(want).position(|(g, w)| !g.is_finite() || (g - w).abs() > 1e-3 + 1e-2 * w.abs());
        panic!(
            "{what}: relative L2 error {e:.3e} > {tol:.1e} (len {}; first bad index {:?}: got {:?} want {:?})",
            want.len(),
            bad,
            bad.map(|i| got[i]),
            bad.map(|i| want[i])
        );
    }
}

/// Rounds through f16 (the CPU twin of an f16 upload).
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Panics unless `got` is `want` as stored in `dt`: the same f32 bits, or with f16 storage
/// the device's rounding of `want` (within one f16 step either way: WGSL leaves the rounding of
/// f32 → f16 conversions to the device).
#[track_caller]
pub fn assert_stored_exactly(what: &str, got: &[f32], want: &[f32], dt: crate::DType) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let same = |g: f32, w: f32| match dt {
        crate::DType::F16 => {
            let (gh, wh) = (half::f16::from_f32(g), half::f16::from_f32(w));
            gh.to_f32() == g && (gh.to_bits() as i32 - wh.to_bits() as i32).abs() <= 1
        }
        _ => g.to_bits() == w.to_bits(),
    };
    let bad = got.iter().zip(want).position(|(&g, &w)| !same(g, w));
    assert!(bad.is_none(), "{what}: element {bad:?} is {:?}, expected {:?} stored as {}", bad.map(|i| got[i]), bad.map(|i| want[i]), dt.name());
}

/// A folder for this test process's files, created: `diffvsr-tests-<pid>/<tag>` in the
/// system's temp folder. The tests of one process share it (they run as threads, and several
/// use one file set). The folders of test processes that have ended are removed the first
/// time a process asks (where `/proc` says which have ended), so runs do not pile up files.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(remove_ended_runs);
    let d = std::env::temp_dir().join(format!("diffvsr-tests-{}", std::process::id())).join(tag);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating the scratch folder {}: {e}", d.display()));
    d
}

fn remove_ended_runs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("diffvsr-tests-")).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Uploads `v` as `dt` and returns it with its host twin (rounded through f16 for f16 storage),
/// which is what a CPU reference must compute on.
pub fn upload(gpu: &Gpu, v: &[f32], shape: &[usize], dt: crate::DType) -> (crate::Tensor, Vec<f32>) {
    let t = crate::Tensor::from_f32(gpu, v, shape, dt).unwrap();
    let host = if dt == crate::DType::F16 { round_f16(v) } else { v.to_vec() };
    (t, host)
}

/// The device the tests share (the adapter the environment selects, poisoning on, tuning only
/// where `DIFFVSR_TUNE` asks, no tuning cache file).
pub fn test_gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        // Rules' tiles unless DIFFVSR_TUNE asks (the tuning tests open devices of their own), so
        // a GPU runs the suite as CI's lavapipe does; never with the user's cache file.
        let env = crate::GpuOptions::from_env();
        let tune = if std::env::var_os("DIFFVSR_TUNE").is_some() { env.tune } else { crate::gpu::TuneMode::Off };
        let opts = crate::GpuOptions { tune, tune_cache: None, ..env };
        let gpu = Gpu::new(&opts).expect("tests need a GPU adapter (on CI: mesa-vulkan-drivers)");
        gpu.set_poison(true);
        eprintln!("test device: {}", gpu.describe());
        gpu
    })
    .clone()
}

/// Parses and validates `k`'s full WGSL with naga, then translates it to SPIR-V with the
/// options wgpu's Vulkan backend uses for the engine's kernels (runtime checks off, as
/// `Gpu::pipeline` compiles them). Catches syntax and typing errors, and naga's SPIR-V writer
/// panics (e.g. a run-time `coopStoreT` stride), on machines that can't run the kernel.
pub fn translate_check(k: &crate::Kernel) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = k.wgsl();
    let what = format!("kernel '{}' {:?} {:?}", k.name, k.dtype, k.defs);
    let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{what}: parse:\n{}", e.emit_to_string(&src)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: validate:\n{}", e.emit_to_string(&src)));
    let unchecked = naga::proc::BoundsCheckPolicy::Unchecked;
    let opts = naga::back::spv::Options {
        lang_version: (1, 6),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: unchecked,
            buffer: unchecked,
            image_load: unchecked,
            binding_array: unchecked,
        },
        zero_initialize_workgroup_memory: naga::back::spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: false,
        ..Default::default()
    };
    let pipe = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into() };
    let words = naga::back::spv::write_vec(&module, &info, &opts, Some(&pipe)).unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
    assert!(words.len() > 100, "{what}: SPIR-V suspiciously short");
    (module, info)
}

/// A file of the official DiffVSR / Upscale-A-Video code, when a clone is at hand:
/// `DIFFVSR_OFFICIAL_CODE` names a folder holding `DiffVSR/` and `Upscale-A-Video/` (nothing of
/// that code is in this repository). `None` when unset or missing; tests then skip that part.
pub fn official_file(rel: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(&std::env::var("DIFFVSR_OFFICIAL_CODE").ok()?).join(rel);
    p.exists().then_some(p)
}

/// Runs every quick bench case of an op once in every storage dtype (so a case that no longer
/// matches its op's API fails a test, not a benchmark run).
pub fn run_quick_bench_cases(cases: fn(&Gpu, crate::DType, bool) -> anyhow::Result<Vec<crate::ops::bench_case::BenchCase>>) {
    let gpu = test_gpu();
    for dt in gpu.dtypes() {
        for case in cases(&gpu, dt, true).unwrap() {
            let mut rec = gpu.recorder();
            (case.run)(&mut rec).unwrap_or_else(|e| panic!("{} {dt:?}: {e}", case.name));
            rec.submit();
            gpu.sync().unwrap();
        }
    }
}

/// Writes the micro model configs into `dir`, as a release folder's overrides
/// (`unet_3d_config.json`, `vae_config.json`): the tiny golden configs of `tests/data` cut down
/// to a 2-level DiffVSR UNet [32, 64] with one layer per block and a TE-3DVAE with one layer
/// per block. About 3× less work per window on a software driver than the golden models, for
/// the job tests that need no golden weights (with [`crate::weights::WeightStore::synthetic`]).
/// Returns the two paths.
pub fn write_micro_configs(dir: &std::path::Path) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let edit = |from: &str, to: &str, f: &dyn Fn(&mut serde_json::Value)| -> std::io::Result<std::path::PathBuf> {
        let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join(from))?).map_err(std::io::Error::other)?;
        f(&mut c);
        let out = dir.join(to);
        std::fs::write(&out, c.to_string())?;
        Ok(out)
    };
    let unet = edit("diffvsr_unet/config.json", "unet_3d_config.json", &|c| {
        c["block_out_channels"] = serde_json::json!([32, 64]);
        c["attention_head_dim"] = serde_json::json!([1, 2]);
        c["layers_per_block"] = serde_json::json!(1);
        c["down_block_types"] = serde_json::json!(["DownBlock3D", "CrossAttnDownBlock3D"]);
        c["up_block_types"] = serde_json::json!(["CrossAttnUpBlock3D", "UpBlock3D"]);
        c["down_temporal_idx"] = serde_json::json!([0, 1]);
        c["up_temporal_idx"] = serde_json::json!([0, 1]);
        c["only_cross_attention"] = serde_json::json!([true, false]);
    })?;
    let vae = edit("te3dvae/config.json", "vae_config.json", &|c| c["layers_per_block"] = serde_json::json!(1))?;
    Ok((unet, vae))
}

#[cfg(test)]
mod tests {
    use super::assert_close;

    /// The comparison holds values under f16's normal range to one subnormal step and all
    /// others to the relative bound; a NaN or a relative miss at a normal scale fails.
    #[test]
    fn assert_close_floors_only_at_f16_subnormals() {
        // 1e-6 stored in f16 is 9.5367e-7 (the subnormal step is 6e-8): 1.4% off, accepted.
        assert_close("tiny", &[9.536743e-7, -3.33786e-6], &[9.66818e-7, -3.3257234e-6], 1e-3);
        let fails = |got: Vec<f32>, want: Vec<f32>| std::panic::catch_unwind(|| assert_close("x", &got, &want, 1e-3)).is_err();
        assert!(fails(vec![1.002, -0.5], vec![1.0, -0.5]), "a 2e-3 miss at a normal scale");
        assert!(fails(vec![f32::NAN, 1e-7], vec![0.0, 1e-7]), "a NaN");
        assert!(fails(vec![2e-6, 0.0], vec![1e-6, 0.0]), "a miss of 1e-6, over the subnormal step");
    }
}
