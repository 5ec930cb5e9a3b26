//! Kernel tiles chosen per shape by timing them on the adapter in use (autotuning).
//!
//! The matmul and convolution kernels come in several tiles for one problem: the cooperative
//! kernels on 8 or 4 subgroups, one or two output blocks wide, with the next K step's loads
//! overlapped or not; the portable kernels with narrower or wider tiles. The cooperative
//! attention kernel comes with a narrow and a wide query tile, and a deep one that stages more
//! of K and V at once. Which is fastest depends on the GPU and the shape (a grid of 128
//! workgroups fills one GPU and starves another), so fixed rules leave speed behind. Where an op
//! has such a choice, the first time it meets a shape it times each candidate on scratch tensors
//! of that shape and keeps the fastest for the rest of the process ([`Tuner::pick`]).
//!
//! Only tiles that compute the same sums in the same order are ever candidates (each output's
//! products added in K order, with the same K step), so a choice changes the time and never a
//! value: the tests check that byte for byte. Software adapters (lavapipe) do not tune by
//! default: their timings say nothing a user would want, and tuning costs them seconds.
//!
//! The choices persist in a file per adapter, driver and build ([`cache_file`]), so the next run
//! on the same card starts with them and times only shapes it has not met; a choice whose
//! candidates have changed since (another build's tiles) is timed again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Whether to tune (`--tune`, `DIFFVSR_TUNE`); also the auto|on|off of `--norm-into-conv` and
/// `--f16-operands`, whose auto each option's help explains.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum TuneMode {
    /// On a hardware GPU, off on a software adapter (for tuning).
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for TuneMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            // Empty: an environment variable set to nothing, as if unset.
            "auto" | "" => Ok(TuneMode::Auto),
            "on" | "1" | "true" | "yes" => Ok(TuneMode::On),
            "off" | "0" | "false" | "no" => Ok(TuneMode::Off),
            _ => Err(format!("{s}: expected auto, on or off")),
        }
    }
}

/// A candidate is kept over the default (the first) only when it is faster by more than this
/// share: two tiles within timing noise of each other keep the rule's choice, so a run does not
/// flip between them.
pub const MARGIN: f64 = 0.03;

/// One shape's measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    /// The op and its problem, e.g. `conv f16 taps [1, 3, 3] stride [1, 1] pad [0, 1, 1] 320 ->
    /// 320 on [16, 64, 64, 320]`.
    pub key: String,
    /// The candidates, the default first.
    pub labels: Vec<String>,
    /// Seconds per run of each candidate; `None` where timing it failed.
    pub seconds: Vec<Option<f64>>,
    /// The index kept.
    pub pick: usize,
    /// Read from the cache file rather than timed in this run.
    #[serde(skip)]
    pub cached: bool,
}

impl Tuned {
    /// One line: the shape, the tile kept and its time, and the others'.
    pub fn describe(&self) -> String {
        let time = |s: &Option<f64>| s.map_or("failed".to_string(), |s| format!("{:.3} ms", s * 1e3));
        let others: Vec<String> = (0..self.labels.len()).filter(|&i| i != self.pick).map(|i| format!("{} {}", self.labels[i], time(&self.seconds[i]))).collect();
        format!("{}: {} {} (against {})", self.key, self.labels[self.pick], time(&self.seconds[self.pick]), others.join(", "))
    }
}

/// The choices made so far on one device.
#[derive(Debug, Default)]
pub struct Tuner {
    on: bool,
    /// Makes the choices the cache holds and times nothing new (a graph planned, never run:
    /// `forward --plan-only`).
    replay_only: bool,
    /// Every choice known: this run's and the cache file's.
    picks: Mutex<BTreeMap<String, Tuned>>,
    /// The keys this run has asked for.
    met: Mutex<BTreeSet<String>>,
    /// Where the choices are kept between runs (none: this run only).
    cache: Option<PathBuf>,
    /// A write to `cache` failed (warned about once).
    write_failed: AtomicBool,
    /// Set while graphs are recorded only to be planned ([`Tuner::untimed`]).
    untimed: AtomicBool,
}

