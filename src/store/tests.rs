//! Tests of the store facade on a temporary or on-disk store.

use super::*;

/// A temporary store with record keys applied, as after `init`.
fn temp() -> Store {
    keyed(Store::temporary().unwrap())
}

fn keyed(s: Store) -> Store {
    s.set_record_keys(RecordKeys::from_secret(&[5u8; 32]));
    s
}

fn key(provider: &str, at: i64) -> KeyRecord {
    KeyRecord::new(
        Uuid::new_v4(),
        provider.into(),
        "k".into(),
        "gAAAA-not-a-real-token".into(),
        at,
        None,
        None,
    )
}

#[test]
fn newest_per_provider_is_by_created_at() {
    let s = temp();
    let a = key("claude", 10);
    let b = key("claude", 30);
    let c = key("claude", 20);
    let other = key("claudex", 40);
    s.commit_writes(
        &[],
        b"head",
        &[
            Write::PutKey(a.clone()),
            Write::PutKey(b.clone()),
            Write::PutKey(c.clone()),
            Write::PutKey(other),
        ],
    )
    .unwrap();
    let ids: Vec<Uuid> = s
        .provider_keys_newest_first("claude")
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(ids, vec![b.id, c.id, a.id]);
    assert_eq!(s.list_keys(Some("claude")).unwrap().len(), 3);
    s.commit_writes(&[], b"head", &[Write::DeleteKey(b.clone())])
        .unwrap();
    assert!(s.get_key(&b.id).unwrap().is_none());
    assert_eq!(
        s.provider_keys_newest_first("claude")
            .next()
            .unwrap()
            .unwrap()
            .id,
        c.id
    );
}

fn audit_seqs(s: &Store, from: u64) -> Vec<(u64, Vec<u8>)> {
    s.audit_iter(from)
        .map(|r| r.map(|(seq, b)| (seq, b.to_vec())).unwrap())
        .collect()
}

#[test]
fn audit_records_commit_in_chunks_and_read_back_from_any_seq() {
    let s = temp();
    // Schema-1 entries (one record each) from an older keyhold come first.
    for seq in 1..=3u64 {
        s.put_entry("audit", &seq.to_be_bytes(), &[0, seq as u8])
            .unwrap();
    }
    let all: Vec<(u64, Vec<u8>)> = (1..=40u64).map(|q| (q, vec![0, q as u8, 7])).collect();
    let mut expected: Vec<(u64, Vec<u8>)> = (1..=3u64).map(|q| (q, vec![0, q as u8])).collect();
    // Commits of 1, 2, 5 and 29 records, as group commit makes them.
    let mut at = 3;
    for n in [1, 2, 5, 29] {
        s.commit_writes(&all[at..at + n], b"h", &[]).unwrap();
        expected.extend_from_slice(&all[at..at + n]);
        at += n;
    }
    assert_eq!(audit_seqs(&s, 0), expected);
    assert_eq!(audit_seqs(&s, 13), expected[12..].to_vec());
    assert_eq!(audit_seqs(&s, 2), expected[1..].to_vec());
    assert!(audit_seqs(&s, 41).is_empty());
    let (last, bytes) = s.last_audit().unwrap().unwrap();
    assert_eq!((last, bytes.to_vec()), all[39].clone());
    // 37 records in 5 chunks (4..=11 filled across three commits, then
    // 12..=19, 20..=27, 28..=35, 36..=40), after the 3 old entries.
    assert_eq!(s.entries("audit").count(), 3 + 5);
}

/// Records `seqs`, each two bytes, as the audit writer hands them over.
fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|q| (q, vec![0, q as u8])).collect()
}

/// A store holding audit records 1..=3 in one entry.
fn store_with_three_records() -> Store {
    let s = temp();
    s.commit_writes(&records(1..=3), b"h", &[]).unwrap();
    s
}

#[test]
fn a_commit_never_writes_over_an_entry_it_did_not_write() {
    let s = temp();
    s.commit_writes(&[(1, vec![0, 1])], b"h", &[]).unwrap();
    // Entries added outside keyhold: one where record 2 would go, and
    // a newer one that is not a chunk.
    s.put_entry("audit", &2u64.to_be_bytes(), &[0, 42]).unwrap();
    s.put_entry("audit", &9u64.to_be_bytes(), &[0, 9]).unwrap();
    let entry = |seq: u64| {
        s.entries("audit")
            .map(|e| e.unwrap())
            .find(|(k, _)| **k == seq.to_be_bytes())
            .map(|(_, v)| v.to_vec())
    };
    let err = s.commit_writes(&[(2, vec![0, 2])], b"h", &[]).unwrap_err();
    assert!(err.to_string().contains("seq 2 already exists"), "{err}");
    assert_eq!(entry(2).unwrap(), vec![0, 42]);
    // Nor over the tail itself when it cannot be extended (here a
    // single record stored where the next record would go).
    let err = s.commit_writes(&[(9, vec![0, 99])], b"h", &[]).unwrap_err();
    assert!(err.to_string().contains("seq 9 already exists"), "{err}");
    assert_eq!(entry(9).unwrap(), vec![0, 9]);
}

