//! Docs that agree with the binary (issue 25, point 11): every `keyhold`
//! command in a shell block of README.md, CONTRIBUTING.md and docs/*.md
//! parses against the binary's own argument definitions (a renamed flag,
//! a subcommand that does not exist or a missing argument fails here),
//! with its shell variables and placeholders filled in. The blocks that
//! run whole are run by their own tests: the README's production set-up
//! (tests/production.rs), the rotation procedure (scripts/rotate-key.sh,
//! tests/rotation_procedure.rs).

use std::path::{Path, PathBuf};

use clap::Parser;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of ```sh / ```bash / ```console blocks, with where they are.
fn shell_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut in_shell = false;
    let mut joined = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            in_shell = !in_shell && matches!(lang.trim(), "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_shell {
            continue;
        }
        if joined.is_empty() {
            start = i + 1;
        }
        // A continued line joins the next.
        match line.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part);
                joined.push(' ');
            }
            None => {
                joined.push_str(line);
                out.push((start, std::mem::take(&mut joined)));
            }
        }
    }
    out
}

/// Shell words of one command (quotes honoured; no expansion).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Placeholders and variables the docs use, filled in with values of the
/// right shape.
fn fill(word: &str) -> String {
    const UUID: &str = "3f2a7c1e-8d4b-4e6f-9a0b-1c2d3e4f5a6b";
    let mut w = word.to_string();
    for (from, to) in [
        ("\"$ID\"", UUID),
        ("$ID", UUID),
        ("{id}", UUID),
        ("<id>", UUID),
        ("$TOKEN", "kh_x"),
        ("$KEY", "key"),
        ("$URL", "postgres://keyhold@127.0.0.1/keyhold"),
        ("$DATABASE_URL", "postgres://keyhold@127.0.0.1/keyhold"),
        ("…", "0"),
    ] {
        w = w.replace(from, to);
    }
    if w.starts_with('$') || w.contains("${") {
        return "value".into();
    }
    w
}

/// The `keyhold ...` invocations of one shell line: each segment between
/// pipes, `&&`, `;` and `||`, without redirections, comments, env
/// assignments, `sudo`/`runuser -u USER --`/`exec`, and `$(...)` wrappers.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let line = line
        .split(" #")
        .next()
        .unwrap_or("")
        .replace("$(date +%F)", "2026-12-07");
    if line.trim_start().starts_with('#') {
        return Vec::new();
    }
    let mut out = Vec::new();
    // `[--flag VALUE]` marks an optional part: checked as given.
    let line = line.replace(['[', ']'], " ");
    for seg in line.split(['|', ';', '&']) {
        let seg = seg.replace("$(", " ").replace(['(', ')', '`'], " ");
        let mut ws: Vec<String> = words(&seg);
        // Drop redirections and what they name.
        let mut kept = Vec::new();
        let mut skip = false;
        for w in ws.drain(..) {
            if skip {
                skip = false;
                continue;
            }
            if matches!(w.as_str(), ">" | ">>" | "<" | "2>" | "2>&1") {
                skip = w != "2>&1";
                continue;
            }
            if w.starts_with('>') || w.starts_with('<') || w.starts_with("2>") {
                continue;
            }
            kept.push(w);
        }
        // `keyhold` the command, not the user of `runuser -u keyhold`.
        let Some(at) =
            (0..kept.len()).find(|&i| kept[i] == "keyhold" && (i == 0 || kept[i - 1] != "-u"))
        else {
            continue;
        };
        // Only where keyhold is the command run, not an argument (a user
        // name after `runuser -u`, a path, a package name).
        let before = &kept[..at];
        let runs = before.iter().all(|w| {
            w.contains('=') || matches!(w.as_str(), "sudo" | "exec" | "time" | "env" | "--")
        }) || before
            .windows(3)
            .any(|p| p[0] == "runuser" && p[1] == "-u" && p[2] == "keyhold")
            && before.last().is_some_and(|w| w == "--");
        if !runs || kept.len() == at + 1 {
            continue;
        }
        out.push(kept[at..].iter().map(|w| fill(w)).collect());
    }
    out
}

#[test]
fn every_keyhold_command_in_the_docs_parses_against_the_binary() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in doc_files() {
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        for (line_no, line) in shell_lines(&file) {
            for argv in invocations(&line) {
                checked += 1;
                if let Err(e) = keyhold::config::Cli::try_parse_from(&argv) {
                    if matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp
                            | clap::error::ErrorKind::DisplayVersion
                            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    ) {
                        continue;
                    }
                    let first = e.to_string().lines().next().unwrap_or("").to_string();
                    bad.push(format!("{name}:{line_no}: `{}`: {first}", argv.join(" ")));
                }
            }
        }
    }
    assert!(
        checked > 60,
        "only {checked} commands found: is the extraction broken?"
    );
    assert!(
        bad.is_empty(),
        "commands in the docs the binary refuses:\n{}",
        bad.join("\n")
    );
}

/// The shell block of `file` that holds `marker`, as one script.
fn block_with(file: &Path, marker: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no shell block with `{marker}` in {}", file.display()))
        .to_string()
}

/// A directory holding `keyhold` (the binary under test), for PATH.
fn bin_on_path() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyhold"), dir.path().join("keyhold")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

#[test]
fn the_keys_over_time_block_of_operations_md_runs_as_written() {
    let script = block_with(
        &repo().join("docs/operations.md"),
        "keyhold keys put \"$ID\"",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let bin = env!("CARGO_BIN_EXE_keyhold");
    let key = String::from_utf8(
        std::process::Command::new(bin)
            .arg("keygen")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let init = std::process::Command::new(bin)
        .env("FERNET_KEY", &key)
        .args(["init", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let admin = String::from_utf8(init.stdout).unwrap().trim().to_string();
    let mut server = std::process::Command::new(bin)
        .env("FERNET_KEY", &key)
        .args([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The address the server printed.
    let mut err = std::io::BufReader::new(server.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        use std::io::BufRead;
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the server stopped before listening");
        }
        if let Some(a) = line.split("http://").nth(1) {
            break format!(
                "http://{}",
                a.split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches(['/', ',', ')'])
            );
        }
    };
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let (_bin_dir, path) = bin_on_path();
    let run = |script: &str, env: &[(&str, &str)]| {
        std::process::Command::new("sh")
            .args(["-ec", script])
            .env("PATH", &path)
            .env("KEYHOLD_ADDR", &addr)
            .env("KEYHOLD_TOKEN", &admin)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let made = run(
        "printf %s sk-v1 | keyhold keys add --provider claude --name prod",
        &[],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let id = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let out = run(&script, &[("ID", &id), ("NEW_KEY", "sk-v2")]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "the block failed:\n{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    // `keys reveal "$ID" --version 1` and `keys reveal claude/prod`.
    assert!(said.contains("sk-v1") && said.contains("sk-v2"), "{said}");
}
