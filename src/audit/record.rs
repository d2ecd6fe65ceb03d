//! Audit records: what one entry says, its canonical bytes, its stored
//! form and its exported (JSON) form.
//!
//! Over 500 lines: the record's three forms (V1 HMAC, V2 signed, V3 with a
//! node) must stay byte-for-byte what was written, so they live together
//! with the enums (actions, outcomes) they encode.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::sign::Signature;
use crate::store::{corrupt, StoreError};
use crate::time;

/// What was attempted. Variants are only ever appended (postcard stores
/// the index). `as_str` is the one source of truth for the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Init,
    Reveal,
    KeyCreate,
    KeyDelete,
    TokenCreate,
    TokenRevoke,
    AuditExport,
    Rotate,
    Import,
    Backup,
    Restore,
    /// The upgrade of a store to schema 3 (signed chain from here on).
    Upgrade,
    /// A new audit signing key: the hand-over (signed by the old key) and
    /// the first record the new key signs.
    SigningKey,
    /// A request refused before its route's own action: the token's
    /// stored record failed its integrity check.
    Authenticate,
    /// A running server read its keyring again (SIGHUP or
    /// `POST /api/admin/reload`) and put it in use.
    Reload,
    /// A listing of keys (recorded only when refused for a tampered record).
    KeyList,
    /// A new version of a key (`PUT /api/keys/{id}`); its detail names
    /// the versions the cap destroyed.
    KeyPut,
    /// A soft-deleted key brought back within its recovery window.
    KeyRestore,
    /// A key destroyed for good: its recovery window ended, or an admin
    /// purged it.
    KeyPurge,
    /// An access token replaced by a new one with the same grants (the
    /// old one kept for an overlap window).
    TokenRotate,
    /// A setting every node of a shared store uses changed (the reveal
    /// rate).
    Settings,
    /// A listing of tokens (recorded only when refused).
    TokenList,
    /// A read of `/metrics` (recorded only when refused).
    MetricsRead,
}

