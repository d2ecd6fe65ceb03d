//! Tests of `proof`: the spec's example bundle, then bundles made from a
//! real tree, signed and cosigned, verified and altered.

use super::super::cosignature::Cosigner;
use super::super::merkle::{proofs::prove_record, record_hash, tree_hash, MemoryTree};
use super::super::note::{NoteError, NoteSigner};
use super::*;

// The c2sp.org/tlog-proof spec's example (its signatures are elided with
// `[...]`, so it parses but cannot verify).
const SPEC_EXAMPLE: &str = "c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
— witness2.example TnKKVHLX[...]xwYwrSjgow==
— witness3.example S4X82uH5[...]3oEcROGLFQ==
";

const ORIGIN: &str = "keyhold.example/test-store";

struct Fixture {
    log: NoteSigner,
    witness: Cosigner,
    tree: MemoryTree,
    note: String,
}

fn line(i: u64) -> String {
    format!("{{\"seq\":{},\"action\":\"reveal\"}}", i + 1)
}

fn fixture(size: u64) -> Fixture {
    let log = NoteSigner::from_seed(ORIGIN, &[3; 32]).unwrap();
    let witness = Cosigner::from_seed("witness.example/w1", &[4; 32]).unwrap();
    let mut tree = MemoryTree::default();
    for i in 0..size {
        tree.append(line(i).as_bytes()).unwrap();
    }
    let checkpoint = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: tree_hash(size, &tree).unwrap(),
        extensions: vec![],
    };
    let text = checkpoint.to_text().unwrap();
    let sigs = [
        log.sign(&text).unwrap(),
        witness.cosign(&text, 1_700_000_000).unwrap(),
    ];
    let note = super::super::note::format_note(&text, &sigs).unwrap();
    Fixture {
        log,
        witness,
        tree,
        note,
    }
}

fn bundle(f: &Fixture, index: u64) -> TlogProof {
    TlogProof {
        extra: None,
        index,
        hashes: prove_record(f.tree.size(), index, &f.tree).unwrap(),
        checkpoint: f.note.clone(),
    }
}

