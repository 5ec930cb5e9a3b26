//! `--gif PREVIEW.gif`: a small animated GIF of the output, written frame by frame as the
//! output frames are (bounded memory: one frame at a time), and closed with its trailer at the
//! end or on a stop.
//!
//! Each frame is converted back to RGB with the output's matrix, range and depth (the preview
//! shows exactly what was written), shrunk by area averaging so that its long side is at most
//! [`MAX_SIDE`] pixels (never enlarged; anamorphic pixels, y4m's `A`, at their aspect), and quantised to its own 256-colour palette (the `gif`
//! crate's NeuQuant). The frame delay comes from the stream's frame rate, in GIF's hundredths
//! of a second; above 50 fps some frames are skipped, so that the preview keeps the stream's
//! pace.

use std::io::Write;

use anyhow::{Context, Result};

use crate::video::color::{frame_to_rgb, YuvParams};
use crate::video::y4m::{Frame, Header};

/// Longest side of the preview, in pixels.
pub const MAX_SIDE: usize = 320;
/// NeuQuant sampling factor (1 = best and slowest, 30 = fastest); 10 is its usual default.
const QUANT_SPEED: i32 = 10;

/// The preview's size for a `w`×`h` frame whose pixels have the aspect `(n, d)` (width to
/// height, y4m's `A`): the picture's shape as a player shows it (an anamorphic DVD frame of
/// 720×480 at 32:27 as 16:9), the long side at most [`MAX_SIDE`], and never more pixels across
/// or down than the frame has (area averaging only shrinks).
pub fn preview_size(w: usize, h: usize, (n, d): (u64, u64)) -> (usize, usize) {
    let shown_w = w as f64 * n as f64 / d as f64;
    let scale = (MAX_SIDE as f64 / shown_w.max(h as f64)).min(w as f64 / shown_w).min(1.0);
    let fit = |v: f64, most: usize| ((v * scale).round() as usize).clamp(1, most);
    (fit(shown_w, w), fit(h as f64, h))
}

/// A y4m ratio `N:D` as (N, D); `default` where it is absent, unreadable or has a zero (`0:0`
/// is y4m's "unknown").
fn ratio(r: Option<&str>, default: (u64, u64)) -> (u64, u64) {
    r.and_then(|r| r.split_once(':'))
        .and_then(|(n, d)| Some((n.parse::<u64>().ok()?, d.parse::<u64>().ok()?)))
        .filter(|&(n, d)| n > 0 && d > 0 && n < 1 << 32 && d < 1 << 32)
        .unwrap_or(default)
}

/// A y4m frame rate `N:D` as (N, D) (25 fps when absent or unreadable).
pub fn frame_rate(frame_rate: Option<&str>) -> (u64, u64) {
    ratio(frame_rate, (25, 1))
}

/// A y4m pixel aspect `N:D` as (N, D) (square pixels when absent, unknown or unreadable).
pub fn pixel_aspect(aspect: Option<&str>) -> (u64, u64) {
    ratio(aspect, (1, 1))
}

/// For frame `k` of a stream at `rate` (N, D), when shown in the preview: its GIF delay in
/// hundredths of a second, and the next frame shown. Frame k starts at its time rounded to a
/// hundredth and is shown until the first later frame that starts at least 2 hundredths after
/// it (viewers show shorter delays as 1/10 s): below 50 fps that is the next frame, and the
/// delays alternate (3, 4, 3, … at 29.97 fps); above, the frames between are skipped (one in
/// three at 60 fps). Either way the delays sum to the stream's length, so the preview keeps its
/// pace (the last frame shown may last up to a hundredth longer where the frames after it were
/// to be skipped). Frame 0 is shown, and each frame shown names the next: [`GifPreview::push`]
/// skips the ones between.
pub fn frame_delay((n, d): (u64, u64), k: u64) -> (u16, u64) {
    let (n, d, k) = (n as u128, d as u128, k as u128);
    let start = |k: u128| (200 * d * k + n) / (2 * n); // round(100·d·k / n)
    // The least j with start(j) ≥ start(k) + 2: 200·d·j + n ≥ 2·n·(start(k) + 2), always
    // past k (2·n·start(k) > 200·d·k − n).
    let t = start(k) + 2;
    let next = (2 * n * t - n).div_ceil(200 * d);
    ((start(next) - start(k)).min(u16::MAX as u128) as u16, next.min(u64::MAX as u128) as u64)
}

