//! The Fernet keyring: where keys come from, and encrypt/decrypt/re-encrypt.
//!
//! Exactly one source is set: `FERNET_KEY` (one key), `FERNET_KEYS`
//! (comma-separated, newest first), `FERNET_KEY_FILE` (one key a line,
//! newest first, `#` comments) or `KEYHOLD_KEY_COMMAND` (a shell command
//! whose stdout holds the key(s) in the file format). The newest key
//! encrypts; every key is tried to decrypt (MultiFernet semantics).
//!
//! A key file (or a key command's output) may end with a `[retired]`
//! section: keys kept for backups made before a rotation. The keyring a
//! command uses ([`Keyring::from_env`]) never holds them; only restoring
//! or checking a backup reads them ([`Keyring::from_env_with_retired`]),
//! and a store that needs one is refused with the command that puts it
//! back (see `key_file`).
//!
//! Each keyring key also yields purpose-bound keys (HKDF-SHA256, one label
//! each): one seals keyhold's own secrets, one makes the check value, one
//! authenticates backups. API keys stay plain Fernet under the keyring key
//! itself (byte-compatible with Python), so no ciphertext a caller can
//! obtain by storing a key of their choosing opens under a derived key:
//! none can stand in for a sealed secret or the check value.
//!
//! Not for: storage. The keyring never touches the database.
//!
//! Over 500 lines: about half of the file is its unit tests, kept beside
//! the sources they test (the four key sources, derivation, sealing).

use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use fernet::Fernet;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::{SecretBytes, SecretString};

/// The environment variables that can hold the keyring, in the order the
/// error messages list them.
pub const SOURCE_VARS: [&str; 4] = [
    "FERNET_KEY",
    "FERNET_KEYS",
    "FERNET_KEY_FILE",
    "KEYHOLD_KEY_COMMAND",
];

const HOW_TO_GENERATE: &str =
    "generate a key with `keyhold keygen` (or `keyhold keygen --env-file .env`)";

/// Where the keyring's keys were read from. Never holds the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    FernetKey,
    FernetKeys,
    File(PathBuf),
    Command,
    /// A random key made for `serve --dev`.
    Ephemeral,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::FernetKey => f.write_str("FERNET_KEY"),
            KeySource::FernetKeys => f.write_str("FERNET_KEYS"),
            KeySource::File(p) => write!(f, "FERNET_KEY_FILE ({})", p.display()),
            KeySource::Command => f.write_str("KEYHOLD_KEY_COMMAND"),
            KeySource::Ephemeral => f.write_str("a random development key"),
        }
    }
}

/// Why a keyring could not be built or used. Messages say what happened
/// and what to do; none contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "no Fernet key is set: set exactly one of FERNET_KEY, FERNET_KEYS, FERNET_KEY_FILE or \
         KEYHOLD_KEY_COMMAND; {HOW_TO_GENERATE}"
    )]
    NoSource,
    #[error(
        "{first} and {second} are both set: set exactly one source of Fernet keys and unset the other"
    )]
    TwoSources {
        first: &'static str,
        second: &'static str,
    },
    #[error(
        "{origin} holds a malformed Fernet key (entry {position}): a key is 32 bytes in url-safe \
         base64 (44 characters); {HOW_TO_GENERATE}"
    )]
    Malformed { origin: KeySource, position: usize },
    #[error("{origin} holds no key; {HOW_TO_GENERATE}")]
    Empty { origin: KeySource },
    #[error("cannot read FERNET_KEY_FILE {path}: {error}; check the path and its permissions")]
    FileUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// KEYHOLD_KEY_COMMAND failed (see [`crate::key_command`]).
    #[error(transparent)]
    Command(#[from] crate::key_command::KeyCommandError),
    #[error("{origin} is not valid UTF-8; a key file holds one url-safe base64 key a line")]
    NotUtf8 { origin: KeySource },
    #[error(
        "{origin} has more than one `[retired]` line: keep one, with the retired keys below it"
    )]
    TwoRetiredSections { origin: KeySource },
}

/// The line that starts a key file's retired section.
pub(crate) const RETIRED_MARKER: &str = "[retired]";

