//! `keyhold token create|list|revoke` (offline).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::{open_checked, open_initialised, open_log};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::config::TokenCommand;
use crate::keyring::Keyring;
use crate::time::to_rfc3339;
use crate::tokens;

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(a) => {
            let keyring = Keyring::from_env()?;
            let store = open_checked(&a.data.data_dir, &keyring)?;
            let log = open_log(store.clone(), &keyring)?;
            let prepared = tokens::prepare(&store, &a.name, a.role.into(), a.providers)?;
            let ev = AuditEvent::cli(
                Action::TokenCreate,
                Outcome::Success,
                Some(format!(
                    "token {} `{}` role {}",
                    prepared.record.id, prepared.record.name, prepared.record.role
                )),
            );
            log.append(&[(ev, vec![prepared.write()])])?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", prepared.token.secret.expose())
                .context("cannot write to stdout")?;
            eprintln!(
                "keyhold: created token `{}` ({}), role {}. It is shown only once.",
                prepared.record.name, prepared.record.id, prepared.record.role
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List(a) => {
            let store = open_initialised(&a.data.data_dir)?;
            let all = store.list_tokens()?;
            let mut out = std::io::stdout().lock();
            if a.json {
                let list: Vec<_> = all
                    .iter()
                    .map(|(_, r)| crate::http::TokenInfo::of(r))
                    .collect();
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<36}  {:<20}  {:<8}  {:<20}  {:<27}  STATUS",
                    "ID", "NAME", "ROLE", "PROVIDERS", "CREATED"
                )?;
                for (_, r) in &all {
                    let providers = r
                        .providers
                        .as_ref()
                        .map_or("*".to_string(), |p| p.join(","));
                    let status = r
                        .revoked_at_us
                        .map_or("live".to_string(), |t| format!("revoked {}", to_rfc3339(t)));
                    writeln!(
                        out,
                        "{:<36}  {:<20}  {:<8}  {:<20}  {:<27}  {status}",
                        r.id,
                        r.name,
                        r.role,
                        providers,
                        to_rfc3339(r.created_at_us)
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke(a) => {
            let keyring = Keyring::from_env()?;
            let store = open_checked(&a.data.data_dir, &keyring)?;
            let log = open_log(store.clone(), &keyring)?;
            let (hash, rec) = tokens::find(&store, &a.token)?;
            let (rec, write) = tokens::revoke(hash, rec)?;
            let ev = AuditEvent::cli(
                Action::TokenRevoke,
                Outcome::Success,
                Some(format!("token {} `{}`", rec.id, rec.name)),
            );
            log.append(&[(ev, vec![write])])?;
            eprintln!("keyhold: revoked token `{}` ({})", rec.name, rec.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}
