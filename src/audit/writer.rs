//! Group commit: one writer thread takes records from a queue, chains the
//! whole batch, commits it in one transaction, fsyncs once, then answers
//! every waiter. Many concurrent reveals so share one fsync.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{AuditError, AuditEvent, AuditLog, AuditRecord};
use crate::store::Write;

/// Largest batch one fsync covers.
const MAX_BATCH: usize = 512;
/// Queue length; senders wait (bounded memory) when it is full.
const QUEUE: usize = 8192;

/// A job's life: waiting in the queue, taken into a batch by the writer,
/// or given up by its requester (then it is never written).
const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const CANCELLED: u8 = 2;

/// After a timeout, how long a requester still waits for a record the
/// writer already took into a batch.
const CLAIMED_GRACE: Duration = Duration::from_secs(2);

struct Job {
    event: AuditEvent,
    writes: Vec<Write>,
    done: oneshot::Sender<Result<u64, AuditError>>,
    state: Arc<AtomicU8>,
}

/// Observes each durable batch (metrics, anchors). Called on the writer
/// thread; keep it cheap.
pub(crate) type BatchObserver = Box<dyn Fn(&[AuditRecord], Duration) + Send + Sync>;

/// The handle request handlers use to append records durably.
#[derive(Clone)]
pub(crate) struct AuditWriter {
    tx: mpsc::Sender<Job>,
    timeout: Duration,
    healthy: Arc<AtomicBool>,
    /// Why the last batch (or probe) failed, for /healthz.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when a batch failed in a way no probe can clear (another node
    /// replaced the signing key): only a restart brings this node back.
    stuck: Arc<AtomicBool>,
    log: Arc<AuditLog>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Starts the writer thread. `timeout` bounds how long a request waits
    /// for its record to be durable.
    pub(crate) fn start(
        log: Arc<AuditLog>,
        timeout: Duration,
        observer: Option<BatchObserver>,
    ) -> AuditWriter {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let thread_log = log.clone();
        let thread_healthy = healthy.clone();
        let thread_error = last_error.clone();
        let stuck = Arc::new(AtomicBool::new(false));
        let thread_stuck = stuck.clone();
        let spawned = std::thread::Builder::new()
            .name("keyhold-audit".into())
            .spawn(move || {
                // A job its requester gave up on is dropped, never written.
                let claim = |j: &Job| {
                    j.state
                        .compare_exchange(PENDING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                };
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = Vec::new();
                    if claim(&first) {
                        jobs.push(first);
                    }
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) if claim(&j) => jobs.push(j),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    if jobs.is_empty() {
                        continue;
                    }
                    let batch: Vec<(AuditEvent, Vec<Write>)> = jobs
                        .iter_mut()
                        .map(|j| (j.event.clone(), std::mem::take(&mut j.writes)))
                        .collect();
                    let started = std::time::Instant::now();
                    let mut written = Vec::new();
                    let res = thread_log.append_with(&batch, |r| written.push(r.clone()));
                    match res {
                        Ok(seqs) => {
                            thread_healthy.store(true, Ordering::Relaxed);
                            set(&thread_error, None);
                            if let Some(obs) = &observer {
                                obs(&written, started.elapsed());
                            }
                            for (job, seq) in jobs.into_iter().zip(seqs) {
                                let _ = job.done.send(Ok(seq));
                            }
                        }
                        Err(e) => {
                            thread_healthy.store(false, Ordering::Relaxed);
                            set(&thread_error, Some(e.to_string()));
                            if matches!(e, AuditError::SignerReplaced) {
                                thread_stuck.store(true, Ordering::Relaxed);
                            }
                            tracing::error!(error = %e, records = jobs.len(), "audit batch failed; the requests it held were refused");
                            let msg = e.to_string();
                            for job in jobs {
                                let _ = job.done.send(Err(AuditError::WriteFailed(msg.clone())));
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit writer thread");
            healthy.store(false, Ordering::Relaxed);
        }
        AuditWriter {
            tx,
            timeout,
            healthy,
            last_error,
            stuck,
            log,
        }
    }

    /// Appends one record (with the writes that go with it) and waits until
    /// it is durable, at most the configured timeout.
    pub(crate) async fn record(
        &self,
        event: AuditEvent,
        writes: Vec<Write>,
    ) -> Result<u64, AuditError> {
        let (done, mut wait) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(PENDING));
        let job = Job {
            event,
            writes,
            done,
            state: state.clone(),
        };
        let outcome = |r: Result<Result<u64, AuditError>, oneshot::error::RecvError>| match r {
            Ok(res) => res,
            Err(_) => Err(AuditError::Stopped),
        };
        let fut = async {
            self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
            outcome((&mut wait).await)
        };
        let res = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                // Give the job up if the writer has not taken it yet: then
                // it is never written, and the 503 means "nothing happened".
                if state
                    .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(AuditError::Timeout);
                }
                // Taken into a batch: its fate is being decided now.
                match tokio::time::timeout(CLAIMED_GRACE, &mut wait).await {
                    Ok(r) => outcome(r),
                    Err(_) => Err(AuditError::Unknown),
                }
            }
        };
        if matches!(res, Err(AuditError::Stopped)) {
            self.healthy.store(false, Ordering::Relaxed);
        }
        res
    }

