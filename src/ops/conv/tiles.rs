//! The kernels' tiles: the cooperative kernel's configuration on an adapter, and the candidate
//! tiles of a problem that tuning times.

use super::*;
use crate::ops::coop_gemm::CoopGemm;

/// The cooperative kernel's tile on one adapter: the GEMM core's, two or four blocks wide.
pub(super) type CoopCfg = CoopGemm;

/// Workgroup memory of the cooperative kernel (bytes) with either load: the largest,
/// [`coop_smem_for`] a normalised one (a tile is chosen before its load).
pub(super) fn coop_smem(c: CoopCfg) -> u32 {
    coop_smem_for(c, true)
}

/// Workgroup memory of the cooperative kernel (bytes): the core's staged tiles, each subgroup's
/// FS×FS f32 scratch for the epilogue and the rows' geometry, and where a GroupNorm is applied
/// on load (`normed`), the rows' segments (`conv_x_norm.wgsl`).
pub(super) fn coop_smem_for(c: CoopCfg, normed: bool) -> u32 {
    c.staged_bytes() + c.nsg * c.fs * c.fs * 4 + c.bm() * 16 + if normed { c.bm() * 4 } else { 0 }
}

/// Whether the core's loads divide evenly among the invocations, and so does the epilogue's
/// copy of a subgroup's FS×FS scratch among its lanes (`per` consecutive elements of one row).
pub(super) fn coop_divides(c: CoopCfg) -> bool {
    let per = c.fs * c.fs / c.sg.max(1);
    c.loads_divide() && (c.fs * c.fs).is_multiple_of(c.sg) && per <= c.fs && c.fs.is_multiple_of(per)
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
pub(super) fn coop_config(gpu: &Gpu, dtype: DType, cout: usize) -> Result<CoopCfg, String> {
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
    if !gpu.workgroup_fits(8 * sg) {
        return Err(format!("a workgroup of {} invocations exceeds the adapter's limits (invocations per workgroup, workgroup width)", 8 * sg));
    }
    let smem = gpu.limits.max_compute_workgroup_storage_size;
    let (narrow, wide) = (CoopCfg::new(fs, sg, 2), CoopCfg::new(fs, sg, 4));
    let cfg = if cout > 8 * fs as usize && coop_smem(wide) <= smem && coop_divides(wide) { wide } else { narrow };
    if !coop_divides(cfg) {
        return Err(format!("{fs}×{fs} fragments with {sg}-wide subgroups do not split the kernel's tiles evenly"));
    }
    if coop_smem(cfg) > smem {
        return Err(format!("the kernel needs {} bytes of workgroup memory, the adapter has {smem}", coop_smem(cfg)));
    }
    Ok(cfg)
}

/// A kernel and its tile, as one launch runs it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Tile {
    Coop(CoopCfg),
    /// The portable kernel with BN output channels per workgroup (16, 32 or 64).
    Tiled { bn: u32 },
}

impl Tile {
    /// Output rows × channels per workgroup.
    pub(super) fn block(self) -> (u32, u32) {
        match self {
            Tile::Coop(c) => (c.bm(), c.bn),
            // 256 threads of 4 × 4 outputs.
            Tile::Tiled { bn } => ((256 / (bn / 4)) * 4, bn),
        }
    }

    pub(super) fn label(self) -> String {
        let (bm, bn) = self.block();
        match self {
            Tile::Coop(c) => format!(
                "coop {bm}x{bn} on {} subgroups{}{}",
                c.nsg,
                if c.prefetch { "" } else { ", loads not overlapped" },
                if c.kstep == 2 { String::new() } else { format!(", K step {}", c.bk()) }
            ),
            Tile::Tiled { .. } => format!("tiled {bm}x{bn}"),
        }
    }
}

/// The portable kernel's tile width: the narrowest that covers Cout, at most 64, of those whose
/// workgroup memory the adapter has. A narrow tile is a tall one (BM = 4096 / BN rows), so 16
/// wide takes the most (21 KiB in f32, 22 with a norm on load, over the 16 KiB some adapters
/// give); 64 wide fits any.
pub(super) fn tiled_bn(gpu: &Gpu, dtype: DType, cout: usize) -> u32 {
    let narrowest = if cout <= 16 {
        16
    } else if cout <= 32 {
        32
    } else {
        64
    };
    [narrowest, 32, 64].into_iter().filter(|&bn| bn >= narrowest).find(|&bn| tiled_smem(bn, dtype) <= gpu.limits.max_compute_workgroup_storage_size).unwrap_or(64)
}

/// The portable kernel's workgroup memory at width `bn` (shaders/conv.wgsl): the input tile
/// [BM][16] in the storage type, the weight tile [16][BN] in f32, the rows' geometry (16 B a row)
/// and, where a GroupNorm is applied as it loads, its segment per row (conv_x_norm.wgsl).
pub(super) fn tiled_smem(bn: u32, dtype: DType) -> u32 {
    let bm = 4096 / bn;
    bm * 16 * dtype.size() as u32 + 16 * bn * 4 + bm * 16 + bm * 4
}

/// `Auto`'s candidates, the rule's choice first: the cooperative kernel where it runs and
/// Cout ≥ 64 (narrow layers, Cout 3 or 4 at the networks' ends, waste most of its tile), in
/// its 8-subgroup tile, on 4 subgroups, one output block narrower (on 8 and 4), the first two
/// with their loads not overlapped, and the 4-subgroup tiles with K steps of 64 channels (loads
/// not overlapped: a step's loads fill twice the registers), where they fit the workgroup
/// memory; else the portable kernel at its width and half of it. Every candidate adds each
/// output's products in the same order (fragment steps in K order, taps in order), so the
/// tuner's choice changes no value.
pub(super) fn auto_tiles(gpu: &Gpu, dtype: DType, cout: usize) -> Vec<Tile> {
    let Some(cfg) = coop_config(gpu, dtype, cout).ok().filter(|_| cout >= 64) else {
        let bn = tiled_bn(gpu, dtype, cout);
        let mut v = vec![Tile::Tiled { bn }];
        if bn > 16 && tiled_smem(bn / 2, dtype) <= gpu.limits.max_compute_workgroup_storage_size {
            v.push(Tile::Tiled { bn: bn / 2 });
        }
        return v;
    };
    let narrow = CoopCfg { bn: 8 * cfg.fs, ..cfg };
    let mut v = vec![cfg];
    let deep = |c: CoopCfg| c.halved().single_buffered().k64();
    for c in [cfg.halved(), narrow, narrow.halved(), cfg.single_buffered(), cfg.halved().single_buffered(), deep(cfg), deep(narrow)] {
        if coop_divides(c) && coop_smem(c) <= gpu.limits.max_compute_workgroup_storage_size && !v.contains(&c) {
            v.push(c);
        }
    }
    v.into_iter().map(Tile::Coop).collect()
}
