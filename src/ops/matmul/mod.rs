//! Matrix multiplication and `nn.Linear` (`shaders/matmul*.wgsl`).
//!
//! Two kernels compute `out = a · b (+ bias)` with f32 accumulation:
//! - the **portable** tiled kernel (`matmul.wgsl`): any storage dtype, any M, N, K; workgroup
//!   tiles of 64×64 … 128×128 in workgroup memory, 4×4 … 8×8 outputs per invocation;
//! - the **cooperative-matrix** kernel (`matmul_coop.wgsl`): f16 storage, f16 → f32 tensor-core
//!   products on 16×16×16 fragments (8×8×8 where the adapter has only those: Apple, Mesa's
//!   lavapipe), 8 subgroups each owning a 4×4 block of fragments, so 128×256×32 workgroup tiles
//!   at 16 (64×128×16 at 8) staged through workgroup memory. It needs a fixed subgroup width that
//!   splits the loads evenly (32 at 16; 8 or 32 at 8), K % 4 == 0 and N % 4 == 0 (vec4 loads and
//!   stores); M, N and K need not be tile multiples (zero-padded loads, guarded staged stores).
//!
//! Both can add a [`Residual`] to the output as they store it ([`linear_add`]), or gate it with
//! GEGLU ([`linear_geglu`]: each stored value is `x·gelu(gate)` of a pair of columns), and both
//! can take a LayerNorm's or GroupNorm's input and apply the norm as they load it
//! (`matmul_a_ln.wgsl`, from the rows' statistics of [`layer_norm_table`]; `matmul_a_gn.wgsl`,
//! from a [`GnTable`]; the linear layers given an [`LinearInput::layer_normed`] or
//! [`LinearInput::group_normed`], where [`Fuse`] says), so the normalised tensor is never written.
//!
//! [`Impl::Auto`] takes the cooperative kernel when the adapter has it ([`coop_available`]), the
//! storage dtype is f16 (or f32 with `--f16-operands`: operands rounded to f16 as they are staged)
//! and the shape qualifies, and the portable kernel otherwise; where tuning is on
//! (`gpu/tune.rs`) it times that kernel's variants (8 or 4 subgroups, loads overlapped or not;
//! the portable kernel's four tiles) on each new shape and keeps the fastest.
//!
//! Layout: row-major. `a` is `[batch.., M, K]`; `b` is a shared `[K, N]` (then every leading axis of
//! `a` folds into M) or batched `[batch.., K, N]` with the same leading axes as `a`; `bias` is `[N]`;
//! the output is `[batch.., M, N]`. A token sequence `[batch, tokens, C]` or channels-last
//! `[N, H, W, C]` activation is already in this form with K = C.

use anyhow::{bail, ensure, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::input::Input;
use crate::ops::norm::{group_norm_apply, layer_norm_table, layer_norm_w, Fuse, GnTable, LayerNormWeight};
use crate::ops::residual::Residual;
use crate::ops::pack::{Placement, Src};
use crate::ops::synthetic::Packing;
use crate::tensor::{DType, Tensor};
use crate::ops::coop_gemm::CoopGemm;
use crate::Gpu;

/// The three kernels (portable, cooperative with scalar or vec4 workgroup tiles), each after the
/// file `$a` that says how it takes its a operand. The cooperative ones are the matmul's side
/// (`matmul_coop.wgsl`) of the GEMM core it shares with the convolution (`coop_gemm.wgsl`).
macro_rules! matmul_sources {
    ($a:literal) => {
        [
            concat!(include_str!($a), include_str!("../../../shaders/matmul.wgsl")),
            matmul_sources!($a, "../../../shaders/coop_tiles_s1.wgsl"),
            matmul_sources!($a, "../../../shaders/coop_tiles_s4.wgsl"),
        ]
    };
    ($a:literal, $tiles:literal) => {
        concat!(
            include_str!($a),
            include_str!("../../../shaders/matmul_coop.wgsl"),
            "\n",
            include_str!("../../../shaders/coop_gemm.wgsl"),
            "\n",
            include_str!($tiles)
        )
    };
}
/// a as stored.
const PLAIN: [&str; 3] = matmul_sources!("../../../shaders/matmul_a_plain.wgsl");
const PLAIN_NAMES: [&str; 3] = ["matmul", "matmul_coop", "matmul_coop_v4"];
/// a through a LayerNorm applied as it loads ([`LinearInput::LayerNormed`]).
const LN: [&str; 3] = matmul_sources!("../../../shaders/matmul_a_ln.wgsl");
const LN_NAMES: [&str; 3] = ["matmul_ln", "matmul_coop_ln", "matmul_coop_v4_ln"];
/// a through a GroupNorm applied as it loads ([`LinearInput::GroupNormed`]).
const GN: [&str; 3] = matmul_sources!("../../../shaders/matmul_a_gn.wgsl");
const GN_NAMES: [&str; 3] = ["matmul_gn", "matmul_coop_gn", "matmul_coop_v4_gn"];

/// Row tiles per launch group (see `tile_of` in the shaders).
const GROUP_M: u32 = 8;
/// The cooperative kernel's tile on one adapter: the GEMM core's (see `ops::coop_gemm`), four
/// blocks wide: 8 subgroups share a workgroup tile of 8·FS × 16·FS, 4 (for grids too small to
/// fill a GPU) one of half the rows.
type CoopCfg = CoopGemm;

/// Workgroup memory of the cooperative kernel (bytes): the core's staged tiles and NSG
/// subgroups' epilogue staging of FS × 2·FS f32.
fn coop_wg_bytes(c: CoopCfg) -> u32 {
    c.staged_bytes() + c.nsg * 2 * c.fs * c.fs * 4
}

/// Whether the core's loads and the epilogue's copy of the staged slices divide evenly among
/// the invocations (e.g. 16×16 fragments with 32-wide subgroups, or 8×8 with 8- or 32-wide ones).
fn coop_divides(c: CoopCfg) -> bool {
    c.bn == 16 * c.fs && (c.nsg == 8 || c.nsg == 4) && c.loads_divide() && (c.nsg * c.fs * c.fs / 2).is_multiple_of(c.invocations())
}

/// The cooperative kernel's configuration on this adapter, if it can run it: f16×f16→f32
/// fragments (16×16×16 or 8×8×8), a fixed subgroup width that splits the work evenly, and
/// enough invocations and workgroup memory.
fn coop_config(gpu: &Gpu) -> Option<CoopCfg> {
    let cfg = CoopCfg::new(gpu.coop_fragment()?, gpu.fixed_subgroup_size()?, 4);
    (coop_divides(cfg)
        && gpu.workgroup_fits(cfg.invocations())
        && coop_wg_bytes(cfg) <= gpu.limits.max_compute_workgroup_storage_size)
        .then_some(cfg)
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,
    tiles_n: u32,
    a_bs: u32,
    b_bs: u32,
    o_bs: u32,
    batch: u32,
    /// Output rows per residual row (see ops/residual.rs); 1 without a residual.
    res_rep: u32,
    /// Rows of a per GroupNorm segment where one is applied on load; else 0.
    seg_px: u32,
}

/// Which kernel a matmul uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Impl {
    /// Cooperative matrices when available and the shape qualifies, else portable.
    Auto,
    /// The portable tiled kernel (tile size chosen from the shape).
    Portable,
    /// The cooperative-matrix kernel with scalar-f16 workgroup tiles; an error where unavailable.
    Coop,
    /// The cooperative-matrix kernel with `vec4<f16>` workgroup tiles (one 8-byte store per vec4
    /// instead of four 2-byte ones; relies on coopLoadT measuring offsets and strides in vec4
    /// elements, checked by the GPU tests on hardware that has cooperative matrices).
    /// `Auto`'s choice: it passed `coop_matches_cpu` on an H200 and ran 3–5% faster than `Coop`
    /// (BENCHMARKS.md).
    CoopV4,
    /// `CoopV4` on 4 subgroups instead of 8: tiles of half the rows, twice the workgroups, for
    /// grids too small to fill a large GPU (the UNets' 16×16 level). `Auto` runs it where tuning
    /// times it faster for the shape; `bench kernels` times it beside `Auto` (BENCHMARKS.md).
    CoopV4Half,
}

