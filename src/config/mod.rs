//! Command-line flags and their environment variables, defined once (clap
//! derive with `env`); `--help` prints these doc comments.
//!
//! Secrets are never flags: Fernet keys come from FERNET_KEY, FERNET_KEYS,
//! FERNET_KEY_FILE or KEYHOLD_KEY_COMMAND (see `keyring`), API keys from
//! stdin, access tokens from KEYHOLD_TOKEN or a file.
//!
//! The client commands' flags are in `client`, the keyring commands' in
//! `keyring`, the server's in `serve`.
//!
//! Over 500 lines: every other command's flags are defined once here, with
//! the help text that `--help`, the man pages and docs/reference.md print.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod client_flags;
mod keyring_flags;
mod serve_flags;

pub(crate) use client_flags::*;
pub(crate) use keyring_flags::*;
pub(crate) use serve_flags::*;

use crate::access::Role;
use crate::limiter::{RevealRate, TrustedProxies};
use crate::store::{DatabaseUrlArg, DatabaseUrlError, PgOptions};

/// keyhold: a self-hosted, audit-first vault for API keys.
///
/// Fernet keys are read from the environment: exactly one of FERNET_KEY,
/// FERNET_KEYS (comma-separated, newest first), FERNET_KEY_FILE or
/// KEYHOLD_KEY_COMMAND.
#[derive(Debug, Parser)]
#[command(
    name = "keyhold",
    version,
    long_version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("KEYHOLD_BUILD_COMMIT"),
        ", target ",
        env!("KEYHOLD_BUILD_TARGET"),
        ")"
    ),
    about,
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where `init` and `serve` find the Fernet key (never a flag).
const KEY_VARIABLES: &str =
    "The Fernet key comes from the environment (never a flag), exactly one of:
  FERNET_KEY           one key (make one with `keyhold keygen`)
  FERNET_KEYS          several, comma-separated, newest first
  FERNET_KEY_FILE      a file of keys, one a line, newest first
  KEYHOLD_KEY_COMMAND  a shell command that prints such a file (a secret manager)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new Fernet key (or append FERNET_KEY=... to an env file).
    Keygen(KeygenArgs),
    /// Create the store, its keyring check value and the first admin token
    /// (printed alone on stdout).
    #[command(after_help = KEY_VARIABLES)]
    Init(DataDir),
    /// Serve the HTTP API.
    #[command(after_help = KEY_VARIABLES)]
    Serve(ServeArgs),
    /// Manage access tokens: offline on the store, or with --remote through
    /// a running server.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Export or verify the audit log, or print its public key: offline on
    /// the store, or with --remote through a running server.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The key file's active and retired keys, and a running server's
    /// reload: `list`, `retire` (after a rotation), `unretire`, `reload`.
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Re-encrypt every stored key under the newest key (FERNET_KEYS=new,old,
    /// or --new-key to add one to FERNET_KEY_FILE first), re-seal keyhold's
    /// own secrets and the check value under it, and start a new audit
    /// signing key. Offline.
    Rotate(RotateArgs),
    /// Report whether the keyring opens everything, what still needs an
    /// older key, and whether the audit chain verifies. Exit 0 when all is
    /// well, 1 otherwise.
    Check(CheckArgs),
    /// Import the Python reference's `api_keys` rows (sqlite3 -json, JSON
    /// Lines or sqlite3 -csv -header). Tokens are kept as they are. Offline.
    Import(ImportArgs),
    /// Write one consistent snapshot of the store, authenticated under the
    /// keyring, to FILE (`-` for stdout); or check one (--verify). Offline.
    Backup(BackupArgs),
    /// Restore a backup into a new or empty directory.
    Restore(RestoreArgs),
    /// Fetch the newest key of each provider (or each keyhold:// reference
    /// of --env-file) over HTTP and run CMD with it in CMD's environment
    /// only (the process replaces itself with CMD).
    Exec(ExecArgs),
    /// Store, list, reveal and delete keys over HTTP (a client of `serve`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print keyhold's version, git commit and target (what /healthz and
    /// the keyhold_build_info metric say of a running server).
    Version(VersionArgs),
    /// Print a completion script for a shell, e.g.
    /// `keyhold completions bash > /etc/bash_completion.d/keyhold`.
    Completions(CompletionsArgs),
    /// Write the man pages (keyhold.1, keyhold-SUBCOMMAND.1, ...) into DIR,
    /// generated from these definitions.
    #[command(hide = true)]
    Man(ManArgs),
    /// Move a whole store between backends (sled data directory and
    /// PostgreSQL, either way), its audit chain intact and verified.
    /// Offline: stop every server of the source first. The target must be
    /// new or empty.
    Migrate(MigrateArgs),
    /// Print the reveal rate every node of a PostgreSQL store uses, or set
    /// it (audited): nodes pick a new one up within 10 s.
    RevealRate(RevealRateArgs),
}

