//! The files a job writes (`-o`, `--gif`), opened before the models load, so that a path the
//! job cannot write (a read-only folder) fails at once, not after minutes of loading. A file is
//! emptied only when the job starts writing it, and a file this run created is removed again
//! where the job ends without writing a frame to it (a failure, a stop), so no header-only stub
//! is left behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct OutFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// This run created the file (it did not exist): removed again unless kept.
    created: bool,
    kept: bool,
}

impl OutFile {
    /// Opens `path` for writing (`flag` names it in errors), creating it where it does not exist;
    /// an existing file keeps its bytes until [`OutFile::start`].
    pub fn open(flag: &str, path: &Path) -> Result<OutFile> {
        let created = std::fs::symlink_metadata(path).is_err();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("{flag} {}: cannot write it", path.display()))?;
        Ok(OutFile { path: path.to_path_buf(), file: Some(file), created, kept: false })
    }

    /// The file, emptied where it is a regular one (a device or a named pipe is written as is).
    pub fn start(&mut self) -> Result<std::fs::File> {
        let file = self.file.take().context("internal: an output file started twice")?;
        if file.metadata().is_ok_and(|m| m.is_file()) {
            file.set_len(0).with_context(|| format!("emptying {}", self.path.display()))?;
        }
        Ok(file)
    }

    /// The job wrote to it (or ended well): it stays.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.created && !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutFile;

    #[test]
    fn a_file_is_emptied_when_started_and_removed_unless_kept() {
        use std::io::Write;
        let dir = crate::testutil::scratch_dir("out-file");
        // An existing file keeps its bytes until the job starts it.
        let old = dir.join("old.y4m");
        std::fs::write(&old, b"precious").unwrap();
        drop(OutFile::open("-o", &old).unwrap());
        assert_eq!(std::fs::read(&old).unwrap(), b"precious");
        let mut o = OutFile::open("-o", &old).unwrap();
        o.start().unwrap().write_all(b"new").unwrap();
        drop(o);
        assert_eq!(std::fs::read(&old).unwrap(), b"new", "an existing file is not removed");
        // A file this run created goes again unless kept.
        let new = dir.join("new.y4m");
        let mut o = OutFile::open("-o", &new).unwrap();
        o.start().unwrap().write_all(b"YUV4MPEG2").unwrap();
        drop(o);
        assert!(!new.exists(), "a created file not kept is removed");
        let mut o = OutFile::open("-o", &new).unwrap();
        o.start().unwrap();
        o.keep();
        drop(o);
        assert!(new.exists());
        // A folder that cannot be written is refused at open, naming the flag.
        let e = OutFile::open("--gif", &dir.join("no-such-folder/p.gif")).err().unwrap();
        assert!(format!("{e:#}").contains("--gif"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
