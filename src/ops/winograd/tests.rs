//! The Winograd kernels against their CPU twins, and the whole convolution against the direct
//! one (`ops::conv::cpu`), at awkward sizes: odd heights and widths (a last tile half outside),
//! one-pixel images, frames whose time taps reach the padding.

use super::*;
use crate::ops::conv::cpu as direct;
use crate::ops::residual::Residual;
use crate::testutil::*;

/// f32: the planes are stored in f32, so the error is f32 rounding of sums of a few terms.
const TOL: f64 = 1e-6;

fn rand(rng: &mut Rng, n: usize, scale: f32, dt: DType) -> Vec<f32> {
    let v = rng.normals(n, scale);
    if dt == DType::F16 {
        round_f16(&v)
    } else {
        v
    }
}

/// Rows `band` of every image of CPU planes `[16][n][th][tw][c]`.
fn band_of(planes: &[f32], n: usize, (th, tw, c): (usize, usize, usize), band: Band) -> Vec<f32> {
    let mut out = Vec::new();
    for xi in 0..16 {
        for img in 0..n {
            let at = ((xi * n + img) * th + band.ty0) * tw * c;
            out.extend_from_slice(&planes[at..at + band.rows * tw * c]);
        }
    }
    out
}

/// Each transform on a band of tile rows (the whole image, and an inner band where there is
/// one) against its CPU twin.
#[test]
fn transforms_match_their_cpu_twins() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        // (images, H, W, C)
        for (n, h, w, c) in [(1, 1, 1, 4), (2, 7, 33, 8), (1, 33, 7, 12), (3, 2, 5, 4)] {
            let (th, tw) = cpu::tiles(h, w);
            let xv = rand(&mut rng, n * h * w * c, 1.0, dt);
            let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, c], dt).unwrap();
            let all = cpu::input_transform(&xv, n, h, w, c);
            let mut bands = vec![Band { ty0: 0, rows: th }];
            if th >= 3 {
                bands.push(Band { ty0: 1, rows: th - 2 });
            }
            for band in bands {
                let what = format!("{n}x{h}x{w}x{c} band {band:?} {} (seed {seed})", dt.name());
                let mut rec = gpu.recorder();
                let v = input_transform(&mut rec, &x, None, band).unwrap();
                rec.submit();
                let got = v.to_f32(&gpu).unwrap();
                assert_close(&format!("input transform {what}"), &got, &band_of(&all, n, (th, tw, c), band), dt.tolerance(TOL));
            }

            // The output transform of the whole image, then of its inner band into a tensor
            // whose other rows keep their poison (NaN): nothing outside the band is written.
            let plane = n * th * tw * c;
            let mv = rand(&mut rng, 16 * plane, 1.0, dt);
            let bv = rand(&mut rng, c, 0.5, dt);
            let rv = rand(&mut rng, n * h * w * c, 1.0, dt);
            let m = Tensor::from_f32(&gpu, &mv, &[16 * plane], dt).unwrap();
            let bias = Tensor::from_f32(&gpu, &bv, &[c], dt).unwrap();
            let res = Tensor::from_f32(&gpu, &rv, &[n, h, w, c], dt).unwrap();
            for (with_bias, with_res) in [(false, false), (true, true)] {
                let what = format!("output transform {n}x{h}x{w}x{c} {}, bias {with_bias}, residual {with_res} (seed {seed})", dt.name());
                let want = cpu::output_transform(&mv, n, h, w, c, with_bias.then_some(&bv[..]), with_res.then_some(&rv[..]));
                let mut rec = gpu.recorder();
                let y = rec.empty(&[n, h, w, c], dt).unwrap();
                output_transform(&mut rec, &m, &y, Band { ty0: 0, rows: th }, with_bias.then_some(&bias), with_res.then_some(Residual::Same(&res))).unwrap();
                rec.submit();
                assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                if th >= 3 {
                    let band = Band { ty0: 1, rows: th - 2 };
                    let mb = Tensor::from_f32(&gpu, &band_of(&mv, n, (th, tw, c), band), &[16 * n * band.rows * tw * c], dt).unwrap();
                    let mut rec = gpu.recorder();
                    let y = rec.empty(&[n, h, w, c], dt).unwrap();
                    output_transform(&mut rec, &mb, &y, band, with_bias.then_some(&bias), with_res.then_some(Residual::Same(&res))).unwrap();
                    rec.submit();
                    let got = y.to_f32(&gpu).unwrap();
                    let inside = |i: usize| (2..2 * (th - 1)).contains(&((i / (w * c)) % h));
                    let (gi, wi): (Vec<f32>, Vec<f32>) = (0..got.len()).filter(|&i| inside(i)).map(|i| (got[i], want[i])).unzip();
                    assert_close(&format!("{what}, band {band:?}"), &gi, &wi, dt.tolerance(TOL));
                    assert!((0..got.len()).filter(|&i| !inside(i)).all(|i| got[i].is_nan()), "{what}: band {band:?} wrote outside its rows");
                }
            }
        }
    }
}

