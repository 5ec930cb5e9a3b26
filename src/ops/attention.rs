//! Multi-head attention (`shaders/attention.wgsl`): flash-style, an online softmax over key
//! tiles with f32 accumulation; the score matrix never reaches memory.
//!
//! Layout: token sequences, channels-last. `q [B, Lq, heads·dh]`, `k`/`v [Bk, Lk, heads·dh]`,
//! out `[B, Lq, heads·dh]`; head `h` is channels `h·dh .. (h+1)·dh` (PyTorch's
//! `b n (h d) -> b h n d`). A `[N, H, W, C]` activation is already `[N, H·W, C]` tokens.
//!
//! Covers the UNet's self- and text cross-attention (dh 64/128, 8 heads, Lk = 77), the
//! TE-3DVAE's single-head attention (dh 512) and the text encoder's causal self-attention.
//! Temporal attention over the frame axis is in [`crate::ops::temporal_attention`].
//!
//! Where the adapter has cooperative matrices, f16 attention without a causal mask runs on them
//! (`shaders/attention_coop.wgsl`, [`coop_applies`]): 16×16 fragments with 32-wide subgroups, or
//! 8×8 with 8-wide ones (Mesa's lavapipe), the latter up to dh 256. It makes one pass over the
//! keys; since a cooperative accumulator cannot be scaled row by row, a row's reference max is
//! raised (and its accumulators rescaled through workgroup memory) only when its scores pass it
//! by more than 2^8. So does f32 attention where
//! `--f16-operands` allows ([`crate::Gpu::coop_takes`]): its operands are rounded to f16, its
//! softmax and accumulation stay f32.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::{DType, Tensor};

const SRC: &str = include_str!("../../shaders/attention.wgsl");
/// The cooperative kernel with its Q loader: fragments straight from f16 memory, or staged through
/// workgroup memory from f32 (see the shader's header).
const COOP_SRC_DIRECT: &str = concat!(include_str!("../../shaders/attention_coop.wgsl"), include_str!("../../shaders/attention_coop_q_direct.wgsl"));
const COOP_SRC_STAGED: &str = concat!(include_str!("../../shaders/attention_coop.wgsl"), include_str!("../../shaders/attention_coop_q_staged.wgsl"));

/// Largest head width: the output tile lives in registers (dh/32 vec4 per row and thread).
pub const MAX_HEAD_DIM: usize = 512;

/// Options of one attention call.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct AttnOpts {
    /// Multiplies Q·Kᵀ before the softmax (usually dh^-1/2).
    pub scale: f32,
    /// Query `i` sees keys `0..=i` only (CLIP's text encoder).
    pub causal: bool,
}

impl AttnOpts {
    /// Scale dh^-1/2, no mask.
    pub fn new(dh: usize) -> AttnOpts {
        AttnOpts { scale: 1.0 / (dh as f32).sqrt(), causal: false }
    }
    pub fn causal(self) -> AttnOpts {
        AttnOpts { causal: true, ..self }
    }
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    lq: u32,
    lk: u32,
    heads: u32,
    nqt: u32,
    ldq: u32,
    ldk: u32,
    ldv: u32,
    ldo: u32,
    qoff: u32,
    koff: u32,
    voff: u32,
    kv_div: u32,
    k_begin: u32,
    k_end: u32,
    flags: u32,
    scale: f32,
    /// Workgroups that own a tile (the rest of a folded grid return at once).
    groups: u32,
}

/// Tile shape of one kernel variant (see the shader's header).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Tiles {
    rg: usize,
    tn: usize,
    ks: usize,
    uf: usize,
    ps: usize,
}

impl Tiles {
    const TM: usize = 4;
    const DC: usize = 16;
    fn cg(&self) -> usize {
        256 / self.rg
    }
    fn bq(&self) -> usize {
        self.rg * Self::TM
    }
    fn bk(&self) -> usize {
        self.cg() * self.tn
    }
    fn smem_bytes(&self) -> usize {
        4 * (self.bq() * self.ps + self.uf)
    }

    /// Picks tiles for head width `dh` within `smem` bytes of workgroup memory.
    fn choose(dh: usize, smem: usize) -> Result<Tiles> {
        // Budget: at most 32 KiB, so several workgroups share a multiprocessor on big GPUs.
        let budget = smem.min(32 << 10) / 4;
        let (rg, tn) = if dh > 128 {
            // 32 rows × dh/32 vec4 per thread keeps the output tile at 64 registers for dh 512.
            (8, 2)
        } else if budget >= 64 * 68 + 2176 {
            (16, 4)
        } else {
            (16, 2)
        };
        let cg = 256 / rg;
        let (bq, bk) = (rg * Self::TM, cg * tn);
        // Pad P's rows when a 32-wide subgroup spans two row groups (bank conflicts otherwise).
        let ps = if cg < 32 { bk + 4 } else { bk };
        let qk = Self::DC * (bq + 4) + Self::DC * (bk + 4);
        let red = bq * cg;
        let fixed = bq * ps;
        if budget < fixed + qk.max(red) {
            bail!("attention: this GPU's {smem} bytes of workgroup memory are too few for head width {dh}");
        }
        let room = budget - fixed;
        let mut ks = bk;
        while ks > 4 && ks * dh > room {
            ks /= 2;
        }
        if ks * dh > room {
            bail!("attention: this GPU's {smem} bytes of workgroup memory are too few for head width {dh}");
        }
        let uf = qk.max(red).max(ks * dh).div_ceil(4) * 4;
        let t = Tiles { rg, tn, ks, uf, ps };
        debug_assert!(t.smem_bytes() <= smem);
        Ok(t)
    }

