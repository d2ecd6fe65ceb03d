//! Backup files are the owner's alone (issue 25, point 8): `keyhold backup
//! FILE` and `keyhold backup --remote FILE` (the download of GET
//! /api/admin/backup) make FILE with mode 0600 under the usual umask 022,
//! beside it first and renamed when whole, so a refused or broken download
//! leaves nothing under FILE. Every test runs the real binary.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// `keyhold ARGS` under `umask 022` (the usual default), with `env` and
/// nothing keyhold-related inherited. The token goes in the environment,
/// never in argv.
fn keyhold_022(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("sh");
    c.args(["-c", "umask 022; exec \"$0\" \"$@\"", &bin()])
        .args(args)
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYHOLD_") || k.starts_with("FERNET_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `keyhold backup --verify FILE` exits 0.
fn verifies(key: &str, file: &Path) {
    assert_ok(&run_with_key(
        key,
        &["backup", "--verify", file.to_str().unwrap()],
    ));
}

#[test]
fn an_offline_backup_is_0600_even_over_a_world_readable_file() {
    let v = Vault::new();
    let out_dir = v.tmp.path().join("backups");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("k.backup");
    std::fs::write(&file, "an older backup").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The name older keyhold wrote through, planted as a link to a file
    // of someone else's: not followed, not truncated.
    let victim = v.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("k.partial")).unwrap();
    let out = keyhold_022(
        &[("FERNET_KEY", &v.key)],
        &[
            "backup",
            v.store_args()[0],
            v.store_args()[1],
            file.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    assert_eq!(mode(&file), 0o600);
    verifies(&v.key, &file);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(names(&out_dir), ["k.backup", "k.partial"]);

    // A directory that does not exist: said, and no backup recorded.
    let backups = || {
        v.audit_records()
            .iter()
            .filter(|r| r["action"] == "backup")
            .count()
    };
    assert_eq!(backups(), 1);
    let out = keyhold_022(
        &[("FERNET_KEY", &v.key)],
        &[
            "backup",
            v.store_args()[0],
            v.store_args()[1],
            out_dir.join("nope/k.backup").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot create the backup")
            && stderr(&out).contains("directory exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(backups(), 1);
}

#[test]
fn a_remote_backup_is_downloaded_whole_with_mode_0600() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[]);
    Api::new(&s, &v.admin).create_key("claude", "main", "sk-remote-backup-1");
    let out_dir = v.tmp.path().join("backups");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("online.backup");
    std::fs::write(&file, "an older backup").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_admin = [
        ("KEYHOLD_ADDR", s.base.as_str()),
        ("KEYHOLD_TOKEN", v.admin.as_str()),
    ];
    let out = keyhold_022(&as_admin, &["backup", "--remote", file.to_str().unwrap()]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("downloaded a backup"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&file), 0o600);
    assert_eq!(names(&out_dir), ["online.backup"]);

    // To stdout with `-`: the same backup, for a pipe.
    let out = keyhold_022(&as_admin, &["backup", "--remote", "-"]);
    assert_ok(&out);
    assert!(out.stdout.starts_with(b"KEYHOLD-BACKUP\n"));
    let piped = v.tmp.path().join("piped.backup");
    std::fs::write(&piped, &out.stdout).unwrap();

    // A token without the admin scope: refused by the server, nothing
    // under the name, nothing beside it.
    let denied = out_dir.join("denied.backup");
    let out = keyhold_022(
        &[
            ("KEYHOLD_ADDR", s.base.as_str()),
            ("KEYHOLD_TOKEN", reader.as_str()),
        ],
        &["backup", "--remote", denied.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert_eq!(names(&out_dir), ["online.backup"]);
    // No token at all: a setup error, exit 2.
    let out = keyhold_022(
        &[("KEYHOLD_ADDR", s.base.as_str())],
        &["backup", "--remote", denied.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("KEYHOLD_TOKEN"), "{}", stderr(&out));
    // --verify reads a local file: not with --remote.
    let out = keyhold_022(
        &as_admin,
        &["backup", "--remote", "--verify", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(names(&out_dir), ["online.backup"]);
    s.stop();

    // Both are whole, authenticated backups, and the server audited them.
    verifies(&v.key, &file);
    verifies(&v.key, &piped);
    let backups: Vec<_> = v
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "backup")
        .map(|r| (r["outcome"].clone(), r["caller"].clone()))
        .collect();
    assert_eq!(backups.len(), 3, "{backups:?}");
    assert_eq!(
        backups.iter().filter(|(o, _)| o == "success").count(),
        2,
        "{backups:?}"
    );
}

/// A one-shot HTTP server answering 200 with `body` (chunked), then
/// closing: whole (`finish`) or cut off before the last chunk.
fn fake_server(body: &'static [u8], finish: bool) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        write!(
            c,
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(body).unwrap();
        c.write_all(b"\r\n").unwrap();
        if finish {
            c.write_all(b"0\r\n\r\n").unwrap();
        }
        c.flush().unwrap();
    });
    (addr, t)
}

#[test]
fn a_download_that_breaks_off_or_is_no_backup_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.backup");
    for (body, finish, says) in [
        (
            &b"KEYHOLD-BACKUP\n\0\0\0\x02 and then the connection drops"[..],
            false,
            "broke off",
        ),
        (
            &b"<html>a proxy's login page</html>"[..],
            true,
            "not a keyhold backup",
        ),
    ] {
        let (addr, server) = fake_server(body, finish);
        let out = keyhold_022(
            &[
                ("KEYHOLD_ADDR", addr.as_str()),
                ("KEYHOLD_TOKEN", "kh_not_a_real_token"),
            ],
            &["backup", "--remote", file.to_str().unwrap()],
        );
        server.join().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("no backup was written to"), "{err}");
        assert!(!err.contains("kh_not_a_real_token"), "{err}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
