//! `keyhold exec --env-file` with keyhold:// references, and `--wait` on
//! 429 against a 10/min limit (issue 16, point 8).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn exec(s: &Server, token: &str, args: &[&str]) -> std::process::Output {
    keyhold()
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", token)
        .arg("exec")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn env_file_references_resolve_and_other_lines_pass_through() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-OLDER");
    std::thread::sleep(Duration::from_millis(5));
    api.create_key("claude", "main", "sk-ant-NEWEST");
    api.create_key("github", "ci bot", "ghp-CI");
    api.create_key("github", "other", "ghp-OTHER");
    let env_file = v.tmp.path().join("app.env");
    let text = "# the app's environment\n\
                ANTHROPIC_API_KEY=keyhold://claude\n\
                export GITHUB_TOKEN=\"keyhold://github/ci%20bot\"\n\
                PLAIN='hello world'\n";
    std::fs::write(&env_file, text).unwrap();
    let out_file = v.tmp.path().join("child.out");
    let script = format!(
        "printf '%s|%s|%s|%s' \"$ANTHROPIC_API_KEY\" \"$GITHUB_TOKEN\" \"$PLAIN\" \"${{KEYHOLD_TOKEN:-unset}}\" | sha256sum > {}",
        out_file.display()
    );
    let out = exec(
        &s,
        &reader,
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_ok(&out);
    use sha2::Digest;
    let want = keyhold::audit::hex(&sha2::Sha256::digest(
        b"sk-ant-NEWEST|ghp-CI|hello world|unset",
    ));
    assert!(std::fs::read_to_string(&out_file)
        .unwrap()
        .starts_with(&want));
    // The env file is as it was, and no file holds a resolved key.
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), text);
    for (path, bytes) in read_tree(v.tmp.path()) {
        for secret in ["sk-ant-NEWEST", "ghp-CI"] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret} in {}",
                path.display()
            );
        }
    }
    // A name with no live key: nothing is run.
    std::fs::write(&env_file, "K=keyhold://github/nope\n").unwrap();
    let out = exec(
        &s,
        &reader,
        &["--env-file", env_file.to_str().unwrap(), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("github/nope") && err.contains("nothing was run"),
        "{err}"
    );
    // keyhold's own variables are never passed on.
    std::fs::write(&env_file, "KEYHOLD_TOKEN=x\n").unwrap();
    let out = exec(
        &s,
        &reader,
        &["--env-file", env_file.to_str().unwrap(), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2));
    // A malformed line names its line, not its value.
    std::fs::write(&env_file, "A=1\nsk-secret-looking-line\n").unwrap();
    let out = exec(
        &s,
        &reader,
        &["--env-file", env_file.to_str().unwrap(), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && !err.contains("sk-secret"),
        "{err}"
    );
}

#[test]
fn exec_waits_for_the_rate_limit_within_its_bound() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "10/min")]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-WAIT");
    // Use up the budget of this host (burst 10).
    let mut ok = 0;
    while api.get("/api/providers/claude/key").status() == 200 {
        ok += 1;
        assert!(ok <= 10);
    }
    let args = [
        "--provider",
        "claude",
        "--env",
        "K",
        "--",
        "sh",
        "-c",
        "test \"$K\" = sk-WAIT",
    ];
    // Without --wait: refused at once, saying how to wait.
    let out = exec(&s, &v.admin, &args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("429") && err.contains("--wait"), "{err}");
    // A bound shorter than Retry-After: refused without sleeping past it.
    let t = Instant::now();
    let out = exec(&s, &v.admin, &[&["--wait", "1s"][..], &args[..]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(t.elapsed() < Duration::from_secs(3));
    // With --wait 30s: it waits for one reveal's worth (6 s at 10/min), then runs.
    let t = Instant::now();
    let out = exec(&s, &v.admin, &[&["--wait", "30s"][..], &args[..]].concat());
    assert_ok(&out);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}