    /// Conservative count of loop iterations one invocation runs per key tile (lavapipe's
    /// 65 535-iteration limit counts every loop of the invocation together).
    fn iters_per_tile(&self, dh: usize) -> usize {
        let chunks = dh.div_ceil(Self::DC);
        let s = chunks * (2 + (self.bq() + self.bk()) * Self::DC / 256 + Self::DC * (1 + Self::TM * self.tn));
        let nch = (dh / 4).div_ceil(self.cg());
        let pv = (self.bk() / self.ks) * (2 + self.ks * dh / 256 + (self.ks / 4) * (1 + Self::TM + nch * (1 + Self::TM)));
        let soft = Self::TM * (4 + self.tn * 2 + self.cg() / 4 + nch);
        s + pv + soft + 8
    }
}

/// How one operand is laid out: `[batch, len, ld]` with the heads starting at channel `off`.
#[derive(Copy, Clone)]
struct View<'a> {
    t: &'a Tensor,
    batch: usize,
    len: usize,
    ld: usize,
    off: usize,
}

/// Which kernel runs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Impl {
    /// The cooperative-matrix kernel where it applies ([`coop_applies`]), else the portable one.
    #[default]
    Auto,
    /// The portable kernel (`attention.wgsl`).
    Portable,
    /// The cooperative-matrix kernel (`attention_coop.wgsl`); an error where it does not apply.
    Coop,
}

/// Testing knobs: a smaller workgroup-memory budget, keys per dispatch, the kernel.
#[derive(Copy, Clone, Debug, Default)]
struct Tuning {
    smem: Option<usize>,
    max_tiles_per_dispatch: Option<usize>,
    path: Impl,
}

/// Constants of the cooperative kernel for fragments of `fs` and head width `dh`: (DC, VK, KVF,
/// workgroup bytes). Its tile is BQ = 2·FS queries × BK = 4·FS keys; `staged_q` (f32 storage) adds
/// the f16 copy of Q's BQ × DC chunk.
fn coop_consts(fs: usize, dh: usize, staged_q: bool) -> (usize, usize, usize, usize) {
    let (bq, bk) = (2 * fs, 4 * fs);
    let dc = if dh.is_multiple_of(128) { 128 } else { 64 };
    let vk = (if dh <= 128 { 64 } else { 16 }).min(bk);
    let kvf = (bk * (dc + 8)).max(vk * (dh + 8));
    let qs = if staged_q { 2 * bq * (dc + 8) } else { 0 };
    // kv, the scores, P, a factor per row, the rescale flag.
    let bytes = 2 * kvf + 4 * bq * (bk + 4) + 2 * bq * (bk + 8) + 4 * bq + 4 + qs;
    (dc, vk, kvf, bytes)
}

/// The widest head for fragments of `fs`: each subgroup keeps DH / (4·FS) output fragments, at
/// most 8 (512 at 16, 256 at 8).
fn coop_max_dh(fs: usize) -> usize {
    32 * fs
}

/// The cooperative kernel's fragment size on this adapter: f16×f16→f32 fragments of 16 with
/// 32-wide subgroups, or of 8 with 8-wide ones (its 8 subgroups must hold FS·FS invocations, one
/// per 8 scores of a BQ × BK tile), with the invocations and workgroup memory it needs.
fn coop_fs(gpu: &crate::Gpu) -> Option<usize> {
    let fs = gpu.coop_fragment()? as usize;
    let fits = gpu.fixed_subgroup_size()? as usize == fs * fs / 8
        && gpu.limits.max_compute_invocations_per_workgroup as usize >= fs * fs
        && gpu.limits.max_compute_workgroup_storage_size as usize >= coop_consts(fs, coop_max_dh(fs), false).3;
    fits.then_some(fs)
}

/// Whether the adapter can run the cooperative-matrix kernel at all (see `coop_fs`).
pub fn coop_available(gpu: &crate::Gpu) -> bool {
    coop_fs(gpu).is_some()
}

/// Why the cooperative kernel cannot take this call, or `None` when it can: f16 storage (or f32
/// where `--f16-operands` allows), no causal mask, dh 64, 128, 256 or 512 (up to 256 with 8×8
/// fragments), at least 2·FS queries.
fn coop_refusal(gpu: &crate::Gpu, dtype: DType, lq: usize, dh: usize, causal: bool) -> Option<String> {
    let Some(fs) = coop_fs(gpu) else {
        return Some("the adapter lacks f16 cooperative matrices with subgroups to match (16×16 with 32 lanes, 8×8 with 8)".into());
    };
    let staged_bytes = coop_consts(fs, dh, true).3;
    if !gpu.coop_takes(dtype) {
        Some("it needs f16 storage, or f32 with --f16-operands".into())
    } else if causal {
        Some("it has no causal mask".into())
    } else if ![64, 128, 256, 512].contains(&dh) || dh > coop_max_dh(fs) {
        Some(format!("it needs a head width of 64, 128, 256 or 512, at most {} with {fs}×{fs} fragments", coop_max_dh(fs)))
    } else if lq < 2 * fs {
        Some(format!("it needs at least {} queries", 2 * fs))
    } else if dtype == DType::F32 && staged_bytes > gpu.limits.max_compute_workgroup_storage_size as usize {
        Some(format!("staging f32 queries needs {staged_bytes} bytes of workgroup memory"))
    } else {
        None
    }
}

