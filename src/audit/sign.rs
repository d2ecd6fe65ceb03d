//! Ed25519 signatures of the audit chain: anyone holding only the public
//! key verifies an export (the CloudTrail model, without AWS).
//!
//! Each commit of the audit writer signs its newest record's (seq, hash);
//! as every record's hash covers the one before it, one trusted signature
//! covers every record up to it. The signing key's seed is made at `init`
//! (or at the upgrade to schema 3) and kept in `meta` sealed under the
//! keyring's derived sealing key; a keyring rotation starts a new one,
//! handed over by a record the old key signs (see `AuditLog::hand_over`).

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::hex;

/// The purpose name the signing key's seed is sealed under.
pub const SIGNING_PURPOSE: &str = "audit-signing-key";
const HEAD_TAG: &[u8] = b"keyhold-audit-head-v2";
/// How a hand-over record's detail names the next key.
pub(crate) const HAND_OVER_PREFIX: &str = "hand-over to ";

/// An Ed25519 public key, printed `ed25519:<64 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", hex(&self.0))
    }
}

/// Text that is not an audit public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "an audit public key is `ed25519:` and 64 hex digits, as `keyhold audit public-key` prints it"
)]
pub struct BadPublicKey;

impl std::str::FromStr for PublicKey {
    type Err = BadPublicKey;
    fn from_str(s: &str) -> Result<PublicKey, BadPublicKey> {
        let t = s.trim();
        let h = t.strip_prefix("ed25519:").unwrap_or(t);
        super::unhex32(h).map(PublicKey).ok_or(BadPublicKey)
    }
}

/// A signature of a chain head, with the public key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key: PublicKey,
    /// 64 bytes.
    pub sig: Vec<u8>,
}

impl Signature {
    /// True when the signature is `key`'s over (seq, mac).
    pub fn verifies(&self, seq: u64, mac: &[u8; 32]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.key.0)
            .verify(&head_message(seq, mac), &self.sig)
            .is_ok()
    }

    /// `ed25519:<key hex>:<signature hex>`, as exported.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.key, hex(&self.sig))
    }

    /// Parses [`to_text`](Self::to_text).
    pub fn parse(s: &str) -> Option<Signature> {
        let rest = s.strip_prefix("ed25519:")?;
        let (k, sig) = rest.split_once(':')?;
        let key = PublicKey(super::unhex32(k)?);
        if sig.len() != 128 {
            return None;
        }
        let (a, b) = sig.split_at(64);
        let mut bytes = super::unhex32(a)?.to_vec();
        bytes.extend_from_slice(&super::unhex32(b)?);
        Some(Signature { key, sig: bytes })
    }
}

fn head_message(seq: u64, mac: &[u8; 32]) -> Vec<u8> {
    let mut m = HEAD_TAG.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(mac);
    m
}

/// The audit signing key. Never printed.
pub(crate) struct AuditSigner {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Why a signing key could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignerError {
    #[error("the system random generator failed: {0}")]
    Random(getrandom::Error),
    #[error(
        "the stored audit signing key is not a valid Ed25519 seed; restore the store from a backup"
    )]
    BadSeed,
}

impl AuditSigner {
    /// A new random key, with its seed (to be sealed).
    pub(crate) fn generate() -> Result<(AuditSigner, Zeroizing<[u8; 32]>), SignerError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(SignerError::Random)?;
        Ok((Self::from_seed(seed.as_ref())?, seed))
    }

    /// The key of a 32-byte seed.
    pub(crate) fn from_seed(seed: &[u8]) -> Result<AuditSigner, SignerError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| SignerError::BadSeed)?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| SignerError::BadSeed)?;
        Ok(AuditSigner {
            pair,
            public: PublicKey(public),
        })
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs the chain head (seq, mac).
    pub(crate) fn sign(&self, seq: u64, mac: &[u8; 32]) -> Signature {
        Signature {
            key: self.public,
            sig: self.pair.sign(&head_message(seq, mac)).as_ref().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_head_only_and_round_trips_as_text() {
        let (s, _) = AuditSigner::generate().unwrap();
        let sig = s.sign(7, &[1; 32]);
        assert!(sig.verifies(7, &[1; 32]));
        assert!(!sig.verifies(8, &[1; 32]));
        assert!(!sig.verifies(7, &[2; 32]));
        assert_eq!(Signature::parse(&sig.to_text()), Some(sig.clone()));
        let pk: PublicKey = s.public_key().to_string().parse().unwrap();
        assert_eq!(pk, s.public_key());
        let (other, _) = AuditSigner::generate().unwrap();
        let forged = Signature {
            key: other.public_key(),
            ..sig
        };
        assert!(!forged.verifies(7, &[1; 32]));
    }
}
