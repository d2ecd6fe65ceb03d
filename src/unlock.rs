//! Opening a store with the keyring: the check value, the record keys,
//! and the one-time upgrade of a store from before schema 3.
//!
//! Every command that works on a store calls [`unlock`] first: it refuses a
//! keyring that does not open the store's check value, applies the record
//! keys (so records are authenticated from then on) and, for a store made
//! by an older keyhold, upgrades it in place:
//!
//! 1. one transaction writes the new sealed secrets (record secret, audit
//!    signing key), re-seals the old audit MAC key and the check value
//!    under the keyring's derived keys, and moves every token record to its
//!    keyed digest, authenticated;
//! 2. every key record is authenticated in place (compare-and-swap each);
//! 3. one audit commit appends the `upgrade` record, the first record of
//!    the signed chain, and marks the store schema 3.
//!
//! A crash between the steps resumes where it stopped at the next open
//! (step 1 leaves a mark in `meta`). Not for: serving or HTTP.
//!
//! Over 500 lines: one concept, opening a store with the keyring — the
//! check at open that must run before any upgrade writes, and each upgrade
//! in the order a store from before meets them.

use zeroize::Zeroizing;

use crate::audit::{
    Action, AuditError, AuditEvent, AuditLog, AuditSigner, Outcome, PublicKey, MAC_KEY_PURPOSE,
    SIGNING_PURPOSE,
};
use crate::keyring::{Keyring, CHECK_PLAINTEXT};
use crate::store::{
    RecordKeys, Store, StoreError, Write, META_AUDIT_KEY, META_CHECK, META_PUBLIC_KEY,
    META_RECORD_MAC_NEXT, META_RECORD_MAC_SECRET, META_RECORD_SECRET, META_SCHEMA,
    META_SIGNING_KEY, META_UPGRADING, RECORD_MAC_PURPOSE, RECORD_SECRET_PURPOSE,
};

/// Why a store could not be opened with this keyring. Messages say what
/// to do and never hold key material.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error(
        "the keyring does not open this store (wrong key): no key from {origin} opens it (it was \
         initialised with another Fernet key). Set the key it was initialised with \
         (FERNET_KEYS=new,old during a rotation; a retired key is in the key file's retired \
         section)"
    )]
    WrongKey { origin: String },
    #[error("the store has no {0}: it is damaged; restore it from a backup")]
    Missing(&'static str),
    #[error(
        "the store's {0} does not open with the keyring although its check value does: it was \
         replaced outside keyhold. Restore the store from a backup"
    )]
    Sealed(&'static str),
    #[error(
        "the store is marked as older than schema 3 (or as being upgraded), but it holds what only \
         schema 3 writes (a signed audit log, sealed secrets) or its upgrade mark does not open \
         with the keyring: it was changed outside keyhold. It is refused; restore it from a backup"
    )]
    Downgraded,
    #[error(
        "the store differs from the state its signed audit log last recorded: {}. A record was \
         put back from an older copy, added, removed or changed outside keyhold, and the store \
         is refused. Run `keyhold check` to list the records, and restore the store from a \
         backup",
        .0.join("; ")
    )]
    StateDiffers(Vec<String>),
    #[error(
        "the audit chain head is older than the log: the log ends at seq {found} but the head at \
         seq {head}. The head (and with it the state it vouches for) was put back from an older \
         copy, or records were added after it; the store is refused. Run `keyhold check`, and \
         restore the store from a backup"
    )]
    HeadRolledBack { head: u64, found: u64 },
    #[error(
        "the store's audit chain head is missing (it holds records, or is marked schema 5): it \
         was removed outside keyhold, and the store is refused. Restore it from a backup (if \
         `keyhold init` was interrupted before its first record, remove the new store and run \
         init again)"
    )]
    HeadMissing,
    #[error(
        "the store is marked schema {0} but its chain head holds no state digest (a head from \
         an older copy was put back): the store is refused. Restore it from a backup"
    )]
    HeadWithoutState(u32),
    #[error(
        "audit record {0} from before schema 3 does not match its MAC (or its link): the log \
         was changed outside keyhold, so its old records cannot be committed to by the \
         upgrade. Run `keyhold audit verify`, and restore from a backup"
    )]
    LegacyRecordAltered(u64),
    #[error("the system random generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The purpose the mark of an upgrade under way is sealed for.
