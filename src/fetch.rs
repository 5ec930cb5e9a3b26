//! `diffvsr-wgpu fetch-weights`: downloads the DiffVSR release from the Hugging Face hub into
//! the standard Hugging Face cache, and finds it again for every other command.
//!
//! The cache is huggingface_hub's own layout, so Python tools share the download:
//!
//! ```text
//! $HF_HUB_CACHE (or $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub)
//! └── models--huihui9998--DiffVSR/
//!     ├── blobs/<etag>                  file contents, named by sha256 (LFS) or git blob id
//!     ├── blobs/<etag>.incomplete       a partial download, resumed with a Range request
//!     ├── snapshots/<commit>/<path>     relative symlinks to the blobs
//!     └── refs/main                     the commit `main` pointed at when fetched
//! ```
//!
//! The protocol is the hub's public one: the file list, sizes and hashes come from
//! `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true`, each file from
//! `GET {endpoint}/{repo}/resolve/{commit}/{path}` (redirects followed). Files are fetched at the
//! commit the revision resolved to, so one snapshot never mixes two commits. Where the listing
//! lacks a file's hash, a `HEAD` on the resolve URL supplies it (`X-Linked-Etag`/`ETag`,
//! `X-Linked-Size`), as huggingface_hub does.
//!
//! Every downloaded file is checked against its size, LFS files (the weights) against their
//! sha256 and other files against their git blob id (sha1); data that fails is deleted and
//! reported, so a corrupt file never reaches the cache. No body may exceed the size the hub
//! lists (or [`FetchOptions::unlisted_size_limit`] when it lists none). Redirects are followed
//! as huggingface_hub follows them: the token goes only to the endpoint's own origin.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The DiffVSR release on the hub.
pub const DIFFVSR_REPO: &str = "huihui9998/DiffVSR";
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";
// The release's layout (what to download, what makes a complete folder, what to convert).
pub use crate::models::release::{CONVERT, DEFAULT_INCLUDE, REQUIRED};

#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub repo_id: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Hub URL without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` (`HF_TOKEN`), for gated or private repositories.
    pub token: Option<String>,
    /// The hub cache root (the folder holding `models--*`).
    pub cache_dir: PathBuf,
    /// Glob patterns of repository paths to fetch (see [`glob_match`]).
    pub include: Vec<String>,
    /// Re-hash LFS files already in the cache; a mismatching one is deleted and downloaded again.
    pub verify_cached: bool,
    /// Further tries after a transient failure (connection cut, timeout, 5xx, 429); each try
    /// resumes where the last one stopped.
    pub retries: u32,
    /// First wait between tries; it doubles each time (capped at 30 s).
    pub retry_delay: Duration,
    /// A progress bar on stderr when it is a terminal, plain lines otherwise.
    pub progress: bool,
    /// Convert the [`CONVERT`] checkpoints to safetensors in `converted/<commit>/` of the cache
    /// entry (once; again only when a checkpoint was downloaded anew).
    pub convert: bool,
    /// Most bytes accepted for a file whose size the hub does not give.
    pub unlisted_size_limit: u64,
    /// How long the first contact (the file listing), retries included, may go unanswered
    /// before the fetch gives up and says the network or endpoint is silent.
    pub silent_timeout: Duration,
}

/// [`FetchOptions::unlisted_size_limit`] by default: far above any config or tokenizer file.
pub const UNLISTED_SIZE_LIMIT: u64 = 256 << 20;
/// [`FetchOptions::silent_timeout`] by default.
pub const SILENT_TIMEOUT: Duration = Duration::from_secs(30);

impl FetchOptions {
    /// The defaults for DiffVSR, with the endpoint, token and cache taken from the environment
    /// as huggingface_hub does.
    pub fn from_env() -> Result<FetchOptions> {
        Ok(FetchOptions {
            repo_id: DIFFVSR_REPO.to_string(),
            revision: DEFAULT_REVISION.to_string(),
            endpoint: env_nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token: token_from_env(),
            cache_dir: hub_cache_dir()?,
            include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
            verify_cached: false,
            retries: 5,
            retry_delay: Duration::from_secs(1),
            progress: true,
            convert: true,
            unlisted_size_limit: UNLISTED_SIZE_LIMIT,
            silent_timeout: SILENT_TIMEOUT,
        })
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already in the cache; nothing downloaded.
    Cached,
    /// Downloaded; `resumed_from` > 0 when a partial download was continued.
    Downloaded { bytes: u64, resumed_from: u64 },
}

#[derive(Clone, Debug)]
pub struct FetchReport {
    pub commit: String,
    /// `snapshots/<commit>`: the folder to pass as `--weights`.
    pub snapshot: PathBuf,
    pub files: Vec<(String, Outcome)>,
    /// Bytes received over the network for file contents.
    pub bytes_downloaded: u64,
    /// Safetensors files written by this run.
    pub converted: Vec<PathBuf>,
    /// Conversions that failed (the download itself is complete: the engine also reads the
    /// `.pt` files directly).
    pub convert_errors: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Patterns

/// fnmatch-style matching as huggingface_hub's `allow_patterns`: `*` matches any run of
/// characters (including `/`), `?` one character; a pattern ending in `/` matches everything in
/// that folder.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let owned;
    let pattern = if pattern.ends_with('/') {
        owned = format!("{pattern}*");
        owned.as_str()
    } else {
        pattern
    };
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), path.chars().collect());
    // Iterative wildcard matching with one backtrack point (linear in practice).
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

