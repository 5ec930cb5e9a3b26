//! Several windows in one UNet call: `--windows-per-call N|auto` (issue 10, item 4).
//!
//! Windows are independent until their final latents are fused (the ILT blend reads final
//! latents only, and the noise is keyed by absolute frame and pixel), so G windows can be
//! denoised together: one UNet call of batch 2G (G CFG pairs; G without guidance) per step
//! instead of G calls.
//! No kernel mixes batch elements or picks its reduction order from the batch size, so each
//! window's latents are the same bytes whatever it is grouped with: grouping changes the speed
//! and the memory, never the output, and `--frames` parts still join byte for byte
//! (`job::tests::windows_per_call_changes_no_byte`).
//!
//! Why: a small frame's window leaves a big GPU idle. Issue 10's H200 run timed a window call
//! (a CFG pair × 8 frames) at a 64² latent at 103 ms and at 128², four times the pixels, at
//! 267 ms; two 128² windows in one call took 503 ms, 6% less than two calls.
//!
//! What `auto` picks: as many windows as keep the call within the latent pixels of one
//! 128² window ([`GROUP_PIXELS`]; a 128×128 input, as the latent is at the input's size), at
//! most [`MAX_AUTO`], so a clip of small frames never needs more UNet memory than a 128×128
//! clip (two windows from about 90×90 down, four from 64×64). One window per call where that
//! gains nothing: frames of 128² latent pixels or more, frames cut into spatial tiles (tiles exist to
//! save memory), a software adapter (a CPU gains nothing from a larger batch; it only delays the
//! first output frame), and under a fixed `--tile` (the binding check below needs the tile
//! planner's measurement of the UNet's largest tensor). Whatever the count, no call holds more
//! windows than the run has where that is known before it starts (an input file's length, a
//! `--frames` segment), so a short clip captures no step graph for windows that never come.
//! Where the GPU's memory is known, no more windows than fit it ([`memory_plan`](crate::pipeline::memory_plan)):
//! auto takes fewer, and a fixed count over it is refused before anything is captured.

use std::fmt;

/// Latent pixels per UNet call `auto` fills up to (one 128² window).
pub const GROUP_PIXELS: usize = GROUP_SIDE * GROUP_SIDE;
/// The side of [`GROUP_PIXELS`]' square.
pub const GROUP_SIDE: usize = 128;
/// Most windows `auto` puts in one call.
pub const MAX_AUTO: usize = 4;
/// Most windows `--windows-per-call N` accepts.
pub const MAX_WINDOWS_PER_CALL: usize = 8;

/// The `--windows-per-call` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WindowsPerCall {
    #[default]
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for WindowsPerCall {
    type Err = String;
    fn from_str(s: &str) -> Result<WindowsPerCall, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(WindowsPerCall::Auto);
        }
        match s.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WINDOWS_PER_CALL).contains(&n) => Ok(WindowsPerCall::Fixed(n)),
            _ => Err(format!("--windows-per-call {s}: expected auto or a number from 1 to {MAX_WINDOWS_PER_CALL}")),
        }
    }
}

impl fmt::Display for WindowsPerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowsPerCall::Auto => write!(f, "auto"),
            WindowsPerCall::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// What the choice depends on, known once the models have loaded and the tiles are picked.
#[derive(Clone, Copy, Debug)]
pub struct GroupContext {
    /// The adapter is a CPU (lavapipe, llvmpipe).
    pub software: bool,
    /// UNet tiles per frame, and one tile's latent pixels.
    pub unet_tiles: usize,
    pub tile_px: usize,
    /// `--tile auto`'s measurement: bytes per latent pixel of the UNet's largest tensor for one
    /// window (None under a fixed `--tile`).
    pub largest_per_px: Option<f64>,
    /// The adapter's binding limit in bytes.
    pub max_binding: u64,
    /// The windows the run denoises, where known before it starts (a file's length, a
    /// `--frames` segment): no call holds more.
    pub run_windows: Option<usize>,
    /// Where the GPU's memory is known and a call of several windows was weighed
    /// ([`memory_plan`](crate::pipeline::memory_plan)): the most windows whose call fits it,
    /// and the bytes available.
    pub memory_windows: Option<(usize, u64)>,
}

/// Windows per UNet call, and why, in words (for the job's summary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grouping {
    pub windows: usize,
    pub why: String,
}

