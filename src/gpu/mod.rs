//! The device layer, below the executor: adapters, limits, features and device errors
//! (`device.rs`; a lost device in `lost.rs`), buffers and their pool (`pool.rs`), kernels and the pipeline cache
//! (`pipelines.rs`), the count of finished submissions that readbacks check (`seal.rs`), the device memory a job may plan for (`memory.rs`), and the kernel tiles timed per shape on the adapter (`tune.rs`). It knows
//! nothing of what tensors mean.

pub mod arena;
pub mod device;
pub mod lost;
pub mod memory;
pub mod pipelines;
pub mod pool;
mod seal;
pub mod tune;

pub use device::{check_can_run, devices_report, select_adapter, Gpu, GpuOptions};
pub use pool::{human_bytes, parse_bytes};
pub use tune::TuneMode;

/// A limit of the adapter a shape ran into (a tensor over its binding or buffer size, too few
/// storage bindings per stage): what a smaller shape or a larger GPU avoids, not a fault of the
/// kernel. Told apart by [`is_over_limits`]; `bench kernels` skips such cases.
#[derive(Debug)]
pub struct OverLimit(pub String);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OverLimit {}

/// Whether `e` (or an error it wraps) is an [`OverLimit`].
pub fn is_over_limits(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<OverLimit>())
}

/// The device can run nothing more: it was lost, or work stopped before its end (`seal.rs`).
/// Told apart by [`is_device_failed`]: the tuner takes no choice from timings that met it.
#[derive(Debug)]
pub struct DeviceFailed(pub String);

impl std::fmt::Display for DeviceFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeviceFailed {}

/// Whether `e` (or an error it wraps) is a [`DeviceFailed`].
pub fn is_device_failed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<DeviceFailed>())
}

/// The GPU ran out of memory: a buffer it could not allocate, or work it refused for want of
/// memory. Told apart by [`out_of_memory`]: `--tile auto` plans again for less
/// (`pipeline::prepare`), and the tuner keeps no choice from a round that met one.
#[derive(Debug)]
pub struct OutOfMemory {
    /// The whole message, with what to do about it.
    pub message: String,
    /// What failed, without the advice (for callers that know better what to do: loading
    /// weights, where smaller tiles do not help).
    pub detail: String,
    /// Where a buffer failed and the driver reports this process's allocations: the bytes they
    /// would have come to with it (the allocator's live bytes plus the buffer's size), which
    /// did not fit.
    pub wanted: Option<u64>,
}

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OutOfMemory {}

/// The [`OutOfMemory`] `e` is (or wraps), if any.
pub fn out_of_memory(e: &anyhow::Error) -> Option<&OutOfMemory> {
    e.chain().find_map(|c| c.downcast_ref::<OutOfMemory>())
}

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