#[test]
fn a_walk_includes_records_appended_to_an_entry_it_already_read() {
    let s = store_with_three_records();
    let mut walk = s.audit_iter(0);
    let mut seen: Vec<u64> = (&mut walk).take(3).map(|r| r.unwrap().0).collect();
    // The writer fills the entry just read and starts the next one.
    s.commit_writes(&records(4..=12), b"h", &[]).unwrap();
    seen.extend(walk.map(|r| r.unwrap().0));
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
}

#[test]
fn a_store_this_process_closed_opens_again_and_a_held_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for seq in 1..=20u64 {
        let s = Store::open(dir.path()).unwrap();
        s.commit_writes(&[(seq, vec![0, seq as u8])], b"h", &[])
            .unwrap();
        s.flush().unwrap();
        s.close().unwrap();
        // Closed means free, for this process or another.
        let db = std::fs::File::open(dir.path().join("db")).unwrap();
        assert!(db.try_lock().is_ok(), "still locked after close");
    }
    let held = Store::open(dir.path()).unwrap();
    assert_eq!(held.audit_last_seq().unwrap(), 20);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Held { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("another process holds its lock: stop it, or go through the running server"),
        "{err}"
    );
}

#[test]
fn waiting_for_release_returns_once_the_lock_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let held = Store::open(dir.path()).unwrap();
    let copy = held.clone();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Not the last handle: nothing to wait for yet.
        copy.close().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
    });
    wait_until_released(dir.path()).unwrap();
    // Free now, not merely at some point during the wait.
    let db = std::fs::File::open(dir.path().join("db")).unwrap();
    assert!(db.try_lock().is_ok(), "still locked after the wait");
    drop(db);
    closer.join().unwrap();
    Store::open(dir.path()).unwrap();
    // A directory with no store has nothing to wait for.
    wait_until_released(&dir.path().join("none")).unwrap();
}

#[test]
fn a_reveal_racing_a_delete_leaves_no_last_used_on_a_key_made_again() {
    let s = temp();
    let k = key("claude", 1);
    s.commit_writes(&[], b"h", &[Write::PutKey(k.clone())])
        .unwrap();
    s.commit_writes(&[], b"h", &[Write::DeleteKey(k.clone())])
        .unwrap();
    // The reveal loaded the key before the delete; its record lands after.
    s.commit_writes(&[], b"h", &[Write::TouchKey { id: k.id, at_us: 7 }])
        .unwrap();
    s.commit_writes(&[], b"h", &[Write::PutKey(k.clone())])
        .unwrap();
    assert_eq!(s.last_used(&k.id).unwrap(), None);
    s.commit_writes(&[], b"h", &[Write::TouchKey { id: k.id, at_us: 9 }])
        .unwrap();
    assert_eq!(s.last_used(&k.id).unwrap(), Some(9));
}

