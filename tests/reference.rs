//! `docs/reference.md` is generated from the clap definitions in
//! `src/config/`: every command, flag, environment variable and default.
//! This test regenerates it and fails when the file differs.
//!
//! The text above the marker line is hand-written (the variables read
//! outside clap, exit statuses) and kept as it is; everything below the
//! marker is generated. To update the file after changing a flag:
//!
//! ```sh
//! KEYHOLD_UPDATE_REFERENCE=1 cargo test --test reference
//! ```
//!
//! The generator walks clap's own description of the command line
//! (`Command`, `Arg`), the same one `--help` prints, so the reference and
//! `--help` cannot disagree. (clap-markdown leaves out environment
//! variables; clap_mangen writes roff, not Markdown.)

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, CommandFactory};
use keyhold::Cli;

const MARKER: &str = "<!-- Everything below this line is generated from src/config/ by \
tests/reference.rs; edit the doc comments there, then run \
`KEYHOLD_UPDATE_REFERENCE=1 cargo test --test reference`. -->";

const UPDATE_VAR: &str = "KEYHOLD_UPDATE_REFERENCE";

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md")
}

/// One line of text for a table cell: paragraphs joined, `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn shown(arg: &Arg) -> bool {
    // clap's own --help and --version, by what they do: a flag of ours
    // may be called `version` (`keys reveal --version N`).
    !arg.is_hide_set()
        && !matches!(
            arg.get_action(),
            clap::ArgAction::Help
                | clap::ArgAction::HelpShort
                | clap::ArgAction::HelpLong
                | clap::ArgAction::Version
        )
}

/// `--flag <VALUE>`, `-o, --output <OUTPUT>`, `<FILE>` or `-- <CMD>...`.
fn spelling(arg: &Arg) -> String {
    let value = match arg.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| format!("<{n}>"))
            .collect::<Vec<_>>()
            .join(" "),
        None => format!("<{}>", arg.get_id().as_str().to_ascii_uppercase()),
    };
    let many = matches!(arg.get_action(), ArgAction::Append);
    let value = if many && arg.is_positional() {
        format!("{value}...")
    } else {
        value
    };
    if arg.is_positional() {
        return if arg.is_last_set() {
            format!("`-- {value}`")
        } else {
            format!("`{value}`")
        };
    }
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    let names = names.join(", ");
    if arg.get_action().takes_values() {
        format!("`{names} {value}`")
    } else {
        format!("`{names}`")
    }
}

fn default_of(arg: &Arg) -> String {
    if !arg.get_action().takes_values() {
        return "off".to_string();
    }
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    match values.as_slice() {
        [] if arg.is_required_set() => "required".to_string(),
        [] => String::new(),
        [v] if v.is_empty() => "empty".to_string(),
        _ => values
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn meaning(arg: &Arg) -> String {
    let mut text = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| cell(&h.to_string()))
        .unwrap_or_default();
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !possible.is_empty() && arg.get_action().takes_values() {
        sentence(&mut text, &format!("One of {}.", possible.join(", ")));
    }
    let repeatable = matches!(arg.get_action(), ArgAction::Append) && !arg.is_positional();
    if repeatable && !text.to_ascii_lowercase().contains("repeat") {
        sentence(&mut text, "Repeatable.");
    }
    text
}

/// Appends a sentence, closing the one before it (clap drops the final
/// period of a one-line doc comment).
fn sentence(text: &mut String, more: &str) {
    if !text.is_empty() {
        if !text.ends_with('.') {
            text.push('.');
        }
        text.push(' ');
    }
    text.push_str(more);
}

/// Every leaf command with its path (`["token", "create"]`), in the order
/// `--help` lists them.
fn leaves<'a>(cmd: &'a Command, path: Vec<String>, out: &mut Vec<(Vec<String>, &'a Command)>) {
    let subs: Vec<&Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        out.push((path, cmd));
        return;
    }
    for sub in subs {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        leaves(sub, p, out);
    }
}

