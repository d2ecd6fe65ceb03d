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
mod keyring_commands;
mod lifecycle;
mod migrate;
mod owner;
mod refusal;
mod remote_commands;
mod serve;
mod serve_checks;
mod table;
mod token;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{Cli, Command, DataDir, LogFormat};
use crate::keyring::{Keyring, KeyringError};
use crate::vault::{Location, Offline, OfflineError, Refusal};

/// A configuration problem: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub String);

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
        Command::Keyring(c) => keyring_commands::run(c),
        Command::Rotate(a) => lifecycle::rotate(a),
        Command::Check(a) => lifecycle::check(a),
        Command::Import(a) => lifecycle::import(a),
        Command::Backup(a) => backups::backup(a),
        Command::Restore(a) => backups::restore(a),
        Command::Exec(a) => remote_commands::exec(a),
        Command::Keys(c) => remote_commands::keys(c),
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
        let (text, whole) = said(cause);
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        if whole {
            break;
        }
    }
    msg
}

fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<KeyringError>()
            || cause.is::<ConfigError>()
            || cause.is::<serve_checks::SettingsError>()
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
        // The vault says which of its failures are setup problems.
        if let Some(e) = cause.downcast_ref::<OfflineError>() {
            return ExitCode::from(if e.is_setup() { 2 } else { 1 });
        }
    }
    ExitCode::from(1)
}

/// One cause of an error as the command line says it: the vault's
/// failures that a command fixes are said naming that command. `true`
/// when the text says its causes too (they are not said again).
fn said(cause: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let Some(e) = cause.downcast_ref::<OfflineError>() else {
        return (cause.to_string(), false);
    };
    let text = match e {
        OfflineError::Locked { at, retired, .. } => {
            let mut parts: Vec<String> = retired.iter().map(|k| retired_hint(k)).collect();
            parts.extend(at.iter().map(|at| format!("cannot open the store in {at}")));
            let Some(origin) = e.wrong_keyring() else {
                return (parts.join(": "), false);
            };
            parts.push(format!(
                "the keyring does not open this store (wrong key): no key from {origin} opens \
                 it (it was initialised with another Fernet key). Set the key it was \
                 initialised with (FERNET_KEYS=new,old during a rotation; a retired key is in \
                 the key file's retired section, see `keyhold keyring`)"
            ));
            return (parts.join(": "), true);
        }
        OfflineError::RekeyStopped {
            into,
            refused:
                Some(r @ (Refusal::AuditUnavailable | Refusal::Storage | Refusal::Unavailable(_))),
            ..
        } => format!(
            "the backup was restored into {into}, but re-keying it under the newest active key \
             stopped ({}): it may be partly done. Fix that, then run `keyhold rotate` on the \
             restored store (it finishes what is left), then `keyhold check`",
            refusal::CliRefusal::of(r.clone()).cause()
        ),
        OfflineError::RekeyStopped {
            into,
            failed,
            refused,
        } => format!(
            "the backup was restored into {into}, but re-keying it under the newest active key \
             stopped: some of it still needs a retired key. Put the retired keys back (`keyhold \
             keyring unretire`), run `keyhold rotate` on the restored store, then `keyhold \
             check`{}{}",
            failed
                .map(|n| format!(" ({n} key(s) could not be re-encrypted)"))
                .unwrap_or_default(),
            refused
                .as_ref()
                .map(|r| format!(": {}", refusal::CliRefusal::of(r.clone()).cause()))
                .unwrap_or_default()
        ),
        OfflineError::NotInitialised { dir } => format!(
            "the data directory {dir} is not initialised: run `keyhold init --data-dir {dir}` \
             first"
        ),
        OfflineError::DatabaseNotInitialised { url } => format!(
            "the database {url} holds no keyhold store: run `keyhold init --database-url URL` \
             first"
        ),
        OfflineError::StoreHeld { path } => format!(
            "cannot open the store in {path}: another process holds its lock (a running `keyhold \
             serve`, or another keyhold command): stop it, or go through the running server with \
             the same command's --remote form (`keyhold audit export|verify|public-key --remote`, \
             `keyhold token ... --remote`, `keyhold rotate --remote`) or `keyhold keys ...`"
        ),
        OfflineError::TargetNotEmpty => "the target is not empty: it already holds a \
             keyhold store (or audit records). Use a new or empty data directory, or a database \
             without keyhold's records; nothing was changed"
            .to_string(),
        OfflineError::Refused(r) => refusal::CliRefusal::of(r.clone()).to_string(),
        OfflineError::CsvExport { name } => format!(
            "{name} is a CSV export: verification reads JSON Lines; export again with `keyhold \
             audit export --format jsonl`"
        ),
        _ => cause.to_string(),
    };
    (text, false)
}

