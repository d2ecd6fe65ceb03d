//! How the `audit` tree holds records: several consecutive records per
//! sled entry.
//!
//! sled 0.34 keeps an in-memory page-table entry for every page and splits
//! a full leaf (16 entries) in half, so an append-only tree with one record
//! per entry ends up with ~9 records per page: ~18 bytes of resident memory
//! per audit record, for as long as the server runs (BENCHMARKS.md). Packing
//! up to [`MAX_RECORDS`] records into one entry divides that by 8.
//!
//! Chunks stay small because the newest one is rewritten by every commit
//! that adds to it, and sled rewrites a whole leaf (16 entries) every tenth
//! change: with chunks of 32 records a loaded server wrote ~3x as many
//! bytes to disk as with one record per entry; with 8 records (or 2 KiB)
//! it writes ~1.3x, as fast (BENCHMARKS.md).
//!
//! An entry's key is the big-endian seq of its first record. Its value is
//! either
//!
//! - a chunk: the byte [`CHUNK_TAG`], then for each record
//!   `seq:u64 BE  len:u32 BE  record bytes`; or
//! - one postcard-encoded record, as schema 1 stored every record (its
//!   first byte is the record enum's variant index, 0). Stores from older
//!   keyhold keep these entries; new records go into chunks.
//!
//! Every record carries its own seq (inside its MAC'd bytes too), so the
//! position of a record is never inferred: `audit verify` compares where a
//! record is stored with what it says.

/// The bytes of a stored entry (sled's shared buffer).
pub use sled::IVec;

use crate::store::{corrupt, StoreError};

/// First byte of a chunk value. A schema-1 record starts with its enum
/// variant index as a postcard varint, which is 0 today and could reach
/// 0xFF only as the first byte of a variant index of at least 255.
pub(crate) const CHUNK_TAG: u8 = 0xFF;
/// Most records in one chunk.
pub(crate) const MAX_RECORDS: usize = 8;
/// A chunk takes no further record once this large. A leaf of 16 such
/// chunks stays well under the ~128 KiB (a quarter of a segment) past which
/// sled 0.34 writes a page to a separate blob file. A record larger than
/// this still gets a chunk of its own; records are a few hundred bytes.
pub(crate) const MAX_BYTES: usize = 2 * 1024;
const ENTRY_HEADER: usize = 12;

/// The records stored in one entry of the `audit` tree, oldest first, as
/// `(seq, bytes)`. Malformed framing ends the iteration with one last item
/// holding the bytes that could not be framed (under the seq that would
/// come next), so `audit verify` reports them as an altered record instead
/// of skipping them.
pub struct Entries {
    key_seq: u64,
    value: IVec,
    /// A schema-1 value: one record, stored under its own seq.
    single: bool,
    pos: usize,
    next_seq: Option<u64>,
    done: bool,
}

impl Entries {
    pub fn new(key_seq: u64, value: impl Into<IVec>) -> Entries {
        let value = value.into();
        let single = value.first() != Some(&CHUNK_TAG);
        Entries {
            key_seq,
            value,
            single,
            pos: 1,
            next_seq: None,
            done: false,
        }
    }

    /// The bytes from `from` on, which could not be framed; the last item.
    fn rest(&mut self, from: usize) -> (u64, IVec) {
        self.done = true;
        let seq = self.next_seq.unwrap_or(self.key_seq);
        (seq, self.value.subslice(from, self.value.len() - from))
    }
}

impl Iterator for Entries {
    type Item = (u64, IVec);

    fn next(&mut self) -> Option<(u64, IVec)> {
        if self.done {
            return None;
        }
        if self.single {
            self.done = true;
            return Some((self.key_seq, self.value.clone()));
        }
        let v = &self.value;
        if self.pos >= v.len() {
            self.done = true;
            return None;
        }
        let Some(header) = v.get(self.pos..self.pos + ENTRY_HEADER) else {
            return Some(self.rest(self.pos));
        };
        let (seq_bytes, len_bytes) = header.split_at(8);
        let seq = u64::from_be_bytes(seq_bytes.try_into().unwrap_or_default());
        let len = u32::from_be_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
        let start = self.pos + ENTRY_HEADER;
        if start.checked_add(len).is_none_or(|end| end > v.len()) {
            return Some(self.rest(self.pos));
        }
        self.pos = start + len;
        self.next_seq = seq.checked_add(1);
        Some((seq, self.value.subslice(start, len)))
    }
}

