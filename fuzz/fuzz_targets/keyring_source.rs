//! The keyring's sources and the Fernet token paths that read untrusted
//! text: `FERNET_KEYS` lists, `Keyring::from_lookup` over FERNET_KEY,
//! FERNET_KEYS and FERNET_KEY_FILE (the fuzzed bytes are written to a
//! temporary file), `token_timestamp`, and `decrypt`/`decrypt_at` with
//! fuzzed tokens, clocks and maximum ages.
//!
//! KEYHOLD_KEY_COMMAND is never set here: it runs a shell.
//!
//! Beyond "no panic", `RoundTrip` checks the documented semantics of
//! `decrypt_at` for authentic tokens with any timestamp: without a maximum
//! age every authentic token opens; with one, a token opens unless it is
//! older than the age or stamped more than 60 s ahead of `now`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use keyhold::internals::keyring::{token_timestamp, KeySource, Keyring};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// `FERNET_KEYS` as `parse_list` sees it.
    List(String),
    /// Any mix of the three file/env sources (two set is an error).
    Lookup {
        key: Option<String>,
        keys: Option<String>,
        file: Option<Vec<u8>>,
    },
    Timestamp(String),
    Decrypt {
        token: String,
        now: u64,
        ttl: Option<u64>,
    },
    RoundTrip {
        plaintext: Vec<u8>,
        stamped: u64,
        now: u64,
        ttl: Option<u64>,
        /// Replace the token's character at this index (mod length).
        flip: Option<(u16, u8)>,
    },
}

fn ring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(Keyring::ephemeral)
}

fn key_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("keyhold-fuzz-keyfile-{}", std::process::id()))
    })
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=";

fuzz_target!(|input: Input| match input {
    Input::List(text) => {
        if let Ok(ring) = Keyring::parse_list(KeySource::FernetKeys, text.split(',')) {
            assert!(!ring.is_empty());
            let t = ring.encrypt(b"x");
            assert_eq!(
                ring.decrypt(&t).expect("own token").plaintext.expose(),
                b"x"
            );
        }
    }
    Input::Lookup { key, keys, file } => {
        if let Some(bytes) = &file {
            std::fs::write(key_file(), bytes).expect("write the temporary key file");
        }
        let path = key_file().to_string_lossy().into_owned();
        let _ = Keyring::from_lookup(|name| match name {
            "FERNET_KEY" => key.clone(),
            "FERNET_KEYS" => keys.clone(),
            "FERNET_KEY_FILE" => file.as_ref().map(|_| path.clone()),
            // Never KEYHOLD_KEY_COMMAND: it runs `sh -c`.
            _ => None,
        });
    }
    Input::Timestamp(text) => {
        let _ = token_timestamp(&text);
    }
    Input::Decrypt { token, now, ttl } => {
        let _ = ring().decrypt(&token);
        let _ = ring().decrypt_at(&token, now, ttl);
    }
    Input::RoundTrip {
        plaintext,
        stamped,
        now,
        ttl,
        flip,
    } => {
        let ring = ring();
        let mut token = ring.encrypt_at(&plaintext, stamped);
        assert_eq!(token_timestamp(&token), Some(stamped));
        if let Some((at, to)) = flip {
            let mut b = token.into_bytes();
            let i = usize::from(at) % b.len();
            b[i] = B64[usize::from(to) % B64.len()];
            token = String::from_utf8(b).expect("ASCII");
            // An altered token either fails or, if it still decodes to the
            // same bytes (padding bits), opens to the same plaintext.
            if let Ok(o) = ring.decrypt_at(&token, now, ttl) {
                assert_eq!(o.plaintext.expose(), &plaintext[..]);
            }
            return;
        }
        let got = ring.decrypt_at(&token, now, ttl);
        match ttl {
            None => {
                let o = got.unwrap_or_else(|_| {
                    panic!(
                        "an authentic token stamped {stamped} did not open at {now} without a TTL"
                    )
                });
                assert_eq!(o.plaintext.expose(), &plaintext[..]);
            }
            // The model holds for any clock a machine can have; the last
            // 120 s of u64 are where keyhold clamps `now`.
            Some(age) if now <= u64::MAX - 120 => {
                let expired = stamped.checked_add(age).is_some_and(|limit| limit < now);
                let future = stamped > now + 60;
                assert_eq!(
                    got.is_ok(),
                    !expired && !future,
                    "stamped {stamped}, now {now}, max age {age}"
                );
            }
            Some(_) => {}
        }
    }
});
