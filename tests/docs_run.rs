//! Docs that run (issue 25, point 11): every shell block of README.md,
//! CONTRIBUTING.md and docs/*.md is run here, run by a named test, or
//! skipped with its reason (tests/docs_run/table.rs), and a block the
//! table does not name fails `every_shell_block_is_run_or_skipped_with_a_reason`.
//!
//! A run block runs whole, as written, under `bash -euo pipefail`, in a
//! temporary directory with the binary under test first on PATH, after a
//! set-up of the test's own (tests/docs_run/prelude.sh): a key file, a
//! store made by `keyhold init` (its admin token in `TOKEN` and
//! `KEYHOLD_TOKEN`, as the README's set-up leaves it), and, where the
//! block expects the server running, `keyhold serve` on an ephemeral
//! loopback port (its address in `KEYHOLD_ADDR` and `KH_URL`), stopped by
//! its PID. The PostgreSQL blocks share one server of their own that
//! requires TLS, each on an empty database. What the docs leave to the
//! reader is filled in explicitly: the replacements in `GLOBAL` (paths
//! into the temporary directory, the server's address, `curl -s` failing
//! on an HTTP error) and each block's own `before` (the state its prose
//! assumes), `edits` and `drops` (a command not run, with its reason).
//! Each block must exit 0 within 60 s and print the parts of the output
//! the docs show (`expect`); `after` checks files it wrote (a backup's
//! mode 0600, a man page).
//!
//! Skipped blocks carry their number of commands, so a command added to
//! one fails here until it is run or the count (and the reason) updated.
//! `cargo test --test docs_run -- --nocapture` prints the counts, every
//! skip, drop and replacement with its reason, and each block's time;
//! with `DOCS_SHOW=1` also every block's output.

#[path = "common/docs.rs"]
mod docs;

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docs::Block;

/// What the test does with one shell block.
enum How {
    /// Run here.
    Run(Run),
    /// Run as written by another test (its file and function).
    Elsewhere(&'static str, &'static str),
    /// Not run: the number of commands in the block, and why.
    Skip(usize, &'static str),
}

#[derive(Default)]
struct Run {
    /// The server runs when the block starts.
    server: bool,
    /// TLS files: `$KH_DIR/tls.crt` and `tls.key` (localhost, 127.0.0.1),
    /// signed by `$KH_DIR/tls-ca.pem`.
    tls: bool,
    /// A PostgreSQL server of its own requiring TLS, with an empty database
    /// `keyhold`: its `localhost:PORT` in `KH_PG`, its CA in
    /// `$KH_DIR/db-ca.pem`.
    pg: bool,
    /// Shell run before the block: the state its prose assumes.
    before: &'static str,
    /// Replacements in the block's text (each must occur).
    edits: &'static [(&'static str, &'static str)],
    /// Commands not run: a marker in the command, and why.
    drops: &'static [(&'static str, &'static str)],
    /// Strings the block's output (stdout and stderr) must hold.
    expect: &'static [&'static str],
    /// Shell run after the block: checks of the files it wrote.
    after: &'static str,
}

struct Entry {
    file: &'static str,
    /// A string found in this block only.
    marker: &'static str,
    how: How,
}

/// Replacements in every run block (each used by at least one block):
/// from, to, why.
const GLOBAL: &[(&str, &str, &str)] = &[
    (
        "runuser -u keyhold -- ",
        "",
        "the test runs as the store's owner; tests/production.rs runs `runuser` as root",
    ),
    (
        "/var/lib/keyhold",
        "$KH_DIR/data",
        "the store in the test's directory",
    ),
    (
        "/etc/keyhold/",
        "$KH_DIR/",
        "key file, TLS files and token files in the test's directory",
    ),
    (
        "/backups/",
        "$KH_DIR/backups/",
        "backups in the test's directory",
    ),
    (
        "http://127.0.0.1:8787",
        "$KH_URL",
        "the test's server, on an ephemeral port",
    ),
    (
        "ed25519:…",
        "$KH_PUBKEY",
        "the store's audit public key (`keyhold audit public-key`)",
    ),
    (
        "curl -s ",
        "curl -s --fail-with-body ",
        "an HTTP error fails the block",
    ),
];

