//! C2SP transparency log checkpoints (c2sp.org/tlog-checkpoint): the note
//! text `<origin>\n<tree size>\n<base64 root hash>\n` and any extension
//! lines, signed as a signed note by the log's key.
//!
//! keyhold's log names its key after its origin (`keyhold.example/<store
//! id>`); a reader says which origin it accepts and which key signs for it
//! ([`Checkpoint::open`]), as tlog-proof's verification asks.
//!
//! Not for: the tree (see `merkle`), cosigning (see `cosignature.rs`).

use super::merkle::Hash;
use super::note::{self, Note, NoteError, NoteSigner, NoteVerifier, Verifier};

/// The most extension lines read (the spec sets no bound; keyhold writes
/// at most a few).
pub(crate) const MAX_EXTENSION_LINES: usize = 16;
/// The longest checkpoint text read.
pub(crate) const MAX_CHECKPOINT_BYTES: usize = 8 * 1024;

/// A log's tree head at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) origin: String,
    pub(crate) size: u64,
    pub(crate) root: Hash,
    /// Opaque, non-empty lines after the root hash.
    pub(crate) extensions: Vec<String>,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckpointError {
    #[error("malformed checkpoint: {0}; a checkpoint is the origin, the tree size and the base64 root hash, one a line (c2sp.org/tlog-checkpoint)")]
    Malformed(&'static str),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("the checkpoint is not signed by the log's key {key}; it may be signed by witnesses only, or by another log")]
    NotSignedByLog { key: String },
    #[error("the checkpoint is for the log `{found}`, not `{expected}`")]
    OtherOrigin { expected: String, found: String },
}

fn is_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(char::is_control)
}

impl Checkpoint {
    /// The note text: origin, size, root hash and extension lines, each
    /// ending in a newline.
    pub(crate) fn to_text(&self) -> Result<String, CheckpointError> {
        if !is_line(&self.origin) {
            return Err(CheckpointError::Malformed(
                "the origin is empty or holds a control character",
            ));
        }
        if self.extensions.len() > MAX_EXTENSION_LINES
            || !self.extensions.iter().all(|l| is_line(l))
        {
            return Err(CheckpointError::Malformed(
                "an extension line is empty or holds a control character, or there are too many",
            ));
        }
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        Ok(text)
    }

