//! YUV ↔ RGB with chroma resampling on the GPU (issue 9 item 5; `shaders/color.wgsl`,
//! `shaders/color_encode.wgsl`). The CPU twins are `video::color::{frame_to_rgb, rgb_to_frame}`
//! with the pipeline's `(clamp(rgb, 0, 1) − 0.5)·2` / `clamp(x, −1, 1)·0.5 + 0.5` around them
//! (see [`cpu`]).
//!
//! Planes are u32 tensors with one sample per element: Y `[H, W]`, U and V `[ch, cw]` at the
//! chroma size `video::y4m::FrameFormat::chroma_size` gives (odd sizes round up); mono frames
//! have no chroma planes. RGB is channels-last `[H, W, 3]` in the model's [−1, 1] (f32 or f16).

use anyhow::{bail, Result};

use crate::kernel::{grid, Recorder};
use crate::video::color::YuvParams;
use crate::video::y4m::{Chroma, Frame, FrameFormat, Siting};
use crate::{DType, Gpu, Kernel, Tensor};

const DECODE_SRC: &str = include_str!("../../shaders/color.wgsl");
const ENCODE_SRC: &str = include_str!("../../shaders/color_encode.wgsl");

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    w: u32,
    h: u32,
    cw: u32,
    ch: u32,
    mono: u32,
    sub_x: u32,
    sub_y: u32,
    co_x: u32,
    co_y: u32,
    yo: f32,
    co: f32,
    ay: f32,
    arv: f32,
    agu: f32,
    agv: f32,
    abu: f32,
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct EncodeParams {
    w: u32,
    h: u32,
    pw: u32,
    ph: u32,
    sub_x: u32,
    sub_y: u32,
    co_x: u32,
    co_y: u32,
    off: f32,
    cr: f32,
    cg: f32,
    cb: f32,
    max_code: f32,
}

/// A frame's planes on the GPU (u32 samples). `uv` is `None` for mono.
pub struct YuvPlanes {
    pub y: Tensor,
    pub uv: Option<(Tensor, Tensor)>,
}

/// (co-sited x, co-sited y, luma samples per chroma sample along x, along y): the CPU twin's
/// layout, for the kernels' parameters.
fn layout(chroma: Chroma, siting: Siting) -> (bool, bool, u32, u32) {
    let (co_x, co_y, sx, sy) = crate::video::color::layout(chroma, siting);
    (co_x, co_y, sx as u32, sy as u32)
}

fn check_format(what: &str, format: &FrameFormat, params: &YuvParams) -> Result<()> {
    if format.depth != params.depth {
        bail!("{what}: the frame format is {}-bit ({format:?}) but the YUV parameters are {}-bit ({params:?})", format.depth, params.depth);
    }
    if !(8..=16).contains(&format.depth) {
        bail!("{what}: bit depth {} of {format:?} is outside 8..=16", format.depth);
    }
    if format.width == 0 || format.height == 0 {
        bail!("{what}: empty frame {format:?}");
    }
    Ok(())
}

fn check_plane(what: &str, name: &str, t: &Tensor, want: [usize; 2], format: &FrameFormat) -> Result<()> {
    if t.dtype() != DType::U32 || t.shape() != want {
        bail!("{what}: plane {name} is {t:?} but {format:?} needs a u32 plane of shape {want:?}");
    }
    Ok(())
}

