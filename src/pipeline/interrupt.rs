//! Stopping the job on Ctrl-C (or SIGTERM, SIGHUP) with whole frames: the binary's signal
//! handler calls [`request`];
//! the job calls [`check`] between input frames, between denoising steps and after each output
//! frame, and returns [`Interrupted`] there. A frame being written is finished first, so the
//! output holds only whole frames.
//!
//! The flag is process-wide, as the signal is. Library tests never set it (they run jobs in
//! parallel in one process); the binary's test does.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the running job to stop at its next check; returns whether a stop was already asked
/// for (a second Ctrl-C).
pub fn request() -> bool {
    STOP.swap(true, Ordering::SeqCst)
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop was asked for.
pub fn check() -> anyhow::Result<()> {
    if requested() {
        return Err(Interrupted { detail: String::new() }.into());
    }
    Ok(())
}

/// The job stopped on request (Ctrl-C, SIGTERM or SIGHUP); `detail` says what was written and
/// how to resume.
#[derive(Debug)]
pub struct Interrupted {
    pub detail: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            write!(f, "stopped by a signal (Ctrl-C, SIGTERM or SIGHUP)")
        } else {
            write!(f, "stopped by a signal (Ctrl-C, SIGTERM or SIGHUP): {}", self.detail)
        }
    }
}

impl std::error::Error for Interrupted {}

/// True when `e` is (or wraps) an [`Interrupted`].
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Interrupted>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_is_found_through_context() {
        let e = anyhow::Error::new(Interrupted { detail: "4 frames written".into() }).context("the job");
        assert!(is_interrupted(&e));
        assert!(format!("{e:#}").contains("stopped by a signal (Ctrl-C, SIGTERM or SIGHUP): 4 frames written"), "{e:#}");
        assert!(!is_interrupted(&anyhow::anyhow!("something else")));
    }
}
