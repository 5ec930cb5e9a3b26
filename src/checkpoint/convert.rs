//! `diffvsr-wgpu convert`: any weights the store reads (a PyTorch checkpoint, safetensors files,
//! a folder) → one safetensors file.
//!
//! Floating tensors are written as f32 or f16 (`--dtype`); without it f32 and f16 stay as
//! stored, bf16 and f64 become f32 (the engine computes in f32/f16, and f32 holds bf16
//! exactly). Integer and bool buffers are kept as they are. Tensors are streamed one at a time,
//! so converting a multi-GB checkpoint needs no more memory than its largest tensor.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::View;
use crate::dtype::FileDtype;

use crate::dtype::file_elem_size;
use crate::weights::{to_f32, WeightStore};
use crate::dtype::DType;

#[derive(Debug)]
pub struct ConvertSummary {
    pub tensors: usize,
    /// Bytes of tensor data read (in the stored dtypes).
    pub bytes_in: usize,
    /// Size of the written file.
    pub bytes_out: u64,
    /// "stored → written" dtype pairs and their tensor counts.
    pub dtypes: BTreeMap<String, usize>,
    /// Finite values that became ±inf when rounded to f16.
    pub f16_overflow: usize,
    pub notes: Vec<String>,
}

impl fmt::Display for ConvertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} tensors, {} of tensor data read, {} written",
            self.tensors,
            human(self.bytes_in as u64),
            human(self.bytes_out)
        )?;
        let d: Vec<String> = self.dtypes.iter().map(|(k, n)| format!("{n} {k}")).collect();
        writeln!(f, "dtypes: {}", d.join(", "))?;
        if self.f16_overflow > 0 {
            writeln!(f, "warning: {} finite values exceed the f16 range and became ±inf", self.f16_overflow)?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        Ok(())
    }
}

fn human(b: u64) -> String {
    match b {
        0..10_000 => format!("{b} bytes"),
        10_000..10_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        10_000_000..10_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

fn dtype_name(d: FileDtype) -> String {
    format!("{d:?}").to_lowercase()
}

/// What a stored dtype is written as.
fn target(stored: FileDtype, want: Option<DType>) -> FileDtype {
    let float = matches!(stored, FileDtype::F32 | FileDtype::F16 | FileDtype::BF16 | FileDtype::F64);
    match (float, want) {
        (false, _) => stored,
        (true, Some(DType::F16)) => FileDtype::F16,
        (true, Some(_)) => FileDtype::F32,
        (true, None) if stored == FileDtype::F16 => FileDtype::F16,
        (true, None) => FileDtype::F32,
    }
}

struct Lazy<'a> {
    store: &'a WeightStore,
    name: &'a str,
    from: FileDtype,
    to: FileDtype,
    shape: Vec<usize>,
    overflow: &'a Cell<usize>,
}

impl View for Lazy<'_> {
    fn dtype(&self) -> FileDtype {
        self.to
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * file_elem_size(self.to)
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // Every storage was verified before writing began, and views were bounds-checked when
        // the file was opened, so this cannot fail.
        let raw = self.store.raw(self.name).expect("tensor verified before writing");
        if self.from == self.to {
            return raw.data;
        }
        let v = to_f32(&raw.data, self.from).expect("float dtypes always convert");
        Cow::Owned(match self.to {
            FileDtype::F32 => bytemuck::cast_slice(&v).to_vec(),
            FileDtype::F16 => {
                let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                let over = v.iter().zip(&h).filter(|(x, h)| x.is_finite() && h.is_infinite()).count();
                self.overflow.set(self.overflow.get() + over);
                bytemuck::cast_slice(&h).to_vec()
            }
            _ => unreachable!("only floats are converted"),
        })
    }
}

/// Converts `input` (anything [`WeightStore::open_with_key`] reads) to the safetensors file
/// `output`, which is written beside it under a temporary name and renamed at the end.
pub fn convert(input: &Path, output: &Path, key: Option<&str>, dtype: Option<DType>) -> Result<ConvertSummary> {
    let store = WeightStore::open_with_key(input, key)?;
    let names = store.keys();
    if names.is_empty() {
        bail!("{} holds no tensors", input.display());
    }
    // The safetensors header keeps its metadata under this key: a tensor of that name would
    // give a file that no reader takes (a duplicate JSON field).
    if names.iter().any(|n| n == "__metadata__") {
        bail!("{} holds a tensor named __metadata__, the name safetensors keeps for its header's metadata: rename it before converting", input.display());
    }
    let overflow = Cell::new(0usize);
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bytes_in = 0usize;
    let mut views = Vec::with_capacity(names.len());
    for name in &names {
        store.verify(name)?;
        let from = store.dtype(name).unwrap();
        let to = target(from, dtype);
        let shape = store.shape(name).unwrap();
        bytes_in += shape.iter().product::<usize>() * file_elem_size(from);
        let label = if from == to { dtype_name(from) } else { format!("{} → {}", dtype_name(from), dtype_name(to)) };
        *dtypes.entry(label).or_default() += 1;
        views.push((name.as_str(), Lazy { store: &store, name, from, to, shape, overflow: &overflow }));
    }
    let source = input.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut meta = HashMap::from([("format".to_string(), "pt".to_string()), ("converted_from".to_string(), source)]);
    if let Some(k) = key {
        meta.insert("key".to_string(), k.to_string());
    }
    crate::weights::write_safetensors(output, views, Some(meta))?;
    let bytes_out = std::fs::metadata(output).with_context(|| format!("reading back {}", output.display()))?.len();
    Ok(ConvertSummary {
        tensors: names.len(),
        bytes_in,
        bytes_out,
        dtypes,
        f16_overflow: overflow.get(),
        notes: store.notes().to_vec(),
    })
}
