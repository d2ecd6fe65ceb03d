//! `keyhold token create|list|revoke|rotate` (offline, or `--remote`
//! through a server's admin routes).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::table::{shrinks, when, whole, Table};
use super::{open_checked, ConfigError};
use crate::config::TokenCommand;
use crate::duration::MAX_TTL_SECONDS;
use crate::keyring::Keyring;
use crate::time::to_rfc3339;
use crate::vault::Origin;

/// `--ttl` as seconds (clap's parser already held it to 1 s to 10 years;
/// checked again here so no other caller can pass more).
fn ttl_of(ttl: Option<crate::duration::Seconds>) -> anyhow::Result<Option<i64>> {
    match ttl {
        None => Ok(None),
        Some(t) => match i64::try_from(t.0) {
            Ok(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Ok(Some(s)),
            _ => Err(ConfigError(format!(
                "--ttl must be from 1 s to 10 years ({MAX_TTL_SECONDS} s), e.g. 90d; without \
                 --ttl the token never expires"
            ))
            .into()),
        },
    }
}

/// `--overlap` as seconds (0 to 10 years, as clap's parser held it).
fn overlap_of(overlap: crate::duration::Seconds) -> anyhow::Result<i64> {
    match i64::try_from(overlap.0) {
        Ok(s) if (0..=MAX_TTL_SECONDS).contains(&s) => Ok(s),
        _ => Err(ConfigError(format!(
            "--overlap must be from 0 (the old token stops now) to 10 years ({MAX_TTL_SECONDS} s)"
        ))
        .into()),
    }
}

pub(super) fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(a) if a.remote.remote => {
            let ttl = ttl_of(a.ttl)?;
            remote(&a.remote, |c| {
                let role = crate::access::Role::from(a.role).as_str();
                let v = c.create_token_expiring(
                    &a.name,
                    role,
                    a.providers.as_deref(),
                    ttl.map(|t| t as u64),
                )?;
                // The one handover of a new token: alone on stdout (for a
                // secret manager or a pipe), never on stderr or in a log.
                println!("{}", v.token.expose());
                eprintln!(
                    "keyhold: created token `{}` ({}), role {role}{}. It is shown only once.",
                    a.name,
                    v.info.id,
                    expiry_of_answer(&v.info)
                );
                Ok(())
            })
        }
        TokenCommand::Rotate(a) if a.remote.remote => {
            let overlap = overlap_of(a.overlap)?;
            remote(&a.remote, |c| {
                let v = c.rotate_token(&a.token, Some(overlap as u64))?;
                // The one handover of the new token: alone on stdout.
                println!("{}", v.token.expose());
                let old = v.replaced.as_ref();
                eprintln!(
                    "keyhold: rotated token `{}`: the new one is {}{}; the old one ({}) works until \
                     {}. It is shown only once.",
                    v.info.name,
                    v.info.id,
                    expiry_of_answer(&v.info),
                    old.map_or("", |o| o.id.as_str()),
                    old.and_then(|o| o.expires_at.as_deref()).unwrap_or(""),
                );
                Ok(())
            })
        }
        TokenCommand::List(a) if a.remote.remote => remote(&a.remote, |c| {
            let list = c.tokens()?;
            let mut out = std::io::stdout().lock();
            if a.output.is_json() {
                let _ = super::table::print_json(&mut out, &list);
            } else {
                let mut table = token_table(a.table.wide);
                for t in &list {
                    let providers = t
                        .providers
                        .as_ref()
                        .map_or("*".to_string(), |p| p.join(","));
                    let status = status_of(
                        t.revoked_at.as_deref(),
                        t.expired,
                        t.rotated_to.as_deref(),
                        a.table.wide,
                    );
                    token_row(
                        &mut table,
                        &Row {
                            id: &t.id,
                            name: &t.name,
                            role: &t.role,
                            providers: &providers,
                            created: &t.created_at,
                            expires: t.expires_at.as_deref().unwrap_or("-"),
                            last_used: t.last_used.as_deref().unwrap_or("-"),
                            status: &status,
                        },
                    );
                }
                let _ = table.print(&mut out);
            }
            Ok(())
        }),
        TokenCommand::Revoke(a) if a.remote.remote => remote(&a.remote, |c| {
            let done = c.revoke_token(&a.token)?;
            eprintln!("keyhold: revoked token {}", done.id);
            Ok(())
        }),
        TokenCommand::Create(a) => {
            let offline = open_checked(&a.data, Keyring::from_env()?)?;
            let vault = offline.vault()?;
            let request = crate::vault::TokenRequest {
                name: a.name.clone(),
                role: a.role.into(),
                providers: a.providers.clone(),
                ttl_seconds: ttl_of(a.ttl)?,
            };
            let minted = super::block_on(vault.create_token(&Origin::cli(), None, request))??;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", minted.secret.expose()).context("cannot write to stdout")?;
            eprintln!(
                "keyhold: created token `{}` ({}), role {}{}. It is shown only once.",
                minted.record.name,
                minted.record.id,
                minted.record.role,
                expiry_of(minted.record.expires_at_us)
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Rotate(a) => {
            let overlap = overlap_of(a.overlap)?;
            let offline = open_checked(&a.data, Keyring::from_env()?)?;
            let vault = offline.vault()?;
            let rotated = super::block_on(vault.rotate_token(
                &Origin::cli(),
                None,
                &a.token,
                Some(overlap),
            ))??;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", rotated.new.secret.expose()).context("cannot write to stdout")?;
            eprintln!(
                "keyhold: rotated token `{}`: the new one is {}{}; the old one ({}) works until {}. \
                 It is shown only once.",
                rotated.new.record.name,
                rotated.new.record.id,
                expiry_of(rotated.new.record.expires_at_us),
                rotated.old.id,
                rotated.old.expires_at_us.map(to_rfc3339).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List(a) => {
            // Token records are authenticated under keys of the keyring
            // (schema 3), so listing them needs the keyring too.
            let offline = open_checked(&a.data, Keyring::from_env()?)?;
            let all = super::block_on(offline.vault()?.list_tokens(&Origin::cli(), None))??;
            let mut out = std::io::stdout().lock();
            if a.output.is_json() {
                let list: Vec<_> = all.iter().map(crate::wire::TokenInfo::listed).collect();
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                let mut table = token_table(a.table.wide);
                for t in &all {
                    let r = &t.record;
                    let providers = r
                        .providers
                        .as_ref()
                        .map_or("*".to_string(), |p| p.join(","));
                    let revoked = r.revoked_at_us.map(to_rfc3339);
                    let rotated = r.rotated_to.map(|id| id.to_string());
                    let status = status_of(
                        revoked.as_deref(),
                        t.expired,
                        rotated.as_deref(),
                        a.table.wide,
                    );
                    let or_dash = |v: Option<i64>| v.map_or("-".to_string(), to_rfc3339);
                    token_row(
                        &mut table,
                        &Row {
                            id: &r.id.to_string(),
                            name: &r.name,
                            role: &r.role,
                            providers: &providers,
                            created: &to_rfc3339(r.created_at_us),
                            expires: &or_dash(r.expires_at_us),
                            last_used: &or_dash(t.last_used_us),
                            status: &status,
                        },
                    );
                }
                table.print(&mut out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke(a) => {
            let offline = open_checked(&a.data, Keyring::from_env()?)?;
            let vault = offline.vault()?;
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
    match super::remote_commands::connect(&a.client).and_then(|c| f(&c)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("keyhold: error: {e}");
            Ok(super::remote_commands::client_exit(&e))
        }
    }
}

/// `, expires at …` for a message, or nothing.
fn expiry_of(at_us: Option<i64>) -> String {
    at_us
        .map(|e| format!(", expires at {}", to_rfc3339(e)))
        .unwrap_or_default()
}

/// The same from an API answer's `expires_at`.
fn expiry_of_answer(t: &crate::wire::TokenInfo) -> String {
    t.expires_at
        .as_deref()
        .map(|e| format!(", expires at {e}"))
        .unwrap_or_default()
}

/// A token's state in the table: revoked, expired, rotated or live (when
/// and to which token only when `wide`).
fn status_of(revoked: Option<&str>, expired: bool, rotated_to: Option<&str>, wide: bool) -> String {
    let rotated = |to: &str| {
        if wide {
            format!("rotated to {to}")
        } else {
            "rotated".to_string()
        }
    };
    match (revoked, expired, rotated_to) {
        (Some(r), _, _) if wide => format!("revoked {r}"),
        (Some(_), _, _) => "revoked".to_string(),
        (None, true, Some(to)) => format!("{}, expired", rotated(to)),
        (None, true, None) => "expired".to_string(),
        (None, false, Some(to)) => format!("{}, in overlap", rotated(to)),
        (None, false, None) => "live".to_string(),
    }
}

/// One row of the token table.
struct Row<'a> {
    id: &'a str,
    name: &'a str,
    role: &'a str,
    providers: &'a str,
    created: &'a str,
    expires: &'a str,
    last_used: &'a str,
    status: &'a str,
}

/// The token table: by default name, role, providers, last use, expiry
/// and state (a name is enough for `token revoke` and `token rotate`);
/// `wide` adds the id and the creation time.
fn token_table(wide: bool) -> Table {
    let mut cols = Vec::new();
    if wide {
        cols.push(whole("ID"));
    }
    cols.extend([shrinks("NAME"), whole("ROLE"), shrinks("PROVIDERS")]);
    if wide {
        cols.push(whole("CREATED"));
    }
    cols.extend([whole("LAST USED"), whole("EXPIRES"), whole("STATUS")]);
    Table::new(cols, wide)
}

fn token_row(table: &mut Table, r: &Row<'_>) {
    let wide = table.wide();
    let mut cells = Vec::new();
    if wide {
        cells.push(r.id.to_string());
    }
    cells.extend([
        r.name.to_string(),
        r.role.to_string(),
        r.providers.to_string(),
    ]);
    if wide {
        cells.push(when(r.created, wide));
    }
    cells.extend([
        when(r.last_used, wide),
        when(r.expires, wide),
        r.status.to_string(),
    ]);
    table.row(cells);
}
