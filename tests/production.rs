//! The production set-up (issue 16, point 1): the README's steps, the
//! script that runs them literally, and the systemd unit agree; the script
//! runs here when the tests run as root (CI), and its absence is a failure
//! under `CI=true`.

mod common;

use std::path::Path;

use common::*;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The lines of `text` strictly between the line containing `begin` and
/// the next one containing `end`, without code fences.
fn between(text: &str, begin: &str, end: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| !l.contains(begin));
    assert!(lines.next().is_some(), "no `{begin}` marker");
    let out: Vec<String> = lines
        .take_while(|l| !l.contains(end))
        .filter(|l| !l.starts_with("```"))
        .map(|l| l.trim_end().to_string())
        .collect();
    assert!(!out.is_empty(), "nothing between `{begin}` and `{end}`");
    out
}

#[test]
fn the_readme_and_the_script_say_the_same_commands() {
    let readme = between(
        &repo("README.md"),
        "<!-- production-setup:begin",
        "<!-- production-setup:end",
    );
    let script = between(
        &repo("scripts/production-setup.sh"),
        "# --- begin: README production set-up",
        "# --- end: README production set-up",
    );
    assert_eq!(readme, script);
}

#[test]
fn the_unit_reads_the_key_file_the_readme_writes_and_is_hardened() {
    let unit = repo("scripts/keyhold.service");
    let readme = repo("README.md");
    for line in [
        "User=keyhold",
        "Environment=FERNET_KEY_FILE=/etc/keyhold/fernet.keys",
        "Environment=KEYHOLD_DATA_DIR=/var/lib/keyhold",
        "RestartPreventExitStatus=2",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/keyhold",
        "CapabilityBoundingSet=",
        // /run/keyhold, for the documented unix:/run/keyhold/keyhold.sock
        // (scripts/production-setup.sh serves there as the unit would).
        "RuntimeDirectory=keyhold",
        "RuntimeDirectoryMode=0750",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "keyhold.service lacks `{line}`"
        );
    }
    // One key source throughout: the unit never uses another.
    for other in [
        "FERNET_KEY=",
        "FERNET_KEYS=",
        "KEYHOLD_KEY_COMMAND=",
        "%d/fernet",
    ] {
        assert!(
            !unit
                .lines()
                .any(|l| l.starts_with("Environment=") && l.contains(other)),
            "the unit sets {other}"
        );
    }
    assert!(readme.contains("export FERNET_KEY_FILE=/etc/keyhold/fernet.keys"));
    assert!(readme.contains("keygen --key-file /etc/keyhold/fernet.keys"));
}

#[test]
fn a_configuration_error_exits_2_which_the_unit_does_not_restart() {
    let dir = tempfile::tempdir().unwrap();
    let out = keyhold()
        .env("FERNET_KEY", keygen())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("never-initialised"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keygen_creates_the_directories_it_writes_into() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("etc/keyhold/keyhold.env");
    let out = keyhold()
        .arg("keygen")
        .arg("--env-file")
        .arg(&env_file)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(std::fs::read_to_string(&env_file)
        .unwrap()
        .starts_with("FERNET_KEY="));
    let key_file = dir.path().join("other/fernet.keys");
    for _ in 0..2 {
        let out = keyhold()
            .arg("keygen")
            .arg("--key-file")
            .arg(&key_file)
            .output()
            .unwrap();
        assert_ok(&out);
        // The key itself is never printed.
        assert!(out.stdout.is_empty());
    }
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(text.lines().count(), 2);
    for line in text.lines() {
        assert!(!contains(
            &std::fs::read(&env_file).unwrap(),
            line.as_bytes()
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(key_file.parent().unwrap()), 0o700);
    assert_eq!(mode(env_file.parent().unwrap()), 0o700);
}

#[test]
fn init_with_captured_stdout_does_not_speak_of_the_line_above() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_key(
        &keygen(),
        &["init", "--data-dir", dir.path().join("d").to_str().unwrap()],
    );
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("line above"), "{err}");
    assert!(err.contains("went to stdout"), "{err}");
}

#[test]
fn the_production_script_runs_as_documented() {
    let root = is_root();
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: scripts/production-setup.sh needs root (it creates a system user) and did not run"
        );
        eprintln!("not run: scripts/production-setup.sh needs root");
        return;
    }
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/production-setup.sh"))
        .arg(bin())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "production-setup.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("production-setup: ok"));
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
