//! The vault a server opens once: [`Core`] owns the store, the live
//! keyring, the audit writer and its coalescer, the console's sessions,
//! the reveal limiter, the key policy and the maintenance lock. The HTTP
//! edge holds one and calls only its methods: each request's rules run in
//! a [`Vault`] view ([`Core::vault`]); the whole-store work (rotation,
//! reload, backup, the audit log's exports and verification, health) and
//! the background upkeep (`upkeep.rs`) are here.
//!
//! Not for: HTTP (statuses, headers, routes) or the command line.
//!
//! Over 500 lines: one owner of the server's state, with each whole-store
//! operation the HTTP edge used to do itself (rotation, reload, backup,
//! exports, verification, health) moved here as a method.

use std::sync::Arc;
use std::time::Duration;

use super::notes::Anchors;
use super::{Conflict, Origin, Refusal, Sink, Unfinished, Vault};
use crate::access::Caller;
use crate::audit::{
    self, Action, AuditEvent, AuditLog, AuditRecord, AuditWriter, BatchObserver, Coalescer,
    ConsoleViews, ExportFilter, ExportFormat, Exporter, Histogram, Outcome, Page, PublicKey, View,
};
use crate::keyring::{KeySource, Keyring, LiveKeyring};
use crate::limiter::{RevealLimiter, RevealRate};
use crate::ops::reload::ReloadRefused;
use crate::ops::rewrap::RotateReport;
use crate::store::{Store, StoreError};
use crate::wire::{KeyMeta, ReloadReport, VersionMeta};

/// What `keyhold serve` opened before the runtime started: the store
/// (unlocked), its keyring and audit log, and the reveal rate in force.
pub(crate) struct Opened {
    pub store: Store,
    pub keyring: Keyring,
    pub log: Arc<AuditLog>,
    /// On a shared database: the stored one.
    pub reveal_rate: RevealRate,
}

impl Opened {
    /// `serve --dev` (and the handlers' tests): an in-memory store under a
    /// random key, initialised with a first admin token named `admin_name`
    /// (returned, shown once).
    pub(crate) fn development(
        admin_name: &str,
        reveal_rate: RevealRate,
    ) -> Result<(Opened, crate::secret::SecretString), Refusal> {
        let keyring = Keyring::ephemeral();
        let store = Store::temporary().map_err(|e| Refusal::storage(&e))?;
        let token = super::initialise(&store, &keyring, admin_name)?.admin_token;
        let log =
            Arc::new(AuditLog::open(store.clone(), &keyring).map_err(|e| Refusal::storage(&e))?);
        let opened = Opened {
            store,
            keyring,
            log,
            reveal_rate,
        };
        Ok((opened, token))
    }
}

/// The policies a server runs its core with, checked once at start.
#[derive(Debug, Clone)]
pub(crate) struct CorePolicy {
    /// How long a request waits for its audit record to be durable.
    pub audit_timeout: Duration,
    /// A token's refusals, at most `count` a `period` before 429.
    pub refusal_budget: (std::num::NonZeroU32, Duration),
    /// A token's successful audited requests, at most `count` a `period`.
    pub record_budget: (std::num::NonZeroU32, Duration),
    pub key_policy: super::KeyPolicy,
}

/// Why a reload did not happen; the server keeps its keyring. No prose:
/// the edge that asked words it (`http::refusal_text::reload_refused`).
#[derive(Debug)]
pub(crate) enum ReloadError {
    /// A rotation, backup or reload is already running.
    Busy,
    /// A development server's keyring is a random key held in memory.
    Development,
    /// The keyring could not be read again.
    Keyring(crate::keyring::KeyringError),
    /// The new keyring lacks a key the store needs (the fix is named).
    StillNeeded(ReloadRefused),
    /// The reload was interrupted.
    Interrupted,
    /// Storage failed, the record could not be written, or the token's
    /// record budget is spent: the refusal to answer.
    Refused(Refusal),
}