/// The input transform of a GroupNorm (+ SiLU) applied as it loads gives the CPU norm's then
/// the CPU transform's values, and the planes of the norm's own pass followed by the plain
/// transform: to the bit in f32, within an f16 rounding in f16 (see below); per image and
/// pooled over a clip's frames, with and without SiLU, on a band.
#[test]
fn a_norm_applied_as_it_loads_gives_the_same_planes() {
    use crate::ops::norm::{group_norm_apply, group_norm_table_w, GroupNormOpts, NormWeight};
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        // (images [N, H, W, C] normalised each, or clips [B, F, H, W, C] pooled over F; groups; SiLU)
        let cases: [(&[usize], usize, bool); 3] = [(&[1, 7, 9, 8], 2, true), (&[2, 3, 5, 6, 12], 3, false), (&[4, 9, 3, 16], 4, true)];
        for (s, groups, silu) in cases {
            let r = s.len();
            let (c, frames) = (s[r - 1], if r == 5 { s[1] } else { 1 });
            let xv = rand(&mut rng, s.iter().product(), 2.0, dt);
            let x = Tensor::from_f32(&gpu, &xv, s, dt).unwrap();
            let (gamma, beta) = (rng.normals(c, 1.0), rng.normals(c, 0.5));
            let w = NormWeight::from_torch(&gpu, &gamma, &beta).unwrap();
            let (th, tw) = cpu::tiles(s[r - 3], s[r - 2]);
            let band = Band { ty0: th / 3, rows: th - th / 3 };
            let mut rec = gpu.recorder();
            let table = group_norm_table_w(&mut rec, &x, groups, 1e-5, &w, GroupNormOpts { frames, pooled: frames > 1, silu }).unwrap();
            let normed = group_norm_apply(&mut rec, &x, &table).unwrap();
            let apart = input_transform(&mut rec, &normed, None, band).unwrap();
            let on_load = input_transform(&mut rec, &x, Some(&table), band).unwrap();
            rec.submit();
            let what = format!("{s:?} {} groups {groups} frames {frames} silu {silu} (seed {seed})", dt.name());
            // The values: the CPU norm (stored in the storage type, as its pass stores it), then
            // the CPU transform.
            let (images, px) = (s[..r - 3].iter().product::<usize>(), s[r - 3] * s[r - 2]);
            let normed = crate::ops::norm::cpu::group_norm(&xv, images, px, c, groups, 1e-5, &gamma, &beta, frames, frames > 1, silu);
            let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
            let want = band_of(&cpu::input_transform(&normed, images, s[r - 3], s[r - 2], c), images, (th, tw, c), band);
            assert_close(&format!("{what}: the planes against the CPU norm then transform"), &on_load.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            if dt == DType::F32 {
                assert!(on_load.read_bytes(&gpu).unwrap() == apart.read_bytes(&gpu).unwrap(), "{what}: other planes than the norm's pass then the transform");
            } else {
                // WGSL leaves the rounding of an f32 → f16 conversion to the device, and a driver
                // may treat the norm pass's store and the transform's conversion (whose f16 value
                // goes straight back to f32) differently: Mesa 22's lavapipe gives the same bytes,
                // Mesa 26's differs by 3e-4 (relative L2) with SiLU, about an f16 rounding.
                let (got, want) = (on_load.to_f32(&gpu).unwrap(), apart.to_f32(&gpu).unwrap());
                assert_close(&format!("{what}: the planes of the norm's pass then the transform"), &got, &want, 1e-3);
            }
        }
    }
}

/// The transformed weight is `G g Gᵀ`: its corner entries are the kernel's corners, and the
/// 1-D transform of a constant kernel row (a, a, a) is (a, 3a/2, a/2, a).
#[test]
fn the_weight_transform_is_g_g_gt() {
    let g = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let u = cpu::transform_weight(&g, 1, 1, 1);
    assert_eq!([u[0], u[3], u[12], u[15]], [1.0, 3.0, 7.0, 9.0]);
    let u = cpu::transform_weight(&[2.0; 9], 1, 1, 1);
    assert_eq!(&u[..4], &[2.0, 3.0, 1.0, 2.0]);
}

