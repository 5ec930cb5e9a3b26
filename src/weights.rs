//! Pretrained weights from safetensors files, memory-mapped and loaded strictly.
//!
//! A model asks for each tensor by name and expected shape ([`WeightStore::take`]); a missing
//! key, a wrong shape or an unsupported dtype is an error naming the tensor, both shapes and the
//! file. After building, [`WeightStore::finish`] reports keys the model never asked for, so a
//! checkpoint of another model is never half-loaded silently. f32, f16 and bf16 are accepted and
//! converted on the host; the model then uploads in its storage dtype.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use safetensors::SafeTensors;

struct File {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
    meta: Metadata,
}

pub struct WeightStore {
    files: Vec<File>,
    index: HashMap<String, usize>,
    taken: BTreeSet<String>,
    /// Seeded random weights for any name and shape (full-size builds without checkpoints).
    synthetic: Option<u64>,
}

impl WeightStore {
    /// Opens one `.safetensors` file, or every `*.safetensors` file in a folder.
    pub fn open(path: &Path) -> Result<WeightStore> {
        let paths: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            v.sort();
            if v.is_empty() {
                bail!("no .safetensors files in {}", path.display());
            }
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut store = WeightStore { files: Vec::new(), index: HashMap::new(), taken: BTreeSet::new(), synthetic: None };
        for p in paths {
            store.add_file(&p)?;
        }
        Ok(store)
    }

    /// A store that answers every request with seeded random values of the requested shape
    /// (norm scales near 1, other weights scaled by 1/√fan-in), for building and running a
    /// full-size model without downloading it.
    pub fn synthetic(seed: u64) -> WeightStore {
        WeightStore { files: Vec::new(), index: HashMap::new(), taken: BTreeSet::new(), synthetic: Some(seed) }
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open weights file {}", path.display()))?;
        // SAFETY: the map is read-only; a file truncated underneath us while mapped is outside
        // what we can defend against (as for every mmap user), and is not a normal workflow.
        let map = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file ({e}); it may be truncated or corrupt: download it again",
                path.display()
            )
        })?;
        let idx = self.files.len();
        for name in meta.tensors().keys() {
            if let Some(&other) = self.index.get(name) {
                bail!("tensor '{name}' is in both {} and {}", self.files[other].path.display(), path.display());
            }
            self.index.insert(name.clone(), idx);
        }
        self.files.push(File { path: path.to_path_buf(), map, data_start: 8 + n, meta });
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }

    fn info(&self, name: &str) -> Option<(&File, &TensorInfo)> {
        let &i = self.index.get(name)?;
        let f = &self.files[i];
        Some((f, f.meta.info(name)?))
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|(_, i)| i.shape.clone())
    }

    /// The tensor `name` as f32, checked against `shape`; marks it used.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(seed) = self.synthetic {
            let h = name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            let mut rng = crate::testutil::Rng::new(h);
            let n: usize = shape.iter().product();
            let is_norm = name.contains("norm") && shape.len() == 1;
            let scale = if shape.len() >= 2 { 1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt() } else { 0.1 };
            self.taken.insert(name.to_string());
            return Ok((0..n).map(|_| if is_norm && name.ends_with("weight") { 1.0 + 0.1 * rng.normal() } else { scale * rng.normal() }).collect());
        }
        let Some((file, info)) = self.info(name) else {
            let files: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
            bail!("missing tensor '{name}' (expected shape {shape:?}) in {}: is this the right checkpoint for this model and config?", files.join(", "));
        };
        if info.shape != shape {
            bail!(
                "tensor '{name}' in {} has shape {:?}, but the model config expects {:?}: the config and weights don't match",
                file.path.display(),
                info.shape,
                shape
            );
        }
        let (a, b) = info.data_offsets;
        let bytes = &file.map[file.data_start + a..file.data_start + b];
        let v = to_f32(bytes, info.dtype).with_context(|| format!("tensor '{name}' in {}", file.path.display()))?;
        self.taken.insert(name.to_string());
        Ok(v)
    }

    /// Marks every tensor under `prefix` as deliberately unused (e.g. a VAE's encoder when only
    /// the decoder runs), so [`WeightStore::finish`] does not report them.
    pub fn skip_prefix(&mut self, prefix: &str) {
        let names: Vec<String> = self.index.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        self.taken.extend(names);
    }

    /// Errors if the files hold tensors the model never took (a different model's checkpoint).
    pub fn finish(&self) -> Result<()> {
        let extra: Vec<&String> = {
            let mut v: Vec<&String> = self.index.keys().filter(|k| !self.taken.contains(*k)).collect();
            v.sort();
            v
        };
        if !extra.is_empty() {
            let shown: Vec<&str> = extra.iter().take(10).map(|s| s.as_str()).collect();
            bail!(
                "{} unexpected tensor(s) in the weights, e.g. {}: the checkpoint does not belong to this model/config",
                extra.len(),
                shown.join(", ")
            );
        }
        Ok(())
    }
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        other => bail!("unsupported dtype {other:?} (expected f32, f16 or bf16)"),
    })
}

