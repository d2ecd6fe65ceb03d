//! Writing a new Fernet key into a key file (`FERNET_KEY_FILE`'s format:
//! one key a line, newest first, `#` comments), durably, before anything
//! is encrypted under it.
//!
//! The new file is written beside the old one (same owner, group and
//! mode), fsync'd, renamed over it, and the directory fsync'd; it is then
//! read back and parsed, and only a file whose newest key is the new one
//! counts as written. A rotation that starts after [`prepend_new_key`]
//! returned can therefore never leave records under a key that exists
//! nowhere but in memory.
//!
//! Not for: reading keyrings (see `keyring`).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::keyring::{generate_key, KeySource, Keyring, KeyringError};

/// Why a key file could not be written. Messages say what to do; none
/// holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "cannot create the directory {path}: {error}; create it (mode 0700) or pick another path"
    )]
    Dir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read the key file {path}: {error}; nothing was written")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the key file {path} does not parse, so no key was added to it: {error}")]
    Malformed { path: PathBuf, error: KeyringError },
    #[error(
        "cannot write the key file {path}: {error}; nothing was changed (run this as the file's \
         owner or as root)"
    )]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the key file {path} did not read back with the new key first; do not rotate: check the \
         file and the disk"
    )]
    NotPersisted { path: PathBuf },
}

/// What [`prepend_new_key`] did: the new key's fingerprint (never the key)
/// and how many keys the file now holds.
#[derive(Debug, Clone)]
pub struct Prepended {
    pub fingerprint: String,
    pub keys: usize,
}

/// Generates a key and writes it at the top of the key file at `path`
/// (created with mode 0600, and its directory with 0700, when missing).
/// Returns once the file is durable and reads back with the new key first.
pub fn prepend_new_key(path: &Path) -> Result<Prepended, KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|error| KeyFileError::Dir {
                    path: dir.to_path_buf(),
                    error,
                })?;
        }
    }
    let (existing, meta) = match std::fs::read(path) {
        Ok(b) => (
            Zeroizing::new(b),
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.uid(), m.gid(), m.mode() & 0o777)),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Zeroizing::new(Vec::new()), None),
        Err(error) => {
            return Err(KeyFileError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let source = KeySource::File(path.to_path_buf());
    if meta.is_some() && !only_comments(&existing) {
        parse(&existing, source.clone()).map_err(|error| KeyFileError::Malformed {
            path: path.to_path_buf(),
            error,
        })?;
    }
    let key = generate_key();
    let fingerprint = Keyring::parse_list(source.clone(), [key.expose()])
        .map_err(|error| KeyFileError::Malformed {
            path: path.to_path_buf(),
            error,
        })?
        .fingerprints()
        .remove(0);
    let mut text = Zeroizing::new(Vec::with_capacity(existing.len() + 45));
    text.extend_from_slice(key.expose().as_bytes());
    text.push(b'\n');
    text.extend_from_slice(&existing);
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    write_durably(path, &text, meta)?;
    // Read back what the disk holds: only that counts.
    let back = std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|error| KeyFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    let ring = parse(&back, source).map_err(|_| KeyFileError::NotPersisted {
        path: path.to_path_buf(),
    })?;
    if ring.fingerprints().first() != Some(&fingerprint) {
        return Err(KeyFileError::NotPersisted {
            path: path.to_path_buf(),
        });
    }
    Ok(Prepended {
        fingerprint,
        keys: ring.len(),
    })
}

fn only_comments(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

fn parse(bytes: &[u8], source: KeySource) -> Result<Keyring, KeyringError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyringError::NotUtf8 {
        origin: source.clone(),
    })?;
    Keyring::parse_list(
        source,
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    )
}

/// Writes `text` to a file beside `path`, with the old file's owner,
/// group and mode (or 0600), fsyncs it, renames it over `path` and
/// fsyncs the directory.
fn write_durably(
    path: &Path,
    text: &[u8],
    meta: Option<(u32, u32, u32)>,
) -> Result<(), KeyFileError> {
    let err = |error| KeyFileError::Write {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".keyhold-new-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid, mode)) = meta {
            // Keep who may read it (the service's group, say): as root the
            // owner is kept too; otherwise the file stays the caller's.
            let _ = rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from("."),
        };
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_goes_first_and_the_old_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fernet.keys");
        let first = prepend_new_key(&path).unwrap();
        assert_eq!(first.keys, 1);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let second = prepend_new_key(&path).unwrap();
        assert_eq!(second.keys, 2);
        let ring = parse(&std::fs::read(&path).unwrap(), KeySource::Ephemeral).unwrap();
        assert_eq!(
            ring.fingerprints(),
            vec![second.fingerprint, first.fingerprint]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_malformed_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fernet.keys");
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            prepend_new_key(&path),
            Err(KeyFileError::Malformed { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }
}
