//! PyTorch checkpoints (`torch.save` files: `.pt`, `.pth`, `.bin`) read without Python.
//!
//! `torch.save` (PyTorch ≥ 1.6) writes an uncompressed zip archive: `<name>/data.pkl` (a pickle
//! of the saved object in which every tensor is `_rebuild_tensor_v2(storage, offset, size,
//! stride, …)` and every storage a persistent id naming the entry `<name>/data/<key>`), plus
//! `version`, `byteorder` and a few bookkeeping entries. [`open`] reads the pickle with the
//! restricted reader of [`pickle`] (no code runs, only allow-listed globals), picks the state dict
//! (see [`select`]) and returns, for each tensor, where its bytes lie in the file, so the caller
//! reads them straight from a memory map. Tensors may be strided views (transposes, slices) and
//! several tensors may share one storage.
//!
//! Element types: f32, f16 and bf16 (the weights), plus f64, integer and bool buffers that state
//! dicts carry (`position_ids`, BatchNorm's `num_batches_tracked`). The weight store converts
//! every one of them to f32 on request (integers only where exact); `convert` keeps integer
//! buffers as they are. Complex, quantized and float8 storages are refused by name.
//!
//! The legacy non-zip format (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`) is
//! detected and refused with instructions; so are big-endian archives.

pub mod convert;
pub mod pickle;

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use crate::dtype::FileDtype;

use pickle::{Items, Pickle, Value};

/// What a file's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A zip archive: `torch.save` since PyTorch 1.6.
    TorchZip,
    /// A bare pickle stream or tar archive: the legacy `torch.save` format.
    TorchLegacy,
    /// Anything else (a safetensors file starts with its header length).
    Other,
}

/// torch's legacy magic number 0x1950a86a20f9469cfc6c as a pickle LONG1: opcode, length, bytes.
const LEGACY_MAGIC: [u8; 12] = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Whether torch's magic number opens the pickle after its PROTO opcode: at once, or (protocol 4
/// and 5) after a FRAME opcode and its 8-byte length.
fn legacy_magic_after_proto(rest: &[u8]) -> bool {
    rest.get(..12) == Some(&LEGACY_MAGIC) || (rest.first() == Some(&0x95) && rest.get(9..21) == Some(&LEGACY_MAGIC))
}

/// The format of a file from its first bytes (512 are enough). Each check matches more than a
/// byte or two: a safetensors file starts with its header's length, any 8 bytes (a header of
/// 384 bytes starts `80 01`, as a pickle's PROTO 1 does), then `{`.
pub fn sniff(data: &[u8]) -> Format {
    if data.starts_with(b"PK\x03\x04") {
        Format::TorchZip
    } else if data.first() == Some(&0x80) && data.get(1).is_some_and(|&p| (2..=5).contains(&p)) && legacy_magic_after_proto(&data[2..]) {
        // Legacy files start with PROTO and torch's magic number as LONG1.
        Format::TorchLegacy
    } else if data.get(257..262) == Some(b"ustar") && data.get(8) != Some(&b'{') {
        // A tar archive (torch.save's oldest format); byte 8 is in its first member's name.
        Format::TorchLegacy
    } else {
        Format::Other
    }
}

pub fn legacy_error(path: &Path) -> anyhow::Error {
    anyhow!(
        "{} uses the legacy torch.save format (PyTorch < 1.6, or _use_new_zipfile_serialization=False), which is not \
         supported: re-save it with a recent PyTorch (python -c \"import torch; torch.save(torch.load('IN', weights_only=True), 'OUT.pt')\") \
         or convert it to safetensors with safetensors.torch.save_file",
        path.display()
    )
}

/// One tensor of a checkpoint: a strided view into a storage.
#[derive(Clone, Debug)]
pub struct TorchTensor {
    pub name: String,
    pub dtype: FileDtype,
    pub shape: Vec<usize>,
    /// In elements.
    pub strides: Vec<usize>,
    /// In elements, from the start of the storage.
    pub offset: usize,
    /// Index into [`TorchCheckpoint::storages`].
    pub storage: usize,
}

/// A storage: an uncompressed zip entry.
#[derive(Clone, Debug)]
pub struct TorchStorage {
    /// The zip entry's name, for messages.
    pub entry: String,
    /// Byte range of the entry's data within the file.
    pub range: Range<usize>,
    /// The CRC-32 the zip records for the entry.
    pub crc32: u32,
}

pub struct TorchCheckpoint {
    pub tensors: Vec<TorchTensor>,
    pub storages: Vec<TorchStorage>,
    /// Which (sub-)dict was taken as the state dict, and entries skipped because they are not
    /// tensors: said in `convert`'s summary and logged.
    pub notes: Vec<String>,
}

