//! What each commit changed, for the other nodes of a shared database
//! (PostgreSQL): the check at use (`state::Fresh`) knows each record's
//! expected stamp from its own commits and from these rows, so a record
//! that another node changed and that someone then put back from an older
//! copy is refused at its first use on every node, not only on the node
//! that made the change.
//!
//! Every commit of a node writes one row, in the commit's transaction:
//! the seqs of its audit records (`first..=last`) and the key and token
//! records it wrote (storage key, stamp, fingerprint), sealed with an
//! HMAC under the state-seal key bound to those seqs. Before a node trusts
//! a record it reads, it reads the newest audit seq in the same statement
//! (one snapshot) and, if other nodes committed since what it learnt,
//! reads their rows first. The rows must follow each other without a gap
//! from what the node learnt up to that seq: a missing row (deleted, or
//! pruned while the node lagged behind) makes the node read the whole
//! store again and check it against the signed digest of the chain head
//! (`crate::unlock::check_state`), every node's appends held meanwhile; if
//! they differ, the node refuses every record it reads from then on (as
//! it would refuse to open the store). A row that does not open under the
//! keys is tampering (or another node's rotation: `KeysReplaced`).
//!
//! What it does not catch: the log's tail cut together with the head put
//! back to an older one (a rollback of the whole log, which an off-box
//! checkpoint catches), and a change racing the read itself (the record
//! as it was when the read's snapshot was taken is what the use sees).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::backend::Op;
use super::{corrupt, state, RecordKeys, Result, Stamped, Store, StoreError};

/// The label each row's HMAC starts with.
const LABEL: &[u8] = b"keyhold-changes-v1\n";

/// How many commits' rows stay in the database behind the newest (a node
/// further behind reads the whole store again).
pub(crate) const KEEP_CHANGES: u64 = 100_000;

/// How many rows one read takes.
const ROWS_PER_READ: i64 = 1_000;

/// One row's body: each record the commit wrote, with its stamp and
/// fingerprint (none: removed).
#[derive(Serialize, Deserialize)]
struct Body {
    keys: Vec<([u8; 16], u64, Option<u64>)>,
    tokens: Vec<([u8; 32], u64, Option<u64>)>,
}

