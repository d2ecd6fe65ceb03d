//! A reveal answers 200 only after its audit record is durable: when the
//! record cannot be written (here: the disk is full), the answer is 503
//! and no plaintext leaves.

mod common;

use std::process::Command;

use common::*;

/// A small tmpfs mounted for the test (needs root, as CI runs); unmounted
/// on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Some(SmallDisk { dir });
        }
        let why = "mounting a small tmpfs needs root (CI runs as root)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("full-disk test not run here: {why}");
        None
    }

    fn fill(&self) {
        let _ = std::fs::write(self.dir.path().join("filler"), vec![0u8; 64 << 20]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_reveal_whose_record_cannot_be_written_answers_503_without_plaintext() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let dir = disk.dir.path().join("data");
    let key = keygen();
    let admin = init(&dir, &key);
    let s = Server::start(
        &dir,
        &[
            ("FERNET_KEY", key.as_str()),
            ("KEYHOLD_REVEAL_RATE", "100000/s"),
            ("KEYHOLD_AUDIT_TIMEOUT_MS", "3000"),
        ],
    );
    let api = Api::new(&s, &admin);
    let secret = "sk-ant-MUST-NOT-LEAVE-WHEN-UNAUDITED";
    let id = api.create_key("claude", "k", secret);
    assert_eq!(api.get(&format!("/api/keys/{id}")).status(), 200);
    disk.fill();
    // Write until the store's preallocated space is used up too.
    let mut refused = false;
    for _ in 0..5000 {
        let r = api.post_json(
            "/api/keys",
            &serde_json::json!({"provider": "filler", "key_name": "f", "api_key": "x".repeat(200)}),
        );
        if r.status() == 503 {
            refused = true;
            break;
        }
        assert_eq!(r.status(), 200);
    }
    assert!(refused, "the disk never filled");
    let r = api.get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body = r.text().unwrap();
    assert!(
        !body.contains(secret),
        "plaintext left without an audit record"
    );
    // Which of the two fails first depends on when sled's flusher meets
    // the full disk: the reveal's record (503, "the audit log cannot be
    // written") or, once sled has put itself in its failed state, the
    // read of the key before it (503, "storage is unavailable"). Either
    // way nothing was served and the answer says to tell the operator.
    assert!(
        body.contains("audit") || body.contains("storage is unavailable"),
        "{body}"
    );
    let r = api.get("/api/providers/claude/key");
    assert_eq!(r.status(), 503);
    assert!(!r.text().unwrap().contains(secret));
    let health = client().get(s.url("/healthz")).send().unwrap();
    assert_eq!(health.status(), 503);
    let h: serde_json::Value = health.json().unwrap();
    assert_eq!(h["audit_writer"], "failing");
    let out = s.output();
    assert!(!out.contains("panicked"), "{out}");
    drop(s);
}
