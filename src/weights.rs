//! Pretrained weights from safetensors files and PyTorch checkpoints, memory-mapped and loaded
//! strictly.
//!
//! A model asks for each tensor by name and expected shape ([`WeightStore::take`] for its values
//! as f32, or [`WeightStore::claim`] then [`WeightStore::raw`] for its elements as stored, which
//! the loaders pack straight into the kernels' layouts); a missing key, a wrong shape or an
//! unsupported dtype is an error naming the tensor, both shapes and the file. After building,
//! [`WeightStore::finish`] reports keys the model never asked for, so a checkpoint of another
//! model is never half-loaded silently. f32, f16 and bf16 are accepted; the model uploads in its
//! storage dtype. f64 and integer/bool buffers (`position_ids`, `num_batches_tracked`) convert
//! to f32, integers only where exact.
//!
//! Files are recognised by content, not by name: a zip archive is a `torch.save` checkpoint
//! (read by [`crate::checkpoint`], no Python, no code run), a legacy `torch.save` pickle is
//! refused with instructions, anything else must be safetensors. A PyTorch tensor may be a
//! strided view sharing its storage with others; it is gathered on [`WeightStore::raw`]. Its
//! storage's zip CRC is checked on first use, so a corrupt download fails loudly.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
pub use crate::dtype::{file_elem_size, FileDtype};
use safetensors::SafeTensors;

use crate::checkpoint::{self, Format};

/// Extensions of PyTorch checkpoints picked up from a folder.
const TORCH_EXTS: [&str; 3] = ["bin", "pt", "pth"];

struct File {
    path: PathBuf,
    map: memmap2::Mmap,
    storages: Vec<Storage>,
}

/// A byte range of a file holding one or more tensors' elements.
struct Storage {
    range: Range<usize>,
    /// Zip entry name and CRC-32 (PyTorch checkpoints); safetensors has no checksum.
    crc: Option<(String, u32)>,
    crc_ok: OnceLock<bool>,
}

struct Entry {
    file: usize,
    storage: usize,
    dtype: FileDtype,
    shape: Vec<usize>,
    /// In elements; `None` when the tensor is contiguous.
    strides: Option<Vec<usize>>,
    /// In elements, from the start of the storage.
    offset: usize,
}

/// A tensor's elements in their stored dtype, contiguous, little-endian.
pub struct RawTensor<'a> {
    pub dtype: FileDtype,
    pub shape: &'a [usize],
    pub data: Cow<'a, [u8]>,
}

pub struct WeightStore {
    files: Vec<File>,
    index: HashMap<String, Entry>,
    taken: BTreeSet<String>,
    notes: Vec<String>,
    /// Seeded random weights for any name and shape (full-size builds without checkpoints).
    synthetic: Option<u64>,
    /// What a synthetic store was asked for, in order (checked against the official key lists).
    requested: Vec<(String, Vec<usize>)>,
    /// Refuse tensors stored as integers or booleans ([`WeightStore::model_weights`]).
    floats_only: bool,
}

impl WeightStore {
    /// Opens one weights file (`.safetensors`, or a PyTorch `.pt`/`.pth`/`.bin` checkpoint), or
    /// a folder: every `*.safetensors` file in it, or if it has none (a diffusers folder with
    /// only `diffusion_pytorch_model.bin`), every `.bin`/`.pt`/`.pth` file.
    pub fn open(path: &Path) -> Result<WeightStore> {
        Self::open_with_key(path, None)
    }

    /// [`WeightStore::open`], taking the state dict from entry `key` of PyTorch checkpoints
    /// (`Some("ema")` for DiffVSR_UNet.pt; `a/b` for nested dicts). Without a key the state dict
    /// is found as [`checkpoint::select`] describes (which picks `ema` for DiffVSR_UNet.pt).
    /// A key is an error for safetensors files, which have no nesting.
    pub fn open_with_key(path: &Path, key: Option<&str>) -> Result<WeightStore> {
        let paths: Vec<PathBuf> = if path.is_dir() {
            let all: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            let has_ext = |p: &PathBuf, exts: &[&str]| p.extension().is_some_and(|e| exts.iter().any(|x| e == *x));
            let mut v: Vec<PathBuf> = all.iter().filter(|p| has_ext(p, &["safetensors"])).cloned().collect();
            if v.is_empty() {
                v = all.iter().filter(|p| has_ext(p, &TORCH_EXTS)).cloned().collect();
            } else if all.iter().any(|p| has_ext(p, &TORCH_EXTS)) {
                log::info!("{}: using the .safetensors files, ignoring the PyTorch ones beside them", path.display());
            }
            v.sort();
            if v.is_empty() {
                bail!("no .safetensors, .bin, .pt or .pth files in {}", path.display());
            }
            v
        } else {
            check_regular_file(path, "weights file")?;
            vec![path.to_path_buf()]
        };
        let mut store = WeightStore {
            files: Vec::new(),
            index: HashMap::new(),
            taken: BTreeSet::new(),
            notes: Vec::new(),
            synthetic: None,
            requested: Vec::new(),
            floats_only: false,
        };
        for p in paths {
            store.add_file(&p, key)?;
        }
        Ok(store)
    }

