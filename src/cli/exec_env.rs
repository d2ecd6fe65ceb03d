//! What `keyhold exec` fetches, and how: references from `--provider`
//! (with `--name`) and `--env-file` (resolved the way `op run` does), all
//! fetched in one batch reveal (`POST /api/reveal`), with a bounded wait
//! on 429.
//!
//! An env file holds `NAME=VALUE` lines (`#` comments, blank lines, an
//! optional `export `, values optionally in single or double quotes). A
//! value `keyhold://PROVIDER` is the provider's newest live key;
//! `keyhold://PROVIDER/KEY_NAME` the newest live key of that name. A value
//! that starts `keyhold:` (or `keyhold/`) but is neither — `keyhold:/p`,
//! `KEYHOLD://p`, a provider that is not one — is refused, naming the file,
//! line and variable, before anything is fetched: a typo never reaches the
//! command as a literal string. Every other line is passed to the command
//! as it is. What is resolved lives in this process's memory (zeroized)
//! and the command's environment, never in a file.
//!
//! Not for: starting the command (see `remote::exec`).
//!
//! Over 500 lines because: the reference grammar, its pairing with the
//! flags and the one-request fetch belong together, and their tests (a
//! third of the file) sit beside them.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::ConfigError;
use crate::client::{Client, ClientError, Revealed};
use crate::secret::SecretString;

/// The scheme of a reference.
pub(super) const SCHEME: &str = "keyhold://";

/// A key to fetch: the provider's newest live key, or the newest live key
/// of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reference {
    pub provider: String,
    pub key_name: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key_name {
            Some(n) => write!(f, "{}/{n}", self.provider),
            None => f.write_str(&self.provider),
        }
    }
}

/// Why a reference (a `--provider`, an env file's `keyhold://` value) is
/// not one; said without the value, which may be a secret that merely
/// starts like a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadReference {
    #[error("`{0}` is not a provider name (lower-case letters, digits, `_`, `.`, `-`; up to 64)")]
    Provider(String),
    #[error("the key name {0}")]
    KeyName(String),
    #[error("the value starts like a reference but not with `{SCHEME}` (lower case, two slashes)")]
    Scheme,
    #[error("the reference ends with `/` but names no key")]
    NoKeyName,
    #[error("the key name holds a bad %-escape")]
    BadEscape,
}

impl Reference {
    /// A reference checked as the server would check it, or why not.
    fn checked(provider: &str, key_name: Option<String>) -> Result<Reference, BadReference> {
        if !crate::access::valid_provider(provider) {
            return Err(BadReference::Provider(provider.chars().take(64).collect()));
        }
        if let Some(n) = &key_name {
            if let Some(why) = crate::access::key_name_problem(n) {
                return Err(BadReference::KeyName(why));
            }
        }
        Ok(Reference {
            provider: provider.to_string(),
            key_name,
        })
    }
}

/// A variable `exec` sets from a key, and where it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wanted {
    pub var: String,
    pub reference: Reference,
    /// `--provider` or `FILE line N`, for messages.
    pub from: String,
}

/// One line of an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvLine {
    /// Passed through as it is.
    Plain { name: String, value: String },
    /// Resolved through the server.
    Reference {
        name: String,
        reference: Reference,
        line: usize,
    },
}

/// Why an env file could not be used (its values are never shown: they
/// may be secrets).
#[derive(Debug, thiserror::Error)]
pub(super) enum EnvFileError {
    #[error("cannot read --env-file {path}: {error}")]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    Line {
        path: std::path::PathBuf,
        line: usize,
        why: String,
    },
}

/// Reads an env file; a malformed line is an error naming the file and
/// line.
pub(super) fn read_env_file(path: &Path) -> Result<Vec<EnvLine>, EnvFileError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
        EnvFileError::Read {
            path: path.to_path_buf(),
            error,
        }
    })?);
    parse_env_file(&text).map_err(|(line, why)| EnvFileError::Line {
        path: path.to_path_buf(),
        line,
        why,
    })
}

