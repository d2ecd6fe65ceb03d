//! The command line: one module per subcommand group. anyhow lives here
//! (the edge); the library below uses typed errors.
//!
//! Exit status (docs/reference.md says the same): 0 success; 1 a failure
//! while working, a server's refusal, or a verification that found
//! damage; 2 a usage error (a flag or value clap refuses, a value the
//! server refuses as invalid) or a setup problem found before any work,
//! with nothing changed (keyring, data directory, key file, token,
//! address).

mod audit;
mod backups;
mod completions;
mod exec_env;
mod init;
mod keygen;
mod keyring;
mod lifecycle;
mod migrate;
mod owner;
mod refusal;
mod remote;
mod serve;
mod serve_flags;
mod table;
mod token;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit::AuditLog;
use crate::config::{Cli, Command, DataDir, LogFormat};
use crate::keyring::{Keyring, KeyringError};
use crate::store::{Store, StoreError};

/// A configuration problem: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parses arguments, runs the command, maps errors to exit codes.
pub fn main() -> ExitCode {
    // Everything keyhold (and sled) creates holds store data or secrets:
    // data directory, backups, exports, env files. Owner only, whatever
    // the umask it was started with (a Unix socket is opened up to its
    // group explicitly).
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let json_logs = matches!(&cli.command, Command::Serve(a) if a.log_format == LogFormat::Json);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_code_for(&err);
            if json_logs {
                eprintln!("{}", json_error_line(&describe(&err), code));
            } else {
                eprintln!("keyhold: error: {}", describe(&err));
            }
            code
        }
    }
}

/// A fatal error as one line in the shape of `--log-format json`'s lines,
/// written directly so that no log filter can hide it.
fn json_error_line(message: &str, code: ExitCode) -> String {
    serde_json::json!({
        "timestamp": crate::time::to_rfc3339(crate::time::now_us()),
        "level": "ERROR",
        "message": format!("keyhold: error: {message}"),
        "target": "keyhold",
        "exit_status": if code == ExitCode::from(2) { 2 } else { 1 },
    })
    .to_string()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `serve` sets its own level; offline commands print warnings (such as
    // a chain head that does not match the log) on stderr.
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging("warn");
    }
    match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Init(a) => init::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Token(c) => token::run(c),
        Command::Audit(c) => audit::run(c),
        Command::Keyring(c) => keyring::run(c),
        Command::Rotate(a) => lifecycle::rotate(a),
        Command::Check(a) => lifecycle::check(a),
        Command::Import(a) => lifecycle::import(a),
        Command::Backup(a) => backups::backup(a),
        Command::Restore(a) => backups::restore(a),
        Command::Exec(a) => remote::exec(a),
        Command::Keys(c) => remote::keys(c),
        Command::Version(a) => completions::version(a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a),
        Command::Migrate(a) => migrate::run(a),
        Command::RevealRate(a) => reveal_rate(a),
    }
}

/// Parses the command line; for `exec`, notes where each --provider and
/// --name stood (the derive keeps values, not their places).
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut Cli::command()))?;
    if let (Command::Exec(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("exec")) {
        let at = |id: &str| m.indices_of(id).map(Iterator::collect).unwrap_or_default();
        a.positions = crate::config::ExecPositions {
            providers: at("providers"),
            names: at("names"),
        };
    }
    Ok(cli)
}

/// A command line clap refused (an unknown flag, a bad value, `--ttl 0`):
/// said as every other error is (`keyhold: error: ...`, then clap's usage
/// hint), exit status 2. `--help` and `--version` print as clap does.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    let text = text.trim_end();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    eprintln!("keyhold: error: {text}");
    ExitCode::from(2)
}

