//! Spatial resizes of channels-last images (`shaders/resize.wgsl`): nearest ×2 (the UNet's
//! up-samplers), PyTorch's legacy `nearest` to an explicit size (up-samplers when the latent is not
//! a multiple of 8, spec §9) and bilinear with `align_corners = false` (MSTA's odd-size fix-up,
//! DiffVSR's output resize).
//!
//! Layout: `[N, H, W, C]` in, `[N, Ho, Wo, C]` out. Video `[B, F, H, W, C]` is resized by
//! reshaping to `[B·F, H, W, C]` first.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::Tensor;

// Variants of one kernel: the prefix picks the unit each load moves (see the shader's header).
const SRC1: &str = concat!("alias V = T;\nalias VF = f32;\n", include_str!("../../shaders/resize.wgsl"));
const SRC4: &str = concat!("alias V = vec4<T>;\nalias VF = vec4<f32>;\n", include_str!("../../shaders/resize.wgsl"));
const SRCW: &str = concat!("alias V = vec4<u32>;\nalias VF = vec4<f32>;\n", include_str!("../../shaders/resize.wgsl"));

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cv: u32,
    hi: u32,
    wi: u32,
    ho: u32,
    wo: u32,
    scale_h: f32,
    scale_w: f32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Mode {
    Nearest = 0,
    Bilinear = 1,
}

/// PyTorch's scale for a resize given by output size: `(float)in / out`, in f32.
fn scale(n_in: usize, n_out: usize) -> f32 {
    n_in as f32 / n_out as f32
}

fn resize(rec: &mut Recorder, x: &Tensor, size: (usize, usize), mode: Mode, what: &str) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 {
        bail!("{what}: expected a channels-last [N, H, W, C] tensor, got {s:?}");
    }
    let (n, hi, wi, c) = (s[0], s[1], s[2], s[3]);
    let (ho, wo) = size;
    if s.contains(&0) || ho == 0 || wo == 0 {
        bail!("{what}: empty input {s:?} or output size ({ho}, {wo})");
    }
    let out = rec.empty(&[n, ho, wo, c], x.dtype())?;
    let total = n * ho * wo * c;
    if total > u32::MAX as usize || x.numel() > u32::MAX as usize {
        bail!("{what}: {s:?} -> ({ho}, {wo}) exceeds 32-bit indexing");
    }
    // Nearest is a pure copy: move 16-byte words when a pixel's channels fill whole words.
    let es = x.dtype().size();
    let (src, name, cv) = if mode == Mode::Nearest && (c * es).is_multiple_of(16) {
        (SRCW, "resize_w16", c * es / 16)
    } else if c % 4 == 0 {
        (SRC4, "resize_v4", c / 4)
    } else {
        (SRC1, "resize", c)
    };
    let k = Kernel::new(name, src, x.dtype()).def("MODE", format!("{}u", mode as u32));
    let nv = n * ho * wo * cv;
    let p = Params {
        n: nv as u32,
        cv: cv as u32,
        hi: hi as u32,
        wi: wi as u32,
        ho: ho as u32,
        wo: wo as u32,
        scale_h: scale(hi, ho),
        scale_w: scale(wi, wo),
    };
    let per_wg = if mode == Mode::Nearest { 1024 } else { 256 }; // units per workgroup
    let gpu = rec.gpu();
    rec.dispatch(&k, &p, &[x.into(), (&out).into()], grid(gpu, nv.div_ceil(per_wg) as u32))?;
    Ok(out)
}

/// Nearest-neighbour ×2 upsampling: `[N, H, W, C]` → `[N, 2H, 2W, C]`, each pixel repeated 2×2
/// (`F.interpolate(x, scale_factor=2.0, mode="nearest")`).
pub fn upsample_nearest2x(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 {
        bail!("upsample_nearest2x: expected a channels-last [N, H, W, C] tensor, got {s:?}");
    }
    resize(rec, x, (2 * s[1], 2 * s[2]), Mode::Nearest, "upsample_nearest2x")
}

