//! Kernel tiles chosen per shape by timing them on the adapter in use (autotuning).
//!
//! The matmul and convolution kernels come in several tiles for one problem: the cooperative
//! kernels on 8 or 4 subgroups and one or two output blocks wide, the portable kernels with
//! narrower or wider tiles. Which is fastest depends on the GPU and the shape (a grid of 128
//! workgroups fills one GPU and starves another), so fixed rules leave speed behind. Where an op
//! has such a choice, the first time it meets a shape it times each candidate on scratch tensors
//! of that shape and keeps the fastest for the rest of the process ([`Tuner::pick`]).
//!
//! Only tiles that compute the same sums in the same order are ever candidates (each output's
//! products added in K order, with the same K step), so a choice changes the time and never a
//! value: the tests check that byte for byte. Software adapters (lavapipe) do not tune by
//! default: their timings say nothing a user would want, and tuning costs them seconds.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;

/// Whether to tune (`--tune`, `DIFFVSR_TUNE`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum TuneMode {
    /// On a hardware GPU, off on a software adapter.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for TuneMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TuneMode::Auto),
            "on" | "1" => Ok(TuneMode::On),
            "off" | "0" => Ok(TuneMode::Off),
            _ => Err(format!("--tune {s}: expected auto, on or off")),
        }
    }
}

/// A candidate is kept over the default (the first) only when it is faster by more than this
/// share: two tiles within timing noise of each other keep the rule's choice, so a run does not
/// flip between them.
pub const MARGIN: f64 = 0.03;

/// One shape's measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuned {
    /// The op and its shape, e.g. `conv f16 k[1, 3, 3] 320->320 16x64x64`.
    pub key: String,
    /// The candidates, the default first.
    pub labels: Vec<String>,
    /// Seconds per run of each candidate; `None` where timing it failed.
    pub seconds: Vec<Option<f64>>,
    /// The index kept.
    pub pick: usize,
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
    picks: Mutex<BTreeMap<String, Tuned>>,
}

impl Tuner {
    pub fn new(on: bool) -> Tuner {
        Tuner { on, picks: Mutex::default() }
    }

    pub fn is_on(&self) -> bool {
        self.on
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
        if let Some(pick) = self.known(key) {
            return pick;
        }
        // Timed without the lock: timing runs kernels, and other threads may tune other shapes.
        let seconds: Vec<Option<f64>> = labels
            .iter()
            .enumerate()
            .map(|(i, label)| match time(i) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!("tuning {key}: timing {label} failed ({e:#}); it is not chosen");
                    None
                }
            })
            .collect();
        let pick = fastest(&seconds);
        let t = Tuned { key: key.to_string(), labels: labels.to_vec(), seconds, pick };
        log::debug!("tuned {}", t.describe());
        self.picks.lock().unwrap().entry(key.to_string()).or_insert(t).pick
    }

    /// The choice made for `key`, if one was.
    pub fn known(&self, key: &str) -> Option<usize> {
        self.picks.lock().unwrap().get(key).map(|t| t.pick)
    }

    /// Every choice made so far, by key.
    pub fn picks(&self) -> Vec<Tuned> {
        self.picks.lock().unwrap().values().cloned().collect()
    }
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

    #[test]
    fn keeps_the_fastest_and_times_each_shape_once() {
        let tuner = Tuner::new(true);
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
        assert_eq!(picks[0], Tuned { key: "a".into(), labels: labels(3), seconds: vec![Some(3.0), Some(1.0), Some(2.0)], pick: 1 });
        assert_eq!(picks[0].describe(), "a: tile 1 1000.000 ms (against tile 0 3000.000 ms, tile 2 2000.000 ms)");
    }

    #[test]
    fn the_default_stays_within_the_margin_and_when_timing_fails() {
        let tuner = Tuner::new(true);
        // 2% faster: noise, not a reason to leave the rule's tile.
        assert_eq!(tuner.pick("close", &labels(2), |i| Ok([1.0, 0.98][i])), 0);
        assert_eq!(tuner.pick("clear", &labels(2), |i| Ok([1.0, 0.9][i])), 1);
        // A candidate that fails is never chosen; a default that fails stays.
        assert_eq!(tuner.pick("fails", &labels(3), |i| if i == 1 { anyhow::bail!("out of memory") } else { Ok([1.0, 0.1, 0.5][i]) }), 2);
        assert_eq!(tuner.pick("default fails", &labels(2), |i| if i == 0 { anyhow::bail!("no") } else { Ok(0.1) }), 0);
        assert_eq!(tuner.picks().iter().find(|t| t.key == "fails").unwrap().seconds, vec![Some(1.0), None, Some(0.5)]);
    }

    #[test]
    fn off_or_one_candidate_times_nothing() {
        let off = Tuner::new(false);
        assert_eq!(off.pick("a", &labels(3), |_| panic!("timed while off")), 0);
        assert!(off.picks().is_empty());
        let on = Tuner::new(true);
        assert_eq!(on.pick("a", &labels(1), |_| panic!("timed one candidate")), 0);
        assert!(on.picks().is_empty());
    }

    #[test]
    fn modes_parse_as_written() {
        assert_eq!("auto".parse::<TuneMode>(), Ok(TuneMode::Auto));
        assert_eq!(" ON".parse::<TuneMode>(), Ok(TuneMode::On));
        assert_eq!("0".parse::<TuneMode>(), Ok(TuneMode::Off));
        assert!("fast".parse::<TuneMode>().unwrap_err().contains("auto, on or off"));
    }
}