/// YUV planes → channels-last RGB `[H, W, 3]` in [−1, 1] of `dtype` (what the pipeline feeds
/// the model: `(clamp(rgb, 0, 1) − 0.5)·2` of `video::color::frame_to_rgb`, which does not clamp:
/// the released pipeline reads 8-bit RGB, so colours outside the RGB cube never reach its model).
pub fn yuv_to_rgb(rec: &mut Recorder, y: &Tensor, uv: Option<(&Tensor, &Tensor)>, format: &FrameFormat, params: &YuvParams, dtype: DType) -> Result<Tensor> {
    const WHAT: &str = "yuv_to_rgb";
    check_format(WHAT, format, params)?;
    if dtype == DType::U32 {
        bail!("{WHAT}: the RGB output must be f32 or f16, not {dtype}");
    }
    let (w, h) = (format.width as usize, format.height as usize);
    check_plane(WHAT, "Y", y, [h, w], format)?;
    let (cw, ch) = format.chroma_size();
    let (u, v) = match (format.chroma, uv) {
        (Chroma::Mono, None) => (y, y),
        (Chroma::Mono, Some((u, _))) => bail!("{WHAT}: {format:?} is mono but chroma planes were given ({u:?})"),
        (_, None) => bail!("{WHAT}: {format:?} needs U and V planes of [{ch}, {cw}], none were given"),
        (_, Some((u, v))) => {
            check_plane(WHAT, "U", u, [ch as usize, cw as usize], format)?;
            check_plane(WHAT, "V", v, [ch as usize, cw as usize], format)?;
            (u, v)
        }
    };
    let (co_x, co_y, sub_x, sub_y) = layout(format.chroma, format.siting);
    let (yo, ys, co, cs) = params.code_scales();
    let (kr, kb) = params.matrix.kr_kb();
    let kg = 1.0 - kr - kb;
    let (arv, abu) = (2.0 * (1.0 - kr) / cs, 2.0 * (1.0 - kb) / cs);
    let p = DecodeParams {
        w: w as u32,
        h: h as u32,
        cw: cw.max(1),
        ch: ch.max(1),
        mono: (format.chroma == Chroma::Mono) as u32,
        sub_x,
        sub_y,
        co_x: co_x as u32,
        co_y: co_y as u32,
        yo: yo as f32,
        co: co as f32,
        ay: (1.0 / ys) as f32,
        arv: arv as f32,
        agu: (kb * abu / kg) as f32,
        agv: (kr * arv / kg) as f32,
        abu: abu as f32,
    };
    let out = rec.empty(&[h, w, 3], dtype)?;
    let k = Kernel::new("color_decode", DECODE_SRC, dtype);
    let gpu = rec.gpu();
    rec.dispatch(&k, &p, &[y.into(), u.into(), v.into(), (&out).into()], grid(gpu, (w * h).div_ceil(256) as u32))?;
    Ok(out)
}

/// Channels-last RGB `[H, W, 3]` in [−1, 1] (clamped) → the planes of `format`: chroma
/// averaged down as `video::color::downsample_chroma` does, codes rounded half away from zero
/// and clamped, as `YuvParams::quantize` does.
pub fn rgb_to_yuv(rec: &mut Recorder, rgb: &Tensor, format: &FrameFormat, params: &YuvParams) -> Result<YuvPlanes> {
    const WHAT: &str = "rgb_to_yuv";
    check_format(WHAT, format, params)?;
    let (w, h) = (format.width as usize, format.height as usize);
    if rgb.dtype() == DType::U32 || rgb.shape() != [h, w, 3] {
        bail!("{WHAT}: RGB is {rgb:?} but {format:?} needs a float tensor of shape [{h}, {w}, 3]");
    }
    let (yo, ys, co, cs) = params.code_scales();
    let (kr, kb) = params.matrix.kr_kb();
    let kg = 1.0 - kr - kb;
    let max_code = ((1u32 << params.depth) - 1) as f32;
    let k = Kernel::new("color_encode", ENCODE_SRC, rgb.dtype());
    let gpu = rec.gpu();
    let plane = |rec: &mut Recorder, coef: [f64; 4], is_chroma: bool| -> Result<Tensor> {
        let (co_x, co_y, sub_x, sub_y) = if is_chroma { layout(format.chroma, format.siting) } else { (false, false, 1, 1) };
        let (pw, ph) = if is_chroma { let (a, b) = format.chroma_size(); (a as usize, b as usize) } else { (w, h) };
        let out = rec.empty(&[ph, pw], DType::U32)?;
        let p = EncodeParams {
            w: w as u32,
            h: h as u32,
            pw: pw as u32,
            ph: ph as u32,
            sub_x,
            sub_y,
            co_x: co_x as u32,
            co_y: co_y as u32,
            off: coef[0] as f32,
            cr: coef[1] as f32,
            cg: coef[2] as f32,
            cb: coef[3] as f32,
            max_code,
        };
        rec.dispatch(&k, &p, &[rgb.into(), (&out).into()], grid(gpu, (pw * ph).div_ceil(256) as u32))?;
        Ok(out)
    };
    let y = plane(rec, [yo, ys * kr, ys * kg, ys * kb], false)?;
    if format.chroma == Chroma::Mono {
        return Ok(YuvPlanes { y, uv: None });
    }
    let (su, sv) = (cs / (2.0 * (1.0 - kb)), cs / (2.0 * (1.0 - kr)));
    let u = plane(rec, [co, -su * kr, -su * kg, su * (1.0 - kb)], true)?;
    let v = plane(rec, [co, sv * (1.0 - kr), -sv * kg, -sv * kb], true)?;
    Ok(YuvPlanes { y, uv: Some((u, v)) })
}

