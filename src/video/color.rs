//! CPU references for colour conversion and chroma resampling (issue 9, deliverable 5; the
//! released pipeline takes 8-bit RGB from its video decoder, spec §4.3 "Frames → (x/255 − 0.5)·2").
//! The GPU kernels (`ops/color.rs` in shared/design/layout.md) are tested against these.
//!
//! * Matrices: BT.601 (Kr 0.299, Kb 0.114), BT.709 (Kr 0.2126, Kb 0.0722) and BT.2020's
//!   non-constant-luminance one (Kr 0.2627, Kb 0.0593; only when asked: y4m carries no matrix);
//!   `--matrix auto` picks BT.709 for frames 1280 or more wide or more than 576 lines, else BT.601
//!   ([`Matrix::auto`]).
//! * Ranges at any bit depth d: limited Y = 16·2^(d−8) + 219·2^(d−8)·Y′,
//!   C = 128·2^(d−8) + 224·2^(d−8)·C′; full Y = (2^d − 1)·Y′, C = 2^(d−1) + (2^d − 1)·C′
//!   (the ffmpeg/JPEG convention), with Y′ ∈ [0, 1], C′ ∈ [−½, ½].
//! * RGB is planar `[3][H][W]` f32 in [0, 1] (not clamped on the way in, so out-of-gamut YUV
//!   round-trips); the model's [−1, 1] is `2·clamp(x, 0, 1) − 1` on top (`ops::color`).
//! * Chroma upsampling to 4:4:4 is bilinear at the variant's siting (edges clamped); downsampling
//!   averages: a 2-tap box where chroma sits between luma samples, a triangle where it is
//!   co-sited ([1 2 1]/4 for 4:2:0 and 4:2:2, [1 2 3 4 3 2 1]/16 for 4:1:1's four luma samples
//!   per chroma sample), so a linear ramp lands exactly on the chroma sample positions both ways.

use super::y4m::{Chroma, Frame, FrameFormat, Range, Siting};

/// A YUV ↔ RGB matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    Bt601,
    Bt709,
    /// BT.2020 (and BT.2100) non-constant luminance.
    Bt2020,
}

impl Matrix {
    /// (Kr, Kb).
    pub fn kr_kb(self) -> (f64, f64) {
        match self {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
        }
    }
    /// `--matrix`'s value for this matrix: "bt601", "bt709", "bt2020".
    pub fn flag(self) -> &'static str {
        match self {
            Matrix::Bt601 => "bt601",
            Matrix::Bt709 => "bt709",
            Matrix::Bt2020 => "bt2020",
        }
    }
    /// "BT.601", "BT.709", "BT.2020".
    pub fn name(self) -> &'static str {
        match self {
            Matrix::Bt601 => "BT.601",
            Matrix::Bt709 => "BT.709",
            Matrix::Bt2020 => "BT.2020",
        }
    }

    /// ffmpeg's `-colorspace` for this matrix (what to tag an encode of the output with).
    pub fn ffmpeg_colorspace(self) -> &'static str {
        match self {
            Matrix::Bt601 => "smpte170m",
            Matrix::Bt709 => "bt709",
            Matrix::Bt2020 => "bt2020nc",
        }
    }

    /// The `--matrix auto` rule: BT.709 for frames 1280 or more wide or more than 576 lines high
    /// (past PAL's SD), else BT.601: mpv's guess for video that names no matrix, which counts
    /// cropped HD (1280×536, a 2.39:1 film in 720p) as HD, where a rule by lines alone would
    /// not. y4m carries no matrix, so players guess from the size; apply it to the input's size
    /// when reading and to the output's when writing.
    pub fn auto(width: u32, height: u32) -> Matrix {
        if width >= 1280 || height > 576 {
            Matrix::Bt709
        } else {
            Matrix::Bt601
        }
    }
}

/// The `--matrix` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixChoice {
    Auto,
    Fixed(Matrix),
}

impl MatrixChoice {
    /// Resolves the flag for a frame of `width`×`height`.
    pub fn resolve(self, width: u32, height: u32) -> Matrix {
        match self {
            MatrixChoice::Auto => Matrix::auto(width, height),
            MatrixChoice::Fixed(m) => m,
        }
    }
}

