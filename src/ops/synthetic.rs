//! Seeded random weights generated straight into a kernel's packed layout, on the GPU
//! (`shaders/synthetic.wgsl`) or, on a software adapter, on the host. A full-size model built
//! with `--random-weights` then never lays its values out in PyTorch's order, packs them or (on
//! a GPU) copies them over the bus: the host only describes where each element goes.
//! [`Packing`] builds any packed weight this way, from a checkpoint or a generator.
//!
//! The values are [`Synthetic`]'s (what a synthetic
//! [`WeightStore`](crate::weights::WeightStore) hands out from `take`), so a weight generated
//! here equals the host packing of the same store's values: bit for bit in f32 where the
//! generator's mean is 0 (every weight of two or more axes; a device may fuse `mean + h·u`
//! otherwise), and to the f16 rounding of the device with f16 storage.
//!
//! The placement is the host packer's ([`pack`](super::pack)): row r of the packed layout holds
//! source elements `base + c·stride` for c < `cols`, with the row's `(base, stride)` from the
//! same function the host packing uses, at columns `col0 + c·col_step` of rows `row_len` long,
//! so several tensors (stacked projections) or interleaved column groups (GEGLU) share one
//! packed weight.

use anyhow::{bail, ensure, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::pack::{Placement, Src};
use crate::tensor::Tensor;
use crate::weights::Synthetic;
use crate::{DType, Gpu};

const SRC: &str = include_str!("../../shaders/synthetic.wgsl");

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    first: u32,
    cols: u32,
    row_len: u32,
    col0: u32,
    col_step: u32,
    key0: u32,
    key1: u32,
    mean: f32,
    half_width: f32,
    factor: f32,
}

/// The row table `(dst_row, base, stride)` of every mapped row, checked against the packed
/// weight's size and 32-bit indexing.
fn row_table(out_len: usize, place: &Placement, src_len: usize, row: &impl Fn(usize) -> Option<(usize, usize)>) -> Result<Vec<u32>> {
    let last_col = place.col0 + place.cols.saturating_sub(1) * place.col_step;
    ensure!(place.cols == 0 || (last_col < place.row_len && place.rows * place.row_len <= out_len), "packing: {place:?} reaches past its rows or the packed weight's {out_len} elements");
    ensure!(out_len <= u32::MAX as usize && src_len <= u32::MAX as usize, "packing: {out_len} packed or {src_len} source elements exceed 32-bit indexing");
    let mut table = Vec::new();
    for r in 0..place.rows {
        if let Some((base, stride)) = row(r) {
            ensure!(place.cols == 0 || base + (place.cols - 1) * stride < src_len, "packing: row {r} reads past the source's {src_len} elements");
            table.extend([r as u32, base as u32, stride as u32]);
        }
    }
    Ok(table)
}

/// Zeros every element of `out` (a float tensor): the packed layout's padding, before the fills.
pub fn zero(rec: &mut Recorder, out: &Tensor) -> Result<()> {
    ensure!(out.dtype().is_float(), "synthetic zero: {out:?} must be f32 or f16");
    let n = out.numel();
    ensure!(n <= u32::MAX as usize, "synthetic zero: {out:?} exceeds 32-bit indexing");
    let table = Tensor::from_u32(rec.gpu(), &[0], &[1])?;
    let p = Params { n: n as u32, first: 0, cols: 1, row_len: 0, col0: 0, col_step: 0, key0: 0, key1: 0, mean: 0.0, half_width: 0.0, factor: 0.0 };
    let k = Kernel::new("synthetic", SRC, out.dtype()).def("MODE", "0u");
    rec.dispatch(&k, &p, &[(&table).into(), out.into()], grid(rec.gpu(), n.div_ceil(256) as u32))
}

