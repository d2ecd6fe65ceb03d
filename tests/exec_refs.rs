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
    let want = keyhold::internals::audit::hex(&sha2::Sha256::digest(
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

/// The reveal records of the log, through the API.
fn reveal_records(api: &Api) -> Vec<serde_json::Value> {
    api.get("/api/audit?action=reveal")
        .text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_malformed_reference_is_refused_before_anything_runs_or_is_fetched() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-MAIN");
    let env_file = v.tmp.path().join("app.env");
    let marker = v.tmp.path().join("ran");
    let run = format!("touch {}", marker.display());
    for typo in [
        "keyhold:/claude",
        "KEYHOLD://claude",
        "keyhold://Claude",
        "keyhold://claude/",
    ] {
        std::fs::write(
            &env_file,
            format!("GOOD=keyhold://claude\nANTHROPIC_API_KEY={typo}\n"),
        )
        .unwrap();
        let out = exec(
            &s,
            &v.admin,
            &[
                "--env-file",
                env_file.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &run,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{typo}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("app.env line 2: ANTHROPIC_API_KEY")
                && err.contains("keyhold://PROVIDER")
                && err.contains("nothing was run"),
            "{typo}: {err}"
        );
        assert!(!marker.exists(), "{typo}: the command ran");
    }
    // A --provider that is not one is refused the same way.
    let out = exec(
        &s,
        &v.admin,
        &["--provider", "Claude", "--env", "K", "--", "sh", "-c", &run],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--provider Claude (for K)"));
    assert!(!marker.exists());
    // Nothing was fetched for any of them.
    assert!(reveal_records(&api).is_empty());
}

#[test]
fn a_provider_only_reference_names_the_key_it_got_and_name_picks_one() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-MAIN");
    std::thread::sleep(Duration::from_millis(5));
    let ci = api.create_key("claude", "ci", "sk-ant-CI");
    // The newest key of claude is now `ci`: exec says so.
    let out = exec(
        &s,
        &v.admin,
        &[
            "--provider",
            "claude",
            "--env",
            "K",
            "--",
            "sh",
            "-c",
            "test \"$K\" = sk-ant-CI",
        ],
    );
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("K is key {ci} (claude / ci")) && err.contains("--name"),
        "{err}"
    );
    assert!(!err.contains("sk-ant"), "{err}");
    // --name picks one, paired with the --provider before it.
    let out = exec(
        &s,
        &v.admin,
        &[
            "--provider",
            "gemini-unused",
            "--env",
            "G",
            "--provider",
            "claude",
            "--name",
            "main",
            "--env",
            "K",
            "--",
            "true",
        ],
    );
    // gemini-unused has no key: nothing runs, and the error names G only.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("for G (--provider") && !err.contains("for K"),
        "{err}"
    );
    let out = exec(
        &s,
        &v.admin,
        &[
            "--provider",
            "claude",
            "--name",
            "main",
            "--env",
            "K",
            "--",
            "sh",
            "-c",
            "test \"$K\" = sk-ant-MAIN",
        ],
    );
    assert_ok(&out);
    // A named reference says nothing of which key it got: it asked.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("is key"));
    // A --name with no --provider before it is a usage error.
    let out = exec(
        &s,
        &v.admin,
        &[
            "--name",
            "main",
            "--provider",
            "claude",
            "--env",
            "K",
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("before any --provider"));
}

#[test]
fn one_exec_fetches_all_its_references_in_one_request() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "3/min")]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-MAIN");
    api.create_key("github", "ci", "ghp-CI");
    api.create_key("gemini", "x", "gm-X");
    let env_file = v.tmp.path().join("app.env");
    std::fs::write(
        &env_file,
        "A=keyhold://claude\nB=keyhold://github/ci\nC=keyhold://gemini\nSAME=keyhold://claude\n",
    )
    .unwrap();
    let args = [
        "--env-file",
        env_file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "test \"$A$B$C$SAME\" = sk-ant-MAINghp-CIgm-Xsk-ant-MAIN",
    ];
    // Three keys (SAME repeats A), one request, three reveals of the budget.
    assert_ok(&exec(&s, &v.admin, &args));
    let recs = reveal_records(&api);
    assert_eq!(recs.len(), 3, "{recs:#?}");
    assert!(recs.iter().all(|r| r["outcome"] == "success"));
    assert!(
        recs.iter()
            .all(|r| r["request_id"] == recs[0]["request_id"]),
        "{recs:#?}"
    );
    // The budget is spent: the next exec is refused whole, nothing runs.
    let out = exec(&s, &v.admin, &args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("429") && err.contains("--wait"), "{err}");
    assert_eq!(
        reveal_records(&api)
            .iter()
            .filter(|r| r["outcome"] == "success")
            .count(),
        3
    );
}

#[test]
fn a_refused_reference_names_its_variable_and_line_and_reveals_nothing() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-MAIN");
    let env_file = v.tmp.path().join("app.env");
    std::fs::write(
        &env_file,
        "ANTHROPIC_API_KEY=keyhold://claude\nGITHUB_TOKEN=keyhold://github/ci\n",
    )
    .unwrap();
    let out = exec(
        &s,
        &v.admin,
        &["--env-file", env_file.to_str().unwrap(), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GITHUB_TOKEN (")
            && err.contains("app.env line 2, keyhold://github/ci")
            && !err.contains("ANTHROPIC_API_KEY")
            && !err.contains("sk-ant"),
        "{err}"
    );
    // The key that would have opened was not revealed.
    let recs = reveal_records(&api);
    assert!(recs.iter().all(|r| r["outcome"] != "success"), "{recs:#?}");
}
