//! Convolutions as implicit GEMM (`shaders/conv*.wgsl`): M = output positions, N = Cout,
//! K = taps × Cin. The input patch is gathered tile by tile from the channels-last activation;
//! no im2col buffer is ever written.
//!
//! * [`conv2d`]: any kh × kw, stride, symmetric zero padding (DiffVSR uses 1×1, 3×3 s1 p1,
//!   3×3 s2 p1); input `[N, H, W, Cin]` (or `[B, F, H, W, Cin]`, per frame).
//! * [`conv_transpose2d`]: kernel 4, stride 2, padding 1 (the MSTA up-projection), run as four
//!   sub-pixel phases, each a 2×2 convolution writing every other output pixel.
//! * [`conv3d`]: stride 1, "same" zero padding in every axis (kernel (3,1,1), (5,1,1), 3×3×3);
//!   input `[B, F, H, W, Cin]`.
//!
//! Two kernels, each one shader specialised by consts (taps per axis, stride, transposed) for
//! every variant above: `conv.wgsl`, portable (workgroup-memory tiles, 4×4 outputs per
//! thread, f32 or f16 storage), and `conv_coop.wgsl`, cooperative matrices (f16 storage, or f32
//! storage rounded to f16 operands with `--f16-operands`; f32 accumulation; adapters with f16
//! 16×16 or 8×8 matrices and a fixed subgroup size). [`Impl`] picks; `Auto` takes the
//! cooperative kernel where it runs and Cout ≥ 64, and where tuning is on (`gpu/tune.rs`) times
//! that kernel's tiles on each new shape and keeps the fastest. Both can add a [`Residual`] to
//! the output as they store it (the `_add` functions).
//! Weights are repacked once by [`ConvWeight`] from PyTorch's layout to
//! `[phase][tap][Cin padded to 32][Cout padded to 8]` (K-major rows of Cout): a K step reads
//! one contiguous weight row per channel, and the zero padding removes every bounds check on
//! the weight side.

use anyhow::{bail, ensure, Result};

use crate::gpu::Gpu;
use crate::kernel::{grid, Kernel, Recorder};
use crate::gpu::TuneMode;
use crate::ops::norm::{group_norm_apply, GnTable};
use crate::ops::residual::Residual;
use crate::ops::pack::{Placement, Src};
use crate::ops::synthetic::Packing;
use crate::tensor::{DType, Tensor};

/// Sources of each kernel for the three ways it loads its input: four channels at a time (Cin
/// % 4 == 0), one at a time, or four at a time through a GroupNorm (`conv_x_norm.wgsl`).
macro_rules! conv_sources {
    ($kernel:literal) => {
        [
            concat!(
                include_str!("../../shaders/conv_geom.wgsl"),
                include_str!("../../shaders/conv_x_vec4.wgsl"),
                include_str!("../../shaders/conv_x_plain.wgsl"),
                include_str!($kernel)
            ),
            concat!(
                include_str!("../../shaders/conv_geom.wgsl"),
                include_str!("../../shaders/conv_x_scalar.wgsl"),
                include_str!("../../shaders/conv_x_plain.wgsl"),
                include_str!($kernel)
            ),
            concat!(
                include_str!("../../shaders/conv_geom.wgsl"),
                include_str!("../../shaders/conv_x_vec4.wgsl"),
                include_str!("../../shaders/conv_x_norm.wgsl"),
                include_str!($kernel)
            ),
        ]
    };
}
const SRC_TILED: [&str; 3] = conv_sources!("../../shaders/conv.wgsl");
const SRC_COOP: [&str; 3] = conv_sources!("../../shaders/conv_coop.wgsl");

/// How a kernel loads its input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Load {
    /// As stored, four channels per load (Cin % 4 == 0).
    Vec4,
    /// As stored, channel by channel (any Cin, e.g. 3 or 4 at the networks' ends).
    Scalar,
    /// Four channels per load, normalised by a GroupNorm's table (then SiLU when `silu`).
    Normed { silu: bool },
}

impl Load {
    fn plain(cin: usize) -> Load {
        if cin.is_multiple_of(4) {
            Load::Vec4
        } else {
            Load::Scalar
        }
    }

