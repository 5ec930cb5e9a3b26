//! The hub's public protocol: the file listing, `HEAD` for missing hashes, redirects that keep
//! the token at the endpoint's origin, and failures sorted into what a retry can mend.

use super::*;

#[derive(Deserialize)]
struct RepoInfo {
    pub(super) sha: Option<String>,
    #[serde(default)]
    pub(super) siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
pub(super) struct Sibling {
    pub(super) rfilename: String,
    pub(super) size: Option<u64>,
    #[serde(rename = "blobId")]
    pub(super) blob_id: Option<String>,
    pub(super) lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
pub(super) struct LfsInfo {
    pub(super) sha256: String,
    pub(super) size: u64,
}

/// One file to fetch, with what the hub says about it.
#[derive(Clone, Debug)]
pub(super) struct RemoteFile {
    pub(super) path: String,
    /// Blob name in the cache: sha256 for LFS files, the git blob id otherwise.
    pub(super) etag: String,
    pub(super) size: Option<u64>,
    pub(super) sha256: Option<String>,
}

/// How a request failed: worth another try (the network), or not (everything else).
pub(super) enum Failure {
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
pub(super) fn encode_path(s: &str, keep_slash: bool) -> String {
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
pub(super) fn check_repo_path(p: &str) -> Result<()> {
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
pub(super) fn check_etag(e: &str, path: &str) -> Result<()> {
    if e.is_empty() || e.len() > 128 || !e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("the hub gave {path} an unusable etag {e:?}");
    }
    Ok(())
}

/// `W/"abc"` → `abc`.
pub(super) fn normalize_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

pub(super) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased; `None` for anything else.
pub(super) fn origin(url: &str) -> Option<String> {
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
pub(super) fn redirect_target(from: &str, location: &str) -> Result<(String, bool)> {
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

pub(super) fn header<'a>(r: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

pub(super) struct Hub<'a> {
    pub(super) opts: &'a FetchOptions,
    agent: ureq::Agent,
    pub(super) endpoint: String,
}

impl<'a> Hub<'a> {
    pub(super) fn new(opts: &'a FetchOptions) -> Result<Hub<'a>> {
        let endpoint = opts.endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("--endpoint {endpoint:?} is not an http(s) URL: give it with its scheme, e.g. https://hf-mirror.com");
        }
        if opts.revision.is_empty() || check_repo_path(&opts.revision).is_err() {
            bail!("--revision {:?} is unusable: give a branch, tag or commit, e.g. main", opts.revision);
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
    pub(super) fn send(&self, head: bool, url: &str, headers: &[(&str, String)], what: &str) -> Result<ureq::http::Response<ureq::Body>, Failure> {
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
    pub(super) fn with_retries<T>(&self, f: impl FnMut() -> Result<T, Failure>) -> Result<T> {
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
    pub(super) fn status_error(&self, resp: &ureq::http::Response<ureq::Body>, what: &str) -> Failure {
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
    pub(super) fn repo_info(&self) -> Result<(String, Vec<Sibling>)> {
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
    pub(super) fn head_file(&self, commit: &str, path: &str) -> Result<(String, Option<u64>)> {
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

    pub(super) fn resolve_url(&self, commit: &str, path: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.endpoint, encode_path(&self.opts.repo_id, true), commit, encode_path(path, true))
    }
}
