//! Chain verification, shared by the store check and the export check.

use serde::Serialize;

use super::{hex, AuditRecord, Head, MacKey};

/// What is wrong at the first bad seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The record's bytes, or its MAC, or the head's MAC, are not authentic.
    Altered,
    /// One or more records are gone from the middle of the log.
    Missing,
    /// A record is not where its seq says it belongs.
    Reordered,
    /// The newest records are gone (the head says there were more).
    Truncated,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Altered => "altered",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
        }
    }
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VerifyReport {
    Ok {
        records: u64,
        head_seq: u64,
        head_mac: String,
        /// True for a filtered export: each record's MAC was checked, and
        /// gaps between records are expected.
        gaps_expected: bool,
        /// How many gaps between consecutive records (filtered exports).
        gaps: u64,
    },
    Broken {
        seq: u64,
        problem: Problem,
        detail: String,
    },
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        matches!(self, VerifyReport::Ok { .. })
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyReport::Ok {
                records,
                head_seq,
                head_mac,
                gaps_expected,
                gaps,
            } => {
                write!(
                    f,
                    "ok: {records} records, head seq {head_seq} mac {head_mac}"
                )?;
                if *gaps_expected {
                    write!(
                        f,
                        " (filtered export: each record's MAC checked; {gaps} gaps between records, which a filter makes; completeness not checked: use --complete for an unfiltered export)"
                    )?;
                }
                Ok(())
            }
            VerifyReport::Broken {
                seq,
                problem,
                detail,
            } => write!(f, "BROKEN at seq {seq}: {}: {detail}", problem.as_str()),
        }
    }
}

/// Feeds records in order; stops at the first problem.
pub struct ChainVerifier {
    key: MacKey,
    expected_seq: u64,
    prev: [u8; 32],
    count: u64,
    last_seq: u64,
    gaps_allowed: bool,
    gaps: u64,
    /// The seq of the store's chain head, and the mac found there.
    head_seq: Option<u64>,
    mac_at_head: Option<[u8; 32]>,
}

impl ChainVerifier {
    /// A verifier of a whole chain starting at seq 1.
    pub fn new(key: MacKey) -> ChainVerifier {
        ChainVerifier {
            key,
            expected_seq: 1,
            prev: super::GENESIS,
            count: 0,
            last_seq: 0,
            gaps_allowed: false,
            gaps: 0,
            head_seq: None,
            mac_at_head: None,
        }
    }

    /// A verifier of a store whose chain head (read before the walk) is at
    /// `head_seq`.
    pub fn for_store(key: MacKey, head_seq: Option<u64>) -> ChainVerifier {
        ChainVerifier {
            head_seq,
            ..ChainVerifier::new(key)
        }
    }

    /// A verifier of a filtered selection: each MAC, and increasing seqs.
    pub fn filtered(key: MacKey) -> ChainVerifier {
        ChainVerifier {
            gaps_allowed: true,
            ..ChainVerifier::new(key)
        }
    }

    /// A record as stored under key `stored_seq` (`None`: did not decode).
    pub fn feed_stored(
        &mut self,
        stored_seq: u64,
        rec: Option<AuditRecord>,
    ) -> Option<VerifyReport> {
        let Some(rec) = rec else {
            return Some(broken(
                stored_seq,
                Problem::Altered,
                "the stored record does not decode".into(),
            ));
        };
        if !self.mac_ok(&rec) {
            return Some(broken(
                stored_seq,
                Problem::Altered,
                "the record's MAC does not match its contents".into(),
            ));
        }
        if rec.seq != stored_seq {
            return Some(broken(
                stored_seq,
                Problem::Reordered,
                format!(
                    "the record stored at seq {stored_seq} is authentic record {}",
                    rec.seq
                ),
            ));
        }
        self.feed(rec)
    }

    fn mac_ok(&self, rec: &AuditRecord) -> bool {
        let want = self
            .key
            .record_mac(&rec.prev, rec.seq, rec.at_us, &rec.event);
        crate::access::digests_equal(&want, &rec.mac)
    }

