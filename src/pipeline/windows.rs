//! The temporal plan for long videos (issue 9, deliverable 3; spec §4.3 and §4.5):
//!
//! * The clip of T frames is padded to a multiple of 8 (`padded_len`) by mirroring without
//!   repeating the last frame (DV `inference_tile.py` L72-75 appends frames T−2, T−3, …). The
//!   release fails for T ≤ 4 (it indexes before frame 0); here the mirror keeps bouncing
//!   (… T−2, …, 1, 0, 1, …), so 1 frame in gives 1 frame out. Output is trimmed back to T.
//! * Windows of 8 frames at stride 4 over the padded clip: starts 0, 4, …, T_pad − 8 (one window
//!   when T_pad = 8). Each is denoised on its own through all steps.
//! * ILT on the final latents (DV `fuse_latents`): window 0 copied; for window i ≥ 1, overlap
//!   frame j = 0…3 is `w_prev(j)·Z_{i−1}[4+j] + w_cur(j)·Z_i[j]` with the released weights
//!   w_prev = 0.2 + 0.6·α_j, w_cur = 0.2 + 0.6·(1 − α_j) (0.8/0.2 … 0.2/0.8), or the paper's
//!   α_j / 1 − α_j with `--ilt paper`, α_j = 1 − j/(P−1), P = 4; frames 4…7 of window i copied.
//! * Streaming: output frame f is final once window ⌊f/4⌋ is done (or the clip is known to have no
//!   such window), so [`crate::pipeline::job`] writes frames 4i…4i+3 right after window i (the
//!   last window's second half once the clip has ended); window i can run once input frame
//!   4i + 7 has arrived or the clip has ended ([`window_ready`]).
//! * Segments (`--frames START:END`): the windows that touch frames START…END−1 and the input
//!   frames they read ([`segment_plan`]); blending those windows gives the whole-run values.

use std::ops::Range;

/// Frames per window.
pub const WINDOW: usize = 8;
/// Window stride.
pub const STRIDE: usize = 4;
/// Overlapping frames between consecutive windows (P in the paper).
pub const OVERLAP: usize = WINDOW - STRIDE;

/// T rounded up to a multiple of 8 (the released padding). `t` must be ≥ 1.
pub fn padded_len(t: usize) -> usize {
    t.max(1).div_ceil(WINDOW) * WINDOW
}

/// The input frame shown at padded position `i` of a `t`-frame clip: itself for i < t, else the
/// mirror without repeating the edge (period 2t − 2; always 0 when t = 1).
pub fn mirror_frame(t: usize, i: usize) -> usize {
    assert!(t >= 1, "a clip has at least one frame");
    if i < t {
        return i;
    }
    if t == 1 {
        return 0;
    }
    let m = i % (2 * t - 2);
    if m < t {
        m
    } else {
        2 * t - 2 - m
    }
}

/// Number of windows for a `t`-frame clip.
pub fn window_count(t: usize) -> usize {
    (padded_len(t) - WINDOW) / STRIDE + 1
}

/// First padded frame of window `i`.
pub fn window_start(i: usize) -> usize {
    i * STRIDE
}

/// Which ILT weights to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ilt {
    /// The released code's softened weights, 0.2 + 0.6·α_j (default).
    Released,
    /// The paper's α_j = 1 − j/(P − 1).
    Paper,
}

impl std::str::FromStr for Ilt {
    type Err = String;
    fn from_str(s: &str) -> Result<Ilt, String> {
        match s {
            "released" => Ok(Ilt::Released),
            "paper" => Ok(Ilt::Paper),
            _ => Err(format!("--ilt {s}: expected released or paper")),
        }
    }
}

