//! Client commands over HTTP: `keyhold exec`, `keyhold keys …` and the
//! `--remote` token commands.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use super::ConfigError;
use crate::client::{token_from, Client, ClientError};
use crate::config::{ClientArgs, ExecArgs, KeysCommand};
use crate::secret::SecretString;

/// Opens a client from the shared flags.
pub(crate) fn connect(a: &ClientArgs) -> Result<Client, ClientError> {
    let token = token_from(a.token_file.as_deref())?;
    Client::new(&a.addr, token, a.ca_cert.as_deref())
}

/// Client errors a user fixes in their setup, and values the server
/// refused as invalid (400, 413, 415, 422: nothing was done; the command
/// line needs fixing, as for a bad flag), exit 2; the server's other
/// answers (401, 403, 404, 409, 410, 429, 5xx) and an unreachable server
/// exit 1.
pub(crate) fn client_exit(e: &ClientError) -> ExitCode {
    match e {
        ClientError::NoToken
        | ClientError::TokenFile { .. }
        | ClientError::BadAddr(_)
        | ClientError::CaCert { .. }
        | ClientError::Api {
            status: 400 | 413 | 415 | 422,
            ..
        } => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// True for a variable of keyhold's own that `exec` never hands to its
/// child: every `KEYHOLD_*` (the access token and its file, the key
/// command, the server's settings) and every `FERNET_*` (the keyring).
fn is_keyholds_own(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("KEYHOLD_") || upper.starts_with("FERNET_")
}

/// Variables a `--pristine` command keeps from this environment.
const PRISTINE_KEEP: [&str; 4] = ["PATH", "HOME", "LANG", "TERM"];

/// `keyhold exec`: every failure exits 2 and runs nothing.
pub(super) fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    if a.providers.len() != a.envs.len() {
        return Err(ConfigError(format!(
            "{} --provider but {} --env: give one --env VAR for each --provider, in order; nothing was run",
            a.providers.len(),
            a.envs.len()
        ))
        .into());
    }
    for var in &a.envs {
        if !super::exec_env::valid_env_name(var) {
            return Err(ConfigError(format!(
                "--env `{var}` is not a variable name (letters, digits and _, not starting with a digit); nothing was run"
            ))
            .into());
        }
    }
    let Some(program) = a.command.first() else {
        return Err(ConfigError(
            "no command to run: add `-- CMD [ARGS...]`; nothing was run".into(),
        )
        .into());
    };
    let purpose = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.clone());
    let client = match connect(&a.client) {
        Ok(c) => c,
        Err(e) => return Err(ConfigError(format!("{e}; nothing was run")).into()),
    };
    // Every env file is read, and every reference checked, before
    // anything is fetched.
    let mut lines = Vec::new();
    for path in &a.env_files {
        let read = super::exec_env::read_env_file(path)
            .map_err(|e| ConfigError(format!("{e}; nothing was run")))?;
        lines.push((path, read));
    }
    let mut wanted = super::exec_env::from_flags(&a.providers, &a.names, &a.envs, &a.positions)?;
    let mut plain: Vec<(String, String)> = Vec::new();
    for (path, lines) in lines {
        for line in lines {
            match line {
                super::exec_env::EnvLine::Plain { name, .. } if is_keyholds_own(&name) => {
                    return Err(ConfigError(format!(
                        "--env-file sets {name}: keyhold's own variables (KEYHOLD_*, FERNET_*) \
                         are never passed to the command; remove the line; nothing was run"
                    ))
                    .into())
                }
                super::exec_env::EnvLine::Plain { name, value } => plain.push((name, value)),
                super::exec_env::EnvLine::Reference {
                    name,
                    reference,
                    line,
                } => wanted.push(super::exec_env::Wanted {
                    var: name,
                    reference,
                    from: format!("{} line {line}", path.display()),
                }),
            }
        }
    }
    let wait = std::time::Duration::from_secs(a.wait.0);
    let secrets = super::exec_env::fetch_all(&client, &wanted, wait, &format!("exec {purpose}"))?;
    // No environment variable can carry a NUL byte: say which one instead
    // of failing to start the command.
    let nul = |var: &str, what: &str| {
        ConfigError(format!(
            "{what} for {var} holds a NUL byte, which no environment variable can carry: store \
             it again without one; nothing was run"
        ))
    };
    if let Some((var, _)) = plain.iter().find(|(_, v)| v.contains('\0')) {
        return Err(nul(var, "the --env-file value").into());
    }
    if let Some((var, _)) = secrets.iter().find(|(_, k)| k.expose().contains('\0')) {
        return Err(nul(var, "the key fetched").into());
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(&a.command[1..]);
    if a.pristine {
        cmd.env_clear();
        for k in PRISTINE_KEEP {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
    }
    // keyhold's own credentials and key sources are not the command's
    // business, whatever --pristine says: the child is often an agent a
    // prompt can steer.
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str() {
            if is_keyholds_own(name) {
                cmd.env_remove(name);
            }
        }
    }
    // Plain env-file lines first: a resolved key wins over a plain line of
    // the same name.
    for (var, value) in &plain {
        cmd.env(var, value);
    }
    for (var, secret) in &secrets {
        cmd.env(var, secret.expose());
    }
    // Only returns on failure; on success this process is CMD now, with its
    // exit status, and no other process holds the key.
    let err = cmd.exec();
    drop(secrets);
    eprintln!("keyhold exec: cannot run `{program}`: {err}");
    Ok(ExitCode::from(127))
}

/// `keyhold keys …`
pub(super) fn keys(c: KeysCommand) -> anyhow::Result<ExitCode> {
    let res = match c {
        KeysCommand::Add(a) => {
            let key = read_secret_from_stdin()?;
            connect(&a.client).and_then(|client| {
                let meta = client.add(&a.provider, &a.name, &key, a.ttl.map(|t| t.0))?;
                eprintln!(
                    "keyhold: stored key {} ({} / {})",
                    meta.id, a.provider, a.name
                );
                println!("{}", meta.id);
                Ok(())
            })
        }
        KeysCommand::List(a) => connect(&a.client).and_then(|client| {
            let mut params = Vec::new();
            if a.deleted {
                params.push(("deleted", "true".to_string()));
            }
            if let Some(d) = a.expiring {
                params.push(("expiring_within", d.0.to_string()));
            }
            if a.expired {
                params.push(("expired", "true".to_string()));
            }
            let list = client.list_with(a.provider.as_deref(), &params)?;
            let mut out = std::io::stdout().lock();
            if a.output.is_json() {
                let _ = super::table::print_json(&mut out, &list);
            } else {
                let _ = super::table::keys(&list, a.table.wide, a.deleted).print(&mut out);
            }
            Ok(())
        }),
        KeysCommand::Reveal(a) => {
            let by_name = a.key.split_once('/');
            if by_name.is_some() && a.version.is_some() {
                return Err(ConfigError(
                    "--version needs the key's id, not PROVIDER/NAME: find the id with `keyhold \
                     keys list`"
                        .into(),
                )
                .into());
            }
            connect(&a.client).and_then(|client| {
                let r = match by_name {
                    Some((provider, name)) => client.reveal_newest_named(provider, name, None)?,
                    None => client.reveal(&a.key, a.version)?,
                };
                super::exec_env::warn_if_expiring(&r);
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(r.api_key.expose().as_bytes());
                let _ = out.write_all(b"\n");
                Ok(())
            })
        }
        KeysCommand::Put(a) => {
            let key = read_secret_from_stdin()?;
            connect(&a.client).and_then(|client| {
                let meta = client.put(&a.id, &key, a.ttl.map(|t| t.0))?;
                eprintln!("keyhold: stored version {} of key {}", meta.version, a.id);
                Ok(())
            })
        }
        KeysCommand::Versions(a) => connect(&a.client).and_then(|client| {
            let list = client.versions(&a.id)?;
            let mut out = std::io::stdout().lock();
            if a.output.is_json() {
                let _ = super::table::print_json(&mut out, &list);
            } else {
                let _ = super::table::versions(&list, a.table.wide).print(&mut out);
            }
            Ok(())
        }),
        KeysCommand::Delete(a) => connect(&a.client).and_then(|client| {
            client.delete(&a.id, a.purge)?;
            if a.purge {
                eprintln!("keyhold: destroyed key {} and every version of it", a.id);
            } else {
                eprintln!(
                    "keyhold: deleted key {} (`keyhold keys restore {}` brings it back within the \
                     recovery window)",
                    a.id, a.id
                );
            }
            Ok(())
        }),
        KeysCommand::Restore(a) => connect(&a.client).and_then(|client| {
            client.restore(&a.id)?;
            eprintln!("keyhold: restored key {}", a.id);
            Ok(())
        }),
    };
    match res {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("keyhold: error: {e}");
            Ok(client_exit(&e))
        }
    }
}

/// The API key to store: typed without echo on a terminal, else read from
/// stdin (a pipe). Never from argv.
fn read_secret_from_stdin() -> anyhow::Result<SecretString> {
    let text = if std::io::stdin().is_terminal() {
        SecretString::new(
            rpassword::prompt_password("API key (not echoed): ")
                .map_err(|e| ConfigError(format!("cannot read the key from the terminal: {e}")))?,
        )
    } else {
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| ConfigError(format!("cannot read the key from stdin: {e}")))?;
        let mut s = String::from_utf8(std::mem::take(&mut *buf))
            .map_err(|_| ConfigError("the key on stdin is not UTF-8 text".into()))?;
        // One trailing newline (from `echo` or a file) is not part of it.
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        SecretString::new(s)
    };
    if text.expose().is_empty() {
        return Err(ConfigError(
            "no key given: pipe it in (`printf %s \"$KEY\" | keyhold keys add ...`) or type it at the prompt".into(),
        )
        .into());
    }
    Ok(text)
}