/// The error and its causes, each said once (a cause whose text is
/// already in the message is not repeated).
fn describe(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<KeyringError>()
            || cause.is::<ConfigError>()
            || cause.is::<serve_flags::SettingsError>()
        {
            return ExitCode::from(2);
        }
        // A value the vault refused as invalid (a name, a role, a ttl):
        // a usage error, as the server's 422 is for a client command.
        if cause
            .downcast_ref::<refusal::CliRefusal>()
            .is_some_and(refusal::CliRefusal::is_usage_error)
        {
            return ExitCode::from(2);
        }
        // A key file `rotate --new-key` could not write: nothing changed.
        if let Some(
            crate::key_file::KeyFileError::Dir { .. }
            | crate::key_file::KeyFileError::Read { .. }
            | crate::key_file::KeyFileError::Malformed { .. }
            | crate::key_file::KeyFileError::Write { .. },
        ) = cause.downcast_ref()
        {
            return ExitCode::from(2);
        }
        if let Some(crate::ops::migrate::MigrateError::TargetNotEmpty) = cause.downcast_ref() {
            return ExitCode::from(2);
        }
        if let Some(
            crate::ops::backup::BackupError::NotEmpty(_)
            | crate::ops::backup::BackupError::NotAuthentic
            | crate::ops::backup::BackupError::Unauthenticated
            | crate::ops::backup::BackupError::Rewrapped(_),
        ) = cause.downcast_ref()
        {
            return ExitCode::from(2);
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return match e {
                StoreError::NotInitialised(_)
                | StoreError::DatabaseNotInitialised(_)
                | StoreError::NewerDatabase { .. }
                | StoreError::AlreadyInitialised(_)
                | StoreError::Open { .. }
                | StoreError::BadCurrent { .. }
                | StoreError::CurrentMissing { .. }
                | StoreError::NewerSchema { .. } => ExitCode::from(2),
                _ => ExitCode::from(1),
            };
        }
        if let Some(e) = cause.downcast_ref::<crate::unlock::UnlockError>() {
            if matches!(
                e,
                crate::unlock::UnlockError::WrongKey { .. }
                    | crate::unlock::UnlockError::Missing(_)
                    | crate::unlock::UnlockError::StateDiffers(_)
                    | crate::unlock::UnlockError::HeadRolledBack { .. }
                    | crate::unlock::UnlockError::HeadWithoutState(_)
                    | crate::unlock::UnlockError::HeadMissing
                    | crate::unlock::UnlockError::LegacyRecordAltered(_)
                    | crate::unlock::UnlockError::Downgraded
            ) {
                return ExitCode::from(2);
            }
        }
        if let Some(e) = cause.downcast_ref::<crate::audit::AuditError>() {
            if matches!(
                e,
                crate::audit::AuditError::MacKeyLocked | crate::audit::AuditError::NoMacKey
            ) {
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::from(1)
}

/// Opens an initialised store (the data directory, or the database of
/// `--database-url`) and checks that the keyring opens its check value (a
/// wrong key fails here, not at the first reveal).
pub(crate) fn open_checked(data: &DataDir, keyring: &Keyring) -> anyhow::Result<Store> {
    open_checked_with_cache(data, keyring, Some(crate::store::DEFAULT_CACHE_BYTES))
}

/// Opens with a page cache of `cache_bytes`, or sized to the store if `None`
/// (sled; PostgreSQL keeps its own cache).
pub(crate) fn open_checked_with_cache(
    data: &DataDir,
    keyring: &Keyring,
    cache_bytes: Option<u64>,
) -> anyhow::Result<Store> {
    let store = open_initialised_with_cache(data, cache_bytes)?;
    check_keyring(&store, keyring, &location(data))?;
    Ok(store)
}

/// Where the store is, as said in messages (a database URL without its
/// password).
pub(crate) fn location(data: &DataDir) -> String {
    match data.database.database_url.as_ref().map(|u| u.parse_url()) {
        Some(Ok(url)) => url.to_string(),
        Some(Err(_)) => "the database".into(),
        None => data.data_dir.display().to_string(),
    }
}

/// Opens a store that `init` has run on.
pub(crate) fn open_initialised(data: &DataDir) -> anyhow::Result<Store> {
    open_initialised_with_cache(data, Some(crate::store::DEFAULT_CACHE_BYTES))
}

fn open_initialised_with_cache(data: &DataDir, cache_bytes: Option<u64>) -> anyhow::Result<Store> {
    if let Some(opts) = data
        .database
        .options()
        .map_err(|e| ConfigError(e.to_string()))?
    {
        let store = Store::connect(&opts, false)?;
        if !store.is_initialised()? {
            return Err(StoreError::DatabaseNotInitialised(opts.url.to_string()).into());
        }
        store.check_schema()?;
        return Ok(store);
    }
    open_dir_initialised(&data.data_dir, cache_bytes)
}

/// Opens the initialised store in `dir`.
pub(crate) fn open_dir_initialised(dir: &Path, cache_bytes: Option<u64>) -> anyhow::Result<Store> {
    owner::refuse_foreign_owner(dir)?;
    if let Some(e) = owner::unreadable(dir) {
        return Err(e.into());
    }
    // Never create a store here: only `init` does (sled writes files on open).
    if !crate::store::holds_store(dir) {
        return Err(StoreError::NotInitialised(dir.display().to_string()).into());
    }
    let store = match cache_bytes {
        Some(bytes) => Store::open_with_cache(dir, bytes)?,
        None => {
            let (store, bytes) = Store::open_auto_cache(dir)?;
            tracing::debug!(cache_mib = bytes >> 20, "page cache sized to the store");
            store
        }
    };
    if !store.is_initialised()? {
        return Err(StoreError::NotInitialised(dir.display().to_string()).into());
    }
    store.check_schema()?;
    Ok(store)
}

/// Refuses a keyring none of whose keys opens the check value; applies
/// the record keys (and upgrades a store from an older keyhold, audited).
pub(crate) fn check_keyring(store: &Store, keyring: &Keyring, at: &str) -> anyhow::Result<()> {
    match crate::unlock::unlock(store, keyring) {
        Ok(_) => Ok(()),
        Err(e @ crate::unlock::UnlockError::WrongKey { .. }) => {
            let e = anyhow::Error::new(e).context(format!("cannot open the store in {at}"));
            Err(match keyring::retired_hint(store) {
                Some(hint) => e.context(hint),
                None => e,
            })
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open the store in {at}"))),
    }
}

/// Opens the audit log for an offline command.
pub(crate) fn open_log(store: Store, keyring: &Keyring) -> anyhow::Result<AuditLog> {
    Ok(AuditLog::open(store, keyring)?)
}

/// Runs one of the vault core's async calls from an offline command (the
/// offline sink appends synchronously; the runtime only drives the call).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// The vault core as an offline command sees it: the store, the keyring,
/// the audit log; no flood counter (each record is written).
pub(crate) fn offline_vault<'a>(
    store: &'a Store,
    keyring: &'a Keyring,
    log: &'a AuditLog,
) -> crate::vault::Vault<'a> {
    crate::vault::Vault {
        store,
        keyring: keyring.into(),
        audit: crate::vault::Sink::Log(log),
        coalescer: None,
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub(crate) fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} ({{eta}} left)"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Starts logging to stderr (never a secret: nothing secret is logged).
pub(crate) fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// `keyhold reveal-rate [RATE]` (a PostgreSQL store's; see
/// `ops::settings`).
fn reveal_rate(a: crate::config::RevealRateArgs) -> anyhow::Result<ExitCode> {
    if a.data.database.database_url.is_none() {
        return Err(ConfigError(
            "the reveal rate is stored only for a PostgreSQL store (--database-url), where nodes \
             share one limit; a sled store's server uses its own --reveal-rate"
                .into(),
        )
        .into());
    }
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    match a.rate {
        None => {
            match crate::ops::settings::stored_reveal_rate(&store)? {
                Some(r) => println!("{r}"),
                None => println!(
                    "{} (not stored yet: the default, until a node starts or this command sets one)",
                    crate::limiter::RevealRate::default()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(rate) => {
            let log = crate::audit::AuditLog::open(store.clone(), &keyring)?;
            let was = crate::ops::settings::set_reveal_rate(&log, rate, "cli")?;
            eprintln!(
                "keyhold: the reveal rate is now {rate}{}; running nodes use it within 10 s",
                was.map(|w| format!(" (was {w})")).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