/// Reads the tensors of a `torch.save` zip archive held in `data` (the whole file).
///
/// `key` selects a sub-dict: `Some("ema")` for `{'ema': state_dict, …}`, `a/b` for nested
/// dicts. Without it, see [`select`].
pub fn open(path: &Path, data: &[u8], key: Option<&str>) -> Result<TorchCheckpoint> {
    match sniff(data) {
        Format::TorchZip => {}
        Format::TorchLegacy => return Err(legacy_error(path)),
        Format::Other => bail!("{} is not a PyTorch checkpoint (no zip archive)", path.display()),
    }
    let corrupt = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot read {} as a torch.save zip archive ({e}): it may be truncated or corrupt: download it again",
            path.display()
        )
    };
    check_zip_directory(data).map_err(|e| corrupt(&e))?;
    let mut zip = zip::ZipArchive::new(Cursor::new(data)).map_err(|e| corrupt(&e))?;

    let pkls: Vec<String> =
        zip.file_names().filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl")).map(str::to_string).collect();
    let pkl_name = match pkls.as_slice() {
        [one] => one.clone(),
        [] => bail!("{} is a zip archive without a data.pkl: not a torch.save checkpoint", path.display()),
        _ => {
            bail!("{} holds several data.pkl ({}): not a single torch.save checkpoint", path.display(), listed(pkls.iter().map(|n| shown(n)), pkls.len()))
        }
    };
    // The archive's name starts every entry's, and messages show entries whole.
    if pkl_name.len() > MAX_NAME_LEN || pkl_name.chars().any(char::is_control) {
        bail!("{}: its data.pkl is named '{}' ({} bytes): torch.save names it after the file; the file is corrupt", path.display(), shown(&pkl_name), pkl_name.len());
    }
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];

    if let Some(i) = zip.index_for_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        zip.by_index(i).map_err(|e| corrupt(&e))?.read_to_string(&mut s).map_err(|e| corrupt(&e))?;
        if s.trim() != "little" {
            bail!("{} was saved on a '{}'-endian machine: only little-endian checkpoints are supported", path.display(), shown(s.trim()));
        }
    }

    let mut pkl = Vec::new();
    {
        // Its method read raw first: the zip crate here decompresses nothing, and opening a
        // compressed entry would fail as a corrupt file.
        let index = zip.index_for_name(&pkl_name).ok_or_else(|| corrupt(&format!("no entry {pkl_name}")))?;
        let method = zip.by_index_raw(index).map_err(|e| corrupt(&e))?.compression();
        if method != zip::CompressionMethod::Stored {
            bail!("{}: {pkl_name} is compressed ({method}); torch.save stores entries uncompressed: was the file re-zipped?", path.display());
        }
        // Reading through the zip crate checks the entry's CRC.
        let mut f = zip.by_name(&pkl_name).map_err(|e| corrupt(&e))?;
        f.read_to_end(&mut pkl).map_err(|e| corrupt(&e))?;
    }
    let pk = pickle::unpickle(&pkl).with_context(|| format!("reading {pkl_name} in {}", path.display()))?;

    let (dict, mut notes) =
        select(&pk, key).with_context(|| format!("choosing the state dict in {}", path.display()))?;

    // Later keys win, as when Python builds the dict.
    let mut order: Vec<String> = Vec::new();
    let mut by_name: HashMap<String, &pickle::Tensor> = HashMap::new();
    // The entries skipped: how many, and the first few described (each description may scan a
    // dict, and a pickle may name one value from millions of entries).
    let (mut skipped, mut skipped_shown): (usize, Vec<String>) = (0, Vec::new());
    for (k, v) in dict {
        let name = match k {
            // Past this a key is no module path (messages show skipped ones through `shown`).
            Value::Str(s) if s.len() > MAX_NAME_LEN => {
                bail!("{}: a key of {} bytes ('{}'): torch writes module paths of a few hundred at most; the file is corrupt", path.display(), s.len(), shown(s));
            }
            Value::Str(s) => s,
            other => {
                skipped += 1;
                if skipped_shown.len() < LISTED {
                    skipped_shown.push(format!("<key {}>", pk.describe(other)));
                }
                continue;
            }
        };
        match pk.tensor(v) {
            // Messages show tensor names whole: a module path has no control characters.
            Some(_) if name.chars().any(char::is_control) => {
                bail!("{}: a tensor named '{}': torch writes module paths, without control characters; the file is corrupt", path.display(), shown(name));
            }
            Some(t) => {
                if by_name.insert(name.to_string(), t).is_none() {
                    order.push(name.to_string());
                }
            }
            None => {
                // A later value replaces an earlier tensor of the key, as in Python (`order`
                // drops it below).
                by_name.remove(&**name);
                skipped += 1;
                if skipped_shown.len() < LISTED {
                    let hint = if pk.dict(v).is_some_and(|d| d.iter().any(|(_, x)| pk.tensor(x).is_some())) { " (select it with --key)" } else { "" };
                    skipped_shown.push(format!("{} ({}){hint}", shown(name), pk.describe(v)));
                }
            }
        }
    }
    // Each key once, at its first place (Python keeps a key where it was first set), if its
    // last value is a tensor.
    let mut placed = std::collections::HashSet::new();
    order.retain(|n| by_name.contains_key(n) && placed.insert(n.clone()));
    let skipped_list = listed(skipped_shown.into_iter(), skipped);
    if skipped > 0 {
        notes.push(format!("skipped {skipped} non-tensor entr{}: {skipped_list}", if skipped == 1 { "y" } else { "ies" }));
    }

    if order.is_empty() {
        bail!("{}: the chosen dict holds no tensors; it holds: {skipped_list}", path.display());
    }

    let mut storages: Vec<TorchStorage> = Vec::new();
    let mut storage_index: HashMap<std::rc::Rc<str>, usize> = HashMap::new();
    let mut tensors = Vec::with_capacity(order.len());
    let mut all_views = 0usize;
    for name in order {
        let t = by_name[&name];
        let st = &t.storage;
        let si = match storage_index.get(&st.key) {
            Some(&i) => i,
            None => {
                let entry = format!("{prefix}data/{}", st.key);
                let i = zip.index_for_name(&entry).ok_or_else(|| {
                    anyhow!(
                        "{}: storage {entry} of tensor '{name}' is missing from the archive: the file is corrupt",
                        path.display()
                    )
                })?;
                let f = zip.by_index_raw(i).map_err(|e| corrupt(&e))?;
                if f.compression() != zip::CompressionMethod::Stored || f.encrypted() {
                    bail!(
                        "{}: storage {entry} is compressed or encrypted; torch.save stores entries uncompressed",
                        path.display()
                    );
                }
                let start = f.data_start().ok_or_else(|| corrupt(&format!("no data offset for {entry}")))?;
                let (start, len) = (usize::try_from(start)?, usize::try_from(f.size())?);
                let end = start.checked_add(len).filter(|&e| e <= data.len()).ok_or_else(|| {
                    corrupt(&format!(
                        "{entry} runs past the end of the file ({len} bytes at {start}, file is {})",
                        data.len()
                    ))
                })?;
                storages.push(TorchStorage { entry, range: start..end, crc32: f.crc32() });
                storage_index.insert(st.key.clone(), storages.len() - 1);
                storages.len() - 1
            }
        };
        let s = &storages[si];
        let es = crate::dtype::file_elem_size(st.dtype);
        let bytes_needed = st.numel.checked_mul(es);
        if bytes_needed.is_none_or(|b| b > s.range.len()) {
            bail!(
                "{}: storage {} holds {} bytes, but the pickle says {} elements of {:?}: the file is corrupt",
                path.display(),
                s.entry,
                s.range.len(),
                st.numel,
                st.dtype
            );
        }
        check_view(&t.shape, &t.strides, t.offset, st.numel, es, max_view_bytes(data.len())).with_context(|| {
            format!(
                "{}: tensor '{name}' (shape {:?}, stride {:?}, offset {})",
                path.display(),
                t.shape,
                t.strides,
                t.offset
            )
        })?;
        // Together too: one expanded view under many names (a memoised pickle value costs a few
        // bytes a name) would otherwise multiply what `convert` writes without bound.
        let view_bytes = t.shape.iter().product::<usize>() * es;
        all_views = all_views.saturating_add(view_bytes);
        if all_views > max_view_bytes(data.len()) {
            bail!(
                "{}: the tensors up to '{name}' hold {all_views} bytes together, more than {VIEW_EXPANSION}x the file's size plus 16 MiB: \
                 views repeat their storages over and over (the same expanded view under many names); refusing to materialise them",
                path.display()
            );
        }
        tensors.push(TorchTensor {
            name,
            dtype: st.dtype,
            shape: t.shape.clone(),
            strides: t.strides.clone(),
            offset: t.offset,
            storage: si,
        });
    }
    for n in &notes {
        log::info!("{}: {n}", path.display());
    }
    Ok(TorchCheckpoint { tensors, storages, notes })
}