impl std::str::FromStr for MatrixChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(MatrixChoice::Auto),
            "bt601" | "bt.601" | "601" => Ok(MatrixChoice::Fixed(Matrix::Bt601)),
            "bt709" | "bt.709" | "709" => Ok(MatrixChoice::Fixed(Matrix::Bt709)),
            "bt2020" | "bt.2020" | "2020" | "bt2020nc" => Ok(MatrixChoice::Fixed(Matrix::Bt2020)),
            _ => Err(format!("--matrix {s}: expected auto, bt601, bt709 or bt2020")),
        }
    }
}

/// Everything YUV ↔ RGB needs: matrix, range, bit depth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvParams {
    pub matrix: Matrix,
    pub range: Range,
    pub depth: u8,
}

impl YuvParams {
    /// (Y offset, Y scale, C offset, C scale) in code values.
    pub fn code_scales(&self) -> (f64, f64, f64, f64) {
        let d = self.depth as i32;
        match self.range {
            Range::Limited => {
                let s = 2f64.powi(d - 8);
                (16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s)
            }
            Range::Full => {
                let m = 2f64.powi(d) - 1.0;
                (0.0, m, 2f64.powi(d - 1), m)
            }
        }
    }

    /// Code values (Y, U, V) → RGB in [0, 1] (not clamped).
    pub fn yuv_to_rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (yo, ys, co, cs) = self.code_scales();
        let (kr, kb) = self.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let yp = (y as f64 - yo) / ys;
        let cb = (u as f64 - co) / cs;
        let cr = (v as f64 - co) / cs;
        let r = yp + 2.0 * (1.0 - kr) * cr;
        let b = yp + 2.0 * (1.0 - kb) * cb;
        let g = (yp - kr * r - kb * b) / kg;
        [r as f32, g as f32, b as f32]
    }

    /// RGB → code values (Y, U, V), unrounded and unclamped (see [`YuvParams::quantize`]).
    pub fn rgb_to_yuv(&self, rgb: [f32; 3]) -> [f32; 3] {
        let (yo, ys, co, cs) = self.code_scales();
        let (kr, kb) = self.matrix.kr_kb();
        let [r, g, b] = rgb.map(|c| c as f64);
        let yp = kr * r + (1.0 - kr - kb) * g + kb * b;
        let cb = (b - yp) / (2.0 * (1.0 - kb));
        let cr = (r - yp) / (2.0 * (1.0 - kr));
        [(yo + ys * yp) as f32, (co + cs * cb) as f32, (co + cs * cr) as f32]
    }

    /// Rounds a code value to the nearest integer and clamps it to 0..2^depth − 1.
    pub fn quantize(&self, code: f32) -> u16 {
        let max = ((1u32 << self.depth) - 1) as f32;
        code.round().clamp(0.0, max) as u16
    }
}

/// Chroma-plane coordinate of luma sample `i` along an axis where `f` luma samples share a
/// chroma sample (2 or 4): `co_sited` puts chroma sample k at luma f·k, otherwise at the centre
/// of its f luma samples, f·k + (f − 1)/2 (for f = 2: i/2 − ¼).
fn chroma_coord(i: usize, co_sited: bool, f: usize) -> f64 {
    if co_sited {
        i as f64 / f as f64
    } else {
        (i as f64 + 0.5) / f as f64 - 0.5
    }
}

/// (horizontally co-sited, vertically co-sited, luma samples per chroma sample along x, along
/// y: 1, 2 or 4).
pub(crate) fn layout(chroma: Chroma, siting: Siting) -> (bool, bool, usize, usize) {
    let (sx, sy) = chroma.subsampling();
    let (co_x, co_y) = match chroma {
        Chroma::C420 => (siting != Siting::Center, siting == Siting::TopLeft),
        Chroma::C422 | Chroma::C411 => (true, false),
        Chroma::C444 | Chroma::Mono => (false, false),
    };
    (co_x, co_y, sx as usize, sy as usize)
}

