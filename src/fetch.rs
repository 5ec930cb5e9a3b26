//! `diffvsr-wgpu fetch-weights`: downloads the DiffVSR release from the Hugging Face hub into
//! the standard Hugging Face cache, and finds it again for every other command.
//!
//! The cache is huggingface_hub's own layout, so Python tools share the download:
//!
//! ```text
//! $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)
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
pub use crate::models::release::{checkpoint_path, CONVERT, DEFAULT_INCLUDE, REQUIRED};

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
// Cache locations

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn home_dir() -> Result<PathBuf> {
    env_nonempty("HOME")
        .or_else(|| env_nonempty("USERPROFILE"))
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("cannot find the home folder (HOME is not set): set HF_HOME or HF_HUB_CACHE"))
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

/// `converted/<commit>` of the cache entry: the safetensors copies of the [`CONVERT`] checkpoints.
pub fn converted_dir(cache_dir: &Path, repo_id: &str, commit: &str) -> PathBuf {
    repo_cache_dir(cache_dir, repo_id).join("converted").join(commit)
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
// Hub protocol

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    sha256: String,
    size: u64,
}

/// One file to fetch, with what the hub says about it.
#[derive(Clone, Debug)]
struct RemoteFile {
    path: String,
    /// Blob name in the cache: sha256 for LFS files, the git blob id otherwise.
    etag: String,
    size: Option<u64>,
    sha256: Option<String>,
}

/// How a request failed: worth another try (the network), or not (everything else).
enum Failure {
    Transient(anyhow::Error),
    /// No answer in time: worth another try, except past the first contact's deadline.
    Silent(anyhow::Error),
    /// Nothing listens at the address: another try, but not on first contact (a wrong endpoint).
    Refused(anyhow::Error),
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Fatal(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Fatal(e.into())
    }
}

fn classify(e: ureq::Error, what: &str) -> Failure {
    // Name resolution failing is not worth waiting for: usually no network at all.
    let dns = matches!(e, ureq::Error::HostNotFound)
        || matches!(&e, ureq::Error::Io(io) if io.to_string().contains("lookup address"));
    let silent = matches!(e, ureq::Error::Timeout(_) | ureq::Error::BodyStalled)
        || matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut);
    let transient = !dns && matches!(e, ureq::Error::Io(_) | ureq::Error::ConnectionFailed);
    let refused = matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
    let err = if dns {
        anyhow!("{what}: {e} (is this machine offline? HF_ENDPOINT or --endpoint chooses the hub)")
    } else if refused {
        anyhow!("{what}: connection refused: nothing answers at that address (a wrong or dead endpoint? HF_ENDPOINT or --endpoint chooses the hub)")
    } else {
        anyhow!("{what}: {e}")
    };
    if refused {
        Failure::Refused(err)
    } else if silent {
        Failure::Silent(err)
    } else if transient {
        Failure::Transient(err)
    } else {
        Failure::Fatal(err)
    }
}

/// Percent-encodes a URL path segment (`keep_slash` for multi-segment paths).
fn encode_path(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path from the hub must stay inside the snapshot folder.
fn check_repo_path(p: &str) -> Result<()> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\\')
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        // `C:/x` is an absolute path on Windows (and `a:b` a stream of file `a`).
        || p.as_bytes().get(1) == Some(&b':') && p.as_bytes()[0].is_ascii_alphabetic()
        || cfg!(windows) && p.contains(':');
    if bad {
        bail!("the hub listed an unsafe file path {p:?}; refusing to write it");
    }
    Ok(())
}

/// An etag names a file in `blobs/`: only plain characters.
fn check_etag(e: &str, path: &str) -> Result<()> {
    if e.is_empty() || e.len() > 128 || !e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("the hub gave {path} an unusable etag {e:?}");
    }
    Ok(())
}

