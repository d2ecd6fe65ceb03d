//! `keyhold exec --env-file FILE` and `--wait`: references resolved the
//! way `op run` does, and a bounded wait on 429.
//!
//! An env file holds `NAME=VALUE` lines (`#` comments, blank lines, an
//! optional `export `, values optionally in single or double quotes). A
//! value `keyhold://PROVIDER` is the provider's newest live key;
//! `keyhold://PROVIDER/KEY_NAME` the newest live key of that name. Every
//! other line is passed to the command as it is. What is resolved lives
//! in this process's memory (zeroized) and the command's environment,
//! never in a file.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError};
use crate::secret::SecretString;

/// The scheme of a reference.
pub(super) const SCHEME: &str = "keyhold://";

/// One line of an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvLine {
    /// Passed through as it is.
    Plain { name: String, value: String },
    /// Resolved through the server.
    Reference {
        name: String,
        provider: String,
        key_name: Option<String>,
    },
}

/// Reads an env file; a malformed line is an error naming the file and
/// line (its value is never shown: it may be a secret).
/// Why an env file could not be used (its values are never shown).
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
        if !super::remote::valid_env_name(name) {
            return Err((
                n,
                format!(
                    "`{}` is not a variable name",
                    name.chars().take(64).collect::<String>()
                ),
            ));
        }
        let value = unquote(value.trim());
        match value.strip_prefix(SCHEME) {
            Some(reference) => {
                let (provider, key_name) = match reference.split_once('/') {
                    Some((p, k)) => (
                        p,
                        Some(percent_decode(k).ok_or((n, "bad %-escape".to_string()))?),
                    ),
                    None => (reference, None),
                };
                if provider.is_empty() || key_name.as_deref() == Some("") {
                    return Err((
                        n,
                        format!("a reference is {SCHEME}PROVIDER or {SCHEME}PROVIDER/KEY_NAME"),
                    ));
                }
                out.push(EnvLine::Reference {
                    name: name.to_string(),
                    provider: provider.to_string(),
                    key_name,
                });
            }
            None => out.push(EnvLine::Plain {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
    }
    Ok(out)
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
            }) if start.elapsed() + Duration::from_secs(retry_after.unwrap_or(1).max(1))
                <= wait =>
            {
                std::thread::sleep(Duration::from_secs(retry_after.unwrap_or(1).max(1)));
            }
            other => return other,
        }
    }
}

/// Resolves one reference: the provider's newest live key, or the newest
/// live key of that name.
pub(super) fn resolve(
    client: &Client,
    provider: &str,
    key_name: Option<&str>,
    purpose: &str,
) -> Result<SecretString, ClientError> {
    let revealed = match key_name {
        None => client.reveal_newest(provider, Some(purpose))?,
        Some(name) => client.reveal_newest_named(provider, name, Some(purpose))?,
    };
    super::remote::warn_if_expiring(&revealed);
    Ok(revealed.api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_references_and_pass_through() {
        let text = "# comment\n\nexport A=keyhold://claude\nB = keyhold://github/ci%20bot\nC=\"a b\"\nD='keyhold://x'\nE=\n";
        let lines = parse_env_file(text).unwrap();
        assert_eq!(
            lines,
            vec![
                EnvLine::Reference {
                    name: "A".into(),
                    provider: "claude".into(),
                    key_name: None
                },
                EnvLine::Reference {
                    name: "B".into(),
                    provider: "github".into(),
                    key_name: Some("ci bot".into())
                },
                EnvLine::Plain {
                    name: "C".into(),
                    value: "a b".into()
                },
                EnvLine::Reference {
                    name: "D".into(),
                    provider: "x".into(),
                    key_name: None
                },
                EnvLine::Plain {
                    name: "E".into(),
                    value: "".into()
                },
            ]
        );
        assert_eq!(parse_env_file("A=1\nnope\n").unwrap_err().0, 2);
        assert_eq!(parse_env_file("1A=x").unwrap_err().0, 1);
        assert!(parse_env_file("A=keyhold://").is_err());
        assert!(parse_env_file("A=keyhold://p/").is_err());
    }
}
