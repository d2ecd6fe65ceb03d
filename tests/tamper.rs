//! The audit log is tamper-evident: edits made straight in the sled files
//! (server stopped) by someone without the Fernet key are each caught by
//! `keyhold audit verify` at the right seq.
//!
//! The edits go through sled itself (not keyhold), as an attacker who can
//! rewrite the database files and knows sled's format and keyhold's would
//! make them; flipping raw bytes of sled's log instead would only trip
//! sled's own page checksums, which proves nothing about keyhold.
//!
//! keyhold's format, read and written here independently of its code: the
//! `audit` tree's key is the big-endian seq of an entry's first record; a
//! value starting 0xFF is a chunk of `seq:u64 BE len:u32 BE record`
//! entries, any other value is one record (schema 1).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use keyhold::internals::audit::AuditRecord;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A vault with a few dozen audit records, server stopped.
fn vault_with_history() -> (Vault, u64) {
    let v = Vault::new();
    let reader = v.token("orch", "reader", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000/min")]);
    let admin = Api::new(&s, &v.admin);
    for i in 0..6 {
        let id = admin.create_key("claude", &format!("k{i}"), &format!("sk-{i}"));
        Api::new(&s, &reader).get(&format!("/api/keys/{id}"));
        Api::anonymous(&s).get(&format!("/api/keys/{id}"));
    }
    s.stop();
    // The export is itself a record, written before it reads the log.
    let n = v.audit_records().len() as u64;
    (v, n)
}

/// The audit records of a tree, by the seq each is stored under.
type Log = BTreeMap<u64, Vec<u8>>;

const CHUNK_TAG: u8 = 0xFF;

fn read_log(t: &sled::Tree) -> Log {
    let mut log = Log::new();
    for item in t.iter() {
        let (k, v) = item.unwrap();
        let key = u64::from_be_bytes(k.as_ref().try_into().unwrap());
        if v.first() != Some(&CHUNK_TAG) {
            log.insert(key, v.to_vec());
            continue;
        }
        let mut rest = &v[1..];
        while !rest.is_empty() {
            let seq = u64::from_be_bytes(rest[..8].try_into().unwrap());
            let len = u32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
            log.insert(seq, rest[12..12 + len].to_vec());
            rest = &rest[12 + len..];
        }
    }
    log
}

/// Replaces the tree's contents with `log`: chunks of up to `per_chunk`
/// records, or one record per entry (as schema 1 stored them) when
/// `per_chunk` is 0.
fn write_log(t: &sled::Tree, log: &Log, per_chunk: usize) {
    t.clear().unwrap();
    let records: Vec<_> = log.iter().collect();
    if per_chunk == 0 {
        for (seq, bytes) in records {
            t.insert(seq.to_be_bytes(), bytes.as_slice()).unwrap();
        }
        return;
    }
    for chunk in records.chunks(per_chunk) {
        let mut value = vec![CHUNK_TAG];
        for (seq, bytes) in chunk {
            value.extend_from_slice(&seq.to_be_bytes());
            value.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            value.extend_from_slice(bytes);
        }
        t.insert(chunk[0].0.to_be_bytes(), value).unwrap();
    }
}

/// Copies the store, lets `edit` change its audit records, writes them
/// back with sled itself, and returns the copy.
fn tampered(v: &Vault, name: &str, edit: impl FnOnce(&mut Log)) -> PathBuf {
    let dir = v.tmp.path().join(name);
    copy_dir(&v.dir, &dir);
    with_sled(&dir, |db| {
        let audit = db.open_tree("audit").unwrap();
        let mut log = read_log(&audit);
        edit(&mut log);
        // Chunks of 4, not the server's 8: records 8 and 9 land in
        // different chunks, and verify must not care how records are
        // grouped.
        write_log(&audit, &log, 4);
    });
    dir
}

fn verify(v: &Vault, dir: &Path) -> (i32, Value) {
    let out = run_with_key(
        &v.key,
        &[
            "audit",
            "verify",
            "--json",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verify printed {:?} {:?}",
            out.stdout,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn assert_broken(v: &Vault, dir: &Path, seq: u64, problem: &str) {
    let (code, report) = verify(v, dir);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["status"], "broken", "{report}");
    assert_eq!(report["seq"], seq, "{report}");
    assert_eq!(report["problem"], problem, "{report}");
    assert!(report["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[test]
fn an_untouched_log_verifies() {
    let (v, n) = vault_with_history();
    let (code, report) = verify(&v, &v.dir);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["records"], n, "verify adds no record");
}

#[test]
fn a_changed_byte_is_caught_at_its_seq() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "byte", |log| {
        let val = log.get_mut(&7).unwrap();
        // A byte inside the record's text (the caller name region).
        let mid = val.len() / 2;
        val[mid] ^= 0x01;
    });
    assert_broken(&v, &dir, 7, "altered");
}

#[test]
fn a_deleted_record_is_caught_as_missing() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "deleted", |log| {
        log.remove(&5).unwrap();
    });
    assert_broken(&v, &dir, 5, "missing");
}

#[test]
fn two_swapped_records_are_caught_as_reordered() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "swapped", |log| {
        let a = log.remove(&8).unwrap();
        let b = log.remove(&9).unwrap();
        log.insert(8, b);
        log.insert(9, a);
    });
    assert_broken(&v, &dir, 8, "reordered");
}