impl WindowsPerCall {
    /// The windows per call for this job (see the module doc). A fixed N whose largest tensor
    /// would exceed the binding limit is an error naming the most that fits; under spatial
    /// tiles a fixed N runs one window per call, and says so. No call holds more windows than
    /// the run has, where that is known.
    pub fn resolve(self, c: &GroupContext) -> Result<Grouping, String> {
        let binding_fits = |g: usize| c.largest_per_px.is_none_or(|b| g as f64 * b * c.tile_px as f64 <= c.max_binding as f64);
        let memory_fits = |g: usize| c.memory_windows.is_none_or(|(m, _)| g <= m);
        let fits = |g: usize| binding_fits(g) && memory_fits(g);
        let one = |why: &str| Ok(Grouping { windows: 1, why: why.to_string() });
        // A run of fewer windows than a call could hold: its windows, no more (checked against
        // the binding limit as such).
        let run = |g: usize| c.run_windows.map_or(g, |w| g.min(w.max(1)));
        let short = |g: usize| match c.run_windows {
            Some(w) if w.max(1) < g => format!("; the run has {w} window{}", if w == 1 { "" } else { "s" }),
            _ => String::new(),
        };
        match self {
            WindowsPerCall::Fixed(n) if c.unet_tiles > 1 => Ok(Grouping { windows: 1, why: format!("--windows-per-call {n} does not apply: the frame runs in {} UNet tiles, one window at a time", c.unet_tiles) }),
            WindowsPerCall::Fixed(n) if !memory_fits(run(n)) => {
                let (most, available) = c.memory_windows.expect("memory_fits is false only with a figure");
                Err(format!(
                    "--windows-per-call {n}: {} windows in one UNet call would not fit the GPU's memory ({} available); at most {most} fit here",
                    run(n),
                    crate::gpu::human_bytes(available)
                ))
            }
            WindowsPerCall::Fixed(n) if !binding_fits(run(n)) => {
                let most = (1..run(n)).rev().find(|&g| fits(g)).unwrap_or(1);
                let mib = c.max_binding as f64 / (1u64 << 20) as f64;
                Err(format!("--windows-per-call {n}: the UNet's largest tensor would exceed the GPU's binding limit ({mib:.1} MiB); at most {most} windows fit in one call here"))
            }
            WindowsPerCall::Fixed(n) => Ok(Grouping { windows: run(n), why: format!("--windows-per-call{}", short(n)) }),
            WindowsPerCall::Auto if c.software => one("auto: a software adapter gains nothing from a larger batch"),
            WindowsPerCall::Auto if c.unet_tiles > 1 => one("auto: the frame runs in UNet tiles"),
            WindowsPerCall::Auto if c.largest_per_px.is_none() => one("auto: with a fixed --tile windows are not grouped"),
            WindowsPerCall::Auto => {
                let g = (GROUP_PIXELS / c.tile_px.max(1)).clamp(1, MAX_AUTO);
                let by_memory = !memory_fits(run(g));
                let g = (1..=g).rev().find(|&g| fits(g)).unwrap_or(1);
                let why = match (g, by_memory) {
                    (_, true) => format!("auto: {g} window{} fit the GPU's memory", if g == 1 { "" } else { "s" }),
                    (1, false) => "auto: the frame fills a call".to_string(),
                    _ => format!("auto: small frames{}", short(g)),
                };
                Ok(Grouping { windows: run(g), why })
            }
        }
    }
}