/// Whether [`attention`] takes the cooperative-matrix kernel for these sizes on this adapter.
pub fn coop_applies(gpu: &crate::Gpu, dtype: DType, lq: usize, dh: usize, causal: bool) -> bool {
    coop_refusal(gpu, dtype, lq, dh, causal).is_none()
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct CoopParams {
    lq: u32,
    lk: u32,
    heads: u32,
    nqt: u32,
    ldk4: u32,
    ldv4: u32,
    ldo: u32,
    qoff: u32,
    koff4: u32,
    voff4: u32,
    kv_div: u32,
    scale: f32,
    groups: u32,
}

/// The cooperative kernel for storage `dtype` (f16, or f32 on f16 operands).
fn coop_kernel(fs: usize, dh: usize, ldq: usize, dtype: DType) -> Kernel {
    let staged_q = dtype == DType::F32;
    let (dc, vk, kvf, _) = coop_consts(fs, dh, staged_q);
    Kernel::new("attention_coop", if staged_q { COOP_SRC_STAGED } else { COOP_SRC_DIRECT }, dtype)
        .with_coop(fs as u32)
        .def("SG", format!("{}u", fs * fs / 8))
        .def("DH", format!("{dh}u"))
        .def("NO", format!("{}u", dh / (4 * fs)))
        .def("DC", format!("{dc}u"))
        .def("VK", format!("{vk}u"))
        .def("KVF", format!("{kvf}u"))
        .def("LDQ", format!("{ldq}u"))
}

#[allow(clippy::too_many_arguments)]
fn run_coop(rec: &mut Recorder, q: View, k: View, v: View, out: &Tensor, heads: usize, dh: usize, opts: AttnOpts) -> Result<()> {
    let gpu = rec.gpu();
    let fs = coop_fs(gpu).ok_or_else(|| anyhow::anyhow!("internal: the cooperative attention was chosen on an adapter without it"))?;
    let (b, lq, lk) = (q.batch, q.len, k.len);
    let nqt = lq.div_ceil(2 * fs);
    let groups = b * heads * nqt;
    let p = CoopParams {
        lq: lq as u32,
        lk: lk as u32,
        heads: heads as u32,
        nqt: nqt as u32,
        ldk4: (k.ld / 4) as u32,
        ldv4: (v.ld / 4) as u32,
        ldo: (heads * dh) as u32,
        qoff: q.off as u32,
        koff4: (k.off / 4) as u32,
        voff4: (v.off / 4) as u32,
        kv_div: (b / k.batch) as u32,
        scale: opts.scale * std::f32::consts::LOG2_E,
        groups: groups as u32,
    };
    rec.dispatch(&coop_kernel(fs, dh, q.ld, q.t.dtype()), &p, &[q.t.into(), k.t.into(), v.t.into(), out.into()], grid(gpu, groups as u32))?;
    rec.add_flops(attention_flops(b * heads, lq, lk, dh));
    Ok(())
}

/// Q·Kᵀ and P·V of `bh` (batch, head) pairs: 4·Lq·Lk·dh each, as PyTorch counts attention (the
/// cooperative kernel's second Q·Kᵀ pass not included).
fn attention_flops(bh: usize, lq: usize, lk: usize, dh: usize) -> f64 {
    4.0 * bh as f64 * lq as f64 * lk as f64 * dh as f64
}

/// Lavapipe (and any CPU adapter) stops shader loops after 65 535 iterations per invocation.
fn loop_limited(gpu: &crate::Gpu) -> bool {
    gpu.is_software()
}

#[allow(clippy::too_many_arguments)]
fn run(rec: &mut Recorder, q: View, k: View, v: View, heads: usize, dh: usize, opts: AttnOpts, tune: Tuning) -> Result<Tensor> {
    let gpu = rec.gpu();
    let dtype = q.t.dtype();
    if k.t.dtype() != dtype || v.t.dtype() != dtype {
        bail!("attention: dtypes differ (q {:?}, k {:?}, v {:?})", dtype, k.t.dtype(), v.t.dtype());
    }
    if heads == 0 || dh == 0 || !dh.is_multiple_of(4) || dh > MAX_HEAD_DIM {
        bail!("attention: head width {dh} must be a positive multiple of 4 up to {MAX_HEAD_DIM} (heads {heads})");
    }
    if k.len == 0 || k.len != v.len || k.batch != v.batch {
        bail!("attention: k has {} keys in {} batches, v {} in {}", k.len, k.batch, v.len, v.batch);
    }
    if k.batch == 0 || !q.batch.is_multiple_of(k.batch) {
        bail!("attention: the k/v batch {} must divide the query batch {}", k.batch, q.batch);
    }
    let (b, lq, lk) = (q.batch, q.len, k.len);
    let c = heads * dh;
    let out = rec.empty(&[b, lq, c], dtype)?;
    if b == 0 || lq == 0 {
        return Ok(out);
    }
    let ld = |x: usize| -> Result<u32> { u32::try_from(x).map_err(|_| anyhow::anyhow!("attention: size {x} overflows u32")) };
    for n in [b * lq * q.ld, k.batch * lk * k.ld, v.batch * lk * v.ld, b * heads * lq * (dh + 2)] {
        ld(n)?;
    }
    let refusal = coop_refusal(gpu, dtype, lq, dh, opts.causal);
    match (tune.path, refusal) {
        (Impl::Coop, Some(why)) => bail!("attention: the cooperative-matrix kernel does not apply: {why}"),
        (Impl::Coop | Impl::Auto, None) => {
            run_coop(rec, q, k, v, &out, heads, dh, opts)?;
            return Ok(out);
        }
        _ => {}
    }
    let tiles = Tiles::choose(dh, tune.smem.unwrap_or(gpu.limits.max_compute_workgroup_storage_size as usize))?;
    let kernel = Kernel::new("attention", SRC, dtype)
        .def("DH", format!("{dh}u"))
        .def("RG", format!("{}u", tiles.rg))
        .def("TN", format!("{}u", tiles.tn))
        .def("KS", format!("{}u", tiles.ks))
        .def("UF", format!("{}u", tiles.uf))
        .def("PS", format!("{}u", tiles.ps))
        .def("CAUSAL", opts.causal);
    let nqt = lq.div_ceil(tiles.bq());
    let ntiles = lk.div_ceil(tiles.bk());
    let per_dispatch = match tune.max_tiles_per_dispatch {
        Some(n) => n.max(1),
        None if loop_limited(gpu) => (40_000 / tiles.iters_per_tile(dh)).max(1),
        None => ntiles,
    };
    let parts = ntiles.div_ceil(per_dispatch);
    // The carried state, (O, running max, row sum) per row and head; only when split.
    let state = if parts > 1 {
        rec.empty(&[b * heads * lq * (dh + 2)], DType::F32)?
    } else {
        rec.empty(&[1], DType::F32)?
    };
    for part in 0..parts {
        let k_begin = part * per_dispatch * tiles.bk();
        let k_end = ((part + 1) * per_dispatch * tiles.bk()).min(lk);
        let flags = (part == 0) as u32 | (((part + 1 == parts) as u32) << 1);
        let p = Params {
            lq: ld(lq)?,
            lk: ld(lk)?,
            heads: ld(heads)?,
            nqt: ld(nqt)?,
            ldq: ld(q.ld)?,
            ldk: ld(k.ld)?,
            ldv: ld(v.ld)?,
            ldo: ld(c)?,
            qoff: ld(q.off)?,
            koff: ld(k.off)?,
            voff: ld(v.off)?,
            kv_div: ld(b / k.batch)?,
            k_begin: ld(k_begin)?,
            k_end: ld(k_end)?,
            flags,
            scale: opts.scale * std::f32::consts::LOG2_E,
            groups: ld(b * heads * nqt)?,
        };
        let groups = p.groups;
        rec.dispatch(&kernel, &p, &[q.t.into(), k.t.into(), v.t.into(), (&out).into(), (&state).into()], grid(gpu, groups))?;
        rec.add_flops(attention_flops(b * heads, lq, k_end - k_begin, dh));
    }
    Ok(out)
}

fn seq_shape(name: &str, t: &Tensor) -> Result<(usize, usize, usize)> {
    match *t.shape() {
        [b, l, c] => Ok((b, l, c)),
        _ => bail!("attention: {name} must be [batch, tokens, channels], got {:?}", t.shape()),
    }
}

/// Multi-head attention `softmax(Q·Kᵀ·scale)·V`.
///
/// `q [B, Lq, heads·dh]`, `k`, `v [Bk, Lk, heads·dh]` with `Bk` dividing `B`: query batch entry
/// `b` uses K/V entry `b / (B / Bk)`, so one text context `[2, 77, C]` serves a `(cfg f)` batch
/// of `2·F` frames. Returns `[B, Lq, heads·dh]`. `dh` must be a multiple of 4, at most 512.
pub fn attention(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, opts: AttnOpts) -> Result<Tensor> {
    attention_tuned(rec, q, k, v, heads, opts, Tuning::default())
}

/// [`attention`] with the kernel chosen by the caller (benchmarks, comparisons).
pub fn attention_with(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, opts: AttnOpts, path: Impl) -> Result<Tensor> {
    attention_tuned(rec, q, k, v, heads, opts, Tuning { path, ..Tuning::default() })
}

fn attention_tuned(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, opts: AttnOpts, tune: Tuning) -> Result<Tensor> {
    let (b, lq, c) = seq_shape("q", q)?;
    let (bk, lk, ck) = seq_shape("k", k)?;
    if k.shape() != v.shape() {
        bail!("attention: k {:?} and v {:?} differ", k.shape(), v.shape());
    }
    if ck != c || heads == 0 || c % heads != 0 {
        bail!("attention: q {:?} and k {:?} must have the same channels, a multiple of heads {heads}", q.shape(), k.shape());
    }
    let dh = c / heads;
    let view = |t, batch, len| View { t, batch, len, ld: c, off: 0 };
    run(rec, view(q, b, lq), view(k, bk, lk), view(v, bk, lk), heads, dh, opts, tune)
}

/// Self-attention on a fused projection `qkv [B, L, 3·heads·dh]` (channels `[q | k | v]`, as a
/// single `to_qkv` Linear writes them); returns `[B, L, heads·dh]`. Saves splitting copies.
pub fn attention_qkv(rec: &mut Recorder, qkv: &Tensor, heads: usize, opts: AttnOpts) -> Result<Tensor> {
    let (b, l, c3) = seq_shape("qkv", qkv)?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        bail!("attention_qkv: {:?} is not [batch, tokens, 3·heads·dh] for {heads} heads", qkv.shape());
    }
    let c = c3 / 3;
    let view = |off| View { t: qkv, batch: b, len: l, ld: c3, off };
    run(rec, view(0), view(c), view(2 * c), heads, c / heads, opts, Tuning::default())
}

