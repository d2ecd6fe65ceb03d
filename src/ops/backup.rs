//! Backup and restore: one consistent snapshot of every tree (ciphertext,
//! token records, audit log, meta) in a versioned, authenticated stream.
//!
//! Format 2 (all integers big-endian):
//!
//! ```text
//! header   "KEYHOLD-BACKUP\n"  version:u32  schema:u32  created_at_us:i64
//! entry    0x01  tree:u8  key_len:u32  key  value_len:u32  value     (repeated)
//! trailer  0x02  entries:u64  mac(everything before these 32 bytes)
//! ```
//!
//! The MAC is HMAC-SHA256 under the backup key derived from the newest key
//! of the keyring (`Keyring::backup_mac_keys`), so nobody without the
//! keyring can edit a backup and make it restore. Format 1 (from before
//! schema 3) ended in a plain SHA-256 that anyone can recompute: it is
//! restored only when the operator says so (`--allow-unauthenticated`).
//!
//! Nothing in it is a secret in clear: the trees hold Fernet tokens,
//! keyed digests of access tokens and sealed secrets. Restore checks the
//! whole stream first and writes nothing unless it is intact; it then
//! reads it again into a fresh directory beside the target and moves that
//! into place.
//!
//! Over 500 lines: one format, its writer, its reader (with what a format-1
//! file may hold) and restore, plus their unit tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::keyring::Keyring;
use crate::store::{Store, StoreError, META_KEY_COUNT, SCHEMA_VERSION};

/// How every backup begins.
pub(crate) const MAGIC: &[u8] = b"KEYHOLD-BACKUP\n";
/// The backup format this binary writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 2;
const ENTRY: u8 = 1;
const TRAILER: u8 = 2;
/// Tree ids, in the order they are written: the store's tables.
const TREES: [&str; 7] = crate::store::TABLES;
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
    #[error(
        "the backup's MAC does not match under any key of the keyring: it was edited, or it was \
         made under another Fernet key (set that key, or FERNET_KEYS=new,old). Nothing was written"
    )]
    NotAuthentic,
    #[error(
        "this backup was made by an older keyhold (format 1): it carries only a plain checksum, \
         which anyone who edits it can recompute. Restore it only if you know it is intact, with \
         --allow-unauthenticated, and make a new backup right after. Nothing was written"
    )]
    Unauthenticated,
    #[error("the target directory {0} is not empty: restore into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error(
        "this backup says format 1 (no MAC, written before schema 3) but {0}, which only a newer \
         keyhold writes: it is a newer backup re-wrapped to skip its MAC, and is refused. Nothing \
         was written; restore an authenticated backup instead"
    )]
    Rewrapped(String),
}

