//! Access-token records, for the vault's token rules (`tokens.rs`) and
//! `init`: create, find, revoke, rotate. Checking a presented token is
//! the caller step of every request (`Vault::authenticate`, in mod.rs).
//!
//! A token may expire (`expires_at`); an expired token is refused like
//! an unknown one, but told that it expired. Rotation mints a successor
//! with the same name, role, providers and ttl, and shortens the old
//! token's life to an overlap window; a name always means the newest live
//! token of that name.
//!
//! Lookups go by a keyed digest of the token (the store never holds a
//! token, and nobody without the keyring can say where a token's record
//! would be stored); records are authenticated by the store.

use uuid::Uuid;

use crate::access::{self, NewToken, Role};
use crate::store::{Store, StoreError, TokenRecord, Write};

/// Why a token operation was refused. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}", invalid_name(.0))]
    InvalidName(String),
    #[error("invalid provider `{0}` in the provider limit: a provider matches [a-z0-9][a-z0-9_.-]{{0,63}}")]
    InvalidProvider(String),
    #[error(
        "an auditor or metrics token cannot be limited to providers: it reads the audit log or \
         the metrics, which are not kept per provider, so the limit would mean nothing; leave \
         `providers` out, or make a reader token for those providers"
    )]
    LimitedAuditor,
    #[error(
        "a live token named `{0}` already exists: pick another name, or revoke that one first"
    )]
    NameTaken(String),
    /// (The edges add how to list tokens.)
    #[error("no token with id or name {}", shown(.0))]
    NotFound(String),
    #[error("the token `{0}` is already revoked")]
    AlreadyRevoked(String),
    #[error(
        "the token `{name}` ({id}) was already rotated: rotate its replacement {to} (or the name, \
         which means the newest live token of that name)"
    )]
    AlreadyRotated { name: String, id: Uuid, to: Uuid },
    #[error(
        "the stored role `{0}` of this token is unknown to this keyhold: create a new token \
         instead, and revoke this one"
    )]
    StoredRole(String),
    #[error("the system random generator failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A name or id as an answer shows it: quoted, unless it looks like a
/// token's secret (pasted instead of its id), which is not repeated.
fn shown(name: &str) -> String {
    match name.starts_with(access::TOKEN_PREFIX) {
        true => "`kh_…` (it looks like a token's secret: not shown)".into(),
        false => format!("`{name}`"),
    }
}

/// Why a token name is refused.
fn invalid_name(name: &str) -> String {
    if name.starts_with(access::TOKEN_PREFIX) {
        return "a token name cannot start with `kh_`, as token secrets do (a name is shown in \
                lists and kept in the audit log): pick a name that says who uses the token; if \
                this was a token's secret, revoke that token and make a new one"
            .into();
    }
    format!(
        "invalid token name `{name}`: use 1-64 letters, digits, `_`, `.`, `-` or `@` (not \
         starting with `kh_`)"
    )
}

/// A token ready to be written: the secret (show it once) and its write.
pub struct PreparedToken {
    pub token: NewToken,
    pub record: TokenRecord,
    /// Where the record is stored (the token's keyed digest).
    at: [u8; 32],
}

impl PreparedToken {
    /// Makes the token expire `ttl_seconds` after its creation (checked
    /// by the caller: 1..=`MAX_TTL_SECONDS`).
    pub fn expiring(mut self, ttl_seconds: Option<i64>) -> PreparedToken {
        self.record.ttl_seconds = ttl_seconds;
        self.record.expires_at_us = ttl_seconds.map(|t| {
            self.record
                .created_at_us
                .saturating_add(t.saturating_mul(1_000_000))
        });
        self
    }

    pub fn write(&self) -> Write {
        Write::PutToken {
            hash: self.at,
            record: self.record.clone(),
        }
    }
}

/// Checks a new token's fields and makes its secret.
pub fn prepare(
    store: &Store,
    name: &str,
    role: Role,
    providers: Option<Vec<String>>,
) -> Result<PreparedToken, TokenError> {
    prepare_named(store, name, role, providers, true)
}

