#![no_main]
//! See `diffvsr_wgpu::fuzz_targets::y4m` and TESTING.md.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| diffvsr_wgpu::fuzz_targets::y4m(data));
