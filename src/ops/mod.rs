//! Maintenance operations shared by the offline CLI and the admin HTTP
//! routes: key rotation, the health check, import from the Python
//! reference, backup and restore.
//!
//! Not for: HTTP or argument parsing; these take a store and a keyring and
//! return reports.

pub mod backup;
pub mod check;
pub mod copy_store;
pub mod import;
pub mod reload;
pub mod rewrap;
pub mod settings;
