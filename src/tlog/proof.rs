//! C2SP tlog-proof bundles (c2sp.org/tlog-proof): an offline proof that a
//! record is in the log (the bundle a record's proof is handed out as;
//! wired in by the next step of issue 27).
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64, optional>
//! index <leaf index>
//! <base64 inclusion proof hash, one a line, from the leaf's sibling up>
//!
//! <the signed checkpoint note, verbatim, with any cosignatures>
//! ```
//!
//! Verifying needs the record's leaf hash (for keyhold, [`record_hash`] of
//! its export line), the log's origin and key, and any witness keys.
//!
//! Not for: choosing which checkpoint a proof is made against.
//!
//! [`record_hash`]: super::merkle::record_hash

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::checkpoint::{parse_decimal, Checkpoint, CheckpointError};
use super::merkle::{proofs::check_record, Hash, ProofError};
use super::note::{NoteVerifier, Verifier, MAX_NOTE_BYTES};

const HEADER: &str = "c2sp.org/tlog-proof@v1\n";
/// The most inclusion proof hashes read: a tree of 2^63 leaves needs 63.
pub(crate) const MAX_PROOF_HASHES: usize = 63;
/// The largest extra data read.
pub(crate) const MAX_EXTRA_BYTES: usize = 4096;
/// The largest bundle read: a checkpoint note and the lines before it.
pub(crate) const MAX_BUNDLE_BYTES: usize = MAX_NOTE_BYTES + 16 * 1024;

/// A record's inclusion proof with the checkpoint it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlogProof {
    /// Opaque, unauthenticated data for the application.
    pub(crate) extra: Option<Vec<u8>>,
    /// The leaf index (keyhold's record seq N is leaf N − 1).
    pub(crate) index: u64,
    /// The RFC 6962 inclusion proof.
    pub(crate) hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub(crate) checkpoint: String,
}

/// What a verified proof shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedProof {
    pub(crate) checkpoint: Checkpoint,
    /// The names of the given witnesses whose cosignatures verified.
    pub(crate) cosigned_by: Vec<String>,
}

/// Why a proof bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TlogProofError {
    #[error("malformed tlog proof: {0}; a proof is `c2sp.org/tlog-proof@v1`, `index N`, the proof hashes, a blank line and the signed checkpoint (c2sp.org/tlog-proof)")]
    Malformed(&'static str),
    #[error("the proof's checkpoint is refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the record is not proved to be in the log: {0}")]
    Inclusion(#[from] ProofError),
}

impl TlogProof {
    /// The bundle's text.
    pub(crate) fn to_text(&self) -> Result<String, TlogProofError> {
        let bad = TlogProofError::Malformed;
        if self.hashes.len() > MAX_PROOF_HASHES {
            return Err(bad("too many proof hashes"));
        }
        if self
            .extra
            .as_ref()
            .is_some_and(|e| e.len() > MAX_EXTRA_BYTES)
        {
            return Err(bad("the extra data is too long"));
        }
        check_note_form(&self.checkpoint)?;
        let mut out = HEADER.to_owned();
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for hash in &self.hashes {
            out.push_str(&hash.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        Ok(out)
    }

    /// Parses a bundle, strictly; the checkpoint is checked by
    /// [`verify`](Self::verify).
    pub(crate) fn parse(bytes: &[u8]) -> Result<TlogProof, TlogProofError> {
        let bad = TlogProofError::Malformed;
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(bad("it is too long"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not UTF-8"))?;
        let rest = text
            .strip_prefix(HEADER)
            .ok_or(bad("the first line is not `c2sp.org/tlog-proof@v1`"))?;
        let (mut line, mut rest) = rest.split_once('\n').ok_or(bad("it has no index line"))?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            if b64.len() > MAX_EXTRA_BYTES.div_ceil(3) * 4 {
                return Err(bad("the extra data is too long"));
            }
            extra = Some(
                BASE64
                    .decode(b64)
                    .map_err(|_| bad("the extra data is not base64"))?,
            );
            (line, rest) = rest.split_once('\n').ok_or(bad("it has no index line"))?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or(bad("the index line is not `index` and a decimal number"))?;
        let mut hashes = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or(bad("no blank line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if hashes.len() == MAX_PROOF_HASHES {
                return Err(bad("too many proof hashes"));
            }
            hashes.push(
                Hash::from_base64(line).ok_or(bad("a proof hash is not 32 bytes of base64"))?,
            );
        }
        check_note_form(rest)?;
        Ok(TlogProof {
            extra,
            index,
            hashes,
            checkpoint: rest.to_owned(),
        })
    }

    /// Checks the bundle offline: the checkpoint is of the log `origin` and
    /// signed by `log`, and the proof leads from `leaf` (the record's leaf
    /// hash) at the bundle's index to its root. Cosignatures by
    /// `witnesses` are verified and named; applying a quorum is the
    /// caller's policy.
    pub(crate) fn verify(
        &self,
        leaf: Hash,
        origin: &str,
        log: &NoteVerifier,
        witnesses: &[&NoteVerifier],
    ) -> Result<VerifiedProof, TlogProofError> {
        let others: Vec<&dyn Verifier> = witnesses.iter().map(|w| *w as &dyn Verifier).collect();
        let (checkpoint, note) =
            Checkpoint::open(self.checkpoint.as_bytes(), origin, log, &others)?;
        check_record(
            &self.hashes,
            checkpoint.size,
            checkpoint.root,
            self.index,
            leaf,
        )?;
        let cosigned_by = note
            .verified
            .iter()
            .filter(|s| s.name != log.name() || s.key_id != log.key_id())
            .map(|s| s.name.clone())
            .collect();
        Ok(VerifiedProof {
            checkpoint,
            cosigned_by,
        })
    }
}

/// The checkpoint part has the outline of a note (opening it checks the
/// rest): it neither is empty, nor starts with a blank line, and it ends in
/// a newline. Parsing and formatting agree on it.
fn check_note_form(checkpoint: &str) -> Result<(), TlogProofError> {
    if checkpoint.starts_with('\n') || !checkpoint.ends_with('\n') {
        return Err(TlogProofError::Malformed(
            "the checkpoint is not a signed note",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
