//! The job's progress on stderr: frames written, window and step, frames per second, and an ETA
//! once the run's length is known (from the input file's size, or once the stream has ended;
//! until then a spinner on a terminal). On a terminal one line is rewritten in place (at most
//! ten times a second); elsewhere (logs, CI) one plain line per finished window (or group of
//! windows denoised together), and one after the run's first step, so that a log shows the job
//! under way before a whole window is done (minutes on a slow GPU). Before the first window,
//! either style says that the graphs are being prepared (kernels compiled, tiles timed).
//!
//! The ETA adds the two kinds of work left: denoising steps × the time a step takes (measured
//! between steps of one window, so a decode between windows does not count as steps), and
//! decode chunks (4 output frames each, decoded and written) × the mean time of those done.
//! Until a chunk is done the decodes are unknown and left out. With spatial tiles the line says
//! which tile's steps run (`step 3/50 tile 2/4`).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::pipeline::windows::{self, FrameRange};

/// Where the job is: the events the job's `run_job` reports (defined here, beside their
/// reader, so that this file does not import the job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The job prepares its graphs (kernels compiled, tiles timed where tuning is on) before
    /// the first window: seconds on a GPU, more on a cold driver cache.
    Preparing { tuning: bool },
    /// The `group` windows from `window` on (denoised together in one UNet call per step;
    /// usually 1) finished denoising step `step` (1-based) of `steps`; `windows` is the window
    /// count once the stream length is known. With spatial tiles the steps of every tile count:
    /// `steps` is tiles × DDIM steps.
    Step { window: usize, group: usize, windows: Option<usize>, step: usize, steps: usize },
    /// `done` output frames are written; `total` once the stream length is known.
    Frames { done: usize, total: Option<usize> },
    /// A chunk of output frames was decoded and written, in `took`.
    Decoded { took: Duration },
    /// Something the user should know of the run, said once as a line (`note: …`).
    Note(String),
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One line rewritten with `\r` (stderr is a terminal).
    Terminal,
    /// One plain line per finished window.
    Lines,
}

impl Style {
    /// Terminal when stderr is one, else plain lines.
    pub fn for_stderr() -> Style {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() {
            Style::Terminal
        } else {
            Style::Lines
        }
    }
}

const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
const REDRAW: Duration = Duration::from_millis(100);

/// Turns the job's [`Progress`] events into lines on `out`.
pub struct Reporter<E: Write> {
    out: E,
    style: Style,
    t0: Instant,
    /// Steps per window: the DDIM steps × the UNet's tiles (from the job's events).
    steps: usize,
    /// The DDIM steps (`--steps`).
    ddim_steps: usize,
    /// The `--frames` segment (START 0 and no END for a whole run).
    start: usize,
    end: Option<usize>,
    /// The clip's window count, once known.
    window_count: Option<usize>,
    /// Output frames this run writes, once known.
    frames_total: Option<usize>,
    /// Latest (first window, windows in its group, step), step 1-based.
    at: Option<(usize, usize, usize)>,
    /// The window and time of the last step event.
    last_step: Option<(usize, Duration)>,
    /// The time of the last event of any kind.
    last_event: Duration,
    /// Time between step events of one window, and the window-steps it covered.
    step_secs: f64,
    window_steps_timed: usize,
    /// Decoded chunks and their time.
    chunks_done: usize,
    chunk_secs: f64,
    frames_done: usize,
    last_draw: Option<Duration>,
    spin: usize,
    /// Characters of the terminal line on screen (to be cleared before other output), 0 for none.
    shown: usize,
    /// A step event has come.
    stepped: bool,
}

impl<E: Write> Reporter<E> {
    /// `input_frames`: the clip's length when known before the run (an input file).
    pub fn new(out: E, style: Style, steps: usize, frames: Option<FrameRange>, input_frames: Option<usize>) -> Reporter<E> {
        let (start, end) = frames.map_or((0, None), |r| (r.start, r.end));
        Reporter {
            out,
            style,
            t0: Instant::now(),
            steps: steps.max(1),
            ddim_steps: steps.max(1),
            start,
            end,
            window_count: input_frames.filter(|&t| t > 0).map(windows::window_count),
            // Without the clip's length, END − START stands in until the stream ends.
            frames_total: input_frames.map_or(end.map(|e| e.saturating_sub(start)), |t| Some(end.unwrap_or(t).min(t).saturating_sub(start))),
            at: None,
            last_step: None,
            last_event: Duration::ZERO,
            step_secs: 0.0,
            window_steps_timed: 0,
            chunks_done: 0,
            chunk_secs: 0.0,
            frames_done: 0,
            last_draw: None,
            spin: 0,
            shown: 0,
            stepped: false,
        }
    }

