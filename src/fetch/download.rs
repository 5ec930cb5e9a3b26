//! One file into the cache: resumed, retried, bounded by its listed size and checked against its
//! hash before it is renamed into place.

use super::*;

pub(super) fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
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

pub(super) fn human(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} bytes"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// Brings `blobs/<etag>` into existence, through `<etag>.incomplete`, resuming a partial file,
/// retrying transient failures, and checking size and sha256 before the rename.
pub(super) fn download(hub: &Hub, f: &RemoteFile, commit: &str, blobs: &Path, pb: &ProgressBar) -> Result<Outcome> {
    let blob = blobs.join(&f.etag);
    let part = blobs.join(format!("{}.incomplete", f.etag));
    let url = hub.resolve_url(commit, &f.path);
    let resumed_from = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut received = 0u64;
    let mut may_restart = resumed_from > 0;
    loop {
        hub.with_retries(|| get_into(hub, &url, f, &part, pb, &mut received)).map_err(|e| {
            let full = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
            });
            let have = fs::metadata(&part).map_or(0, |m| m.len());
            if full {
                // Running again as the message below says would fail the same way.
                let left = f.size.map_or(String::new(), |s| format!(", {} of {} still to come", human(s.saturating_sub(have)), f.path));
                return e.context(format!(
                    "the disk holding {} is full ({} kept in {}{left}): free space there, or give --cache-dir on another disk, then run 'diffvsr-wgpu fetch-weights' again to resume",
                    blobs.display(),
                    human(have),
                    part.display()
                ));
            }
            if have > 0 {
                e.context(format!("{} of {} kept in {}: run 'diffvsr-wgpu fetch-weights' again to resume", human(have), f.path, part.display()))
            } else {
                e
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

pub(super) fn verify(part: &Path, f: &RemoteFile) -> Result<()> {
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
pub(super) fn verify_hash(path: &Path, f: &RemoteFile) -> Result<()> {
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
