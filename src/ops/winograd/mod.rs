//! 3×3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2×2, 3×3) (Lavin and
//! Gray, 2015): each 2×2 block of outputs takes 16 products per input and output channel pair
//! instead of the direct convolution's 36.
//!
//! Three stages, each a kernel of its own:
//! 1. the input transform (`shaders/winograd_input.wgsl`): every 4×4 input patch (stride 2) to 16
//!    values, one per plane ξ of `[N, TH, TW, Cin]`;
//! 2. 16 products, one per plane, of its `[tiles, Cin]` values with the transformed weight's
//!    `[Cin, Cout]` plane: one batched matmul for a 2-D convolution; for a 3×3×3 one, the
//!    convolution kernel with the time taps (KT, 1, 1) on each plane, all 16 in one dispatch
//!    (`conv3d_planes_into`), so the three taps share one input transform;
//! 3. the output transform (`shaders/winograd_output.wgsl`): 16 products to the 2×2 outputs,
//!    with the bias and a residual.
//!
//! The products are 4/9 of the direct convolution's; the transforms write and read about 4×
//! the input and 4× the output once more, so it pays where the channels are wide
//! (BENCHMARKS.md works out where). The values are not the direct convolution's bits: the
//! planes are stored in the storage dtype between the stages (f16 with f16 storage), so the
//! error is a few times the direct convolution's rounding. Models run it where `--winograd`
//! asks (`models::blocks::NormedConv`); `bench kernels` times it beside the direct kernels.