const UPGRADE_PURPOSE: &str = "upgrade-in-progress";

/// Checks the keyring against the store, applies the record keys and, for
/// a store from before schema 3, upgrades it (audited). Returns whether it
/// upgraded.
pub fn unlock(store: &Store, keyring: &Keyring) -> Result<bool, UnlockError> {
    let marker = store.meta_string(META_UPGRADING)?;
    let upgrading = marker.is_some();
    if store.schema() < 3 {
        // An upgrade ends with the first signed audit record. A store that
        // says it is older (or mid-upgrade) but whose log is already signed
        // had its schema mark changed outside keyhold, to have records
        // planted since then authenticated by a new "upgrade": refuse.
        if let Some(crate::audit::Head::V2 { .. } | crate::audit::Head::V3 { .. }) =
            crate::audit::Head::load(store)?
        {
            return Err(UnlockError::Downgraded);
        }
        if let Some((_, last)) = store.audit_iter(0).last().transpose()? {
            if crate::audit::AuditRecord::decode(&last).is_ok_and(|r| r.is_v2()) {
                return Err(UnlockError::Downgraded);
            }
        }
        match &marker {
            // The mark of an upgrade under way is sealed under the keyring
            // (step 1 writes it): a copied or made-up mark does not open,
            // so nobody without the keyring can make keyhold resume an
            // upgrade and authenticate records planted meanwhile.
            Some(m) => {
                if keyring.unseal(UPGRADE_PURPOSE, m).is_err() {
                    return Err(UnlockError::Downgraded);
                }
            }
            // A store that never was at schema 3 holds none of its secrets.
            None => {
                for name in [META_RECORD_SECRET, META_SIGNING_KEY, META_PUBLIC_KEY] {
                    if store.meta_value(name)?.is_some() {
                        return Err(UnlockError::Downgraded);
                    }
                }
            }
        }
    }
    if store.schema() >= 3 || upgrading {
        let check = store
            .check_value()?
            .ok_or(UnlockError::Missing("keyring check value"))?;
        if keyring.opens_check(&check).is_none() {
            return Err(wrong_key(keyring));
        }
        apply_record_keys(store, keyring)?;
        if store.schema() >= 3 {
            // The state is checked before anything is written: an upgrade
            // would otherwise vouch for whatever the store holds now.
            check_state(store)?;
            let to_4 = upgrade_to_4(store, keyring)?;
            let to_5 = upgrade_to_5(store, keyring)?;
            store.set_relearn(relearn);
            store.learn_stamps()?;
            return Ok(to_4 || to_5);
        }
    } else {
        upgrade_step_1(store, keyring)?;
    }
    let keys = store.upgrade_keys()?;
    let log = AuditLog::open(store.clone(), keyring)?;
    let (last, _) = log.head();
    let prefix = match legacy_prefix(store, keyring)? {
        Some((n, hash)) => format!(
            "; {}{n} sha256 {}",
            crate::audit::LEGACY_PREFIX_WORDS,
            crate::audit::hex(&hash)
        ),
        None => String::new(),
    };
    let mut ev = AuditEvent::cli(
        Action::Upgrade,
        Outcome::Success,
        Some(format!(
            "upgrade to schema 3: records 1..={last} are HMAC-chained (verified with the keyring); \
             from here on records are hash-chained and signed by {}; {keys} key records \
             authenticated; token records moved to keyed digests{prefix}",
            log.public_key()
        )),
    );
    ev.caller = "upgrade".into();
    log.append(&[(
        ev,
        vec![
            Write::Meta {
                name: META_SCHEMA,
                value: Some(Store::schema_bytes(3)?),
            },
            Write::Meta {
                name: META_UPGRADING,
                value: None,
            },
        ],
    )])?;
    store.set_schema(3);
    tracing::warn!(
        audit_public_key = %log.public_key(),
        "upgraded the store to schema 3 (authenticated records, signed audit log); make a new \
         backup now: older backups restore only with --allow-unauthenticated"
    );
    drop(log);
    upgrade_to_4(store, keyring)?;
    upgrade_to_5(store, keyring)?;
    store.set_relearn(relearn);
    store.learn_stamps()?;
    Ok(true)
}