    /// False after the last batch failed or timed out, until one succeeds
    /// (or, on a shared database, a probe finds it answering again).
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Why the writer is failing, when it is (never a secret: store errors
    /// name what failed, never a credential).
    pub(crate) fn last_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Records what a probe of the store found: a database that answers
    /// again makes the writer healthy; one that does not, failing (its
    /// error, said by `/healthz`, is kept as text).
    pub(crate) fn probed<E: std::fmt::Display>(&self, result: Result<(), E>) {
        if self.stuck.load(Ordering::Relaxed) {
            return;
        }
        match result {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                set(&self.last_error, None);
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                set(&self.last_error, Some(e.to_string()));
            }
        }
    }

    pub(crate) fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }
}

fn set(slot: &std::sync::Mutex<Option<String>>, v: Option<String>) {
    match slot.lock() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome};
    use crate::keyring::Keyring;
    use crate::store::{KeyRecord, Store};
    use std::sync::atomic::AtomicUsize;

    /// An initialised on-disk store and its log.
    fn fresh_log() -> (tempfile::TempDir, Store, Keyring, Arc<AuditLog>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ring = Keyring::ephemeral();
        crate::unlock::initialise(&store, &ring).unwrap();
        let log = Arc::new(AuditLog::open(store.clone(), &ring).unwrap());
        (dir, store, ring, log)
    }

    #[test]
    fn a_log_ending_at_the_largest_seq_is_not_wrapped_to_the_start() {
        let (_dir, store, ring, _log) = fresh_log();
        // A record put at the last possible seq outside keyhold.
        store
            .put_entry("audit", &u64::MAX.to_be_bytes(), &[0, 1])
            .unwrap();
        let err = AuditLog::open(store.clone(), &ring).unwrap_err();
        assert!(err.to_string().contains("largest possible"), "{err}");
        assert_eq!(store.entries("audit").count(), 1, "nothing was written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_batches_and_get_contiguous_seqs() {
        let (_dir, store, _ring, log) = fresh_log();
        let batches = Arc::new(AtomicUsize::new(0));
        let b = batches.clone();
        let w = AuditWriter::start(
            log,
            Duration::from_secs(30),
            Some(Box::new(move |_, _| {
                b.fetch_add(1, Ordering::Relaxed);
            })),
        );
        let n = 256;
        let mut handles = Vec::new();
        for _ in 0..n {
            let w = w.clone();
            handles.push(tokio::spawn(async move {
                w.record(
                    AuditEvent::cli(Action::Reveal, Outcome::Success, None),
                    vec![],
                )
                .await
                .unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.push(h.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
        let batches = batches.load(Ordering::Relaxed);
        assert!(
            batches < n,
            "{n} records took {batches} fsyncs: no group commit"
        );
        let report = crate::audit::verify_store(&store, &w.log().verify_keys()).unwrap();
        assert!(report.is_ok(), "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_given_up_before_the_writer_took_it_is_never_written() {
        let (_dir, store, ring, log) = fresh_log();
        let w = AuditWriter::start(log.clone(), Duration::from_millis(500), None);
        // Stall the writer: hold every write back for a while.
        let (held, release) = std::sync::mpsc::channel::<()>();
        let l = log.clone();
        let staller = std::thread::spawn(move || {
            l.with_writes_paused(|| {
                let _ = release.recv();
            })
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A is taken by the writer (which then blocks); B waits in the queue.
        let wa = w.clone();
        let a = tokio::spawn(async move {
            wa.record(
                AuditEvent::cli(Action::Reveal, Outcome::Success, None),
                vec![],
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rec = KeyRecord::new(
            uuid::Uuid::new_v4(),
            "claude".into(),
            "b".into(),
            ring.encrypt(b"x"),
            1,
            None,
            None,
        );
        let b = w
            .record(
                AuditEvent::cli(Action::KeyCreate, Outcome::Success, None),
                vec![Write::PutKey(rec.clone())],
            )
            .await;
        assert!(matches!(b, Err(AuditError::Timeout)), "{b:?}");
        held.send(()).unwrap();
        staller.join().unwrap();
        // A was claimed before the timeout, so it lands (within the grace).
        assert!(a.await.unwrap().is_ok());
        // B was given up while queued: neither its record nor its key exist.
        let c = w
            .record(
                AuditEvent::cli(Action::Reveal, Outcome::Success, None),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(c, 2, "B took no seq");
        assert!(store.get_key(&rec.id).unwrap().is_none());
    }
}