impl Action {
    pub const ALL: [Action; 23] = [
        Action::Init,
        Action::Reveal,
        Action::KeyCreate,
        Action::KeyDelete,
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::AuditExport,
        Action::Rotate,
        Action::Import,
        Action::Backup,
        Action::Restore,
        Action::Upgrade,
        Action::SigningKey,
        Action::Authenticate,
        Action::Reload,
        Action::KeyList,
        Action::KeyPut,
        Action::KeyRestore,
        Action::KeyPurge,
        Action::TokenRotate,
        Action::Settings,
        Action::TokenList,
        Action::MetricsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Init => "init",
            Action::Reveal => "reveal",
            Action::KeyCreate => "key_create",
            Action::KeyDelete => "key_delete",
            Action::TokenCreate => "token_create",
            Action::TokenRevoke => "token_revoke",
            Action::AuditExport => "audit_export",
            Action::Rotate => "rotate",
            Action::Import => "import",
            Action::Backup => "backup",
            Action::Restore => "restore",
            Action::Upgrade => "upgrade",
            Action::SigningKey => "signing_key",
            Action::Authenticate => "authenticate",
            Action::Reload => "reload",
            Action::KeyList => "key_list",
            Action::KeyPut => "key_put",
            Action::KeyRestore => "key_restore",
            Action::KeyPurge => "key_purge",
            Action::TokenRotate => "token_rotate",
            Action::Settings => "settings",
            Action::TokenList => "token_list",
            Action::MetricsRead => "metrics_read",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How an attempt ended. Variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Success,
    Unauthenticated,
    Forbidden,
    NotFound,
    Expired,
    DecryptFailed,
    RateLimited,
    /// A stored record failed its integrity check and was refused.
    Tampered,
    /// The key is soft-deleted (answered like a missing one).
    Deleted,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Success,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::NotFound,
        Outcome::Expired,
        Outcome::DecryptFailed,
        Outcome::RateLimited,
        Outcome::Tampered,
        Outcome::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::NotFound => "not_found",
            Outcome::Expired => "expired",
            Outcome::DecryptFailed => "decrypt_failed",
            Outcome::RateLimited => "rate_limited",
            Outcome::Tampered => "tampered",
            Outcome::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// What a caller submits to the log; the writer adds seq, time and chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub request_id: String,
    pub action: Action,
    pub key_id: Option<Uuid>,
    pub provider: Option<String>,
    /// The token's name, or `anonymous`, or `cli` for offline commands.
    pub caller: String,
    pub caller_id: Option<Uuid>,
    /// The client address the request is attributed to.
    pub ip: String,
    /// The TCP peer, when it differs from `ip` (a trusted proxy).
    pub peer: Option<String>,
    pub outcome: Outcome,
    /// How many attempts a coalesced record stands for.
    pub count: Option<u64>,
    /// Free text: never a secret.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of an offline command run by the operator.
    pub fn cli(action: Action, outcome: Outcome, detail: Option<String>) -> AuditEvent {
        AuditEvent {
            request_id: Uuid::new_v4().to_string(),
            action,
            key_id: None,
            provider: None,
            caller: "cli".into(),
            caller_id: None,
            ip: "local".into(),
            peer: None,
            outcome,
            count: None,
            detail,
        }
    }
}

/// One chained record.
///
/// Two forms share the chain. Records written before schema 3 are V1:
/// `mac` is HMAC-SHA256 under the audit MAC key over `prev` and the
/// record, so only the keyring checks them. From schema 3 on, records are
/// V2: `mac` is the public hash SHA-256(tag, `prev`, record), `tag` is
/// HMAC under a key of the store's record secret over that hash (checked
/// with the keyring on filtered exports), and the newest record of each
/// commit carries `sig`, an Ed25519 signature of (seq, mac).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_us: i64,
    pub event: AuditEvent,
    pub prev: [u8; 32],
    pub mac: [u8; 32],
    /// V2 only (its presence is what makes a record V2).
    pub tag: Option<[u8; 32]>,
    /// V2 only, on the newest record of a commit.
    pub sig: Option<Signature>,
    /// The node that wrote the record, where several keyhold nodes share
    /// one database (PostgreSQL). Covered by the record's hash: a record
    /// that names a node is stored as V3, whose hash takes the name in.
    pub node: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    seq: u64,
    at_us: i64,
    event: AuditEvent,
    prev: [u8; 32],
    mac: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct RecordV2 {
    seq: u64,
    at_us: i64,
    event: AuditEvent,
    prev: [u8; 32],
    mac: [u8; 32],
    tag: [u8; 32],
    sig: Option<Signature>,
}

/// A V2 record that names the node that wrote it.
#[derive(Serialize, Deserialize)]
struct RecordV3 {
    seq: u64,
    at_us: i64,
    event: AuditEvent,
    node: String,
    prev: [u8; 32],
    mac: [u8; 32],
    tag: [u8; 32],
    sig: Option<Signature>,
}

#[derive(Serialize, Deserialize)]
enum StoredRecord {
    V1(RecordV1),
    V2(RecordV2),
    V3(RecordV3),
}

/// Domain separation for the V1 record MAC.
const RECORD_TAG: &[u8] = b"keyhold-audit-record-v1";
/// Domain separation for the V2 record hash.
const RECORD_HASH_TAG: &[u8] = b"keyhold-audit-record-v2";
/// Domain separation for the hash of a record that names its node.
const RECORD_NODE_HASH_TAG: &[u8] = b"keyhold-audit-record-v3";

impl AuditRecord {
    /// True for a V2 (hash-chained) record.
    pub fn is_v2(&self) -> bool {
        self.tag.is_some()
    }

    /// The V2 hash of a record: SHA-256 over a tag, `prev`, seq, time and
    /// the event (postcard, deterministic); for a record that names its
    /// node (V3), another tag and the node's name after the event.
    pub fn chain_hash(
        prev: &[u8; 32],
        seq: u64,
        at_us: i64,
        event: &AuditEvent,
        node: Option<&str>,
    ) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let body = match node {
            None => {
                h.update(RECORD_HASH_TAG);
                postcard::to_stdvec(&(seq, at_us, event))
            }
            Some(node) => {
                h.update(RECORD_NODE_HASH_TAG);
                postcard::to_stdvec(&(seq, at_us, event, node))
            }
        };
        h.update(prev);
        if let Ok(b) = body {
            h.update(&b);
        }
        h.finalize().into()
    }