    /// The windows this run denoises, once the clip's length is known.
    fn run_windows(&self) -> Option<std::ops::Range<usize>> {
        let n = self.window_count?;
        let last = n - 1;
        let first = windows::first_window_for(self.start).min(last);
        let end = self.end.map_or(last, |e| windows::last_window_for(e).min(last));
        Some(first..end + 1)
    }

    /// The decode chunks this run writes (those holding one of its output frames), once the
    /// run's length is known.
    fn run_chunks(&self) -> Option<usize> {
        let n = self.frames_total?;
        let chunk = crate::pipeline::graphs::DECODE_CHUNK;
        Some(if n == 0 { 0 } else { (self.start + n - 1) / chunk - self.start / chunk + 1 })
    }

    /// Time left at `elapsed` (see the module doc): the work left as of the last event, less
    /// the time since.
    pub fn eta(&self, elapsed: Duration) -> Option<Duration> {
        let w = self.run_windows()?;
        let (window, group, step) = self.at?;
        let (_, at) = self.last_step?;
        let done = window.checked_sub(w.start)? * self.steps + group * step;
        let left = (w.len() * self.steps).saturating_sub(done);
        let per_step = match self.window_steps_timed {
            0 => at.as_secs_f64() / done.max(1) as f64,
            n => self.step_secs / n as f64,
        };
        let per_chunk = if self.chunks_done > 0 { self.chunk_secs / self.chunks_done as f64 } else { 0.0 };
        let chunks_left = self.run_chunks().map_or(0, |c| c.saturating_sub(self.chunks_done));
        if left == 0 && chunks_left > 0 && self.chunks_done == 0 {
            // Only decodes left, none timed yet: "0 s" would be no estimate at all.
            return None;
        }
        let secs = left as f64 * per_step + chunks_left as f64 * per_chunk - elapsed.saturating_sub(self.last_event).as_secs_f64();
        Some(Duration::from_secs_f64(secs.max(0.0)))
    }

    /// The progress line at `elapsed` (without `\r` or newline).
    pub fn line(&mut self, elapsed: Duration) -> String {
        self.line_with(elapsed, true)
    }

    /// The progress line, with the ETA where `eta` and known.
    fn line_with(&mut self, elapsed: Duration, eta: bool) -> String {
        let secs = elapsed.as_secs_f64();
        let mut s = match self.frames_total {
            Some(t) => format!("frames {}/{t}", self.frames_done),
            None => format!("frames {}", self.frames_done),
        };
        if let Some((window, group, step)) = self.at {
            let first = window + 1 - self.run_windows().map_or(windows::first_window_for(self.start), |w| w.start).min(window);
            let which = match group {
                1 => format!("window {first}"),
                g => format!("windows {first}-{}", first + g - 1),
            };
            if let Some(w) = self.run_windows() {
                s += &format!(", {which}/{}", w.len());
            } else {
                s += &format!(", {which}");
            }
            // Tile t's steps are the t-th run of the DDIM steps.
            let (d, tiles) = (self.ddim_steps, self.steps / self.ddim_steps);
            if tiles > 1 && self.steps.is_multiple_of(d) {
                s += &format!(" step {}/{d} tile {}/{tiles}", (step - 1) % d + 1, (step - 1) / d + 1);
            } else {
                s += &format!(" step {step}/{}", self.steps);
            }
        }
        if self.frames_done > 0 && secs > 0.0 {
            s += &format!(", {:.2} frames/s", self.frames_done as f64 / secs);
        }
        s += &format!(", {} elapsed", human_duration(elapsed));
        match self.eta(elapsed).filter(|_| eta) {
            Some(eta) => s += &format!(", ETA {}", human_duration(eta)),
            None if self.style == Style::Terminal => {
                s += &format!(" {}", SPINNER[self.spin % SPINNER.len()]);
                self.spin += 1;
            }
            None => {}
        }
        s
    }