/// What to run to put back the retired key a store needs.
fn retired_hint(key: &crate::vault::RetiredKey) -> String {
    let fp = &key.fingerprint;
    match &key.file {
        Some(path) => format!(
            "the key this store needs ({fp}) is retired in {}: put it back with `keyhold keyring \
             unretire --key-file {} {fp}`, run this again, and rotate before retiring it",
            path.display(),
            path.display()
        ),
        None => format!(
            "the key this store needs ({fp}) is in the retired section of the key command's \
             output: move it above the `[retired]` line, run this again, and rotate before \
             retiring it"
        ),
    }
}

/// Where `data` says the store is (a data directory is checked first: its
/// owner, and that it can be read).
pub(crate) fn location(data: &DataDir) -> anyhow::Result<Location> {
    location_with_cache(data, Some(crate::vault::DEFAULT_CACHE_BYTES))
}

/// As [`location`], with a page cache of `cache_bytes`, or sized to the
/// store if `None` (sled; PostgreSQL keeps its own cache).
pub(crate) fn location_with_cache(
    data: &DataDir,
    cache_bytes: Option<u64>,
) -> anyhow::Result<Location> {
    match data
        .database
        .options()
        .map_err(|e| ConfigError(e.to_string()))?
    {
        Some(opts) => Ok(Location::Database(Box::new(opts))),
        None => dir_location(&data.data_dir, cache_bytes),
    }
}

/// The data directory `dir`, checked: refused if another user owns it or
/// it cannot be read.
pub(crate) fn dir_location(dir: &Path, cache_bytes: Option<u64>) -> anyhow::Result<Location> {
    owner::refuse_foreign_owner(dir)?;
    if let Some(e) = owner::unreadable(dir) {
        return Err(e.into());
    }
    Ok(Location::Dir {
        path: dir.to_path_buf(),
        cache_bytes,
    })
}

/// Opens the initialised store `data` names, checking that the keyring
/// opens it (a wrong key fails here, not at the first reveal).
pub(crate) fn open_checked(data: &DataDir, keyring: Keyring) -> anyhow::Result<Offline> {
    Ok(Offline::open(&location(data)?, keyring)?)
}

/// Runs one of the vault core's async calls from an offline command (the
/// offline sink appends synchronously; the runtime only drives the call).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
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

/// `keyhold reveal-rate [RATE]` (a PostgreSQL store's, which its nodes
/// share).
fn reveal_rate(a: crate::config::RevealRateArgs) -> anyhow::Result<ExitCode> {
    if a.data.database.database_url.is_none() {
        return Err(ConfigError(
            "the reveal rate is stored only for a PostgreSQL store (--database-url), where nodes \
             share one limit; a sled store's server uses its own --reveal-rate"
                .into(),
        )
        .into());
    }
    let offline = open_checked(&a.data, Keyring::from_env()?)?;
    match a.rate {
        None => {
            match offline.stored_reveal_rate()? {
                Some(r) => println!("{r}"),
                None => println!(
                    "{} (not stored yet: the default, until a node starts or this command sets one)",
                    crate::limiter::RevealRate::default()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(rate) => {
            let was = offline.set_reveal_rate(rate, "cli")?;
            eprintln!(
                "keyhold: the reveal rate is now {rate}{}; running nodes use it within 10 s",
                was.map(|w| format!(" (was {w})")).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
