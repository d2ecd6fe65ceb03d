//! Tests of `note`, with the vectors of Go's golang.org/x/mod/sumdb/note
//! (note_test.go: the keys PeterNeumann and EnochRoot and their
//! signatures) and of the C2SP signed-note spec's example.

use super::*;

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
/// The base64 part of Go's `PRIVATE+KEY+PeterNeumann+c74f20a3+...`: 0x01 ‖ seed.
const PETER_SKEY: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter_signer() -> NoteSigner {
    let raw = BASE64.decode(PETER_SKEY).unwrap();
    assert_eq!(raw[0], ED25519_TYPE);
    NoteSigner::from_seed("PeterNeumann", &raw[1..]).unwrap()
}

fn peter() -> NoteVerifier {
    NoteVerifier::from_vkey(PETER_VKEY).unwrap()
}

fn enoch() -> NoteVerifier {
    NoteVerifier::from_vkey(ENOCH_VKEY).unwrap()
}

fn note(sigs: &[&str]) -> Vec<u8> {
    format!("{TEXT}\n{}", sigs.concat()).into_bytes()
}

#[test]
fn signing_with_gos_key_gives_gos_signature_and_vkey() {
    let signer = peter_signer();
    assert_eq!(signer.verifier().vkey(), PETER_VKEY);
    let sig = signer.sign(TEXT).unwrap();
    assert_eq!(
        format_note(TEXT, &[sig]).unwrap().as_bytes(),
        note(&[PETER_SIG])
    );
}

#[test]
fn the_spec_example_verifies_with_its_vkey() {
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let msg = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let v = NoteVerifier::from_vkey(vkey).unwrap();
    let opened = open(msg.as_bytes(), &[&v]).unwrap();
    assert_eq!(opened.text, "This is an example message.\n");
    assert_eq!(opened.to_text().unwrap(), msg);
}

#[test]
fn a_known_signature_is_verified_and_an_unknown_one_kept() {
    let opened = open(&note(&[PETER_SIG, ENOCH_SIG]), &[&peter()]).unwrap();
    assert_eq!(opened.text, TEXT);
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(
        (opened.verified[0].name.as_str(), opened.verified[0].key_id),
        ("PeterNeumann", 0xc74f20a3)
    );
    assert_eq!(opened.unverified.len(), 1);
    assert_eq!(
        (
            opened.unverified[0].name.as_str(),
            opened.unverified[0].key_id
        ),
        ("EnochRoot", 0xaf0cfe78)
    );
    assert_eq!(
        opened.to_text().unwrap().as_bytes(),
        note(&[PETER_SIG, ENOCH_SIG])
    );

    let both = open(&note(&[PETER_SIG, ENOCH_SIG]), &[&peter(), &enoch()]).unwrap();
    assert_eq!((both.verified.len(), both.unverified.len()), (2, 0));
}

#[test]
fn a_note_without_a_trusted_signature_is_refused() {
    let err = open(&note(&[PETER_SIG, ENOCH_SIG]), &[]).unwrap_err();
    assert_eq!(
        err,
        NoteError::NoTrustedSignature {
            signers: "PeterNeumann+c74f20a3, EnochRoot+af0cfe78".into()
        }
    );
}

#[test]
fn two_trusted_keys_with_one_name_and_id_are_ambiguous() {
    let err = open(&note(&[ENOCH_SIG]), &[&enoch(), &peter(), &enoch()]).unwrap_err();
    assert_eq!(
        err,
        NoteError::AmbiguousKey {
            name: "EnochRoot".into(),
            key_id: 0xaf0cfe78
        }
    );
    // Unused duplicates do not matter.
    open(&note(&[PETER_SIG]), &[&enoch(), &peter(), &enoch()]).unwrap();
}