    /// The bytes the MAC covers after `prev`: a tag, seq, time and the
    /// event, postcard-encoded (deterministic).
    pub fn canonical_bytes(seq: u64, at_us: i64, event: &AuditEvent) -> Vec<u8> {
        let mut out = RECORD_TAG.to_vec();
        // postcard to a Vec cannot fail for these types; fall back to an
        // empty body rather than panic (the MAC would then not verify).
        if let Ok(b) = postcard::to_stdvec(&(seq, at_us, event)) {
            out.extend_from_slice(&b);
        }
        out
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let stored = match (self.tag, &self.node) {
            (Some(tag), Some(node)) => StoredRecord::V3(RecordV3 {
                seq: self.seq,
                at_us: self.at_us,
                event: self.event.clone(),
                node: node.clone(),
                prev: self.prev,
                mac: self.mac,
                tag,
                sig: self.sig.clone(),
            }),
            (None, _) => StoredRecord::V1(RecordV1 {
                seq: self.seq,
                at_us: self.at_us,
                event: self.event.clone(),
                prev: self.prev,
                mac: self.mac,
            }),
            (Some(tag), None) => StoredRecord::V2(RecordV2 {
                seq: self.seq,
                at_us: self.at_us,
                event: self.event.clone(),
                prev: self.prev,
                mac: self.mac,
                tag,
                sig: self.sig.clone(),
            }),
        };
        postcard::to_stdvec(&stored).map_err(corrupt("audit"))
    }

    pub fn decode(bytes: &[u8]) -> Result<AuditRecord, StoreError> {
        Ok(
            match postcard::from_bytes(bytes).map_err(corrupt("audit"))? {
                StoredRecord::V1(r) => AuditRecord {
                    seq: r.seq,
                    at_us: r.at_us,
                    event: r.event,
                    prev: r.prev,
                    mac: r.mac,
                    tag: None,
                    sig: None,
                    node: None,
                },
                StoredRecord::V2(r) => AuditRecord {
                    seq: r.seq,
                    at_us: r.at_us,
                    event: r.event,
                    prev: r.prev,
                    mac: r.mac,
                    tag: Some(r.tag),
                    sig: r.sig,
                    node: None,
                },
                StoredRecord::V3(r) => AuditRecord {
                    seq: r.seq,
                    at_us: r.at_us,
                    event: r.event,
                    prev: r.prev,
                    mac: r.mac,
                    tag: Some(r.tag),
                    sig: r.sig,
                    node: Some(r.node),
                },
            },
        )
    }

    /// The exported form.
    pub fn to_export(&self) -> ExportRecord {
        let e = &self.event;
        ExportRecord {
            seq: self.seq,
            at: time::to_rfc3339(self.at_us),
            request_id: e.request_id.clone(),
            action: e.action.as_str().to_string(),
            key_id: e.key_id.map(|u| u.to_string()),
            provider: e.provider.clone(),
            caller: e.caller.clone(),
            caller_id: e.caller_id.map(|u| u.to_string()),
            ip: e.ip.clone(),
            peer: e.peer.clone(),
            outcome: e.outcome.as_str().to_string(),
            count: e.count,
            detail: e.detail.clone(),
            prev: hex(&self.prev),
            mac: hex(&self.mac),
            tag: self.tag.map(|t| hex(&t)),
            sig: self.sig.as_ref().map(Signature::to_text),
            node: self.node.clone(),
        }
    }
}

impl AuditRecord {
    /// Rebuilds a record from its exported form (for `verify --file`).
    pub fn from_export(e: &ExportRecord) -> Result<AuditRecord, BadExportRecord> {
        let uuid =
            |v: &Option<String>, name: &'static str| -> Result<Option<Uuid>, BadExportRecord> {
                v.as_deref()
                    .map(|s| Uuid::parse_str(s).map_err(|_| BadExportRecord(name, "is not a UUID")))
                    .transpose()
            };
        let bad = BadExportRecord;
        Ok(AuditRecord {
            seq: e.seq,
            at_us: time::parse_rfc3339(&e.at).ok_or(bad("at", "is not an RFC 3339 time"))?,
            event: AuditEvent {
                request_id: e.request_id.clone(),
                action: Action::parse(&e.action).ok_or(bad("action", "is not a known action"))?,
                key_id: uuid(&e.key_id, "key_id")?,
                provider: e.provider.clone(),
                caller: e.caller.clone(),
                caller_id: uuid(&e.caller_id, "caller_id")?,
                ip: e.ip.clone(),
                peer: e.peer.clone(),
                outcome: Outcome::parse(&e.outcome)
                    .ok_or(bad("outcome", "is not a known outcome"))?,
                count: e.count,
                detail: e.detail.clone(),
            },
            prev: unhex32(&e.prev).ok_or(bad("prev", "is not 64 hex digits"))?,
            mac: unhex32(&e.mac).ok_or(bad("mac", "is not 64 hex digits"))?,
            tag: e
                .tag
                .as_deref()
                .map(|t| unhex32(t).ok_or(bad("tag", "is not 64 hex digits")))
                .transpose()?,
            sig: e
                .sig
                .as_deref()
                .map(|s| Signature::parse(s).ok_or(bad("sig", "is not ed25519:KEY:SIGNATURE")))
                .transpose()?,
            node: e.node.clone(),
        })
    }
}