#[test]
fn dropping_the_newest_three_is_caught_as_truncated() {
    let (v, _) = vault_with_history();
    let last = last_seq(&v.dir);
    let dir = tampered(&v, "truncated", |log| {
        for s in last - 2..=last {
            log.remove(&s).unwrap();
        }
    });
    assert_broken(&v, &dir, last - 2, "truncated");
}

#[test]
fn broken_chunk_framing_is_caught_as_altered() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "framing", |_| {});
    with_sled(&dir, |db| {
        let t = db.open_tree("audit").unwrap();
        // The chunk of records 9..=12: its first record now claims to run
        // past the end of the value.
        let mut value = t.get(9u64.to_be_bytes()).unwrap().unwrap().to_vec();
        value[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        t.insert(9u64.to_be_bytes(), value).unwrap();
    });
    assert_broken(&v, &dir, 9, "altered");
}

#[test]
fn a_schema_1_log_is_read_as_it_is_and_grows_in_chunks() {
    let (v, n) = vault_with_history();
    // As keyhold's schema 1 stored the log: one record per entry. The
    // schema version is a postcard varint.
    let dir = v.tmp.path().join("schema1");
    copy_dir(&v.dir, &dir);
    with_sled(&dir, |db| {
        let t = db.open_tree("audit").unwrap();
        let log = read_log(&t);
        write_log(&t, &log, 0);
        // The layout of schema 1 (one record an entry); the meta keeps
        // schema 3, since a real schema-1 store is also upgraded to 3,
        // which needs its own old-format secrets (tests/integrity.rs
        // covers that upgrade with a store an older keyhold wrote).
    });
    let (code, report) = verify(&v, &dir);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["records"], n);

    // An edit of a schema-1 entry is caught like any other.
    let edited = v.tmp.path().join("schema1-edited");
    copy_dir(&dir, &edited);
    with_sled(&edited, |db| {
        db.open_tree("audit")
            .unwrap()
            .remove(5u64.to_be_bytes())
            .unwrap();
    });
    assert_broken(&v, &edited, 5, "missing");

    // A server appends after the old entries, in a chunk.
    let s = Server::start(&dir, &[("FERNET_KEY", v.key.as_str())]);
    Api::new(&s, &v.admin).create_key("claude", "after", "sk-after");
    s.stop();
    let (code, report) = verify(&v, &dir);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["records"], n + 1);
    let ((first_key, first), (last_key, last), schema) = with_sled(&dir, |db| {
        let t = db.open_tree("audit").unwrap();
        let meta = db.open_tree("meta").unwrap();
        (
            t.first().unwrap().unwrap(),
            t.last().unwrap().unwrap(),
            meta.get("schema_version").unwrap(),
        )
    });
    assert_eq!(first_key.as_ref(), 1u64.to_be_bytes());
    assert_ne!(first[0], CHUNK_TAG, "old entries are left as they are");
    assert_eq!(last_key.as_ref(), (n + 1).to_be_bytes());
    assert_eq!(last[0], CHUNK_TAG);
    assert_eq!(schema.as_deref(), Some(&[5u8][..]));
}