// ---------------------------------------------------------------------------------------------
// Download

/// Downloads the DiffVSR release (or what `opts` names) into the hub cache; files already there
/// are not downloaded again. Returns the snapshot folder.
pub fn fetch(opts: &FetchOptions) -> Result<FetchReport> {
    let hub = Hub::new(opts)?;
    let (commit, siblings) = hub.repo_info()?;

    let patterns: Vec<&str> = opts.include.iter().map(|s| s.as_str()).collect();
    let mut wanted: Vec<Sibling> = siblings.into_iter().filter(|s| patterns.iter().any(|p| glob_match(p, &s.rfilename))).collect();
    wanted.sort_by(|a, b| a.rfilename.cmp(&b.rfilename));
    for p in &patterns {
        if !wanted.iter().any(|s| glob_match(p, &s.rfilename)) {
            bail!(
                "{} at {} ({}) has no file matching {p:?}; check --repo, --revision and --include",
                opts.repo_id,
                opts.revision,
                &commit[..12]
            );
        }
    }

    let mut files = Vec::with_capacity(wanted.len());
    for s in wanted {
        check_repo_path(&s.rfilename)?;
        let (etag, size, sha256) = match (s.lfs, s.blob_id) {
            (Some(lfs), _) => {
                let sha = lfs.sha256.to_ascii_lowercase();
                if !is_sha256(&sha) {
                    bail!("the hub gave {} an unusable sha256 {sha:?}", s.rfilename);
                }
                (sha.clone(), Some(lfs.size), Some(sha))
            }
            (None, Some(blob)) if s.size.is_some() => (blob, s.size, None),
            _ => {
                let (etag, size) = hub.head_file(&commit, &s.rfilename)?;
                // The hub's etag of an LFS file is its sha256.
                let sha = is_sha256(&etag).then(|| etag.to_ascii_lowercase());
                (etag, size.or(s.size), sha)
            }
        };
        check_etag(&etag, &s.rfilename)?;
        files.push(RemoteFile { path: s.rfilename, etag, size, sha256 });
    }

    let repo = repo_cache_dir(&opts.cache_dir, &opts.repo_id);
    let blobs = repo.join("blobs");
    let snapshot = repo.join("snapshots").join(&commit);
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    fs::create_dir_all(&snapshot).with_context(|| format!("creating {}", snapshot.display()))?;

    // Which files need the network, and how much of each is still missing.
    let mut todo_bytes = 0u64;
    let mut cached = vec![false; files.len()];
    for (i, f) in files.iter().enumerate() {
        let blob = blobs.join(&f.etag);
        if let Ok(m) = fs::metadata(&blob) {
            if opts.verify_cached && opts.progress {
                crate::diagln!("verifying {} ({})", f.path, human(m.len()));
            }
            let size_ok = f.size.is_none_or(|s| m.len() == s);
            let hash_ok = !opts.verify_cached || verify_hash(&blob, f).is_ok();
            if size_ok && hash_ok {
                cached[i] = true;
                continue;
            }
            log::warn!("{}: the cached copy {} is damaged; downloading it again", f.path, blob.display());
            fs::remove_file(&blob).with_context(|| format!("removing {}", blob.display()))?;
        }
        let have = fs::metadata(blobs.join(format!("{}.incomplete", f.etag))).map(|m| m.len()).unwrap_or(0);
        todo_bytes += f.size.unwrap_or(0).saturating_sub(have);
    }

    let pb = progress_bar(opts.progress, todo_bytes);
    let mut report = FetchReport {
        commit: commit.clone(),
        snapshot: snapshot.clone(),
        files: Vec::new(),
        bytes_downloaded: 0,
        converted: Vec::new(),
        convert_errors: Vec::new(),
    };
    for (i, f) in files.iter().enumerate() {
        let outcome = if cached[i] {
            Outcome::Cached
        } else {
            if pb.is_hidden() && opts.progress {
                crate::diagln!("downloading {} ({})", f.path, f.size.map(human).unwrap_or_else(|| "size unknown".into()));
            }
            pb.set_message(f.path.clone());
            let o = download(&hub, f, &commit, &blobs, &pb)?;
            if let Outcome::Downloaded { bytes, .. } = o {
                report.bytes_downloaded += bytes;
            }
            o
        };
        link_snapshot(&repo, &snapshot, f)?;
        report.files.push((f.path.clone(), outcome));
    }
    pb.finish_and_clear();

    // Written last, so a ref always names a snapshot whose files were all fetched (for
    // `weights_dir_in`; huggingface_hub reads it the same either way).
    if !is_commit_hash(&opts.revision) {
        let refs = repo.join("refs");
        let refpath = refs.join(&opts.revision);
        if let Some(parent) = refpath.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        write_atomic(&refpath, commit.as_bytes())?;
    }
    if opts.convert {
        convert_checkpoints(&repo, &mut report, opts.progress, opts.verify_cached)?;
    }
    Ok(report)
}

