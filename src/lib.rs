//! keyhold: a self-hosted, audit-first vault for API keys.
//!
//! The library holds everything the `keyhold` binary does; `main.rs` only
//! parses arguments and maps errors to exit codes. Layers point one way:
//! [`http`] and [`cli`] call the core, [`vault`] (a server's `Core`, an
//! offline command's `Offline`), which calls [`keyring`], [`store`],
//! [`audit`], [`ops`] and [`access`]; those never call back up. [`http`]
//! and [`client`] speak the API's JSON through the same types, in
//! [`wire`].
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

pub mod access;
pub mod audit;
pub mod blocking;
pub mod build_info;
pub mod cli;
pub mod client;
pub mod config;
pub mod duration;
pub mod http;
pub mod key_command;
pub mod key_file;
pub mod keyring;
pub mod limiter;
pub mod ops;
pub mod private_file;
pub(crate) mod secret;
pub mod store;
pub mod time;
// wired in by the next step of issue 27
#[allow(dead_code)]
pub(crate) mod tlog;
pub mod unlock;
pub mod vault;
pub mod wire;
