//! Flags of the client commands (`keyhold exec`, `keyhold keys ...`) and
//! of how any client command reaches a server.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::*;

/// How a client command reaches the server. The token is never a flag:
/// KEYHOLD_TOKEN, or a file.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server: http://HOST:PORT, https://HOST:PORT, HOST:PORT (http
    /// on loopback, https elsewhere; host names are fine) or unix:/PATH
    /// (a `serve --listen unix:PATH` socket).
    #[arg(long, env = "KEYHOLD_ADDR", default_value = crate::client::DEFAULT_ADDR)]
    pub addr: String,
    /// Read the access token from this file instead of KEYHOLD_TOKEN.
    #[arg(long, env = "KEYHOLD_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust this PEM CA certificate (a private CA) for https://.
    #[arg(long, env = "KEYHOLD_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A provider whose newest live key to fetch, or PROVIDER/NAME for
    /// the newest live key of that name (repeatable; pairs with --env in
    /// order). Without a name, the key it got is named on stderr: adding
    /// a key to the provider changes which key that is.
    #[arg(
        long = "provider",
        value_name = "P[/NAME]",
        required_unless_present = "env_files"
    )]
    pub providers: Vec<String>,
    /// The name of the key to fetch for the --provider just before it:
    /// the newest live key of that provider with this name (as
    /// --provider P/NAME).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Where each --provider and --name stood on the command line (filled
    /// from clap's matches), to pair each --name with its --provider.
    #[arg(skip)]
    pub positions: ExecPositions,
    /// The variable that receives the key of the --provider at the same
    /// position (repeatable).
    #[arg(
        long = "env",
        value_name = "VAR",
        required_unless_present = "env_files"
    )]
    pub envs: Vec<String>,
    /// An env file (NAME=VALUE lines; repeatable): a value
    /// keyhold://PROVIDER is that provider's newest live key,
    /// keyhold://PROVIDER/KEY_NAME the newest live key of that name; a
    /// value starting keyhold: that is neither is refused; every other
    /// line is passed to CMD as it is. Nothing resolved is written
    /// anywhere.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// On 429, wait as the server's Retry-After says and try again, for at
    /// most this long in all (0: fail at once). E.g. 30s, 2m, 1m30s.
    #[arg(long, value_name = "DURATION", default_value = "0")]
    pub wait: crate::duration::Seconds,
    /// Start CMD with only PATH, HOME, LANG, TERM and the injected
    /// variables, so nothing else of this environment leaks into it.
    #[arg(long)]
    pub pristine: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Where `exec`'s repeatable --provider and --name stood (clap's
/// indices), so a --name belongs to the --provider before it.
#[derive(Debug, Clone, Default)]
pub struct ExecPositions {
    pub providers: Vec<usize>,
    pub names: Vec<usize>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Store a key read from stdin (not echoed on a terminal; never argv).
    Add(KeysAddArgs),
    /// List key metadata (a table, or --format json).
    List(KeysListArgs),
    /// Print one key alone on stdout: by id, or PROVIDER/NAME (the newest
    /// live key of that name).
    Reveal(KeysRevealArgs),
    /// Store a new version of a key read from stdin (same id, provider
    /// and name; the older versions stay revealable with --version).
    Put(KeysPutArgs),
    /// List the versions of a key (never their secrets).
    Versions(KeysVersionsArgs),
    /// Delete a key: not revealable, restorable within the server's
    /// recovery window (--purge: destroy it at once, admin only).
    Delete(KeysDeleteArgs),
    /// Bring back a deleted key within the recovery window.
    Restore(KeysIdArgs),
}

#[derive(Debug, Args)]
pub struct KeysAddArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key's provider (`[a-z0-9][a-z0-9_.-]{0,63}`, e.g. claude).
    #[arg(long)]
    pub provider: String,
    /// The key's name.
    #[arg(long)]
    pub name: String,
    /// How long until the key expires, from 1 s to 10 years: seconds, or
    /// with units (90s, 15m, 1h30m, 12h, 30d, 2w).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::ttl)]
    pub ttl: Option<crate::duration::Seconds>,
}

#[derive(Debug, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only the keys of this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Deleted keys (restorable until their recovery window ends)
    /// instead of live ones.
    #[arg(long)]
    pub deleted: bool,
    /// Only keys that lapse within this time (7d, 12h, 1d12h, 30d; not
    /// yet lapsed).
    #[arg(long, value_name = "DURATION")]
    pub expiring: Option<crate::duration::Seconds>,
    /// Only keys that have lapsed (with --expiring: either).
    #[arg(long)]
    pub expired: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct KeysIdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key's id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KeysRevealArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key's id, or PROVIDER/NAME for the newest live key of that
    /// name.
    #[arg(value_name = "ID|PROVIDER/NAME")]
    pub key: String,
    /// An older version (by id only; see `keyhold keys versions ID`).
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
}

#[derive(Debug, Args)]
pub struct KeysPutArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key's id.
    pub id: String,
    /// How long until the new version expires, from 1 s to 10 years:
    /// seconds, or with units (90s, 15m, 1h30m, 12h, 30d, 2w).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::ttl)]
    pub ttl: Option<crate::duration::Seconds>,
}

#[derive(Debug, Args)]
pub struct KeysVersionsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key's id.
    pub id: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct KeysDeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key's id.
    pub id: String,
    /// Destroy the key and every version at once, skipping the recovery
    /// window (needs an admin token).
    #[arg(long)]
    pub purge: bool,
}
