//! Benchmark cases, declared beside each op (`bench_cases` in every op module) and timed by the
//! runner in `bench.rs`, which sits above the ops.

use anyhow::Result;

use crate::kernel::Recorder;
use crate::{DType, Gpu};

/// Records one run of a case's op.
pub type BenchRun = Box<dyn Fn(&mut Recorder) -> Result<()>>;

pub struct BenchCase {
    pub name: String,
    /// Human-readable shape, e.g. "16x64x64x512 -> 512".
    pub shape: String,
    /// Floating-point operations per run (0 for memory-bound kernels).
    pub flops: f64,
    /// Bytes read plus written per run (the minimum; used for GB/s).
    pub bytes: f64,
    pub run: BenchRun,
}

/// Random device tensor for a benchmark input.
pub fn random_tensor(gpu: &Gpu, shape: &[usize], dtype: DType, seed: u64) -> Result<crate::Tensor> {
    let mut rng = crate::rng::Rng::new(seed);
    let n: usize = shape.iter().product();
    crate::Tensor::from_f32(gpu, &rng.normals(n, 1.0), shape, dtype)
}
