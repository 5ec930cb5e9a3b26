//! Where the hub cache lives (huggingface_hub's own rules) and how a snapshot points at its blobs.

use super::*;

pub(super) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn home_dir() -> Result<PathBuf> {
    // As Python's expanduser, which huggingface_hub uses: USERPROFILE first on Windows (MSYS2's
    // and Cygwin's HOME is another folder), HOME elsewhere.
    let (first, second) = if cfg!(windows) { ("USERPROFILE", "HOME") } else { ("HOME", "USERPROFILE") };
    env_nonempty(first)
        .or_else(|| env_nonempty(second))
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("cannot find the home folder (neither HOME nor USERPROFILE is set): set HF_HOME or HF_HUB_CACHE"))
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> Result<PathBuf> {
    if let Some(h) = env_nonempty("HF_HOME") {
        return Ok(PathBuf::from(h));
    }
    let cache = match env_nonempty("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x),
        None => home_dir()?.join(".cache"),
    };
    Ok(cache.join("huggingface"))
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE` (or its older name `$HUGGINGFACE_HUB_CACHE`),
/// else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Result<PathBuf> {
    if let Some(c) = env_nonempty("HF_HUB_CACHE").or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE")) {
        return Ok(PathBuf::from(c));
    }
    Ok(hf_home()?.join("hub"))
}

/// `HF_TOKEN`, else the token `huggingface-cli login` saved (`$HF_TOKEN_PATH` or `$HF_HOME/token`).
pub fn token_from_env() -> Option<String> {
    if let Some(t) = env_nonempty("HF_TOKEN") {
        return Some(t.trim().to_string());
    }
    let path = env_nonempty("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| hf_home().ok().map(|h| h.join("token")))?;
    let t = fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `models--{org}--{name}` under the hub cache.
pub fn repo_cache_dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// The fetched DiffVSR weights folder (the snapshot `main` pointed at), where every command looks
/// when no `--weights` is given.
pub fn default_weights_dir() -> Result<PathBuf> {
    weights_dir_in(&hub_cache_dir()?, DIFFVSR_REPO, DEFAULT_REVISION)
}

/// The snapshot of `repo_id` at `revision` in the hub cache `cache_dir`, if it holds every file
/// of [`REQUIRED`]; otherwise an error saying what to run.
pub fn weights_dir_in(cache_dir: &Path, repo_id: &str, revision: &str) -> Result<PathBuf> {
    let repo = repo_cache_dir(cache_dir, repo_id);
    let not_found =
        || anyhow!("weights not found in {}: run 'diffvsr-wgpu fetch-weights' (or pass --weights DIR)", repo.display());
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        match fs::read_to_string(repo.join("refs").join(revision)) {
            Ok(c) => c.trim().to_string(),
            Err(_) => return Err(not_found()),
        }
    };
    if !is_commit_hash(&commit) {
        return Err(not_found());
    }
    let snap = repo.join("snapshots").join(&commit);
    // `exists` follows symlinks, so a pointer whose blob was deleted counts as missing.
    if REQUIRED.iter().all(|f| snap.join(f).exists()) {
        Ok(snap)
    } else {
        Err(not_found())
    }
}

/// `converted/<commit>` of the cache entry `repo` ([`repo_cache_dir`]): the safetensors copies
/// of the [`CONVERT`] checkpoints.
pub fn converted_dir(repo: &Path, commit: impl AsRef<Path>) -> PathBuf {
    repo.join("converted").join(commit)
}

pub(super) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `snapshots/<commit>/<path>` → `../…/blobs/<etag>` (relative, so the cache can move).
pub(super) fn link_snapshot(repo: &Path, snapshot: &Path, f: &RemoteFile) -> Result<()> {
    let pointer = snapshot.join(&f.path);
    if let Some(parent) = pointer.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let depth = f.path.split('/').count() + 1;
    let target: PathBuf = std::iter::repeat_n("..", depth).collect::<PathBuf>().join("blobs").join(&f.etag);
    if let Ok(existing) = fs::read_link(&pointer) {
        if existing == target {
            return Ok(());
        }
    }
    // A hard link (or copy) made where symlinks are refused: kept where it is the blob's file
    // (a hard link shares its size and time; blobs never change in place), so a run does not
    // remove a weights file another process may have open.
    #[cfg(not(unix))]
    if let (Ok(p), Ok(b)) = (fs::symlink_metadata(&pointer), fs::metadata(repo.join("blobs").join(&f.etag))) {
        if p.is_file() && p.len() == b.len() && p.modified().ok().is_some_and(|t| b.modified().ok() == Some(t)) {
            return Ok(());
        }
    }
    if fs::symlink_metadata(&pointer).is_ok() {
        fs::remove_file(&pointer).with_context(|| format!("replacing {}", pointer.display()))?;
    }
    make_link(&target, &repo.join("blobs").join(&f.etag), &pointer)
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, pointer: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, pointer).with_context(|| format!("linking {}", pointer.display()))
}

#[cfg(not(unix))]
fn make_link(target: &Path, blob: &Path, pointer: &Path) -> Result<()> {
    // Windows allows symlinks only in developer mode; without them a hard link (NTFS needs no
    // privilege for one, and it takes no space: a copy would take gigabytes, made again at
    // every run, as the pointer is then no link to read), and a copy only where neither works
    // (FAT, exFAT).
    #[cfg(windows)]
    if std::os::windows::fs::symlink_file(target, pointer).is_ok() {
        return Ok(());
    }
    let _ = target;
    if fs::hard_link(blob, pointer).is_ok() {
        return Ok(());
    }
    fs::copy(blob, pointer).map(|_| ()).with_context(|| format!("copying {} to {}", blob.display(), pointer.display()))
}

pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
