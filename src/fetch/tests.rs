//! `fetch-weights` against a local stand-in hub (no test contacts a real host).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fake_hub::{FakeFile, FakeHub, REPO};
use super::*;
use crate::models::release::checkpoint_path;
use crate::rng::Rng;

/// A folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("diffvsr-fetch-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next_u64() as u8).collect()
}

/// A small DiffVSR-shaped repository: the two checkpoints and a diffusers folder (LFS and plain
/// files), plus files the default selection leaves out.
fn repo_files() -> Vec<FakeFile> {
    let f = |path: &str, data: Vec<u8>, lfs: bool| FakeFile { path: path.to_string(), data, lfs };
    vec![
        f("DiffVSR_UNet.pt", bytes(1, 300_000), true),
        f("TE-3DVAE.pt", bytes(2, 120_001), true),
        f("upscaler4x/model_index.json", br#"{"_class_name": "StableDiffusionUpscalePipeline"}"#.to_vec(), false),
        f("upscaler4x/scheduler/scheduler_config.json", br#"{"prediction_type": "v_prediction"}"#.to_vec(), false),
        f("upscaler4x/unet/config.json", br#"{"in_channels": 7}"#.to_vec(), false),
        f("upscaler4x/unet/diffusion_pytorch_model.bin", bytes(3, 77_777), true),
        f("upscaler4x/tokenizer/vocab.json", bytes(4, 3_333), false),
        f("README.md", b"# DiffVSR\n".to_vec(), false),
        f("assets/teaser.png", bytes(5, 40_000), true),
    ]
}

const DEFAULT_FILES: usize = 7;

fn opts(hub: &FakeHub, cache: &Path) -> FetchOptions {
    FetchOptions {
        repo_id: REPO.to_string(),
        revision: "main".to_string(),
        endpoint: hub.endpoint.clone(),
        token: None,
        cache_dir: cache.to_path_buf(),
        include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
        verify_cached: false,
        retries: 0,
        retry_delay: Duration::from_millis(10),
        progress: false,
        convert: false,
        unlisted_size_limit: UNLISTED_SIZE_LIMIT,
        silent_timeout: Duration::from_secs(10),
    }
}

fn default_bytes(hub: &FakeHub) -> u64 {
    hub.files.iter().filter(|f| DEFAULT_INCLUDE.iter().any(|p| glob_match(p, &f.path))).map(|f| f.data.len() as u64).sum()
}

fn downloaded(report: &FetchReport) -> usize {
    report.files.iter().filter(|(_, o)| matches!(o, Outcome::Downloaded { .. })).count()
}

fn repo_dir(cache: &Path) -> PathBuf {
    repo_cache_dir(cache, REPO)
}

fn err_text(r: Result<FetchReport>) -> String {
    let e = format!("{:#}", r.expect_err("the fetch should have failed"));
    eprintln!("error text: {e}");
    e
}

#[test]
fn full_fetch_builds_the_hub_cache_layout() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("layout");
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();

    let repo = repo_dir(&tmp.0);
    assert_eq!(repo, tmp.0.join("models--huihui9998--DiffVSR"));
    assert_eq!(report.commit, hub.commit);
    assert_eq!(report.snapshot, repo.join("snapshots").join(&hub.commit));
    assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), hub.commit);
    assert_eq!(report.files.len(), DEFAULT_FILES);
    assert_eq!(downloaded(&report), DEFAULT_FILES);
    assert_eq!(report.bytes_downloaded, default_bytes(&hub));
    assert_eq!(hub.stats.lock().unwrap().total_served(), default_bytes(&hub));

    for f in &hub.files {
        let pointer = report.snapshot.join(&f.path);
        let wanted = DEFAULT_INCLUDE.iter().any(|p| glob_match(p, &f.path));
        assert_eq!(fs::symlink_metadata(&pointer).is_ok(), wanted, "{}: fetched iff selected", f.path);
        if !wanted {
            continue;
        }
        // Blobs named by sha256 (LFS) or blob id; snapshot entries are relative symlinks.
        let blob = repo.join("blobs").join(f.etag());
        assert_eq!(fs::read(&blob).unwrap(), f.data, "{}: blob contents", f.path);
        let link = fs::read_link(&pointer).unwrap();
        assert!(link.is_relative(), "{}: link {link:?} should be relative", f.path);
        assert_eq!(fs::canonicalize(&pointer).unwrap(), fs::canonicalize(&blob).unwrap());
        assert_eq!(fs::read(&pointer).unwrap(), f.data);
    }
    let names: Vec<String> =
        fs::read_dir(repo.join("blobs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), DEFAULT_FILES, "no leftovers in blobs/: {names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".incomplete")));
    assert!(hub.stats.lock().unwrap().log.iter().any(|l| l.starts_with("GET /cdn/")), "LFS files follow the redirect");

    assert_eq!(weights_dir_in(&tmp.0, REPO, "main").unwrap(), report.snapshot);
    assert_eq!(weights_dir_in(&tmp.0, REPO, &hub.commit).unwrap(), report.snapshot);
}