/// `W/"abc"` → `abc`.
fn normalize_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased; `None` for anything else.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in a URL (`user@host`) never appear in a hub's redirect; refuse them.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Where a redirect from `from` to `location` leads, and whether it stays on `from`'s origin
/// (scheme, host and port), which alone may receive the token (huggingface_hub follows only
/// such relative redirects with it). A redirect from https to plain http is refused outright.
fn redirect_target(from: &str, location: &str) -> Result<(String, bool)> {
    let from_origin = origin(from).ok_or_else(|| anyhow!("unusable URL {from:?}"))?;
    let location = location.trim();
    let next = if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", from_origin.split("://").next().unwrap_or("https"))
    } else if location.starts_with('/') {
        format!("{from_origin}{location}")
    } else {
        // Relative to the current folder.
        let path_end = from.find('?').unwrap_or(from.len());
        let base = &from[..path_end];
        let dir = &base[..base.rfind('/').filter(|&i| i >= from_origin.len()).map_or(base.len(), |i| i + 1)];
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{location}")
    };
    let Some(next_origin) = origin(&next) else { bail!("the server redirected to an unusable URL {location:?}") };
    if from_origin.starts_with("https://") && next_origin.starts_with("http://") {
        bail!("the server redirected from https to plain http ({next_origin}); refusing to follow it");
    }
    Ok((next.clone(), next_origin == from_origin))
}

/// Most redirects one request follows.
const MAX_REDIRECTS: usize = 10;

fn header<'a>(r: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

struct Hub<'a> {
    opts: &'a FetchOptions,
    agent: ureq::Agent,
    endpoint: String,
}