/// A frame → the model's RGB, channels-last `[H, W, 3]` f32 in [−1, 1] on the host, converted on
/// the GPU ([`yuv_to_rgb`]) in bands of rows where the frame's tensors would pass `max_bytes` (the
/// adapter's largest binding, [`Gpu::max_binding`]): each band with two rows of context above and
/// below for the chroma taps, so the bands join to the whole frame's conversion byte for byte.
pub fn frame_to_rgb_f32(gpu: &Gpu, frame: &Frame, params: &YuvParams, max_bytes: u64) -> Result<Vec<f32>> {
    let f = frame.format;
    let (w, h) = (f.width as usize, f.height as usize);
    let mut out = Vec::with_capacity(w * h * 3);
    for band in row_bands(w, h, max_bytes)? {
        let sub = band.sub_frame(frame);
        let planes = upload_frame(gpu, &sub)?;
        let mut rec = gpu.recorder();
        let uv = planes.uv.as_ref().map(|(u, v)| (u, v));
        let rgb = yuv_to_rgb(&mut rec, &planes.y, uv, &sub.format, params, DType::F32)?;
        rec.submit();
        let hwc = rgb.to_f32(gpu)?;
        out.extend_from_slice(&hwc[(band.r0 - band.lo) * w * 3..(band.r1 - band.lo) * w * 3]);
    }
    Ok(out)
}

/// Channels-last RGB `[H, W, 3]` f32 in [−1, 1] on the host → a frame of `format`, converted on
/// the GPU ([`rgb_to_yuv`]) in bands of rows as [`frame_to_rgb_f32`] cuts them.
pub fn rgb_f32_to_frame(gpu: &Gpu, hwc: &[f32], format: FrameFormat, params: &YuvParams, max_bytes: u64) -> Result<Frame> {
    let (w, h) = (format.width as usize, format.height as usize);
    if hwc.len() != w * h * 3 {
        bail!("rgb_to_yuv: {} RGB values for a {w}×{h} frame ({} expected)", hwc.len(), w * h * 3);
    }
    let (cw, _) = format.chroma_size();
    let mut frame = Frame { format, planes: [Vec::new(), Vec::new(), Vec::new()], params: Vec::new() };
    for band in row_bands(w, h, max_bytes)? {
        let sub_format = FrameFormat { height: (band.hi - band.lo) as u32, ..format };
        let t = Tensor::from_f32(gpu, &hwc[band.lo * w * 3..band.hi * w * 3], &[band.hi - band.lo, w, 3], DType::F32)?;
        let mut rec = gpu.recorder();
        let planes = rgb_to_yuv(&mut rec, &t, &sub_format, params)?;
        rec.submit();
        let sub = download_frame(gpu, &planes, sub_format)?;
        if (band.lo, band.hi) == (0, h) {
            // The whole frame in one band (every frame that fits the binding): as downloaded.
            return Ok(sub);
        }
        frame.planes[0].extend_from_slice(&sub.planes[0][(band.r0 - band.lo) * w..(band.r1 - band.lo) * w]);
        let (c0, c1) = band.chroma_rows(format);
        let cw = cw as usize;
        for i in 1..3 {
            frame.planes[i].extend_from_slice(&sub.planes[i][c0 * cw..c1 * cw]);
        }
    }
    Ok(frame)
}

/// Rows `r0..r1` of a frame, converted as rows `lo..hi` (the band and up to two rows of context
/// on either side). `r0` and `lo` are even, so a halved chroma row of the band is a whole
/// chroma row of the context's, on the same grid.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Band {
    r0: usize,
    r1: usize,
    lo: usize,
    hi: usize,
}