/// The records of the `audit` tree from the entry at or after `start`,
/// read one entry at a time while the log may be growing.
///
/// Each step is a lookup of its own rather than one sled iterator, for
/// memory: sled 0.34 applies page-cache accesses to its LRU only once 64
/// have queued in one of its 256 shards, so one scan of fewer than ~16,000
/// pages evicts nothing and keeps every page it read (an export of
/// 1,000,000 records, ~14,000 leaves of ~20 KiB, peaked at 168 MiB). A
/// lookup counts every level of the tree as an access, so the LRU keeps up.
///
/// Only the newest entry ever grows, and an entry never changes once a
/// later one exists (the writer extends only the newest entry, and a
/// commit that starts a new one finishes filling the old one in the same
/// transaction). So before leaving an entry the walk first looks up the
/// next one and, if one exists, the current one is final: it reads it
/// again and yields what was appended meanwhile. A record written while
/// the walk runs is never skipped with later ones read (which `audit
/// verify` would take for a missing record).
pub(crate) struct Walk {
    tree: sled::Tree,
    current: Option<Reading>,
    /// Where the first lookup starts, until it is made.
    start: Option<Vec<u8>>,
    done: bool,
    /// Runs between finding the next entry and re-reading the current
    /// one, so a test can append at the worst moment.
    #[cfg(test)]
    pub(crate) between: Option<Box<dyn FnMut()>>,
}

/// The entry a walk is reading.
struct Reading {
    key: IVec,
    /// Its records not yet yielded.
    records: std::vec::IntoIter<(u64, IVec)>,
    /// How many of its records were yielded.
    yielded: usize,
}

impl Walk {
    pub(crate) fn new(tree: sled::Tree, start: Vec<u8>) -> Walk {
        Walk {
            tree,
            current: None,
            start: Some(start),
            done: false,
            #[cfg(test)]
            between: None,
        }
    }

    fn entry(key: &IVec, value: IVec) -> Result<Vec<(u64, IVec)>, StoreError> {
        let seq: [u8; 8] = key.as_ref().try_into().map_err(corrupt("audit seq"))?;
        Ok(Entries::new(u64::from_be_bytes(seq), value).collect())
    }

    /// Moves past the current entry (or to the first one).
    fn step(&mut self) -> Result<bool, StoreError> {
        let from = match (&self.current, self.start.take()) {
            (_, Some(start)) => start,
            (Some(reading), None) => {
                // The smallest key after this one, whatever its length.
                let mut after = reading.key.to_vec();
                after.push(0);
                after
            }
            (None, None) => return Ok(false),
        };
        let next = self.tree.range(from..).next().transpose()?;
        #[cfg(test)]
        if let Some(f) = &mut self.between {
            f();
        }
        if let Some(reading) = &mut self.current {
            if let Some(value) = self.tree.get(&reading.key)? {
                let more: Vec<(u64, IVec)> = Self::entry(&reading.key, value)?
                    .into_iter()
                    .skip(reading.yielded)
                    .collect();
                if !more.is_empty() {
                    reading.records = more.into_iter();
                    return Ok(true);
                }
            }
        }
        match next {
            None => Ok(false),
            Some((key, value)) => {
                let records = Self::entry(&key, value)?.into_iter();
                self.current = Some(Reading {
                    key,
                    records,
                    yielded: 0,
                });
                Ok(true)
            }
        }
    }
}

