//! Normalisations: GroupNorm (per frame or pooled over the frames of a window, optional fused
//! SiLU) and LayerNorm over the last axis.
//!
//! GroupNorm runs as three dispatches (`shaders/group_norm_{stats,finalize,apply}.wgsl`):
//! 1. **stats**: the tensor is cut into chunks of pixels × blocks of whole groups; each workgroup
//!    writes (Σ(x−K), Σ(x−K)²) per group for its chunk, K being the group's first element in the
//!    segment (a shift that keeps the sums free of cancellation when |mean| ≫ σ), and the first
//!    chunk's workgroups also write K itself;
//! 2. **finalize**: one workgroup per (segment, group) reduces the partials into mean and 1/σ and
//!    folds γ, β into a per-(segment, channel) table of scale, K and offset;
//! 3. **apply**: `y = (x − K)·scale + offset` (+ SiLU), walking the chunks in reverse order so the first
//!    ones it reads are the last ones pass 1 pulled into the cache.
//!
//! Passes 1 and 2 are [`group_norm_table`] and pass 3 [`group_norm_apply`]: a convolution that
//! reads the norm's output can take the table instead and apply it as it loads its input
//! (`conv::conv2d_normed`, [`Fuse`]). LayerNorm is one pass (`layer_norm_row.wgsl` +
//! `layer_norm.wgsl`); its statistics alone ([`layer_norm_table`]) let a linear layer apply it as
//! it loads (`ops::matmul`).
//!
//! The stats and apply passes also read a channel pair of two tensors as one input
//! (`ops::input::Input`, `group_norm_x_pair.wgsl`): a UNet's activation and its skip, never
//! concatenated.
//!
//! A "segment" is the set of pixels one statistic spans: one image (`pooled == false`) or the F
//! consecutive frames of one batch element (`pooled == true`, the video ResNet blocks).
//!
//! Layouts: GroupNorm takes channels-last `[B·F, H, W, C]`, `[B, F, H, W, C]` or tokens
//! `[N, L, C]`; LayerNorm `[..., C]`. γ/β are f32 tensors `[C]` (see [`NormWeight`]) whatever the
//! activation dtype; statistics are f32.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::input::Input;
use crate::tensor::{DType, Tensor};

/// Each shader is compiled in three vector widths. The prefix defines `VT` (storage vector),
/// `VF` (f32 vector of the same width), `V`, `hsum` (sum of components) and `first`.
/// With two files, the first is inserted before the second (a GroupNorm pass's input binding).
macro_rules! widths {
    ($file:literal) => {
        widths!(@ [""] $file)
    };
    ($xfile:literal, $file:literal) => {
        widths!(@ [include_str!($xfile)] $file)
    };
    (@ [$($x:tt)*] $file:literal) => {
        [
            concat!(
                "alias VT = vec4<T>;\nalias VF = vec4<f32>;\nconst V: u32 = 4u;\n",
                "fn hsum(v: VF) -> f32 { return (v.x + v.y) + (v.z + v.w); }\n",
                "fn first(v: VF) -> f32 { return v.x; }\n",
                $($x)*,
                include_str!($file)
            ),
            concat!(
                "alias VT = vec2<T>;\nalias VF = vec2<f32>;\nconst V: u32 = 2u;\n",
                "fn hsum(v: VF) -> f32 { return v.x + v.y; }\n",
                "fn first(v: VF) -> f32 { return v.x; }\n",
                $($x)*,
                include_str!($file)
            ),
            concat!(
                "alias VT = T;\nalias VF = f32;\nconst V: u32 = 1u;\n",
                "fn hsum(v: VF) -> f32 { return v; }\n",
                "fn first(v: VF) -> f32 { return v; }\n",
                $($x)*,
                include_str!($file)
            ),
        ]
    };
}

/// The GroupNorm passes that read the input, from one tensor and from a channel pair.
const STATS_NAMES: [&str; 2] = ["group_norm_stats", "group_norm_stats_pair"];
const APPLY_NAMES: [&str; 2] = ["group_norm_apply", "group_norm_apply_pair"];
const GN_STATS: [[&str; 3]; 2] = [
    widths!("../../shaders/group_norm_x_one.wgsl", "../../shaders/group_norm_stats.wgsl"),
    widths!("../../shaders/group_norm_x_pair.wgsl", "../../shaders/group_norm_stats.wgsl"),
];
const GN_APPLY: [[&str; 3]; 2] = [
    widths!("../../shaders/group_norm_x_one.wgsl", "../../shaders/group_norm_apply.wgsl"),
    widths!("../../shaders/group_norm_x_pair.wgsl", "../../shaders/group_norm_apply.wgsl"),
];
const GN_FINALIZE: &str = include_str!("../../shaders/group_norm_finalize.wgsl");
const LN: [&str; 3] = widths!("../../shaders/layer_norm_row.wgsl", "../../shaders/layer_norm.wgsl");
const LN_STATS: [&str; 3] = widths!("../../shaders/layer_norm_row.wgsl", "../../shaders/layer_norm_stats.wgsl");

