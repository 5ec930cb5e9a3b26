//! The files a job writes (`-o`, `--gif`), opened before the models load, so that a path the
//! job cannot write (a read-only folder) fails at once, not after minutes of loading. A file is
//! emptied only when the first byte reaches it, and a job that ends without writing a frame (a
//! failure, a stop) abandons its files: what their writers still hold (a header) is dropped, an
//! existing file keeps its bytes, and one this run created is removed, so no header-only stub
//! is left behind. A job that fails after whole frames keeps them, its file cut back to them
//! where a failed write (a full disk) left part of the next ([`OutFile::cut_back`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Files this run created that hold no frame yet: what a forced exit removes
/// ([`remove_unfinished`]), as an orderly end removes them (a second stop signal ends the
/// process at once, without the files' drops).
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A frame is written: the files this run created are output now, whatever comes.
pub fn frame_written() {
    UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Removes the files this run created that hold no frame (before a forced exit).
pub fn remove_unfinished() {
    for p in UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

use anyhow::{Context, Result};

pub struct OutFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// This run created the file (it did not exist): removed again unless kept.
    created: bool,
    kept: bool,
    /// Set by [`OutFile::abandon`]; the writer from [`OutFile::start`] then writes nothing.
    abandoned: Arc<AtomicBool>,
    /// Set by the writer as it empties a regular file for the first byte.
    touched: Arc<AtomicBool>,
}

impl OutFile {
    /// Opens `path` for writing (`flag` names it in errors), creating it where it does not exist;
    /// an existing file keeps its bytes until the first is written.
    pub fn open(flag: &str, path: &Path) -> Result<OutFile> {
        let created = std::fs::symlink_metadata(path).is_err();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("{flag} {}: cannot write it", path.display()))?;
        if created {
            UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
        }
        Ok(OutFile { path: path.to_path_buf(), file: Some(file), created, kept: false, abandoned: Default::default(), touched: Default::default() })
    }

    /// The writer of the job's bytes: it empties the file (a regular one; a device or a named
    /// pipe is written as is) as the first byte comes.
    pub fn start(&mut self) -> Result<Deferred> {
        let file = self.file.take().context("internal: an output file started twice")?;
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        Ok(Deferred { file, emptied: !regular, abandoned: self.abandoned.clone(), touched: self.touched.clone() })
    }

    /// The job wrote a frame to it, or ended well (a stream of a header only): it stays.
    pub fn keep(&mut self) {
        self.kept = true;
    }

    /// Cuts a regular file back to `len` bytes where it is longer: after a job that failed
    /// having written whole frames (`len`: the header and those frames), the part of a frame a
    /// failed write (a full disk) may have left goes, so the file stays a valid stream that
    /// `--frames` parts join to. Call it once the writer has been dropped (its buffer flushed or
    /// failed). Returns whether the path is a regular file, now of at most `len` bytes; a device
    /// or a named pipe is not even opened (one whose reader has gone would block).
    pub fn cut_back(&self, len: u64) -> Result<bool> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_file() && m.len() > len => {}
            Ok(m) => return Ok(m.is_file()),
            Err(_) => return Ok(false),
        }
        let file = std::fs::OpenOptions::new().write(true).open(&self.path).with_context(|| format!("reopening {} to cut its last, partial frame", self.path.display()))?;
        file.set_len(len).with_context(|| format!("cutting {} back to its whole frames ({len} bytes)", self.path.display()))?;
        Ok(true)
    }

    /// The job ends without a frame: its writer drops what it is given from now on (the header
    /// its buffers still hold), and a file this run created goes when this is dropped. One that
    /// existed and was already written to (the first frame failed part way: a full disk) is
    /// emptied rather than left holding part of a stream.
    pub fn abandon(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        if self.touched.load(Ordering::Relaxed) && !self.created {
            if let Err(e) = self.cut_back(0) {
                log::warn!("{e:#}");
            }
        }
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.created && !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
        UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != &self.path);
    }
}

/// An [`OutFile`]'s writer: empties the file at the first byte, drops everything once abandoned.
pub struct Deferred {
    file: std::fs::File,
    emptied: bool,
    abandoned: Arc<AtomicBool>,
    touched: Arc<AtomicBool>,
}

impl Write for Deferred {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        if !self.emptied {
            self.file.set_len(0)?;
            self.emptied = true;
            self.touched.store(true, Ordering::Relaxed);
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::OutFile;
    use std::io::Write;