/// The test's set-up, before every run block (not the docs').
const PRELUDE: &str = include_str!("docs_run/prelude.sh");

#[path = "docs_run/table.rs"]
mod table;
use table::table;

/// `text` with each `[--flag VALUE]` (an optional part) given.
fn give_optional_parts(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("[--") {
        out.push_str(&rest[..at]);
        let inner = &rest[at + 1..];
        match inner.find(']') {
            Some(end) => {
                out.push_str(&inner[..end]);
                rest = &inner[end + 1..];
            }
            None => {
                out.push_str(inner);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The block as the test runs it: drops, then the block's edits, then
/// the global replacements.
fn script_of(block: &Block, run: &Run) -> String {
    let mut lines: Vec<Option<&str>> = block.lines.iter().map(|l| Some(l.as_str())).collect();
    for (range, text) in block.commands() {
        if run.drops.iter().any(|(m, _)| text.contains(m)) {
            for l in &mut lines[range] {
                *l = None;
            }
        }
    }
    let mut text: String = lines
        .iter()
        .map(|l| format!("{}\n", l.unwrap_or("# (dropped by the test)")))
        .collect();
    for (from, to) in run.edits {
        text = text.replace(from, to);
    }
    text = give_optional_parts(&text);
    for (from, to, _) in GLOBAL {
        text = text.replace(from, to);
    }
    text
}

/// A directory holding `keyhold` (the binary under test), for PATH.
fn bin_dir(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::bin(), bin.join("keyhold")).unwrap();
    bin
}

/// Kills the process whose PID the script left in `file`, if any.
fn kill_left(file: &Path) {
    let Ok(pid) = std::fs::read_to_string(file) else {
        return;
    };
    if let Ok(pid) = pid.trim().parse::<i32>() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

/// The PostgreSQL server the `pg` blocks share (one at a time), requiring
/// TLS, with its CA.
struct Pg {
    cluster: common::postgres::Cluster,
    _certs: tempfile::TempDir,
    ca: std::path::PathBuf,
}

impl Pg {
    /// Started, or None (outside CI) when PostgreSQL is not installed, as
    /// in tests/postgres.rs; in CI a missing PostgreSQL fails there.
    fn start() -> Option<Pg> {
        let mut cluster = common::postgres::cluster()?;
        let certs = tempfile::tempdir().unwrap();
        let [ca, cert, key] = common::tls::certificates(certs.path(), "db");
        cluster.require_tls(&cert, &key);
        Some(Pg {
            cluster,
            _certs: certs,
            ca,
        })
    }

    /// An empty database `keyhold` (dropped and made again).
    fn fresh(&self) {
        self.cluster
            .psql_local("postgres", "DROP DATABASE IF EXISTS keyhold WITH (FORCE)");
        self.cluster
            .psql_local("postgres", "CREATE DATABASE keyhold");
    }
}

/// Runs one block; Err says what failed, with the script and its output.
fn run_block(block: &Block, run: &Run, pg: Option<&Pg>) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = bin_dir(dir);
    if run.tls {
        let [_, cert, key] = common::tls::certificates(dir, "tls");
        std::fs::rename(cert, dir.join("tls.crt")).unwrap();
        std::fs::rename(key, dir.join("tls.key")).unwrap();
    }
    if let Some(pg) = pg {
        pg.fresh();
        std::fs::copy(&pg.ca, dir.join("db-ca.pem")).unwrap();
    }
    let body = script_of(block, run);
    let mut script = format!("# --- the test's set-up (tests/docs_run.rs)\n{PRELUDE}\n");
    if run.server {
        script.push_str("start_server\n");
    }
    script.push_str(run.before);
    script.push_str(&format!(
        "\n# --- {}:{} as the test runs it\n{body}",
        block.file, block.line
    ));
    if !run.after.is_empty() {
        script.push_str("\n# --- the test's checks of what the block wrote\n");
        script.push_str(run.after);
    }
    std::fs::write(dir.join("block.sh"), &script).unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail"])
        .arg(dir.join("block.sh"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYHOLD_") || k.starts_with("FERNET_") {
            cmd.env_remove(k);
        }
    }
    if let Some(c) = &pg {
        cmd.env("KH_PG", format!("localhost:{}", c.cluster.port));
    }
    cmd.env("KH_DIR", dir).env("KH_REPO", docs::repo()).env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let mut child = cmd.spawn().unwrap();
    let out_reader = read_all(child.stdout.take().unwrap());
    let err_reader = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill_left(&dir.join("server.pid"));
    kill_left(&dir.join("serves.pid"));
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let said = format!("{stdout}\n{stderr}");
    // The set-up is the same for every block: shown from the block's own.
    let shown_from = PRELUDE.lines().count() + 2;
    let numbered: String = script
        .lines()
        .enumerate()
        .skip(shown_from)
        .map(|(i, l)| format!("{:4} {l}\n", i + 1))
        .collect();
    let fail = |why: String| {
        Err(format!(
            "{}:{}: {why}\n--- script\n{numbered}--- stdout\n{stdout}\n--- stderr\n{stderr}",
            block.file, block.line
        ))
    };
    match status {
        None => return fail("did not finish within 60 s".into()),
        Some(s) if !s.success() => return fail(format!("exited {s}")),
        Some(_) => {}
    }
    if std::env::var_os("DOCS_SHOW").is_some() {
        eprintln!("=== {}:{}\n{said}", block.file, block.line);
    }
    for want in run.expect {
        if !said.contains(want) {
            return fail(format!("the output lacks `{want}`"));
        }
    }
    Ok(())
}

fn read_all(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The entry of `block`, if exactly one names it.
fn entry_of<'a>(table: &'a [Entry], block: &Block) -> Result<&'a Entry, String> {
    let text = block.text();
    let found: Vec<&Entry> = table
        .iter()
        .filter(|e| e.file == block.file && text.contains(e.marker))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "{}:{}: a shell block neither run nor skipped: run it in tests/docs_run/table.rs, or skip it there with its reason:\n{text}",
            block.file, block.line
        )),
        more => Err(format!(
            "{}:{}: {} entries name this block (markers {:?}): make them unique",
            block.file,
            block.line,
            more.len(),
            more.iter().map(|e| e.marker).collect::<Vec<_>>()
        )),
    }
}