#[test]
fn the_cache_is_sized_to_the_store() {
    assert_eq!(auto_cache_bytes(0), DEFAULT_CACHE_BYTES);
    assert_eq!(auto_cache_bytes(100_000), DEFAULT_CACHE_BYTES);
    assert_eq!(auto_cache_bytes(1_000_000), 64_000_000);
    assert_eq!(auto_cache_bytes(u64::MAX), MAX_AUTO_CACHE_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let (s, bytes) = Store::open_auto_cache(dir.path()).unwrap();
    let s = keyed(s);
    assert_eq!(bytes, DEFAULT_CACHE_BYTES);
    s.initialise("check", &[]).unwrap();
    let keys: Vec<Write> = (0..10).map(|i| Write::PutKey(key("p", i))).collect();
    s.commit_writes(&[], b"h", &keys).unwrap();
    s.flush().unwrap();
    s.close().unwrap();
    // A store that needs more than the default is opened again with it
    // (1 MiB a key here, so that 10 keys are enough to need more).
    let (s, bytes) = Store::open_cache_sized_by(dir.path(), |n| n << 20).unwrap();
    let s = keyed(s);
    assert_eq!((bytes, s.key_count()), (10 << 20, 10));
    assert!(s
        .get_key(&s.list_keys(None).unwrap()[0].id)
        .unwrap()
        .is_some());
}

fn stored_count(s: &Store) -> Option<u64> {
    s.meta_value(META_KEY_COUNT)
        .unwrap()
        .as_deref()
        .and_then(decode_count)
}

#[test]
fn key_count_is_kept_by_commits_and_counted_once_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = keyed(Store::open(dir.path()).unwrap());
    s.initialise("check", &[]).unwrap();
    assert_eq!(stored_count(&s), Some(0));
    let (a, b) = (key("claude", 1), key("gemini", 2));
    s.commit_writes(
        &[],
        b"h",
        &[Write::PutKey(a.clone()), Write::PutKey(b.clone())],
    )
    .unwrap();
    // Writing a key again (an idempotent import) is not a new key.
    s.commit_writes(&[], b"h", &[Write::PutKey(a.clone())])
        .unwrap();
    assert_eq!(s.key_count(), 2);
    s.commit_writes(&[], b"h", &[Write::DeleteKey(a.clone())])
        .unwrap();
    // Deleting a key that is gone changes nothing.
    s.commit_writes(&[], b"h", &[Write::DeleteKey(a.clone())])
        .unwrap();
    assert_eq!((s.key_count(), stored_count(&s)), (1, Some(1)));

    // A store from before the count (or restored): counted at open.
    s.commit_writes(
        &[],
        b"h",
        &[Write::Meta {
            name: META_KEY_COUNT,
            value: None,
        }],
    )
    .unwrap();
    s.flush().unwrap();
    s.close().unwrap();
    let s = keyed(Store::open(dir.path()).unwrap());
    assert_eq!(stored_count(&s), Some(1));
    s.commit_writes(&[], b"h", &[Write::PutKey(key("claude", 3))])
        .unwrap();
    assert_eq!(s.key_count(), 2);

    // An unreadable count is not trusted: the keys are walked.
    s.put_entry("meta", META_KEY_COUNT, b"bad").unwrap();
    assert_eq!(s.key_count(), 2);
}

mod auth_tests {
    use super::*;

    fn key(provider: &str) -> KeyRecord {
        KeyRecord::new(
            Uuid::new_v4(),
            provider.into(),
            "k".into(),
            "gAAAA-not-a-real-token".into(),
            1,
            None,
            None,
        )
    }

    #[test]
    fn swapped_key_ciphertexts_and_planted_records_are_refused_as_tampered() {
        let s = Store::temporary().unwrap();
        s.set_record_keys(RecordKeys::from_secret(&[1u8; 32]));
        let (mut a, mut b) = (key("claude"), key("gemini"));
        a.token = "token-a".into();
        b.token = "token-b".into();
        s.commit_writes(
            &[],
            b"h",
            &[Write::PutKey(a.clone()), Write::PutKey(b.clone())],
        )
        .unwrap();
        assert_eq!(s.get_key(&a.id).unwrap().unwrap().token, "token-a");
        // Swap the stored values of a and b, as an editor of the files can.
        let (_, va) = s.get_key_raw(&a.id).unwrap().unwrap();
        let (_, vb) = s.get_key_raw(&b.id).unwrap().unwrap();
        s.put_entry("keys", a.id.as_bytes(), &vb).unwrap();
        s.put_entry("keys", b.id.as_bytes(), &va).unwrap();
        for id in [a.id, b.id] {
            let err = s.get_key(&id).unwrap_err();
            assert!(
                matches!(err, StoreError::Tampered { what: "key", .. }),
                "{err}"
            );
        }
        // A record made with another secret (or none) is refused too.
        let other = RecordKeys::from_secret(&[2u8; 32]);
        let c = key("claude");
        s.put_entry("keys", c.id.as_bytes(), &c.encode(&other).unwrap())
            .unwrap();
        assert!(matches!(s.get_key(&c.id), Err(StoreError::Tampered { .. })));
    }