/// Refuses an entry of a format-1 backup that no keyhold writing format 1
/// (schema 1 or 2) could have written: the header of an unauthenticated
/// backup is not trusted, its contents must match it.
fn format_1_entry(name: &str, k: &[u8], v: &[u8]) -> Result<(), BackupError> {
    use crate::store::{KeyRecord, TokenRecord};
    let re = |why: String| Err(BackupError::Rewrapped(why));
    match name {
        "meta" => match k {
            b"schema_version" => match postcard::from_bytes::<u32>(v) {
                Ok(s) if s <= 2 => Ok(()),
                Ok(s) => re(format!("its store is marked schema {s}")),
                Err(_) => re("its schema mark does not decode".into()),
            },
            b"keyring_check" | b"audit_mac_key" | b"key_count" => Ok(()),
            b"audit_head" => match crate::audit::Head::decode(v) {
                Ok(crate::audit::Head::V1 { .. }) => Ok(()),
                _ => re("its audit chain head is signed".into()),
            },
            other => re(format!(
                "it holds the meta value `{}`",
                String::from_utf8_lossy(other).escape_debug()
            )),
        },
        "tokens" if !TokenRecord::is_legacy(v) => re("it holds authenticated token records".into()),
        "keys" if !KeyRecord::is_legacy(v) => re("it holds authenticated key records".into()),
        "token_usage" => re("it holds token last-use records".into()),
        "audit" => {
            let seq = k
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| BackupError::Corrupt("an audit entry's key is not a seq".into()))?;
            for (_, bytes) in crate::store::audit_chunks::Entries::new(seq, v.to_vec()) {
                if crate::audit::AuditRecord::decode(&bytes).is_ok_and(|r| r.is_v2()) {
                    return re("its audit log holds signed records".into());
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Writes every tree of `store` to `out`, authenticated under the
/// keyring's newest backup key. The caller keeps this process's writes out
/// while this runs (offline: sled's lock; online: the audit writer is
/// paused); on a database several nodes share, every node's appends are
/// held back too (`Store::lock_appends`), so the snapshot is one state and
/// its chain head vouches for its records. Returns the entry count. Call
/// it from a thread that may block.
pub(crate) fn write_backup(
    store: &Store,
    keyring: &Keyring,
    out: impl Write,
) -> Result<u64, BackupError> {
    let _appends_held = store.lock_appends()?;
    let newest = keyring
        .backup_mac_keys()
        .next()
        .ok_or_else(|| BackupError::Corrupt("the keyring holds no key".into()))?;
    let mut w = HashingWriter {
        inner: std::io::BufWriter::with_capacity(256 * 1024, out),
        hash: Digests::Mac(vec![hmac_of(newest)]),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_be_bytes())?;
    w.write_all(&SCHEMA_VERSION.to_be_bytes())?;
    w.write_all(&crate::time::now_us().to_be_bytes())?;
    let mut count = 0u64;
    for (id, name) in TREES.iter().enumerate() {
        for item in store.entries(name) {
            let (k, v) = item?;
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
    let digest = w.hash.finish().into_iter().next().unwrap_or([0; 32]);
    w.inner.write_all(&digest)?;
    w.inner.flush()?;
    Ok(count)
}

fn hmac_of(key: &[u8; 32]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// What a backup's trailer is checked against: a plain SHA-256 (format 1)
/// or one HMAC per key of the keyring (format 2).
enum Digests {
    Plain(Sha256),
    Mac(Vec<Hmac<Sha256>>),
}

impl Digests {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Digests::Plain(h) => h.update(bytes),
            Digests::Mac(ms) => ms.iter_mut().for_each(|m| m.update(bytes)),
        }
    }

    /// Every candidate value of the trailer.
    fn finish(&self) -> Vec<[u8; 32]> {
        match self {
            Digests::Plain(h) => vec![h.clone().finalize().into()],
            Digests::Mac(ms) => ms
                .iter()
                .map(|m| m.clone().finalize().into_bytes().into())
                .collect(),
        }
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Digests,
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
    hash: Digests,
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
    /// Which key of the keyring authenticated it (as in the keyring's
    /// fingerprints; `None` for an unauthenticated format 1 backup).
    pub key_index: Option<usize>,
}

/// Reads a backup, handing each entry to `sink(tree, key, value)`. Fails
/// on anything but a complete, intact stream of a format and schema this
/// binary knows, authenticated under a key of `keyring` (format 1 only
/// with `allow_unauthenticated`). Entries handed over before a failure
/// must be discarded by the caller: [`restore`] reads a backup through
/// once with no sink before it writes anything.
pub fn read_backup(
    input: impl Read,
    keyring: &Keyring,
    allow_unauthenticated: bool,
    mut sink: impl FnMut(&str, Vec<u8>, Vec<u8>) -> Result<(), BackupError>,
) -> Result<BackupInfo, BackupError> {
    let mut r = HashingReader {
        inner: std::io::BufReader::with_capacity(256 * 1024, input),
        hash: Digests::Plain(Sha256::new()),
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
    if format == 1 && !allow_unauthenticated {
        return Err(BackupError::Unauthenticated);
    }
    // Format 1 was written only by keyholds before schema 3: one that says
    // schema 3 is a newer backup re-wrapped to skip its MAC.
    if format == 1 && schema >= 3 {
        return Err(BackupError::Corrupt(
            "it says format 1 (no MAC) but schema 3, which only format 2 backups hold: it was \
             re-wrapped to skip its MAC"
                .into(),
        ));
    }
    if format >= 2 {
        // The MAC covers the whole stream from its first byte.
        let mut ms: Vec<Hmac<Sha256>> = keyring.backup_mac_keys().map(hmac_of).collect();
        for m in &mut ms {
            m.update(MAGIC);
            m.update(&format.to_be_bytes());
            m.update(&schema.to_be_bytes());
        }
        r.hash = Digests::Mac(ms);
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
                if format == 1 {
                    format_1_entry(name, &k, &v)?;
                }
                sink(name, k, v)?;
                entries += 1;
            }
            TRAILER => {
                let count = r.u64()?;
                let candidates = r.hash.finish();
                let mut got = [0u8; 32];
                match r.inner.read_exact(&mut got) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(BackupError::Truncated)
                    }
                    Err(e) => return Err(e.into()),
                }
                // Every candidate is compared (no early exit on a match).
                let key_index = candidates.iter().enumerate().fold(None, |found, (i, c)| {
                    let eq = crate::access::digests_equal(&got, c);
                    found.or(eq.then_some(i))
                });
                if key_index.is_none() {
                    return Err(match r.hash {
                        Digests::Plain(_) => {
                            BackupError::Corrupt("the checksum does not match".into())
                        }
                        Digests::Mac(_) => BackupError::NotAuthentic,
                    });
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
                    key_index: match r.hash {
                        Digests::Plain(_) => None,
                        Digests::Mac(_) => key_index,
                    },
                });
            }
            other => {
                return Err(BackupError::Corrupt(format!("unknown record kind {other}")));
            }
        }
    }
}

/// Restores the backup at `path` into `target`, which must not exist or
/// be empty. The whole backup is checked first (MAC under the keyring,
/// every entry) and nothing is written unless it is intact; then it is
/// read again into a sibling directory, which is moved into place. On
/// failure nothing is left behind.
pub(crate) fn restore(
    path: &Path,
    target: &Path,
    keyring: &Keyring,
    allow_unauthenticated: bool,
) -> Result<BackupInfo, BackupError> {
    if let Ok(mut entries) = std::fs::read_dir(target) {
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(target.to_path_buf()));
        }
    }
    let checked = read_backup(
        std::fs::File::open(path)?,
        keyring,
        allow_unauthenticated,
        |_, _, _| Ok(()),
    )?;
    let input = std::fs::File::open(path)?;
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
        let info = read_backup(input, keyring, allow_unauthenticated, |name, k, v| {
            // An online backup reads the trees one after another, so its
            // key count may be off by the keys created meanwhile: the
            // restored store counts its keys when first opened.
            if name == "meta" && k == META_KEY_COUNT {
                return Ok(());
            }
            store.put_entry(name, &k, &v)?;
            Ok(())
        })?;
        if info != checked {
            return Err(BackupError::Corrupt(
                "the file changed while it was being restored".into(),
            ));
        }
        store.flush()?;
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
        store.set_record_keys(crate::store::RecordKeys::from_secret(&[4u8; 32]));
        store.initialise("check", &[]).unwrap();
        let keys: Vec<Write> = (0..3)
            .map(|i| {
                Write::PutKey(KeyRecord::new(
                    uuid::Uuid::new_v4(),
                    "claude".into(),
                    format!("k{i}"),
                    "gAAAA-not-a-real-token".into(),
                    i,
                    None,
                    None,
                ))
            })
            .collect();
        store.commit_writes(&[], b"h", &keys).unwrap();
        // An online backup can read the count before keys created while it
        // runs: make the backed-up count disagree with the keys.
        store
            .put_entry("meta", META_KEY_COUNT, &1u64.to_be_bytes())
            .unwrap();
        let ring = Keyring::ephemeral();
        let path = dir.path().join("backup");
        write_backup(&store, &ring, std::fs::File::create(&path).unwrap()).unwrap();
        drop(store);
        let target = dir.path().join("b");
        restore(&path, &target, &ring, false).unwrap();
        assert_eq!(Store::open(&target).unwrap().key_count(), 3);
    }

    #[test]
    fn an_edited_backup_with_its_checksum_recomputed_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a")).unwrap();
        store.set_record_keys(crate::store::RecordKeys::from_secret(&[4u8; 32]));
        store.initialise("check", &[]).unwrap();
        let ring = Keyring::ephemeral();
        let mut backup = Vec::new();
        write_backup(&store, &ring, &mut backup).unwrap();
        drop(store);
        // Flip a byte in the body and recompute a plain SHA-256 trailer,
        // as someone without the keyring can.
        let n = backup.len();
        let at = backup
            .windows(5)
            .position(|w| w == b"check")
            .expect("the check value is in the backup");
        backup[at] ^= 1;
        let digest: [u8; 32] = Sha256::digest(&backup[..n - 32]).into();
        backup[n - 32..].copy_from_slice(&digest);
        let path = dir.path().join("edited");
        std::fs::write(&path, &backup).unwrap();
        let target = dir.path().join("b");
        let err = restore(&path, &target, &ring, false).unwrap_err();
        assert!(matches!(err, BackupError::NotAuthentic), "{err}");
        // Nothing was written beside the target either.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !left.iter().any(|n| n.contains("restore") || n == "b"),
            "{left:?}"
        );
        // The wrong key is refused the same way.
        let mut intact = Vec::new();
        let store = Store::open(&dir.path().join("a")).unwrap();
        store.set_record_keys(crate::store::RecordKeys::from_secret(&[4u8; 32]));
        write_backup(&store, &ring, &mut intact).unwrap();
        std::fs::write(&path, &intact).unwrap();
        let err = restore(&path, &target, &Keyring::ephemeral(), false).unwrap_err();
        assert!(matches!(err, BackupError::NotAuthentic), "{err}");
        assert!(!target.exists());
    }
}
