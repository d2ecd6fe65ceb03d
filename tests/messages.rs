//! Messages name only what exists and say what to do (issue 16, point 6):
//! every flag and command the CLI's messages and help name is checked
//! against the clap definitions; each message the issue listed is tested.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use common::*;
use keyhold::Cli;

/// Every long flag of every (sub)command, `--help` and `--version` too.
fn all_flags(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(l) = a.get_long() {
            out.insert(format!("--{l}"));
        }
    }
    out.insert("--help".into());
    out.insert("--version".into());
    for s in cmd.get_subcommands() {
        all_flags(s, out);
    }
}

/// Every command's long help, as `--help` prints it.
fn all_help(cmd: &mut clap::Command, out: &mut String) {
    out.push_str(&cmd.render_long_help().to_string());
    for s in cmd.get_subcommands_mut() {
        all_help(s, out);
    }
}

fn source_text() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
                out.push('\n');
            }
        }
    }
    let mut s = String::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut s);
    s
}

/// `--word` tokens of `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'-'
            && b[i + 1] == b'-'
            && b[i + 2].is_ascii_lowercase()
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'-')
        {
            let mut j = i + 2;
            while j < b.len()
                && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit() || b[j] == b'-')
            {
                j += 1;
            }
            out.insert(text[i..j].trim_end_matches('-').to_string());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_flag_named_in_the_sources_and_help_exists() {
    let mut known = BTreeSet::new();
    all_flags(&Cli::command(), &mut known);
    let mut help = String::new();
    all_help(&mut Cli::command(), &mut help);
    let text = source_text() + &help;
    let unknown: Vec<_> = flags_in(&text)
        .into_iter()
        .filter(|f| !known.contains(f))
        .collect();
    assert!(
        unknown.is_empty(),
        "flags named but not defined: {unknown:?}"
    );
    assert!(!help.contains("--complete"));
}

#[test]
fn every_keyhold_command_line_in_the_sources_and_help_parses_as_far_as_it_goes() {
    let mut help = String::new();
    all_help(&mut Cli::command(), &mut help);
    let text = source_text() + &help;
    let root = Cli::command();
    let mut checked = 0;
    for chunk in text.split("`keyhold ").skip(1) {
        let Some(line) = chunk.split('`').next() else {
            continue;
        };
        let mut cmd = &root;
        // After `...` (some subcommand), a flag may be any below.
        let mut below = false;
        for word in line.split_whitespace().filter(|w| *w != "\\") {
            if word == "..." {
                below = true;
                continue;
            }
            if let Some(flag) = word.strip_prefix("--") {
                let flag = format!("--{}", flag.split('=').next().unwrap());
                let mut here = BTreeSet::new();
                if below {
                    all_flags(cmd, &mut here);
                } else {
                    here.extend(
                        cmd.get_arguments()
                            .filter_map(|a| a.get_long())
                            .map(|l| format!("--{l}")),
                    );
                    here.insert("--help".into());
                    if cmd.get_name() == "keyhold" {
                        here.insert("--version".into());
                    }
                }
                assert!(
                    here.contains(&flag),
                    "`keyhold {line}`: `{}` has no {flag}",
                    cmd.get_name()
                );
                continue;
            }
            if below {
                break;
            }
            match cmd.find_subcommand(word) {
                Some(sub) => cmd = sub,
                None => {
                    // The first word must be a command.
                    assert!(
                        cmd.get_name() != "keyhold" || word.starts_with('-'),
                        "`keyhold {line}`: no command `{word}`"
                    );
                    break;
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} command lines found");
}

#[test]
fn no_message_or_help_points_at_files_that_are_not_installed() {
    // Non-comment source lines (messages) and the help text.
    let src: String = source_text()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut help = String::new();
    all_help(&mut Cli::command(), &mut help);
    for (what, text) in [("a message", &src), ("--help", &help)] {
        for bad in ["README", "docs/", "CONTRIBUTING"] {
            assert!(!text.contains(bad), "{what} points at {bad}");
        }
    }
    let s = Server::start_dev();
    let r = client().get(s.url("/no/such/route")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(detail(r).contains("/openapi.json"));
}

#[test]
fn a_held_store_lock_is_said_in_words() {
    let v = Vault::new();
    let _s = v.serve(&[]);
    let out = run_with_key(&v.key, &["token", "list", "--data-dir", v.dir_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Os {") && !err.contains("WouldBlock"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "keyhold: error: cannot open the store in {}: another process holds its lock (a \
             running `keyhold serve`, or another keyhold command): stop it, or go through the \
             running server with the same command's --remote form (`keyhold audit \
             export|verify|public-key --remote`, `keyhold token ... --remote`, `keyhold rotate \
             --remote`) or `keyhold keys ...`",
            v.dir_str()
        )),
        "{err}"
    );
}

#[test]
fn verifying_a_csv_export_says_it_is_csv() {
    let v = Vault::new();
    let csv = v.tmp.path().join("all.csv");
    assert_ok(&run_with_key(
        &v.key,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "-o",
            csv.to_str().unwrap(),
            "--data-dir",
            v.dir_str(),
        ],
    ));
    let out = run_with_key(
        &v.key,
        &[
            "audit",
            "verify",
            "--file",
            csv.to_str().unwrap(),
            "--data-dir",
            v.dir_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "keyhold: error: {} is a CSV export: verification reads JSON Lines; export again \
             with `keyhold audit export --format jsonl`",
            csv.display()
        )),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("tamper"), "{err}");
    assert!(out.stdout.is_empty(), "no report for a file never read");
}

#[test]
fn a_429_says_when_to_retry_once() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1/min")]);
    let id = Api::new(&s, &v.admin).create_key("claude", "k", "sk-1");
    let reveal = || {
        keyhold()
            .env("KEYHOLD_ADDR", &s.base)
            .env("KEYHOLD_TOKEN", &v.admin)
            .args(["keys", "reveal", &id])
            .output()
            .unwrap()
    };
    assert_ok(&reveal());
    let out = reveal();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("429"), "{err}");
    assert_eq!(err.matches("retry in").count(), 1, "{err}");
}
