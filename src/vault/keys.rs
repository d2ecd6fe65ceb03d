//! Storing and deleting API keys: the field rules, the provider limit, and
//! the audit record each change lands with.

use uuid::Uuid;

use super::reveal::missing_scope;
use super::{Origin, Refusal, Vault};
use crate::access::{valid_provider, Caller, Scope};
use crate::audit::{Action, Outcome};
use crate::secret::SecretString;
use crate::store::{KeyRecord, Write};
use crate::time::now_us;

/// Largest API key accepted.
pub const MAX_API_KEY: usize = 16 * 1024;
/// Longest key_name, in characters.
pub const MAX_KEY_NAME: usize = 200;
/// Longest ttl_seconds: ten years.
pub const MAX_TTL_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// A key to store, as the caller gave it (checked by [`Vault::create_key`]).
#[derive(Debug)]
pub struct NewKey {
    pub provider: String,
    pub key_name: String,
    pub api_key: SecretString,
    pub ttl_seconds: Option<i64>,
}

impl NewKey {
    /// The field rules of the API, each failure naming its field.
    fn check(&self) -> Result<(), Refusal> {
        if !valid_provider(&self.provider) {
            return Err(Refusal::Invalid(
                "field `provider` must match [a-z0-9][a-z0-9_.-]{0,63} (for example `claude` or \
                 `gemini`)"
                    .into(),
            ));
        }
        let name_len = self.key_name.chars().count();
        if name_len == 0 || name_len > MAX_KEY_NAME {
            return Err(Refusal::Invalid(format!(
                "field `key_name` must be 1 to {MAX_KEY_NAME} characters"
            )));
        }
        if self.key_name.chars().any(char::is_control) {
            return Err(Refusal::Invalid(
                "field `key_name` must not contain control characters".into(),
            ));
        }
        let len = self.api_key.expose().len();
        if len == 0 || len > MAX_API_KEY {
            return Err(Refusal::Invalid(format!(
                "field `api_key` must be 1 byte to {} KiB",
                MAX_API_KEY / 1024
            )));
        }
        if let Some(t) = self.ttl_seconds {
            if !(1..=MAX_TTL_SECONDS).contains(&t) {
                return Err(ttl_invalid());
            }
        }
        Ok(())
    }
}

/// The refusal of a ttl_seconds out of range.
pub fn ttl_invalid() -> Refusal {
    Refusal::Invalid(format!(
        "field `ttl_seconds` must be a whole number from 1 to {MAX_TTL_SECONDS}"
    ))
}