#[test]
fn second_fetch_downloads_nothing() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("noop");
    fetch(&opts(&hub, &tmp.0)).unwrap();
    hub.reset_stats();
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();
    assert!(report.files.iter().all(|(_, o)| *o == Outcome::Cached), "{:?}", report.files);
    assert_eq!(report.bytes_downloaded, 0);
    let stats = hub.stats.lock().unwrap();
    assert_eq!(stats.total_served(), 0);
    assert_eq!(stats.log.len(), 1, "only the listing is asked for: {:?}", stats.log);
}

#[test]
fn damaged_cached_blob_is_replaced_with_verify() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("verify");
    fetch(&opts(&hub, &tmp.0)).unwrap();
    let f = hub.file("TE-3DVAE.pt");
    let blob = repo_dir(&tmp.0).join("blobs").join(f.etag());
    let mut bad = f.data.clone();
    bad[1000] ^= 1;
    fs::write(&blob, &bad).unwrap();

    // Same size: only re-hashing finds it.
    hub.reset_stats();
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();
    assert_eq!(downloaded(&report), 0);
    let mut o = opts(&hub, &tmp.0);
    o.verify_cached = true;
    let report = fetch(&o).unwrap();
    assert_eq!(downloaded(&report), 1, "{:?}", report.files);
    assert_eq!(hub.stats.lock().unwrap().total_served(), f.data.len() as u64);
    assert_eq!(fs::read(&blob).unwrap(), f.data);
}

/// A full disk says so, with where to free space or move the cache (running again as the
/// message for a cut connection says would only fail again). The partial file is /dev/full.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_says_to_free_space() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("full");
    let f = hub.file("DiffVSR_UNet.pt").clone();
    let blobs = repo_dir(&tmp.0).join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    std::os::unix::fs::symlink("/dev/full", blobs.join(format!("{}.incomplete", f.etag()))).unwrap();
    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    assert!(e.contains("is full") && e.contains("free space there, or give --cache-dir on another disk") && e.contains("still to come"), "{e}");
}

#[test]
fn cut_connection_resumes_on_the_next_run() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("resume");
    let name = "DiffVSR_UNet.pt";
    let f = hub.file(name).clone();
    let cut = 100_000;
    hub.knobs.lock().unwrap().cut_after = Some((name.to_string(), cut));

    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    assert!(e.contains(name) && e.contains("connection"), "{e}");
    let part = repo_dir(&tmp.0).join("blobs").join(format!("{}.incomplete", f.etag()));
    assert_eq!(fs::metadata(&part).unwrap().len(), cut as u64, "the partial download is kept");
    assert!(weights_dir_in(&tmp.0, REPO, "main").is_err(), "an unfinished fetch is not a weights folder");

    hub.reset_stats();
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();
    let outcome = &report.files.iter().find(|(p, _)| p == name).unwrap().1;
    let rest = f.data.len() as u64 - cut as u64;
    assert_eq!(*outcome, Outcome::Downloaded { bytes: rest, resumed_from: cut as u64 });
    assert_eq!(hub.served(name), rest, "the second run downloads only the rest");
    let log = hub.stats.lock().unwrap().log.clone();
    assert!(log.iter().any(|l| l.contains(&format!("range=bytes={cut}-"))), "{log:?}");
    // The first run stopped at the failure (the first file in order); nothing is fetched twice.
    assert_eq!(hub.stats.lock().unwrap().total_served(), default_bytes(&hub) - cut as u64, "{:?}", report.files);
    assert_eq!(fs::read(report.snapshot.join(name)).unwrap(), f.data);
    assert!(!part.exists());
    weights_dir_in(&tmp.0, REPO, "main").unwrap();
}