/// Benchmarks at DiffVSR's shapes (UNet at a 64² latent level, batch 16 = 8 frames × CFG).
pub fn bench_cases(gpu: &crate::Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    // (name, batch, Lq, Lk, heads, dh)
    let shapes: &[(&str, usize, usize, usize, usize, usize)] = if quick {
        &[
            ("attention self dh64", 2, 64, 64, 2, 64),
            ("attention self dh128", 2, 33, 33, 2, 128),
            ("attention cross 77", 2, 64, 77, 2, 64),
            ("attention vae dh512", 1, 70, 70, 1, 512),
        ]
    } else {
        &[
            ("attention self dh64", 16, 4096, 4096, 8, 64),
            ("attention self dh128", 16, 256, 256, 8, 128),
            ("attention cross 77", 16, 4096, 77, 8, 64),
            ("attention vae dh512", 1, 16384, 16384, 1, 512),
        ]
    };
    let mut v = Vec::new();
    for (i, &(name, b, lq, lk, heads, dh)) in shapes.iter().enumerate() {
        let c = heads * dh;
        let seed = 100 + 3 * i as u64;
        let q = random_tensor(gpu, &[b, lq, c], dtype, seed)?;
        let k = random_tensor(gpu, &[b, lk, c], dtype, seed + 1)?;
        let vv = random_tensor(gpu, &[b, lk, c], dtype, seed + 2)?;
        let es = dtype.size() as f64;
        // Where the cooperative kernel is the default, time the portable one beside it.
        let mut paths = vec![(Impl::Auto, "")];
        if coop_applies(gpu, dtype, lq, dh, false) {
            paths.push((Impl::Portable, " (portable)"));
        }
        for (path, tag) in paths {
            let (q, k, vv) = (q.clone(), k.clone(), vv.clone());
            v.push(BenchCase {
                name: format!("{name}{tag}"),
                shape: format!("{b}x{lq}x{lk} {heads}x{dh}"),
                flops: 4.0 * (b * heads * lq * lk * dh) as f64,
                bytes: es * (2 * b * lq * c + 2 * b * lk * c) as f64,
                run: Box::new(move |r| attention_with(r, &q, &k, &vv, heads, AttnOpts::new(dh), path).map(drop)),
            });
        }
    }
    Ok(v)
}