/// A concrete kernel choice.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Variant {
    /// Portable kernel, workgroup tile (64·rm)×(64·rn).
    Tiled { rm: u32, rn: u32 },
    /// Cooperative kernel; `half`: on 4 subgroups (`CoopCfg::halved`); `prefetch`: see
    /// [`CoopCfg::prefetch`].
    Coop { v4: bool, half: bool, prefetch: bool },
}

/// Whether this adapter can run the cooperative kernel (see `coop_config`).
pub fn coop_available(gpu: &Gpu) -> bool {
    coop_config(gpu).is_some()
}

/// Resolved problem: `batch` independent [M, K]·[K, N] products.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    /// Batch strides in elements (b's is 0 for a shared weight).
    a_bs: usize,
    b_bs: usize,
    o_bs: usize,
    out_shape: Vec<usize>,
}

fn plan(a: &[usize], b: &[usize], bias: Option<&[usize]>) -> Result<Plan> {
    if a.len() < 2 || b.len() < 2 {
        bail!("matmul: a {a:?} and b {b:?} need at least 2 axes ([.., M, K] and [.., K, N])");
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (kb, n) = (b[b.len() - 2], b[b.len() - 1]);
    if kb != k {
        bail!("matmul: a {a:?} has K = {k} but b {b:?} has K = {kb}");
    }
    let lead = &a[..a.len() - 2];
    let mut out_shape = lead.to_vec();
    out_shape.extend([m, n]);
    let p = if b.len() == 2 {
        // A shared weight: fold every leading axis of a into M (bigger tiles, one launch).
        let rows: usize = lead.iter().product::<usize>() * m;
        Plan { batch: 1, m: rows, n, k, a_bs: 0, b_bs: 0, o_bs: 0, out_shape }
    } else {
        if &b[..b.len() - 2] != lead {
            bail!("matmul: batch axes of a {a:?} and b {b:?} differ (b must be [K, N] or have a's leading axes)");
        }
        let batch: usize = lead.iter().product();
        Plan { batch, m, n, k, a_bs: m * k, b_bs: k * n, o_bs: m * n, out_shape }
    };
    if let Some(s) = bias {
        if s.iter().product::<usize>() != n || s.last() != Some(&n) {
            bail!("matmul: bias {s:?} must be [{n}]");
        }
    }
    let limit = u32::MAX as usize;
    for (what, e) in [("a", p.batch * p.m * p.k), ("b", p.batch.max(1) * p.k * p.n), ("output", p.batch * p.m * p.n)] {
        if e > limit {
            bail!("matmul: {what} has {e} elements, beyond the kernels' 32-bit indexing");
        }
    }
    Ok(p)
}

/// What a kernel does with the product (after the bias) as it stores it.
#[derive(Copy, Clone, Debug)]
enum Store<'a> {
    Plain,
    Add(Residual<'a>),
    /// Columns come in groups of four `(x_j, x_j+1, g_j, g_j+1)` ([`GegluWeight`]'s order); two
    /// values `x·gelu(g)` are stored per group, at output columns j, j + 1 of an N/2-wide output.
    Geglu,
}

fn coop_shape_ok(p: &Plan, store: Store) -> bool {
    // K > 0: a vec4<f16> binding needs at least 8 bytes. GEGLU stores whole vec4s of output from
    // two groups: N % 8.
    let n_align = if matches!(store, Store::Geglu) { 8 } else { 4 };
    p.k > 0 && p.k.is_multiple_of(4) && p.n.is_multiple_of(n_align)
}

/// The portable kernel's tile for this shape: 128-wide where the dimension allows, shrunk while
/// the launch would have fewer than ~128 workgroups (to keep a large GPU busy), or while its
/// workgroup memory is over `smem_limit` (128×128 takes 16.3 KiB in f32; 64×64 fits any
/// adapter).
fn portable_tile(p: &Plan, dtype: DType, smem_limit: u32) -> (u32, u32) {
    let big = |x: usize| if x >= 128 { 2u32 } else { 1 };
    let (mut rm, mut rn) = (big(p.m), big(p.n));
    let count = |rm: u32, rn: u32| p.m.div_ceil(64 * rm as usize) * p.n.div_ceil(64 * rn as usize) * p.batch;
    while (count(rm, rn) < 128 || portable_smem(rm, rn, dtype) > smem_limit) && (rm > 1 || rn > 1) {
        if rm >= rn {
            rm = 1;
        } else {
            rn = 1;
        }
    }
    (rm, rn)
}

/// The portable kernel's workgroup memory for an (rm, rn) tile (shaders/matmul.wgsl): a's tile
/// [16][BM/4 + 1] vec4 in the storage type, b's [16][BN/4] vec4 in f32.
fn portable_smem(rm: u32, rn: u32, dtype: DType) -> u32 {
    16 * (16 * rm + 1) * 4 * dtype.size() as u32 + 16 * (16 * rn) * 16
}

/// The kernel `path` asks for; for `Auto`, the rule's choice (see [`auto_variants`]).
fn choose(gpu: &Gpu, dtype: DType, p: &Plan, store: Store, path: Impl) -> Result<Variant> {
    let coop_ok = || -> Result<()> {
        if !coop_available(gpu) {
            bail!("matmul: this adapter cannot run the cooperative-matrix kernel (see matmul::coop_available)");
        }
        // f32 storage runs on f16 operands only where asked (`--f16-operands`).
        if !gpu.coop_takes(dtype) {
            bail!("matmul: the cooperative-matrix kernel needs f16 storage (or f32 with --f16-operands), not {}", dtype.name());
        }
        if !coop_shape_ok(p, store) {
            bail!("matmul: the cooperative-matrix kernel needs K > 0 and K, N divisible by 4 (N by 8 with GEGLU) (K = {}, N = {})", p.k, p.n);
        }
        Ok(())
    };
    Ok(match path {
        Impl::Auto => auto_variants(gpu, dtype, coop_ok().is_ok(), p)[0],
        Impl::Portable => {
            let (rm, rn) = portable_tile(p, dtype, gpu.limits.max_compute_workgroup_storage_size);
            Variant::Tiled { rm, rn }
        }
        Impl::Coop => {
            coop_ok()?;
            Variant::Coop { v4: false, half: false, prefetch: true }
        }
        Impl::CoopV4 => {
            coop_ok()?;
            Variant::Coop { v4: true, half: false, prefetch: true }
        }
        Impl::CoopV4Half => {
            coop_ok()?;
            if !coop_config(gpu).is_some_and(|c| coop_divides(c.halved())) {
                bail!("matmul: the cooperative kernel on 4 subgroups does not split its tiles evenly on this adapter");
            }
            Variant::Coop { v4: true, half: true, prefetch: true }
        }
    })
}

/// `Auto`'s candidates, the rule's choice first: the cooperative vec4 kernel on 8 subgroups and
/// on 4, each with its loads overlapped and not, where it runs (`coop`), else the portable
/// kernel in its four tiles. Every candidate
/// adds each output's products in K order with the same K step, so the tuner's choice changes
/// no value.
fn auto_variants(gpu: &Gpu, dtype: DType, coop: bool, p: &Plan) -> Vec<Variant> {
    if coop {
        let halves: &[bool] = if coop_config(gpu).is_some_and(|c| coop_divides(c.halved())) { &[false, true] } else { &[false] };
        return [true, false].iter().flat_map(|&prefetch| halves.iter().map(move |&half| Variant::Coop { v4: true, half, prefetch })).collect();
    }
    let limit = gpu.limits.max_compute_workgroup_storage_size;
    let (rm, rn) = portable_tile(p, dtype, limit);
    let mut v = vec![Variant::Tiled { rm, rn }];
    for (rm, rn) in [(2, 2), (2, 1), (1, 2), (1, 1)] {
        if !v.contains(&Variant::Tiled { rm, rn }) && portable_smem(rm, rn, dtype) <= limit {
            v.push(Variant::Tiled { rm, rn });
        }
    }
    v
}

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::Tiled { rm, rn } => format!("tiled {}x{}", 64 * rm, 64 * rn),
            Variant::Coop { v4, half, prefetch } => {
                format!("coop{} on {} subgroups{}", if v4 { " vec4" } else { "" }, if half { 4 } else { 8 }, if prefetch { "" } else { ", loads not overlapped" })
            }
        }
    }
}