/// A field of an exported record that does not parse: its name and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` {1}")]
pub struct BadExportRecord(pub &'static str, pub &'static str);

/// An audit record as exported (JSON Lines, CSV). Field order is the
/// column order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub seq: u64,
    pub at: String,
    pub request_id: String,
    pub action: String,
    pub key_id: Option<String>,
    pub provider: Option<String>,
    pub caller: String,
    pub caller_id: Option<String>,
    pub ip: String,
    pub peer: Option<String>,
    pub outcome: String,
    pub count: Option<u64>,
    pub detail: Option<String>,
    pub prev: String,
    pub mac: String,
    /// V2 records: the keyed tag (hex).
    #[serde(default)]
    pub tag: Option<String>,
    /// The newest record of each commit: `ed25519:KEY:SIGNATURE`.
    #[serde(default)]
    pub sig: Option<String>,
    /// The node that wrote the record (several nodes on one database).
    #[serde(default)]
    pub node: Option<String>,
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses 64 hex digits into 32 bytes.
pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in b.chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Caller text as a record keeps it: no control or format character
/// (general category Cf: bidi overrides, zero-width marks), each dropped;
/// a word that looks like a token (`kh_…`), and any run of 32 or more
/// letters, digits, `-` or `_` but a UUID (a secret of another form: a
/// provider's API key, a token without its prefix), cut to its first
/// characters; at
/// most 200 characters. Records are kept for good and read by every
/// auditor: what a caller typed never reaches one whole.
pub(crate) fn record_text(text: &str) -> String {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let shown: String = text
        .chars()
        .filter(|c| !c.is_control() && c.general_category() != GeneralCategory::Format)
        .collect();
    let prefix = crate::access::TOKEN_PREFIX;
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(shown.len());
    let mut rest = shown.as_str();
    while !rest.is_empty() {
        let start = rest.find(word).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        let run = &rest[..end];
        if let Some(at) = run.find(prefix) {
            out.push_str(&run[..at]);
            out.push_str(prefix);
            out.push('…');
        } else if run.len() >= 32 && uuid::Uuid::try_parse(run).is_err() {
            out.push_str(&run[..4]);
            out.push('…');
        } else {
            out.push_str(run);
        }
        rest = &rest[end..];
    }
    out.chars().take(200).collect()
}

#[cfg(test)]
mod record_text_tests {
    use super::record_text;

    #[test]
    fn a_record_keeps_no_secret_like_word_whole() {
        assert_eq!(
            record_text("query parameter `x` is unknown"),
            "query parameter `x` is unknown"
        );
        let token = format!("kh_{}", "A".repeat(43));
        assert_eq!(record_text(&format!("by {token} now")), "by kh_… now");
        assert_eq!(record_text(&format!("x{token}")), "xkh_…");
        let key = "sk-live-0123456789abcdefghijklmnopqrstuvwxyz";
        assert_eq!(record_text(&format!("for {key}")), "for sk-l…");
        // A word under 32 characters is kept: names, ids' parts, words.
        let short = "a".repeat(31);
        assert_eq!(record_text(&short), short);
        let id = "3f2a7c1e-8d4b-4e6f-9a0b-1c2d3e4f5a6b";
        assert_eq!(record_text(&format!("job {id}")), format!("job {id}"));
        assert_eq!(record_text("x\u{202E}y\n"), "xy");
        assert_eq!(record_text(&"é".repeat(300)).chars().count(), 200);
    }
}