impl Vault<'_> {
    /// Checks that `caller` holds `scope` for `action`, recording a
    /// refusal. Edges call it before they read a request's body.
    pub async fn require(
        &self,
        origin: &Origin,
        caller: &Caller,
        scope: Scope,
        action: Action,
    ) -> Result<(), Refusal> {
        if caller.has(scope) {
            return Ok(());
        }
        let ev = self.event(origin, action, Some(caller), Outcome::Forbidden);
        Err(self.refuse(ev, missing_scope(scope)).await)
    }

    /// Stores a new key (encrypted under the newest key of the keyring),
    /// with its audit record, for a caller that holds `keys:write`.
    pub async fn create_key(
        &self,
        origin: &Origin,
        caller: &Caller,
        new: NewKey,
    ) -> Result<KeyRecord, Refusal> {
        new.check()?;
        if !caller.may_use_provider(&new.provider) {
            let mut ev = self.event(origin, Action::KeyCreate, Some(caller), Outcome::Forbidden);
            ev.provider = Some(new.provider.clone());
            let refusal = Refusal::Forbidden(format!(
                "this token is limited to other providers than `{}`",
                new.provider
            ));
            return Err(self.refuse(ev, refusal).await);
        }
        let created_at_us = now_us();
        let expires_at_us = match new.ttl_seconds {
            None => None,
            Some(ttl) => Some(
                ttl.checked_mul(1_000_000)
                    .and_then(|d| created_at_us.checked_add(d))
                    .ok_or_else(ttl_invalid)?,
            ),
        };
        let record = KeyRecord {
            id: Uuid::new_v4(),
            provider: new.provider,
            key_name: new.key_name,
            token: self.keyring.encrypt(new.api_key.expose().as_bytes()),
            created_at_us,
            expires_at_us,
        };
        drop(new.api_key);
        let mut ev = self.event(origin, Action::KeyCreate, Some(caller), Outcome::Success);
        ev.key_id = Some(record.id);
        ev.provider = Some(record.provider.clone());
        self.record(ev, vec![Write::PutKey(record.clone())]).await?;
        Ok(record)
    }

    /// Deletes a key, with its audit record, for a caller that holds
    /// `keys:write`. A key of another provider answers exactly like a
    /// missing one (both are recorded, so they take as long).
    pub async fn delete_key(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
    ) -> Result<Uuid, Refusal> {
        let mut ev = self.event(origin, Action::KeyDelete, Some(caller), Outcome::NotFound);
        let found = match Uuid::parse_str(id) {
            Ok(id) => {
                ev.key_id = Some(id);
                match self.store.get_key(&id) {
                    Ok(found) => found,
                    Err(e) => return Err(self.refuse(ev, Refusal::of_store(e)).await),
                }
            }
            Err(_) => None,
        };
        let Some(rec) = found else {
            return Err(self.refuse(ev, Refusal::no_such_key()).await);
        };
        ev.provider = Some(rec.provider.clone());
        if !caller.may_use_provider(&rec.provider) {
            return Err(self
                .refuse(ev, Refusal::Beyond(super::refusal::NO_SUCH_KEY.into()))
                .await);
        }
        ev.outcome = Outcome::Success;
        let id = rec.id;
        self.record(ev, vec![Write::DeleteKey(rec)]).await?;
        Ok(id)
    }

    /// The keys a caller with `keys:list` sees (its providers only),
    /// oldest first, each with its last use. A listing refused because a
    /// record failed its integrity check is recorded.
    pub async fn list_keys(
        &self,
        origin: &Origin,
        caller: &Caller,
        provider: Option<&str>,
    ) -> Result<Vec<(KeyRecord, Option<i64>)>, Refusal> {
        match self.list_keys_now(caller, provider) {
            Err(r @ Refusal::TamperedRecord(_)) => {
                let mut ev = self.event(origin, Action::KeyList, Some(caller), Outcome::Tampered);
                ev.detail = Some("a stored key record failed its integrity check".into());
                Err(self.refuse(ev, r).await)
            }
            other => other,
        }
    }

    fn list_keys_now(
        &self,
        caller: &Caller,
        provider: Option<&str>,
    ) -> Result<Vec<(KeyRecord, Option<i64>)>, Refusal> {
        if let Some(p) = provider {
            if !valid_provider(p) {
                return Err(Refusal::Invalid(
                    "query parameter `provider` must match [a-z0-9][a-z0-9_.-]{0,63}".into(),
                ));
            }
        }
        let keys = self.store.list_keys(provider).map_err(|e| match e {
            crate::store::StoreError::Tampered { .. } => {
                tracing::error!(
                    "a stored key record failed its integrity check; run `keyhold check`"
                );
                Refusal::TamperedRecord(
                    "a stored key record failed its integrity check (it was changed outside \
                     keyhold), so the list is refused: tell the operator to run `keyhold check`"
                        .into(),
                )
            }
            e => Refusal::storage(&e),
        })?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys
            .into_iter()
            .filter(|k| caller.may_use_provider(&k.provider))
        {
            let used = self
                .store
                .last_used(&k.id)
                .map_err(|e| Refusal::storage(&e))?;
            out.push((k, used));
        }
        Ok(out)
    }
}