impl Band {
    /// The band's chroma rows within its context's chroma plane ([0, 0) for mono).
    fn chroma_rows(self, format: FrameFormat) -> (usize, usize) {
        match format.chroma {
            Chroma::Mono => (0, 0),
            Chroma::C420 => ((self.r0 - self.lo) / 2, self.r1.div_ceil(2) - self.lo / 2),
            Chroma::C422 | Chroma::C411 | Chroma::C444 => (self.r0 - self.lo, self.r1 - self.lo),
        }
    }

    /// The context rows `lo..hi` of `frame` as a frame of their own (the frame itself where
    /// they are all of it).
    fn sub_frame(self, frame: &Frame) -> std::borrow::Cow<'_, Frame> {
        let f = frame.format;
        if (self.lo, self.hi) == (0, f.height as usize) {
            return std::borrow::Cow::Borrowed(frame);
        }
        let w = f.width as usize;
        let format = FrameFormat { height: (self.hi - self.lo) as u32, ..f };
        let (cw, _) = f.chroma_size();
        let (c0, c1) = match f.chroma {
            Chroma::Mono => (0, 0),
            Chroma::C420 => (self.lo / 2, self.hi.div_ceil(2)),
            Chroma::C422 | Chroma::C411 | Chroma::C444 => (self.lo, self.hi),
        };
        let cw = cw as usize;
        let planes = [frame.planes[0][self.lo * w..self.hi * w].to_vec(), frame.planes[1][c0 * cw..c1 * cw].to_vec(), frame.planes[2][c0 * cw..c1 * cw].to_vec()];
        std::borrow::Cow::Owned(Frame { format, planes, params: Vec::new() })
    }
}

/// The conversion's largest tensor per pixel: RGB in f32.
const RGB_BYTES: usize = 3 * 4;

/// Row bands of a `w`×`h` frame whose largest tensor, the RGB of a band and its context, fits
/// `max_bytes`: the whole frame where it fits, else bands of an even number of rows.
fn row_bands(w: usize, h: usize, max_bytes: u64) -> Result<Vec<Band>> {
    let row = (w * RGB_BYTES) as u64;
    if row * h as u64 <= max_bytes {
        return Ok(vec![Band { r0: 0, r1: h, lo: 0, hi: h }]);
    }
    // Context of two rows above and below each band.
    let rows = (max_bytes / row).saturating_sub(4) as usize & !1;
    if rows == 0 {
        bail!(
            "a frame {w} pixels wide is too wide for this GPU's colour conversion: it converts at least 6 rows at once, \
             {} bytes of RGB, and the GPU binds at most {max_bytes} bytes; use a narrower video (or a GPU with a larger \
             storage binding)",
            row * 6
        );
    }
    Ok((0..h)
        .step_by(rows)
        .map(|r0| {
            let r1 = (r0 + rows).min(h);
            Band { r0, r1, lo: r0.saturating_sub(2), hi: (r1 + 2).min(h) }
        })
        .collect())
}

/// Uploads a frame's planes (Y `[H, W]`, U and V `[ch, cw]`, u32 samples).
pub fn upload_frame(gpu: &Gpu, frame: &Frame) -> Result<YuvPlanes> {
    let f = frame.format;
    let up = |i: usize, w: u32, h: u32| -> Result<Tensor> {
        let d: Vec<u32> = frame.planes[i].iter().map(|&s| s as u32).collect();
        Tensor::from_u32(gpu, &d, &[h as usize, w as usize])
    };
    let y = up(0, f.width, f.height)?;
    if f.chroma == Chroma::Mono {
        return Ok(YuvPlanes { y, uv: None });
    }
    let (cw, ch) = f.chroma_size();
    Ok(YuvPlanes { y, uv: Some((up(1, cw, ch)?, up(2, cw, ch)?)) })
}

/// Downloads planes into a frame of `format` (waits for the GPU).
pub fn download_frame(gpu: &Gpu, planes: &YuvPlanes, format: FrameFormat) -> Result<Frame> {
    let get = |t: &Tensor| -> Result<Vec<u16>> { Ok(t.to_u32(gpu)?.into_iter().map(|v| v as u16).collect()) };
    let (u, v) = match &planes.uv {
        Some((u, v)) => (get(u)?, get(v)?),
        None => (Vec::new(), Vec::new()),
    };
    Ok(Frame { format, planes: [get(&planes.y)?, u, v], params: Vec::new() })
}

