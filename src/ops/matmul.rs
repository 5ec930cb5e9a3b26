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

use anyhow::{bail, Result};

use crate::gpu::TuneMode;
use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::input::Input;
use crate::ops::norm::{group_norm_apply, layer_norm_table, layer_norm_w, Fuse, GnTable, LayerNormWeight};
use crate::ops::residual::Residual;
use crate::ops::pack::{Placement, Src};
use crate::ops::synthetic::Packing;
use crate::tensor::{DType, Tensor};
use crate::Gpu;

/// The three kernels (portable, cooperative with scalar or vec4 workgroup tiles), each after the
/// file `$a` that says how it takes its a operand.
macro_rules! matmul_sources {
    ($a:literal) => {
        [
            concat!(include_str!($a), include_str!("../../shaders/matmul.wgsl")),
            concat!(include_str!($a), include_str!("../../shaders/matmul_coop.wgsl"), "\n", include_str!("../../shaders/matmul_coop_s1.wgsl")),
            concat!(include_str!($a), include_str!("../../shaders/matmul_coop.wgsl"), "\n", include_str!("../../shaders/matmul_coop_s4.wgsl")),
        ]
    };
}
/// a as stored.
const PLAIN: [&str; 3] = matmul_sources!("../../shaders/matmul_a_plain.wgsl");
const PLAIN_NAMES: [&str; 3] = ["matmul", "matmul_coop", "matmul_coop_v4"];
/// a through a LayerNorm applied as it loads ([`LinearInput::LayerNormed`]).
const LN: [&str; 3] = matmul_sources!("../../shaders/matmul_a_ln.wgsl");
const LN_NAMES: [&str; 3] = ["matmul_ln", "matmul_coop_ln", "matmul_coop_v4_ln"];
/// a through a GroupNorm applied as it loads ([`LinearInput::GroupNormed`]).
const GN: [&str; 3] = matmul_sources!("../../shaders/matmul_a_gn.wgsl");
const GN_NAMES: [&str; 3] = ["matmul_gn", "matmul_coop_gn", "matmul_coop_v4_gn"];

/// Row tiles per launch group (see `tile_of` in the shaders).
const GROUP_M: u32 = 8;
/// The cooperative kernel on one adapter: its fragment size FS (16, or 8), the subgroup width
/// SG and the subgroups per workgroup NSG: 8 share a workgroup tile of 8·FS × 16·FS, 4 (for
/// grids too small to fill a GPU) one of half the rows (see matmul_coop.wgsl).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct CoopCfg {
    fs: usize,
    sg: usize,
    nsg: usize,
    /// The next k-step's global loads in flight during this step's multiplies (else loaded and
    /// staged in turn: fewer live registers, which a standalone probe found faster on an H200
    /// at this tile, gpu-facts).
    prefetch: bool,
}

impl CoopCfg {
    fn bm(self) -> usize {
        self.nsg * self.fs
    }
    fn bn(self) -> usize {
        16 * self.fs
    }
    fn bk(self) -> usize {
        2 * self.fs
    }
    fn invocations(self) -> usize {
        self.nsg * self.sg
    }
    /// Workgroup memory: the a tile BM × (BK + 8) f16, the b tile BK × (BN + 8) f16 and NSG
    /// subgroups' staging of FS × 2·FS f32.
    fn wg_bytes(self) -> u32 {
        (self.bm() * (self.bk() + 8) * 2 + self.bk() * (self.bn() + 8) * 2 + self.nsg * 2 * self.fs * self.fs * 4) as u32
    }
    /// Whether the kernel's global loads and epilogue copy divide evenly among its invocations
    /// (e.g. 16×16 fragments with 32-wide subgroups, or 8×8 with 8- or 32-wide ones).
    fn divides(self) -> bool {
        let ni = self.invocations();
        let (a_row, b_row) = (self.bk() / 4, self.bn() / 4);
        (self.nsg == 8 || self.nsg == 4)
            && ni.is_multiple_of(a_row)
            && self.bm().is_multiple_of(ni / a_row)
            && ni.is_multiple_of(b_row)
            && self.bk().is_multiple_of(ni / b_row)
            && (self.nsg * self.fs * self.fs / 2).is_multiple_of(ni)
    }

    /// The same tile width on 4 subgroups: half the rows, twice the workgroups.
    fn halved(self) -> CoopCfg {
        CoopCfg { nsg: 4, ..self }
    }
}

