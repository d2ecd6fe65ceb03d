//! Access tokens: minting (optionally expiring), revoking, rotating,
//! listing (with each token's last use), with the provider-limit rules. A provider-limited caller never reaches beyond its providers: it
//! mints only tokens limited to some of them, and a broader token is
//! answered like a missing one (the audit record keeps the truth). The
//! operator offline (`caller` = `None`) reaches everything.

use uuid::Uuid;

use super::token_records::{self, TokenError};
use super::{Conflict, Denied, Invalid, Missing, Origin, Refusal, Tampered, Vault};
use crate::access::{Caller, Role};
use crate::audit::{Action, Outcome};
use crate::duration::MAX_TTL_SECONDS;
use crate::secret::SecretString;
use crate::store::TokenRecord;

/// A token to mint.
#[derive(Debug, Clone)]
pub(crate) struct TokenRequest {
    pub name: String,
    pub role: Role,
    /// `None`: every provider.
    pub providers: Option<Vec<String>>,
    /// Seconds until it expires (`None`: never): 1..=[`MAX_TTL_SECONDS`].
    pub ttl_seconds: Option<i64>,
}

/// The overlap of a rotation when none is given: one hour.
pub(crate) const DEFAULT_OVERLAP_SECONDS: i64 = 3600;

/// A token as listed: its record, its last use and whether it expired.
#[derive(Debug, Clone)]
pub(crate) struct ListedToken {
    pub record: TokenRecord,
    /// When an audited action made with it was last committed.
    pub last_used_us: Option<i64>,
    pub expired: bool,
}

/// A rotation: the successor (with its secret, shown once) and the old
/// token as it now is (expiring at the end of the overlap).
#[derive(Debug)]
pub(crate) struct RotatedToken {
    pub new: MintedToken,
    pub old: TokenRecord,
}

/// The refusal of a `ttl_seconds` out of range (for tokens).
pub(crate) fn token_ttl_invalid() -> Refusal {
    Refusal::Invalid(Invalid::TokenTtl)
}

/// The refusal of an `overlap_seconds` out of range.
pub(crate) fn overlap_invalid() -> Refusal {
    Refusal::Invalid(Invalid::Overlap)
}

/// A minted token: its record and its secret, shown once.
#[derive(Debug)]
pub(crate) struct MintedToken {
    pub record: TokenRecord,
    pub secret: SecretString,
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Refusal {
        match e {
            TokenError::InvalidName(name) => Refusal::Invalid(Invalid::TokenName { name }),
            TokenError::InvalidProvider(provider) => {
                Refusal::Invalid(Invalid::TokenProvider { provider })
            }
            TokenError::LimitedAuditor => Refusal::Invalid(Invalid::LimitedAuditor),
            TokenError::NameTaken(name) => Refusal::Conflict(Conflict::TokenNameTaken { name }),
            TokenError::AlreadyRevoked(name) => Refusal::Conflict(Conflict::TokenRevoked { name }),
            TokenError::AlreadyRotated { name, id, to } => {
                Refusal::Conflict(Conflict::TokenRotated { name, id, to })
            }
            TokenError::StoredRole(role) => Refusal::Conflict(Conflict::UnknownStoredRole { role }),
            TokenError::NotFound(id_or_name) => Refusal::NotFound(Missing::Token { id_or_name }),
            TokenError::Store(crate::store::StoreError::Tampered { .. }) => {
                Refusal::TamperedRecord(Tampered::Token)
            }
            TokenError::Random(_) | TokenError::Store(_) => Refusal::storage(&e),
        }
    }
}

/// Whether `caller` (none: the operator) reaches a token of `providers`.
fn covers(caller: Option<&Caller>, providers: Option<&[String]>) -> bool {
    caller.is_none_or(|c| c.covers(providers))
}

/// The answer for a token beyond the caller's providers: like a missing one.
fn beyond(id: &str) -> Refusal {
    Refusal::Beyond(Missing::Token {
        id_or_name: id.chars().take(64).collect(),
    })
}