/// The kernel to run: `Auto` runs the tuner over [`auto_variants`] (timing each on scratch
/// operands of this problem, with a plain store, the first time it meets it, where tuning is
/// on); any other path as [`choose`] resolves it.
/// An operand for a timing run: a weight is bound as it is; an activation still being captured
/// has no memory yet (nor may a graph's tensor be used while another graph holds its arena),
/// so a scratch tensor of its shape stands in.
fn bound_or_scratch(r: &mut Recorder, t: &Tensor) -> Result<Tensor> {
    if t.location().is_ok() {
        Ok(t.clone())
    } else {
        r.empty(t.shape(), t.dtype())
    }
}

/// A norm a kernel applies to its a operand as it loads it.
#[derive(Copy, Clone)]
enum ANorm<'a> {
    /// A LayerNorm: the rows' statistics ([`layer_norm_table`]) and the norm's weights.
    Layer { table: &'a Tensor, w: &'a LayerNormWeight },
    /// A GroupNorm (without SiLU) of a's rows as pixels: its table ([`GnTable`]).
    Group(&'a GnTable),
}

impl ANorm<'_> {
    fn name(self) -> &'static str {
        match self {
            ANorm::Layer { .. } => "layer norm",
            ANorm::Group(_) => "group norm",
        }
    }
}