/// (weight of the previous window's frame 4 + j, weight of the current window's frame j) for
/// overlap frame j = 0…3.
pub fn ilt_weights(ilt: Ilt, j: usize) -> (f32, f32) {
    assert!(j < OVERLAP);
    let alpha = 1.0 - j as f64 / (OVERLAP - 1) as f64;
    let (p, c) = match ilt {
        Ilt::Released => (0.2 + 0.6 * alpha, 0.2 + 0.6 * (1.0 - alpha)),
        Ilt::Paper => (alpha, 1.0 - alpha),
    };
    (p as f32, c as f32)
}

/// One frame's ILT blend on the host: w_prev·prev + w_cur·cur, in f32 (the release blends its
/// fp16 window latents in fp16 before storing them in an f32 tensor; f32 is the harmless
/// improvement). The blend kernel's CPU reference, `ops::sampler::cpu::ilt_blend`, applies it
/// frame by frame.
pub fn ilt_blend(prev: &[f32], cur: &[f32], weights: (f32, f32)) -> Vec<f32> {
    assert_eq!(prev.len(), cur.len(), "ilt_blend: frames differ in size");
    prev.iter().zip(cur).map(|(&p, &c)| weights.0 * p + weights.1 * c).collect()
}

/// Where output frame `f` comes from: (window, frame within the window, weight), one or two parts.
pub fn frame_sources(ilt: Ilt, t: usize, f: usize) -> Vec<(usize, usize, f32)> {
    assert!(f < padded_len(t), "frame {f} is past the padded clip");
    let last = window_count(t) - 1;
    let b = f / STRIDE;
    let j = f % STRIDE;
    if b == 0 {
        vec![(0, j, 1.0)]
    } else if b > last {
        // The second half of the last window: copied.
        vec![(last, STRIDE + j, 1.0)]
    } else {
        let (wp, wc) = ilt_weights(ilt, j);
        vec![(b - 1, STRIDE + j, wp), (b, j, wc)]
    }
}

/// Whether window `i` can run with `frames_available` input frames read; `total` is the clip
/// length once the stream has ended.
pub fn window_ready(i: usize, frames_available: usize, total: Option<usize>) -> bool {
    match total {
        Some(t) => i < window_count(t),
        None => frames_available >= window_start(i) + WINDOW,
    }
}

/// The first input frame a streaming run must still hold once windows 0…`windows_done`−1 are
/// done and `frames_read` frames have been read; earlier frames can be dropped. With the length
/// unknown, the tail's mirror padding may reach back up to 7 frames before the last one read, so
/// those are kept too; memory stays one window plus 8 frames whatever the clip length.
pub fn first_input_needed(windows_done: usize, frames_read: usize, total: Option<usize>) -> usize {
    match total {
        Some(t) => (windows_done..window_count(t))
            .flat_map(|i| window_frames(t, i))
            .min()
            .unwrap_or(t),
        None => (windows_done * STRIDE).min(frames_read.saturating_sub(WINDOW)),
    }
}

/// Input frames (after mirroring) that window `i` of a `t`-frame clip shows, in order.
pub fn window_frames(t: usize, i: usize) -> [usize; WINDOW] {
    std::array::from_fn(|k| mirror_frame(t, window_start(i) + k))
}

/// What a `--frames START:END` run computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Output frames emitted.
    pub frames: Range<usize>,
    /// Windows denoised (each through all steps).
    pub windows: Range<usize>,
    /// Input frames read for those windows (mirrored padding included).
    pub reads: Range<usize>,
}

/// The plan for `--frames start:end` of a `t`-frame clip. The whole clip is `0:t`.
pub fn segment_plan(t: usize, start: usize, end: usize) -> Result<SegmentPlan, String> {
    if t == 0 {
        return Err("the input has no frames".into());
    }
    if start >= end {
        return Err(format!("--frames {start}:{end}: START must be below END"));
    }
    if end > t {
        return Err(format!("--frames {start}:{end}: the input has only {t} frames"));
    }
    let last = window_count(t) - 1;
    // Windows i with 4i ≤ f < 4i + 8 for some f in start..end.
    let first = first_window_for(start);
    let windows = first.min(last)..last_window_for(end).min(last) + 1;
    let mut lo = usize::MAX;
    let mut hi = 0;
    for i in windows.clone() {
        for f in window_frames(t, i) {
            lo = lo.min(f);
            hi = hi.max(f + 1);
        }
    }
    Ok(SegmentPlan { frames: start..end, windows, reads: lo..hi })
}