#[derive(Debug, Args)]
pub struct RevealRateArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// The new rate: N/s, N/min or N/h (burst N). Without it, the stored
    /// rate is printed.
    pub rate: Option<RevealRate>,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

/// Shells `keyhold completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The source: a data directory...
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "from_database_url"
    )]
    pub from_data_dir: Option<PathBuf>,
    /// ...or a PostgreSQL database.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "from_data_dir",
        hide_env_values = true
    )]
    pub from_database_url: Option<DatabaseUrlArg>,
    /// The target: a new or empty data directory...
    #[arg(long, value_name = "DIR", required_unless_present = "to_database_url")]
    pub to_data_dir: Option<PathBuf>,
    /// ...or a PostgreSQL database without keyhold's tables (they are
    /// created).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "to_data_dir",
        hide_env_values = true
    )]
    pub to_database_url: Option<DatabaseUrlArg>,
    /// PEM CA certificate(s) for the database(s).
    #[arg(long, env = "KEYHOLD_DATABASE_CA", value_name = "FILE")]
    pub database_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data: DataDir,
    // --remote: download it from a running server (GET /api/admin/backup,
    // an admin token) instead of reading the store.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Where to write the backup: FILE is made new beside its path, mode
    /// 0600, and renamed over it when complete (`-`: stdout; a shell
    /// redirect makes the file with the shell's umask, often 0644); with
    /// --verify, the backup to check.
    pub file: PathBuf,
    /// Check FILE (its MAC under the keyring, and every entry) without
    /// restoring it, and print what it holds.
    #[arg(long, conflicts_with = "remote")]
    pub verify: bool,
    /// With --verify: how to print what the backup holds.
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore.
    pub file: PathBuf,
    /// A new or empty directory to restore into.
    #[arg(
        long,
        env = "KEYHOLD_DATA_DIR",
        required_unless_present = "database_url"
    )]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Restore a backup made before backups were authenticated (format 1,
    /// a plain checksum that anyone can recompute). Only for a backup you
    /// know is intact; make a new backup right after.
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// The rows to import.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The rows' format: json (sqlite3 -json), jsonl or csv (sqlite3 -csv
    /// -header); guessed from the file's extension when not given.
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,
    /// Check every row and report, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// A key file (one Fernet key a line) with the Python reference's key,
    /// used beside keyhold's own keyring: rows that only it opens are
    /// re-encrypted under keyhold's newest key as they are imported, so
    /// the server never needs the reference's key.
    #[arg(long, env = "KEYHOLD_REFERENCE_KEY_FILE", value_name = "FILE")]
    pub reference_key_file: Option<PathBuf>,
    /// Store providers in lower case (`OpenAI` becomes `openai`): keyhold's
    /// providers are `[a-z0-9][a-z0-9_.-]{0,63}`, and older rows may not be.
    #[arg(long)]
    pub providers_lowercase: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Milliseconds to sleep between records, to spread the I/O of a large
    /// store.
    #[arg(long, default_value_t = 0)]
    pub pace_ms: u64,
    /// First write a new key at the top of the key file FERNET_KEY_FILE
    /// names (fsync'd and read back, as `keygen --key-file` does), then
    /// rotate everything under it. Refused, with nothing changed, when
    /// the keyring comes from another source or the file cannot be
    /// written.
    #[arg(long)]
    pub new_key: bool,
    /// Rotate a running server's store instead (POST /api/admin/rotate,
    /// an admin token; KEYHOLD_ADDR, KEYHOLD_TOKEN): after adding the new
    /// key to its key file and `keyhold keyring reload`.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Check these backups instead of the store: whether each is intact
    /// and which key (active or retired, by fingerprint) it needs.
    #[arg(long = "backup", value_name = "FILE", num_args = 1..)]
    pub backups: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DataDir {
    /// Directory of the store.
    #[arg(long, env = "KEYHOLD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// PostgreSQL instead of a data directory (several nodes on one database).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Use this PostgreSQL database instead of --data-dir:
    /// postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full (TLS
    /// with `require`, `verify-ca` or `verify-full`, always verified; the
    /// password is never shown).
    #[arg(
        long,
        env = "KEYHOLD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        conflicts_with = "data_dir"
    )]
    pub database_url: Option<DatabaseUrlArg>,
    /// PEM CA certificate(s) that sign the database server's certificate
    /// (default: the URL's sslrootcert, else the system's roots).
    #[arg(long, env = "KEYHOLD_DATABASE_CA", value_name = "FILE")]
    pub database_ca: Option<PathBuf>,
    /// This node's name, written into every audit record it appends on
    /// PostgreSQL [default: the host name].
    #[arg(long, env = "KEYHOLD_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Milliseconds one call to the database may take before it counts
    /// as failed.
    #[arg(long, env = "KEYHOLD_DATABASE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_timeout_ms: u64,
}

