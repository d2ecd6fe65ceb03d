//! Access tokens: minting, revoking, listing, with the provider-limit
//! rules. A provider-limited caller never reaches beyond its providers: it
//! mints only tokens limited to some of them, and a broader token is
//! answered like a missing one (the audit record keeps the truth). The
//! operator offline (`caller` = `None`) reaches everything.

use super::{Origin, Refusal, Vault};
use crate::access::{Caller, Role};
use crate::audit::{Action, Outcome};
use crate::secret::SecretString;
use crate::store::TokenRecord;
use crate::tokens::{self, TokenError};

/// A token to mint.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
    /// `None`: every provider.
    pub providers: Option<Vec<String>>,
}

/// A minted token: its record and its secret, shown once.
#[derive(Debug)]
pub struct MintedToken {
    pub record: TokenRecord,
    pub secret: SecretString,
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Refusal {
        match e {
            TokenError::InvalidName(_) | TokenError::InvalidProvider(_) => {
                Refusal::Invalid(e.to_string())
            }
            TokenError::NameTaken(_) | TokenError::AlreadyRevoked(_) => {
                Refusal::Conflict(e.to_string())
            }
            TokenError::NotFound(_) => Refusal::NotFound(e.to_string()),
            TokenError::Store(crate::store::StoreError::Tampered { .. }) => {
                Refusal::TamperedRecord(
                    "a stored token record failed its integrity check (it was changed outside \
                     keyhold), so this is refused: tell the operator to run `keyhold check`"
                        .into(),
                )
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
    match Refusal::from(TokenError::NotFound(id.chars().take(64).collect())) {
        Refusal::NotFound(d) => Refusal::Beyond(d),
        other => other,
    }
}

impl Vault<'_> {
    /// Mints a token (recorded with its creation). `caller` has been
    /// checked for `admin` by the edge; `None` is the operator offline.
    pub async fn create_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        req: TokenRequest,
    ) -> Result<MintedToken, Refusal> {
        let prepared = tokens::prepare(self.store, &req.name, req.role, req.providers)?;
        if !covers(caller, prepared.record.providers.as_deref()) {
            let mut ev = self.event(origin, Action::TokenCreate, caller, Outcome::Forbidden);
            ev.detail = Some(format!(
                "token `{}` would reach beyond the caller's providers",
                prepared.record.name
            ));
            let limited = caller
                .and_then(|c| c.providers.as_deref())
                .unwrap_or_default()
                .join(", ");
            let refusal = Refusal::Forbidden(format!(
                "this token is limited to the providers {limited}: a token it creates must be \
                 limited to some of them (set `providers`)"
            ));
            return Err(self.refuse(ev, refusal).await);
        }
        let mut ev = self.event(origin, Action::TokenCreate, caller, Outcome::Success);
        ev.detail = Some(format!(
            "token {} `{}` role {}",
            prepared.record.id, prepared.record.name, prepared.record.role
        ));
        self.record(ev, vec![prepared.write()]).await?;
        Ok(MintedToken {
            record: prepared.record,
            secret: prepared.token.secret,
        })
    }

    /// Revokes a token by id or name (recorded).
    pub async fn revoke_token(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        id_or_name: &str,
    ) -> Result<TokenRecord, Refusal> {
        let (hash, rec) = match tokens::find(self.store, id_or_name) {
            Ok(found) => found,
            Err(TokenError::Store(e @ crate::store::StoreError::Tampered { .. })) => {
                let ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Tampered);
                return Err(self.refuse(ev, Refusal::from(TokenError::Store(e))).await);
            }
            Err(e) => return Err(e.into()),
        };
        if !covers(caller, rec.providers.as_deref()) {
            let mut ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Forbidden);
            ev.detail = Some(format!(
                "token {} `{}` reaches beyond the caller's providers",
                rec.id, rec.name
            ));
            return Err(self.refuse(ev, beyond(id_or_name)).await);
        }
        let (rec, write) = tokens::revoke(hash, rec)?;
        let mut ev = self.event(origin, Action::TokenRevoke, caller, Outcome::Success);
        ev.detail = Some(format!("token {} `{}`", rec.id, rec.name));
        self.record(ev, vec![write]).await?;
        Ok(rec)
    }

    /// The tokens `caller` reaches, oldest first.
    pub fn list_tokens(&self, caller: Option<&Caller>) -> Result<Vec<TokenRecord>, Refusal> {
        let all = self
            .store
            .list_tokens()
            .map_err(|e| Refusal::from(TokenError::Store(e)))?;
        Ok(all
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| covers(caller, r.providers.as_deref()))
            .collect())
    }

    /// One token by id or name, if `caller` reaches it.
    pub fn find_token(
        &self,
        caller: Option<&Caller>,
        id_or_name: &str,
    ) -> Result<TokenRecord, Refusal> {
        let (_, rec) = tokens::find(self.store, id_or_name)?;
        if !covers(caller, rec.providers.as_deref()) {
            return Err(beyond(id_or_name));
        }
        Ok(rec)
    }
}
