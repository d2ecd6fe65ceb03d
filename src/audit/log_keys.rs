//! The audit log's keys: the MAC key of records from before schema 3,
//! the keyed tag of each record, the keys a verifier holds, and the
//! secrets `AuditKeys` unseals from the store with the keyring.

use super::*;
use crate::store::{AuditTagKeys, META_AUDIT_TAG_EPOCHS};

/// The MAC key of records written before schema 3, zeroized on drop.
#[derive(Clone)]
pub struct MacKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([REDACTED])")
    }
}

/// The purpose name the pre-schema-3 audit MAC key is sealed under.
pub(crate) const MAC_KEY_PURPOSE: &str = "audit-mac-key";

impl MacKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<MacKey> {
        let b: [u8; 32] = bytes.try_into().ok()?;
        Some(MacKey(Zeroizing::new(b)))
    }

    /// The raw key. Only for checks of where it must never appear (the
    /// secrets-at-rest test); keyhold itself only ever seals it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn hmac(&self) -> Hmac<Sha256> {
        hmac_of(&self.0)
    }

    /// mac = HMAC(key, prev || canonical bytes) (V1 records).
    pub fn record_mac(
        &self,
        prev: &[u8; 32],
        seq: u64,
        at_us: i64,
        event: &AuditEvent,
    ) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(prev);
        m.update(&AuditRecord::canonical_bytes(seq, at_us, event));
        m.finalize().into_bytes().into()
    }

    pub(super) fn head_mac(&self, seq: u64, mac: &[u8; 32]) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(HEAD_TAG);
        m.update(&seq.to_be_bytes());
        m.update(mac);
        m.finalize().into_bytes().into()
    }

    /// A V1 head for (seq, mac).
    pub fn head(&self, seq: u64, mac: [u8; 32]) -> Head {
        Head::V1 {
            seq,
            mac,
            head_mac: self.head_mac(seq, &mac),
        }
    }
}

fn hmac_of(key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; 32 bytes never fails.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// The keyed tag of a V2 record: HMAC(tag key, mac).
pub fn record_tag(tag_key: &[u8; 32], mac: &[u8; 32]) -> [u8; 32] {
    let mut m = hmac_of(tag_key);
    m.update(mac);
    m.finalize().into_bytes().into()
}

/// What a verifier checks records with. Any part may be absent: an
/// auditor holding only a public key has no MAC or tag key.
#[derive(Clone, Default)]
pub struct VerifyKeys {
    /// Checks records written before schema 3.
    pub legacy: Option<MacKey>,
    /// Checks each V2 record's tag (under the key of its seq's range).
    pub tag: Option<AuditTagKeys>,
    /// Public keys whose signatures are trusted (and, through hand-over
    /// records they sign, their successors').
    pub trusted: Vec<PublicKey>,
}

impl std::fmt::Debug for VerifyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKeys")
            .field("legacy", &self.legacy.is_some())
            .field("tag", &self.tag.is_some())
            .field("trusted", &self.trusted)
            .finish()
    }
}

impl VerifyKeys {
    /// Only a public key (an auditor without the keyring).
    pub fn public(key: PublicKey) -> VerifyKeys {
        VerifyKeys {
            trusted: vec![key],
            ..VerifyKeys::default()
        }
    }
}

/// The audit tag keys of the store's records (see [`AuditTagKeys`]); the
/// store's record keys must be applied.
pub(crate) fn tag_keys(store: &Store) -> Result<AuditTagKeys, AuditError> {
    let keys = store
        .record_keys()
        .ok_or(AuditError::Store(StoreError::Locked))?;
    let epochs: Vec<(u64, u32)> = match store.meta_value(META_AUDIT_TAG_EPOCHS)? {
        None => Vec::new(),
        Some(v) => postcard::from_bytes(&v).map_err(|_| {
            AuditError::Store(StoreError::Corrupt {
                what: "audit tag epochs",
                detail: "not a list of (seq, secret index)".into(),
            })
        })?,
    };
    keys.audit_tags(&epochs)
        .ok_or(AuditError::Store(StoreError::Corrupt {
            what: "audit tag epochs",
            detail: "they name a record MAC secret the store does not hold".into(),
        }))
}

/// The audit log's secrets, unsealed from the store with the keyring.
pub struct AuditKeys {
    pub legacy: Option<MacKey>,
    pub(super) tag: AuditTagKeys,
    pub(super) signer: AuditSigner,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field("public", &self.signer.public_key())
            .finish_non_exhaustive()
    }
}

impl AuditKeys {
    /// Unseals the signing key (and the MAC key of older records) with
    /// the keyring; the tag key comes from the store's record keys, which
    /// must be applied (`crate::unlock`).
    pub fn unseal(store: &Store, keyring: &Keyring) -> Result<AuditKeys, AuditError> {
        let tag = tag_keys(store)?;
        let seed = store
            .meta_string(META_SIGNING_KEY)?
            .ok_or(AuditError::NoMacKey)?;
        let seed = keyring
            .unseal(SIGNING_PURPOSE, &seed)
            .map_err(|_| AuditError::MacKeyLocked)?;
        let signer =
            AuditSigner::from_seed(seed.secret.expose()).map_err(|_| AuditError::MacKeyLocked)?;
        let legacy = match store.meta_string(META_AUDIT_KEY)? {
            None => None,
            Some(t) => {
                let opened = keyring
                    .unseal(MAC_KEY_PURPOSE, &t)
                    .map_err(|_| AuditError::MacKeyLocked)?;
                Some(MacKey::from_bytes(opened.secret.expose()).ok_or(AuditError::MacKeyLocked)?)
            }
        };
        Ok(AuditKeys {
            legacy,
            tag,
            signer,
        })
    }

    /// The current signing key's public key.
    pub fn public_key(&self) -> PublicKey {
        self.signer.public_key()
    }

    /// What the store's own verification uses: every key, trusting the
    /// current signing key.
    pub fn verify_keys(&self) -> VerifyKeys {
        VerifyKeys {
            legacy: self.legacy.clone(),
            tag: Some(self.tag.clone()),
            trusted: vec![self.signer.public_key()],
        }
    }
}