#[test]
fn transient_failures_are_retried_and_resumed_in_one_run() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("retry");
    let name = "TE-3DVAE.pt";
    {
        let mut k = hub.knobs.lock().unwrap();
        k.cut_after = Some((name.to_string(), 50_000));
        k.fail_once = Some(("upscaler4x/unet/config.json".to_string(), 503));
    }
    let mut o = opts(&hub, &tmp.0);
    o.retries = 2;
    let report = fetch(&o).unwrap();
    assert_eq!(report.bytes_downloaded, default_bytes(&hub));
    assert_eq!(hub.served(name), hub.file(name).data.len() as u64, "nothing downloaded twice");
    assert_eq!(fs::read(report.snapshot.join(name)).unwrap(), hub.file(name).data);
}

#[test]
fn corrupted_download_is_detected_and_deleted() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("corrupt");
    let name = "upscaler4x/unet/diffusion_pytorch_model.bin";
    hub.knobs.lock().unwrap().corrupt = Some(name.to_string());
    let mut o = opts(&hub, &tmp.0);
    o.retries = 3;
    let e = err_text(fetch(&o));
    assert!(e.contains(name) && e.contains("corrupt") && e.contains("sha256 mismatch"), "{e}");
    assert!(e.contains(&hub.file(name).sha256()), "names the expected hash: {e}");
    assert_eq!(hub.served(name), hub.file(name).data.len() as u64, "a bad hash is not retried");

    let blobs = repo_dir(&tmp.0).join("blobs");
    let etag = hub.file(name).etag();
    assert!(!blobs.join(&etag).exists() && !blobs.join(format!("{etag}.incomplete")).exists(), "bad data deleted");
    let snap = repo_dir(&tmp.0).join("snapshots").join(&hub.commit);
    assert!(fs::symlink_metadata(snap.join(name)).is_err());
    assert!(weights_dir_in(&tmp.0, REPO, "main").is_err());

    // Once the hub serves the right bytes, the same cache completes.
    hub.knobs.lock().unwrap().corrupt = None;
    fetch(&opts(&hub, &tmp.0)).unwrap();
    weights_dir_in(&tmp.0, REPO, "main").unwrap();
}

#[test]
fn short_file_is_not_accepted() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("size");
    let name = "upscaler4x/tokenizer/vocab.json";
    let f = hub.file(name).clone();
    hub.knobs.lock().unwrap().cut_after = Some((name.to_string(), 1000));
    // With no retries left, a short file is reported, not accepted.
    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    assert!(e.contains(name) && e.contains(&format!("1000 of {} bytes", f.data.len())), "{e}");
}

#[test]
fn bad_partial_file_is_downloaded_again_once() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("badpart");
    let name = "DiffVSR_UNet.pt";
    let f = hub.file(name).clone();
    let blobs = repo_dir(&tmp.0).join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    // A partial file whose bytes are not the start of the real file.
    fs::write(blobs.join(format!("{}.incomplete", f.etag())), bytes(99, 20_000)).unwrap();
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();
    assert_eq!(hub.served(name), (f.data.len() - 20_000 + f.data.len()) as u64, "the rest, then all of it once");
    assert_eq!(fs::read(report.snapshot.join(name)).unwrap(), f.data);
}

#[test]
fn server_without_range_support_starts_over() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("norange");
    let name = "DiffVSR_UNet.pt";
    let f = hub.file(name).clone();
    {
        let mut k = hub.knobs.lock().unwrap();
        k.cut_after = Some((name.to_string(), 70_000));
        k.ignore_range = true;
    }
    assert!(fetch(&opts(&hub, &tmp.0)).is_err());
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();
    assert_eq!(hub.served(name), (70_000 + f.data.len()) as u64);
    assert_eq!(fs::read(report.snapshot.join(name)).unwrap(), f.data);
}