#[test]
fn every_shell_block_is_run_or_skipped_with_a_reason() {
    let table = table();
    let blocks = docs::blocks();
    let mut bad = Vec::new();
    let (mut run, mut elsewhere, mut skipped, mut dropped) = (0, 0, 0, 0);
    let mut used = vec![false; table.len()];
    let mut global_used = vec![false; GLOBAL.len()];
    for block in &blocks {
        let entry = match entry_of(&table, block) {
            Ok(e) => e,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        let at = table.iter().position(|e| std::ptr::eq(e, entry)).unwrap();
        used[at] = true;
        let commands = block.commands();
        let text = block.text();
        match &entry.how {
            How::Run(r) => {
                for (m, why) in r.drops {
                    eprintln!("dropped: {}:{}: `{m}`: {why}", block.file, block.line);
                    let n = commands.iter().filter(|(_, c)| c.contains(m)).count();
                    if n == 0 {
                        bad.push(format!("{}: drop `{m}` matches no command", block.file));
                    }
                    dropped += n;
                }
                run += commands.len()
                    - commands
                        .iter()
                        .filter(|(_, c)| r.drops.iter().any(|(m, _)| c.contains(m)))
                        .count();
                for (from, _) in r.edits {
                    if !text.contains(from) {
                        bad.push(format!("{}: edit `{from}` matches nothing", block.file));
                    }
                }
                let edited = give_optional_parts(
                    &r.edits
                        .iter()
                        .fold(text.clone(), |t, (f, to)| t.replace(f, to)),
                );
                for (i, (from, _, _)) in GLOBAL.iter().enumerate() {
                    if edited.contains(from) {
                        global_used[i] = true;
                    }
                }
            }
            How::Elsewhere(file, func) => {
                let source = std::fs::read_to_string(docs::repo().join(file)).unwrap_or_default();
                if !source.contains(&format!("fn {func}(")) {
                    bad.push(format!(
                        "{}:{}: said to be run by {file}'s {func}, which does not exist",
                        block.file, block.line
                    ));
                }
                elsewhere += commands.len();
            }
            How::Skip(n, why) => {
                eprintln!(
                    "skipped: {}:{} ({n} commands): {why}",
                    block.file, block.line
                );
                if *n != commands.len() {
                    bad.push(format!(
                        "{}:{}: skipped as {n} commands, but it has {}: run the new ones, or update the count and the reason",
                        block.file,
                        block.line,
                        commands.len()
                    ));
                }
                skipped += commands.len();
            }
        }
    }
    for (e, u) in table.iter().zip(&used) {
        if !u {
            bad.push(format!(
                "{}: no shell block holds `{}` any more: update or remove its entry",
                e.file, e.marker
            ));
        }
    }
    for ((from, _, _), u) in GLOBAL.iter().zip(&global_used) {
        if !u {
            bad.push(format!(
                "the global replacement `{from}` is used by no block"
            ));
        }
    }
    for (from, to, why) in GLOBAL {
        eprintln!("replaced in every run block: `{from}` by `{to}`: {why}");
    }
    eprintln!(
        "{} shell blocks: {run} commands run here, {elsewhere} by other tests, {skipped} in skipped blocks, {dropped} dropped from run blocks",
        blocks.len()
    );
    assert!(
        blocks.len() > 25,
        "only {} blocks: is the extraction broken?",
        blocks.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}

#[test]
fn every_runnable_block_runs_as_written() {
    let table = table();
    let blocks = docs::blocks();
    let runs: Vec<(&Block, &Run)> = blocks
        .iter()
        .filter_map(|b| match entry_of(&table, b) {
            Ok(Entry {
                how: How::Run(r), ..
            }) => Some((b, r)),
            _ => None, // the coverage test says so
        })
        .collect();
    assert!(runs.len() > 15, "only {} blocks to run", runs.len());
    let one = |(block, run): &(&Block, &Run), pg: Option<&Pg>| {
        let started = Instant::now();
        let result = run_block(block, run, pg);
        eprintln!(
            "ran {}:{} in {:.1} s",
            block.file,
            block.line,
            started.elapsed().as_secs_f64()
        );
        result.err()
    };
    // Three at a time: the PostgreSQL blocks one after another on one
    // server of their own, the others on two threads.
    let (on_pg, others): (Vec<_>, Vec<_>) = runs.iter().partition(|(_, r)| r.pg);
    let failed: Vec<String> = std::thread::scope(|s| {
        let pg_thread = s.spawn(|| match Pg::start() {
            Some(pg) => on_pg.iter().filter_map(|r| one(r, Some(&pg))).collect(),
            None => {
                eprintln!(
                    "{} PostgreSQL blocks not run here: PostgreSQL missing",
                    on_pg.len()
                );
                Vec::new()
            }
        });
        let halves: Vec<_> = (0..2)
            .map(|k| {
                let mine: Vec<_> = others.iter().skip(k).step_by(2).collect();
                s.spawn(move || {
                    mine.into_iter()
                        .filter_map(|r| one(r, None))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<String> = pg_thread.join().unwrap();
        for h in halves {
            all.extend(h.join().unwrap());
        }
        all
    });
    assert!(failed.is_empty(), "{}", failed.join("\n\n=====\n\n"));
}
