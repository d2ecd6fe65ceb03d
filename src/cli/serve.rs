//! `keyhold serve [--dev] [--listen ADDR]`: checks the configuration,
//! opens (or, with `--dev`, makes) the store, and hands over to the
//! running server (`http::app`).

use std::process::ExitCode;

use anyhow::Context;

use super::serve_checks::SettingsError;
use super::{init_logging, ConfigError};
use crate::config::{LogFormat, ServeArgs};
use crate::keyring::Keyring;
use crate::limiter::RevealRate;
use crate::vault::Offline;

pub(super) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging_as(&args.log, args.log_format);
    // Everything that can be wrong with the configuration is found here,
    // before the runtime starts and before binding.
    let settings = super::serve_checks::check(&args)?;
    let (opened, dev_token) = if settings.dev {
        let rate = settings.reveal_rate.unwrap_or_default();
        let (opened, token) = crate::vault::Opened::development("root", rate)?;
        (opened, Some(token))
    } else {
        let keyring = Keyring::from_env()?;
        let at = super::location_with_cache(&args.data, settings.cache_bytes)?;
        let offline = Offline::open(&at, keyring)?;
        let reveal_rate = reveal_rate(settings.reveal_rate, &offline)?;
        (offline.into_opened(reveal_rate)?, None)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = crate::http::app::Started { opened, dev_token };
    match runtime.block_on(crate::http::app::serve(settings, started)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ crate::http::app::AppError::Listen { .. }) => {
            Err(ConfigError(e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn init_logging_as(filter: &str, format: LogFormat) {
    match format {
        LogFormat::Text => init_logging(filter),
        LogFormat::Json => {
            let filter = tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // Event fields at the top level of each line (`{"message":
            // ..., "addr": ...}`), not nested under `fields`.
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_current_span(false)
                .try_init();
        }
    }
}

/// The reveal rate this server applies: its `--reveal-rate` (or the
/// default) where it holds the store alone; on a shared database the one
/// the database stores (written from this node's if none is yet), and a
/// node given another one refuses to start, saying both.
fn reveal_rate(given: Option<RevealRate>, offline: &Offline) -> anyhow::Result<RevealRate> {
    if !offline.is_shared() {
        return Ok(given.unwrap_or_default());
    }
    match offline.stored_reveal_rate()? {
        Some(stored) => match given {
            Some(given) if given != stored => {
                Err(SettingsError::RevealRateDiffers { given, stored }.into())
            }
            _ => Ok(stored),
        },
        None => {
            let rate = given.unwrap_or_default();
            offline.set_reveal_rate(rate, "serve")?;
            Ok(rate)
        }
    }
}