    /// The kernel with this load: its source among `srcs`, its name and consts.
    fn kernel(self, name: &'static str, normed_name: &'static str, srcs: &[&'static str; 3], dtype: DType) -> Kernel {
        match self {
            Load::Vec4 => Kernel::new(name, srcs[0], dtype),
            Load::Scalar => Kernel::new(name, srcs[1], dtype),
            Load::Normed { silu } => Kernel::new(normed_name, srcs[2], dtype).def("SILU", silu),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn coop_kernel(dtype: DType, taps: [usize; 3], stride: [usize; 2], transposed: bool, has_res: bool, load: Load, cfg: CoopCfg) -> Kernel {
    geometry(load.kernel("conv_coop", "conv_coop_gn", &SRC_COOP, dtype), taps, stride, transposed, has_res)
        .with_coop(cfg.fs)
        .def("SG", format!("{}u", cfg.sg))
        .def("NSG", format!("{}u", cfg.nsg))
        .def("BN", format!("{}u", cfg.bn))
        .def("PREFETCH", cfg.prefetch)
}

/// Packed K rows are padded to a multiple of this (the largest K step of any conv kernel).
const CIN_ALIGN: usize = 32;
/// Packed weight rows are padded to a multiple of this (vector loads along Cout).
const COUT_ALIGN: usize = 8;
/// K step of the portable kernel.
const TILED_BK: u32 = 16;

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    nb: u32,
    d: u32,
    h: u32,
    w: u32,
    cin: u32,
    cout: u32,
    cin_p: u32,
    cout_p: u32,
    ho: u32,
    wo: u32,
    pt: u32,
    ph: u32,
    pw: u32,
    m: u32,
    tiles_m: u32,
    tiles_n: u32,
    /// Output pixels per residual row (see ops/residual.rs); 1 without a residual.
    res_rep: u32,
    /// Pixels per GroupNorm segment of a normalised input; 0 without one.
    seg_px: u32,
}

/// What a [`ConvWeight`] was made from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// `nn.Conv2d`, PyTorch weight `[Cout, Cin, kh, kw]`.
    Conv2d,
    /// `nn.ConvTranspose2d(kernel 4, stride 2, padding 1)`, PyTorch weight `[Cin, Cout, 4, 4]`.
    ConvTranspose2d,
    /// `nn.Conv3d`, PyTorch weight `[Cout, Cin, kt, kh, kw]`.
    Conv3d,
}

/// A convolution's weights and bias on the GPU, repacked for the implicit-GEMM kernels.
#[derive(Clone, Debug)]
pub struct ConvWeight {
    pub kind: ConvKind,
    pub cin: usize,
    pub cout: usize,
    /// Taps per axis (time, height, width) of the kernel as the shader runs it: a transposed
    /// conv runs as four phases of (1, 2, 2).
    pub taps: [usize; 3],
    pub cin_p: usize,
    pub cout_p: usize,
    /// `[phases][taps][cin_p][cout_p]`, zero in the padding.
    pub w: Tensor,
    /// `[Cout]` (zeros when the layer has no bias).
    pub bias: Tensor,
}

impl ConvWeight {
    /// From a PyTorch `Conv2d` (`shape` = `[Cout, Cin, kh, kw]`) or `Conv3d`
    /// (`[Cout, Cin, kt, kh, kw]`) weight, with an optional `[Cout]` bias.
    pub fn from_torch(gpu: &Gpu, w: &[f32], shape: &[usize], bias: Option<&[f32]>, dtype: DType) -> Result<ConvWeight> {
        ConvWeight::pack(gpu, Src::Values(w), 1.0, shape, bias, dtype, false)
    }

    /// From a PyTorch `ConvTranspose2d(kernel_size=4, stride=2, padding=1)` weight
    /// (`shape` = `[Cin, Cout, 4, 4]`), with an optional `[Cout]` bias.
    pub fn from_torch_transposed(gpu: &Gpu, w: &[f32], shape: &[usize], bias: Option<&[f32]>, dtype: DType) -> Result<ConvWeight> {
        ConvWeight::pack_transposed(gpu, Src::Values(w), 1.0, shape, bias, dtype, false)
    }

    /// [`from_torch`](Self::from_torch) from any source (times `factor`), packed on the host,
    /// or generated on the GPU when `on_gpu` (a synthetic source).
    pub fn pack(gpu: &Gpu, src: Src<'_>, factor: f32, shape: &[usize], bias: Option<&[f32]>, dtype: DType, on_gpu: bool) -> Result<ConvWeight> {
        Layout::conv(shape)?.build(gpu, src, factor, shape, bias, dtype, on_gpu)
    }

    /// [`from_torch_transposed`](Self::from_torch_transposed) from any source, as
    /// [`pack`](Self::pack).
    pub fn pack_transposed(gpu: &Gpu, src: Src<'_>, factor: f32, shape: &[usize], bias: Option<&[f32]>, dtype: DType, on_gpu: bool) -> Result<ConvWeight> {
        Layout::transposed(shape)?.build(gpu, src, factor, shape, bias, dtype, on_gpu)
    }

    pub fn dtype(&self) -> DType {
        self.w.dtype()
    }
}

/// Where a PyTorch conv weight's elements go in the packed `[phases·taps][cin_p][cout_p]`
/// layout: row (phase, tap, ci) holds the weight's elements for every co at a stride. One
/// description for packing a checkpoint's weight and generating a synthetic one.
struct Layout {
    kind: ConvKind,
    cin: usize,
    cout: usize,
    taps: [usize; 3],
    cin_p: usize,
    cout_p: usize,
}

impl Layout {
    /// A `Conv2d` (`[Cout, Cin, kh, kw]`) or `Conv3d` (`[Cout, Cin, kt, kh, kw]`) weight.
    fn conv(shape: &[usize]) -> Result<Layout> {
        let (kind, cout, cin, taps) = match *shape {
            [co, ci, kh, kw] => (ConvKind::Conv2d, co, ci, [1, kh, kw]),
            [co, ci, kt, kh, kw] => (ConvKind::Conv3d, co, ci, [kt, kh, kw]),
            _ => bail!("conv weight shape {shape:?}: expected [Cout, Cin, kh, kw] or [Cout, Cin, kt, kh, kw]"),
        };
        ensure!(cout > 0 && cin > 0 && taps.iter().all(|&k| k > 0), "conv weight shape {shape:?} has a zero axis");
        Ok(Layout::new(kind, cin, cout, taps))
    }

    /// A `ConvTranspose2d(kernel_size=4, stride=2, padding=1)` weight (`[Cin, Cout, 4, 4]`),
    /// run as four phases of (1, 2, 2) taps.
    fn transposed(shape: &[usize]) -> Result<Layout> {
        let [cin, cout, 4, 4] = *shape else {
            bail!("conv-transpose weight shape {shape:?}: expected [Cin, Cout, 4, 4] (only kernel 4, stride 2, padding 1 is supported)");
        };
        ensure!(cout > 0 && cin > 0, "conv-transpose weight shape {shape:?} has a zero axis");
        Ok(Layout::new(ConvKind::ConvTranspose2d, cin, cout, [1, 2, 2]))
    }

    fn new(kind: ConvKind, cin: usize, cout: usize, taps: [usize; 3]) -> Layout {
        Layout { kind, cin, cout, taps, cin_p: cin.next_multiple_of(CIN_ALIGN), cout_p: cout.next_multiple_of(COUT_ALIGN) }
    }

    fn ntaps(&self) -> usize {
        self.taps.iter().product()
    }

    /// Packed rows: (tap, ci), or (phase, tap, ci) for the four phases of a transposed conv.
    fn rows(&self) -> usize {
        let phases = if self.kind == ConvKind::ConvTranspose2d { 4 } else { 1 };
        phases * self.ntaps() * self.cin_p
    }

    fn packed_shape(&self) -> [usize; 3] {
        [self.rows() / self.cin_p, self.cin_p, self.cout_p]
    }

    /// Elements of the PyTorch weight.
    fn src_len(&self) -> usize {
        match self.kind {
            ConvKind::ConvTranspose2d => self.cin * self.cout * 16,
            _ => self.cout * self.cin * self.ntaps(),
        }
    }

    /// Every row, the first `cout` of its `cout_p` columns.
    fn placement(&self) -> Placement {
        Placement::rows(self.rows(), self.cout_p, self.cout)
    }

    /// Row r → (base, stride) of its elements in the PyTorch weight (None: a padding row).
    fn row_fn(&self) -> impl Fn(usize) -> Option<(usize, usize)> + Sync + '_ {
        move |r| {
            let (i, ci) = (r / self.cin_p, r % self.cin_p);
            if ci >= self.cin {
                return None;
            }
            if self.kind != ConvKind::ConvTranspose2d {
                // Row (tap, ci) holds w[co][ci][tap] for every co.
                let ntaps = self.ntaps();
                return Some((ci * ntaps + i, self.cin * ntaps));
            }
            // Output row 2a+py gets kernel row ky from input row a+ty−1+py with ky = 3−2ty−py
            // (ty ∈ {0,1}). Rows are (phase, tap, ci) with phase = 2py+px and tap = 2ty+tx: the
            // row's index is ((py·2 + px)·4 + ty·2 + tx)·cin_p + ci, and it holds w[ci][co][ky][kx]
            // for every co.
            let (py, px, ty, tx) = (i >> 3, (i >> 2) & 1, (i >> 1) & 1, i & 1);
            let (ky, kx) = (3 - 2 * ty - py, 3 - 2 * tx - px);
            Some((ci * self.cout * 16 + ky * 4 + kx, 16))
        }
    }

    /// The packed weight of `factor` times `src` (of PyTorch shape `shape`): zeros, then every
    /// mapped row.
    #[allow(clippy::too_many_arguments)]
    fn build(&self, gpu: &Gpu, src: Src<'_>, factor: f32, shape: &[usize], bias: Option<&[f32]>, dtype: DType, on_gpu: bool) -> Result<ConvWeight> {
        let what = if self.kind == ConvKind::ConvTranspose2d { "conv-transpose" } else { "conv" };
        let mut w = Packing::new(gpu, format!("{what} weight {shape:?}"), &self.packed_shape(), dtype, on_gpu)?;
        w.fill_rows(src, factor, self.src_len(), &self.placement(), self.row_fn())?;
        self.finish(gpu, w.finish()?, bias)
    }

    /// The weight with its bias (zeros when the layer has none).
    fn finish(&self, gpu: &Gpu, w: Tensor, bias: Option<&[f32]>) -> Result<ConvWeight> {
        let cout = self.cout;
        let zeros;
        let bias = match bias {
            Some(b) => {
                ensure!(b.len() == cout, "conv bias has {} values, expected Cout = {cout}", b.len());
                b
            }
            None => {
                zeros = vec![0f32; cout];
                &zeros
            }
        };
        let bias = Tensor::from_f32(gpu, bias, &[cout], w.dtype())?;
        Ok(ConvWeight { kind: self.kind, cin: self.cin, cout, taps: self.taps, cin_p: self.cin_p, cout_p: self.cout_p, w, bias })
    }
}

/// Which kernel runs a convolution.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Impl {
    /// The best one for the device and dtype.
    Auto,
    /// The portable workgroup-tiled kernel (every adapter, f32 and f16).
    Tiled,
    /// The cooperative-matrix kernel (f16 storage, or f32 storage on f16 operands with
    /// `--f16-operands`; adapters with f16 16×16 or 8×8 cooperative matrices and a fixed subgroup
    /// size that splits its tiles evenly). An error where unavailable.
    Coop,
    /// The cooperative kernel on 4 subgroups instead of 8: tiles of half the rows, so twice the
    /// workgroups, for grids too small to fill a large GPU (the UNets' 16×16 level). `Auto` runs
    /// it where tuning times it faster for the shape; `bench kernels` times it beside `Auto`.
    CoopHalf,
}

/// The full problem a kernel launch solves.
#[derive(Clone, Debug)]
struct Problem {
    nb: usize,
    d: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    pad: [usize; 3],
    stride: [usize; 2],
    out_shape: Vec<usize>,
}

fn check_input(what: &str, x: &Tensor, w: &ConvWeight) -> Result<()> {
    ensure!(x.dtype() == w.dtype(), "{what}: input is {:?} but the weights are {:?}", x.dtype(), w.dtype());
    let cin = *x.shape().last().unwrap_or(&0);
    ensure!(cin == w.cin, "{what}: input {:?} has {cin} channels, the weights expect {}", x.shape(), w.cin);
    ensure!(x.numel() > 0, "{what}: empty input {:?}", x.shape());
    Ok(())
}

/// 2-D convolution of channels-last `x` `[N, H, W, Cin]` (or `[B, F, H, W, Cin]`, each frame on
/// its own) with a [`ConvKind::Conv2d`] weight, square `stride` and symmetric zero padding
/// `pad`: output `[.., Ho, Wo, Cout]` with `Ho = (H + 2·pad − kh) / stride + 1` (as PyTorch).
pub fn conv2d(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, stride: usize, pad: usize) -> Result<Tensor> {
    conv2d_with(rec, x, w, stride, pad, Impl::Auto)
}

pub fn conv2d_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, stride: usize, pad: usize, imp: Impl) -> Result<Tensor> {
    conv2d_add_with(rec, x, w, stride, pad, None, imp)
}

/// [`conv2d`] plus a [`Residual`] added as the output is stored (a resnet's skip connection, or
/// a time embedding per batch element).
pub fn conv2d_add(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, stride: usize, pad: usize, res: Residual) -> Result<Tensor> {
    conv2d_add_with(rec, x, w, stride, pad, Some(res), Impl::Auto)
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d_add_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, stride: usize, pad: usize, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    launch(rec, x, w, &conv2d_problem(x, w, stride, pad)?, res, imp)
}

fn conv2d_problem(x: &Tensor, w: &ConvWeight, stride: usize, pad: usize) -> Result<Problem> {
    ensure!(w.kind == ConvKind::Conv2d, "conv2d: weight is a {:?}", w.kind);
    check_input("conv2d", x, w)?;
    let s = x.shape();
    ensure!(s.len() == 4 || s.len() == 5, "conv2d: input {s:?} is not [N, H, W, C] or [B, F, H, W, C]");
    ensure!(stride >= 1, "conv2d: stride 0");
    let (h, wd) = (s[s.len() - 3], s[s.len() - 2]);
    let [_, kh, kw] = w.taps;
    ensure!(pad < kh && pad < kw, "conv2d: padding {pad} is not smaller than the kernel {kh}×{kw}");
    ensure!(h + 2 * pad >= kh && wd + 2 * pad >= kw, "conv2d: input {h}×{wd} (padding {pad}) is smaller than the kernel {kh}×{kw}");
    let (ho, wo) = ((h + 2 * pad - kh) / stride + 1, (wd + 2 * pad - kw) / stride + 1);
    let mut out_shape = s.to_vec();
    let r = out_shape.len();
    out_shape[r - 3] = ho;
    out_shape[r - 2] = wo;
    out_shape[r - 1] = w.cout;
    let nb = s[..s.len() - 3].iter().product();
    Ok(Problem { nb, d: 1, h, w: wd, ho, wo, pad: [0, pad, pad], stride: [stride, stride], out_shape })
}