    /// A store that answers every request with seeded random values of the requested shape
    /// (norm scales near 1, other weights scaled by 1/√fan-in), for building and running a
    /// full-size model without downloading it.
    pub fn synthetic(seed: u64) -> WeightStore {
        WeightStore {
            files: Vec::new(),
            index: HashMap::new(),
            taken: BTreeSet::new(),
            notes: Vec::new(),
            synthetic: Some(seed),
            requested: Vec::new(),
            floats_only: false,
        }
    }

    fn add_file(&mut self, path: &Path, key: Option<&str>) -> Result<()> {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open weights file {}", path.display()))?;
        if f.metadata().is_ok_and(|m| m.len() == 0) {
            bail!("weights file {} is empty (0 bytes): an interrupted download or copy? Get it again", path.display());
        }
        // SAFETY: the map is read-only; a file truncated underneath us while mapped is outside
        // what we can defend against (as for every mmap user), and is not a normal workflow.
        let map = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
        if let Some(what) = text_in_place_of_weights(&map) {
            bail!("{} is {what}", path.display());
        }
        let idx = self.files.len();
        let mut entries: Vec<(String, Entry)> = Vec::new();
        let mut storages: Vec<Storage> = Vec::new();
        match checkpoint::sniff(&map) {
            Format::TorchLegacy => return Err(checkpoint::legacy_error(path)),
            Format::TorchZip => {
                let ck = checkpoint::open(path, &map, key)?;
                for s in ck.storages {
                    storages.push(Storage { range: s.range, crc: Some((s.entry, s.crc32)), crc_ok: OnceLock::new() });
                }
                for t in ck.tensors {
                    let strides = (!is_contiguous(&t.shape, &t.strides)).then_some(t.strides);
                    let e = Entry {
                        file: idx,
                        storage: t.storage,
                        dtype: t.dtype,
                        shape: t.shape,
                        strides,
                        offset: t.offset,
                    };
                    entries.push((t.name, e));
                }
                self.notes.extend(ck.notes.into_iter().map(|n| format!("{}: {n}", path.display())));
            }
            // A safetensors header is JSON after its 8-byte length: anything else at byte 8 is
            // another kind of file, not a damaged copy to download again.
            // (A file of zeros is a download cut off, damaged as the branch below says.)
            Format::Other if map.len() > 8 && map[8] != b'{' && map[..9].iter().any(|&b| b != 0) => {
                let head: String = String::from_utf8_lossy(&map[..map.len().min(16)]).chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '.' }).collect();
                bail!("{} is neither a PyTorch checkpoint nor a safetensors file (it begins \"{head}\"): give a weights file", path.display());
            }
            Format::Other => {
                let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is not a valid safetensors file ({e}); it may be truncated or corrupt: download it again (a conversion fetch-weights made is made again by running fetch-weights)",
                        path.display()
                    )
                })?;
                if let Some(key) = key {
                    bail!("--key {key}: {} is a safetensors file, which has no sub-dicts to select", path.display());
                }
                for (name, info) in meta.tensors() {
                    let (a, b) = info.data_offsets;
                    storages.push(Storage { range: 8 + n + a..8 + n + b, crc: None, crc_ok: OnceLock::new() });
                    let e = Entry {
                        file: idx,
                        storage: storages.len() - 1,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        strides: None,
                        offset: 0,
                    };
                    entries.push((name, e));
                }
            }
        }
        for (name, e) in entries {
            if let Some(other) = self.index.get(&name) {
                bail!("tensor '{name}' is in both {} and {}", self.files[other.file].path.display(), path.display());
            }
            self.index.insert(name, e);
        }
        self.files.push(File { path: path.to_path_buf(), map, storages });
        Ok(())
    }

    /// (name, shape) of every tensor a synthetic store handed out, in request order (what a
    /// model takes from a checkpoint; compared with official key lists in full-size tests).
    pub fn requested(&self) -> &[(String, Vec<usize>)] {
        &self.requested
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

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|e| e.shape.clone())
    }

    /// The stored element type of `name`.
    pub fn dtype(&self, name: &str) -> Option<FileDtype> {
        self.index.get(name).map(|e| e.dtype)
    }

    /// How the state dicts were found in PyTorch checkpoints, and the non-tensor entries skipped.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Checks the CRC of the storage behind `name` (once per storage; PyTorch checkpoints only).
    /// Also refuses tensors whose elements are narrower than a byte (safetensors' F4, F6_*),
    /// which the store cannot address.
    pub fn verify(&self, name: &str) -> Result<()> {
        let Some(e) = self.index.get(name) else { bail!("no tensor '{name}'") };
        let file = &self.files[e.file];
        if !e.dtype.bitsize().is_multiple_of(8) {
            bail!(
                "tensor '{name}' in {} has dtype {:?} ({} bits per element), which this engine cannot read: \
                 convert the weights to f32, f16 or bf16 first",
                file.path.display(),
                e.dtype,
                e.dtype.bitsize()
            );
        }
        let s = &file.storages[e.storage];
        if let Some((entry, crc)) = &s.crc {
            if !*s.crc_ok.get_or_init(|| crc32fast::hash(&file.map[s.range.clone()]) == *crc) {
                bail!(
                    "{}: {entry} (holding tensor '{name}') fails its CRC check: the file is corrupt: download it again",
                    file.path.display()
                );
            }
        }
        Ok(())
    }

    /// The elements of `name` in their stored dtype, contiguous (borrowed from the file where
    /// they already are). Does not mark the tensor used.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        self.verify(name)?;
        let e = &self.index[name];
        let file = &self.files[e.file];
        let storage = &file.map[file.storages[e.storage].range.clone()];
        let data = gather(storage, file_elem_size(e.dtype), &e.shape, e.strides.as_deref(), e.offset);
        Ok(RawTensor { dtype: e.dtype, shape: &e.shape, data })
    }

    /// For a synthetic store, the generator of tensor `name` of `shape` (recorded and marked
    /// used as [`take`](Self::take) does): its values, where [`take`](Self::take) would hand them
    /// out on the host, can be generated where they will live (`ops::synthetic` on the GPU).
    /// `None` for a store over files.
    pub fn synthetic_tensor(&mut self, name: &str, shape: &[usize]) -> Option<Synthetic> {
        let seed = self.synthetic?;
        self.taken.insert(name.to_string());
        self.requested.push((name.to_string(), shape.to_vec()));
        Some(Synthetic::for_tensor(seed, name, shape))
    }

    /// From here on, every tensor taken must be stored as floats (f32, f16, bf16 or f64): a
    /// model's weights. An integer weight is a quantised checkpoint, whose integers converted
    /// by value would run as nonsense; inputs (timesteps, token ids) stay free to be integers.
    pub fn model_weights(&mut self) {
        self.floats_only = true;
    }

    /// Checks that the files hold tensor `name` with `shape`, readable (its storage passes its
    /// CRC), and marks it used: [`take`](Self::take) without the conversion. Its elements are
    /// then [`raw`](Self::raw), e.g. to pack them straight from the file.
    pub fn claim(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        let Some(e) = self.index.get(name) else {
            let files: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
            bail!("missing tensor '{name}' (expected shape {shape:?}) in {}: is this the right checkpoint for this model and config?", files.join(", "));
        };
        if e.shape != shape {
            bail!(
                "tensor '{name}' in {} has shape {:?}, but the model config expects {:?}: the config and weights don't match \
                 (where a config was given, or sits beside the weights in place of the built-in one, it may be the wrong one; \
                 else the weights are another model's)",
                self.files[e.file].path.display(),
                e.shape,
                shape
            );
        }
        if self.floats_only && !matches!(e.dtype, FileDtype::F32 | FileDtype::F16 | FileDtype::BF16 | FileDtype::F64) {
            bail!(
                "tensor '{name}' in {} is stored as {:?}: model weights must be f32, f16 or bf16 (a quantised checkpoint is not \
                 supported: give the float weights it was made from)",
                self.files[e.file].path.display(),
                e.dtype
            );
        }
        self.verify(name)?;
        self.taken.insert(name.to_string());
        Ok(())
    }

    /// The tensor `name` as f32, checked against `shape`; marks it used.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(g) = self.synthetic_tensor(name, shape) {
            return Ok(g.values(shape.iter().product()));
        }
        self.claim(name, shape)?;
        let raw = self.raw(name)?;
        to_f32(&raw.data, raw.dtype).with_context(|| format!("tensor '{name}' in {}", self.files[self.index[name].file].path.display()))
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
            let files: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
            // Several files are a folder's checkpoints merged: likely another model's among them.
            let hint = if files.len() > 1 { "; the folder's files were read as one checkpoint: where they are several models', give the model's own file" } else { "" };
            bail!(
                "{} unexpected tensor(s) in {}, e.g. {}: the checkpoint does not belong to this model/config{hint}",
                extra.len(),
                files.join(", "),
                shown.join(", ")
            );
        }
        Ok(())
    }
}

