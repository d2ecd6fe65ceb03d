//! The JSON of the HTTP API: the bodies clients send and the answers the
//! server gives, one type each, shared by the handlers (`http`), which
//! write answers and read bodies, and the client (`client`, the CLI's
//! `--remote` commands), which writes bodies and reads answers.
//!
//! Field names and order are the wire format: a type here changes only
//! with the API (docs/api.md, the OpenAPI document). A reader ignores
//! fields it does not know (a newer server may add some) and names a
//! field that is missing. A secret (a revealed key, a new token) is a
//! [`SecretText`]: borrowed when written, zeroized when read, never in
//! `Debug`.
//!
//! Not for: the route table or status codes (see `http`); how the core
//! keeps records (see `store`, `vault`).

mod admin_json;
mod error_json;
mod key_json;
mod token_json;

pub(crate) use crate::secret::SecretText;
pub(crate) use admin_json::{AuditKey, ReloadReport, RotateReport};
pub(crate) use error_json::{ErrorBody, FailedKey};
pub(crate) use key_json::{
    Done, KeyMeta, KeyRef, NewKey, NewVersion, RevealBatch, RevealedBatch, RevealedKey, VersionMeta,
};
pub(crate) use token_json::{MintedToken, NewToken, RotateToken, TokenInfo, WhoAmI};

#[cfg(test)]
pub(crate) mod tests;