/// Converts the fetched [`CONVERT`] checkpoints to safetensors, each once per commit (again when
/// it was just downloaded, so a repaired blob never keeps a stale conversion, when the
/// conversion no longer opens as a whole safetensors file, e.g. cut short, and under
/// `--verify`: the copy is what the models load, and safetensors has no checksum to check it
/// by, so a verified checkpoint is converted afresh). Each copy reaches the disk before it
/// takes its name, and an old copy goes before its conversion again: a crash or a failure
/// leaves the whole new copy or none, and then the `.pt` loads.
fn convert_checkpoints(repo: &Path, report: &mut FetchReport, progress: bool, verify: bool) -> Result<()> {
    let out_dir = converted_dir(repo, &report.commit);
    remove_ended_conversions(&out_dir);
    for &(file, key) in CONVERT {
        let Some((_, outcome)) = report.files.iter().find(|(p, _)| p == file) else { continue };
        let src = report.snapshot.join(file);
        let stem = Path::new(file).file_stem().unwrap().to_string_lossy().into_owned();
        let dst = out_dir.join(format!("{stem}.safetensors"));
        if !verify && dst.is_file() && *outcome == Outcome::Cached && crate::weights::WeightStore::open(&dst).is_ok() {
            continue;
        }
        fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        // The copy converted again goes first: a conversion that then fails (a full disk, with
        // the old copy and the new one's temporary file both there) leaves the .pt to load,
        // not the copy --verify or a repaired blob was to replace.
        if dst.is_file() {
            if let Err(e) = fs::remove_file(&dst) {
                report.convert_errors.push(format!("converting {file}: removing the old conversion {}: {e}", dst.display()));
                continue;
            }
        }
        if progress {
            crate::diagln!("converting {file} to {}", dst.display());
        }
        let tmp = out_dir.join(format!("{stem}.safetensors.tmp{}", std::process::id()));
        // A stop signal meanwhile removes it (the whole copy, while it syncs).
        crate::weights::writing_temporary(&tmp);
        let r = crate::checkpoint::convert::convert(&src, &tmp, key, None)
            // (Windows flushes only a handle that may write; elsewhere one that reads does, also
            // where the umask left the file read-only.)
            .and_then(|_| fs::OpenOptions::new().read(true).write(cfg!(windows)).open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("writing {} to the disk", tmp.display())))
            .and_then(|_| fs::rename(&tmp, &dst).with_context(|| format!("renaming {} to {}", tmp.display(), dst.display())));
        // Removed where it failed only: after the rename a file of that name is another
        // container's (the same PID in a shared cache).
        crate::weights::written_temporary(&tmp, r.is_err());
        match r {
            Ok(()) => report.converted.push(dst),
            Err(e) => report.convert_errors.push(format!("converting {file}: {e:#}")),
        }
    }
    Ok(())
}

/// Removes what conversions that ended without finishing left in `out_dir` (a Ctrl-C or a kill
/// midway leaves a temporary file as large as the checkpoint, 3.8 GB for the UNet): the files
/// and folders named `….tmp<PID>` whose process no longer runs here and that nothing has written
/// to (in a folder: nor to what it holds) for [`STALE_AFTER`]: a cache shared between
/// containers or hosts (which see other PIDs, or none) may hold another one's conversion in
/// progress, and that one writes all along. Where processes cannot be looked up that way (no
/// `/proc`, as on macOS and Windows), nothing is removed.
fn remove_ended_conversions(out_dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(out_dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.rsplit_once(".tmp")).and_then(|(_, p)| p.parse::<u32>().ok()) else { continue };
        let idle = last_written(&e.path()).and_then(|t| t.elapsed().ok()).is_some_and(|d| d >= STALE_AFTER);
        if pid != std::process::id() && idle && !Path::new(&format!("/proc/{pid}")).exists() {
            // A write's folder (safetensors' own temporary file inside), or a conversion's file.
            crate::weights::remove_path(&e.path());
        }
    }
}

/// When `p` was last written: a file's time, or a folder's newest of its own and its files' (a
/// write's temporary folder keeps its time while the file inside it grows).
fn last_written(p: &Path) -> Option<std::time::SystemTime> {
    let own = fs::metadata(p).and_then(|m| m.modified()).ok()?;
    let inside = fs::read_dir(p).into_iter().flatten().flatten().filter_map(|e| e.metadata().and_then(|m| m.modified()).ok());
    Some(inside.fold(own, std::cmp::max))
}

/// How long a conversion's temporary file must have gone unwritten to count as left behind.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

mod cache;
mod download;
#[cfg(test)]
mod fake_hub;
mod hub;
mod sha1;
#[cfg(test)]
mod tests;

// The children share this module's imports and each other's items (`use super::*`).
pub use cache::*;
use download::*;
use hub::*;
