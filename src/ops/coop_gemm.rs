//! The cooperative-matrix GEMM core shared by the matmul and the convolution
//! (`shaders/coop_gemm.wgsl`): its tile on one adapter, what it needs of the adapter, and the
//! constants it takes. Each op adds its own side: the epilogue's workgroup memory and how its
//! lanes copy it out (`ops::matmul`, `ops::conv`).

use crate::kernel::Kernel;

/// The core's tile: fragments of FS, subgroups of SG lanes, NSG subgroups (8, or 4 for grids
/// too small to fill a GPU) each owning a 4·FS square output block, BN output columns (two or
/// four blocks); `prefetch`: the next K step's global loads in flight during this step's
/// multiplies (else loaded and staged in turn: fewer live registers, which a standalone probe
/// found faster on an H200 at 128 × 256, gpu-facts); `kstep`: fragments per K step (2, or
/// [`CoopGemm::K64`] / FS for 64 channels: half the barriers per product, a larger staged tile).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CoopGemm {
    pub fs: u32,
    pub sg: u32,
    pub nsg: u32,
    pub bn: u32,
    pub prefetch: bool,
    pub kstep: u32,
}

impl CoopGemm {
    /// The deep K step, in channels.
    pub const K64: u32 = 64;

    /// On 8 subgroups, `blocks` output blocks wide, loads overlapped, K steps of two fragments.
    pub fn new(fs: u32, sg: u32, blocks: u32) -> CoopGemm {
        CoopGemm { fs, sg, nsg: 8, bn: blocks * 4 * fs, prefetch: true, kstep: 2 }
    }

    /// Output rows per workgroup.
    pub fn bm(self) -> u32 {
        self.nsg / self.blocks_wide().max(1) * 4 * self.fs
    }

    /// The K step.
    pub fn bk(self) -> u32 {
        self.kstep * self.fs
    }

    fn blocks_wide(self) -> u32 {
        self.bn / (4 * self.fs)
    }

    pub fn invocations(self) -> u32 {
        self.nsg * self.sg
    }

    /// Workgroup memory of the staged tiles (bytes): As [BM][BK + 8] and Bs [BK][BN + 8] in f16.
    pub fn staged_bytes(self) -> u32 {
        self.bm() * (self.bk() + 8) * 2 + self.bk() * (self.bn + 8) * 2
    }

    /// Whether the subgroups tile the block grid and the tiles' loads (four f16 each) divide
    /// evenly among the invocations, each invocation keeping the same columns at every step.
    pub fn loads_divide(self) -> bool {
        let (ni, wide) = (self.invocations(), self.blocks_wide());
        let (a_row, b_row) = (self.bk() / 4, self.bn / 4);
        wide > 0
            && self.nsg.is_multiple_of(wide)
            && ni.is_multiple_of(a_row)
            && self.bm().is_multiple_of(ni / a_row)
            && ni.is_multiple_of(b_row)
            && self.bk().is_multiple_of(ni / b_row)
    }

    /// The same columns on 4 subgroups: half the rows per workgroup, twice the workgroups.
    pub fn halved(self) -> CoopGemm {
        CoopGemm { nsg: 4, ..self }
    }

    /// The same tile, each K step loaded and staged in turn.
    pub fn single_buffered(self) -> CoopGemm {
        CoopGemm { prefetch: false, ..self }
    }

    /// The same tile with K steps of [`CoopGemm::K64`] channels. Each accumulator still adds
    /// its fragment products in K order, one fragment step after the other, so the values are
    /// those of the two-fragment step (where K is not a multiple of 64, the last step's extra
    /// fragments are zeros on both sides and add exact zeros).
    pub fn k64(self) -> CoopGemm {
        CoopGemm { kstep: Self::K64 / self.fs, ..self }
    }

    /// `k` (an op's side of the core, with the core appended) specialised to this tile.
    pub fn specialise(self, k: Kernel) -> Kernel {
        k.with_coop(self.fs)
            .def("SG", format!("{}u", self.sg))
            .def("NSG", format!("{}u", self.nsg))
            .def("BN", format!("{}u", self.bn))
            .def("PREFETCH", self.prefetch)
            .def("KSTEP", format!("{}u", self.kstep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_and_their_loads() {
        let t = CoopGemm::new(16, 32, 4);
        assert_eq!((t.bm(), t.bn, t.bk(), t.invocations()), (128, 256, 32, 256));
        assert_eq!(t.staged_bytes(), 128 * 40 * 2 + 32 * 264 * 2);
        assert_eq!(CoopGemm::new(16, 32, 2).bm(), 256);
        assert_eq!(t.halved().bm(), 64);
        assert_eq!((t.k64().bk(), CoopGemm::new(8, 8, 2).k64().bk()), (64, 64));
        assert_eq!(t.halved().k64().staged_bytes(), 64 * 72 * 2 + 64 * 264 * 2);
        for t in [t, t.halved(), CoopGemm::new(16, 32, 2), CoopGemm::new(8, 8, 4), CoopGemm::new(8, 8, 2).halved(), CoopGemm::new(8, 32, 4), t.halved().k64(), CoopGemm::new(8, 8, 2).halved().k64()] {
            assert!(t.loads_divide(), "{t:?}");
        }
        // Subgroups too wide for 8×8 fragments' tile leave invocations without loads.
        assert!(!CoopGemm::new(8, 64, 4).loads_divide());
        // A grid of blocks the subgroups cannot cover.
        assert!(!CoopGemm { nsg: 6, ..t }.loads_divide());
    }
}