/// CPU reference (f64 accumulation), same layouts as [`attention`].
pub mod cpu {
    use super::AttnOpts;

    #[allow(clippy::too_many_arguments)]
    pub fn attention(q: &[f32], k: &[f32], v: &[f32], b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize, opts: AttnOpts) -> Vec<f32> {
        let c = heads * dh;
        let mut out = vec![0f32; b * lq * c];
        let mut s = vec![0f64; lk];
        for bi in 0..b {
            let kb = bi / (b / bk);
            for h in 0..heads {
                for i in 0..lq {
                    let qr = &q[(bi * lq + i) * c + h * dh..][..dh];
                    let mut mx = f64::NEG_INFINITY;
                    for (j, sj) in s.iter_mut().enumerate() {
                        let kr = &k[(kb * lk + j) * c + h * dh..][..dh];
                        let dot: f64 = qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        *sj = if opts.causal && j > i { f64::NEG_INFINITY } else { dot * opts.scale as f64 };
                        mx = mx.max(*sj);
                    }
                    let mut sum = 0.0;
                    for sj in s.iter_mut() {
                        *sj = (*sj - mx).exp();
                        sum += *sj;
                    }
                    for d in 0..dh {
                        let mut acc = 0.0;
                        for (j, &pj) in s.iter().enumerate() {
                            acc += pj * v[(kb * lk + j) * c + h * dh + d] as f64;
                        }
                        out[(bi * lq + i) * c + h * dh + d] = (acc / sum) as f32;
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


    /// One GPU-vs-CPU comparison at `dt`'s tolerance.
    #[allow(clippy::too_many_arguments)]
    fn check(rng: &mut Rng, seed: u64, dt: DType, b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize, causal: bool, tune: Tuning) {
        check_on(&test_gpu(), dt.tolerance(TOL), rng, seed, dt, b, bk, lq, lk, heads, dh, causal, tune)
    }

    /// One comparison on `gpu` within relative L2 `tol`.
    #[allow(clippy::too_many_arguments)]
    fn check_on(gpu: &crate::Gpu, tol: f64, rng: &mut Rng, seed: u64, dt: DType, b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize, causal: bool, tune: Tuning) {
        let c = heads * dh;
        let (q, qh) = upload(gpu, &rng.normals(b * lq * c, 1.0), &[b, lq, c], dt);
        let (k, kh) = upload(gpu, &rng.normals(bk * lk * c, 1.0), &[bk, lk, c], dt);
        let (v, vh) = upload(gpu, &rng.normals(bk * lk * c, 1.0), &[bk, lk, c], dt);
        let mut opts = AttnOpts::new(dh);
        opts.causal = causal;
        let mut rec = gpu.recorder();
        let out = attention_tuned(&mut rec, &q, &k, &v, heads, opts, tune).unwrap();
        rec.submit();
        assert_eq!(out.shape(), &[b, lq, c]);
        let want = cpu::attention(&qh, &kh, &vh, b, bk, lq, lk, heads, dh, opts);
        let what = format!("attention b{b}/{bk} lq{lq} lk{lk} {heads}x{dh} causal {causal} {tune:?} {dt:?} seed {seed}");
        assert_close(&what, &out.to_f32(gpu).unwrap(), &want, tol);
    }

    #[test]
    fn self_attention_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for l in [1usize, 7, 33, 77, 130] {
                for (heads, dh) in [(1usize, 32usize), (2, 64), (8, 128)] {
                    // The 8×128 head at 130 tokens is the slowest case on lavapipe: once per dtype.
                    if heads == 8 && l == 77 {
                        continue;
                    }
                    check(&mut rng, seed, dt, 2, 2, l, l, heads, dh, false, Tuning::default());
                }
            }
        }
    }

    #[test]
    fn causal_attention_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for l in [1usize, 7, 33, 77, 130] {
                check(&mut rng, seed, dt, 2, 2, l, l, 2, 64, true, Tuning::default());
            }
            // Fewer queries than keys and the other way round.
            check(&mut rng, seed, dt, 1, 1, 33, 130, 1, 32, true, Tuning::default());
            check(&mut rng, seed, dt, 1, 1, 130, 7, 1, 32, true, Tuning::default());
        }
    }

    #[test]
    fn cross_attention_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for lq in [1usize, 33, 130] {
                check(&mut rng, seed, dt, 2, 2, lq, 77, 8, 64, false, Tuning::default());
            }
            // One text context shared by a batch of 4 (K/V batch 1), and by pairs (K/V batch 2).
            check(&mut rng, seed, dt, 4, 1, 33, 77, 2, 64, false, Tuning::default());
            check(&mut rng, seed, dt, 4, 2, 7, 77, 2, 32, false, Tuning::default());
        }
    }

    #[test]
    fn wide_single_head_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            check(&mut rng, seed, dt, 1, 1, 7, 7, 1, 512, false, Tuning::default());
            check(&mut rng, seed, dt, 2, 2, 33, 77, 1, 512, false, Tuning::default());
            check(&mut rng, seed, dt, 1, 1, 70, 130, 1, 256, false, Tuning::default());
            check(&mut rng, seed, dt, 1, 1, 33, 70, 1, 384, false, Tuning::default());
        }
    }

    #[test]
    fn small_workgroup_memory_and_split_keys_match_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let small = Tuning { smem: Some(16 << 10), max_tiles_per_dispatch: None, path: Impl::Portable };
        let split = Tuning { smem: None, max_tiles_per_dispatch: Some(1), path: Impl::Portable };
        let both = Tuning { smem: Some(16 << 10), max_tiles_per_dispatch: Some(2), path: Impl::Portable };
        for dt in gpu.dtypes() {
            for (heads, dh) in [(2usize, 32usize), (2, 64), (1, 128), (1, 512)] {
                check(&mut rng, seed, dt, 2, 2, 77, 130, heads, dh, false, small);
            }
            check(&mut rng, seed, dt, 2, 2, 130, 130, 2, 64, false, split);
            check(&mut rng, seed, dt, 2, 2, 130, 130, 2, 64, true, split);
            check(&mut rng, seed, dt, 1, 1, 33, 200, 1, 512, false, split);
            check(&mut rng, seed, dt, 2, 1, 130, 77, 2, 64, true, both);
        }
    }

    #[test]
    fn long_key_ranges_match_cpu() {
        // 128 key tiles: one dispatch would run into lavapipe's loop limit; the automatic split
        // must keep every invocation under it (on GPUs this is a single dispatch).
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            check(&mut rng, seed, dt, 1, 1, 3, 4096, 1, 512, false, Tuning::default());
            if dt == DType::F32 {
                check(&mut rng, seed, dt, 1, 1, 2, 8192, 1, 64, false, Tuning::default());
            }
        }
    }

    /// Shows the limit exists (expected to FAIL on lavapipe), so the test above means something.
    #[test]
    #[ignore]
    fn unsplit_long_key_range() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let all = Tuning { smem: None, max_tiles_per_dispatch: Some(1 << 20), path: Impl::Portable };
        check(&mut rng, seed, DType::F32, 1, 1, 3, 4096, 1, 512, false, all);
        check(&mut rng, seed, DType::F32, 1, 1, 2, 8192, 1, 64, false, all);
    }

    #[test]
    fn fused_qkv_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            check_fused_qkv(&gpu, dt.tolerance(TOL), &mut rng, dt, &format!("attention_qkv {dt:?} seed {seed}"));
        }
    }

    /// Self-attention on a fused q|k|v projection (queries at a row stride of 3·C, channel
    /// offsets) against the CPU on the split parts.
    fn check_fused_qkv(gpu: &crate::Gpu, tol: f64, rng: &mut Rng, dt: DType, what: &str) {
        let (b, l, heads, dh) = (2usize, 77usize, 2usize, 64usize);
        let c = heads * dh;
        let (qkv, h) = upload(gpu, &rng.normals(b * l * 3 * c, 1.0), &[b, l, 3 * c], dt);
        let part = |o: usize| -> Vec<f32> { h.chunks(3 * c).flat_map(|r| r[o * c..(o + 1) * c].to_vec()).collect() };
        let opts = AttnOpts::new(dh);
        let mut rec = gpu.recorder();
        let out = attention_qkv(&mut rec, &qkv, heads, opts).unwrap();
        rec.submit();
        let want = cpu::attention(&part(0), &part(1), &part(2), b, b, l, l, heads, dh, opts);
        assert_close(what, &out.to_f32(gpu).unwrap(), &want, tol);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let gpu = test_gpu();
        let t = |s: &[usize]| Tensor::empty(&gpu, s, DType::F32).unwrap();
        let mut rec = gpu.recorder();
        let o = AttnOpts::new(64);
        assert!(attention(&mut rec, &t(&[2, 7, 128]), &t(&[2, 9, 64]), &t(&[2, 9, 64]), 2, o).is_err());
        assert!(attention(&mut rec, &t(&[2, 7, 128]), &t(&[2, 9, 128]), &t(&[2, 8, 128]), 2, o).is_err());
        assert!(attention(&mut rec, &t(&[3, 7, 128]), &t(&[2, 9, 128]), &t(&[2, 9, 128]), 2, o).is_err());
        assert!(attention(&mut rec, &t(&[2, 7, 128]), &t(&[2, 0, 128]), &t(&[2, 0, 128]), 2, o).is_err());
        assert!(attention(&mut rec, &t(&[2, 7, 60]), &t(&[2, 9, 60]), &t(&[2, 9, 60]), 10, o).is_err()); // dh 6
        assert!(attention(&mut rec, &t(&[2, 7, 1024]), &t(&[2, 9, 1024]), &t(&[2, 9, 1024]), 1, o).is_err());
        assert!(attention(&mut rec, &t(&[7, 128]), &t(&[9, 128]), &t(&[9, 128]), 2, o).is_err());
    }

    /// The test device and its fragment size where it runs the cooperative kernel in f16; `None`
    /// (the test `name` skipped, with a note) elsewhere.
    fn coop_gpu(name: &str) -> Option<(std::sync::Arc<crate::Gpu>, usize)> {
        let gpu = test_gpu();
        match coop_fs(&gpu).filter(|_| gpu.has_f16()) {
            Some(fs) => Some((gpu, fs)),
            None => {
                eprintln!("{name}: skipped (no cooperative matrices with subgroups to match)");
                None
            }
        }
    }

    /// The cooperative kernel on adapters that have it (the H200 at 16×16, Mesa 26's lavapipe at
    /// 8×8: tools/coop-lavapipe.sh); skipped elsewhere.
    #[test]
    fn coop_matches_cpu() {
        let Some((gpu, fs)) = coop_gpu("coop_matches_cpu") else { return };
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let coop = Tuning { path: Impl::Coop, ..Tuning::default() };
        let dt = DType::F16;
        // Queries at, just above and well above the tile (2·FS), keys below, across and over it.
        for (lq, lk) in [(32usize, 1usize), (33, 7), (77, 77), (130, 130), (32, 200), (2 * fs, 33), (2 * fs + 1, 4 * fs + 1)] {
            for (heads, dh) in [(2usize, 64usize), (1, 128)] {
                check(&mut rng, seed, dt, 2, 2, lq, lk, heads, dh, false, coop);
            }
        }
        check(&mut rng, seed, dt, 1, 1, 77, 130, 2, 256, false, coop);
        assert!(!coop_applies(&gpu, dt, 77, 192, false));
        assert!(!coop_applies(&gpu, dt, 2 * fs - 1, 64, false), "fewer queries than the tile");
        if coop_max_dh(fs) >= 512 {
            check(&mut rng, seed, dt, 1, 1, 33, 77, 1, 512, false, coop);
            check(&mut rng, seed, dt, 2, 2, 130, 200, 1, 512, false, coop);
        } else {
            assert!(!coop_applies(&gpu, dt, 77, 512, false), "dh 512 needs 16×16 fragments");
        }
        check(&mut rng, seed, dt, 4, 1, 64, 77, 8, 64, false, coop);
        check_fused_qkv(&gpu, dt.tolerance(TOL), &mut rng, dt, &format!("coop attention_qkv seed {seed}"));
    }

    /// The cooperative kernel raises a row's reference max only when its scores pass it by more
    /// than TAU, then rescales that row's accumulators. Keys whose scores grow along the sequence
    /// make rows do so after the first tile, at different tiles and by different factors
    /// (counted on the CPU below, so the case cannot go stale); skipped without the kernel.
    #[test]
    fn coop_rescales_rows_whose_scores_keep_rising() {
        let Some((gpu, fs)) = coop_gpu("coop_rescales_rows_whose_scores_keep_rising") else { return };
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let dt = DType::F16;
        let (lq, lk, heads, dh) = (2 * fs + 3, 12 * fs + 5, 2, 64);
        let c = heads * dh;
        let mut keys = rng.normals(lk * c, 1.0);
        for (j, row) in keys.chunks_mut(c).enumerate() {
            let ramp = 1.0 + 5.0 * j as f32 / lk as f32;
            row.iter_mut().for_each(|x| *x *= ramp);
        }
        let (q, qh) = upload(&gpu, &rng.normals(lq * c, 1.0), &[1, lq, c], dt);
        let (k, kh) = upload(&gpu, &keys, &[1, lk, c], dt);
        let (v, vh) = upload(&gpu, &rng.normals(lk * c, 1.0), &[1, lk, c], dt);
        let opts = AttnOpts::new(dh);
        // The kernel's decisions, replayed: per row and head, the tiles (after the first) at
        // which the tile's max passes the reference max by more than TAU = 8 (log2 units).
        let bk = 4 * fs;
        let mut raised_at = Vec::new();
        for h in 0..heads {
            for i in 0..lq {
                let mut m_ref = f32::NEG_INFINITY;
                for (t, keys) in (0..lk).collect::<Vec<_>>().chunks(bk).enumerate() {
                    let dot = |j: usize| (0..dh).map(|d| qh[i * c + h * dh + d] * kh[j * c + h * dh + d]).sum::<f32>();
                    let tmax = keys.iter().map(|&j| dot(j) * opts.scale * std::f32::consts::LOG2_E).fold(f32::NEG_INFINITY, f32::max);
                    if tmax > m_ref + 8.0 {
                        m_ref = tmax;
                        if t > 0 {
                            raised_at.push(t);
                        }
                    }
                }
            }
        }
        raised_at.sort_unstable();
        raised_at.dedup();
        assert!(raised_at.len() >= 2, "the keys should make rows raise their max at several later tiles: {raised_at:?}");
        let mut rec = gpu.recorder();
        let out = attention_tuned(&mut rec, &q, &k, &v, heads, opts, Tuning { path: Impl::Coop, ..Tuning::default() }).unwrap();
        rec.submit();
        let want = cpu::attention(&qh, &kh, &vh, 1, 1, lq, lk, heads, dh, opts);
        assert_close(&format!("rising scores, raised at tiles {raised_at:?}, seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
    }

    /// f32 attention takes the cooperative kernel only with `--f16-operands`, then staging its
    /// queries as f16 (skipped where the adapter lacks cooperative matrices).
    #[test]
    fn f32_storage_takes_f16_operands_only_where_asked() {
        let dt = DType::F32;
        let plain = test_gpu();
        assert!(plain.f16_operands() || !coop_applies(&plain, dt, 77, 64, false), "f32 attention must stay exact by default");
        let gpu = crate::Gpu::new(&crate::GpuOptions { f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
        let Some(fs) = coop_fs(&gpu) else {
            eprintln!("skipped: adapter lacks cooperative matrices");
            return;
        };
        assert!(coop_applies(&gpu, dt, 77, 64, false));
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let coop = Tuning { path: Impl::Coop, ..Tuning::default() };
        // Operands rounded to 11 significant bits: f16's tolerance.
        let tol = DType::F16.tolerance(TOL);
        // A tile and one row over it, keys across tiles; two DC chunks at dh 256; a shared K/V.
        for &(b, bk, lq, lk, heads, dh) in &[(2usize, 2usize, 2 * fs + 1, 4 * fs + 1, 2usize, 64usize), (1, 1, 77, 130, 1, 128), (1, 1, 33, 70, 1, 256), (4, 1, 64, 77, 2, 64)] {
            check_on(&gpu, tol, &mut rng, seed, dt, b, bk, lq, lk, heads, dh, false, coop);
        }
        check_fused_qkv(&gpu, tol, &mut rng, dt, &format!("f32 on f16 operands: attention_qkv seed {seed}"));
    }

    /// The cooperative kernel's WGSL must parse, validate and translate to SPIR-V with naga (the
    /// writer wgpu's Vulkan backend uses) even on machines without cooperative matrices.
    #[test]
    fn coop_wgsl_validates_and_translates() {
        for (fs, dt) in [(16usize, DType::F16), (8, DType::F16), (16, DType::F32), (8, DType::F32)] {
            for (dh, ldq) in [(64usize, 512usize), (128, 1024), (192, 192), (256, 768), (512, 512), (64, 1536)] {
                if dh > coop_max_dh(fs) {
                    continue;
                }
                let (module, _) = translate_check(&coop_kernel(fs, dh, ldq, dt));
                // The parameter block is the Rust one (checked at dispatch where the kernel runs).
                assert_eq!(crate::gpu::pipelines::uniform_size(&module).unwrap(), std::mem::size_of::<CoopParams>() as u64);
                // The workgroup memory the host checks for is what the shader declares.
                let mut layouter = naga::proc::Layouter::default();
                layouter.update(module.to_ctx()).unwrap();
                let wg: usize = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size as usize).sum();
                let staged_q = dt == DType::F32;
                assert_eq!(wg, coop_consts(fs, dh, staged_q).3, "fs {fs} dh {dh} {dt:?}");
                assert!(coop_consts(fs, dh, staged_q).3 <= 48 << 10);
            }
        }
    }

    #[test]
    fn tiles_fit_the_budgets() {
        for dh in [4usize, 32, 64, 128, 256, 512] {
            for smem in [16usize << 10, 32 << 10, 48 << 10] {
                let t = Tiles::choose(dh, smem).unwrap();
                assert!(t.smem_bytes() <= smem, "dh {dh} smem {smem}: {t:?} needs {}", t.smem_bytes());
                assert!(t.ks >= 4 && t.bk().is_multiple_of(t.ks) && t.uf.is_multiple_of(4) && t.ps.is_multiple_of(4), "{t:?}");
                assert!(t.iters_per_tile(dh) < 40_000);
            }
        }
    }
}