#[test]
fn a_rewritten_record_with_a_plain_sha256_is_caught() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "rewritten", |log| {
        let mut rec = AuditRecord::decode(&log[&10]).unwrap();
        rec.event.caller = "someone-else".into();
        rec.event.ip = "10.9.9.9".into();
        let mut h = Sha256::new();
        h.update(rec.prev);
        h.update(AuditRecord::canonical_bytes(rec.seq, rec.at_us, &rec.event));
        rec.mac = h.finalize().into();
        log.insert(10, rec.encode().unwrap());
    });
    assert_broken(&v, &dir, 10, "altered");
}

#[test]
fn the_http_verify_route_reports_the_same() {
    let (v, _) = vault_with_history();
    let s = v.serve(&[]);
    let r: Value = Api::new(&s, &v.admin)
        .get("/api/audit/verify")
        .json()
        .unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    s.stop();
    let dir = tampered(&v, "http", |log| {
        log.remove(&4).unwrap();
    });
    let s = Server::start(&dir, &[("FERNET_KEY", v.key.as_str())]);
    let r: Value = Api::new(&s, &v.admin)
        .get("/api/audit/verify")
        .json()
        .unwrap();
    assert_eq!(r["status"], "broken");
    assert_eq!(r["seq"], 4);
    assert_eq!(r["problem"], "missing");
}

#[test]
fn a_cut_tail_stays_caught_after_new_records_are_appended() {
    let (v, _) = vault_with_history();
    let last = last_seq(&v.dir);
    let dir = tampered(&v, "cut-then-append", |log| {
        for s in last - 2..=last {
            log.remove(&s).unwrap();
        }
    });
    // An auditor's export (which appends its own record), then a server
    // restart and a request: the cut must still show.
    let out = run_with_key(
        &v.key,
        &["audit", "export", "--data-dir", dir.to_str().unwrap()],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not end at its chain head"),
        "{stderr}"
    );
    let s = Server::start(&dir, &[("FERNET_KEY", v.key.as_str())]);
    Api::new(&s, &v.admin).create_key("claude", "after", "sk-after");
    s.stop();
    assert_broken(&v, &dir, last - 2, "missing");
}

#[test]
fn a_wiped_log_and_head_is_caught() {
    let (v, _) = vault_with_history();
    let dir = v.tmp.path().join("wiped");
    copy_dir(&v.dir, &dir);
    with_sled(&dir, |db| {
        db.open_tree("audit").unwrap().clear().unwrap();
        db.open_tree("meta").unwrap().remove("audit_head").unwrap();
    });
    // Without its head the store no longer vouches for its state: every
    // command refuses it (issue 23), audit verify included.
    let out = run_with_key(
        &v.key,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit chain head is missing"), "{err}");
}

#[test]
fn online_verify_under_concurrent_writes_never_reports_false_damage() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "100000/s")]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "k", "sk-1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (url, token, stop) = (
                s.url(&format!("/api/keys/{id}")),
                v.admin.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let c = client();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 3000 {
                    let _ = c.get(&url).bearer_auth(&token).send();
                    n += 1;
                }
            })
        })
        .collect();
    for _ in 0..40 {
        let r: Value = admin.get("/api/audit/verify").json().unwrap();
        assert_eq!(r["status"], "ok", "{r}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
}

/// The newest audit seq in a (stopped) store.
fn last_seq(dir: &Path) -> u64 {
    with_sled(dir, |db| {
        let t = db.open_tree("audit").unwrap();
        *read_log(&t).keys().next_back().unwrap()
    })
}