/// A key file's key lines (trimmed, comments and blank lines dropped):
/// the active keys, then the retired ones.
pub(crate) fn split_key_lines<'a>(
    text: &'a str,
    origin: &KeySource,
) -> Result<(Vec<&'a str>, Vec<&'a str>), KeyringError> {
    let (mut active, mut retired) = (Vec::new(), Vec::new());
    let mut in_retired = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == RETIRED_MARKER {
            if in_retired {
                return Err(KeyringError::TwoRetiredSections {
                    origin: origin.clone(),
                });
            }
            in_retired = true;
        } else if in_retired {
            retired.push(line);
        } else {
            active.push(line);
        }
    }
    Ok((active, retired))
}

/// Why a token did not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no key of the keyring opens this token (wrong key, or the token was altered)")]
pub struct DecryptError;

struct KeyEntry {
    fernet: Fernet,
    fingerprint: String,
    derived: Derived,
}

/// Keys derived from one keyring key, each for one purpose only.
struct Derived {
    /// Fernet key that seals keyhold's own secrets (`seal`/`unseal`).
    seal: Fernet,
    /// Fernet key of the check value.
    check: Fernet,
    /// HMAC-SHA256 key of backups.
    backup_mac: Zeroizing<[u8; 32]>,
}

/// HKDF salt: fixed, names the scheme.
const HKDF_SALT: &[u8] = b"keyhold keyring derivation v1";
const LABEL_SEAL: &[u8] = b"keyhold/seal";
const LABEL_CHECK: &[u8] = b"keyhold/check";
const LABEL_BACKUP: &[u8] = b"keyhold/backup-mac";
/// What every sealed value's plaintext starts with, before its purpose.
const SEAL_PREFIX: &[u8] = b"keyhold-sealed-v1:";

/// The plaintext whose Fernet token (under the derived check key) is the
/// keyring check value.
pub(crate) const CHECK_PLAINTEXT: &[u8] = b"keyhold keyring check v1";

impl Derived {
    /// Derives the purpose keys from a Fernet key's text (already checked
    /// to be a valid key).
    fn of(key_text: &str) -> Option<Derived> {
        let raw = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE
                .decode(key_text.trim())
                .ok()?,
        );
        let hk = hkdf::Hkdf::<Sha256>::new(Some(HKDF_SALT), &raw);
        let expand = |label: &[u8]| -> Option<Zeroizing<[u8; 32]>> {
            let mut out = Zeroizing::new([0u8; 32]);
            hk.expand(label, out.as_mut()).ok()?;
            Some(out)
        };
        let fernet_of = |label: &[u8]| -> Option<Fernet> {
            let k = expand(label)?;
            let text = Zeroizing::new(base64::engine::general_purpose::URL_SAFE.encode(k.as_ref()));
            Fernet::new(&text)
        };
        Some(Derived {
            seal: fernet_of(LABEL_SEAL)?,
            check: fernet_of(LABEL_CHECK)?,
            backup_mac: expand(LABEL_BACKUP)?,
        })
    }
}

/// A sealed secret opened: the secret (zeroized on drop) and which key of
/// the keyring opened it (0 is the newest).
#[derive(Debug)]
pub struct Unsealed {
    pub secret: SecretBytes,
    pub key_index: usize,
}

/// The keys, newest first. `Debug` shows the source and fingerprints only.
pub struct Keyring {
    keys: Vec<KeyEntry>,
    source: KeySource,
    /// How many of `keys` are active: the rest are retired keys, read
    /// only to restore or check a backup.
    active: usize,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .field("fingerprints", &self.fingerprints())
            .finish()
    }
}

/// A successful decryption: the plaintext (zeroized on drop) and which key
/// of the keyring opened it (0 is the newest).
#[derive(Debug)]
pub struct Opened {
    pub plaintext: SecretBytes,
    pub key_index: usize,
    pub fingerprint: String,
}

impl Keyring {
    /// Reads the keyring from the process environment.
    pub fn from_env() -> Result<Keyring, KeyringError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the keyring from the process environment, with the retired
    /// keys of a key file (or key command) after the active ones: for
    /// restoring and checking backups only, never for serving.
    pub fn from_env_with_retired() -> Result<Keyring, KeyringError> {
        Self::from_lookup_with(
            |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
            true,
        )
    }

