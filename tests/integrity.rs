//! Integrity against someone who can write the files but does not hold the
//! keyring (issue 13). Each forgery is made from outside with the server
//! stopped: the sled files are edited with sled itself (an independent
//! writer), a backup is edited and its plain checksum recomputed. Each
//! must be refused at the right place, none honoured.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_api_key_ciphertext_put_in_place_of_a_sealed_secret_is_refused() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    // A caller stores 32 bytes of their choosing: its ciphertext is under
    // the keyring key itself.
    let id = admin.create_key("claude", "chosen", &"A".repeat(32));
    s.stop();
    for meta in ["audit_signing_key", "record_secret", "audit_mac_key"] {
        let copy = v.tmp.path().join(format!("swap-{meta}"));
        copy_dir(&v.dir, &copy);
        with_sled(&copy, |db| {
            let keys = db.open_tree("keys").unwrap();
            let stored = keys
                .get(uuid::Uuid::parse_str(&id).unwrap().as_bytes())
                .unwrap()
                .unwrap();
            let token = find_fernet_token(&stored);
            db.open_tree("meta")
                .unwrap()
                .insert(meta.as_bytes(), token.as_bytes())
                .unwrap();
        });
        let out = run_with_key(
            &v.key,
            &["audit", "verify", "--data-dir", copy.to_str().unwrap()],
        );
        assert!(!out.status.success(), "{meta}: {}", stdout(&out));
        if meta == "audit_mac_key" {
            // This store never had one: a planted one is refused too.
            assert!(stderr(&out).contains("audit"), "{meta}: {}", stderr(&out));
        } else {
            assert!(
                stderr(&out).contains("does not open")
                    || stderr(&out).contains("keyring")
                    || stderr(&out).contains(&format!("`{meta}` differs from the signed state")),
                "{meta}: {}",
                stderr(&out)
            );
        }
        // The server refuses to start on it as well.
        let start = keyhold()
            .env("FERNET_KEY", &v.key)
            .args(["serve", "--data-dir", copy.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!start.status.success(), "{meta}: served a swapped secret");
    }
}

/// The Fernet token inside a stored key record (a run of token chars
/// starting `gAAAAA`).
fn find_fernet_token(bytes: &[u8]) -> String {
    let at = bytes
        .windows(6)
        .position(|w| w == b"gAAAAA")
        .expect("a Fernet token in the record");
    bytes[at..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'='))
        .map(|&c| c as char)
        .collect()
}