impl<'a> Hub<'a> {
    fn new(opts: &'a FetchOptions) -> Result<Hub<'a>> {
        let endpoint = opts.endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("hub endpoint {endpoint:?} is not an http(s) URL");
        }
        if opts.revision.is_empty() || check_repo_path(&opts.revision).is_err() {
            bail!("unusable revision {:?}", opts.revision);
        }
        let authority = endpoint.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.split(':').next().unwrap_or(""),
        };
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("diffvsr-wgpu/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `Hub::send`, which sends the token only to the origin
            // that issued it (see `redirect_target`).
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(SILENT_TIMEOUT));
        if loopback {
            // A local mirror (or the tests' stand-in hub) is never reached through a proxy.
            cfg = cfg.proxy(None);
        }
        Ok(Hub { opts, agent: cfg.build().new_agent(), endpoint })
    }

    /// One request with `headers`: a `HEAD` (whose redirects [`Hub::head_file`] follows one at
    /// a time), or a `GET` following redirects by hand. The token goes only to the endpoint's
    /// origin and to same-origin redirects, never to another host (the hub's CDN) and never
    /// over http after https.
    fn send(&self, head: bool, url: &str, headers: &[(&str, String)], what: &str) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.send_by(head, url, headers, what, None)
    }

    /// [`Hub::send`], giving up at `deadline` (the whole exchange, redirects included).
    fn send_by(
        &self,
        head: bool,
        url: &str,
        headers: &[(&str, String)],
        what: &str,
        deadline: Option<Instant>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut url = url.to_string();
        let mut token = self.opts.token.as_deref().filter(|_| origin(&url) == origin(&self.endpoint));
        for _ in 0..=MAX_REDIRECTS {
            let mut req = if head { self.agent.head(&url) } else { self.agent.get(&url) };
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Failure::Silent(anyhow!("{what}: no answer in time")));
                }
                req = req.config().timeout_global(Some(left)).build();
            }
            let resp = req.call().map_err(|e| classify(e, what))?;
            let status = resp.status().as_u16();
            let loc = header(&resp, "location").filter(|_| !head && matches!(status, 301 | 302 | 303 | 307 | 308));
            let Some(loc) = loc else { return Ok(resp) };
            let (next, same_origin) = redirect_target(&url, loc).map_err(|e| Failure::Fatal(e.context(what.to_string())))?;
            if !same_origin {
                token = None;
            }
            url = next;
        }
        Err(Failure::Fatal(anyhow!("{what}: more than {MAX_REDIRECTS} redirects")))
    }

    /// Runs `f` until it succeeds, fails for good, or runs out of tries.
    fn with_retries<T>(&self, f: impl FnMut() -> Result<T, Failure>) -> Result<T> {
        self.with_retries_by(None, f)
    }

    /// [`Hub::with_retries`] for the first contact: no further try after `deadline` (the
    /// error then says the network or endpoint is silent), and none after a refused
    /// connection (nothing listens at the endpoint).
    fn with_retries_by<T>(&self, deadline: Option<Instant>, mut f: impl FnMut() -> Result<T, Failure>) -> Result<T> {
        let mut delay = self.opts.retry_delay;
        let mut tries = 0;
        let start = Instant::now();
        loop {
            let e = match f() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Refused(e)) if deadline.is_some() => return Err(e),
                Err(Failure::Transient(e) | Failure::Silent(e) | Failure::Refused(e)) => e,
            };
            if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                return Err(anyhow!(
                    "no usable answer from {} within {:.0} s ({} tr{}, {:.1} s): the network or the endpoint is silent \
                     (offline, a firewall, or a wrong HF_ENDPOINT / --endpoint); last error: {e:#}",
                    self.endpoint,
                    self.opts.silent_timeout.as_secs_f64(),
                    tries + 1,
                    if tries == 0 { "y" } else { "ies" },
                    start.elapsed().as_secs_f64()
                ));
            }
            if tries < self.opts.retries {
                tries += 1;
                log::warn!("{e:#}; trying again in {delay:?} ({tries}/{})", self.opts.retries);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
            } else {
                let n = self.opts.retries + 1;
                return Err(e.context(format!("gave up after {n} tr{}", if n == 1 { "y" } else { "ies" })));
            }
        }
    }

    /// An error status on a repository URL, in the words of what to do about it. The hub says
    /// what is missing in `X-Error-Code` (as huggingface_hub reads it); a server that answers 404
    /// without one is not a hub at all: a wrong or dead endpoint, not a missing repository.
    fn status_error(&self, resp: &ureq::http::Response<ureq::Body>, what: &str) -> Failure {
        let status = resp.status().as_u16();
        let repo = &self.opts.repo_id;
        let rev = &self.opts.revision;
        let endpoint = &self.endpoint;
        match header(resp, "x-error-code") {
            Some("RepoNotFound") => {
                return Failure::Fatal(anyhow!(
                    "{what}: HTTP {status}: repository {repo} not found or gated on {endpoint}: check --repo; a private or gated \
                     repository needs HF_TOKEN (or --token) with access{}",
                    if self.opts.token.is_some() { " (the token given was refused)" } else { "" }
                ))
            }
            Some("RevisionNotFound") => {
                return Failure::Fatal(anyhow!("{what}: HTTP {status}: revision {rev} not found in {repo}: check --revision"))
            }
            Some("EntryNotFound") => {
                return Failure::Fatal(anyhow!("{what}: HTTP {status}: the file is not in {repo} at revision {rev}"))
            }
            None if status == 404 => {
                return Failure::Fatal(anyhow!(
                    "{what}: HTTP 404 from {endpoint}, without the error code a Hugging Face hub sends: {endpoint} does not look \
                     like a hub (a wrong or dead endpoint? HF_ENDPOINT or --endpoint chooses it; the hub is {DEFAULT_ENDPOINT}), \
                     or it is a mirror without {repo} at {rev}"
                ))
            }
            _ => {}
        }
        match status {
            401 | 403 => Failure::Fatal(anyhow!(
                "{what}: HTTP {status}: repository {repo} not found or gated: set HF_TOKEN (or --token) to a token with access{}",
                if self.opts.token.is_some() { " (the token given was refused)" } else { "" }
            )),
            404 => Failure::Fatal(anyhow!(
                "{what}: HTTP 404: not found on {} (check the repository {repo}, the revision {} and --include; a gated repository may also need HF_TOKEN)",
                self.endpoint,
                self.opts.revision
            )),
            429 | 500..=599 => Failure::Transient(anyhow!("{what}: HTTP {status} from the hub")),
            _ => Failure::Fatal(anyhow!("{what}: unexpected HTTP {status}")),
        }
    }

    /// The commit the revision points at, and the repository's files.
    fn repo_info(&self) -> Result<(String, Vec<Sibling>)> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            encode_path(&self.opts.repo_id, true),
            encode_path(&self.opts.revision, false)
        );
        let what = format!("listing {} at {}", self.opts.repo_id, self.endpoint);
        let deadline = Instant::now() + self.opts.silent_timeout;
        let info: RepoInfo = self.with_retries_by(Some(deadline), || {
            let resp = self.send_by(false, &url, &[], &what, Some(deadline))?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Err(self.status_error(&resp, &what));
            }
            let text = resp
                .into_body()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| classify(e, &what))?;
            serde_json::from_str(&text).map_err(|e| Failure::Fatal(anyhow!("{what}: the hub's answer is not the expected JSON: {e}")))
        })?;
        let commit = info.sha.ok_or_else(|| anyhow!("{what}: the hub's answer has no commit sha"))?;
        if !is_commit_hash(&commit) {
            bail!("{what}: the hub gave an unusable commit sha {commit:?}");
        }
        Ok((commit, info.siblings))
    }

    /// Etag and size of a file the listing said too little about, from `HEAD` on its resolve URL.
    fn head_file(&self, commit: &str, path: &str) -> Result<(String, Option<u64>)> {
        let mut url = self.resolve_url(commit, path);
        let what = format!("looking up {path}");
        for _ in 0..5 {
            let resp = self.with_retries(|| {
                // Redirects one at a time: the hub's own answer carries the etag of an LFS file
                // (X-Linked-Etag), the CDN's does not.
                let r = self.send(true, &url, &[("Accept-Encoding", "identity".to_string())], &what)?;
                let status = r.status().as_u16();
                if !(200..400).contains(&status) {
                    return Err(self.status_error(&r, &what));
                }
                Ok(r)
            })?;
            let etag = header(&resp, "x-linked-etag").or_else(|| header(&resp, "etag")).map(normalize_etag);
            let size = header(&resp, "x-linked-size")
                .or_else(|| header(&resp, "content-length"))
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(etag) = etag {
                return Ok((etag, size));
            }
            let Some(loc) = header(&resp, "location") else {
                bail!("{what}: the hub sent no ETag for it");
            };
            // Only same-origin (relative) redirects are followed here, as huggingface_hub does: a
            // HEAD is never sent to another host, with or without the token.
            let (next, same_origin) = redirect_target(&url, loc).with_context(|| what.clone())?;
            if !same_origin {
                bail!("{what}: the hub redirected to another host ({}) without giving the file's ETag; refusing to follow", origin(&next).unwrap_or_default());
            }
            url = next;
        }
        bail!("{what}: too many redirects")
    }

    fn resolve_url(&self, commit: &str, path: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.endpoint, encode_path(&self.opts.repo_id, true), commit, encode_path(path, true))
    }
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
                eprintln!("verifying {} ({})", f.path, human(m.len()));
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
                eprintln!("downloading {} ({})", f.path, f.size.map(human).unwrap_or_else(|| "size unknown".into()));
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
        convert_checkpoints(&repo, &mut report, opts.progress)?;
    }
    Ok(report)
}

