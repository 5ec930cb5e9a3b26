//! Permutes between the reference (PyTorch) layouts and the engine's channels-last layouts
//! (`shaders/layout.wgsl`): images `[N, C, H, W]` ↔ `[N, H, W, C]` and video
//! `[B, C, F, H, W]` ↔ `[B, F, H, W, C]`. Used at the engine's edges (loading inputs, comparing
//! with reference dumps), never inside the UNet.
//!
//! Every one of them is a batched 2-D transpose `[batch, R, S]` → `[batch, S, R]`, tiled through
//! workgroup memory so reads and writes are both coalesced.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::Tensor;

const SRC: &str = include_str!("../../shaders/layout.wgsl");
const TILE: usize = 32; // as in the shader

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    r: u32,
    s: u32,
    tiles_r: u32,
    tiles_s: u32,
    tiles: u32,
}

/// `x` viewed `[batch, r, s]` → a new `[batch, s, r]` tensor with shape `out_shape`.
fn transpose(rec: &mut Recorder, x: &Tensor, batch: usize, r: usize, s: usize, out_shape: &[usize]) -> Result<Tensor> {
    if x.numel() > u32::MAX as usize {
        bail!("layout: {x:?} exceeds 32-bit indexing");
    }
    let out = rec.empty(out_shape, x.dtype())?;
    if x.numel() == 0 {
        return Ok(out);
    }
    let (tiles_r, tiles_s) = (r.div_ceil(TILE), s.div_ceil(TILE));
    let tiles = batch * tiles_r * tiles_s;
    let p = Params { r: r as u32, s: s as u32, tiles_r: tiles_r as u32, tiles_s: tiles_s as u32, tiles: tiles as u32 };
    let k = Kernel::new("layout_transpose", SRC, x.dtype());
    let gpu = rec.gpu();
    rec.dispatch(&k, &p, &[x.into(), (&out).into()], grid(gpu, tiles as u32))?;
    Ok(out)
}

fn rank(what: &str, x: &Tensor, want: usize, layout: &str) -> Result<()> {
    if x.shape().len() != want {
        bail!("{what}: expected a {layout} tensor, got {x:?}");
    }
    Ok(())
}

/// `[N, C, H, W]` (PyTorch) → `[N, H, W, C]` (engine).
pub fn nchw_to_nhwc(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    rank("nchw_to_nhwc", x, 4, "[N, C, H, W]")?;
    let &[n, c, h, w] = x.shape() else { unreachable!() };
    transpose(rec, x, n, c, h * w, &[n, h, w, c])
}

/// `[N, H, W, C]` (engine) → `[N, C, H, W]` (PyTorch).
pub fn nhwc_to_nchw(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    rank("nhwc_to_nchw", x, 4, "[N, H, W, C]")?;
    let &[n, h, w, c] = x.shape() else { unreachable!() };
    transpose(rec, x, n, h * w, c, &[n, c, h, w])
}

/// Video `[B, C, F, H, W]` (PyTorch) → `[B, F, H, W, C]` (engine).
pub fn ncfhw_to_nfhwc(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    rank("ncfhw_to_nfhwc", x, 5, "[B, C, F, H, W]")?;
    let &[b, c, f, h, w] = x.shape() else { unreachable!() };
    transpose(rec, x, b, c, f * h * w, &[b, f, h, w, c])
}

/// Video `[B, F, H, W, C]` (engine) → `[B, C, F, H, W]` (PyTorch).
pub fn nfhwc_to_ncfhw(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    rank("nfhwc_to_ncfhw", x, 5, "[B, F, H, W, C]")?;
    let &[b, f, h, w, c] = x.shape() else { unreachable!() };
    transpose(rec, x, b, f * h * w, c, &[b, c, f, h, w])
}

/// Benchmark: a 16-frame, 256-channel, 128² activation from PyTorch's layout into the engine's.
pub fn bench_cases(gpu: &crate::Gpu, dtype: crate::DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let s: Vec<usize> = if quick { vec![2, 32, 8, 8] } else { vec![16, 256, 128, 128] };
    let n: usize = s.iter().product();
    let x = random_tensor(gpu, &s, dtype, 1)?;
    Ok(vec![BenchCase {
        name: "nchw -> nhwc".into(),
        shape: format!("{s:?}"),
        flops: 0.0,
        bytes: 2.0 * n as f64 * dtype.size() as f64,
        run: Box::new(move |r| nchw_to_nhwc(r, &x).map(drop)),
    }])
}