impl Iterator for Walk {
    type Item = Result<(u64, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(reading) = &mut self.current {
                if let Some(record) = reading.records.next() {
                    reading.yielded += 1;
                    return Some(Ok(record));
                }
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// The chunk a record may be appended to: the tree's last entry, if it is
/// a well-formed chunk with room left.
struct Open {
    key: u64,
    value: Vec<u8>,
    count: usize,
    last_seq: u64,
    dirty: bool,
}

impl Open {
    fn fresh(seq: u64) -> Open {
        let mut value = Vec::with_capacity(MAX_BYTES + ENTRY_HEADER);
        value.push(CHUNK_TAG);
        Open {
            key: seq,
            value,
            count: 0,
            last_seq: 0,
            dirty: true,
        }
    }

    /// The tail entry as an open chunk, if it is one that can grow.
    fn from_tail(key: u64, value: &IVec) -> Option<Open> {
        if value.first() != Some(&CHUNK_TAG) || value.len() >= MAX_BYTES {
            return None;
        }
        let mut count = 0;
        let mut last_seq = None;
        let mut pos = 1;
        for (seq, bytes) in Entries::new(key, value.clone()) {
            // Only a chunk that frames exactly is extended.
            pos += ENTRY_HEADER + bytes.len();
            count += 1;
            last_seq = Some(seq);
        }
        if pos != value.len() || count >= MAX_RECORDS {
            return None;
        }
        Some(Open {
            key,
            value: value.to_vec(),
            count,
            last_seq: last_seq?,
            dirty: false,
        })
    }

    fn takes(&self, seq: u64, len: usize) -> bool {
        self.count == 0
            || (self.count < MAX_RECORDS
                && self.last_seq.checked_add(1) == Some(seq)
                && self.value.len() + ENTRY_HEADER + len <= MAX_BYTES)
    }

    fn push(&mut self, seq: u64, bytes: &[u8]) {
        self.value.extend_from_slice(&seq.to_be_bytes());
        self.value
            .extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.value.extend_from_slice(bytes);
        self.count += 1;
        self.last_seq = seq;
        self.dirty = true;
    }
}

/// The `audit` tree entries to insert so that `records` (ascending seqs)
/// follow `tail`, the tree's last entry: the tail chunk extended while it
/// has room, then new chunks. A record always gets its own chunk key when
/// it does not directly follow the previous record (after a cut tail, the
/// chain continues after its head, leaving a visible gap).
pub fn plan_append(tail: Option<(u64, &IVec)>, records: &[(u64, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut open = tail.and_then(|(key, value)| Open::from_tail(key, value));
    for (seq, bytes) in records {
        let mut chunk = match open.take() {
            Some(c) if c.takes(*seq, bytes.len()) => c,
            Some(full) => {
                if full.dirty {
                    out.push((full.key, full.value));
                }
                Open::fresh(*seq)
            }
            None => Open::fresh(*seq),
        };
        chunk.push(*seq, bytes);
        open = Some(chunk);
    }
    if let Some(c) = open.filter(|c| c.dirty) {
        out.push((c.key, c.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<(u64, Vec<u8>)> {
        seqs.map(|s| (s, vec![s as u8; len])).collect()
    }

    /// `plan_append` after a stored tail entry.
    fn after_tail(key: u64, value: &[u8], new: &[(u64, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
        plan_append(Some((key, &IVec::from(value))), new)
    }

    fn unpack(key: u64, value: &[u8]) -> Vec<(u64, Vec<u8>)> {
        Entries::new(key, IVec::from(value))
            .map(|(s, b)| (s, b.to_vec()))
            .collect()
    }

    #[test]
    fn records_round_trip_through_chunks_of_at_most_max_records() {
        let records = recs(1..=70, 100);
        let plan = plan_append(None, &records);
        assert_eq!(
            plan.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![1, 9, 17, 25, 33, 41, 49, 57, 65]
        );
        let back: Vec<_> = plan.iter().flat_map(|(k, v)| unpack(*k, v)).collect();
        assert_eq!(back, records);
    }

    #[test]
    fn the_tail_chunk_is_extended_until_full() {
        let first = plan_append(None, &recs(1..=3, 50));
        let (k, v) = &first[0];
        let next = after_tail(*k, v, &recs(4..=12, 50));
        assert_eq!(next.len(), 2, "tail extended, then a new chunk");
        assert_eq!(next[0].0, 1);
        assert_eq!(unpack(1, &next[0].1), recs(1..=8, 50));
        assert_eq!(next[1].0, 9);
        assert_eq!(unpack(9, &next[1].1), recs(9..=12, 50));
        // A full tail is left alone.
        let (k, v) = &next[0];
        let after = after_tail(*k, v, &recs(13..=13, 50));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0, 13);
    }

    #[test]
    fn a_chunk_closes_at_max_bytes_and_a_big_record_stands_alone() {
        let plan = plan_append(None, &recs(1..=3, MAX_BYTES / 2));
        assert_eq!(plan.len(), 3);
        let big = plan_append(None, &recs(1..=1, MAX_BYTES * 2));
        assert_eq!(unpack(1, &big[0].1), recs(1..=1, MAX_BYTES * 2));
    }

    #[test]
    fn a_gap_in_seqs_starts_a_new_chunk() {
        let first = plan_append(None, &recs(1..=5, 10));
        let (k, v) = &first[0];
        let next = after_tail(*k, v, &recs(9..=9, 10));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, 9);
    }

    #[test]
    fn a_schema_1_entry_is_one_record_and_is_never_extended() {
        let legacy = vec![0u8, 1, 2, 3];
        assert_eq!(unpack(7, &legacy), vec![(7, legacy.clone())]);
        let next = after_tail(7, &legacy, &recs(8..=8, 10));
        assert_eq!(next[0].0, 8);
    }

    #[test]
    fn broken_framing_ends_with_the_unframed_bytes_at_the_next_seq() {
        let plan = plan_append(None, &recs(1..=3, 10));
        let mut v = plan[0].1.clone();
        // Record 2 claims to run past the end of the value.
        let second = 1 + ENTRY_HEADER + 10;
        v[second + 8..second + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        let got = unpack(1, &v);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (1, vec![1; 10]));
        assert_eq!(got[1].0, 2);
        assert_eq!(got[1].1, v[second..].to_vec());
        // A damaged tail is not extended: new records get a new chunk.
        let next = after_tail(1, &v, &recs(4..=4, 10));
        assert_eq!(next[0].0, 4);
    }
}
