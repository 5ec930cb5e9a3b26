//! `bench kernels`' Winograd cases: the direct convolution's 3×3 shapes (`ops::conv`'s bench
//! cases), so each row compares with the direct row of the same shape. Their TFLOP/s count the
//! direct convolution's FLOPs (the rate the direct kernel would need for the same time); the
//! ", transforms" rows time the two transforms without the products (GB/s on their bytes).
//! Winograd is F(2×2, 3×3) throughout.

use anyhow::Result;

use super::*;
use crate::ops::bench_case::{random_tensor, BenchCase};

pub fn bench_cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<BenchCase>> {
    // (name, input shape, Cout, time taps: 0 for a 2-D convolution)
    let full: Vec<(&str, Vec<usize>, usize, usize)> = vec![
        ("conv3x3 Winograd", vec![16, 64, 64, 512], 512, 0),
        ("conv3x3 Winograd", vec![16, 128, 128, 256], 256, 0),
        ("conv3x3 Winograd", vec![16, 16, 16, 1024], 1024, 0),
        ("conv3d 3x3x3 Winograd", vec![1, 4, 512, 512, 128], 128, 3),
    ];
    let mut v = Vec::new();
    for (i, (name, mut s, mut cout, kt)) in full.into_iter().enumerate() {
        let r = s.len();
        if quick {
            // Channels ÷ 8, spatial ÷ 8 (≥ 4), leading axis at most 2, as the conv cases.
            s[r - 1] /= 8;
            s[r - 2] = (s[r - 2] / 8).max(4);
            s[r - 3] = (s[r - 3] / 8).max(4);
            s[0] = s[0].min(2);
            cout /= 8;
        }
        let cin = s[r - 1];
        let x = random_tensor(gpu, &s, dtype, 40 + i as u64)?;
        let mut rng = crate::rng::Rng::new(50 + i as u64);
        let shape_w: Vec<usize> = if kt == 0 { vec![cout, cin, 3, 3] } else { vec![cout, cin, kt, 3, 3] };
        let w = WinogradWeight::from_torch(gpu, &rng.normals(shape_w.iter().product(), 0.05), &shape_w, Some(&rng.normals(cout, 0.1)), dtype)?;
        let pixels: usize = s[..r - 1].iter().product();
        let flops = 2.0 * (pixels * cout * cin * 9 * kt.max(1)) as f64;
        let es = dtype.size() as f64;
        let (th, tw) = cpu::tiles(s[r - 3], s[r - 2]);
        let images: usize = s[..r - 3].iter().product();
        let rows = images * th * tw;
        let shape = format!("{s:?} -> {cout}");
        let mut out_shape = s.clone();
        out_shape[r - 1] = cout;
        let (x2, os) = (x.clone(), out_shape.clone());
        let bias = w.bias.clone();
        // Cin = Cout in every case, so the input transform's planes stand in for the products.
        debug_assert_eq!(cin, cout);
        v.push(BenchCase {
            name: format!("{name}, transforms"),
            shape: shape.clone(),
            flops: 0.0,
            // x in, 16 planes out; 16 planes in, y out.
            bytes: es * (pixels * cin + 16 * rows * cin + 16 * rows * cout + pixels * cout) as f64,
            run: Box::new(move |r| {
                // In the op's bands.
                let out = r.empty(&os, dtype)?;
                for band in bands(r.gpu(), images, (os[os.len() - 3], os[os.len() - 2]), cin, dtype, PLANES_BUDGET)? {
                    let planes = input_transform(r, &x2, None, band)?;
                    output_transform(r, &planes, &out, band, bias.as_ref(), None)?;
                }
                Ok(())
            }),
        });
        v.push(BenchCase {
            name: name.to_string(),
            shape,
            flops,
            // x in, y out, and the transformed weights: 16 planes of Cin × Cout per time tap.
            bytes: es * (pixels * (cin + cout) + 16 * cin * cout * kt.max(1)) as f64,
            run: Box::new(move |r| if kt == 0 { conv2d_winograd(r, &x, None, &w, None) } else { conv3d_winograd(r, &x, None, &w, None) }.map(drop)),
        });
    }
    Ok(v)
}
