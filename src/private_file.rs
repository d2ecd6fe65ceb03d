//! A file written beside its final path and moved into place when whole:
//! never a half file under the final name, and always mode 0600 (the
//! owner's alone), whatever the umask and whatever was at the path
//! before.
//!
//! The temporary file is made new (`O_CREAT | O_EXCL`, which fails on
//! anything already there, a symbolic link included) under a random name
//! in the same directory, so nobody who can write that directory can
//! point it at another file; if the work fails, or the value is dropped
//! unfinished, it is removed.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file being written for `path`.
#[derive(Debug)]
pub(crate) struct PendingFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl PendingFile {
    /// Creates `FILE.partial-RANDOM` beside `path`, mode 0600.
    pub(crate) fn create(path: &Path) -> io::Result<PendingFile> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        })?;
        let mut tmp_name = name.to_owned();
        let random = uuid::Uuid::new_v4().simple().to_string();
        tmp_name.push(format!(".partial-{}", &random[..12]));
        let tmp = path.with_file_name(tmp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(PendingFile {
            file,
            tmp,
            path: path.to_path_buf(),
            done: false,
        })
    }

    /// The file to write into.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes the file to disk, moves it over `path` (replacing what was
    /// there) and flushes the directory.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        self.done = true;
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from("."),
        };
        File::open(dir)?.sync_all()
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// How many entries `dir` holds.
    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_committed_file_replaces_the_old_one_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.backup");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut p = PendingFile::create(&path).unwrap();
        p.file().write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        p.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(entries(dir.path()), 1);
    }

    #[test]
    fn an_unfinished_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.backup");
        let mut p = PendingFile::create(&path).unwrap();
        p.file().write_all(b"half").unwrap();
        drop(p);
        assert_eq!(entries(dir.path()), 0);
    }
}