    /// The files created are listed process-wide: the tests that create some run one at a time
    /// (a `remove_unfinished` would take another test's file).
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A forced exit (a second stop signal, no drops) removes the files this run created while
    /// they hold no frame, and none once a frame is written; an existing file is never removed.
    #[test]
    fn a_forced_exit_removes_created_files_without_a_frame() {
        let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = crate::testutil::scratch_dir("out-file-forced");
        let (header_only, old) = (dir.join("header-only.y4m"), dir.join("old.y4m"));
        std::fs::write(&old, b"precious bytes").unwrap();
        let mut a = OutFile::open("-o", &header_only).unwrap();
        a.start().unwrap().write_all(b"YUV4MPEG2").unwrap();
        let b = OutFile::open("--gif", &old).unwrap();
        super::remove_unfinished();
        assert!(!header_only.exists() && old.exists());
        drop((a, b));
        let framed = dir.join("framed.y4m");
        let mut c = OutFile::open("-o", &framed).unwrap();
        c.start().unwrap().write_all(b"YUV4MPEG2 W1 H1\nFRAME\n").unwrap();
        super::frame_written();
        super::remove_unfinished();
        assert!(framed.exists());
        c.keep();
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_emptied_at_its_first_byte_and_left_as_it_was_when_abandoned() {
        let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = crate::testutil::scratch_dir("out-file");
        // An existing file keeps its bytes until the first is written.
        let old = dir.join("old.y4m");
        std::fs::write(&old, b"precious bytes").unwrap();
        let mut o = OutFile::open("-o", &old).unwrap();
        drop(o.start().unwrap());
        drop(o);
        assert_eq!(std::fs::read(&old).unwrap(), b"precious bytes", "started, nothing written");
        // Abandoned with a header still buffered: nothing reaches the file.
        let mut o = OutFile::open("-o", &old).unwrap();
        let mut w = std::io::BufWriter::new(o.start().unwrap());
        w.write_all(b"YUV4MPEG2").unwrap();
        o.abandon();
        drop(w);
        drop(o);
        assert_eq!(std::fs::read(&old).unwrap(), b"precious bytes", "abandoned");
        let mut o = OutFile::open("-o", &old).unwrap();
        o.start().unwrap().write_all(b"new").unwrap();
        drop(o);
        assert_eq!(std::fs::read(&old).unwrap(), b"new", "emptied at the first byte; an existing file is not removed");
        // Written to, then abandoned (the first frame failed part way): emptied, not left
        // holding part of a stream.
        let mut o = OutFile::open("-o", &old).unwrap();
        o.start().unwrap().write_all(b"YUV4MPEG2 FRA").unwrap();
        o.abandon();
        drop(o);
        assert_eq!(std::fs::read(&old).unwrap(), b"", "a partial first frame left in an existing file");
        // A file this run created goes again unless kept.
        let new = dir.join("new.y4m");
        let mut o = OutFile::open("-o", &new).unwrap();
        o.start().unwrap().write_all(b"YUV4MPEG2").unwrap();
        drop(o);
        assert!(!new.exists(), "a created file not kept is removed");
        let mut o = OutFile::open("-o", &new).unwrap();
        o.start().unwrap().write_all(b"YUV4MPEG2").unwrap();
        o.keep();
        drop(o);
        assert_eq!(std::fs::read(&new).unwrap(), b"YUV4MPEG2");
        // A failed job's file is cut back to its whole frames; a named pipe is left alone (not
        // even opened: its reader may be gone).
        let mut o = OutFile::open("-o", &new).unwrap();
        o.start().unwrap().write_all(b"YUV4MPEG2 FRAME\nFRA").unwrap();
        o.keep();
        assert!(o.cut_back(16).unwrap());
        drop(o);
        assert_eq!(std::fs::read(&new).unwrap(), b"YUV4MPEG2 FRAME\n");
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
                let o = OutFile { path: fifo.clone(), file: None, created: false, kept: true, abandoned: Default::default(), touched: Default::default() };
                assert!(!o.cut_back(0).unwrap(), "a named pipe is no regular file");
            }
        }
        // A folder that cannot be written is refused at open, naming the flag.
        let e = OutFile::open("--gif", &dir.join("no-such-folder/p.gif")).err().unwrap();
        assert!(format!("{e:#}").contains("--gif"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
