//! A stand-in for the Hugging Face hub on 127.0.0.1, for the fetch tests: the repository API,
//! resolve URLs (LFS files redirect to a "CDN" path as on the real hub), Range requests, and
//! switches that cut a response short, corrupt a file, demand a token or fail once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub const REPO: &str = "huihui9998/DiffVSR";

#[derive(Clone)]
pub struct FakeFile {
    pub path: String,
    pub data: Vec<u8>,
    pub lfs: bool,
}

impl FakeFile {
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.data))
    }

    /// The git blob id, as the hub lists it for files outside LFS.
    pub fn blob_id(&self) -> String {
        super::sha1::git_blob_id(&self.data)
    }

    /// The blob name the cache should use.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.blob_id()
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Default)]
pub struct Knobs {
    /// The next body sent for this file stops after this many bytes (the connection is closed).
    pub cut_after: Option<(String, usize)>,
    /// This file is always served with one byte flipped.
    pub corrupt: Option<String>,
    /// Requests to the API and resolve URLs need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The listing carries no sizes or hashes, so the client must ask with HEAD.
    pub no_blob_info: bool,
    /// Range headers are ignored (always 200 with the whole file).
    pub ignore_range: bool,
    /// The next GET of this file answers with this status.
    pub fail_once: Option<(String, u16)>,
    /// Resolve URLs answer with a redirect to this origin (another host), same path.
    pub redirect_to: Option<String>,
    /// Resolve URLs accept any revision (a second hub standing in for another host).
    pub any_revision: bool,
    /// Every request answers 404 with no hub error code (a wrong endpoint).
    pub all_404: bool,
    /// No sizes anywhere: not in the listing, HEAD or Content-Length (bodies end at close).
    pub no_size: bool,
    /// Serve this many extra bytes after this file's contents.
    pub overlong: Option<(String, usize)>,
}

#[derive(Default)]
pub struct Stats {
    /// Body bytes sent (counted as each reply starts them), per repository path.
    pub served: HashMap<String, u64>,
    /// Every request: "METHOD target range=… auth=…".
    pub log: Vec<String>,
}

impl Stats {
    pub fn total_served(&self) -> u64 {
        self.served.values().sum()
    }
}

pub struct FakeHub {
    pub endpoint: String,
    pub commit: String,
    pub files: Vec<FakeFile>,
    pub knobs: Arc<Mutex<Knobs>>,
    pub stats: Arc<Mutex<Stats>>,
}

impl FakeHub {
    /// Serves `files` until the test process ends.
    pub fn start(files: Vec<FakeFile>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let commit = hex(&Sha256::digest(format!("commit {endpoint}").as_bytes()))[..40].to_string();
        let hub = FakeHub { endpoint, commit, files, knobs: Default::default(), stats: Default::default() };
        let state = Arc::new(Shared {
            commit: hub.commit.clone(),
            files: hub.files.clone(),
            knobs: hub.knobs.clone(),
            stats: hub.stats.clone(),
        });
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = state.serve(conn);
                });
            }
        });
        hub
    }

    pub fn file(&self, path: &str) -> &FakeFile {
        self.files.iter().find(|f| f.path == path).unwrap()
    }

    pub fn served(&self, path: &str) -> u64 {
        self.stats.lock().unwrap().served.get(path).copied().unwrap_or(0)
    }

    pub fn reset_stats(&self) {
        *self.stats.lock().unwrap() = Stats::default();
    }
}