/// Reads a shared store whole again and checks it against the chain head
/// (a node whose change rows have a gap: `store::changes`).
fn relearn(store: &Store) -> Result<(), StoreError> {
    check_state(store).map_err(|e| match e {
        UnlockError::Store(e) => e,
        other => StoreError::Tampered {
            what: "state",
            id: format!("as a whole ({other})"),
        },
    })
}

/// Refuses a store whose records differ from the state digest its signed
/// chain head holds (see `store::state`), or whose head was put back from
/// an older copy. A head from before schema 5 holds no digest: nothing to
/// compare yet (the upgrade to 5 writes the first).
pub(crate) fn check_state(store: &Store) -> Result<(), UnlockError> {
    // On a shared database no node appends while the store is read, so
    // the head, the log's end and the records are one state.
    let _appends_held = store.lock_appends()?;
    let head = crate::audit::Head::load(store)?;
    let last = store.audit_last_seq()?;
    let Some(head) = head else {
        // Only a store whose `init` never wrote its first record has no
        // head: one with records, or marked schema 5, lost it.
        if last > 0 || store.schema() >= 5 {
            return Err(UnlockError::HeadMissing);
        }
        return Ok(());
    };
    // A commit writes its records and the head together: records after
    // the head mean the head (and the state it vouches for) was put back
    // from an older copy.
    if last > head.seq() {
        return Err(UnlockError::HeadRolledBack {
            head: head.seq(),
            found: last,
        });
    }
    let keys = store.record_keys().ok_or(StoreError::Locked)?;
    let signed = match head.state(&keys) {
        Ok(Some(d)) => d,
        Ok(None) if store.schema() >= 5 => {
            return Err(UnlockError::HeadWithoutState(store.schema()))
        }
        Ok(None) => return Ok(()),
        Err(_) => {
            return Err(UnlockError::StateDiffers(vec![
                "the chain head's state digest does not open with the store's keys (it was \
                 replaced or edited)"
                    .into(),
            ]))
        }
    };
    let found = store.compute_state()?;
    let differences = signed.differences(&found);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(UnlockError::StateDiffers(differences))
    }
}

/// The hash of the log's old-format prefix (records 1..=N without tag,
/// each checked under the old MAC key and linked to the one before), or
/// `None` when the log starts signed. See `audit::legacy_prefix_update`.
fn legacy_prefix(store: &Store, keyring: &Keyring) -> Result<Option<(u64, [u8; 32])>, UnlockError> {
    use sha2::Digest;
    let keys = crate::audit::AuditKeys::unseal(store, keyring)?;
    let mut h = crate::audit::legacy_prefix_hasher();
    let mut n = 0u64;
    let mut prev = crate::audit::GENESIS;
    for item in store.audit_iter(0) {
        let (seq, bytes) = item?;
        let rec = crate::audit::AuditRecord::decode(&bytes)
            .map_err(|_| UnlockError::LegacyRecordAltered(seq))?;
        if rec.is_v2() {
            break;
        }
        let Some(k) = &keys.legacy else {
            return Err(UnlockError::LegacyRecordAltered(seq));
        };
        let want = k.record_mac(&rec.prev, rec.seq, rec.at_us, &rec.event);
        if rec.seq != n + 1
            || rec.seq != seq
            || !crate::access::digests_equal(&want, &rec.mac)
            || !crate::access::digests_equal(&rec.prev, &prev)
        {
            return Err(UnlockError::LegacyRecordAltered(seq));
        }
        crate::audit::legacy_prefix_update(&mut h, &rec);
        prev = rec.mac;
        n += 1;
    }
    Ok((n > 0).then(|| (n, h.finalize().into())))
}

/// Whether the log's upgrade to schema 3 already committed to the
/// old-format prefix (upgrades since schema 5 do; older ones did not).
fn prefix_committed(store: &Store) -> Result<bool, UnlockError> {
    for item in store.audit_iter(0) {
        let (_, bytes) = item?;
        let Ok(rec) = crate::audit::AuditRecord::decode(&bytes) else {
            continue;
        };
        if rec.is_v2() {
            return Ok(rec.event.action == Action::Upgrade
                && rec
                    .event
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains(crate::audit::LEGACY_PREFIX_WORDS)));
        }
    }
    Ok(true)
}

