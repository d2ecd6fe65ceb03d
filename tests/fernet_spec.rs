//! The Fernet specification's published test vectors against keyhold's
//! keyring. The vectors are kept in tests/data/fernet-spec (copied unchanged
//! from the specification's repository; its README names the source), so a
//! clone of keyhold alone runs this test.

use keyhold::internals::keyring::{token_timestamp, KeySource, Keyring};
use serde_json::Value;

fn vectors(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fernet-spec")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the Fernet spec vectors at {} ({e}): they ship with the repository in tests/data/fernet-spec",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn ring(secret: &str) -> Keyring {
    Keyring::parse_list(KeySource::FernetKey, [secret]).expect("spec secret is a valid key")
}

fn epoch(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp() as u64
}

#[test]
fn verify_vectors_decrypt_to_their_source() {
    let vs = vectors("verify.json");
    assert!(!vs.is_empty());
    for v in vs {
        let r = ring(v["secret"].as_str().unwrap());
        let now = epoch(v["now"].as_str().unwrap());
        let ttl = v["ttl_sec"].as_u64();
        let opened = r
            .decrypt_at(v["token"].as_str().unwrap(), now, ttl)
            .unwrap();
        assert_eq!(
            opened.plaintext.expose(),
            v["src"].as_str().unwrap().as_bytes()
        );
    }
}

#[test]
fn generate_vectors_decrypt_and_keyhold_stamps_the_same_time() {
    for v in vectors("generate.json") {
        let r = ring(v["secret"].as_str().unwrap());
        let now = epoch(v["now"].as_str().unwrap());
        let token = v["token"].as_str().unwrap();
        let src = v["src"].as_str().unwrap().as_bytes();
        assert_eq!(
            r.decrypt_at(token, now, None).unwrap().plaintext.expose(),
            src
        );
        // keyhold picks its own random IV, so compare what it can: the
        // timestamp, the version byte, and the round trip.
        let ours = r.encrypt_at(src, now);
        assert_eq!(token_timestamp(&ours), token_timestamp(token));
        assert_eq!(
            r.decrypt_at(&ours, now, None).unwrap().plaintext.expose(),
            src
        );
    }
}

#[test]
fn invalid_vectors_are_all_refused() {
    let vs = vectors("invalid.json");
    assert!(vs.len() >= 8);
    for v in vs {
        let r = ring(v["secret"].as_str().unwrap());
        let now = epoch(v["now"].as_str().unwrap());
        let ttl = v["ttl_sec"].as_u64();
        let res = r.decrypt_at(v["token"].as_str().unwrap(), now, ttl);
        assert!(res.is_err(), "accepted invalid vector: {}", v["desc"]);
    }
}

#[test]
fn crafted_far_future_timestamp_with_huge_ttl_does_not_panic() {
    let r = Keyring::ephemeral();
    let old = r.encrypt_at(b"x", 1000);
    // ts + ttl overflows: an expiry past the end of time never comes.
    assert!(r.decrypt_at(&old, u64::MAX, Some(u64::MAX)).is_ok());
    assert!(r.decrypt_at(&old, 2000, Some(500)).is_err(), "expired");
    let future = r.encrypt_at(b"x", u64::MAX - 1);
    assert!(r.decrypt_at(&future, u64::MAX, Some(u64::MAX)).is_err());
    // No panic at the very end of time either.
    let _ = r.decrypt(&future);
}

#[test]
fn without_a_ttl_a_token_stamped_ahead_of_the_clock_opens_as_in_python() {
    // A clock moved back, or a token made on a host running fast, must not
    // lock a key out: Python's decrypt() without a TTL accepts it too.
    let r = Keyring::ephemeral();
    let ahead = r.encrypt_at(b"x", 1_000_000 + 3600);
    assert!(r.decrypt_at(&ahead, 1_000_000, None).is_ok());
    // With a TTL the spec's 60 s skew rule holds.
    assert!(r.decrypt_at(&ahead, 1_000_000, Some(60)).is_err());
}
