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
//! * an `Upsample2D`'s 3×3 convolution of the nearest ×2 upsampling of its input, folded into a
//!   transposed one ([`ConvWeight::of_upsampling`]): 4/9 of the multiplies, and the upsampled
//!   tensor is never written.
//! * [`conv3d_planes_into`]: several 3-D convolutions in one dispatch, each part of a batch by
//!   its own weight (Winograd's 16 products, `ops::winograd`), run like a transposed
//!   convolution's phases.
//!
//! Two kernels, each one shader specialised by consts (taps per axis, stride, transposed) for
//! every variant above: `conv.wgsl`, portable (workgroup-memory tiles, 4×4 outputs per
//! thread, f32 or f16 storage), and `conv_coop.wgsl`, cooperative matrices (f16 storage, or f32
//! storage rounded to f16 operands with `--f16-operands`; f32 accumulation; adapters with f16
//! 16×16 or 8×8 matrices and a fixed subgroup size). [`Impl`] picks; `Auto` takes the
//! cooperative kernel where it runs and Cout ≥ 64, and where tuning is on (`gpu/tune.rs`) times
//! that kernel's tiles on each new shape and keeps the fastest. Both can add a [`Residual`] to
//! the output as they store it (the `_add` functions), take their input through a GroupNorm
//! (+ SiLU), applied in its own pass or as they load (the `_normed` functions, [`Fuse`]), and
//! read a channel pair of two tensors as one input ([`Input::channels`], a UNet's activation
//! and its skip) without its concatenation being written.
//! Weights are repacked once by [`ConvWeight`] from PyTorch's layout to
//! `[phase][tap][Cin padded to 32][Cout padded to 8]` (K-major rows of Cout): a K step reads
//! one contiguous weight row per channel, and the zero padding removes every bounds check on
//! the weight side.

use anyhow::{bail, ensure, Result};

use crate::gpu::Gpu;
use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::input::{Input, PairGeometry};
use crate::ops::norm::{group_norm_apply, GnTable};
pub use crate::ops::norm::Fuse;
use crate::ops::residual::Residual;
use crate::ops::pack::{Placement, Src};
use crate::ops::synthetic::Packing;
use crate::tensor::{DType, Tensor};

mod bench;
pub mod cpu;
#[cfg(test)]
mod tests;
mod tiles;
mod weight;

pub use bench::bench_cases;
pub use tiles::{coop_available, on_f16_operands};
use tiles::{auto_tiles, coop_config, coop_divides, tiled_bn, CoopCfg, Tile};
pub use weight::{ConvKind, ConvWeight};

/// Sources of each kernel for the ways it loads its input ([`Load`]): four channels at a time
/// (Cin % 4 == 0), one at a time, four at a time through a GroupNorm (`conv_x_norm.wgsl`), and
/// the first and last of these from a channel pair (`conv_x_pair.wgsl`).
macro_rules! conv_sources {
    ($kernel:expr) => {
        [
            concat!(
                include_str!("../../../shaders/conv_geom.wgsl"),
                include_str!("../../../shaders/conv_x_vec4.wgsl"),
                include_str!("../../../shaders/conv_x_plain.wgsl"),
                $kernel
            ),
            concat!(
                include_str!("../../../shaders/conv_geom.wgsl"),
                include_str!("../../../shaders/conv_x_scalar.wgsl"),
                include_str!("../../../shaders/conv_x_plain.wgsl"),
                $kernel
            ),
            concat!(
                include_str!("../../../shaders/conv_geom.wgsl"),
                include_str!("../../../shaders/conv_x_vec4.wgsl"),
                include_str!("../../../shaders/conv_x_norm.wgsl"),
                $kernel
            ),
            concat!(
                include_str!("../../../shaders/conv_geom.wgsl"),
                include_str!("../../../shaders/conv_x_pair.wgsl"),
                include_str!("../../../shaders/conv_x_plain.wgsl"),
                $kernel
            ),
            concat!(
                include_str!("../../../shaders/conv_geom.wgsl"),
                include_str!("../../../shaders/conv_x_pair.wgsl"),
                include_str!("../../../shaders/conv_x_norm.wgsl"),
                $kernel
            ),
        ]
    };
}
const SRC_TILED: [&str; 5] = conv_sources!(include_str!("../../../shaders/conv.wgsl"));
/// The convolution's side (`conv_coop.wgsl`) of the GEMM core it shares with the matmul
/// (`coop_gemm.wgsl`), on vec4 staged tiles.
const SRC_COOP: [&str; 5] = conv_sources!(concat!(
    include_str!("../../../shaders/conv_coop.wgsl"),
    "\n",
    include_str!("../../../shaders/coop_gemm.wgsl"),
    "\n",
    include_str!("../../../shaders/coop_tiles_s4.wgsl")
));
/// The kernels' names by load: plain, normalised, from a pair, both.
const NAMES_TILED: [&str; 4] = ["conv_tiled", "conv_tiled_gn", "conv_tiled_pair", "conv_tiled_gn_pair"];
const NAMES_COOP: [&str; 4] = ["conv_coop", "conv_coop_gn", "conv_coop_pair", "conv_coop_gn_pair"];