#[test]
fn a_bad_signature_by_a_trusted_key_rejects_the_note() {
    let forged = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let err = open(&note(&[&forged]), &[&peter()]).unwrap_err();
    assert_eq!(
        err,
        NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        }
    );
    let other_text = format!("{TEXT}x\n\n{PETER_SIG}");
    assert!(matches!(
        open(other_text.as_bytes(), &[&peter()]),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn duplicate_signatures_are_kept_once() {
    let enoch_forged = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
    let msg = note(&[PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG, &enoch_forged]);
    let opened = open(&msg, &[&peter()]).unwrap();
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(opened.unverified.len(), 2);
}

#[test]
fn more_than_100_signatures_are_refused() {
    let many = PETER_SIG.repeat(101);
    assert_eq!(
        open(&note(&[&many]), &[&peter()]),
        Err(NoteError::Malformed("too many signatures"))
    );
    assert_eq!(
        open(&note(&[&many]), &[]),
        Err(NoteError::Malformed("too many signatures"))
    );
    let sixteen = PETER_SIG.repeat(16);
    open(&note(&[&sixteen]), &[&peter()]).unwrap();
    assert_eq!(
        open(&vec![b'a'; MAX_NOTE_BYTES + 1], &[]),
        Err(NoteError::TooLarge)
    );
}

#[test]
fn malformed_notes_are_refused() {
    let no_name = "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";
    let bad: Vec<Vec<u8>> = vec![
        TEXT.into(),
        format!("{TEXT}\n").into(),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]).into(),
        format!("\x01{TEXT}\n{PETER_SIG}").into(),
        [b"\xff".as_slice(), &note(&[PETER_SIG])].concat(),
        format!("{TEXT}\n{no_name}\n").into(),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n").into(),
        format!("{TEXT}\n{PETER_SIG}\n").into(),
        format!("{TEXT}\n— PeterNeumann x08g\n").into(),
        format!("{TEXT}\n— PeterNeumann !!!!\n").into(),
        format!("{TEXT}\n— a+b x08go/ZJ=\n").into(),
        format!("{TEXT}\r\n{PETER_SIG}").into(),
    ];
    for msg in bad {
        let err = open(&msg, &[&peter()]).unwrap_err();
        assert!(
            matches!(err, NoteError::Malformed(_)),
            "{:?}: {err:?}",
            String::from_utf8_lossy(&msg)
        );
    }
}

#[test]
fn every_truncation_and_byte_change_of_a_note_is_refused_without_panic() {
    let msg = note(&[PETER_SIG, ENOCH_SIG]);
    let after_peter = TEXT.len() + 1 + PETER_SIG.len();
    for end in 0..msg.len() {
        // Cut right after Peter's line, the note is whole and signed.
        let opened = open(&msg[..end], &[&peter()]);
        assert_eq!(opened.is_ok(), end == after_peter, "truncated at {end}");
    }
    let mut changed = msg.clone();
    for i in 0..changed.len() {
        changed[i] = changed[i].wrapping_add(1);
        // A change inside EnochRoot's (unknown) signature leaves a valid note.
        let in_enoch = i >= after_peter;
        assert!(
            open(&changed, &[&peter()]).is_err() || in_enoch,
            "byte {i} changed"
        );
        changed[i] = changed[i].wrapping_sub(1);
    }
}

#[test]
fn mangled_verifier_keys_are_refused() {
    // As Go's TestNewVerifier: every strict substring and every byte changed.
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let sub = String::from_utf8_lossy(&b[i..j]);
                assert!(NoteVerifier::from_vkey(&sub).is_err(), "{sub}");
            }
        }
    }
    let mut m = b.to_vec();
    for i in 0..m.len() {
        m[i] = m[i].wrapping_add(1);
        assert!(
            NoteVerifier::from_vkey(&String::from_utf8_lossy(&m)).is_err(),
            "byte {i}"
        );
        m[i] = m[i].wrapping_sub(1);
    }
    // A wrong-length key and an unknown type, each with a matching key ID.
    assert!(NoteVerifier::from_vkey(
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
    )
    .is_err());
    assert!(NoteVerifier::from_vkey(
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    .is_err());
    assert_eq!(
        VerifierKey::parse(PETER_VKEY).unwrap().to_text(),
        PETER_VKEY
    );
}

#[test]
fn signing_refuses_text_without_final_newline_and_bad_names() {
    let signer = peter_signer();
    assert!(signer.sign("abc").is_err());
    assert!(signer.sign("a\tb\n").is_err());
    assert_eq!(
        NoteSigner::from_seed("bad name", &[0; 32]).unwrap_err(),
        NoteError::BadKeyName
    );
    assert_eq!(
        NoteSigner::from_seed("a", &[0; 31]).unwrap_err(),
        NoteError::BadSeed
    );
    let sig = signer.sign(TEXT).unwrap();
    let renamed = Signature {
        name: "a+b".into(),
        ..sig
    };
    assert_eq!(format_note(TEXT, &[renamed]), Err(NoteError::BadKeyName));
    assert!(format_note(TEXT, &[]).is_err());
}
