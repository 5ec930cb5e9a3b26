//! Convolution weights, repacked once from PyTorch's layout for the implicit-GEMM kernels.

use anyhow::{bail, ensure, Result};

use super::*;

/// Packed K rows are padded to a multiple of this (the largest K step of any conv kernel: the
/// cooperative tiles' 64-channel step), so the kernels' weight loads need no bounds check.
const CIN_ALIGN: usize = crate::ops::coop_gemm::CoopGemm::K64 as usize;
/// Packed weight rows are padded to a multiple of this (vector loads along Cout).
const COUT_ALIGN: usize = 8;

/// What a [`ConvWeight`] was made from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// `nn.Conv2d`, PyTorch weight `[Cout, Cin, kh, kw]`.
    Conv2d,
    /// `nn.ConvTranspose2d(kernel 4, stride 2, padding 1)`, PyTorch weight `[Cin, Cout, 4, 4]`.
    ConvTranspose2d,
    /// `nn.Conv3d`, PyTorch weight `[Cout, Cin, kt, kh, kw]`.
    Conv3d,
}

/// A convolution's weights and bias on the GPU, repacked for the implicit-GEMM kernels.
#[derive(Clone, Debug)]
pub struct ConvWeight {
    pub kind: ConvKind,
    pub cin: usize,
    pub cout: usize,
    /// Taps per axis (time, height, width) of the kernel as the shader runs it: a transposed
    /// conv runs as four phases of (1, 2, 2).
    pub taps: [usize; 3],
    pub cin_p: usize,
    pub cout_p: usize,
    /// `[phases][taps][cin_p][cout_p]`, zero in the padding.
    pub w: Tensor,
    /// `[Cout]` (zeros when the layer has no bias).
    pub bias: Tensor,
}

impl ConvWeight {
    /// From a PyTorch `Conv2d` (`shape` = `[Cout, Cin, kh, kw]`) or `Conv3d`
    /// (`[Cout, Cin, kt, kh, kw]`) weight, with an optional `[Cout]` bias.
    pub fn from_torch(gpu: &Gpu, w: &[f32], shape: &[usize], bias: Option<&[f32]>, dtype: DType) -> Result<ConvWeight> {
        ConvWeight::pack(gpu, Src::Values(w), 1.0, shape, bias, dtype, false)
    }

    /// From a PyTorch `ConvTranspose2d(kernel_size=4, stride=2, padding=1)` weight
    /// (`shape` = `[Cin, Cout, 4, 4]`), with an optional `[Cout]` bias.
    pub fn from_torch_transposed(gpu: &Gpu, w: &[f32], shape: &[usize], bias: Option<&[f32]>, dtype: DType) -> Result<ConvWeight> {
        ConvWeight::pack_transposed(gpu, Src::Values(w), 1.0, shape, bias, dtype, false)
    }

    /// [`from_torch`](Self::from_torch) from any source (times `factor`), packed on the host,
    /// or generated on the GPU when `on_gpu` (a synthetic source).
    pub fn pack(gpu: &Gpu, src: Src<'_>, factor: f32, shape: &[usize], bias: Option<&[f32]>, dtype: DType, on_gpu: bool) -> Result<ConvWeight> {
        Layout::conv(shape)?.build(gpu, src, factor, shape, bias, dtype, on_gpu)
    }

    /// [`from_torch_transposed`](Self::from_torch_transposed) from any source, as
    /// [`pack`](Self::pack).
    pub fn pack_transposed(gpu: &Gpu, src: Src<'_>, factor: f32, shape: &[usize], bias: Option<&[f32]>, dtype: DType, on_gpu: bool) -> Result<ConvWeight> {
        Layout::transposed(shape)?.build(gpu, src, factor, shape, bias, dtype, on_gpu)
    }