/// Planar RGB `[3][h][w]` in [0, 1] → interleaved 8-bit RGB of `ow`×`oh`, each output pixel the
/// mean of the source pixels in its rectangle (the rectangles tile the frame).
pub fn shrink_rgb(rgb: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    assert_eq!(rgb.len(), 3 * w * h, "RGB size");
    assert!(ow >= 1 && oh >= 1 && ow <= w && oh <= h, "shrink {w}x{h} to {ow}x{oh}");
    let span = |i: usize, n: usize, on: usize| (i * n / on, ((i + 1) * n / on).max(i * n / on + 1));
    let mut out = Vec::with_capacity(3 * ow * oh);
    for oy in 0..oh {
        let (y0, y1) = span(oy, h, oh);
        for ox in 0..ow {
            let (x0, x1) = span(ox, w, ow);
            let count = ((y1 - y0) * (x1 - x0)) as f32;
            for c in 0..3 {
                let plane = &rgb[c * w * h..(c + 1) * w * h];
                let sum: f32 = (y0..y1).map(|y| plane[y * w + x0..y * w + x1].iter().sum::<f32>()).sum();
                out.push((sum / count * 255.0).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// An animated GIF being written, one frame per [`GifPreview::push`].
pub struct GifPreview<W: Write> {
    encoder: Option<gif::Encoder<W>>,
    params: YuvParams,
    size: (usize, usize),
    rate: (u64, u64),
    /// Output frames pushed, and the next of them the preview shows ([`frame_delay`]).
    frames: usize,
    next_shown: u64,
    /// The last frame shown, held back until the next is pushed or the preview finishes: the
    /// output's write of that frame may still fail, and the preview is to hold the frames the
    /// output does ([`GifPreview::finish`]).
    pending: Option<(usize, gif::Frame<'static>)>,
}

impl<W: Write> GifPreview<W> {
    pub fn new(inner: W, header: &Header, params: YuvParams) -> Result<Self> {
        let (w, h) = preview_size(header.width as usize, header.height as usize, pixel_aspect(header.pixel_aspect.as_deref()));
        // GIF sizes are 16-bit; the preview is at most MAX_SIDE on its long side.
        let mut encoder = gif::Encoder::new(inner, w as u16, h as u16, &[]).context("writing the GIF header")?;
        encoder.set_repeat(gif::Repeat::Infinite).context("writing the GIF header")?;
        Ok(GifPreview { encoder: Some(encoder), params, size: (w, h), rate: frame_rate(header.frame_rate.as_deref()), frames: 0, next_shown: 0, pending: None })
    }

    /// The preview's width and height.
    pub fn size(&self) -> (usize, usize) {
        self.size
    }

    /// Output frames pushed so far (some skipped above 50 fps).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Adds one output frame: shown, or skipped where the stream runs faster than a GIF can
    /// show ([`frame_delay`]).
    pub fn push(&mut self, frame: &Frame) -> Result<()> {
        if self.encoder.is_none() {
            anyhow::bail!("internal: frame added to a finished GIF");
        }
        let k = self.frames as u64;
        if k < self.next_shown {
            self.frames += 1;
            return Ok(());
        }
        let (delay, next) = frame_delay(self.rate, k);
        let (fw, fh) = (frame.format.width as usize, frame.format.height as usize);
        let rgb = frame_to_rgb(frame, &self.params);
        let (w, h) = self.size;
        let pixels = shrink_rgb(&rgb, fw, fh, w, h);
        let mut g = gif::Frame::from_rgb_speed(w as u16, h as u16, &pixels, QUANT_SPEED);
        g.delay = delay;
        self.write_pending()?;
        self.pending = Some((self.frames, g));
        self.frames += 1;
        self.next_shown = next;
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        if let (Some((k, g)), Some(enc)) = (self.pending.take(), self.encoder.as_mut()) {
            enc.write_frame(&g).with_context(|| format!("writing GIF frame {k}"))?;
        }
        Ok(())
    }

    /// Writes the frames among the first `written` pushed (those the output holds: a frame
    /// handed over whose write then failed is not shown), the trailer, and flushes; returns the
    /// writer.
    pub fn finish(mut self, written: usize) -> Result<W> {
        if self.pending.as_ref().is_some_and(|&(k, _)| k >= written) {
            self.pending = None;
        }
        self.write_pending()?;
        let enc = self.encoder.take().context("internal: GIF finished twice")?;
        let mut w = enc.into_inner().context("writing the GIF trailer")?;
        w.flush().context("writing the GIF")?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::color::{rgb_to_frame, Matrix};
    use crate::video::y4m::Range;

    #[test]
    fn sizes_keep_the_aspect_and_never_grow() {
        let square = (1, 1);
        assert_eq!(preview_size(28, 20, square), (28, 20));
        assert_eq!(preview_size(320, 100, square), (320, 100));
        assert_eq!(preview_size(3840, 2160, square), (320, 180));
        assert_eq!(preview_size(720, 1280, square), (180, 320));
        assert_eq!(preview_size(4000, 4, square), (320, 1));
        // Anamorphic pixels are shown at their aspect: NTSC DVD frames as 16:9 and 4:3 (×4 too),
        // and a small frame of wide pixels narrowed in height, not widened past its own width.
        assert_eq!(preview_size(720, 480, (32, 27)), (320, 180));
        assert_eq!(preview_size(2880, 1920, (32, 27)), (320, 180));
        assert_eq!(preview_size(720, 480, (8, 9)), (320, 240));
        assert_eq!(preview_size(28, 20, (2, 1)), (28, 10));
        assert_eq!(preview_size(28, 20, (1, 2)), (14, 20));
        assert_eq!((pixel_aspect(Some("32:27")), pixel_aspect(Some("0:0")), pixel_aspect(None)), ((32, 27), (1, 1), (1, 1)));
    }

    #[test]
    fn delays_follow_the_frame_rate() {
        // The frames shown over the first `k` of a stream, as the preview follows them.
        let shown = |r: Option<&str>, k: u64| {
            let (rate, mut next, mut out) = (frame_rate(r), 0, vec![]);
            for i in 0..k {
                if i == next {
                    let (d, j) = frame_delay(rate, i);
                    out.push((i, d));
                    next = j;
                }
            }
            out
        };
        let delays = |r: Option<&str>, k: u64| shown(r, k).iter().map(|&(_, d)| d).collect::<Vec<_>>();
        assert_eq!(delays(Some("25:1"), 3), [4, 4, 4]);
        assert_eq!(delays(Some("30000:1001"), 4), [3, 4, 3, 3]);
        assert_eq!(delays(Some("24:1"), 6), [4, 4, 5, 4, 4, 4]);
        assert_eq!(delays(Some("1:1"), 1), [100]);
        assert_eq!(delays(Some("50:1"), 3), [2, 2, 2]);
        assert_eq!(delays(Some("0:0"), 1), [4]);
        assert_eq!(delays(None, 1), [4]);
        // Above 50 fps frames are skipped, no delay is under 2: at 60 fps two in three shown.
        assert_eq!(shown(Some("60:1"), 7), [(0, 2), (1, 3), (3, 2), (4, 3), (6, 2)]);
        assert_eq!(shown(Some("120:1"), 6), [(0, 2), (2, 2), (5, 2)]);
        // The pace holds over a long clip, frames skipped or not: 3000 frames at 29.97 fps last
        // 100.1 s, 6000 at 59.94 fps too, 12 000 at 120 fps 100 s. The last frame shown is shown
        // until the clip's end.
        for (r, k, cs) in [("30000:1001", 3000, 10010), ("24000:1001", 2400, 10010), ("60000:1001", 6000, 10010), ("120:1", 12000, 10000)] {
            let s = shown(Some(r), k);
            assert_eq!(s.iter().map(|&(_, d)| d as u64).sum::<u64>(), cs, "{r}");
            assert!(s.iter().all(|&(_, d)| d >= 2), "{r}");
            let (last, d) = *s.last().unwrap();
            assert_eq!(frame_delay(frame_rate(Some(r)), last), (d, k), "{r}: the last frame shown reaches the clip's end");
        }
        // A very slow rate: the delay saturates.
        assert_eq!(frame_delay((1, 1000), 0).0, u16::MAX);
    }

    #[test]
    fn shrink_averages_areas() {
        // 4×2 → 2×1: each output pixel the mean of a 2×2 block, per channel.
        let (w, h) = (4, 2);
        let mut rgb = vec![0f32; 3 * w * h];
        for c in 0..3 {
            for i in 0..w * h {
                rgb[c * w * h + i] = if i % w < 2 { 0.2 * c as f32 } else { 1.0 };
            }
        }
        assert_eq!(shrink_rgb(&rgb, w, h, 2, 1), vec![0, 51, 102, 255, 255, 255]);
        // The same size is a plain conversion.
        assert_eq!(shrink_rgb(&[0.0, 0.5, 1.0], 1, 1, 1, 1), vec![0, 128, 255]);
        // 7 → 3 columns: spans 0..2, 2..4, 4..7 cover every column once.
        let ramp: Vec<f32> = (0..3).flat_map(|_| (0..7).map(|x| x as f32 / 6.0)).collect();
        let got = shrink_rgb(&ramp, 7, 1, 3, 1);
        let want = |a: usize, b: usize| ((a..b).map(|x| x as f32 / 6.0).sum::<f32>() / (b - a) as f32 * 255.0).round() as u8;
        assert_eq!([got[0], got[3], got[6]], [want(0, 2), want(2, 4), want(4, 7)]);
    }

    /// A 400×200 4:2:0 stream of 3 frames → a 320×160 GIF of 3 frames that the decoder reads
    /// back, with the delay of 25 fps and colours close to the frames'.
    #[test]
    fn gif_decodes_with_the_frames_size_and_delay() {
        let header = Header::new(400, 200, "420jpeg").unwrap();
        let params = YuvParams { matrix: Matrix::Bt601, range: Range::Limited, depth: 8 };
        let mut p = GifPreview::new(Vec::new(), &header, params).unwrap();
        assert_eq!(p.size(), (320, 160));
        let (w, h) = (400, 200);
        for f in 0..3 {
            // Left half red-ish, right half grey, brightening with f.
            let mut rgb = vec![0f32; 3 * w * h];
            for i in 0..w * h {
                let left = i % w < w / 2;
                rgb[i] = if left { 0.8 } else { 0.3 + 0.1 * f as f32 };
                rgb[w * h + i] = if left { 0.1 } else { 0.3 + 0.1 * f as f32 };
                rgb[2 * w * h + i] = if left { 0.1 } else { 0.3 + 0.1 * f as f32 };
            }
            p.push(&rgb_to_frame(&rgb, header.format(), &params)).unwrap();
        }
        assert_eq!(p.frames(), 3);
        let bytes = p.finish(3).unwrap();
        assert_eq!(bytes.last(), Some(&0x3b), "the GIF ends with its trailer");
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut d = opts.read_info(bytes.as_slice()).unwrap();
        assert_eq!((d.width(), d.height()), (320, 160));
        let mut n = 0;
        while let Some(fr) = d.read_next_frame().unwrap() {
            assert_eq!((fr.width, fr.height, fr.delay), (320, 160, 4));
            let px = |x: usize, y: usize| &fr.buffer[4 * (y * 320 + x)..4 * (y * 320 + x) + 3];
            let grey = ((0.3 + 0.1 * n as f32) * 255.0) as i32;
            for (got, want) in px(40, 80).iter().zip([204, 25, 25]).chain(px(280, 80).iter().zip([grey; 3])) {
                assert!((*got as i32 - want).abs() <= 12, "frame {n}: {:?} / {:?}", px(40, 80), px(280, 80));
            }
            n += 1;
        }
        assert_eq!(n, 3);

        // At 60 fps, 7 frames pushed: 5 shown, as `frame_delay` says, the others skipped.
        let mut header = Header::new(16, 8, "420jpeg").unwrap();
        header.frame_rate = Some("60:1".into());
        let mut p = GifPreview::new(Vec::new(), &header, params).unwrap();
        let (w, h) = (16, 8);
        for f in 0..7 {
            p.push(&rgb_to_frame(&vec![f as f32 / 7.0; 3 * w * h], header.format(), &params)).unwrap();
        }
        assert_eq!(p.frames(), 7);
        let bytes = p.finish(7).unwrap();
        let delays = |bytes: Vec<u8>| {
            let mut d = gif::DecodeOptions::new().read_info(bytes.as_slice()).unwrap();
            let mut delays = vec![];
            while let Some(fr) = d.read_next_frame().unwrap() {
                delays.push(fr.delay);
            }
            delays
        };
        assert_eq!(delays(bytes), [2, 3, 2, 3, 2]);

        // A last frame whose output write failed (6 of 7 written) is left out; one skipped
        // (frame 5, at 60 fps) takes nothing away.
        let mut p = GifPreview::new(Vec::new(), &header, params).unwrap();
        for f in 0..7 {
            p.push(&rgb_to_frame(&vec![f as f32 / 7.0; 3 * w * h], header.format(), &params)).unwrap();
        }
        assert_eq!(delays(p.finish(6).unwrap()), [2, 3, 2, 3]);
        let mut p = GifPreview::new(Vec::new(), &header, params).unwrap();
        for f in 0..6 {
            p.push(&rgb_to_frame(&vec![f as f32 / 7.0; 3 * w * h], header.format(), &params)).unwrap();
        }
        assert_eq!(delays(p.finish(6).unwrap()), [2, 3, 2, 3]);
    }
}