/// With `norm`, for the kernel that applies that norm as it loads a.
#[allow(clippy::too_many_arguments)]
fn choose_tuned(gpu: &Gpu, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, store: Store, p: &Plan, norm: Option<NormIn>, path: Impl) -> Result<Variant> {
    let v = choose(gpu, a.dtype(), p, store, path)?;
    if path != Impl::Auto {
        return Ok(v);
    }
    let variants = auto_variants(gpu, a.dtype(), matches!(v, Variant::Coop { .. }), p);
    let key = || {
        let after = match norm {
            Some(NormIn::Layer(..)) => " after layer norm",
            Some(NormIn::Group(_)) => " after group norm",
            None => "",
        };
        format!("matmul {} {}x{}x{} batch {}{}{after}", gpu.operands_name(a.dtype()), p.m, p.k, p.n, p.batch, if p.b_bs > 0 { " (batched b)" } else { "" })
    };
    crate::kernel::tuned(gpu, key, &variants, Variant::label, |r, v| {
        let sa = r.empty(a.shape(), a.dtype())?;
        let sb = bound_or_scratch(r, b)?;
        let sbias = bias.map(|t| bound_or_scratch(r, t)).transpose()?;
        // Scratch statistics of the same shapes.
        let (table, gn);
        let norm = match norm {
            Some(NormIn::Layer(w, _)) => {
                table = r.empty(&[p.m, 4], DType::F32)?;
                Some(ANorm::Layer { table: &table, w })
            }
            Some(NormIn::Group(g)) => {
                gn = g.with_table(r.empty(g.table.shape(), DType::F32)?);
                Some(ANorm::Group(&gn))
            }
            None => None,
        };
        run(r, &sa, &sb, sbias.as_ref(), Store::Plain, p, norm, v).map(drop)
    })
}

fn check_dtypes(a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    if a.dtype() != b.dtype() {
        bail!("matmul: a is {} but b is {}", a.dtype().name(), b.dtype().name());
    }
    if let Some(c) = bias {
        if c.dtype() != a.dtype() {
            bail!("matmul: bias is {} but a is {}", c.dtype().name(), a.dtype().name());
        }
    }
    Ok(())
}

/// The cooperative kernel in `dtype` storage (f16, or f32 rounded to f16 operands as it is
/// staged), taking a as `srcs` and `names` say.
fn coop_kernel(v4: bool, cfg: CoopCfg, dtype: DType, srcs: &[&'static str; 3], names: &[&'static str; 3]) -> Kernel {
    let i = if v4 { 2 } else { 1 };
    cfg.specialise(Kernel::new(names[i], srcs[i], dtype))
}

#[allow(clippy::too_many_arguments)]
fn run(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, store: Store, p: &Plan, norm: Option<ANorm>, v: Variant) -> Result<Tensor> {
    run_into(rec, a, b, bias, store, p, norm, v, None)
}

