//! Record authentication: the keys that bind a stored record to where it
//! is stored, so that a record planted, edited or moved by someone who can
//! write the files but does not hold the keyring is refused.
//!
//! Both keys come from one random secret made at `init` (or at the upgrade
//! to schema 3), kept in `meta` sealed under the keyring's derived sealing
//! key. HKDF-SHA256 separates them:
//!
//! - the token digest key: a token record is stored under
//!   HMAC(key, SHA-256(token)), so nobody can compute where the record of
//!   a token of their own choosing would go;
//! - the record MAC key: each key record carries HMAC over its id and
//!   value (provider, name, ciphertext, times), each token record HMAC over
//!   its storage key and value (name, role, scopes, providers, times).
//!
//! The secret is random rather than derived from the keyring so that a
//! keyring rotation re-seals one value instead of moving every token.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The purpose name the record secret is sealed under.
pub const SEALED_PURPOSE: &str = "record-secret";

const LABEL_TOKEN_DIGEST: &[u8] = b"keyhold/token-digest";
const LABEL_RECORD_MAC: &[u8] = b"keyhold/record-mac";
const LABEL_TOKEN_LAYER: &[u8] = b"keyhold/token-digest-layer";
const LABEL_AUDIT_TAG: &[u8] = b"keyhold/audit-tag";
const LABEL_STATE: &[u8] = b"keyhold/state-digest";
const LABEL_STATE_MASK: &[u8] = b"keyhold/state-mask";
const LABEL_STATE_SEAL: &[u8] = b"keyhold/state-seal";
pub(crate) const TAG_KEY_RECORD: &[u8] = b"keyhold-key-record-v2";
/// Key records of schema 4 (versions, soft deletion): their own tag, so a
/// body of one layout never verifies as the other.
pub(crate) const TAG_KEY_RECORD_V3: &[u8] = b"keyhold-key-record-v3";
pub(crate) const TAG_TOKEN_RECORD: &[u8] = b"keyhold-token-record-v2";
/// Records of schema 5, whose MAC also covers their stamp.
pub(crate) const TAG_KEY_RECORD_V4: &[u8] = b"keyhold-key-record-v4";
/// Key records holding versions in the recovery window.
pub(crate) const TAG_KEY_RECORD_V5: &[u8] = b"keyhold-key-record-v5";
pub(crate) const TAG_TOKEN_RECORD_V4: &[u8] = b"keyhold-token-record-v4";

/// The keys derived from the store's record secret. Zeroized on drop,
/// never printed.
///
/// Two kinds of secret feed them. The record secret, made at `init`, gives
/// the base of the token digest and the audit tag key of the records
/// written before the first rotation. Each rotation makes a record MAC
/// secret (`ops::rewrap`): the newest gives every key that authenticates or
/// seals something current (the record MAC, the state digest's keys, the
/// audit tag key from its rotation on: [`AuditTagKeys`]), and each adds a
/// layer to the token digest, so that a
/// token's record is stored at HMAC(layer n, … HMAC(layer 1, HMAC(base,
/// SHA-256(token)))): nothing derived from a retired key authenticates a
/// record or finds where one would go. Until the first rotation the record
/// secret is the MAC secret and there is no layer. While a rotation moves
/// the records over, `next_mac` and `next_layer` come from the next secret:
/// records are written under it and read under either.
pub struct RecordKeys {
    token_digest: Zeroizing<[u8; 32]>,
    record_mac: Zeroizing<[u8; 32]>,
    audit_tag: Zeroizing<[u8; 32]>,
    /// The audit tag key of each record MAC secret, oldest first.
    mac_tags: Vec<Zeroizing<[u8; 32]>>,
    state: Zeroizing<[u8; 32]>,
    state_mask: Zeroizing<[u8; 32]>,
    state_seal: Zeroizing<[u8; 32]>,
    layers: Vec<Zeroizing<[u8; 32]>>,
    next_mac: Option<Zeroizing<[u8; 32]>>,
    next_layer: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKeys([REDACTED])")
    }
}