fn mac(keys: &RecordKeys, first: u64, last: u64, body: &[u8]) -> [u8; 32] {
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(keys.state_seal_key()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    m.update(LABEL);
    m.update(&first.to_be_bytes());
    m.update(&last.to_be_bytes());
    m.update(body);
    m.finalize().into_bytes().into()
}

/// A commit's row, sealed: the body, then its 32-byte HMAC.
fn seal(keys: &RecordKeys, first: u64, last: u64, stamped: &Stamped) -> Result<Vec<u8>> {
    let body = Body {
        keys: stamped
            .keys
            .iter()
            .map(|(id, s)| (*id.as_bytes(), s.stamp, s.fingerprint))
            .collect(),
        tokens: stamped
            .tokens
            .iter()
            .map(|(at, s)| (*at, s.stamp, s.fingerprint))
            .collect(),
    };
    let mut out = postcard::to_stdvec(&body).map_err(corrupt("change row"))?;
    let tag = mac(keys, first, last, &out);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a row (`None`: it does not authenticate under `keys`).
fn open(keys: &RecordKeys, first: u64, last: u64, sealed: &[u8]) -> Option<Stamped> {
    let split = sealed.len().checked_sub(32)?;
    let (body, tag) = sealed.split_at(split);
    let tag: [u8; 32] = tag.try_into().ok()?;
    if !super::auth::mac_matches(&mac(keys, first, last, body), &tag) {
        return None;
    }
    let body: Body = postcard::from_bytes(body).ok()?;
    let seen = |stamp, fingerprint| state::Seen { stamp, fingerprint };
    Some(Stamped {
        keys: body
            .keys
            .into_iter()
            .map(|(id, s, f)| (Uuid::from_bytes(id), seen(s, f)))
            .collect(),
        tokens: body
            .tokens
            .into_iter()
            .map(|(at, s, f)| (at, seen(s, f)))
            .collect(),
    })
}

/// The seq of a stored chain head (meta `audit_head`), read from the
/// start of its encoding (every variant begins with the seq; see
/// `audit::Head`, whose tests check this), without judging it.
pub(crate) fn head_seq(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct SeqFirst {
        seq: u64,
    }
    #[derive(Deserialize)]
    enum HeadPrefix {
        V1(SeqFirst),
        V2(SeqFirst),
        V3(SeqFirst),
    }
    let (h, _) = postcard::take_from_bytes::<HeadPrefix>(bytes).ok()?;
    Some(match h {
        HeadPrefix::V1(s) | HeadPrefix::V2(s) | HeadPrefix::V3(s) => s.seq,
    })
}

impl Store {
    /// The op that records what the commit of audit records
    /// `first..=last` changed, where other nodes check records at use.
    pub fn changes_op(&self, stamped: &Stamped, first: u64, last: u64) -> Result<Option<Op>> {
        let (Some(_), Some(keys)) = (&self.fresh, self.record_keys()) else {
            return Ok(None);
        };
        Ok(Some(Op::Changes {
            first,
            last,
            value: seal(&keys, first, last, stamped)?,
        }))
    }

    /// After this node's own commit of audit records `first..=last`: if
    /// everything before it was learnt, so is it (its writes were noted),
    /// and no read has to fetch its row back.
    pub fn note_committed(&self, first: u64, last: u64) {
        if let Some(fresh) = &self.fresh {
            fresh.learned_through(first.saturating_sub(1), last);
        }
    }

    /// What re-reads the whole store when the change rows have a gap (see
    /// the module docs); set once, by `crate::unlock`, which checks the
    /// store against the chain head.
    pub fn set_relearn(&self, f: fn(&Store) -> Result<()>) {
        if let Some(fresh) = &self.fresh {
            fresh.set_relearn(f);
        }
    }

    /// Learns what other nodes changed up to audit seq `upto` (the newest
    /// seq read together with a record), before that record is checked.
    pub(crate) fn catch_up(&self, upto: u64) -> Result<()> {
        let Some(fresh) = &self.fresh else {
            return Ok(());
        };
        if let Some(why) = fresh.differs() {
            return Err(StoreError::Tampered {
                what: "state",
                id: why.to_string(),
            });
        }
        if !fresh.filled() || upto <= fresh.learned() {
            return Ok(());
        }
        // One reader at a time: the others wait, and find it done (a gap
        // is read whole once, not by every request that meets it).
        let _one = fresh.catching();
        if let Some(why) = fresh.differs() {
            return Err(StoreError::Tampered {
                what: "state",
                id: why.to_string(),
            });
        }
        if self.read_changes(fresh, upto)? {
            self.relearn(fresh)?;
        }
        Ok(())
    }

    /// As [`Store::catch_up`] to the log's end, for a walk over a whole
    /// table (a listing, a lookup by name); a gap in the rows is left to
    /// the next read of one record, which checks the whole store (a walk
    /// may run where every node's appends are held).
    pub(crate) fn catch_up_for_walk(&self) -> Result<()> {
        let Some(fresh) = &self.fresh else {
            return Ok(());
        };
        if !fresh.filled() {
            return Ok(());
        }
        let upto = self.audit_last_seq()?;
        if upto <= fresh.learned() {
            return Ok(());
        }
        let _one = fresh.catching();
        self.read_changes(fresh, upto).map(|_| ())
    }

    /// Forgets every change row (a database being initialised, restored
    /// or migrated into: rows left by an earlier life of it would clash).
    pub fn forget_changes(&self) -> Result<()> {
        self.backend.prune_changes(u64::MAX)
    }

    /// Reads change rows until `upto` is learnt; `true`: they have a gap.
    fn read_changes(&self, fresh: &state::Fresh, upto: u64) -> Result<bool> {
        while fresh.learned() < upto {
            let learned = fresh.learned();
            let rows = self.backend.changes_after(learned, ROWS_PER_READ)?;
            let keys = self.write_keys()?;
            let mut expect = learned.saturating_add(1);
            for (first, last, sealed) in &rows {
                if *first != expect || last < first {
                    return Ok(true);
                }
                let Some(stamped) = open(&keys, *first, *last, sealed) else {
                    let e = StoreError::Tampered {
                        what: "change",
                        id: format!("of audit records {first}..={last}"),
                    };
                    return Err(if self.keys_replaced_now()? {
                        StoreError::KeysReplaced
                    } else {
                        e
                    });
                };
                self.note_stamped(&stamped);
                fresh.set_learned(*last);
                expect = last.saturating_add(1);
            }
            if rows.is_empty() {
                // Commits up to `upto` landed, and their rows are gone.
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn relearn(&self, fresh: &state::Fresh) -> Result<()> {
        match fresh.relearn() {
            Some(f) => {
                tracing::warn!(
                    "the rows of what other nodes changed have a gap (this node lagged behind \
                     the pruning, or rows were deleted): checking the whole store against the \
                     chain head"
                );
                let res = f(self);
                if let Err(StoreError::Tampered { id, .. }) = &res {
                    // Another node's rotation also makes the head not open
                    // under this node's keys: that is no tampering.
                    if self.keys_replaced_now()? {
                        return Err(StoreError::KeysReplaced);
                    }
                    fresh.set_differs(id.clone());
                }
                res
            }
            None => Err(StoreError::Tampered {
                what: "change",
                id: "rows (a gap in them)".into(),
            }),
        }
    }

    /// Periodic upkeep on a shared database: learns what other nodes
    /// changed (so that no node lags behind the pruning) and prunes the
    /// change rows older than [`KEEP_CHANGES`] commits.
    pub fn keep_up(&self) -> Result<()> {
        let Some(fresh) = &self.fresh else {
            return Ok(());
        };
        if !fresh.filled() || self.record_keys().is_none() {
            return Ok(());
        }
        self.catch_up(self.audit_last_seq()?)?;
        self.backend
            .prune_changes(fresh.learned().saturating_sub(KEEP_CHANGES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_is_read_from_every_kind_of_stored_head() {
        use crate::audit::{AuditSigner, Head};
        let signer = AuditSigner::from_seed(&[3u8; 32]).unwrap();
        let mac = [9u8; 32];
        for seq in [1u64, 127, 128, 300_000, u64::MAX >> 1] {
            let heads = [
                Head::V1 {
                    seq,
                    mac,
                    head_mac: [1; 32],
                },
                Head::V2 {
                    seq,
                    mac,
                    sig: signer.sign(seq, &mac),
                },
                Head::V3 {
                    seq,
                    mac,
                    sig: signer.sign(seq, &mac),
                    state: crate::store::SealedState {
                        body: vec![5; 40],
                        mac: [6; 32],
                    },
                },
            ];
            for h in heads {
                assert_eq!(head_seq(&h.encode().unwrap()), Some(seq), "{h:?}");
            }
        }
        assert_eq!(head_seq(b""), None);
    }

    #[test]
    fn a_row_opens_only_for_its_seqs_and_keys() {
        let keys = RecordKeys::from_secret(&[7u8; 32]);
        let other = RecordKeys::from_secret(&[8u8; 32]);
        let stamped = Stamped {
            keys: vec![(
                Uuid::from_bytes([1; 16]),
                state::Seen {
                    stamp: 5,
                    fingerprint: Some(9),
                },
            )],
            tokens: vec![(
                [2; 32],
                state::Seen {
                    stamp: 5,
                    fingerprint: None,
                },
            )],
        };
        let sealed = seal(&keys, 5, 6, &stamped).unwrap();
        let opened = open(&keys, 5, 6, &sealed).unwrap();
        assert_eq!(opened.keys, stamped.keys);
        assert_eq!(opened.tokens, stamped.tokens);
        assert!(open(&keys, 4, 6, &sealed).is_none());
        assert!(open(&keys, 5, 7, &sealed).is_none());
        assert!(open(&other, 5, 6, &sealed).is_none());
        let mut edited = sealed.clone();
        edited[3] ^= 1;
        assert!(open(&keys, 5, 6, &edited).is_none());
        assert!(open(&keys, 5, 6, &sealed[..10]).is_none());
    }
}
