//! Completions, man pages and build information (issue 16, point 5).

mod common;

use common::*;
use serde_json::Value;

#[test]
fn completions_for_each_shell_name_the_commands() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef keyhold"),
        ("fish", "complete -c keyhold"),
    ] {
        let out = keyhold().args(["completions", shell]).output().unwrap();
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}");
        for word in ["serve", "rotate", "--key-file", "--format"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = keyhold()
        .args(["completions", "powershell7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_are_generated_from_the_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let out = keyhold().arg("man").arg(dir.path()).output().unwrap();
    assert_ok(&out);
    for page in [
        "keyhold.1",
        "keyhold-serve.1",
        "keyhold-token-create.1",
        "keyhold-keygen.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let keygen = std::fs::read_to_string(dir.path().join("keyhold-keygen.1")).unwrap();
    assert!(keygen.contains("key\\-file"), "{keygen}");
    // The hidden command has no page.
    assert!(!dir.path().join("keyhold-man.1").exists());
}

#[test]
fn version_healthz_and_the_metric_agree() {
    let out = keyhold()
        .args(["version", "--format", "json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let build: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build["commit"].as_str().unwrap().is_empty());
    assert!(build["target"].as_str().unwrap().contains("linux"));

    let text = keyhold().arg("version").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout).trim().to_string();
    assert_eq!(
        text,
        format!(
            "keyhold {} (commit {}, target {})",
            build["version"].as_str().unwrap(),
            build["commit"].as_str().unwrap(),
            build["target"].as_str().unwrap()
        )
    );
    let long = keyhold().arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&long.stdout).trim(), text);

    let vault = Vault::new();
    let s = vault.serve(&[]);
    let health: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["build"], build);
    let metrics = metrics_text(&s, &vault.admin);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("keyhold_build_info{"))
        .unwrap_or_else(|| panic!("no keyhold_build_info in\n{metrics}"));
    for (k, v) in [
        ("version", &build["version"]),
        ("commit", &build["commit"]),
        ("target", &build["target"]),
    ] {
        assert!(
            line.contains(&format!("{k}=\"{}\"", v.as_str().unwrap())),
            "{line}"
        );
    }
    assert!(line.ends_with(" 1"), "{line}");
}

#[test]
fn release_builds_are_stripped() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let release = manifest.split("[profile.release]").nth(1).unwrap();
    assert!(
        release.lines().any(|l| l.trim() == "strip = true"),
        "{release}"
    );
}
