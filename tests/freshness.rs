//! Nothing older comes back (issue 23): an older authentic copy of a key
//! or token record, a schema mark set back, or signed audit records
//! stripped of their tag are refused, through the real binary. Each
//! forgery is made on a stopped sled store with sled itself (someone with
//! write access to the files), or on PostgreSQL with `psql` as a superuser
//! while the node runs.
//!
//! Over 500 lines: one forgery per test, each made with sled or psql on
//! a real store and refused through the binary.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn json_of(r: reqwest::blocking::Response) -> Value {
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Every entry of one sled tree of the stopped store.
fn tree(dir: &Path, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    with_sled(dir, |db| {
        db.open_tree(name)
            .unwrap()
            .iter()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    })
}

/// Writes entries back into one tree of the stopped store, as they were.
fn put_back(dir: &Path, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) {
    with_sled(dir, |db| {
        let t = db.open_tree(name).unwrap();
        for (k, v) in entries {
            t.insert(k.as_slice(), v.as_slice()).unwrap();
        }
    });
}

/// `keyhold check` on `dir`: exit code and stdout.
fn check(dir: &Path, key: &str) -> (i32, String) {
    let out = run_with_key(key, &["check", "--data-dir", dir.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A store, refused at open and by `check` after `forge` ran on its
/// stopped files; `expect` must appear in serve's refusal, `named` in
/// check's listing.
fn assert_refused(v: &Vault, expect: &str, named: &str) {
    let err = serve_must_refuse(&v.dir, &v.key);
    assert!(err.contains(expect), "serve said: {err}");
    let (code, out) = check(&v.dir, &v.key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL the store matches the state"), "{out}");
    assert!(out.contains(named), "check said: {out}");
    // Every offline command refuses the store too.
    let out = run_with_key(&v.key, &["audit", "verify", "--data-dir", v.dir_str()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

fn token_id(admin: &Api, name: &str) -> String {
    json_of(admin.get("/api/tokens"))
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name && t["revoked_at"].is_null())
        .unwrap_or_else(|| panic!("no live token {name}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_revoked_tokens_older_record_written_back_is_refused() {
    let v = Vault::new();
    let old_admin = v.token("old-admin", "admin", None);
    // The record as it was before the revocation (the live sled file
    // still holds this copy afterwards; taking it now is the same bytes).
    let before = tree(&v.dir, "tokens");
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let id = token_id(&admin, "old-admin");
    assert_eq!(admin.delete(&format!("/api/tokens/{id}")).status(), 200);
    assert_eq!(Api::new(&s, &old_admin).get("/api/tokens").status(), 401);
    s.stop();
    assert_eq!(check(&v.dir, &v.key).0, 0, "{}", check(&v.dir, &v.key).1);

    put_back(&v.dir, "tokens", &before);
    assert_refused(
        &v,
        "the token records differ from the signed state",
        &format!("token {id} `old-admin`"),
    );
}

#[test]
fn a_purged_keys_record_put_back_is_refused_and_reveals_nothing() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "main", "sk-purged-0001");
    s.stop();
    let keys = tree(&v.dir, "keys");
    let index = tree(&v.dir, "by_provider");
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let r = admin.delete(&format!("/api/keys/{id}?purge=true"));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    s.stop();

    put_back(&v.dir, "keys", &keys);
    put_back(&v.dir, "by_provider", &index);
    assert_refused(
        &v,
        "1 records were added",
        &format!("key {id}: purged at seq"),
    );
}

#[test]
fn a_soft_deleted_keys_pre_delete_record_is_refused() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "main", "sk-deleted-0001");
    s.stop();
    let keys = tree(&v.dir, "keys");
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    assert_eq!(admin.delete(&format!("/api/keys/{id}")).status(), 200);
    s.stop();

    put_back(&v.dir, "keys", &keys);
    assert_refused(
        &v,
        "the key records differ from the signed state",
        &format!("key {id}: the record was written at seq"),
    );
}

#[test]
fn a_rotated_tokens_pre_rotation_record_is_refused() {
    let v = Vault::new();
    v.token("bot", "reader", None);
    let before = tree(&v.dir, "tokens");
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let id = token_id(&admin, "bot");
    // The rotation gives the old token an expiry (the end of its overlap):
    // its pre-rotation copy has none, and must not come back.
    let r = admin.post_json(
        &format!("/api/tokens/{id}/rotate"),
        &serde_json::json!({"overlap_seconds": 60}),
    );
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    s.stop();

    put_back(&v.dir, "tokens", &before);
    assert_refused(
        &v,
        "the token records differ from the signed state",
        &format!("token {id} `bot`"),
    );
}

#[test]
fn a_schema_mark_set_back_is_refused() {
    for back in [4u32, 3, 2] {
        let v = Vault::new();
        with_sled(&v.dir, |db| {
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", postcard::to_stdvec(&back).unwrap())
                .unwrap();
        });
        let err = serve_must_refuse(&v.dir, &v.key);
        let named = if back >= 3 {
            "schema_version"
        } else {
            "changed outside keyhold"
        };
        assert!(err.contains(named), "schema {back}: {err}");
        // Nothing was appended: no "upgrade" vouches for the set-back mark.
        let n = with_sled(&v.dir, |db| db.open_tree("audit").unwrap().len());
        assert!(n >= 1);
    }
}

/// The store's audit records, decoded, by seq.
fn read_records(dir: &Path) -> Vec<keyhold::internals::audit::AuditRecord> {
    let log = with_store(dir, |store| {
        store
            .audit_iter(0)
            .map(|r| r.unwrap().1.to_vec())
            .collect::<Vec<_>>()
    });
    log.iter()
        .map(|b| keyhold::internals::audit::AuditRecord::decode(b).unwrap())
        .collect()
}

/// Strips tag and signature from the records `1..=upto`, and rewrites
/// the reveal among them as refused to `anonymous`: the edit of
/// issue 23's reproduction, made on an export.
fn stripped_export(lines: &str, upto: u64) -> String {
    let mut out = String::new();
    for line in lines.lines() {
        let mut r: Value = serde_json::from_str(line).unwrap();
        if r["seq"].as_u64().unwrap() <= upto {
            r["tag"] = Value::Null;
            r["sig"] = Value::Null;
            if r["action"] == "reveal" && r["outcome"] == "success" {
                r["caller"] = "anonymous".into();
                r["caller_id"] = Value::Null;
                r["outcome"] = "forbidden".into();
            }
        }
        out.push_str(&serde_json::to_string(&r).unwrap());
        out.push('\n');
    }
    out
}

fn public_key(v_key: &str, dir: &Path) -> String {
    let out = run_with_key(
        v_key,
        &["audit", "public-key", "--data-dir", dir.to_str().unwrap()],
    );
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn verify_file(file: &Path, public: &str) -> (i32, String) {
    let out = keyhold()
        .args(["audit", "verify", "--file", file.to_str().unwrap()])
        .args(["--public-key", public])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn export(key: &str, dir: &Path) -> String {
    let out = run_with_key(
        key,
        &["audit", "export", "--data-dir", dir.to_str().unwrap()],
    );
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

/// The stripped-tag edit, in an export and in the store itself: every
/// verifier names records 1..=upto (or the first of them).
fn assert_stripped_prefix_caught(key: &str, dir: &Path, upto: u64, admin: &str) {
    let public = public_key(key, dir);
    let lines = export(key, dir);
    let (code, out) = verify_file(&write_tmp(dir, "whole.jsonl", &lines), &public);
    assert_eq!(code, 0, "the untouched export verifies: {out}");
    let file = write_tmp(dir, "stripped.jsonl", &stripped_export(&lines, upto));
    let (code, out) = verify_file(&file, &public);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("1..={upto}")), "{out}");
    // With the keyring instead of the public key, whole and --filtered.
    for filtered in [false, true] {
        let mut args = vec!["audit", "verify", "--data-dir", dir.to_str().unwrap()];
        args.extend(["--file", file.to_str().unwrap()]);
        if filtered {
            args.push("--filtered");
        }
        let out = run_with_key(key, &args);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "filtered {filtered}: {said}");
        assert!(
            said.contains("BROKEN at seq 1"),
            "filtered {filtered}: {said}"
        );
    }

    // The same edit made in the store, with sled itself.
    let records = read_records(dir);
    with_sled(dir, |db| {
        let t = db.open_tree("audit").unwrap();
        t.clear().unwrap();
        for mut r in records {
            if r.seq <= upto {
                r.tag = None;
                r.sig = None;
                if r.event.action == keyhold::internals::audit::Action::Reveal
                    && r.event.outcome == keyhold::internals::audit::Outcome::Success
                {
                    r.event.caller = "anonymous".into();
                    r.event.outcome = keyhold::internals::audit::Outcome::Forbidden;
                }
            }
            t.insert(r.seq.to_be_bytes(), r.encode().unwrap()).unwrap();
        }
    });
    let out = run_with_key(
        key,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("BROKEN at seq 1"), "{said}");
    let (code, said) = check(dir, key);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("FAIL audit chain: BROKEN at seq 1"), "{said}");
    let s = Server::start(dir, &[("FERNET_KEY", key)]);
    let report = json_of(Api::new(&s, admin).get("/api/audit/verify"));
    assert_eq!(report["status"], "broken", "{report}");
    assert_eq!(report["seq"], 1, "{report}");
    drop(s);
}

fn write_tmp(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.parent().unwrap().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn signed_records_stripped_of_their_tag_are_caught_on_a_store_born_signed() {
    let v = Vault::new();
    let reader = v.token("orch", "reader", None);
    let s = v.serve(&[]);
    let id = Api::new(&s, &v.admin).create_key("claude", "main", "sk-1");
    assert_eq!(
        Api::new(&s, &reader)
            .get(&format!("/api/keys/{id}"))
            .status(),
        200
    );
    s.stop();
    let n = read_records(&v.dir).len() as u64;
    assert_stripped_prefix_caught(&v.key, &v.dir, n - 1, &v.admin);
}

#[test]
fn signed_records_stripped_of_their_tag_are_caught_on_an_upgraded_store() {
    // The schema-3 fixture (tests/data/SCHEMA3-FIXTURE.md): its records
    // 1..=8 were signed at schema 3; the upgrade records follow.
    const KEY: &str = "t-kxZ7dR8_vdXXrcsj9wWX6jeoV7EZ8b1MfoeatwJsU=";
    const ADMIN: &str = "kh_Puh9UBOlVEO_hOfIKi09Q0AU4zdkFwZmRq98RPgiMTw";
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&data.join("schema3-store"), &dir);
    let (code, out) = check(&dir, KEY);
    assert_eq!(code, 0, "{out}");
    assert_stripped_prefix_caught(KEY, &dir, 8, ADMIN);
}

#[test]
fn an_empty_export_proves_nothing() {
    let v = Vault::new();
    let public = public_key(&v.key, &v.dir);
    let file = write_tmp(&v.dir, "empty.jsonl", "");
    let (code, out) = verify_file(&file, &public);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no records"), "{out}");
}

#[test]
fn an_export_says_when_a_cut_at_a_commit_cannot_be_excluded() {
    let v = Vault::new();
    let public = public_key(&v.key, &v.dir);
    let lines = export(&v.key, &v.dir);
    let file = write_tmp(&v.dir, "whole.jsonl", &lines);
    let (code, out) = verify_file(&file, &public);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("commit boundary"), "{out}");
    // A tail whose newest record no signature covers fails.
    let mut cut: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = cut.last_mut().unwrap();
    last["sig"] = Value::Null;
    let text: String = cut
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let (code, out) = verify_file(&write_tmp(&v.dir, "unsigned.jsonl", &text), &public);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_newer_backup_rewrapped_as_format_1_is_refused() {
    use sha2::Digest;
    let v = Vault::new();
    let file = v.tmp.path().join("store.backup");
    assert_ok(&run_with_key(
        &v.key,
        &["backup", "--data-dir", v.dir_str(), file.to_str().unwrap()],
    ));
    // Format 1 claiming schema 2, its plain SHA-256 trailer recomputed:
    // what anyone can do to a backup without the keyring.
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"KEYHOLD-BACKUP\n"));
    bytes[15..19].copy_from_slice(&1u32.to_be_bytes());
    bytes[19..23].copy_from_slice(&2u32.to_be_bytes());
    let n = bytes.len();
    let sum: [u8; 32] = sha2::Sha256::digest(&bytes[..n - 32]).into();
    bytes[n - 32..].copy_from_slice(&sum);
    let rewrapped = v.tmp.path().join("rewrapped.backup");
    std::fs::write(&rewrapped, &bytes).unwrap();
    let target = v.tmp.path().join("restored");
    let out = run_with_key(
        &v.key,
        &[
            "restore",
            rewrapped.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
            "--allow-unauthenticated",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("re-wrapped"), "{err}");
    assert!(!target.exists(), "nothing was written");
    // A genuine format-1 backup still restores with the flag:
    // tests/integrity.rs, an_old_unauthenticated_backup_restores_only_...
}

#[test]
fn a_schema_4_store_is_upgraded_in_place_keeping_keys_tokens_and_chain() {
    // tests/data/SCHEMA4-FIXTURE.md: written by the release before this
    // change (4afb5c2).
    const KEY: &str = "Vj6t2f0pQ9y8mH5xJ3kL1nR4sT7uW0zA2bC5dE8fG1I=";
    const ADMIN: &str = "kh_T0sNhZLho9egREkNgPVs9vsooT3ttPYBxwe07fRD1Ic";
    const READER: &str = "kh_m6u_WL6CG0Utw0g8zKxP5FEFBs9CiRfEKGL1P-XPVBU";
    const CI: &str = "kh_kmXZkDjCYebOSwS6jYUb9HzKwhKcf1qa_PZw25Uw9Uc";
    const OLD_ADMIN: &str = "kh_F5Db_icHeVIk4WKzeH5KNSaGQtH3NsOT3p0dgav3DTY";
    const CLAUDE: &str = "7f8e6787-8090-44a6-be9b-2523522157e4";
    const GITHUB: &str = "7301dcc3-04dd-47f5-9672-3efd2b6eca67";
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&data.join("schema4-store"), &dir);
    let public = public_key(KEY, &dir);

    let s = Server::start(&dir, &[("FERNET_KEY", KEY)]);
    let r = json_of(Api::new(&s, READER).get(&format!("/api/keys/{CLAUDE}")));
    assert_eq!(r["api_key"], "sk-ant-schema4-claude-0001-v2");
    let r = json_of(Api::new(&s, ADMIN).get(&format!("/api/keys/{CLAUDE}?version=1")));
    assert_eq!(r["api_key"], "sk-ant-schema4-claude-0001");
    assert_eq!(
        Api::new(&s, CI).get("/api/providers/gemini/key").status(),
        200
    );
    assert_eq!(Api::new(&s, OLD_ADMIN).get("/api/tokens").status(), 401);
    let r = Api::new(&s, ADMIN)
        .req(
            reqwest::Method::POST,
            &format!("/api/keys/{GITHUB}/restore"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "the soft-deleted key is still restorable");
    s.stop();

    let lines = export(KEY, &dir);
    let upgrades: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "upgrade")
        .collect();
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert!(upgrades[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("upgrade to schema 5"));
    let (code, out) = verify_file(&write_tmp(&dir, "upgraded.jsonl", &lines), &public);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&dir, KEY);
    assert_eq!(code, 0, "{out}");

    // The upgraded store is held to its state: the revoked admin's
    // record from the fixture (before the upgrade) put back is refused.
    let original = tempfile::tempdir().unwrap();
    copy_dir(&data.join("schema4-store"), original.path());
    let old_tokens = tree(original.path(), "tokens");
    let s = Server::start(&dir, &[("FERNET_KEY", KEY)]);
    let admin = Api::new(&s, ADMIN);
    let id = token_id(&admin, "orchestrator");
    assert_eq!(admin.delete(&format!("/api/tokens/{id}")).status(), 200);
    s.stop();
    put_back(&dir, "tokens", &old_tokens);
    let err = serve_must_refuse(&dir, KEY);
    assert!(err.contains("token records differ"), "{err}");

    // The fixture's backup restores and is upgraded the same way.
    let restored = tmp.path().join("restored");
    let out = run_with_key(
        KEY,
        &[
            "restore",
            data.join("schema4.backup").to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let (code, out) = check(&restored, KEY);
    assert_eq!(code, 0, "{out}");
}

/// The tokens-tree entries of `dir` whose storage key is not in `had`.
fn new_entries(dir: &Path, had: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree(dir, "tokens")
        .into_iter()
        .filter(|(k, _)| !had.iter().any(|(h, _)| h == k))
        .collect()
}

/// A key made, a copy of the store kept (what an attacker keeps from
/// before the rotation), then `rotate` to a new key: the key's id, the
/// copy, the new key and what `rotate` said.
fn rotated(v: &Vault, secret: &str) -> (String, PathBuf, String, String) {
    let s = v.serve(&[]);
    let id = Api::new(&s, &v.admin).create_key("claude", "main", secret);
    s.stop();
    let before = v.tmp.path().join("before-rotation");
    copy_dir(&v.dir, &before);
    let new_key = keygen();
    let out = keyhold()
        .env("FERNET_KEYS", format!("{new_key},{}", v.key))
        .args(["rotate", "--data-dir", v.dir_str()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    (id, before, new_key, said)
}

#[test]
fn a_token_forged_with_a_retired_keys_record_secret_is_refused_after_rotation() {
    let v = Vault::new();
    let (id, before, new_key, said) = rotated(&v, "sk-rotated-0001");
    assert!(said.contains("a new record MAC secret"), "{said}");
    // The old key is retired: nothing needs it.
    let (code, out) = check(&v.dir, &new_key);
    assert_eq!(code, 0, "{out}");
    let s = Server::start(&v.dir, &[("FERNET_KEY", new_key.as_str())]);
    let r = json_of(Api::new(&s, &v.admin).get(&format!("/api/keys/{id}")));
    assert_eq!(r["api_key"], "sk-rotated-0001");
    s.stop();

    // With the retired key, the old copy mints an admin token: its record
    // is authenticated under the record secret that key unseals, and
    // stored where the store looks for that token (the token digest key
    // is unchanged). Planted in the rotated store, it is refused.
    let had = tree(&before, "tokens");
    let forged = run_with_key(
        &v.key,
        &[
            "token",
            "create",
            "--data-dir",
            before.to_str().unwrap(),
            "--name",
            "forged",
            "--role",
            "admin",
        ],
    );
    assert_ok(&forged);
    let planted = new_entries(&before, &had);
    // Where the retired key's secrets put that token is not where the
    // rotated store looks: its token digest has a layer the retired key
    // knows nothing of (and every record moved there).
    assert!(tree(&v.dir, "tokens")
        .iter()
        .all(|(k, _)| !had.iter().any(|(h, _)| h == k)));
    assert_eq!(planted.len(), 1);
    put_back(&v.dir, "tokens", &planted);
    let err = serve_must_refuse(&v.dir, &new_key);
    assert!(err.contains("1 records were added"), "{err}");
    let (code, out) = check(&v.dir, &new_key);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "tampered (written or changed outside keyhold; restore from a backup): token record"
        ),
        "its MAC is under the retired secret: {out}"
    );
}

#[test]
fn a_rotation_stopped_half_way_leaves_a_readable_store_and_finishes_when_run_again() {
    for attempt in 0..4 {
        let v = Vault::new();
        let s = v.serve(&[]);
        let admin = Api::new(&s, &v.admin);
        let ids: Vec<String> = (0..8)
            .map(|i| admin.create_key("claude", &format!("k{i}"), &format!("sk-{i}")))
            .collect();
        s.stop();
        let new_key = keygen();
        let both = format!("{new_key},{}", v.key);
        // Paced, so that a kill lands while records are being moved to the
        // new record MAC secret (after the keys were re-encrypted).
        let mut child = keyhold()
            .env("FERNET_KEYS", &both)
            .args(["rotate", "--data-dir", v.dir_str(), "--pace-ms", "150"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1_900 + 150 * attempt));
        let _ = child.kill();
        let _ = child.wait();
        let out = keyhold()
            .env("FERNET_KEYS", &both)
            .args(["check", "--data-dir", v.dir_str()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("a rotation stopped before every record") {
            // The kill did not land in that phase: try again, later.
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("ok   the store matches the state"), "{text}");
        // Every key still reads, with either key in the keyring.
        let s = Server::start(&v.dir, &[("FERNET_KEYS", both.as_str())]);
        for (i, id) in ids.iter().enumerate() {
            let r = json_of(Api::new(&s, &v.admin).get(&format!("/api/keys/{id}")));
            assert_eq!(r["api_key"], format!("sk-{i}"));
        }
        s.stop();
        let out = keyhold()
            .env("FERNET_KEYS", &both)
            .args(["rotate", "--data-dir", v.dir_str()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, text) = check(&v.dir, &new_key);
        assert_eq!(code, 0, "{text}");
        return;
    }
    panic!("no kill landed while records were being moved to the new secret");
}

#[test]
fn the_first_rotation_makes_a_record_mac_secret_even_with_one_key_and_the_next_does_not_again() {
    let v = Vault::new();
    let rotate = |key: &str| {
        let out = run_with_key(key, &["rotate", "--data-dir", v.dir_str()]);
        assert_ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Never rotated: records are authenticated under the record secret
    // that every key the store was ever sealed under opens. A rotation
    // (even one with nothing to re-encrypt, say one run again after a
    // crash in the re-encryption) makes the record MAC secret.
    let said = rotate(&v.key);
    assert!(said.contains("a new record MAC secret"), "{said}");
    // Under the newest key already: nothing to do again.
    let said = rotate(&v.key);
    assert!(!said.contains("a new record MAC secret"), "{said}");
    let (code, out) = check(&v.dir, &v.key);
    assert_eq!(code, 0, "{out}");
    // The admin token still opens the store (its record moved with it).
    let s = v.serve(&[]);
    assert_eq!(Api::new(&s, &v.admin).get("/api/tokens").status(), 200);
    s.stop();
}

/// The audit tag key moves with the rotation: a record written after it
/// is tagged under the new record MAC secret, so a holder of the retired
/// key (and of a copy of the store from before the rotation) cannot make
/// a tag that a filtered export's verification accepts for it. Records
/// from before the rotation keep the tag of their time.
#[test]
fn an_audit_tag_made_with_a_retired_keys_record_secret_is_refused_after_rotation() {
    use keyhold::internals::audit::{record_tag, AuditKeys, AuditRecord, ExportRecord};
    let v = Vault::new();
    let (id, before, new_key, _) = rotated(&v, "sk-tagged-0001");
    let s = Server::start(&v.dir, &[("FERNET_KEY", new_key.as_str())]);
    assert_eq!(
        Api::new(&s, &v.admin)
            .get(&format!("/api/keys/{id}"))
            .status(),
        200
    );
    s.stop();

    // The attacker's tag key: the one the retired key unseals from the
    // copy made before the rotation.
    let retired = with_unlocked_store(&before, &v.key, |store| {
        let ring = keyhold::internals::keyring::Keyring::parse_list(
            keyhold::internals::keyring::KeySource::FernetKey,
            [v.key.as_str()],
        )
        .unwrap();
        AuditKeys::unseal(store, &ring)
            .unwrap()
            .verify_keys()
            .tag
            .unwrap()
    });
    let lines = export(&new_key, &v.dir);
    let records: Vec<ExportRecord> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rotated_at = records
        .iter()
        .find(|r| r.action == "rotate" && r.outcome == "success")
        .map(|r| r.seq)
        .expect("a rotate record");
    let reveal = records
        .iter()
        .find(|r| r.action == "reveal" && r.seq > rotated_at)
        .expect("a reveal after the rotation");

    // The reveal after the rotation, as it is: its filtered export
    // verifies with the keyring.
    let one = |r: &ExportRecord| serde_json::to_string(r).unwrap() + "\n";
    let verify_filtered = |text: &str| {
        let file = write_tmp(&v.dir, "filtered.jsonl", text);
        let out = run_with_key(
            &new_key,
            &[
                "audit",
                "verify",
                "--filtered",
                "--file",
                file.to_str().unwrap(),
                "--data-dir",
                v.dir_str(),
            ],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = verify_filtered(&one(reveal));
    assert_eq!(code, Some(0), "{out}");

    // Rewritten as refused to `anonymous`, its hash recomputed and tagged
    // under the retired key's tag key: refused.
    let mut rec = AuditRecord::from_export(reveal).unwrap();
    assert_ne!(
        record_tag(retired.current(), &rec.mac),
        rec.tag.unwrap(),
        "the record after the rotation is tagged under a new key"
    );
    rec.event.caller = "anonymous".into();
    rec.event.caller_id = None;
    rec.event.outcome = keyhold::internals::audit::Outcome::Forbidden;
    rec.mac = AuditRecord::chain_hash(
        &rec.prev,
        rec.seq,
        rec.at_us,
        &rec.event,
        rec.node.as_deref(),
    );
    rec.tag = Some(record_tag(retired.current(), &rec.mac));
    rec.sig = None;
    let (code, out) = verify_filtered(&one(&rec.to_export()));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("tag does not match"), "{out}");
}
