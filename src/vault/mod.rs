//! The vault's rules, usable without HTTP or a terminal.
//!
//! A server opens one [`Core`] (`core.rs`): it owns the store, the live
//! keyring, the audit writer and coalescer, the limiter, the policies and
//! the maintenance lock, runs the background upkeep (`upkeep.rs`), and is
//! the HTTP edge's only door to them. Each request runs in a [`Vault`]
//! view of it. An offline command opens an [`Offline`] instead
//! (`offline.rs`: the store with its keyring checked, the audit log, each
//! offline command's work; `offline_store.rs`: init, restore, migrate;
//! `offline_audit.rs`: verifying an export; `offline_error.rs`: the one
//! error it fails with), and is the command line's only door.
//!
//! Over 500 lines: the view's one recording path (a record, the record and
//! refusal budgets, a refusal recorded and marked, the token check) reads
//! as one sequence here; each rule that uses it has a file of its own.
//!
//! Every rule of keyhold that an edge (an HTTP handler, a CLI command)
//! used to write itself lives here: the audit-first reveal (`reveal.rs`),
//! storing and deleting keys (`keys.rs`), minting and revoking access
//! tokens (`tokens.rs`, over their records in `token_records.rs`),
//! rotation (`rotate.rs`), initialising a store (`offline_store.rs`, over
//! `crate::unlock`, which also opens one). The edges extract what a
//! request or a command says, call the core, and present what it answers: a value, or
//! a [`Refusal`]: typed data, no prose, which maps once to an audit
//! outcome ([`Refusal::outcome`]); each edge words it (`http::refusal_text`
//! with its status in `http::error`; `cli::refusal` with its exit code).
//!
//! A reveal, read top to bottom in [`Vault::reveal`]: limiter verdict →
//! caller → scope → load → expiry → decrypt → audit (durable) → revealed.
//! A batch reveal (`reveal_batch.rs`) runs each key through the same
//! steps, all or nothing.
//!
//! Not for: transport, request parsing or presentation.

mod core;
mod keys;
mod notes;
mod offline;
mod offline_audit;
mod offline_error;
mod offline_store;
mod presented;
mod refusal;
mod reveal;
mod reveal_batch;
mod rotate;
mod token_records;
mod tokens;
mod upkeep;
mod versions;

pub(crate) use self::core::Core;

pub(crate) use self::core::CorePolicy;

pub(crate) use self::core::Opened;

pub(crate) use self::core::ReloadError;
/// Caller text as a record keeps it (no control or format character, no
/// token or secret-like word whole, at most 200 characters).
pub(crate) use crate::audit::record_text;
/// A reload refused because the new keyring lacks a key the store needs.
pub(crate) use crate::ops::reload::ReloadRefused;
/// What the core's storage can fail with (the server's shutdown flush).
pub(crate) use crate::store::StoreError;
pub(crate) use keys::{
    KeyFilter, KeyPolicy, KeyPolicyError, NewKey, NewVersion, EXPIRING_WITHIN_DAYS, MAX_API_KEY,
};
pub(crate) use notes::NoteWords;
pub(crate) use refusal::{
    Conflict, Denied, EveryProvider, Invalid, Missing, Refusal, Removed, Tampered, Unauthenticated,
    Unfinished,
};
pub(crate) use reveal::{RevealRequest, Revealed, Target};
pub(crate) use reveal_batch::{BatchRefusal, MAX_BATCH};
pub(crate) use rotate::{rotate_store, Rotated};
/// A token record made the way `token create` makes it, not yet written:
/// for the test suite, which stores records an older keyhold wrote.
#[doc(hidden)]
pub use token_records::prepare as prepare_token;
/// Why a token operation was refused (worded by the edges).
pub(crate) use token_records::TokenError;
pub(crate) use tokens::{ListedToken, MintedToken, TokenRequest};

// The offline door: what a command opens instead of a store.
pub(crate) use offline::{holds_store, CheckReport, Location, Offline, OfflineError, RetiredKey};
pub(crate) use offline_audit::{parse_anchor, verify_export, Anchor};
pub(crate) use offline_store::{
    init_store, initialise, inspect_backup, inspect_backup_file, restore, BackupSummary, Migration,
    BACKUP_MAGIC,
};

