//! Over 500 lines: one format, signed notes, with the check of every signature
//! type a verifier key names (Ed25519 and the cosignatures of 0x04).
//!
//! C2SP signed notes (c2sp.org/signed-note): a text ending in a newline, a
//! blank line, then signature lines `— <key name> base64(key ID ‖ sig)`.
//!
//! A key is named by its name and a 4-byte key ID, SHA-256(name ‖ 0x0A ‖
//! signature type ‖ public key)\[:4\]; its verifier key ("vkey") is the text
//! `name+hex(key ID)+base64(type ‖ public key)`. This module signs and
//! verifies Ed25519 notes (type 0x01); a [`NoteVerifier`] of type 0x04
//! verifies a witness's cosignature (`cosignature.rs`) in the same
//! [`open`]. Signatures by keys the caller does not know are kept,
//! unverified, as the spec requires.
//!
//! Not for: what the text says (see `checkpoint.rs`), or key storage.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// The signature type of plain Ed25519 note signatures.
pub(crate) const ED25519_TYPE: u8 = 0x01;
/// The most signatures a note may carry (the spec asks for at least 16).
pub(crate) const MAX_SIGNATURES: usize = 100;
/// The largest note read: 16 post-quantum signatures of ~5 kB fit.
pub(crate) const MAX_NOTE_BYTES: usize = 256 * 1024;
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note, a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NoteError {
    #[error(
        "the note is over {MAX_NOTE_BYTES} bytes; it is not one this log or its witnesses wrote"
    )]
    TooLarge,
    #[error("malformed signed note: {0}; a note is text, a blank line and `— name signature` lines (c2sp.org/signed-note)")]
    Malformed(&'static str),
    #[error("malformed verifier key: {0}; a verifier key is `name+keyid+base64key`, such as `example.com/log+5b0e3c1a+AQ...`")]
    BadVerifierKey(&'static str),
    #[error("a key name must be non-empty, without spaces or `+`")]
    BadKeyName,
    #[error("the signing key is not a valid Ed25519 seed")]
    BadSeed,
    #[error(
        "two trusted keys share the name and key ID {name}+{key_id:08x}; trust only one of them"
    )]
    AmbiguousKey { name: String, key_id: u32 },
    #[error("the signature of trusted key {name}+{key_id:08x} does not verify: the note was altered or forged")]
    InvalidSignature { name: String, key_id: u32 },
    #[error("no signature by a trusted key (signed by: {signers}); check that the verifier key is this log's")]
    NoTrustedSignature { signers: String },
}

/// The key ID of a key: `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]`.
pub(crate) fn key_id(name: &str, sig_type: u8, public: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type]);
    h.update(public);
    let sum = h.finalize();
    u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]])
}

/// A key name: non-empty, no Unicode white space, no `+`.
pub(crate) fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// A verifier key's parts, checked: the key ID matches the name and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifierKey {
    pub(crate) name: String,
    pub(crate) key_id: u32,
    pub(crate) sig_type: u8,
    pub(crate) public: Vec<u8>,
}

impl VerifierKey {
    /// Parses `name+hex(key ID)+base64(type ‖ public key)`.
    pub(crate) fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let bad = NoteError::BadVerifierKey;
        // The base64 key may itself hold `+`: split at the first two only.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it has not three parts joined by `+`"));
        };
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        if id.len() != 8
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("the key ID is not 8 lowercase hex digits"));
        }
        let key_id = u32::from_str_radix(id, 16).map_err(|_| bad("the key ID is not hex"))?;
        let raw = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let Some((&sig_type, public)) = raw.split_first() else {
            return Err(bad("the key is empty"));
        };
        if self::key_id(name, sig_type, public) != key_id {
            return Err(bad("the key ID does not match the name and key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id,
            sig_type,
            public: public.to_vec(),
        })
    }

    /// The text form [`parse`](Self::parse) reads.
    pub(crate) fn to_text(&self) -> String {
        let mut raw = vec![self.sig_type];
        raw.extend_from_slice(&self.public);
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(raw))
    }
}

/// A key that can verify signature lines of a note.
pub(crate) trait Verifier {
    fn name(&self) -> &str;
    fn key_id(&self) -> u32;
    /// True when `sig` (the signature's bytes after the key ID) is a valid
    /// signature of the note's `text` by this key.
    fn verify(&self, text: &[u8], sig: &[u8]) -> bool;
}

/// A note verifier: a named Ed25519 key of signature type 0x01 (the
/// signature is over the note text) or 0x04 (a witness's cosignature, see
/// `cosignature.rs`), with its key ID. Its vkey says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoteVerifier {
    name: String,
    sig_type: u8,
    key_id: u32,
    public: [u8; 32],
}