/// `ConvTranspose2d(kernel 4, stride 2, padding 1)` of channels-last `x` `[N, H, W, Cin]` (or
/// `[B, F, H, W, Cin]`) with a [`ConvKind::ConvTranspose2d`] weight: output `[.., 2H, 2W, Cout]`.
pub fn conv_transpose2d(rec: &mut Recorder, x: &Tensor, w: &ConvWeight) -> Result<Tensor> {
    conv_transpose2d_with(rec, x, w, Impl::Auto)
}

pub fn conv_transpose2d_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, imp: Impl) -> Result<Tensor> {
    conv_transpose2d_add_with(rec, x, w, None, imp)
}

/// [`conv_transpose2d`] plus a [`Residual`] added as the output is stored.
pub fn conv_transpose2d_add(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, res: Residual) -> Result<Tensor> {
    conv_transpose2d_add_with(rec, x, w, Some(res), Impl::Auto)
}

pub fn conv_transpose2d_add_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    launch(rec, x, w, &transposed_problem(x, w)?, res, imp)
}

fn transposed_problem(x: &Tensor, w: &ConvWeight) -> Result<Problem> {
    ensure!(w.kind == ConvKind::ConvTranspose2d, "conv_transpose2d: weight is a {:?}", w.kind);
    check_input("conv_transpose2d", x, w)?;
    let s = x.shape();
    ensure!(s.len() == 4 || s.len() == 5, "conv_transpose2d: input {s:?} is not [N, H, W, C] or [B, F, H, W, C]");
    let (h, wd) = (s[s.len() - 3], s[s.len() - 2]);
    let mut out_shape = s.to_vec();
    let r = out_shape.len();
    out_shape[r - 3] = 2 * h;
    out_shape[r - 2] = 2 * wd;
    out_shape[r - 1] = w.cout;
    let nb = s[..s.len() - 3].iter().product();
    Ok(Problem { nb, d: 1, h, w: wd, ho: h, wo: wd, pad: [0, 0, 0], stride: [1, 1], out_shape })
}

/// 3-D convolution (stride 1, zero padding `k/2` in every axis, so the shape is kept) of
/// channels-last video `x` `[B, F, H, W, Cin]` with a [`ConvKind::Conv3d`] weight of odd kernel
/// sizes: output `[B, F, H, W, Cout]`. Kernel (3,1,1) / (5,1,1) is a temporal 1-D conv per pixel.
pub fn conv3d(rec: &mut Recorder, x: &Tensor, w: &ConvWeight) -> Result<Tensor> {
    conv3d_with(rec, x, w, Impl::Auto)
}

pub fn conv3d_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, imp: Impl) -> Result<Tensor> {
    conv3d_add_with(rec, x, w, None, imp)
}

/// [`conv3d`] plus a [`Residual`] added as the output is stored.
pub fn conv3d_add(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, res: Residual) -> Result<Tensor> {
    conv3d_add_with(rec, x, w, Some(res), Impl::Auto)
}

pub fn conv3d_add_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    launch(rec, x, w, &conv3d_problem(x, w)?, res, imp)
}

/// [`conv2d`] (plus an optional [`Residual`]) of `GroupNorm(x)`, then SiLU where the norm has
/// it: `norm` is the table of `x`'s statistics
/// ([`group_norm_table`](crate::ops::norm::group_norm_table)), applied in its own pass or as the
/// convolution loads its input ([`Fuse`]; the same values either way).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_normed(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, stride: usize, pad: usize, res: Option<Residual>) -> Result<Tensor> {
    conv2d_normed_with(rec, x, norm, w, stride, pad, res, Fuse::Auto, Impl::Auto)
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d_normed_with(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, stride: usize, pad: usize, res: Option<Residual>, fuse: Fuse, imp: Impl) -> Result<Tensor> {
    launch_normed(rec, x, norm, w, &conv2d_problem(x, w, stride, pad)?, res, fuse, imp)
}

/// [`conv3d`] (plus an optional [`Residual`]) of `GroupNorm(x)`, as [`conv2d_normed`].
pub fn conv3d_normed(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, res: Option<Residual>) -> Result<Tensor> {
    conv3d_normed_with(rec, x, norm, w, res, Fuse::Auto, Impl::Auto)
}

pub fn conv3d_normed_with(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, res: Option<Residual>, fuse: Fuse, imp: Impl) -> Result<Tensor> {
    launch_normed(rec, x, norm, w, &conv3d_problem(x, w)?, res, fuse, imp)
}

fn conv3d_problem(x: &Tensor, w: &ConvWeight) -> Result<Problem> {
    ensure!(w.kind == ConvKind::Conv3d, "conv3d: weight is a {:?}", w.kind);
    check_input("conv3d", x, w)?;
    let s = x.shape();
    ensure!(s.len() == 5, "conv3d: input {s:?} is not [B, F, H, W, C]");
    ensure!(w.taps.iter().all(|k| k % 2 == 1), "conv3d: kernel {:?} is not odd in every axis ('same' padding needs odd sizes)", w.taps);
    let (d, h, wd) = (s[1], s[2], s[3]);
    let [kt, kh, kw] = w.taps;
    let mut out_shape = s.to_vec();
    out_shape[4] = w.cout;
    Ok(Problem { nb: s[0], d, h, w: wd, ho: h, wo: wd, pad: [kt / 2, kh / 2, kw / 2], stride: [1, 1], out_shape })
}

/// The specialisation consts every conv kernel shares.
fn geometry(k: Kernel, taps: [usize; 3], stride: [usize; 2], transposed: bool, has_res: bool) -> Kernel {
    k.def("HAS_RES", has_res)
        .def("KT", format!("{}u", taps[0]))
        .def("KH", format!("{}u", taps[1]))
        .def("KW", format!("{}u", taps[2]))
        .def("SH", format!("{}u", stride[0]))
        .def("SW", format!("{}u", stride[1]))
        .def("TRANSPOSED", transposed)
}

/// The cooperative kernel's shape on one adapter (see conv_coop.wgsl): fragments of FS, subgroups
/// of SG lanes, NSG subgroups (8, or 4 for half the rows) each owning a 4·FS square block, BN
/// output channels per workgroup (two or four blocks wide); `prefetch`: the next K step's global
/// loads in flight during this step's multiplies (else loaded and staged in turn: fewer live
/// registers, which a standalone probe found faster on an H200 at 128 × 256, gpu-facts).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct CoopCfg {
    fs: u32,
    sg: u32,
    nsg: u32,
    bn: u32,
    prefetch: bool,
}

impl CoopCfg {
    /// Output rows per workgroup.
    fn bm(self) -> u32 {
        self.nsg / (self.bn / (4 * self.fs)) * 4 * self.fs
    }
    fn bk(self) -> u32 {
        2 * self.fs
    }
    /// Workgroup memory (bytes): the staged tiles, each subgroup's FS×FS f32 scratch and the
    /// rows' geometry.
    fn smem(self) -> u32 {
        let (bm, bk) = (self.bm(), self.bk());
        bm * (bk + 8) * 2 + bk * (self.bn + 8) * 2 + self.nsg * self.fs * self.fs * 4 + bm * 16
    }
    /// Whether the subgroups tile the block grid and the tile loads and the epilogue's copy
    /// divide evenly among the NSG·SG invocations.
    fn divides(self) -> bool {
        let wg = self.nsg * self.sg;
        let per = self.fs * self.fs / self.sg.max(1);
        let sgn = self.bn / (4 * self.fs);
        sgn > 0
            && self.nsg.is_multiple_of(sgn)
            && (self.bm() * self.bk() / 4).is_multiple_of(wg)
            && (self.bk() * self.bn / 4).is_multiple_of(wg)
            && (self.fs * self.fs).is_multiple_of(self.sg)
            && per <= self.fs
            && self.fs.is_multiple_of(per)
    }

    /// The same columns on 4 subgroups: half the rows per workgroup, twice the workgroups.
    fn halved(self) -> CoopCfg {
        CoopCfg { nsg: 4, ..self }
    }

    /// The same tile, each K step loaded and staged in turn.
    fn single_buffered(self) -> CoopCfg {
        CoopCfg { prefetch: false, ..self }
    }
}

/// Whether this adapter runs the cooperative kernel (f16, at the widest Cout).
pub fn coop_available(gpu: &Gpu) -> bool {
    coop_config(gpu, DType::F16, 256).is_ok()
}

/// Whether convolutions in `dtype` storage run on f16 operands here: f32 storage with
/// `--f16-operands`, on an adapter that runs the cooperative kernel (what `forward` and `upscale`
/// report, and what sets `forward`'s default tolerance).
pub fn on_f16_operands(gpu: &Gpu, dtype: DType) -> bool {
    dtype == DType::F32 && coop_config(gpu, dtype, 256).is_ok()
}

/// The cooperative kernel's configuration for this device, dtype and Cout, or why not.
fn coop_config(gpu: &Gpu, dtype: DType, cout: usize) -> Result<CoopCfg, String> {
    // f32 storage runs on f16 operands only where asked (`--f16-operands`).
    if !gpu.coop_takes(dtype) {
        return Err("the cooperative-matrix conv needs f16 storage, or f32 with --f16-operands".into());
    }
    let Some(fs) = gpu.coop_fragment() else {
        return Err("the adapter lacks f16 cooperative matrices (16×16×16 or 8×8×8)".into());
    };
    // The kernel splits its tile among a fixed number of subgroups, so their size must be known.
    let Some(sg) = gpu.fixed_subgroup_size() else {
        return Err(format!("the adapter's subgroup size varies ({}..{}) or it has no subgroups", gpu.info.subgroup_min_size, gpu.info.subgroup_max_size));
    };
    if 8 * sg > gpu.limits.max_compute_invocations_per_workgroup {
        return Err(format!("{} invocations per workgroup exceed the adapter's limit", 8 * sg));
    }
    let smem = gpu.limits.max_compute_workgroup_storage_size;
    let (narrow, wide) = (CoopCfg { fs, sg, nsg: 8, bn: 8 * fs, prefetch: true }, CoopCfg { fs, sg, nsg: 8, bn: 16 * fs, prefetch: true });
    let cfg = if cout > 8 * fs as usize && wide.smem() <= smem && wide.divides() { wide } else { narrow };
    if !cfg.divides() {
        return Err(format!("{fs}×{fs} fragments with {sg}-wide subgroups do not split the kernel's tiles evenly"));
    }
    if cfg.smem() > smem {
        return Err(format!("the kernel needs {} bytes of workgroup memory, the adapter has {smem}", cfg.smem()));
    }
    Ok(cfg)
}