#[test]
fn a_token_planted_or_escalated_in_the_files_is_refused_and_audited() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", Some("claude"));
    let s = v.serve(&[]);
    Api::new(&s, &v.admin).create_key("gemini", "main", "AIza-secret-1");
    s.stop();

    // 1. Plant a token of the attacker's choosing: its SHA-256 as the
    //    storage key (what the old format used), with a copy of the admin's
    //    record as the value.
    let chosen = format!("kh_{}", "P".repeat(43));
    with_sled(&v.dir, |db| {
        let tokens = db.open_tree("tokens").unwrap();
        let admin_value = tokens
            .iter()
            .map(|i| i.unwrap().1)
            .find(|val| contains(val, b"admin"))
            .unwrap();
        let sha: [u8; 32] = Sha256::digest(chosen.as_bytes()).into();
        tokens.insert(sha, admin_value).unwrap();
    });
    // 2. Raise the reader's scopes to every scope and drop its provider
    //    limit: rewrite its record's value with the admin's value.
    with_sled(&v.dir, |db| {
        let tokens = db.open_tree("tokens").unwrap();
        let all: Vec<_> = tokens.iter().map(|i| i.unwrap()).collect();
        let admin_value = all
            .iter()
            .find(|(_, val)| contains(val, b"admin"))
            .unwrap()
            .1
            .clone();
        let reader_key = all
            .iter()
            .find(|(_, val)| contains(val, b"orchestrator"))
            .unwrap()
            .0
            .clone();
        tokens.insert(reader_key, admin_value).unwrap();
    });
    // The store no longer matches the state its signed log recorded: it
    // is refused at open, before any request (a running node refuses
    // each such record at its use, audited: tests/postgres.rs).
    let refusal = serve_must_refuse(&v.dir, &v.key);
    assert!(
        refusal.contains("the token records differ from the signed state"),
        "{refusal}"
    );
    let _ = (&chosen, &reader);
    // check names the escalated record (its MAC fails) and the state.
    let out = run_with_key(&v.key, &["check", "--data-dir", v.dir_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("tampered"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1 records were added"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn swapped_key_ciphertexts_are_refused_and_audited_never_revealed() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let a = admin.create_key("claude", "a", "sk-ant-AAAA");
    let b = admin.create_key("gemini", "b", "AIza-BBBB");
    s.stop();
    with_sled(&v.dir, |db| {
        let keys = db.open_tree("keys").unwrap();
        let (ia, ib) = (
            uuid::Uuid::parse_str(&a).unwrap(),
            uuid::Uuid::parse_str(&b).unwrap(),
        );
        let va = keys.get(ia.as_bytes()).unwrap().unwrap();
        let vb = keys.get(ib.as_bytes()).unwrap().unwrap();
        // Swap the ciphertexts only, keeping each record's other fields.
        let (ta, tb) = (find_fernet_token(&va), find_fernet_token(&vb));
        assert_eq!(ta.len(), tb.len(), "same-length keys make a clean swap");
        let swap = |val: &[u8], from: &str, to: &str| {
            let at = val
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap();
            let mut out = val.to_vec();
            out[at..at + from.len()].copy_from_slice(to.as_bytes());
            out
        };
        keys.insert(ia.as_bytes(), swap(&va, &ta, &tb)).unwrap();
        keys.insert(ib.as_bytes(), swap(&vb, &tb, &ta)).unwrap();
    });
    // Refused at open (a running node refuses each at its use, audited:
    // tests/postgres.rs); check names both records.
    let refusal = serve_must_refuse(&v.dir, &v.key);
    assert!(!refusal.contains("sk-ant-AAAA") && !refusal.contains("AIza-BBBB"));
    let out = run_with_key(&v.key, &["check", "--data-dir", v.dir_str()]);
    assert_eq!(out.status.code(), Some(1));
    for id in [&a, &b] {
        assert!(
            stdout(&out).contains(&format!(
                "tampered (written or changed outside keyhold; restore from a backup): key {id}"
            )),
            "{}",
            stdout(&out)
        );
    }
    assert!(!stdout(&out).contains("sk-ant-AAAA") && !stdout(&out).contains("AIza-BBBB"));
    // The keys are still there: nothing was deleted.
    with_sled(&v.dir, |db| {
        let keys = db.open_tree("keys").unwrap();
        assert_eq!(keys.len(), 2);
    });
}

/// A backup edited by someone without the keyring, its plain SHA-256
/// trailer recomputed (what the old format's checksum allowed).
fn edit_backup(path: &Path, find: &[u8], replace: &[u8]) -> PathBuf {
    let mut b = std::fs::read(path).unwrap();
    let at = b.windows(find.len()).position(|w| w == find).unwrap();
    b[at..at + find.len()].copy_from_slice(replace);
    let n = b.len();
    let digest: [u8; 32] = Sha256::digest(&b[..n - 32]).into();
    b[n - 32..].copy_from_slice(&digest);
    let out = path.with_extension("edited");
    std::fs::write(&out, &b).unwrap();
    out
}

fn entries_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn an_edited_backup_and_a_wrong_key_are_refused_before_anything_is_written() {
    let v = Vault::new();
    v.token("orchestrator", "reader", None);
    let backup = v.tmp.path().join("store.backup");
    assert_ok(&run_with_key(
        &v.key,
        &[
            "backup",
            "--data-dir",
            v.dir_str(),
            backup.to_str().unwrap(),
        ],
    ));
    // backup --verify checks it without restoring.
    let ok = run_with_key(&v.key, &["backup", "--verify", backup.to_str().unwrap()]);
    assert_ok(&ok);
    assert!(stdout(&ok).starts_with("ok:"), "{}", stdout(&ok));

    let edited = edit_backup(&backup, b"orchestrator", b"orchestratoX");
    let before = entries_of(v.tmp.path());
    for (file, key) in [(&edited, v.key.clone()), (&backup, keygen())] {
        let target = v.tmp.path().join("restored");
        let out = run_with_key(
            &key,
            &[
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("MAC does not match"),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("Nothing was written"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            entries_of(v.tmp.path()),
            before,
            "a refused restore left files"
        );
        let check = run_with_key(&key, &["backup", "--verify", file.to_str().unwrap()]);
        assert!(!check.status.success());
    }
    // The intact backup restores, and its chain verifies.
    let target = v.tmp.path().join("restored");
    assert_ok(&run_with_key(
        &v.key,
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
    ));
    assert_ok(&run_with_key(
        &v.key,
        &["audit", "verify", "--data-dir", target.to_str().unwrap()],
    ));
}

/// Exports the whole log of a stopped vault to a file and returns it with
/// the audit public key.
fn export_with_key(v: &Vault) -> (PathBuf, String) {
    let file = v.tmp.path().join("export.jsonl");
    assert_ok(&run_with_key(
        &v.key,
        &[
            "audit",
            "export",
            "--data-dir",
            v.dir_str(),
            "--output",
            file.to_str().unwrap(),
        ],
    ));
    let pk = run_with_key(&v.key, &["audit", "public-key", "--data-dir", v.dir_str()]);
    assert_ok(&pk);
    (file, stdout(&pk).trim().to_string())
}

/// `audit verify --file F --public-key K` with no keyring and no store.
fn verify_public(file: &Path, key: &str) -> (bool, Value) {
    let out = keyhold()
        .args([
            "audit",
            "verify",
            "--json",
            "--file",
            file.to_str().unwrap(),
        ])
        .args(["--public-key", key, "--data-dir", "/nonexistent"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(stdout(&out).lines().next().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("{} {}", stdout(&out), stderr(&out)));
    (out.status.success(), report)
}

fn with_lines(file: &Path, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let mut lines: Vec<String> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    edit(&mut lines);
    let out = file.with_file_name(name);
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    out
}

#[test]
fn an_export_verifies_with_the_public_key_alone_and_each_edit_is_caught_at_its_seq() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[]);
    Api::new(&s, &v.admin).create_key("claude", "main", "sk-ant-1");
    let rd = Api::new(&s, &reader);
    for _ in 0..5 {
        assert_eq!(rd.get("/api/providers/claude/key").status(), 200);
    }
    s.stop();
    let (file, pk) = export_with_key(&v);
    assert!(pk.starts_with("ed25519:") && pk.len() == 8 + 64, "{pk}");
    let (ok, report) = verify_public(&file, &pk);
    assert!(ok, "{report}");
    assert_eq!(report["signed_by"], pk.as_str());
    let n = report["records"].as_u64().unwrap();
    assert!(n >= 9, "{report}");

    // Another key vouches for nothing.
    let other = format!("ed25519:{}", "ab".repeat(32));
    let (ok, report) = verify_public(&file, &other);
    assert!(!ok);
    assert_eq!(report["problem"], "unsigned", "{report}");

    // An edited line (a reveal made to look refused), a dropped line, two
    // lines swapped, the newest line cut: each caught at its seq.
    let edited = with_lines(&file, "edited.jsonl", |l| {
        l[5] = l[5].replace("\"success\"", "\"forbidden\"");
    });
    let (ok, report) = verify_public(&edited, &pk);
    assert!(!ok);
    assert_eq!(
        (report["seq"].as_u64(), report["problem"].as_str()),
        (Some(6), Some("altered")),
        "{report}"
    );

    let dropped = with_lines(&file, "dropped.jsonl", |l| {
        l.remove(3);
    });
    let (ok, report) = verify_public(&dropped, &pk);
    assert!(!ok);
    assert_eq!(
        (report["seq"].as_u64(), report["problem"].as_str()),
        (Some(4), Some("missing")),
        "{report}"
    );

    let swapped = with_lines(&file, "swapped.jsonl", |l| l.swap(4, 5));
    let (ok, report) = verify_public(&swapped, &pk);
    assert!(!ok);
    assert_eq!(report["seq"].as_u64(), Some(5), "{report}");
    assert!(
        report["problem"] == "missing" || report["problem"] == "reordered",
        "{report}"
    );

    // A forged newest record, re-hashed correctly but unsigned.
    let forged = with_lines(&file, "forged.jsonl", |l| {
        let mut last: Value = serde_json::from_str(l.last().unwrap()).unwrap();
        let mut rec = keyhold::internals::audit::AuditRecord::from_export(
            &serde_json::from_value(last.clone()).unwrap(),
        )
        .unwrap();
        rec.seq += 1;
        rec.prev = rec.mac;
        rec.event.caller = "forger".into();
        rec.mac = keyhold::internals::audit::AuditRecord::chain_hash(
            &rec.prev,
            rec.seq,
            rec.at_us,
            &rec.event,
            rec.node.as_deref(),
        );
        rec.sig = None;
        last = serde_json::to_value(rec.to_export()).unwrap();
        l.push(last.to_string());
    });
    let (ok, report) = verify_public(&forged, &pk);
    assert!(!ok);
    assert_eq!(
        (report["seq"].as_u64(), report["problem"].as_str()),
        (Some(n + 1), Some("unsigned")),
        "{report}"
    );

    // Every line made to look old-format (no tag, no signature): nothing
    // vouches for it, so it does not verify with a public key.
    let stripped = with_lines(&file, "stripped.jsonl", |l| {
        for line in l.iter_mut() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            v["tag"] = Value::Null;
            v["sig"] = Value::Null;
            *line = v.to_string();
        }
    });
    let (ok, report) = verify_public(&stripped, &pk);
    assert!(!ok, "{report}");
    assert_eq!(report["problem"], "unsigned", "{report}");

    // A filtered export needs the keyring: refused with the public key.
    let out = keyhold()
        .args([
            "audit",
            "verify",
            "--filtered",
            "--file",
            file.to_str().unwrap(),
        ])
        .args(["--public-key", &pk])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("public key alone"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rotation_hands_the_signing_key_over_and_the_first_key_still_verifies_an_export() {
    let v = Vault::new();
    let (_, first_pk) = export_with_key(&v);
    let new = keygen();
    let both = format!("{new},{}", v.key);
    let out = keyhold()
        .env("FERNET_KEYS", &both)
        .args(["rotate", "--data-dir", v.dir_str()])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(stderr(&out).contains("now signed by"), "{}", stderr(&out));
    // The new key alone opens the store now.
    let v2 = Vault {
        tmp: tempfile::tempdir().unwrap(),
        dir: v.dir.clone(),
        key: new.clone(),
        admin: v.admin.clone(),
        pg: None,
    };
    let (file, new_pk) = export_with_key(&v2);
    assert_ne!(first_pk, new_pk);
    for pk in [&first_pk, &new_pk] {
        let (ok, report) = verify_public(&file, pk);
        assert!(ok, "{pk}: {report}");
        assert_eq!(report["signed_by"], new_pk.as_str(), "{report}");
    }
    let records = v2.audit_records();
    let handovers: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "signing_key")
        .collect();
    assert_eq!(handovers.len(), 2);
    assert!(handovers[0]["sig"].as_str().unwrap().starts_with(&first_pk));
    assert!(handovers[1]["sig"].as_str().unwrap().starts_with(&new_pk));
    assert_ok(&run_with_key(&new, &["check", "--data-dir", v.dir_str()]));
}

/// The fixture written by keyhold c70a1a1 (tests/data/SCHEMA2-FIXTURE.md).
const OLD_KEY: &str = "Ecxtdn_hT2NlQ72h0aydGQo3ZkIg3JgLnVNcsgoWM1Y=";
const OLD_ADMIN: &str = "kh_4JKqlfY-W9Ehj9AaUMGSn4e_r31oqhVKImB7C9lJFqg";
const OLD_READER: &str = "kh_y7xChjiZWM5-6Ib8RsWmhh7mxiUiKRTEWH3QbEoJv4o";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn a_store_of_the_previous_format_is_upgraded_once_and_keeps_keys_tokens_and_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&fixture("schema2-store"), &dir);
    let v = Vault {
        tmp,
        dir: dir.clone(),
        key: OLD_KEY.into(),
        admin: OLD_ADMIN.into(),
        pg: None,
    };
    let s = v.serve(&[]);
    let reader = Api::new(&s, OLD_READER);
    let r: Value = reader.get("/api/providers/claude/key").json().unwrap();
    assert_eq!(r["api_key"], "sk-ant-fixture-claude-0001");
    let admin = Api::new(&s, OLD_ADMIN);
    let r: Value = admin
        .get("/api/keys/cd23e055-8ee9-4ba1-89b6-4fa417f3942b")
        .json()
        .unwrap();
    assert_eq!(r["api_key"], "AIza-fixture-gemini-0002");
    assert!(admin
        .post_json("/api/tokens", &json!({"name": "new", "role": "auditor"}))
        .status()
        .is_success());
    let out = s.stop();
    assert!(
        out.2.contains("upgraded the store to schema 3"),
        "{}",
        out.2
    );

    let records = v.audit_records();
    let upgrades: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "upgrade")
        .collect();
    // To schema 3 once, then to schema 4 (key versions) and 5 (the state
    // commitment) once each, at once.
    assert_eq!(upgrades.len(), 3, "migrated once: {upgrades:?}");
    assert!(upgrades[2]["detail"]
        .as_str()
        .unwrap()
        .starts_with("upgrade to schema 5"));
    // The upgrade to 3 commits to the old-format prefix (issue 23).
    assert!(upgrades[0]["detail"]
        .as_str()
        .unwrap()
        .contains("legacy prefix 1..=8 sha256 "));
    assert_eq!(upgrades[0]["seq"], 9);
    assert!(upgrades[1]["detail"]
        .as_str()
        .unwrap()
        .contains("upgrade to schema 4"));
    assert!(
        records[..8].iter().all(|r| r["tag"].is_null()),
        "old records kept as they were"
    );
    // The whole chain verifies with the keyring; with the public key the
    // old part is linked and the rest signed.
    assert_ok(&run_with_key(
        OLD_KEY,
        &["audit", "verify", "--data-dir", v.dir_str()],
    ));
    assert_ok(&run_with_key(
        OLD_KEY,
        &["check", "--data-dir", v.dir_str()],
    ));
    let (file, pk) = export_with_key(&v);
    let (ok, report) = verify_public(&file, &pk);
    assert!(ok, "{report}");
    // The old part is checked against the upgrade record's commitment.
    assert_eq!(report["legacy_unchecked"], 0, "{report}");
    // Opening again does not migrate again.
    let s = v.serve(&[]);
    assert_eq!(
        Api::new(&s, OLD_READER)
            .get("/api/providers/claude/key")
            .status(),
        200
    );
    s.stop();
    let again = v.audit_records();
    assert_eq!(again.iter().filter(|r| r["action"] == "upgrade").count(), 3);
    // An old-format record planted after the upgrade is refused.
    with_sled(&dir, |db| {
        let keys = db.open_tree("keys").unwrap();
        let id = uuid::Uuid::parse_str("08fa2a66-9d03-4d7c-b336-d84db5de4ac9").unwrap();
        let cur = keys.get(id.as_bytes()).unwrap().unwrap();
        // StoredKey::V2 { key, mac } -> StoredKey::V1(key): tag 0, no MAC.
        let mut v1 = cur[..cur.len() - 32].to_vec();
        v1[0] = 0;
        keys.insert(id.as_bytes(), v1).unwrap();
    });
    // The store no longer matches its signed state: refused at open.
    let refusal = serve_must_refuse(&v.dir, OLD_KEY);
    assert!(
        refusal.contains("the key records differ from the signed state"),
        "{refusal}"
    );
    // Marking the store older (or mid-upgrade) to have that record
    // authenticated by a second "upgrade" is refused.
    // The last case also removes the signed chain head and the signed
    // records, leaving only the old-format ones: the upgrade mark, made
    // up, does not open with the keyring.
    let marks: [&[(&str, u8)]; 3] = [
        &[("schema_version", 2)],
        &[("schema_version", 2), ("upgrade_to_3", 1)],
        &[("schema_version", 2), ("upgrade_to_3", 1)],
    ];
    for (i, marks) in marks.iter().enumerate() {
        let copy = v.tmp.path().join(format!("downgraded-{i}"));
        copy_dir(&dir, &copy);
        with_sled(&copy, |db| {
            let meta = db.open_tree("meta").unwrap();
            for (k, val) in marks.iter() {
                meta.insert(k.as_bytes(), vec![*val]).unwrap();
            }
            if i == 2 {
                meta.remove("audit_head").unwrap();
                let audit = db.open_tree("audit").unwrap();
                // Entries from seq 9 (the upgrade record) on are signed.
                let signed: Vec<_> = audit
                    .range(9u64.to_be_bytes()..)
                    .map(|e| e.unwrap().0)
                    .collect();
                for k in signed {
                    audit.remove(k).unwrap();
                }
            }
        });
        let out = run_with_key(OLD_KEY, &["check", "--data-dir", copy.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("changed outside keyhold"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn an_old_unauthenticated_backup_restores_only_when_the_operator_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("restored");
    let backup = fixture("schema2.backup");
    let args = [
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ];
    let out = run_with_key(OLD_KEY, &args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--allow-unauthenticated"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
    // With the wrong key it leaves nothing either.
    let mut with_flag = args.to_vec();
    with_flag.push("--allow-unauthenticated");
    let out = run_with_key(&keygen(), &with_flag);
    assert!(!out.status.success());
    assert!(!target.exists(), "{}", stderr(&out));
    let out = run_with_key(OLD_KEY, &with_flag);
    assert_ok(&out);
    assert_ok(&run_with_key(
        OLD_KEY,
        &["audit", "verify", "--data-dir", target.to_str().unwrap()],
    ));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert_private(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

/// Runs keyhold under `umask 022` (the usual default).
fn under_umask_022(key: &str, args: &[&str]) -> std::process::Output {
    let mut script = format!("umask 022; exec '{}'", bin());
    for a in args {
        script.push_str(&format!(" '{a}'"));
    }
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FERNET_KEY", key)
        .output()
        .unwrap()
}

#[test]
fn everything_keyhold_writes_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen();
    // An existing empty directory, as an operator may have made it.
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.to_str().unwrap();
    assert_ok(&under_umask_022(&key, &["init", "--data-dir", d]));
    assert_ok(&under_umask_022(
        &key,
        &[
            "token",
            "create",
            "--data-dir",
            d,
            "--name",
            "r",
            "--role",
            "reader",
        ],
    ));
    let backup = tmp.path().join("b.backup");
    let export = tmp.path().join("e.jsonl");
    let env_file = tmp.path().join("k.env");
    assert_ok(&under_umask_022(
        &key,
        &["backup", "--data-dir", d, backup.to_str().unwrap()],
    ));
    assert_ok(&under_umask_022(
        &key,
        &[
            "audit",
            "export",
            "--data-dir",
            d,
            "--output",
            export.to_str().unwrap(),
        ],
    ));
    assert_ok(&under_umask_022(
        &key,
        &["keygen", "--env-file", env_file.to_str().unwrap()],
    ));
    let restored = tmp.path().join("restored");
    assert_ok(&under_umask_022(
        &key,
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    ));
    assert_private(&dir);
    assert_private(&restored);
    for f in [&backup, &export, &env_file] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

#[test]
fn a_planted_provider_index_entry_is_refused_not_followed() {
    let v = Vault::new();
    let reader = v.token("openai-only", "reader", Some("openai"));
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let openai = admin.create_key("openai", "main", "sk-openai-1");
    let github = admin.create_key("github", "main", "ghp-secret-2");
    let claude_old = admin.create_key("claude", "old", "sk-ant-old");
    let _claude_new = admin.create_key("claude", "new", "sk-ant-new");
    s.stop();
    // An index entry, far in the future, under `openai` naming the GitHub
    // key, and one under `claude` making the older key look newest.
    let entry = |provider: &str, id: &str| {
        let mut k = provider.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&(u64::MAX - 1).to_be_bytes());
        k.extend_from_slice(uuid::Uuid::parse_str(id).unwrap().as_bytes());
        k
    };
    with_sled(&v.dir, |db| {
        let index = db.open_tree("by_provider").unwrap();
        index.insert(entry("openai", &github), vec![]).unwrap();
        index.insert(entry("claude", &claude_old), vec![]).unwrap();
    });
    let s = v.serve(&[]);
    let r = Api::new(&s, &reader).get("/api/providers/openai/key");
    assert_eq!(r.status(), 409);
    assert!(!r.text().unwrap().contains("ghp-secret-2"));
    let r = Api::new(&s, &v.admin).get("/api/providers/claude/key");
    assert_eq!(r.status(), 409);
    assert!(!r.text().unwrap().contains("sk-ant-old"));
    // The keys themselves are intact and reveal by id.
    assert_eq!(
        Api::new(&s, &reader)
            .get(&format!("/api/keys/{openai}"))
            .status(),
        200
    );
    s.stop();
}

#[test]
fn a_rewritten_store_stays_private_and_a_planted_current_is_refused() {
    let v = Vault::new();
    if v.pg.is_some() {
        // The data directory's layout is sled's.
        return;
    }
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    let id = admin.create_key("claude", "gone", "sk-purged-at-once");
    let keep = admin.create_key("claude", "kept", "sk-kept");
    let r = admin.delete(&format!("/api/keys/{id}?purge=true"));
    assert_eq!(r.status(), 200);
    server.stop();
    // The purge rewrote the store into store.1, private like the rest.
    assert_eq!(
        std::fs::read_to_string(v.dir.join("CURRENT")).unwrap(),
        "store.1\n"
    );
    assert_private(&v.dir);

    // A writer of the files points CURRENT elsewhere (a directory of
    // theirs): the store is not opened, and the message says what to fix.
    let theirs = v.tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    for planted in [
        "../theirs",
        theirs.to_str().unwrap(),
        "store.1/../../theirs",
    ] {
        std::fs::write(v.dir.join("CURRENT"), format!("{planted}\n")).unwrap();
        for args in [&["check"][..], &["audit", "verify"][..]] {
            let mut all = args.to_vec();
            all.extend(["--data-dir", v.dir_str()]);
            let out = run_with_key(&v.key, &all);
            assert_eq!(out.status.code(), Some(2), "{planted} {args:?}");
            assert!(stderr(&out).contains("CURRENT"), "{}", stderr(&out));
        }
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    }
    // Put back, it serves as before.
    std::fs::write(v.dir.join("CURRENT"), "store.1\n").unwrap();
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    assert_eq!(
        admin
            .get(&format!("/api/keys/{keep}"))
            .json::<Value>()
            .unwrap()["api_key"],
        "sk-kept"
    );
    server.stop();
}
