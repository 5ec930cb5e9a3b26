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

#[cfg(test)]
mod tests {
    /// Which cooperative kernels the test adapter runs. With `DIFFVSR_EXPECT_COOP=FS` (8 in
    /// tools/coop-lavapipe.sh, 16 in tools/gpu-check.sh) the adapter must have FS×FS fragments and the matmul, conv and
    /// attention kernels must take them: a driver without them would otherwise let every
    /// cooperative test skip and pass.
    #[test]
    fn cooperative_kernels_run_here() {
        let gpu = crate::testutil::test_gpu();
        let (matmul, conv, attention) = (super::matmul::coop_available(&gpu), super::conv::coop_available(&gpu), super::attention::coop_available(&gpu));
        eprintln!(
            "cooperative fragments {:?}, subgroups {:?}: matmul {matmul}, conv {conv}, attention {attention}",
            gpu.coop_fragment(),
            gpu.fixed_subgroup_size()
        );
        if let Ok(want) = std::env::var("DIFFVSR_EXPECT_COOP") {
            assert_eq!(gpu.coop_fragment(), Some(want.parse().expect("DIFFVSR_EXPECT_COOP is a fragment size, 8 or 16")));
            assert!(matmul && conv && attention, "the cooperative matmul, conv and attention must run on this adapter");
        }
    }
}
