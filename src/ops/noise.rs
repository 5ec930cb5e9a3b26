//! Gaussian noise on the GPU (`shaders/noise.wgsl`): Philox4x32-10 keyed by the seed, counter
//! (x, y, frame, stream), then Box–Muller: the same integers and formulas as the host reference
//! [`crate::pipeline::noise`] (see its docs for the definition), so noise depends only on the
//! seed, the stream, the absolute frame index and the pixel position in the padded frame —
//! never on where windows, tiles or segments fall.
//!
//! [`gaussian_noise_into`] writes a channels-last region `[F, H, W, C]` (C ≤ 4: 4 for latents, 3
//! for the LR image; leading axes of size 1 allowed, e.g. `[1, F, H, W, C]`) whose frame f is
//! the noise of frame `frames[f]` (a u32 table: noise rescheduling is just another table, see
//! [`source_frames`]) and whose pixel (y, x) is position (y0 + y, x0 + x). Philox words are
//! exact on every GPU ([`philox_words`] exposes them for tests); the normals differ from the
//! host's f64 Box–Muller by the f32 `log`/`cos`/`sin` of the device (1e-7 to 5e-7 relative L2
//! on lavapipe; the tests allow 1e-5, as WGSL leaves those functions' f32 accuracy to the
//! device), and are bit-identical across runs on one device.
//!
//! The seed, stream and offsets are kernel parameters: noise is drawn once per window or tile,
//! outside the replayed denoising step.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
pub use crate::pipeline::noise::Stream;
use crate::tensor::Tensor;
use crate::DType;

const SRC: &str = include_str!("../../shaders/noise.wgsl");

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    key0: u32,
    key1: u32,
    stream: u32,
    y0: u32,
    x0: u32,
    h: u32,
    w: u32,
    c: u32,
    n: u32,
}

