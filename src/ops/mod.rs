//! Maintenance operations shared by the offline CLI and the admin HTTP
//! routes: key rotation, the health check, import from the Python
//! reference, backup and restore.
//!
//! Not for: HTTP or argument parsing; these take a store and a keyring and
//! return reports.

pub(crate) mod backup;
pub(crate) mod check;
pub(crate) mod copy_store;
pub(crate) mod import;
pub(crate) mod reload;
pub(crate) mod rewrap;
pub(crate) mod settings;
