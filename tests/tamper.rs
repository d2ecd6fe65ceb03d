//! The audit log is tamper-evident: edits made straight in the sled files
//! (server stopped) by someone without the Fernet key are each caught by
//! `keyhold audit verify` at the right seq.
//!
//! The edits go through sled itself (not keyhold), as an attacker who can
//! rewrite the database files and knows sled's format would make them;
//! flipping raw bytes of sled's log instead would only trip sled's own
//! page checksums, which proves nothing about keyhold.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use keyhold::audit::AuditRecord;
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

/// Copies the store, lets `edit` change its audit tree with sled itself,
/// and returns the copy.
fn tampered(v: &Vault, name: &str, edit: impl FnOnce(&sled::Tree)) -> PathBuf {
    let dir = v.tmp.path().join(name);
    copy_dir(&v.dir, &dir);
    let db = sled::open(&dir).unwrap();
    let audit = db.open_tree("audit").unwrap();
    edit(&audit);
    db.flush().unwrap();
    drop(audit);
    drop(db);
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

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
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
    let dir = tampered(&v, "byte", |t| {
        let mut val = t.get(key(7)).unwrap().unwrap().to_vec();
        // A byte inside the record's text (the caller name region).
        let mid = val.len() / 2;
        val[mid] ^= 0x01;
        t.insert(key(7), val).unwrap();
    });
    assert_broken(&v, &dir, 7, "altered");
}

#[test]
fn a_deleted_record_is_caught_as_missing() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "deleted", |t| {
        t.remove(key(5)).unwrap();
    });
    assert_broken(&v, &dir, 5, "missing");
}

#[test]
fn two_swapped_records_are_caught_as_reordered() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "swapped", |t| {
        let a = t.get(key(8)).unwrap().unwrap();
        let b = t.get(key(9)).unwrap().unwrap();
        t.insert(key(8), b).unwrap();
        t.insert(key(9), a).unwrap();
    });
    assert_broken(&v, &dir, 8, "reordered");
}

#[test]
fn dropping_the_newest_three_is_caught_as_truncated() {
    let (v, _) = vault_with_history();
    let last = last_seq(&v.dir);
    let dir = tampered(&v, "truncated", |t| {
        for s in last - 2..=last {
            t.remove(key(s)).unwrap();
        }
    });
    assert_broken(&v, &dir, last - 2, "truncated");
}

#[test]
fn a_rewritten_record_with_a_plain_sha256_is_caught() {
    let (v, _) = vault_with_history();
    let dir = tampered(&v, "rewritten", |t| {
        let mut rec = AuditRecord::decode(&t.get(key(10)).unwrap().unwrap()).unwrap();
        rec.event.caller = "someone-else".into();
        rec.event.ip = "10.9.9.9".into();
        let mut h = Sha256::new();
        h.update(rec.prev);
        h.update(AuditRecord::canonical_bytes(rec.seq, rec.at_us, &rec.event));
        rec.mac = h.finalize().into();
        t.insert(key(10), rec.encode().unwrap()).unwrap();
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
    let dir = tampered(&v, "http", |t| {
        t.remove(key(4)).unwrap();
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
    let dir = tampered(&v, "cut-then-append", |t| {
        for s in last - 2..=last {
            t.remove(key(s)).unwrap();
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
    {
        let db = sled::open(&dir).unwrap();
        db.open_tree("audit").unwrap().clear().unwrap();
        db.open_tree("meta").unwrap().remove("audit_head").unwrap();
        db.flush().unwrap();
    }
    assert_broken(&v, &dir, 1, "truncated");
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
    let db = sled::open(dir).unwrap();
    let t = db.open_tree("audit").unwrap();
    let (k, _) = t.last().unwrap().unwrap();
    u64::from_be_bytes(k.as_ref().try_into().unwrap())
}
