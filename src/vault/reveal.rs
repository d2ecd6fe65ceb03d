//! The audit-first reveal.
//!
//! In this order, every step recorded whatever its outcome: the limiter's
//! verdict (the edge resolved the client and asked the limiter) → the
//! caller (authenticate) → the scope → load (and the provider limit,
//! which needs the record) → expiry → decrypt → the audit record, durable,
//! with `last_used` → the key. Rate-limited and unauthenticated attempts
//! are counted (one record per client, outcome and second), so a flood
//! cannot fill the disk and none goes uncounted.
//!
//! The steps are three functions ([`Vault::admit`]: 1-3, [`Vault::open`]:
//! 4-6, [`Vault::hand_over`]: 7-8) so that a batch reveal
//! (`reveal_batch.rs`) runs every key through exactly these.

use uuid::Uuid;

use super::{Missing, Origin, Refusal, Removed, Vault};
use crate::access::{valid_provider, Caller, Scope};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::secret::SecretBytes;
use crate::store::{KeyRecord, Write};
use crate::time::now_us;

/// What a reveal asks for.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A key by its id (as the caller wrote it; not checked yet): its
    /// current version, or the version named (0: the caller's `version`
    /// was not a version number; refused, recorded).
    Id(String, Option<u32>),
    /// The newest live key of a provider.
    NewestOf(String),
    /// The newest live key of a provider with this key_name.
    Named(String, String),
}

/// One reveal attempt.
pub(crate) struct RevealRequest<'r> {
    pub origin: Origin,
    /// The bearer token, or why the edge could read none.
    pub token: Result<&'r str, Refusal>,
    pub target: Target,
    /// The limiter's verdict: `Err(retry_after_secs)` when over budget.
    pub verdict: Result<(), u64>,
    /// What the caller says the key is for (copied into the record).
    pub purpose: Option<String>,
    /// Told the caller's name once the token is known (the edge's
    /// request log names the caller of a refused reveal too).
    pub on_caller: Option<&'r (dyn Fn(&str) + Send + Sync)>,
}

/// A key that passed every check of a reveal and was decrypted, its
/// success record not yet written: [`Vault::hand_over`] writes it and
/// gives the key; dropped instead, nothing was revealed (the plaintext is
/// zeroized).
pub(super) struct Opened {
    ev: AuditEvent,
    revealed: Revealed,
}

impl Opened {
    /// Drops the key unrevealed (its plaintext zeroized) and gives back
    /// the record it would have had, for the caller to record why not.
    pub(super) fn withhold(self) -> AuditEvent {
        self.ev
    }
}

/// A revealed key: its plaintext is zeroized on drop.
#[derive(Debug)]
pub(crate) struct Revealed {
    pub id: Uuid,
    pub provider: String,
    pub key_name: String,
    /// The version revealed.
    pub version: u32,
    /// When that version lapses (the key's expiry).
    pub expires_at_us: Option<i64>,
    pub api_key: SecretBytes,
}