#[test]
fn listing_without_hashes_asks_with_head() {
    let hub = FakeHub::start(repo_files());
    hub.knobs.lock().unwrap().no_blob_info = true;
    let tmp = TempDir::new("head");
    let report = fetch(&opts(&hub, &tmp.0)).unwrap();
    let repo = repo_dir(&tmp.0);
    for (path, _) in &report.files {
        let f = hub.file(path);
        assert_eq!(fs::read(repo.join("blobs").join(f.etag())).unwrap(), f.data, "{path}");
    }
    let heads = hub.stats.lock().unwrap().log.iter().filter(|l| l.starts_with("HEAD ")).count();
    assert_eq!(heads, DEFAULT_FILES);

    // The etag from HEAD is still the sha256 of LFS files, so corruption is still caught.
    let tmp2 = TempDir::new("head-corrupt");
    hub.knobs.lock().unwrap().corrupt = Some("TE-3DVAE.pt".to_string());
    let e = err_text(fetch(&opts(&hub, &tmp2.0)));
    assert!(e.contains("sha256 mismatch"), "{e}");
}

#[test]
fn gated_repository_needs_a_token() {
    let hub = FakeHub::start(repo_files());
    hub.knobs.lock().unwrap().token = Some("hf_secret".to_string());
    let tmp = TempDir::new("gated");
    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    assert!(e.contains("401") && e.contains("not found or gated") && e.contains("HF_TOKEN"), "{e}");

    let mut o = opts(&hub, &tmp.0);
    o.token = Some("wrong".to_string());
    let e = err_text(fetch(&o));
    assert!(e.contains("the token given was refused"), "{e}");

    o.token = Some("hf_secret".to_string());
    fetch(&o).unwrap();
    let log = hub.stats.lock().unwrap().log.clone();
    assert!(log.iter().filter(|l| l.contains("/resolve/")).all(|l| l.ends_with("auth=Bearer hf_secret")), "{log:?}");
}

#[test]
fn clear_errors_for_wrong_repository_revision_or_pattern() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("wrong");
    let mut o = opts(&hub, &tmp.0);
    o.repo_id = "someone/missing".to_string();
    let e = err_text(fetch(&o));
    assert!(e.contains("someone/missing") && e.contains("not found or gated"), "{e}");

    let mut o = opts(&hub, &tmp.0);
    o.revision = "v9".to_string();
    let e = err_text(fetch(&o));
    assert!(e.contains("404") && e.contains("v9"), "{e}");

    let mut o = opts(&hub, &tmp.0);
    o.include.push("*.safetensors".to_string());
    let e = err_text(fetch(&o));
    assert!(e.contains("no file matching \"*.safetensors\""), "{e}");

    let mut o = opts(&hub, &tmp.0);
    o.revision = "../x".to_string();
    let e = err_text(fetch(&o));
    assert!(e.contains("--revision \"../x\" is unusable") && e.contains("e.g. main"), "{e}");
    let mut o = opts(&hub, &tmp.0);
    o.endpoint = "hf-mirror.com".to_string();
    let e = err_text(fetch(&o));
    assert!(e.contains("--endpoint \"hf-mirror.com\" is not an http(s) URL") && e.contains("https://hf-mirror.com"), "{e}");

    // --include selects other files; README alone is not a weights folder.
    let mut o = opts(&hub, &tmp.0);
    o.include = vec!["README.md".to_string()];
    let r = fetch(&o).unwrap();
    assert_eq!(r.files.len(), 1);
    assert!(weights_dir_in(&tmp.0, REPO, "main").is_err());
}

#[test]
fn missing_weights_error_says_what_to_run() {
    let tmp = TempDir::new("missing");
    let e = weights_dir_in(&tmp.0, DIFFVSR_REPO, DEFAULT_REVISION).unwrap_err();
    let repo = tmp.0.join("models--huihui9998--DiffVSR");
    assert_eq!(
        e.to_string(),
        format!("weights not found in {}: run 'diffvsr-wgpu fetch-weights' (or pass --weights DIR)", repo.display())
    );
}

