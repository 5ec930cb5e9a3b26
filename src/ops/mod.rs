//! The kernel library: one op per file, each with its WGSL shader, Rust dispatch, CPU twin
//! (`cpu` module), benchmark cases and tests.

pub mod bench_case;
pub mod elementwise;
pub mod matmul;
pub mod norm;
pub mod concat;
pub mod input;
pub mod embed;
pub mod layout;
pub mod resize;
#[cfg(test)]
mod misc_golden;
pub mod conv;
pub mod coop_gemm;
pub mod attention;
pub mod temporal_attention;
pub mod sampler;
pub mod noise;
pub mod color;
pub mod pack;
pub mod residual;
pub mod synthetic;
pub mod winograd;

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

    /// Each matrix op counts the FLOPs PyTorch's counter would (2 per multiply-add, padded taps
    /// included) for what it records, and a graph sums them (`forward`'s reports and rates).
    #[test]
    fn matrix_ops_count_their_flops() {
        use crate::{DType, Recorder, Tensor};
        let gpu = crate::testutil::test_gpu();
        let dt = DType::F32;
        let t = |s: &[usize]| Tensor::from_f32(&gpu, &vec![0.25; s.iter().product()], s, dt).unwrap();
        let flops = |record: &dyn Fn(&mut Recorder)| {
            let mut rec = Recorder::capture(&gpu);
            record(&mut rec);
            rec.into_graph().unwrap().flops()
        };
        // matmul [3, 7, 5] · [5, 9]: 2·3·7·9·5.
        let b = t(&[5, 9]);
        assert_eq!(flops(&|r| drop(super::matmul::matmul(r, &t(&[3, 7, 5]), &b, None).unwrap())), 2.0 * (3 * 7 * 9 * 5) as f64);
        // conv2d 3×3, 6 → 10 channels on 2 × 5×7: 2·(2·5·7 outputs)·10·(9·6).
        let w2 = super::conv::ConvWeight::from_torch(&gpu, &vec![0.5; 10 * 6 * 9], &[10, 6, 3, 3], None, dt).unwrap();
        assert_eq!(flops(&|r| drop(super::conv::conv2d(r, t(&[2, 5, 7, 6]), &w2, 1, 1).unwrap())), 2.0 * (2 * 5 * 7 * 10 * 9 * 6) as f64);
        // conv3d 3×3×3 over 4 frames: every output over all 27 taps (padding included).
        let w3 = super::conv::ConvWeight::from_torch(&gpu, &vec![0.5; 8 * 4 * 27], &[8, 4, 3, 3, 3], None, dt).unwrap();
        assert_eq!(flops(&|r| drop(super::conv::conv3d(r, &t(&[1, 4, 5, 6, 4]), &w3).unwrap())), 2.0 * (4 * 5 * 6 * 8 * 27 * 4) as f64);
        // ConvTranspose2d k4 s2 from 3×5: 2·(3·5 inputs)·Cin·Cout·16, as PyTorch counts it.
        let wt = super::conv::ConvWeight::from_torch_transposed(&gpu, &vec![0.5; 4 * 6 * 16], &[4, 6, 4, 4], None, dt).unwrap();
        assert_eq!(flops(&|r| drop(super::conv::conv_transpose2d(r, &t(&[1, 3, 5, 4]), &wt).unwrap())), 2.0 * (3 * 5 * 4 * 6 * 16) as f64);
        // attention 2 batches × 2 heads of dh 8, 7 queries over 9 keys: 4·B·H·Lq·Lk·dh.
        let (q, kv) = (t(&[2, 7, 16]), t(&[2, 9, 16]));
        let opts = super::attention::AttnOpts::new(8);
        assert_eq!(flops(&|r| drop(super::attention::attention(r, &q, &kv, &kv, 2, opts).unwrap())), 4.0 * (2 * 2 * 7 * 9 * 8) as f64);
        // A graph without matrix ops counts none.
        assert_eq!(flops(&|r| drop(super::elementwise::add(r, &q, &q).unwrap())), 0.0);
    }
}
