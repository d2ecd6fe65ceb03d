//! keyhold: a self-hosted, audit-first vault for API keys.
//!
//! The library holds everything the `keyhold` binary does; `main.rs` only
//! calls [`main`]. Layers point one way: `http` and `cli` call the core,
//! `vault` (a server's `Core`, an offline command's `Offline`), which
//! calls `keyring`, `store`, `audit`, `ops` and `access`; those never call
//! back up. `http` and `client` speak the API's JSON through the same
//! types, in `wire`.
//!
//! Every module is private. What is `pub` is reachable from here: the
//! binary's entry ([`main`]), the command line's definition ([`Cli`]), and
//! [`internals`], a curated list for the test suite, the fuzzers and the
//! benchmarks. With `unreachable_pub` denied, an item marked `pub` is one
//! of those; everything else is `pub(crate)` or narrower.
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod access;
mod audit;
mod blocking;
mod build_info;
mod cli;
mod client;
mod config;
mod duration;
mod http;
mod key_command;
mod key_file;
mod keyring;
mod limiter;
mod ops;
mod private_file;
mod secret;
mod store;
mod time;
// wired in by the next step of issue 27
#[allow(dead_code)]
mod tlog;
mod unlock;
mod vault;
mod wire;

/// The binary's one entry: parse the command line, run it, map errors to
/// exit codes.
pub use cli::main;
/// The command line's definition (the reference and the man pages are
/// generated from it; tests read it).
pub use config::Cli;

/// What the test suite, the fuzzers and the benchmarks reach below the
/// core: record formats to forge and decode as an attacker with the disk
/// would, parsers to fuzz, a store to fill, the route table to hold the
/// documents to. Not an API: the binary does not use it and nothing in it
/// is stable.
#[doc(hidden)]
pub mod internals {
    pub mod access {
        pub use crate::access::Role;
    }
    pub mod audit {
        pub use crate::audit::{
            hex, record_tag, Action, AuditEvent, AuditKeys, AuditLog, AuditRecord, ChainVerifier,
            ExportRecord, Head, MacKey, Outcome, VerifyKeys, VerifyReport, GENESIS,
            SIGNING_PURPOSE,
        };
    }
    pub mod http {
        pub use crate::http::{OPENAPI, ROUTES};
        pub mod query_guard {
            pub use crate::http::query_guard::known;
        }
        pub mod ui {
            pub use crate::http::ui::asset_names;
        }
    }
    pub mod keyring {
        pub use crate::keyring::{token_timestamp, KeySource, Keyring, KeyringError, SOURCE_VARS};
    }
    pub mod limiter {
        pub use crate::limiter::{canonical, RevealLimiter, RevealRate, TrustedProxies};
    }
    pub mod ops {
        pub mod backup {
            pub use crate::ops::backup::{read_backup, BackupError, BackupInfo, FORMAT_VERSION};
        }
        pub mod import {
            pub use crate::ops::import::{
                import_id, parse_reference_time, read_rows, ImportFormat,
            };
        }
        pub mod copy_store {
            pub use crate::ops::copy_store::copy_store;
        }
    }
    pub mod store {
        pub use crate::store::{
            holds_store, sled_dir, wait_until_released, DatabaseUrl, KeyRecord, PgOptions, Store,
            TokenRecord, Write, META_RECORD_SECRET, META_SIGNING_KEY, RECORD_SECRET_PURPOSE,
            SCHEMA_VERSION, TABLES,
        };
        pub mod audit_chunks {
            pub use crate::store::audit_chunks::{plan_append, Entries, IVec};
        }
    }
    pub mod time {
        pub use crate::time::now_us;
    }
    pub mod vault {
        pub use crate::vault::prepare_token;
    }
    pub mod unlock {
        pub use crate::unlock::{initialise, unlock};
    }
}