impl Vault<'_> {
    /// Mints a token (recorded with its creation). `caller` has been
    /// checked for `admin` by the edge; `None` is the operator offline.
    pub(crate) async fn create_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        req: TokenRequest,
    ) -> Result<MintedToken, Refusal> {
        let action = Action::TokenCreate;
        if req
            .ttl_seconds
            .is_some_and(|t| !(1..=MAX_TTL_SECONDS).contains(&t))
        {
            return self
                .recorded(origin, caller, action, Err(token_ttl_invalid()))
                .await;
        }
        // Name taken? and the write: one step for every node.
        let _one = self.token_lock().await?;
        let prepared = token_records::prepare(self.store, &req.name, req.role, req.providers)
            .map_err(Refusal::from);
        let prepared = self
            .recorded(origin, caller, action, prepared)
            .await?
            .expiring(req.ttl_seconds);
        if !covers(caller, prepared.record.providers.as_deref()) {
            let mut ev = self.event(origin, Action::TokenCreate, caller, Outcome::Forbidden);
            ev.detail = Some(format!(
                "token `{}` would reach beyond the caller's providers",
                prepared.record.name
            ));
            let refusal = Refusal::Forbidden(Denied::BroaderToken {
                providers: caller.and_then(|c| c.providers.clone()).unwrap_or_default(),
            });
            return Err(self.refuse(origin, ev, refusal).await);
        }
        let mut ev = self.event(origin, Action::TokenCreate, caller, Outcome::Success);
        ev.detail = Some(format!(
            "token {} `{}` role {}{}",
            prepared.record.id,
            prepared.record.name,
            prepared.record.role,
            expiry_note(&prepared.record)
        ));
        self.record(ev, vec![prepared.write()]).await?;
        Ok(MintedToken {
            record: prepared.record,
            secret: prepared.token.secret,
        })
    }

    /// Revokes a token by id or name (recorded).
    pub(crate) async fn revoke_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        id_or_name: &str,
    ) -> Result<TokenRecord, Refusal> {
        let _one = self.token_lock().await?;
        let (hash, rec) = match token_records::find(self.store, id_or_name) {
            Ok(found) => found,
            Err(TokenError::Store(e @ crate::store::StoreError::Tampered { .. })) => {
                let ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Tampered);
                return Err(self
                    .refuse(origin, ev, Refusal::from(TokenError::Store(e)))
                    .await);
            }
            Err(e) => {
                return Err(self
                    .refuse_token(origin, caller, Action::TokenRevoke, e)
                    .await)
            }
        };
        // During a rotation's overlap two live tokens share a name: a
        // revoke by name would reach only the newest and leave the old one
        // (often the reason for the revoke) working. Ask for the id.
        if rec.id.to_string() != id_or_name {
            let now = crate::time::now_us();
            let listed = self
                .store
                .list_tokens()
                .map_err(|e| Refusal::from(TokenError::Store(e)));
            let live: Vec<Uuid> = self
                .recorded(origin, caller, Action::TokenRevoke, listed)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.name == rec.name && token_records::is_live(r, now))
                .filter(|r| covers(caller, r.providers.as_deref()))
                .map(|r| r.id)
                .collect();
            if live.len() > 1 {
                let mut ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Forbidden);
                ev.detail = Some(format!("several live tokens are named `{}`", rec.name));
                let refusal = Refusal::Conflict(Conflict::SeveralLiveTokens {
                    name: rec.name.clone(),
                    ids: live,
                });
                return Err(self.refuse(origin, ev, refusal).await);
            }
        }
        if !covers(caller, rec.providers.as_deref()) {
            let mut ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Forbidden);
            ev.detail = Some(format!(
                "token {} `{}` reaches beyond the caller's providers",
                rec.id, rec.name
            ));
            return Err(self.refuse(origin, ev, beyond(id_or_name)).await);
        }
        let (rec, write) = match token_records::revoke(hash, rec) {
            Ok(done) => done,
            Err(e) => {
                return Err(self
                    .refuse_token(origin, caller, Action::TokenRevoke, e)
                    .await)
            }
        };
        let mut ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Success);
        ev.detail = Some(format!("token {} `{}`", rec.id, rec.name));
        self.record(ev, vec![write]).await?;
        Ok(rec)
    }

    /// Rotates a token by id or name (the newest live token of that
    /// name): mints its successor and ends the old one `overlap_seconds`
    /// from now, both in one commit with one `token_rotate` record.
    pub(crate) async fn rotate_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        id_or_name: &str,
        overlap_seconds: Option<i64>,
    ) -> Result<RotatedToken, Refusal> {
        let overlap = overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
        if !(0..=MAX_TTL_SECONDS).contains(&overlap) {
            return self
                .recorded(origin, caller, Action::TokenRotate, Err(overlap_invalid()))
                .await;
        }
        // A revoke or another rotation between the read and the write
        // would otherwise be undone (the old record written back live).
        let _one = self.token_lock().await?;
        let (at, rec) = match token_records::find(self.store, id_or_name) {
            Ok(found) => found,
            Err(TokenError::Store(e @ crate::store::StoreError::Tampered { .. })) => {
                let ev = self.event(origin, Action::TokenRotate, caller, Outcome::Tampered);
                return Err(self
                    .refuse(origin, ev, Refusal::from(TokenError::Store(e)))
                    .await);
            }
            Err(e) => {
                return Err(self
                    .refuse_token(origin, caller, Action::TokenRotate, e)
                    .await)
            }
        };
        if !covers(caller, rec.providers.as_deref()) {
            let mut ev = self.event(origin, Action::TokenRotate, caller, Outcome::Forbidden);
            ev.detail = Some(format!(
                "token {} `{}` reaches beyond the caller's providers",
                rec.id, rec.name
            ));
            return Err(self.refuse(origin, ev, beyond(id_or_name)).await);
        }
        let rotation = match token_records::rotate(self.store, at, rec, overlap) {
            Ok(r) => r,
            Err(e) => {
                return Err(self
                    .refuse_token(origin, caller, Action::TokenRotate, e)
                    .await)
            }
        };
        let new = &rotation.successor.record;
        let mut ev = self.event(origin, Action::TokenRotate, caller, Outcome::Success);
        ev.detail = Some(format!(
            "token {} `{}` replaced by {}{}; the old one ends at {}",
            rotation.old.id,
            rotation.old.name,
            new.id,
            expiry_note(new),
            rotation
                .old
                .expires_at_us
                .map(crate::time::to_rfc3339)
                .unwrap_or_default()
        ));
        self.record(ev, rotation.writes()).await?;
        let token_records::PreparedRotation { successor, old, .. } = rotation;
        Ok(RotatedToken {
            new: MintedToken {
                record: successor.record,
                secret: successor.token.secret,
            },
            old,
        })
    }

    /// Records a refused revoke or rotation (a missing token too, so that
    /// it takes as long as one beyond the caller's providers) and hands
    /// the refusal back.
    async fn refuse_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        action: Action,
        e: TokenError,
    ) -> Refusal {
        let mut ev = self.event(origin, action, caller, Outcome::NotFound);
        ev.detail = Some(match &e {
            TokenError::NotFound(_) => "no such token".to_string(),
            other => other.to_string().chars().take(200).collect(),
        });
        let refusal = Refusal::from(e);
        match refusal {
            Refusal::Storage => refusal,
            r => self.refuse(origin, ev, r).await,
        }
    }

    /// The lock of token changes (create, revoke, rotate): each reads
    /// the token records and writes one back, so they are serialised
    /// (across nodes on a shared database too).
    async fn token_lock(&self) -> Result<crate::store::WriteLock, Refusal> {
        self.store
            .write_lock(crate::store::Guarded::Tokens)
            .await
            .map_err(|e| Refusal::storage(&e))
    }

    /// The tokens `caller` reaches, oldest first, with their last use. A
    /// stored token record that fails its integrity check refuses the
    /// listing, recorded under `token_list`.
    pub(crate) async fn list_tokens(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
    ) -> Result<Vec<ListedToken>, Refusal> {
        let all = self
            .store
            .list_tokens()
            .map_err(|e| Refusal::from(TokenError::Store(e)));
        let all = self
            .recorded(origin, caller, Action::TokenList, all)
            .await?;
        let usage = self.store.token_usage().map_err(|e| Refusal::storage(&e))?;
        let now = crate::time::now_us();
        Ok(all
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| covers(caller, r.providers.as_deref()))
            .map(|r| listed(r, &usage, now))
            .collect())
    }

    /// One token by id or name, if `caller` reaches it (a refusal
    /// recorded under `token_list`).
    pub(crate) async fn find_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        id_or_name: &str,
    ) -> Result<ListedToken, Refusal> {
        let found = token_records::find(self.store, id_or_name)
            .map_err(Refusal::from)
            .and_then(|(_, rec)| match covers(caller, rec.providers.as_deref()) {
                true => Ok(rec),
                false => Err(beyond(id_or_name)),
            });
        let rec = self
            .recorded(origin, caller, Action::TokenList, found)
            .await?;
        let usage = self.store.token_usage().map_err(|e| Refusal::storage(&e))?;
        Ok(listed(rec, &usage, crate::time::now_us()))
    }
}

fn listed(
    record: TokenRecord,
    usage: &std::collections::HashMap<Uuid, i64>,
    now: i64,
) -> ListedToken {
    ListedToken {
        last_used_us: usage.get(&record.id).copied(),
        expired: record.expired_at(now),
        record,
    }
}

/// `, expires at …` for a record's detail, or nothing.
fn expiry_note(r: &TokenRecord) -> String {
    r.expires_at_us
        .map(|e| format!(", expires at {}", crate::time::to_rfc3339(e)))
        .unwrap_or_default()
}