/// PyTorch's legacy `nearest` to an explicit size (`F.interpolate(x, size=(ho, wo),
/// mode="nearest")`): `[N, H, W, C]` → `[N, Ho, Wo, C]` with source row
/// `min(floor(dst · (H as f32 / Ho as f32)), H − 1)` computed in f32 exactly as PyTorch does
/// (e.g. 23 → 45 rows repeats rows unevenly; not `nearest-exact`).
pub fn upsample_nearest_to(rec: &mut Recorder, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    resize(rec, x, size, Mode::Nearest, "upsample_nearest_to")
}

/// Bilinear resize with `align_corners = false`, no antialiasing (`F.interpolate(x, size=(ho, wo),
/// mode="bilinear", align_corners=False)`), up or down: `[N, H, W, C]` → `[N, Ho, Wo, C]`.
/// Source coordinates `(dst + 0.5) · in/out − 0.5` are clamped at 0 as PyTorch does; blending is in f32.
pub fn resize_bilinear(rec: &mut Recorder, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    resize(rec, x, size, Mode::Bilinear, "resize_bilinear")
}

/// Benchmarks: the UNet's ×2 up-sampler input at a 128² latent (16 = 8 frames × CFG) and a
/// bilinear ×2 of the same tensor.
pub fn bench_cases(gpu: &crate::Gpu, dtype: crate::DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let s: Vec<usize> = if quick { vec![2, 8, 8, 32] } else { vec![16, 64, 64, 512] };
    let n: usize = s.iter().product();
    let es = dtype.size() as f64;
    let x = random_tensor(gpu, &s, dtype, 1)?;
    let x2 = x.clone();
    let (h, w) = (2 * s[1], 2 * s[2]);
    Ok(vec![
        BenchCase {
            name: "upsample nearest x2".into(),
            shape: format!("{s:?} -> [{}, {h}, {w}, {}]", s[0], s[3]),
            flops: 0.0,
            bytes: 5.0 * n as f64 * es,
            run: Box::new(move |r| upsample_nearest2x(r, &x).map(drop)),
        },
        BenchCase {
            name: "resize bilinear".into(),
            shape: format!("{s:?} -> [{}, {h}, {w}, {}]", s[0], s[3]),
            flops: 0.0,
            bytes: 5.0 * n as f64 * es,
            run: Box::new(move |r| resize_bilinear(r, &x2, (h, w)).map(drop)),
        },
    ])
}

/// CPU references on channels-last `[N, H, W, C]` data, written from PyTorch's
/// `UpSampleKernel.cpp` / `UpSample.h` formulas.
pub mod cpu {
    /// PyTorch `nearest_neighbor_compute_source_index` with `scale = (float)in / out`.
    pub fn nearest_index(d: usize, n_in: usize, n_out: usize) -> usize {
        let scale = n_in as f32 / n_out as f32;
        ((d as f32 * scale).floor() as usize).min(n_in - 1)
    }

    pub fn nearest(x: &[f32], shape: [usize; 4], size: (usize, usize)) -> Vec<f32> {
        let [n, hi, wi, c] = shape;
        let (ho, wo) = size;
        let mut out = Vec::with_capacity(n * ho * wo * c);
        for b in 0..n {
            for y in 0..ho {
                let ys = nearest_index(y, hi, ho);
                for xo in 0..wo {
                    let xs = nearest_index(xo, wi, wo);
                    let at = ((b * hi + ys) * wi + xs) * c;
                    out.extend_from_slice(&x[at..at + c]);
                }
            }
        }
        out
    }

