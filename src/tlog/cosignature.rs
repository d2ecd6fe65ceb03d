//! C2SP checkpoint cosignatures (c2sp.org/tlog-cosignature), Ed25519
//! `cosignature/v1`: a witness's statement that, at a time, the checkpoint
//! is the largest consistent tree it has seen of that log.
//!
//! The signature line is a signed-note line whose bytes are key ID ‖
//! 8-byte big-endian POSIX timestamp ‖ Ed25519 signature of
//! `cosignature/v1\ntime <timestamp>\n<checkpoint note text>`; the key ID
//! uses signature type 0x04, so a witness's vkey is
//! `name+hex(key ID)+base64(0x04 ‖ public key)`.
//!
//! Not for: the witness protocol (c2sp.org/tlog-witness) or its state.

use super::checkpoint::{Checkpoint, CheckpointError};
pub(crate) use super::note::{signed_message, COSIGNATURE_TYPE, MAX_TIMESTAMP};
use super::note::{
    NoteError, NoteVerifier, Signature, SigningKey, ED25519_SIGNATURE_BYTES, TIMESTAMP_BYTES,
};

/// Why a cosignature could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CosignatureError {
    #[error("a cosignature's timestamp is at most 2^63 - 1 seconds; {0} is not a time")]
    BadTimestamp(u64),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// The timestamp of a cosignature line's signature, if it has the form of
/// an Ed25519 cosignature (verify it first; this does not).
pub(crate) fn timestamp(sig: &Signature) -> Option<u64> {
    if sig.sig.len() != TIMESTAMP_BYTES + ED25519_SIGNATURE_BYTES {
        return None;
    }
    let (time, _) = sig.sig.split_first_chunk::<TIMESTAMP_BYTES>()?;
    Some(u64::from_be_bytes(*time)).filter(|t| *t <= MAX_TIMESTAMP)
}

/// A witness's cosigning key (type 0x04).
#[derive(Debug)]
pub(crate) struct Cosigner(SigningKey);

impl Cosigner {
    /// The key of a 32-byte Ed25519 seed, named `name`.
    pub(crate) fn from_seed(name: &str, seed: &[u8]) -> Result<Cosigner, NoteError> {
        SigningKey::from_seed(name, COSIGNATURE_TYPE, seed).map(Cosigner)
    }

    pub(crate) fn verifier(&self) -> &NoteVerifier {
        self.0.verifier()
    }

    /// This witness's cosignature of a checkpoint's note text at
    /// `timestamp` (POSIX seconds), to add to the checkpoint's note.
    pub(crate) fn cosign(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<Signature, CosignatureError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::BadTimestamp(timestamp));
        }
        Checkpoint::parse(checkpoint_text)?;
        let msg = signed_message(timestamp, checkpoint_text);
        Ok(self.0.signature(&timestamp.to_be_bytes(), &msg))
    }
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::Checkpoint;
    use super::super::note::{format_note, open, NoteSigner, Verifier, ED25519_TYPE};
    use super::*;

    // The tlog-cosignature spec's example checkpoint text and time.
    const SPEC_TEXT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    const SPEC_TIME: u64 = 1679315147;
    // A vector made apart from this code, from the spec text, with Python's
    // `cryptography` package: seed bytes 0..=31, name witness.example/w1,
    // key ID = SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4], signature of
    // "cosignature/v1\ntime 1679315147\n" ‖ SPEC_TEXT.
    const W1_VKEY: &str =
        "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";
    const W1_LINE: &str = "— witness.example/w1 519lMgAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8YiWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n";

    fn seed() -> Vec<u8> {
        (0..32).collect()
    }

    #[test]
    fn the_signed_message_is_the_specs() {
        let want = "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(signed_message(SPEC_TIME, SPEC_TEXT), want.as_bytes());
    }

    #[test]
    fn cosigning_matches_the_independent_vector() {
        let w1 = Cosigner::from_seed("witness.example/w1", &seed()).unwrap();
        assert_eq!(w1.verifier().vkey(), W1_VKEY);
        let sig = w1.cosign(SPEC_TEXT, SPEC_TIME).unwrap();
        assert_eq!(sig.line(), W1_LINE);
        assert_eq!(timestamp(&sig), Some(SPEC_TIME));
    }

    #[test]
    fn a_cosigned_checkpoint_verifies_with_the_witness_vkey_only() {
        let v = NoteVerifier::from_vkey_of_type(W1_VKEY, COSIGNATURE_TYPE).unwrap();
        let msg = format!("{SPEC_TEXT}\n{W1_LINE}");
        let opened = open(msg.as_bytes(), &[&v]).unwrap();
        assert_eq!(opened.verified.len(), 1);
        // The same key as a plain note key (type 0x01) has another key ID.
        let plain = NoteVerifier::new("witness.example/w1", ED25519_TYPE, v.public_key()).unwrap();
        assert!(open(msg.as_bytes(), &[&plain]).is_err());
        // A type 0x01 vkey is not a cosignature vkey.
        assert!(NoteVerifier::from_vkey_of_type(&plain.vkey(), COSIGNATURE_TYPE).is_err());
    }

    #[test]
    fn the_specs_example_cosignature_carries_its_time() {
        // c2sp.org/tlog-cosignature's example line (its key is not published).
        let line = "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let log = NoteSigner::from_seed("example.com/behind-the-sofa", &[9; 32]).unwrap();
        let msg = format!("{SPEC_TEXT}\n{}{line}", log.sign(SPEC_TEXT).unwrap().line());
        let opened = open(msg.as_bytes(), &[log.verifier()]).unwrap();
        assert_eq!(opened.unverified.len(), 1);
        assert_eq!(timestamp(&opened.unverified[0]), Some(SPEC_TIME));
    }

    #[test]
    fn altered_cosignatures_fail() {
        let w1 = Cosigner::from_seed("witness.example/w1", &seed()).unwrap();
        let text = format!("{SPEC_TEXT}ext line\n");
        let sig = w1.cosign(&text, SPEC_TIME).unwrap();
        let v = w1.verifier();
        assert!(v.verify(text.as_bytes(), &sig.sig));
        // The extension line is covered.
        assert!(!v.verify(SPEC_TEXT.as_bytes(), &sig.sig));
        // So is the time.
        let mut later = sig.sig.clone();
        later[7] ^= 1;
        assert!(!v.verify(text.as_bytes(), &later));
        // A time past 2^63 - 1, a short or a long signature.
        let mut huge = sig.sig.clone();
        huge[0] = 0x80;
        assert!(!v.verify(text.as_bytes(), &huge));
        assert!(!v.verify(text.as_bytes(), &sig.sig[..71]));
        assert!(!v.verify(text.as_bytes(), &[sig.sig.clone(), vec![0]].concat()));
        assert!(!v.verify(text.as_bytes(), &[]));
        let note = format_note(&text, &[sig]).unwrap();
        assert!(Checkpoint::parse(&open(note.as_bytes(), &[v]).unwrap().text).is_ok());
    }

    #[test]
    fn only_checkpoints_and_real_times_are_cosigned() {
        let w1 = Cosigner::from_seed("witness.example/w1", &seed()).unwrap();
        assert_eq!(
            w1.cosign(SPEC_TEXT, MAX_TIMESTAMP + 1),
            Err(CosignatureError::BadTimestamp(MAX_TIMESTAMP + 1))
        );
        assert!(matches!(
            w1.cosign("not a checkpoint\n", 1),
            Err(CosignatureError::Checkpoint(_))
        ));
        assert!(w1.cosign(SPEC_TEXT, MAX_TIMESTAMP).is_ok());
    }
}
