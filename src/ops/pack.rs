//! Host-side packing of weights into the kernels' layouts. Every layout the loaders build is
//! rows of gathers at a stride (a transpose, possibly of a sub-kernel): row r of the packed
//! weight holds source elements `base + c·stride` (c < `cols`, with `(base, stride)` from a
//! function of r), placed at columns `col0 + c·col_step`. One routine, parallel over rows,
//! fills them all from any [`Src`]: a checkpoint's elements as stored, host values, or a
//! synthetic generator (whose GPU twin is [`ops::synthetic`](super::synthetic)).

use crate::weights::{FileDtype, RawTensor, Synthetic};

/// What a packed weight is filled from: a PyTorch tensor's elements, row-major.
#[derive(Copy, Clone)]
pub enum Src<'a> {
    /// Values on the host.
    Values(&'a [f32]),
    /// A checkpoint's elements as stored (f32, f16 or bf16, little-endian), read straight from
    /// the mapped file: no f32 copy of the whole tensor first.
    Stored(&'a RawTensor<'a>),
    /// A synthetic store's generator.
    Synthetic(&'a Synthetic),
}

impl Src<'_> {
    /// Elements of the source tensor, where known (a generator has any number).
    pub fn elements(&self) -> Option<usize> {
        match self {
            Src::Values(v) => Some(v.len()),
            Src::Stored(r) => Some(r.data.len() / crate::weights::file_elem_size(r.dtype)),
            Src::Synthetic(_) => None,
        }
    }

    /// Whether a checkpoint tensor of `dtype` can be a [`Src::Stored`] (other dtypes are
    /// converted to f32 values first).
    pub fn reads_stored(dtype: FileDtype) -> bool {
        matches!(dtype, FileDtype::F32 | FileDtype::F16 | FileDtype::BF16)
    }
}

/// Element i of a source, for the fill loop (monomorphised per source kind).
trait Source: Sync {
    /// Columns per block when a row's elements are gathered: a source read from memory at a
    /// stride gains from blocks (one block's reads touch that many cache lines, which the next
    /// rows, at nearby bases, hit again); one computed per element gains nothing.
    const COLUMN_BLOCK: usize;
    fn value(&self, i: usize) -> f32;
}

impl Source for [f32] {
    const COLUMN_BLOCK: usize = 16;
    fn value(&self, i: usize) -> f32 {
        self[i]
    }
}

// The bit-twiddling conversions (`to_f32_const`) inline into the fill loop; `to_f32` checks
// the CPU's features on every call.
impl Source for [half::f16] {
    const COLUMN_BLOCK: usize = 16;
    fn value(&self, i: usize) -> f32 {
        self[i].to_f32_const()
    }
}

impl Source for [half::bf16] {
    const COLUMN_BLOCK: usize = 16;
    fn value(&self, i: usize) -> f32 {
        self[i].to_f32_const()
    }
}

/// Elements as stored, assembled from their little-endian bytes (data not aligned to its type).
impl Source for RawTensor<'_> {
    const COLUMN_BLOCK: usize = 16;
    fn value(&self, i: usize) -> f32 {
        let b = &self.data;
        match self.dtype {
            FileDtype::F16 => half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32_const(),
            FileDtype::BF16 => half::bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32_const(),
            FileDtype::F32 => f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]),
            d => unreachable!("a stored source is f32, f16 or bf16 (Src::reads_stored), not {d:?}"),
        }
    }
}

impl Source for Synthetic {
    const COLUMN_BLOCK: usize = usize::MAX;
    fn value(&self, i: usize) -> f32 {
        Synthetic::value(self, i as u32)
    }
}

/// Where one source tensor's elements go in a packed weight of `rows` rows of `row_len`:
/// columns `col0 + c·col_step` for c < `cols` of every row the row function maps.
#[derive(Copy, Clone, Debug)]
pub struct Placement {
    pub rows: usize,
    pub row_len: usize,
    pub col0: usize,
    pub col_step: usize,
    pub cols: usize,
}

impl Placement {
    /// Rows of `row_len` filled from column 0, one column per source step (a plain packing).
    pub fn rows(rows: usize, row_len: usize, cols: usize) -> Placement {
        Placement { rows, row_len, col0: 0, col_step: 1, cols }
    }
}

/// Fills `out` (the packed weight, at least `place.rows` rows of `place.row_len`) with
/// `out[r][col0 + c·col_step] = factor · src[base + c·stride]` for c < `cols` where `row(r)`
/// gives `Some((base, stride))`; rows given `None` and other columns are left as they are
/// (the callers' zero padding, or another source's columns).
pub fn fill_rows(out: &mut [f32], place: &Placement, src: Src<'_>, factor: f32, row: impl Fn(usize) -> Option<(usize, usize)> + Sync) {
    match src {
        Src::Values(v) => fill(out, place, v, factor, row),
        Src::Stored(r) => {
            assert!(Src::reads_stored(r.dtype), "{:?} tensors are converted to f32 values before packing", r.dtype);
            // Aligned elements (as in PyTorch's files, and usually in safetensors files) are read
            // as typed slices: no per-element byte assembly and bounds checks.
            let data: &[u8] = &r.data;
            let typed = cfg!(target_endian = "little");
            match (r.dtype, typed) {
                (FileDtype::F32, true) if castable::<f32>(data) => fill(out, place, bytemuck::cast_slice::<u8, f32>(data), factor, row),
                (FileDtype::F16, true) if castable::<half::f16>(data) => fill(out, place, bytemuck::cast_slice::<u8, half::f16>(data), factor, row),
                (FileDtype::BF16, true) if castable::<half::bf16>(data) => fill(out, place, bytemuck::cast_slice::<u8, half::bf16>(data), factor, row),
                _ => fill(out, place, r, factor, row),
            }
        }
        Src::Synthetic(g) => fill(out, place, g, factor, row),
    }
}

