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
//! softmax and accumulation stay f32. A workgroup of the cooperative kernel owns 2·FS query rows
//! on 8 subgroups, or 4·FS rows on 16, which stages each key tile once for twice the rows, and may
//! stage more of K and V at once ([`CoopTile`]); all give the same bits, and where tuning is on
//! the tuner times them per shape and keeps the fastest.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::{DType, Tensor};

pub use coop::{coop_applies, coop_available, CoopTile};
use coop::{coop_refusal, coop_tiles, run_coop};

const SRC: &str = include_str!("../../../shaders/attention.wgsl");

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
    /// The cooperative-matrix kernel (`attention_coop.wgsl`) on this tile; an error where it does
    /// not apply, or the tile does not fit the call or the adapter.
    Coop(CoopTile),
}

/// Testing knobs: a smaller workgroup-memory budget, keys per dispatch, the kernel.
#[derive(Copy, Clone, Debug, Default)]
struct Tuning {
    smem: Option<usize>,
    max_tiles_per_dispatch: Option<usize>,
    path: Impl,
}

/// Q·Kᵀ and P·V of `bh` (batch, head) pairs: 4·Lq·Lk·dh each, as PyTorch counts attention.
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
    let tile = match (tune.path, refusal) {
        (Impl::Coop(_), Some(why)) => bail!("attention: the cooperative-matrix kernel does not apply: {why}"),
        (Impl::Coop(tile), None) => Some(tile),
        (Impl::Auto, None) => Some(tuned_tile(gpu, q, k, v, heads, dh, opts)?),
        _ => None,
    };
    if let Some(tile) = tile {
        run_coop(rec, q, k, v, &out, heads, dh, opts, tile)?;
        return Ok(out);
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

/// The cooperative kernel's tile for this call: the tuner's choice among [`coop_tiles`]
/// (timed on scratch operands of the call's shapes the first time it meets them, where tuning is
/// on), else the narrow one.
#[allow(clippy::too_many_arguments)]
fn tuned_tile(gpu: &crate::Gpu, q: View, k: View, v: View, heads: usize, dh: usize, opts: AttnOpts) -> Result<CoopTile> {
    let dtype = q.t.dtype();
    let tiles = coop_tiles(gpu, dtype, q.len, dh);
    let key = || {
        let fused = if q.ld != heads * dh { " (fused q/k/v)" } else { "" };
        format!("attention {} batch {} (k/v {}) lq {} lk {} heads {heads}x{dh}{fused}", gpu.operands_name(dtype), q.batch, k.batch, q.len, k.len)
    };
    crate::kernel::tuned(gpu, key, &tiles, CoopTile::label, |r, tile| {
        let scratch = |x: View| -> Result<Tensor> { r.empty(x.t.shape(), dtype) };
        let (sq, sk, sv) = (scratch(q)?, scratch(k)?, scratch(v)?);
        let out = r.empty(&[q.batch, q.len, heads * dh], dtype)?;
        run_coop(r, View { t: &sq, ..q }, View { t: &sk, ..k }, View { t: &sv, ..v }, &out, heads, dh, opts, tile)
    })
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
            // 65 queries: ragged, and enough for the wide and deep tiles of 16-row fragments
            // (4 × 16), so the quick rows name every tile the full ones do (`bench kernels
            // --full --filter` finds its ops by the quick names).
            ("attention self dh128", 2, 65, 65, 2, 128),
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
        // Where the cooperative kernel is the default, time the portable one beside it, and each
        // of its tiles (the tuner's candidates) where there are several.
        let mut paths = vec![(Impl::Auto, String::new())];
        if coop_applies(gpu, dtype, lq, dh, false) {
            paths.push((Impl::Portable, " (portable)".into()));
            let tiles = coop_tiles(gpu, dtype, lq, dh);
            if tiles.len() > 1 {
                paths.extend(tiles.into_iter().map(|t| (Impl::Coop(t), format!(" ({})", t.label()))));
            }
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

mod coop;

/// CPU reference (f64 accumulation), same layouts as [`attention`].
pub mod cpu;

#[cfg(test)]
mod tests;
