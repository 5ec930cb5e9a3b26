//! The adapter's own ceilings, measured (`bench ceilings`, and before `bench kernels`): the copy
//! bandwidth a kernel sees (the engine's copy kernel over one large buffer: every memory-bound
//! kernel reads and writes through the same path) and the best GEMM among the matmul paths the
//! adapter has (portable; cooperative matrices where present) at large square sizes. Every
//! benchmark figure is then also given as a fraction of these, so the same table means the same
//! on any adapter.

use anyhow::Result;

use crate::bench::time_case;
use crate::ops::bench_case::{random_tensor, BenchCase};
use crate::ops::matmul::{bench_paths, matmul_with};
use crate::{DType, Gpu, Tensor};

/// What `measure` found.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceilings {
    /// Bytes read plus written per second by the copy kernel.
    pub copy_gbs: f64,
    /// The copy's shape, e.g. "268435456 f16".
    pub copy_shape: String,
    /// The best matmul, in TFLOP/s.
    pub gemm_tflops: f64,
    /// Which matmul that was, e.g. "matmul coop-v4 8192x8192x8192".
    pub gemm_case: String,
    /// Measured at the quick sizes: on a GPU far below its roofs (launches dominate a 256³
    /// GEMM), so lower bounds that other rows may pass.
    pub quick: bool,
}

impl Ceilings {
    /// The arithmetic intensity (FLOP per byte) where the copy roof meets the GEMM roof.
    pub fn ridge(&self) -> f64 {
        self.gemm_tflops * 1e12 / (self.copy_gbs * 1e9)
    }
}

/// Measures the ceilings in `dtype`. `quick` (a software adapter's default) uses a 64 Mi-element
/// copy and 128–256 GEMMs instead of 256 Mi elements and 4096–8192 (both bounded by the adapter's
/// binding limit). Even the quick copy moves a quarter of a GiB or more (two 128 MiB buffers in
/// f16), past any GPU's last-level cache (96 MB on AMD's largest Infinity Cache, 50–72 MB of L2
/// on NVIDIA's): a copy the cache held would report its bandwidth, not the memory's.
pub fn measure(gpu: &Gpu, dtype: DType, quick: bool, iters: u32) -> Result<Ceilings> {
    let max_elems = (gpu.max_binding() / dtype.size() as u64) as usize;
    let n = (if quick { 1usize << 26 } else { 1 << 28 }).min(max_elems) / 1024 * 1024;
    // Contents do not matter to a copy: fresh buffers (zeroed by wgpu), no host upload.
    let (src, dst) = (Tensor::empty(gpu, &[n], dtype)?, Tensor::empty(gpu, &[n], dtype)?);
    let copy_shape = format!("{n} {}", dtype.name());
    let case = BenchCase {
        name: "copy".into(),
        shape: copy_shape.clone(),
        flops: 0.0,
        bytes: 2.0 * (n * dtype.size()) as f64,
        run: Box::new(move |r| crate::ops::concat::copy(r, &src, &dst)),
    };
    let t = time_case(gpu, &case, iters)?;
    let copy_gbs = case.bytes / t / 1e9;

    let sizes: &[usize] = if quick { &[128, 256] } else { &[4096, 8192] };
    let mut best: Option<(f64, String)> = None;
    for &s in sizes {
        if s * s > max_elems {
            continue;
        }
        let a = random_tensor(gpu, &[s, s], dtype, 11)?;
        let b = random_tensor(gpu, &[s, s], dtype, 12)?;
        for (path, label) in bench_paths(gpu, dtype) {
            let (a, b) = (a.clone(), b.clone());
            let case = BenchCase {
                name: format!("matmul {label}"),
                shape: format!("{s}x{s}x{s}"),
                flops: 2.0 * (s as f64).powi(3),
                bytes: 3.0 * (s * s * dtype.size()) as f64,
                run: Box::new(move |r| matmul_with(r, &a, &b, None, path).map(drop)),
            };
            let tflops = case.flops / time_case(gpu, &case, iters)? / 1e12;
            if best.as_ref().is_none_or(|(b, _)| tflops > *b) {
                best = Some((tflops, format!("{} {}", case.name, case.shape)));
            }
        }
    }
    let Some((gemm_tflops, gemm_case)) = best else {
        anyhow::bail!("bench ceilings: no GEMM size fits the adapter's binding limit ({} bytes)", gpu.max_binding());
    };
    Ok(Ceilings { copy_gbs, copy_shape, gemm_tflops, gemm_case, quick })
}
