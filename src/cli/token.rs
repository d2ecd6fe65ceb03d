//! `keyhold token create|list|revoke` (offline).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::{open_checked, open_log};
use crate::config::TokenCommand;
use crate::keyring::Keyring;
use crate::time::to_rfc3339;
use crate::vault::Origin;

pub(super) fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(a) if a.remote.remote => remote(&a.remote, |c| {
            let role = crate::access::Role::from(a.role).as_str();
            let v = c.create_token(&a.name, role, a.providers.as_deref())?;
            let token = v
                .get("token")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            // The one handover of a new token: alone on stdout (for a
            // secret manager or a pipe), never on stderr or in a log.
            println!("{token}");
            eprintln!(
                "keyhold: created token `{}` ({}), role {role}. It is shown only once.",
                a.name,
                v.get("id")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
            );
            Ok(())
        }),
        TokenCommand::List(a) if a.remote.remote => remote(&a.remote, |c| {
            let list = c.tokens()?;
            let mut out = std::io::stdout().lock();
            if a.output.is_json() {
                let _ = serde_json::to_writer_pretty(&mut out, &list);
                let _ = writeln!(out);
            } else {
                let s = |v: &serde_json::Value, f: &str| {
                    v.get(f)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let _ = print_table_header(&mut out);
                for t in &list {
                    let providers = t
                        .get("providers")
                        .and_then(serde_json::Value::as_array)
                        .map_or("*".to_string(), |p| {
                            p.iter()
                                .filter_map(serde_json::Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        });
                    let status = t
                        .get("revoked_at")
                        .and_then(serde_json::Value::as_str)
                        .map_or("live".to_string(), |r| format!("revoked {r}"));
                    let _ = print_table_row(
                        &mut out,
                        &s(t, "id"),
                        &s(t, "name"),
                        &s(t, "role"),
                        &providers,
                        &s(t, "created_at"),
                        &status,
                    );
                }
            }
            Ok(())
        }),
        TokenCommand::Revoke(a) if a.remote.remote => remote(&a.remote, |c| {
            let v = c.revoke_token(&a.token)?;
            eprintln!(
                "keyhold: revoked token {}",
                v.get("id")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&a.token)
            );
            Ok(())
        }),
        TokenCommand::Create(a) => {
            let keyring = Keyring::from_env()?;
            let store = open_checked(&a.data, &keyring)?;
            let log = open_log(store.clone(), &keyring)?;
            let vault = super::offline_vault(&store, &keyring, &log);
            let request = crate::vault::TokenRequest {
                name: a.name.clone(),
                role: a.role.into(),
                providers: a.providers.clone(),
            };
            let minted = super::block_on(vault.create_token(&Origin::cli(), None, request))??;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", minted.secret.expose()).context("cannot write to stdout")?;
            eprintln!(
                "keyhold: created token `{}` ({}), role {}. It is shown only once.",
                minted.record.name, minted.record.id, minted.record.role
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List(a) => {
            // Token records are authenticated under keys of the keyring
            // (schema 3), so listing them needs the keyring too.
            let keyring = Keyring::from_env()?;
            let store = open_checked(&a.data, &keyring)?;
            let log = open_log(store.clone(), &keyring)?;
            let all = super::offline_vault(&store, &keyring, &log).list_tokens(None)?;
            let mut out = std::io::stdout().lock();
            if a.output.is_json() {
                let list: Vec<_> = all.iter().map(crate::http::TokenInfo::of).collect();
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                print_table_header(&mut out)?;
                for r in &all {
                    let providers = r
                        .providers
                        .as_ref()
                        .map_or("*".to_string(), |p| p.join(","));
                    let status = r
                        .revoked_at_us
                        .map_or("live".to_string(), |t| format!("revoked {}", to_rfc3339(t)));
                    print_table_row(
                        &mut out,
                        &r.id.to_string(),
                        &r.name,
                        &r.role,
                        &providers,
                        &to_rfc3339(r.created_at_us),
                        &status,
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke(a) => {
            let keyring = Keyring::from_env()?;
            let store = open_checked(&a.data, &keyring)?;
            let log = open_log(store.clone(), &keyring)?;
            let vault = super::offline_vault(&store, &keyring, &log);
            let rec = super::block_on(vault.revoke_token(&Origin::cli(), None, &a.token))??;
            eprintln!("keyhold: revoked token `{}` ({})", rec.name, rec.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a `--remote` token command; client errors exit 2 (setup) or 1.
fn remote(
    a: &crate::config::RemoteArgs,
    f: impl FnOnce(&crate::client::Client) -> Result<(), crate::client::ClientError>,
) -> anyhow::Result<ExitCode> {
    match super::remote::connect(&a.client).and_then(|c| f(&c)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("keyhold: error: {e}");
            Ok(super::remote::client_exit(&e))
        }
    }
}

fn print_table_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<20}  {:<8}  {:<20}  {:<27}  STATUS",
        "ID", "NAME", "ROLE", "PROVIDERS", "CREATED"
    )
}

fn print_table_row(
    out: &mut impl Write,
    id: &str,
    name: &str,
    role: &str,
    providers: &str,
    created: &str,
    status: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{id:<36}  {name:<20}  {role:<8}  {providers:<20}  {created:<27}  {status}"
    )
}