// The data the edges read and write through the core (the modules that
// define them are the core's own).
pub(crate) use crate::audit::views::MAX_PAGE;
pub(crate) use crate::audit::{hex, valid_session_id};
pub(crate) use crate::audit::{
    Action, AuditEvent, ExportFilter, ExportFormat, Outcome, Page, PublicKey, VerifyKeys,
    VerifyReport, View,
};
pub(crate) use crate::ops::backup::BackupInfo;
pub(crate) use crate::ops::import::{ImportFormat, ImportOptions};
pub(crate) use crate::store::{DatabaseUrl, DatabaseUrlArg, PgOptions, DEFAULT_CACHE_BYTES};

use crate::access::{self, Caller};
use crate::audit::{AuditError, AuditLog, AuditWriter, Coalescer};
use crate::keyring::Keyring;
use crate::store::{Store, Write};

/// Where the vault's audit records go: the server's group-commit writer,
/// or an offline command's log.
#[derive(Clone, Copy)]
pub(crate) enum Sink<'a> {
    Writer(&'a AuditWriter),
    Log(&'a AuditLog),
}

impl Sink<'_> {
    /// Appends one record (with the writes it records) durably.
    pub(crate) async fn record(
        &self,
        event: AuditEvent,
        writes: Vec<Write>,
    ) -> Result<u64, AuditError> {
        match self {
            Sink::Writer(w) => w.record(event, writes).await,
            Sink::Log(l) => l
                .append(&[(event, writes)])
                .map(|seqs| seqs.first().copied().unwrap_or(0)),
        }
    }
}

/// Who is asking, as the audit log records it.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub request_id: String,
    /// The client address the request is attributed to (`local` offline).
    pub ip: String,
    /// The TCP peer, when it differs from `ip` (a trusted proxy).
    pub peer: Option<String>,
    /// What the limiter and the flood counter key the client by.
    pub client: String,
    /// The operator running an offline command (recorded as `cli`).
    pub operator: bool,
    /// Set when the vault records (or counts, or decides against
    /// recording) a refusal it hands back for this request, so that the
    /// edge records no more of it.
    pub mark: RefusalMark,
}

/// Whether the vault decided the record of a refusal it handed back: only
/// the vault sets it (as it records), the edge that keeps it reads it.
#[derive(Clone, Debug, Default)]
pub(crate) struct RefusalMark(Option<std::sync::Arc<std::sync::atomic::AtomicBool>>);

impl RefusalMark {
    /// A mark for one request.
    pub(crate) fn new() -> RefusalMark {
        RefusalMark(Some(Default::default()))
    }

    /// Notes that a refusal's record was decided (vault only).
    fn set(&self) {
        if let Some(m) = &self.0 {
            m.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether a refusal's record was decided since the last take; clears
    /// the mark.
    pub(crate) fn take(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|m| m.swap(false, std::sync::atomic::Ordering::SeqCst))
    }
}

impl Origin {
    /// The server's own housekeeping (purges after the recovery window).
    pub(crate) fn housekeeping() -> Origin {
        Origin {
            request_id: uuid::Uuid::new_v4().to_string(),
            ip: "local".into(),
            peer: None,
            client: "housekeeping".into(),
            operator: false,
            mark: RefusalMark::default(),
        }
    }

    /// An offline command run by the operator.
    pub(crate) fn cli() -> Origin {
        Origin {
            request_id: uuid::Uuid::new_v4().to_string(),
            ip: "local".into(),
            peer: None,
            client: "local".into(),
            operator: true,
            mark: RefusalMark::default(),
        }
    }
}

/// The keyring a vault view uses: an offline command's own, or a snapshot
/// of a server's live keyring (a reload swaps it for later requests only).
#[derive(Clone)]
pub(crate) enum KeyringRef<'a> {
    Borrowed(&'a Keyring),
    Shared(std::sync::Arc<Keyring>),
}

impl std::ops::Deref for KeyringRef<'_> {
    type Target = Keyring;
    fn deref(&self) -> &Keyring {
        match self {
            KeyringRef::Borrowed(k) => k,
            KeyringRef::Shared(k) => k,
        }
    }
}