    /// One job event, now.
    pub fn event(&mut self, p: Progress) {
        self.event_at(p, self.t0.elapsed());
    }

    /// One job event at `elapsed` since the reporter was made.
    pub fn event_at(&mut self, p: Progress, elapsed: Duration) {
        let mut window_done = false;
        // The run's first step of several: its time includes preparing the graphs (kernel
        // compilation, tuning), so it says nothing yet of the time left.
        let first_step = !self.stepped && matches!(p, Progress::Step { step: 1, steps, .. } if steps > 1);
        match p {
            Progress::Preparing { tuning } => {
                // One line before the first window's setup, ended in either style: warnings
                // printed while the graphs are prepared follow it, not glued to its end.
                let what = if tuning { "compiling kernels and timing their tiles" } else { "compiling kernels" };
                self.clear();
                let _ = writeln!(self.out, "preparing the graphs ({what}) …");
                let _ = self.out.flush();
                return;
            }
            Progress::Note(note) => {
                self.clear();
                let _ = writeln!(self.out, "note: {note}");
                let _ = self.out.flush();
                return;
            }
            Progress::Step { window, group, windows, step, steps } => {
                self.stepped = true;
                if let Some((w, t)) = self.last_step {
                    if w == window && step > 1 {
                        self.step_secs += elapsed.saturating_sub(t).as_secs_f64();
                        self.window_steps_timed += group.max(1);
                    }
                }
                self.last_step = Some((window, elapsed));
                self.at = Some((window, group.max(1), step));
                self.steps = steps.max(1);
                if windows.is_some() {
                    self.window_count = windows;
                }
                window_done = step == steps;
            }
            Progress::Frames { done, total } => {
                self.frames_done = done;
                if total.is_some() {
                    self.frames_total = total;
                }
            }
            Progress::Decoded { took } => {
                self.chunks_done += 1;
                self.chunk_secs += took.as_secs_f64();
            }
        }
        self.last_event = elapsed;
        let draw = match self.style {
            Style::Terminal => window_done || self.last_draw.is_none_or(|t| elapsed.saturating_sub(t) >= REDRAW),
            Style::Lines => window_done || first_step,
        };
        if !draw {
            return;
        }
        self.last_draw = Some(elapsed);
        let line = if first_step && self.style == Style::Lines {
            self.line_with(elapsed, false) + " (the first step, with the graphs' preparation)"
        } else {
            self.line(elapsed)
        };
        // Progress is best effort: a closed stderr must not stop the job.
        let _ = match self.style {
            Style::Terminal => {
                // Spaces over what the last line left, not an ANSI erase: a classic Windows
                // console prints escapes as text unless asked not to, and asking fails where
                // stdout is a pipe, the filter's usual case.
                let n = line.chars().count();
                let r = write!(self.out, "\r{line}{}", " ".repeat(self.shown.saturating_sub(n)));
                self.shown = n;
                r
            }
            Style::Lines => writeln!(self.out, "{line}"),
        };
        let _ = self.out.flush();
    }

    /// Clears the terminal line (before other output on stderr).
    pub fn clear(&mut self) {
        if self.shown > 0 {
            let _ = write!(self.out, "\r{}\r", " ".repeat(self.shown));
            let _ = self.out.flush();
            self.shown = 0;
        }
    }

    /// Time since the reporter was made.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn into_inner(self) -> E {
        self.out
    }
}

