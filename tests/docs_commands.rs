//! Docs that agree with the binary (issue 25, point 11): every `keyhold`
//! command in a shell block of README.md, CONTRIBUTING.md and docs/*.md
//! parses against the binary's own argument definitions (a renamed flag,
//! a subcommand that does not exist or a missing argument fails here),
//! with its shell variables and placeholders filled in, including the
//! commands of blocks that are not run. The blocks themselves run in
//! tests/docs_run.rs (or, named there, in tests/production.rs).

#[path = "common/docs.rs"]
mod docs;

use clap::Parser;

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
    for block in docs::blocks() {
        let name = &block.file;
        for (range, line) in block.commands() {
            let line_no = block.line + range.start;
            for argv in invocations(&line) {
                checked += 1;
                if let Err(e) = keyhold::Cli::try_parse_from(&argv) {
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
