//! Whether two paths name one file: a command's outputs against the files it reads and against
//! each other (`upscale`'s `-o` and `--gif`, `forward`'s `--output` and `--json`, `bench`'s
//! `--json` and `--roofline`), where writing one would destroy the other.

use std::path::Path;

/// Whether `a` and `b` name one file: by device and inode where both exist (hard and symbolic
/// links included; the canonical paths off Unix), else by folder (links resolved) and name, for
/// a file not created yet (`out.y4m` and `./out.y4m`).
pub fn one_file(a: &Path, b: &Path) -> bool {
    same_existing(a, b) || same_place(a, b)
}

fn same_existing(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if (x.dev(), x.ino()) == (y.dev(), y.ino()))
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

fn same_place(a: &Path, b: &Path) -> bool {
    let place = |p: &Path| {
        let folder = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        folder.canonicalize().ok().map(|f| f.join(p.file_name().unwrap_or_default()))
    };
    a == b || place(a).is_some_and(|x| Some(x) == place(b))
}

/// Whether `file` would be written directly in `folder` (an existing folder; its file's folder
/// compared with it as [`one_file`] compares, so any spelling or link of it counts; not its
/// subfolders).
pub fn inside(file: &Path, folder: &Path) -> bool {
    let parent = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    folder.is_dir() && one_file(parent, folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file by name, by another spelling of a file not yet made, by a hard link; other
    /// names are other files; a file in a folder is inside it by any spelling of the folder.
    #[test]
    fn paths_that_name_one_file() {
        let dir = crate::testutil::scratch_dir("paths");
        let a = dir.join("a.bin");
        std::fs::write(&a, b"x").unwrap();
        assert!(one_file(&a, &a));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert!(one_file(&a, &dir.join("sub").join("..").join("a.bin")));
        assert!(one_file(&dir.join("new.bin"), &dir.join("sub").join("..").join("new.bin")));
        assert!(!one_file(&a, &dir.join("b.bin")));
        if cfg!(unix) {
            let link = dir.join("link.bin");
            let _ = std::fs::remove_file(&link);
            std::fs::hard_link(&a, &link).unwrap();
            assert!(one_file(&a, &link));
        }
        assert!(inside(&dir.join("sub").join("..").join("out.bin"), &dir) && !inside(&dir.join("sub").join("out.bin"), &dir));
    }
}