#[test]
fn glob_patterns_match_like_huggingface_hub() {
    assert!(glob_match("upscaler4x/*", "upscaler4x/unet/config.json"));
    assert!(glob_match("upscaler4x/", "upscaler4x/model_index.json"));
    assert!(!glob_match("upscaler4x/*", "upscaler4x"));
    assert!(glob_match("*.pt", "DiffVSR_UNet.pt"));
    assert!(glob_match("*.pt", "sub/dir/x.pt"));
    assert!(!glob_match("*.pt", "x.pth"));
    assert!(glob_match("TE-3DVAE.pt", "TE-3DVAE.pt"));
    assert!(!glob_match("TE-3DVAE.pt", "TE-3DVAE.pt.bak"));
    assert!(glob_match("?E-*VAE.p?", "TE-3DVAE.pt"));
    assert!(glob_match("*", ""));
    assert!(!glob_match("a*b*c", "abx"));
    assert!(glob_match("a*b*c", "aXbYbZc"));
}

#[test]
fn unsafe_names_from_the_hub_are_refused() {
    for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "", "./a", "C:/x", "c:x", "C:"] {
        assert!(check_repo_path(bad).is_err(), "{bad:?}");
    }
    check_repo_path("upscaler4x/unet/config.json").unwrap();
    for bad in ["", "a/b", "..", "x y"] {
        assert!(check_etag(bad, "f").is_err(), "{bad:?}");
    }
    assert_eq!(normalize_etag("W/\"abc\""), "abc");
    assert_eq!(encode_path("refs/pr/1", false), "refs%2Fpr%2F1");
    assert_eq!(encode_path("a b/c.json", true), "a%20b/c.json");
}

fn golden(name: &str) -> Vec<u8> {
    fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoints").join(name)).unwrap()
}

