//! diffvsr-wgpu: a GPU-native DiffVSR inference engine. Every operator is a hand-written WGSL
//! compute kernel (`shaders/`) with a Rust dispatch function and a plain-Rust CPU reference
//! (`ops/`), run through wgpu on Vulkan, Metal, DX12 or GL.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod console;
pub mod dtype;
pub mod fetch;
pub mod golden;
pub mod gpu;
pub mod forward;
#[doc(hidden)]
pub mod fuzz_targets;
#[cfg(test)]
mod hostile_inputs;
pub mod kernel;
pub mod models;
pub mod ops;
pub mod paths;
pub mod pipeline;
pub mod rng;
pub mod step_values;
pub mod tensor;
pub mod testutil;
pub mod tokenizer;
pub mod video;
pub mod weights;

#[cfg(test)]
mod executor_tests;

pub use gpu::{Gpu, GpuOptions};
pub use kernel::{Arg, Graph, Kernel, Recorder};
pub use dtype::DType;
pub use tensor::Tensor;