/// `45 s`, `3 min 12 s`, `2 h 05 min`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(window: usize, windows: Option<usize>, step: usize) -> Progress {
        Progress::Step { window, group: 1, windows, step, steps: 10 }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(192)), "3 min 12 s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2 h 05 min");
    }

    /// 13 frames: 3 windows of 10 steps. After window 0's 5th step at 10 s, 5 of 30 steps are
    /// done, 2 s each (the decodes not yet timed).
    #[test]
    fn eta_counts_the_steps_left_of_the_run() {
        let secs = Duration::from_secs;
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, None, Some(13));
        assert_eq!(r.eta(secs(10)), None, "no step done yet");
        r.event_at(step(0, None, 5), secs(10));
        assert_eq!(r.eta(secs(10)), Some(secs(50)));
        let line = r.line(secs(10));
        assert!(line.contains("frames 0/13") && line.contains("window 1/3 step 5/10") && line.contains("ETA 50 s"), "{line}");
        // Later, less the time since the last event.
        assert_eq!(r.eta(secs(15)), Some(secs(45)));
        // A segment 6:13 runs windows 0..3 too (frame 6 is in window 0); 9:13 runs windows 1..3.
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, Some(FrameRange { start: 9, end: Some(13) }), Some(13));
        r.event_at(step(1, Some(3), 10), secs(10));
        assert_eq!(r.eta(secs(10)), Some(secs(10)));
        assert!(r.line(secs(10)).contains("frames 0/4, window 1/2 step 10/10"));
    }

    /// `--frames 2:100`: from a file of 13 frames, 11 to write, which frames written before
    /// the stream's end (sent without a total) do not change; on a pipe, END − START stands in
    /// until the stream ends and the job sends the count.
    #[test]
    fn an_end_past_the_clip_counts_the_frames_the_clip_has() {
        let part = Some(FrameRange { start: 2, end: Some(100) });
        let mut file = Reporter::new(Vec::new(), Style::Lines, 10, part, Some(13));
        file.event(Progress::Frames { done: 2, total: None });
        assert!(file.line(Duration::from_secs(1)).starts_with("frames 2/11,"));
        let mut pipe = Reporter::new(Vec::new(), Style::Lines, 10, part, None);
        assert!(pipe.line(Duration::from_secs(1)).starts_with("frames 0/98,"));
        pipe.event(Progress::Frames { done: 2, total: Some(11) });
        assert!(pipe.line(Duration::from_secs(1)).starts_with("frames 2/11,"));
    }

    /// A stream of unknown length: no ETA; a spinner on a terminal, nothing in plain lines;
    /// the ETA appears once the job reports the window count.
    #[test]
    fn unknown_length_spins_until_the_stream_ends() {
        let mut r = Reporter::new(Vec::new(), Style::Terminal, 10, None, None);
        r.event(step(0, None, 1));
        let a = r.line(Duration::from_secs(1));
        let b = r.line(Duration::from_secs(1));
        assert!(!a.contains("ETA") && a.ends_with(['|', '/', '-', '\\']) && a != b, "{a} / {b}");
        r.event(Progress::Frames { done: 4, total: Some(6) });
        r.event(Progress::Decoded { took: Duration::ZERO });
        r.event(step(1, Some(2), 10));
        let c = r.line(Duration::from_secs(20));
        assert!(c.contains("frames 4/6") && c.contains("window 2/2") && c.contains("0.20 frames/s") && c.contains("ETA 0 s"), "{c}");
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, None, None);
        r.event(step(0, None, 10));
        let out = String::from_utf8(r.into_inner()).unwrap();
        assert!(out.starts_with("frames 0, window 1 step 10/10,") && !out.contains("ETA") && out.ends_with('\n'), "{out:?}");
    }

    /// The steps are timed between steps of one window (a decode between windows is not a
    /// step), and once a chunk has been decoded its time counts for every chunk left.
    #[test]
    fn eta_adds_the_decodes_once_one_is_timed() {
        let secs = Duration::from_secs;
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, None, Some(13));
        for k in 1..=10 {
            r.event_at(step(0, None, k), secs(2 * k as u64));
        }
        // 2 s a step, 20 steps left; the 4 chunks (frames 0-3, 4-7, 8-11, 12) not yet timed.
        assert_eq!(r.eta(secs(20)), Some(secs(40)));
        r.event_at(Progress::Frames { done: 4, total: None }, secs(29));
        r.event_at(Progress::Decoded { took: Duration::from_secs(9) }, secs(29));
        // Window 1's first step 30 s after window 0's last (the decode between): not a step.
        r.event_at(step(1, None, 1), secs(50));
        assert_eq!(r.eta(secs(50)), Some(secs(19 * 2 + 3 * 9)));
        r.event_at(step(1, None, 2), secs(52));
        assert_eq!(r.eta(secs(52)), Some(secs(18 * 2 + 3 * 9)));
        assert_eq!(r.eta(secs(60)), Some(secs(18 * 2 + 3 * 9 - 8)));
        assert_eq!(r.eta(secs(500)), Some(secs(0)));
        // A single window's last step, its decodes not yet timed: no ETA rather than "0 s".
        let mut one = Reporter::new(Vec::new(), Style::Lines, 10, None, Some(8));
        one.event_at(step(0, None, 10), secs(20));
        assert_eq!(one.eta(secs(20)), None);
        one.event_at(Progress::Decoded { took: Duration::from_secs(3) }, secs(23));
        assert_eq!(one.eta(secs(23)), Some(secs(3)), "the second chunk at the first one's time");
        // A segment's chunks: output frames 6..13 are in chunks 1, 2 and 3.
        let r = Reporter::new(Vec::new(), Style::Lines, 10, Some(FrameRange { start: 6, end: None }), Some(13));
        assert_eq!(r.run_chunks(), Some(3));
    }

    /// With spatial tiles, each tile runs the DDIM steps in turn: the line says which.
    #[test]
    fn tiles_show_their_own_steps() {
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, None, Some(13));
        r.event(Progress::Step { window: 0, group: 1, windows: None, step: 13, steps: 40 });
        let line = r.line(Duration::from_secs(1));
        assert!(line.contains("window 1/3 step 3/10 tile 2/4"), "{line}");
    }

    /// Windows denoised together show as a range, and their steps count for each of them.
    #[test]
    fn a_group_of_windows_shows_its_range() {
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, None, Some(13));
        r.event_at(Progress::Step { window: 0, group: 2, windows: None, step: 5, steps: 10 }, Duration::from_secs(10));
        let line = r.line(Duration::from_secs(10));
        // 2 × 5 of 30 window-steps in 10 s.
        assert!(line.contains("windows 1-2/3 step 5/10") && line.contains("ETA 20 s"), "{line}");
    }

    /// Plain lines: one after the run's first step (without an ETA: that step's time includes
    /// the graphs' preparation), then one per finished window, no carriage returns; a terminal
    /// rewrites one line.
    #[test]
    fn lines_once_per_window_terminal_in_place() {
        let mut r = Reporter::new(Vec::new(), Style::Lines, 10, None, Some(13));
        r.event(Progress::Preparing { tuning: true });
        for w in 0..3 {
            for s in 1..=10 {
                r.event(step(w, None, s));
            }
            r.event(Progress::Frames { done: 4 * (w + 1), total: None });
            r.event(Progress::Decoded { took: Duration::from_millis(10) });
        }
        let out = String::from_utf8(r.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].starts_with("preparing the graphs (compiling kernels and timing their tiles)"), "{out}");
        let lines = &lines[1..];
        assert!(lines[0].contains("window 1/3 step 1/10") && lines[0].contains("the first step") && !lines[0].contains("ETA"), "{out}");
        assert!(lines[1..].iter().enumerate().all(|(w, l)| l.contains(&format!("window {}/3 step 10/10", w + 1)) && l.contains("ETA")), "{out}");
        assert!(!out.contains('\r'));
        let mut r = Reporter::new(Vec::new(), Style::Terminal, 10, None, Some(13));
        r.event(step(0, None, 1));
        r.clear();
        let out = String::from_utf8(r.into_inner()).unwrap();
        // Cleared with spaces over the line (no ANSI escapes, which classic Windows consoles print).
        let n = out.trim_start_matches('\r').trim_end().chars().count();
        assert!(out.starts_with('\r') && !out.contains('\n') && !out.contains('\x1b') && out.ends_with(&format!("\r{}\r", " ".repeat(n))), "{out:?}");
        // A note is a line of its own, the terminal's progress line cleared before it.
        let mut r = Reporter::new(Vec::new(), Style::Terminal, 10, None, Some(13));
        r.event(step(0, None, 1));
        r.event(Progress::Note("planning again".into()));
        let out = String::from_utf8(r.into_inner()).unwrap();
        let (line, note) = out.rsplit_once('\r').unwrap();
        assert!(line.ends_with(' ') && note == "note: planning again\n", "{out:?}");
    }
}