/// Same tensor names, dtypes, shapes and bytes.
fn assert_same_tensors(got: &Path, want: &Path) {
    let (g, w) = (crate::weights::WeightStore::open(got).unwrap(), crate::weights::WeightStore::open(want).unwrap());
    assert_eq!(g.keys(), w.keys(), "{}", got.display());
    for k in w.keys() {
        let (a, b) = (g.raw(&k).unwrap(), w.raw(&k).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{k}");
        assert_eq!(a.data, b.data, "{k}");
    }
}

#[test]
fn checkpoints_are_converted_once_to_safetensors() {
    let f = |path: &str, data: Vec<u8>, lfs: bool| FakeFile { path: path.to_string(), data, lfs };
    // Real torch.save files: an {'ema': state_dict, 'step': 5} like DiffVSR_UNet.pt, and a
    // module state dict.
    let hub = FakeHub::start(vec![
        f("DiffVSR_UNet.pt", golden("ema.pt"), true),
        f("TE-3DVAE.pt", golden("module.pt"), true),
        f("upscaler4x/model_index.json", b"{}".to_vec(), false),
    ]);
    let tmp = TempDir::new("convert");
    let mut o = opts(&hub, &tmp.0);
    o.convert = true;
    let r = fetch(&o).unwrap();
    assert!(r.convert_errors.is_empty(), "{:?}", r.convert_errors);
    let conv = converted_dir(&repo_cache_dir(&tmp.0, REPO), &hub.commit);
    let (unet, vae) = (conv.join("DiffVSR_UNet.safetensors"), conv.join("TE-3DVAE.safetensors"));
    assert_eq!(r.converted, vec![unet.clone(), vae.clone()]);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoints");
    assert_same_tensors(&unet, &data.join("ema.safetensors"));
    assert_same_tensors(&vae, &data.join("module.safetensors"));
    assert_eq!(fs::read_dir(&conv).unwrap().count(), 2, "no temporary files left");

    // What an interrupted conversion left (its process gone: no PID is this large, and
    // unwritten for an hour) is removed by the next run; a file written a moment ago stays (a
    // conversion in progress in another container sharing the cache), and so does a name that
    // only looks alike.
    if Path::new("/proc/self").exists() {
        let stale = [conv.join("DiffVSR_UNet.safetensors.tmp4294967295"), conv.join(".DiffVSR_UNet.safetensors.tmp4294967295.tmp4294967295")];
        let (recent, kept) = (conv.join("TE-3DVAE.safetensors.tmp4294967294"), conv.join("notes.tmpfile"));
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for p in stale.iter().chain([&recent, &kept]) {
            fs::write(p, b"partial").unwrap();
            if p != &recent {
                fs::File::options().write(true).open(p).unwrap().set_modified(hour_ago).unwrap();
            }
        }
        // A write's temporary folder (safetensors' own temporary file inside), left the same way.
        let stale_dir = conv.join(".TE-3DVAE.safetensors.tmp4294967293");
        fs::create_dir_all(&stale_dir).unwrap();
        fs::write(stale_dir.join(".tmpAbC123"), b"partial").unwrap();
        fs::File::options().write(true).open(stale_dir.join(".tmpAbC123")).unwrap().set_modified(hour_ago).unwrap();
        fs::File::open(&stale_dir).unwrap().set_modified(hour_ago).unwrap();
        // One whose file is still being written (the folder's own time stays old) stays.
        let busy_dir = conv.join(".DiffVSR_UNet.safetensors.tmp4294967292");
        fs::create_dir_all(&busy_dir).unwrap();
        fs::write(busy_dir.join(".tmpDeF456"), b"growing").unwrap();
        fs::File::open(&busy_dir).unwrap().set_modified(hour_ago).unwrap();
        fetch(&o).unwrap();
        assert!(stale.iter().all(|p| !p.exists()) && !stale_dir.exists() && recent.exists() && kept.exists());
        assert!(busy_dir.join(".tmpDeF456").exists(), "a conversion in progress was removed");
        fs::remove_dir_all(&busy_dir).unwrap();
        fs::remove_file(&recent).unwrap();
        fs::remove_file(&kept).unwrap();
    }

    // Models find the conversion from the weights folder.
    let dir = weights_dir_in(&tmp.0, REPO, "main").unwrap();
    assert_eq!(checkpoint_path(&dir, "DiffVSR_UNet.pt"), unet);
    assert_eq!(checkpoint_path(&dir, "TE-3DVAE.pt"), vae);
    assert_eq!(checkpoint_path(&tmp.0, "TE-3DVAE.pt"), tmp.0.join("TE-3DVAE.pt"));

    // Once only.
    let before = fs::metadata(&unet).unwrap().modified().unwrap();
    let r = fetch(&o).unwrap();
    assert!(r.converted.is_empty() && r.convert_errors.is_empty());
    assert_eq!(fs::metadata(&unet).unwrap().modified().unwrap(), before);

    // A conversion cut short (a full disk, a damaged copy) is made again, not kept for ever.
    let len = fs::metadata(&vae).unwrap().len();
    fs::OpenOptions::new().write(true).open(&vae).unwrap().set_len(len / 2).unwrap();
    let r = fetch(&o).unwrap();
    assert_eq!((r.converted, r.convert_errors), (vec![vae.clone()], vec![]));
    assert_same_tensors(&vae, &data.join("module.safetensors"));

    // A copy damaged where its header still reads (a flipped byte in the data) is what the
    // models would load: --verify converts the checkpoints afresh.
    let mut bytes = fs::read(&unet).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&unet, &bytes).unwrap();
    assert!(fetch(&o).unwrap().converted.is_empty(), "without --verify the copy is trusted");
    o.verify_cached = true;
    let r = fetch(&o).unwrap();
    assert_eq!((r.converted, r.convert_errors), (vec![unet.clone(), vae.clone()], vec![]));
    assert_same_tensors(&unet, &data.join("ema.safetensors"));
}

#[test]
fn failed_conversion_is_reported_without_failing_the_fetch() {
    let f = |path: &str, data: Vec<u8>, lfs: bool| FakeFile { path: path.to_string(), data, lfs };
    let hub = FakeHub::start(vec![
        f("DiffVSR_UNet.pt", golden("ema.pt"), true),
        f("TE-3DVAE.pt", bytes(7, 5000), true),
        f("upscaler4x/model_index.json", b"{}".to_vec(), false),
    ]);
    let tmp = TempDir::new("convert-bad");
    let mut o = opts(&hub, &tmp.0);
    o.convert = true;
    let r = fetch(&o).unwrap();
    assert_eq!(r.converted.len(), 1);
    assert_eq!(r.convert_errors.len(), 1);
    eprintln!("conversion error text: {}", r.convert_errors[0]);
    assert!(r.convert_errors[0].contains("TE-3DVAE.pt"), "{:?}", r.convert_errors);
    let conv = converted_dir(&repo_cache_dir(&tmp.0, REPO), &hub.commit);
    assert_eq!(fs::read_dir(&conv).unwrap().count(), 1, "no partial output left");
    weights_dir_in(&tmp.0, REPO, "main").unwrap();
}