/// Writes `gen`'s elements of a source tensor of `src_len` elements, times `factor`, into
/// `out` (the packed weight, f32 or f16) as `place` and `row` say: row r (of `place.rows`)
/// gets source elements `base + c·stride`, c < `place.cols`, where `row(r)` is
/// `Some((base, stride))`; other rows and columns are left as they are.
pub fn fill_rows(rec: &mut Recorder, out: &Tensor, gen: &Synthetic, factor: f32, src_len: usize, place: &Placement, row: impl Fn(usize) -> Option<(usize, usize)>) -> Result<()> {
    ensure!(out.dtype().is_float(), "synthetic fill: {out:?} must be f32 or f16");
    let table = row_table(out.numel(), place, src_len, &row)?;
    let entries = table.len() / 3;
    if entries == 0 || place.cols == 0 {
        return Ok(());
    }
    let gpu = rec.gpu();
    let table = Tensor::from_u32(gpu, &table, &[table.len()])?;
    let k = Kernel::new("synthetic", SRC, out.dtype()).def("MODE", "1u");
    // One workgroup row per entry, in dispatches of at most the adapter's grid height.
    let max_rows = gpu.limits.max_compute_workgroups_per_dimension.max(1) as usize;
    let col_groups = place.cols.div_ceil(256);
    ensure!(col_groups <= max_rows, "synthetic fill: {} columns exceed one dispatch's grid", place.cols);
    for first in (0..entries).step_by(max_rows) {
        let p = Params {
            n: 0,
            first: first as u32,
            cols: place.cols as u32,
            row_len: place.row_len as u32,
            col0: place.col0 as u32,
            col_step: place.col_step as u32,
            key0: gen.key as u32,
            key1: (gen.key >> 32) as u32,
            mean: gen.mean,
            half_width: gen.half_width,
            factor,
        };
        rec.dispatch(&k, &p, &[(&table).into(), out.into()], [col_groups as u32, (entries - first).min(max_rows) as u32, 1])?;
    }
    Ok(())
}

/// A packed weight being filled, zeros at first: on the GPU from synthetic tensors (the fills
/// recorded into one command buffer), or on the host from any [`Src`] (filled in parallel and
/// uploaded at the end; on a software adapter the host is the device, and generating there is
/// faster).
pub struct Packing<'g> {
    gpu: &'g Gpu,
    /// What is packed, for errors (e.g. `conv weight [320, 4, 3, 3]`).
    what: String,
    shape: Vec<usize>,
    dtype: DType,
    on: On<'g>,
}

enum On<'g> {
    Gpu { out: Tensor, rec: Recorder<'g> },
    Host(Vec<f32>),
}

impl<'g> Packing<'g> {
    /// The packed weight `what` (named in errors) of `shape`, zeros.
    pub fn new(gpu: &'g Gpu, what: String, shape: &[usize], dtype: DType, on_gpu: bool) -> Result<Packing<'g>> {
        let on = if on_gpu {
            let out = Tensor::unpoisoned(gpu, shape, dtype)?;
            let mut rec = gpu.recorder();
            zero(&mut rec, &out)?;
            On::Gpu { out, rec }
        } else {
            On::Host(vec![0f32; shape.iter().product()])
        };
        Ok(Packing { gpu, what, shape: shape.to_vec(), dtype, on })
    }

    /// `factor` times the elements of `src` (a tensor of `src_len` elements) into the packed
    /// weight, as [`pack::fill_rows`](crate::ops::pack::fill_rows) places them.
    pub fn fill_rows(&mut self, src: Src<'_>, factor: f32, src_len: usize, place: &Placement, row: impl Fn(usize) -> Option<(usize, usize)> + Sync) -> Result<()> {
        if let Some(n) = src.elements() {
            ensure!(n == src_len, "{}: {n} values where its shape needs {src_len}", self.what);
        }
        match (&mut self.on, src) {
            (On::Gpu { out, rec }, Src::Synthetic(gen)) => fill_rows(rec, out, gen, factor, src_len, place, row),
            (On::Gpu { .. }, _) => bail!("internal: only synthetic weights are generated on the GPU"),
            (On::Host(out), src) => {
                row_table(out.len(), place, src_len, &row)?;
                crate::ops::pack::fill_rows(out, place, src, factor, row);
                Ok(())
            }
        }
    }

    /// The packed weight, on the GPU.
    pub fn finish(self) -> Result<Tensor> {
        match self.on {
            On::Gpu { out, rec } => {
                rec.submit();
                Ok(out)
            }
            On::Host(v) => Tensor::from_f32(self.gpu, &v, &self.shape, self.dtype),
        }
    }
}

/// CPU reference.
pub mod cpu {
    use super::Placement;
    use crate::weights::Synthetic;