    /// Reads the keyring through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Keyring, KeyringError> {
        Self::from_lookup_with(lookup, false)
    }

    fn from_lookup_with(
        lookup: impl Fn(&str) -> Option<String>,
        with_retired: bool,
    ) -> Result<Keyring, KeyringError> {
        let mut set: Vec<(&'static str, SecretString)> = Vec::new();
        for var in SOURCE_VARS {
            if let Some(v) = lookup(var) {
                if !v.trim().is_empty() {
                    set.push((var, SecretString::new(v)));
                }
            }
        }
        match set.len() {
            0 => Err(KeyringError::NoSource),
            1 => {
                let (var, value) = set.remove(0);
                match var {
                    "FERNET_KEY" => Self::parse_list(KeySource::FernetKey, [value.expose()]),
                    "FERNET_KEYS" => {
                        Self::parse_list(KeySource::FernetKeys, value.expose().split(','))
                    }
                    "FERNET_KEY_FILE" => {
                        let path = PathBuf::from(value.expose().trim());
                        let bytes =
                            std::fs::read(&path).map_err(|error| KeyringError::FileUnreadable {
                                path: path.clone(),
                                error,
                            })?;
                        Self::parse_file_bytes(
                            KeySource::File(path),
                            Zeroizing::new(bytes),
                            with_retired,
                        )
                    }
                    _ => {
                        let timeout = crate::key_command::timeout_from(&lookup)?;
                        let stdout = crate::key_command::run(value.expose(), timeout)?;
                        Self::parse_file_bytes(KeySource::Command, stdout, with_retired)
                    }
                }
            }
            _ => Err(KeyringError::TwoSources {
                first: set[0].0,
                second: set[1].0,
            }),
        }
    }

    fn parse_file_bytes(
        source: KeySource,
        bytes: Zeroizing<Vec<u8>>,
        with_retired: bool,
    ) -> Result<Keyring, KeyringError> {
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyringError::NotUtf8 {
            origin: source.clone(),
        })?;
        let (active, retired) = split_key_lines(text, &source)?;
        let n = active.len();
        if n == 0 {
            return Err(KeyringError::Empty { origin: source });
        }
        let mut ring = Self::parse_list(source, active.into_iter().chain(retired))?;
        if !with_retired {
            ring.keys.truncate(n);
        }
        ring.active = n;
        Ok(ring)
    }

    /// Builds a keyring from key strings, newest first.
    pub fn parse_list<'a>(
        source: KeySource,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<Keyring, KeyringError> {
        let mut entries = Vec::new();
        for (i, raw) in keys.into_iter().enumerate() {
            let raw = raw.trim();
            let malformed = || KeyringError::Malformed {
                origin: source.clone(),
                position: i + 1,
            };
            let fernet = Fernet::new(raw).ok_or_else(malformed)?;
            let derived = Derived::of(raw).ok_or_else(malformed)?;
            entries.push(KeyEntry {
                fernet,
                fingerprint: fingerprint(raw),
                derived,
            });
        }
        if entries.is_empty() {
            return Err(KeyringError::Empty { origin: source });
        }
        let active = entries.len();
        Ok(Keyring {
            keys: entries,
            source,
            active,
        })
    }

    /// A keyring of one fresh random key (for `serve --dev` and tests).
    pub fn ephemeral() -> Keyring {
        let key = SecretString::new(Fernet::generate_key());
        let fernet = Fernet::new(key.expose()).unwrap_or_else(|| unreachable!());
        let derived = Derived::of(key.expose()).unwrap_or_else(|| unreachable!());
        Keyring {
            keys: vec![KeyEntry {
                fingerprint: fingerprint(key.expose()),
                fernet,
                derived,
            }],
            source: KeySource::Ephemeral,
            active: 1,
        }
    }

    /// Whether the key at `index` (as in [`Opened::key_index`]) is a
    /// retired one (only in a keyring read with its retired keys).
    pub fn is_retired(&self, index: usize) -> bool {
        index >= self.active
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Short fingerprints of the keys, newest first (never the keys).
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.fingerprint.clone()).collect()
    }

    /// Encrypts under the newest key, stamped with the current time.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        self.keys[0].fernet.encrypt(plaintext)
    }

    /// Encrypts under the newest key with a given Fernet timestamp (seconds).
    /// Rotation keeps a token's original timestamp this way.
    pub fn encrypt_at(&self, plaintext: &[u8], timestamp: u64) -> String {
        self.keys[0].fernet.encrypt_at_time(plaintext, timestamp)
    }

    /// Tries every key, newest first, at the current time. Never checks a
    /// TTL (keyhold's expiry is `expires_at`).
    pub fn decrypt(&self, token: &str) -> Result<Opened, DecryptError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.decrypt_at(token, now, None)
    }

    /// Decrypts as of `now` (seconds since the epoch). With `max_age`,
    /// tokens older than that, or stamped more than 60 s in the future, are
    /// refused (the spec's TTL semantics); without it, any authentic token
    /// opens, whatever its timestamp. The age check is keyhold's own, with checked
    /// arithmetic: the crate's `decrypt_with_ttl` adds the TTL to the
    /// token's timestamp before the HMAC check and can overflow on a
    /// crafted token.
    pub fn decrypt_at(
        &self,
        token: &str,
        now: u64,
        max_age: Option<u64>,
    ) -> Result<Opened, DecryptError> {
        // Without a maximum age, a token stamped ahead of this machine's
        // clock (a clock moved back, a token made on a host running fast)
        // is as good as any: the crate's 60 s skew check would refuse it,
        // Python's `decrypt()` without a TTL does not. So present the
        // token's own time as "now" when it is later.
        // The crate computes `now + 60`: keep that from overflowing (and,
        // without a TTL, let a token stamped at the very end of time open).
        let now = match max_age {
            None => token_timestamp(token)
                .map_or(now, |ts| now.max(ts))
                .min(u64::MAX - 60),
            Some(_) => now.min(u64::MAX - 120),
        };
        for (i, k) in self.keys.iter().enumerate() {
            if let Ok(plain) = k.fernet.decrypt_at_time(token, None, now) {
                let plain = SecretBytes::new(plain);
                if let Some(age) = max_age {
                    let ts = token_timestamp(token).ok_or(DecryptError)?;
                    // An expiry past u64::MAX never comes.
                    if ts.checked_add(age).is_some_and(|limit| limit < now) {
                        return Err(DecryptError);
                    }
                }
                return Ok(Opened {
                    plaintext: plain,
                    key_index: i,
                    fingerprint: k.fingerprint.clone(),
                });
            }
        }
        Err(DecryptError)
    }
}