struct Shared {
    commit: String,
    files: Vec<FakeFile>,
    knobs: Arc<Mutex<Knobs>>,
    stats: Arc<Mutex<Stats>>,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Repository path the body belongs to (for the byte count), and where to cut it.
    file: Option<String>,
    cut: Option<usize>,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, headers: Vec::new(), body: body.into(), file: None, cut: None }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Shared {
    fn serve(&self, mut conn: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let range = headers.get("range").cloned();
        let auth = headers.get("authorization").cloned();
        self.stats.lock().unwrap().log.push(format!(
            "{method} {target} range={} auth={}",
            range.as_deref().unwrap_or("-"),
            auth.as_deref().unwrap_or("-")
        ));

        let reply = self.route(&method, &target, range.as_deref(), auth.as_deref());
        let head = method == "HEAD";
        let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
        if !self.knobs.lock().unwrap().no_size {
            out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
        }
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        conn.write_all(out.as_bytes())?;
        if !head {
            let n = reply.cut.unwrap_or(reply.body.len()).min(reply.body.len());
            // Counted before it is sent: a client that has read the whole body may check the
            // count at once, before this thread would run again (a count of what is offered:
            // a client that hangs up early got less).
            if let Some(f) = &reply.file {
                *self.stats.lock().unwrap().served.entry(f.clone()).or_default() += n as u64;
            }
            conn.write_all(&reply.body[..n])?;
        }
        conn.flush()?;
        let _ = conn.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    fn authorized(&self, auth: Option<&str>) -> bool {
        match &self.knobs.lock().unwrap().token {
            None => true,
            Some(t) => auth == Some(format!("Bearer {t}").as_str()),
        }
    }

    fn route(&self, method: &str, target: &str, range: Option<&str>, auth: Option<&str>) -> Reply {
        let mut r = self.route_inner(method, target, range, auth);
        if self.knobs.lock().unwrap().no_size {
            r.headers.retain(|(k, _)| k != "X-Linked-Size");
        }
        r
    }

    fn route_inner(&self, method: &str, target: &str, range: Option<&str>, auth: Option<&str>) -> Reply {
        if self.knobs.lock().unwrap().all_404 {
            return Reply::new(404, "Not Found");
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = percent_decode(path);
        let api_prefix = format!("/api/models/{REPO}/revision/");
        let resolve_prefix = format!("/{REPO}/resolve/");
        if let Some(rev) = path.strip_prefix(&api_prefix) {
            if !self.authorized(auth) {
                return Reply::new(401, "unauthorized");
            }
            if rev != "main" && rev != self.commit {
                return Reply::new(404, "revision not found").header("X-Error-Code", "RevisionNotFound");
            }
            return Reply::new(200, self.listing(query.contains("blobs=true")))
                .header("Content-Type", "application/json");
        }
        if path.starts_with("/api/models/") {
            // The real hub answers 401 for a repository that does not exist (or is private).
            return Reply::new(401, "repository not found").header("X-Error-Code", "RepoNotFound");
        }
        if let Some(rest) = path.strip_prefix(&resolve_prefix) {
            if !self.authorized(auth) {
                return Reply::new(401, "unauthorized");
            }
            if let Some(base) = self.knobs.lock().unwrap().redirect_to.clone() {
                return Reply::new(302, "").header("Location", format!("{base}{target}"));
            }
            let Some((rev, file)) = rest.split_once('/') else { return Reply::new(404, "") };
            if rev != "main" && rev != self.commit && !self.knobs.lock().unwrap().any_revision {
                return Reply::new(404, "revision not found").header("X-Error-Code", "RevisionNotFound");
            }
            let Some(f) = self.files.iter().find(|f| f.path == file) else {
                return Reply::new(404, "entry not found").header("X-Error-Code", "EntryNotFound");
            };
            if f.lfs {
                // As the hub does: a redirect to the content store, the LFS facts in headers.
                return Reply::new(302, "")
                    .header("Location", format!("/cdn/{}", f.sha256()))
                    .header("X-Repo-Commit", self.commit.clone())
                    .header("X-Linked-Etag", format!("\"{}\"", f.sha256()))
                    .header("X-Linked-Size", f.data.len().to_string())
                    .header("ETag", format!("\"{}\"", f.blob_id()));
            }
            return self.content(method, f, range).header("ETag", format!("\"{}\"", f.blob_id()));
        }
        if let Some(sha) = path.strip_prefix("/cdn/") {
            let Some(f) = self.files.iter().find(|f| f.lfs && f.sha256() == sha) else {
                return Reply::new(404, "no such object");
            };
            return self.content(method, f, range).header("ETag", format!("\"{}\"", f.sha256()));
        }
        Reply::new(404, "not found")
    }

    fn content(&self, method: &str, f: &FakeFile, range: Option<&str>) -> Reply {
        let mut knobs = self.knobs.lock().unwrap();
        let mut data = f.data.clone();
        if let Some((p, n)) = &knobs.overlong {
            if *p == f.path {
                data.extend(std::iter::repeat_n(0x55u8, *n));
            }
        }
        if knobs.corrupt.as_deref() == Some(f.path.as_str()) {
            let mid = data.len() / 2;
            data[mid] ^= 0x5a;
        }
        if method == "GET" {
            if let Some((p, status)) = knobs.fail_once.clone() {
                if p == f.path {
                    knobs.fail_once = None;
                    return Reply::new(status, "try later");
                }
            }
        }
        let total = data.len();
        let start = if knobs.ignore_range {
            None
        } else {
            range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')).and_then(|s| s.parse::<usize>().ok())
        };
        let mut reply = match start {
            Some(s) if s >= total => return Reply::new(416, "").header("Content-Range", format!("bytes */{total}")),
            Some(s) => Reply::new(206, data[s..].to_vec()).header("Content-Range", format!("bytes {s}-{}/{total}", total - 1)),
            None => Reply::new(200, data),
        };
        reply = reply.header("X-Repo-Commit", self.commit.clone()).header("Accept-Ranges", "bytes");
        reply.file = Some(f.path.clone());
        if method == "GET" {
            if let Some((p, n)) = knobs.cut_after.clone() {
                if p == f.path {
                    knobs.cut_after = None;
                    reply.cut = Some(n);
                }
            }
        }
        reply
    }

    fn listing(&self, blobs: bool) -> String {
        let no_info = self.knobs.lock().unwrap().no_blob_info;
        let siblings: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|f| {
                if !blobs || no_info {
                    return serde_json::json!({ "rfilename": f.path });
                }
                let mut v = serde_json::json!({ "rfilename": f.path, "size": f.data.len(), "blobId": f.blob_id() });
                if f.lfs {
                    v["lfs"] = serde_json::json!({ "sha256": f.sha256(), "size": f.data.len(), "pointerSize": 134 });
                }
                v
            })
            .collect();
        serde_json::json!({ "id": REPO, "modelId": REPO, "sha": self.commit, "private": false, "siblings": siblings }).to_string()
    }
}