    /// PyTorch `compute_source_index_and_lambda` (align_corners = false): (i0, i1, l0, l1).
    pub fn linear_coord(d: usize, n_in: usize, n_out: usize) -> (usize, usize, f32, f32) {
        if n_in == n_out {
            return (d, d, 1.0, 0.0);
        }
        let scale = n_in as f32 / n_out as f32;
        let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n_in - 1);
        let i1 = i0 + usize::from(i0 < n_in - 1);
        let l1 = (s - i0 as f32).clamp(0.0, 1.0);
        (i0, i1, 1.0 - l1, l1)
    }

    pub fn bilinear(x: &[f32], shape: [usize; 4], size: (usize, usize)) -> Vec<f32> {
        let [n, hi, wi, c] = shape;
        let (ho, wo) = size;
        let at = |b: usize, y: usize, xx: usize, ch: usize| x[((b * hi + y) * wi + xx) * c + ch] as f64;
        let mut out = Vec::with_capacity(n * ho * wo * c);
        for b in 0..n {
            for y in 0..ho {
                let (y0, y1, a0, a1) = linear_coord(y, hi, ho);
                for xo in 0..wo {
                    let (x0, x1, b0, b1) = linear_coord(xo, wi, wo);
                    for ch in 0..c {
                        let (a0, a1, b0, b1) = (a0 as f64, a1 as f64, b0 as f64, b1 as f64);
                        let v = a0 * (b0 * at(b, y0, x0, ch) + b1 * at(b, y0, x1, ch))
                            + a1 * (b0 * at(b, y1, x0, ch) + b1 * at(b, y1, x1, ch));
                        out.push(v as f32);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::DType;

    const TOL: f64 = 1e-5;

    fn upload(gpu: &crate::Gpu, rng: &mut Rng, s: [usize; 4], dt: DType) -> (Tensor, Vec<f32>) {
        let v = rng.normals(s.iter().product(), 1.0);
        let t = Tensor::from_f32(gpu, &v, &s, dt).unwrap();
        (t, if dt == DType::F16 { round_f16(&v) } else { v })
    }

    #[test]
    fn nearest_matches_pytorch_golden() {
        use crate::ops::misc_golden::NEAREST;
        for &(i, o, idx) in NEAREST {
            let got: Vec<usize> = (0..o).map(|d| cpu::nearest_index(d, i, o)).collect();
            assert_eq!(got, idx, "cpu nearest {i} -> {o}");
        }
        // The GPU along both axes, on an index ramp (exact in f16 too).
        let gpu = test_gpu();
        for dt in gpu.dtypes() {
            for &(i, o, idx) in NEAREST {
                let ramp: Vec<f32> = (0..i).map(|v| v as f32).collect();
                let want: Vec<f32> = idx.iter().map(|&v| v as f32).collect();
                for (s, size) in [([1, i, 1, 1], (o, 1)), ([1, 1, i, 1], (1, o))] {
                    let x = Tensor::from_f32(&gpu, &ramp, &s, dt).unwrap();
                    let mut rec = gpu.recorder();
                    let out = upsample_nearest_to(&mut rec, &x, size).unwrap();
                    rec.submit();
                    assert_eq!(out.to_f32(&gpu).unwrap(), want, "gpu nearest {s:?} -> {size:?} {dt:?}");
                }
            }
        }
    }

    #[test]
    fn bilinear_matches_pytorch_golden() {
        use crate::ops::misc_golden::BILINEAR;
        let gpu = test_gpu();
        for &([h, w, ho, wo], x, want) in BILINEAR {
            let s = [1, h, w, 1]; // one channel: NCHW and NHWC coincide
            assert_close(&format!("cpu bilinear {s:?} -> ({ho}, {wo})"), &cpu::bilinear(x, s, (ho, wo)), want, TOL);
            for dt in gpu.dtypes() {
                let xt = Tensor::from_f32(&gpu, x, &s, dt).unwrap();
                let mut rec = gpu.recorder();
                let out = resize_bilinear(&mut rec, &xt, (ho, wo)).unwrap();
                rec.submit();
                assert_close(&format!("gpu bilinear {s:?} -> ({ho}, {wo}) {dt:?}"), &out.to_f32(&gpu).unwrap(), want, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn nearest2x_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for s in [[1usize, 1, 1, 1], [1, 7, 33, 7], [2, 33, 7, 4], [3, 5, 77, 1], [1, 3, 2, 77], [2, 9, 11, 36], [2, 17, 9, 16]] {
                let (x, xh) = upload(&gpu, &mut rng, s, dt);
                let mut rec = gpu.recorder();
                let out = upsample_nearest2x(&mut rec, &x).unwrap();
                rec.submit();
                assert_eq!(out.shape(), &[s[0], 2 * s[1], 2 * s[2], s[3]]);
                let want = cpu::nearest(&xh, s, (2 * s[1], 2 * s[2]));
                assert_close(&format!("nearest2x {s:?} {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn nearest_to_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (input shape, output size): the 180-row latent's 23 -> 45, exact x2, odd ratios, down.
        let cases: &[([usize; 4], (usize, usize))] = &[
            ([1, 23, 7, 4], (45, 13)),
            ([2, 45, 3, 7], (90, 7)),
            ([1, 7, 23, 33], (13, 45)),
            ([1, 1, 1, 8], (3, 5)),
            ([3, 45, 33, 1], (23, 77)),
            ([1, 77, 5, 12], (33, 5)),
        ];
        for dt in gpu.dtypes() {
            for &(s, size) in cases {
                let (x, xh) = upload(&gpu, &mut rng, s, dt);
                let mut rec = gpu.recorder();
                let out = upsample_nearest_to(&mut rec, &x, size).unwrap();
                rec.submit();
                assert_eq!(out.shape(), &[s[0], size.0, size.1, s[3]]);
                let want = cpu::nearest(&xh, s, size);
                let got = out.to_f32(&gpu).unwrap();
                // A copy: exact equality, stronger than the tolerance (catches off-by-one rows).
                assert_eq!(got, want, "nearest_to {s:?} -> {size:?} {dt:?} seed {seed}");
                assert_close(&format!("nearest_to {s:?} -> {size:?} {dt:?} seed {seed}"), &got, &want, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn bilinear_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let cases: &[([usize; 4], (usize, usize))] = &[
            ([1, 1, 1, 1], (7, 3)),     // 1 -> n: every tap clamps
            ([2, 7, 5, 4], (14, 10)),   // x2 up
            ([1, 23, 7, 33], (45, 13)), // odd up
            ([1, 45, 33, 8], (23, 7)),  // down (source coords > 1 apart)
            ([3, 7, 7, 7], (7, 13)),    // equal height: PyTorch's copy path
            ([1, 33, 9, 77], (34, 4)),
            ([1, 4, 77, 12], (9, 33)),
        ];
        for dt in gpu.dtypes() {
            for &(s, size) in cases {
                let (x, xh) = upload(&gpu, &mut rng, s, dt);
                let mut rec = gpu.recorder();
                let out = resize_bilinear(&mut rec, &x, size).unwrap();
                rec.submit();
                assert_eq!(out.shape(), &[s[0], size.0, size.1, s[3]]);
                let want = cpu::bilinear(&xh, s, size);
                let mut want_t = want.clone();
                if dt == DType::F16 {
                    want_t = round_f16(&want_t);
                }
                assert_close(&format!("bilinear {s:?} -> {size:?} {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want_t, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn cpu_bilinear_matches_known_values() {
        // By hand from the formula: W 3 -> 5 samples at max(0.6·(d + 0.5) − 0.5, 0) =
        // 0, 0.4, 1.0, 1.6, 2.2 (clamped to the last pixel).
        let got = cpu::bilinear(&[0.0, 1.0, 2.0], [1, 1, 3, 1], (1, 5));
        for (g, w) in got.iter().zip([0.0f32, 0.4, 1.0, 1.6, 2.0]) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // Down 4 -> 2: taps at 0.5 and 2.5 -> [0.5, 2.5].
        let got = cpu::bilinear(&[0.0, 1.0, 2.0, 3.0], [1, 1, 4, 1], (1, 2));
        assert_eq!(got, [0.5, 2.5]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let gpu = test_gpu();
        let x = Tensor::from_f32(&gpu, &[1.0; 6], &[1, 2, 3], DType::F32).unwrap();
        let mut rec = gpu.recorder();
        assert!(upsample_nearest2x(&mut rec, &x).is_err());
        let x = Tensor::from_f32(&gpu, &[1.0; 6], &[1, 2, 3, 1], DType::F32).unwrap();
        assert!(resize_bilinear(&mut rec, &x, (0, 3)).is_err());
    }
}