/// Benchmarks: one 720p 4:2:0 8-bit frame each way (quick: 16×8).
pub fn bench_cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    use crate::video::color::Matrix;
    use crate::video::y4m::Range;
    let (w, h) = if quick { (16u32, 8u32) } else { (1280, 720) };
    let format = FrameFormat { width: w, height: h, chroma: Chroma::C420, siting: Siting::Center, depth: 8 };
    let params = YuvParams { matrix: Matrix::auto(w, h), range: Range::Limited, depth: 8 };
    let mut rng = crate::rng::Rng::new(7);
    let mut frame = Frame::filled(format, [0, 0, 0]);
    for p in frame.planes.iter_mut() {
        p.iter_mut().for_each(|s| *s = rng.below(256) as u16);
    }
    let planes = upload_frame(gpu, &frame)?;
    let rgb = random_tensor(gpu, &[h as usize, w as usize, 3], dtype, 8)?;
    let n = (w * h) as f64;
    let yuv_bytes = 4.0 * 1.5 * n;
    let rgb_bytes = 3.0 * n * dtype.size() as f64;
    let shape = format!("{w}x{h} 4:2:0 8-bit");
    Ok(vec![
        BenchCase {
            name: "yuv_to_rgb".into(),
            shape: shape.clone(),
            flops: 0.0,
            bytes: yuv_bytes + rgb_bytes,
            run: Box::new(move |r| {
                let (u, v) = planes.uv.as_ref().unwrap();
                yuv_to_rgb(r, &planes.y, Some((u, v)), &format, &params, dtype).map(drop)
            }),
        },
        BenchCase {
            name: "rgb_to_yuv".into(),
            shape,
            flops: 0.0,
            bytes: yuv_bytes + rgb_bytes,
            run: Box::new(move |r| rgb_to_yuv(r, &rgb, &format, &params).map(drop)),
        },
    ])
}

/// CPU twins: `video::color` with the pipeline's mapping to and from [−1, 1] (as
/// `pipeline/job.rs` computes it), in the kernels' channels-last layout.
pub mod cpu {
    use super::*;
    use crate::video::color::{frame_to_rgb, rgb_to_frame};

    /// A frame → `[H, W, 3]` in [−1, 1]: `(clamp(v, 0, 1) − 0.5)·2` of `frame_to_rgb`.
    pub fn yuv_to_rgb(frame: &Frame, params: &YuvParams) -> Vec<f32> {
        let planar = frame_to_rgb(frame, params);
        let n = planar.len() / 3;
        (0..n).flat_map(|i| (0..3).map(move |c| (i, c))).map(|(i, c)| (planar[c * n + i].clamp(0.0, 1.0) - 0.5) * 2.0).collect()
    }