impl<'a> From<&'a Keyring> for KeyringRef<'a> {
    fn from(k: &'a Keyring) -> KeyringRef<'a> {
        KeyringRef::Borrowed(k)
    }
}

/// The vault as one request or command sees it: the store, the keyring,
/// where audit records go and, on a server, the counter of flooding
/// attempts.
#[derive(Clone)]
pub(crate) struct Vault<'a> {
    pub store: &'a Store,
    pub keyring: KeyringRef<'a>,
    pub audit: Sink<'a>,
    /// Rate-limited and unauthenticated reveals are counted here (one
    /// record per client, outcome and second) instead of written one by
    /// one; offline there is none and each is written.
    pub coalescer: Option<&'a Coalescer>,
}

impl Vault<'_> {
    /// A base audit event of `action` for `origin`.
    pub(crate) fn event(
        &self,
        origin: &Origin,
        action: Action,
        caller: Option<&Caller>,
        outcome: Outcome,
    ) -> AuditEvent {
        AuditEvent {
            request_id: origin.request_id.clone(),
            action,
            key_id: None,
            provider: None,
            caller: match caller {
                Some(c) => c.name.clone(),
                None if origin.operator => "cli".to_string(),
                None => "anonymous".to_string(),
            },
            caller_id: caller.map(|c| c.id),
            ip: origin.ip.clone(),
            peer: origin.peer.clone(),
            outcome,
            count: None,
            detail: None,
        }
    }

    /// Writes a record durably; a failure is the refusal that nothing was
    /// served.
    ///
    /// On a server, a token's successful requests (reveals excepted: they
    /// have the per-client reveal rate; rotations excepted: their record
    /// follows what is done) take one from the token's record budget
    /// first. Past it nothing is written with the record (so nothing is
    /// done), the attempt is counted coalesced as `rate_limited`, and the
    /// answer is 429.
    pub(crate) async fn record(
        &self,
        event: AuditEvent,
        writes: Vec<Write>,
    ) -> Result<u64, Refusal> {
        let event = self.spend_record_budget(event)?;
        self.record_budgeted(event, writes).await
    }

    /// As [`Vault::record`], for an event that already took its budget
    /// ([`Vault::spend_record_budget`]).
    pub(crate) async fn record_budgeted(
        &self,
        event: AuditEvent,
        writes: Vec<Write>,
    ) -> Result<u64, Refusal> {
        let shown = Some(event.outcome.as_str());
        self.record_shown(event, writes, shown).await
    }

    /// Takes one from the token's record budget for `event` (a token's
    /// success other than a reveal or a rotation; on a server), and hands
    /// the event back. Past the budget the attempt is counted coalesced as
    /// `rate_limited` and the refusal is a 429. A console page counted
    /// into its session (see `audit::ConsoleViews`) takes from it too,
    /// though it writes no record of its own.
    pub(crate) fn spend_record_budget(&self, event: AuditEvent) -> Result<AuditEvent, Refusal> {
        if let (Some(c), Some(token), Outcome::Success) =
            (self.coalescer, event.caller_id, event.outcome)
        {
            if !matches!(event.action, Action::Reveal | Action::Rotate) {
                if let Err(retry) = c.take_record(token) {
                    let mut event = event;
                    event.outcome = Outcome::RateLimited;
                    event.detail = Some(format!(
                        "answered 429, not done: the token's record budget is spent{}",
                        event
                            .detail
                            .take()
                            .map(|d| format!("; {d}"))
                            .unwrap_or_default()
                    ));
                    let key = format!("token {token} {} spent", event.action.as_str());
                    c.add(&key, event, crate::time::now_us());
                    return Err(Refusal::TooManyRecords(retry));
                }
            }
        }
        Ok(event)
    }

    /// As [`Vault::record`], a reveal counted in the metrics as `shown`
    /// (none: not counted).
    async fn record_shown(
        &self,
        event: AuditEvent,
        writes: Vec<Write>,
        shown: Option<&'static str>,
    ) -> Result<u64, Refusal> {
        if let (Action::Reveal, Some(shown)) = (event.action, shown) {
            metrics::counter!("keyhold_reveals_total", "outcome" => shown).increment(1);
        }
        self.audit.record(event, writes).await.map_err(|e| {
            tracing::error!(error = %e, "audit write failed");
            Refusal::AuditUnavailable
        })
    }

    /// Records a refusal (coalesced and budgeted for a token on a server,
    /// see [`Vault::refuse`]) and hands back what to answer.
    pub(crate) async fn refused(
        &self,
        origin: &Origin,
        event: AuditEvent,
        refusal: Refusal,
    ) -> Refusal {
        self.refuse(origin, event, refusal).await
    }

    /// `checked`, or its refusal recorded as one of `action` by `caller`
    /// (none: the operator offline). A failure of storage or of the audit
    /// log is no refusal of the caller and passes unrecorded.
    async fn recorded<T>(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        action: Action,
        checked: Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        match checked {
            Ok(v) => Ok(v),
            Err(r @ (Refusal::Storage | Refusal::AuditUnavailable | Refusal::Unavailable(_))) => {
                Err(r)
            }
            Err(r) => {
                let mut ev = self.event(origin, action, caller, r.outcome());
                ev.detail = Some(format!("refused: {}", r.audit_detail()));
                Err(self.refuse(origin, ev, r).await)
            }
        }
    }

    /// Records a refusal the edge gave itself (a body, query or path that
    /// does not fit) as [`Vault::refused`] does, but never counted in the
    /// reveal metric: a malformed request is no reveal refused.
    pub(crate) async fn edge_refused(
        &self,
        origin: &Origin,
        event: AuditEvent,
        refusal: Refusal,
    ) -> Refusal {
        self.refuse_counted(origin, event, refusal, false).await
    }

    /// Records a refusal of `action` and hands it back.
    async fn refuse(&self, origin: &Origin, event: AuditEvent, refusal: Refusal) -> Refusal {
        self.refuse_counted(origin, event, refusal, true).await
    }

    /// As [`Vault::refuse`]; `metric`: a reveal's refusal is counted in
    /// `keyhold_reveals_total`.
    async fn refuse_counted(
        &self,
        origin: &Origin,
        mut event: AuditEvent,
        mut refusal: Refusal,
        metric: bool,
    ) -> Refusal {
        origin.mark.set();
        event.outcome = refusal.outcome();
        // A server counts an authenticated caller's refusals (one record
        // per token, action, target, outcome and second) against the
        // token's budget. Past it, the answer is 429 but the record keeps
        // what was refused and why (its outcome), per token, action and
        // outcome only, so a flood of targets writes no more records.
        // Coalesced records are written within a second (and at shutdown).
        if let (Some(c), Some(token)) = (self.coalescer, event.caller_id) {
            let spent = c.take_refusal(token).err();
            // A record that failed its integrity check is written on its
            // own, before the answer, while the token is in budget.
            if event.outcome == Outcome::Tampered && spent.is_none() {
                let shown = metric.then_some(event.outcome.as_str());
                return match self.record_shown(event, vec![], shown).await {
                    Ok(_) => refusal,
                    Err(unavailable) => unavailable,
                };
            }
            if metric && event.action == Action::Reveal {
                let shown = match (&refusal, spent) {
                    (_, Some(_)) => Outcome::RateLimited.as_str(),
                    (Refusal::Beyond(_), None) => Outcome::NotFound.as_str(),
                    _ => event.outcome.as_str(),
                };
                metrics::counter!("keyhold_reveals_total", "outcome" => shown).increment(1);
            }
            let target = match (spent, event.key_id, &event.provider) {
                (Some(_), _, _) => "answered 429".to_string(),
                (None, Some(id), _) => id.to_string(),
                (None, None, Some(p)) => p.clone(),
                _ => String::new(),
            };
            if let Some(retry) = spent {
                refusal = Refusal::TooManyRefusals(retry);
                let why = event
                    .detail
                    .take()
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default();
                event.detail = Some(format!(
                    "answered 429: the token's refusal budget is spent{why}"
                ));
            }
            let key = format!("token {token} {} {target}", event.action.as_str());
            c.add(&key, event, crate::time::now_us());
            return refusal;
        }
        // The metrics tell apart no more than the answer does: a key
        // beyond the caller's providers counts as not found (the audit
        // record says `forbidden`).
        let shown = match refusal {
            Refusal::Beyond(_) => Outcome::NotFound.as_str(),
            _ => event.outcome.as_str(),
        };
        let shown = metric.then_some(shown);
        match self.record_shown(event, vec![], shown).await {
            Ok(_) => refusal,
            Err(unavailable) => unavailable,
        }
    }

    /// Counts a refused attempt that a flood could repeat (rate-limited,
    /// unauthenticated, an expired token): on a server one record per
    /// client, outcome and second (a reveal counted in the metrics too);
    /// offline, written.
    pub(super) async fn count_refused(
        &self,
        origin: &Origin,
        mut ev: AuditEvent,
        refusal: Refusal,
    ) -> Refusal {
        ev.outcome = refusal.outcome();
        origin.mark.set();
        match self.coalescer {
            Some(c) => {
                if ev.action == Action::Reveal {
                    metrics::counter!("keyhold_reveals_total", "outcome" => ev.outcome.as_str())
                        .increment(1);
                }
                c.add(&origin.client, ev, crate::time::now_us());
                refusal
            }
            None => self.refuse(origin, ev, refusal).await,
        }
    }

    /// The caller a bearer token stands for. `token` is what the edge
    /// could read (or why it could read none). A token whose stored record
    /// failed its integrity check is refused and recorded here, whatever
    /// the action.
    pub(crate) async fn authenticate(
        &self,
        origin: &Origin,
        token: Result<&str, Refusal>,
    ) -> Result<Caller, Refusal> {
        let token = token?;
        match check(self.store, token, crate::time::now_us()) {
            Ok(Checked::Valid(c)) => Ok(c),
            Ok(Checked::Unknown) => Err(Refusal::Unauthenticated(Unauthenticated::UnknownToken)),
            Ok(Checked::Expired {
                caller,
                at_us,
                rotated,
            }) => {
                let at = crate::time::to_rfc3339(at_us);
                let refusal = Refusal::TokenExpired { at_us, rotated };
                let mut ev = self.event(
                    origin,
                    Action::Authenticate,
                    Some(&caller),
                    Outcome::Expired,
                );
                ev.detail = Some(format!("token {} expired at {at}", caller.id));
                Err(self.count_refused(origin, ev, refusal).await)
            }
            Err(StoreError::Tampered { .. }) => {
                let mut ev = self.event(origin, Action::Authenticate, None, Outcome::Tampered);
                ev.detail = Some(
                    "the token's stored record failed its integrity check (planted, edited or \
                     moved outside keyhold); refused"
                        .into(),
                );
                Err(self.refuse(origin, ev, Refusal::TamperedToken).await)
            }
            Err(e) => Err(Refusal::storage(&e)),
        }
    }
}