impl DatabaseArgs {
    /// How to reach the database, when one is set (a URL that does not
    /// parse is an error that never shows it).
    pub fn options(&self) -> Result<Option<PgOptions>, DatabaseUrlError> {
        let Some(arg) = &self.database_url else {
            return Ok(None);
        };
        let url = arg.parse_url()?;
        let node = self.node_name.clone().unwrap_or_else(host_name);
        let mut opts = PgOptions::new(url, self.database_ca.clone(), node);
        opts.timeout = std::time::Duration::from_millis(self.database_timeout_ms.max(100));
        Ok(Some(opts))
    }
}

/// The host name (the default node name).
pub(crate) fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "keyhold".into()
    } else {
        name
    }
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Append `FERNET_KEY=<key>` to this file (created with mode 0600,
    /// its directory 0700 when missing) instead of printing the key;
    /// refuses if it already sets FERNET_KEY.
    #[arg(long, value_name = "PATH", conflicts_with = "key_file")]
    pub env_file: Option<PathBuf>,
    /// Write the new key at the top of this key file (FERNET_KEY_FILE's
    /// format: newest first), keeping the keys already in it, its owner,
    /// group and mode (a new file: 0600, its directory 0700). The file is
    /// fsync'd and read back before this returns; the key is never
    /// printed.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// How a command that lists or reads prints what it found: the one
/// convention of every such command (`--format table|json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns or lines, for people.
    Table,
    /// JSON, for programs.
    Json,
}

/// `--format table|json` (and the older `--json`, kept hidden).
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print a table (for people) or JSON (for programs).
    #[arg(
        long = "format",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output_format: OutputFormat,
    /// The same as --format json.
    #[arg(long, hide = true)]
    pub json: bool,
}

impl OutputArgs {
    /// True when the output is JSON.
    pub fn is_json(&self) -> bool {
        self.json || self.output_format == OutputFormat::Json
    }
}

/// `--wide`: a table's every column in full.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Show every column in full (ids, whole timestamps); without it the
    /// table fits 100 columns.
    #[arg(long)]
    pub wide: bool,
}

/// The formats of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// JSON Lines: one record a line (what `audit verify --file` reads).
    Jsonl,
    /// CSV with a header line.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it alone on stdout (shown once).
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    List(TokenListArgs),
    /// Revoke a token by id or name.
    Revoke(TokenRevokeArgs),
    /// Replace a token by a new one with the same name, role, providers and
    /// ttl; print the new token alone on stdout (shown once). The old token
    /// keeps working for the overlap window, then is refused as expired.
    Rotate(TokenRotateArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Writer,
    Reader,
    Auditor,
    Metrics,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Writer => Role::Writer,
            RoleArg::Reader => Role::Reader,
            RoleArg::Auditor => Role::Auditor,
            RoleArg::Metrics => Role::Metrics,
        }
    }
}

