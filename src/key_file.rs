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
//! Retiring keys after a rotation ([`retire`]) moves them below the file's
//! `[retired]` line, never out of it: serving never loads them, but
//! restoring or checking a backup made before the rotation still finds
//! them, and [`unretire`] puts them back when the store turns out to need
//! one. No keyhold command deletes a key from the file.
//!
//! Not for: reading keyrings (see `keyring`).
//!
//! Over 500 lines: about a third is the unit tests of prepend, retire and unretire, kept beside the one writer they test.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::keyring::{generate_key, KeySource, Keyring, KeyringError};

/// Why a key file could not be written. Messages say what to do; none
/// holds key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyFileError {
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
        "the key file {path} did not read back as written; do not rotate or reload: check the \
         file and the disk"
    )]
    NotPersisted { path: PathBuf },
    #[error(
        "the key file {path} would hold no active key: nothing was changed (add one with \
         `keyhold keygen --key-file {path}`)",
        path = .path.display()
    )]
    NoActiveKey { path: PathBuf },
    #[error(
        "the key file {path} holds no retired key with fingerprint {fingerprint}: nothing was \
         changed (`keyhold keyring list` shows them)",
        path = .path.display()
    )]
    NotRetired { path: PathBuf, fingerprint: String },
}

/// What [`prepend_new_key`] did: the new key's fingerprint (never the key)
/// and how many keys the file now holds.
#[derive(Debug, Clone)]
pub(crate) struct Prepended {
    pub fingerprint: String,
    pub keys: usize,
}

/// Creates the directory `path` goes in (mode 0700) when it is missing,
/// as a key file or an env file holding a key needs.
pub(crate) fn create_parent_dir(path: &Path) -> Result<(), KeyFileError> {
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
    Ok(())
}

/// Generates a key and writes it at the top of the key file at `path`
/// (created with mode 0600, and its directory with 0700, when missing).
/// Returns once the file is durable and reads back with the new key first.
pub(crate) fn prepend_new_key(path: &Path) -> Result<Prepended, KeyFileError> {
    create_parent_dir(path)?;
    let _lock = lock_dir(path)?;
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

/// The active keys of a key file's text.
fn parse(bytes: &[u8], source: KeySource) -> Result<Keyring, KeyringError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyringError::NotUtf8 {
        origin: source.clone(),
    })?;
    let (active, _) = crate::keyring::split_key_lines(text, &source)?;
    Keyring::parse_list(source, active)
}

/// The fingerprints of a key file's keys: active (newest first), then
/// retired. Never the keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listed {
    pub active: Vec<String>,
    pub retired: Vec<String>,
}

/// Lists the keys of the key file at `path` by fingerprint.
pub(crate) fn list(path: &Path) -> Result<Listed, KeyFileError> {
    let (text, _) = read_existing(path)?;
    listed(&text, path)
}

fn listed(text: &str, path: &Path) -> Result<Listed, KeyFileError> {
    let source = KeySource::File(path.to_path_buf());
    let malformed = |error| KeyFileError::Malformed {
        path: path.to_path_buf(),
        error,
    };
    let (active, retired) = crate::keyring::split_key_lines(text, &source).map_err(malformed)?;
    let fingerprints = |keys: Vec<&str>| -> Result<Vec<String>, KeyFileError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(Keyring::parse_list(source.clone(), keys)
            .map_err(malformed)?
            .fingerprints())
    };
    Ok(Listed {
        active: fingerprints(active)?,
        retired: fingerprints(retired)?,
    })
}

/// An exclusive lock on the key file's directory, held while a change to
/// the file is read, made and renamed into place: two keyhold commands
/// changing one key file (a `keygen --key-file` during a `keyring
/// retire`) take turns instead of one losing the other's key.
fn lock_dir(path: &Path) -> Result<std::fs::File, KeyFileError> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let err = |error| KeyFileError::Write {
        path: path.to_path_buf(),
        error,
    };
    let handle = std::fs::File::open(&dir).map_err(err)?;
    rustix::fs::flock(&handle, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| err(e.into()))?;
    Ok(handle)
}

/// A file's owner, group and mode bits.
type Ownership = (u32, u32, u32);

/// Reads a key file that must exist, as text, with its owner, group and
/// mode.
fn read_existing(path: &Path) -> Result<(Zeroizing<String>, Ownership), KeyFileError> {
    let read_err = |error| KeyFileError::Read {
        path: path.to_path_buf(),
        error,
    };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(read_err)?);
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let text = std::str::from_utf8(&bytes)
        .map(str::to_string)
        .map_err(|_| KeyFileError::Malformed {
            path: path.to_path_buf(),
            error: KeyringError::NotUtf8 {
                origin: KeySource::File(path.to_path_buf()),
            },
        })?;
    Ok((
        Zeroizing::new(text),
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
    ))
}

