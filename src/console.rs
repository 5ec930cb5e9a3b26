//! Lines for the person at the terminal, written so that a closed pipe never ends the program
//! with a panic. `println!` and `eprintln!` panic when their stream is a pipe whose reader has
//! gone (`diffvsr-wgpu devices | head -c 10`, or a job's `2>&1 >/dev/null | head`), which turned
//! a finished job into exit code 101.
//!
//! - [`outln!`](crate::outln) / [`out!`](crate::out): a command's own output on stdout (reports,
//!   tables, plans). Once its reader has gone the rest of it is dropped; the command still does
//!   its work (files it was asked to write, the checks it fails on) and ends with its own exit
//!   code.
//! - [`diagln!`](crate::diagln) / [`diag!`](crate::diag): progress, notes and errors on stderr. A line that cannot be written
//!   is dropped; the work goes on, and the exit code still tells whether it succeeded.

use std::io::Write;

/// Set once stdout's reader has gone: what is left for stdout is dropped.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `args` to stdout; from a reader gone on, nothing more (any other write error is
/// ignored too: there is no one to tell).
#[doc(hidden)]
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::sync::atomic::Ordering::Relaxed;
    if STDOUT_GONE.load(Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|_| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_GONE.store(true, Relaxed);
        }
    }
}

/// Writes `args` to stderr, dropping it where it cannot be written.
#[doc(hidden)]
pub fn diag(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().write_fmt(args);
}

/// `println!` that drops the line, instead of panicking, once stdout's reader has gone.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that drops the text, instead of panicking, once stdout's reader has gone.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::console::out(format_args!($($arg)*)) };
}

/// `eprintln!` that drops the line where stderr cannot be written instead of panicking.
#[macro_export]
macro_rules! diagln {
    () => { $crate::console::diag(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::diag(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that drops the text where stderr cannot be written instead of panicking.
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => { $crate::console::diag(format_args!($($arg)*)) };
}