/// Writes f32 tensors as a safetensors file (used by `forward` outputs and tests).
pub fn save_f32(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            Ok((n.to_string(), safetensors::tensor::TensorView::new(Dtype::F32, s.to_vec(), bytemuck::cast_slice(d))?))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("diffvsr-weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    fn strict_loading_errors_name_the_problem() {
        let p = tmp("a.safetensors");
        save_f32(&p, &[("x.weight", &[2, 3], &[1., 2., 3., 4., 5., 6.]), ("x.bias", &[2], &[7., 8.])]).unwrap();
        let mut s = WeightStore::open(&p).unwrap();
        assert_eq!(s.take("x.weight", &[2, 3]).unwrap(), vec![1., 2., 3., 4., 5., 6.]);
        let e = s.take("x.bias", &[3]).unwrap_err().to_string();
        assert!(e.contains("x.bias") && e.contains("[2]") && e.contains("[3]") && e.contains("a.safetensors"), "{e}");
        let e = s.take("y.weight", &[1]).unwrap_err().to_string();
        assert!(e.contains("missing tensor 'y.weight'"), "{e}");
        let e = s.finish().unwrap_err().to_string();
        assert!(e.contains("x.bias"), "{e}");
        s.take("x.bias", &[2]).unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn truncated_file_is_an_error() {
        let p = tmp("t.safetensors");
        save_f32(&p, &[("w", &[64], &[0.5; 64])]).unwrap();
        let full = std::fs::read(&p).unwrap();
        for cut in [full.len() - 1, full.len() / 2, 10, 4, 0] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let e = WeightStore::open(&p).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("not a valid safetensors file"), "cut {cut}: {e}");
        }
        std::fs::write(&p, b"garbage garbage garbage").unwrap();
        assert!(WeightStore::open(&p).is_err());
    }

    #[test]
    fn half_precision_tensors_convert() {
        let p = tmp("h.safetensors");
        let h: Vec<half::f16> = [1.5f32, -2.0, 0.25].iter().map(|&x| half::f16::from_f32(x)).collect();
        let b: Vec<half::bf16> = [1.5f32, -2.0, 0.25].iter().map(|&x| half::bf16::from_f32(x)).collect();
        let views = vec![
            ("h", safetensors::tensor::TensorView::new(Dtype::F16, vec![3], bytemuck::cast_slice(&h)).unwrap()),
            ("b", safetensors::tensor::TensorView::new(Dtype::BF16, vec![3], bytemuck::cast_slice(&b)).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &p).unwrap();
        let mut s = WeightStore::open(&p).unwrap();
        assert_eq!(s.take("h", &[3]).unwrap(), vec![1.5, -2.0, 0.25]);
        assert_eq!(s.take("b", &[3]).unwrap(), vec![1.5, -2.0, 0.25]);
    }
}
