//! The kernel library: one op per file, each with its WGSL shader, Rust dispatch, CPU twin
//! (`cpu` module), benchmark cases and tests.

pub mod bench_case;
pub mod elementwise;
pub mod matmul;
pub mod norm;
pub mod concat;
pub mod embed;
pub mod layout;
pub mod resize;
#[cfg(test)]
mod misc_golden;
pub mod conv;
pub mod attention;
pub mod temporal_attention;
pub mod sampler;
pub mod noise;
pub mod color;
pub mod pack;
pub mod residual;
pub mod synthetic;
