//! Criterion benchmark of every kernel at DiffVSR's shapes (see `src/bench.rs`).
//! `DIFFVSR_BENCH_QUICK=1` uses tiny shapes (for software adapters).

use criterion::{criterion_group, criterion_main, Criterion};
use diffvsr_wgpu::{bench, DType, Gpu};

fn kernels(c: &mut Criterion) {
    let gpu = match Gpu::from_env() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let quick = diffvsr_wgpu::gpu::device::flag("DIFFVSR_BENCH_QUICK") || gpu.info.device_type == wgpu::DeviceType::Cpu;
    let dtype = if gpu.has_f16() { DType::F16 } else { DType::F32 };
    let mut group = c.benchmark_group(format!("kernels-{}", dtype.name()));
    group.sample_size(10);
    let (cases, skipped) = bench::cases(&gpu, dtype, quick).expect("bench cases");
    for s in skipped {
        eprintln!("skipped {s}");
    }
    for case in cases {
        // A case over this adapter's limits is skipped, as `bench kernels` skips it.
        match bench::time_case(&gpu, &case, 1) {
            Err(e) if diffvsr_wgpu::gpu::is_over_limits(&e) => {
                eprintln!("skipped '{}': {e:#}", case.name);
                continue;
            }
            r => drop(r.expect("run")),
        }
        group.bench_function(format!("{} {}", case.name, case.shape), |b| {
            // GPU time per run, summed over iterations (criterion's custom timing).
            b.iter_custom(|iters| {
                let mut total = 0.0;
                for _ in 0..iters {
                    total += bench::time_case(&gpu, &case, 1).expect("run");
                }
                std::time::Duration::from_secs_f64(total)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
