//! Files belong to the data directory's owner (issue 25, point 3): run as
//! root on a store owned by another user, an offline command refuses with
//! the `runuser` line (and writes nothing); run as that user it works and
//! leaves nothing root-owned; a store the service cannot read is said to be
//! a permission problem, not "not initialised"; `restore` says who owns
//! what it made. Real binary, as root (CI runs as root) with `nobody`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every path under `dir` with its owner.
fn owners(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(dir.to_path_buf(), std::fs::metadata(dir).unwrap().uid())];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(owners(&p));
        } else {
            out.push((p.clone(), std::fs::symlink_metadata(&p).unwrap().uid()));
        }
    }
    out.sort();
    out
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    for (p, _) in owners(dir) {
        rustix::fs::chown(
            &p,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A world-traversable temp dir holding a copy of the binary, so that
/// `nobody` can run it; (tmp, binary).
fn shared_tmp() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kh = tmp.path().join("keyhold");
    std::fs::copy(bin(), &kh).unwrap();
    std::fs::set_permissions(&kh, std::fs::Permissions::from_mode(0o755)).unwrap();
    (tmp, kh)
}

/// As root: a store in a world-traversable temp dir, with a copy of the
/// binary `nobody` can run; (tmp, binary, data dir, key). `None` (said on
/// stderr) when not root: these tests are about root, and CI runs them as
/// root.
fn root_store() -> Option<(tempfile::TempDir, PathBuf, PathBuf, String)> {
    if !is_root() {
        eprintln!(
            "this test runs as root (as CI does): not run for uid {}",
            rustix::process::geteuid().as_raw()
        );
        return None;
    }
    let (tmp, kh) = shared_tmp();
    let dir = tmp.path().join("data");
    let key = keygen();
    init(&dir, &key);
    Some((tmp, kh, dir, key))
}

#[test]
fn root_is_refused_on_another_users_store_with_the_runuser_line_and_writes_nothing() {
    let Some((_tmp, kh, dir, key)) = root_store() else {
        return;
    };
    chown_tree(&dir, 65534, 65534);
    let before = owners(&dir);
    for args in [
        vec!["check", "--data-dir", dir.to_str().unwrap()],
        vec!["rotate", "--data-dir", dir.to_str().unwrap()],
        vec!["audit", "verify", "--data-dir", dir.to_str().unwrap()],
        vec![
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    ] {
        let out = Command::new(&kh)
            .env("FERNET_KEY", &key)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", err(&out));
        let said = err(&out);
        assert!(said.contains("belongs to nobody (uid 65534)"), "{said}");
        assert!(
            said.contains(&format!("runuser -u nobody -- {}", kh.display())),
            "{said}"
        );
        assert_eq!(owners(&dir), before, "{args:?} changed the directory");
    }
    // The line it gives works, and leaves every file the owner's.
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&kh)
        .args(["check", "--data-dir", dir.to_str().unwrap()])
        .env("FERNET_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        owners(&dir).iter().all(|(_, uid)| *uid == 65534),
        "{:?}",
        owners(&dir)
    );
}

#[test]
fn a_store_the_service_cannot_read_is_a_permission_problem_and_restore_says_who_owns_it() {
    let Some((tmp, kh, dir, key)) = root_store() else {
        return;
    };
    // A backup, restored as root into a new directory: root's, and said.
    let backup = tmp.path().join("b.backup");
    assert_ok(&run_with_key(
        &key,
        &[
            "backup",
            "--data-dir",
            dir.to_str().unwrap(),
            backup.to_str().unwrap(),
        ],
    ));
    let restored = tmp.path().join("restored");
    let out = run_with_key(
        &key,
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    assert!(
        err(&out).contains("the restored store belongs to root (uid 0)"),
        "{}",
        err(&out)
    );
    // The service user cannot read it: said so, not "not initialised".
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&kh)
        .args(["check", "--data-dir", restored.to_str().unwrap()])
        .env("FERNET_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    let said = err(&out);
    assert!(said.contains("permission denied"), "{said}");
    assert!(said.contains("chown -R"), "{said}");
    assert!(!said.contains("not initialised"), "{said}");
}