use anyhow::{ensure, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::conv::{conv3d_planes_into, ConvKind, ConvWeight};
use crate::ops::matmul::matmul_into;
use crate::ops::norm::GnTable;
use crate::ops::residual::Residual;
use crate::tensor::{DType, Tensor};
use crate::Gpu;

mod bench;
pub mod cpu;
#[cfg(test)]
mod tests;

pub use bench::bench_cases;

const SRC_IN: &str = concat!(
    include_str!("../../../shaders/winograd_tiles.wgsl"),
    include_str!("../../../shaders/winograd_x_plain.wgsl"),
    include_str!("../../../shaders/winograd_input.wgsl")
);
/// The input transform of a GroupNorm's output, normalised as it loads.
const SRC_IN_NORM: &str = concat!(
    include_str!("../../../shaders/winograd_tiles.wgsl"),
    include_str!("../../../shaders/winograd_x_norm.wgsl"),
    include_str!("../../../shaders/winograd_input.wgsl")
);
/// The weight transform, from the direct convolution's packed weight.
const SRC_WEIGHT: &str = include_str!("../../../shaders/winograd_weight.wgsl");
const SRC_OUT: &str = concat!(include_str!("../../../shaders/winograd_tiles.wgsl"), include_str!("../../../shaders/winograd_output.wgsl"));

/// A 3×3 (or 3×3×3) convolution's weight in the Winograd domain: `G g Gᵀ` of each 3×3
/// kernel (CPU twin: [`cpu::transform_weight`]), 16 planes.
pub struct WinogradWeight {
    pub cin: usize,
    pub cout: usize,
    products: Products,
    bias: Option<Tensor>,
}

/// How the 16 products run.
enum Products {
    /// 2-D: the planes as `[16, Cin, Cout]`, one batched matmul.
    Matmul(Tensor),
    /// 3-D: 16 convolution weights of taps (KT, 1, 1), one per plane, back to back in one
    /// packed tensor (for `conv3d_planes_into`).
    Conv(ConvWeight),
}

impl WinogradWeight {
    /// From a PyTorch `Conv2d` weight `[Cout, Cin, 3, 3]` or `Conv3d` weight
    /// `[Cout, Cin, KT, 3, 3]` (KT odd), with an optional `[Cout]` bias. Cin and Cout must be
    /// multiples of 4 (the kernels move four channels at a time).
    pub fn from_torch(gpu: &Gpu, w: &[f32], shape: &[usize], bias: Option<&[f32]>, dtype: DType) -> Result<WinogradWeight> {
        ensure!(matches!(*shape, [_, _, 3, 3] | [_, _, _, 3, 3]), "winograd: a weight of shape {shape:?} is not [Cout, Cin, 3, 3] or [Cout, Cin, KT odd, 3, 3]");
        let direct = ConvWeight::from_torch(gpu, w, shape, None, DType::F32)?;
        WinogradWeight::from_direct(gpu, &direct, bias, dtype)
    }

    /// From the direct convolution's weight packed in f32 (`ConvWeight`, however it was made:
    /// from a checkpoint on the host, or generated on the GPU), transformed on the GPU
    /// (`shaders/winograd_weight.wgsl`) into `dtype`: a checkpoint's kernels cross the bus as
    /// the direct weight's 9 values, and a model built with random weights on a GPU never
    /// crosses it.
    pub fn from_direct(gpu: &Gpu, direct: &ConvWeight, bias: Option<&[f32]>, dtype: DType) -> Result<WinogradWeight> {
        let (cin, cout, [kt, kh, kw]) = (direct.cin, direct.cout, direct.taps);
        let video = direct.kind == ConvKind::Conv3d;
        ensure!(
            direct.kind != ConvKind::ConvTranspose2d && (kh, kw) == (3, 3) && kt % 2 == 1 && (video || kt == 1),
            "winograd: a {:?} weight of taps {:?} is not a 3×3 or KT odd × 3 × 3 convolution's",
            direct.kind,
            direct.taps
        );
        ensure!(direct.w.dtype() == DType::F32, "internal: winograd transforms a direct weight packed in f32, not {:?}", direct.w.dtype());
        ensure!(cin.is_multiple_of(4) && cout.is_multiple_of(4), "winograd: Cin ({cin}) and Cout ({cout}) must be multiples of 4");
        ensure!(bias.is_none_or(|b| b.len() == cout), "winograd: a bias of {} values for Cout {cout}", bias.map_or(0, |b| b.len()));
        let (cin_p, cout_p) = (direct.cin_p, direct.cout_p);
        let mut rec = gpu.recorder();
        let products = if video {
            // The planes' (KT, 1, 1) convolution weights in the packed layout, padding and all,
            // back to back, made in one pass over the direct weight.
            let plane = kt * cin_p * cout_p;
            let all = Tensor::empty(gpu, &[16 * kt, cin_p, cout_p], dtype)?;
            transform_weight(&mut rec, direct, &all, (cin_p, cout_p), plane)?;
            let zero_bias = Tensor::from_f32(gpu, &vec![0.0; cout], &[cout], dtype)?;
            Products::Conv(ConvWeight { kind: ConvKind::Conv3d, cin, cout, taps: [kt, 1, 1], cin_p, cout_p, w: all, bias: zero_bias })
        } else {
            // [16][Cin][Cout], the matmul's K-major operand.
            let u = Tensor::empty(gpu, &[16, cin, cout], dtype)?;
            transform_weight(&mut rec, direct, &u, (cin, cout), cin * cout)?;
            Products::Matmul(u)
        };
        rec.submit();
        let bias = bias.map(|b| Tensor::from_f32(gpu, b, &[cout], dtype)).transpose()?;
        Ok(WinogradWeight { cin, cout, products, bias })
    }

    /// Whether this is a 3-D convolution's weight (for [`conv3d_winograd`]).
    pub fn is_3d(&self) -> bool {
        matches!(self.products, Products::Conv(_))
    }

    fn dtype(&self) -> DType {
        match &self.products {
            Products::Matmul(u) => u.dtype(),
            Products::Conv(w) => w.w.dtype(),
        }
    }
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    units: u32,
    cv: u32,
    h: u32,
    w: u32,
    bth: u32,
    tw: u32,
    plane: u32,
    ty0: u32,
    res_rep: u32,
    seg_frames: u32,
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct WeightParams {
    units: u32,
    dst_cin: u32,
    dst_cout: u32,
    cin_p: u32,
    cout_p: u32,
    dst_plane: u32,
}

/// Records `G g Gᵀ` of the direct weight's kernels (`direct.w`, f32 `[KT·9][cin_p][cout_p]`)
/// into `out`: 16 planes of `[KT][dst_cin][dst_cout]`, `stride` elements apart (`dst_cin` ≤
/// cin_p, `dst_cout` ≤ cout_p: the rows and columns kept).
fn transform_weight(rec: &mut Recorder, direct: &ConvWeight, out: &Tensor, (dst_cin, dst_cout): (usize, usize), stride: usize) -> Result<()> {
    let units = direct.taps[0] * dst_cin * dst_cout;
    ensure!(dst_cin <= direct.cin_p && dst_cout <= direct.cout_p && stride >= units, "internal: winograd weight planes of {dst_cin}×{dst_cout}, {stride} apart, from {:?}", direct.w.shape());
    ensure!(out.numel() == 16 * stride, "internal: winograd weight planes {stride} apart in {:?}", out.shape());
    ensure!(direct.w.numel() <= u32::MAX as usize && out.numel() <= u32::MAX as usize, "winograd: a weight of {} elements exceeds 32-bit indexing", out.numel());
    let p = WeightParams {
        units: units as u32,
        dst_cin: dst_cin as u32,
        dst_cout: dst_cout as u32,
        cin_p: direct.cin_p as u32,
        cout_p: direct.cout_p as u32,
        dst_plane: stride as u32,
    };
    let k = Kernel::new("winograd_weight", SRC_WEIGHT, out.dtype());
    let groups = grid(rec.gpu(), p.units.div_ceil(256));
    rec.dispatch(&k, &p, &[(&direct.w).into(), out.into()], groups)
}

/// At most this many bytes in the 16 planes of a band's transformed inputs, and again in its
/// products: a convolution runs in bands of tile rows so that its planes never need more memory
/// than this (or a larger binding than the adapter has) beside its input and output.
pub const PLANES_BUDGET: u64 = 512 << 20;

/// A band of tile rows `ty0 .. ty0 + rows` of every image.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Band {
    pub ty0: usize,
    pub rows: usize,
}

/// 2-D convolution, 3×3, stride 1, padding 1, of channels-last `x` `[.., H, W, Cin]` (any
/// leading axes: images, or frames of a video), or of its GroupNorm (+ SiLU) where `norm` (the
/// table of `x`'s statistics) is given, applied as the input transform loads: `[.., H, W, Cout]`,
/// plus `res` where given (of the output's shape, or a row per batch element).
pub fn conv2d_winograd(rec: &mut Recorder, x: &Tensor, norm: Option<&GnTable>, w: &WinogradWeight, res: Option<Residual>) -> Result<Tensor> {
    ensure!(matches!(w.products, Products::Matmul(_)), "conv2d_winograd: the weight is a 3-D convolution's");
    ensure!(x.shape().len() >= 3, "conv2d_winograd: input {:?} is not [.., H, W, C]", x.shape());
    run(rec, x, norm, w, res)
}

/// 3-D convolution, KT × 3 × 3 (KT odd), stride 1, "same" zero padding, of channels-last video
/// `x` `[B, F, H, W, Cin]` (or its GroupNorm, as [`conv2d_winograd`]): `[B, F, H, W, Cout]`, plus
/// `res` where given.
pub fn conv3d_winograd(rec: &mut Recorder, x: &Tensor, norm: Option<&GnTable>, w: &WinogradWeight, res: Option<Residual>) -> Result<Tensor> {
    ensure!(matches!(w.products, Products::Conv(_)), "conv3d_winograd: the weight is a 2-D convolution's");
    ensure!(x.shape().len() == 5, "conv3d_winograd: input {:?} is not [B, F, H, W, C]", x.shape());
    run(rec, x, norm, w, res)
}

fn run(rec: &mut Recorder, x: &Tensor, norm: Option<&GnTable>, w: &WinogradWeight, res: Option<Residual>) -> Result<Tensor> {
    run_in_bands(rec, x, norm, w, res, PLANES_BUDGET)
}

/// The convolution in bands of tile rows whose planes take at most `budget` bytes each.
pub(super) fn run_in_bands(rec: &mut Recorder, x: &Tensor, norm: Option<&GnTable>, w: &WinogradWeight, res: Option<Residual>, budget: u64) -> Result<Tensor> {
    let gpu = rec.gpu();
    let s = x.shape().to_vec();
    let r = s.len();
    let (h, wd, c) = (s[r - 3], s[r - 2], s[r - 1]);
    let dt = x.dtype();
    ensure!(c == w.cin, "winograd: input {s:?} has {c} channels, the weight takes {}", w.cin);
    ensure!(dt == w.dtype(), "winograd: input {dt:?}, weight {:?}", w.dtype());
    ensure!(!s.contains(&0), "winograd: empty input {s:?}");
    let mut out_shape = s.clone();
    out_shape[r - 1] = w.cout;
    if let Some(t) = res {
        t.rep("winograd", &out_shape, dt)?;
    }
    let n: usize = s[..r - 3].iter().product();
    let (_, tw) = cpu::tiles(h, wd);
    let out = rec.empty(&out_shape, dt)?;
    for band in bands(gpu, n, (h, wd), c.max(w.cout), dt, budget)? {
        // The planes back to back (C % 4 == 0, so each is whole vectors).
        let rows = n * band.rows * tw;
        let v = input_transform(rec, x, norm, band)?;
        let m = rec.empty_banded(&[16 * rows * w.cout], dt)?;
        match &w.products {
            // One batched product of the planes.
            Products::Matmul(u) => matmul_into(rec, &v.reshape(&[16, rows, c])?, u, &m.reshape(&[16, rows, w.cout])?)?,
            // The planes as 16 parts of one batch, each with its weight, in one dispatch.
            Products::Conv(u) => {
                let (b, f) = (s[0], s[1]);
                conv3d_planes_into(rec, &v.reshape(&[16 * b, f, band.rows, tw, c])?, u, 16, &m.reshape(&[16 * b, f, band.rows, tw, w.cout])?)?
            }
        }
        output_transform(rec, &m, &out, band, w.bias.as_ref(), res)?;
    }
    Ok(out)
}

/// The bands of tile rows for `n` images of `h` × `w` whose planes hold `widest` channels: as
/// many rows each as keep the 16 planes within `budget` bytes and one binding, the last band
/// the rest.
pub(super) fn bands(gpu: &Gpu, n: usize, (h, w): (usize, usize), widest: usize, dt: DType, budget: u64) -> Result<Vec<Band>> {
    let (th, tw) = cpu::tiles(h, w);
    let bytes = |rows: usize| (16 * n * rows * tw * widest * dt.size()) as u64;
    if bytes(1) > gpu.max_binding() {
        return Err(crate::gpu::OverLimit(format!(
            "winograd: one row of tiles of {n} images of {h}×{w}×{widest} needs {} in one binding, over this GPU's {}",
            crate::gpu::human_bytes(bytes(1)),
            crate::gpu::human_bytes(gpu.max_binding())
        ))
        .into());
    }
    let cap = budget.min(gpu.max_binding());
    let per = (1..=th).rev().find(|&b| bytes(b) <= cap).unwrap_or(1);
    Ok((0..th).step_by(per).map(|ty0| Band { ty0, rows: per.min(th - ty0) }).collect())
}

/// The input transform of `band` of channels-last `x` `[.., H, W, C]` (C % 4 == 0), or of its
/// GroupNorm (+ SiLU) where `norm` (the table of `x`'s statistics) is given, applied as it
/// loads: 16 planes of `[.., band rows, TW, C]` back to back, as one flat tensor.
pub(super) fn input_transform(rec: &mut Recorder, x: &Tensor, norm: Option<&GnTable>, band: Band) -> Result<Tensor> {
    let s = x.shape();
    ensure!(s.len() >= 3 && !s.contains(&0), "winograd: input {s:?} is not a non-empty [.., H, W, C]");
    let r = s.len();
    let (h, w, c) = (s[r - 3], s[r - 2], s[r - 1]);
    ensure!(c.is_multiple_of(4), "winograd: {c} input channels, not a multiple of 4");
    let n: usize = s[..r - 3].iter().product();
    let plane = n * band.rows * cpu::tiles(h, w).1 * c;
    let mut p = params(n, h, w, c, band, plane)?;
    let v = rec.empty_banded(&[16 * plane], x.dtype())?;
    let gpu = rec.gpu();
    let groups = grid(gpu, p.units.div_ceil(256));
    match norm {
        None => rec.dispatch(&Kernel::new("winograd_input", SRC_IN, x.dtype()), &p, &[x.into(), (&v).into()], groups)?,
        Some(n) => {
            ensure!(n.shape == s, "winograd: a GroupNorm table of {:?} given with the input {s:?}", n.shape);
            ensure!(n.seg_px > 0 && n.seg_px.is_multiple_of(h * w), "winograd: a GroupNorm segment of {} pixels is not whole {h}×{w} images", n.seg_px);
            p.seg_frames = (n.seg_px / (h * w)) as u32;
            let k = Kernel::new("winograd_input_gn", SRC_IN_NORM, x.dtype()).def("SILU", n.silu);
            rec.dispatch(&k, &p, &[x.into(), (&v).into(), (&n.table).into()], groups)?
        }
    }
    Ok(v)
}

/// The output transform of `band`'s 16 product planes `m` (flat, equal planes back to back)
/// into its rows of `out` `[.., H, W, Cout]`, plus `bias` `[Cout]` and `res` (a [`Residual`] of `out`)
/// where given.
pub(super) fn output_transform(rec: &mut Recorder, m: &Tensor, out: &Tensor, band: Band, bias: Option<&Tensor>, res: Option<Residual>) -> Result<()> {
    let s = out.shape();
    let r = s.len();
    let (h, w, c) = (s[r - 3], s[r - 2], s[r - 1]);
    let dt = out.dtype();
    ensure!(c.is_multiple_of(4) && m.dtype() == dt, "winograd: {c} output channels (a multiple of 4 needed), products {:?}, output {dt:?}", m.dtype());
    ensure!(m.numel().is_multiple_of(16), "internal: winograd products of {} elements", m.numel());
    let mut p = params(s[..r - 3].iter().product(), h, w, c, band, m.numel() / 16)?;
    if let Some(b) = bias {
        ensure!(b.shape() == [c] && b.dtype() == dt, "winograd: a bias of {:?} {:?} for {c} channels {dt:?}", b.shape(), b.dtype());
    }
    if let Some(t) = res {
        p.res_rep = t.rep("winograd", s, dt)?;
    }
    let k = Kernel::new("winograd_output", SRC_OUT, dt).def("HAS_BIAS", bias.is_some()).def("HAS_RES", res.is_some());
    let gpu = rec.gpu();
    // Without a bias or a residual, their bindings repeat the planes'.
    let binds = [m.into(), bias.unwrap_or(m).into(), res.map_or(m, |t| t.tensor()).into(), out.into()];
    rec.dispatch(&k, &p, &binds, grid(gpu, p.units.div_ceil(256)))
}

/// The kernels' parameters for `n` images of `h` × `w` × `c` and `band`, planes `plane`
/// elements apart.
fn params(n: usize, h: usize, w: usize, c: usize, band: Band, plane: usize) -> Result<Params> {
    let (th, tw) = cpu::tiles(h, w);
    ensure!(band.rows > 0 && band.ty0 + band.rows <= th, "internal: winograd band {band:?} of {th} tile rows");
    let values = n * band.rows * tw * c;
    ensure!(plane >= values && plane.is_multiple_of(4), "internal: winograd planes of {plane} elements for {values} values");
    ensure!(16 * plane < u32::MAX as usize && n * h * w * c < u32::MAX as usize, "winograd: {n} images of {h}×{w}×{c} exceed 32-bit indexing");
    Ok(Params {
        units: (values / 4) as u32,
        cv: (c / 4) as u32,
        h: h as u32,
        w: w as u32,
        bth: band.rows as u32,
        tw: tw as u32,
        plane: (plane / 4) as u32,
        ty0: band.ty0 as u32,
        res_rep: 1,
        seg_frames: 1,
    })
}