    /// Parses a checkpoint's note text, strictly.
    pub(crate) fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = CheckpointError::Malformed;
        if text.len() > MAX_CHECKPOINT_BYTES {
            return Err(bad("it is too long"));
        }
        let body = text
            .strip_suffix('\n')
            .ok_or(bad("it does not end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("it has fewer than three lines"));
        };
        if !is_line(origin) {
            return Err(bad("the origin is empty or holds a control character"));
        }
        let size = parse_decimal(size).ok_or(bad(
            "the tree size is not a decimal number without leading zeros",
        ))?;
        let root = Hash::from_base64(root).ok_or(bad("the root hash is not 32 bytes of base64"))?;
        let mut extensions = Vec::new();
        for line in lines {
            if extensions.len() == MAX_EXTENSION_LINES {
                return Err(bad("it has too many extension lines"));
            }
            if !is_line(line) {
                return Err(bad(
                    "an extension line is empty or holds a control character",
                ));
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The signed note of this checkpoint by the log's key.
    pub(crate) fn sign(&self, log: &NoteSigner) -> Result<String, CheckpointError> {
        let text = self.to_text()?;
        Ok(note::format_note(&text, &[log.sign(&text)?])?)
    }

    /// Opens a signed checkpoint of the log `origin` whose key is `log`:
    /// the log's signature must verify; signatures of `others` (for
    /// example witnesses) are verified too, the rest kept unverified.
    pub(crate) fn open(
        msg: &[u8],
        origin: &str,
        log: &NoteVerifier,
        others: &[&dyn Verifier],
    ) -> Result<(Checkpoint, Note), CheckpointError> {
        let mut known: Vec<&dyn Verifier> = vec![log];
        known.extend_from_slice(others);
        let opened = note::open(msg, &known)?;
        if !opened
            .verified
            .iter()
            .any(|s| s.name == log.name() && s.key_id == log.key_id())
        {
            return Err(CheckpointError::NotSignedByLog { key: log.vkey() });
        }
        let checkpoint = Checkpoint::parse(&opened.text)?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::OtherOrigin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok((checkpoint, opened))
    }
}

/// An ASCII decimal u64 without leading zeros (`0` alone is zero).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    let digits_only =
        !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::merkle::record_hash;
    use super::*;

    // The C2SP tlog-checkpoint spec's example text.
    const SPEC_TEXT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    // Go's golang.org/x/mod/sumdb/tlog note_test.go (TestFormatTree).
    const GO_TEXT: &str =
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";
    // Go's sumdb/client_test.go: its test key, and a tree head it signed.
    const GO_VKEY: &str =
        "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6";
    const GO_SEED_B64: &str = "AXu6+oaVaOYuQOFrf1V59JK1owcFlJcHwwXHDfDGxSPk";
    const GO_SIGNED: &str = "go.sum database tree\n6\nwc4SkQt52o5W2nQ8To2ARs+mWuUJjss+sdleoiqxMmM=\n\n— localhost.localdev/sumdb AAAMZ6oRNswlEZ6ZZhxrCvgl1MBy+nusq4JU+TG6Fe2NihWLqOzb+y2c2kzRLoCr4tvw9o36ucQEnhc20e4nA4Qc/wc=\n";

    #[test]
    fn the_spec_and_go_texts_parse_and_format_back() {
        let spec = Checkpoint::parse(SPEC_TEXT).unwrap();
        assert_eq!(
            (spec.origin.as_str(), spec.size),
            ("example.com/behind-the-sofa", 20852163)
        );
        assert_eq!(spec.to_text().unwrap(), SPEC_TEXT);
        let go = Checkpoint {
            origin: "go.sum database tree".into(),
            size: 123456789012,
            root: record_hash(b"hello world"),
            extensions: vec![],
        };
        assert_eq!(go.to_text().unwrap(), GO_TEXT);
        assert_eq!(Checkpoint::parse(GO_TEXT).unwrap(), go);
        let with_ext = format!("{SPEC_TEXT}state abc\nother\n");
        assert_eq!(
            Checkpoint::parse(&with_ext).unwrap().extensions,
            ["state abc", "other"]
        );
        assert_eq!(
            Checkpoint::parse(&with_ext).unwrap().to_text().unwrap(),
            with_ext
        );
    }

    #[test]
    fn gos_signed_tree_head_opens_and_signing_it_again_gives_the_same_note() {
        use base64::Engine as _;
        let log = NoteVerifier::from_vkey(GO_VKEY).unwrap();
        let (checkpoint, _) =
            Checkpoint::open(GO_SIGNED.as_bytes(), "go.sum database tree", &log, &[]).unwrap();
        assert_eq!(checkpoint.size, 6);
        let seed = base64::engine::general_purpose::STANDARD
            .decode(GO_SEED_B64)
            .unwrap();
        let signer = NoteSigner::from_seed("localhost.localdev/sumdb", &seed[1..]).unwrap();
        assert_eq!(checkpoint.sign(&signer).unwrap(), GO_SIGNED);
        let err = Checkpoint::open(GO_SIGNED.as_bytes(), "example.com/log", &log, &[]).unwrap_err();
        assert!(matches!(err, CheckpointError::OtherOrigin { .. }));
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_refused() {
        let log = NoteSigner::from_seed("example.com/log", &[1; 32]).unwrap();
        let other = NoteSigner::from_seed("example.com/log", &[2; 32]).unwrap();
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 1,
            root: record_hash(b""),
            extensions: vec![],
        };
        let signed = cp.sign(&log).unwrap();
        let (opened, _) =
            Checkpoint::open(signed.as_bytes(), "example.com/log", log.verifier(), &[]).unwrap();
        assert_eq!(opened, cp);
        let forged = cp.sign(&other).unwrap();
        let err = Checkpoint::open(
            forged.as_bytes(),
            "example.com/log",
            log.verifier(),
            &[other.verifier()],
        );
        assert!(
            matches!(err, Err(CheckpointError::NotSignedByLog { .. })),
            "{err:?}"
        );
        let err = Checkpoint::open(forged.as_bytes(), "example.com/log", log.verifier(), &[]);
        assert!(
            matches!(
                err,
                Err(CheckpointError::Note(NoteError::NoTrustedSignature { .. }))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let bad = [
            "",
            "\n",
            "example.com/log\n1\n",
            "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "example.com/log\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "example.com/log\n0xabcdef\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "example.com/log\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "example.com/log\n18446744073709551616\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "example.com/log\n99999999999999999999999\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
            "example.com/log\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",
            "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
            "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n\n",
            "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\ne\rx\n",
            "exa\tmple\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        ];
        for text in bad {
            assert!(
                matches!(Checkpoint::parse(text), Err(CheckpointError::Malformed(_))),
                "{text:?}"
            );
        }
        let many = format!("{SPEC_TEXT}{}", "x\n".repeat(MAX_EXTENSION_LINES + 1));
        assert!(Checkpoint::parse(&many).is_err());
        assert!(Checkpoint::parse(&"x".repeat(MAX_CHECKPOINT_BYTES + 1)).is_err());
        for end in 0..SPEC_TEXT.len() {
            assert!(
                Checkpoint::parse(&SPEC_TEXT[..end]).is_err(),
                "cut at {end}"
            );
        }
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
    }
}