#[test]
fn the_spec_example_parses_and_formats_back() {
    let proof = TlogProof::parse(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(proof.index, 73894);
    assert_eq!(proof.hashes.len(), 5);
    assert_eq!(proof.extra.as_deref().map(<[u8]>::len), Some(39));
    assert!(proof
        .checkpoint
        .starts_with("example.com/fancylog\n109482\n"));
    assert_eq!(proof.to_text().unwrap(), SPEC_EXAMPLE);
    // Its elided signatures are not base64: refused, without panicking.
    let log = NoteSigner::from_seed("example.com/fancylog", &[1; 32]).unwrap();
    let err = proof.verify(Hash([0; 32]), "example.com/fancylog", log.verifier(), &[]);
    assert!(matches!(
        err,
        Err(TlogProofError::Checkpoint(CheckpointError::Note(
            NoteError::Malformed(_)
        )))
    ));
}

#[test]
fn every_records_bundle_verifies_offline_after_a_round_trip() {
    for size in [1, 2, 7, 20] {
        let f = fixture(size);
        for index in 0..size {
            let mut proof = bundle(&f, index);
            proof.extra = (index % 2 == 0).then(|| b"seq".to_vec());
            let parsed = TlogProof::parse(proof.to_text().unwrap().as_bytes()).unwrap();
            assert_eq!(parsed, proof);
            let leaf = record_hash(line(index).as_bytes());
            let verified = parsed
                .verify(leaf, ORIGIN, f.log.verifier(), &[f.witness.verifier()])
                .unwrap();
            assert_eq!(verified.checkpoint.size, size);
            assert_eq!(verified.cosigned_by, ["witness.example/w1"]);
            let alone = parsed.verify(leaf, ORIGIN, f.log.verifier(), &[]).unwrap();
            assert!(alone.cosigned_by.is_empty());
        }
    }
}

#[test]
fn an_altered_bundle_or_another_record_does_not_verify() {
    let f = fixture(20);
    let proof = bundle(&f, 5);
    let leaf = record_hash(line(5).as_bytes());
    let log = f.log.verifier();
    assert!(proof.verify(leaf, ORIGIN, log, &[]).is_ok());
    let inclusion = |p: &TlogProof, leaf| {
        matches!(
            p.verify(leaf, ORIGIN, log, &[]),
            Err(TlogProofError::Inclusion(_))
        )
    };
    assert!(inclusion(&proof, record_hash(line(6).as_bytes())));
    assert!(inclusion(
        &TlogProof {
            index: 6,
            ..proof.clone()
        },
        leaf
    ));
    assert!(inclusion(
        &TlogProof {
            index: 20,
            ..proof.clone()
        },
        leaf
    ));
    for i in 0..proof.hashes.len() {
        let mut bad = proof.clone();
        bad.hashes[i].0[0] ^= 1;
        assert!(inclusion(&bad, leaf), "hash {i} flipped");
    }
    let mut short = proof.clone();
    short.hashes.pop();
    assert!(inclusion(&short, leaf));

    let other_log = NoteSigner::from_seed(ORIGIN, &[5; 32]).unwrap();
    let refused = proof.verify(leaf, ORIGIN, other_log.verifier(), &[]);
    assert!(
        matches!(refused, Err(TlogProofError::Checkpoint(_))),
        "{refused:?}"
    );
    let refused = proof.verify(leaf, "keyhold.example/other", log, &[]);
    assert!(matches!(
        refused,
        Err(TlogProofError::Checkpoint(
            CheckpointError::OtherOrigin { .. }
        ))
    ));
    // A checkpoint changed after signing.
    let forged = TlogProof {
        checkpoint: proof.checkpoint.replacen("\n20\n", "\n21\n", 1),
        ..proof.clone()
    };
    assert!(matches!(
        forged.verify(leaf, ORIGIN, log, &[]),
        Err(TlogProofError::Checkpoint(_))
    ));
}

#[test]
fn malformed_bundles_are_refused() {
    let f = fixture(4);
    let good = bundle(&f, 1).to_text().unwrap();
    let note = &f.note;
    let h = Hash([1; 32]).to_base64();
    let bad = [
        String::new(),
        "c2sp.org/tlog-proof@v2\nindex 1\n\n".to_owned() + note,
        format!("c2sp.org/tlog-proof@v1\nindex 01\n\n{note}"),
        format!("c2sp.org/tlog-proof@v1\nindex -1\n\n{note}"),
        format!("c2sp.org/tlog-proof@v1\nindex 99999999999999999999999\n\n{note}"),
        format!("c2sp.org/tlog-proof@v1\nindex  1\n\n{note}"),
        format!("c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\n{note}"),
        format!("c2sp.org/tlog-proof@v1\nextra AA==\n\n{note}"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{}\n\n{note}", &h[..43]),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}x\n\n{note}"),
        format!(
            "c2sp.org/tlog-proof@v1\nindex 1\n{}\n{note}",
            format!("{h}\n").repeat(64)
        ),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n"),
        format!(
            "c2sp.org/tlog-proof@v1\nextra {}\nindex 1\n\n{note}",
            "A".repeat(8000)
        ),
        "c2sp.org/tlog-proof@v1\nindex 1\n\n".to_owned() + &"x".repeat(MAX_BUNDLE_BYTES),
    ];
    for text in &bad {
        let err = TlogProof::parse(text.as_bytes()).unwrap_err();
        assert!(
            matches!(err, TlogProofError::Malformed(_)),
            "{:?}",
            &text[..text.len().min(80)]
        );
    }
    assert!(TlogProof::parse(b"\xff\xfe").is_err());
    // Every cut of a good bundle is refused by the parser or the check,
    // but the one that drops the witness's line: the log's note is whole.
    let without_witness = good.rfind("— witness.example/w1 ").unwrap();
    let leaf = record_hash(line(1).as_bytes());
    for end in 0..good.len() {
        let Some(cut) = good.get(..end) else { continue };
        let verified = TlogProof::parse(cut.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|p| {
                p.verify(leaf, ORIGIN, f.log.verifier(), &[])
                    .map_err(|e| e.to_string())
            });
        assert_eq!(verified.is_ok(), end == without_witness, "cut at {end}");
    }
    assert!(TlogProof {
        checkpoint: "x".into(),
        ..bundle(&f, 1)
    }
    .to_text()
    .is_err());
}
