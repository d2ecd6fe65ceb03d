//! Hostile input for every parser of the module: thousands of random
//! mutations of valid notes, checkpoints, proofs and keys. None may panic,
//! and whatever a strict parser accepts formats back to the same bytes.

use super::checkpoint::Checkpoint;
use super::cosignature::Cosigner;
use super::merkle::{proofs::prove_record, tree_hash, MemoryTree};
use super::note::{self, NoteSigner, NoteVerifier, VerifierKey};
use super::proof::TlogProof;

/// xorshift64*: a fixed sequence, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: [&[u8]; 8] = [
    b"\n",
    b"\n\n",
    "— ".as_bytes(),
    b"+",
    b"=",
    b"0",
    b"\xff",
    b"\x01",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => {
                out.remove(at);
            }
            2 => {
                let piece = PIECES[rng.below(PIECES.len())];
                out.splice(at..at, piece.iter().copied());
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

struct Samples {
    log: NoteSigner,
    witness: Cosigner,
    note: String,
    checkpoint: String,
    bundle: String,
}

fn samples() -> Samples {
    let log = NoteSigner::from_seed("keyhold.example/s", &[7; 32]).unwrap();
    let witness = Cosigner::from_seed("witness.example/w", &[8; 32]).unwrap();
    let mut tree = MemoryTree::default();
    for i in 0..13u32 {
        tree.append(&i.to_be_bytes()).unwrap();
    }
    let cp = Checkpoint {
        origin: "keyhold.example/s".into(),
        size: 13,
        root: tree_hash(13, &tree).unwrap(),
        extensions: vec!["state x".into()],
    };
    let checkpoint = cp.to_text().unwrap();
    let sigs = [
        log.sign(&checkpoint).unwrap(),
        witness.cosign(&checkpoint, 1_700_000_000).unwrap(),
    ];
    let note = note::format_note(&checkpoint, &sigs).unwrap();
    let bundle = TlogProof {
        extra: Some(b"x".to_vec()),
        index: 4,
        hashes: prove_record(13, 4, &tree).unwrap(),
        checkpoint: note.clone(),
    }
    .to_text()
    .unwrap();
    Samples {
        log,
        witness,
        note,
        checkpoint,
        bundle,
    }
}

#[test]
fn mutated_notes_never_panic_and_verified_text_is_signed_text() {
    let s = samples();
    let known: [&dyn note::Verifier; 2] = [s.log.verifier(), s.witness.verifier()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let input = mutate(&mut rng, s.note.as_bytes());
        if let Ok(opened) = note::open(&input, &known) {
            // A note can only open with the text the keys signed.
            assert_eq!(
                opened.text,
                s.checkpoint,
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[test]
fn mutated_checkpoints_and_bundles_never_panic_and_parse_only_canonical_text() {
    let s = samples();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..3000 {
        let input = mutate(&mut rng, s.checkpoint.as_bytes());
        if let Ok(text) = std::str::from_utf8(&input) {
            if let Ok(cp) = Checkpoint::parse(text) {
                assert_eq!(cp.to_text().unwrap(), text);
            }
        }
        let input = mutate(&mut rng, s.bundle.as_bytes());
        if let Ok(proof) = TlogProof::parse(&input) {
            assert_eq!(proof.to_text().unwrap().as_bytes(), input);
            // Verifying a mutated bundle may fail, and must not panic.
            let _ = proof.verify(
                super::merkle::record_hash(&4u32.to_be_bytes()),
                "keyhold.example/s",
                s.log.verifier(),
                &[],
            );
        }
    }
}

#[test]
fn mutated_verifier_keys_never_panic_and_parse_only_canonical_text() {
    let s = samples();
    let mut rng = Rng(0x0fed_cba9_8765_4321);
    for vkey in [s.log.verifier().vkey(), s.witness.verifier().vkey()] {
        for _ in 0..2000 {
            let input = mutate(&mut rng, vkey.as_bytes());
            let Ok(text) = std::str::from_utf8(&input) else {
                continue;
            };
            if let Ok(parsed) = VerifierKey::parse(text) {
                assert_eq!(parsed.to_text(), text);
            }
            let _ = NoteVerifier::from_vkey(text);
        }
    }
}