/// Moves keys between the sections of the key file at `path`: `moves`
/// says, for each key line (active first, then retired, with its
/// fingerprint), whether it goes to the retired section (`true`) or the
/// active one. Comments stay where they were; within each section keys
/// keep their order, moved ones going first among the retired (they are
/// newer than those retired before) and last among the active (older
/// than the active ones). Written durably, read back.
fn rewrite_sections(
    path: &Path,
    moves: impl Fn(&Listed, bool, &str) -> bool,
) -> Result<Listed, KeyFileError> {
    let _lock = lock_dir(path)?;
    let (text, meta) = read_existing(path)?;
    let before = listed(&text, path)?;
    let source = KeySource::File(path.to_path_buf());
    let fingerprint_of = |line: &str| -> Result<String, KeyFileError> {
        Ok(Keyring::parse_list(source.clone(), [line])
            .map_err(|error| KeyFileError::Malformed {
                path: path.to_path_buf(),
                error,
            })?
            .fingerprints()
            .remove(0))
    };
    // Checked whole first: nothing is rewritten from a file that does not
    // parse.
    listed(&text, path)?;
    let (mut head, mut active, mut to_retired, mut retired, mut to_active) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut in_retired = false;
    for line in text.lines() {
        let t = line.trim();
        if t == crate::keyring::RETIRED_MARKER {
            in_retired = true;
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            if in_retired { &mut retired } else { &mut head }.push(line);
            continue;
        }
        let retire = moves(&before, in_retired, &fingerprint_of(t)?);
        match (in_retired, retire) {
            (false, false) => active.push(line),
            (false, true) => to_retired.push(line),
            (true, true) => retired.push(line),
            (true, false) => to_active.push(line),
        }
    }
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 16));
    // Comments before the first key stay at the top; the active keys
    // follow (those put back last).
    let mut lines: Vec<&str> = Vec::new();
    lines.extend(head);
    lines.extend(active);
    lines.extend(to_active);
    let retired_section: Vec<&str> = to_retired.into_iter().chain(retired).collect();
    if retired_section
        .iter()
        .any(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
    {
        lines.push(crate::keyring::RETIRED_MARKER);
        lines.extend(retired_section);
    }
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    let after = listed(&out, path)?;
    if after.active.is_empty() {
        return Err(KeyFileError::NoActiveKey {
            path: path.to_path_buf(),
        });
    }
    if after == before {
        return Ok(after);
    }
    write_durably(path, out.as_bytes(), Some(meta))?;
    let (back, _) = read_existing(path)?;
    let back = listed(&back, path)?;
    if back != after {
        return Err(KeyFileError::NotPersisted {
            path: path.to_path_buf(),
        });
    }
    Ok(back)
}

/// Retires every active key of the key file but the newest: they move
/// below its `[retired]` line (created if missing), where serving never
/// reads them and restoring a backup still does.
pub(crate) fn retire(path: &Path) -> Result<Listed, KeyFileError> {
    // The newest key as read under the lock: a key prepended meanwhile is
    // kept, not retired.
    rewrite_sections(path, |before, in_retired, fp| {
        in_retired || Some(fp) != before.active.first().map(String::as_str)
    })
}

/// Puts retired keys back among the active ones (after them, as older
/// keys): those with the given fingerprints, or all when none is given.
/// Fingerprints the file does not hold as retired are refused.
pub(crate) fn unretire(path: &Path, fingerprints: &[String]) -> Result<Listed, KeyFileError> {
    let now = list(path)?;
    if let Some(unknown) = fingerprints.iter().find(|f| !now.retired.contains(f)) {
        return Err(KeyFileError::NotRetired {
            path: path.to_path_buf(),
            fingerprint: unknown.clone(),
        });
    }
    rewrite_sections(path, |_, in_retired, fp| {
        in_retired && !(fingerprints.is_empty() || fingerprints.iter().any(|f| f == fp))
    })
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

    #[test]
    fn retiring_moves_keys_below_the_marker_and_unretiring_puts_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fernet.keys");
        let oldest = prepend_new_key(&path).unwrap().fingerprint;
        let old = prepend_new_key(&path).unwrap().fingerprint;
        let new = prepend_new_key(&path).unwrap().fingerprint;
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "# keyhold keys\n");
        std::fs::write(&path, &text).unwrap();
        let after = retire(&path).unwrap();
        assert_eq!(after.active, vec![new.clone()]);
        assert_eq!(after.retired, vec![old.clone(), oldest.clone()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# keyhold keys\n"), "{text}");
        assert!(text.contains("\n[retired]\n"), "{text}");
        // Serving reads the active section only.
        let ring = parse(text.as_bytes(), KeySource::Ephemeral).unwrap();
        assert_eq!(ring.fingerprints(), vec![new.clone()]);
        // Retiring again changes nothing; a new key then retires the last.
        assert_eq!(retire(&path).unwrap(), after);
        let newer = prepend_new_key(&path).unwrap().fingerprint;
        let after = retire(&path).unwrap();
        assert_eq!(after.active, vec![newer.clone()]);
        assert_eq!(
            after.retired,
            vec![new.clone(), old.clone(), oldest.clone()]
        );
        // One back, by fingerprint; an unknown one is refused.
        let back = unretire(&path, std::slice::from_ref(&old)).unwrap();
        assert_eq!(back.active, vec![newer.clone(), old.clone()]);
        assert_eq!(back.retired, vec![new.clone(), oldest.clone()]);
        assert!(matches!(
            unretire(&path, &["nope".to_string()]),
            Err(KeyFileError::NotRetired { .. })
        ));
        // All back: no retired section is left.
        let back = unretire(&path, &[]).unwrap();
        assert_eq!(back.retired, Vec::<String>::new());
        assert_eq!(back.active.len(), 4);
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains("[retired]"));
    }

    #[test]
    fn a_file_with_two_retired_sections_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fernet.keys");
        prepend_new_key(&path).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("[retired]\n[retired]\n");
        std::fs::write(&path, &text).unwrap();
        assert!(matches!(retire(&path), Err(KeyFileError::Malformed { .. })));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
