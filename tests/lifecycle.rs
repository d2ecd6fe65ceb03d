//! Key lifecycle: rotation (offline, online, killed part-way), `check`,
//! import from the Python reference, backup and restore.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use keyhold::internals::keyring::token_timestamp;
use serde_json::Value;

fn with_keys(keys: &str, args: &[&str]) -> std::process::Output {
    keyhold()
        .env("FERNET_KEYS", keys)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check_json(v: &Vault, keys: &str) -> (i32, Value) {
    let out = with_keys(
        keys,
        &["check", "--json", v.store_args()[0], v.store_args()[1]],
    );
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

/// Creates `n` keys through the API; returns (id, plaintext) pairs.
fn fill(v: &Vault, n: usize) -> Vec<(String, String)> {
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let out = (0..n)
        .map(|i| {
            let p = format!("sk-rot-{i}");
            (
                api.create_key(["claude", "gemini"][i % 2], &format!("k{i}"), &p),
                p,
            )
        })
        .collect();
    s.stop();
    out
}

#[test]
fn rotation_moves_every_record_to_the_new_key_and_keeps_times() {
    let v = Vault::new();
    let mut keys = fill(&v, 5);
    // One key with a TTL, to see expires_at survive.
    let s = v.serve(&[]);
    let r = Api::new(&s, &v.admin).post_json(
        "/api/keys",
        &serde_json::json!({"provider": "github", "key_name": "t", "api_key": "ghp-ttl", "ttl_seconds": 86400}),
    );
    keys.push((
        r.json::<Value>().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string(),
        "ghp-ttl".into(),
    ));
    s.stop();
    let before = v.with_unlocked(&v.key, |st| st.list_keys(None).unwrap());
    let new = keygen();
    let both = format!("{new},{}", v.key);
    // Before rotating, check says what still needs the old key.
    let (code, report) = check_json(&v, &both);
    assert_eq!(code, 1);
    assert_eq!(
        report["on_older_key"],
        keys.len() as u64 + 3,
        "keys, check value, record secret and audit signing key"
    );
    let out = with_keys(&both, &["rotate", v.store_args()[0], v.store_args()[1]]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("rotated {} keys", keys.len())));
    let after = v.with_unlocked(&new, |st| st.list_keys(None).unwrap());
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.id, a.id);
        assert_ne!(b.token, a.token, "re-encrypted");
        assert_eq!(
            token_timestamp(&b.token),
            token_timestamp(&a.token),
            "original timestamp kept"
        );
        assert_eq!(b.created_at_us, a.created_at_us);
        assert_eq!(b.expires_at_us, a.expires_at_us);
    }
    let (code, report) = check_json(&v, &both);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["on_older_key"], 0);
    // The old key can be retired: the new key alone opens everything.
    let out = keyhold()
        .env("FERNET_KEY", &new)
        .args(["check", v.store_args()[0], v.store_args()[1]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let s = v.serve_env(&[("FERNET_KEY", new.as_str())]);
    let api = Api::new(&s, &v.admin);
    for (id, plain) in &keys {
        let r: Value = api.get(&format!("/api/keys/{id}")).json().unwrap();
        assert_eq!(r["api_key"], plain.as_str());
    }
    s.stop();
    // The old key alone no longer opens the store.
    let out = keyhold()
        .env("FERNET_KEY", &v.key)
        .args([
            "serve",
            v.store_args()[0],
            v.store_args()[1],
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Rotation is audited, with its counts.
    let recs = {
        let out = keyhold()
            .env("FERNET_KEY", &new)
            .args([
                "audit",
                "export",
                "--action",
                "rotate",
                v.store_args()[0],
                v.store_args()[1],
            ])
            .output()
            .unwrap();
        stdout(&out)
    };
    assert!(
        recs.contains(&format!("rotated {} keys", keys.len())),
        "{recs}"
    );
}

#[test]
fn online_rotation_answers_counts_and_is_admin_only() {
    let v = Vault::new();
    let keys = fill(&v, 4);
    let reader = v.token("r", "reader", None);
    let new = keygen();
    let both = format!("{new},{}", v.key);
    let s = v.serve_env(&[("FERNET_KEYS", both.as_str())]);
    let api = Api::new(&s, &v.admin);
    assert_eq!(
        Api::new(&s, &reader)
            .req(reqwest::Method::POST, "/api/admin/rotate")
            .send()
            .unwrap()
            .status(),
        403
    );
    let r = api
        .req(reqwest::Method::POST, "/api/admin/rotate")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["rotated"], 4);
    assert_eq!(body["already_current"], 0);
    let again: Value = api
        .req(reqwest::Method::POST, "/api/admin/rotate")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["rotated"], 0);
    assert_eq!(again["already_current"], 4);
    for (id, plain) in &keys {
        let r: Value = api.get(&format!("/api/keys/{id}")).json().unwrap();
        assert_eq!(r["api_key"], plain.as_str());
    }
    s.stop();
    let out = keyhold()
        .env("FERNET_KEY", &new)
        .args(["check", v.store_args()[0], v.store_args()[1]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn a_rotation_killed_part_way_leaves_everything_readable_and_a_rerun_finishes() {
    let v = Vault::new();
    let keys = fill(&v, 120);
    let new = keygen();
    let both = format!("{new},{}", v.key);
    let mut child = keyhold()
        .env("FERNET_KEYS", &both)
        .args([
            "rotate",
            "--pace-ms",
            "30",
            v.store_args()[0],
            v.store_args()[1],
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // 120 keys at 30 ms each take 3.6 s: kill well inside that.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(!status.success(), "rotate was killed, not finished");
    let (code, report) = check_json(&v, &both);
    assert_eq!(code, 1);
    assert_eq!(
        report["keys_failed"].as_array().unwrap().len(),
        0,
        "every record readable: {report}"
    );
    assert_eq!(report["keys_ok"], 120);
    let left = report["on_older_key"].as_u64().unwrap();
    // 120 keys plus the check value and the MAC key (rotated first).
    assert!(
        left > 0 && left < 122,
        "killed part-way: {left} of 122 records still on the old key"
    );
    let out = with_keys(&both, &["rotate", v.store_args()[0], v.store_args()[1]]);
    assert!(out.status.success());
    let (code, report) = check_json(&v, &both);
    assert_eq!(code, 0, "{report}");
    let s = v.serve_env(&[
        ("FERNET_KEY", new.as_str()),
        ("KEYHOLD_REVEAL_RATE", "1000/min"),
    ]);
    let api = Api::new(&s, &v.admin);
    for (id, plain) in keys.iter().step_by(10) {
        let r: Value = api.get(&format!("/api/keys/{id}")).json().unwrap();
        assert_eq!(r["api_key"], plain.as_str());
    }
}

#[test]
fn import_from_the_python_reference_in_each_form_then_reveal() {
    let key = keygen();
    let tmp = tempfile::tempdir().unwrap();
    let fx = tmp.path().join("fixture");
    if reference_fixture(&key, &fx, &["--rows", "7"]).is_none() {
        return;
    }
    assert!(fx.join("api_keys.db").exists(), "a real sqlite table");
    for form in ["json", "jsonl", "csv"] {
        let dir = tmp.path().join(format!("data-{form}"));
        let admin = init(&dir, &key);
        let file = fx.join(format!("api_keys.{form}"));
        let dry = run_with_key(
            &key,
            &[
                "import",
                "--dry-run",
                "--json",
                "--data-dir",
                dir.to_str().unwrap(),
                "--from",
                file.to_str().unwrap(),
            ],
        );
        assert!(dry.status.success());
        let r: Value = serde_json::from_slice(&dry.stdout).unwrap();
        assert_eq!(r["imported"], 7);
        assert_eq!(r["dry_run"], true);
        assert_eq!(
            with_store(&dir, |st| st.key_count()),
            0,
            "a dry run writes nothing"
        );
        let r = import_json(&key, &dir, &file);
        assert_eq!(r["imported"], 7, "{form}: {r}");
        // Idempotent.
        let again = run_with_key(
            &key,
            &[
                "import",
                "--json",
                "--data-dir",
                dir.to_str().unwrap(),
                "--from",
                file.to_str().unwrap(),
            ],
        );
        let r: Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_eq!(
            (r["imported"].as_u64(), r["already_present"].as_u64()),
            (Some(0), Some(7))
        );
        let s = Server::start(&dir, &[("FERNET_KEY", key.as_str())]);
        let api = Api::new(&s, &admin);
        let listed: Vec<Value> = api.get("/api/keys").json().unwrap();
        assert_eq!(listed.len(), 7);
        for k in &listed {
            let name = k["key_name"].as_str().unwrap();
            let i: u32 = name.rsplit(' ').next().unwrap().parse().unwrap();
            assert_eq!(name, format!("key, \"number\" {i}"));
            // Times kept, read as UTC.
            assert!(
                k["created_at"].as_str().unwrap().starts_with("2024-"),
                "{k}"
            );
            if i.is_multiple_of(3) {
                assert!(k["last_used"].is_null());
            } else {
                assert!(
                    k["last_used"]
                        .as_str()
                        .unwrap()
                        .ends_with("08:00:00.125000Z"),
                    "{k}"
                );
            }
            let r: Value = api
                .get(&format!("/api/keys/{}", k["id"].as_str().unwrap()))
                .json()
                .unwrap();
            assert_eq!(r["api_key"], format!("sk-ref-{i}"));
        }
        s.stop();
    }
}

#[test]
fn import_lists_a_foreign_key_row_and_bad_rows_without_importing_them() {
    let key = keygen();
    let tmp = tempfile::tempdir().unwrap();
    let fx = tmp.path().join("fixture");
    if reference_fixture(&key, &fx, &["--rows", "3", "--foreign-row"]).is_none() {
        return;
    }
    // Add a malformed line and a duplicate id to the JSONL form.
    let mut jsonl = std::fs::read_to_string(fx.join("api_keys.jsonl")).unwrap();
    let first = jsonl.lines().next().unwrap().to_string();
    jsonl.push_str("{not json\n");
    jsonl.push_str(&first);
    jsonl.push('\n');
    jsonl.push_str(
        &first
            .replace("\"provider\": \"gemini\"", "\"provider\": \"Not Valid\"")
            .replace("\"id\": 1", "\"id\": 99"),
    );
    jsonl.push('\n');
    let file = tmp.path().join("rows.jsonl");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(jsonl.as_bytes())
        .unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &key);
    let out = run_with_key(
        &key,
        &[
            "import",
            "--json",
            "--data-dir",
            dir.to_str().unwrap(),
            "--from",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejected rows make the exit status 1"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["imported"], 3);
    let reasons: Vec<String> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.iter().any(|x| x.contains("does not decrypt")));
    assert!(reasons.iter().any(|x| x.contains("not JSON")));
    assert!(reasons.iter().any(|x| x.contains("duplicate id")));
    assert!(reasons.iter().any(|x| x.contains("provider")));
    assert_eq!(with_store(&dir, |st| st.key_count()), 3);
    drop(out);
    let recs = v_export(&key, &dir);
    assert!(recs.contains("\"action\":\"import\""));
}

fn v_export(key: &str, dir: &std::path::Path) -> String {
    let out = run_with_key(
        key,
        &["audit", "export", "--data-dir", dir.to_str().unwrap()],
    );
    stdout(&out)
}

#[test]
fn backup_then_restore_then_reveal_and_verify() {
    let v = Vault::new();
    let keys = fill(&v, 6);
    let backup = v.tmp.path().join("keyhold.backup");
    let out = run_with_key(
        &v.key,
        &[
            "backup",
            v.store_args()[0],
            v.store_args()[1],
            backup.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    // No secret in clear in the backup.
    let bytes = std::fs::read(&backup).unwrap();
    for (_, plain) in &keys {
        assert!(!contains(&bytes, plain.as_bytes()));
    }
    assert!(!contains(&bytes, v.admin.as_bytes()) && !contains(&bytes, v.key.as_bytes()));
    let restored = v.tmp.path().join("restored");
    restore_ok(&v, &backup, &restored);
    let out = run_with_key(
        &v.key,
        &["audit", "verify", "--data-dir", restored.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let s = Server::start(&restored, &[("FERNET_KEY", v.key.as_str())]);
    let api = Api::new(&s, &v.admin);
    for (id, plain) in &keys {
        let r: Value = api.get(&format!("/api/keys/{id}")).json().unwrap();
        assert_eq!(r["api_key"], plain.as_str());
    }
    // Online backup too: streamed, and it restores.
    let r = api.get("/api/admin/backup");
    assert_eq!(r.status(), 200);
    let online = r.bytes().unwrap();
    s.stop();
    let file = v.tmp.path().join("online.backup");
    std::fs::write(&file, &online).unwrap();
    let again = v.tmp.path().join("again");
    restore_ok(&v, &file, &again);
    assert_eq!(with_store(&again, |st| st.key_count()), 6);
}

#[test]
fn restore_refuses_truncated_corrupt_newer_backups_and_non_empty_directories() {
    let v = Vault::new();
    fill(&v, 3);
    let backup = v.tmp.path().join("b");
    assert!(run_with_key(
        &v.key,
        &[
            "backup",
            v.store_args()[0],
            v.store_args()[1],
            backup.to_str().unwrap()
        ]
    )
    .status
    .success());
    let good = std::fs::read(&backup).unwrap();
    let try_restore = |name: &str, bytes: &[u8]| {
        let f = v.tmp.path().join(format!("{name}.backup"));
        std::fs::write(&f, bytes).unwrap();
        let target = v.tmp.path().join(format!("target-{name}"));
        let out = run_with_key(
            &v.key,
            &[
                "restore",
                f.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success(), "{name} was accepted");
        assert!(
            !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
            "{name}: nothing left behind"
        );
        let leftovers: Vec<_> = std::fs::read_dir(v.tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: staging left behind");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = try_restore("truncated", &good[..good.len() / 2]);
    assert!(e.contains("truncated"), "{e}");
    let e = try_restore("no-trailer", &good[..good.len() - 10]);
    assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    let e = try_restore("flipped", &flipped);
    assert!(
        e.contains("corrupt") || e.contains("truncated") || e.contains("MAC does not match"),
        "{e}"
    );
    let mut newer = good.clone();
    newer[15..19].copy_from_slice(&99u32.to_be_bytes());
    let e = try_restore("newer", &newer);
    assert!(e.contains("newer keyhold"), "{e}");
    let e = try_restore("garbage", b"hello world, not a backup");
    assert!(e.contains("not a keyhold backup"), "{e}");
    // A non-empty directory is refused, exit 2, and left alone.
    let out = run_with_key(
        &v.key,
        &[
            "restore",
            backup.to_str().unwrap(),
            v.store_args()[0],
            v.store_args()[1],
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

/// `keyhold restore FILE --data-dir TARGET`, which must succeed.
fn restore_ok(v: &Vault, file: &std::path::Path, target: &std::path::Path) {
    let out = run_with_key(
        &v.key,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
}