/// `--remote`: manage tokens through a running server's admin routes.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Use the server's admin routes (KEYHOLD_ADDR, KEYHOLD_TOKEN) instead
    /// of the store.
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Name recorded in the audit log as the caller.
    #[arg(long)]
    pub name: String,
    /// admin (everything), writer (create/delete/list keys), reader
    /// (list/reveal keys), auditor (read the audit log), metrics (read
    /// /metrics).
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Limit the token to these providers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub providers: Option<Vec<String>>,
    /// How long until the token expires, from 1 s to 10 years: seconds,
    /// or with units (90s, 15m, 1h30m, 12h, 30d, 2w). Without it, never.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::ttl)]
    pub ttl: Option<crate::duration::Seconds>,
}

#[derive(Debug, Args)]
pub struct TokenRotateArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// How long the old token keeps working (0: it stops now; e.g. 10m,
    /// 1h30m; at most 10 years); never beyond its own expiry.
    #[arg(long, value_name = "DURATION", default_value = "1h",
          value_parser = crate::duration::up_to_ten_years)]
    pub overlap: crate::duration::Seconds,
    /// The token's id or name (a name means the newest live token of it).
    pub token: String,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The token's id or name.
    pub token: String,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stream the log (oldest first) as JSON Lines or CSV.
    Export(AuditExportArgs),
    /// Check the whole chain; exit 0 when intact, 1 when not.
    Verify(AuditVerifyArgs),
    /// Print the public key that signs the audit log (`ed25519:<hex>`), for
    /// auditors who verify exports without the keyring.
    PublicKey(AuditPublicKeyArgs),
}

#[derive(Debug, Args)]
pub struct AuditPublicKeyArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub remote: AuditRemoteArgs,
}

/// `--remote`: read the audit log through a running server (an auditor
/// token) instead of the store, which the server holds locked.
#[derive(Debug, Args)]
pub struct AuditRemoteArgs {
    /// Use the running server's audit routes (KEYHOLD_ADDR, and an
    /// auditor token in KEYHOLD_TOKEN or KEYHOLD_TOKEN_FILE) instead of the
    /// store.
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ExportFilterArgs {
    /// Records at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Records before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Records about this key id.
    #[arg(long)]
    pub key_id: Option<String>,
    /// Records of this caller (token name or id).
    #[arg(long)]
    pub caller: Option<String>,
    /// Records with this outcome (success, unauthenticated, forbidden,
    /// not_found, deleted, expired, decrypt_failed, rate_limited,
    /// tampered).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Records of this action (reveal, key_create, key_delete, ...).
    #[arg(long)]
    pub action: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// The export's format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormatArg,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: ExportFilterArgs,
    #[command(flatten)]
    pub remote: AuditRemoteArgs,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Verify this JSON Lines export instead of the store.
    #[arg(long, value_name = "EXPORT.jsonl")]
    pub file: Option<PathBuf>,
    /// With --file or --remote: verify with this audit public key alone
    /// (as printed by `keyhold audit public-key`), with no keyring and no
    /// store. Every record must be covered by a signature of this key (or
    /// of a key it handed over to).
    #[arg(long, value_name = "KEY")]
    pub public_key: Option<String>,
    /// With --file: the export was filtered, so gaps between its records
    /// are expected; each record's MAC is checked. Without it, the file
    /// must be a complete export (the whole chain from seq 1).
    #[arg(long, requires = "file")]
    pub filtered: bool,
    /// Check that the store (or, with --file, the file) holds exactly this
    /// record: SEQ:MAC, from the server's anchor log lines or an export's
    /// message. May be repeated.
    #[arg(long, value_name = "SEQ:MAC")]
    pub anchor: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Verify the running server's log: its whole export is streamed and
    /// verified here, with --public-key (pin it) or, without it, the key
    /// the server says signs its log; the server's head is checked too.
    #[command(flatten)]
    pub remote: AuditRemoteArgs,
}
