//! `bench kernels`' convolution cases.

use anyhow::Result;

use super::*;

/// Benchmarks at DiffVSR's shapes (UNet at a 128² latent, 8 frames × CFG = 16 images; VAE
/// decoder at 512²); `quick` shrinks spatial sizes and channels for a software adapter.
pub fn bench_cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    #[derive(Clone, Copy)]
    enum Op {
        C2 { k: usize, s: usize },
        T2,
        C3 { kt: usize, kh: usize },
    }
    // (name, op, input shape, Cout, whether to time the 4-subgroup tiles too: the UNets' 16×16
    // level, where 16 images give the 8-subgroup tiles about one workgroup per SM of an H200;
    // whether to time it after a GroupNorm + SiLU too, the norm's pass then the convolution
    // against the norm applied as it loads)
    type Case = (&'static str, Op, Vec<usize>, usize, bool, bool);
    let full: Vec<Case> = vec![
        ("conv3x3", Op::C2 { k: 3, s: 1 }, vec![16, 64, 64, 512], 512, false, true),
        ("conv3x3", Op::C2 { k: 3, s: 1 }, vec![16, 128, 128, 256], 256, false, false),
        ("conv3x3 s2", Op::C2 { k: 3, s: 2 }, vec![16, 128, 128, 256], 256, false, false),
        ("conv1x1", Op::C2 { k: 1, s: 1 }, vec![16, 16, 16, 1024], 1024, true, false),
        ("conv3x3", Op::C2 { k: 3, s: 1 }, vec![16, 16, 16, 1024], 1024, true, false),
        ("convT4x4 s2", Op::T2, vec![16, 32, 32, 512], 512, false, false),
        ("conv3d (3,1,1)", Op::C3 { kt: 3, kh: 1 }, vec![2, 8, 64, 64, 512], 512, false, true),
        ("conv3d (5,1,1)", Op::C3 { kt: 5, kh: 1 }, vec![2, 8, 128, 128, 256], 256, false, false),
        ("conv3d 3x3x3", Op::C3 { kt: 3, kh: 3 }, vec![1, 4, 512, 512, 128], 128, false, true),
    ];
    type Run = Box<dyn Fn(&mut Recorder) -> Result<()>>;
    let mut v = Vec::new();
    for (i, (name, op, mut s, mut cout, halved_too, normed_too)) in full.into_iter().enumerate() {
        if quick {
            // Channels ÷ 8, spatial ÷ 8 (≥ 4), leading axis at most 2.
            let r = s.len();
            s[r - 1] /= 8;
            s[r - 2] = (s[r - 2] / 8).max(4);
            s[r - 3] = (s[r - 3] / 8).max(4);
            s[0] = s[0].min(2);
            cout /= 8;
        }
        let cin = *s.last().unwrap();
        let x = random_tensor(gpu, &s, dtype, 10 + i as u64)?;
        let mut rng = crate::rng::Rng::new(20 + i as u64);
        let (w, flops, out_n) = match op {
            Op::C2 { k, s: st } => {
                let w = ConvWeight::from_torch(gpu, &rng.normals(cout * cin * k * k, 0.05), &[cout, cin, k, k], Some(&rng.normals(cout, 0.1)), dtype)?;
                let r = s.len();
                let (ho, wo) = ((s[r - 3] + 2 * (k / 2) - k) / st + 1, (s[r - 2] + 2 * (k / 2) - k) / st + 1);
                let outs = s[..r - 3].iter().product::<usize>() * ho * wo;
                (w, 2.0 * (outs * cout * cin * k * k) as f64, outs * cout)
            }
            Op::T2 => {
                let w = ConvWeight::from_torch_transposed(gpu, &rng.normals(cin * cout * 16, 0.05), &[cin, cout, 4, 4], Some(&rng.normals(cout, 0.1)), dtype)?;
                let outs = 4 * s[..s.len() - 1].iter().product::<usize>();
                // Each output pixel takes 2×2 of the 16 taps.
                (w, 2.0 * (outs * cout * cin * 4) as f64, outs * cout)
            }
            Op::C3 { kt, kh } => {
                let w = ConvWeight::from_torch(gpu, &rng.normals(cout * cin * kt * kh * kh, 0.05), &[cout, cin, kt, kh, kh], Some(&rng.normals(cout, 0.1)), dtype)?;
                let outs = s[..4].iter().product::<usize>();
                (w, 2.0 * (outs * cout * cin * kt * kh * kh) as f64, outs * cout)
            }
        };
        let bytes = ((x.numel() + out_n + w.w.numel()) * dtype.size()) as f64;
        let shape = format!("{s:?} -> {cout}");
        let mut halved = None;
        if let (true, Op::C2 { k, s: 1 }) = (halved_too, op) {
            if coop_config(gpu, dtype, cout).is_ok_and(|c| coop_divides(c.halved())) {
                let (x, w) = (x.clone(), w.clone());
                let run: Run = Box::new(move |r| conv2d_with(r, &x, &w, 1, k / 2, Impl::CoopHalf).map(drop));
                halved = Some(BenchCase { name: format!("{name} (4 subgroups)"), shape: shape.clone(), flops, bytes, run });
            }
        }
        let mut normed = Vec::new();
        if normed_too {
            // Statistics of x per image (per window of frames for the 3-D convolutions), as the
            // resnets take them; made once, outside the timed runs.
            let c = *s.last().unwrap();
            let norm = crate::ops::norm::NormWeight::from_torch(gpu, &rng.normals(c, 0.5), &rng.normals(c, 0.5))?;
            let opts = crate::ops::norm::GroupNormOpts { frames: if s.len() == 5 { s[1] } else { 1 }, pooled: s.len() == 5, silu: true };
            let mut rec = gpu.recorder();
            let table = crate::ops::norm::group_norm_table_w(&mut rec, &x, 32.min(c), 1e-5, &norm, opts);
            rec.submit();
            // Where x is over this adapter's limits, the norm's setup fails as the case would:
            // these two cases are skipped like it (each run says why), not the op's others.
            let table = match table {
                Ok(t) => Ok(t),
                Err(e) if crate::gpu::is_over_limits(&e) => Err(format!("{e:#}")),
                Err(e) => return Err(e),
            };
            for (fuse, how) in [(Fuse::Apart, "apart"), (Fuse::Fused, "on load")] {
                let run: Run = match (&table, op) {
                    (Err(why), _) => {
                        let why = why.clone();
                        Box::new(move |_| Err(crate::gpu::OverLimit(why.clone()).into()))
                    }
                    (Ok(table), Op::C2 { k, s: st }) => {
                        let (x, w, table) = (x.clone(), w.clone(), table.clone());
                        Box::new(move |r| conv2d_normed_with(r, &x, &table, &w, st, k / 2, None, fuse, Impl::Auto).map(drop))
                    }
                    (Ok(table), Op::C3 { .. }) => {
                        let (x, w, table) = (x.clone(), w.clone(), table.clone());
                        Box::new(move |r| conv3d_normed_with(r, &x, &table, &w, None, fuse, Impl::Auto).map(drop))
                    }
                    (Ok(_), Op::T2) => unreachable!("no transposed convolution follows a GroupNorm"),
                };
                normed.push(BenchCase { name: format!("{name}, GN+SiLU {how}"), shape: shape.clone(), flops, bytes, run });
            }
        }
        let run: Run = match op {
            Op::C2 { k, s: st } => Box::new(move |r| conv2d(r, &x, &w, st, k / 2).map(drop)),
            Op::T2 => Box::new(move |r| conv_transpose2d(r, &x, &w).map(drop)),
            Op::C3 { .. } => Box::new(move |r| conv3d(r, &x, &w).map(drop)),
        };
        v.push(BenchCase { name: name.to_string(), shape, flops, bytes, run });
        v.extend(halved);
        v.extend(normed);
    }
    Ok(v)
}