/// [`run`] storing into `dest` where given (a tensor or view of the output's shape and dtype),
/// else into a new tensor.
#[allow(clippy::too_many_arguments)]
fn run_into(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, store: Store, p: &Plan, norm: Option<ANorm>, v: Variant, dest: Option<&Tensor>) -> Result<Tensor> {
    let gpu = rec.gpu();
    if let Some(n) = norm {
        if p.batch != 1 {
            bail!("matmul: a {} applied on load needs a shared weight (batch {})", n.name(), p.batch);
        }
    }
    let (srcs, names) = match norm {
        None => (&PLAIN, &PLAIN_NAMES),
        Some(ANorm::Layer { .. }) => (&LN, &LN_NAMES),
        Some(ANorm::Group(_)) => (&GN, &GN_NAMES),
    };
    let mut out_shape = p.out_shape.clone();
    let res_rep = match &store {
        Store::Add(r) => r.rep("matmul", &p.out_shape, a.dtype())?,
        Store::Geglu => {
            if p.batch != 1 || !p.n.is_multiple_of(4) {
                bail!("matmul: the GEGLU store needs a shared weight and N % 4 == 0 (batch {}, N = {})", p.batch, p.n);
            }
            *out_shape.last_mut().unwrap() = p.n / 2;
            1
        }
        Store::Plain => 1,
    };
    let out = match dest {
        Some(t) => {
            ensure!(t.shape() == out_shape.as_slice() && t.dtype() == a.dtype(), "matmul: an output of {:?} {:?} given for {out_shape:?} {:?}", t.shape(), t.dtype(), a.dtype());
            t.clone()
        }
        None => rec.empty(&out_shape, a.dtype())?,
    };
    if out.numel() == 0 {
        return Ok(out);
    }
    let (bm, bn, kernel) = match v {
        Variant::Tiled { rm, rn } => (
            64 * rm as usize,
            64 * rn as usize,
            Kernel::new(names[0], srcs[0], a.dtype()).def("RM", format!("{rm}u")).def("RN", format!("{rn}u")),
        ),
        Variant::Coop { v4, half, prefetch } => {
            let cfg = coop_config(gpu).ok_or_else(|| anyhow::anyhow!("internal: the cooperative matmul was chosen on an adapter without it"))?;
            let cfg = CoopCfg { prefetch, ..if half { cfg.halved() } else { cfg } };
            (cfg.bm() as usize, cfg.bn as usize, coop_kernel(v4, cfg, a.dtype(), srcs, names))
        }
    };
    let kernel = kernel
        .def("HAS_BIAS", bias.is_some())
        .def("HAS_RES", matches!(store, Store::Add(_)))
        .def("GEGLU", matches!(store, Store::Geglu))
        .def("GROUP_M", format!("{GROUP_M}u"));
    let tiles_m = p.m.div_ceil(bm);
    let tiles_n = p.n.div_ceil(bn);
    let total = tiles_m * tiles_n * p.batch;
    if total > u32::MAX as usize {
        bail!("matmul: {total} workgroups is too many for one launch");
    }
    let params = Params {
        m: p.m as u32,
        n: p.n as u32,
        k: p.k as u32,
        tiles_m: tiles_m as u32,
        tiles_n: tiles_n as u32,
        a_bs: p.a_bs as u32,
        b_bs: p.b_bs as u32,
        o_bs: p.o_bs as u32,
        batch: p.batch as u32,
        res_rep,
        seg_px: match norm {
            Some(ANorm::Group(g)) => g.seg_px as u32,
            _ => 0,
        },
    };
    // Unused bindings are filled with an input of the same element type.
    let bias_arg = bias.unwrap_or(b);
    let res_arg = match store {
        Store::Add(r) => r.tensor(),
        _ => a,
    };
    let mut binds = vec![a.into(), b.into(), bias_arg.into(), (&out).into(), res_arg.into()];
    match norm {
        Some(ANorm::Layer { table, w }) => binds.extend([table.into(), (&w.gamma).into(), (&w.beta).into()]),
        Some(ANorm::Group(g)) => binds.push((&g.table).into()),
        None => {}
    }
    rec.dispatch(&kernel, &params, &binds, grid(gpu, total as u32))?;
    rec.add_flops(2.0 * (p.batch * p.m) as f64 * p.n as f64 * p.k as f64);
    Ok(out)
}

/// `a · b (+ bias)` with the kernel [`Impl::Auto`] picks. Shapes: see the module docs
/// (`a [batch.., M, K]`, `b [K, N]` or `[batch.., K, N]`, `bias [N]` → `[batch.., M, N]`).
pub fn matmul(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    matmul_with(rec, a, b, bias, Impl::Auto)
}

/// [`matmul`] on an explicit kernel path (tests and benchmarks).
pub fn matmul_with(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, path: Impl) -> Result<Tensor> {
    matmul_add_with(rec, a, b, bias, None, path)
}

/// [`matmul_with`] plus a [`Residual`] added as the output is stored.
pub fn matmul_add_with(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, res: Option<Residual>, path: Impl) -> Result<Tensor> {
    matmul_store(rec, a, b, bias, res.map_or(Store::Plain, Store::Add), path)
}

fn matmul_store(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, store: Store, path: Impl) -> Result<Tensor> {
    check_dtypes(a, b, bias)?;
    let p = plan(a.shape(), b.shape(), bias.map(|t| t.shape()))?;
    let v = choose_tuned(rec.gpu(), a, b, bias, store, &p, None, path)?;
    run(rec, a, b, bias, store, &p, None, v)
}

/// [`matmul`] without a bias, storing into `out` (a tensor or view of the product's shape and
/// dtype) instead of a new tensor: the Winograd convolution's products land in a tensor it
/// sized itself (`ops::winograd`).
pub fn matmul_into(rec: &mut Recorder, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    check_dtypes(a, b, None)?;
    let p = plan(a.shape(), b.shape(), None)?;
    let v = choose_tuned(rec.gpu(), a, b, None, Store::Plain, &p, None, Impl::Auto)?;
    run_into(rec, a, b, None, Store::Plain, &p, None, v, Some(out)).map(drop)
}