fn hmac(key: &[u8; 32]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// HKDF-SHA256 of `secret` for `label`, 32 bytes.
fn derive(secret: &[u8], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, secret);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit.
    if hk.expand(label, out.as_mut()).is_err() {
        unreachable!("32 bytes of HKDF-SHA256 output");
    }
    out
}

impl RecordKeys {
    /// Derives the keys from the record secret alone (a store never
    /// rotated).
    pub fn from_secret(secret: &[u8]) -> RecordKeys {
        Self::from_secrets(secret, &[], None)
    }

    /// Derives the keys from the record secret, the record MAC secrets the
    /// rotations made (oldest first; the newest is current; none: the
    /// record secret serves) and, while a rotation moves records over, the
    /// next one.
    pub fn from_secrets(secret: &[u8], macs: &[&[u8]], next: Option<&[u8]>) -> RecordKeys {
        let mac = macs.last().copied().unwrap_or(secret);
        RecordKeys {
            token_digest: derive(secret, LABEL_TOKEN_DIGEST),
            audit_tag: derive(secret, LABEL_AUDIT_TAG),
            mac_tags: macs.iter().map(|m| derive(m, LABEL_AUDIT_TAG)).collect(),
            record_mac: derive(mac, LABEL_RECORD_MAC),
            state: derive(mac, LABEL_STATE),
            state_mask: derive(mac, LABEL_STATE_MASK),
            state_seal: derive(mac, LABEL_STATE_SEAL),
            layers: macs.iter().map(|m| derive(m, LABEL_TOKEN_LAYER)).collect(),
            next_mac: next.map(|n| derive(n, LABEL_RECORD_MAC)),
            next_layer: next.map(|n| derive(n, LABEL_TOKEN_LAYER)),
        }
    }

    /// Whether a rotation's next secret is among these keys.
    pub(crate) fn has_next(&self) -> bool {
        self.next_mac.is_some()
    }

    /// How many layers a token's storage key has now.
    pub fn layers(&self) -> u32 {
        u32::try_from(self.layers.len()).unwrap_or(u32::MAX)
    }

    /// Where the record of the token whose SHA-256 is `sha` is stored (all
    /// current layers).
    pub fn token_key(&self, sha: &[u8; 32]) -> [u8; 32] {
        let mut m = hmac(&self.token_digest);
        m.update(sha);
        let base: [u8; 32] = m.finalize().into_bytes().into();
        self.layer_from(base, 0)
    }

    /// Where that record goes once a rotation under way is done (`None`:
    /// none is).
    pub fn token_key_next(&self, sha: &[u8; 32]) -> Option<[u8; 32]> {
        self.relocate(self.token_key(sha), self.layers())
    }

    /// The storage key of a record stored under `from` layers, moved to
    /// the next secret's (`None`: no rotation under way, or `from` is more
    /// layers than there are).
    pub fn relocate(&self, at: [u8; 32], from: u32) -> Option<[u8; 32]> {
        let next = self.next_layer.as_ref()?;
        if from > self.layers() {
            return None;
        }
        let at = self.layer_from(at, from as usize);
        let mut m = hmac(next);
        m.update(&at);
        Some(m.finalize().into_bytes().into())
    }

    /// `at` with the layers from index `from` on applied.
    fn layer_from(&self, mut at: [u8; 32], from: usize) -> [u8; 32] {
        for layer in self.layers.iter().skip(from) {
            let mut m = hmac(layer);
            m.update(&at);
            at = m.finalize().into_bytes().into();
        }
        at
    }

    /// The MAC a record is written with: under the next MAC key while a
    /// rotation moves the records over, else the current one.
    pub(crate) fn record_mac(&self, tag: &[u8], at: &[u8], value: &[u8]) -> [u8; 32] {
        Self::mac_under(
            self.next_mac.as_ref().unwrap_or(&self.record_mac),
            tag,
            at,
            value,
        )
    }

