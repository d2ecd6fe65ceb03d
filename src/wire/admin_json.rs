//! The admin routes' answers (`/api/admin/reload`, `/api/admin/rotate`)
//! and the part of `GET /api/audit/verify` a client reads.

use serde::{Deserialize, Serialize};

pub(crate) use crate::ops::rewrap::RotateReport;

/// What a keyring reload did: the keyring now in use (fingerprints,
/// newest first; never a key) and the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReloadReport {
    pub source: String,
    pub fingerprints: Vec<String>,
    pub previous: Vec<String>,
    pub changed: bool,
}

/// `GET /api/audit/verify`, as far as `audit public-key --remote` reads
/// it: the public key the server says signs its log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct AuditKey {
    pub public_key: String,
}
