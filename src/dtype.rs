//! Element types of GPU tensors. Plain data: reading a file or planning memory needs no GPU.

use anyhow::{bail, Result};

/// The element type of a tensor stored in a file (safetensors' dtype, which the PyTorch
/// checkpoint reader maps onto too). Distinct from [`DType`], what the device stores.
pub use safetensors::Dtype as FileDtype;

/// Bytes per element of a stored dtype (sub-byte dtypes round up; the readers refuse them).
pub fn file_elem_size(d: FileDtype) -> usize {
    d.bitsize().div_ceil(8)
}

/// The element type a tensor is stored in on the device.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    /// Indices and token ids (embedding lookups, class labels). Never an activation dtype.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
    /// The WGSL scalar type.
    pub fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
    pub fn name(self) -> &'static str {
        self.wgsl()
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }
    /// Relative-L2 tolerance of a kernel test in this storage dtype; integers are exact. f16
    /// storage rounds every stored value to 11 significant bits (about 3e-4 relative L2), and
    /// the CPU references take the same f16-rounded inputs, so a kernel that accumulates in f32
    /// stays well under 1e-3, while one that accumulated in f16 would exceed it from about 80
    /// terms on (simulated: 1.3e-3 at 77, 2.5e-3 at 297). Tests that round intermediates too
    /// (Winograd's planes) or compare f16 operands with unrounded f32 references (f32 storage
    /// on f16 operands: `forward`'s 2e-3) state their own.
    pub fn tolerance(self, f32_tol: f64) -> f64 {
        match self {
            DType::F32 => f32_tol,
            DType::F16 => 1e-3,
            DType::U32 => 0.0,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = anyhow::Error;
    /// The storage dtypes a user can ask for (`--dtype`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            o => bail!("unknown dtype '{o}': use f32 or f16"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DType;

    #[test]
    fn sizes_names_and_parsing() {
        assert_eq!((DType::F32.size(), DType::F16.size(), DType::U32.size()), (4, 2, 4));
        assert_eq!("f16".parse::<DType>().unwrap(), DType::F16);
        assert!("u32".parse::<DType>().is_err(), "u32 is not a storage dtype a user picks");
        assert!(!DType::U32.is_float());
    }
}