/// The cooperative kernel's configuration on this adapter, if it can run it: f16×f16→f32
/// fragments (16×16×16 or 8×8×8), a fixed subgroup width that splits the work evenly, and
/// enough invocations and workgroup memory.
fn coop_config(gpu: &Gpu) -> Option<CoopCfg> {
    let cfg = CoopCfg { fs: gpu.coop_fragment()? as usize, sg: gpu.fixed_subgroup_size()? as usize, nsg: 8, prefetch: true };
    (cfg.divides()
        && cfg.invocations() <= gpu.limits.max_compute_invocations_per_workgroup as usize
        && cfg.wg_bytes() <= gpu.limits.max_compute_workgroup_storage_size)
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
/// the launch would have fewer than ~128 workgroups (to keep a large GPU busy).
fn portable_tile(p: &Plan) -> (u32, u32) {
    let big = |x: usize| if x >= 128 { 2u32 } else { 1 };
    let (mut rm, mut rn) = (big(p.m), big(p.n));
    let count = |rm: u32, rn: u32| p.m.div_ceil(64 * rm as usize) * p.n.div_ceil(64 * rn as usize) * p.batch;
    while count(rm, rn) < 128 && (rm > 1 || rn > 1) {
        if rm >= rn {
            rm = 1;
        } else {
            rn = 1;
        }
    }
    (rm, rn)
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
        Impl::Auto => auto_variants(gpu, coop_ok().is_ok(), p)[0],
        Impl::Portable => {
            let (rm, rn) = portable_tile(p);
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
            if !coop_config(gpu).is_some_and(|c| c.halved().divides()) {
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
fn auto_variants(gpu: &Gpu, coop: bool, p: &Plan) -> Vec<Variant> {
    if coop {
        let halves: &[bool] = if coop_config(gpu).is_some_and(|c| c.halved().divides()) { &[false, true] } else { &[false] };
        return [true, false].iter().flat_map(|&prefetch| halves.iter().map(move |&half| Variant::Coop { v4: true, half, prefetch })).collect();
    }
    let (rm, rn) = portable_tile(p);
    let mut v = vec![Variant::Tiled { rm, rn }];
    for (rm, rn) in [(2, 2), (2, 1), (1, 2), (1, 1)] {
        if !v.contains(&Variant::Tiled { rm, rn }) {
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
    let variants = auto_variants(gpu, matches!(v, Variant::Coop { .. }), p);
    let key = || {
        let after = match norm {
            Some(NormIn::Layer(..)) => " after layer norm",
            Some(NormIn::Group(_)) => " after group norm",
            None => "",
        };
        format!("matmul {} {}x{}x{} batch {}{}{after}", a.dtype().name(), p.m, p.k, p.n, p.batch, if p.b_bs > 0 { " (batched b)" } else { "" })
    };
    crate::kernel::tuned(gpu, key, &variants, Variant::label, |r, v| {
        let sa = r.empty(a.shape(), a.dtype())?;
        // A weight is bound as it is; an activation still being captured has no memory yet.
        let like = |r: &mut Recorder, t: &Tensor| if t.has_memory() { Ok(t.clone()) } else { r.empty(t.shape(), t.dtype()) };
        let sb = like(r, b)?;
        let sbias = bias.map(|t| like(r, t)).transpose()?;
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
    Kernel::new(names[i], srcs[i], dtype)
        .with_coop(cfg.fs as u32)
        .def("SG", format!("{}u", cfg.sg))
        .def("NSG", format!("{}u", cfg.nsg))
        .def("PREFETCH", cfg.prefetch)
}

#[allow(clippy::too_many_arguments)]
fn run(rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, store: Store, p: &Plan, norm: Option<ANorm>, v: Variant) -> Result<Tensor> {
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
    let out = rec.empty(&out_shape, a.dtype())?;
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
            (cfg.bm(), cfg.bn(), coop_kernel(v4, cfg, a.dtype(), srcs, names))
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
    Ok(match fuse {
        Fuse::Fused => {
            if !fusable {
                bail!("linear: this adapter has too few storage bindings per shader stage to apply a norm as the matmul loads");
            }
            true
        }
        Fuse::Apart => false,
        Fuse::Auto => match gpu.norm_into_conv() {
            TuneMode::On => fusable,
            TuneMode::Off => false,
            TuneMode::Auto => fusable && gpu.tuner().is_on() && {
                let rows = x.numel() / w.in_features.max(1);
                let a = x.reshape(&[rows, w.in_features])?;
                let p = plan(a.shape(), w.w.shape(), w.bias.as_ref().map(|t| t.shape()))?;
                let like = |r: &mut Recorder, t: &Tensor| if t.has_memory() { Ok(t.clone()) } else { r.empty(t.shape(), t.dtype()) };
                let apart = choose_tuned(gpu, &a, &w.w, w.bias.as_ref(), store, &p, None, path)?;
                let together = choose_tuned(gpu, &a, &w.w, w.bias.as_ref(), store, &p, Some(n), path)?;
                let prefix = match n {
                    NormIn::Layer(..) => LN_TUNING_KEY,
                    NormIn::Group(_) => crate::ops::conv::NORM_TUNING_KEY,
                };
                let key = || format!("{prefix} into matmul {} {}x{}x{}{}", a.dtype().name(), p.m, p.k, p.n, if matches!(store, Store::Geglu) { " geglu" } else { "" });
                let label = |f: bool| if f { format!("normalised as loaded, {}", together.label()) } else { format!("norm pass, then {}", apart.label()) };
                crate::kernel::tuned(gpu, key, &[false, true], label, |r, f| {
                    let scratch = r.empty(a.shape(), a.dtype())?;
                    let (sb, sbias) = (like(r, &w.w)?, w.bias.as_ref().map(|t| like(r, t)).transpose()?);
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
                })?
            },
        },
    })
}

/// diffusers' `GEGLU.proj` (PyTorch weight `[2·inner, in]`: the value half, then the gate half)
/// packed for [`linear_geglu`]: output features reordered in groups of four, `x_j, x_j+1, g_j,
/// g_j+1` for j = 0, 2, 4, …, so every value sits in the same vector as its gate.
pub struct GegluWeight {
    /// `[in, 2·inner]` in the interleaved order.
    pub lin: LinearWeight,
    pub inner: usize,
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
        Ok(GegluWeight { lin, inner })
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

/// Benchmarks: a square 8192³ matmul and the UNet's transformer linears over 16 frames of a 64²
/// latent (16·4096 tokens), on every path this adapter runs.
/// The kernel paths this adapter can run for `dtype`, with their labels (benchmarks time each;
/// `bench ceilings` takes the best).
pub fn bench_paths(gpu: &Gpu, dtype: DType) -> Vec<(Impl, &'static str)> {
    let mut paths = vec![(Impl::Portable, "portable")];
    if dtype == DType::F16 && coop_available(gpu) {
        paths.push((Impl::Coop, "coop"));
        paths.push((Impl::CoopV4, "coop-v4"));
    }
    paths
}

pub fn bench_cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let paths = bench_paths(gpu, dtype);
    let mut v = Vec::new();
    let s = if quick { 64 } else { 8192 };
    let a = random_tensor(gpu, &[s, s], dtype, 11)?;
    let b = random_tensor(gpu, &[s, s], dtype, 12)?;
    for &(path, label) in &paths {
        let (a, b) = (a.clone(), b.clone());
        v.push(BenchCase {
            name: format!("matmul {label}"),
            shape: format!("{s}x{s} . {s}x{s}"),
            flops: 2.0 * (s as f64).powi(3),
            bytes: 3.0 * (s * s * dtype.size()) as f64,
            run: Box::new(move |r| matmul_with(r, &a, &b, None, path).map(drop)),
        });
    }
    // (name, tokens, in, out, bias): GEGLU proj C → 8C, FF out 4C → C, attention q/k/v (no bias),
    // at the 64×64 level (C = 512); then two at the 16×16 level (C = 1024, 16·256 tokens), where
    // the 8-subgroup tiles make about one workgroup per SM of an H200, so the 4-subgroup tiles
    // run beside them.
    let q = if quick { 16 } else { 1 };
    let (tokens, tokens16) = if quick { (2 * 64, 2 * 64) } else { (16 * 4096, 16 * 256) };
    let mut paths16 = paths.clone();
    if dtype == DType::F16 && coop_config(gpu).is_some_and(|c| c.halved().divides()) {
        paths16.push((Impl::CoopV4Half, "coop-v4 4sg"));
    }
    let layers = [
        ("GEGLU proj", tokens, 512 / q, 4096 / q, true, &paths),
        ("FF out", tokens, 2048 / q, 512 / q, true, &paths),
        ("q/k/v proj", tokens, 512 / q, 512 / q, false, &paths),
        ("16x16 q/k/v proj", tokens16, 1024 / q, 1024 / q, false, &paths16),
        ("16x16 FF out", tokens16, 4096 / q, 1024 / q, true, &paths16),
    ];
    for (i, &(name, tokens, fin, fout, has_bias, paths)) in layers.iter().enumerate() {
        let x = random_tensor(gpu, &[tokens, fin], dtype, 20 + i as u64)?;
        let mut rng = crate::rng::Rng::new(30 + i as u64);
        let wv = rng.normals(fin * fout, 1.0 / (fin as f32).sqrt());
        let bv = rng.normals(fout, 0.1);
        let w = std::rc::Rc::new(LinearWeight::from_torch_with_bias(gpu, &wv, has_bias.then_some(&bv[..]), fout, fin, dtype)?);
        for &(path, label) in paths {
            let (x, w) = (x.clone(), w.clone());
            v.push(BenchCase {
                name: format!("linear {name} {label}"),
                shape: format!("{tokens}x{fin} -> {fout}"),
                flops: 2.0 * (tokens * fin * fout) as f64,
                bytes: ((tokens * fin + fin * fout + tokens * fout) * dtype.size()) as f64,
                run: Box::new(move |r| linear_with(r, &x, &w, path).map(drop)),
            });
        }
        // The projections a LayerNorm feeds, with the norm in its own pass and applied as the
        // kernel loads (`Auto`'s kernel), where the tuner would choose between the two.
        if name == "GEGLU proj" || name == "q/k/v proj" {
            let norm = std::rc::Rc::new(crate::ops::norm::NormWeight::from_torch(gpu, &rng.normals(fin, 0.5), &rng.normals(fin, 0.5))?);
            for (fuse, how) in [(Fuse::Apart, "apart"), (Fuse::Fused, "on load")] {
                let (x, w, norm) = (x.clone(), w.clone(), norm.clone());
                v.push(BenchCase {
                    name: format!("linear {name}, LayerNorm {how}"),
                    shape: format!("{tokens}x{fin} -> {fout}"),
                    flops: 2.0 * (tokens * fin * fout) as f64,
                    bytes: ((tokens * fin + fin * fout + tokens * fout) * dtype.size()) as f64,
                    run: Box::new(move |r| linear_store(r, &LinearInput::layer_normed(&x, &norm, 1e-5), &w, Store::Plain, Impl::Auto, fuse).map(drop)),
                });
            }
        }
    }
    Ok(v)
}

/// CPU references (f64 accumulation).
pub mod cpu {
    /// `batch` products `[m, k] · [k, n] (+ bias)`, row-major; `b_shared`: one `b` for all.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, batch: usize, m: usize, n: usize, k: usize, b_shared: bool) -> Vec<f32> {
        let mut out = vec![0f32; batch * m * n];
        for z in 0..batch {
            let az = &a[z * m * k..(z + 1) * m * k];
            let bz = if b_shared { b } else { &b[z * k * n..(z + 1) * k * n] };
            for i in 0..m {
                for j in 0..n {
                    let mut s = bias.map(|c| c[j] as f64).unwrap_or(0.0);
                    for l in 0..k {
                        s += az[i * k + l] as f64 * bz[l * n + j] as f64;
                    }
                    out[(z * m + i) * n + j] = s as f32;
                }
            }
        }
        out
    }

    /// PyTorch `nn.Linear`: `x [rows, in]`, `w [out, in]`, `bias [out]` → `[rows, out]`.
    pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, rows: usize, inp: usize, out: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let mut s = bias.map(|c| c[o] as f64).unwrap_or(0.0);
                for i in 0..inp {
                    s += x[r * inp + i] as f64 * w[o * inp + i] as f64;
                }
                y[r * out + o] = s as f32;
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const TOL: f64 = 1e-4;


    /// Random operands of one product and their host twins: `a [lead.., M, K]`, `b [K, N]`
    /// (`shared`) or `[lead.., K, N]`, a bias `[N]`; `out_shape` is `[lead.., M, N]`.
    struct Operands {
        a: Tensor,
        b: Tensor,
        c: Tensor,
        ah: Vec<f32>,
        bh: Vec<f32>,
        ch: Vec<f32>,
        out_shape: Vec<usize>,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        shared: bool,
    }

    impl Operands {
        #[allow(clippy::too_many_arguments)]
        fn new(gpu: &Gpu, rng: &mut Rng, dt: DType, lead: &[usize], m: usize, n: usize, k: usize, shared: bool) -> Operands {
            let batch: usize = lead.iter().product();
            let mut sa = lead.to_vec();
            sa.extend([m, k]);
            let mut sb = if shared { vec![] } else { lead.to_vec() };
            sb.extend([k, n]);
            let (a, ah) = upload(gpu, &rng.normals(batch * m * k, 1.0), &sa, dt);
            let (b, bh) = upload(gpu, &rng.normals(sb.iter().product(), 1.0), &sb, dt);
            let (c, ch) = upload(gpu, &rng.normals(n, 1.0), &[n], dt);
            let mut out_shape = lead.to_vec();
            out_shape.extend([m, n]);
            Operands { a, b, c, ah, bh, ch, out_shape, batch, m, n, k, shared }
        }

        /// `a · b (+ bias)` on the CPU.
        fn want(&self, with_bias: bool) -> Vec<f32> {
            let bias = with_bias.then_some(&self.ch[..]);
            if self.shared {
                cpu::matmul(&self.ah, &self.bh, bias, 1, self.batch * self.m, self.n, self.k, true)
            } else {
                cpu::matmul(&self.ah, &self.bh, bias, self.batch, self.m, self.n, self.k, false)
            }
        }
    }

    /// One GPU-vs-CPU comparison. `lead` = batch axes of a; `shared` = b is [K, N].
    #[allow(clippy::too_many_arguments)]
    fn check(gpu: &Gpu, rng: &mut Rng, seed: u64, dt: DType, lead: &[usize], m: usize, n: usize, k: usize, shared: bool, with_bias: bool, v: Option<Variant>, path: Impl) {
        let o = Operands::new(gpu, rng, dt, lead, m, n, k, shared);
        let (a, b) = (&o.a, &o.b);
        let bias = with_bias.then_some(&o.c);
        let mut rec = gpu.recorder();
        let out = match v {
            Some(v) => {
                let p = plan(a.shape(), b.shape(), bias.map(|t| t.shape())).unwrap();
                run(&mut rec, a, b, bias, Store::Plain, &p, None, v).unwrap()
            }
            None => matmul_with(&mut rec, a, b, bias, path).unwrap(),
        };
        rec.submit();
        assert_eq!(out.shape(), &o.out_shape[..]);
        let want = o.want(with_bias);
        assert_close(
            &format!("matmul {v:?}/{path:?} lead {lead:?} M{m} N{n} K{k} shared {shared} bias {with_bias} {dt:?} seed {seed}"),
            &out.to_f32(gpu).unwrap(),
            &want,
            dt.tolerance(TOL),
        );
    }

    /// The tuner's premise and its use: `Auto`'s candidate kernels give the same bytes, with
    /// every store, and with tuning on `Auto` times each once per shape and runs one of them.
    /// Shared and batched weights at awkward sizes, in every dtype the adapter stores. On CI's
    /// lavapipe the candidates are the portable kernel's four tiles; where the cooperative kernel
    /// runs (tools/coop-lavapipe.sh, a GPU), its tiles on 8 and 4 subgroups, loads overlapped or
    /// not.
    #[test]
    fn tuned_variants_agree_byte_for_byte() {
        // No cache file: every candidate must be timed here.
        let gpu = Gpu::new(&crate::GpuOptions { tune: crate::gpu::TuneMode::On, tune_cache: None, ..crate::GpuOptions::from_env() }).unwrap();
        gpu.set_poison(true);
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (lead, M, N, K, shared weight, GEGLU store)
        type Case<'a> = (&'a [usize], usize, usize, usize, bool, bool);
        let cases: [Case; 4] = [(&[], 130, 72, 33, true, false), (&[2, 3], 7, 20, 68, true, false), (&[2], 77, 36, 12, false, false), (&[], 33, 48, 40, true, true)];
        for dt in gpu.dtypes() {
            for &(lead, m, n, k, shared, geglu) in &cases {
                let o = Operands::new(&gpu, &mut rng, dt, lead, m, n, k, shared);
                let p = plan(o.a.shape(), o.b.shape(), Some(o.c.shape())).unwrap();
                let store = if geglu { Store::Geglu } else { Store::Plain };
                let rule = choose(&gpu, dt, &p, store, Impl::Auto).unwrap();
                let variants = auto_variants(&gpu, matches!(rule, Variant::Coop { .. }), &p);
                assert_eq!(variants[0], rule);
                assert!(variants.len() >= 2, "one candidate {variants:?}: nothing for the tuner to choose");
                let what = format!("lead {lead:?} M{m} N{n} K{k} shared {shared} geglu {geglu} {} (seed {seed})", dt.name());
                let go = |v: Option<Variant>| {
                    let mut rec = gpu.recorder();
                    let y = match v {
                        Some(v) => run(&mut rec, &o.a, &o.b, Some(&o.c), store, &p, None, v),
                        None => matmul_store(&mut rec, &o.a, &o.b, Some(&o.c), store, Impl::Auto),
                    }
                    .unwrap();
                    rec.submit();
                    y.read_bytes(&gpu).unwrap()
                };
                let first = go(Some(variants[0]));
                for &v in &variants[1..] {
                    assert!(go(Some(v)) == first, "{what}: {} gives other bytes than {}", v.label(), variants[0].label());
                }
                assert!(go(None) == first, "{what}: the tuned launch differs");
                let key = format!("{}x{}x{} batch {}", p.m, p.k, p.n, p.batch);
                let picks = gpu.tuner().picks();
                let tuned = picks.iter().find(|t| t.key.contains(&key) && t.key.contains(dt.name())).expect("the tuner kept no choice");
                assert_eq!(tuned.labels, variants.iter().map(|v| v.label()).collect::<Vec<_>>());
                assert!(tuned.seconds.iter().all(|s| s.is_some_and(|s| s > 0.0)), "{what}: a candidate was not timed: {tuned:?}");
            }
        }
    }

    #[test]
    fn portable_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for &(m, n, k) in &[(1, 1, 1), (7, 33, 77), (77, 7, 33), (33, 77, 130)] {
                for with_bias in [false, true] {
                    check(&gpu, &mut rng, seed, dt, &[], m, n, k, true, with_bias, None, Impl::Portable);
                }
            }
            // Shared weight under leading axes (folded into M), and batched b.
            check(&gpu, &mut rng, seed, dt, &[2, 3], 7, 33, 20, true, true, None, Impl::Portable);
            check(&gpu, &mut rng, seed, dt, &[3], 33, 7, 77, false, false, None, Impl::Portable);
            check(&gpu, &mut rng, seed, dt, &[2, 2], 9, 70, 17, false, true, None, Impl::Portable);
            // More than GROUP_M row tiles: a full and a partial launch group.
            check(&gpu, &mut rng, seed, dt, &[], 9 * 64 + 5, 70, 6, true, true, Some(Variant::Tiled { rm: 1, rn: 1 }), Impl::Portable);
        }
    }

    /// The residual epilogue on `path` against the CPU: a same-shape residual and a per-batch
    /// `[B, N]` one, with a shared weight (leading axes folded into M) and with a batched `b`.
    /// N and K are multiples of 4 so the cooperative kernel runs them too.
    fn check_residual(gpu: &Gpu, seed: u64, dt: DType, path: Impl) {
        use crate::ops::residual::cpu as res_cpu;
        let mut rng = Rng::new(seed);
        for &(lead, m, n, k, shared, per_batch) in &[
            (&[1usize][..], 7, 36, 20, true, false),
            (&[3][..], 33, 12, 76, false, false),
            (&[2, 3][..], 5, 260, 12, true, true),
            (&[4][..], 9, 8, 16, false, true),
        ] {
            let o = Operands::new(gpu, &mut rng, dt, lead, m, n, k, shared);
            // Per batch: one row per element of the first leading axis.
            let rs = if per_batch { vec![lead[0], n] } else { o.out_shape.clone() };
            let (r, rh) = upload(gpu, &rng.normals(rs.iter().product(), 1.0), &rs, dt);
            let res = if per_batch { Residual::PerBatch(&r) } else { Residual::Same(&r) };
            let mut rec = gpu.recorder();
            let out = matmul_add_with(&mut rec, &o.a, &o.b, Some(&o.c), Some(res), path).unwrap();
            rec.submit();
            assert_eq!(out.shape(), &o.out_shape[..]);
            let mut want = o.want(true);
            let rep = if per_batch { o.batch * m / lead[0] } else { 1 };
            res_cpu::add(&mut want, &rh, n, rep);
            assert_close(
                &format!("matmul + residual {path:?} lead {lead:?} M{m} N{n} K{k} shared {shared} per-batch {per_batch} {dt:?} seed {seed}"),
                &out.to_f32(gpu).unwrap(),
                &want,
                dt.tolerance(TOL),
            );
        }
    }

    #[test]
    fn residual_epilogue_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        for dt in gpu.dtypes() {
            check_residual(&gpu, seed, dt, Impl::Portable);
        }
        // A residual that does not fit is refused, naming both shapes.
        let t = |s: &[usize]| Tensor::from_f32(&gpu, &vec![0.5; s.iter().product()], s, DType::F32).unwrap();
        let mut rec = gpu.recorder();
        let (a, b) = (t(&[6, 4]), t(&[4, 8]));
        let e = matmul_add_with(&mut rec, &a, &b, None, Some(Residual::Same(&t(&[6, 4]))), Impl::Portable).unwrap_err();
        assert!(e.to_string().contains("[6, 4]") && e.to_string().contains("[6, 8]"), "{e}");
        let e = matmul_add_with(&mut rec, &a, &b, None, Some(Residual::PerBatch(&t(&[4, 8]))), Impl::Portable).unwrap_err();
        assert!(e.to_string().contains("[B, 8]"), "{e}");
    }

    /// `linear_geglu` against PyTorch's `GEGLU` on the CPU (linear, then value · gelu(gate)).
    fn check_geglu(gpu: &Gpu, seed: u64, dt: DType, path: Impl, cases: &[(usize, usize, usize)]) {
        use crate::ops::elementwise::cpu::geglu;
        let mut rng = Rng::new(seed);
        for &(rows, fin, inner) in cases {
            for with_bias in [false, true] {
                let (x, xh) = upload(gpu, &rng.normals(rows * fin, 1.0), &[rows, fin], dt);
                let w = rng.normals(2 * inner * fin, 1.0 / (fin as f32).sqrt());
                let bv = rng.normals(2 * inner, 0.5);
                let gw = GegluWeight::from_torch(gpu, &w, with_bias.then_some(&bv[..]), inner, fin, dt).unwrap();
                let mut rec = gpu.recorder();
                let y = linear_geglu_with(&mut rec, &x, &gw, path).unwrap();
                rec.submit();
                assert_eq!(y.shape(), &[rows, inner]);
                let (wh, bh) = if dt == DType::F16 { (round_f16(&w), round_f16(&bv)) } else { (w.clone(), bv.clone()) };
                let h = cpu::linear(&xh, &wh, with_bias.then_some(&bh[..]), rows, fin, 2 * inner);
                assert_close(
                    &format!("linear_geglu {path:?} {rows}x{fin} -> 2·{inner} bias {with_bias} {dt:?} seed {seed}"),
                    &y.to_f32(gpu).unwrap(),
                    &geglu(&h, 2 * inner),
                    dt.tolerance(TOL),
                );
            }
        }
    }

    #[test]
    fn geglu_epilogue_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        for dt in gpu.dtypes() {
            check_geglu(&gpu, seed, dt, Impl::Portable, &[(1, 1, 2), (7, 33, 6), (77, 5, 36), (130, 20, 70)]);
        }
        assert!(GegluWeight::from_torch(&gpu, &[0.5; 3 * 4], None, 3, 2, DType::F32).is_err(), "odd inner");
    }

    #[test]
    fn empty_k_gives_the_bias() {
        let gpu = test_gpu();
        for dt in gpu.dtypes() {
            let a = Tensor::from_f32(&gpu, &[], &[3, 0], dt).unwrap();
            let b = Tensor::from_f32(&gpu, &[], &[0, 5], dt).unwrap();
            let c = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0, 0.5, 0.25], &[5], dt).unwrap();
            let mut rec = gpu.recorder();
            let out = matmul(&mut rec, &a, &b, Some(&c)).unwrap();
            rec.submit();
            assert_eq!(out.to_f32(&gpu).unwrap(), [1.0, -2.0, 3.0, 0.5, 0.25].repeat(3), "{dt:?}");
        }
    }

    /// Multi-tile, partial-edge, batched check of one portable tile shape.
    fn check_tile(gpu: &Gpu, dt: DType, rm: u32, rn: u32) {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        check(gpu, &mut rng, seed, dt, &[2], 135, 141, 37, false, true, Some(Variant::Tiled { rm, rn }), Impl::Portable);
    }

    // The 128×128 tile the heuristic picks at real sizes, in every dtype (the 64×64 one is covered
    // above). Each tile shape is a separately compiled pipeline (about 1.5 s each on lavapipe), so
    // the mixed shapes are checked in f32 only and in a second test that runs in parallel.
    #[test]
    fn portable_large_tile_matches_cpu() {
        let gpu = test_gpu();
        for dt in gpu.dtypes() {
            check_tile(&gpu, dt, 2, 2);
        }
    }

    #[test]
    fn portable_mixed_tiles_match_cpu() {
        let gpu = test_gpu();
        check_tile(&gpu, DType::F32, 2, 1);
        check_tile(&gpu, DType::F32, 1, 2);
    }

    #[test]
    fn linear_matches_torch_reference() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for &(lead, fin, fout) in &[(&[1usize][..], 1usize, 1usize), (&[2, 5][..], 33, 77), (&[3, 2, 4][..], 77, 7)] {
                for with_bias in [false, true] {
                    let rows: usize = lead.iter().product();
                    let mut sx = lead.to_vec();
                    sx.push(fin);
                    let (x, xh) = upload(&gpu, &rng.normals(rows * fin, 1.0), &sx, dt);
                    let w = rng.normals(fout * fin, 0.3);
                    let bv = rng.normals(fout, 1.0);
                    let lw = LinearWeight::from_torch_with_bias(&gpu, &w, with_bias.then_some(&bv[..]), fout, fin, dt).unwrap();
                    let mut rec = gpu.recorder();
                    let y = linear(&mut rec, &x, &lw).unwrap();
                    rec.submit();
                    let mut sy = lead.to_vec();
                    sy.push(fout);
                    assert_eq!(y.shape(), &sy[..]);
                    let (wh, bh) = if dt == DType::F16 { (round_f16(&w), round_f16(&bv)) } else { (w.clone(), bv.clone()) };
                    let want = cpu::linear(&xh, &wh, with_bias.then_some(&bh[..]), rows, fin, fout);
                    assert_close(
                        &format!("linear {lead:?}x{fin} -> {fout} bias {with_bias} {dt:?} seed {seed}"),
                        &y.to_f32(&gpu).unwrap(),
                        &want,
                        dt.tolerance(TOL),
                    );
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let gpu = test_gpu();
        let t = |s: &[usize], dt| Tensor::from_f32(&gpu, &vec![0.5; s.iter().product()], s, dt).unwrap();
        let mut rec = gpu.recorder();
        let f = DType::F32;
        assert!(matmul(&mut rec, &t(&[3, 4], f), &t(&[5, 6], f), None).is_err(), "K mismatch");
        assert!(matmul(&mut rec, &t(&[2, 3, 4], f), &t(&[3, 4, 6], f), None).is_err(), "batch mismatch");
        assert!(matmul(&mut rec, &t(&[3, 4], f), &t(&[4, 6], f), Some(&t(&[5], f))).is_err(), "bias length");
        assert!(matmul(&mut rec, &t(&[4], f), &t(&[4, 6], f), None).is_err(), "1-D a");
        if gpu.has_f16() {
            assert!(matmul(&mut rec, &t(&[3, 4], f), &t(&[4, 6], DType::F16), None).is_err(), "dtype mismatch");
        }
        assert!(matmul_with(&mut rec, &t(&[3, 4], f), &t(&[4, 6], f), None, Impl::Coop).is_err(), "coop needs f16");
        let lw = LinearWeight::from_torch(&gpu, &[1.0; 12], 3, 4, f).unwrap();
        assert!(linear(&mut rec, t(&[2, 5], f), &lw).is_err(), "in_features");
        assert!(LinearWeight::from_torch(&gpu, &[1.0; 11], 3, 4, f).is_err());
        assert!(lw.with_bias(&gpu, &[0.0; 4]).is_err());
    }

    #[test]
    fn plan_folds_shared_weights_and_keeps_batches() {
        let p = plan(&[2, 3, 5, 7], &[7, 9], Some(&[9])).unwrap();
        assert_eq!((p.batch, p.m, p.n, p.k, p.b_bs), (1, 30, 9, 7, 0));
        assert_eq!(p.out_shape, vec![2, 3, 5, 9]);
        let p = plan(&[4, 5, 7], &[4, 7, 9], None).unwrap();
        assert_eq!((p.batch, p.m, p.a_bs, p.b_bs, p.o_bs), (4, 5, 35, 63, 45));
        assert_eq!(portable_tile(&Plan { batch: 1, m: 8192, n: 8192, k: 8192, a_bs: 0, b_bs: 0, o_bs: 0, out_shape: vec![] }), (2, 2));
        assert_eq!(portable_tile(&Plan { batch: 1, m: 7, n: 300, k: 8, a_bs: 0, b_bs: 0, o_bs: 0, out_shape: vec![] }), (1, 1));
    }

    /// The cooperative kernels' full WGSL (both tile element types, with and without bias,
    /// residual and GEGLU store, the vec4 one also with a LayerNorm or GroupNorm applied on
    /// load, for 16×16 fragments with 32-wide subgroups and 8×8 ones with 8- and 32-wide
    /// subgroups) must parse, validate, and translate to SPIR-V with naga: catches syntax and
    /// typing errors, and naga's SPIR-V writer panics, on machines without cooperative
    /// matrices.
    #[test]
    fn coop_wgsl_validates_and_translates() {
        let eight = [CoopCfg { fs: 16, sg: 32, nsg: 8, prefetch: true }, CoopCfg { fs: 8, sg: 8, nsg: 8, prefetch: true }, CoopCfg { fs: 8, sg: 32, nsg: 8, prefetch: true }];
        // Both load schedules, on 8 and on 4 subgroups.
        for cfg in eight.into_iter().flat_map(|c| [c, CoopCfg { prefetch: false, ..c.halved() }]) {
            assert!(cfg.divides(), "{cfg:?}");
            for (v4, a) in [(false, 0), (true, 0), (true, 1), (true, 2)] {
                for (has_bias, has_res, geglu) in [(false, false, false), (true, false, false), (true, true, false), (true, false, true)] {
                    // f32 storage (on f16 operands) for the residual store, f16 for the others.
                    let dt = if has_res { DType::F32 } else { DType::F16 };
                    let (srcs, names) = [(&PLAIN, &PLAIN_NAMES), (&LN, &LN_NAMES), (&GN, &GN_NAMES)][a];
                    let k = coop_kernel(v4, cfg, dt, srcs, names).def("HAS_BIAS", has_bias).def("HAS_RES", has_res).def("GEGLU", geglu).def("GROUP_M", format!("{GROUP_M}u"));
                    let (module, _) = translate_check(&k);
                    // The parameter block is the Rust one (checked at dispatch where the kernel runs).
                    assert_eq!(crate::gpu::pipelines::uniform_size(&module).unwrap(), std::mem::size_of::<Params>() as u64);
                    // The workgroup memory the host checks for is what the shader declares.
                    let mut layouter = naga::proc::Layouter::default();
                    layouter.update(module.to_ctx()).unwrap();
                    let wg: u32 = module
                        .global_variables
                        .iter()
                        .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
                        .map(|(_, g)| layouter[g.ty].size)
                        .sum();
                    assert_eq!(wg, cfg.wg_bytes(), "{cfg:?} v4 {v4}");
                }
            }
        }
        // Subgroups too wide for 8×8 fragments' tile leave invocations without loads: refused.
        assert!(!CoopCfg { fs: 8, sg: 64, nsg: 8, prefetch: true }.divides());
    }

    /// f32 storage takes the cooperative kernel (f16 operands, f32 accumulation and stores) only
    /// with `--f16-operands`, and then matches the CPU within f16 operand rounding: awkward sizes,
    /// bias and residual stores, shared and batched weights. Runs where the adapter has
    /// cooperative matrices (tools/coop-lavapipe.sh, a GPU).
    #[test]
    fn f32_storage_takes_f16_operands_only_where_asked() {
        use crate::ops::residual::cpu as res_cpu;
        let dt = DType::F32;
        let p = plan(&[7, 32], &[32, 8], None).unwrap();
        let plain = test_gpu();
        assert!(plain.f16_operands() || choose(&plain, dt, &p, Store::Plain, Impl::Coop).is_err(), "f32 matmuls must stay exact by default");
        let gpu = Gpu::new(&crate::GpuOptions { f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
        if let Err(e) = choose(&gpu, dt, &p, Store::Plain, Impl::Coop) {
            eprintln!("skipped: {e}");
            return;
        }
        assert_eq!(choose(&gpu, dt, &p, Store::Plain, Impl::Auto).unwrap(), Variant::Coop { v4: true, half: false, prefetch: true });
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for &(lead, m, n, k, shared) in &[(&[][..], 77usize, 260usize, 44usize, true), (&[3][..], 33, 12, 76, false), (&[2][..], 130, 36, 100, true)] {
            let o = Operands::new(&gpu, &mut rng, dt, lead, m, n, k, shared);
            let (r, rh) = upload(&gpu, &rng.normals(o.out_shape.iter().product(), 1.0), &o.out_shape, dt);
            let mut rec = gpu.recorder();
            let out = matmul_add_with(&mut rec, &o.a, &o.b, Some(&o.c), Some(Residual::Same(&r)), Impl::Auto).unwrap();
            rec.submit();
            let mut want = o.want(true);
            res_cpu::add(&mut want, &rh, n, 1);
            // Operands rounded to 11 significant bits.
            assert_close(&format!("f32 on f16 operands: matmul + residual lead {lead:?} M{m} N{n} K{k} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, DType::F16.tolerance(TOL));
        }
    }

    /// GPU tests of the cooperative kernels (run where the adapter has them: 16×16 fragments on
    /// the H200, 8×8 on Mesa 26's lavapipe, see TESTING.md).
    #[test]
    fn coop_matches_cpu() {
        let gpu = test_gpu();
        if !coop_available(&gpu) {
            eprintln!("skipped: adapter lacks cooperative matrices");
            return;
        }
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let dt = DType::F16;
        for path in [Impl::Coop, Impl::CoopV4, Impl::CoopV4Half] {
            // Awkward sizes: M, N, K below, at and above the 128×256×32 and 64×128×16 tiles,
            // partial edge tiles.
            for &(m, n, k) in &[(1, 4, 4), (7, 36, 76), (77, 260, 44), (130, 12, 100), (300, 516, 72), (128, 256, 32), (129, 260, 36), (64, 128, 16), (65, 132, 20)] {
                for with_bias in [false, true] {
                    check(&gpu, &mut rng, seed, dt, &[], m, n, k, true, with_bias, None, path);
                }
            }
            check(&gpu, &mut rng, seed, dt, &[2, 3], 7, 36, 20, true, true, None, path);
            check(&gpu, &mut rng, seed, dt, &[3], 131, 260, 68, false, true, None, path);
            check(&gpu, &mut rng, seed, dt, &[2, 2], 9, 72, 16, false, false, None, path);
            // Several k-steps with a long K (exercises the register prefetch).
            check(&gpu, &mut rng, seed, dt, &[], 200, 300, 1000, true, true, None, path);
            check_residual(&gpu, seed, dt, path);
            check_geglu(&gpu, seed, dt, path, &[(1, 4, 4), (77, 36, 36), (200, 64, 132)]);
        }
        // Auto takes the coop kernel for f16 and falls back to the portable one for shapes it
        // cannot handle.
        check(&gpu, &mut rng, seed, dt, &[], 7, 33, 77, true, true, None, Impl::Auto);
        check(&gpu, &mut rng, seed, dt, &[], 70, 36, 44, true, true, None, Impl::Auto);
        let p = plan(&[7, 33], &[33, 8], None).unwrap();
        assert_eq!(choose(&gpu, dt, &p, Store::Plain, Impl::Auto).unwrap(), Variant::Tiled { rm: 1, rn: 1 });
        let p = plan(&[7, 32], &[32, 8], None).unwrap();
        assert_eq!(choose(&gpu, dt, &p, Store::Plain, Impl::Auto).unwrap(), Variant::Coop { v4: true, half: false, prefetch: true });
    }

    /// The kernels a norm-on-load test runs in `dt`: the portable one, and the cooperative ones
    /// where the adapter has them.
    fn norm_paths(gpu: &Gpu, dt: DType) -> Vec<Impl> {
        let mut paths = vec![Impl::Portable];
        if dt == DType::F16 && coop_available(gpu) {
            paths.extend([Impl::Coop, Impl::CoopV4, Impl::CoopV4Half]);
        }
        paths
    }

    /// One norm-on-load case: linear layers with random weights of `norm(x)`, whose CPU twin
    /// (rounded as the norm's pass stores it) is `normed` `[rows, c]`, with store 0 (plain), 1
    /// (residual) or 2 (GEGLU over `n / 2`) on `path`: the values of the CPU linear layer, and
    /// the same bytes with the norm applied on load (`input` built in the run's recorder) as in
    /// its own pass.
    #[allow(clippy::too_many_arguments)]
    fn check_norm_on_load(gpu: &Gpu, rng: &mut Rng, what: &str, dt: DType, path: Impl, normed: &[f32], c: usize, n: usize, store: u8, input: &dyn Fn(&mut Recorder) -> LinearInput) {
        use crate::ops::elementwise::cpu::geglu;
        let rows = normed.len() / c;
        let wv = rng.normals(n * c, 1.0 / (c as f32).sqrt());
        let bv = rng.normals(n, 0.5);
        let (wh, bh) = if dt == DType::F16 { (round_f16(&wv), round_f16(&bv)) } else { (wv.clone(), bv.clone()) };
        let lw = LinearWeight::from_torch_with_bias(gpu, &wv, Some(&bv), n, c, dt).unwrap();
        let gw = GegluWeight::from_torch(gpu, &wv, Some(&bv), n / 2, c, dt).unwrap();
        let out_n = if store == 2 { n / 2 } else { n };
        let (res, rh) = upload(gpu, &rng.normals(rows * out_n, 1.0), &[rows, out_n], dt);
        let h = cpu::linear(normed, &wh, Some(&bh), rows, c, n);
        let want = match store {
            0 => h,
            1 => h.iter().zip(&rh).map(|(a, b)| a + b).collect(),
            _ => geglu(&h, n),
        };
        let run = |fuse: Fuse| {
            let mut rec = gpu.recorder();
            let x = input(&mut rec);
            let mut res_shape = x.shape().to_vec();
            *res_shape.last_mut().unwrap() = out_n;
            let res = res.reshape(&res_shape).unwrap();
            let y = match store {
                0 => linear_store(&mut rec, &x, &lw, Store::Plain, path, fuse),
                1 => linear_store(&mut rec, &x, &lw, Store::Add(Residual::Same(&res)), path, fuse),
                _ => linear_store(&mut rec, &x, &gw.lin, Store::Geglu, path, fuse),
            }
            .unwrap();
            rec.submit();
            assert_eq!(y.shape(), res_shape.as_slice(), "{what}");
            (y.read_bytes(gpu).unwrap(), y.to_f32(gpu).unwrap())
        };
        let (fused, got) = run(Fuse::Fused);
        assert_close(&format!("linear of a norm on load, {what}"), &got, &want, dt.tolerance(TOL));
        assert!(fused == run(Fuse::Apart).0, "{what}: the norm applied on load changes the bytes of its own pass");
    }

    /// Random norm weights `[c]` and their host twins.
    fn norm_weights(gpu: &Gpu, rng: &mut Rng, c: usize) -> (crate::ops::norm::NormWeight, Vec<f32>, Vec<f32>) {
        let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
        let beta = rng.normals(c, 0.5);
        (crate::ops::norm::NormWeight::from_torch(gpu, &gamma, &beta).unwrap(), gamma, beta)
    }

    /// A LayerNorm applied as the matmul loads its input (`LinearInput::LayerNormed`, `matmul_a_ln.wgsl`)
    /// on every kernel the adapter runs, with plain, residual and GEGLU stores, token tensors of
    /// awkward sizes, and inputs whose mean is far from zero: the values of the CPU norm then the
    /// CPU linear layer, and the bytes of the norm's own pass then the same kernel.
    #[test]
    fn layer_norm_on_load_matches_its_pass() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for path in norm_paths(&gpu, dt) {
                // (x's shape, out features (GEGLU: 2·inner), store)
                for &(xs, n, store) in &[(&[1usize, 1, 4][..], 4usize, 0u8), (&[2, 7, 36][..], 40, 1), (&[77, 100][..], 36, 0), (&[3, 11, 64][..], 72, 2), (&[130, 20][..], 12, 1)] {
                    let what = format!("LayerNorm, {} {path:?} x {xs:?} -> {n} store {store} seed {seed}", dt.name());
                    let c = *xs.last().unwrap();
                    let xv: Vec<f32> = rng.normals(xs.iter().product(), 2.0).iter().map(|v| v + 3.0).collect();
                    let (x, xh) = upload(&gpu, &xv, xs, dt);
                    let (nw, gamma, beta) = norm_weights(&gpu, &mut rng, c);
                    let normed = crate::ops::norm::cpu::layer_norm(&xh, c, &gamma, &beta, 1e-5);
                    let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                    check_norm_on_load(&gpu, &mut rng, &what, dt, path, &normed, c, n, store, &|_| LinearInput::layer_normed(&x, &nw, 1e-5));
                }
            }
        }
    }

    /// A GroupNorm (a transformer's, before proj_in) applied as the matmul loads its input
    /// (`LinearInput::GroupNormed`, `matmul_a_gn.wgsl`) on every kernel the adapter runs: groups that
    /// straddle 4-channel vectors, one and several segments, plain, residual and GEGLU stores;
    /// the values of the CPU norm then the CPU linear layer, and the bytes of the norm's own pass
    /// then the same kernel.
    #[test]
    fn group_norm_on_load_matches_its_pass() {
        use crate::ops::norm::{group_norm_table, GroupNormOpts, NormWeight};
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let opts = GroupNormOpts { frames: 1, pooled: false, silu: false };
        for dt in gpu.dtypes() {
            for path in norm_paths(&gpu, dt) {
                // (x [N, H, W, C], groups, out features (GEGLU: 2·inner), store)
                for &(xs, groups, n, store) in &[([2usize, 3, 5, 40], 8usize, 36usize, 0u8), ([1, 7, 11, 64], 32, 72, 2), ([3, 1, 1, 12], 4, 20, 1)] {
                    let what = format!("GroupNorm, {} {path:?} x {xs:?} G={groups} -> {n} store {store} seed {seed}", dt.name());
                    let c = xs[3];
                    let xv: Vec<f32> = rng.normals(xs.iter().product(), 2.0).iter().map(|v| v - 2.0).collect();
                    let (x, xh) = upload(&gpu, &xv, &xs, dt);
                    let (nw, gamma, beta) = norm_weights(&gpu, &mut rng, c);
                    let normed = crate::ops::norm::cpu::group_norm(&xh, xs[0], xs[1] * xs[2], c, groups, 1e-6, &gamma, &beta, 1, false, false);
                    let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                    let input = |rec: &mut Recorder| {
                        let t = group_norm_table(rec, &x, groups, 1e-6, &nw.gamma, &nw.beta, opts).unwrap();
                        LinearInput::group_normed(&x.reshape(&[xs[0], xs[1] * xs[2], c]).unwrap(), &t).unwrap()
                    };
                    check_norm_on_load(&gpu, &mut rng, &what, dt, path, &normed, c, n, store, &input);
                }
            }
        }
        // A norm with SiLU is refused.
        let mut rec = gpu.recorder();
        let x = Tensor::from_f32(&gpu, &[1.0; 8], &[1, 2, 1, 4], DType::F32).unwrap();
        let nw = NormWeight::from_torch(&gpu, &[1.0; 4], &[0.0; 4]).unwrap();
        let t = group_norm_table(&mut rec, &x, 2, 1e-6, &nw.gamma, &nw.beta, GroupNormOpts { frames: 1, pooled: false, silu: true }).unwrap();
        assert!(LinearInput::group_normed(&x, &t).unwrap_err().to_string().contains("SiLU"));
    }
}