    /// An `Upsample2D`'s convolution (PyTorch `Conv2d` weight `[Cout, Cin, 3, 3]`, padding 1)
    /// folded into the nearest ×2 upsampling it reads: the `ConvTranspose2d(kernel 4, stride 2,
    /// padding 1)` weight (`[Cin, Cout, 4, 4]`) with the same outputs, for [`conv_transpose2d`].
    /// Each output pixel then takes 2×2 input pixels where the convolution of the upsampled
    /// tensor takes 3×3 of its pixels: 4/9 of the multiplies, and nothing upsampled is read.
    ///
    /// Output row 2a+py of the convolution reads upsampled rows 2a+py−1 ..= 2a+py+1, which are
    /// input rows a−1, a, a (py = 0) or a, a, a+1 (py = 1): two input rows, one of them through
    /// two kernel rows (the zero padding maps to input rows −1 and H, which the transposed conv
    /// also treats as zeros). The transposed conv's output row 2a+py reads input row a−1+py+ty
    /// through its kernel row 3−2ty−py (`Layout::row_fn`), so its kernel row t is the sum of the
    /// convolution's kernel rows `UPSAMPLED_ROWS[t]`; columns likewise. The sums are formed in
    /// f64 and rounded once: the outputs differ from the convolution's by the order of the
    /// additions.
    pub fn of_upsampling(gpu: &Gpu, w: &[f32], shape: &[usize], bias: Option<&[f32]>, dtype: DType) -> Result<ConvWeight> {
        let [cout, cin, 3, 3] = *shape else {
            bail!("upsampling conv weight shape {shape:?}: expected [Cout, Cin, 3, 3]");
        };
        ensure!(w.len() == cout * cin * 9, "upsampling conv weight has {} values, expected {} for {shape:?}", w.len(), cout * cin * 9);
        let mut t = vec![0f32; cin * cout * 16];
        for ci in 0..cin {
            for co in 0..cout {
                let k = &w[(co * cin + ci) * 9..][..9];
                for (ty, rows) in UPSAMPLED_ROWS.iter().enumerate() {
                    for (tx, cols) in UPSAMPLED_ROWS.iter().enumerate() {
                        let sum: f64 = rows.iter().flat_map(|&r| cols.iter().map(move |&c| k[r * 3 + c] as f64)).sum();
                        t[(ci * cout + co) * 16 + ty * 4 + tx] = sum as f32;
                    }
                }
            }
        }
        ConvWeight::from_torch_transposed(gpu, &t, &[cin, cout, 4, 4], bias, dtype)
    }

    pub fn dtype(&self) -> DType {
        self.w.dtype()
    }
}

/// Kernel row t of an upsampling's convolution folded into a transposed conv
/// ([`ConvWeight::of_upsampling`]): the sum of these rows of the 3×3 kernel.
const UPSAMPLED_ROWS: [&[usize]; 4] = [&[2], &[1, 2], &[0, 1], &[0]];

/// Where a PyTorch conv weight's elements go in the packed `[phases·taps][cin_p][cout_p]`
/// layout: row (phase, tap, ci) holds the weight's elements for every co at a stride. One
/// description for packing a checkpoint's weight and generating a synthetic one.
struct Layout {
    kind: ConvKind,
    cin: usize,
    cout: usize,
    taps: [usize; 3],
    cin_p: usize,
    cout_p: usize,
}

impl Layout {
    /// A `Conv2d` (`[Cout, Cin, kh, kw]`) or `Conv3d` (`[Cout, Cin, kt, kh, kw]`) weight.
    fn conv(shape: &[usize]) -> Result<Layout> {
        let (kind, cout, cin, taps) = match *shape {
            [co, ci, kh, kw] => (ConvKind::Conv2d, co, ci, [1, kh, kw]),
            [co, ci, kt, kh, kw] => (ConvKind::Conv3d, co, ci, [kt, kh, kw]),
            _ => bail!("conv weight shape {shape:?}: expected [Cout, Cin, kh, kw] or [Cout, Cin, kt, kh, kw]"),
        };
        ensure!(cout > 0 && cin > 0 && taps.iter().all(|&k| k > 0), "conv weight shape {shape:?} has a zero axis");
        Ok(Layout::new(kind, cin, cout, taps))
    }

    /// A `ConvTranspose2d(kernel_size=4, stride=2, padding=1)` weight (`[Cin, Cout, 4, 4]`),
    /// run as four phases of (1, 2, 2) taps.
    fn transposed(shape: &[usize]) -> Result<Layout> {
        let [cin, cout, 4, 4] = *shape else {
            bail!("conv-transpose weight shape {shape:?}: expected [Cin, Cout, 4, 4] (only kernel 4, stride 2, padding 1 is supported)");
        };
        ensure!(cout > 0 && cin > 0, "conv-transpose weight shape {shape:?} has a zero axis");
        Ok(Layout::new(ConvKind::ConvTranspose2d, cin, cout, [1, 2, 2]))
    }

