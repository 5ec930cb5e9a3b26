//! The device layer, below the executor: adapters, limits, features and device errors
//! (`device.rs`), buffers and their pool (`pool.rs`), kernels and the pipeline cache
//! (`pipelines.rs`), the device memory a job may plan for (`memory.rs`), and the kernel tiles timed per shape on the adapter (`tune.rs`). It knows
//! nothing of what tensors mean.

pub mod arena;
pub mod device;
pub mod memory;
pub mod pipelines;
pub mod pool;
pub mod tune;

pub use device::{devices_report, enumerate, parse_backend, select_adapter, wanted_features, Gpu, GpuOptions};
pub use pool::{human_bytes, parse_bytes};
pub use tune::TuneMode;

/// Runs `f` with `flag` set, then puts back what it was, also when `f` panics: a switch the
/// device reads while something is captured (`Gpu::with_exact_operands`, `Tuner::untimed`).
pub(crate) fn with_flag_set<T>(flag: &std::sync::atomic::AtomicBool, f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Restore<'a>(&'a AtomicBool, bool);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.store(self.1, Ordering::Release);
        }
    }
    let _restore = Restore(flag, flag.swap(true, Ordering::AcqRel));
    f()
}