/// The weight transform on the GPU against its CPU twin, into both products' layouts: the
/// 2-D products' `[16][Cin][Cout]` and the 3-D products' 16 (KT, 1, 1) convolution weights,
/// packed with their padding, which must hold zeros (the outputs are poisoned first).
#[test]
fn the_weight_transform_on_the_gpu_matches_its_cpu_twin() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        // (Cout, Cin, KT, 3-D)
        for (cout, cin, kt, video) in [(4, 4, 1, false), (12, 68, 1, false), (36, 8, 3, true), (4, 12, 1, true)] {
            let shape = if video { vec![cout, cin, kt, 3, 3] } else { vec![cout, cin, 3, 3] };
            let what = format!("{shape:?} {} (seed {seed})", dt.name());
            let w = rng.normals(cout * cin * kt * 9, 1.0);
            let uw = WinogradWeight::from_torch(&gpu, &w, &shape, None, dt).unwrap();
            // [16][Cout][Cin][KT]
            let want = cpu::transform_weight(&w, cout, cin, kt);
            let at = |xi: usize, co: usize, ci: usize, t: usize| want[((xi * cout + co) * cin + ci) * kt + t];
            match &uw.products {
                Products::Matmul(u) => {
                    let want: Vec<f32> = (0..16).flat_map(|xi| (0..cin).flat_map(move |ci| (0..cout).map(move |co| (xi, ci, co)))).map(|(xi, ci, co)| at(xi, co, ci, 0)).collect();
                    assert_close(&format!("2-D weight planes {what}"), &u.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }
                Products::Conv(cw) => {
                    assert_eq!((cw.taps, cw.cin, cw.cout), ([kt, 1, 1], cin, cout), "{what}");
                    let (cin_p, cout_p) = (cw.cin_p, cw.cout_p);
                    let plane = kt * cin_p * cout_p;
                    let all = cw.w.to_f32(&gpu).unwrap();
                    assert_eq!(all.len(), 16 * plane, "{what}");
                    for (xi, got) in all.chunks(plane).enumerate() {
                        let mut want = vec![0f32; plane];
                        let mut padding = Vec::new();
                        for (e, v) in want.iter_mut().enumerate() {
                            let (t, ci, co) = (e / (cin_p * cout_p), e / cout_p % cin_p, e % cout_p);
                            if ci < cin && co < cout {
                                *v = at(xi, co, ci, t);
                            } else {
                                padding.push(got[e]);
                            }
                        }
                        assert!(padding.iter().all(|&v| v == 0.0), "{what}: plane {xi}'s padding is not all zeros");
                        assert_close(&format!("3-D weight plane {xi} {what}"), got, &want, dt.tolerance(TOL));
                    }
                }
            }
        }
    }
}

