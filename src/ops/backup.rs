//! Backup and restore: one consistent snapshot of every tree (ciphertext,
//! hashed tokens, audit log, meta) in a versioned, checksummed stream.
//!
//! Format v1 (all integers big-endian):
//!
//! ```text
//! header   "KEYHOLD-BACKUP\n"  version:u32  schema:u32  created_at_us:i64
//! entry    0x01  tree:u8  key_len:u32  key  value_len:u32  value     (repeated)
//! trailer  0x02  entries:u64  sha256(everything before these 32 bytes)
//! ```
//!
//! Nothing in it is a secret in clear: the trees hold Fernet tokens,
//! SHA-256 digests of access tokens and the Fernet-encrypted MAC key.
//! Restore reads into a fresh directory beside the target and moves it
//! into place only once the whole stream checked out.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, META_KEY_COUNT, SCHEMA_VERSION};

const MAGIC: &[u8] = b"KEYHOLD-BACKUP\n";
/// The backup format this binary writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;
const ENTRY: u8 = 1;
const TRAILER: u8 = 2;
/// Tree ids, in the order they are written. Only ever appended.
const TREES: [&str; 6] = [
    "meta",
    "tokens",
    "keys",
    "by_provider",
    "key_usage",
    "audit",
];
/// Largest key or value a backup may hold (sled values here are small).
const MAX_FIELD: u32 = 16 * 1024 * 1024;

/// Why a backup could not be written or read. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read or write the backup: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this is not a keyhold backup (no KEYHOLD-BACKUP header)")]
    NotABackup,
    #[error(
        "the backup was made by a newer keyhold (format {format}, schema {schema}; this binary \
         reads format {FORMAT_VERSION}, schema {SCHEMA_VERSION}): restore it with that version"
    )]
    Newer { format: u32, schema: u32 },
    #[error("the backup is truncated: it ends before its checksum; make a new backup")]
    Truncated,
    #[error("the backup is corrupt: {0}; make a new backup, or use an older intact copy")]
    Corrupt(String),
    #[error("the target directory {0} is not empty: restore into a new or empty directory")]
    NotEmpty(PathBuf),
}

/// Writes every tree of `store` to `out`. The caller keeps writes out
/// while this runs (offline: sled's lock; online: the audit writer is
/// paused) so the snapshot is consistent. Returns the entry count.
pub fn write_backup(store: &Store, out: impl Write) -> Result<u64, BackupError> {
    let mut w = HashingWriter {
        inner: std::io::BufWriter::with_capacity(256 * 1024, out),
        hash: Sha256::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_be_bytes())?;
    w.write_all(&SCHEMA_VERSION.to_be_bytes())?;
    w.write_all(&crate::time::now_us().to_be_bytes())?;
    let mut count = 0u64;
    for (id, name) in TREES.iter().enumerate() {
        for item in store.tree(name)?.iter() {
            let (k, v) = item.map_err(StoreError::from)?;
            w.write_all(&[ENTRY, id as u8])?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            count += 1;
        }
    }
    w.write_all(&[TRAILER])?;
    w.write_all(&count.to_be_bytes())?;
    let digest = w.hash.clone().finalize();
    w.inner.write_all(&digest)?;
    w.inner.flush()?;
    Ok(count)
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Reads exactly `buf.len()` bytes, or reports truncation.
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.hash.update(&*buf);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(BackupError::Truncated),
            Err(e) => Err(e.into()),
        }
    }

    fn u8(&mut self) -> Result<u8, BackupError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, BackupError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, BackupError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn field(&mut self) -> Result<Vec<u8>, BackupError> {
        let len = self.u32()?;
        if len > MAX_FIELD {
            return Err(BackupError::Corrupt(format!("a field claims {len} bytes")));
        }
        let mut v = vec![0u8; len as usize];
        self.exact(&mut v)?;
        Ok(v)
    }
}

/// What a backup stream holds, checked end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub format: u32,
    pub schema: u32,
    pub created_at_us: i64,
    pub entries: u64,
}