    /// `[H, W, 3]` in [−1, 1] → a frame: `clamp(x, −1, 1)·0.5 + 0.5`, then `rgb_to_frame`.
    pub fn rgb_to_yuv(rgb: &[f32], format: FrameFormat, params: &YuvParams) -> Frame {
        let n = rgb.len() / 3;
        let mut planar = vec![0f32; 3 * n];
        for i in 0..n {
            for c in 0..3 {
                planar[c * n + i] = rgb[3 * i + c].clamp(-1.0, 1.0) * 0.5 + 0.5;
            }
        }
        rgb_to_frame(&planar, format, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::video::color::Matrix;
    use crate::video::color::frame_to_rgb;
    use crate::video::y4m::Range;

    const FORMATS: [(Chroma, Siting); 7] = [
        (Chroma::C420, Siting::Center),
        (Chroma::C420, Siting::Left),
        (Chroma::C420, Siting::TopLeft),
        (Chroma::C422, Siting::Left),
        (Chroma::C411, Siting::Left),
        (Chroma::C444, Siting::Center),
        (Chroma::Mono, Siting::Center),
    ];
    const SIZES: [(u32, u32); 4] = [(1, 1), (7, 5), (33, 17), (2, 3)];

    fn all_params(depths: &[u8]) -> Vec<YuvParams> {
        let mut v = Vec::new();
        for &depth in depths {
            for matrix in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
                for range in [Range::Limited, Range::Full] {
                    v.push(YuvParams { matrix, range, depth });
                }
            }
        }
        v
    }

    /// A frame of uniformly random codes over the whole 0..2^depth range (colours outside the
    /// RGB cube included, so both sides' clamp on the way in is compared too).
    fn random_frame(rng: &mut Rng, format: FrameFormat) -> Frame {
        let mut f = Frame::filled(format, [0, 0, 0]);
        for p in f.planes.iter_mut() {
            p.iter_mut().for_each(|s| *s = rng.below(1 << format.depth) as u16);
        }
        f
    }

    /// Compared by relative L2 over the four sizes of one (dtype, params, format) together: a
    /// 1×1 frame has three outputs, and one near 0 (RGB near ½) makes the relative error of
    /// that frame alone meaningless (the CPU twin itself rounds RGB to f32 before `(clamp(v) − 0.5)·2`,
    /// so its absolute error is ~6e-8 there too). A wrong 1×1 sample of size ~1 still moves the
    /// joint error by ~1e-1, far above the tolerance.
    #[test]
    fn yuv_to_rgb_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let mut worst = [0f64; 2];
        for dt in gpu.dtypes() {
            for p in all_params(&[8, 10, 12]) {
                for (chroma, siting) in FORMATS {
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    for (w, h) in SIZES {
                        let format = FrameFormat { width: w, height: h, chroma, siting, depth: p.depth };
                        let frame = random_frame(&mut rng, format);
                        let planes = upload_frame(&gpu, &frame).unwrap();
                        let mut rec = gpu.recorder();
                        let uv = planes.uv.as_ref().map(|(u, v)| (u, v));
                        let out = yuv_to_rgb(&mut rec, &planes.y, uv, &format, &p, dt).unwrap();
                        rec.submit();
                        assert_eq!(out.shape(), &[h as usize, w as usize, 3]);
                        got.extend(out.to_f32(&gpu).unwrap());
                        want.extend(cpu::yuv_to_rgb(&frame, &p));
                    }
                    let what = format!("{chroma:?} {siting:?} sizes {SIZES:?} {p:?} {dt:?} seed {seed}");
                    assert_close(&what, &got, &want, dt.tolerance(1e-6));
                    let k = (dt == DType::F16) as usize;
                    worst[k] = worst[k].max(rel_l2(&got, &want));
                }
            }
        }
        eprintln!("yuv_to_rgb worst relative L2: f32 {:.2e}, f16 {:.2e}", worst[0], worst[1]);
    }