/// What a presented token turned out to be.
#[derive(Debug)]
pub(crate) enum Checked {
    /// A live token: the caller it stands for.
    Valid(Caller),
    /// A known token whose expiry has passed (the caller it stood for,
    /// for the audit record; never to be served).
    Expired {
        caller: Caller,
        at_us: i64,
        rotated: bool,
    },
    /// Unknown, malformed or revoked.
    Unknown,
}

/// Checks a presented token at `now_us`.
pub(crate) fn check(store: &Store, token: &str, now_us: i64) -> Result<Checked, StoreError> {
    if !access::well_formed(token) {
        return Ok(Checked::Unknown);
    }
    // The token is looked up by its SHA-256: no comparison ever touches
    // the token itself, and the store compares digests, whose timing
    // reveals nothing usable about a token (SHA-256 cannot be inverted).
    let hash = access::hash_token(token);
    let Some((_, rec)) = store.get_token(&hash)? else {
        return Ok(Checked::Unknown);
    };
    if rec.revoked_at_us.is_some() {
        return Ok(Checked::Unknown);
    }
    let expired = rec.expires_at_us.filter(|e| *e <= now_us);
    let rotated = rec.rotated_to.is_some();
    let caller = Caller {
        id: rec.id,
        name: rec.name,
        scopes: rec.scopes,
        providers: rec.providers,
    };
    Ok(match expired {
        Some(at_us) => Checked::Expired {
            caller,
            at_us,
            rotated,
        },
        None => Checked::Valid(caller),
    })
}

#[cfg(test)]
mod tests;
