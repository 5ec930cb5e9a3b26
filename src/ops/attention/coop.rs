//! The cooperative-matrix attention kernel (`shaders/attention_coop.wgsl`): which adapters and
//! calls it takes, its constants, and its launch.

use anyhow::Result;

use super::{attention_flops, AttnOpts, View};
use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::{DType, Tensor};

/// The cooperative kernel with its Q loader: fragments straight from f16 memory, or staged through
/// workgroup memory from f32 (see the shader's header).
const COOP_SRC_DIRECT: &str = concat!(include_str!("../../../shaders/attention_coop.wgsl"), include_str!("../../../shaders/attention_coop_q_direct.wgsl"));
const COOP_SRC_STAGED: &str = concat!(include_str!("../../../shaders/attention_coop.wgsl"), include_str!("../../../shaders/attention_coop_q_staged.wgsl"));

/// The cooperative kernel's tiles: QS strips of FS query rows on 4·QS subgroups, K staged DC
/// channels and V VK keys at a time. All give the same bits (see the shader's header; DC and VK
/// only group the products into stages, in the same order); which is faster depends on the
/// adapter and the shape, so [`super::attention`] times them ([`crate::gpu::tune`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CoopTile {
    /// 2·FS rows on 8 subgroups; K 128 channels (64 where dh is not a multiple of 128) and, past
    /// dh 128, V 16 keys per stage (the rule's choice).
    Narrow,
    /// 4·FS rows on 16 subgroups: each K and V tile staged once for twice the rows.
    Wide,
    /// The narrow rows with K 256 channels and V 32 keys per stage, for dh 256 and 512: half the
    /// stages, so half the barriers, in all but 48 KiB of workgroup memory.
    Deep,
}

impl CoopTile {
    /// Query strips of FS rows (the shader's QS).
    pub(super) fn strips(self) -> usize {
        match self {
            CoopTile::Narrow | CoopTile::Deep => 2,
            CoopTile::Wide => 4,
        }
    }

    pub(super) fn label(self) -> String {
        let deep = if self == CoopTile::Deep { ", deep stages" } else { "" };
        format!("{} query strips on {} subgroups{deep}", self.strips(), 4 * self.strips())
    }
}

/// Constants of the cooperative kernel for fragments of `fs`, head width `dh` and tile `tile`:
/// (DC, VK, KVF, workgroup bytes). Its tile is BQ = QS·FS queries × BK = 4·FS keys; `staged_q`
/// (f32 storage) stages Q's BQ × DC chunk as f16 after K's BK × DC in `kv`, with DC 64 on the
/// wide tile so that it fits 48 KiB.
pub(super) fn coop_consts(fs: usize, dh: usize, staged_q: bool, tile: CoopTile) -> (usize, usize, usize, usize) {
    let (bq, bk) = (tile.strips() * fs, 4 * fs);
    let dc = match tile {
        CoopTile::Deep => dh.min(256),
        CoopTile::Wide if staged_q => 64,
        _ if dh.is_multiple_of(128) => 128,
        _ => 64,
    };
    let vk = (if dh <= 128 {
        64
    } else if tile == CoopTile::Deep {
        32
    } else {
        16
    })
    .min(bk);
    let qk = bk * (dc + 8) + if staged_q { bq * (dc + 8) } else { 0 };
    let kvf = qk.max(vk * (dh + 8));
    // kv, the scores, P, a factor per row, the rescale flag.
    let bytes = 2 * kvf + 4 * bq * (bk + 4) + 2 * bq * (bk + 8) + 4 * bq + 4;
    (dc, vk, kvf, bytes)
}

/// The widest head for fragments of `fs`: each subgroup keeps DH / (4·FS) output fragments, at
/// most 8 (512 at 16, 256 at 8).
pub(super) fn coop_max_dh(fs: usize) -> usize {
    32 * fs
}

/// The cooperative kernel's fragment size on this adapter: f16×f16→f32 fragments of 16 with
/// 32-wide subgroups, or of 8 with 8-wide ones (its subgroups must hold QS·FS·FS/2 invocations,
/// one per 8 scores of a BQ × BK tile), with the invocations and workgroup memory its narrow
/// tile needs.
pub(super) fn coop_fs(gpu: &crate::Gpu) -> Option<usize> {
    let fs = gpu.coop_fragment()? as usize;
    let fits = gpu.fixed_subgroup_size()? as usize == fs * fs / 8 && tile_fits(gpu, fs, coop_max_dh(fs), false, CoopTile::Narrow);
    fits.then_some(fs)
}