/// Errors unless `path` is a regular file (following symlinks): a FIFO, device or folder where
/// a file is expected would block a read forever or mean nothing. `what` names the file's role.
pub fn check_regular_file(path: &Path, what: &str) -> Result<()> {
    let m = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !m.is_file() {
        let kind = if m.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
        bail!("{what} {} is {kind}: give a regular file", path.display());
    }
    Ok(())
}

/// The seeded values of one synthetic tensor: element i (in PyTorch's row-major order) is
/// `mean + half_width · u(i)`, u(i) uniform on [−1, 1) from a hash of i keyed by the seed and the
/// tensor's name. A benchmark's weights need the right size, not a Gaussian shape: the standard
/// deviation is `half_width / √3`. Counter-based, so any element can be made anywhere in any
/// order: on the host in parallel ([`Synthetic::values`]), or on the GPU straight into a
/// kernel's packed layout (`ops::synthetic`, bit for bit the same f32 where `mean` is 0, as for
/// every weight of two or more axes).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Synthetic {
    pub key: u64,
    pub mean: f32,
    pub half_width: f32,
}

impl Synthetic {
    /// The generator a synthetic store uses for `name`: norm scales near 1 (mean 1, std 0.1),
    /// other weights of two or more axes with std 1/√fan-in (fan-in: the product of the axes
    /// after the first), other vectors (biases) with std 0.1.
    pub fn for_tensor(seed: u64, name: &str, shape: &[usize]) -> Synthetic {
        let key = name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let is_norm = name.contains("norm") && shape.len() == 1;
        let std = if shape.len() >= 2 { 1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt() } else { 0.1 };
        let (mean, std) = if is_norm && name.ends_with("weight") { (1.0, 0.1) } else { (0.0, std) };
        Synthetic { key, mean, half_width: std * 3f32.sqrt() }
    }