    /// [`fill_rows`](super::fill_rows) on the host: the same elements from the host generator.
    pub fn fill_rows(out: &mut [f32], gen: &Synthetic, factor: f32, place: &Placement, row: impl Fn(usize) -> Option<(usize, usize)>) {
        for r in 0..place.rows {
            if let Some((base, stride)) = row(r) {
                for c in 0..place.cols {
                    out[r * place.row_len + place.col0 + c * place.col_step] = gen.value((base + c * stride) as u32) * factor;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_stored_exactly, fresh_seed, test_gpu, translate_check, Rng};
    use crate::DType;

    /// Zero then fills of random placements (interleaved column groups, skipped rows, a
    /// factor, awkward sizes) into a NaN-poisoned tensor, against the host: f32 exactly (the
    /// generator's mean is 0 here, as for every weight it makes), f16 to the device's rounding.
    #[test]
    fn fills_match_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for (rows, cols, groups) in [(1usize, 1usize, 1usize), (7, 33, 2), (77, 5, 4), (33, 130, 1)] {
            let row_len = cols * groups + 3;
            let stride = rows + 2;
            let src_len = stride * cols + rows;
            for dt in gpu.dtypes() {
                let out = Tensor::empty(&gpu, &[rows, row_len], dt).unwrap();
                let mut want = vec![0f32; rows * row_len];
                let mut rec = gpu.recorder();
                zero(&mut rec, &out).unwrap();
                for g in 0..groups {
                    let gen = Synthetic { key: rng.next_u64(), mean: 0.0, half_width: 0.5 + rng.uniform() };
                    let factor = if g == 1 { 0.7 } else { 1.0 };
                    let place = Placement { rows, row_len, col0: g, col_step: groups, cols };
                    let row = |r: usize| (r % 5 != 3).then_some((r, stride));
                    fill_rows(&mut rec, &out, &gen, factor, src_len, &place, row).unwrap();
                    cpu::fill_rows(&mut want, &gen, factor, &place, row);
                }
                rec.submit();
                let got = out.to_f32(&gpu).unwrap();
                assert_stored_exactly(&format!("seed {seed}: {rows}×{cols} in {groups} groups, {}", dt.name()), &got, &want, dt);
            }
        }
    }

    /// A placement past the packed weight, a row past the source or a source of the wrong
    /// length is refused on the host.
    #[test]
    fn out_of_range_placements_are_refused() {
        let gpu = test_gpu();
        let out = Tensor::empty(&gpu, &[4, 8], DType::F32).unwrap();
        let gen = Synthetic { key: 1, mean: 0.0, half_width: 1.0 };
        let mut rec = gpu.recorder();
        let e = fill_rows(&mut rec, &out, &gen, 1.0, 64, &Placement { rows: 4, row_len: 8, col0: 1, col_step: 1, cols: 8 }, |r| Some((r, 1))).unwrap_err();
        assert!(e.to_string().contains("reaches past"), "{e}");
        let e = fill_rows(&mut rec, &out, &gen, 1.0, 10, &Placement::rows(4, 8, 8), |r| Some((r, 2))).unwrap_err();
        assert!(e.to_string().contains("reads past"), "{e}");
        // A source of the wrong length is refused, naming the weight.
        let e = crate::ops::conv::ConvWeight::from_torch(&gpu, &[0.5; 60], &[7, 5, 3, 3], None, DType::F32).err().unwrap().to_string();
        assert!(e.contains("conv weight [7, 5, 3, 3]: 60 values where its shape needs 315"), "{e}");
    }

    #[test]
    fn kernels_translate() {
        for (mode, dt) in [(0u32, DType::F32), (0, DType::F16), (1, DType::F32), (1, DType::F16)] {
            translate_check(&Kernel::new("synthetic", SRC, dt).def("MODE", format!("{mode}u")));
        }
    }
}