/// Upsamples one chroma plane (`cw`×`ch`, row-major) to the luma size `w`×`h` for `chroma` at
/// `siting`, bilinearly, clamping at the edges. 4:4:4 is returned as is.
pub fn upsample_chroma(plane: &[f32], cw: usize, ch: usize, w: usize, h: usize, chroma: Chroma, siting: Siting) -> Vec<f32> {
    assert_eq!(plane.len(), cw * ch, "chroma plane size");
    let (hx, hy, sx, sy) = layout(chroma, siting);
    let taps = |n_out: usize, n_in: usize, f: usize, co: bool| -> Vec<(usize, usize, f32)> {
        (0..n_out)
            .map(|i| {
                let c = if f > 1 { chroma_coord(i, co, f) } else { i as f64 };
                let c = c.clamp(0.0, (n_in - 1) as f64);
                let i0 = c.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (c - i0 as f64) as f32)
            })
            .collect()
    };
    let tx = taps(w, cw, sx, hx);
    let ty = taps(h, ch, sy, hy);
    let mut out = vec![0f32; w * h];
    for (y, &(y0, y1, fy)) in ty.iter().enumerate() {
        for (x, &(x0, x1, fx)) in tx.iter().enumerate() {
            let p = |yy: usize, xx: usize| plane[yy * cw + xx];
            let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
            let bot = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
            out[y * w + x] = top + (bot - top) * fy;
        }
    }
    out
}

/// Averages a full-size (`w`×`h`) chroma plane down to `chroma`'s plane size at `siting`.
pub fn downsample_chroma(plane: &[f32], w: usize, h: usize, chroma: Chroma, siting: Siting) -> Vec<f32> {
    assert_eq!(plane.len(), w * h, "plane size");
    let (hx, hy, sx, sy) = layout(chroma, siting);
    // Weights over luma indices for output sample k along one axis of length n, where f luma
    // samples share a chroma sample: co-sited, a triangle over the 2f − 1 samples around f·k
    // ([1 2 1]/4 for f = 2, [1 2 3 4 3 2 1]/16 for 4); centred, the box of its f samples.
    let taps = |n: usize, k: usize, f: usize, co: bool| -> Vec<(usize, f32)> {
        let at = |i: isize| i.clamp(0, n as isize - 1) as usize;
        let (c, f) = ((f * k) as isize, f as isize);
        if co {
            (1 - f..f).map(|d| (at(c + d), (f - d.abs()) as f32 / (f * f) as f32)).collect()
        } else {
            (0..f).map(|d| (at(c + d), 1.0 / f as f32)).collect()
        }
    };
    let cw = w.div_ceil(sx);
    let ch = h.div_ceil(sy);
    let mut rows = vec![0f32; cw * h];
    for y in 0..h {
        for k in 0..cw {
            rows[y * cw + k] = if sx > 1 {
                taps(w, k, sx, hx).iter().map(|&(i, wt)| wt * plane[y * w + i]).sum()
            } else {
                plane[y * w + k]
            };
        }
    }
    let mut out = vec![0f32; cw * ch];
    for k in 0..ch {
        for x in 0..cw {
            out[k * cw + x] =
                if sy > 1 { taps(h, k, sy, hy).iter().map(|&(i, wt)| wt * rows[i * cw + x]).sum() } else { rows[k * cw + x] };
        }
    }
    out
}

/// A frame → planar RGB `[3][H][W]` in [0, 1] (mono: R = G = B = Y′).
pub fn frame_to_rgb(frame: &Frame, params: &YuvParams) -> Vec<f32> {
    let f = frame.format;
    let (w, h) = (f.width as usize, f.height as usize);
    let n = w * h;
    let mut out = vec![0f32; 3 * n];
    let y: Vec<f32> = frame.planes[0].iter().map(|&s| s as f32).collect();
    if f.chroma == Chroma::Mono {
        let (yo, ys, _, _) = params.code_scales();
        for i in 0..n {
            let v = ((y[i] as f64 - yo) / ys) as f32;
            out[i] = v;
            out[n + i] = v;
            out[2 * n + i] = v;
        }
        return out;
    }
    let (cw, ch) = f.chroma_size();
    let up = |p: usize| {
        let c: Vec<f32> = frame.planes[p].iter().map(|&s| s as f32).collect();
        upsample_chroma(&c, cw as usize, ch as usize, w, h, f.chroma, f.siting)
    };
    let (u, v) = (up(1), up(2));
    for i in 0..n {
        let [r, g, b] = params.yuv_to_rgb(y[i], u[i], v[i]);
        out[i] = r;
        out[n + i] = g;
        out[2 * n + i] = b;
    }
    out
}