/// A `--frames START:END` request: output frames START…END−1, or START to the end of the
/// stream when END is left out (`START:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRange {
    pub start: usize,
    /// `None`: to the end of the stream.
    pub end: Option<usize>,
}

impl FrameRange {
    /// The error for a START at or past the end of `what` (the input, a file) of `t` frames.
    pub fn past_the_end(&self, t: usize, what: &str) -> String {
        let has = match t {
            0 => "no frames".to_string(),
            1 => "only 1 frame (frame 0)".to_string(),
            t => format!("only {t} frames (0 to {})", t - 1),
        };
        format!("--frames {self} starts past the end: {what} has {has}")
    }
}

/// `START:END`, or `START:` to the end, as given.
impl std::fmt::Display for FrameRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end {
            Some(e) => write!(f, "{}:{e}", self.start),
            None => write!(f, "{}:", self.start),
        }
    }
}

impl std::str::FromStr for FrameRange {
    type Err = String;
    fn from_str(s: &str) -> Result<FrameRange, String> {
        if s.starts_with("--") {
            // `--frames --plan`: the value taken is the next option.
            return Err(format!("--frames needs START:END (e.g. 0:100) before {s}"));
        }
        let bad = || format!("--frames {s}: expected START:END (output frames START to END−1, counted from 0, e.g. 0:100) or START: (to the end)");
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let num = |v: &str| -> Result<usize, String> {
            if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            // Past 2^32 − 1 frames (four years at 30 fps) a number is a typo, and sums with it
            // would overflow.
            v.parse::<u32>().map(|n| n as usize).map_err(|_| format!("--frames {s}: frame numbers are at most {}", u32::MAX))
        };
        let start = num(a)?;
        let end = if b.is_empty() { None } else { Some(num(b)?) };
        if let Some(e) = end {
            if start >= e {
                return Err(format!("--frames {s}: START must be below END (END is the first frame not emitted)"));
            }
        }
        Ok(FrameRange { start, end })
    }
}

/// The first window a segment starting at output frame `start` needs: the first whose 8 frames
/// reach `start` (window i covers padded frames 4i…4i+7).
pub fn first_window_for(start: usize) -> usize {
    (start + 1).saturating_sub(WINDOW).div_ceil(STRIDE)
}

/// The last window a segment ending before output frame `end` can need (fewer when the clip
/// has fewer windows).
pub fn last_window_for(end: usize) -> usize {
    (end - 1) / STRIDE
}

/// How many windows a run of output frames `start..end` (`None`: to the end) denoises, where
/// that is known before it reads a frame: from the clip's length `total` when known, else an
/// upper bound from END alone; `None` for an open segment of a stream of unknown length.
pub fn windows_to_run(total: Option<usize>, start: usize, end: Option<usize>) -> Option<usize> {
    match (total, end) {
        (Some(t), _) => segment_plan(t, start, end.unwrap_or(t).min(t)).ok().map(|p| p.windows.len()),
        (None, Some(e)) if e > start => Some(last_window_for(e) + 1 - first_window_for(start)),
        _ => None,
    }
}

/// The most input frames a streaming run from output frame `start` holds at once with `g`
/// windows per call: a call's windows and the stride before them, and for a segment's first
/// call the frames before its first window that the clip's tail mirror could reach back to
/// while the length is unknown (up to 7).
pub fn max_frames_held(start: usize, g: usize) -> usize {
    let before_first = window_start(first_window_for(start)) - segment_first_read(start);
    (WINDOW + g * STRIDE).max(before_first + WINDOW + (g.max(1) - 1) * STRIDE)
}