    fn new(kind: ConvKind, cin: usize, cout: usize, taps: [usize; 3]) -> Layout {
        Layout { kind, cin, cout, taps, cin_p: cin.next_multiple_of(CIN_ALIGN), cout_p: cout.next_multiple_of(COUT_ALIGN) }
    }

    fn ntaps(&self) -> usize {
        self.taps.iter().product()
    }

    /// Packed rows: (tap, ci), or (phase, tap, ci) for the four phases of a transposed conv.
    fn rows(&self) -> usize {
        let phases = if self.kind == ConvKind::ConvTranspose2d { 4 } else { 1 };
        phases * self.ntaps() * self.cin_p
    }

    fn packed_shape(&self) -> [usize; 3] {
        [self.rows() / self.cin_p, self.cin_p, self.cout_p]
    }

    /// Elements of the PyTorch weight.
    fn src_len(&self) -> usize {
        match self.kind {
            ConvKind::ConvTranspose2d => self.cin * self.cout * 16,
            _ => self.cout * self.cin * self.ntaps(),
        }
    }

    /// Every row, the first `cout` of its `cout_p` columns.
    fn placement(&self) -> Placement {
        Placement::rows(self.rows(), self.cout_p, self.cout)
    }

    /// Row r → (base, stride) of its elements in the PyTorch weight (None: a padding row).
    fn row_fn(&self) -> impl Fn(usize) -> Option<(usize, usize)> + Sync + '_ {
        move |r| {
            let (i, ci) = (r / self.cin_p, r % self.cin_p);
            if ci >= self.cin {
                return None;
            }
            if self.kind != ConvKind::ConvTranspose2d {
                // Row (tap, ci) holds w[co][ci][tap] for every co.
                let ntaps = self.ntaps();
                return Some((ci * ntaps + i, self.cin * ntaps));
            }
            // Output row 2a+py gets kernel row ky from input row a+ty−1+py with ky = 3−2ty−py
            // (ty ∈ {0,1}). Rows are (phase, tap, ci) with phase = 2py+px and tap = 2ty+tx: the
            // row's index is ((py·2 + px)·4 + ty·2 + tx)·cin_p + ci, and it holds w[ci][co][ky][kx]
            // for every co.
            let (py, px, ty, tx) = (i >> 3, (i >> 2) & 1, (i >> 1) & 1, i & 1);
            let (ky, kx) = (3 - 2 * ty - py, 3 - 2 * tx - px);
            Some((ci * self.cout * 16 + ky * 4 + kx, 16))
        }
    }

    /// The packed weight of `factor` times `src` (of PyTorch shape `shape`): zeros, then every
    /// mapped row.
    #[allow(clippy::too_many_arguments)]
    fn build(&self, gpu: &Gpu, src: Src<'_>, factor: f32, shape: &[usize], bias: Option<&[f32]>, dtype: DType, on_gpu: bool) -> Result<ConvWeight> {
        let what = if self.kind == ConvKind::ConvTranspose2d { "conv-transpose" } else { "conv" };
        let mut w = Packing::new(gpu, format!("{what} weight {shape:?}"), &self.packed_shape(), dtype, on_gpu)?;
        w.fill_rows(src, factor, self.src_len(), &self.placement(), self.row_fn())?;
        self.finish(gpu, w.finish()?, bias)
    }

    /// The weight with its bias (zeros when the layer has none).
    fn finish(&self, gpu: &Gpu, w: Tensor, bias: Option<&[f32]>) -> Result<ConvWeight> {
        let cout = self.cout;
        let zeros;
        let bias = match bias {
            Some(b) => {
                ensure!(b.len() == cout, "conv bias has {} values, expected Cout = {cout}", b.len());
                b
            }
            None => {
                zeros = vec![0f32; cout];
                &zeros
            }
        };
        let bias = Tensor::from_f32(gpu, bias, &[cout], w.dtype())?;
        Ok(ConvWeight { kind: self.kind, cin: self.cin, cout, taps: self.taps, cin_p: self.cin_p, cout_p: self.cout_p, w, bias })
    }
}