/// Schema 4 → 5 (the state commitment): nothing is rewritten (older
/// records read with stamp 0); one audited commit writes the first chain
/// head that holds the state digest and marks the store. For a store
/// upgraded to schema 3 before upgrades committed to the old-format
/// prefix, the record also commits to it (checked under the old MAC key
/// first), so a verifier with the public key alone checks those records.
/// A crash before the commit leaves the store at schema 4: the next open
/// upgrades it again.
fn upgrade_to_5(store: &Store, keyring: &Keyring) -> Result<bool, UnlockError> {
    if store.schema() >= 5 {
        return Ok(false);
    }
    let prefix = if prefix_committed(store)? {
        String::new()
    } else {
        match legacy_prefix(store, keyring) {
            Ok(Some((n, hash))) => format!(
                "; the records from before schema 3 are committed to: {}{n} sha256 {}",
                crate::audit::LEGACY_PREFIX_WORDS,
                crate::audit::hex(&hash)
            ),
            Ok(None) => String::new(),
            // A damaged old record is `audit verify`'s to report: the
            // upgrade goes on without vouching for the prefix.
            Err(UnlockError::LegacyRecordAltered(seq)) => {
                tracing::warn!(
                    seq,
                    "an audit record from before schema 3 does not match its MAC: the upgrade \
                     does not commit to those records; run `keyhold audit verify`"
                );
                String::new()
            }
            Err(e) => return Err(e),
        }
    };
    mark_schema(
        store,
        keyring,
        5,
        format!(
            "upgrade to schema 5: every key, token and meta record is bound to the signed chain \
             (the chain head holds the state digest; records carry the seq that wrote them){prefix}"
        ),
    )?;
    tracing::info!("upgraded the store to schema 5 (state bound to the signed audit log)");
    Ok(true)
}

/// One audited commit that marks the store at `schema`, its record saying
/// what the upgrade means.
fn mark_schema(
    store: &Store,
    keyring: &Keyring,
    schema: u32,
    detail: String,
) -> Result<(), UnlockError> {
    let log = AuditLog::open(store.clone(), keyring)?;
    let mut ev = AuditEvent::cli(Action::Upgrade, Outcome::Success, Some(detail));
    ev.caller = "upgrade".into();
    log.append(&[(
        ev,
        vec![Write::Meta {
            name: META_SCHEMA,
            value: Some(Store::schema_bytes(schema)?),
        }],
    )])?;
    store.set_schema(schema);
    Ok(())
}

/// Schema 3 → 4 (key versions and soft deletion, token expiry and last
/// use): nothing to rewrite, since older records read as they are; one
/// audited commit marks the store, so an older keyhold refuses it rather
/// than misread the new record variants. Returns whether it upgraded.
fn upgrade_to_4(store: &Store, keyring: &Keyring) -> Result<bool, UnlockError> {
    if store.schema() >= 4 {
        return Ok(false);
    }
    mark_schema(
        store,
        keyring,
        4,
        "upgrade to schema 4: key versions, soft deletion with a recovery window, token expiry \
         and last use; existing records are read as they are"
            .into(),
    )?;
    tracing::info!("upgraded the store to schema 4 (key versions, soft deletion, token expiry)");
    Ok(true)
}

fn wrong_key(keyring: &Keyring) -> UnlockError {
    UnlockError::WrongKey {
        origin: keyring.source().to_string(),
    }
}

fn apply_record_keys(store: &Store, keyring: &Keyring) -> Result<(), UnlockError> {
    store.set_record_keys(record_keys(store, keyring)?);
    Ok(())
}

