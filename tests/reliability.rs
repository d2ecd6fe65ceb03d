//! Reliability under crash, full/read-only/stalled disk and hostile
//! input: nothing acknowledged is lost, nothing leaks, nothing panics.
//!
//! The crash test runs KEYHOLD_CRASH_RUNS times (default 20); with
//! KEYHOLD_BIN=target/release/keyhold it runs a release server
//! (`scripts/crash-test.sh` does both). The disk tests mount small file
//! systems and need root, as CI runs.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use keyhold::internals::keyring::{KeySource, Keyring};
use keyhold::internals::store::Store;
use serde_json::Value;

#[derive(Default)]
struct Acked {
    /// id → plaintext of every create answered 200.
    creates: HashMap<String, String>,
    /// request ids of every reveal answered 200.
    reveals: Vec<String>,
}

fn runs() -> usize {
    std::env::var("KEYHOLD_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_create_or_reveal() {
    let v = Vault::new();
    let ring = Keyring::parse_list(KeySource::FernetKey, [v.key.as_str()]).unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let n = runs();
    // A fixed pseudo-random sequence of kill moments (reproducible).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for run in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = Duration::from_millis(150 + seed % 900);
        let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000000/s")]);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (base, token, stop, acked) = (s.base.clone(), v.admin.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let c = client();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let plain = format!("sk-crash-{run}-{w}-{i}");
                        let body = serde_json::json!({"provider": "claude", "key_name": "k", "api_key": plain});
                        match c.post(format!("{base}/api/keys")).bearer_auth(&token).json(&body).send() {
                            Ok(r) if r.status() == 200 => {
                                let Ok(v) = r.json::<Value>() else { break };
                                let id = v["id"].as_str().unwrap_or_default().to_string();
                                acked.lock().unwrap().creates.insert(id.clone(), plain);
                                // Reveal it back.
                                match c.get(format!("{base}/api/keys/{id}")).bearer_auth(&token).send() {
                                    Ok(r) if r.status() == 200 => {
                                        let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
                                        // Only a complete answer counts as acknowledged.
                                        if r.json::<Value>().is_ok() {
                                            acked.lock().unwrap().reveals.push(rid);
                                        }
                                    }
                                    _ => break,
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        // Everything acknowledged so far is there after the crash.
        let store = Store::open(&v.dir).unwrap();
        unlock(&store, &v.key);
        let a = acked.lock().unwrap();
        for (id, plain) in &a.creates {
            let rec = store
                .get_key(&id.parse().unwrap())
                .unwrap()
                .unwrap_or_else(|| panic!("run {run}: acknowledged create {id} lost"));
            assert_eq!(
                ring.decrypt(&rec.token).unwrap().plaintext.expose(),
                plain.as_bytes()
            );
        }
        drop(store);
        let out = run_with_key(&v.key, &["audit", "verify", "--data-dir", v.dir_str()]);
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Every acknowledged reveal has its audit record.
    let records = v.audit_records();
    let successes: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r["action"] == "reveal" && r["outcome"] == "success")
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let a = acked.lock().unwrap();
    for rid in &a.reveals {
        assert!(
            successes.contains(rid.as_str()),
            "acknowledged reveal {rid} has no audit record"
        );
    }
    assert!(!a.creates.is_empty() && !a.reveals.is_empty());
    eprintln!(
        "crash test: {n} SIGKILLs; {} acknowledged creates and {} acknowledged reveals all durable; chain verifies",
        a.creates.len(),
        a.reveals.len()
    );
}

#[test]
fn an_import_killed_part_way_then_rerun_imports_everything_once() {
    let key = keygen();
    let tmp = tempfile::tempdir().unwrap();
    let fx = tmp.path().join("fx");
    if reference_fixture(&key, &fx, &["--rows", "6000"]).is_none() {
        return;
    }
    let dir = tmp.path().join("data");
    let admin = init(&dir, &key);
    let file = fx.join("api_keys.jsonl");
    let mut child = keyhold()
        .env("FERNET_KEY", &key)
        .args([
            "import",
            "--data-dir",
            dir.to_str().unwrap(),
            "--from",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it works (checking 6000 rows takes a while).
    std::thread::sleep(Duration::from_millis(400));
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let killed = !child.wait().unwrap().success();
    let before = Store::open(&dir).unwrap().key_count();
    let r = import_json(&key, &dir, &file);
    assert_eq!(
        r["imported"].as_u64().unwrap() + r["already_present"].as_u64().unwrap(),
        6000
    );
    assert_eq!(r["already_present"].as_u64().unwrap(), before as u64);
    let store = Store::open(&dir).unwrap();
    unlock(&store, &key);
    assert_eq!(store.key_count(), 6000);
    let ring = Keyring::parse_list(KeySource::FernetKey, [key.as_str()]).unwrap();
    for k in store.list_keys(None).unwrap().iter().step_by(500) {
        assert!(ring.decrypt(&k.token).is_ok());
    }
    drop(store);
    let out = run_with_key(
        &key,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    );
    assert!(out.status.success());
    eprintln!("import kill test: killed={killed}, {before} rows in before the rerun, 6000 after");
    let _ = admin;
}

/// A small file system mounted for a test (needs root, as CI runs);
/// unfrozen, made writable and unmounted on drop, whatever happens.
struct Disk {
    dir: tempfile::TempDir,
    _image: Option<tempfile::TempDir>,
    frozen: std::cell::Cell<bool>,
}

fn need_root(why: &str) -> bool {
    let ok = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why} needs root (CI runs as root)");
        }
        eprintln!("{why}: not run here (needs root)");
    }
    ok
}

impl Disk {
    fn tmpfs(size: &str) -> Option<Disk> {
        if !need_root("mounting a tmpfs") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Some(Disk {
            dir,
            _image: None,
            frozen: Default::default(),
        })
    }

    /// ext4 in a loop-mounted image: it can be frozen (a stalled disk).
    fn ext4(size_mb: u64) -> Option<Disk> {
        if !need_root("mounting a loop ext4 image") {
            return None;
        }
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mb << 20)
            .unwrap();
        assert!(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .unwrap()
            .success());
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -o loop");
        Some(Disk {
            dir,
            _image: Some(image_dir),
            frozen: Default::default(),
        })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    }

    fn freeze(&self, on: bool) {
        self.frozen.set(on);
        let flag = if on { "-f" } else { "-u" };
        let _ = Command::new("fsfreeze").arg(flag).arg(self.path()).status();
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.frozen.get() {
            self.freeze(false);
        }
        let _ = Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(self.path())
            .status();
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// A vault whose data directory is on `disk`.
fn vault_on(disk: &Disk) -> (std::path::PathBuf, String, String) {
    let dir = disk.path().join("data");
    let key = keygen();
    let admin = init(&dir, &key);
    (dir, key, admin)
}

fn reveal_until(api: &Api, id: &str, want: u16, within: Duration) -> (u16, Duration) {
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let r = api.get(&format!("/api/keys/{id}"));
        let status = r.status().as_u16();
        let took = t.elapsed();
        let body = r.text().unwrap_or_default();
        assert!(
            !body.contains("sk-disk-secret") || status == 200,
            "plaintext in a {status}"
        );
        if status == want || started.elapsed() > within {
            return (status, took);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn health(s: &Server) -> (u16, Value) {
    let r = client().get(s.url("/healthz")).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn a_full_disk_refuses_reveals_with_503_then_service_resumes_by_itself() {
    let Some(disk) = Disk::tmpfs("1m") else {
        return;
    };
    let (dir, key, admin) = vault_on(&disk);
    let s = Server::start(
        &dir,
        &[
            ("FERNET_KEY", key.as_str()),
            ("KEYHOLD_REVEAL_RATE", "100000/s"),
            ("KEYHOLD_AUDIT_TIMEOUT_MS", "2000"),
        ],
    );
    let api = Api::new(&s, &admin);
    let id = api.create_key("claude", "k", "sk-disk-secret");
    let _ = std::fs::write(disk.path().join("filler"), vec![0u8; 64 << 20]);
    let mut full = false;
    for _ in 0..5000 {
        let r = api.post_json(
            "/api/keys",
            &serde_json::json!({"provider": "f", "key_name": "f", "api_key": "x".repeat(200)}),
        );
        if r.status() == 503 {
            full = true;
            break;
        }
    }
    assert!(full, "the disk never filled");
    let (status, took) = reveal_until(&api, &id, 503, Duration::from_secs(5));
    assert_eq!(status, 503);
    assert!(
        took < Duration::from_secs(8),
        "a refused reveal took {took:?}"
    );
    assert_eq!(health(&s).1["audit_writer"], "failing");
    // Space returns: service resumes by itself.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let (status, _) = reveal_until(&api, &id, 200, Duration::from_secs(15));
    assert_eq!(status, 200, "service did not resume");
    assert_eq!(health(&s).0, 200);
    assert!(!s.output().contains("panicked"));
    let (code, _, stderr) = s.stop();
    // The chain is intact. (sled needs room to open a store, and this disk
    // is 1 MiB: give it room first.)
    disk.remount("size=64m");
    let out = run_with_key(
        &key,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "verify: {} {}\nserver exit {code:?}: {stderr}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_read_only_disk_is_refused_clearly_then_served_once_writable() {
    // A file system cannot be remounted read-only under a process that
    // holds files open for writing (the kernel says busy), so this is the
    // read-only case an operator meets: a store on a read-only mount.
    let Some(disk) = Disk::tmpfs("64m") else {
        return;
    };
    let (dir, key, admin) = vault_on(&disk);
    disk.remount("ro");
    let out = keyhold()
        .env("FERNET_KEY", &key)
        .args([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot open the store") && e.contains("Read-only"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    disk.remount("rw");
    let s = Server::start(&dir, &[("FERNET_KEY", key.as_str())]);
    assert_eq!(Api::new(&s, &admin).get("/api/keys").status(), 200);
}

#[test]
fn a_stalled_disk_fails_reveals_in_bounded_time_then_service_resumes() {
    let Some(disk) = Disk::ext4(64) else { return };
    let (dir, key, admin) = vault_on(&disk);
    let s = Server::start(
        &dir,
        &[
            ("FERNET_KEY", key.as_str()),
            ("KEYHOLD_REVEAL_RATE", "100000/s"),
            ("KEYHOLD_AUDIT_TIMEOUT_MS", "1000"),
        ],
    );
    let api = Api::new(&s, &admin);
    let id = api.create_key("claude", "k", "sk-disk-secret");
    disk.freeze(true);
    // Every write now blocks in the kernel: the request must still end.
    let t = Instant::now();
    let r = api.get(&format!("/api/keys/{id}"));
    let took = t.elapsed();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    disk.freeze(false);
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("sk-disk-secret"));
    assert!(
        took < Duration::from_secs(8),
        "a stalled write held the request {took:?}"
    );
    let (status, _) = reveal_until(&api, &id, 200, Duration::from_secs(15));
    assert_eq!(status, 200, "service did not resume");
    assert!(!s.output().contains("panicked"));
}

/// Sends raw bytes and reads the whole answer.
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = sock.write_all(bytes);
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_input_gets_a_clear_4xx_never_a_500_and_the_server_stays_healthy() {
    let v = Vault::new();
    let writer = v.token("w", "writer", None);
    let revoked = v.token("gone", "reader", None);
    let out = run_with_key(
        &v.key,
        &["token", "revoke", "--data-dir", v.dir_str(), "gone"],
    );
    assert!(out.status.success());
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "100000/s")]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-hostile");
    let http = client();
    let url = |p: &str| s.url(p);
    let mut cases: Vec<(String, reqwest::blocking::RequestBuilder)> = Vec::new();
    let post = |body: Vec<u8>, ct: &str| {
        http.post(url("/api/keys"))
            .bearer_auth(&v.admin)
            .header("Content-Type", ct)
            .body(body)
    };
    let nested = "[".repeat(100_000);
    let nested_obj = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    for (name, body) in [
        ("malformed json", b"{\"provider\": ".to_vec()),
        ("deep arrays", nested.clone().into_bytes()),
        ("deep objects", nested_obj.into_bytes()),
        (
            "invalid utf-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        (
            "nul bytes",
            b"{\"provider\":\"a\x00b\",\"key_name\":\"k\",\"api_key\":\"x\"}".to_vec(),
        ),
        (
            "wrong types",
            br#"{"provider":["claude"],"key_name":{"a":1},"api_key":12}"#.to_vec(),
        ),
        (
            "huge string",
            format!(
                r#"{{"provider":"claude","key_name":"{}","api_key":"x"}}"#,
                "n".repeat(60_000)
            )
            .into_bytes(),
        ),
        (
            "huge number",
            br#"{"provider":"claude","key_name":"k","api_key":"x","ttl_seconds":1e400}"#.to_vec(),
        ),
        (
            "negative ttl",
            br#"{"provider":"claude","key_name":"k","api_key":"x","ttl_seconds":-5}"#.to_vec(),
        ),
        (
            "control chars",
            "{\"provider\":\"claude\",\"key_name\":\"a\u{1b}[31m\",\"api_key\":\"x\"}"
                .as_bytes()
                .to_vec(),
        ),
        ("top-level string", b"\"just a string\"".to_vec()),
        ("oversize", vec![b' '; 100 * 1024]),
    ] {
        cases.push((name.to_string(), post(body, "application/json")));
    }
    cases.push((
        "xml content type".into(),
        post(b"<a/>".to_vec(), "application/xml"),
    ));
    cases.push((
        "text content type".into(),
        post(b"{}".to_vec(), "text/plain"),
    ));
    for p in [
        "/api/keys/..%2f..%2fetc%2fpasswd",
        "/api/keys/%00",
        "/api/keys/00000000-0000-0000-0000-00000000000G",
        "/api/keys/{}",
        "/api/providers/..%2F/key",
        "/api/providers/%FF%FE/key",
        "/api/tokens/%00%00",
        "/api/audit?since=%FF&outcome=%00",
        "/api/audit?format=../../etc",
        "/api/keys?provider=%E2%80%AE",
    ] {
        cases.push((format!("path {p}"), http.get(url(p)).bearer_auth(&v.admin)));
    }
    for (name, auth) in [
        ("basic scheme", "Basic YWRtaW46YWRtaW4=".to_string()),
        ("empty bearer", "Bearer ".to_string()),
        ("no scheme", v.admin.clone()),
        ("short token", "Bearer kh_abc".to_string()),
        ("long token", format!("Bearer kh_{}", "A".repeat(5000))),
        ("revoked token", format!("Bearer {revoked}")),
        ("lowercase bearer", format!("bearer {}x", v.admin)),
        ("unicode", "Bearer kh_ünïcödé".to_string()),
    ] {
        cases.push((
            format!("auth {name}"),
            http.get(url(&format!("/api/keys/{id}")))
                .header("Authorization", auth),
        ));
    }
    cases.push((
        "repeated authorization".into(),
        http.get(url("/api/keys"))
            .header("Authorization", format!("Bearer {}", v.admin))
            .header("Authorization", format!("Bearer {writer}")),
    ));
    cases.push((
        "writer reveals".into(),
        http.get(url(&format!("/api/keys/{id}")))
            .bearer_auth(&writer),
    ));
    cases.push((
        "bad method".into(),
        http.request(reqwest::Method::PATCH, url("/api/keys"))
            .bearer_auth(&v.admin),
    ));
    cases.push((
        "bad query".into(),
        http.get(url("/api/audit?since=yesterday"))
            .bearer_auth(&v.admin),
    ));
    for (name, req) in cases {
        let r = req
            .send()
            .unwrap_or_else(|e| panic!("{name}: the connection failed: {e}"));
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert!((400..500).contains(&status), "{name}: {status} {body}");
        let detail: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{name}: no JSON detail: {body}"));
        assert!(
            detail["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: {body}"
        );
    }
    // Many large junk headers that still fit the 64 KiB header buffer are
    // simply ignored.
    let mut many = http.get(url("/api/keys")).bearer_auth(&v.admin);
    for i in 0..90 {
        many = many.header(format!("x-junk-{i}"), "y".repeat(500));
    }
    assert_eq!(many.send().unwrap().status(), 200);
    // Raw protocol abuse: still an answer (hyper's own 4xx), never a hang.
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "z".repeat(200_000)
    );
    let a = raw(&s.addr, huge_header.as_bytes());
    assert!(a.starts_with("HTTP/1.1 4") || a.is_empty(), "{a}");
    let a = raw(&s.addr, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 400") || a.is_empty(), "{a}");
    // Healthy, and a normal reveal still works.
    assert_eq!(api.get("/healthz").status(), 200);
    assert_eq!(api.get(&format!("/api/keys/{id}")).status(), 200);
    assert!(!s.output().contains("panicked"));
    let (code, _, _) = s.stop();
    assert_eq!(code, Some(0));
}