    /// u(i): 24 bits of a two-round hash of i keyed by the key's two halves, as an exact f32 on
    /// [−1, 1). `shaders/synthetic.wgsl` computes the same integers.
    pub fn unit(&self, i: u32) -> f32 {
        let w = mix32(mix32(i.wrapping_add(self.key as u32)) ^ (self.key >> 32) as u32);
        ((w >> 8) as i32 - (1 << 23)) as f32 * (1.0 / (1u32 << 23) as f32)
    }

    /// Element `i`.
    pub fn value(&self, i: u32) -> f32 {
        self.mean + self.half_width * self.unit(i)
    }

    /// Elements 0..n, in parallel (up to 8 threads; the values do not depend on how many).
    pub fn values(&self, n: usize) -> Vec<f32> {
        assert!(n <= 1 << 32, "a synthetic tensor of {n} elements exceeds 32-bit indexing");
        let mut v = vec![0f32; n];
        let fill = |first: usize, part: &mut [f32]| part.iter_mut().enumerate().for_each(|(k, x)| *x = self.value((first + k) as u32));
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(8);
        if n < 1 << 18 || threads == 1 {
            fill(0, &mut v);
            return v;
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            for (t, part) in v.chunks_mut(per).enumerate() {
                let fill = &fill;
                s.spawn(move || fill(t * per, part));
            }
        });
        v
    }
}

/// A well-mixing 32-bit integer hash (Wellons' "lowbias32").
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// Whether elements at `strides` lie densely in row-major order (size-1 dims may have any stride).
pub fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

/// What a text file saved under a weights name is, with the way to the weights: a Git LFS
/// pointer (a clone made without git-lfs) or a web page (a download that saved a sign-in or
/// error page); `None` for anything else.
fn text_in_place_of_weights(data: &[u8]) -> Option<&'static str> {
    let head = &data[..data.len().min(64)];
    if head.starts_with(b"version https://git-lfs.github.com/spec/") {
        return Some(
            "a Git LFS pointer, not the file's contents: the repository was cloned without git-lfs; run `git lfs install && git lfs pull` \
             in the clone (the DiffVSR release: `diffvsr-wgpu fetch-weights` gets it)",
        );
    }
    let text = String::from_utf8_lossy(head).trim_start().to_ascii_lowercase();
    (text.starts_with("<!doctype html") || text.starts_with("<html")).then_some(
        "a web page, not the file's contents: a download that saved a sign-in or error page; download it again (the DiffVSR release: `diffvsr-wgpu fetch-weights` checks sizes and hashes)",
    )
}