/// A kernel and its tile, as one launch runs it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Tile {
    Coop(CoopCfg),
    /// The portable kernel with BN output channels per workgroup (16, 32 or 64).
    Tiled { bn: u32 },
}

impl Tile {
    /// Output rows × channels per workgroup.
    fn block(self) -> (u32, u32) {
        match self {
            Tile::Coop(c) => (c.bm(), c.bn),
            // 256 threads of 4 × 4 outputs.
            Tile::Tiled { bn } => ((256 / (bn / 4)) * 4, bn),
        }
    }

    fn label(self) -> String {
        let (bm, bn) = self.block();
        match self {
            Tile::Coop(c) => format!("coop {bm}x{bn} on {} subgroups{}", c.nsg, if c.prefetch { "" } else { ", loads not overlapped" }),
            Tile::Tiled { .. } => format!("tiled {bm}x{bn}"),
        }
    }
}

/// The portable kernel's tile width: the narrowest that covers Cout, at most 64.
fn tiled_bn(cout: usize) -> u32 {
    if cout <= 16 {
        16
    } else if cout <= 32 {
        32
    } else {
        64
    }
}

/// `Auto`'s candidates, the rule's choice first: the cooperative kernel where it runs and
/// Cout ≥ 64 (narrow layers, Cout 3 or 4 at the networks' ends, waste most of its tile), in
/// its 8-subgroup tile, on 4 subgroups, one output block narrower (on 8 and 4), and the first
/// two with their loads not overlapped; else the portable kernel at its width and half of it. Every candidate adds each output's products in the same
/// order (K steps of one size, taps in order), so the tuner's choice changes no value.
fn auto_tiles(gpu: &Gpu, dtype: DType, cout: usize) -> Vec<Tile> {
    let Some(cfg) = coop_config(gpu, dtype, cout).ok().filter(|_| cout >= 64) else {
        let bn = tiled_bn(cout);
        let mut v = vec![Tile::Tiled { bn }];
        if bn > 16 {
            v.push(Tile::Tiled { bn: bn / 2 });
        }
        return v;
    };
    let narrow = CoopCfg { bn: 8 * cfg.fs, ..cfg };
    let mut v = vec![cfg];
    for c in [cfg.halved(), narrow, narrow.halved(), cfg.single_buffered(), cfg.halved().single_buffered()] {
        if c.divides() && c.smem() <= gpu.limits.max_compute_workgroup_storage_size && !v.contains(&c) {
            v.push(c);
        }
    }
    v.into_iter().map(Tile::Coop).collect()
}

/// The tile `imp` asks for: `Auto` runs the tuner over [`auto_tiles`] (timing each on scratch
/// tensors of this problem the first time it meets it, where tuning is on). With `norm`, for the
/// kernel that applies it as it loads.
fn choose(gpu: &Gpu, x: &Tensor, w: &ConvWeight, pb: &Problem, norm: Option<&GnTable>, imp: Impl) -> Result<Tile> {
    Ok(match imp {
        Impl::Auto => {
            let tiles = auto_tiles(gpu, x.dtype(), w.cout);
            let key = || {
                let gn = norm.map(|n| format!(" after group norm{}", if n.silu { " + silu" } else { "" })).unwrap_or_default();
                format!("conv {} taps {:?} stride {:?} pad {:?} {} -> {} on {:?}{gn}", x.dtype().name(), w.taps, pb.stride, pb.pad, w.cin, w.cout, x.shape())
            };
            crate::kernel::tuned(gpu, key, &tiles, |t| t.label(), |r, t| {
                let scratch = r.empty(x.shape(), x.dtype())?;
                let norm = norm.map(|n| r.empty(n.table.shape(), DType::F32).map(|t| n.with_table(t))).transpose()?;
                launch_tile(r, &scratch, w, pb, None, norm.as_ref(), t).map(drop)
            })?
        }
        Impl::Tiled => Tile::Tiled { bn: tiled_bn(w.cout) },
        Impl::Coop | Impl::CoopHalf => {
            let cfg = coop_config(gpu, x.dtype(), w.cout).map_err(|e| anyhow::anyhow!("conv: cooperative kernel unavailable: {e}"))?;
            match imp {
                Impl::CoopHalf if !cfg.halved().divides() => bail!("conv: {:?} on 4 subgroups does not split its tiles evenly", cfg),
                Impl::CoopHalf => Tile::Coop(cfg.halved()),
                _ => Tile::Coop(cfg),
            }
        }
    })
}

fn launch(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, pb: &Problem, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    let tile = choose(rec.gpu(), x, w, pb, None, imp)?;
    launch_tile(rec, x, w, pb, res, None, tile)
}

/// Where a GroupNorm before a convolution is applied: in a pass of its own, or by the
/// convolution as it loads its input (no normalised tensor is written or read again, but the
/// normalisation and SiLU are redone for every tap and output tile that loads an element).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fuse {
    /// As the device says ([`Gpu::norm_into_conv`]): where tuning is on, both are timed on
    /// each new shape and the faster kept; else apart.
    Auto,
    Apart,
    Fused,
}

/// The convolution of `GroupNorm(x)` (then SiLU where `norm` has it), `norm` being the table
/// of `x`'s statistics ([`group_norm_table`](crate::ops::norm::group_norm_table)): the same
/// values as [`group_norm_apply`] followed by the convolution, with the norm applied where
/// `fuse` says.
#[allow(clippy::too_many_arguments)]
fn launch_normed(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, pb: &Problem, res: Option<Residual>, fuse: Fuse, imp: Impl) -> Result<Tensor> {
    ensure!(x.shape() == norm.shape.as_slice(), "conv: a GroupNorm table of {:?} given with the input {:?}", norm.shape, x.shape());
    let gpu = rec.gpu();
    // The normalising loads read four channels at a time.
    let fusable = w.cin.is_multiple_of(4);
    let fused = match fuse {
        Fuse::Fused => {
            ensure!(fusable, "conv: a GroupNorm can only be applied on load where Cin is a multiple of 4 (Cin = {})", w.cin);
            true
        }
        Fuse::Apart => false,
        Fuse::Auto => match gpu.norm_into_conv() {
            TuneMode::On => fusable,
            TuneMode::Off => false,
            TuneMode::Auto => fusable && gpu.tuner().is_on() && {
                let apart = choose(gpu, x, w, pb, None, imp)?;
                let together = choose(gpu, x, w, pb, Some(norm), imp)?;
                let key = || {
                    format!(
                        "group norm{} into conv {} taps {:?} stride {:?} pad {:?} {} -> {} on {:?}",
                        if norm.silu { " + silu" } else { "" },
                        x.dtype().name(),
                        w.taps,
                        pb.stride,
                        pb.pad,
                        w.cin,
                        w.cout,
                        x.shape()
                    )
                };
                let label = |f: bool| if f { format!("normalised as loaded, {}", together.label()) } else { format!("norm pass, then {}", apart.label()) };
                crate::kernel::tuned(gpu, key, &[false, true], label, |r, f| {
                    let scratch = r.empty(x.shape(), x.dtype())?;
                    let n = norm.with_table(r.empty(norm.table.shape(), DType::F32)?);
                    if f {
                        launch_tile(r, &scratch, w, pb, None, Some(&n), together).map(drop)
                    } else {
                        let h = group_norm_apply(r, &scratch, &n)?;
                        launch_tile(r, &h, w, pb, None, None, apart).map(drop)
                    }
                })?
            },
        },
    };
    if fused {
        let tile = choose(gpu, x, w, pb, Some(norm), imp)?;
        launch_tile(rec, x, w, pb, res, Some(norm), tile)
    } else {
        let h = group_norm_apply(rec, x, norm)?;
        launch(rec, &h, w, pb, res, imp)
    }
}