    /// Whether `mac` authenticates a record: under the current MAC key or,
    /// while a rotation moves the records over, the next one.
    pub(crate) fn record_mac_ok(
        &self,
        tag: &[u8],
        at: &[u8],
        value: &[u8],
        mac: &[u8; 32],
    ) -> bool {
        let current = mac_matches(&Self::mac_under(&self.record_mac, tag, at, value), mac);
        let next = self
            .next_mac
            .as_ref()
            .is_some_and(|k| mac_matches(&Self::mac_under(k, tag, at, value), mac));
        current | next
    }

    fn mac_under(key: &[u8; 32], tag: &[u8], at: &[u8], value: &[u8]) -> [u8; 32] {
        let mut m = hmac(key);
        m.update(tag);
        m.update(&(at.len() as u32).to_be_bytes());
        m.update(at);
        m.update(value);
        m.finalize().into_bytes().into()
    }

    /// The key of each record's contribution to the state digest.
    pub(crate) fn state_key(&self) -> &[u8; 32] {
        &self.state
    }

    /// The key of the pad that hides the state digest in the head.
    pub(crate) fn state_mask_key(&self) -> &[u8; 32] {
        &self.state_mask
    }

    /// The key that authenticates the state digest in the head.
    pub(crate) fn state_seal_key(&self) -> &[u8; 32] {
        &self.state_seal
    }

    /// The audit tag keys of the seq ranges `epochs` names (meta
    /// [`META_AUDIT_TAG_EPOCHS`]); `None` if it names a record MAC secret
    /// these keys do not hold.
    pub fn audit_tags(&self, epochs: &[(u64, u32)]) -> Option<AuditTagKeys> {
        let keys = epochs
            .iter()
            .map(|(from, i)| Some((*from, self.mac_tags.get(*i as usize)?.clone())))
            .collect::<Option<Vec<_>>>()?;
        Some(AuditTagKeys {
            base: self.audit_tag.clone(),
            epochs: epochs.to_vec(),
            keys,
        })
    }

    /// The index of the newest record MAC secret, if a rotation made one.
    pub fn newest_mac_index(&self) -> Option<u32> {
        u32::try_from(self.mac_tags.len().checked_sub(1)?).ok()
    }
}

/// Meta: from which audit seq on each record MAC secret's audit tag key
/// tags the records, as postcard `Vec<(first seq, index of the secret)>`.
/// Absent: the record secret's key tags every record (a store never
/// rotated, or rotated before the tag key moved with the rotation).
pub(crate) const META_AUDIT_TAG_EPOCHS: &[u8] = b"audit_tag_epochs";

/// The keys of the per-record audit tags (checked with the keyring on
/// filtered exports; the public hash chain covers complete ones), by seq:
/// the record secret's until the first rotation that moved them, then,
/// from the first record of each rotation's switch on, the key of that
/// rotation's record MAC secret. A record written after a rotation is
/// tagged under nothing a retired Fernet key unseals.
#[derive(Clone)]
pub struct AuditTagKeys {
    base: Zeroizing<[u8; 32]>,
    epochs: Vec<(u64, u32)>,
    keys: Vec<(u64, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for AuditTagKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTagKeys")
            .field("epochs", &self.epochs)
            .finish_non_exhaustive()
    }
}

impl AuditTagKeys {
    /// The key that tags the record at `seq`.
    pub fn for_seq(&self, seq: u64) -> &[u8; 32] {
        self.keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map_or(&self.base, |(_, k)| k)
    }

    /// The key new records are tagged with.
    pub fn current(&self) -> &[u8; 32] {
        self.keys.last().map_or(&self.base, |(_, k)| k)
    }

    /// The seq ranges, as meta stores them.
    pub fn epochs(&self) -> &[(u64, u32)] {
        &self.epochs
    }
}

/// Constant-time check of a MAC.
pub(crate) fn mac_matches(a: &[u8; 32], b: &[u8; 32]) -> bool {
    crate::access::digests_equal(a, b)
}