/// The store's record keys as its meta values and the keyring give them:
/// the record secret, the record MAC secret once a rotation made one, and
/// the next one while a rotation is unfinished.
pub(crate) fn record_keys(store: &Store, keyring: &Keyring) -> Result<RecordKeys, UnlockError> {
    let sealed = store
        .meta_string(META_RECORD_SECRET)?
        .ok_or(UnlockError::Missing("record secret"))?;
    let secret = keyring
        .unseal(RECORD_SECRET_PURPOSE, &sealed)
        .map_err(|_| UnlockError::Sealed("record secret"))?;
    let mut macs = Vec::new();
    for (name, what) in [
        (META_RECORD_MAC_SECRET, "record MAC secret"),
        (META_RECORD_MAC_NEXT, "next record MAC secret"),
    ] {
        macs.push(match store.meta_string(name)? {
            Some(sealed) => Some(
                keyring
                    .unseal(RECORD_MAC_PURPOSE, &sealed)
                    .map_err(|_| UnlockError::Sealed(what))?,
            ),
            None => None,
        });
    }
    // The MAC secrets the rotations made, oldest first, 32 bytes each.
    let history: Vec<&[u8]> = match &macs[0] {
        Some(u) => {
            let all = u.secret.expose();
            if all.is_empty() || all.len() % 32 != 0 {
                return Err(UnlockError::Sealed("record MAC secret"));
            }
            all.chunks_exact(32).collect()
        }
        None => Vec::new(),
    };
    let next = match &macs[1] {
        Some(u) if u.secret.expose().len() != 32 => {
            return Err(UnlockError::Sealed("next record MAC secret"))
        }
        Some(u) => Some(u.secret.expose()),
        None => None,
    };
    Ok(RecordKeys::from_secrets(
        secret.secret.expose(),
        &history,
        next,
    ))
}

fn random32() -> Result<Zeroizing<[u8; 32]>, UnlockError> {
    let mut b = Zeroizing::new([0u8; 32]);
    getrandom::fill(b.as_mut()).map_err(|e| UnlockError::Random(e.to_string()))?;
    Ok(b)
}

/// Step 1 of the upgrade (see the module docs).
fn upgrade_step_1(store: &Store, keyring: &Keyring) -> Result<(), UnlockError> {
    // The old check value and MAC key are under the keyring keys themselves.
    let check = store
        .check_value()?
        .ok_or(UnlockError::Missing("keyring check value"))?;
    match keyring.decrypt(&check) {
        Ok(o) if o.plaintext.expose() == CHECK_PLAINTEXT => {}
        _ => return Err(wrong_key(keyring)),
    }
    let old_mac = store
        .audit_key_token()?
        .ok_or(UnlockError::Missing("audit MAC key"))?;
    let old_mac = keyring
        .decrypt(&old_mac)
        .map_err(|_| UnlockError::Sealed("audit MAC key"))?;
    if old_mac.plaintext.len() != 32 {
        return Err(UnlockError::Sealed("audit MAC key"));
    }
    let (mut meta, _) = new_secrets(store, keyring)?;
    meta.push((META_CHECK, keyring.check_token().into_bytes()));
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| UnlockError::Random(e.to_string()))?;
    meta.push((
        META_UPGRADING,
        keyring.seal(UPGRADE_PURPOSE, &nonce).into_bytes(),
    ));
    meta.push((
        META_AUDIT_KEY,
        keyring
            .seal(MAC_KEY_PURPOSE, old_mac.plaintext.expose())
            .into_bytes(),
    ));
    store.upgrade_meta_and_tokens(&meta)?;
    Ok(())
}

/// A meta value to write: its name and bytes.
type MetaValue = (&'static [u8], Vec<u8>);

/// Makes a new record secret and audit signing key, applies the record
/// keys to `store`, and returns their sealed meta values (with the public
/// key) and the public key.
fn new_secrets(
    store: &Store,
    keyring: &Keyring,
) -> Result<(Vec<MetaValue>, PublicKey), UnlockError> {
    let secret = random32()?;
    let (signer, seed) = AuditSigner::generate().map_err(|e| UnlockError::Random(e.to_string()))?;
    store.set_record_keys(RecordKeys::from_secret(secret.as_ref()));
    let public = signer.public_key();
    let meta = vec![
        (
            META_RECORD_SECRET,
            keyring
                .seal(RECORD_SECRET_PURPOSE, secret.as_ref())
                .into_bytes(),
        ),
        (
            META_SIGNING_KEY,
            keyring.seal(SIGNING_PURPOSE, seed.as_ref()).into_bytes(),
        ),
        (META_PUBLIC_KEY, public.0.to_vec()),
    ];
    Ok((meta, public))
}

/// Initialises an empty store: the check value, a new record secret and
/// audit signing key (sealed), and the record keys applied. Returns the
/// audit public key.
pub fn initialise(store: &Store, keyring: &Keyring) -> Result<PublicKey, UnlockError> {
    let (meta, public) = new_secrets(store, keyring)?;
    // A database that held an earlier store may keep its change rows.
    store.forget_changes()?;
    store.initialise(&keyring.check_token(), &meta)?;
    Ok(public)
}