/// The token goes to the endpoint's origin only: a resolve URL redirected to another host is
/// fetched there without it, and a HEAD is never sent there at all (huggingface_hub's rule).
#[test]
fn token_never_leaves_the_endpoint() {
    let other = FakeHub::start(repo_files());
    other.knobs.lock().unwrap().any_revision = true;
    let hub = FakeHub::start(repo_files());
    {
        let mut k = hub.knobs.lock().unwrap();
        k.token = Some("hf_secret".to_string());
        k.redirect_to = Some(other.endpoint.clone());
    }
    let tmp = TempDir::new("redirect");
    let mut o = opts(&hub, &tmp.0);
    o.token = Some("hf_secret".to_string());
    let report = fetch(&o).unwrap();
    for (path, _) in &report.files {
        assert_eq!(fs::read(report.snapshot.join(path)).unwrap(), hub.file(path).data, "{path}");
    }
    let theirs = other.stats.lock().unwrap().log.clone();
    assert_eq!(theirs.iter().filter(|l| l.starts_with("GET ") && l.contains("/resolve/")).count(), DEFAULT_FILES, "{theirs:?}");
    assert!(theirs.iter().all(|l| l.ends_with("auth=-")), "the token reached another host: {theirs:?}");
    let ours = hub.stats.lock().unwrap().log.clone();
    assert!(ours.iter().all(|l| l.ends_with("auth=Bearer hf_secret")), "{ours:?}");

    // A HEAD redirected to another host without an ETag is an error; that host is not asked.
    other.reset_stats();
    hub.knobs.lock().unwrap().no_blob_info = true;
    let tmp = TempDir::new("redirect-head");
    let mut o = opts(&hub, &tmp.0);
    o.token = Some("hf_secret".to_string());
    let e = err_text(fetch(&o));
    assert!(e.contains("another host") && e.contains(&other.endpoint), "{e}");
    assert!(other.stats.lock().unwrap().log.is_empty(), "{:?}", other.stats.lock().unwrap().log);
}

#[test]
fn redirect_targets_and_who_gets_the_token() {
    let t = |from: &str, loc: &str| redirect_target(from, loc).map_err(|e| e.to_string());
    let base = "https://huggingface.co/org/repo/resolve/abc/file.json";
    assert_eq!(t(base, "/org/renamed/resolve/abc/file.json").unwrap(), ("https://huggingface.co/org/renamed/resolve/abc/file.json".into(), true));
    assert_eq!(t(base, "other.json").unwrap(), ("https://huggingface.co/org/repo/resolve/abc/other.json".into(), true));
    assert!(t(base, "https://HuggingFace.co/x").unwrap().1);
    assert_eq!(t(base, "https://cdn-lfs.hf.co/x?sig=1").unwrap(), ("https://cdn-lfs.hf.co/x?sig=1".into(), false));
    assert_eq!(t(base, "//cdn-lfs.hf.co/x").unwrap(), ("https://cdn-lfs.hf.co/x".into(), false));
    // Another port is another origin.
    assert!(!t("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/a").unwrap().1);
    // Never from https down to http, not even on the same host.
    assert!(t(base, "http://huggingface.co/x").unwrap_err().contains("plain http"));
    assert!(t(base, "ftp://x/y").is_err() && t(base, "https://user@evil/x").is_err());
}

