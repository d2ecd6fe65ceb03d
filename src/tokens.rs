//! Access-token management shared by the offline CLI and the admin HTTP
//! routes: authenticate, create, find, revoke.
//!
//! Lookups go by a keyed digest of the token (the store never holds a
//! token, and nobody without the keyring can say where a token's record
//! would be stored); records are authenticated by the store.

use uuid::Uuid;

use crate::access::{self, Caller, NewToken, Role};
use crate::store::{Store, StoreError, TokenRecord, Write};

/// Why a token operation was refused. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token name `{0}`: use 1-64 letters, digits, `_`, `.`, `-` or `@`")]
    InvalidName(String),
    #[error("invalid provider `{0}` in the provider limit: a provider matches [a-z0-9][a-z0-9_.-]{{0,63}}")]
    InvalidProvider(String),
    #[error(
        "a live token named `{0}` already exists: pick another name, or revoke that one first"
    )]
    NameTaken(String),
    #[error("no token with id or name `{0}`: list them with `keyhold token list`")]
    NotFound(String),
    #[error("the token `{0}` is already revoked")]
    AlreadyRevoked(String),
    #[error("the system random generator failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The caller a token stands for, or `None` when it is unknown or revoked.
pub fn authenticate(store: &Store, token: &str) -> Result<Option<Caller>, StoreError> {
    if !access::well_formed(token) {
        return Ok(None);
    }
    // The token is looked up by its SHA-256: no comparison ever touches
    // the token itself, and the store compares digests, whose timing
    // reveals nothing usable about a token (SHA-256 cannot be inverted).
    let hash = access::hash_token(token);
    let Some((_, rec)) = store.get_token(&hash)? else {
        return Ok(None);
    };
    if rec.revoked_at_us.is_some() {
        return Ok(None);
    }
    Ok(Some(Caller {
        id: rec.id,
        name: rec.name,
        scopes: rec.scopes,
        providers: rec.providers,
    }))
}

/// A token ready to be written: the secret (show it once) and its write.
pub struct PreparedToken {
    pub token: NewToken,
    pub record: TokenRecord,
    /// Where the record is stored (the token's keyed digest).
    at: [u8; 32],
}

impl PreparedToken {
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
    if !access::valid_token_name(name) {
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
    for (_, rec) in store.list_tokens()? {
        if rec.name == name && rec.revoked_at_us.is_none() {
            return Err(TokenError::NameTaken(name.to_string()));
        }
    }
    let token = access::generate_token().map_err(TokenError::Random)?;
    let record = TokenRecord {
        id: Uuid::new_v4(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        scopes: role.scopes(),
        providers,
        created_at_us: crate::time::now_us(),
        revoked_at_us: None,
    };
    let at = store.token_key(&token.hash)?;
    Ok(PreparedToken { token, record, at })
}

/// Finds a token by id, or by name (the live one first).
pub fn find(store: &Store, id_or_name: &str) -> Result<([u8; 32], TokenRecord), TokenError> {
    let id = Uuid::parse_str(id_or_name).ok();
    let all = store.list_tokens()?;
    let by_id = all.iter().find(|(_, r)| Some(r.id) == id);
    let by_name = || {
        all.iter()
            .filter(|(_, r)| r.name == id_or_name)
            .max_by_key(|(_, r)| (r.revoked_at_us.is_none(), r.created_at_us))
    };
    by_id
        .or_else(by_name)
        .cloned()
        .ok_or_else(|| TokenError::NotFound(id_or_name.chars().take(64).collect()))
}

/// The write that revokes a token.
pub fn revoke(hash: [u8; 32], mut record: TokenRecord) -> Result<(TokenRecord, Write), TokenError> {
    if record.revoked_at_us.is_some() {
        return Err(TokenError::AlreadyRevoked(record.name));
    }
    record.revoked_at_us = Some(crate::time::now_us());
    Ok((record.clone(), Write::PutToken { hash, record }))
}