/// The longest tensor name taken (bytes): module paths are a few hundred at most, and a pickle
/// could name a memoised string of megabytes from millions of entries.
pub const MAX_NAME_LEN: usize = 1024;

/// How many entries a message lists before "… and N more".
const LISTED: usize = 20;

/// A name from the file as a message shows it: at most 80 characters, control characters
/// escaped (a name could clear the terminal or fake an output line).
pub fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(80).flat_map(|c| if c.is_control() { c.escape_debug().collect::<Vec<_>>() } else { vec![c] }).collect();
    if name.chars().nth(80).is_some() {
        s.push('…');
    }
    s
}

/// The first [`LISTED`] of `items` (of `total`), joined, with how many more there are.
pub(crate) fn listed(items: impl Iterator<Item = String>, total: usize) -> String {
    let v: Vec<String> = items.take(LISTED).collect();
    let more = total.saturating_sub(v.len());
    if more > 0 {
        format!("{}, … and {more} more", v.join(", "))
    } else {
        v.join(", ")
    }
}

/// A materialised view may hold at most this many times the file's bytes (plus
/// [`VIEW_FLOOR`]): views that overlap themselves (`expand`, stride 0) are the only way a tensor
/// can be larger than its storage, and no checkpoint needs them to be much larger.
pub const VIEW_EXPANSION: usize = 4;
pub const VIEW_FLOOR: usize = 16 << 20;

/// The largest materialised view (in bytes) a file of `file_len` bytes may declare.
pub fn max_view_bytes(file_len: usize) -> usize {
    file_len.saturating_mul(VIEW_EXPANSION).saturating_add(VIEW_FLOOR)
}

/// At most this many zip entries (a checkpoint has a few per tensor storage).
pub const MAX_ZIP_ENTRIES: u64 = 1 << 20;

/// Checks the entry count the zip's end-of-central-directory record declares against the bytes
/// of the directory (each entry takes at least 46) and [`MAX_ZIP_ENTRIES`], before the zip reader
/// allocates for that many entries. Leaves everything else (a missing record too) to the reader.
fn check_zip_directory(data: &[u8]) -> Result<()> {
    const EOCD: &[u8] = b"PK\x05\x06";
    let tail = data.len().saturating_sub(22 + 0xffff);
    let Some(at) = data[tail..].windows(4).rposition(|w| w == EOCD).map(|i| tail + i) else { return Ok(()) };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, &x| a << 8 | x as u64);
    let Some(rec) = data.get(at..at + 22) else { return Ok(()) };
    let (mut entries, mut dir_len) = (le(&rec[10..12]), le(&rec[12..16]));
    if entries == 0xffff || dir_len == 0xffff_ffff {
        // zip64: the locator just before the record points at the zip64 record.
        let loc = at.checked_sub(20).and_then(|l| data.get(l..l + 20)).filter(|l| l.starts_with(b"PK\x06\x07"));
        let rec64 = loc.and_then(|l| usize::try_from(le(&l[8..16])).ok()).and_then(|o| data.get(o..o.checked_add(56)?));
        if let Some(r) = rec64.filter(|r| r.starts_with(b"PK\x06\x06")) {
            (entries, dir_len) = (le(&r[32..40]), le(&r[40..48]));
        }
    }
    if entries > MAX_ZIP_ENTRIES || entries.saturating_mul(46) > dir_len.min(data.len() as u64) {
        bail!(
            "the zip directory declares {entries} entries in {dir_len} bytes (file of {} bytes): more than it can hold",
            data.len()
        );
    }
    Ok(())
}

/// Checks that a strided view stays inside its storage of `numel` elements of `es` bytes, and
/// that materialising it takes at most `max_bytes`.
fn check_view(shape: &[usize], strides: &[usize], offset: usize, numel: usize, es: usize, max_bytes: usize) -> Result<()> {
    let count =
        shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("element count overflows"))?;
    if count == 0 {
        return Ok(());
    }
    let bytes = count.checked_mul(es).filter(|&b| b <= max_bytes);
    if bytes.is_none() {
        bail!(
            "the view holds {count} elements of {es} bytes, read from a storage of {numel}: more than {VIEW_EXPANSION}x the \
             file's size plus 16 MiB, which only an expanded (stride-0) view can do; refusing to materialise it (re-save the tensor \
             with .clone() or as safetensors)"
        );
    }
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(strides) {
        last = (d - 1).checked_mul(s).and_then(|x| x.checked_add(last)).ok_or_else(|| anyhow!("extent overflows"))?;
    }
    if last >= numel {
        bail!("reads element {last} of a storage of {numel}: the file is corrupt");
    }
    Ok(())
}