/// Widest vector (4, 2 or 1 elements) that divides `n`, and its index into the source arrays.
fn width(n: usize) -> (usize, usize) {
    if n.is_multiple_of(4) {
        (4, 0)
    } else if n.is_multiple_of(2) {
        (2, 1)
    } else {
        (1, 2)
    }
}

/// Threads per workgroup of every norm kernel.
const WG: usize = 256;
/// Pixel rows each GroupNorm thread visits per chunk (a multiple of the shaders' unroll of 4).
const GN_ITER: usize = 16;

/// Where a norm before a convolution or a linear layer is applied: in a pass of its own, or by
/// the consumer as it loads its input (no normalised tensor is written or read again, but the
/// normalisation (and SiLU) is redone wherever more than one tile loads an element).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fuse {
    /// As the device says ([`Gpu::norm_into_conv`](crate::Gpu::norm_into_conv)): where tuning
    /// is on, both are timed on each new shape and the faster kept; else apart.
    Auto,
    Apart,
    Fused,
}

impl Fuse {
    /// Whether the norm is applied as its consumer loads: as `Fused` and `Apart` say (the
    /// caller checks that `Fused` can be done), and for `Auto` as the device says where the
    /// consumer can (`possible`): always, never, or, where tuning is on, as `time` measures.
    pub(crate) fn on_load(self, gpu: &crate::Gpu, possible: bool, time: impl FnOnce() -> Result<bool>) -> Result<bool> {
        use crate::gpu::TuneMode;
        Ok(match self {
            Fuse::Fused => true,
            Fuse::Apart => false,
            Fuse::Auto => {
                possible
                    && match gpu.norm_into_conv() {
                        TuneMode::On => true,
                        TuneMode::Off => false,
                        TuneMode::Auto => gpu.tuner().is_on() && time()?,
                    }
            }
        })
    }
}

/// Affine weights of a normalisation: γ and β as f32 tensors `[C]`.
#[derive(Clone, Debug)]
pub struct NormWeight {
    pub gamma: Tensor,
    pub beta: Tensor,
}

/// GroupNorm's weights (`GroupNorm.weight`, `GroupNorm.bias`).
pub type GroupNormWeight = NormWeight;
/// LayerNorm's weights (`LayerNorm.weight`, `LayerNorm.bias`).
pub type LayerNormWeight = NormWeight;