/// How a kernel loads its input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Load {
    /// As stored, four channels per load (Cin % 4 == 0).
    Vec4,
    /// As stored, channel by channel (any Cin, e.g. 3 or 4 at the networks' ends).
    Scalar,
    /// Four channels per load, normalised by a GroupNorm's table (then SiLU when `silu`).
    Normed { silu: bool },
    /// As `Vec4` or `Normed`, from a channel pair (`Input::Pair`), whose second part is bound
    /// at `x2_binding`.
    Pair { norm: Option<bool>, x2_binding: u32 },
}

impl Load {
    fn plain(cin: usize) -> Load {
        if cin.is_multiple_of(4) {
            Load::Vec4
        } else {
            Load::Scalar
        }
    }

    /// The kernel with this load: its source among `srcs`, its name among `names` and consts.
    fn kernel(self, names: &[&'static str; 4], srcs: &[&'static str; 5], dtype: DType) -> Kernel {
        match self {
            Load::Vec4 => Kernel::new(names[0], srcs[0], dtype),
            Load::Scalar => Kernel::new(names[0], srcs[1], dtype),
            Load::Normed { silu } => Kernel::new(names[1], srcs[2], dtype).def("SILU", silu),
            Load::Pair { norm: None, x2_binding } => Kernel::new(names[2], srcs[3], dtype).def("X2_BINDING", format!("{x2_binding}u")),
            Load::Pair { norm: Some(silu), x2_binding } => Kernel::new(names[3], srcs[4], dtype).def("SILU", silu).def("X2_BINDING", format!("{x2_binding}u")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn coop_kernel(dtype: DType, taps: [usize; 3], stride: [usize; 2], transposed: bool, planes: usize, has_res: bool, load: Load, cfg: CoopCfg) -> Kernel {
    cfg.specialise(geometry(load.kernel(&NAMES_COOP, &SRC_COOP, dtype), taps, stride, transposed, planes, has_res))
}

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
    /// Frames per GroupNorm segment of a normalised input; 0 without one.
    seg_frames: u32,
    /// A channel pair's [`PairGeometry`]; the input's own Cin and pixels without one.
    pair_c1: u32,
    pair_rows_a: u32,
    pair_rows_b: u32,
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
    /// Independent convolutions in one dispatch (Winograd's planes, [`conv3d_planes_into`]):
    /// `nb` is each one's batch; 1 for an ordinary convolution.
    planes: usize,
}

fn check_input(what: &str, x: &Input, w: &ConvWeight) -> Result<()> {
    ensure!(x.dtype() == w.dtype(), "{what}: input is {:?} but the weights are {:?}", x.dtype(), w.dtype());
    let cin = *x.shape().last().unwrap_or(&0);
    ensure!(cin == w.cin, "{what}: input {:?} has {cin} channels, the weights expect {}", x.shape(), w.cin);
    ensure!(x.numel() > 0, "{what}: empty input {:?}", x.shape());
    Ok(())
}

/// 2-D convolution of channels-last `x` `[N, H, W, Cin]` (or `[B, F, H, W, Cin]`, each frame on
/// its own) with a [`ConvKind::Conv2d`] weight, square `stride` and symmetric zero padding
/// `pad`: output `[.., Ho, Wo, Cout]` with `Ho = (H + 2·pad − kh) / stride + 1` (as PyTorch).
pub fn conv2d(rec: &mut Recorder, x: impl Into<Input>, w: &ConvWeight, stride: usize, pad: usize) -> Result<Tensor> {
    conv2d_with(rec, x, w, stride, pad, Impl::Auto)
}

pub fn conv2d_with(rec: &mut Recorder, x: impl Into<Input>, w: &ConvWeight, stride: usize, pad: usize, imp: Impl) -> Result<Tensor> {
    conv2d_add_with(rec, x, w, stride, pad, None, imp)
}

/// [`conv2d`] plus a [`Residual`] added as the output is stored (a resnet's skip connection, or
/// a time embedding per batch element).
pub fn conv2d_add(rec: &mut Recorder, x: impl Into<Input>, w: &ConvWeight, stride: usize, pad: usize, res: Residual) -> Result<Tensor> {
    conv2d_add_with(rec, x, w, stride, pad, Some(res), Impl::Auto)
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d_add_with(rec: &mut Recorder, x: impl Into<Input>, w: &ConvWeight, stride: usize, pad: usize, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    let x = x.into();
    launch(rec, &x, w, &conv2d_problem(&x, w, stride, pad)?, res, imp)
}

fn conv2d_problem(x: &Input, w: &ConvWeight, stride: usize, pad: usize) -> Result<Problem> {
    let s = x.shape();
    ensure!(w.kind == ConvKind::Conv2d, "conv2d: weight is a {:?}", w.kind);
    check_input("conv2d", x, w)?;
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
    Ok(Problem { nb, d: 1, h, w: wd, ho, wo, pad: [0, pad, pad], stride: [stride, stride], out_shape, planes: 1 })
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
    let x = Input::from(x);
    launch(rec, &x, w, &transposed_problem(&x, w)?, res, imp)
}

fn transposed_problem(x: &Input, w: &ConvWeight) -> Result<Problem> {
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
    Ok(Problem { nb, d: 1, h, w: wd, ho: h, wo: wd, pad: [0, 0, 0], stride: [1, 1], out_shape, planes: 1 })
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

/// [`conv3d_with`] plus a [`Residual`], if any, added as the output is stored.
pub fn conv3d_add_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    let x = Input::from(x);
    launch(rec, &x, w, &conv3d_problem(&x, w)?, res, imp)
}

/// `planes` independent 3-D convolutions in one dispatch (Winograd's products of a 3-D
/// convolution, `ops::winograd`): part q of `x` (`[planes·B, F, H, W, Cin]`, batch entries
/// q·B .. (q+1)·B) by weight q of `w` (whose packed tensor holds `planes` weights of its taps
/// back to back) into the same part of `out` (`[planes·B, F, H, W, Cout]`, a tensor or view,
/// written whole), as [`conv3d`] would, with `w`'s bias and no residual.
pub fn conv3d_planes_into(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, planes: usize, out: &Tensor) -> Result<()> {
    conv3d_planes_into_with(rec, x, w, planes, out, Impl::Auto)
}

/// [`conv3d_planes_into`] on the kernel `imp` asks for.
pub fn conv3d_planes_into_with(rec: &mut Recorder, x: &Tensor, w: &ConvWeight, planes: usize, out: &Tensor, imp: Impl) -> Result<()> {
    let s = x.shape();
    ensure!(planes > 0 && s.len() == 5 && s[0].is_multiple_of(planes), "conv3d planes: input {s:?} is not {planes} equal parts of [B, F, H, W, C]");
    let per_plane = w.taps.iter().product::<usize>() * w.cin_p * w.cout_p;
    ensure!(w.w.numel() == planes * per_plane, "conv3d planes: a weight of {} elements for {planes} planes of {per_plane}", w.w.numel());
    let x = Input::from(x);
    let mut pb = conv3d_problem(&x, w)?;
    pb.nb /= planes;
    pb.planes = planes;
    let x = loadable(rec, &x, false)?;
    let tile = choose(rec.gpu(), &x, w, &pb, None, false, imp)?;
    launch_tile_into(rec, &x, w, &pb, None, None, tile, Some(out)).map(drop)
}

/// [`conv2d`] (plus an optional [`Residual`]) of `GroupNorm(x)`, then SiLU where the norm has
/// it: `norm` is the table of `x`'s statistics
/// ([`group_norm_table`](crate::ops::norm::group_norm_table)), applied in its own pass or as the
/// convolution loads its input ([`Fuse`]; the same values either way).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_normed(rec: &mut Recorder, x: impl Into<Input>, norm: &GnTable, w: &ConvWeight, stride: usize, pad: usize, res: Option<Residual>) -> Result<Tensor> {
    conv2d_normed_with(rec, x, norm, w, stride, pad, res, Fuse::Auto, Impl::Auto)
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d_normed_with(rec: &mut Recorder, x: impl Into<Input>, norm: &GnTable, w: &ConvWeight, stride: usize, pad: usize, res: Option<Residual>, fuse: Fuse, imp: Impl) -> Result<Tensor> {
    let x = x.into();
    launch_normed(rec, &x, norm, w, &conv2d_problem(&x, w, stride, pad)?, res, fuse, imp)
}

/// [`conv3d`] (plus an optional [`Residual`]) of `GroupNorm(x)`, as [`conv2d_normed`].
pub fn conv3d_normed(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, res: Option<Residual>) -> Result<Tensor> {
    conv3d_normed_with(rec, x, norm, w, res, Fuse::Auto, Impl::Auto)
}

pub fn conv3d_normed_with(rec: &mut Recorder, x: &Tensor, norm: &GnTable, w: &ConvWeight, res: Option<Residual>, fuse: Fuse, imp: Impl) -> Result<Tensor> {
    let x = Input::from(x);
    launch_normed(rec, &x, norm, w, &conv3d_problem(&x, w)?, res, fuse, imp)
}

fn conv3d_problem(x: &Input, w: &ConvWeight) -> Result<Problem> {
    ensure!(w.kind == ConvKind::Conv3d, "conv3d: weight is a {:?}", w.kind);
    check_input("conv3d", x, w)?;
    let s = x.shape();
    ensure!(s.len() == 5, "conv3d: input {s:?} is not [B, F, H, W, C]");
    ensure!(w.taps.iter().all(|k| k % 2 == 1), "conv3d: kernel {:?} is not odd in every axis ('same' padding needs odd sizes)", w.taps);
    let (d, h, wd) = (s[1], s[2], s[3]);
    let [kt, kh, kw] = w.taps;
    let mut out_shape = s.to_vec();
    out_shape[4] = w.cout;
    Ok(Problem { nb: s[0], d, h, w: wd, ho: h, wo: wd, pad: [kt / 2, kh / 2, kw / 2], stride: [1, 1], out_shape, planes: 1 })
}

/// The specialisation consts every conv kernel shares (`planes`: see [`Problem::planes`]).
fn geometry(k: Kernel, taps: [usize; 3], stride: [usize; 2], transposed: bool, planes: usize, has_res: bool) -> Kernel {
    k.def("HAS_RES", has_res)
        .def("KT", format!("{}u", taps[0]))
        .def("KH", format!("{}u", taps[1]))
        .def("KW", format!("{}u", taps[2]))
        .def("SH", format!("{}u", stride[0]))
        .def("SW", format!("{}u", stride[1]))
        .def("TRANSPOSED", transposed)
        .def("PLANES", planes > 1)
        .def("PHASES", format!("{}u", if transposed { 4 } else { planes }))
}

/// The tile `imp` asks for: `Auto` runs the tuner over [`auto_tiles`] (timing each on scratch
/// tensors of this problem the first time it meets it, where tuning is on). With `norm`, for the
/// kernel that applies it as it loads; with `as_one`, for a kernel that reads one tensor of
/// `x`'s shape (the output of a norm pass over a channel pair).
fn choose(gpu: &Gpu, x: &Input, w: &ConvWeight, pb: &Problem, norm: Option<&GnTable>, as_one: bool, imp: Impl) -> Result<Tile> {
    let pair = x.pair().is_some() && !as_one;
    Ok(match imp {
        Impl::Auto => {
            let tiles = auto_tiles(gpu, x.dtype(), w.cout);
            let key = || {
                let gn = norm.map(|n| format!(" after group norm{}", if n.silu { " + silu" } else { "" })).unwrap_or_default();
                let pair = if pair { " from a channel pair" } else { "" };
                let planes = if pb.planes > 1 { format!(" in {} planes", pb.planes) } else { String::new() };
                format!("conv {} taps {:?} stride {:?} pad {:?} {} -> {} on {:?}{planes}{pair}{gn}", gpu.operands_name(x.dtype()), w.taps, pb.stride, pb.pad, w.cin, w.cout, x.shape())
            };
            crate::kernel::tuned(gpu, key, &tiles, |t| t.label(), |r, t| {
                let scratch = if pair { x.scratch(r)? } else { Input::Tensor(r.empty(x.shape(), x.dtype())?) };
                let norm = norm.map(|n| r.empty(n.table.shape(), DType::F32).map(|t| n.with_table(t))).transpose()?;
                launch_tile(r, &scratch, w, pb, None, norm.as_ref(), t).map(drop)
            })?
        }
        Impl::Tiled => Tile::Tiled { bn: tiled_bn(gpu, x.dtype(), w.cout) },
        Impl::Coop | Impl::CoopHalf => {
            let cfg = coop_config(gpu, x.dtype(), w.cout).map_err(|e| anyhow::anyhow!("conv: cooperative kernel unavailable: {e}"))?;
            match imp {
                Impl::CoopHalf if !coop_divides(cfg.halved()) => bail!("conv: {:?} on 4 subgroups does not split its tiles evenly", cfg),
                Impl::CoopHalf => Tile::Coop(cfg.halved()),
                _ => Tile::Coop(cfg),
            }
        }
    })
}

/// Storage bindings of a convolution besides its input's: weights, bias, output, residual.
const OTHER_BINDINGS: u32 = 4;

/// `x` as a kernel can load it (four channels at a time; a norm's table takes a binding more):
/// a channel pair the kernels cannot read is concatenated first.
fn loadable(rec: &mut Recorder, x: &Input, normed: bool) -> Result<Input> {
    x.for_kernel(rec, 4, OTHER_BINDINGS + normed as u32)
}

fn launch(rec: &mut Recorder, x: &Input, w: &ConvWeight, pb: &Problem, res: Option<Residual>, imp: Impl) -> Result<Tensor> {
    let x = loadable(rec, x, false)?;
    let tile = choose(rec.gpu(), &x, w, pb, None, false, imp)?;
    launch_tile(rec, &x, w, pb, res, None, tile)
}

/// How the tuner's keys for where a GroupNorm runs begin (its other keys are tiles'), so reports
/// can tell the two kinds of choice apart.
pub const NORM_TUNING_KEY: &str = "group norm";


/// The convolution of `GroupNorm(x)` (then SiLU where `norm` has it), `norm` being the table
/// of `x`'s statistics ([`group_norm_table`](crate::ops::norm::group_norm_table)): the same
/// values as [`group_norm_apply`] followed by the convolution, with the norm applied where
/// `fuse` says.
#[allow(clippy::too_many_arguments)]
fn launch_normed(rec: &mut Recorder, x: &Input, norm: &GnTable, w: &ConvWeight, pb: &Problem, res: Option<Residual>, fuse: Fuse, imp: Impl) -> Result<Tensor> {
    ensure!(x.shape() == norm.shape.as_slice(), "conv: a GroupNorm table of {:?} given with the input {:?}", norm.shape, x.shape());
    let gpu = rec.gpu();
    // The normalising loads read four channels at a time.
    let fusable = w.cin.is_multiple_of(4);
    // A pair the normalising kernel cannot read would be concatenated for it; then `Auto` keeps
    // the norm's own pass, which reads the pair and writes the normalised concatenation.
    let readable = x.readable_directly(rec, 4, OTHER_BINDINGS + 1);
    if fuse == Fuse::Fused {
        ensure!(fusable, "conv: a GroupNorm can only be applied on load where Cin is a multiple of 4 (Cin = {})", w.cin);
        // The input, its table and the others: a limit of the adapter, as a binding's size is.
        let (need, has) = (OTHER_BINDINGS + 2, gpu.limits.max_storage_buffers_per_shader_stage);
        if has < need {
            return Err(crate::gpu::OverLimit(format!("conv: a GroupNorm applied on load binds {need} storage buffers, and this GPU binds {has} per shader")).into());
        }
    }
    let fused = fuse.on_load(gpu, fusable && readable, || {
        let apart = choose(gpu, x, w, pb, None, true, imp)?;
        let together = choose(gpu, x, w, pb, Some(norm), false, imp)?;
        let key = || {
            format!(
                "{NORM_TUNING_KEY}{} into conv {} taps {:?} stride {:?} pad {:?} {} -> {} on {:?}",
                if norm.silu { " + silu" } else { "" },
                gpu.operands_name(x.dtype()),
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
            let scratch = x.scratch(r)?;
            let n = norm.with_table(r.empty(norm.table.shape(), DType::F32)?);
            if f {
                launch_tile(r, &scratch, w, pb, None, Some(&n), together).map(drop)
            } else {
                let h = group_norm_apply(r, &scratch, &n)?;
                launch_tile(r, &Input::Tensor(h), w, pb, None, None, apart).map(drop)
            }
        })
    })?;
    if fused {
        let x = loadable(rec, x, true)?;
        let tile = choose(rec.gpu(), &x, w, pb, Some(norm), false, imp)?;
        launch_tile(rec, &x, w, pb, res, Some(norm), tile)
    } else {
        let h = group_norm_apply(rec, x, norm)?;
        launch(rec, &Input::Tensor(h), w, pb, res, imp)
    }
}

fn launch_tile(rec: &mut Recorder, x: &Input, w: &ConvWeight, pb: &Problem, res: Option<Residual>, norm: Option<&GnTable>, tile: Tile) -> Result<Tensor> {
    launch_tile_into(rec, x, w, pb, res, norm, tile, None)
}

/// [`launch_tile`] storing into `dest` where given (a tensor or view of the output's shape and
/// dtype), else into a new tensor.
#[allow(clippy::too_many_arguments)]
fn launch_tile_into(rec: &mut Recorder, x: &Input, w: &ConvWeight, pb: &Problem, res: Option<Residual>, norm: Option<&GnTable>, tile: Tile, dest: Option<&Tensor>) -> Result<Tensor> {
    let gpu = rec.gpu();
    let m = pb.nb * pb.d * pb.ho * pb.wo;
    ensure!(m > 0, "conv: empty output {:?}", pb.out_shape);
    let res_rep = match &res {
        Some(r) => r.rep("conv", &pb.out_shape, x.dtype())?,
        None => 1,
    };
    ensure!(pb.out_shape.iter().product::<usize>() < u32::MAX as usize && x.numel() < i32::MAX as usize, "conv: tensor too large for 32-bit indexing");
    let transposed = w.kind == ConvKind::ConvTranspose2d;
    let phases = if transposed { 4 } else { pb.planes as u32 };
    // The loads find a pixel's GroupNorm segment by its frame: a segment is whole frames, and
    // where it pools several, every tap of a row reads the row's segment (x_norm_row).
    let mut seg_frames = 0;
    if let Some(n) = norm {
        ensure!(w.cin.is_multiple_of(4), "conv: a GroupNorm applied on load needs Cin % 4 == 0 (Cin = {})", w.cin);
        let frame_px = pb.h * pb.w;
        ensure!(n.seg_px > 0 && n.seg_px.is_multiple_of(frame_px), "conv: a GroupNorm segment of {} pixels is not whole {}×{} frames", n.seg_px, pb.h, pb.w);
        seg_frames = n.seg_px / frame_px;
        ensure!(seg_frames == 1 || w.taps[0] == 1 || seg_frames.is_multiple_of(pb.d), "conv: a GroupNorm segment of {seg_frames} frames splits the {}-frame clips a 3-D convolution's taps span", pb.d);
    }
    // The second part of a pair is bound after every other binding.
    let x2_binding = 1 + OTHER_BINDINGS + norm.is_some() as u32 + 1;
    let load = match (x.pair(), norm) {
        (Some(_), n) => Load::Pair { norm: n.map(|n| n.silu), x2_binding },
        (None, Some(n)) => Load::Normed { silu: n.silu },
        (None, None) => Load::plain(w.cin),
    };
    let (bm, bn) = tile.block();
    let k = match tile {
        Tile::Coop(cfg) => coop_kernel(x.dtype(), w.taps, pb.stride, transposed, pb.planes, res.is_some(), load, cfg),
        Tile::Tiled { bn } => geometry(load.kernel(&NAMES_TILED, &SRC_TILED, x.dtype()), w.taps, pb.stride, transposed, pb.planes, res.is_some())
            .def("BN", format!("{bn}u"))
            .def("BK", format!("{TILED_BK}u")),
    };
    let out = match dest {
        Some(t) => {
            ensure!(t.shape() == pb.out_shape.as_slice() && t.dtype() == x.dtype(), "conv: an output of {:?} {:?} given for {:?} {:?}", t.shape(), t.dtype(), pb.out_shape, x.dtype());
            t.clone()
        }
        None => rec.empty(&pb.out_shape, x.dtype())?,
    };
    let pair = x.pair().unwrap_or(PairGeometry { c1: w.cin, rows_a: x.numel() / w.cin, rows_b: x.numel() / w.cin });
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
        seg_frames: seg_frames as u32,
        pair_c1: pair.c1 as u32,
        pair_rows_a: pair.rows_a as u32,
        pair_rows_b: pair.rows_b as u32,
    };
    // Without a residual the bias fills its binding.
    let res_arg = res.map(|r| r.tensor()).unwrap_or(&w.bias);
    let parts = x.tensors();
    let mut binds = vec![parts[0].into(), (&w.w).into(), (&w.bias).into(), (&out).into(), res_arg.into()];
    if let Some(n) = norm {
        binds.push((&n.table).into());
    }
    if let Some(b) = parts.get(1) {
        debug_assert_eq!(binds.len() as u32 + 1, x2_binding);
        binds.push((*b).into());
    }
    rec.dispatch(&k, &p, &binds, grid(gpu, tiles_m * tiles_n * phases))?;
    // Every output position of every phase over all taps, as PyTorch counts a convolution (the
    // time taps a tile skips as padding included; an upsampler's convolution, folded into its
    // upsampling, as the transposed one it runs as).
    rec.add_flops(2.0 * (m * phases as usize) as f64 * w.cout as f64 * (w.taps.iter().product::<usize>() * w.cin) as f64);
    Ok(out)
}
