//! `keyhold keygen [--env-file PATH | --key-file PATH]`

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::ExitCode;

use anyhow::Context;

use super::ConfigError;
use crate::config::KeygenArgs;
use crate::keyring::generate_key;

pub(super) fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.key_file {
        let done = crate::key_file::prepend_new_key(path)?;
        eprintln!(
            "keyhold: wrote a new key ({}) at the top of {}, which now holds {} key(s), newest \
             first",
            done.fingerprint,
            path.display(),
            done.keys
        );
        return Ok(ExitCode::SUCCESS);
    }
    let key = generate_key();
    let Some(path) = args.env_file else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", key.expose()).context("cannot write to stdout")?;
        return Ok(ExitCode::SUCCESS);
    };
    let existing = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    if let Some(bytes) = &existing {
        let text = String::from_utf8_lossy(bytes);
        let sets_key = text.lines().any(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
            l.starts_with("FERNET_KEY=")
        });
        if sets_key {
            return Err(ConfigError(format!(
                "{} already sets FERNET_KEY; nothing was written. To rotate, keep the keys in a \
                 key file instead: `keyhold keygen --key-file FILE` adds a new key first, and \
                 `keyhold rotate --new-key` (FERNET_KEY_FILE=FILE) does both steps offline",
                path.display()
            ))
            .into());
        }
    }
    crate::key_file::create_parent_dir(&path)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    let mut line = String::new();
    if existing
        .as_ref()
        .is_some_and(|b| !b.is_empty() && !b.ends_with(b"\n"))
    {
        line.push('\n');
    }
    line.push_str("FERNET_KEY=");
    line.push_str(key.expose());
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    zeroize::Zeroize::zeroize(&mut line);
    let mode = file
        .metadata()
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        eprintln!(
            "keyhold: warning: {} is readable by others (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    eprintln!("keyhold: wrote FERNET_KEY to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
