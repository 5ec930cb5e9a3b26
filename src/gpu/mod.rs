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