/// The windows a run denoises together: from window `next`, up to `per_call` of them, not past
/// `last` (the segment's last window, or the clip's once its length is known).
pub fn next_group(next: usize, per_call: usize, last: usize) -> std::ops::Range<usize> {
    next..(next + per_call.max(1)).min(last.saturating_add(1)).max(next + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tile_px: usize) -> GroupContext {
        GroupContext { software: false, unet_tiles: 1, tile_px, largest_per_px: Some(1000.0), max_binding: 2 << 30, run_windows: None, memory_windows: None }
    }

    #[test]
    fn the_flag_parses_and_says_what_it_takes() {
        assert_eq!("auto".parse::<WindowsPerCall>(), Ok(WindowsPerCall::Auto));
        assert_eq!("3".parse::<WindowsPerCall>(), Ok(WindowsPerCall::Fixed(3)));
        for bad in ["0", "9", "x", "-1"] {
            let e = bad.parse::<WindowsPerCall>().unwrap_err();
            assert!(e.contains("from 1 to 8"), "{e}");
        }
        assert_eq!(WindowsPerCall::Fixed(2).to_string(), "2");
    }

    /// Auto fills a call up to one 128² window's pixels, at most 4 windows; never on a CPU,
    /// under tiles or without the binding measurement; never past the binding limit.
    #[test]
    fn auto_groups_small_frames_within_the_limits() {
        let auto = |c: GroupContext| WindowsPerCall::Auto.resolve(&c).unwrap().windows;
        assert_eq!(auto(ctx(128 * 128)), 1);
        assert_eq!(auto(ctx(180 * 320)), 1);
        assert_eq!(auto(ctx(96 * 96)), 1);
        assert_eq!(auto(ctx(88 * 88)), 2);
        assert_eq!(auto(ctx(72 * 72)), 3);
        assert_eq!(auto(ctx(64 * 64)), 4);
        assert_eq!(auto(ctx(8 * 8)), 4);
        assert_eq!(auto(GroupContext { software: true, ..ctx(64 * 64) }), 1);
        assert_eq!(auto(GroupContext { unet_tiles: 2, ..ctx(64 * 64) }), 1);
        assert_eq!(auto(GroupContext { largest_per_px: None, ..ctx(64 * 64) }), 1);
        // 4096 px × 1000 B = 4.1 MB a window: a 9 MB limit takes two.
        assert_eq!(auto(GroupContext { max_binding: 9_000_000, ..ctx(64 * 64) }), 2);
    }

    #[test]
    fn a_fixed_count_is_kept_refused_over_the_limit_and_dropped_under_tiles() {
        let fixed = |n, c: GroupContext| WindowsPerCall::Fixed(n).resolve(&c);
        assert_eq!(fixed(6, ctx(180 * 320)).unwrap().windows, 6);
        assert_eq!(fixed(6, GroupContext { largest_per_px: None, ..ctx(64 * 64) }).unwrap().windows, 6);
        let g = fixed(3, GroupContext { unet_tiles: 4, ..ctx(64 * 64) }).unwrap();
        assert!(g.windows == 1 && g.why.contains("4 UNet tiles"), "{g:?}");
        let e = fixed(3, GroupContext { max_binding: 9_000_000, ..ctx(64 * 64) }).unwrap_err();
        assert!(e.contains("at most 2 windows"), "{e}");
    }

    /// A run of fewer windows than the count gets calls of its windows only (no graph is
    /// captured, nor memory planned, for windows that never come).
    #[test]
    fn no_call_holds_more_windows_than_the_run() {
        let runs = |w| GroupContext { run_windows: Some(w), ..ctx(64 * 64) };
        let g = WindowsPerCall::Auto.resolve(&runs(2)).unwrap();
        assert!(g.windows == 2 && g.why.contains("the run has 2 windows"), "{g:?}");
        assert_eq!(WindowsPerCall::Auto.resolve(&runs(9)).unwrap().windows, 4);
        assert_eq!(WindowsPerCall::Fixed(6).resolve(&runs(1)).unwrap().windows, 1);
        assert_eq!(WindowsPerCall::Fixed(6).resolve(&runs(0)).unwrap().windows, 1);
        assert_eq!(WindowsPerCall::Fixed(3).resolve(&runs(5)).unwrap().windows, 3);
        // Eight would exceed a 9 MB binding, the run's two do not.
        assert_eq!(WindowsPerCall::Fixed(8).resolve(&GroupContext { max_binding: 9_000_000, ..runs(2) }).unwrap().windows, 2);
    }

    /// Where the GPU's memory holds fewer windows than auto would group, auto takes those and
    /// says why; a fixed count over it is refused, naming the most that fit.
    #[test]
    fn memory_caps_the_windows_per_call() {
        let with = |m| GroupContext { memory_windows: Some((m, 3 << 30)), ..ctx(64 * 64) };
        let g = WindowsPerCall::Auto.resolve(&with(2)).unwrap();
        assert!(g.windows == 2 && g.why.contains("fit the GPU's memory"), "{g:?}");
        let g = WindowsPerCall::Auto.resolve(&with(1)).unwrap();
        assert!(g.windows == 1 && g.why.contains("1 window fit"), "{g:?}");
        assert_eq!(WindowsPerCall::Auto.resolve(&with(4)).unwrap(), WindowsPerCall::Auto.resolve(&ctx(64 * 64)).unwrap());
        let e = WindowsPerCall::Fixed(3).resolve(&with(2)).unwrap_err();
        assert!(e.contains("at most 2 fit") && e.contains("3.0 GiB available"), "{e}");
        assert_eq!(WindowsPerCall::Fixed(2).resolve(&with(2)).unwrap().windows, 2);
        // A run of two windows, where three would fit: the run, not memory, set the count.
        let g = WindowsPerCall::Auto.resolve(&GroupContext { run_windows: Some(2), ..with(3) }).unwrap();
        assert!(g.windows == 2 && g.why.contains("the run has 2 windows"), "{g:?}");
    }

    #[test]
    fn groups_stop_at_the_last_window() {
        assert_eq!(next_group(0, 4, 9), 0..4);
        assert_eq!(next_group(8, 4, 9), 8..10);
        assert_eq!(next_group(5, 1, 9), 5..6);
        assert_eq!(next_group(3, 4, usize::MAX), 3..7);
        assert_eq!(next_group(9, 4, 9), 9..10);
    }
}