/// As [`prepare`]; `unique` checks that no live token has the name (a
/// rotation's successor shares its predecessor's name).
fn prepare_named(
    store: &Store,
    name: &str,
    role: Role,
    providers: Option<Vec<String>>,
    unique: bool,
) -> Result<PreparedToken, TokenError> {
    // A rotation carries its predecessor's name over as it is (a name
    // stored before today's rules, such as one starting with `kh_`, must
    // not make the token impossible to rotate); a new name is checked.
    if unique && !access::valid_token_name(name) {
        return Err(TokenError::InvalidName(name.chars().take(64).collect()));
    }
    let providers = match providers {
        None => None,
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for p in list {
                let p = p.trim().to_string();
                if !access::valid_provider(&p) {
                    return Err(TokenError::InvalidProvider(p.chars().take(64).collect()));
                }
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            Some(out)
        }
    };
    // New tokens only: a rotation carries an older token's fields over.
    if unique && matches!(role, Role::Auditor | Role::Metrics) && providers.is_some() {
        return Err(TokenError::LimitedAuditor);
    }
    let now = crate::time::now_us();
    if unique {
        for (_, rec) in store.list_tokens()? {
            if rec.name == name && is_live(&rec, now) {
                return Err(TokenError::NameTaken(name.to_string()));
            }
        }
    }
    let token = access::generate_token().map_err(TokenError::Random)?;
    let record = TokenRecord {
        id: Uuid::new_v4(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        scopes: role.scopes(),
        providers,
        created_at_us: now,
        revoked_at_us: None,
        expires_at_us: None,
        ttl_seconds: None,
        rotated_to: None,
        stamp: 0,
        layers: store.token_layers(),
    };
    let at = store.token_key(&token.hash)?;
    Ok(PreparedToken { token, record, at })
}

/// Finds a token by id, or by name (the live one first).
pub(crate) fn find(store: &Store, id_or_name: &str) -> Result<([u8; 32], TokenRecord), TokenError> {
    let id = Uuid::parse_str(id_or_name).ok();
    let all = store.list_tokens()?;
    let now = crate::time::now_us();
    let by_id = all.iter().find(|(_, r)| Some(r.id) == id);
    let by_name = || {
        all.iter()
            .filter(|(_, r)| r.name == id_or_name)
            .max_by_key(|(_, r)| (is_live(r, now), r.created_at_us))
    };
    by_id
        .or_else(by_name)
        .cloned()
        .ok_or_else(|| TokenError::NotFound(id_or_name.chars().take(64).collect()))
}

/// The write that revokes a token.
pub(crate) fn revoke(
    hash: [u8; 32],
    mut record: TokenRecord,
) -> Result<(TokenRecord, Write), TokenError> {
    if record.revoked_at_us.is_some() {
        return Err(TokenError::AlreadyRevoked(record.name));
    }
    record.revoked_at_us = Some(crate::time::now_us());
    Ok((record.clone(), Write::PutToken { hash, record }))
}

/// Neither revoked nor expired at `now_us`.
pub(crate) fn is_live(rec: &TokenRecord, now_us: i64) -> bool {
    rec.revoked_at_us.is_none() && !rec.expired_at(now_us)
}

/// A rotation ready to be written: the successor (its secret, shown
/// once) and the predecessor as it will be stored.
pub(crate) struct PreparedRotation {
    pub successor: PreparedToken,
    pub old: TokenRecord,
    old_at: [u8; 32],
}

impl PreparedRotation {
    /// Both writes, to land in one commit with the rotation's record.
    pub(crate) fn writes(&self) -> Vec<Write> {
        vec![
            self.successor.write(),
            Write::PutToken {
                hash: self.old_at,
                record: self.old.clone(),
            },
        ]
    }
}

/// Mints the successor of the token stored at `at` (same name, role,
/// scopes, providers and ttl length) and ends the old token's life
/// `overlap_seconds` from now (never later than its own expiry).
pub(crate) fn rotate(
    store: &Store,
    at: [u8; 32],
    mut old: TokenRecord,
    overlap_seconds: i64,
) -> Result<PreparedRotation, TokenError> {
    if old.revoked_at_us.is_some() {
        return Err(TokenError::AlreadyRevoked(old.name));
    }
    if let Some(to) = old.rotated_to {
        return Err(TokenError::AlreadyRotated {
            name: old.name,
            id: old.id,
            to,
        });
    }
    let role: Role = old
        .role
        .parse()
        .map_err(|_| TokenError::StoredRole(old.role.chars().take(40).collect()))?;
    let mut successor = prepare_named(store, &old.name, role, old.providers.clone(), false)?
        .expiring(old.ttl_seconds);
    // The same grants as stored (a role's scopes could change between
    // versions; the successor keeps what its predecessor had).
    successor.record.scopes = old.scopes.clone();
    let now = successor.record.created_at_us;
    let end = now.saturating_add(overlap_seconds.saturating_mul(1_000_000));
    old.expires_at_us = Some(old.expires_at_us.map_or(end, |e| e.min(end)));
    old.rotated_to = Some(successor.record.id);
    Ok(PreparedRotation {
        successor,
        old,
        old_at: at,
    })
}