fn about(cmd: &Command) -> String {
    cmd.get_long_about()
        .or(cmd.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// The generated part of `docs/reference.md`.
fn generate() -> String {
    let mut root = Cli::command();
    root.build();
    let mut out = String::new();
    let mut commands = Vec::new();
    leaves(&root, Vec::new(), &mut commands);

    out.push_str("## Commands\n\n| command | what it does |\n| --- | --- |\n");
    for (path, cmd) in &commands {
        let name = path.join(" ");
        let anchor = format!("keyhold-{}", path.join("-"));
        let first = about(cmd).split("\n\n").next().unwrap_or("").to_string();
        let _ = writeln!(out, "| [`{name}`](#{anchor}) | {} |", cell(&first));
    }

    // Every variable a flag reads, with the commands that read it.
    let mut vars: Vec<(String, String, Vec<String>)> = Vec::new();
    for (path, cmd) in &commands {
        for arg in cmd.get_arguments().filter(|a| shown(a)) {
            let Some(var) = arg.get_env() else { continue };
            let var = var.to_string_lossy().into_owned();
            let name = path.join(" ");
            match vars.iter_mut().find(|(v, _, _)| *v == var) {
                Some((_, _, users)) => users.push(name),
                None => vars.push((var, spelling(arg), vec![name])),
            }
        }
    }
    vars.sort();
    out.push_str(
        "\n## Environment variables of flags\n\n\
         Each of these sets the flag beside it; a flag given on the command line wins.\n\n\
         | variable | flag | commands |\n| --- | --- | --- |\n",
    );
    for (var, flag, users) in &vars {
        let users: Vec<String> = users.iter().map(|u| format!("`{u}`")).collect();
        let _ = writeln!(out, "| `{var}` | {flag} | {} |", users.join(", "));
    }

    for (path, cmd) in &commands {
        let _ = writeln!(out, "\n## keyhold {}\n", path.join(" "));
        let text = about(cmd);
        if !text.is_empty() {
            let _ = writeln!(out, "{}\n", text.trim());
        }
        let mut c = (*cmd)
            .clone()
            .bin_name(format!("keyhold {}", path.join(" ")));
        let usage = c.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ");
        let _ = writeln!(out, "```text\n{usage}\n```\n");
        let args: Vec<&Arg> = cmd.get_arguments().filter(|a| shown(a)).collect();
        if args.is_empty() {
            continue;
        }
        out.push_str("| argument | variable | default | meaning |\n| --- | --- | --- | --- |\n");
        for arg in args {
            let var = arg
                .get_env()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {var} | {} | {} |",
                spelling(arg),
                default_of(arg),
                meaning(arg)
            );
        }
    }
    out
}

#[test]
fn docs_reference_md_is_generated_from_the_clap_definitions() {
    let path = reference_path();
    let current = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let Some((header, _)) = current.split_once(MARKER) else {
        panic!(
            "{} lacks its marker line; put this line after the hand-written header:\n{MARKER}",
            path.display()
        )
    };
    let wanted = format!("{header}{MARKER}\n\n{}", generate());
    if wanted == current {
        return;
    }
    if std::env::var_os(UPDATE_VAR).is_some() {
        std::fs::write(&path, &wanted).expect("write docs/reference.md");
        return;
    }
    let line = current
        .lines()
        .zip(wanted.lines())
        .position(|(a, b)| a != b)
        .map_or_else(
            || current.lines().count().min(wanted.lines().count()) + 1,
            |i| i + 1,
        );
    panic!(
        "docs/reference.md is out of date with src/config/ (first difference at line {line}).\n\
         Regenerate it with:\n\n    {UPDATE_VAR}=1 cargo test --test reference\n\n\
         and commit the result."
    );
}

#[test]
fn the_reference_names_the_variables_read_outside_clap() {
    let text = std::fs::read_to_string(reference_path()).expect("read docs/reference.md");
    let header = text.split(MARKER).next().unwrap_or("");
    for var in keyhold::internals::keyring::SOURCE_VARS
        .iter()
        .chain(["KEYHOLD_TOKEN"].iter())
    {
        assert!(
            header.contains(&format!("`{var}`")),
            "the hand-written header of docs/reference.md must name `{var}`"
        );
    }
}