fn launch_tile(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, pb: &Problem, res: Option<Residual>, norm: Option<&GnTable>, tile: Tile) -> Result<Tensor> {
    let gpu = rec.gpu();
    let m = pb.nb * pb.d * pb.ho * pb.wo;
    ensure!(m > 0, "conv: empty output {:?}", pb.out_shape);
    let res_rep = match &res {
        Some(r) => r.rep("conv", &pb.out_shape, x.dtype())?,
        None => 1,
    };
    ensure!(pb.out_shape.iter().product::<usize>() < u32::MAX as usize && x.numel() < i32::MAX as usize, "conv: tensor too large for 32-bit indexing");
    let transposed = w.kind == ConvKind::ConvTranspose2d;
    let phases = if transposed { 4 } else { 1 };
    let load = match norm {
        Some(n) => {
            ensure!(w.cin.is_multiple_of(4), "conv: a GroupNorm applied on load needs Cin % 4 == 0 (Cin = {})", w.cin);
            Load::Normed { silu: n.silu }
        }
        None => Load::plain(w.cin),
    };
    let (bm, bn) = tile.block();
    let k = match tile {
        Tile::Coop(cfg) => coop_kernel(x.dtype(), w.taps, pb.stride, transposed, res.is_some(), load, cfg),
        Tile::Tiled { bn } => geometry(load.kernel("conv_tiled", "conv_tiled_gn", &SRC_TILED, x.dtype()), w.taps, pb.stride, transposed, res.is_some())
            .def("BN", format!("{bn}u"))
            .def("BK", format!("{TILED_BK}u")),
    };
    let out = rec.empty(&pb.out_shape, x.dtype())?;
    let tiles_m = (m as u32).div_ceil(bm);
    let tiles_n = (w.cout as u32).div_ceil(bn);
    let p = Params {
        nb: pb.nb as u32,
        d: pb.d as u32,
        h: pb.h as u32,
        w: pb.w as u32,
        cin: w.cin as u32,
        cout: w.cout as u32,
        cin_p: w.cin_p as u32,
        cout_p: w.cout_p as u32,
        ho: pb.ho as u32,
        wo: pb.wo as u32,
        pt: pb.pad[0] as u32,
        ph: pb.pad[1] as u32,
        pw: pb.pad[2] as u32,
        m: m as u32,
        tiles_m,
        tiles_n,
        res_rep,
        seg_px: norm.map_or(0, |n| n.seg_px as u32),
    };
    // Without a residual the bias fills its binding.
    let res_arg = res.map(|r| r.tensor()).unwrap_or(&w.bias);
    let mut binds = vec![x.into(), (&w.w).into(), (&w.bias).into(), (&out).into(), res_arg.into()];
    if let Some(n) = norm {
        binds.push((&n.table).into());
    }
    rec.dispatch(&k, &p, &binds, grid(gpu, tiles_m * tiles_n * phases))?;
    // Every output position of every phase over all taps, as PyTorch counts a convolution
    // (the time taps a tile skips as padding included).
    rec.add_flops(2.0 * (m * phases as usize) as f64 * w.cout as f64 * (w.taps.iter().product::<usize>() * w.cin) as f64);
    Ok(out)
}

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
    // level, where 16 images give the 8-subgroup tiles about one workgroup per SM of an H200)
    let full: Vec<(&str, Op, Vec<usize>, usize, bool)> = vec![
        ("conv3x3", Op::C2 { k: 3, s: 1 }, vec![16, 64, 64, 512], 512, false),
        ("conv3x3", Op::C2 { k: 3, s: 1 }, vec![16, 128, 128, 256], 256, false),
        ("conv3x3 s2", Op::C2 { k: 3, s: 2 }, vec![16, 128, 128, 256], 256, false),
        ("conv1x1", Op::C2 { k: 1, s: 1 }, vec![16, 16, 16, 1024], 1024, true),
        ("conv3x3", Op::C2 { k: 3, s: 1 }, vec![16, 16, 16, 1024], 1024, true),
        ("convT4x4 s2", Op::T2, vec![16, 32, 32, 512], 512, false),
        ("conv3d (3,1,1)", Op::C3 { kt: 3, kh: 1 }, vec![2, 8, 64, 64, 512], 512, false),
        ("conv3d (5,1,1)", Op::C3 { kt: 5, kh: 1 }, vec![2, 8, 128, 128, 256], 256, false),
        ("conv3d 3x3x3", Op::C3 { kt: 3, kh: 3 }, vec![1, 4, 512, 512, 128], 128, false),
    ];
    type Run = Box<dyn Fn(&mut Recorder) -> Result<()>>;
    let mut v = Vec::new();
    for (i, (name, op, mut s, mut cout, halved_too)) in full.into_iter().enumerate() {
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
            if coop_config(gpu, dtype, cout).is_ok_and(|c| c.halved().divides()) {
                let (x, w) = (x.clone(), w.clone());
                let run: Run = Box::new(move |r| conv2d_with(r, &x, &w, 1, k / 2, Impl::CoopHalf).map(drop));
                halved = Some(BenchCase { name: format!("{name} (4 subgroups)"), shape: shape.clone(), flops, bytes, run });
            }
        }
        let run: Run = match op {
            Op::C2 { k, s: st } => Box::new(move |r| conv2d(r, &x, &w, st, k / 2).map(drop)),
            Op::T2 => Box::new(move |r| conv_transpose2d(r, &x, &w).map(drop)),
            Op::C3 { .. } => Box::new(move |r| conv3d(r, &x, &w).map(drop)),
        };
        v.push(BenchCase { name: name.to_string(), shape, flops, bytes, run });
        v.extend(halved);
    }
    Ok(v)
}

