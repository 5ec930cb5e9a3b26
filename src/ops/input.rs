//! What a GroupNorm or convolution kernel reads as its input activation: one tensor, or two
//! tensors' channels side by side, which the kernel gathers from both as it loads, so their
//! concatenation is never written. A UNet's up path concatenates its activation with a skip
//! before every resnet; the resnet's GroupNorm (`ops::norm`) and its convolutions (`ops::conv`)
//! read the pair directly. An op that cannot read a pair (see [`Input::readable_directly`])
//! concatenates it first ([`Input::materialise`]), so the values are the same either way. (A
//! linear layer's input can also be a norm's, applied as it loads: `ops::matmul::LinearInput`.)

use std::borrow::Cow;

use anyhow::Result;

use crate::kernel::Recorder;
use crate::ops::concat::{channel_cat_shape, concat_channels};
use crate::tensor::{DType, Tensor};

/// An activation as an op reads it.
#[derive(Clone, Debug)]
pub enum Input {
    Tensor(Tensor),
    /// `a [n, .., C1]` and `b [m, .., C2]` read as `[max(n, m), .., C1 + C2]`: what
    /// [`concat_channels`] of the two would give, a part with the shorter axis 0 repeating along
    /// it (a skip from the layers a CFG pair's halves share). Build it with [`Input::channels`].
    Pair { a: Tensor, b: Tensor, shape: Vec<usize> },
}

impl From<&Tensor> for Input {
    fn from(t: &Tensor) -> Input {
        Input::Tensor(t.clone())
    }
}

impl From<Tensor> for Input {
    fn from(t: Tensor) -> Input {
        Input::Tensor(t)
    }
}

impl From<&Input> for Input {
    fn from(x: &Input) -> Input {
        x.clone()
    }
}

/// Where a kernel finds a channel of a [`Input::Pair`]: the channels before `c1` in the first
/// part, the rest in the second; row (pixel) P of the pair is row `P % rows_a` of the first part
/// and `P % rows_b` of the second.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PairGeometry {
    pub c1: usize,
    pub rows_a: usize,
    pub rows_b: usize,
}

impl Input {
    /// `cat([a, b], dim=channel)` of channels-last tensors, not written: checked as
    /// [`concat_channels`] checks it.
    pub fn channels(a: &Tensor, b: &Tensor) -> Result<Input> {
        let shape = channel_cat_shape("channel pair", &[a, b])?;
        Ok(Input::Pair { a: a.clone(), b: b.clone(), shape })
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Input::Tensor(t) => t.shape(),
            Input::Pair { shape, .. } => shape,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Input::Tensor(t) => t.dtype(),
            Input::Pair { a, .. } => a.dtype(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// The tensors a kernel binds to read it, in order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Input::Tensor(t) => vec![t],
            Input::Pair { a, b, .. } => vec![a, b],
        }
    }

    /// Where a pair's channels are (`None` for anything else).
    pub fn pair(&self) -> Option<PairGeometry> {
        match self {
            Input::Tensor(_) => None,
            Input::Pair { a, b, .. } => {
                let c1 = *a.shape().last().unwrap_or(&0);
                let c2 = *b.shape().last().unwrap_or(&0);
                Some(PairGeometry { c1, rows_a: a.numel() / c1.max(1), rows_b: b.numel() / c2.max(1) })
            }
        }
    }

    /// Whether a GroupNorm or convolution kernel that loads `vector` channels at a time can
    /// read this directly and still bind everything else it needs (`other_bindings` storage
    /// buffers) within the adapter's limit: one tensor where one more binding is left (a fused
    /// path asks, to fall back where it is not); a pair where both parts' channel counts divide
    /// by the vector (so no load straddles them) and two more are left.
    pub fn readable_directly(&self, rec: &Recorder, vector: usize, other_bindings: u32) -> bool {
        match self {
            Input::Tensor(_) => other_bindings < rec.gpu().limits.max_storage_buffers_per_shader_stage,
            Input::Pair { a, b, .. } => {
                let (c1, c2) = (*a.shape().last().unwrap_or(&0), *b.shape().last().unwrap_or(&0));
                c1.is_multiple_of(vector) && c2.is_multiple_of(vector) && other_bindings + 2 <= rec.gpu().limits.max_storage_buffers_per_shader_stage
            }
        }
    }

    /// This input as a kernel that loads `vector` channels at a time, with `other_bindings`
    /// storage bindings besides it, reads it: itself where [`readable_directly`], else the
    /// pair concatenated.
    ///
    /// [`readable_directly`]: Input::readable_directly
    pub fn for_kernel(&self, rec: &mut Recorder, vector: usize, other_bindings: u32) -> Result<Input> {
        Ok(if self.readable_directly(rec, vector, other_bindings) { self.clone() } else { Input::Tensor(self.materialise(rec)?.into_owned()) })
    }

    /// One tensor holding the values: itself, or the pair concatenated.
    pub fn materialise(&self, rec: &mut Recorder) -> Result<Cow<'_, Tensor>> {
        Ok(match self {
            Input::Tensor(t) => Cow::Borrowed(t),
            Input::Pair { a, b, .. } => Cow::Owned(concat_channels(rec, &[a, b])?),
        })
    }

    /// Empty tensors of the same shapes (the tuner's scratch inputs).
    pub fn scratch(&self, rec: &mut Recorder) -> Result<Input> {
        Ok(match self {
            Input::Tensor(t) => Input::Tensor(rec.empty(t.shape(), t.dtype())?),
            Input::Pair { a, b, shape } => Input::Pair { a: rec.empty(a.shape(), a.dtype())?, b: rec.empty(b.shape(), b.dtype())?, shape: shape.clone() },
        })
    }
}
