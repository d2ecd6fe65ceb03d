//! Chain verification, shared by the store check and the export check.
//!
//! A verifier holds whatever keys its user has ([`VerifyKeys`]): the
//! keyring's (MAC key of older records, tag key) and trusted public keys.
//! For every record it checks the hash (V2) or MAC (V1, when the MAC key is
//! there), the link to the record before, each signature, and at the end
//! that every V2 record is covered by a signature of a trusted key (one
//! signature covers every record before it through the hash chain). A
//! hand-over record signed by a trusted key makes the key it names
//! trusted from there on.
//!
//! Over 500 lines: one walk serves the store check and the export check,
//! and its rules (links, hashes, signatures, hand-overs, the head) must
//! read as one.

use serde::Serialize;

use super::{hex, record_tag, Action, AuditRecord, Head, PublicKey, VerifyKeys, HAND_OVER_PREFIX};

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
    /// Records no signature of a trusted key covers (forged after the
    /// last signature, or signed by a key the verifier does not trust).
    Unsigned,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Altered => "altered",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::Unsigned => "unsigned",
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
        /// The trusted key whose newest signature covers the records.
        #[serde(skip_serializing_if = "Option::is_none")]
        signed_by: Option<String>,
        /// Records from before schema 3 (HMAC-chained) whose contents were
        /// not checked because the MAC key (the keyring) was not at hand.
        legacy_unchecked: u64,
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
                signed_by,
                legacy_unchecked,
            } => {
                write!(
                    f,
                    "ok: {records} records, head seq {head_seq} mac {head_mac}"
                )?;
                if let Some(k) = signed_by {
                    write!(f, ", signed by {k}")?;
                }
                if *legacy_unchecked > 0 {
                    write!(
                        f,
                        " ({legacy_unchecked} records from before signatures were linked but their \
                         contents not checked: that takes the keyring, `keyhold audit verify --file` \
                         with FERNET_KEY set)"
                    )?;
                }
                if *gaps_expected {
                    write!(
                        f,
                        " (filtered export: each record's tag checked; {gaps} gaps between records, \
                         which a filter makes; completeness not checked: verify an unfiltered export \
                         without --filtered for that)"
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
    keys: VerifyKeys,
    /// Any V2 record seen yet (V1 records may only come before).
    seen_v2: bool,
    /// The newest seq covered by a trusted signature, and by which key.
    covered_to: u64,
    covered_by: Option<PublicKey>,
    /// The newest V2 record's seq.
    last_v2: u64,
    legacy_unchecked: u64,
    expected_seq: u64,
    prev: [u8; 32],
    count: u64,
    last_seq: u64,
    gaps_allowed: bool,
    gaps: u64,
    /// The seq of the store's chain head, and the mac found there.
    head_seq: Option<u64>,
    mac_at_head: Option<[u8; 32]>,
    /// The old-format (V1) records before the signed chain: their
    /// [`legacy_prefix_hash`], how many, and whether a signed `upgrade`
    /// record committed to exactly that hash.
    prefix: sha2::Sha256,
    prefix_len: u64,
    prefix_settled: bool,
}

/// The domain tag that starts the hash of an old-format prefix.
const LEGACY_PREFIX_TAG: &[u8] = b"keyhold-legacy-prefix-v1\n";

/// What an `upgrade` record's detail says when it commits to the log's
/// old-format prefix: `legacy prefix 1..=N sha256 HEX`.
pub(crate) const LEGACY_PREFIX_WORDS: &str = "legacy prefix 1..=";

/// Adds one old-format record to the hash of the prefix: its line in an
/// unfiltered JSON Lines export and a newline, so anyone holding an export
/// can recompute the hash (`printf 'keyhold-legacy-prefix-v1\n' | cat -
/// <(head -n N export.jsonl) | sha256sum`).
pub(crate) fn legacy_prefix_update(h: &mut sha2::Sha256, rec: &AuditRecord) {
    use sha2::Digest;
    if let Ok(line) = serde_json::to_vec(&rec.to_export()) {
        h.update(&line);
    }
    h.update(b"\n");
}

/// A new hash of an old-format prefix (see [`legacy_prefix_update`]).
pub(crate) fn legacy_prefix_hasher() -> sha2::Sha256 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(LEGACY_PREFIX_TAG);
    h
}

/// The commitment an `upgrade` record's detail makes to the prefix, if
/// it makes one: (N, hash).
fn prefix_commitment(detail: Option<&str>) -> Option<(u64, [u8; 32])> {
    let d = detail?;
    let at = d.find(LEGACY_PREFIX_WORDS)? + LEGACY_PREFIX_WORDS.len();
    let mut words = d[at..].split_whitespace();
    let n = words.next()?.parse::<u64>().ok()?;
    if words.next()? != "sha256" {
        return None;
    }
    let hex = words.next()?.trim_end_matches([',', ';', ')', '.']);
    Some((n, super::unhex32(hex)?))
}

impl ChainVerifier {
    /// A verifier of a whole chain starting at seq 1.
    pub fn new(keys: VerifyKeys) -> ChainVerifier {
        ChainVerifier {
            keys,
            seen_v2: false,
            covered_to: 0,
            covered_by: None,
            last_v2: 0,
            legacy_unchecked: 0,
            expected_seq: 1,
            prev: super::GENESIS,
            count: 0,
            last_seq: 0,
            gaps_allowed: false,
            gaps: 0,
            head_seq: None,
            mac_at_head: None,
            prefix: legacy_prefix_hasher(),
            prefix_len: 0,
            prefix_settled: false,
        }
    }

    /// A verifier of a store whose chain head (read before the walk) is at
    /// `head_seq`.
    pub fn for_store(keys: VerifyKeys, head_seq: Option<u64>) -> ChainVerifier {
        ChainVerifier {
            head_seq,
            ..ChainVerifier::new(keys)
        }
    }

    /// A verifier of a filtered selection: each record's own MAC or tag,
    /// and increasing seqs. Needs the keyring's keys: without the records
    /// between them, a public key alone proves nothing of a record.
    pub fn filtered(keys: VerifyKeys) -> ChainVerifier {
        ChainVerifier {
            gaps_allowed: true,
            ..ChainVerifier::new(keys)
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
        if let Some(why) = self.contents_wrong(&rec) {
            return Some(broken(stored_seq, Problem::Altered, why));
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

    /// Why the record's own contents are not authentic, if they are not:
    /// its hash and tag (V2), its MAC (V1, with the MAC key), its
    /// signature. Records whose contents cannot be checked with the keys
    /// at hand (V1 without the MAC key) are counted.
    fn contents_wrong(&mut self, rec: &AuditRecord) -> Option<String> {
        match rec.tag {
            Some(tag) => {
                let want = AuditRecord::chain_hash(
                    &rec.prev,
                    rec.seq,
                    rec.at_us,
                    &rec.event,
                    rec.node.as_deref(),
                );
                if !crate::access::digests_equal(&want, &rec.mac) {
                    return Some("the record's contents do not match its hash (mac)".into());
                }
                if let Some(k) = &self.keys.tag {
                    if !crate::access::digests_equal(
                        &record_tag(k.for_seq(rec.seq), &rec.mac),
                        &tag,
                    ) {
                        return Some("the record's tag does not match its hash".into());
                    }
                }
                if let Some(sig) = &rec.sig {
                    if !sig.verifies(rec.seq, &rec.mac) {
                        return Some("the record's signature does not verify".into());
                    }
                }
                None
            }
            None => {
                if self.seen_v2 {
                    return Some(
                        "a record without a tag (an old-format record) follows signed records"
                            .into(),
                    );
                }
                if rec.sig.is_some() {
                    return Some("an old-format record carries a signature".into());
                }

                match &self.keys.legacy {
                    Some(k) => {
                        let want = k.record_mac(&rec.prev, rec.seq, rec.at_us, &rec.event);
                        if !crate::access::digests_equal(&want, &rec.mac) {
                            return Some("the record's MAC does not match its contents".into());
                        }
                    }
                    // With the keyring at hand and no old MAC key: the
                    // store was born signed and never held an old-format
                    // record, so this one was stripped of its tag.
                    None if self.keys.tag.is_some() => {
                        return Some(
                            "a record without a tag (an old-format record) in a store that was \
                             born signed: its tag and signature were stripped"
                                .into(),
                        )
                    }
                    None => self.legacy_unchecked += 1,
                }
                None
            }
        }
    }

    /// Notes what a V2 record adds: the start of the signed chain, trust
    /// handed over, coverage by a trusted signature.
    fn note_signed(&mut self, rec: &AuditRecord) -> Option<VerifyReport> {
        if !rec.is_v2() {
            return None;
        }
        if !self.seen_v2 && !self.gaps_allowed {
            // The signed chain starts at seq 1 (a new store) or with the
            // upgrade to schema 3; otherwise records were made to look old
            // (their tag and signature stripped).
            let starts_well = rec.seq == 1
                || (rec.event.action == Action::Upgrade
                    && rec
                        .event
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("upgrade to schema 3")));
            if !starts_well {
                return Some(broken(
                    1,
                    Problem::Altered,
                    format!(
                        "records 1..={} have no tag or signature, but the signed chain does not \
                         start with the upgrade to schema 3 (seq {} is the first signed record): \
                         they were signed records stripped of their tag and signature to look \
                         like old-format ones",
                        rec.seq - 1,
                        rec.seq
                    ),
                ));
            }
        }
        // A signed commitment to the old-format prefix (made by the upgrade
        // to schema 3, or by a later upgrade for a store upgraded before
        // upgrades made one) settles the prefix's contents for a verifier
        // without the keyring.
        if !self.gaps_allowed && rec.event.action == Action::Upgrade && self.prefix_len > 0 {
            if let Some((n, want)) = prefix_commitment(rec.event.detail.as_deref()) {
                use sha2::Digest;
                let got: [u8; 32] = self.prefix.clone().finalize().into();
                if n != self.prefix_len || !crate::access::digests_equal(&got, &want) {
                    return Some(broken(
                        1,
                        Problem::Altered,
                        format!(
                            "the old-format records 1..={} do not match what the upgrade record \
                             at seq {} committed to (records 1..={n}, sha256 {}): one of them \
                             was altered, added or removed",
                            self.prefix_len,
                            rec.seq,
                            hex(&want)
                        ),
                    ));
                }
                self.prefix_settled = true;
            }
        }
        self.seen_v2 = true;
        self.last_v2 = rec.seq;
        if let Some(sig) = &rec.sig {
            if self.keys.trusted.contains(&sig.key) {
                self.covered_to = rec.seq;
                self.covered_by = Some(sig.key);
            }
        }
        // A hand-over vouched for by a trusted key trusts the next key.
        if rec.event.action == Action::SigningKey && self.covered_to == rec.seq {
            let next = rec
                .event
                .detail
                .as_deref()
                .and_then(|d| d.strip_prefix(HAND_OVER_PREFIX))
                .and_then(|d| d.split_whitespace().next())
                .and_then(|k| k.parse::<PublicKey>().ok());
            if let Some(k) = next {
                if !self.keys.trusted.contains(&k) {
                    self.keys.trusted.push(k);
                }
            }
        }
        None
    }

    /// The next record in order.
    pub fn feed(&mut self, rec: AuditRecord) -> Option<VerifyReport> {
        if let Some(why) = self.contents_wrong(&rec) {
            return Some(broken(rec.seq, Problem::Altered, why));
        }
        if !rec.is_v2() && !self.gaps_allowed {
            legacy_prefix_update(&mut self.prefix, &rec);
            self.prefix_len += 1;
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
        if let Some(b) = self.note_signed(&rec) {
            return Some(b);
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

    /// Ends the walk of an export (no chain head to compare with). Every
    /// V2 record must be covered by a trusted signature (a filtered
    /// selection is checked record by record instead).
    pub fn finish(self) -> VerifyReport {
        // An empty selection is a filter's possible answer; an empty
        // whole log is not.
        if self.count == 0 && !self.gaps_allowed {
            return broken(
                1,
                Problem::Truncated,
                "there are no records to verify (an empty log or file proves nothing): export \
                 the log again, or check that the right file was given"
                    .into(),
            );
        }
        // Old-format records whose contents nothing at hand checked: no
        // MAC key, and no signed record committed to them.
        if !self.gaps_allowed
            && self.keys.legacy.is_none()
            && self.prefix_len > 0
            && self.seen_v2
            && !self.prefix_settled
        {
            return broken(
                1,
                Problem::Unsigned,
                format!(
                    "records 1..={} are old-format records (no tag, no signature) and no signed \
                     upgrade record commits to their hash: their contents cannot be checked with \
                     the public key. Open the store once with this keyhold (it records the \
                     commitment), or verify with the keyring",
                    self.prefix_len
                ),
            );
        }
        // Without the MAC key of old-format records, nothing but a trusted
        // signature vouches for a record: a log of old-format records
        // alone (or ending in them) is not authentic for this verifier.
        if !self.gaps_allowed && self.count > 0 && self.keys.legacy.is_none() && !self.seen_v2 {
            return broken(
                1,
                Problem::Unsigned,
                "no record is signed: a log of old-format records can only be checked with the \
                 keyring (the MAC key of records from before schema 3)"
                    .into(),
            );
        }
        if !self.gaps_allowed && self.seen_v2 && self.covered_to < self.last_v2 {
            let from = self.covered_to.max(self.first_v2_candidate()) + 1;
            let why = if self.covered_to == 0 {
                format!(
                    "no signature of a trusted key covers records {from}..={}: they were signed by \
                     another key than the one given, or forged",
                    self.last_v2
                )
            } else {
                format!(
                    "records {from}..={} come after the last signature of a trusted key: forged, or \
                     the export ends in the middle of a commit",
                    self.last_v2
                )
            };
            return broken(from, Problem::Unsigned, why);
        }
        VerifyReport::Ok {
            records: self.count,
            head_seq: self.last_seq,
            head_mac: hex(&self.prev),
            gaps_expected: self.gaps_allowed,
            gaps: self.gaps,
            signed_by: self.covered_by.map(|k| k.to_string()),
            legacy_unchecked: if self.prefix_settled {
                0
            } else {
                self.legacy_unchecked
            },
        }
    }

    /// The seq before the first record that needs a signature's cover.
    fn first_v2_candidate(&self) -> u64 {
        self.last_seq
            .saturating_sub(self.count)
            .min(self.last_v2.saturating_sub(1))
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
        let head_seq = head.seq();
        let authentic = match &head {
            // An old-format head is authentic only under the MAC key.
            Head::V1 { .. } => head.is_authentic(self.keys.legacy.as_ref()),
            Head::V2 { .. } | Head::V3 { .. } => head.is_authentic(None),
        };
        if !authentic || (self.seen_v2 && matches!(head, Head::V1 { .. })) {
            return broken(
                head_seq,
                Problem::Altered,
                "the stored chain head's MAC or signature is wrong".into(),
            );
        }
        if head_seq > self.last_seq {
            return broken(
                self.last_seq + 1,
                Problem::Truncated,
                format!(
                    "the chain head says the log ends at seq {} but the last record is seq {}: records {}..={} were removed",
                    head_seq,
                    self.last_seq,
                    self.last_seq + 1,
                    head_seq
                ),
            );
        }
        match self.mac_at_head {
            Some(mac) if crate::access::digests_equal(&head.mac(), &mac) => self.finish(),
            _ => broken(
                head_seq,
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