    #[test]
    fn a_token_record_is_found_only_under_its_keyed_digest_and_only_if_authentic() {
        let s = Store::temporary().unwrap();
        s.set_record_keys(RecordKeys::from_secret(&[3u8; 32]));
        let sha = [9u8; 32];
        let at = s.token_key(&sha).unwrap();
        assert_ne!(at, sha);
        let rec = TokenRecord {
            id: Uuid::new_v4(),
            name: "reader".into(),
            role: "reader".into(),
            scopes: vec![crate::access::Scope::KeysReveal],
            providers: None,
            created_at_us: 1,
            revoked_at_us: None,
            expires_at_us: Some(5_000_000),
            ttl_seconds: Some(4),
            rotated_to: None,
            stamp: 0,
            layers: 0,
        };
        s.commit_writes(
            &[],
            b"h",
            &[Write::PutToken {
                hash: at,
                record: rec.clone(),
            }],
        )
        .unwrap();
        assert_eq!(s.get_token(&sha).unwrap().unwrap().1, rec);
        // The same authentic value moved under another token's key, or
        // with its scopes raised, is refused.
        let v = s.entries("tokens").next().unwrap().unwrap().1;
        let other = s.token_key(&[8u8; 32]).unwrap();
        s.put_entry("tokens", &other, &v).unwrap();
        assert!(matches!(
            s.get_token(&[8u8; 32]),
            Err(StoreError::Tampered { .. })
        ));
        // Neither can its scopes be raised nor its expiry lifted (under
        // another key): the MAC covers them.
        let mut raised = rec.clone();
        raised.scopes = crate::access::Scope::ALL.to_vec();
        let mut forever = rec.clone();
        forever.expires_at_us = None;
        for forged in [raised, forever] {
            let forged = forged
                .encode(&at, &RecordKeys::from_secret(&[4u8; 32]))
                .unwrap();
            s.put_entry("tokens", &at, &forged).unwrap();
            assert!(matches!(
                s.get_token(&sha),
                Err(StoreError::Tampered { .. })
            ));
        }
    }

    /// A V2 token record (schema 3, before expiry) as an older keyhold
    /// wrote it: still read, with no expiry and no rotation; a V2 record
    /// with a wrong MAC is still refused.
    #[test]
    fn a_v2_token_record_still_reads_as_never_expiring() {
        #[derive(serde::Serialize)]
        struct V1Shape {
            id: Uuid,
            name: String,
            role: String,
            scopes: Vec<crate::access::Scope>,
            providers: Option<Vec<String>>,
            created_at_us: i64,
            revoked_at_us: Option<i64>,
        }
        let s = Store::temporary().unwrap();
        let keys = RecordKeys::from_secret(&[3u8; 32]);
        s.set_record_keys(RecordKeys::from_secret(&[3u8; 32]));
        let sha = [7u8; 32];
        let at = s.token_key(&sha).unwrap();
        let old = V1Shape {
            id: Uuid::new_v4(),
            name: "old".into(),
            role: "reader".into(),
            scopes: vec![crate::access::Scope::KeysReveal],
            providers: Some(vec!["claude".into()]),
            created_at_us: 3,
            revoked_at_us: None,
        };
        let body = postcard::to_stdvec(&old).unwrap();
        let mac = keys.record_mac(super::auth::TAG_TOKEN_RECORD, &at, &body);
        let mut stored = vec![1u8]; // StoredToken::V2
        stored.extend_from_slice(&body);
        stored.extend_from_slice(&mac);
        s.put_entry("tokens", &at, &stored).unwrap();
        let rec = s.get_token(&sha).unwrap().unwrap().1;
        assert_eq!(rec.id, old.id);
        assert_eq!(rec.name, "old");
        assert_eq!(rec.providers, old.providers);
        assert_eq!(rec.expires_at_us, None);
        assert_eq!(rec.ttl_seconds, None);
        assert_eq!(rec.rotated_to, None);
        let last = stored.len() - 1;
        stored[last] ^= 1;
        s.put_entry("tokens", &at, &stored).unwrap();
        assert!(matches!(
            s.get_token(&sha),
            Err(StoreError::Tampered { .. })
        ));
    }

    /// A token's last use lands with the commit that carries it.
    #[test]
    fn token_touches_are_listed_by_id() {
        let s = Store::temporary().unwrap();
        let id = Uuid::new_v4();
        assert!(s.token_usage().unwrap().is_empty());
        s.commit_writes(&[], b"h", &[Write::TouchToken { id, at_us: 7 }])
            .unwrap();
        s.commit_writes(&[], b"h", &[Write::TouchToken { id, at_us: 9 }])
            .unwrap();
        assert_eq!(s.token_usage().unwrap().get(&id), Some(&9));
    }
}

impl Store {
    /// [`Store::commit`] of writes as they are (stamp 0, no digest kept):
    /// for tests of the store itself.
    #[cfg(test)]
    pub(crate) fn commit_writes(
        &self,
        records: &[(u64, Vec<u8>)],
        head: &[u8],
        writes: &[Write],
    ) -> Result<()> {
        let stamped: Vec<(Write, u64)> = writes.iter().cloned().map(|w| (w, 0)).collect();
        let (ops, _) = self.stamp_ops(&stamped, None)?;
        self.commit(records, head, &ops)
    }
}