/// Input frames a streaming segment ending before `end` reads when the stream is at least that
/// long: enough that its last window runs on real frames, without mirror padding. Past this it
/// reads nothing; a stream that ends earlier has a known length, which fixes the mirror
/// padding exactly as in a whole-clip run.
pub fn segment_read_limit(end: usize) -> usize {
    window_start(last_window_for(end)) + WINDOW
}

/// The earliest input frame a segment's first window can show: its own first frame, or up to
/// 7 frames earlier when the clip is short enough for its tail mirror to bounce back.
pub fn segment_first_read(start: usize) -> usize {
    (window_start(first_window_for(start)) + 1).saturating_sub(WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fresh_seed, Rng};

    /// The windows a run denoises: the clip's or the segment's when the length is known, an
    /// upper bound from END alone, nothing for an open stream.
    /// The START-past-the-end message reads well with and without END.
    #[test]
    fn a_start_past_the_end_is_named_once() {
        let open = FrameRange { start: 20, end: None };
        assert_eq!(open.past_the_end(13, "the input"), "--frames 20: starts past the end: the input has only 13 frames (0 to 12)");
        let closed = FrameRange { start: 3, end: Some(5) };
        assert_eq!(closed.past_the_end(1, "in.y4m"), "--frames 3:5 starts past the end: in.y4m has only 1 frame (frame 0)");
        assert_eq!(closed.past_the_end(0, "the input"), "--frames 3:5 starts past the end: the input has no frames");
    }

    #[test]
    fn windows_to_run_counts_the_segment() {
        assert_eq!(windows_to_run(Some(13), 0, None), Some(window_count(13)));
        assert_eq!(windows_to_run(Some(13), 9, Some(100)), Some(segment_plan(13, 9, 13).unwrap().windows.len()));
        assert_eq!(windows_to_run(Some(13), 20, None), None);
        assert_eq!(windows_to_run(None, 0, Some(6)), Some(last_window_for(6) + 1));
        assert_eq!(windows_to_run(None, 0, None), None);
    }

    #[test]
    fn padding_mirrors_as_released_and_beyond() {
        // Released: frames T-2, T-3, … appended (when the clip is long enough for that).
        assert_eq!((13..16).map(|i| mirror_frame(13, i)).collect::<Vec<_>>(), vec![11, 10, 9]);
        assert_eq!(mirror_frame(7, 7), 5);
        assert_eq!((5..8).map(|i| mirror_frame(5, i)).collect::<Vec<_>>(), vec![3, 2, 1]);
        // Shorter than the release handles: keeps bouncing without repeating an edge.
        assert_eq!((0..8).map(|i| mirror_frame(3, i)).collect::<Vec<_>>(), vec![0, 1, 2, 1, 0, 1, 2, 1]);
        assert_eq!((0..8).map(|i| mirror_frame(1, i)).collect::<Vec<_>>(), vec![0; 8]);
        assert_eq!((0..8).map(|i| mirror_frame(2, i)).collect::<Vec<_>>(), vec![0, 1, 0, 1, 0, 1, 0, 1]);
        for (t, tp, nw) in [(1, 8, 1), (7, 8, 1), (8, 8, 1), (9, 16, 3), (13, 16, 3), (16, 16, 3), (33, 40, 9)] {
            assert_eq!((padded_len(t), window_count(t)), (tp, nw), "T={t}");
        }
    }

    #[test]
    fn ilt_weights_as_released_and_as_in_the_paper() {
        let rel: Vec<(f32, f32)> = (0..4).map(|j| ilt_weights(Ilt::Released, j)).collect();
        let want = [(0.8, 0.2), (0.6, 0.4), (0.4, 0.6), (0.2, 0.8)];
        for (g, w) in rel.iter().zip(want) {
            assert!((g.0 - w.0).abs() < 1e-6 && (g.1 - w.1).abs() < 1e-6, "{rel:?}");
        }
        let paper: Vec<(f32, f32)> = (0..4).map(|j| ilt_weights(Ilt::Paper, j)).collect();
        let want = [(1.0, 0.0), (2.0 / 3.0, 1.0 / 3.0), (1.0 / 3.0, 2.0 / 3.0), (0.0, 1.0)];
        for (g, w) in paper.iter().zip(want) {
            assert!((g.0 - w.0).abs() < 1e-6 && (g.1 - w.1).abs() < 1e-6, "{paper:?}");
        }
        assert_eq!("paper".parse::<Ilt>().unwrap(), Ilt::Paper);
        assert!("soft".parse::<Ilt>().is_err());
        let mut rng = Rng::new(fresh_seed());
        let (a, b) = (rng.normals(13, 1.0), rng.normals(13, 1.0));
        let got = ilt_blend(&a, &b, (0.6, 0.4));
        for k in 0..13 {
            assert!((got[k] - (0.6 * a[k] + 0.4 * b[k])).abs() < 1e-6);
        }
    }

    /// The released `fuse_latents` on per-frame scalars, written from spec §4.3.
    fn released_fuse(ilt: Ilt, z: &[[f32; WINDOW]], tp: usize) -> Vec<f32> {
        let mut out = vec![0f32; tp];
        for (i, zi) in z.iter().enumerate() {
            let s = window_start(i);
            if i == 0 {
                out[s..s + WINDOW].copy_from_slice(zi);
            } else {
                for j in 0..OVERLAP {
                    let (wp, wc) = ilt_weights(ilt, j);
                    out[s + j] = wp * z[i - 1][STRIDE + j] + wc * zi[j];
                }
                out[s + OVERLAP..s + WINDOW].copy_from_slice(&zi[OVERLAP..]);
            }
        }
        out
    }

    fn assemble(ilt: Ilt, t: usize, f: usize, z: &dyn Fn(usize, usize) -> f32) -> f32 {
        frame_sources(ilt, t, f).iter().map(|&(w, k, wt)| wt * z(w, k)).sum()
    }

    #[test]
    fn frame_sources_reproduce_fuse_latents() {
        let mut rng = Rng::new(fresh_seed());
        for ilt in [Ilt::Released, Ilt::Paper] {
            for t in [1, 7, 8, 13, 33] {
                let nw = window_count(t);
                let z: Vec<[f32; WINDOW]> = (0..nw).map(|_| std::array::from_fn(|_| rng.normal())).collect();
                let want = released_fuse(ilt, &z, padded_len(t));
                for (f, &w) in want.iter().enumerate() {
                    let got = assemble(ilt, t, f, &|w, k| z[w][k]);
                    assert!((got - w).abs() < 1e-6, "T={t} frame {f}: {got} vs {w}");
                }
            }
        }
    }

    #[test]
    fn streaming_finality() {
        for t in [1usize, 7, 8, 13, 33] {
            let nw = window_count(t);
            for f in 0..t {
                // The job writes frame f once window ⌊f/4⌋ (or the last) is done: no window
                // after it feeds the frame, and that window does.
                let w = (f / STRIDE).min(nw - 1);
                assert!(frame_sources(Ilt::Released, t, f).iter().all(|&(i, ..)| i <= w), "T={t} f={f}");
                assert!(frame_sources(Ilt::Released, t, f).iter().any(|&(i, ..)| i == w), "T={t} f={f}");
            }
            for i in 0..nw {
                assert!(window_ready(i, 0, Some(t)));
                assert!(window_ready(i, window_start(i) + WINDOW, None));
                assert!(!window_ready(i, window_start(i) + WINDOW - 1, None));
            }
            assert!(!window_ready(nw, usize::MAX / 2, Some(t)));
        }
    }

    #[test]
    fn streaming_keeps_every_frame_a_later_window_reads() {
        for t in [1usize, 7, 8, 9, 13, 33] {
            let nw = window_count(t);
            for done in 0..=nw {
                let keep = first_input_needed(done, t, Some(t));
                for i in done..nw {
                    assert!(window_frames(t, i).iter().all(|&f| f >= keep), "T={t} done={done}");
                }
                // While the length is unknown: whatever the clip turns out to be (≥ what was
                // read), every frame the remaining windows read is kept or not read yet.
                for read in 0..=t {
                    if done > 0 && read < window_start(done - 1) + WINDOW {
                        continue; // window done−1 could not have run yet
                    }
                    let keep = first_input_needed(done, read, None);
                    for tt in read.max(1)..read + 40 {
                        for i in done..window_count(tt) {
                            for f in window_frames(tt, i) {
                                assert!(f >= keep || f >= read, "T={tt} done={done} read={read}: window {i} reads {f}, kept from {keep}");
                            }
                        }
                    }
                }
            }
        }
        // A loop that runs each window as soon as it is ready keeps 8 frames between windows:
        // just before window k is ready it has read 4k + 7 frames and keeps them from 4k − 1;
        // frame 4k + 7 then makes window k ready.
        for k in 1..1000 {
            let read = window_start(k) + WINDOW - 1;
            assert_eq!(read - first_input_needed(k, read, None), WINDOW);
        }
        // 9 frames: the last window (start 8) shows frames 8, 7, 6, …, 1.
        assert_eq!(window_frames(9, 2), [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(first_input_needed(2, 9, Some(9)), 1);
    }

    #[test]
    fn segments_use_exactly_the_windows_touching_their_frames() {
        let p = segment_plan(13, 0, 6).unwrap();
        assert_eq!((p.windows.clone(), p.reads.clone()), (0..2, 0..12));
        let q = segment_plan(13, 6, 13).unwrap();
        assert_eq!((q.windows.clone(), q.reads.clone()), (0..3, 0..13));
        for t in [1usize, 7, 8, 13, 33] {
            for start in 0..t {
                for end in start + 1..=t {
                    let plan = segment_plan(t, start, end).unwrap();
                    let mut touching: Vec<usize> = (start..end)
                        .flat_map(|f| frame_sources(Ilt::Released, t, f).into_iter().map(|s| s.0))
                        .collect();
                    touching.sort();
                    touching.dedup();
                    assert_eq!(touching, plan.windows.clone().collect::<Vec<_>>(), "T={t} {start}:{end}");
                }
            }
        }
        assert!(segment_plan(13, 6, 14).unwrap_err().contains("only 13 frames"));
        assert!(segment_plan(13, 6, 6).unwrap_err().contains("START must be below END"));
    }

    /// The frames a streaming run holds, as the job reads them (`segment_first_read` up to a
    /// call's last window, nothing dropped before the call runs): 12 for a whole run at one
    /// window per call, 15 for a segment from window 2 on, 4 more per window of a call.
    #[test]
    fn frames_held_by_a_run_and_a_segment() {
        assert_eq!((max_frames_held(0, 1), max_frames_held(0, 2)), (12, 16));
        for start in 12..40 {
            let (first, read) = (first_window_for(start), segment_first_read(start));
            for g in 1..=4 {
                // Held before the first call runs: from the first read to its last window's end.
                let first_call = window_start(first + g - 1) + WINDOW - read;
                assert!(first_call <= max_frames_held(start, g), "start {start} g {g}: {first_call}");
            }
        }
        assert_eq!(max_frames_held(20, 1), 15);
    }

    #[test]
    fn frame_ranges_parse_and_bad_ones_say_why() {
        assert_eq!("0:6".parse::<FrameRange>().unwrap(), FrameRange { start: 0, end: Some(6) });
        assert_eq!("6:".parse::<FrameRange>().unwrap(), FrameRange { start: 6, end: None });
        for bad in ["6", "a:b", "6:x", ":6", "-1:4", "1:2:3", "", "+1:4", " 1:4"] {
            let e = bad.parse::<FrameRange>().unwrap_err();
            assert!(e.contains("expected START:END"), "{bad:?}: {e}");
        }
        for bad in ["6:6", "7:6"] {
            assert!(bad.parse::<FrameRange>().unwrap_err().contains("START must be below END"), "{bad}");
        }
        assert_eq!("0:4294967295".parse::<FrameRange>().unwrap().end, Some(u32::MAX as usize));
        assert!("--plan".parse::<FrameRange>().unwrap_err().contains("--frames needs START:END (e.g. 0:100) before --plan"));
        for bad in ["0:4294967296", "18446744073709551615:", "99999999999999999999999:"] {
            assert!(bad.parse::<FrameRange>().unwrap_err().contains("frame numbers are at most 4294967295"), "{bad}");
        }
    }

    #[test]
    fn segment_streaming_limits_agree_with_the_plan() {
        for t in [1usize, 7, 8, 9, 13, 33] {
            for start in 0..t {
                for end in start + 1..=t {
                    let plan = segment_plan(t, start, end).unwrap();
                    // The first window and the earliest read frame are known before the length.
                    assert_eq!(plan.windows.start, first_window_for(start).min(window_count(t) - 1), "T={t} {start}:{end}");
                    assert!(plan.reads.start >= segment_first_read(start), "T={t} {start}:{end}: {plan:?}");
                    // A stream at least segment_read_limit long: the windows run on real frames.
                    let limit = segment_read_limit(end);
                    if t >= limit {
                        assert_eq!(plan.windows.end, last_window_for(end) + 1);
                        assert!(plan.reads.end <= limit);
                        for i in plan.windows.clone() {
                            assert_eq!(window_frames(t, i), window_frames(limit, i), "T={t} window {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn segments_concatenate_to_the_whole_run() {
        // A stand-in for denoising: each window's result depends on all its input frames and on
        // its frames' noise, so a segment that reads too little or blends wrongly differs.
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for t in [1usize, 7, 13, 33] {
            let input: Vec<f32> = (0..t).map(|_| rng.normal()).collect();
            let noise = |f: usize| crate::pipeline::noise::normal4(seed, crate::pipeline::noise::Stream::Latent, f as u32, 0, 0)[0];
            let denoise = |i: usize, reads: &Range<usize>| -> [f32; WINDOW] {
                let frames = window_frames(t, i);
                let mix: f32 = frames.iter().enumerate().map(|(k, &f)| {
                    assert!(reads.contains(&f), "window {i} reads frame {f} outside {reads:?}");
                    (k as f32 + 1.0) * input[f]
                }).sum();
                std::array::from_fn(|k| input[frames[k]] + 0.1 * mix + noise(window_start(i) + k))
            };
            let whole = segment_plan(t, 0, t).unwrap();
            let zw: Vec<[f32; WINDOW]> = whole.windows.clone().map(|i| denoise(i, &whole.reads)).collect();
            let full: Vec<f32> = (0..t).map(|f| assemble(Ilt::Released, t, f, &|w, k| zw[w][k])).collect();
            for cut in 1..t {
                let mut joined = Vec::new();
                for (s, e) in [(0, cut), (cut, t)] {
                    let p = segment_plan(t, s, e).unwrap();
                    let z: Vec<Option<[f32; WINDOW]>> =
                        (0..window_count(t)).map(|i| p.windows.contains(&i).then(|| denoise(i, &p.reads))).collect();
                    for f in p.frames {
                        joined.push(assemble(Ilt::Released, t, f, &|w, k| z[w].expect("window outside the plan")[k]));
                    }
                }
                assert_eq!(joined, full, "seed {seed} T={t} cut {cut}");
            }
        }
    }
}