/// The whole convolution against the direct one, with and without a bias and a residual:
/// 2-D through the batched matmul, 3-D (time taps 3 and 1) through the convolution kernel on
/// each plane, in every dtype the adapter stores.
#[test]
fn winograd_matches_the_direct_convolution() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        // Winograd stores its planes (the transformed input, the products) in the storage
        // dtype, so f16 rounds three times, amplified by the transforms' sums: 1.2e-3 seen on
        // the 4-value 1×1 case, over the one-store 1e-3.
        let tol = if dt == DType::F16 { 5e-3 } else { dt.tolerance(TOL) };
        // (leading axes, H, W, Cin, Cout, time taps: 0 for 2-D)
        type Case = (&'static [usize], usize, usize, usize, usize, usize);
        let cases: [Case; 7] = [
            (&[1], 1, 1, 4, 4, 0),
            (&[2], 7, 33, 8, 12, 0),
            (&[1], 33, 7, 12, 20, 0),
            (&[3], 77, 2, 4, 8, 0),
            (&[1, 4], 7, 9, 8, 12, 3),
            (&[2, 3], 5, 1, 4, 4, 3),
            (&[1, 2], 6, 5, 12, 8, 1),
        ];
        for (k, &(lead, h, w, cin, cout, kt)) in cases.iter().enumerate() {
            let mut xs = lead.to_vec();
            xs.extend([h, w, cin]);
            let mut ys = lead.to_vec();
            ys.extend([h, w, cout]);
            let n: usize = lead.iter().product();
            let ws: Vec<usize> = if kt == 0 { vec![cout, cin, 3, 3] } else { vec![cout, cin, kt, 3, 3] };
            let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
            let wv = rng.normals(ws.iter().product(), 0.2);
            let bv = rand(&mut rng, cout, 0.5, dt);
            let with = k % 2 == 1;
            // The residual: of the output's shape with the bias, or (case 2 and 5) a row per
            // batch element, as a resnet's time embedding.
            let per_batch = k % 3 == 2;
            let rs: Vec<usize> = if per_batch { vec![lead[0], cout] } else { ys.clone() };
            let rv = rand(&mut rng, rs.iter().product(), 1.0, dt);
            let res = Tensor::from_f32(&gpu, &rv, &rs, dt).unwrap();
            let r = if per_batch {
                Some(Residual::PerBatch(&res))
            } else {
                with.then_some(Residual::Same(&res))
            };
            let weight = WinogradWeight::from_torch(&gpu, &wv, &ws, with.then_some(&bv[..]), dt).unwrap();
            let x = Tensor::from_f32(&gpu, &xv, &xs, dt).unwrap();
            // In one band, and in bands of one tile row (at most).
            let mut rec = gpu.recorder();
            let y = if kt == 0 { conv2d_winograd(&mut rec, &x, None, &weight, r) } else { conv3d_winograd(&mut rec, &x, None, &weight, r) }.unwrap();
            let banded = run_in_bands(&mut rec, &x, None, &weight, r, 1).unwrap();
            rec.submit();
            // The direct convolution of the same values (f16: of the weights as the direct
            // kernel would store them, so the difference is the transforms' rounding).
            let wr = if dt == DType::F16 { round_f16(&wv) } else { wv.clone() };
            let b = with.then_some(&bv[..]);
            let mut want = if kt == 0 {
                direct::conv2d(&xv, n, h, w, cin, &wr, cout, 3, 3, b, 1, 1)
            } else {
                direct::conv3d(&xv, lead[0], lead[1], h, w, cin, &wr, cout, [kt, 3, 3], b)
            };
            if r.is_some() {
                let per = want.len() / lead[0];
                for (i, o) in want.iter_mut().enumerate() {
                    *o += if per_batch { rv[(i / per) * cout + i % cout] } else { rv[i] };
                }
            }
            let what = format!("winograd {xs:?} -> {cout}, taps {kt}, bias {with}, residual {:?}, {} (seed {seed})", r.map(|r| r.tensor().shape().to_vec()), dt.name());
            assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, tol);
            assert_close(&format!("{what}, in bands of one tile row"), &banded.to_f32(&gpu).unwrap(), &want, tol);
        }
    }
}

#[test]
fn refuses_what_it_cannot_run() {
    let gpu = test_gpu();
    let dt = DType::F32;
    let err = |r: Result<WinogradWeight>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(WinogradWeight::from_torch(&gpu, &[0.5; 6 * 4 * 9], &[6, 4, 3, 3], None, dt)).contains("multiples of 4"));
    assert!(err(WinogradWeight::from_torch(&gpu, &[0.5; 4 * 4 * 25], &[4, 4, 5, 5], None, dt)).contains("is not [Cout, Cin, 3, 3]"));
    assert!(err(WinogradWeight::from_torch(&gpu, &[0.5; 4 * 4 * 18], &[4, 4, 2, 3, 3], None, dt)).contains("not a 3×3 or KT odd"));
    assert!(err(WinogradWeight::from_torch(&gpu, &[0.5; 7], &[4, 4, 3, 3], None, dt)).contains("7 values where its shape needs 144"));
    let w2 = WinogradWeight::from_torch(&gpu, &[0.5; 4 * 8 * 9], &[4, 8, 3, 3], None, dt).unwrap();
    let x = Tensor::from_f32(&gpu, &[0.5; 2 * 3 * 3 * 4], &[2, 3, 3, 4], dt).unwrap();
    let mut rec = gpu.recorder();
    let e = conv2d_winograd(&mut rec, &x, None, &w2, None).unwrap_err().to_string();
    assert!(e.contains("has 4 channels, the weight takes 8"), "{e}");
    let e = conv3d_winograd(&mut rec, &x.reshape(&[1, 2, 3, 3, 4]).unwrap(), None, &w2, None).unwrap_err().to_string();
    assert!(e.contains("2-D convolution's"), "{e}");
}

#[test]
fn quick_bench_cases_run() {
    run_quick_bench_cases(bench_cases);
}