/// An `nn.Linear` layer's parameters on the GPU. The weight is stored transposed, `[in, out]`
/// (the `[K, N]` operand of [`matmul`]), so rows of both operands are contiguous for the kernels.
pub struct LinearWeight {
    /// `[in, out]`.
    pub w: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearWeight {
    /// From PyTorch's `weight` `[out, in]` (row-major host data), without a bias.
    pub fn from_torch(gpu: &Gpu, w: &[f32], out_features: usize, in_features: usize, dtype: DType) -> Result<LinearWeight> {
        LinearWeight::pack(gpu, &[Src::Values(w)], out_features, in_features, dtype, false)
    }

    /// [`from_torch`](Self::from_torch) from any sources, packed on the host or generated on the
    /// GPU when `on_gpu` (synthetic sources): `parts` (each a PyTorch `[out_each, in]` weight)
    /// stacked along the output features in order, as
    /// [`Loader::stacked_linear`](crate::models::Loader::stacked_linear) stacks them.
    pub fn pack(gpu: &Gpu, parts: &[Src<'_>], out_each: usize, in_features: usize, dtype: DType, on_gpu: bool) -> Result<LinearWeight> {
        let out_features = parts.len() * out_each;
        if out_features == 0 || in_features == 0 {
            bail!("linear weight [{out_features}, {in_features}] has a zero axis");
        }
        let mut w = Packing::new(gpu, format!("linear weight [{out_each}, {in_features}]"), &[in_features, out_features], dtype, on_gpu)?;
        for (k, src) in parts.iter().enumerate() {
            // The transpose: row i of part k holds w_k[o][i] for every o, at columns k·out_each + o.
            let place = Placement { rows: in_features, row_len: out_features, col0: k * out_each, col_step: 1, cols: out_each };
            w.fill_rows(*src, 1.0, out_each * in_features, &place, |i| Some((i, in_features)))?;
        }
        Ok(LinearWeight { w: w.finish()?, bias: None, in_features, out_features })
    }

    /// From PyTorch's `weight` `[out, in]` and optional `bias` `[out]`.
    pub fn from_torch_with_bias(
        gpu: &Gpu,
        w: &[f32],
        bias: Option<&[f32]>,
        out_features: usize,
        in_features: usize,
        dtype: DType,
    ) -> Result<LinearWeight> {
        let lw = LinearWeight::from_torch(gpu, w, out_features, in_features, dtype)?;
        match bias {
            Some(b) => lw.with_bias(gpu, b),
            None => Ok(lw),
        }
    }

    /// Adds PyTorch's `bias` `[out]`.
    pub fn with_bias(mut self, gpu: &Gpu, bias: &[f32]) -> Result<LinearWeight> {
        if bias.len() != self.out_features {
            bail!("linear bias has {} values but the layer has {} outputs", bias.len(), self.out_features);
        }
        self.bias = Some(Tensor::from_f32(gpu, bias, &[self.out_features], self.w.dtype())?);
        Ok(self)
    }
}

/// What a linear layer reads: an activation, or a norm's input that the kernel normalises as it
/// loads (or a pass of the norm's own first, as [`Fuse`] says), so the normalised tensor is never
/// written.
#[derive(Clone, Debug)]
pub enum LinearInput {
    Input(Input),
    /// `LayerNorm(x)` over the last axis with `w` and `eps`.
    LayerNormed { x: Tensor, w: LayerNormWeight, eps: f32 },
    /// A GroupNorm (without SiLU) of x, whose statistics `table` holds: x may be a view of the
    /// tensor the table was taken of with other leading dims (tokens `[N, H·W, C]` of
    /// `[N, H, W, C]`).
    GroupNormed { x: Tensor, table: GnTable },
}

impl From<&Tensor> for LinearInput {
    fn from(t: &Tensor) -> LinearInput {
        LinearInput::Input(t.into())
    }
}

impl From<Tensor> for LinearInput {
    fn from(t: Tensor) -> LinearInput {
        LinearInput::Input(t.into())
    }
}

impl From<&LinearInput> for LinearInput {
    fn from(x: &LinearInput) -> LinearInput {
        x.clone()
    }
}

impl LinearInput {
    /// `LayerNorm(x)`: [`layer_norm`](crate::ops::norm::layer_norm)'s values.
    pub fn layer_normed(x: &Tensor, w: &LayerNormWeight, eps: f32) -> LinearInput {
        LinearInput::LayerNormed { x: x.clone(), w: w.clone(), eps }
    }

    /// `GroupNorm(x)` by its statistics `table` (of x, or of x with other leading dims). A norm
    /// with SiLU is refused (no kernel applies SiLU as a matmul loads).
    pub fn group_normed(x: &Tensor, table: &GnTable) -> Result<LinearInput> {
        if table.silu {
            bail!("a GroupNorm with SiLU cannot be applied as a linear layer loads");
        }
        if x.numel() != table.shape.iter().product::<usize>() || x.shape().last() != table.shape.last() {
            bail!("a GroupNorm table of {:?} given with the input {:?}", table.shape, x.shape());
        }
        Ok(LinearInput::GroupNormed { x: x.clone(), table: table.clone() })
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            LinearInput::Input(x) => x.shape(),
            LinearInput::LayerNormed { x, .. } | LinearInput::GroupNormed { x, .. } => x.shape(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            LinearInput::Input(x) => x.dtype(),
            LinearInput::LayerNormed { x, .. } | LinearInput::GroupNormed { x, .. } => x.dtype(),
        }
    }

    /// One tensor holding the values: the input's, or the norm's output from its own pass.
    pub fn materialise(&self, rec: &mut Recorder) -> Result<Tensor> {
        Ok(match self {
            LinearInput::Input(x) => x.materialise(rec)?.into_owned(),
            LinearInput::LayerNormed { x, w, eps } => layer_norm_w(rec, x, w, *eps)?,
            LinearInput::GroupNormed { x, table } => group_norm_apply(rec, x.reshape(&table.shape)?, table)?.reshape(x.shape())?,
        })
    }
}

/// `nn.Linear`: `y = x Wᵀ + b` over the last axis, `x [.., in]` → `[.., out]` (tokens
/// `[batch, tokens, C]` or channels-last activations).
/// `x` may be a LayerNorm's input ([`LinearInput::layer_normed`]): the norm is applied in its own pass
/// or as the kernel loads x, as the device says ([`Fuse::Auto`]; the same values either way).
pub fn linear(rec: &mut Recorder, x: impl Into<LinearInput>, w: &LinearWeight) -> Result<Tensor> {
    linear_with(rec, x, w, Impl::Auto)
}

/// [`linear`] on an explicit kernel path.
pub fn linear_with(rec: &mut Recorder, x: impl Into<LinearInput>, w: &LinearWeight, path: Impl) -> Result<Tensor> {
    linear_add_with(rec, x, w, None, path)
}

/// `x Wᵀ + b + res` in one pass: a linear layer feeding a residual connection
/// (`Residual::Same`, the residual stream viewed as the output's rows) or a per-batch vector.
pub fn linear_add(rec: &mut Recorder, x: impl Into<LinearInput>, w: &LinearWeight, res: Residual) -> Result<Tensor> {
    linear_add_with(rec, x, w, Some(res), Impl::Auto)
}

/// [`linear_add`] (or [`linear`] without a residual) on an explicit kernel path.
pub fn linear_add_with(rec: &mut Recorder, x: impl Into<LinearInput>, w: &LinearWeight, res: Option<Residual>, path: Impl) -> Result<Tensor> {
    linear_store(rec, &x.into(), w, res.map_or(Store::Plain, Store::Add), path, Fuse::Auto)
}

/// How the tuner's keys for where a LayerNorm before a linear layer runs begin (those for a
/// GroupNorm begin as [`conv::NORM_TUNING_KEY`](crate::ops::conv::NORM_TUNING_KEY)).
pub const LN_TUNING_KEY: &str = "layer norm";

/// Storage bindings of the matmul kernels besides a norm's: a, b, bias, out, res.
const BINDINGS: u32 = 5;

/// The norm of an [`Input`] a linear layer can apply as it loads, before its statistics exist.
#[derive(Copy, Clone)]
enum NormIn<'a> {
    Layer(&'a LayerNormWeight, f32),
    Group(&'a GnTable),
}

impl NormIn<'_> {
    /// Storage bindings the kernel needs for it.
    fn bindings(self) -> u32 {
        match self {
            NormIn::Layer(..) => 3,
            NormIn::Group(_) => 1,
        }
    }
}

/// The linear layers' shared body: `x Wᵀ + b` over x's last axis, stored as `store`, with a
/// LayerNorm or GroupNorm of x applied where `fuse` says (its own pass, or as the kernel loads x).
fn linear_store(rec: &mut Recorder, x: &LinearInput, w: &LinearWeight, store: Store, path: Impl, fuse: Fuse) -> Result<Tensor> {
    let s = x.shape().to_vec();
    if s.last() != Some(&w.in_features) {
        bail!("linear: input {s:?} must end in in_features = {}", w.in_features);
    }
    let rows = s.iter().product::<usize>() / w.in_features.max(1);
    let norm = match x {
        LinearInput::LayerNormed { x: t, w: nw, eps } => Some((t, NormIn::Layer(nw, *eps))),
        LinearInput::GroupNormed { x: t, table } => Some((t, NormIn::Group(table))),
        LinearInput::Input(_) => None,
    };
    let y = match norm {
        Some((t, n)) if norm_on_load(rec, t, n, w, store, path, fuse)? => {
            let a = t.reshape(&[rows, w.in_features])?;
            let table;
            let an = match n {
                NormIn::Layer(nw, eps) => {
                    table = layer_norm_table(rec, &a, nw, eps)?;
                    ANorm::Layer { table: &table, w: nw }
                }
                NormIn::Group(g) => ANorm::Group(g),
            };
            check_dtypes(&a, &w.w, w.bias.as_ref())?;
            let p = plan(a.shape(), w.w.shape(), w.bias.as_ref().map(|t| t.shape()))?;
            let v = choose_tuned(rec.gpu(), &a, &w.w, w.bias.as_ref(), store, &p, Some(n), path)?;
            run(rec, &a, &w.w, w.bias.as_ref(), store, &p, Some(an), v)?
        }
        _ => {
            let a = x.materialise(rec)?;
            matmul_store(rec, &a.reshape(&[rows, w.in_features])?, &w.w, w.bias.as_ref(), store, path)?
        }
    };
    let mut os = s;
    *os.last_mut().unwrap() = *y.shape().last().unwrap();
    y.reshape(&os)
}

/// Whether the norm `n` of `x` before the linear layer `w` is applied as the kernel loads x
/// (else in its own pass): as `fuse` says, and for `Fuse::Auto` as the device says
/// ([`Gpu::norm_into_conv`]): where tuning is on, both are timed on each new shape.
#[allow(clippy::too_many_arguments)]
fn norm_on_load(rec: &Recorder, x: &Tensor, n: NormIn, w: &LinearWeight, store: Store, path: Impl, fuse: Fuse) -> Result<bool> {
    let gpu = rec.gpu();
    let fusable = BINDINGS + n.bindings() <= gpu.limits.max_storage_buffers_per_shader_stage;
    if fuse == Fuse::Fused && !fusable {
        return Err(crate::gpu::OverLimit("linear: this adapter has too few storage bindings per shader stage to apply a norm as the matmul loads".into()).into());
    }
    fuse.on_load(gpu, fusable, || {
        let rows = x.numel() / w.in_features.max(1);
        let a = x.reshape(&[rows, w.in_features])?;
        let p = plan(a.shape(), w.w.shape(), w.bias.as_ref().map(|t| t.shape()))?;
        let apart = choose_tuned(gpu, &a, &w.w, w.bias.as_ref(), store, &p, None, path)?;
        let together = choose_tuned(gpu, &a, &w.w, w.bias.as_ref(), store, &p, Some(n), path)?;
        let prefix = match n {
            NormIn::Layer(..) => LN_TUNING_KEY,
            NormIn::Group(_) => crate::ops::conv::NORM_TUNING_KEY,
        };
        let key = || format!("{prefix} into matmul {} {}x{}x{}{}", gpu.operands_name(a.dtype()), p.m, p.k, p.n, if matches!(store, Store::Geglu) { " geglu" } else { "" });
        let label = |f: bool| if f { format!("normalised as loaded, {}", together.label()) } else { format!("norm pass, then {}", apart.label()) };
        crate::kernel::tuned(gpu, key, &[false, true], label, |r, f| {
            let scratch = r.empty(a.shape(), a.dtype())?;
            let (sb, sbias) = (bound_or_scratch(r, &w.w)?, w.bias.as_ref().map(|t| bound_or_scratch(r, t)).transpose()?);
            match (n, f) {
                (NormIn::Layer(nw, eps), true) => {
                    let table = layer_norm_table(r, &scratch, nw, eps)?;
                    run(r, &scratch, &sb, sbias.as_ref(), Store::Plain, &p, Some(ANorm::Layer { table: &table, w: nw }), together).map(drop)
                }
                (NormIn::Layer(nw, eps), false) => {
                    let h = layer_norm_w(r, &scratch, nw, eps)?;
                    run(r, &h, &sb, sbias.as_ref(), Store::Plain, &p, None, apart).map(drop)
                }
                (NormIn::Group(g), true) => {
                    let g = g.with_table(r.empty(g.table.shape(), DType::F32)?);
                    run(r, &scratch, &sb, sbias.as_ref(), Store::Plain, &p, Some(ANorm::Group(&g)), together).map(drop)
                }
                (NormIn::Group(g), false) => {
                    let g = g.with_table(r.empty(g.table.shape(), DType::F32)?);
                    let h = group_norm_apply(r, scratch.reshape(&g.shape)?, &g)?;
                    run(r, &h.reshape(a.shape())?, &sb, sbias.as_ref(), Store::Plain, &p, None, apart).map(drop)
                }
            }
        })
    })
}

/// diffusers' `GEGLU.proj` (PyTorch weight `[2·inner, in]`: the value half, then the gate half)
/// packed for [`linear_geglu`]: output features reordered in groups of four, `x_j, x_j+1, g_j,
/// g_j+1` for j = 0, 2, 4, …, so every value sits in the same vector as its gate.
pub struct GegluWeight {
    /// `[in, 2·inner]` in the interleaved order.
    pub lin: LinearWeight,
}

impl GegluWeight {
    pub fn from_torch(gpu: &Gpu, w: &[f32], bias: Option<&[f32]>, inner: usize, in_features: usize, dtype: DType) -> Result<GegluWeight> {
        GegluWeight::pack(gpu, Src::Values(w), bias, inner, in_features, dtype, false)
    }

    /// [`from_torch`](Self::from_torch) from any source, packed on the host or generated on the
    /// GPU when `on_gpu` (a synthetic source).
    pub fn pack(gpu: &Gpu, src: Src<'_>, bias: Option<&[f32]>, inner: usize, in_features: usize, dtype: DType, on_gpu: bool) -> Result<GegluWeight> {
        if inner == 0 || !inner.is_multiple_of(2) || in_features == 0 {
            bail!("GEGLU weight [2·{inner}, {in_features}]: inner must be even and positive, in_features positive");
        }
        let mut w = Packing::new(gpu, format!("GEGLU weight [2·{inner}, {in_features}]"), &[in_features, 2 * inner], dtype, on_gpu)?;
        for (place, row) in geglu_fills(inner, in_features) {
            w.fill_rows(src, 1.0, 2 * inner * in_features, &place, row)?;
        }
        let lin = LinearWeight { w: w.finish()?, bias: None, in_features, out_features: 2 * inner };
        GegluWeight::with_bias(gpu, lin, bias, inner)
    }

    /// The packed projection with PyTorch's `bias` `[2·inner]` in the packed order.
    fn with_bias(gpu: &Gpu, mut lin: LinearWeight, bias: Option<&[f32]>, inner: usize) -> Result<GegluWeight> {
        if let Some(b) = bias {
            if b.len() != 2 * inner {
                bail!("GEGLU bias has {} values, not 2·{inner}", b.len());
            }
            let src = geglu_source(inner);
            let pb: Vec<f32> = (0..2 * inner).map(|i| b[src(i)]).collect();
            lin = lin.with_bias(gpu, &pb)?;
        }
        Ok(GegluWeight { lin })
    }
}

/// The packed `[in, 2·inner]` GEGLU weight as four strided fills of the PyTorch weight
/// `[2·inner, in]`: packed column 4p + e reads PyTorch row 2p + e (the value half, e < 2) or
/// inner + 2p + e − 2 (the gate half), at every input i.
fn geglu_fills(inner: usize, in_features: usize) -> impl Iterator<Item = (Placement, impl Fn(usize) -> Option<(usize, usize)> + Sync)> {
    let src = geglu_source(inner);
    (0..4).map(move |e| {
        let first = src(e) * in_features;
        (Placement { rows: in_features, row_len: 2 * inner, col0: e, col_step: 4, cols: inner / 2 }, move |i| Some((first + i, 2 * in_features)))
    })
}

/// The PyTorch output feature that packed GEGLU feature i reads: features in groups of four,
/// `x_j, x_j+1, g_j, g_j+1` for j = 0, 2, 4, … (values, then their gates `inner` further on).
fn geglu_source(inner: usize) -> impl Fn(usize) -> usize {
    move |i| {
        let (j, e) = (2 * (i / 4), i % 4);
        if e < 2 {
            j + e
        } else {
            inner + j + e - 2
        }
    }
}

/// diffusers `GEGLU`: `h = x Wᵀ + b; h[.., :inner] · gelu(h[.., inner:])`, `x [.., in]` → `[.., inner]`,
/// the gating done as the product is stored (the `2·inner`-wide projection never reaches memory).
/// `x` may be a LayerNorm's input, as for [`linear`].
pub fn linear_geglu(rec: &mut Recorder, x: impl Into<LinearInput>, w: &GegluWeight) -> Result<Tensor> {
    linear_geglu_with(rec, x, w, Impl::Auto)
}

pub fn linear_geglu_with(rec: &mut Recorder, x: impl Into<LinearInput>, w: &GegluWeight, path: Impl) -> Result<Tensor> {
    linear_store(rec, &x.into(), &w.lin, Store::Geglu, path, Fuse::Auto)
}

mod bench;
pub use bench::{bench_cases, bench_paths};

/// CPU references (f64 accumulation).
pub mod cpu;

#[cfg(test)]
mod tests;
