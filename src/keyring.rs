//! The Fernet keyring: where keys come from, and encrypt/decrypt/re-encrypt.
//!
//! Exactly one source is set: `FERNET_KEY` (one key), `FERNET_KEYS`
//! (comma-separated, newest first), `FERNET_KEY_FILE` (one key a line,
//! newest first, `#` comments) or `KEYHOLD_KEY_COMMAND` (a shell command
//! whose stdout holds the key(s) in the file format). The newest key
//! encrypts; every key is tried to decrypt (MultiFernet semantics).
//!
//! Not for: storage. The keyring never touches the database.

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
    #[error(
        "cannot run KEYHOLD_KEY_COMMAND: {0}; check the command and that its program is installed"
    )]
    CommandSpawn(std::io::Error),
    #[error(
        "KEYHOLD_KEY_COMMAND exited with {0}; run it by hand to see its error (its output is not shown here because it may hold keys)"
    )]
    CommandFailed(std::process::ExitStatus),
    #[error(
        "KEYHOLD_KEY_COMMAND did not finish within {} s and was killed; check that its secret \
         manager answers, or give it longer with KEYHOLD_KEY_COMMAND_TIMEOUT (seconds)",
        timeout.as_secs()
    )]
    CommandTimedOut { timeout: std::time::Duration },
    #[error(
        "KEYHOLD_KEY_COMMAND printed more than {} KiB and was killed; it must print only the \
         key(s), one a line",
        limit / 1024
    )]
    CommandOutputTooLarge { limit: usize },
    #[error(
        "KEYHOLD_KEY_COMMAND_TIMEOUT `{0}` is not a number of seconds from 1 to 3600; fix or unset it (default 30)"
    )]
    CommandTimeoutSetting(String),
    #[error("{origin} is not valid UTF-8; a key file holds one url-safe base64 key a line")]
    NotUtf8 { origin: KeySource },
}

/// Why a token did not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no key of the keyring opens this token (wrong key, or the token was altered)")]
pub struct DecryptError;

struct KeyEntry {
    fernet: Fernet,
    fingerprint: String,
}

/// The keys, newest first. `Debug` shows the source and fingerprints only.
pub struct Keyring {
    keys: Vec<KeyEntry>,
    source: KeySource,
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

    /// Reads the keyring through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Keyring, KeyringError> {
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
                        Self::parse_file_bytes(KeySource::File(path), Zeroizing::new(bytes))
                    }
                    _ => {
                        let timeout = crate::key_command::timeout_from(&lookup)?;
                        let stdout = crate::key_command::run(value.expose(), timeout)?;
                        Self::parse_file_bytes(KeySource::Command, stdout)
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
    ) -> Result<Keyring, KeyringError> {
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyringError::NotUtf8 {
            origin: source.clone(),
        })?;
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        Self::parse_list(source, lines)
    }

    /// Builds a keyring from key strings, newest first.
    pub fn parse_list<'a>(
        source: KeySource,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<Keyring, KeyringError> {
        let mut entries = Vec::new();
        for (i, raw) in keys.into_iter().enumerate() {
            let raw = raw.trim();
            let fernet = Fernet::new(raw).ok_or(KeyringError::Malformed {
                origin: source.clone(),
                position: i + 1,
            })?;
            entries.push(KeyEntry {
                fernet,
                fingerprint: fingerprint(raw),
            });
        }
        if entries.is_empty() {
            return Err(KeyringError::Empty { origin: source });
        }
        Ok(Keyring {
            keys: entries,
            source,
        })
    }

    /// A keyring of one fresh random key (for `serve --dev` and tests).
    pub fn ephemeral() -> Keyring {
        let key = SecretString::new(Fernet::generate_key());
        let fernet = Fernet::new(key.expose()).unwrap_or_else(|| unreachable!());
        Keyring {
            keys: vec![KeyEntry {
                fingerprint: fingerprint(key.expose()),
                fernet,
            }],
            source: KeySource::Ephemeral,
        }
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
pub fn generate_key() -> SecretString {
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
    fn debug_shows_no_key() {
        let k = generate_key();
        let ring = Keyring::from_lookup(env(&[("FERNET_KEY", k.expose())])).unwrap();
        let dbg = format!("{ring:?}");
        assert!(!dbg.contains(k.expose()));
    }
}