/// Whether `data` can be viewed as a slice of `T` (aligned, whole elements).
fn castable<T: bytemuck::Pod>(data: &[u8]) -> bool {
    bytemuck::try_cast_slice::<u8, T>(data).is_ok()
}

fn fill<S: Source + ?Sized>(out: &mut [f32], place: &Placement, src: &S, factor: f32, row: impl Fn(usize) -> Option<(usize, usize)> + Sync) {
    let Placement { rows, row_len, col0, col_step, cols } = *place;
    assert!(row_len > 0 && (cols == 0 || col0 + (cols - 1) * col_step < row_len) && rows * row_len <= out.len());
    let fill = |first: usize, part: &mut [f32]| {
        let n = part.len() / row_len;
        for c0 in (0..cols).step_by(S::COLUMN_BLOCK.min(cols.max(1))) {
            let c1 = c0.saturating_add(S::COLUMN_BLOCK).min(cols);
            for i in 0..n {
                let Some((base, stride)) = row(first + i) else { continue };
                let dst = &mut part[i * row_len..][..row_len];
                if col_step == 1 {
                    // Contiguous: a loop the compiler vectorises where the source allows.
                    dst[col0 + c0..col0 + c1].iter_mut().zip(c0..c1).for_each(|(x, c)| *x = factor * src.value(base + c * stride));
                } else {
                    (c0..c1).for_each(|c| dst[col0 + c * col_step] = factor * src.value(base + c * stride));
                }
            }
        }
    };
    let out = &mut out[..rows * row_len];
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(8);
    if threads == 1 || out.len() < 1 << 16 {
        fill(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(per * row_len).enumerate() {
            let fill = &fill;
            s.spawn(move || fill(t * per, part));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{fill_rows, Placement, Src};
    use crate::weights::{FileDtype, RawTensor, Synthetic};

    /// Against the plain loop, at sizes on both sides of the parallel threshold, with padding
    /// rows, interleaved column groups and other columns left untouched, from host values, from
    /// stored f32, f16 and bf16 elements (aligned or not) and from a generator.
    #[test]
    fn fills_match_the_plain_loop() {
        for (rows, cols, groups) in [(1usize, 1usize, 1usize), (7, 33, 1), (77, 5, 2), (600, 130, 1), (1031, 77, 3)] {
            let row_len = cols * groups + 3;
            let stride = rows + 3;
            // Every value exact in f16 and bf16: multiples of 0.5 below 64 (bf16 has 8 significant bits).
            let src: Vec<f32> = (0..stride * cols + rows).map(|i| (i % 139) as f32 * 0.5 - 7.0).collect();
            let gen = Synthetic { key: 99, mean: 0.0, half_width: 1.0 };
            // Stored as f32, f16 and bf16 (every value exact in each), each aligned (read as a typed
            // slice) and one byte off (read from its bytes).
            let as_bytes: [(FileDtype, Vec<u8>); 3] = [
                (FileDtype::F32, src.iter().flat_map(|&v| v.to_le_bytes()).collect()),
                (FileDtype::F16, src.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()),
                (FileDtype::BF16, src.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()),
            ];
            let padded: Vec<Vec<u8>> = as_bytes.iter().map(|(_, b)| [&[0u8][..], b].concat()).collect();
            let stored: Vec<RawTensor> = as_bytes
                .iter()
                .zip(&padded)
                .flat_map(|((dtype, b), p)| [RawTensor { dtype: *dtype, shape: &[], data: b[..].into() }, RawTensor { dtype: *dtype, shape: &[], data: p[1..].into() }])
                .collect();
            let row = |r: usize| if r % 5 == 4 { None } else { Some((r, stride)) };
            for g in 0..groups {
                let place = Placement { rows, row_len, col0: g, col_step: groups, cols };
                let mut got = vec![-1.0f32; rows * row_len];
                let mut got_gen = got.clone();
                let mut got_stored = vec![got.clone(); stored.len()];
                fill_rows(&mut got, &place, Src::Values(&src), 0.5, row);
                for (o, r) in got_stored.iter_mut().zip(&stored) {
                    fill_rows(o, &place, Src::Stored(r), 0.5, row);
                }
                fill_rows(&mut got_gen, &place, Src::Synthetic(&gen), 1.0, row);
                for r in 0..rows {
                    for j in 0..row_len {
                        let c = (j >= g && (j - g).is_multiple_of(groups)).then(|| (j - g) / groups).filter(|&c| c < cols);
                        let (want, want_gen) = match (row(r), c) {
                            (Some((b, s)), Some(c)) => (0.5 * src[b + c * s], gen.value((b + c * s) as u32)),
                            _ => (-1.0, -1.0),
                        };
                        assert_eq!(got[r * row_len + j], want, "rows {rows} cols {cols} group {g}: [{r}][{j}]");
                        for (o, st) in got_stored.iter().zip(&stored) {
                            assert_eq!(o[r * row_len + j], want, "stored {:?} at {:p}, rows {rows} cols {cols} group {g}: [{r}][{j}]", st.dtype, st.data.as_ptr());
                        }
                        assert_eq!(got_gen[r * row_len + j], want_gen, "generated, rows {rows} cols {cols} group {g}: [{r}][{j}]");
                    }
                }
            }
        }
    }
}