/// Whether the adapter has the invocations and workgroup memory for `tile` at this head width.
fn tile_fits(gpu: &crate::Gpu, fs: usize, dh: usize, staged_q: bool, tile: CoopTile) -> bool {
    let invocations = 4 * tile.strips() * fs * fs / 8;
    gpu.workgroup_fits(invocations as u32)
        && gpu.limits.max_compute_workgroup_storage_size as usize >= coop_consts(fs, dh, staged_q, tile).3
}

/// The tiles that can take a call [`coop_refusal`] accepts, the narrow one first: the wide one
/// where the adapter has room for it and there are queries to fill it, the deep one for heads of
/// 256 and 512 where it has room.
pub(super) fn coop_tiles(gpu: &crate::Gpu, dtype: DType, lq: usize, dh: usize) -> Vec<CoopTile> {
    let Some(fs) = coop_fs(gpu) else {
        return vec![CoopTile::Narrow];
    };
    let staged_q = dtype == DType::F32;
    let wide = lq >= CoopTile::Wide.strips() * fs && tile_fits(gpu, fs, dh, staged_q, CoopTile::Wide);
    let deep = dh >= 256 && tile_fits(gpu, fs, dh, staged_q, CoopTile::Deep);
    let mut tiles = vec![CoopTile::Narrow];
    tiles.extend(wide.then_some(CoopTile::Wide));
    tiles.extend(deep.then_some(CoopTile::Deep));
    tiles
}

/// Whether the adapter can run the cooperative-matrix kernel at all (see `coop_fs`).
pub fn coop_available(gpu: &crate::Gpu) -> bool {
    coop_fs(gpu).is_some()
}

/// Why the cooperative kernel cannot take this call, or `None` when it can: f16 storage (or f32
/// where `--f16-operands` allows), no causal mask, dh 64, 128, 256 or 512 (up to 256 with 8×8
/// fragments), at least 2·FS queries.
pub(super) fn coop_refusal(gpu: &crate::Gpu, dtype: DType, lq: usize, dh: usize, causal: bool) -> Option<String> {
    let Some(fs) = coop_fs(gpu) else {
        return Some("the adapter lacks f16 cooperative matrices with subgroups to match (16×16 with 32 lanes, 8×8 with 8)".into());
    };
    let staged_bytes = coop_consts(fs, dh, true, CoopTile::Narrow).3;
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

/// Whether [`attention`](super::attention) takes the cooperative-matrix kernel for these sizes on this adapter.
pub fn coop_applies(gpu: &crate::Gpu, dtype: DType, lq: usize, dh: usize, causal: bool) -> bool {
    coop_refusal(gpu, dtype, lq, dh, causal).is_none()
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct CoopParams {
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
pub(super) fn coop_kernel(fs: usize, dh: usize, ldq: usize, dtype: DType, tile: CoopTile) -> Kernel {
    let staged_q = dtype == DType::F32;
    let (dc, vk, kvf, _) = coop_consts(fs, dh, staged_q, tile);
    Kernel::new("attention_coop", if staged_q { COOP_SRC_STAGED } else { COOP_SRC_DIRECT }, dtype)
        .with_coop(fs as u32)
        .def("SG", format!("{}u", fs * fs / 8))
        .def("QS", format!("{}u", tile.strips()))
        .def("DH", format!("{dh}u"))
        .def("NO", format!("{}u", dh / (4 * fs)))
        .def("DC", format!("{dc}u"))
        .def("VK", format!("{vk}u"))
        .def("KVF", format!("{kvf}u"))
        .def("LDQ", format!("{ldq}u"))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_coop(rec: &mut Recorder, q: View, k: View, v: View, out: &Tensor, heads: usize, dh: usize, opts: AttnOpts, tile: CoopTile) -> Result<()> {
    let gpu = rec.gpu();
    let fs = coop_fs(gpu).ok_or_else(|| anyhow::anyhow!("internal: the cooperative attention was chosen on an adapter without it"))?;
    let (b, lq, lk) = (q.batch, q.len, k.len);
    if lq < tile.strips() * fs || !tile_fits(gpu, fs, dh, q.t.dtype() == DType::F32, tile) {
        anyhow::bail!("attention: the cooperative kernel's {} do not fit {lq} queries of head width {dh} on this adapter", tile.label());
    }
    let nqt = lq.div_ceil(tile.strips() * fs);
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
    rec.dispatch(&coop_kernel(fs, dh, q.ld, q.t.dtype(), tile), &p, &[q.t.into(), k.t.into(), v.t.into(), out.into()], grid(gpu, groups as u32))?;
    rec.add_flops(attention_flops(b * heads, lq, lk, dh));
    Ok(())
}