/// CPU references in PyTorch weight layout (f64 accumulation), channels-last activations.
pub mod cpu {
    /// `nn.Conv2d` with weight `[Cout, Cin, kh, kw]`: x `[N, H, W, Cin]` → `[N, Ho, Wo, Cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(x: &[f32], n: usize, h: usize, w: usize, cin: usize, wt: &[f32], cout: usize, kh: usize, kw: usize, bias: Option<&[f32]>, stride: usize, pad: usize) -> Vec<f32> {
        let ho = (h + 2 * pad - kh) / stride + 1;
        let wo = (w + 2 * pad - kw) / stride + 1;
        let mut out = vec![0f32; n * ho * wo * cout];
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    for co in 0..cout {
                        let mut s = bias.map_or(0.0, |b| b[co] as f64);
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xo = ((b * h + iy as usize) * w + ix as usize) * cin;
                                for ci in 0..cin {
                                    s += x[xo + ci] as f64 * wt[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                                }
                            }
                        }
                        out[((b * ho + oy) * wo + ox) * cout + co] = s as f32;
                    }
                }
            }
        }
        out
    }

    /// `nn.ConvTranspose2d(k 4, s 2, p 1)` with weight `[Cin, Cout, 4, 4]`, written as PyTorch
    /// defines it (a scatter: input pixel i adds to outputs 2i − 1 + k).
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2d(x: &[f32], n: usize, h: usize, w: usize, cin: usize, wt: &[f32], cout: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let (ho, wo) = (2 * h, 2 * w);
        let mut acc = vec![0f64; n * ho * wo * cout];
        for b in 0..n {
            for iy in 0..h {
                for ix in 0..w {
                    for ky in 0..4 {
                        for kx in 0..4 {
                            let oy = (2 * iy + ky) as isize - 1;
                            let ox = (2 * ix + kx) as isize - 1;
                            if oy < 0 || ox < 0 || oy >= ho as isize || ox >= wo as isize {
                                continue;
                            }
                            let oo = ((b * ho + oy as usize) * wo + ox as usize) * cout;
                            for ci in 0..cin {
                                let xv = x[((b * h + iy) * w + ix) * cin + ci] as f64;
                                for co in 0..cout {
                                    acc[oo + co] += xv * wt[((ci * cout + co) * 4 + ky) * 4 + kx] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        acc.chunks(cout).flat_map(|px| px.iter().enumerate().map(|(co, &v)| (v + bias.map_or(0.0, |b| b[co] as f64)) as f32)).collect()
    }

    /// `nn.Conv3d(padding = (kt/2, kh/2, kw/2))` with weight `[Cout, Cin, kt, kh, kw]`:
    /// x `[B, F, H, W, Cin]` → `[B, F, H, W, Cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv3d(x: &[f32], b: usize, f: usize, h: usize, w: usize, cin: usize, wt: &[f32], cout: usize, k: [usize; 3], bias: Option<&[f32]>) -> Vec<f32> {
        let [kt, kh, kw] = k;
        let (pt, ph, pw) = ((kt / 2) as isize, (kh / 2) as isize, (kw / 2) as isize);
        let mut out = vec![0f32; b * f * h * w * cout];
        for bi in 0..b {
            for z in 0..f {
                for y in 0..h {
                    for xx in 0..w {
                        for co in 0..cout {
                            let mut s = bias.map_or(0.0, |b| b[co] as f64);
                            for dt in 0..kt {
                                for dy in 0..kh {
                                    for dx in 0..kw {
                                        let iz = z as isize + dt as isize - pt;
                                        let iy = y as isize + dy as isize - ph;
                                        let ix = xx as isize + dx as isize - pw;
                                        if iz < 0 || iy < 0 || ix < 0 || iz >= f as isize || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let xo = (((bi * f + iz as usize) * h + iy as usize) * w + ix as usize) * cin;
                                        for ci in 0..cin {
                                            s += x[xo + ci] as f64 * wt[(((co * cin + ci) * kt + dt) * kh + dy) * kw + dx] as f64;
                                        }
                                    }
                                }
                            }
                            out[(((bi * f + z) * h + y) * w + xx) * cout + co] = s as f32;
                        }
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

    const TOL: f64 = 1e-4;

    /// Random host data and its device twin (the host copy rounded like the upload).
    fn rand(rng: &mut Rng, n: usize, scale: f32, dt: DType) -> Vec<f32> {
        let v = rng.normals(n, scale);
        if dt == DType::F16 {
            round_f16(&v)
        } else {
            v
        }
    }

    /// The kernels to test in `dt`: the portable one always, the cooperative one where the
    /// adapter has it (else a note that it was skipped).
    fn imps(gpu: &Gpu, dt: DType) -> Vec<Impl> {
        let mut v = vec![Impl::Tiled];
        if dt == DType::F16 {
            match coop_config(gpu, dt, 256) {
                Ok(_) => v.extend([Impl::Coop, Impl::CoopHalf]),
                Err(e) => eprintln!("cooperative conv skipped: adapter lacks cooperative matrices ({e})"),
            }
        }
        v
    }

    /// The cooperative kernel is only compiled on adapters that have cooperative matrices, so
    /// parse, validate and translate it to SPIR-V here for every specialisation the dispatch
    /// functions can pick, on any machine.
    #[test]
    fn coop_kernels_validate_and_translate() {
        let specs: &[([usize; 3], [usize; 2], bool)] =
            &[([1, 1, 1], [1, 1], false), ([1, 3, 3], [1, 1], false), ([1, 3, 3], [2, 2], false), ([1, 2, 2], [1, 1], true), ([3, 1, 1], [1, 1], false), ([5, 1, 1], [1, 1], false), ([3, 3, 3], [1, 1], false)];
        for &(taps, stride, transposed) in specs {
            for load in [Load::Scalar, Load::Vec4, Load::Normed { silu: true }, Load::Normed { silu: false }] {
                for (fs, sg, bn, has_res) in [(16, 32, 128, false), (16, 32, 256, true), (16, 16, 128, true), (16, 64, 256, false), (8, 8, 64, true), (8, 8, 128, false), (8, 32, 128, true)] {
                    // 8 subgroups with overlapped loads and 4 without; f16 storage, and f32
                    // storage on f16 operands (`--f16-operands`).
                    let cfgs = [CoopCfg { fs, sg, nsg: 8, bn, prefetch: true }, CoopCfg { fs, sg, nsg: 4, bn, prefetch: false }];
                    for (cfg, dt) in cfgs.into_iter().flat_map(|c| [(c, DType::F16), (c, DType::F32)]) {
                        assert!(cfg.divides(), "{cfg:?}");
                        let k = coop_kernel(dt, taps, stride, transposed, has_res, load, cfg);
                        let (module, _) = translate_check(&k);
                        // The parameter block is the Rust one (checked at dispatch where the kernel runs).
                        assert_eq!(crate::gpu::pipelines::uniform_size(&module).unwrap(), std::mem::size_of::<Params>() as u64);
                        // The workgroup memory the host checks for is what the shader declares.
                        let mut layouter = naga::proc::Layouter::default();
                        layouter.update(module.to_ctx()).unwrap();
                        let wg: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
                        assert_eq!(wg, cfg.smem(), "{cfg:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn coop_matches_cpu_at_network_widths() {
        // Long K loops (K = 4608 and 3456) at the UNet's and VAE's channel counts; the small
        // cases above cover the edges. Only where the cooperative kernel runs.
        let gpu = test_gpu();
        let dt = DType::F16;
        if let Err(e) = coop_config(&gpu, dt, 512) {
            eprintln!("skipped: adapter lacks cooperative matrices ({e})");
            return;
        }
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (n, h, w, c) = (1, 12, 20, 512);
        let xv = rand(&mut rng, n * h * w * c, 1.0, dt);
        let wv = rand(&mut rng, c * c * 9, 0.02, dt);
        let bv = rand(&mut rng, c, 0.5, dt);
        let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, c], dt).unwrap();
        let cw = ConvWeight::from_torch(&gpu, &wv, &[c, c, 3, 3], Some(&bv), dt).unwrap();
        let mut rec = gpu.recorder();
        let y = conv2d_with(&mut rec, &x, &cw, 1, 1, Impl::Coop).unwrap();
        rec.submit();
        let want = cpu::conv2d(&xv, n, h, w, c, &wv, c, 3, 3, Some(&bv), 1, 1);
        assert_close(&format!("coop conv2d 3x3 512 seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));

        check_coop_conv3d(&gpu, &mut rng, dt, [3, 8, 8, 128], 0.03, dt.tolerance(TOL), &format!("coop, seed {seed}"));
    }

    /// A 3×3×3 conv of C channels over F frames (`[F, H, W, C]`) on the cooperative kernel,
    /// against the CPU.
    fn check_coop_conv3d(gpu: &Gpu, rng: &mut Rng, dt: DType, [f, h, w, c]: [usize; 4], scale: f32, tol: f64, what: &str) {
        let xv = rand(rng, f * h * w * c, 1.0, dt);
        let wv = rand(rng, c * c * 27, scale, dt);
        let x = Tensor::from_f32(gpu, &xv, &[1, f, h, w, c], dt).unwrap();
        let cw = ConvWeight::from_torch(gpu, &wv, &[c, c, 3, 3, 3], None, dt).unwrap();
        let mut rec = gpu.recorder();
        let y = conv3d_with(&mut rec, &x, &cw, Impl::Coop).unwrap();
        rec.submit();
        let want = cpu::conv3d(&xv, 1, f, h, w, c, &wv, c, [3, 3, 3], None);
        assert_close(&format!("{what}: conv3d 3x3x3 {c}"), &y.to_f32(gpu).unwrap(), &want, tol);
    }

    /// The tuner's premise and its use: `Auto`'s candidate tiles give the same bytes, and with
    /// tuning on, `Auto` times every candidate once per shape and runs one of them. 3×3, 1×1,
    /// strided, transposed and 3×3×3 convolutions at awkward sizes (tiles that straddle images,
    /// frames whose time taps reach padding), in every dtype the adapter stores. On CI's
    /// lavapipe the candidates are the portable kernel's two widths; where the cooperative
    /// kernel runs (tools/coop-lavapipe.sh, a GPU), its tiles on 8 and 4 subgroups, one or two
    /// blocks wide, loads overlapped or not.
    #[test]
    fn tuned_tiles_agree_byte_for_byte() {
        // No cache file: every candidate must be timed here.
        let gpu = Gpu::new(&crate::GpuOptions { tune: crate::gpu::TuneMode::On, tune_cache: None, ..crate::GpuOptions::from_env() }).unwrap();
        gpu.set_poison(true);
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (input shape, weight shape, stride, what)
        let cases: [(&[usize], &[usize], usize, &str); 5] = [
            (&[2, 7, 9, 36], &[72, 36, 3, 3], 1, "3x3"),
            (&[1, 33, 5, 64], &[96, 64, 1, 1], 1, "1x1"),
            (&[2, 9, 7, 33], &[68, 33, 3, 3], 2, "3x3 s2"),
            (&[1, 5, 6, 40], &[40, 80, 4, 4], 1, "transposed"),
            (&[1, 3, 6, 7, 24], &[64, 24, 3, 3, 3], 1, "3x3x3"),
        ];
        for dt in gpu.dtypes() {
            for &(xs, ws, stride, what) in &cases {
                let x = Tensor::from_f32(&gpu, &rand(&mut rng, xs.iter().product(), 1.0, dt), xs, dt).unwrap();
                let wv = rand(&mut rng, ws.iter().product(), 0.1, dt);
                let bv = rand(&mut rng, if what == "transposed" { ws[1] } else { ws[0] }, 0.5, dt);
                let (cw, pb) = match what {
                    "transposed" => {
                        let cw = ConvWeight::from_torch_transposed(&gpu, &wv, ws, Some(&bv), dt).unwrap();
                        let pb = transposed_problem(&x, &cw).unwrap();
                        (cw, pb)
                    }
                    "3x3x3" => {
                        let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&bv), dt).unwrap();
                        let pb = conv3d_problem(&x, &cw).unwrap();
                        (cw, pb)
                    }
                    _ => {
                        let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&bv), dt).unwrap();
                        let pb = conv2d_problem(&x, &cw, stride, ws[2] / 2).unwrap();
                        (cw, pb)
                    }
                };
                let tiles = auto_tiles(&gpu, dt, cw.cout);
                assert!(tiles.len() >= 2, "{what}: one candidate {tiles:?}: nothing for the tuner to choose");
                let run = |imp: Option<Tile>| {
                    let mut rec = gpu.recorder();
                    let y = match imp {
                        Some(t) => launch_tile(&mut rec, &x, &cw, &pb, None, None, t),
                        None => launch(&mut rec, &x, &cw, &pb, None, Impl::Auto),
                    }
                    .unwrap();
                    rec.submit();
                    y.read_bytes(&gpu).unwrap()
                };
                let first = run(Some(tiles[0]));
                for &t in &tiles[1..] {
                    assert!(run(Some(t)) == first, "{what} {}: {} gives other bytes than {} (seed {seed})", dt.name(), t.label(), tiles[0].label());
                }
                assert!(run(None) == first, "{what} {}: the tuned launch differs (seed {seed})", dt.name());
                let picks = gpu.tuner().picks();
                let tuned = picks.iter().find(|t| t.key.contains(&format!("{} -> {} on {:?}", cw.cin, cw.cout, xs)) && t.key.contains(dt.name())).expect("the tuner kept no choice");
                assert_eq!(tuned.labels, tiles.iter().map(|t| t.label()).collect::<Vec<_>>());
                assert!(tuned.seconds.iter().all(|s| s.is_some_and(|s| s > 0.0)), "{what}: a candidate was not timed: {tuned:?}");
            }
        }
    }

    /// f32 storage takes the cooperative kernel (f16 operands, f32 accumulation and stores) only
    /// with `--f16-operands`, and then matches the CPU within f16 operand rounding: awkward sizes,
    /// a residual store, the 3-D kernel. Runs where the adapter has cooperative matrices
    /// (tools/coop-lavapipe.sh, a GPU).
    #[test]
    fn f32_storage_takes_f16_operands_only_where_asked() {
        let dt = DType::F32;
        let plain = test_gpu();
        assert!(plain.f16_operands() || coop_config(&plain, dt, 256).is_err(), "f32 convs must stay exact by default");
        let gpu = Gpu::new(&crate::GpuOptions { f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
        if let Err(e) = coop_config(&gpu, dt, 256) {
            eprintln!("skipped: {e}");
            return;
        }
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // Operands rounded to 11 significant bits: about 3e-4 relative per product, averaging out.
        let tol = DType::F16.tolerance(TOL);
        for &(n, h, w, cin, cout) in &[(1usize, 7usize, 9usize, 33usize, 77usize), (2, 5, 6, 64, 130)] {
            let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
            let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
            let bv = rand(&mut rng, cout, 0.5, dt);
            let rv = rand(&mut rng, n * h * w * cout, 1.0, dt);
            let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
            let r = Tensor::from_f32(&gpu, &rv, &[n, h, w, cout], dt).unwrap();
            let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
            let mut rec = gpu.recorder();
            let y = conv2d_add_with(&mut rec, &x, &cw, 1, 1, Some(Residual::Same(&r)), Impl::Coop).unwrap();
            rec.submit();
            let mut want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, Some(&bv), 1, 1);
            want.iter_mut().zip(&rv).for_each(|(a, b)| *a += b);
            assert_close(&format!("f32 on f16 operands: conv2d {n}x{h}x{w} {cin}->{cout} + residual, seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, tol);
        }
        check_coop_conv3d(&gpu, &mut rng, dt, [3, 5, 7, 64], 0.1, tol, &format!("f32 on f16 operands, seed {seed}"));
    }

    #[test]
    fn auto_picks_a_kernel_that_matches_cpu() {
        // The public entry points (Impl::Auto) at a width where the cooperative kernel is
        // chosen when available.
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (n, h, w, cin, cout) = (1, 5, 6, 24, 72);
        for dt in gpu.dtypes() {
            let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
            let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
            let bv = rand(&mut rng, cout, 0.5, dt);
            let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
            let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
            let mut rec = gpu.recorder();
            let y = conv2d(&mut rec, &x, &cw, 1, 1).unwrap();
            rec.submit();
            let want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, Some(&bv), 1, 1);
            assert_close(&format!("conv2d auto {dt:?} seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
        }
    }

    #[test]
    fn conv2d_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (n, h, w, cin, cout, k, stride, pad, bias)
        let cases = [
            (1, 1, 1, 1, 1, 1, 1, 0, true),
            (2, 7, 5, 33, 77, 1, 1, 0, true),
            (3, 9, 13, 16, 20, 1, 1, 0, false),
            (1, 1, 1, 4, 7, 3, 1, 1, true),
            (2, 7, 5, 7, 33, 3, 1, 1, true),
            (1, 9, 13, 33, 77, 3, 1, 1, false),
            (3, 5, 7, 20, 1, 3, 1, 1, true),
            (1, 1, 1, 8, 3, 3, 2, 1, true),
            (2, 9, 13, 33, 7, 3, 2, 1, true),
            (1, 8, 6, 16, 65, 3, 2, 1, false),
            // Wider than the cooperative kernel's 128-column tile option.
            (1, 9, 13, 40, 150, 3, 1, 1, true),
        ];
        for dt in gpu.dtypes() {
            for imp in imps(&gpu, dt) {
                for &(n, h, w, cin, cout, k, st, pad, with_bias) in &cases {
                    let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
                    let wv = rand(&mut rng, cout * cin * k * k, 0.3, dt);
                    let bv = rand(&mut rng, cout, 0.5, dt);
                    let bias = with_bias.then_some(&bv[..]);
                    let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
                    let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, k, k], bias, dt).unwrap();
                    let mut rec = gpu.recorder();
                    let y = conv2d_with(&mut rec, &x, &cw, st, pad, imp).unwrap();
                    rec.submit();
                    let want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, k, k, bias, st, pad);
                    let (ho, wo) = ((h + 2 * pad - k) / st + 1, (w + 2 * pad - k) / st + 1);
                    assert_eq!(y.shape(), &[n, ho, wo, cout]);
                    let what = format!("conv2d {imp:?} {dt:?} x[{n},{h},{w},{cin}] k{k} s{st} p{pad} -> {cout} bias {with_bias} seed {seed}");
                    assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }
            }
        }
    }

    #[test]
    fn conv2d_per_frame_on_video_layout() {
        // [B, F, H, W, C] runs each frame on its own: same as the [B·F, H, W, C] reference.
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (b, f, h, w, cin, cout) = (2, 3, 5, 7, 12, 9);
        for dt in gpu.dtypes() {
            let xv = rand(&mut rng, b * f * h * w * cin, 1.0, dt);
            let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
            let bv = rand(&mut rng, cout, 0.5, dt);
            let x = Tensor::from_f32(&gpu, &xv, &[b, f, h, w, cin], dt).unwrap();
            let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
            let mut rec = gpu.recorder();
            let y = conv2d(&mut rec, &x, &cw, 1, 1).unwrap();
            rec.submit();
            assert_eq!(y.shape(), &[b, f, h, w, cout]);
            let want = cpu::conv2d(&xv, b * f, h, w, cin, &wv, cout, 3, 3, Some(&bv), 1, 1);
            assert_close(&format!("conv2d video {dt:?} seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
        }
    }

    #[test]
    fn conv_transpose2d_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (n, h, w, cin, cout, bias)
        let cases = [(1, 1, 1, 1, 1, true), (2, 7, 5, 33, 20, true), (1, 9, 13, 8, 77, false), (3, 4, 6, 7, 3, true), (2, 9, 13, 16, 144, true)];
        for dt in gpu.dtypes() {
            for imp in imps(&gpu, dt) {
                for &(n, h, w, cin, cout, with_bias) in &cases {
                    let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
                    let wv = rand(&mut rng, cin * cout * 16, 0.3, dt);
                    let bv = rand(&mut rng, cout, 0.5, dt);
                    let bias = with_bias.then_some(&bv[..]);
                    let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
                    let cw = ConvWeight::from_torch_transposed(&gpu, &wv, &[cin, cout, 4, 4], bias, dt).unwrap();
                    let mut rec = gpu.recorder();
                    let y = conv_transpose2d_with(&mut rec, &x, &cw, imp).unwrap();
                    rec.submit();
                    assert_eq!(y.shape(), &[n, 2 * h, 2 * w, cout]);
                    let want = cpu::conv_transpose2d(&xv, n, h, w, cin, &wv, cout, bias);
                    let what = format!("convT {imp:?} {dt:?} x[{n},{h},{w},{cin}] -> {cout} bias {with_bias} seed {seed}");
                    assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }
            }
        }
    }

    #[test]
    fn conv3d_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (b, f, h, w, cin, cout, kernel, bias)
        let cases = [
            (1, 1, 1, 1, 1, 1, [3, 1, 1], true),
            (2, 3, 7, 5, 33, 77, [3, 1, 1], true),
            (1, 8, 5, 3, 16, 20, [3, 1, 1], false),
            (1, 8, 3, 7, 33, 7, [5, 1, 1], true),
            (2, 3, 5, 5, 8, 40, [5, 1, 1], true),
            (1, 1, 5, 7, 7, 9, [3, 3, 3], true),
            (2, 3, 7, 5, 12, 33, [3, 3, 3], false),
            (1, 8, 4, 3, 3, 3, [3, 3, 3], true),
            (1, 3, 5, 7, 36, 136, [3, 3, 3], true),
            // Frames of 128, 135 and 256 rows: tiles that lie within the first or last frames
            // skip the time taps that only reach padding (live_time_taps), others straddle two
            // frames or two batch entries.
            (1, 4, 8, 16, 16, 40, [3, 3, 3], true),
            (2, 5, 9, 15, 8, 20, [5, 1, 1], true),
            (1, 8, 16, 16, 8, 64, [3, 1, 1], false),
        ];
        for dt in gpu.dtypes() {
            for imp in imps(&gpu, dt) {
                for &(b, f, h, w, cin, cout, k, with_bias) in &cases {
                    let xv = rand(&mut rng, b * f * h * w * cin, 1.0, dt);
                    let wv = rand(&mut rng, cout * cin * k.iter().product::<usize>(), 0.3, dt);
                    let bv = rand(&mut rng, cout, 0.5, dt);
                    let bias = with_bias.then_some(&bv[..]);
                    let x = Tensor::from_f32(&gpu, &xv, &[b, f, h, w, cin], dt).unwrap();
                    let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, k[0], k[1], k[2]], bias, dt).unwrap();
                    let mut rec = gpu.recorder();
                    let y = conv3d_with(&mut rec, &x, &cw, imp).unwrap();
                    rec.submit();
                    assert_eq!(y.shape(), &[b, f, h, w, cout]);
                    let want = cpu::conv3d(&xv, b, f, h, w, cin, &wv, cout, k, bias);
                    let what = format!("conv3d {imp:?} {dt:?} x[{b},{f},{h},{w},{cin}] k{k:?} -> {cout} bias {with_bias} seed {seed}");
                    assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }
            }
        }
    }

    /// The residual epilogue of every conv kind against conv-then-add on the CPU: same-shape
    /// residuals (a strided conv, the transposed conv's scattered phases, a 3×3×3 conv) and
    /// per-batch `[B, Cout]` ones over a video window (the resnets' time embedding).
    #[test]
    fn residual_epilogue_matches_cpu() {
        use crate::ops::residual::cpu as res_cpu;
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (kind, input shape, cout, kernel, stride, per batch)
        type Case = (ConvKind, &'static [usize], usize, [usize; 3], usize, bool);
        let cases: [Case; 5] = [
            (ConvKind::Conv2d, &[2, 7, 5, 7], 33, [1, 3, 3], 2, false),
            (ConvKind::Conv2d, &[2, 3, 5, 7, 12], 9, [1, 3, 3], 1, true),
            (ConvKind::ConvTranspose2d, &[2, 4, 6, 8], 20, [1, 4, 4], 2, false),
            (ConvKind::Conv3d, &[2, 3, 5, 4, 12], 36, [3, 1, 1], 1, true),
            (ConvKind::Conv3d, &[1, 3, 5, 7, 8], 77, [3, 3, 3], 1, false),
        ];
        for dt in gpu.dtypes() {
            for imp in imps(&gpu, dt) {
                for &(kind, xs, cout, k, st, per_batch) in &cases {
                    let cin = xs[xs.len() - 1];
                    let taps: usize = k.iter().product();
                    let xv = rand(&mut rng, xs.iter().product(), 1.0, dt);
                    let wv = rand(&mut rng, cout * cin * taps, 0.3, dt);
                    let bv = rand(&mut rng, cout, 0.5, dt);
                    let x = Tensor::from_f32(&gpu, &xv, xs, dt).unwrap();
                    let (h, w) = (xs[xs.len() - 3], xs[xs.len() - 2]);
                    let (mut want, ws) = match kind {
                        ConvKind::Conv2d => {
                            let n = xs[..xs.len() - 3].iter().product();
                            let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
                            (cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, Some(&bv), st, 1), cw)
                        }
                        ConvKind::ConvTranspose2d => {
                            let cw = ConvWeight::from_torch_transposed(&gpu, &wv, &[cin, cout, 4, 4], Some(&bv), dt).unwrap();
                            (cpu::conv_transpose2d(&xv, xs[0], h, w, cin, &wv, cout, Some(&bv)), cw)
                        }
                        ConvKind::Conv3d => {
                            let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, k[0], k[1], k[2]], Some(&bv), dt).unwrap();
                            (cpu::conv3d(&xv, xs[0], xs[1], h, w, cin, &wv, cout, k, Some(&bv)), cw)
                        }
                    };
                    let rows = want.len() / cout;
                    let rn = if per_batch { xs[0] * cout } else { want.len() };
                    let rv = rand(&mut rng, rn, 1.0, dt);
                    let r = Tensor::from_f32(&gpu, &rv, &[rn / cout, cout], dt).unwrap();
                    let res = if per_batch { Residual::PerBatch(&r) } else { Residual::Same(&r) };
                    let mut rec = gpu.recorder();
                    let y = match kind {
                        ConvKind::Conv2d => conv2d_add_with(&mut rec, &x, &ws, st, 1, Some(res), imp),
                        ConvKind::ConvTranspose2d => conv_transpose2d_add_with(&mut rec, &x, &ws, Some(res), imp),
                        ConvKind::Conv3d => conv3d_add_with(&mut rec, &x, &ws, Some(res), imp),
                    }
                    .unwrap();
                    rec.submit();
                    res_cpu::add(&mut want, &rv, cout, if per_batch { rows / xs[0] } else { 1 });
                    let what = format!("{kind:?} + residual (per batch {per_batch}) {imp:?} {dt:?} x{xs:?} -> {cout} seed {seed}");
                    assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let gpu = test_gpu();
        let dt = DType::F32;
        let x = Tensor::from_f32(&gpu, &[1.0; 2 * 3 * 3 * 4], &[2, 3, 3, 4], dt).unwrap();
        let w5 = ConvWeight::from_torch(&gpu, &[0.5; 8 * 5 * 9], &[8, 5, 3, 3], None, dt).unwrap();
        let w4 = ConvWeight::from_torch(&gpu, &[0.5; 8 * 4 * 9], &[8, 4, 3, 3], None, dt).unwrap();
        let w3d = ConvWeight::from_torch(&gpu, &[0.5; 8 * 4 * 3], &[8, 4, 3, 1, 1], None, dt).unwrap();
        let mut rec = gpu.recorder();
        assert!(conv2d(&mut rec, &x, &w5, 1, 1).is_err(), "channel mismatch");
        assert!(conv2d(&mut rec, &x, &w3d, 1, 1).is_err(), "3-D weight in conv2d");
        assert!(conv3d(&mut rec, &x, &w3d).is_err(), "4-D input to conv3d");
        assert!(conv_transpose2d(&mut rec, &x, &w4).is_err(), "conv2d weight in conv_transpose2d");
        assert!(conv2d(&mut rec, &x, &w4, 1, 3).is_err(), "padding >= kernel");
        assert!(ConvWeight::from_torch(&gpu, &[0.5; 10], &[8, 4, 3, 3], None, dt).is_err(), "wrong length");
        assert!(ConvWeight::from_torch_transposed(&gpu, &[0.5; 4 * 4 * 9], &[4, 4, 3, 3], None, dt).is_err(), "ConvT k3");
        assert!(ConvWeight::from_torch(&gpu, &[0.5; 8 * 4 * 9], &[8, 4, 3, 3], Some(&[0.0; 7]), dt).is_err(), "bias length");
        if gpu.has_f16() {
            let xh = Tensor::from_f32(&gpu, &[1.0; 2 * 3 * 3 * 4], &[2, 3, 3, 4], DType::F16).unwrap();
            assert!(conv2d(&mut rec, &xh, &w4, 1, 1).is_err(), "dtype mismatch");
        }
        assert!(conv2d(&mut rec, &x, &w4, 1, 1).is_ok());
        rec.submit();
    }

    /// A GroupNorm (+ SiLU) applied as the convolution loads its input gives what its own pass
    /// then the convolution give, byte for byte, and what the CPU gives: per-image and pooled
    /// statistics, groups whose channels straddle the kernel's 4-channel loads (5 per group),
    /// padding taps (which stay zero: the padding is the norm's output's), tiles that straddle
    /// images and frames, strided, 1×1, temporal and 3×3×3 kernels, a residual, on every kernel
    /// the adapter runs.
    #[test]
    fn normed_input_matches_the_norm_pass() {
        use crate::ops::norm::{cpu as norm_cpu, group_norm_table, GroupNormOpts, NormWeight};
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (input shape, groups, weight shape, stride, pooled over the frames, silu, residual)
        type Case = (&'static [usize], usize, &'static [usize], usize, bool, bool, bool);
        let cases: [Case; 5] = [
            (&[2, 3, 7, 9, 40], 8, &[33, 40, 3, 3], 1, false, true, false),
            (&[1, 5, 6, 64], 32, &[64, 64, 3, 3], 2, false, false, true),
            (&[1, 33, 1, 8], 2, &[77, 8, 1, 1], 1, false, true, false),
            (&[2, 3, 5, 7, 64], 32, &[64, 64, 3, 1, 1], 1, true, true, true),
            (&[1, 4, 5, 3, 12], 4, &[7, 12, 3, 3, 3], 1, true, false, false),
        ];
        for dt in gpu.dtypes() {
            for imp in imps(&gpu, dt) {
                for &(xs, groups, ws, stride, pooled, silu, with_res) in &cases {
                    let what = format!("{} {imp:?} x {xs:?} w {ws:?} pooled {pooled} silu {silu} res {with_res} seed {seed}", dt.name());
                    let c = xs[xs.len() - 1];
                    let (h, w) = (xs[xs.len() - 3], xs[xs.len() - 2]);
                    let frames = if xs.len() == 5 { xs[1] } else { 1 };
                    // A mean far from zero, so a wrong segment or channel in the table shows.
                    let xv: Vec<f32> = rand(&mut rng, xs.iter().product(), 2.0, dt).iter().map(|v| v + 3.0).collect();
                    let xv = if dt == DType::F16 { round_f16(&xv) } else { xv };
                    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
                    let beta = rng.normals(c, 0.5);
                    let nw = NormWeight::from_torch(&gpu, &gamma, &beta).unwrap();
                    let wv = rand(&mut rng, ws.iter().product(), 0.2, dt);
                    let bv = rand(&mut rng, ws[0], 0.5, dt);
                    let x = Tensor::from_f32(&gpu, &xv, xs, dt).unwrap();
                    let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&bv), dt).unwrap();

                    // The CPU: the norm, rounded as the GPU stores it, then the convolution.
                    let n = xs[..xs.len() - 3].iter().product::<usize>();
                    let normed = norm_cpu::group_norm(&xv, n, h * w, c, groups, 1e-5, &gamma, &beta, frames, pooled, silu);
                    let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                    let mut want = if ws.len() == 5 {
                        cpu::conv3d(&normed, xs[0], frames, h, w, c, &wv, ws[0], [ws[2], ws[3], ws[4]], Some(&bv))
                    } else {
                        cpu::conv2d(&normed, n, h, w, c, &wv, ws[0], ws[2], ws[3], Some(&bv), stride, ws[2] / 2)
                    };
                    let mut out_shape = xs.to_vec();
                    let r = out_shape.len();
                    out_shape[r - 3] = (h + 2 * (ws[2] / 2) - ws[2]) / stride + 1;
                    out_shape[r - 2] = (w + 2 * (ws[3] / 2) - ws[3]) / stride + 1;
                    out_shape[r - 1] = ws[0];
                    let skip_v = rand(&mut rng, want.len(), 1.0, dt);
                    let skip = Tensor::from_f32(&gpu, &skip_v, &out_shape, dt).unwrap();
                    if with_res {
                        want.iter_mut().zip(&skip_v).for_each(|(o, s)| *o += s);
                    }

                    let run = |fuse: Fuse| {
                        let mut rec = gpu.recorder();
                        let opts = GroupNormOpts { frames, pooled, silu };
                        let t = group_norm_table(&mut rec, &x, groups, 1e-5, &nw.gamma, &nw.beta, opts).unwrap();
                        let res = with_res.then_some(Residual::Same(&skip));
                        let y = if ws.len() == 5 {
                            conv3d_normed_with(&mut rec, &x, &t, &cw, res, fuse, imp)
                        } else {
                            conv2d_normed_with(&mut rec, &x, &t, &cw, stride, ws[2] / 2, res, fuse, imp)
                        }
                        .unwrap();
                        rec.submit();
                        assert_eq!(y.shape(), out_shape.as_slice(), "{what}");
                        (y.read_bytes(&gpu).unwrap(), y.to_f32(&gpu).unwrap())
                    };
                    let (fused_bytes, fused) = run(Fuse::Fused);
                    assert_close(&format!("normed conv, {what}"), &fused, &want, dt.tolerance(TOL));
                    let (apart_bytes, _) = run(Fuse::Apart);
                    assert!(fused_bytes == apart_bytes, "{what}: the norm applied on load changes the bytes of the norm pass's result");
                }
            }
        }
    }
}