/// Reads a backup, handing each entry to `sink(tree, key, value)`. Fails
/// on anything but a complete, intact stream of a format and schema this
/// binary knows. Entries handed over before a failure must be discarded by
/// the caller.
pub fn read_backup(
    input: impl Read,
    mut sink: impl FnMut(&str, Vec<u8>, Vec<u8>) -> Result<(), BackupError>,
) -> Result<BackupInfo, BackupError> {
    let mut r = HashingReader {
        inner: std::io::BufReader::with_capacity(256 * 1024, input),
        hash: Sha256::new(),
    };
    let mut magic = [0u8; 15];
    match r.exact(&mut magic) {
        Ok(()) if magic == MAGIC => {}
        Ok(()) | Err(BackupError::Truncated) => return Err(BackupError::NotABackup),
        Err(e) => return Err(e),
    }
    let format = r.u32()?;
    let schema = r.u32()?;
    if format > FORMAT_VERSION || schema > SCHEMA_VERSION {
        return Err(BackupError::Newer { format, schema });
    }
    if format == 0 {
        return Err(BackupError::Corrupt("format version 0".into()));
    }
    let created_at_us = r.u64()? as i64;
    let mut entries = 0u64;
    loop {
        match r.u8()? {
            ENTRY => {
                let tree = r.u8()? as usize;
                let name = TREES
                    .get(tree)
                    .ok_or_else(|| BackupError::Corrupt(format!("unknown tree {tree}")))?;
                let k = r.field()?;
                let v = r.field()?;
                sink(name, k, v)?;
                entries += 1;
            }
            TRAILER => {
                let count = r.u64()?;
                let want = r.hash.clone().finalize();
                let mut got = [0u8; 32];
                match r.inner.read_exact(&mut got) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(BackupError::Truncated)
                    }
                    Err(e) => return Err(e.into()),
                }
                if !crate::access::digests_equal(&got, &want.into()) {
                    return Err(BackupError::Corrupt("the checksum does not match".into()));
                }
                if count != entries {
                    return Err(BackupError::Corrupt(format!(
                        "{entries} entries, the trailer says {count}"
                    )));
                }
                let mut rest = [0u8; 1];
                if r.inner.read(&mut rest)? != 0 {
                    return Err(BackupError::Corrupt("bytes after the checksum".into()));
                }
                return Ok(BackupInfo {
                    format,
                    schema,
                    created_at_us,
                    entries,
                });
            }
            other => {
                return Err(BackupError::Corrupt(format!("unknown record kind {other}")));
            }
        }
    }
}

/// Restores a backup into `target`, which must not exist or be empty.
/// Writes into a sibling directory first and moves it into place only once
/// the whole stream checked out; on failure nothing is left behind.
pub fn restore(input: impl Read, target: &Path) -> Result<BackupInfo, BackupError> {
    if let Ok(mut entries) = std::fs::read_dir(target) {
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(target.to_path_buf()));
        }
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        ".{}.restore-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into()),
        uuid::Uuid::new_v4()
    ));
    let result = (|| {
        let store = Store::open(&staging)?;
        let mut trees = Vec::new();
        for name in TREES {
            trees.push((name, store.tree(name)?));
        }
        let info = read_backup(input, |name, k, v| {
            // An online backup reads the trees one after another, so its
            // key count may be off by the keys created meanwhile: the
            // restored store counts its keys when first opened.
            if name == "meta" && k == META_KEY_COUNT {
                return Ok(());
            }
            if let Some((_, t)) = trees.iter().find(|(n, _)| *n == name) {
                t.insert(k, v).map_err(StoreError::from)?;
            }
            Ok(())
        })?;
        store.flush()?;
        drop(trees);
        // The check that follows opens the store at its new path.
        store.close()?;
        Ok(info)
    })();
    match result {
        Ok(info) => {
            // An empty target directory is replaced by the staged one.
            if target.exists() {
                std::fs::remove_dir(target)?;
            }
            std::fs::rename(&staging, target)?;
            Ok(info)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyRecord, Write};

    #[test]
    fn a_restored_store_counts_its_keys_instead_of_trusting_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a")).unwrap();
        store.initialise("check", "audit-key").unwrap();
        let keys: Vec<Write> = (0..3)
            .map(|i| {
                Write::PutKey(KeyRecord {
                    id: uuid::Uuid::new_v4(),
                    provider: "claude".into(),
                    key_name: format!("k{i}"),
                    token: "gAAAA-not-a-real-token".into(),
                    created_at_us: i,
                    expires_at_us: None,
                })
            })
            .collect();
        store.commit(&[], b"h", &keys).unwrap();
        // An online backup can read the count before keys created while it
        // runs: make the backed-up count disagree with the keys.
        store
            .tree("meta")
            .unwrap()
            .insert(META_KEY_COUNT, &1u64.to_be_bytes())
            .unwrap();
        let mut backup = Vec::new();
        write_backup(&store, &mut backup).unwrap();
        drop(store);
        let target = dir.path().join("b");
        restore(backup.as_slice(), &target).unwrap();
        assert_eq!(Store::open(&target).unwrap().key_count(), 3);
    }
}
