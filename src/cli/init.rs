//! `keyhold init [--data-dir DIR]`

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

use anyhow::Context;

use super::ConfigError;
use crate::config::DataDir;
use crate::keyring::Keyring;
use crate::vault::Location;

pub(super) fn run(args: DataDir) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    if let Some(opts) = args
        .database
        .options()
        .map_err(|e| ConfigError(e.to_string()))?
    {
        // Creates (or brings up to date) keyhold's tables, in one
        // transaction; refuses a database newer than this binary.
        let url = opts.url.to_string();
        let done = crate::vault::init_store(&Location::Database(Box::new(opts)), keyring)?;
        let rate = done.reveal_rate.unwrap_or_default();
        let (token, public) = (done.admin_token, done.public_key);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", token.expose()).context("cannot write to stdout")?;
        out.flush().ok();
        eprintln!(
            "keyhold: initialised the database {url}. Every node uses its reveal rate, {rate} \
             (change it with `keyhold reveal-rate RATE --database-url URL`). The line above is the admin token `admin`: it \
             is shown only once, so store it in your secret manager now. Start each node with \
             `keyhold serve --database-url URL --node-name NAME`. The audit log is signed by \
             {public}: keep this public key where auditors can find it."
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dir = &args.data_dir;
    // Decide before opening sled: opening a store writes to it, and a
    // refused init must change nothing.
    super::owner::refuse_foreign_owner(dir)?;
    refuse_non_empty(dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let done = crate::vault::init_store(&Location::dir(dir), keyring)?;
    let (token, public) = (done.admin_token, done.public_key);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", token.expose()).context("cannot write to stdout")?;
    out.flush().ok();
    // Captured (`TOKEN=$(keyhold init)`), there is no "line above".
    let where_token = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        "The line above is the admin token `admin`"
    } else {
        "The admin token `admin` went to stdout"
    };
    eprintln!(
        "keyhold: initialised {}. {where_token}: it is shown only once, so store it in your \
         secret manager now. Start the server with `keyhold serve --data-dir {}`. The audit log \
         is signed by {public}: keep this public key where auditors can find it (`keyhold audit \
         public-key` prints it again).",
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
    if crate::vault::holds_store(dir) {
        return Err(ConfigError(format!(
            "the data directory {} is already initialised; nothing was changed",
            dir.display()
        ))
        .into());
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