/// The elements of a strided view of `storage` (elements of `es` bytes) in row-major order.
/// The view must have been checked to lie inside the storage.
fn gather<'a>(
    storage: &'a [u8],
    es: usize,
    shape: &[usize],
    strides: Option<&[usize]>,
    offset: usize,
) -> Cow<'a, [u8]> {
    let numel: usize = shape.iter().product();
    if numel == 0 {
        // An empty view's offset may lie past its storage (PyTorch allows it): nothing to read.
        return Cow::Borrowed(&[]);
    }
    let Some(strides) = strides else {
        return Cow::Borrowed(&storage[offset * es..(offset + numel) * es]);
    };
    let mut out = Vec::with_capacity(numel * es);
    // Copy the innermost dimension as one run when it is dense.
    let nd = shape.len();
    let (run, outer) = if strides[nd - 1] == 1 { (shape[nd - 1], nd - 1) } else { (1, nd) };
    let mut idx = vec![0usize; outer];
    loop {
        let base = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[base * es..(base + run) * es]);
        let mut d = outer;
        loop {
            if d == 0 {
                return Cow::Owned(out);
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Elements of `dtype` as f32. Integers must be exact in f32 (|x| ≤ 2^24).
pub fn to_f32(bytes: &[u8], dtype: FileDtype) -> Result<Vec<f32>> {
    fn ints<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> i64) -> Result<Vec<f32>> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let v = f(c.try_into().unwrap());
                if v.unsigned_abs() > 1 << 24 {
                    bail!("integer {v} is not exact in f32");
                }
                Ok(v as f32)
            })
            .collect()
    }
    Ok(match dtype {
        FileDtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        FileDtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        FileDtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        FileDtype::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        FileDtype::I64 => ints::<8>(bytes, i64::from_le_bytes)?,
        FileDtype::I32 => ints::<4>(bytes, |c| i32::from_le_bytes(c) as i64)?,
        FileDtype::I16 => ints::<2>(bytes, |c| i16::from_le_bytes(c) as i64)?,
        FileDtype::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        FileDtype::U8 | FileDtype::BOOL => bytes.iter().map(|&b| b as f32).collect(),
        other => bail!("unsupported dtype {other:?} (expected f32, f16, bf16, f64 or an integer type)"),
    })
}

/// Writes f32 tensors as a safetensors file (used by `forward` outputs and tests).
pub fn save_f32(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            Ok((n.to_string(), safetensors::tensor::TensorView::new(FileDtype::F32, s.to_vec(), bytemuck::cast_slice(d))?))
        })
        .collect::<Result<_>>()?;
    write_safetensors(path, views, None)
}

/// Refuses an output path that cannot be written as a file made whole and renamed into place:
/// a folder, something other than a regular file (a device, a named pipe), or a path in a
/// folder that does not exist. Before the work, so a long run does not fail at its end.
pub fn check_output_file(output: &Path) -> Result<()> {
    if output.is_dir() {
        bail!("output {} is a folder: give the file to write, e.g. {}", output.display(), output.join("model.safetensors").display());
    }
    if std::fs::metadata(output).is_ok_and(|m| !m.is_file()) {
        bail!("output {} is not a regular file (a device or a named pipe): give the path of a file to write", output.display());
    }
    check_output_folder(output)
}

/// Refuses an output path that is a folder, or in a folder that does not exist, naming it
/// (before the work).
pub fn check_output_folder(output: &Path) -> Result<()> {
    if output.is_dir() {
        bail!("output {} is a folder: give the path of a file to write in it", output.display());
    }
    let folder = output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        bail!("output {}: there is no folder {}; create it first", output.display(), folder.display());
    }
    Ok(())
}

/// Temporary files and folders of writes under way, removed by [`remove_temporaries`] when a
/// stop signal ends the process mid-write.
static WRITING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the temporary files and folders of the writes under way (a stop signal's handler
/// calls it before the process exits: a conversion's temporary files are gigabytes).
pub fn remove_temporaries() {
    remove_temporaries_where(|_| true);
}

/// [`remove_temporaries`] for those `which` picks.
fn remove_temporaries_where(which: impl Fn(&Path) -> bool) {
    let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    // Removed under the lock (a stop signal's handler, another thread, waits, then finds them
    // gone), newest first: a write's folder before the file its copy is renamed to (fetch's).
    for p in writing.iter().rev().filter(|p| which(p)) {
        remove_path(p);
    }
    writing.retain(|p| !which(p));
}

/// Removes a file, or a folder with what it holds; what is not there is no error.
pub(crate) fn remove_path(p: &Path) {
    let _ = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    };
}

/// Registers a temporary file or folder a write under way fills (removed by a stop signal's
/// handler until [`written_temporary`]).
pub fn writing_temporary(p: &Path) {
    WRITING.lock().unwrap_or_else(|e| e.into_inner()).push(p.to_path_buf());
}

/// The write into `p` ended: forgets it, and where it `failed` removes what it left.
pub fn written_temporary(p: &Path, failed: bool) {
    if failed {
        remove_temporaries_where(|q| q == p);
    } else {
        WRITING.lock().unwrap_or_else(|e| e.into_inner()).retain(|q| q != p);
    }
}

