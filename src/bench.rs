//! Kernel benchmarks at DiffVSR's real shapes, shared by `diffvsr-wgpu bench kernels` and
//! `benches/kernels.rs` (criterion).
//!
//! Each op module offers `bench_cases(gpu, dtype, quick)` (cases are declared beside their op,
//! see `ops/bench_case.rs`); this runner sits above the ops and times them. A case owns its
//! input tensors and records one run of the op. Time is GPU time from timestamp queries where the adapter has them,
//! else wall-clock time around submit-and-wait.

use anyhow::Result;

use crate::kernel::Recorder;
pub use crate::ops::bench_case::{random_tensor, BenchCase};
use crate::{DType, Gpu};

pub struct BenchOptions {
    pub filter: Option<String>,
    pub dtype: DType,
    pub iters: u32,
    pub quick: bool,
}

/// Every benchmark case, op by op.
pub fn cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<BenchCase>> {
    let mut v = Vec::new();
    v.extend(crate::ops::elementwise::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::matmul::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::norm::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::resize::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::concat::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::layout::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::embed::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::conv::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::models::clip_text::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::attention::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::temporal_attention::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::sampler::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::noise::bench_cases(gpu, dtype, quick)?);
    v.extend(crate::ops::color::bench_cases(gpu, dtype, quick)?);
    Ok(v)
}

/// Timestamped dispatches per run; a case that records more is an error rather than under-counted.
const MAX_TIMED_DISPATCHES: u32 = 2048; // 2 queries each; wgpu caps a query set at 4096

/// Median seconds per run of `case` over `iters` timed runs (after one warm-up run).
pub fn time_case(gpu: &Gpu, case: &BenchCase, iters: u32) -> Result<f64> {
    // Warm-up: compiles pipelines and touches memory.
    let mut rec = gpu.recorder();
    (case.run)(&mut rec)?;
    rec.submit();
    gpu.sync()?;
    if gpu.has_timestamps() {
        let mut per_run = Vec::new();
        for _ in 0..iters {
            // Each dispatch gets its own begin/end stamps; one run may be several dispatches.
            let mut rec = Recorder::new(gpu, MAX_TIMED_DISPATCHES);
            (case.run)(&mut rec)?;
            if rec.dispatches > MAX_TIMED_DISPATCHES as usize {
                anyhow::bail!("bench case '{}' records {} dispatches, more than the {MAX_TIMED_DISPATCHES} timed", case.name, rec.dispatches);
            }
            let t = rec.submit_timed()?;
            per_run.push(t.iter().sum::<f64>());
        }
        per_run.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok(per_run[per_run.len() / 2])
    } else {
        let start = std::time::Instant::now();
        let mut rec = gpu.recorder();
        for _ in 0..iters {
            (case.run)(&mut rec)?;
        }
        rec.submit();
        gpu.sync()?;
        Ok(start.elapsed().as_secs_f64() / iters as f64)
    }
}

pub fn run_kernels(gpu: &Gpu, opts: &BenchOptions) -> Result<()> {
    println!("device: {}", gpu.describe());
    println!(
        "dtype: {}   timing: {}   cooperative matrices: {}",
        opts.dtype.name(),
        if gpu.has_timestamps() { "GPU timestamps (median)" } else { "wall clock (mean)" },
        if gpu.has_coop_f16_16x16() { "yes" } else { "no" }
    );
    println!("{:<34} {:<40} {:>11} {:>10} {:>10}", "kernel", "shape", "time", "TFLOP/s", "GB/s");
    let selected: Vec<BenchCase> =
        cases(gpu, opts.dtype, opts.quick)?.into_iter().filter(|c| opts.filter.as_ref().is_none_or(|f| c.name.contains(f.as_str()))).collect();
    if selected.is_empty() {
        anyhow::bail!("no benchmark case matches --filter {:?}", opts.filter.as_deref().unwrap_or(""));
    }
    let n = selected.len();
    use std::io::IsTerminal as _;
    let tty = std::io::stderr().is_terminal();
    for (i, case) in selected.into_iter().enumerate() {
        // Progress on stderr (the table on stdout stays clean for redirection): a line that is
        // overwritten on a terminal, one line per case elsewhere.
        if tty {
            eprint!("[{}/{n}] {} {} ...\r", i + 1, case.name, case.shape);
        } else {
            eprintln!("[{}/{n}] {} {}", i + 1, case.name, case.shape);
        }
        let t = time_case(gpu, &case, opts.iters)?;
        if tty {
            eprint!("\x1b[2K");
        }
        let tflops = if case.flops > 0.0 { format!("{:.2}", case.flops / t / 1e12) } else { "-".into() };
        let gbs = if case.bytes > 0.0 { format!("{:.1}", case.bytes / t / 1e9) } else { "-".into() };
        println!("{:<34} {:<40} {:>11} {:>10} {:>10}", case.name, case.shape, fmt_time(t), tflops, gbs);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

pub fn fmt_time(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.3} s")
    } else if t >= 1e-3 {
        format!("{:.3} ms", t * 1e3)
    } else {
        format!("{:.1} us", t * 1e6)
    }
}