/// The cache file's contents.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    /// What the choices were measured on (for people reading the file).
    adapter: String,
    picks: Vec<Tuned>,
}

impl Tuner {
    /// A tuner (`on`) whose choices persist in the file `cache`, starting with those it holds.
    /// A file that cannot be read is set aside with a warning (it is rewritten as shapes are
    /// timed).
    pub fn new(on: bool, cache: Option<PathBuf>) -> Tuner {
        let mut picks = BTreeMap::new();
        if let Some(path) = cache.as_ref().filter(|p| on && p.exists()) {
            match read_cache(path) {
                Ok(v) => picks.extend(v.into_iter().map(|t| (t.key.clone(), Tuned { cached: true, ..t }))),
                Err(e) => log::warn!("the tuning cache {} is unreadable ({e:#}); its shapes are timed again", path.display()),
            }
        }
        Tuner { on, replay_only: false, picks: Mutex::new(picks), met: Mutex::default(), cache: cache.filter(|_| on), write_failed: Default::default(), untimed: Default::default() }
    }

    /// A tuner that makes the choices the cache file holds (those of earlier runs on this
    /// adapter) and the default for every other shape, timing nothing: for a graph that is
    /// planned and never run, so that its plan is the one a tuned run would make.
    pub fn replaying(cache: Option<PathBuf>) -> Tuner {
        Tuner { replay_only: true, ..Tuner::new(true, cache) }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Whether candidates are timed for shapes without a choice (not when replaying, nor
    /// within [`Tuner::untimed`]).
    pub fn times(&self) -> bool {
        self.on && !self.replay_only && !self.untimed.load(Ordering::Relaxed)
    }

    /// Runs `f` (the recording of graphs that are planned and never run: the job's memory plan
    /// weighing tile sizes) timing nothing: shapes with a choice get it, others the default.
    /// Timing a candidate allocates its shape's tensors, which for a tile being weighed because
    /// it may not fit is the wrong thing to do, and costs time for shapes that may never run.
    pub fn untimed<T>(&self, f: impl FnOnce() -> T) -> T {
        super::with_flag_set(&self.untimed, f)
    }

    /// The candidate to run for `key`, given the candidates' `labels` (the default first): the
    /// choice made before for this key, else the fastest by `time(i)` (seconds per run of
    /// candidate i), kept from now on. The default when tuning is off, when there is nothing to
    /// choose, or when no other candidate beats it by [`MARGIN`]; a candidate whose timing fails
    /// is skipped with a warning.
    pub fn pick(&self, key: &str, labels: &[String], mut time: impl FnMut(usize) -> Result<f64>) -> usize {
        if !self.on || labels.len() < 2 {
            return 0;
        }
        if let Some(pick) = self.known(key, labels) {
            return pick;
        }
        if self.replay_only {
            return 0;
        }
        // Timed without the lock: timing runs kernels, and other threads may tune other shapes.
        // A device that failed (lost, or work stopped early) fails every later timing too, for
        // no fault of those candidates, and one out of memory fails a candidate for the memory
        // others hold at the time (scratch tensors beside a job's, which may later be planned
        // for less): nothing is chosen from such a round.
        let mut spoiled = false;
        let mut time_all = || -> Vec<Option<f64>> {
            labels
                .iter()
                .enumerate()
                .map(|(i, label)| match time(i) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        spoiled |= super::is_device_failed(&e) || super::out_of_memory(&e).is_some();
                        log::warn!("tuning {key}: timing {label} failed ({e:#}); it is not chosen");
                        None
                    }
                })
                .collect()
        };
        let wall_clock = WALL_CLOCK.load(Ordering::Relaxed);
        let mut seconds = time_all();
        if !wall_clock && WALL_CLOCK.load(Ordering::Relaxed) {
            // Some were timed by timestamps, the rest by the wall clock: all again on one.
            seconds = time_all();
        }
        if spoiled || seconds.iter().all(Option::is_none) {
            // The device failed or ran out of memory, or nothing was timed: the default, neither
            // kept nor written, so a later run times the shape again.
            return 0;
        }
        let pick = fastest(&seconds);
        let t = Tuned { key: key.to_string(), labels: labels.to_vec(), seconds, pick, cached: false };
        self.met.lock().unwrap().insert(key.to_string());
        let mut picks = self.picks.lock().unwrap();
        // Another thread may have timed the same problem meanwhile: its choice stands, so that
        // every graph of the process makes the same one (graphs captured apart must agree).
        if let Some(first) = picks.get(key).filter(|p| p.labels == labels && !p.cached) {
            return first.pick;
        }
        log::debug!("tuned {}", t.describe());
        picks.insert(key.to_string(), t);
        if let Some(path) = &self.cache {
            // Said once: a folder that refuses one write refuses the next.
            if let Err(e) = write_cache(path, picks.values()) {
                if !self.write_failed.swap(true, Ordering::Relaxed) {
                    log::warn!("could not keep the tuned tiles in {} ({e:#}); they hold for this run (DIFFVSR_TUNE_CACHE moves the cache)", path.display());
                }
            }
        }
        pick
    }