    /// The next record in order.
    pub fn feed(&mut self, rec: AuditRecord) -> Option<VerifyReport> {
        if !self.mac_ok(&rec) {
            return Some(broken(
                rec.seq,
                Problem::Altered,
                "the record's MAC does not match its contents".into(),
            ));
        }
        if self.gaps_allowed {
            if self.count > 0 && rec.seq <= self.last_seq {
                return Some(broken(
                    rec.seq,
                    Problem::Reordered,
                    format!("seq {} comes after seq {}", rec.seq, self.last_seq),
                ));
            }
            let adjacent =
                self.last_seq.checked_add(1) == Some(rec.seq) && (self.count > 0 || rec.seq == 1);
            if adjacent {
                if let Some(b) = self.unlinked(&rec) {
                    return Some(b);
                }
            }
            if !adjacent {
                self.gaps += 1;
            }
        } else {
            if rec.seq > self.expected_seq {
                return Some(broken(
                    self.expected_seq,
                    Problem::Missing,
                    format!(
                        "records {}..={} are missing (the next record present is seq {})",
                        self.expected_seq,
                        rec.seq - 1,
                        rec.seq
                    ),
                ));
            }
            if rec.seq < self.expected_seq {
                return Some(broken(
                    rec.seq,
                    Problem::Reordered,
                    format!("seq {} comes after seq {}", rec.seq, self.expected_seq - 1),
                ));
            }
            if let Some(b) = self.unlinked(&rec) {
                return Some(b);
            }
        }
        if self.head_seq == Some(rec.seq) {
            self.mac_at_head = Some(rec.mac);
        }
        self.expected_seq = rec.seq.saturating_add(1);
        self.prev = rec.mac;
        self.last_seq = rec.seq;
        self.count += 1;
        None
    }

    /// The record does not link to the one before it.
    fn unlinked(&self, rec: &AuditRecord) -> Option<VerifyReport> {
        (!crate::access::digests_equal(&rec.prev, &self.prev)).then(|| {
            broken(
                rec.seq,
                Problem::Altered,
                format!(
                    "its prev does not match the mac of seq {}: a record before it was replaced",
                    rec.seq.saturating_sub(1)
                ),
            )
        })
    }

    /// Ends the walk of an export (no chain head to compare with).
    pub fn finish(self) -> VerifyReport {
        VerifyReport::Ok {
            records: self.count,
            head_seq: self.last_seq,
            head_mac: hex(&self.prev),
            gaps_expected: self.gaps_allowed,
            gaps: self.gaps,
        }
    }

    /// Ends the walk of a store against its chain head, read before the
    /// walk began. An initialised store always has a head (`init` writes
    /// records), so a missing one is damage. Records after the head were
    /// appended during the walk: they were checked like every other (MAC,
    /// seq, prev link), and the record at the head's seq must carry the
    /// head's mac.
    pub fn finish_store(self, head: Option<Head>) -> VerifyReport {
        let Some(head) = head else {
            return if self.count == 0 {
                broken(
                    1,
                    Problem::Truncated,
                    "the log is empty and its chain head is gone: every record was removed".into(),
                )
            } else {
                broken(
                    self.last_seq,
                    Problem::Altered,
                    "the chain head is missing from the store".into(),
                )
            };
        };
        if !self.key.head_is_authentic(&head) {
            return broken(
                head.seq,
                Problem::Altered,
                "the stored chain head's MAC is wrong".into(),
            );
        }
        if head.seq > self.last_seq {
            return broken(
                self.last_seq + 1,
                Problem::Truncated,
                format!(
                    "the chain head says the log ends at seq {} but the last record is seq {}: records {}..={} were removed",
                    head.seq,
                    self.last_seq,
                    self.last_seq + 1,
                    head.seq
                ),
            );
        }
        match self.mac_at_head {
            Some(mac) if crate::access::digests_equal(&head.mac, &mac) => self.finish(),
            _ => broken(
                head.seq,
                Problem::Altered,
                "the record at the chain head's seq differs from the head".into(),
            ),
        }
    }
}

fn broken(seq: u64, problem: Problem, detail: String) -> VerifyReport {
    VerifyReport::Broken {
        seq,
        problem,
        detail,
    }
}