/// Picks the state dict inside the unpickled object.
///
/// With `key` (`ema`, or `a/b` for nested dicts) that entry is taken and must be a dict.
/// Without it:
/// 1. a top-level dict that holds tensors is the state dict (TE-3DVAE.pt, UAV's `.bin`s,
///    diffusers and `nn.Module.state_dict()` files);
/// 2. otherwise the top-level entries that are dicts holding tensors are candidates: exactly one
///    is taken (`{'state_dict': …, 'epoch': 3}`); among several, `ema` is taken if present,
///    because EMA weights are the ones meant for inference and what DiffVSR's loader reads from
///    `DiffVSR_UNet.pt` (`torch.load(…)['ema']`); otherwise the choice is an error listing them.
pub fn select<'p>(pk: &'p Pickle, key: Option<&str>) -> Result<(&'p Items, Vec<String>)> {
    let Some(top) = pk.dict(&pk.root) else {
        bail!("the checkpoint holds a {}, not a dict of tensors", pk.describe(&pk.root));
    };
    let entries = |d: &Items| -> String {
        let v = d.iter().map(|(k, v)| match k {
            Value::Str(s) => format!("'{}' ({})", shown(s), pk.describe(v)),
            k => format!("{} ({})", pk.describe(k), pk.describe(v)),
        });
        listed(v, d.len())
    };
    let get =
        |d: &'p Items, k: &str| d.iter().rev().find(|(kk, _)| matches!(kk, Value::Str(s) if &**s == k)).map(|(_, v)| v);
    // Each dict scanned once: a pickle may name one large dict from many entries (memoised).
    let scanned = std::cell::RefCell::new(HashMap::<*const Items, bool>::new());
    let holds_tensors = |d: &Items| *scanned.borrow_mut().entry(d as *const Items).or_insert_with(|| d.iter().any(|(_, v)| pk.tensor(v).is_some()));

    if let Some(key) = key {
        let mut cur = top;
        for part in key.split('/') {
            let Some(v) = get(cur, part) else {
                bail!("no entry '{part}' (of --key {key}); the dict holds: {}", entries(cur));
            };
            cur = pk
                .dict(v)
                .ok_or_else(|| anyhow!("entry '{part}' (of --key {key}) is a {}, not a dict", pk.describe(v)))?;
        }
        return Ok((cur, vec![format!("state dict: entry '{key}'")]));
    }
    if holds_tensors(top) {
        return Ok((top, Vec::new()));
    }
    // A key given twice names its last value, as when Python builds the dict.
    let mut candidates: Vec<(&str, &'p Items)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in top.iter().rev() {
        if let Value::Str(s) = k {
            if seen.insert(&**s) {
                if let Some(d) = pk.dict(v).filter(|d| holds_tensors(d)) {
                    candidates.push((&**s, d));
                }
            }
        }
    }
    candidates.reverse();
    match candidates.as_slice() {
        [] => bail!("no tensors at the top level or one level down; the checkpoint holds: {}", entries(top)),
        [(name, d)] => Ok((d, vec![format!("state dict: entry '{name}' (the only dict of tensors)")])),
        many => {
            let names = listed(many.iter().map(|(n, _)| shown(n)), many.len());
            match many.iter().find(|(n, _)| *n == "ema") {
                Some((_, d)) => Ok((d, vec![format!("state dict: entry 'ema' (EMA weights, preferred among {names})")])),
                None => bail!("the checkpoint holds several state dicts ({names}): choose one with convert's --key (diffvsr-wgpu convert IN OUT --key NAME), then give OUT"),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Against the files of `tools/golden_checkpoints.py` (tests/data/checkpoints): each `.pt`
    //! must give exactly the tensors torch itself saved beside it as safetensors.

    use super::*;
    use crate::weights::WeightStore;
    use crate::dtype::DType;
    use std::path::PathBuf;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoints").join(name)
    }

    fn tmp(name: &str) -> PathBuf {
        crate::testutil::scratch_dir("checkpoint").join(name)
    }

    fn open_err(path: &Path, key: Option<&str>) -> String {
        match WeightStore::open_with_key(path, key) {
            Ok(_) => panic!("{} opened, but should fail", path.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Same names, dtypes, shapes and bytes.
    fn assert_same(got: &WeightStore, want: &WeightStore, what: &str) {
        assert_eq!(got.keys(), want.keys(), "{what}: tensor names");
        for k in want.keys() {
            let (g, w) = (got.raw(&k).unwrap(), want.raw(&k).unwrap());
            assert_eq!((g.dtype, g.shape), (w.dtype, w.shape), "{what}: {k}");
            assert!(g.data == w.data, "{what}: values of {k} differ");
        }
    }

    #[test]
    fn plain_state_dict_matches_torch() {
        let want = WeightStore::open(&data("plain.safetensors")).unwrap();
        for f in ["plain.pt", "plain_p5.pt"] {
            let mut got = WeightStore::open(&data(f)).unwrap();
            assert_same(&got, &want, f);
            assert!(got.notes().is_empty(), "{:?}", got.notes());
            // Through take(): f32 values, integer buffers included.
            let ids = got.take("position_ids", &[1, 77]).unwrap();
            assert_eq!(ids, (0..77).map(|i| i as f32).collect::<Vec<_>>());
            assert_eq!(got.take("scalar", &[]).unwrap(), vec![2.5]);
            assert_eq!(got.take("empty", &[0, 4]).unwrap(), Vec::<f32>::new());
        }
        // The file really holds strided views and a shared storage (else the test means little).
        let bytes = std::fs::read(data("plain.pt")).unwrap();
        let ck = open(&data("plain.pt"), &bytes, None).unwrap();
        let t = |n: &str| ck.tensors.iter().find(|t| t.name == n).unwrap().clone();
        assert_eq!((t("transposed").shape, t("transposed").strides), (vec![9, 6], vec![1, 9]));
        assert_eq!((t("sliced").offset, t("sliced").strides), (9, vec![9, 3]));
        let (a, b) = (t("shared_a"), t("shared_b"));
        assert_eq!((a.storage, a.offset, b.offset), (b.storage, 2, 10));
        assert_eq!(t("bf").dtype, FileDtype::BF16);
        assert_eq!(t("half_t").strides, vec![1, 3]);
        assert_eq!(t("expanded").strides, vec![1, 0]);
    }

    #[test]
    fn sub_dicts_are_selected() {
        let ema = WeightStore::open(&data("ema.safetensors")).unwrap();
        let auto = WeightStore::open(&data("ema.pt")).unwrap();
        assert_same(&auto, &ema, "ema.pt");
        assert!(auto.notes()[0].contains("entry 'ema'"), "{:?}", auto.notes());
        assert_same(&WeightStore::open_with_key(&data("ema.pt"), Some("ema")).unwrap(), &ema, "ema.pt --key ema");
        let e = open_err(&data("ema.pt"), Some("step"));
        assert!(e.contains("'step'") && e.contains("int 5, not a dict"), "{e}");

        // Two state dicts: 'ema' is preferred, the other one is reachable by key.
        let multi = WeightStore::open(&data("multi.pt")).unwrap();
        assert_same(&multi, &WeightStore::open(&data("multi_ema.safetensors")).unwrap(), "multi.pt");
        assert!(multi.notes()[0].contains("preferred"), "{:?}", multi.notes());
        let sd = WeightStore::open_with_key(&data("multi.pt"), Some("state_dict")).unwrap();
        assert_same(
            &sd,
            &WeightStore::open(&data("multi_state_dict.safetensors")).unwrap(),
            "multi.pt --key state_dict",
        );
        let e = open_err(&data("multi.pt"), Some("nope"));
        assert!(
            e.contains("no entry 'nope'")
                && e.contains("'state_dict' (dict of 2 entries, 2 tensors)")
                && e.contains("'epoch' (int 3)"),
            "{e}"
        );
        let e = open_err(&data("multi.pt"), Some("optimizer"));
        assert!(e.contains("holds no tensors") && e.contains("param_groups"), "{e}");
        let e = open_err(&data("multi.pt"), Some("optimizer/state/0"));
        assert!(e.contains("no entry '0'"), "{e}");
        let e = open_err(&data("plain.safetensors"), Some("ema"));
        assert!(e.contains("safetensors file"), "{e}");
    }

    #[test]
    fn module_state_dict_and_diffusers_folder() {
        let want = WeightStore::open(&data("module.safetensors")).unwrap();
        let mut got = WeightStore::open(&data("module.pt")).unwrap();
        assert_same(&got, &want, "module.pt");
        assert_same(&WeightStore::open(&data("diffusers_bin")).unwrap(), &want, "diffusers_bin/");
        assert_eq!(got.take("bn.num_batches_tracked", &[]).unwrap(), vec![3.0]);
        let e = got.take("conv.weight", &[4, 3, 3]).unwrap_err().to_string();
        assert!(e.contains("conv.weight") && e.contains("[4, 3, 3, 3]") && e.contains("module.pt"), "{e}");
        let e = got.finish().unwrap_err().to_string();
        assert!(e.contains("unexpected tensor"), "{e}");
    }

    /// A safetensors file whose header length reads as a pickle's PROTO (a 384-byte header:
    /// `80 01 00 …`) or that holds "ustar" where a tar archive has it is safetensors, not a
    /// legacy checkpoint; the legacy files are still found.
    #[test]
    fn safetensors_headers_that_look_like_legacy_files_are_safetensors() {
        for (name, len) in [("n", 384usize), ("ustar", 640)] {
            let mut json = format!("{{\"{name}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}}}");
            if name == "ustar" {
                // "ustar" as a key at byte 257 (the header starts at byte 8).
                let tail = "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"ustar\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
                json = format!("{{\"{}{tail}", "p".repeat(257 - 8 - 2 - tail.find("ustar").unwrap()));
            }
            json.push_str(&" ".repeat(len - json.len()));
            let file = [&(len as u64).to_le_bytes()[..], json.as_bytes(), &1f32.to_le_bytes()].concat();
            if name == "ustar" {
                assert_eq!(&file[257..262], b"ustar");
            } else {
                assert_eq!(&file[..2], &[0x80, 0x01]);
            }
            assert_eq!(sniff(&file[..file.len().min(512)]), Format::Other, "{name}");
            let p = tmp(&format!("looks-legacy-{name}.safetensors"));
            std::fs::write(&p, &file).unwrap();
            let mut store = WeightStore::open(&p).unwrap();
            assert_eq!(store.take(name, &[1]).unwrap(), vec![1.0]);
        }
        let legacy = std::fs::read(data("legacy.pt")).unwrap();
        assert_eq!(sniff(&legacy), Format::TorchLegacy);
        // Protocol 4 and 5 put a FRAME (0x95 and a u64 length) before the magic number.
        let framed = [&[0x80, 0x04, 0x95], &13u64.to_le_bytes()[..], &legacy[2..]].concat();
        assert_eq!(sniff(&framed), Format::TorchLegacy);
        let mut tar = vec![0u8; 512];
        tar[..6].copy_from_slice(b"pickle");
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Format::TorchLegacy);
    }

    #[test]
    fn bad_files_are_refused_clearly() {
        let e = open_err(&data("legacy.pt"), None);
        assert!(e.contains("legacy torch.save format") && e.contains("re-save"), "{e}");
        let e = open_err(&data("malicious.pt"), None);
        assert!(
            e.contains("GLOBAL") && e.contains("'posix.system' is not allowed") && e.contains("malicious.pt"),
            "{e}"
        );
        let e = open_err(&data("truncated.pt"), None);
        assert!(e.contains("truncated or corrupt"), "{e}");

        // Every truncation fails with a message, never a panic.
        let full = std::fs::read(data("plain.pt")).unwrap();
        let p = tmp("cut.pt");
        for cut in (0..full.len()).step_by(97).chain([full.len() - 1, full.len() - 22, 4, 1]) {
            std::fs::write(&p, &full[..cut]).unwrap();
            let e = open_err(&p, None);
            assert!(e.contains("truncated or corrupt") || e.contains("not a valid safetensors") || (cut == 0 && e.contains("is empty")), "cut {cut}: {e}");
        }

        // A flipped byte in a tensor's storage fails its CRC when the tensor is read.
        let ck = open(&data("plain.pt"), &full, None).unwrap();
        let conv = ck.tensors.iter().find(|t| t.name == "conv.weight").unwrap();
        let mut bad = full.clone();
        bad[ck.storages[conv.storage].range.start + 5] ^= 0x10;
        std::fs::write(&p, &bad).unwrap();
        let mut s = WeightStore::open(&p).unwrap();
        s.take("conv.bias", &[4]).unwrap();
        let e = s.take("conv.weight", &[4, 3, 3, 3]).unwrap_err().to_string();
        assert!(e.contains("CRC") && e.contains("conv.weight") && e.contains("corrupt"), "{e}");
        // ... and in the pickle when the file is opened.
        let mut bad = full.clone();
        let mut z = zip::ZipArchive::new(Cursor::new(&full[..])).unwrap();
        let i = z.index_for_name("plain/data.pkl").unwrap();
        let pkl = z.by_index_raw(i).unwrap().data_start().unwrap() as usize;
        bad[pkl + 100] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains("truncated or corrupt") && e.contains("checksum"), "{e}");
    }

    /// Randomly damaged archives either fail with an error or give tensors that can be read;
    /// nothing panics or reads out of bounds (the damage mostly hits the zip directory, headers
    /// and pickle, where lengths and offsets live).
    #[test]
    fn damaged_archives_never_panic() {
        let full = std::fs::read(data("plain.pt")).unwrap();
        let seed = crate::testutil::fresh_seed();
        eprintln!("seed {seed} (a panic below is a bug; DIFFVSR_TEST_SEED replays it)");
        let mut rng = crate::rng::Rng::new(seed);
        let p = tmp("damaged.pt");
        for _ in 0..400 {
            let mut m = full.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len() as u32) as usize;
                m[at] = rng.below(256) as u8;
            }
            std::fs::write(&p, &m).unwrap();
            if let Ok(s) = WeightStore::open(&p) {
                for k in s.keys() {
                    let _ = s.raw(&k);
                }
            }
        }
    }

    /// A `torch.save`-style archive holding `pkl` as `archive/data.pkl` and each `(key, bytes)`
    /// as `archive/data/<key>`.
    pub(crate) fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("archive/data.pkl", o).unwrap();
        w.write_all(pkl).unwrap();
        for (k, b) in storages {
            w.start_file(format!("archive/data/{k}"), o).unwrap();
            w.write_all(b).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// One f32 tensor of a hand-written state dict: (name, storage key, storage numel, offset,
    /// shape, strides).
    pub(crate) type TensorSpec<'a> = (&'a str, &'a str, u64, u64, &'a [u64], &'a [u64]);

    /// The pickle `torch.save` writes for a dict of f32 tensors (protocol 2); each storage key is
    /// written once and memoised, as torch does when tensors share a storage.
    pub(crate) fn state_dict_pkl(tensors: &[TensorSpec]) -> Vec<u8> {
        fn s(p: &mut Vec<u8>, x: &str) {
            p.push(b'X');
            p.extend((x.len() as u32).to_le_bytes());
            p.extend(x.as_bytes());
        }
        fn int(p: &mut Vec<u8>, v: u64) {
            p.extend([0x8a, 9]);
            p.extend(v.to_le_bytes());
            p.push(0);
        }
        let mut p = vec![0x80, 2, b'}', b'('];
        let mut memo: Vec<&str> = Vec::new();
        for &(name, key, numel, offset, shape, strides) in tensors {
            s(&mut p, name);
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            s(&mut p, "storage");
            p.extend(b"ctorch\nFloatStorage\n");
            match memo.iter().position(|k| *k == key) {
                Some(i) => p.extend([b'h', i as u8]),
                None => {
                    s(&mut p, key);
                    p.extend([b'q', memo.len() as u8]);
                    memo.push(key);
                }
            }
            s(&mut p, "cpu");
            int(&mut p, numel);
            p.extend(b"tQ");
            int(&mut p, offset);
            for dims in [shape, strides] {
                p.push(b'(');
                dims.iter().for_each(|&d| int(&mut p, d));
                p.push(b't');
            }
            p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend(b"u.");
        p
    }

    fn random_f32_bytes(rng: &mut crate::testutil::Rng, n: usize) -> Vec<u8> {
        bytemuck::cast_slice(&rng.normals(n, 1.0)).to_vec()
    }

    /// A view may never read past its storage, and a stride-0 ("expanded") view that would
    /// materialise far more than the file holds is refused when the file is opened, in the store,
    /// in `convert` (which leaves no file behind) and for every size up to overflow.
    #[test]
    fn expanded_views_are_bounded_by_the_file() {
        let mut rng = crate::testutil::Rng::new(crate::testutil::fresh_seed());
        let store = random_f32_bytes(&mut rng, 8);
        let vals: Vec<f32> = bytemuck::cast_slice(&store).to_vec();
        let dir = tmp("views");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("expanded.pt");
        // A small expanded view is legitimate, and reads repeated rows.
        std::fs::write(&p, torch_zip(&state_dict_pkl(&[("w", "0", 8, 2, &[3, 4], &[0, 1])]), &[("0", &store)])).unwrap();
        let mut s = WeightStore::open(&p).unwrap();
        let want: Vec<f32> = (0..3).flat_map(|_| vals[2..6].to_vec()).collect();
        assert_eq!(s.take("w", &[3, 4]).unwrap(), want);
        // An empty view whose offset is past its storage (torch's as_strided allows it) reads
        // as empty, and converts.
        std::fs::write(&p, torch_zip(&state_dict_pkl(&[("w", "0", 8, 100, &[0], &[1])]), &[("0", &store)])).unwrap();
        assert_eq!(WeightStore::open(&p).unwrap().take("w", &[0]).unwrap(), Vec::<f32>::new());
        let out = dir.join("empty.safetensors");
        convert::convert(&p, &out, None, None).unwrap();
        assert_eq!(WeightStore::open(&out).unwrap().take("w", &[0]).unwrap(), Vec::<f32>::new());
        std::fs::remove_file(&out).unwrap();

        let big = (VIEW_FLOOR as u64 / 4) * 2;
        for (shape, strides, offset, want) in [
            (&[big, 4][..], &[0, 1][..], 0, "expanded (stride-0)"),
            (&[1 << 40, 1][..], &[0, 1][..], 0, "expanded (stride-0)"),
            (&[1 << 40, 1 << 40][..], &[0, 0][..], 0, "overflows"),
            (&[2, 4][..], &[4, 1][..], 1, "reads element 8 of a storage of 8"),
            (&[4][..], &[1][..], 1 << 62, "of a storage of 8"),
        ] {
            std::fs::write(&p, torch_zip(&state_dict_pkl(&[("w", "0", 8, offset, shape, strides)]), &[("0", &store)])).unwrap();
            let e = open_err(&p, None);
            assert!(e.contains("'w'") && e.contains("expanded.pt") && e.contains(want), "{shape:?} {strides:?}: {e}");
            let out = dir.join("out.safetensors");
            let e = format!("{:#}", convert::convert(&p, &out, None, None).unwrap_err());
            assert!(e.contains("'w'"), "{e}");
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, vec![std::ffi::OsString::from("expanded.pt")], "convert left files behind");
        }
        // A storage smaller than the pickle says.
        std::fs::write(&p, torch_zip(&state_dict_pkl(&[("w", "0", 9, 0, &[8], &[1])]), &[("0", &store)])).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains("holds 32 bytes") && e.contains("9 elements"), "{e}");
        // Expanded views each within the bound, under more names than the bound takes together
        // (a disk-filling `convert`: 30 names of 16 MiB from a 1 KB file wrote 503 MB).
        let shape = [(VIEW_FLOOR as u64 / 4) / 4, 4];
        let names: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
        let entries: Vec<TensorSpec> = names.iter().map(|n| (n.as_str(), "0", 8, 0, &shape[..], &[0, 1][..])).collect();
        std::fs::write(&p, torch_zip(&state_dict_pkl(&entries), &[("0", &store)])).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains("together, more than 4x the file's size"), "{e}");
        std::fs::remove_file(&p).unwrap();

        // A conversion that fails while writing (the output name is taken by a folder) leaves
        // neither a partial output nor its temporary file.
        let blocker = dir.join("blocker");
        std::fs::create_dir_all(blocker.join("inside")).unwrap();
        assert!(convert::convert(&data("plain.pt"), &blocker, None, None).is_err());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("blocker")], "convert left files behind");
    }

    /// What a file names reaches messages bounded and escaped: skipped entries are counted, the
    /// first 20 listed; control characters are escaped (a name could clear the terminal or fake
    /// an output line); a name past [`MAX_NAME_LEN`] is refused; a key given twice names one state
    /// dict.
    #[test]
    fn names_from_the_file_reach_messages_bounded() {
        let store = vec![0u8; 32];
        let dir = tmp("names");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("names.pt");
        // A state dict with extra non-tensor entries appended (key → None).
        let with_extra = |keys: &[String]| {
            let mut pkl = state_dict_pkl(&[("w", "0", 8, 0, &[8], &[1])]);
            pkl.pop(); // STOP
            pkl.push(b'(');
            for k in keys {
                pkl.push(b'X');
                pkl.extend((k.len() as u32).to_le_bytes());
                pkl.extend(k.as_bytes());
                pkl.push(b'N');
            }
            pkl.extend(b"u.");
            pkl
        };
        let keys: Vec<String> = (0..501).map(|i| format!("extra{i}")).collect();
        std::fs::write(&p, torch_zip(&with_extra(&keys), &[("0", &store)])).unwrap();
        let ck = open(&p, &std::fs::read(&p).unwrap(), None).unwrap();
        let note = ck.notes.iter().find(|n| n.starts_with("skipped")).unwrap();
        assert!(note.starts_with("skipped 501 non-tensor entries: extra0 (None)") && note.ends_with("… and 481 more") && note.len() < 600, "{note}");
        // A skipped key with control characters is shown escaped; a tensor named so is refused.
        std::fs::write(&p, torch_zip(&with_extra(&["\x1b[2J\nFAKE".to_string()]), &[("0", &store)])).unwrap();
        let ck = open(&p, &std::fs::read(&p).unwrap(), None).unwrap();
        assert!(ck.notes.iter().any(|n| n.contains("\\u{1b}[2J\\nFAKE (None)") && !n.contains('\x1b')), "{:?}", ck.notes);
        std::fs::write(&p, torch_zip(&state_dict_pkl(&[("\x1b[2Jw", "0", 8, 0, &[8], &[1])]), &[("0", &store)])).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains("a tensor named '\\u{1b}[2Jw'") && !e.contains('\x1b'), "{e}");
        // {'w': T, 'w': None}: the later value wins, so no tensor is left.
        std::fs::write(&p, torch_zip(&with_extra(&["w".to_string()]), &[("0", &store)])).unwrap();
        assert!(open_err(&p, None).contains("holds no tensors"));
        std::fs::write(&p, torch_zip(&with_extra(&["k".repeat(MAX_NAME_LEN + 1)]), &[("0", &store)])).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains(&format!("a key of {} bytes", MAX_NAME_LEN + 1)) && e.len() < 400, "{e}");
        assert_eq!(listed((0..3).map(|i| i.to_string()), 3), "0, 1, 2");
        assert_eq!(shown(&"é".repeat(100)).chars().count(), 81);
        // {'sd': D, 'sd': D}: one key, one state dict (Python keeps the last), not "several".
        let inner = state_dict_pkl(&[("w", "0", 8, 0, &[8], &[1])]);
        let inner = &inner[2..inner.len() - 1];
        let mut outer = vec![0x80, 2, b'}', b'('];
        for _ in 0..2 {
            outer.push(b'X');
            outer.extend(2u32.to_le_bytes());
            outer.extend(b"sd");
            outer.extend(inner);
        }
        outer.extend(b"u.");
        std::fs::write(&p, torch_zip(&outer, &[("0", &store)])).unwrap();
        let ck = open(&p, &std::fs::read(&p).unwrap(), None).unwrap();
        assert!(ck.notes.iter().any(|n| n.contains("entry 'sd' (the only dict of tensors)")), "{:?}", ck.notes);
        // {'sd': D, 'sd': None}: the later value, None, is what Python holds: no state dict.
        let mut later_none = outer[..outer.len() - 2].to_vec();
        later_none.truncate(later_none.len() - inner.len());
        later_none.push(b'N');
        later_none.extend(b"u.");
        std::fs::write(&p, torch_zip(&later_none, &[("0", &store)])).unwrap();
        assert!(open_err(&p, None).contains("no tensors at the top level"));
        // A re-zipped (deflated) archive is told so, not called corrupt: every entry's method
        // set to deflate (8) in its local header and the central directory.
        let mut zipped = torch_zip(&state_dict_pkl(&[("w", "0", 8, 0, &[8], &[1])]), &[("0", &store)]);
        for (sig, at) in [(b"PK\x03\x04", 8), (b"PK\x01\x02", 10)] {
            let starts: Vec<usize> = zipped.windows(4).enumerate().filter(|(_, w)| w == sig).map(|(i, _)| i).collect();
            for i in starts {
                zipped[i + at] = 8;
            }
        }
        std::fs::write(&p, zipped).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains("is compressed") && e.contains("re-zipped"), "{e}");
        // A tensor named as safetensors' metadata would give a file no reader takes.
        std::fs::write(&p, torch_zip(&state_dict_pkl(&[("__metadata__", "0", 8, 0, &[8], &[1])]), &[("0", &store)])).unwrap();
        let e = format!("{:#}", convert::convert(&p, &dir.join("meta.safetensors"), None, None).unwrap_err());
        assert!(e.contains("a tensor named __metadata__"), "{e}");
        assert!(!dir.join("meta.safetensors").exists());
    }

    /// Many tensors naming one storage share its key (no copy per persistent id), and a storage
    /// key longer than torch ever writes is refused.
    #[test]
    fn storage_keys_are_shared_and_bounded() {
        let mut rng = crate::testutil::Rng::new(crate::testutil::fresh_seed());
        let store = random_f32_bytes(&mut rng, 4);
        let key = "k".repeat(pickle::MAX_KEY_LEN);
        let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        let specs: Vec<TensorSpec> = names.iter().map(|n| (n.as_str(), key.as_str(), 4, 0, &[4][..], &[1][..])).collect();
        let pk = pickle::unpickle(&state_dict_pkl(&specs)).unwrap();
        let keys: Vec<&std::rc::Rc<str>> = pk.dict(&pk.root).unwrap().iter().map(|(_, v)| &pk.tensor(v).unwrap().storage.key).collect();
        assert_eq!(keys.len(), 50);
        assert!(keys.iter().all(|k| std::rc::Rc::ptr_eq(k, keys[0])), "each persistent id copied the key");
        let p = tmp("shared.pt");
        std::fs::write(&p, torch_zip(&state_dict_pkl(&specs), &[(&key, &store)])).unwrap();
        let ck = open(&p, &std::fs::read(&p).unwrap(), None).unwrap();
        assert_eq!((ck.tensors.len(), ck.storages.len()), (50, 1));

        let long = "k".repeat(pickle::MAX_KEY_LEN + 1);
        let e = format!("{:#}", pickle::unpickle(&state_dict_pkl(&[("t", &long, 4, 0, &[4], &[1])])).err().unwrap());
        assert!(e.contains("too long"), "{e}");
    }

    /// A zip directory that declares more entries than its bytes can hold is refused before the
    /// zip reader allocates for them.
    #[test]
    fn zip_entry_count_is_checked_against_the_directory() {
        let full = std::fs::read(data("plain.pt")).unwrap();
        let at = full.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
        let p = tmp("many_entries.pt");
        for n in [0xfffeu16, 5000] {
            let mut m = full.clone();
            m[at + 8..at + 10].copy_from_slice(&n.to_le_bytes());
            m[at + 10..at + 12].copy_from_slice(&n.to_le_bytes());
            std::fs::write(&p, &m).unwrap();
            let e = open_err(&p, None);
            assert!(e.contains(&format!("declares {n} entries")) && e.contains("many_entries.pt"), "{e}");
        }
        // torch writes zip64 records too; a 0xffff count defers to the zip64 one.
        let at64 = full.windows(4).rposition(|w| w == b"PK\x06\x06").unwrap();
        let mut m = full.clone();
        m[at + 8..at + 12].copy_from_slice(&[0xff; 4]);
        m[at64 + 24..at64 + 40].copy_from_slice(&[(1u64 << 40).to_le_bytes(), (1u64 << 40).to_le_bytes()].concat());
        std::fs::write(&p, &m).unwrap();
        let e = open_err(&p, None);
        assert!(e.contains(&format!("declares {} entries", 1u64 << 40)), "{e}");
    }

    #[test]
    fn convert_round_trips() {
        let out = tmp("converted.safetensors");
        let mut want = WeightStore::open(&data("plain.safetensors")).unwrap();
        let s = convert::convert(&data("plain.pt"), &out, None, None).unwrap();
        assert_eq!(s.tensors, 15);
        // The permissions of any new file there, not the 0600 of safetensors' temporary file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let probe = tmp("converted.probe");
            let fresh = std::fs::File::create(&probe).unwrap().metadata().unwrap().permissions().mode();
            let _ = std::fs::remove_file(&probe);
            assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, fresh & 0o777);
        }
        assert_eq!(s.bytes_out, std::fs::metadata(&out).unwrap().len());
        let text = s.to_string();
        assert!(text.contains("15 tensors") && text.contains("bf16 → f32") && text.contains("1 i64"), "{text}");
        let mut got = WeightStore::open(&out).unwrap();
        assert_eq!(got.keys(), want.keys());
        for k in want.keys() {
            let shape = want.shape(&k).unwrap();
            let (gd, wd) = (got.dtype(&k).unwrap(), want.dtype(&k).unwrap());
            let expect_dtype = match wd {
                FileDtype::BF16 | FileDtype::F64 => FileDtype::F32,
                d => d,
            };
            assert_eq!(gd, expect_dtype, "{k}");
            assert_eq!(got.take(&k, &shape).unwrap(), want.take(&k, &shape).unwrap(), "{k}");
        }

        // --dtype f16: every float tensor is the f16 rounding of the original.
        let s = convert::convert(&data("plain.pt"), &out, None, Some(DType::F16)).unwrap();
        assert_eq!(s.f16_overflow, 0);
        let mut got = WeightStore::open(&out).unwrap();
        for k in want.keys() {
            let shape = want.shape(&k).unwrap();
            let w = want.take(&k, &shape).unwrap();
            if want.dtype(&k) == Some(FileDtype::I64) {
                assert_eq!(got.dtype(&k), Some(FileDtype::I64));
                continue;
            }
            assert_eq!(got.dtype(&k), Some(FileDtype::F16), "{k}");
            assert_eq!(got.take(&k, &shape).unwrap(), crate::testutil::round_f16(&w), "{k}");
        }

        // --key, folders and safetensors input go through the same path.
        convert::convert(&data("multi.pt"), &out, Some("state_dict"), Some(DType::F32)).unwrap();
        assert_same(
            &WeightStore::open(&out).unwrap(),
            &WeightStore::open(&data("multi_state_dict.safetensors")).unwrap(),
            "multi",
        );
        convert::convert(&data("diffusers_bin"), &out, None, None).unwrap();
        assert_same(
            &WeightStore::open(&out).unwrap(),
            &WeightStore::open(&data("module.safetensors")).unwrap(),
            "folder",
        );
        let e = convert::convert(&data("malicious.pt"), &out, None, None).unwrap_err();
        assert!(format!("{e:#}").contains("posix.system"), "{e:#}");
    }
}