/// Planar RGB `[3][H][W]` in [0, 1] → a frame of `format` (chroma averaged down, codes rounded
/// and clamped). Mono keeps the luma.
pub fn rgb_to_frame(rgb: &[f32], format: FrameFormat, params: &YuvParams) -> Frame {
    let (w, h) = (format.width as usize, format.height as usize);
    let n = w * h;
    assert_eq!(rgb.len(), 3 * n, "RGB size");
    let mut yuv = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    for i in 0..n {
        let c = params.rgb_to_yuv([rgb[i], rgb[n + i], rgb[2 * n + i]]);
        for p in 0..3 {
            yuv[p][i] = c[p];
        }
    }
    let q = |v: &[f32]| v.iter().map(|&c| params.quantize(c)).collect::<Vec<u16>>();
    let planes = match format.chroma {
        Chroma::Mono => [q(&yuv[0]), Vec::new(), Vec::new()],
        Chroma::C444 => [q(&yuv[0]), q(&yuv[1]), q(&yuv[2])],
        c => [
            q(&yuv[0]),
            q(&downsample_chroma(&yuv[1], w, h, c, format.siting)),
            q(&downsample_chroma(&yuv[2], w, h, c, format.siting)),
        ],
    };
    Frame { format, planes, params: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fresh_seed, Rng};

    fn all_params() -> Vec<YuvParams> {
        let mut v = Vec::new();
        for matrix in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
            for range in [Range::Limited, Range::Full] {
                for depth in [8, 10, 12, 16] {
                    v.push(YuvParams { matrix, range, depth });
                }
            }
        }
        v
    }

    fn q3(p: &YuvParams, rgb: [f32; 3]) -> [u16; 3] {
        p.rgb_to_yuv(rgb).map(|c| p.quantize(c))
    }

    #[test]
    fn known_bt601_and_bt709_values() {
        let p601 = YuvParams { matrix: Matrix::Bt601, range: Range::Limited, depth: 8 };
        let p709 = YuvParams { matrix: Matrix::Bt709, range: Range::Limited, depth: 8 };
        let jpeg = YuvParams { matrix: Matrix::Bt601, range: Range::Full, depth: 8 };
        // Textbook code values for 75%-free colour bars.
        assert_eq!(q3(&p601, [1.0, 1.0, 1.0]), [235, 128, 128]);
        assert_eq!(q3(&p601, [0.0, 0.0, 0.0]), [16, 128, 128]);
        assert_eq!(q3(&p601, [1.0, 0.0, 0.0]), [81, 90, 240]);
        assert_eq!(q3(&p601, [0.0, 1.0, 0.0]), [145, 54, 34]);
        assert_eq!(q3(&p601, [0.0, 0.0, 1.0]), [41, 240, 110]);
        assert_eq!(q3(&p709, [1.0, 0.0, 0.0]), [63, 102, 240]);
        assert_eq!(q3(&p709, [0.0, 1.0, 0.0]), [173, 42, 26]);
        assert_eq!(q3(&p709, [0.0, 0.0, 1.0]), [32, 240, 118]);
        assert_eq!(q3(&jpeg, [1.0, 0.0, 0.0]), [76, 85, 255]);
        assert_eq!(q3(&jpeg, [1.0, 1.0, 1.0]), [255, 128, 128]);
        // 10-bit limited white and black: 940/64, chroma 512.
        let p10 = YuvParams { matrix: Matrix::Bt709, range: Range::Limited, depth: 10 };
        assert_eq!(q3(&p10, [1.0, 1.0, 1.0]), [940, 512, 512]);
        assert_eq!(q3(&p10, [0.0, 0.0, 0.0]), [64, 512, 512]);
        // BT.2020 10-bit limited primaries (Y = 64 + 876·Kx, C = 512 + 896·C′).
        let p2020 = YuvParams { matrix: Matrix::Bt2020, range: Range::Limited, depth: 10 };
        assert_eq!(q3(&p2020, [1.0, 0.0, 0.0]), [294, 387, 960]);
        assert_eq!(q3(&p2020, [0.0, 1.0, 0.0]), [658, 189, 100]);
        assert_eq!(q3(&p2020, [0.0, 0.0, 1.0]), [116, 960, 476]);
        // And back: limited 8-bit red decodes to (1, 0, 0) within the rounding of its codes.
        let rgb = p601.yuv_to_rgb(81.0, 90.0, 240.0);
        for (g, w) in rgb.iter().zip([1.0, 0.0, 0.0]) {
            assert!((g - w).abs() < 0.01, "{rgb:?}");
        }
    }

    #[test]
    fn matrix_auto_rule_and_flag() {
        // SD (NTSC, PAL, their widescreen and square-pixel sizes) is BT.601; HD, cropped HD
        // and anything past PAL's 576 lines BT.709.
        for (w, h) in [(720, 480), (720, 576), (1024, 576), (1279, 576), (1, 1), (7, 13)] {
            assert_eq!(Matrix::auto(w, h), Matrix::Bt601, "{w}x{h}");
        }
        for (w, h) in [(1280, 720), (1280, 536), (1920, 800), (1280, 1), (960, 720), (720, 577), (2880, 1920)] {
            assert_eq!(Matrix::auto(w, h), Matrix::Bt709, "{w}x{h}");
        }
        assert_eq!("auto".parse::<MatrixChoice>().unwrap().resolve(3840, 2160), Matrix::Bt709);
        assert_eq!("BT601".parse::<MatrixChoice>().unwrap().resolve(3840, 2160), Matrix::Bt601);
        assert_eq!("bt709".parse::<MatrixChoice>().unwrap().resolve(7, 13), Matrix::Bt709);
        assert_eq!("BT.2020".parse::<MatrixChoice>().unwrap().resolve(720, 480), Matrix::Bt2020);
        assert!("srgb".parse::<MatrixChoice>().unwrap_err().contains("--matrix srgb"));
    }

    #[test]
    fn yuv_rgb_yuv_round_trip_within_one_code_value() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for p in all_params() {
            let max = (1u32 << p.depth) - 1;
            for _ in 0..2000 {
                let c = [0; 3].map(|_| rng.below(max + 1) as u16);
                let rgb = p.yuv_to_rgb(c[0] as f32, c[1] as f32, c[2] as f32);
                let back = p.rgb_to_yuv(rgb).map(|v| p.quantize(v));
                for k in 0..3 {
                    assert!((back[k] as i32 - c[k] as i32).abs() <= 1, "seed {seed} {p:?}: {c:?} -> {rgb:?} -> {back:?}");
                }
            }
        }
    }

    #[test]
    fn rgb_yuv_rgb_round_trip_in_gamut() {
        let mut rng = Rng::new(fresh_seed());
        for p in all_params() {
            // One code step in RGB units, with room for the three channels' rounding.
            let step = 2.0 / p.code_scales().1 as f32;
            for _ in 0..500 {
                let rgb = [0; 3].map(|_| 0.05 + 0.9 * rng.uniform());
                let c = p.rgb_to_yuv(rgb).map(|v| p.quantize(v) as f32);
                let back = p.yuv_to_rgb(c[0], c[1], c[2]);
                for k in 0..3 {
                    assert!((back[k] - rgb[k]).abs() <= 2.0 * step, "{p:?}: {rgb:?} -> {c:?} -> {back:?}");
                }
            }
        }
    }

    fn ramp(w: usize, h: usize, ax: f64, ay: f64, x_at: impl Fn(usize) -> f64, y_at: impl Fn(usize) -> f64) -> Vec<f32> {
        let mut v = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                v[y * w + x] = (100.0 + ax * x_at(x) + ay * y_at(y)) as f32;
            }
        }
        v
    }

    const SITINGS: [(Chroma, Siting); 6] = [
        (Chroma::C420, Siting::Center),
        (Chroma::C420, Siting::Left),
        (Chroma::C420, Siting::TopLeft),
        (Chroma::C422, Siting::Left),
        (Chroma::C411, Siting::Left),
        (Chroma::C444, Siting::Center),
    ];

    #[test]
    fn resampling_keeps_constants_and_puts_ramps_at_the_siting() {
        let mut rng = Rng::new(fresh_seed());
        for (chroma, siting) in SITINGS {
            let (hx, hy, sx, sy) = layout(chroma, siting);
            for (w, h) in [(1usize, 1usize), (7, 13), (33, 7), (13, 33)] {
                let (cw, ch) = (w.div_ceil(sx), h.div_ceil(sy));
                let k = 17.0 + 900.0 * rng.uniform();
                assert!(upsample_chroma(&vec![k; cw * ch], cw, ch, w, h, chroma, siting).iter().all(|&v| (v - k).abs() < 1e-3));
                assert!(downsample_chroma(&vec![k; w * h], w, h, chroma, siting).iter().all(|&v| (v - k).abs() < 1e-3));
                let (ax, ay) = (rng.uniform() as f64 * 3.0 + 0.5, rng.uniform() as f64 * 3.0 + 0.5);
                // Luma position of chroma sample k along an axis where f luma samples share one.
                let site = |k: usize, f: usize, co: bool| match (f, co) {
                    (1, _) => k as f64,
                    (_, true) => (f * k) as f64,
                    (_, false) => (f * k) as f64 + (f - 1) as f64 / 2.0,
                };
                // Upsampling a ramp sampled at the chroma sites gives the ramp at every luma
                // sample that lies between two chroma sites (away from the clamped edges).
                let c = ramp(cw, ch, ax, ay, |k| site(k, sx, hx), |k| site(k, sy, hy));
                let up = upsample_chroma(&c, cw, ch, w, h, chroma, siting);
                let full = ramp(w, h, ax, ay, |x| x as f64, |y| y as f64);
                for y in 0..h {
                    for x in 0..w {
                        let inside = |i: usize, n: usize, nc: usize, f: usize, co: bool| {
                            f == 1 || (i as f64 >= site(0, f, co) && (i as f64) <= site(nc - 1, f, co) && i < n)
                        };
                        if inside(x, w, cw, sx, hx) && inside(y, h, ch, sy, hy) {
                            assert!((up[y * w + x] - full[y * w + x]).abs() < 1e-3, "{chroma:?} {siting:?} {w}x{h} up at ({x},{y})");
                        }
                    }
                }
                // Downsampling the full ramp gives the ramp at the chroma sites (interior).
                let down = downsample_chroma(&full, w, h, chroma, siting);
                for ky in 0..ch {
                    for kx in 0..cw {
                        // Every tap inside the frame (none clamped at an edge).
                        let interior = |k: usize, n: usize, f: usize, co: bool| f == 1 || (f * k + f - 1 < n && (!co || f * k + 1 >= f));
                        let (ok_x, ok_y) = (interior(kx, w, sx, hx), interior(ky, h, sy, hy));
                        if ok_x && ok_y {
                            assert!(
                                (down[ky * cw + kx] - c[ky * cw + kx]).abs() < 1e-3,
                                "{chroma:?} {siting:?} {w}x{h} down at ({kx},{ky})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn frame_round_trip_through_rgb() {
        let mut rng = Rng::new(fresh_seed());
        for (chroma, siting) in SITINGS.into_iter().chain([(Chroma::Mono, Siting::Center)]) {
            for depth in [8u8, 10, 12] {
                for (w, h) in [(1, 1), (7, 13), (33, 7)] {
                    let format = FrameFormat { width: w, height: h, chroma, siting, depth };
                    let p = YuvParams { matrix: Matrix::Bt709, range: Range::Limited, depth };
                    // A flat-chroma frame round-trips exactly up to rounding: resampling a
                    // constant is the constant.
                    let s = 1u16 << (depth - 8);
                    let (u0, v0) = ((100 + rng.below(40) as u16) * s, (110 + rng.below(40) as u16) * s);
                    let mut f = Frame::filled(format, [0, u0, v0]);
                    for v in f.planes[0].iter_mut() {
                        *v = (16 + rng.below(220) as u16) * s;
                    }
                    let rgb = frame_to_rgb(&f, &p);
                    assert_eq!(rgb.len(), 3 * (w * h) as usize);
                    let back = rgb_to_frame(&rgb, format, &p);
                    for pl in 0..3 {
                        for (a, b) in back.planes[pl].iter().zip(&f.planes[pl]) {
                            assert!((*a as i32 - *b as i32).abs() <= 1, "{chroma:?} {depth} {w}x{h} plane {pl}: {a} vs {b}");
                        }
                        assert_eq!(back.planes[pl].len(), f.planes[pl].len());
                    }
                }
            }
        }
    }
}