impl NormWeight {
    /// From PyTorch's `weight` and `bias` (both `[C]`).
    pub fn from_torch(gpu: &crate::Gpu, gamma: &[f32], beta: &[f32]) -> Result<NormWeight> {
        if gamma.len() != beta.len() || gamma.is_empty() {
            bail!("norm weight: gamma has {} elements, beta {}", gamma.len(), beta.len());
        }
        let c = gamma.len();
        Ok(NormWeight {
            gamma: Tensor::from_f32(gpu, gamma, &[c], DType::F32)?,
            beta: Tensor::from_f32(gpu, beta, &[c], DType::F32)?,
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GroupNormOpts {
    /// Frames per batch element (F). With a 5-D input it must equal `x.shape()[1]` (or be 0).
    pub frames: usize,
    /// Statistics over all F frames of a batch element (the video ResNet blocks and the UNet's
    /// `conv_norm_out`) instead of per frame (the transformer-input norm).
    pub pooled: bool,
    /// Apply SiLU after the affine transform.
    pub silu: bool,
}

#[repr(C)]
#[derive(Copy, Clone, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GnParams {
    cv: u32,
    cg: u32,
    groups: u32,
    gpb: u32,
    cgv: u32,
    lanes: u32,
    rows: u32,
    rows_p2: u32,
    seg_px: u32,
    chunk_px: u32,
    nchunks: u32,
    nblk: u32,
    total_wg: u32,
    /// A channel pair's vectors in its first part and its parts' pixels
    /// (`group_norm_x_pair.wgsl`); set per pass by [`GnPlan::reading`].
    pair_cv1: u32,
    pair_rows_a: u32,
    pair_rows_b: u32,
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct GnFinalizeParams {
    c: u32,
    cg: u32,
    groups: u32,
    nchunks: u32,
    seg_px: u32,
    eps: f32,
    total_wg: u32,
}

/// How a GroupNorm is cut into workgroups (shared by the stats and apply passes).
#[derive(Clone, Copy, Debug)]
struct GnPlan {
    /// Index of the vector width in the source arrays.
    vi: usize,
    params: GnParams,
}

/// `segments` statistics segments of `seg_px` pixels × `c` channels each.
fn gn_plan(segments: usize, seg_px: usize, c: usize, groups: usize) -> Result<GnPlan> {
    let cg = c / groups;
    // The vector width divides the group width so a vector never straddles two groups.
    let (v, vi) = width(cg);
    let cgv = cg / v;
    if cgv > WG {
        bail!("group_norm: groups of {cg} channels are wider than one workgroup can hold ({} max)", WG * v);
    }
    // Channel blocks hold whole groups; threads left over become extra pixel rows.
    let gpb = groups.min(WG / cgv);
    let lanes = gpb * cgv;
    let rows = WG / lanes;
    let nblk = groups.div_ceil(gpb);
    let mut chunk_px = rows * GN_ITER;
    // Bound the partials per (segment, group) the finalize pass reduces (each of its threads
    // loops over nchunks / 256 of them).
    while seg_px.div_ceil(chunk_px) > 16 * WG {
        chunk_px *= 2;
    }
    let nchunks = seg_px.div_ceil(chunk_px);
    let total = segments * nchunks * nblk;
    let elems = segments * seg_px * c;
    if elems >= u32::MAX as usize || total >= u32::MAX as usize {
        bail!("group_norm: tensor of {elems} elements is too large for 32-bit indexing");
    }
    Ok(GnPlan {
        vi,
        params: GnParams {
            cv: (c / v) as u32,
            cg: cg as u32,
            groups: groups as u32,
            gpb: gpb as u32,
            cgv: cgv as u32,
            lanes: lanes as u32,
            rows: rows as u32,
            rows_p2: rows.next_power_of_two() as u32,
            seg_px: seg_px as u32,
            chunk_px: chunk_px as u32,
            nchunks: nchunks as u32,
            nblk: nblk as u32,
            total_wg: total as u32,
            pair_cv1: 0,
            pair_rows_a: 0,
            pair_rows_b: 0,
        },
    })
}

impl GnPlan {
    /// Elements per vector of the passes' loads.
    fn vector(&self) -> usize {
        [4, 2, 1][self.vi]
    }

    /// A pass of this plan over `x` (one tensor, or a pair the pass can read: see
    /// [`Input::for_kernel`]): its kernel (named `names[0]`, or `names[1]` reading a channel
    /// pair), parameters and bindings (x's first part, `others`, x's second part).
    fn reading<'t>(&self, names: [&'static str; 2], srcs: &[[&'static str; 3]; 2], x: &'t Input, others: &[&'t Tensor]) -> (Kernel, GnParams, Vec<&'t Tensor>) {
        let v = self.vector();
        let mut p = self.params;
        let parts = x.tensors();
        let mut binds = vec![parts[0]];
        binds.extend_from_slice(others);
        let k = match x.pair() {
            None => {
                (p.pair_cv1, p.pair_rows_a, p.pair_rows_b) = (p.cv, 0, 0);
                Kernel::new(names[0], srcs[0][self.vi], x.dtype())
            }
            Some(g) => {
                (p.pair_cv1, p.pair_rows_a, p.pair_rows_b) = ((g.c1 / v) as u32, g.rows_a as u32, g.rows_b as u32);
                binds.push(parts[1]);
                Kernel::new(names[1], srcs[1][self.vi], x.dtype()).def("X2_BINDING", format!("{}u", binds.len()))
            }
        };
        (k, p, binds)
    }
}

/// (images N, pixels per image, channels) of a GroupNorm input of shape `s`, and F.
fn gn_dims(s: &[usize], frames: usize) -> Result<(usize, usize, usize, usize)> {
    let c = *s.last().unwrap_or(&0);
    match s.len() {
        5 => {
            if frames != 0 && frames != s[1] {
                bail!("group_norm: opts.frames = {frames} but x {s:?} ([B, F, H, W, C]) has {} frames", s[1]);
            }
            Ok((s[0] * s[1], s[2] * s[3], c, s[1]))
        }
        2..=4 => Ok((s[0], s[1..s.len() - 1].iter().product(), c, frames.max(1))),
        _ => bail!("group_norm: x {s:?} must be [N, H, W, C], [B, F, H, W, C] or [N, L, C]"),
    }
}

/// GroupNorm with `groups` groups on channels-last `x` (`[B·F, H, W, C]` with F = `opts.frames`,
/// `[B, F, H, W, C]`, or tokens `[N, L, C]`), PyTorch semantics (biased variance, eps inside the
/// square root), then `y·γ + β` and optionally SiLU. Statistics span each image's
/// (C/G)·H·W values, or with `opts.pooled` the (C/G)·F·H·W values of each batch element's F
/// frames (frame index fastest within a batch element, as the reference's `(b f)`).
/// `gamma`, `beta`: f32 `[C]`. The statistics ([`group_norm_table`]), then their application
/// ([`group_norm_apply`]).
pub fn group_norm(
    rec: &mut Recorder,
    x: &Tensor,
    groups: usize,
    eps: f32,
    gamma: &Tensor,
    beta: &Tensor,
    opts: GroupNormOpts,
) -> Result<Tensor> {
    let t = group_norm_table(rec, x, groups, eps, gamma, beta, opts)?;
    group_norm_apply(rec, x, &t)
}

/// A GroupNorm's statistics folded with its affine weights: `group_norm_finalize.wgsl`'s
/// `[segments, 3, C]` table of scales, shifts K and offsets, so that the norm of channel c of
/// pixel p is `(x − K)·scale + offset` from row `p / seg_px` (then SiLU where `silu`). It is
/// applied by its own pass ([`group_norm_apply`]) or as a convolution loads its input
/// (`conv::conv2d_normed`).
#[derive(Clone, Debug)]
pub struct GnTable {
    /// f32 `[segments, 3, C]`.
    pub table: Tensor,
    /// Pixels per statistics segment (an image, or a window's frames when pooled).
    pub seg_px: usize,
    pub silu: bool,
    /// The shape of the input the statistics were taken of.
    pub shape: Vec<usize>,
    plan: GnPlan,
}

impl GnTable {
    /// The same norm with another table tensor of the same shape (scratch for timing runs).
    pub fn with_table(&self, table: Tensor) -> GnTable {
        GnTable { table, ..self.clone() }
    }
}

/// The first two passes of [`group_norm`]: the statistics of `x` folded with γ and β into a
/// [`GnTable`].
pub fn group_norm_table(
    rec: &mut Recorder,
    x: impl Into<Input>,
    groups: usize,
    eps: f32,
    gamma: &Tensor,
    beta: &Tensor,
    opts: GroupNormOpts,
) -> Result<GnTable> {
    let x = x.into();
    let (n, px, c, frames) = gn_dims(x.shape(), opts.frames)?;
    if groups == 0 || c == 0 || c % groups != 0 {
        bail!("group_norm: {c} channels of x {:?} are not divisible into {groups} groups", x.shape());
    }
    check_weights("group_norm", c, gamma, beta)?;
    if n == 0 || px == 0 {
        bail!("group_norm: x {:?} is empty", x.shape());
    }
    let (segments, seg_px) = if opts.pooled {
        if opts.frames == 0 && x.shape().len() != 5 {
            bail!("group_norm: pooled statistics over a 4-D x {:?} need opts.frames", x.shape());
        }
        if n % frames != 0 {
            bail!("group_norm: {n} images of x {:?} are not whole windows of {frames} frames", x.shape());
        }
        (n / frames, frames * px)
    } else {
        (n, px)
    };
    let plan = gn_plan(segments, seg_px, c, groups)?;
    let gpu = rec.gpu();
    let dt = x.dtype();
    let gp = &plan.params;
    // The chunks' partial sums, then each (segment, group)'s shift K.
    let part = rec.empty(&[segments * (gp.nchunks as usize + 1) * groups, 2], DType::F32)?;
    let table = rec.empty(&[segments, 3, c], DType::F32)?;

    let x = x.for_kernel(rec, plan.vector(), 1)?;
    let (stats, sp, binds) = plan.reading(STATS_NAMES, &GN_STATS, &x, &[&part]);
    let binds: Vec<_> = binds.into_iter().map(Into::into).collect();
    rec.dispatch(&stats, &sp, &binds, grid(gpu, gp.total_wg))?;

    let fp = GnFinalizeParams {
        c: c as u32,
        cg: gp.cg,
        groups: groups as u32,
        nchunks: gp.nchunks,
        seg_px: gp.seg_px,
        eps,
        total_wg: (segments * groups) as u32,
    };
    let fin = Kernel::new("group_norm_finalize", GN_FINALIZE, dt);
    rec.dispatch(&fin, &fp, &[(&part).into(), gamma.into(), beta.into(), (&table).into()], grid(gpu, fp.total_wg))?;
    Ok(GnTable { table, seg_px, silu: opts.silu, shape: x.shape().to_vec(), plan })
}

/// [`group_norm_table`] with a [`GroupNormWeight`].
pub fn group_norm_table_w(rec: &mut Recorder, x: impl Into<Input>, groups: usize, eps: f32, w: &GroupNormWeight, opts: GroupNormOpts) -> Result<GnTable> {
    group_norm_table(rec, x, groups, eps, &w.gamma, &w.beta, opts)
}

/// The last pass of [`group_norm`]: `t` applied to `x`, the tensor its statistics were taken of.
/// A channel pair ([`Input::Pair`]) is read from both parts, and the output is their normalised
/// concatenation.
pub fn group_norm_apply(rec: &mut Recorder, x: impl Into<Input>, t: &GnTable) -> Result<Tensor> {
    let x = x.into();
    if x.shape() != t.shape.as_slice() {
        bail!("group_norm: a table of x {:?} applied to {:?}", t.shape, x.shape());
    }
    let out = rec.empty(x.shape(), x.dtype())?;
    let x = x.for_kernel(rec, t.plan.vector(), 2)?;
    let (apply, ap, binds) = t.plan.reading(APPLY_NAMES, &GN_APPLY, &x, &[&t.table, &out]);
    let binds: Vec<_> = binds.into_iter().map(Into::into).collect();
    rec.dispatch(&apply.def("SILU", t.silu), &ap, &binds, grid(rec.gpu(), ap.total_wg))?;
    Ok(out)
}

/// [`group_norm`] with a [`GroupNormWeight`].
pub fn group_norm_w(
    rec: &mut Recorder,
    x: &Tensor,
    groups: usize,
    eps: f32,
    w: &GroupNormWeight,
    opts: GroupNormOpts,
) -> Result<Tensor> {
    group_norm(rec, x, groups, eps, &w.gamma, &w.beta, opts)
}

fn check_weights(op: &str, c: usize, gamma: &Tensor, beta: &Tensor) -> Result<()> {
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dtype() != DType::F32 {
            bail!("{op}: {name} must be f32 (NormWeight::from_torch makes it so), got {:?}", t.dtype());
        }
        if t.numel() != c {
            bail!("{op}: {name} {:?} does not match {c} channels", t.shape());
        }
    }
    Ok(())
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct LnParams {
    rows: u32,
    cv: u32,
    eps: f32,
    inv_c: f32,
}

/// Most vectors one LayerNorm thread keeps in registers.
const LN_EMAX: usize = 16;

/// (team size TS, vectors per thread E) for a row of `cv` vectors: about 4 vectors per thread,
/// so a thread has several loads in flight and a row's team stays small.
fn ln_plan(cv: usize) -> (usize, usize) {
    let ts = cv.div_ceil(4).next_power_of_two().min(WG);
    (ts, cv.div_ceil(ts))
}

/// How a LayerNorm pass over `x` is launched: its kernel (`name`, from `srcs`), parameters and
/// workgroups.
fn ln_launch(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32, name: &'static str, srcs: &[&'static str; 3]) -> Result<(Kernel, LnParams, usize)> {
    let c = *x.shape().last().unwrap_or(&0);
    if c == 0 || x.numel() == 0 {
        bail!("layer_norm: x {:?} is empty", x.shape());
    }
    check_weights("layer_norm", c, gamma, beta)?;
    let rows = x.numel() / c;
    let (v, vi) = width(c);
    let cv = c / v;
    let (ts, e) = ln_plan(cv);
    if e > LN_EMAX {
        bail!("layer_norm: {c} channels is more than the kernel holds ({} max at this alignment)", LN_EMAX * WG * v);
    }
    let k = Kernel::new(name, srcs[vi], x.dtype()).def("TS", format!("{ts}u")).def("E", format!("{e}u"));
    let p = LnParams { rows: rows as u32, cv: cv as u32, eps, inv_c: 1.0 / c as f32 };
    Ok((k, p, rows.div_ceil(WG / ts)))
}

/// LayerNorm over the last axis of `x` `[..., C]` (biased variance, PyTorch semantics), then
/// `y·γ + β`. `gamma`, `beta`: f32 `[C]`.
pub fn layer_norm(rec: &mut Recorder, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    let (k, p, wgs) = ln_launch(x, gamma, beta, eps, "layer_norm", &LN)?;
    let out = rec.empty(x.shape(), x.dtype())?;
    rec.dispatch(&k, &p, &[x.into(), gamma.into(), beta.into(), (&out).into()], grid(rec.gpu(), wgs as u32))?;
    Ok(out)
}

/// A LayerNorm's statistics without their application: f32 `[rows, 4]` of (K, mean, 1/σ, 0) per
/// row of `x` `[..., C]` (`layer_norm_stats.wgsl`), for a matmul that normalises its input as it
/// loads it (`matmul_a_ln.wgsl`) with [`layer_norm`]'s arithmetic.
pub fn layer_norm_table(rec: &mut Recorder, x: &Tensor, w: &LayerNormWeight, eps: f32) -> Result<Tensor> {
    let (k, p, wgs) = ln_launch(x, &w.gamma, &w.beta, eps, "layer_norm_stats", &LN_STATS)?;
    let table = rec.empty(&[p.rows as usize, 4], DType::F32)?;
    rec.dispatch(&k, &p, &[x.into(), (&table).into()], grid(rec.gpu(), wgs as u32))?;
    Ok(table)
}

/// [`layer_norm`] with a [`LayerNormWeight`].
pub fn layer_norm_w(rec: &mut Recorder, x: &Tensor, w: &LayerNormWeight, eps: f32) -> Result<Tensor> {
    layer_norm(rec, x, &w.gamma, &w.beta, eps)
}

/// Benchmarks at DiffVSR's shapes: the pooled GroupNorm+SiLU of a video ResNet block at a 128²
/// latent (2 × 8 frames, 256 channels), the per-frame transformer-input GroupNorm at 64², and a
/// transformer LayerNorm over 16 frames × 64² tokens × 512. Bytes: x read once, y written once.
pub fn bench_cases(gpu: &crate::Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let es = dtype.size() as f64;
    let (pooled_s, frame_s, ln_s): ([usize; 4], [usize; 4], [usize; 2]) = if quick {
        ([2 * 8, 8, 8, 64], [4, 8, 8, 128], [64, 128])
    } else {
        ([2 * 8, 128, 128, 256], [16, 64, 64, 512], [16 * 4096, 512])
    };
    let mut v = Vec::new();
    for (name, s, opts, eps) in [
        ("group_norm pooled F=8 + silu", pooled_s, GroupNormOpts { frames: 8, pooled: true, silu: true }, 1e-5),
        ("group_norm per-frame", frame_s, GroupNormOpts { frames: 1, pooled: false, silu: false }, 1e-6),
    ] {
        let x = random_tensor(gpu, &s, dtype, 1)?;
        let c = s[3];
        let w = NormWeight::from_torch(gpu, &vec![1.0; c], &vec![0.0; c])?;
        let n = x.numel() as f64;
        v.push(BenchCase {
            name: name.into(),
            shape: format!("{s:?} G=32"),
            flops: 0.0,
            bytes: 2.0 * n * es,
            run: Box::new(move |r| group_norm_w(r, &x, 32, eps, &w, opts).map(drop)),
        });
    }
    let x = random_tensor(gpu, &ln_s, dtype, 2)?;
    let w = NormWeight::from_torch(gpu, &vec![1.0; ln_s[1]], &vec![0.0; ln_s[1]])?;
    let n = x.numel() as f64;
    v.push(BenchCase {
        name: "layer_norm".into(),
        shape: format!("{ln_s:?}"),
        flops: 0.0,
        bytes: 2.0 * n * es,
        run: Box::new(move |r| layer_norm_w(r, &x, &w, 1e-5).map(drop)),
    });
    Ok(v)
}

/// CPU references (f64 accumulation), PyTorch semantics.
pub mod cpu {
    /// GroupNorm of channels-last `x` viewed `[n, px, c]`; statistics per image, or per run of
    /// `frames` consecutive images when `pooled`.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm(
        x: &[f32],
        n: usize,
        px: usize,
        c: usize,
        groups: usize,
        eps: f32,
        gamma: &[f32],
        beta: &[f32],
        frames: usize,
        pooled: bool,
        silu: bool,
    ) -> Vec<f32> {
        assert_eq!(x.len(), n * px * c);
        let cg = c / groups;
        let (segs, seg_px) = if pooled { (n / frames, frames * px) } else { (n, px) };
        let mut y = vec![0.0f32; x.len()];
        for s in 0..segs {
            let seg = &x[s * seg_px * c..(s + 1) * seg_px * c];
            for g in 0..groups {
                let vals = || (0..seg_px).flat_map(move |p| (0..cg).map(move |j| seg[p * c + g * cg + j] as f64));
                let cnt = (seg_px * cg) as f64;
                let mean = vals().sum::<f64>() / cnt;
                let var = vals().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cnt;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                for p in 0..seg_px {
                    for j in 0..cg {
                        let ch = g * cg + j;
                        let i = (s * seg_px + p) * c + ch;
                        let mut v = (x[i] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
                        if silu {
                            v /= 1.0 + (-v).exp();
                        }
                        y[i] = v as f32;
                    }
                }
            }
        }
        y
    }

    /// LayerNorm over rows of `c` values.
    pub fn layer_norm(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
        x.chunks(c)
            .flat_map(|row| {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                row.iter()
                    .enumerate()
                    .map(move |(j, &v)| ((v as f64 - mean) * rstd * gamma[j] as f64 + beta[j] as f64) as f32)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::*;

    const TOL: f64 = 1e-4;

    /// `n` values `normal·scale + offset`, uploaded, and their host twin (f16-rounded for f16).
    fn up(gpu: &crate::Gpu, rng: &mut Rng, shape: &[usize], scale: f32, offset: f32, dt: DType) -> (Tensor, Vec<f32>) {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = rng.normals(n, scale).into_iter().map(|x| x + offset).collect();
        let t = Tensor::from_f32(gpu, &v, shape, dt).unwrap();
        let host = if dt == DType::F16 { round_f16(&v) } else { v };
        (t, host)
    }

    fn weights(gpu: &crate::Gpu, rng: &mut Rng, c: usize) -> (NormWeight, Vec<f32>, Vec<f32>) {
        let g: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
        let b = rng.normals(c, 0.5);
        (NormWeight::from_torch(gpu, &g, &b).unwrap(), g, b)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_gn(gpu: &crate::Gpu, rng: &mut Rng, seed: u64, dt: DType, shape: &[usize], groups: usize, opts: GroupNormOpts, scale: f32, offset: f32, eps: f32) {
        let c = *shape.last().unwrap();
        let (x, xh) = up(gpu, rng, shape, scale, offset, dt);
        let (w, g, b) = weights(gpu, rng, c);
        let mut rec = gpu.recorder();
        let out = group_norm_w(&mut rec, &x, groups, eps, &w, opts).unwrap();
        rec.submit();
        let (n, px, _, frames) = gn_dims(x.shape(), opts.frames).unwrap();
        let want = cpu::group_norm(&xh, n, px, c, groups, eps, &g, &b, frames, opts.pooled, opts.silu);
        assert_eq!(out.shape(), shape);
        assert_close(
            &format!("group_norm {shape:?} G={groups} {opts:?} x~N({offset},{scale}) {dt:?} seed {seed}"),
            &out.to_f32(gpu).unwrap(),
            &want,
            dt.tolerance(TOL),
        );
    }

    #[test]
    fn group_norm_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (C, groups): the UNet's 32 groups at several widths (1, 2, 3, 10 channels per group),
        // and small odd configs, incl. one with several channel blocks (600 / 200 groups of 3).
        let cg_cases = [(32, 32), (64, 32), (96, 32), (320, 32), (6, 3), (12, 4), (8, 2), (600, 200)];
        let hw = [(1, 1), (7, 5), (13, 9)];
        let mut k = 0usize;
        for dt in gpu.dtypes() {
            for &(c, groups) in &cg_cases {
                for &(h, w) in &hw {
                    // Cycle through frames × pooled × silu so each value meets every C and size.
                    for rep in 0..2 {
                        k += 1;
                        let frames = [1, 3, 8][(k + rep) % 3];
                        let pooled = (k / 3 + rep).is_multiple_of(2);
                        let silu = (k / 2) % 2 == rep % 2;
                        let b = if frames == 8 && h * w * c > 10_000 { 1 } else { 2 };
                        let opts = GroupNormOpts { frames, pooled, silu };
                        check_gn(&gpu, &mut rng, seed, dt, &[b * frames, h, w, c], groups, opts, 3.0, 5.0, 1e-5);
                    }
                }
            }
        }
    }

    /// A channel pair's concatenation on the host: row r of the pair is row r % rows of each
    /// part (a part with fewer rows repeats).
    pub(crate) fn host_pair(a: &[f32], c1: usize, b: &[f32], c2: usize, rows: usize) -> Vec<f32> {
        let (ra, rb) = (a.len() / c1, b.len() / c2);
        (0..rows).flat_map(|r| a[(r % ra) * c1..][..c1].iter().chain(&b[(r % rb) * c2..][..c2]).copied()).collect()
    }

    /// GroupNorm of a channel pair read from both parts: the values of the CPU norm of the
    /// concatenation, and the bytes of the GPU norm of the written concatenation, for each
    /// vector width (4, 2 and 1 channels per group's vector), groups that straddle the two
    /// parts, a part that repeats over the batch (a skip shared by both CFG halves), and a pair
    /// whose first part is not a whole number of vectors (concatenated first).
    #[test]
    fn channel_pair_matches_the_concatenation() {
        use crate::ops::concat::concat_channels;
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (first part's shape, second part's shape, groups, frames, pooled)
        type Case = (&'static [usize], &'static [usize], usize, usize, bool);
        let cases: [Case; 5] = [
            (&[2, 7, 5, 12], &[2, 7, 5, 20], 4, 1, false), // V = 4, group 1 straddles the parts
            (&[6, 3, 5, 6], &[3, 3, 5, 10], 8, 3, true),   // V = 2, the second part repeats
            (&[2, 1, 33, 3], &[4, 1, 33, 6], 3, 2, true),  // V = 1, the first part repeats
            (&[2, 5, 5, 7], &[4, 5, 5, 9], 4, 1, false),   // V = 4 does not divide 7: concatenated
            (&[1, 2, 3, 5, 8], &[1, 2, 3, 5, 24], 8, 0, true), // 5-D, pooled over its frames
        ];
        for dt in gpu.dtypes() {
            for &(sa, sb, groups, frames, pooled) in &cases {
                let what = format!("{} pair {sa:?} + {sb:?} G={groups} seed {seed}", dt.name());
                let (a, ah) = up(&gpu, &mut rng, sa, 2.0, 3.0, dt);
                let (b, bh) = up(&gpu, &mut rng, sb, 2.0, -1.0, dt);
                let (c1, c2) = (sa[sa.len() - 1], sb[sb.len() - 1]);
                let c = c1 + c2;
                let pair = Input::channels(&a, &b).unwrap();
                let shape = pair.shape().to_vec();
                let rows = pair.numel() / c;
                let (w, g, be) = weights(&gpu, &mut rng, c);
                let opts = GroupNormOpts { frames, pooled, silu: true };
                let run = |from_pair: bool| {
                    let mut rec = gpu.recorder();
                    let x = if from_pair { pair.clone() } else { Input::Tensor(concat_channels(&mut rec, &[&a, &b]).unwrap()) };
                    let t = group_norm_table_w(&mut rec, &x, groups, 1e-5, &w, opts).unwrap();
                    let y = group_norm_apply(&mut rec, &x, &t).unwrap();
                    rec.submit();
                    (y.read_bytes(&gpu).unwrap(), y.to_f32(&gpu).unwrap(), y.shape().to_vec())
                };
                let (bytes, got, got_shape) = run(true);
                assert_eq!(got_shape, shape, "{what}");
                let xh = host_pair(&ah, c1, &bh, c2, rows);
                let (n, px, _, f) = gn_dims(&shape, frames).unwrap();
                let want = cpu::group_norm(&xh, n, px, c, groups, 1e-5, &g, &be, f, opts.pooled, true);
                assert_close(&what, &got, &want, dt.tolerance(TOL));
                assert!(bytes == run(false).0, "{what}: reading the pair changes the bytes of the norm of its concatenation");
            }
        }
        // A pair whose parts cannot sit side by side is refused.
        let (a, _) = up(&gpu, &mut rng, &[2, 3, 3, 4], 1.0, 0.0, DType::F32);
        let (b, _) = up(&gpu, &mut rng, &[2, 3, 4, 4], 1.0, 0.0, DType::F32);
        let e = Input::channels(&a, &b).unwrap_err().to_string();
        assert!(e.contains("leading dims differ"), "{e}");
    }

    #[test]
    fn group_norm_five_d_and_tokens() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            let opts = GroupNormOpts { frames: 0, pooled: true, silu: true };
            check_gn(&gpu, &mut rng, seed, dt, &[2, 3, 5, 7, 64], 32, opts, 2.0, -1.0, 1e-5);
            let opts = GroupNormOpts { frames: 1, pooled: false, silu: false };
            check_gn(&gpu, &mut rng, seed, dt, &[3, 35, 96], 32, opts, 2.0, 1.0, 1e-6);
        }
    }

    #[test]
    fn group_norm_many_chunks_large_mean() {
        // Groups spread over many workgroups (partials merged by the finalize pass) with a mean
        // far above σ: naive Σx² − (Σx)²/n in f32 would lose the variance here.
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            let opts = GroupNormOpts { frames: 8, pooled: true, silu: false };
            check_gn(&gpu, &mut rng, seed, dt, &[2 * 8, 24, 20, 32], 32, opts, 1.0, 300.0, 1e-5);
            let opts = GroupNormOpts { frames: 1, pooled: false, silu: true };
            check_gn(&gpu, &mut rng, seed, dt, &[2, 40, 33, 256], 32, opts, 0.5, -100.0, 1e-6);
        }
    }

    #[test]
    fn group_norm_plan_covers_all() {
        // Geometry invariants over many shapes (host only).
        for (segs, seg_px, c, groups) in [(1, 1, 32, 32), (2, 131072, 256, 32), (16, 4096, 512, 32), (3, 77, 600, 200), (1, 1 << 22, 128, 32), (4, 9, 1024, 32), (1, 5, 7, 7), (1, 5, 1024, 1)] {
            let p = gn_plan(segs, seg_px, c, groups).unwrap();
            let q = p.params;
            let cg = c / groups;
            assert_eq!(cg % [4, 2, 1][p.vi], 0);
            assert!(q.lanes as usize <= WG && q.rows >= 1 && (q.rows * q.lanes) as usize <= WG, "{q:?}");
            assert_eq!(q.chunk_px % (4 * q.rows), 0, "{q:?}");
            assert!(q.nchunks as usize * q.chunk_px as usize >= seg_px);
            assert!((q.nblk * q.gpb) as usize >= groups);
            assert!((q.chunk_px / q.rows) < 4096, "lavapipe trip limit: {q:?}");
            assert!(q.nchunks / 256 < 4096, "{q:?}");
        }
        assert!(gn_plan(1, 1, 4096, 1).is_err());
    }

    #[test]
    fn layer_norm_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for c in [1usize, 2, 7, 33, 77, 320, 1024] {
                for (shape, offset) in [(vec![1, c], 0.0), (vec![5, 7, c], 5.0), (vec![77, c], -300.0)] {
                    let (x, xh) = up(&gpu, &mut rng, &shape, 3.0, offset, dt);
                    let (w, g, b) = weights(&gpu, &mut rng, c);
                    let mut rec = gpu.recorder();
                    let out = layer_norm_w(&mut rec, &x, &w, 1e-5).unwrap();
                    rec.submit();
                    assert_eq!(out.shape(), &shape[..]);
                    let want = cpu::layer_norm(&xh, c, &g, &b, 1e-5);
                    assert_close(&format!("layer_norm {shape:?} x~N({offset},3) {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let gpu = test_gpu();
        let x = Tensor::from_f32(&gpu, &[1.0; 2 * 3 * 64], &[2, 3, 64], DType::F32).unwrap();
        let w = NormWeight::from_torch(&gpu, &[1.0; 64], &[0.0; 64]).unwrap();
        let w32 = NormWeight::from_torch(&gpu, &[1.0; 32], &[0.0; 32]).unwrap();
        let mut rec = gpu.recorder();
        let o = GroupNormOpts { frames: 1, pooled: false, silu: false };
        assert!(group_norm_w(&mut rec, &x, 30, 1e-5, &w, o).is_err(), "groups not dividing C");
        assert!(group_norm_w(&mut rec, &x, 32, 1e-5, &w32, o).is_err(), "weights of the wrong size");
        assert!(group_norm_w(&mut rec, &x, 32, 1e-5, &w, GroupNormOpts { frames: 4, pooled: true, silu: false }).is_err(), "2 images are not windows of 4");
        let g16 = Tensor::from_f32(&gpu, &[1.0; 64], &[64], DType::F16).unwrap();
        assert!(group_norm(&mut rec, &x, 32, 1e-5, &g16, &w.beta, o).is_err(), "f16 gamma");
        assert!(layer_norm_w(&mut rec, &x, &w32, 1e-5).is_err());
        let x5 = Tensor::from_f32(&gpu, &[1.0; 2 * 3 * 64], &[1, 2, 3, 1, 64], DType::F32).unwrap();
        assert!(group_norm_w(&mut rec, &x5, 32, 1e-5, &w, GroupNormOpts { frames: 3, pooled: true, silu: false }).is_err());
        assert!(group_norm_w(&mut rec, &x, 32, 1e-5, &w, GroupNormOpts { frames: 0, pooled: true, silu: false }).is_err(), "pooled without F");
        let big = Tensor::from_f32(&gpu, &[1.0; 20000], &[1, 20000], DType::F32).unwrap();
        let wb = NormWeight::from_torch(&gpu, &vec![1.0; 20000], &vec![0.0; 20000]).unwrap();
        assert!(layer_norm_w(&mut rec, &big, &wb, 1e-5).is_err());
    }
}
