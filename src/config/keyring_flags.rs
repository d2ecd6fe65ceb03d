//! The flags of `keyhold keyring list|retire|unretire|reload` (what each
//! does: `cli::keyring`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ClientArgs;

#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// List the key file's keys by fingerprint (active newest first, then
    /// retired). Never prints a key.
    List(KeyFileArgs),
    /// Move every active key but the newest below the key file's
    /// `[retired]` line: a running server drops them at its next reload
    /// (refused if the store still needs one), while restore and
    /// `backup --verify` still use them for older backups. Nothing is
    /// deleted.
    Retire(KeyFileArgs),
    /// Put retired keys back among the active ones (all, or those named by
    /// fingerprint), when the store or a restore still needs them.
    Unretire(UnretireArgs),
    /// Ask a running server to read its keyring again (as SIGHUP does),
    /// through POST /api/admin/reload (an admin token).
    Reload(ClientArgs),
}

#[derive(Debug, Args)]
pub struct KeyFileArgs {
    /// The key file (FERNET_KEY_FILE's format).
    #[arg(long, env = "FERNET_KEY_FILE", value_name = "FILE")]
    pub key_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct UnretireArgs {
    #[command(flatten)]
    pub file: KeyFileArgs,
    /// Fingerprints of the retired keys to put back (`keyhold keyring
    /// list` shows them); none: all.
    pub fingerprints: Vec<String>,
}