/// Files outside LFS are checked against the hub's git blob id, on download and with --verify.
#[test]
fn non_lfs_files_are_verified_by_git_blob_id() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("blobid");
    let name = "upscaler4x/tokenizer/vocab.json";
    hub.knobs.lock().unwrap().corrupt = Some(name.to_string());
    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    assert!(e.contains(name) && e.contains("git blob id mismatch") && e.contains(&hub.file(name).blob_id()), "{e}");
    hub.knobs.lock().unwrap().corrupt = None;
    fetch(&opts(&hub, &tmp.0)).unwrap();

    // A same-size change to a cached non-LFS blob is found by --verify.
    let blob = repo_dir(&tmp.0).join("blobs").join(hub.file(name).etag());
    let mut bad = hub.file(name).data.clone();
    bad[7] ^= 0x20;
    fs::write(&blob, &bad).unwrap();
    let mut o = opts(&hub, &tmp.0);
    o.verify_cached = true;
    let report = fetch(&o).unwrap();
    assert_eq!(downloaded(&report), 1, "{:?}", report.files);
    assert_eq!(fs::read(&blob).unwrap(), hub.file(name).data);
}

/// No body may run past the size the hub lists, nor, when it lists none, past the limit for
/// unlisted sizes; what was received is deleted.
#[test]
fn bodies_are_bounded_by_the_listed_size() {
    let hub = FakeHub::start(repo_files());
    let tmp = TempDir::new("overlong");
    let name = "upscaler4x/unet/config.json";
    hub.knobs.lock().unwrap().overlong = Some((name.to_string(), 5000));
    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    let size = hub.file(name).data.len();
    assert!(e.contains(name) && e.contains(&format!("more than the {size} bytes the hub lists")), "{e}");

    // No sizes at all (listing, HEAD, Content-Length): small files pass, verified by hash; a
    // file past the limit is refused and deleted.
    let hub = FakeHub::start(repo_files());
    {
        let mut k = hub.knobs.lock().unwrap();
        k.no_blob_info = true;
        k.no_size = true;
    }
    let tmp = TempDir::new("unsized");
    let mut o = opts(&hub, &tmp.0);
    o.unlisted_size_limit = 100_000;
    let e = err_text(fetch(&o));
    assert!(e.contains("DiffVSR_UNet.pt") && e.contains("more than the 100000 bytes accepted"), "{e}");
    assert!(hub.served("DiffVSR_UNet.pt") < 300_000 + 1, "streamed on");
    let left: Vec<_> = fs::read_dir(repo_dir(&tmp.0).join("blobs")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    o.unlisted_size_limit = 1 << 20;
    let report = fetch(&o).unwrap();
    for (path, _) in &report.files {
        assert_eq!(fs::read(report.snapshot.join(path)).unwrap(), hub.file(path).data, "{path}");
    }
}

/// Issue 12: a server that answers 404 to everything, a refused connection and a silent one
/// each get their own message, quickly, instead of blaming the repository or waiting minutes.
#[test]
fn dead_wrong_or_silent_endpoints_are_told_apart() {
    let hub = FakeHub::start(repo_files());
    hub.knobs.lock().unwrap().all_404 = true;
    let tmp = TempDir::new("endpoint");
    let e = err_text(fetch(&opts(&hub, &tmp.0)));
    assert!(e.contains("does not look like a hub") && e.contains(&hub.endpoint) && e.contains("--endpoint"), "{e}");

    // The real repository and revision errors still say which.
    let hub = FakeHub::start(repo_files());
    let mut o = opts(&hub, &tmp.0);
    o.revision = "v9".to_string();
    assert!(err_text(fetch(&o)).contains("revision v9 not found"));

    // Nothing listens: no retries, no waiting.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut o = opts(&hub, &tmp.0);
    o.endpoint = format!("http://127.0.0.1:{port}");
    o.retries = 5;
    o.retry_delay = Duration::from_secs(1);
    let t0 = std::time::Instant::now();
    let e = err_text(fetch(&o));
    assert!(e.contains("connection refused") && e.contains("endpoint"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // Something accepts connections but never answers: given up at the deadline, saying so.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = opts(&hub, &tmp.0);
    o.endpoint = format!("http://{}", silent.local_addr().unwrap());
    o.retries = 5;
    o.retry_delay = Duration::from_millis(200);
    o.silent_timeout = Duration::from_secs(1);
    let t0 = std::time::Instant::now();
    let e = err_text(fetch(&o));
    assert!(e.contains("within 1 s") && e.contains("silent"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    drop(silent);
}