    /// The GPU converts in f32, the CPU twin in f64 (then rounds the code to f32): the two code
    /// values differ by a few f32 ulps, so one that falls within that distance of a rounding
    /// boundary (x.5) can round to the neighbouring code. Hence: every code within 1 of the CPU
    /// twin's, and such ±1 codes rare (≤ 0.5% of samples; they are ~1e-4 in practice).
    #[test]
    fn rgb_to_yuv_matches_cpu_within_one_code() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (mut total, mut off_by_one) = (0usize, 0usize);
        for dt in gpu.dtypes() {
            for p in all_params(&[8, 10, 12]) {
                for (chroma, siting) in FORMATS {
                    for (w, h) in SIZES {
                        let format = FrameFormat { width: w, height: h, chroma, siting, depth: p.depth };
                        let n = (w * h) as usize;
                        // Uniform in [−1.1, 1.1): the clamp to [−1, 1] is exercised too.
                        let v: Vec<f32> = (0..3 * n).map(|_| rng.uniform() * 2.2 - 1.1).collect();
                        let (rgb, host) = upload(&gpu, &v, &[h as usize, w as usize, 3], dt);
                        let mut rec = gpu.recorder();
                        let planes = rgb_to_yuv(&mut rec, &rgb, &format, &p).unwrap();
                        rec.submit();
                        let got = download_frame(&gpu, &planes, format).unwrap();
                        let want = cpu::rgb_to_yuv(&host, format, &p);
                        for pl in 0..3 {
                            let what = format!("{format:?} {p:?} {dt:?} plane {pl} seed {seed}");
                            assert_eq!(got.planes[pl].len(), want.planes[pl].len(), "{what}");
                            for (i, (a, b)) in got.planes[pl].iter().zip(&want.planes[pl]).enumerate() {
                                let d = (*a as i32 - *b as i32).abs();
                                assert!(d <= 1, "{what}: sample {i}: GPU {a}, CPU {b}");
                                off_by_one += (d == 1) as usize;
                                total += 1;
                            }
                        }
                    }
                }
            }
        }
        eprintln!("rgb_to_yuv: {off_by_one} of {total} codes differ by 1 from the CPU twin, the rest are equal");
        assert!(off_by_one * 200 <= total, "seed {seed}: {off_by_one} of {total} codes off by one");
    }

    /// Colours outside the RGB cube reach the model clamped, as the released pipeline's 8-bit RGB
    /// frames hold them: limited-range super-white (Y 255), a saturated red past the cube (Y 235,
    /// V 240: R′ 1.70) and super-black (Y 0) give exactly 1 and −1 where they leave the cube.
    #[test]
    fn model_input_is_clamped_to_the_rgb_cube() {
        let gpu = test_gpu();
        let p = YuvParams { matrix: Matrix::Bt601, range: Range::Limited, depth: 8 };
        let format = FrameFormat { width: 3, height: 1, chroma: Chroma::C444, siting: Siting::Center, depth: 8 };
        let mut frame = Frame::filled(format, [0, 128, 128]);
        for (i, yuv) in [[255u16, 128, 128], [235, 128, 240], [0, 128, 128]].into_iter().enumerate() {
            (0..3).for_each(|c| frame.planes[c][i] = yuv[c]);
        }
        let unclamped = frame_to_rgb(&frame, &p);
        assert!(unclamped[0] > 1.05 && unclamped[1] > 1.5 && unclamped[2] < -0.05, "{unclamped:?}");
        for dt in gpu.dtypes() {
            let planes = upload_frame(&gpu, &frame).unwrap();
            let mut rec = gpu.recorder();
            let out = yuv_to_rgb(&mut rec, &planes.y, planes.uv.as_ref().map(|(u, v)| (u, v)), &format, &p, dt).unwrap();
            rec.submit();
            let got = out.to_f32(&gpu).unwrap();
            assert_eq!([got[0], got[1], got[2]], [1.0; 3], "{dt:?} super-white: {got:?}");
            assert_eq!(got[3], 1.0, "{dt:?} R of a red past the cube: {got:?}");
            assert_eq!([got[6], got[7], got[8]], [-1.0; 3], "{dt:?} super-black: {got:?}");
            assert_close(&format!("{dt:?}"), &got, &cpu::yuv_to_rgb(&frame, &p), dt.tolerance(1e-6));
        }
    }

    /// Frames large enough that every chroma row and column has interior taps, at 16 bits too.
    #[test]
    fn larger_frames_and_16_bit_match_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for p in all_params(&[16]) {
            for (chroma, siting) in FORMATS {
                let format = FrameFormat { width: 97, height: 61, chroma, siting, depth: 16 };
                let frame = random_frame(&mut rng, format);
                let planes = upload_frame(&gpu, &frame).unwrap();
                let mut rec = gpu.recorder();
                let uv = planes.uv.as_ref().map(|(u, v)| (u, v));
                let out = yuv_to_rgb(&mut rec, &planes.y, uv, &format, &p, DType::F32).unwrap();
                let back = rgb_to_yuv(&mut rec, &out, &format, &p).unwrap();
                rec.submit();
                let rgb = out.to_f32(&gpu).unwrap();
                assert_close(&format!("{format:?} {p:?} seed {seed}"), &rgb, &cpu::yuv_to_rgb(&frame, &p), 1e-6);
                // Encode the GPU's own RGB on both sides, so only the encoders are compared.
                let got = download_frame(&gpu, &back, format).unwrap();
                let want = cpu::rgb_to_yuv(&rgb, format, &p);
                for pl in 0..3 {
                    for (a, b) in got.planes[pl].iter().zip(&want.planes[pl]) {
                        assert!((*a as i32 - *b as i32).abs() <= 1, "{format:?} {p:?} plane {pl} seed {seed}: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// A frame too large for one binding converts in bands of rows, each with its context:
    /// both directions give the whole frame's conversion byte for byte, for every chroma layout
    /// and siting, odd heights and bands down to two rows. The bands tile the frame; a row too
    /// wide for any band is refused, naming the frame's width.
    #[test]
    fn bands_of_rows_join_to_the_whole_frame() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let p = YuvParams { matrix: Matrix::Bt709, range: Range::Limited, depth: 10 };
        for (chroma, siting) in FORMATS {
            for (w, h) in [(7u32, 13u32), (6, 2), (5, 9), (3, 1)] {
                let format = FrameFormat { width: w, height: h, chroma, siting, depth: 10 };
                let frame = random_frame(&mut rng, format);
                let whole_rgb = frame_to_rgb_f32(&gpu, &frame, &p, u64::MAX).unwrap();
                let rgb: Vec<f32> = (0..w * h * 3).map(|_| rng.uniform() * 2.4 - 1.2).collect();
                let whole = rgb_f32_to_frame(&gpu, &rgb, format, &p, u64::MAX).unwrap();
                for rows in [2usize, 4] {
                    let max = ((rows + 4) * w as usize * RGB_BYTES) as u64;
                    let bands = row_bands(w as usize, h as usize, max).unwrap();
                    let what = format!("{format:?} in bands of {rows} rows ({} bands, seed {seed})", bands.len());
                    assert_eq!(bands.first().unwrap().r0, 0, "{what}");
                    assert_eq!(bands.last().unwrap().r1, h as usize, "{what}");
                    assert!(bands.windows(2).all(|b| b[0].r1 == b[1].r0), "{what}");
                    assert!(bands.iter().all(|b| b.lo % 2 == 0 && ((b.hi - b.lo) * w as usize * RGB_BYTES) as u64 <= max), "{what}");
                    let got = frame_to_rgb_f32(&gpu, &frame, &p, max).unwrap();
                    assert!(got.iter().zip(&whole_rgb).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: RGB differs");
                    let back = rgb_f32_to_frame(&gpu, &rgb, format, &p, max).unwrap();
                    assert_eq!(back.planes, whole.planes, "{what}: YUV differs");
                }
            }
        }
        let e = row_bands(4096, 8, 5 * 4096 * RGB_BYTES as u64).unwrap_err().to_string();
        assert!(e.contains("4096 pixels wide") && e.contains("narrower"), "{e}");
    }

    #[test]
    fn mismatches_are_errors_naming_both() {
        let gpu = test_gpu();
        let p = YuvParams { matrix: Matrix::Bt709, range: Range::Limited, depth: 8 };
        let f420 = FrameFormat { width: 7, height: 5, chroma: Chroma::C420, siting: Siting::Center, depth: 8 };
        let frame = Frame::filled(f420, [16, 128, 128]);
        let planes = upload_frame(&gpu, &frame).unwrap();
        let (u, v) = planes.uv.as_ref().unwrap();
        let mut rec = gpu.recorder();
        // 4:2:0 at 7×5 has 4×3 chroma; planes of a 4:4:4 layout are refused.
        let f444 = FrameFormat { chroma: Chroma::C444, ..f420 };
        let e = yuv_to_rgb(&mut rec, &planes.y, Some((u, v)), &f444, &p, DType::F32).unwrap_err().to_string();
        assert!(e.contains("[3, 4]") && e.contains("[5, 7]") && e.contains("C444"), "{e}");
        let e = yuv_to_rgb(&mut rec, &planes.y, None, &f420, &p, DType::F32).unwrap_err().to_string();
        assert!(e.contains("needs U and V"), "{e}");
        let mono = FrameFormat { chroma: Chroma::Mono, ..f420 };
        assert!(yuv_to_rgb(&mut rec, &planes.y, Some((u, v)), &mono, &p, DType::F32).is_err());
        let p10 = YuvParams { depth: 10, ..p };
        let e = yuv_to_rgb(&mut rec, &planes.y, Some((u, v)), &f420, &p10, DType::F32).unwrap_err().to_string();
        assert!(e.contains("8-bit") && e.contains("10-bit"), "{e}");
        let rgb = Tensor::from_f32(&gpu, &[0.0; 3 * 35], &[7, 5, 3], DType::F32).unwrap();
        let e = rgb_to_yuv(&mut rec, &rgb, &f420, &p).err().unwrap().to_string();
        assert!(e.contains("[7, 5, 3]") && e.contains("[5, 7, 3]"), "{e}");
        rec.submit();
    }

    #[test]
    fn quick_bench_cases_run() {
        run_quick_bench_cases(bench_cases);
    }
}