/// Converts the fetched [`CONVERT`] checkpoints to safetensors, each once per commit (again when
/// it was just downloaded, so a repaired blob never keeps a stale conversion).
fn convert_checkpoints(repo: &Path, report: &mut FetchReport, progress: bool) -> Result<()> {
    let out_dir = repo.join("converted").join(&report.commit);
    for &(file, key) in CONVERT {
        let Some((_, outcome)) = report.files.iter().find(|(p, _)| p == file) else { continue };
        let src = report.snapshot.join(file);
        let stem = Path::new(file).file_stem().unwrap().to_string_lossy().into_owned();
        let dst = out_dir.join(format!("{stem}.safetensors"));
        if dst.is_file() && *outcome == Outcome::Cached {
            continue;
        }
        fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        if progress {
            eprintln!("converting {file} to {}", dst.display());
        }
        let tmp = out_dir.join(format!("{stem}.safetensors.tmp{}", std::process::id()));
        let r = crate::checkpoint::convert::convert(&src, &tmp, key, None)
            .and_then(|_| fs::rename(&tmp, &dst).with_context(|| format!("renaming {} to {}", tmp.display(), dst.display())));
        match r {
            Ok(()) => report.converted.push(dst),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                report.convert_errors.push(format!("converting {file}: {e:#}"));
            }
        }
    }
    Ok(())
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // indicatif draws nothing when stderr is not a terminal (logs, CI).
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg:32!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}")
        .expect("valid progress template");
    pb.set_style(style);
    pb
}

