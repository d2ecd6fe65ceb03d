//! The stored chain head: the newest record's seq and mac, authenticated
//! by the old HMAC (V1) or by the signature of the commit that wrote it (V2).

use super::*;
use crate::store::{RecordKeys, SealedState, StateDigest};

/// Stored chain head: the newest record's seq and mac, authenticated: by
/// an HMAC under the audit MAC key (before schema 3) or by the signature
/// of the commit that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    V1 {
        seq: u64,
        mac: [u8; 32],
        head_mac: [u8; 32],
    },
    V2 {
        seq: u64,
        mac: [u8; 32],
        sig: Signature,
    },
    /// Schema 5: V2 and the sealed digest of the whole state, bound to
    /// (seq, mac) (see `store::state`).
    V3 {
        seq: u64,
        mac: [u8; 32],
        sig: Signature,
        state: SealedState,
    },
}

#[derive(Serialize, Deserialize)]
struct HeadV3 {
    seq: u64,
    mac: [u8; 32],
    sig: Signature,
    state: SealedState,
}

#[derive(Serialize, Deserialize)]
struct HeadV1 {
    seq: u64,
    mac: [u8; 32],
    head_mac: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct HeadV2 {
    seq: u64,
    mac: [u8; 32],
    sig: Signature,
}

#[derive(Serialize, Deserialize)]
enum StoredHead {
    V1(HeadV1),
    V2(HeadV2),
    V3(HeadV3),
}

impl Head {
    pub fn seq(&self) -> u64 {
        match self {
            Head::V1 { seq, .. } | Head::V2 { seq, .. } | Head::V3 { seq, .. } => *seq,
        }
    }

    pub fn mac(&self) -> [u8; 32] {
        match self {
            Head::V1 { mac, .. } | Head::V2 { mac, .. } | Head::V3 { mac, .. } => *mac,
        }
    }

    /// True when the head's HMAC (V1, with the MAC key) or signature (V2)
    /// is right. The trust in a V2 signer is the verifier's to judge.
    pub fn is_authentic(&self, legacy: Option<&MacKey>) -> bool {
        match self {
            Head::V1 {
                seq, mac, head_mac, ..
            } => legacy
                .is_some_and(|k| crate::access::digests_equal(&k.head_mac(*seq, mac), head_mac)),
            Head::V2 { seq, mac, sig } | Head::V3 { seq, mac, sig, .. } => sig.verifies(*seq, mac),
        }
    }

    /// The signature over (seq, mac), where the head carries one.
    pub fn sig(&self) -> Option<&Signature> {
        match self {
            Head::V1 { .. } => None,
            Head::V2 { sig, .. } | Head::V3 { sig, .. } => Some(sig),
        }
    }

    /// The state digest the head holds, unsealed and authenticated under
    /// the store's record keys; `Ok(None)` for a head from before schema 5.
    pub fn state(&self, keys: &RecordKeys) -> Result<Option<StateDigest>, StoreError> {
        match self {
            Head::V3 {
                seq, mac, state, ..
            } => StateDigest::unseal(state, keys, *seq, mac).map(Some),
            _ => Ok(None),
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let stored = match self.clone() {
            Head::V1 { seq, mac, head_mac } => StoredHead::V1(HeadV1 { seq, mac, head_mac }),
            Head::V2 { seq, mac, sig } => StoredHead::V2(HeadV2 { seq, mac, sig }),
            Head::V3 {
                seq,
                mac,
                sig,
                state,
            } => StoredHead::V3(HeadV3 {
                seq,
                mac,
                sig,
                state,
            }),
        };
        postcard::to_stdvec(&stored).map_err(crate::store::corrupt("audit head"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Head, StoreError> {
        Ok(
            match postcard::from_bytes(bytes).map_err(crate::store::corrupt("audit head"))? {
                StoredHead::V1(h) => Head::V1 {
                    seq: h.seq,
                    mac: h.mac,
                    head_mac: h.head_mac,
                },
                StoredHead::V2(h) => Head::V2 {
                    seq: h.seq,
                    mac: h.mac,
                    sig: h.sig,
                },
                StoredHead::V3(h) => Head::V3 {
                    seq: h.seq,
                    mac: h.mac,
                    sig: h.sig,
                    state: h.state,
                },
            },
        )
    }

    /// Reads the stored head.
    pub fn load(store: &Store) -> Result<Option<Head>, StoreError> {
        store
            .audit_head_bytes()?
            .map(|b| Head::decode(&b))
            .transpose()
    }
}
