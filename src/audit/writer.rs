//! Group commit: one writer thread takes records from a queue, chains the
//! whole batch, commits it in one transaction, fsyncs once, then answers
//! every waiter. Many concurrent reveals so share one fsync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{AuditError, AuditEvent, AuditLog, AuditRecord};
use crate::store::Write;

/// Largest batch one fsync covers.
const MAX_BATCH: usize = 512;
/// Queue length; senders wait (bounded memory) when it is full.
const QUEUE: usize = 8192;

struct Job {
    event: AuditEvent,
    writes: Vec<Write>,
    done: oneshot::Sender<Result<u64, String>>,
}

/// Observes each durable batch (metrics, anchors). Called on the writer
/// thread; keep it cheap.
pub type BatchObserver = Box<dyn Fn(&[AuditRecord], Duration) + Send + Sync>;

/// The handle request handlers use to append records durably.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    timeout: Duration,
    healthy: Arc<AtomicBool>,
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
    pub fn start(
        log: Arc<AuditLog>,
        timeout: Duration,
        observer: Option<BatchObserver>,
    ) -> AuditWriter {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let thread_log = log.clone();
        let thread_healthy = healthy.clone();
        let spawned = std::thread::Builder::new()
            .name("keyhold-audit".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
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
                            if let Some(obs) = &observer {
                                obs(&written, started.elapsed());
                            }
                            for (job, seq) in jobs.into_iter().zip(seqs) {
                                let _ = job.done.send(Ok(seq));
                            }
                        }
                        Err(e) => {
                            thread_healthy.store(false, Ordering::Relaxed);
                            tracing::error!(error = %e, records = jobs.len(), "audit batch failed; the requests it held were refused");
                            let msg = e.to_string();
                            for job in jobs {
                                let _ = job.done.send(Err(msg.clone()));
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
            log,
        }
    }

    /// Appends one record (with the writes that go with it) and waits until
    /// it is durable, at most the configured timeout.
    pub async fn record(&self, event: AuditEvent, writes: Vec<Write>) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            event,
            writes,
            done,
        };
        let fut = async {
            self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
            match wait.await {
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(msg)) => Err(AuditError::WriteFailed(msg)),
                Err(_) => Err(AuditError::Stopped),
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(AuditError::Timeout)
            }
        }
    }

    /// False after the last batch failed or timed out, until one succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome};
    use crate::keyring::Keyring;
    use crate::store::Store;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_batches_and_get_contiguous_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ring = Keyring::ephemeral();
        let key = crate::audit::MacKey::generate().unwrap();
        store
            .initialise(&ring.encrypt(b"c"), &key.seal(&ring))
            .unwrap();
        let log = Arc::new(AuditLog::open(store.clone(), &ring).unwrap());
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
        let report = crate::audit::verify_store(&store, w.log().mac_key()).unwrap();
        assert!(report.is_ok(), "{report}");
    }
}