    /// The choice made for `key` among these candidates, if one was (a choice among other
    /// candidates, from another build's cache, does not count).
    pub fn known(&self, key: &str, labels: &[String]) -> Option<usize> {
        let pick = self.picks.lock().unwrap().get(key).filter(|t| t.labels == labels).map(|t| t.pick);
        if pick.is_some() {
            self.met.lock().unwrap().insert(key.to_string());
        }
        pick
    }

    /// The file the choices persist in, if any.
    pub fn cache_path(&self) -> Option<&Path> {
        self.cache.as_deref()
    }

    /// The choices for the shapes this run has met, by key (timed now, or `cached`).
    pub fn picks(&self) -> Vec<Tuned> {
        let met = self.met.lock().unwrap();
        self.picks.lock().unwrap().values().filter(|t| met.contains(&t.key)).cloned().collect()
    }
}

fn read_cache(path: &Path) -> Result<Vec<Tuned>> {
    let text = std::fs::read_to_string(path)?;
    let file: CacheFile = serde_json::from_str(&text)?;
    // A hand-edited or damaged entry must not index past its candidates.
    Ok(file.picks.into_iter().filter(|t| t.pick < t.labels.len() && t.labels.len() == t.seconds.len()).collect())
}

/// Writes every choice to `path` through a temporary file and a rename, so a reader (another
/// run on the same card) never sees half a file.
fn write_cache<'a>(path: &Path, picks: impl Iterator<Item = &'a Tuned>) -> Result<()> {
    let adapter = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let text = serde_json::to_string_pretty(&CacheFile { adapter, picks: picks.cloned().collect() })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The folder for tuning caches: `$DIFFVSR_TUNE_CACHE` (`off` or empty: none), else
/// `$XDG_CACHE_HOME/diffvsr-wgpu/tuning`, else `~/.cache/diffvsr-wgpu/tuning`
/// (`%LOCALAPPDATA%\diffvsr-wgpu\tuning` on Windows).
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var(k).ok();
    match var("DIFFVSR_TUNE_CACHE") {
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let nonempty = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = nonempty("XDG_CACHE_HOME").or_else(|| nonempty("LOCALAPPDATA")).or_else(|| nonempty("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("diffvsr-wgpu").join("tuning"))
}

/// Set once a timed run's timestamps gave no positive time ([`crate::kernel::time_runs`]): every
/// later timing in the process takes the wall clock, so that the candidates one choice compares
/// share a clock (a tuning that saw it set times its candidates again).
pub static WALL_CLOCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How candidates are timed ([`crate::kernel::time_runs`]), in the cache key: choices timed
/// another way are timed again. "span": first dispatch's start to last one's end (before
/// 2026-12-07 the dispatches' own times were summed, with no tag).
const TIMING: &str = "span";

/// The cache file in `dir` for one adapter: named after the card, and keyed by everything
/// that can change which tile is fastest or which tiles exist (the adapter and its backend,
/// driver and driver version, this build's version, how candidates are timed).
pub fn cache_file(dir: &Path, info: &wgpu::AdapterInfo) -> PathBuf {
    use sha2::Digest as _;
    let id = format!(
        "{}|{:?}|{:x}:{:x}|{}|{}|{}|{TIMING}",
        info.name,
        info.backend,
        info.vendor,
        info.device,
        info.driver,
        info.driver_info,
        env!("CARGO_PKG_VERSION")
    );
    let hash = sha2::Sha256::digest(id.as_bytes());
    let name: String = info.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{}-{hex}.json", name.trim_matches('-')))
}

/// The default (index 0) unless another candidate is faster by more than [`MARGIN`]; then the
/// fastest. A default that could not be timed stays: the real run will say why.
fn fastest(seconds: &[Option<f64>]) -> usize {
    let Some(base) = seconds[0] else { return 0 };
    let (mut pick, mut best) = (0, base);
    for (i, s) in seconds.iter().enumerate().skip(1) {
        if let Some(s) = *s {
            if s < best && s < base * (1.0 - MARGIN) {
                (pick, best) = (i, s);
            }
        }
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tile {i}")).collect()
    }

    /// Within `untimed` nothing is timed (nested too), and timing is back after it, also after
    /// a panic inside.
    #[test]
    fn untimed_pauses_timing_and_restores_it() {
        let t = Tuner::new(true, None);
        assert!(t.times());
        t.untimed(|| {
            assert!(!t.times());
            t.untimed(|| assert!(!t.times()));
            assert!(!t.times());
        });
        assert!(t.times());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.untimed(|| panic!("inside"))));
        assert!(caught.is_err() && t.times());
    }

    #[test]
    fn keeps_the_fastest_and_times_each_shape_once() {
        let tuner = Tuner::new(true, None);
        let calls = Cell::new(0);
        let times = [3.0, 1.0, 2.0];
        let time = |i: usize| {
            calls.set(calls.get() + 1);
            Ok(times[i])
        };
        assert_eq!(tuner.pick("a", &labels(3), time), 1);
        assert_eq!(calls.get(), 3);
        // Known: not timed again, even if the candidates would now time otherwise.
        assert_eq!(tuner.pick("a", &labels(3), |_| panic!("timed twice")), 1);
        // Another shape is its own question.
        assert_eq!(tuner.pick("b", &labels(3), |i| Ok([1.0, 2.0, 3.0][i])), 0);
        let picks = tuner.picks();
        assert_eq!(picks.len(), 2);
        assert_eq!(picks[0], Tuned { key: "a".into(), labels: labels(3), seconds: vec![Some(3.0), Some(1.0), Some(2.0)], pick: 1, cached: false });
        assert_eq!(picks[0].describe(), "a: tile 1 1000.000 ms (against tile 0 3000.000 ms, tile 2 2000.000 ms)");
    }

    /// A planning device (`forward --plan-only`) makes the cached choices, the default for the
    /// rest, and neither times nor writes anything.
    #[test]
    fn replaying_makes_the_cached_choices_and_times_nothing() {
        let dir = crate::testutil::scratch_dir("tune-replay");
        let path = dir.join("card.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(Tuner::new(true, Some(path.clone())).pick("a", &labels(2), |i| Ok([2.0, 1.0][i])), 1);
        let plan = Tuner::replaying(Some(path.clone()));
        assert!(plan.is_on() && !plan.times());
        assert_eq!(plan.pick("a", &labels(2), |_| panic!("timed while replaying")), 1);
        assert_eq!(plan.pick("b", &labels(2), |_| panic!("timed while replaying")), 0);
        assert_eq!(Tuner::new(true, Some(path)).known("b", &labels(2)), None, "a replaying tuner wrote a choice");
    }

    /// Two threads may time one problem at once (graphs captured in parallel): the first choice
    /// kept stands for both, so two graphs of one process never disagree on a tile.
    #[test]
    fn a_choice_made_meanwhile_stands() {
        let tuner = Tuner::new(true, None);
        // While this call times its candidates, another (nested here) times the same problem
        // and keeps its choice first.
        let outer = tuner.pick("a", &labels(2), |i| {
            if i == 0 {
                assert_eq!(tuner.pick("a", &labels(2), |j| Ok([1.0, 2.0][j])), 0);
            }
            Ok([2.0, 1.0][i])
        });
        assert_eq!(outer, 0, "the choice kept meanwhile stands");
        assert_eq!(tuner.known("a", &labels(2)), Some(0));
    }

    #[test]
    fn the_default_stays_within_the_margin_and_when_timing_fails() {
        let tuner = Tuner::new(true, None);
        // 2% faster: noise, not a reason to leave the rule's tile.
        assert_eq!(tuner.pick("close", &labels(2), |i| Ok([1.0, 0.98][i])), 0);
        assert_eq!(tuner.pick("clear", &labels(2), |i| Ok([1.0, 0.9][i])), 1);
        // A candidate that fails is never chosen; a default that fails stays.
        assert_eq!(tuner.pick("fails", &labels(3), |i| if i == 1 { anyhow::bail!("out of memory") } else { Ok([1.0, 0.1, 0.5][i]) }), 2);
        assert_eq!(tuner.pick("default fails", &labels(2), |i| if i == 0 { anyhow::bail!("no") } else { Ok(0.1) }), 0);
        assert_eq!(tuner.picks().iter().find(|t| t.key == "fails").unwrap().seconds, vec![Some(1.0), None, Some(0.5)]);
        // Where every timing fails (a lost device), nothing is kept or written.
        let dir = crate::testutil::scratch_dir("tune-all-fail");
        let path = dir.join("cache.json");
        let kept = Tuner::new(true, Some(path.clone()));
        assert_eq!(kept.pick("all fail", &labels(2), |_| anyhow::bail!("the GPU device was lost")), 0);
        assert_eq!(kept.known("all fail", &labels(2)), None);
        assert!(!path.exists(), "an untimed choice was written");
        // A device that failed during the round (its work stopped early, `seal.rs`) fails the
        // candidates after it for no fault of theirs: nothing is kept from the round either.
        let failed = |i: usize| if i == 1 { Err(crate::gpu::DeviceFailed("the GPU stopped work it was given".into()).into()) } else { Ok([1.0, 0.5, 0.1][i]) };
        assert_eq!(kept.pick("device failed", &labels(3), failed), 0);
        assert_eq!(kept.known("device failed", &labels(3)), None);
        assert!(!path.exists(), "a choice from a failed device's round was written");
        // So is a round where the GPU ran out of memory: a job then plans again for less.
        let short = |i: usize| if i == 1 { Err(crate::gpu::OutOfMemory { message: "the GPU ran out of memory".into(), detail: String::new(), wanted: None }.into()) } else { Ok([1.0, 0.5, 0.1][i]) };
        assert_eq!(kept.pick("out of memory", &labels(3), short), 0);
        assert_eq!(kept.known("out of memory", &labels(3)), None);
        assert!(!path.exists(), "a choice from a round that ran out of memory was written");
    }

    #[test]
    fn off_or_one_candidate_times_nothing() {
        let off = Tuner::new(false, None);
        assert_eq!(off.pick("a", &labels(3), |_| panic!("timed while off")), 0);
        assert!(off.picks().is_empty());
        let on = Tuner::new(true, None);
        assert_eq!(on.pick("a", &labels(1), |_| panic!("timed one candidate")), 0);
        assert!(on.picks().is_empty());
    }

    #[test]
    fn choices_persist_for_the_same_candidates_only() {
        let dir = crate::testutil::scratch_dir("tune-cache");
        let path = dir.join("card.json");
        let _ = std::fs::remove_file(&path);
        let first = Tuner::new(true, Some(path.clone()));
        assert_eq!(first.pick("a", &labels(2), |i| Ok([2.0, 1.0][i])), 1);
        assert_eq!(first.pick("b", &labels(3), |i| Ok([1.0, 2.0, 3.0][i])), 0);
        // The next run starts with both choices, times neither, and says they were read.
        let next = Tuner::new(true, Some(path.clone()));
        assert!(next.picks().is_empty(), "no shape met yet");
        assert_eq!(next.pick("a", &labels(2), |_| panic!("timed a cached shape")), 1);
        assert_eq!(next.picks().iter().map(|t| (t.key.as_str(), t.cached)).collect::<Vec<_>>(), [("a", true)]);
        // Other candidates (another build's tiles) are timed again, and the file keeps the new choice.
        assert_eq!(next.pick("b", &labels(2), |i| Ok([3.0, 1.0][i])), 1);
        assert_eq!(Tuner::new(true, Some(path.clone())).known("b", &labels(2)), Some(1));
        // Off: the file is neither read nor written.
        let off = Tuner::new(false, Some(path.clone()));
        assert_eq!(off.known("a", &labels(2)), None);
        // A cache that cannot be written leaves the choices to the run.
        let blocked = Tuner::new(true, Some(path.join("under-a-file.json")));
        assert_eq!(blocked.pick("a", &labels(2), |i| Ok([2.0, 1.0][i])), 1);
        assert_eq!(blocked.pick("c", &labels(2), |i| Ok([2.0, 1.0][i])), 1);
        assert!(blocked.write_failed.load(Ordering::Relaxed));
        // A damaged file is set aside and rewritten.
        std::fs::write(&path, "{ not json").unwrap();
        let damaged = Tuner::new(true, Some(path.clone()));
        assert_eq!(damaged.known("a", &labels(2)), None);
        assert_eq!(damaged.pick("a", &labels(2), |i| Ok([1.0, 2.0][i])), 0);
        assert_eq!(read_cache(&path).unwrap().len(), 1);
    }

    #[test]
    fn cache_files_are_per_card_and_driver() {
        let base = crate::testutil::test_gpu().info.clone();
        let info = |name: &str, driver: &str| wgpu::AdapterInfo { name: name.into(), driver_info: driver.into(), ..base.clone() };
        let dir = Path::new("/cache");
        let a = cache_file(dir, &info("NVIDIA H200", "580.159.04"));
        assert!(a.starts_with(dir) && a.file_name().unwrap().to_str().unwrap().starts_with("nvidia-h200-"), "{a:?}");
        assert_ne!(a, cache_file(dir, &info("NVIDIA H200", "590.1")), "a new driver must time again");
        assert_eq!(a, cache_file(dir, &info("NVIDIA H200", "580.159.04")));
    }

    #[test]
    fn modes_parse_as_written() {
        assert_eq!("auto".parse::<TuneMode>(), Ok(TuneMode::Auto));
        assert_eq!(" ON".parse::<TuneMode>(), Ok(TuneMode::On));
        assert_eq!("0".parse::<TuneMode>(), Ok(TuneMode::Off));
        assert_eq!("true".parse::<TuneMode>(), Ok(TuneMode::On));
        // DIFFVSR_F16_OPERANDS= (set to nothing) reads as unset.
        assert_eq!("".parse::<TuneMode>(), Ok(TuneMode::Auto));
        assert!("fast".parse::<TuneMode>().unwrap_err().contains("auto, on or off"));
    }
}