impl NoteVerifier {
    /// The verifier of an Ed25519 key of `sig_type` (0x01 or 0x04).
    pub(crate) fn new(
        name: &str,
        sig_type: u8,
        public: [u8; 32],
    ) -> Result<NoteVerifier, NoteError> {
        if sig_type != ED25519_TYPE && sig_type != COSIGNATURE_TYPE {
            return Err(NoteError::BadVerifierKey(
                "only Ed25519 keys (type 0x01) and cosignature keys (0x04) are supported",
            ));
        }
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        let key_id = key_id(name, sig_type, &public);
        Ok(NoteVerifier {
            name: name.to_owned(),
            sig_type,
            key_id,
            public,
        })
    }

    /// Parses a vkey of type 0x01 or 0x04.
    pub(crate) fn from_vkey(text: &str) -> Result<NoteVerifier, NoteError> {
        let vkey = VerifierKey::parse(text)?;
        let public = vkey
            .public
            .as_slice()
            .try_into()
            .map_err(|_| NoteError::BadVerifierKey("an Ed25519 key is 32 bytes"))?;
        NoteVerifier::new(&vkey.name, vkey.sig_type, public)
    }

    /// Parses a vkey, which must be of type `sig_type`.
    pub(crate) fn from_vkey_of_type(text: &str, sig_type: u8) -> Result<NoteVerifier, NoteError> {
        let verifier = NoteVerifier::from_vkey(text)?;
        if verifier.sig_type != sig_type {
            return Err(NoteError::BadVerifierKey(
                "it is not a key of the expected signature type",
            ));
        }
        Ok(verifier)
    }

    pub(crate) fn sig_type(&self) -> u8 {
        self.sig_type
    }

    pub(crate) fn vkey(&self) -> String {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            sig_type: self.sig_type,
            public: self.public.to_vec(),
        }
        .to_text()
    }

    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// True when `sig` is this key's plain Ed25519 signature of `msg`.
    pub(crate) fn ed25519_verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(msg, sig)
            .is_ok()
    }
}

impl Verifier for NoteVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn verify(&self, text: &[u8], sig: &[u8]) -> bool {
        match self.sig_type {
            ED25519_TYPE => self.ed25519_verifies(text, sig),
            COSIGNATURE_TYPE => verify_cosignature(self, text, sig),
            _ => false,
        }
    }
}

/// A named Ed25519 signing key of one signature type. Never printed.
pub(crate) struct SigningKey {
    pair: Ed25519KeyPair,
    verifier: NoteVerifier,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of a 32-byte Ed25519 seed, named `name`, of `sig_type`.
    pub(crate) fn from_seed(
        name: &str,
        sig_type: u8,
        seed: &[u8],
    ) -> Result<SigningKey, NoteError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteError::BadSeed)?;
        let public = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| NoteError::BadSeed)?;
        Ok(SigningKey {
            pair,
            verifier: NoteVerifier::new(name, sig_type, public)?,
        })
    }

    pub(crate) fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// A signature line whose bytes are `prefix` (a cosignature's
    /// timestamp) then this key's Ed25519 signature of `msg`.
    pub(crate) fn signature(&self, prefix: &[u8], msg: &[u8]) -> Signature {
        let mut sig = prefix.to_vec();
        sig.extend_from_slice(self.pair.sign(msg).as_ref());
        Signature {
            name: self.verifier.name.clone(),
            key_id: self.verifier.key_id,
            sig,
        }
    }
}

/// An Ed25519 note signing key (type 0x01).
#[derive(Debug)]
pub(crate) struct NoteSigner(SigningKey);

impl NoteSigner {
    /// The key of a 32-byte Ed25519 seed, named `name`.
    pub(crate) fn from_seed(name: &str, seed: &[u8]) -> Result<NoteSigner, NoteError> {
        SigningKey::from_seed(name, ED25519_TYPE, seed).map(NoteSigner)
    }

    pub(crate) fn verifier(&self) -> &NoteVerifier {
        self.0.verifier()
    }

    /// This key's signature of `text`, which must end in a newline.
    pub(crate) fn sign(&self, text: &str) -> Result<Signature, NoteError> {
        check_text(text)?;
        Ok(self.0.signature(&[], text.as_bytes()))
    }
}

/// A note text: valid as the text part of a note, ending in a newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text does not end in a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("it holds a control character"));
    }
    Ok(())
}

/// One signature line: the key's name and ID and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signature {
    pub(crate) name: String,
    pub(crate) key_id: u32,
    /// The bytes after the key ID.
    pub(crate) sig: Vec<u8>,
}

impl Signature {
    /// `— name base64(key ID ‖ sig)` and a newline.
    pub(crate) fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.sig);
        format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(raw))
    }

    fn parse_line(line: &str) -> Result<Signature, NoteError> {
        let bad = NoteError::Malformed;
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(bad("a signature line does not start with `— `"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(bad("a signature line has no signature"))?;
        if !is_valid_key_name(name) {
            return Err(bad("a signature line's key name is not valid"));
        }
        let raw = BASE64
            .decode(b64)
            .map_err(|_| bad("a signature is not base64"))?;
        if raw.len() < 5 {
            return Err(bad("a signature is too short"));
        }
        let (id, sig) = raw.split_at(4);
        let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        Ok(Signature {
            name: name.to_owned(),
            key_id,
            sig: sig.to_vec(),
        })
    }
}

/// A note whose text is vouched for by at least one trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    /// The text, with its final newline.
    pub(crate) text: String,
    /// Signatures by trusted keys, each verified.
    pub(crate) verified: Vec<Signature>,
    /// Signatures by other keys, kept as they were.
    pub(crate) unverified: Vec<Signature>,
}

