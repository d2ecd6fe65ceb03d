//! `keyhold keyring list|retire|unretire|reload`: the key file's sections,
//! and a running server's reload.
//!
//! A rotation ends with the old key retired, never deleted: it moves below
//! the key file's `[retired]` line, where serving never reads it and
//! `restore`, `backup --verify` and `check --backup` still find it. So a
//! backup made before the rotation stays restorable, and a key retired too
//! early (before the rotation finished) is put back with `unretire`: the
//! reload that would drop it is refused, naming that command, and so is a
//! start.

use std::process::ExitCode;

use crate::config::KeyringCommand;
use crate::key_file;

/// How long an admin call (a reload, an online rotation of a large store)
/// may take.
pub(crate) const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

pub(super) fn run(c: KeyringCommand) -> anyhow::Result<ExitCode> {
    let shown = |l: &key_file::Listed| {
        for fp in &l.active {
            println!("active   {fp}");
        }
        for fp in &l.retired {
            println!("retired  {fp}");
        }
    };
    match c {
        KeyringCommand::List(a) => {
            shown(&key_file::list(&a.key_file)?);
        }
        KeyringCommand::Retire(a) => {
            let before = key_file::list(&a.key_file)?;
            let after = key_file::retire(&a.key_file)?;
            shown(&after);
            let moved = after.retired.len().saturating_sub(before.retired.len());
            eprintln!(
                "keyhold: retired {moved} key(s) in {}; reload the server (`keyhold keyring \
                 reload`, or SIGHUP) so that it drops them: the reload is refused, and the \
                 server keeps its keyring, if the store still needs one",
                a.key_file.display()
            );
        }
        KeyringCommand::Unretire(a) => {
            let after = key_file::unretire(&a.file.key_file, &a.fingerprints)?;
            shown(&after);
            eprintln!(
                "keyhold: {} active, {} retired key(s) in {}; reload the server or start it \
                 again, and rotate before retiring them again",
                after.active.len(),
                after.retired.len(),
                a.file.key_file.display()
            );
        }
        KeyringCommand::Reload(a) => {
            let client = match super::remote_commands::connect(&a) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("keyhold: error: {e}");
                    return Ok(super::remote_commands::client_exit(&e));
                }
            };
            match client.admin_post::<crate::wire::ReloadReport>("/api/admin/reload", ADMIN_TIMEOUT)
            {
                Ok(report) => super::table::print_json(&mut std::io::stdout().lock(), &report)?,
                Err(e) => {
                    eprintln!("keyhold: error: {e}");
                    return Ok(super::remote_commands::client_exit(&e));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