impl From<crate::keyring::KeyringError> for ReloadError {
    fn from(e: crate::keyring::KeyringError) -> ReloadError {
        ReloadError::Keyring(e)
    }
}

/// How the server stands, for `/healthz`.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    /// The audit writer can make records durable.
    pub writer_ok: bool,
    /// Another node's rotation replaced the record keys: restart needed.
    pub keys_replaced: bool,
    /// This node's name on a shared database.
    pub node: Option<String>,
    /// Why it is not ok, when it is not.
    pub detail: Option<String>,
}

/// A page of the audit log, written whole.
#[derive(Debug)]
pub(crate) struct ExportPage {
    pub body: Vec<u8>,
    /// Another page follows.
    pub more: bool,
}

/// The server's vault: see the module's documentation.
pub(crate) struct Core {
    store: Store,
    keyring: LiveKeyring,
    audit: AuditWriter,
    coalescer: Coalescer,
    views: ConsoleViews,
    limiter: RevealLimiter,
    key_policy: super::KeyPolicy,
    /// Held by a rotation, a backup or a reload, so they do not overlap.
    maintenance: Arc<tokio::sync::Mutex<()>>,
    reveal_rate: RevealRate,
    anchors: Arc<Anchors>,
}

/// Called with the size and the time of each durable batch of records.
pub(crate) type OnBatch = Box<dyn Fn(usize, Duration) + Send + Sync>;

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    /// Starts the core of a server over what `keyhold serve` opened (in a
    /// tokio runtime: the audit writer's thread hands results back to it).
    /// `on_batch` sees the size and time of each durable batch of records
    /// (metrics); the core anchors the chain's head off-box from them.
    pub(crate) fn start(opened: Opened, policy: CorePolicy, on_batch: Option<OnBatch>) -> Core {
        let Opened {
            store,
            keyring,
            log,
            reveal_rate,
        } = opened;
        let limiter = if store.node().is_some() {
            RevealLimiter::shared(reveal_rate, store.clone())
        } else {
            RevealLimiter::new(reveal_rate)
        };
        let anchors = Arc::new(Anchors::default());
        let observer: BatchObserver = {
            let anchors = anchors.clone();
            Box::new(move |records: &[AuditRecord], elapsed: Duration| {
                if let Some(f) = &on_batch {
                    f(records.len(), elapsed);
                }
                anchors.offer_batch(records);
            })
        };
        Core {
            audit: AuditWriter::start(log, policy.audit_timeout, Some(observer)),
            anchors,
            keyring: LiveKeyring::new(keyring),
            coalescer: Coalescer::with_refusal_budget(
                policy.refusal_budget.0,
                policy.refusal_budget.1,
            )
            .with_record_budget(policy.record_budget.0, policy.record_budget.1),
            views: ConsoleViews::new(),
            limiter,
            key_policy: policy.key_policy,
            maintenance: Arc::new(tokio::sync::Mutex::new(())),
            reveal_rate,
            store,
        }
    }

    /// The vault as one request sees it (a snapshot of the live keyring: a
    /// reload swaps it for later requests only).
    pub(crate) fn vault(&self) -> Vault<'_> {
        Vault {
            store: &self.store,
            keyring: super::KeyringRef::Shared(self.keyring.load()),
            audit: Sink::Writer(&self.audit),
            coalescer: Some(&self.coalescer),
        }
    }

    /// The reveal limiter (per client address).
    pub(crate) fn limiter(&self) -> &RevealLimiter {
        &self.limiter
    }

    /// The reveal rate the server started with.
    pub(crate) fn reveal_rate(&self) -> RevealRate {
        self.reveal_rate
    }

    /// Versions kept and the recovery window of deleted keys.
    pub(crate) fn key_policy(&self) -> &super::KeyPolicy {
        &self.key_policy
    }

    /// A key's metadata as answered (with its last use).
    pub(crate) fn key_meta(
        &self,
        rec: &crate::store::KeyRecord,
        last_used: Option<i64>,
    ) -> KeyMeta {
        super::presented::key_meta(rec, last_used, &self.key_policy)
    }

    /// A key's metadata as answered after a change was committed, with its
    /// last use read from the store. The change is done: a failure to read
    /// the last use is logged and the answer goes without it, rather than a
    /// 503 that would invite a retry storing the change twice.
    pub(crate) fn key_meta_used(&self, rec: &crate::store::KeyRecord) -> KeyMeta {
        let used = match self.store.last_used(&rec.id) {
            Ok(used) => used,
            Err(e) => {
                tracing::warn!(error = %e, key_id = %rec.id, "could not read a key's last use for its answer; answered without it");
                None
            }
        };
        self.key_meta(rec, used)
    }

    /// A key's versions, oldest first, each with its state, as `caller`
    /// may see them.
    pub(crate) fn versions(
        &self,
        rec: &crate::store::KeyRecord,
        caller: &Caller,
    ) -> Vec<VersionMeta> {
        super::presented::versions_for(rec, self.key_policy.recovery_window_us, Some(caller))
    }

    /// How many keys the store holds (walks them if its count is unreadable:
    /// call it off the async workers).
    pub(crate) fn key_count(&self) -> usize {
        self.store.key_count()
    }

    /// How the server stands.
    pub(crate) fn health(&self) -> Health {
        let keys_replaced = self.store.record_keys_replaced();
        let writer_ok = self.audit.is_healthy();
        let detail = match self.audit.last_error().filter(|_| !writer_ok) {
            Some(why) => Some(why),
            None if keys_replaced => Some(StoreError::KeysReplaced.to_string()),
            None => None,
        };
        Health {
            writer_ok,
            keys_replaced,
            node: self.store.node().map(str::to_string),
            detail,
        }
    }

    /// The audit chain's head: its seq and MAC.
    pub(crate) fn audit_head(&self) -> (u64, [u8; 32]) {
        self.audit.log().head()
    }

    /// The key that signs the audit chain now.
    pub(crate) fn public_key(&self) -> PublicKey {
        self.audit.log().public_key()
    }

    /// A console session's page: whether it opens, joins or stands outside
    /// a session (see `audit::ConsoleViews`).
    pub(crate) fn console_view(&self, token: uuid::Uuid, session: &str) -> View {
        self.views.view(token, session, crate::time::now_us())
    }

    /// The record of a console session was written, or not.
    pub(crate) fn console_opened(&self, token: uuid::Uuid, session: &str, written: bool) {
        self.views.opened(token, session, written)
    }

    /// One page of the audit log (at most `Page::MAX_LIMIT` records),
    /// written whole, off the async workers.
    pub(crate) async fn export_page(
        &self,
        filter: ExportFilter,
        format: ExportFormat,
        page: Page,
    ) -> Result<ExportPage, Refusal> {
        let store = self.store.clone();
        crate::blocking::run(move || {
            let mut body = Vec::new();
            Exporter::new(&store, filter, format)
                .page(page)
                .write_page(&mut body, |_| {})
                .map(|w| ExportPage { body, more: w.more })
        })
        .await
        .map_err(|_| Refusal::Unavailable(Unfinished::ExportInterrupted))?
        .map_err(|e| match e {
            audit::ExportError::Store(e) => Refusal::storage(&e),
            _ => Refusal::Unavailable(Unfinished::PageNotEncoded),
        })
    }

    /// The whole export (past the filters), as a producer that writes it to
    /// `out` on a blocking thread.
    pub(crate) fn export_to(
        &self,
        filter: ExportFilter,
        format: ExportFormat,
        page: Page,
    ) -> impl FnOnce(&mut dyn std::io::Write) -> Result<(), audit::ExportError> + Send + 'static
    {
        let store = self.store.clone();
        move |out| {
            Exporter::new(&store, filter, format)
                .page(page)
                .write_to(out, |_| {})
                .map(|_| ())
        }
    }

    /// Attempts per bucket of `bucket_secs` and outcome, past the filters.
    pub(crate) async fn histogram(
        &self,
        filter: ExportFilter,
        bucket_secs: i64,
    ) -> Result<Histogram, Refusal> {
        let store = self.store.clone();
        crate::blocking::run(move || {
            Exporter::new(&store, filter, ExportFormat::Jsonl).histogram(bucket_secs)
        })
        .await
        .map_err(|_| Refusal::Unavailable(Unfinished::CountInterrupted))?
        .map_err(|e| match e {
            audit::ExportError::Store(e) => Refusal::storage(&e),
            _ => Refusal::Unavailable(Unfinished::CountFailed),
        })
    }

    /// Verifies the whole stored audit chain.
    pub(crate) async fn verify_log(&self) -> Result<audit::VerifyReport, Refusal> {
        let store = self.store.clone();
        let keys = self.audit.log().verify_keys();
        crate::blocking::run(move || audit::verify_store(&store, &keys))
            .await
            .map_err(|_| Refusal::Unavailable(Unfinished::VerifyInterrupted))?
            .map_err(|e| Refusal::storage(&e))
    }

    /// Rotates everything under the newest key (one keyring for the whole
    /// rotation, whatever a reload does meanwhile), then records it.
    pub(crate) async fn rotate(
        &self,
        origin: &Origin,
        caller: &Caller,
    ) -> Result<RotateReport, Refusal> {
        let Ok(_guard) = self.maintenance.try_lock() else {
            return Err(self.busy(origin, caller, Action::Rotate).await);
        };
        let (store, log) = (self.store.clone(), self.audit.log().clone());
        let ring = self.keyring.load();
        let name = caller.name.clone();
        let rotated = crate::blocking::run(move || {
            super::rotate_store(&store, &ring, &log, &name, Duration::ZERO, |_| {})
        })
        .await
        .map_err(|_| Refusal::Unavailable(Unfinished::RotationInterrupted))??;
        self.vault()
            .record_rotation(origin, Some(caller), &rotated)
            .await?;
        Ok(rotated.report)
    }

    /// Reads the keyring again from its source (FERNET_KEY_FILE is read
    /// again, KEYHOLD_KEY_COMMAND run again; FERNET_KEY(S) cannot change
    /// in a running process) and puts it in use, unless something the
    /// store needs would no longer open with it. `ev` says who asked and
    /// is recorded, durably, before the new keyring is used.
    pub(crate) async fn reload(&self, mut ev: AuditEvent) -> Result<ReloadReport, ReloadError> {
        let Ok(_guard) = self.maintenance.try_lock() else {
            return Err(ReloadError::Busy);
        };
        let old = self.keyring.load();
        if *old.source() == KeySource::Ephemeral {
            return Err(ReloadError::Development);
        }
        let store = self.store.clone();
        let new = crate::blocking::run(move || {
            let new = Keyring::from_env()?;
            crate::ops::reload::check_replacement(&store, &new).map_err(|e| match e {
                ReloadRefused::Store(e) => ReloadError::Refused(Refusal::storage(&e)),
                still => ReloadError::StillNeeded(still),
            })?;
            Ok::<_, ReloadError>(new)
        })
        .await
        .map_err(|_| ReloadError::Interrupted)??;
        let report = ReloadReport {
            source: new.source().to_string(),
            fingerprints: new.fingerprints(),
            previous: old.fingerprints(),
            changed: new.fingerprints() != old.fingerprints(),
        };
        ev.action = Action::Reload;
        ev.outcome = Outcome::Success;
        ev.detail = Some(format!(
            "keyring from {}: keys {} (before: {})",
            report.source,
            report.fingerprints.join(","),
            report.previous.join(",")
        ));
        self.vault()
            .record(ev, vec![])
            .await
            .map_err(ReloadError::Refused)?;
        self.keyring.replace(new);
        tracing::info!(
            source = %report.source,
            keys = %report.fingerprints.join(","),
            previous = %report.previous.join(","),
            changed = report.changed,
            "keyring reloaded"
        );
        Ok(report)
    }

    /// A backup of the whole store for `caller`, recorded first: one
    /// consistent snapshot copied into a private, already unlinked
    /// temporary file while writes are held back (local disk speed), then
    /// handed over with the maintenance lock, which is held until the
    /// caller has sent it.
    pub(crate) async fn backup(
        &self,
        origin: &Origin,
        caller: &Caller,
    ) -> Result<(std::fs::File, tokio::sync::OwnedMutexGuard<()>), Refusal> {
        let Ok(guard) = self.maintenance.clone().try_lock_owned() else {
            return Err(self.busy(origin, caller, Action::Backup).await);
        };
        let ev = self
            .vault()
            .event(origin, Action::Backup, Some(caller), Outcome::Success);
        self.vault().record(ev, vec![]).await?;
        let (store, log, ring) = (
            self.store.clone(),
            self.audit.log().clone(),
            self.keyring.load(),
        );
        let file = crate::blocking::run(
            move || -> Result<std::fs::File, crate::ops::backup::BackupError> {
                let file = private_temp_file()?;
                log.with_writes_paused(|| crate::ops::backup::write_backup(&store, &ring, &file))?;
                Ok(file)
            },
        )
        .await
        .map_err(|_| Refusal::Unavailable(Unfinished::BackupInterrupted))?
        .map_err(|e| Refusal::storage(&e))?;
        Ok((file, guard))
    }

    /// After a purge (or versions dropped beyond the cap): rewrites the
    /// store's files so that none holds the destroyed ciphertexts, off the
    /// async workers, and says in the log how it went. A failure leaves
    /// the rewrite due: the next upkeep pass tries again.
    pub(crate) async fn scrub_removed(self: &Arc<Self>) {
        let core = self.clone();
        match tokio::task::spawn_blocking(move || core.vault().scrub_if_due()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some((took, paused)))) => tracing::info!(
                took_ms = took.as_millis() as u64,
                paused_ms = paused.as_millis() as u64,
                "rewrote the store's files: no file holds the destroyed keys' ciphertexts"
            ),
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "the rewrite of the store's files after destroying keys did not finish (their \
                 ciphertexts may linger on disk); retried at the next housekeeping pass"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the store rewrite stopped; retried at the next housekeeping pass")
            }
        }
    }

    /// At shutdown: writes the attempts counted but not yet recorded,
    /// flushes the store and logs the chain's head as an anchor.
    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let pending = self.coalescer.drain(0, true);
        if !pending.is_empty() {
            let batch: Vec<_> = pending.into_iter().map(|d| (d.event, vec![])).collect();
            if let Err(e) = self.audit.log().append(&batch) {
                tracing::error!(error = %e, "could not write the last coalesced audit records");
            }
        }
        self.store.flush_async().await?;
        let (seq, mac) = self.audit_head();
        self.anchors.log_anchor(seq, &mac, self.public_key());
        Ok(())
    }

    /// Refuses `action` because a rotation, backup or reload is running,
    /// recording the refusal.
    async fn busy(&self, origin: &Origin, caller: &Caller, action: Action) -> Refusal {
        let vault = self.vault();
        let ev = vault.event(origin, action, Some(caller), Outcome::Forbidden);
        vault
            .refused(origin, ev, Refusal::Conflict(Conflict::MaintenanceRunning))
            .await
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for the edge's tests that change it behind the vault's
    /// back (tampering).
    #[cfg(test)]
    pub(crate) fn store_for_tests(&self) -> &Store {
        &self.store
    }

    pub(super) fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    pub(super) fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    pub(super) fn anchors(&self) -> &Anchors {
        &self.anchors
    }
}

/// A read-write temporary file, mode 0600, already unlinked: it vanishes
/// with its last handle, whatever happens.
fn private_temp_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!("keyhold-backup-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
