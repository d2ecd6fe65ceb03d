//! `keyhold init [--data-dir DIR]`

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

use anyhow::Context;

use super::ConfigError;
use crate::access::Role;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome, PublicKey};
use crate::config::DataDir;
use crate::keyring::Keyring;
use crate::store::{Store, StoreError};
use crate::tokens;

pub fn run(args: DataDir) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    if let Some(opts) = args
        .database
        .options()
        .map_err(|e| ConfigError(e.to_string()))?
    {
        // Creates (or brings up to date) keyhold's tables, in one
        // transaction; refuses a database newer than this binary.
        let store = Store::connect(&opts, true)?;
        if store.is_initialised()? {
            return Err(StoreError::AlreadyInitialised(opts.url.to_string()).into());
        }
        let (token, public) = initialise(&store, &keyring, "admin")?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", token.expose()).context("cannot write to stdout")?;
        out.flush().ok();
        eprintln!(
            "keyhold: initialised the database {}. The line above is the admin token `admin`: it \
             is shown only once, so store it in your secret manager now. Start each node with \
             `keyhold serve --database-url URL --node-name NAME`. The audit log is signed by \
             {public}: keep this public key where auditors can find it.",
            opts.url
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dir = &args.data_dir;
    // Decide before opening sled: opening a store writes to it, and a
    // refused init must change nothing.
    refuse_non_empty(dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let store = Store::open(dir)?;
    if store.is_initialised()? {
        return Err(StoreError::AlreadyInitialised(dir.display().to_string()).into());
    }
    let (token, public) = initialise(&store, &keyring, "admin")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", token.expose()).context("cannot write to stdout")?;
    out.flush().ok();
    eprintln!(
        "keyhold: initialised {}. The line above is the admin token `admin`: it is shown only \
         once, so store it in your secret manager now. Start the server with `keyhold serve \
         --data-dir {}`. The audit log is signed by {public}: keep this public key where \
         auditors can find it (`keyhold audit public-key` prints it again).",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn refuse_non_empty(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    if dir.join("db").exists() || dir.join("conf").exists() {
        return Err(StoreError::AlreadyInitialised(dir.display().to_string()).into());
    }
    if entries.next().is_some() {
        return Err(ConfigError(format!(
            "the data directory {} is not empty and holds no keyhold store: pick an empty or new \
             directory (nothing was changed)",
            dir.display()
        ))
        .into());
    }
    // An existing empty directory is tightened to the owner only.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    Ok(())
}

/// Writes the meta values and the first admin token (audited). Returns the
/// token (shown once) and the audit public key.
pub(crate) fn initialise(
    store: &Store,
    keyring: &Keyring,
    admin_name: &str,
) -> anyhow::Result<(crate::secret::SecretString, PublicKey)> {
    let public = crate::unlock::initialise(store, keyring)?;
    let log = AuditLog::open(store.clone(), keyring)?;
    let prepared = tokens::prepare(store, admin_name, Role::Admin, None)?;
    let mut token_ev = AuditEvent::cli(
        Action::TokenCreate,
        Outcome::Success,
        Some(format!(
            "token {} `{}` role admin",
            prepared.record.id, prepared.record.name
        )),
    );
    token_ev.caller = "init".into();
    let mut init_ev = AuditEvent::cli(
        Action::Init,
        Outcome::Success,
        Some(format!(
            "keyring key {}; audit signing key {public}",
            keyring.fingerprints()[0]
        )),
    );
    init_ev.caller = "init".into();
    log.append(&[(init_ev, vec![]), (token_ev, vec![prepared.write()])])?;
    Ok((prepared.token.secret, public))
}