/// The keyring a running server uses: replaced whole on a reload
/// (SIGHUP, `POST /api/admin/reload`), never changed in place. A request
/// or a rotation takes one [`load`](Self::load) and keeps using that
/// keyring to its end, so it never sees half of one and half of another.
///
/// A plain `RwLock<Arc<_>>` (held only to clone or swap the `Arc`), rather
/// than a new dependency: reloads are rare and readers hold it for
/// nanoseconds.
pub(crate) struct LiveKeyring {
    current: std::sync::RwLock<std::sync::Arc<Keyring>>,
}

impl fmt::Debug for LiveKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.load().fmt(f)
    }
}

impl LiveKeyring {
    pub(crate) fn new(keyring: Keyring) -> LiveKeyring {
        LiveKeyring {
            current: std::sync::RwLock::new(std::sync::Arc::new(keyring)),
        }
    }

    /// The keyring now in use.
    pub(crate) fn load(&self) -> std::sync::Arc<Keyring> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Puts `keyring` in use; returns the one it replaced.
    pub(crate) fn replace(&self, keyring: Keyring) -> std::sync::Arc<Keyring> {
        let new = std::sync::Arc::new(keyring);
        match self.current.write() {
            Ok(mut k) => std::mem::replace(&mut *k, new),
            Err(p) => std::mem::replace(&mut *p.into_inner(), new),
        }
    }
}