/// Which noise a frame of `stream` carries, for absolute frames `frames`: the frame itself for
/// the LR augmentation, its rescheduled source ([`crate::pipeline::noise::latent_noise_frame`])
/// for the initial latents. Upload with [`Tensor::from_u32`] as the `frames` table.
pub fn source_frames(seed: u64, stream: Stream, frames: impl IntoIterator<Item = u64>) -> Result<Vec<u32>> {
    frames
        .into_iter()
        .map(|f| {
            let s = match stream {
                Stream::Latent => crate::pipeline::noise::latent_noise_frame(seed, f),
                _ => f,
            };
            u32::try_from(s).map_err(|_| anyhow::anyhow!("frame index {s} does not fit the 32-bit noise counter"))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run(rec: &mut Recorder, mode: u32, dtype: DType, frames: &Tensor, seed: u64, stream: u32, y0: u32, x0: u32, h: usize, w: usize, c: usize, n: usize, out: &Tensor) -> Result<()> {
    if n > u32::MAX as usize / 4 || h > u32::MAX as usize || w > u32::MAX as usize {
        bail!("gaussian_noise: {out:?} exceeds 32-bit indexing");
    }
    let p = Params { key0: seed as u32, key1: (seed >> 32) as u32, stream, y0, x0, h: h.max(1) as u32, w: w.max(1) as u32, c: c as u32, n: n as u32 };
    let k = Kernel::new("noise", SRC, dtype).def("MODE", format!("{mode}u"));
    rec.dispatch(&k, &p, &[frames.into(), out.into()], grid(rec.gpu(), n.div_ceil(256) as u32))
}

/// (F, H, W, C) of a channels-last region `[..., F, H, W, C]` whose axes before F are all 1.
fn region_dims(what: &str, out: &Tensor) -> Result<[usize; 4]> {
    let s = out.shape();
    if s.len() < 4 || s[..s.len() - 4].iter().any(|&d| d != 1) {
        bail!("{what}: output {out:?} must be channels-last [F, H, W, C] (optionally with leading axes of size 1)");
    }
    let r = s.len() - 4;
    Ok([s[r], s[r + 1], s[r + 2], s[r + 3]])
}

fn check_frames(what: &str, frames: &Tensor, f: usize, out: &Tensor) -> Result<()> {
    if frames.dtype() != DType::U32 || frames.numel() != f {
        bail!("{what}: the frame table {frames:?} must be u32 with one entry per output frame of {out:?} ({f})");
    }
    Ok(())
}

/// Standard normal noise into `out` (`[F, H, W, C]`, f32 or f16, C ≤ 4; a view works): frame f
/// is the noise of absolute frame `frames[f]` (u32 `[F]`), pixel (y, x) that of position
/// (y0 + y, x0 + x) of the padded frame, channel k the k-th normal of that counter.
#[allow(clippy::too_many_arguments)]
pub fn gaussian_noise_into(rec: &mut Recorder, frames: &Tensor, seed: u64, stream: Stream, y0: u32, x0: u32, out: &Tensor) -> Result<()> {
    let [f, h, w, c] = region_dims("gaussian_noise", out)?;
    if !out.dtype().is_float() || c == 0 || c > 4 {
        bail!("gaussian_noise: output {out:?} must be f32 or f16 with 1 to 4 channels (one Philox call gives four normals)");
    }
    check_frames("gaussian_noise", frames, f, out)?;
    if frames.same_storage(out) {
        bail!("gaussian_noise: the frame table {frames:?} shares storage with the output {out:?}");
    }
    run(rec, 0, out.dtype(), frames, seed, stream as u32, y0, x0, h, w, c, f * h * w, out)
}

/// [`gaussian_noise_into`] into a new `[F, H, W, C]` tensor, F = `frames.numel()`.
#[allow(clippy::too_many_arguments)]
pub fn gaussian_noise(rec: &mut Recorder, frames: &Tensor, seed: u64, stream: Stream, y0: u32, x0: u32, [h, w, c]: [usize; 3], dtype: DType) -> Result<Tensor> {
    let out = rec.empty(&[frames.numel(), h, w, c], dtype)?;
    gaussian_noise_into(rec, frames, seed, stream, y0, x0, &out)?;
    Ok(out)
}

/// The raw Philox4x32-10 words behind [`gaussian_noise`], u32 `[F, H, W, 4]`, for any stream
/// word: what the exactness tests compare with the host bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn philox_words(rec: &mut Recorder, frames: &Tensor, seed: u64, stream: u32, y0: u32, x0: u32, h: usize, w: usize) -> Result<Tensor> {
    let f = frames.numel();
    let out = rec.empty(&[f, h, w, 4], DType::U32)?;
    check_frames("philox_words", frames, f, &out)?;
    run(rec, 1, DType::U32, frames, seed, stream, y0, x0, h, w, 4, f * h * w, &out)?;
    Ok(out)
}

/// The kernel's 32×32→64-bit multiply on u32 `[n, 2]` operand pairs: `[n, 2]` (high, low) words.
/// A test hook for the emulated wide multiply that Philox needs.
pub fn mul_wide(rec: &mut Recorder, pairs: &Tensor) -> Result<Tensor> {
    if pairs.dtype() != DType::U32 || pairs.shape().len() != 2 || pairs.shape()[1] != 2 {
        bail!("mul_wide: operands {pairs:?} must be u32 [n, 2]");
    }
    let n = pairs.shape()[0];
    let out = rec.empty(&[n, 2], DType::U32)?;
    run(rec, 2, DType::U32, pairs, 0, 0, 0, 0, 1, 1, 2, n, &out)?;
    Ok(out)
}

/// Benchmarks: the initial latents of one window (8 frames of a 128² latent, 4 channels) and
/// the LR noise of the same window (3 channels).
pub fn bench_cases(gpu: &crate::Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::BenchCase;
    let (f, hw) = if quick { (8usize, 16usize) } else { (8, 128) };
    let seed = 0x5EED_0123_4567_89AB;
    let lat = Tensor::from_u32(gpu, &source_frames(seed, Stream::Latent, 8..8 + f as u64)?, &[f])?;
    let lr = Tensor::from_u32(gpu, &source_frames(seed, Stream::LowRes, 8..8 + f as u64)?, &[f])?;
    let es = dtype.size() as f64;
    let px = (f * hw * hw) as f64;
    Ok(vec![
        BenchCase {
            name: "gaussian_noise (latents, C=4)".into(),
            shape: format!("[{f}, {hw}, {hw}, 4]"),
            flops: 0.0,
            bytes: 4.0 * px * es,
            run: Box::new(move |r| gaussian_noise(r, &lat, seed, Stream::Latent, 0, 0, [hw, hw, 4], dtype).map(drop)),
        },
        BenchCase {
            name: "gaussian_noise (LR image, C=3)".into(),
            shape: format!("[{f}, {hw}, {hw}, 3]"),
            flops: 0.0,
            bytes: 3.0 * px * es,
            run: Box::new(move |r| gaussian_noise(r, &lr, seed, Stream::LowRes, 0, 0, [hw, hw, 3], dtype).map(drop)),
        },
    ])
}

/// CPU references: [`crate::pipeline::noise`] laid out as the kernel writes.
pub mod cpu {
    use crate::pipeline::noise::{normal4, philox4x32_10, seed_key, Stream};

    /// Channels-last `[F, H, W, C]` noise; frame f is absolute frame `frames[f]`.
    #[allow(clippy::too_many_arguments)]
    pub fn gaussian_noise(frames: &[u32], seed: u64, stream: Stream, y0: u32, x0: u32, h: usize, w: usize, c: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(frames.len() * h * w * c);
        for &f in frames {
            for y in 0..h as u32 {
                for x in 0..w as u32 {
                    out.extend_from_slice(&normal4(seed, stream, f, y0.wrapping_add(y), x0.wrapping_add(x))[..c]);
                }
            }
        }
        out
    }

    /// `[F, H, W, 4]` Philox words.
    #[allow(clippy::too_many_arguments)]
    pub fn philox_words(frames: &[u32], seed: u64, stream: u32, y0: u32, x0: u32, h: usize, w: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(frames.len() * h * w * 4);
        for &f in frames {
            for y in 0..h as u32 {
                for x in 0..w as u32 {
                    out.extend_from_slice(&philox4x32_10([x0.wrapping_add(x), y0.wrapping_add(y), f, stream], seed_key(seed)));
                }
            }
        }
        out
    }

    /// (high, low) words of a·b.
    pub fn mul_wide(a: u32, b: u32) -> [u32; 2] {
        let p = a as u64 * b as u64;
        [(p >> 32) as u32, p as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::noise::{latent_noise, philox4x32_10};
    use crate::testutil::*;

    #[test]
    fn wide_multiply_is_exact() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let edges = [0u32, 1, 2, 0xFFFF, 0x1_0000, 0x1_0001, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF, 0xD251_1F53, 0xCD9E_8D57];
        let mut v = Vec::new();
        for &a in &edges {
            for &b in &edges {
                v.extend([a, b]);
            }
        }
        for _ in 0..4000 {
            v.extend([rng.next_u64() as u32, rng.next_u64() as u32]);
        }
        let n = v.len() / 2;
        let pairs = Tensor::from_u32(&gpu, &v, &[n, 2]).unwrap();
        let mut rec = gpu.recorder();
        let out = mul_wide(&mut rec, &pairs).unwrap();
        rec.submit();
        let got = out.to_u32(&gpu).unwrap();
        for i in 0..n {
            let want = cpu::mul_wide(v[2 * i], v[2 * i + 1]);
            assert_eq!(got[2 * i..2 * i + 2], want, "{:#x} * {:#x}, seed {seed}", v[2 * i], v[2 * i + 1]);
        }
    }

    #[test]
    fn philox_words_are_bit_identical_to_the_host() {
        let gpu = test_gpu();
        // Random123's known answers: counter 0 / key 0, and all ones.
        for (word, seed, want) in [
            (0u32, 0u64, [0x6627e8d5u32, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            (u32::MAX, u64::MAX, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        ] {
            let frames = Tensor::from_u32(&gpu, &[word], &[1]).unwrap();
            let mut rec = gpu.recorder();
            let out = philox_words(&mut rec, &frames, seed, word, word, word, 1, 1).unwrap();
            rec.submit();
            assert_eq!(out.to_u32(&gpu).unwrap(), want);
        }
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for (f, h, w) in [(1usize, 1usize, 1usize), (3, 7, 33), (2, 33, 7), (1, 1, 77)] {
            let key = rng.next_u64();
            let table: Vec<u32> = (0..f).map(|_| rng.next_u64() as u32).collect();
            let (y0, x0, stream) = (rng.below(1 << 20), u32::MAX - rng.below(40), rng.next_u64() as u32);
            let frames = Tensor::from_u32(&gpu, &table, &[f]).unwrap();
            let mut rec = gpu.recorder();
            let out = philox_words(&mut rec, &frames, key, stream, y0, x0, h, w).unwrap();
            rec.submit();
            let got = out.to_u32(&gpu).unwrap();
            let want = cpu::philox_words(&table, key, stream, y0, x0, h, w);
            assert_eq!(got.len(), want.len(), "[{f}, {h}, {w}]");
            let bad = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(bad.is_none(), "[{f}, {h}, {w}] key {key:#x}: first differing word {bad:?}, seed {seed}");
        }
        assert_eq!(cpu::philox_words(&[5], 9, 1, 2, 3, 1, 1), philox4x32_10([3, 2, 5, 1], [9, 0]));
    }

    #[test]
    fn normals_match_the_host() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for (f, h, w, c) in [(1usize, 1usize, 1usize, 4usize), (2, 7, 33, 3), (3, 33, 7, 4), (1, 77, 1, 1), (2, 9, 13, 2)] {
                let key = rng.next_u64();
                let stream = if c == 3 { Stream::LowRes } else { Stream::Latent };
                let table = source_frames(key, stream, (0..f).map(|_| rng.below(5000) as u64)).unwrap();
                let (y0, x0) = (rng.below(300), rng.below(300));
                let frames = Tensor::from_u32(&gpu, &table, &[f]).unwrap();
                let mut rec = gpu.recorder();
                let out = gaussian_noise(&mut rec, &frames, key, stream, y0, x0, [h, w, c], dt).unwrap();
                rec.submit();
                assert_eq!(out.shape(), &[f, h, w, c]);
                let want = cpu::gaussian_noise(&table, key, stream, y0, x0, h, w, c);
                // f32: Box–Muller in f32 (log, cos, sin) against the host's f64.
                let tol = dt.tolerance(1e-5);
                assert_close(&format!("noise [{f}, {h}, {w}, {c}] {dt:?} {stream:?} key {key:#x} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, tol);
            }
        }
    }

    /// The CPU twin is the pipeline's noise (planar there, channels-last here), and a region
    /// drawn at an offset is the same pixels of a larger region, bit for bit, on the GPU too:
    /// tiles and windows see one noise field. Writing into a view of a bigger tensor works.
    #[test]
    fn regions_tile_one_noise_field() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let (h, w) = (7usize, 13usize);
        let planar = latent_noise(seed, 13, 2, 3, h, w);
        let src = source_frames(seed, Stream::Latent, [13]).unwrap();
        let cl = cpu::gaussian_noise(&src, seed, Stream::Latent, 2, 3, h, w, 4);
        for c in 0..4 {
            for p in 0..h * w {
                assert_eq!(cl[p * 4 + c], planar[c * h * w + p]);
            }
        }
        let table: Vec<u32> = (20..24).collect();
        let frames = Tensor::from_u32(&gpu, &table, &[4]).unwrap();
        let sub = Tensor::from_u32(&gpu, &table[1..3], &[2]).unwrap();
        // [1, 4, 16, 16, 4] f32: a frame is 4 KiB, so a frame view is aligned.
        let big = Tensor::empty(&gpu, &[1, 4, 16, 16, 4], DType::F32).unwrap();
        let mut rec = gpu.recorder();
        gaussian_noise_into(&mut rec, &frames, seed, Stream::Latent, 10, 20, &big).unwrap();
        let small = gaussian_noise(&mut rec, &sub, seed, Stream::Latent, 15, 23, [5, 9, 4], DType::F32).unwrap();
        let target = Tensor::empty(&gpu, &[1, 4, 16, 16, 4], DType::F32).unwrap();
        gaussian_noise_into(&mut rec, &sub, seed, Stream::Latent, 10, 20, &target.narrow(1, 1, 2).unwrap()).unwrap();
        rec.submit();
        let (b, s, t) = (big.to_f32(&gpu).unwrap(), small.to_f32(&gpu).unwrap(), target.to_f32(&gpu).unwrap());
        for f in 0..2 {
            for y in 0..5 {
                for x in 0..9 {
                    for c in 0..4 {
                        let bi = (((f + 1) * 16 + y + 5) * 16 + x + 3) * 4 + c;
                        assert_eq!(s[((f * 5 + y) * 9 + x) * 4 + c].to_bits(), b[bi].to_bits(), "seed {seed}");
                    }
                }
            }
        }
        let fl = 16 * 16 * 4;
        assert_eq!(t[fl..3 * fl], b[fl..3 * fl], "view write, seed {seed}");
        assert!(t[..fl].iter().chain(&t[3 * fl..]).all(|v| v.is_nan()), "wrote outside the view");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let gpu = test_gpu();
        let frames = Tensor::from_u32(&gpu, &[0, 1], &[2]).unwrap();
        let mut rec = gpu.recorder();
        let e = gaussian_noise(&mut rec, &frames, 1, Stream::Latent, 0, 0, [4, 4, 5], DType::F32).unwrap_err().to_string();
        assert!(e.contains("[2, 4, 4, 5]") && e.contains("4 channels"), "{e}");
        let out = Tensor::empty(&gpu, &[3, 4, 4, 4], DType::F32).unwrap();
        let e = gaussian_noise_into(&mut rec, &frames, 1, Stream::Latent, 0, 0, &out).unwrap_err().to_string();
        assert!(e.contains("[2]") && e.contains("[3, 4, 4, 4]"), "{e}");
        let ff = Tensor::from_f32(&gpu, &[0.0, 1.0, 2.0], &[3], DType::F32).unwrap();
        assert!(gaussian_noise_into(&mut rec, &ff, 1, Stream::Latent, 0, 0, &out).unwrap_err().to_string().contains("u32"));
        let e = gaussian_noise_into(&mut rec, &frames, 1, Stream::Latent, 0, 0, &Tensor::empty(&gpu, &[4, 4, 4], DType::F32).unwrap()).unwrap_err().to_string();
        assert!(e.contains("channels-last"), "{e}");
        assert!(mul_wide(&mut rec, &frames).is_err());
        assert!(source_frames(0, Stream::LowRes, [1u64 << 33]).is_err());
        rec.submit();
    }

    #[test]
    fn bench_cases_run() {
        run_quick_bench_cases(bench_cases);
    }

    #[test]
    fn kernels_translate() {
        for (mode, dt) in [(0u32, DType::F32), (0, DType::F16), (1, DType::U32), (2, DType::U32)] {
            translate_check(&Kernel::new("noise", SRC, dt).def("MODE", format!("{mode}u")));
        }
    }
}
