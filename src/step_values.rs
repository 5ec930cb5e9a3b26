//! Per-step values: the scalars that change between replays of a captured graph (timestep,
//! DDIM coefficients, guidance scale, blend weights). They live in one small f32 device buffer
//! that the host rewrites before each replay; kernels read their slot from it at run time, so
//! nothing about a step is frozen into a graph's uniforms at capture.

use anyhow::{bail, Context, Result};

use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::DType;

/// A scalar operand of an op: fixed when the op is recorded, or read from a [`StepValues`]
/// slot each time the graph runs.
#[derive(Clone, Debug)]
pub enum Scalar {
    Const(f32),
    Slot { values: Tensor, index: u32 },
}

impl From<f32> for Scalar {
    fn from(v: f32) -> Self {
        Scalar::Const(v)
    }
}

impl Scalar {
    /// What a kernel's parameters hold for this scalar: (constant value, slot index), the index
    /// being [`Scalar::NO_SLOT`] for a constant.
    pub fn params(&self) -> (f32, u32) {
        match self {
            Scalar::Const(v) => (*v, Scalar::NO_SLOT),
            Scalar::Slot { index, .. } => (0.0, *index),
        }
    }

    /// The values buffer a slot reads, if any.
    pub fn values(&self) -> Option<&Tensor> {
        match self {
            Scalar::Const(_) => None,
            Scalar::Slot { values, .. } => Some(values),
        }
    }

    /// Slot index meaning "use the constant in the parameters".
    pub const NO_SLOT: u32 = u32::MAX;
}

/// Named f32 slots in one device buffer.
pub struct StepValues {
    tensor: Tensor,
    names: Vec<String>,
    host: Vec<f32>,
}

impl StepValues {
    /// Slots named `names`, all 0 until set.
    pub fn new(gpu: &Gpu, names: &[&str]) -> Result<StepValues> {
        if names.is_empty() {
            bail!("StepValues needs at least one slot");
        }
        let host = vec![0.0; names.len()];
        let tensor = Tensor::from_f32(gpu, &host, &[names.len()], DType::F32)?;
        Ok(StepValues { tensor, names: names.iter().map(|s| s.to_string()).collect(), host })
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).with_context(|| format!("no per-step value named '{name}' (have {:?})", self.names))
    }

    /// The scalar an op reads from slot `name`.
    pub fn slot(&self, name: &str) -> Result<Scalar> {
        Ok(Scalar::Slot { values: self.tensor.clone(), index: self.index(name)? as u32 })
    }

    /// Sets slot `name` on the host; [`StepValues::upload`] sends all slots to the device.
    pub fn set(&mut self, name: &str, v: f32) -> Result<()> {
        let i = self.index(name)?;
        self.host[i] = v;
        Ok(())
    }

    /// Writes the host values to the device, ordered before the next submission (the next replay).
    pub fn upload(&self, gpu: &Gpu) -> Result<()> {
        self.tensor.write_f32(gpu, &self.host)
    }
}