impl Keyring {
    /// Seals one of keyhold's own secrets for the store: Fernet under the
    /// newest key's derived sealing key, the plaintext naming its purpose,
    /// so a sealed value opens only as what it was sealed as.
    pub fn seal(&self, purpose: &str, secret: &[u8]) -> String {
        let mut plain = Zeroizing::new(Vec::with_capacity(
            SEAL_PREFIX.len() + purpose.len() + 1 + secret.len(),
        ));
        plain.extend_from_slice(SEAL_PREFIX);
        plain.extend_from_slice(purpose.as_bytes());
        plain.push(b':');
        plain.extend_from_slice(secret);
        self.keys[0].derived.seal.encrypt(&plain)
    }

    /// Opens a value sealed by [`seal`](Self::seal) for `purpose`, trying
    /// every key of the keyring. A token made any other way (an API key's
    /// ciphertext, a value sealed for another purpose) does not open.
    pub fn unseal(&self, purpose: &str, token: &str) -> Result<Unsealed, DecryptError> {
        let mut prefix = SEAL_PREFIX.to_vec();
        prefix.extend_from_slice(purpose.as_bytes());
        prefix.push(b':');
        for (i, k) in self.keys.iter().enumerate() {
            if let Ok(plain) = k
                .derived
                .seal
                .decrypt_at_time(token, None, token_now(token))
            {
                let plain = Zeroizing::new(plain);
                if let Some(secret) = plain.strip_prefix(prefix.as_slice()) {
                    return Ok(Unsealed {
                        secret: SecretBytes::new(secret.to_vec()),
                        key_index: i,
                    });
                }
                return Err(DecryptError);
            }
        }
        Err(DecryptError)
    }

    /// The check value for a new store: a token of [`CHECK_PLAINTEXT`]
    /// under the newest key's derived check key.
    pub fn check_token(&self) -> String {
        self.keys[0].derived.check.encrypt(CHECK_PLAINTEXT)
    }

    /// Which key of the keyring opens the check value, if any.
    pub fn opens_check(&self, token: &str) -> Option<usize> {
        self.keys.iter().position(|k| {
            k.derived
                .check
                .decrypt_at_time(token, None, token_now(token))
                .is_ok_and(|p| p == CHECK_PLAINTEXT)
        })
    }

    /// The backup MAC keys, newest first (index as in the keyring).
    pub fn backup_mac_keys(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.keys.iter().map(|k| &*k.derived.backup_mac)
    }
}

/// The "now" that lets any authentic token open whatever its timestamp
/// (sealed values never expire): the later of the clock and the token's
/// own time, kept from overflowing in the crate's `now + 60`.
fn token_now(token: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    token_timestamp(token)
        .map_or(now, |ts| now.max(ts))
        .min(u64::MAX - 60)
}

/// A Fernet token's timestamp (seconds since the epoch): bytes 1..9 of the
/// base64url-decoded token, big-endian. `None` when it is not a token.
pub fn token_timestamp(token: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token.trim())
        .ok()?;
    if raw.len() < 9 || raw[0] != 0x80 {
        return None;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&raw[1..9]);
    Some(u64::from_be_bytes(ts))
}

/// Generates a new random Fernet key (url-safe base64 of 32 bytes).
pub(crate) fn generate_key() -> SecretString {
    SecretString::new(Fernet::generate_key())
}

