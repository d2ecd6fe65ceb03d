//! What the core's background work tells the operator in the log: the
//! chain's head as an off-box anchor, and keys about to lapse, in the
//! words the edge running the server gives (it names the commands that
//! help; the vault names none).

use std::time::Duration;

use crate::audit::{AuditRecord, PublicKey};

/// The words of what the background work tells the operator in the log
/// (a key lapsing soon, an off-box anchor), from the edge that runs the
/// server, which names the command that helps (the vault names none).
/// Until an edge gives them ([`Core::word_notes`]), [`NoteWords::PLAIN`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoteWords {
    /// A key lapses within 7 days (logged once a day per key, with its
    /// `key_id`, `provider`, `key_name` and `expires_at`).
    pub key_expiring: &'static str,
    /// The chain's head as an off-box anchor (`anchor` = `SEQ:MAC`, with
    /// `audit_public_key`).
    pub anchor: &'static str,
}

impl NoteWords {
    /// Words naming no command.
    pub(crate) const PLAIN: NoteWords = NoteWords {
        key_expiring: "a key expires within 7 days: store a new version of it before it lapses",
        anchor: "audit chain anchor (keep it off-box: the audit log's verification checks the \
                 log against it)",
    };
}

/// Off-box anchors: the chain head is written to the log at most once a
/// minute while records are being added (at the first batch, then when a
/// minute has passed and the head moved, from a batch or the timer), and
/// once at shutdown, so a log collector on another host holds anchors that
/// `keyhold audit verify --anchor SEQ:MAC` checks (a rollback of the whole
/// store to an older copy is then caught too).
#[derive(Default)]
pub(super) struct Anchors {
    /// When the last anchor was logged, and its seq.
    last: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
    /// The words of the operator's notes (anchors, lapsing keys).
    words: std::sync::OnceLock<NoteWords>,
}

impl Anchors {
    pub(super) const EVERY: Duration = Duration::from_secs(60);

    pub(super) fn offer(&self, seq: u64, mac: &[u8; 32], key: PublicKey) {
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let due = last.0.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if seq != 0 && seq != last.1 && due {
            *last = (Some(std::time::Instant::now()), seq);
            self.log_anchor(seq, mac, key);
        }
    }

    /// Offers the last record of a durable batch.
    pub(super) fn offer_batch(&self, records: &[AuditRecord]) {
        if let Some((r, sig)) = records.last().and_then(|r| Some((r, r.sig.as_ref()?))) {
            self.offer(r.seq, &r.mac, sig.key);
        }
    }

    /// Logs the chain's head `seq:mac` as an anchor (none for an empty
    /// log).
    pub(super) fn log_anchor(&self, seq: u64, mac: &[u8; 32], key: PublicKey) {
        if seq == 0 {
            return;
        }
        tracing::info!(
            anchor = %format!("{seq}:{}", crate::audit::hex(mac)),
            audit_public_key = %key,
            "{}",
            self.words().anchor
        );
    }

    /// Uses `words` from now on (set once; later calls are ignored: a
    /// second call has nothing to replace).
    pub(super) fn set_words(&self, words: NoteWords) {
        let _ = self.words.set(words);
    }

    /// The words of the operator's notes.
    pub(super) fn words(&self) -> NoteWords {
        self.words.get().copied().unwrap_or(NoteWords::PLAIN)
    }
}