fn human(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} bytes"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// Brings `blobs/<etag>` into existence, through `<etag>.incomplete`, resuming a partial file,
/// retrying transient failures, and checking size and sha256 before the rename.
fn download(hub: &Hub, f: &RemoteFile, commit: &str, blobs: &Path, pb: &ProgressBar) -> Result<Outcome> {
    let blob = blobs.join(&f.etag);
    let part = blobs.join(format!("{}.incomplete", f.etag));
    let url = hub.resolve_url(commit, &f.path);
    let resumed_from = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut received = 0u64;
    let mut may_restart = resumed_from > 0;
    loop {
        hub.with_retries(|| get_into(hub, &url, f, &part, pb, &mut received)).map_err(|e| {
            match fs::metadata(&part) {
                Ok(m) if m.len() > 0 => e.context(format!(
                    "{} of {} kept in {}: run 'diffvsr-wgpu fetch-weights' again to resume",
                    human(m.len()),
                    f.path,
                    part.display()
                )),
                _ => e,
            }
        })?;
        pb.set_message(format!("verifying {}", f.path));
        match verify(&part, f) {
            Ok(()) => break,
            Err(e) => {
                fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
                // A partial file left by an earlier run may be what is wrong (another source,
                // a disk error): start over once from nothing before blaming the hub.
                if may_restart {
                    may_restart = false;
                    pb.inc_length(resumed_from);
                    log::warn!("{}: {e:#}; the resumed partial file may have been bad: downloading it again from the start", f.path);
                    continue;
                }
                return Err(e.context(format!(
                    "{} is corrupt; the bad data was deleted: run 'diffvsr-wgpu fetch-weights' again, and if it fails the same way, the hub or a proxy is serving wrong data",
                    f.path
                )));
            }
        }
    }
    fs::rename(&part, &blob).with_context(|| format!("renaming {} to {}", part.display(), blob.display()))?;
    Ok(Outcome::Downloaded { bytes: received, resumed_from })
}