impl Note {
    /// The note as text: the text, a blank line, then every signature.
    pub(crate) fn to_text(&self) -> Result<String, NoteError> {
        let all: Vec<Signature> = self
            .verified
            .iter()
            .chain(&self.unverified)
            .cloned()
            .collect();
        format_note(&self.text, &all)
    }
}

/// A signed note of `text` with `signatures`, each line once, in order.
pub(crate) fn format_note(text: &str, signatures: &[Signature]) -> Result<String, NoteError> {
    check_text(text)?;
    if signatures.is_empty() || signatures.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed("a note carries 1 to 100 signatures"));
    }
    let mut out = format!("{text}\n");
    let mut lines: Vec<String> = Vec::with_capacity(signatures.len());
    for sig in signatures {
        if !is_valid_key_name(&sig.name) {
            return Err(NoteError::BadKeyName);
        }
        let line = sig.line();
        if !lines.contains(&line) {
            out.push_str(&line);
            lines.push(line);
        }
    }
    Ok(out)
}

/// Opens a signed note: checks its form, verifies every signature by a key
/// in `known`, and keeps the others. Fails unless a known key signed it,
/// or if any known key's signature does not verify.
pub(crate) fn open(msg: &[u8], known: &[&dyn Verifier]) -> Result<Note, NoteError> {
    let bad = NoteError::Malformed;
    if msg.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge);
    }
    let msg = std::str::from_utf8(msg).map_err(|_| bad("it is not UTF-8"))?;
    if msg.chars().any(|c| c < ' ' && c != '\n') {
        return Err(bad("it holds a control character"));
    }
    let split = msg
        .rfind("\n\n")
        .ok_or(bad("no blank line before the signatures"))?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(bad("the signatures do not end in a newline"));
    };
    let mut note = Note {
        text: text.to_owned(),
        verified: Vec::new(),
        unverified: Vec::new(),
    };
    for (count, line) in sigs.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(bad("too many signatures"));
        }
        let sig = Signature::parse_line(line)?;
        let mut matching = known
            .iter()
            .filter(|v| v.name() == sig.name && v.key_id() == sig.key_id);
        let Some(verifier) = matching.next() else {
            if !note.unverified.contains(&sig) {
                note.unverified.push(sig);
            }
            continue;
        };
        if matching.next().is_some() {
            return Err(NoteError::AmbiguousKey {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        if note
            .verified
            .iter()
            .any(|v| v.name == sig.name && v.key_id == sig.key_id)
        {
            continue;
        }
        if !verifier.verify(text.as_bytes(), &sig.sig) {
            return Err(NoteError::InvalidSignature {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        note.verified.push(sig);
    }
    if note.verified.is_empty() {
        let signers: Vec<String> = note
            .unverified
            .iter()
            .map(|s| format!("{}+{:08x}", s.name, s.key_id))
            .collect();
        return Err(NoteError::NoTrustedSignature {
            signers: signers.join(", "),
        });
    }
    Ok(note)
}

// Cosignatures (c2sp.org/tlog-cosignature, `cosignature.rs`) are checked
// here, with every other signature type a verifier key can name.

/// The signature type of Ed25519 cosignatures.
pub(crate) const COSIGNATURE_TYPE: u8 = 0x04;
/// A timestamp is at most 2^63 − 1.
pub(crate) const MAX_TIMESTAMP: u64 = i64::MAX as u64;
pub(super) const TIMESTAMP_BYTES: usize = 8;
pub(super) const ED25519_SIGNATURE_BYTES: usize = 64;

/// The message a cosignature signs.
pub(crate) fn signed_message(timestamp: u64, checkpoint_text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// True when `sig` (the bytes after the key ID) is `key`'s cosignature of
/// the checkpoint note `text`: [`NoteVerifier`]'s check for type 0x04.
pub(crate) fn verify_cosignature(key: &NoteVerifier, text: &[u8], sig: &[u8]) -> bool {
    let (Some((time, ed25519)), Ok(text)) = (
        sig.split_first_chunk::<TIMESTAMP_BYTES>(),
        std::str::from_utf8(text),
    ) else {
        return false;
    };
    let time = u64::from_be_bytes(*time);
    time <= MAX_TIMESTAMP
        && ed25519.len() == ED25519_SIGNATURE_BYTES
        && key.ed25519_verifies(&signed_message(time, text), ed25519)
}

#[cfg(test)]
#[path = "note_tests.rs"]
mod tests;