impl Vault<'_> {
    /// Reveals a key, audit-first (see the module docs). Every refusal has
    /// been recorded (or counted) when it is returned.
    pub(crate) async fn reveal(&self, req: RevealRequest<'_>) -> Result<Revealed, Refusal> {
        let ev = self.reveal_event(&req.origin, &req.target, req.purpose.as_deref(), None);
        let (caller, ev) = self
            .admit(&req.origin, req.verdict, req.token, req.on_caller, ev)
            .await?;
        let opened = self.open(&req.origin, &caller, &req.target, ev).await?;
        self.hand_over(opened).await
    }

    /// The audit event of a reveal of `target` (its key or provider, and
    /// what the caller said: a version, a name, a purpose, its place in a
    /// batch).
    pub(super) fn reveal_event(
        &self,
        origin: &Origin,
        target: &Target,
        purpose: Option<&str>,
        in_batch: Option<(usize, usize)>,
    ) -> AuditEvent {
        let mut ev = self.event(origin, Action::Reveal, None, Outcome::Success);
        match target {
            Target::Id(id, _) => ev.key_id = Uuid::parse_str(id).ok(),
            Target::NewestOf(p) | Target::Named(p, _) if valid_provider(p) => {
                ev.provider = Some(p.clone())
            }
            Target::NewestOf(_) | Target::Named(..) => {
                ev.detail = Some("invalid provider name".into())
            }
        }
        let mut notes = Vec::new();
        if let Some((i, n)) = in_batch {
            notes.push(format!("batch item {} of {n}", i + 1));
        }
        if let Target::Id(_, Some(v)) = target {
            notes.push(format!("version {v}"));
        }
        if let Target::Named(_, name) = target {
            notes.push(format!(
                "by name {:?}",
                crate::audit::record_text(name)
                    .chars()
                    .take(64)
                    .collect::<String>()
            ));
        }
        if let Some(purpose) = purpose {
            notes.push(format!("for {}", crate::audit::record_text(purpose)));
        }
        if !notes.is_empty() {
            ev.detail = Some(notes.join("; "));
        }
        ev
    }

    /// Steps 1 to 3 of a reveal: the limiter's verdict, the caller, the
    /// scope. A refusal is recorded (or counted) under `ev`; admitted,
    /// `ev` comes back with the caller in it.
    pub(super) async fn admit(
        &self,
        origin: &Origin,
        verdict: Result<(), u64>,
        token: Result<&str, Refusal>,
        on_caller: Option<&(dyn Fn(&str) + Send + Sync)>,
        mut ev: AuditEvent,
    ) -> Result<(Caller, AuditEvent), Refusal> {
        // 1. the limiter's verdict, before anything else.
        if let Err(retry_after) = verdict {
            metrics::counter!("keyhold_rate_limited_total").increment(1);
            return Err(self
                .count_refused(origin, ev, Refusal::RateLimited(retry_after))
                .await);
        }
        // 2. the caller (a tampered token record is recorded by
        //    `authenticate` itself).
        let caller = match self.authenticate(origin, token).await {
            Ok(c) => c,
            Err(r @ Refusal::Unauthenticated(_)) => {
                return Err(self.count_refused(origin, ev, r).await)
            }
            Err(r) => return Err(r),
        };
        if let Some(note) = on_caller {
            note(&caller.name);
        }
        ev.caller = caller.name.clone();
        ev.caller_id = Some(caller.id);
        // 3. the scope.
        if !caller.has(Scope::KeysReveal) {
            return Err(self
                .refuse(origin, ev, Refusal::missing_scope(Scope::KeysReveal))
                .await);
        }
        Ok((caller, ev))
    }

    /// Steps 4 to 6 of a reveal for an admitted caller: load (and the
    /// provider limit), the version, expiry, decrypt. A refusal is
    /// recorded under `ev`; nothing is recorded for what opens.
    pub(super) async fn open(
        &self,
        origin: &Origin,
        caller: &Caller,
        target: &Target,
        mut ev: AuditEvent,
    ) -> Result<Opened, Refusal> {
        // 4. load (and the provider limit).
        let rec = match self.load(caller, target, &mut ev) {
            Ok(rec) => rec,
            Err(r) => return Err(self.refuse(origin, ev, r).await),
        };
        ev.key_id = Some(rec.id);
        ev.provider = Some(rec.provider.clone());
        // A soft-deleted key is not revealable (answered like a missing
        // one, recorded `deleted`).
        if rec.deleted_at_us.is_some() {
            return Err(self
                .refuse(origin, ev, Refusal::Deleted(Removed::Key))
                .await);
        }
        // The version asked for (the current one unless named; 0 is what
        // the edge passes for a `version` that is not a number).
        let version = match target {
            Target::Id(_, Some(0)) => {
                let refusal = Refusal::NotFound(Missing::VersionNotANumber);
                return Err(self.refuse(origin, ev, refusal).await);
            }
            Target::Id(_, Some(v)) => *v,
            _ => rec.version,
        };
        if rec.dropped.iter().any(|d| d.version.number == version) {
            let refusal = Refusal::NotFound(Missing::VersionInRecoveryWindow { version });
            return Err(self.refuse(origin, ev, refusal).await);
        }
        let Some((token, expires_at_us)) = rec.version_token(version) else {
            let kept: Vec<u32> = rec
                .older
                .iter()
                .map(|v| v.number)
                .chain(std::iter::once(rec.version))
                .collect();
            let refusal = Refusal::NotFound(Missing::VersionNotKept { version, kept });
            return Err(self.refuse(origin, ev, refusal).await);
        };
        // 5. expiry.
        let now = now_us();
        if expires_at_us.is_some_and(|e| e <= now) {
            return Err(self.refuse(origin, ev, Refusal::Expired).await);
        }
        // 6. decrypt.
        let Ok(opened) = self.keyring.decrypt(token) else {
            return Err(self.refuse(origin, ev, Refusal::DecryptFailed).await);
        };
        ev.outcome = Outcome::Success;
        let opened_by = format!("key {}", opened.fingerprint);
        ev.detail = Some(match ev.detail.take() {
            Some(d) => format!("{d}; opened by {opened_by}"),
            None => format!("opened by {opened_by}"),
        });
        Ok(Opened {
            ev,
            revealed: Revealed {
                id: rec.id,
                provider: rec.provider,
                key_name: rec.key_name,
                version,
                expires_at_us,
                api_key: opened.plaintext,
            },
        })
    }

    /// Steps 7 and 8: the audit record, durable, with `last_used`, before
    /// anything leaves; then the key.
    pub(super) async fn hand_over(&self, opened: Opened) -> Result<Revealed, Refusal> {
        let Opened { ev, revealed } = opened;
        self.record(
            ev,
            vec![Write::TouchKey {
                id: revealed.id,
                at_us: now_us(),
            }],
        )
        .await?;
        Ok(revealed)
    }

    /// Loads what the reveal asks for. Another provider's key answers like
    /// a missing one; the record keeps the truth (`forbidden`).
    fn load(
        &self,
        caller: &Caller,
        target: &Target,
        ev: &mut AuditEvent,
    ) -> Result<KeyRecord, Refusal> {
        match target {
            Target::Id(id, _) => {
                let Ok(id) = Uuid::parse_str(id) else {
                    return Err(Refusal::NotFound(Missing::Key));
                };
                let rec = self
                    .store
                    .get_key(&id)
                    .map_err(Refusal::of_store)?
                    .ok_or(Refusal::NotFound(Missing::Key))?;
                if !caller.may_use_provider(&rec.provider) {
                    ev.key_id = Some(rec.id);
                    ev.provider = Some(rec.provider.clone());
                    return Err(Refusal::Beyond(Missing::Key));
                }
                Ok(rec)
            }
            Target::NewestOf(provider) => self.newest(caller, provider, None, ev),
            Target::Named(provider, name) => self.newest(caller, provider, Some(name), ev),
        }
    }

    /// The newest live (not lapsed, not deleted) key of `provider`, with
    /// `name` if given. Deleted keys are not in the provider index.
    fn newest(
        &self,
        caller: &Caller,
        provider: &str,
        name: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<KeyRecord, Refusal> {
        // A provider-limited caller is told the same whether the key is
        // missing or beyond its providers, and is not invited to store a
        // key that may well exist.
        let none = || {
            Refusal::NotFound(Missing::ProviderKey {
                provider: provider.chars().take(64).collect(),
                name: name.map(|n| n.chars().take(64).collect()),
                limited: caller.is_limited(),
            })
        };
        if !valid_provider(provider) {
            return Err(none());
        }
        if !caller.may_use_provider(provider) {
            return Err(none().beyond());
        }
        let now = now_us();
        let mut newest_expired = None;
        for item in self.store.provider_keys_newest_first(provider) {
            let rec = item.map_err(Refusal::of_store)?;
            if name.is_some_and(|n| n != rec.key_name) || rec.deleted_at_us.is_some() {
                continue;
            }
            if rec.expires_at_us.is_some_and(|e| e <= now) {
                newest_expired.get_or_insert(rec);
                continue;
            }
            return Ok(rec);
        }
        match newest_expired {
            Some(rec) => {
                ev.key_id = Some(rec.id);
                Err(Refusal::Expired)
            }
            None => Err(none()),
        }
    }
}