/// One GET of the rest of the file (a Range request when part of it is there already).
fn get_into(hub: &Hub, url: &str, f: &RemoteFile, part: &Path, pb: &ProgressBar, received: &mut u64) -> Result<(), Failure> {
    let what = format!("downloading {}", f.path);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .with_context(|| format!("opening {}", part.display()))?;
    let mut have = file.metadata()?.len();
    if let Some(size) = f.size {
        if have == size {
            return Ok(());
        }
        if have > size {
            file.set_len(0)?;
            have = 0;
        }
    }
    let mut headers = vec![("Accept-Encoding", "identity".to_string())];
    if have > 0 {
        headers.push(("Range", format!("bytes={have}-")));
    }
    let resp = hub.send(false, url, &headers, &what)?;
    let status = resp.status().as_u16();
    match status {
        200 if have > 0 => {
            // The server ignored the Range header: the body is the whole file.
            log::info!("{}: the server does not resume downloads; starting over", f.path);
            pb.inc_length(have);
            file.set_len(0)?;
            have = 0;
        }
        200 => {}
        206 => {
            let start = header(&resp, "content-range")
                .and_then(|r| r.trim().strip_prefix("bytes "))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if start != Some(have) {
                file.set_len(0)?;
                return Err(Failure::Transient(anyhow!("{what}: the server resumed at the wrong offset; starting over")));
            }
        }
        416 => {
            // Nothing left to send for this range: the partial file is as long as the server's.
            return match f.size {
                None => Ok(()),
                Some(_) => {
                    file.set_len(0)?;
                    Err(Failure::Transient(anyhow!("{what}: the server refused to resume; starting over")))
                }
            };
        }
        _ => return Err(hub.status_error(&resp, &what)),
    }

    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush()?;
                let of = f.size.map(|s| format!(" of {s}")).unwrap_or_default();
                return Err(Failure::Transient(anyhow!("{what}: connection lost after {have}{of} bytes: {e}")));
            }
        };
        // Every body is bounded: by the size the hub lists, else by the limit for unlisted sizes.
        let (limit, whose) = match f.size {
            Some(size) => (size, "the hub lists"),
            None => (hub.opts.unlisted_size_limit, "accepted for a file whose size the hub does not list"),
        };
        if have + n as u64 > limit {
            file.set_len(0)?;
            drop(file);
            let _ = fs::remove_file(part);
            return Err(Failure::Fatal(anyhow!("{what}: the server sent more than the {limit} bytes {whose}; the data was deleted")));
        }
        file.write_all(&buf[..n]).with_context(|| format!("writing {}", part.display()))?;
        have += n as u64;
        *received += n as u64;
        pb.inc(n as u64);
    }
    file.sync_all().with_context(|| format!("writing {}", part.display()))?;
    match f.size {
        Some(size) if have < size => {
            Err(Failure::Transient(anyhow!("{what}: connection closed after {have} of {size} bytes")))
        }
        _ => Ok(()),
    }
}

fn verify(part: &Path, f: &RemoteFile) -> Result<()> {
    let len = fs::metadata(part).with_context(|| format!("reading {}", part.display()))?.len();
    if let Some(size) = f.size {
        if len != size {
            bail!("size mismatch: {len} bytes, the hub lists {size}");
        }
    }
    verify_hash(part, f)
}

/// The file's sha256 (LFS files), else its git blob id when the hub's etag is one (40 hex
/// digits: every file outside LFS on the hub).
fn verify_hash(path: &Path, f: &RemoteFile) -> Result<()> {
    if let Some(want) = &f.sha256 {
        let got = sha256_file(path)?;
        if &got != want {
            bail!("sha256 mismatch: got {got}, the hub lists {want}");
        }
    } else if is_git_blob_id(&f.etag) {
        let got = git_blob_id_file(path)?;
        if !got.eq_ignore_ascii_case(&f.etag) {
            bail!("git blob id mismatch: got {got}, the hub lists {}", f.etag);
        }
    } else {
        log::warn!("{}: the hub's etag {:?} is no hash; only the size was checked", f.path, f.etag);
    }
    Ok(())
}

fn is_git_blob_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The git blob id (sha1 of `blob {len}\0` and the contents) of a file.
pub fn git_blob_id_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut h = sha1::Sha1::default();
    h.update(format!("blob {len}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        h.update(&buf[..n]);
    }
    if seen != len {
        bail!("{} changed while being read", path.display());
    }
    Ok(h.finish())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `snapshots/<commit>/<path>` → `../…/blobs/<etag>` (relative, so the cache can move).
fn link_snapshot(repo: &Path, snapshot: &Path, f: &RemoteFile) -> Result<()> {
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
    // Windows allows symlinks only in developer mode; without them, copy (huggingface_hub
    // falls back the same way).
    #[cfg(windows)]
    if std::os::windows::fs::symlink_file(target, pointer).is_ok() {
        return Ok(());
    }
    let _ = target;
    fs::copy(blob, pointer).map(|_| ()).with_context(|| format!("copying {} to {}", blob.display(), pointer.display()))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

mod sha1;
#[cfg(test)]
mod fake_hub;
#[cfg(test)]
mod tests;