/// Writes a safetensors file as a finished whole: in a temporary folder beside `output`
/// (`.NAME.tmpPID`, where safetensors also makes its own temporary file), renamed when complete
/// (a failed or interrupted write never leaves a partial file under the output's name, and
/// removes the folder; a stop signal's handler does too, [`remove_temporaries`]), with the
/// permissions any new file gets here
/// (the umask's, as `cp` or `torch.save` would give it: safetensors itself writes through a
/// private temporary file, mode 0600). A folder, a device or a named pipe as the output is
/// refused by name (renaming over it would replace it: `/dev/null` as root); a link to an
/// existing file is followed, so that file is written (a dangling link is replaced).
pub fn write_safetensors<S, V, I>(output: &Path, data: I, meta: Option<HashMap<String, String>>) -> Result<()>
where
    S: AsRef<str> + Ord + std::fmt::Display,
    V: safetensors::tensor::View,
    I: IntoIterator<Item = (S, V)>,
{
    // A link is followed to its file (resolved only then: on Windows a resolved path is a
    // verbatim `\\?\C:\…`, which would show in every message).
    let resolved = std::fs::symlink_metadata(output).ok().filter(|m| m.file_type().is_symlink()).and_then(|_| std::fs::canonicalize(output).ok());
    let output = resolved.as_deref().unwrap_or(output);
    check_output_file(output)?;
    let file_name = output.file_name().with_context(|| format!("output {} has no file name", output.display()))?;
    let tmp_dir = output.with_file_name(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    // What a killed run of the same PID left (a container's PID is often 1): a folder, or a
    // file from before writes went into one.
    remove_path(&tmp_dir);
    // Named as the output the user gave (the hidden folder means nothing to them).
    std::fs::create_dir(&tmp_dir).map_err(|e| {
        let folder = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                anyhow::anyhow!("output {}: cannot write in {} ({e}): give a path in a folder you can write to", output.display(), folder.display())
            }
            _ => anyhow::anyhow!("output {}: cannot make the temporary folder it is written in, in {} ({e})", output.display(), folder.display()),
        }
    })?;
    writing_temporary(&tmp_dir);
    let tmp = tmp_dir.join(file_name);
    let permissions = std::fs::File::create(&tmp)
        .and_then(|f| f.metadata())
        .map(|m| m.permissions())
        .with_context(|| format!("creating {}", tmp.display()));
    let written = permissions
        .and_then(|p| {
            safetensors::serialize_to_file(data, meta, &tmp).map_err(|e| write_error(output, e))?;
            std::fs::set_permissions(&tmp, p).with_context(|| format!("setting the permissions of {}", tmp.display()))
        })
        .and_then(|()| std::fs::rename(&tmp, output).with_context(|| format!("renaming {} to {}", tmp.display(), output.display())));
    // The folder is this write's alone (its file renamed away or failed): removed either way.
    written_temporary(&tmp_dir, true);
    written
}