/// Parses env-file text; errors carry the line number.
pub(super) fn parse_env_file(text: &str) -> Result<Vec<EnvLine>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((name, value)) = line.split_once('=') else {
            return Err((n, "not NAME=VALUE".into()));
        };
        let name = name.trim();
        if !valid_env_name(name) {
            return Err((
                n,
                format!(
                    "`{}` is not a variable name",
                    name.chars().take(64).collect::<String>()
                ),
            ));
        }
        let value = unquote(value.trim());
        match reference_in(value) {
            None => out.push(EnvLine::Plain {
                name: name.to_string(),
                value: value.to_string(),
            }),
            Some(Ok(reference)) => out.push(EnvLine::Reference {
                name: name.to_string(),
                reference,
                line: n,
            }),
            Some(Err(why)) => {
                return Err((
                    n,
                    format!(
                        "{name}: {why}: write {SCHEME}PROVIDER or {SCHEME}PROVIDER/KEY_NAME \
                         (`%20` for a space in the name)"
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// The reference a value holds: `None` for a plain value, `Some(Err)` for
/// a value that starts like a reference but is not one (said without the
/// value, which may be a secret that merely starts so).
fn reference_in(value: &str) -> Option<Result<Reference, BadReference>> {
    let lower = value.get(..8).map(str::to_ascii_lowercase);
    if !matches!(lower.as_deref(), Some("keyhold:" | "keyhold/")) {
        return None;
    }
    let Some(rest) = value.strip_prefix(SCHEME) else {
        return Some(Err(BadReference::Scheme));
    };
    let (provider, key_name) = match rest.split_once('/') {
        Some((p, k)) => match percent_decode(k) {
            Some(k) if !k.is_empty() => (p, Some(k)),
            Some(_) => return Some(Err(BadReference::NoKeyName)),
            None => return Some(Err(BadReference::BadEscape)),
        },
        None => (rest, None),
    };
    Some(Reference::checked(provider, key_name))
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The references of `--provider` (each `P` or `P/NAME`, or named by the
/// `--name` right after it) paired with `--env` in order. `positions`
/// says where each --provider and --name stood on the command line.
pub(super) fn from_flags(
    providers: &[String],
    names: &[String],
    envs: &[String],
    positions: &crate::config::ExecPositions,
) -> Result<Vec<Wanted>, ConfigError> {
    let mut named: Vec<Option<&String>> = vec![None; providers.len()];
    for (name, at) in names.iter().zip(&positions.names) {
        let Some(p) = positions.providers.iter().rposition(|p| p < at) else {
            return Err(ConfigError(format!(
                "--name {name} comes before any --provider: put it right after the --provider it \
                 names; nothing was run"
            )));
        };
        if named[p].replace(name).is_some() {
            return Err(ConfigError(format!(
                "two --name for --provider {}: give one --name after each --provider; nothing \
                 was run",
                providers[p]
            )));
        }
    }
    let mut out = Vec::with_capacity(providers.len());
    for ((p, var), name) in providers.iter().zip(envs).zip(named) {
        let (provider, key_name) = match (p.split_once('/'), name) {
            (Some(_), Some(n)) => {
                return Err(ConfigError(format!(
                    "--provider {p} already names its key, and --name {n} names another: keep \
                     one; nothing was run"
                )))
            }
            (Some((provider, k)), None) => (provider, Some(k.to_string())),
            (None, name) => (p.as_str(), name.cloned()),
        };
        let reference = Reference::checked(provider, key_name).map_err(|why| {
            ConfigError(format!(
                "--provider {p} (for {var}): {why}; nothing was run"
            ))
        })?;
        out.push(Wanted {
            var: var.clone(),
            reference,
            from: "--provider".into(),
        });
    }
    Ok(out)
}

/// Runs `call`, and while it answers 429 and the wait so far plus the
/// server's `Retry-After` (1 s when absent) stays within `wait`, sleeps
/// that long and tries again. Returns the last answer.
pub(super) fn with_wait<T>(
    wait: Duration,
    mut call: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let start = Instant::now();
    loop {
        match call() {
            Err(ClientError::Api {
                status: 429,
                retry_after,
                ..
            }) if start
                .elapsed()
                .checked_add(Duration::from_secs(retry_after.unwrap_or(1).max(1)))
                .is_some_and(|then| then <= wait) =>
            {
                // Within `wait`, so the server's Retry-After is bounded.
                std::thread::sleep(Duration::from_secs(retry_after.unwrap_or(1).max(1)));
            }
            other => return other,
        }
    }
}

/// Fetches every key `wanted` names in one batch reveal (each distinct
/// reference once), waiting up to `wait` on 429; names on stderr the key
/// each provider-only reference got. Every failure is a [`ConfigError`]
/// naming the variables it concerns; nothing is run then.
pub(super) fn fetch_all(
    client: &Client,
    wanted: &[Wanted],
    wait: Duration,
    purpose: &str,
) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let distinct = distinct(wanted);
    if distinct.is_empty() {
        return Ok(Vec::new());
    }
    if distinct.len() > crate::vault::MAX_BATCH {
        return Err(ConfigError(format!(
            "{} distinct keys asked for; exec fetches at most {} in its one request: run fewer \
             references; nothing was run",
            distinct.len(),
            crate::vault::MAX_BATCH
        )));
    }
    let refs: Vec<(&str, Option<&str>)> = distinct
        .iter()
        .map(|r| (r.provider.as_str(), r.key_name.as_deref()))
        .collect();
    let got = with_wait(wait, || client.reveal_batch(&refs, Some(purpose)));
    let got = match got {
        // A server from before `POST /api/reveal`: one reveal a key.
        Err(ClientError::Api {
            status: 404 | 405,
            ref detail,
            ref failed,
            ..
        }) if failed.is_empty()
            && (detail.contains("no such route") || detail.contains("method")) =>
        {
            let mut keys = Vec::with_capacity(distinct.len());
            for r in &distinct {
                let one = with_wait(wait, || match &r.key_name {
                    None => client.reveal_newest(&r.provider, Some(purpose)),
                    Some(n) => client.reveal_newest_named(&r.provider, n, Some(purpose)),
                });
                keys.push(one.map_err(|e| refused(&e, wanted, Some(r), wait))?);
            }
            keys
        }
        Err(e) => return Err(refused(&e, wanted, None, wait)),
        Ok(keys) => keys,
    };
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let Some(i) = distinct.iter().position(|r| **r == w.reference) else {
            continue;
        };
        let Some(key) = got.get(i) else { continue };
        if w.reference.key_name.is_none() {
            say_which(&w.var, key);
        }
        out.push((
            w.var.clone(),
            SecretString::new(key.api_key.expose().to_string()),
        ));
    }
    for key in &got {
        warn_if_expiring(key);
    }
    Ok(out)
}

/// Whether `n` can name an environment variable (letters, digits and
/// `_`, not starting with a digit).
pub(super) fn valid_env_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Says on stderr when a fetched key lapses within 7 days (the key
/// itself goes to stdout or the child's environment).
pub(super) fn warn_if_expiring(r: &crate::client::Revealed) {
    let Some(exp) = r
        .expires_at
        .as_deref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
    else {
        return;
    };
    let left = exp.with_timezone(&chrono::Utc) - chrono::Utc::now();
    if left <= chrono::Duration::days(7) {
        eprintln!(
            "keyhold: warning: key {} ({} / {}) expires at {} ({} h from now): store a new \
             version with `keyhold keys put {}`",
            r.id,
            r.provider,
            r.key_name,
            exp.to_rfc3339(),
            left.num_hours().max(0),
            r.id
        );
    }
}

/// Each reference of `wanted` once, in the order first asked: what the
/// batch asks for, its answer's order.
fn distinct(wanted: &[Wanted]) -> Vec<&Reference> {
    let mut out: Vec<&Reference> = Vec::new();
    for w in wanted {
        if !out.contains(&&w.reference) {
            out.push(&w.reference);
        }
    }
    out
}

/// Names on stderr the key a provider-only reference got: which key is
/// the newest changes when a key is added to the provider.
fn say_which(var: &str, key: &Revealed) {
    eprintln!(
        "keyhold exec: {var} is key {} ({} / {}, version {}), the newest live key of {}; to pin \
         one, name it (--provider {} --name NAME, or keyhold://{}/NAME)",
        key.id, key.provider, key.key_name, key.version, key.provider, key.provider, key.provider
    );
}

/// The error of a failed fetch, naming the variables concerned: those of
/// `only` (one reference fetched alone), of each key the batch refused,
/// or every one.
fn refused(
    e: &ClientError,
    wanted: &[Wanted],
    only: Option<&Reference>,
    wait: Duration,
) -> ConfigError {
    let distinct = distinct(wanted);
    let vars_of = |r: &Reference| {
        wanted
            .iter()
            .filter(|w| w.reference == *r)
            .map(|w| format!("{} ({}, {SCHEME}{r})", w.var, w.from))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = |status: u16| match status {
        404 => "no key",
        410 => "the key expired",
        429 => "rate limited",
        401 => "not authenticated",
        403 => "not allowed",
        _ => "cannot fetch the key",
    };
    if let ClientError::Api { failed, .. } = e {
        if !failed.is_empty() {
            let lines: Vec<String> = failed
                .iter()
                .filter_map(|(i, status, detail)| {
                    let r = distinct.get(*i)?;
                    Some(format!(
                        "{} for {}: keyhold answered {status}: {detail}",
                        what(*status),
                        vars_of(r)
                    ))
                })
                .collect();
            return ConfigError(format!(
                "{}; nothing was fetched and nothing was run",
                lines.join("; ")
            ));
        }
    }
    let status = match e {
        ClientError::Api { status, .. } => *status,
        _ => 0,
    };
    let waited = match (status, wait.as_secs()) {
        (429, 0) => " (add --wait 30s to wait for the budget)".to_string(),
        (429, s) => format!(" (still, after waiting up to {s} s: --wait)"),
        _ => String::new(),
    };
    let whom = match only {
        Some(r) => vars_of(r),
        None => "the keys of every variable asked for".to_string(),
    };
    ConfigError(format!(
        "{}{waited} for {whom}: {e}; nothing was run",
        what(status)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(provider: &str, key_name: Option<&str>) -> Reference {
        Reference {
            provider: provider.into(),
            key_name: key_name.map(str::to_string),
        }
    }

    #[test]
    fn lines_references_and_pass_through() {
        let text = "# comment\n\nexport A=keyhold://claude\nB = keyhold://github/ci%20bot\nC=\"a b\"\nD='keyhold://x'\nE=\n";
        let lines = parse_env_file(text).unwrap();
        assert_eq!(
            lines,
            vec![
                EnvLine::Reference {
                    name: "A".into(),
                    reference: reference("claude", None),
                    line: 3,
                },
                EnvLine::Reference {
                    name: "B".into(),
                    reference: reference("github", Some("ci bot")),
                    line: 4,
                },
                EnvLine::Plain {
                    name: "C".into(),
                    value: "a b".into()
                },
                EnvLine::Reference {
                    name: "D".into(),
                    reference: reference("x", None),
                    line: 6,
                },
                EnvLine::Plain {
                    name: "E".into(),
                    value: "".into()
                },
            ]
        );
        assert_eq!(parse_env_file("A=1\nnope\n").unwrap_err().0, 2);
        assert_eq!(parse_env_file("1A=x").unwrap_err().0, 1);
    }

    #[test]
    fn a_value_that_starts_like_a_reference_must_be_one() {
        for bad in [
            "keyhold:/claude",
            "keyhold:claude",
            "KEYHOLD://claude",
            "Keyhold://claude",
            "keyhold//claude",
            "keyhold://",
            "keyhold:///claude",
            "keyhold://Claude",
            "keyhold://claude/",
            "keyhold://cl aude",
            "keyhold://claude/%zz",
        ] {
            let (line, why) = parse_env_file(&format!("# x\nMY_KEY={bad}\n")).unwrap_err();
            assert_eq!(line, 2, "{bad}");
            assert!(why.starts_with("MY_KEY: "), "{bad}: {why}");
            assert!(why.contains("keyhold://PROVIDER"), "{bad}: {why}");
        }
        // What merely contains the word is a plain value.
        for plain in ["keyholder", "my keyhold://x", "keyhold", "sk-keyhold:x"] {
            let lines = parse_env_file(&format!("A={plain}\n")).unwrap();
            assert!(matches!(lines[0], EnvLine::Plain { .. }), "{plain}");
        }
    }

    #[test]
    fn a_name_belongs_to_the_provider_before_it() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let at = |providers: &[usize], names: &[usize]| crate::config::ExecPositions {
            providers: providers.to_vec(),
            names: names.to_vec(),
        };
        // --provider claude --name ci --env A --provider gemini --env B
        let w = from_flags(
            &s(&["claude", "gemini"]),
            &s(&["ci"]),
            &s(&["A", "B"]),
            &at(&[2, 8], &[4]),
        )
        .unwrap();
        assert_eq!(w[0].reference, reference("claude", Some("ci")));
        assert_eq!(w[1].reference, reference("gemini", None));
        // --name before any --provider; two for one; both P/NAME and --name.
        let e = from_flags(&s(&["claude"]), &s(&["ci"]), &s(&["A"]), &at(&[4], &[2]));
        assert!(e.unwrap_err().0.contains("before any --provider"));
        let e = from_flags(
            &s(&["claude"]),
            &s(&["a", "b"]),
            &s(&["A"]),
            &at(&[2], &[4, 6]),
        );
        assert!(e.unwrap_err().0.contains("two --name"));
        let e = from_flags(&s(&["claude/x"]), &s(&["y"]), &s(&["A"]), &at(&[2], &[4]));
        assert!(e.unwrap_err().0.contains("already names"));
        let e = from_flags(&s(&["Claude"]), &[], &s(&["A"]), &at(&[2], &[]));
        assert!(e.unwrap_err().0.contains("not a provider name"));
    }
}