/// First 8 bytes of SHA-256 over the key's text, hex: identifies a key in
/// logs and audit records without revealing anything usable.
fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.trim().as_bytes());
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn two_sources_are_refused_naming_both() {
        let a = generate_key();
        let err = Keyring::from_lookup(env(&[
            ("FERNET_KEY", a.expose()),
            ("FERNET_KEYS", a.expose()),
        ]))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("FERNET_KEY and FERNET_KEYS"), "{msg}");
    }

    #[test]
    fn malformed_key_names_source_and_fix_without_echo() {
        let bad = "not-a-key-but-secretish-value";
        let err = Keyring::from_lookup(env(&[(
            "FERNET_KEYS",
            &format!("{},{bad}", generate_key().expose()),
        )]))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("FERNET_KEYS"), "{msg}");
        assert!(msg.contains("entry 2"), "{msg}");
        assert!(msg.contains("keyhold keygen"), "{msg}");
        assert!(!msg.contains(bad), "{msg}");
    }

    #[test]
    fn newest_encrypts_every_key_decrypts() {
        let new = generate_key();
        let old = generate_key();
        let old_ring = Keyring::from_lookup(env(&[("FERNET_KEY", old.expose())])).unwrap();
        let both = Keyring::from_lookup(env(&[(
            "FERNET_KEYS",
            &format!("{}, {}", new.expose(), old.expose()),
        )]))
        .unwrap();
        let t_old = old_ring.encrypt(b"hello");
        let opened = both.decrypt(&t_old).unwrap();
        assert_eq!(opened.plaintext.expose(), b"hello");
        assert_eq!(opened.key_index, 1);
        let t_new = both.encrypt(b"hi");
        assert_eq!(both.decrypt(&t_new).unwrap().key_index, 0);
        assert!(old_ring.decrypt(&t_new).is_err());
    }

    #[test]
    fn key_file_skips_comments_and_blank_lines() {
        let k = generate_key();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, format!("# newest first\n\n{}\n", k.expose())).unwrap();
        let ring = Keyring::from_lookup(env(&[("FERNET_KEY_FILE", p.to_str().unwrap())])).unwrap();
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn key_command_output_is_a_key_file() {
        let k = generate_key();
        let cmd = format!("printf '%s\\n' '{}'", k.expose());
        let ring = Keyring::from_lookup(env(&[("KEYHOLD_KEY_COMMAND", &cmd)])).unwrap();
        assert_eq!(ring.source(), &KeySource::Command);
        let failing = Keyring::from_lookup(env(&[("KEYHOLD_KEY_COMMAND", "exit 3")])).unwrap_err();
        assert!(failing.to_string().contains("exited"));
    }

    #[test]
    fn timestamp_is_read_from_the_token() {
        let ring = Keyring::ephemeral();
        let t = ring.encrypt_at(b"x", 499_162_800);
        assert_eq!(token_timestamp(&t), Some(499_162_800));
        assert_eq!(token_timestamp("%%%"), None);
    }

    #[test]
    fn an_api_key_ciphertext_never_opens_as_a_sealed_secret_or_check_value() {
        let ring = Keyring::ephemeral();
        // A caller stores 32 bytes of their choosing as an API key.
        let chosen = ring.encrypt(&[7u8; 32]);
        assert!(ring.unseal("record-secret", &chosen).is_err());
        let framed =
            ring.encrypt(b"keyhold-sealed-v1:record-secret:0123456789abcdef0123456789abcdef");
        assert!(ring.unseal("record-secret", &framed).is_err());
        assert!(ring.opens_check(&ring.encrypt(CHECK_PLAINTEXT)).is_none());
        // What is sealed opens, only for its purpose.
        let sealed = ring.seal("record-secret", &[9u8; 32]);
        assert_eq!(
            ring.unseal("record-secret", &sealed)
                .unwrap()
                .secret
                .expose(),
            &[9u8; 32]
        );
        assert!(ring.unseal("audit-signing-key", &sealed).is_err());
        assert!(
            ring.decrypt(&sealed).is_err(),
            "the keyring key itself does not open it"
        );
        assert_eq!(ring.opens_check(&ring.check_token()), Some(0));
    }

    #[test]
    fn derived_keys_differ_per_keyring_key_and_older_keys_still_open() {
        let (new, old) = (generate_key(), generate_key());
        let old_ring = Keyring::from_lookup(env(&[("FERNET_KEY", old.expose())])).unwrap();
        let both = Keyring::from_lookup(env(&[(
            "FERNET_KEYS",
            &format!("{},{}", new.expose(), old.expose()),
        )]))
        .unwrap();
        let sealed_old = old_ring.seal("p", b"s");
        let opened = both.unseal("p", &sealed_old).unwrap();
        assert_eq!((opened.secret.expose(), opened.key_index), (&b"s"[..], 1));
        assert_eq!(both.opens_check(&old_ring.check_token()), Some(1));
        let macs: Vec<_> = both.backup_mac_keys().collect();
        assert_ne!(macs[0], macs[1]);
    }

    #[test]
    fn debug_shows_no_key() {
        let k = generate_key();
        let ring = Keyring::from_lookup(env(&[("FERNET_KEY", k.expose())])).unwrap();
        let dbg = format!("{ring:?}");
        assert!(!dbg.contains(k.expose()));
    }
}