/// A failed safetensors write, as one message: safetensors' I/O error says its cause and also
/// hands it on as its source, so a chained report would print the OS error twice.
fn write_error(path: &Path, e: safetensors::SafeTensorError) -> anyhow::Error {
    anyhow::anyhow!("writing {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Git LFS pointer or a web page saved under a weights name says what it is and how to
    /// get the weights (not "not a valid safetensors file … download it again", which a clone
    /// without git-lfs repeats).
    #[test]
    fn text_in_place_of_weights_says_what_it_is() {
        let p = tmp("DiffVSR_UNet.pt");
        std::fs::write(&p, "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 3836789143\n").unwrap();
        let e = WeightStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("DiffVSR_UNet.pt") && e.contains("Git LFS pointer") && e.contains("git lfs pull") && e.contains("fetch-weights"), "{e}");
        std::fs::write(&p, "YUV4MPEG2 W64 H48 F25:1 Ip C420jpeg\nFRAME\n").unwrap();
        let e = WeightStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("neither a PyTorch checkpoint nor a safetensors file (it begins \"YUV4MPEG2 W64 H4\")"), "{e}");
        // A file of zeros (a preallocated download cut off) is called damaged.
        std::fs::write(&p, [0u8; 4096]).unwrap();
        let e = WeightStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("download it again"), "{e}");
        // A safetensors file cut inside its header is still called damaged.
        std::fs::write(&p, [&16u64.to_le_bytes()[..], b"{\"a\":"].concat()).unwrap();
        let e = WeightStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("not a valid safetensors file") && e.contains("download it again"), "{e}");
        std::fs::write(&p, "\n  <!DOCTYPE html>\n<html><body>Sign in</body></html>").unwrap();
        let e = WeightStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("a web page"), "{e}");
        std::fs::write(&p, "<HTML><head>").unwrap();
        assert!(WeightStore::open(&p).err().unwrap().to_string().contains("a web page"));
    }

    fn tmp(name: &str) -> PathBuf {
        crate::testutil::scratch_dir("weights").join(name)
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
        assert!(e.contains("x.bias") && e.contains("a.safetensors"), "{e}");
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
            let want = if cut == 0 { "is empty (0 bytes)" } else { "not a valid safetensors file" };
            assert!(e.contains(want), "cut {cut}: {e}");
        }
        std::fs::write(&p, b"garbage garbage garbage").unwrap();
        assert!(WeightStore::open(&p).is_err());
    }

    #[test]
    fn strided_views_gather_in_row_major_order() {
        let seed = crate::testutil::fresh_seed();
        let mut rng = crate::rng::Rng::new(seed);
        for case in 0..300 {
            let nd = rng.below(5) as usize;
            let shape: Vec<usize> = (0..nd).map(|_| rng.below(5) as usize + usize::from(case % 7 != 0)).collect();
            // Half the cases contiguous (the borrowed path), the rest arbitrary strides,
            // including 0 (expanded views) and overlapping ones.
            let strides: Vec<usize> = if case % 2 == 0 {
                let mut st = vec![1usize; nd];
                for d in (0..nd.saturating_sub(1)).rev() {
                    st[d] = st[d + 1] * shape[d + 1];
                }
                st
            } else {
                (0..nd).map(|_| rng.below(8) as usize).collect()
            };
            let offset = rng.below(6) as usize;
            let es = [1, 2, 4, 8][rng.below(4) as usize];
            let extent = shape.iter().zip(&strides).map(|(&d, &s)| d.saturating_sub(1) * s).sum::<usize>();
            let storage: Vec<u8> = (0..(offset + extent + 1) * es).map(|_| rng.below(256) as u8).collect();
            let numel: usize = shape.iter().product();
            let mut want = Vec::new();
            for flat in 0..numel {
                let (mut rem, mut at) = (flat, offset);
                for d in (0..nd).rev() {
                    at += (rem % shape[d]) * strides[d];
                    rem /= shape[d];
                }
                want.extend_from_slice(&storage[at * es..(at + 1) * es]);
            }
            let st = (!is_contiguous(&shape, &strides)).then_some(&strides[..]);
            let got = gather(&storage, es, &shape, st, offset);
            assert_eq!(
                got.as_ref(),
                &want[..],
                "seed {seed} case {case}: shape {shape:?} strides {strides:?} offset {offset}"
            );
        }
    }

    /// safetensors 0.8 accepts sub-byte dtypes (F4, F6_*); using one is an error naming the
    /// tensor and the file, in the store and in `convert` (never a panic, never blamed on the
    /// output file).
    #[test]
    fn sub_byte_dtypes_are_refused_by_name() {
        let seed = crate::testutil::fresh_seed();
        let mut rng = crate::testutil::Rng::new(seed);
        for (dt, name) in [(FileDtype::F4, "f4"), (FileDtype::F6_E2M3, "f6a"), (FileDtype::F6_E3M2, "f6b")] {
            let p = tmp(&format!("{name}.safetensors"));
            let shape = vec![3usize, 8];
            let bytes: Vec<u8> = (0..24 * dt.bitsize() / 8).map(|_| rng.below(256) as u8).collect();
            let ok: Vec<f32> = rng.normals(4, 1.0);
            let views = vec![
                ("packed.weight", safetensors::tensor::TensorView::new(dt, shape.clone(), &bytes).unwrap()),
                ("fine", safetensors::tensor::TensorView::new(FileDtype::F32, vec![4], bytemuck::cast_slice(&ok)).unwrap()),
            ];
            safetensors::serialize_to_file(views, None, &p).unwrap();
            let mut s = WeightStore::open(&p).unwrap();
            assert_eq!(s.take("fine", &[4]).unwrap(), ok);
            for e in [s.take("packed.weight", &shape).unwrap_err(), s.raw("packed.weight").err().unwrap()] {
                let e = format!("{e:#}");
                assert!(e.contains("'packed.weight'") && e.contains(&format!("{name}.safetensors")) && e.contains(&format!("{dt:?}")), "{e}");
            }
            let out = tmp(&format!("{name}-out.safetensors"));
            let e = format!("{:#}", crate::checkpoint::convert::convert(&p, &out, None, None).unwrap_err());
            assert!(e.contains("'packed.weight'") && e.contains(&format!("{name}.safetensors")) && !e.contains("-out"), "{e}");
            assert!(!out.exists());
        }
    }

    /// Integers convert by value where any tensor may be taken (inputs: timesteps, token ids),
    /// but once a model's loader has the store, an integer weight (a quantised checkpoint) is
    /// refused by name and dtype, never loaded as its integers.
    #[test]
    fn integer_weights_are_refused_once_a_model_loads() {
        let p = tmp("ints.safetensors");
        let q: Vec<i16> = vec![3, -7, 100];
        let views = vec![("conv.weight", safetensors::tensor::TensorView::new(FileDtype::I16, vec![3], bytemuck::cast_slice(&q)).unwrap())];
        safetensors::serialize_to_file(views, None, &p).unwrap();
        let mut s = WeightStore::open(&p).unwrap();
        assert_eq!(s.take("conv.weight", &[3]).unwrap(), vec![3.0, -7.0, 100.0]);
        let mut s = WeightStore::open(&p).unwrap();
        s.model_weights();
        let e = format!("{:#}", s.take("conv.weight", &[3]).unwrap_err());
        assert!(e.contains("'conv.weight'") && e.contains("I16") && e.contains("quantised"), "{e}");
    }

    /// `forward --output` and `encode-prompt` write as `convert` does: the permissions of any
    /// new file (not safetensors' private 0600), no temporary file left, a folder refused.
    #[cfg(unix)]
    #[test]
    fn written_files_get_a_new_files_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp("perm.safetensors");
        save_f32(&p, &[("w", &[2], &[1.0, 2.0])]).unwrap();
        let probe = tmp("probe");
        let fresh = std::fs::File::create(&probe).unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, fresh & 0o777);
        let dir = p.parent().unwrap();
        assert!(!std::fs::read_dir(dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".perm.safetensors.tmp")));
        let e = format!("{:#}", save_f32(dir, &[("w", &[1], &[1.0])]).unwrap_err());
        assert!(e.contains("is a folder"), "{e}");
    }

    /// A device or a named pipe is refused, not replaced by a file renamed over it (as root,
    /// `/dev/null` would be); a link is written through to the file it names; a missing folder
    /// is named, not a temporary file in it.
    #[cfg(unix)]
    #[test]
    fn written_files_replace_only_files() {
        let e = format!("{:#}", save_f32(Path::new("/dev/null"), &[("w", &[1], &[1.0])]).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null is still a device");
        let target = tmp("target.safetensors");
        save_f32(&target, &[("w", &[1], &[1.0])]).unwrap();
        let link = tmp("link.safetensors");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        save_f32(&link, &[("w", &[2], &[3.0, 4.0])]).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(WeightStore::open(&target).unwrap().take("w", &[2]).unwrap(), vec![3.0, 4.0]);
        let missing = tmp("no-such-folder").join("out.safetensors");
        let e = format!("{:#}", save_f32(&missing, &[("w", &[1], &[1.0])]).unwrap_err());
        assert!(e.contains("there is no folder") && !e.contains(".tmp"), "{e}");
        // A JSON or SVG path (checked for its folder only) that is a folder is refused too.
        let e = format!("{:#}", check_output_folder(&tmp("x").with_file_name("")).unwrap_err());
        // A write under way keeps its temporary folder registered; a stop signal's handler
        // removes it (what the write left so far and safetensors' own temporary file inside).
        // (Only this test's: other tests write meanwhile.)
        let under_way = tmp(".stopped.safetensors.tmp1");
        std::fs::create_dir_all(&under_way).unwrap();
        std::fs::write(under_way.join(".tmpXyZ"), b"partial").unwrap();
        writing_temporary(&under_way);
        remove_temporaries_where(|p| p == under_way);
        assert!(!under_way.exists() && !WRITING.lock().unwrap().contains(&under_way));
        // A file where the write's temporary folder goes (left by a killed run of the same PID,
        // from before writes went into a folder) does not block the write.
        let out = tmp("blocked.safetensors");
        let left = out.with_file_name(format!(".blocked.safetensors.tmp{}", std::process::id()));
        std::fs::write(&left, b"left by a killed run").unwrap();
        save_f32(&out, &[("w", &[2], &[1.0, 2.0])]).unwrap();
        assert!(out.is_file() && !left.exists());
        assert!(e.contains("is a folder"), "{e}");
    }

    #[test]
    fn half_precision_tensors_convert() {
        let p = tmp("h.safetensors");
        let h: Vec<half::f16> = [1.5f32, -2.0, 0.25].iter().map(|&x| half::f16::from_f32(x)).collect();
        let b: Vec<half::bf16> = [1.5f32, -2.0, 0.25].iter().map(|&x| half::bf16::from_f32(x)).collect();
        let views = vec![
            ("h", safetensors::tensor::TensorView::new(FileDtype::F16, vec![3], bytemuck::cast_slice(&h)).unwrap()),
            ("b", safetensors::tensor::TensorView::new(FileDtype::BF16, vec![3], bytemuck::cast_slice(&b)).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &p).unwrap();
        let mut s = WeightStore::open(&p).unwrap();
        assert_eq!(s.take("h", &[3]).unwrap(), vec![1.5, -2.0, 0.25]);
        assert_eq!(s.take("b", &[3]).unwrap(), vec![1.5, -2.0, 0.25]);
    }

    /// An output whose temporary folder cannot be made names the output and its folder, not the
    /// hidden folder (here a name at the file system's 255-byte limit, which the folder's
    /// `.NAME.tmpPID` passes: as root too, unlike a folder without write permission).
    #[test]
    fn an_output_that_cannot_be_written_names_itself() {
        let p = tmp(&format!("{}.safetensors", "n".repeat(240)));
        let e = format!("{:#}", save_f32(&p, &[("a", &[1], &[1.0])]).unwrap_err());
        assert!(e.starts_with(&format!("output {}: cannot make the temporary folder", p.display())) && !e.contains(".tmp"), "{e}");
    }
}