/// CPU reference: a general axis permutation of row-major data (`out` axis `i` is `x` axis
/// `perm[i]`, as `torch.permute`).
pub mod cpu {
    pub fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
        let rank = shape.len();
        let mut strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            out.push(x[(0..rank).map(|i| idx[i] * strides[perm[i]]).sum::<usize>()]);
            for i in (0..rank).rev() {
                idx[i] += 1;
                if idx[i] < out_shape[i] {
                    break;
                }
                idx[i] = 0;
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

    type Op = fn(&mut Recorder, &Tensor) -> Result<Tensor>;

    fn check(op: Op, name: &str, perm: &[usize], shapes: &[&[usize]]) {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for &s in shapes {
                let v = rng.normals(s.iter().product(), 1.0);
                let x = Tensor::from_f32(&gpu, &v, s, dt).unwrap();
                let xh = if dt == DType::F16 { round_f16(&v) } else { v };
                let mut rec = gpu.recorder();
                let out = op(&mut rec, &x).unwrap();
                rec.submit();
                let want_shape: Vec<usize> = perm.iter().map(|&a| s[a]).collect();
                assert_eq!(out.shape(), &want_shape[..], "{name} {s:?}");
                let want = cpu::permute(&xh, s, perm);
                let got = out.to_f32(&gpu).unwrap();
                assert_eq!(got, want, "{name} {s:?} {dt:?} seed {seed}");
                assert_close(&format!("{name} {s:?} {dt:?} seed {seed}"), &got, &want, dt.tolerance(TOL));
            }
        }
    }

    // Channel and pixel counts of 1, 7, 33, 77, and both above one 32 × 32 tile at once.
    const IMAGES: &[&[usize]] = &[&[1, 1, 1, 1], &[2, 7, 3, 11], &[1, 33, 7, 1], &[3, 1, 5, 7], &[1, 77, 6, 13], &[2, 36, 33, 2], &[1, 5, 7, 77]];
    const VIDEOS: &[&[usize]] = &[&[1, 1, 1, 1, 1], &[2, 7, 3, 5, 1], &[1, 33, 2, 7, 11], &[1, 77, 3, 1, 13], &[2, 4, 1, 33, 1], &[1, 2, 3, 7, 70]];

    #[test]
    fn nchw_to_nhwc_matches_cpu() {
        check(nchw_to_nhwc, "nchw_to_nhwc", &[0, 2, 3, 1], IMAGES);
    }

    #[test]
    fn nhwc_to_nchw_matches_cpu() {
        check(nhwc_to_nchw, "nhwc_to_nchw", &[0, 3, 1, 2], IMAGES);
    }

    #[test]
    fn ncfhw_to_nfhwc_matches_cpu() {
        check(ncfhw_to_nfhwc, "ncfhw_to_nfhwc", &[0, 2, 3, 4, 1], VIDEOS);
    }

    #[test]
    fn nfhwc_to_ncfhw_matches_cpu() {
        check(nfhwc_to_ncfhw, "nfhwc_to_ncfhw", &[0, 4, 1, 2, 3], VIDEOS);
    }

    #[test]
    fn round_trip_is_identity_and_rank_is_checked() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let s = [2usize, 5, 33, 9, 40];
        let v = rng.normals(s.iter().product(), 1.0);
        let x = Tensor::from_f32(&gpu, &v, &s, DType::F32).unwrap();
        let mut rec = gpu.recorder();
        let t = ncfhw_to_nfhwc(&mut rec, &x).unwrap();
        let y = nfhwc_to_ncfhw(&mut rec, &t).unwrap();
        rec.submit();
        assert_eq!(y.to_f32(&gpu).unwrap(), v, "seed {seed}");
        let mut rec = gpu.recorder();
        assert!(nchw_to_nhwc(&mut rec, &x).is_err());
        assert!(ncfhw_to_nfhwc(&mut rec, &x.reshape(&[10, 33, 9, 40]).unwrap()).is_err());
    }
}
