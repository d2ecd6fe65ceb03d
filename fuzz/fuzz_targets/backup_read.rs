//! The backup reader (`keyhold restore`, `keyhold backup --verify`):
//! `read_backup` over arbitrary streams.
//!
//! Input: a mode byte, an 8-byte entry count, then the body. A random
//! stream never has the right header or SHA-256 trailer, so the harness
//! can supply them to reach the checks behind them:
//!   mode & 1: prepend a valid header (magic, format 1, current schema;
//!             read with `allow_unauthenticated`, since format 2's keyed
//!             MAC cannot be hit by chance: tests/fuzz_regressions.rs
//!             builds format-2 streams with the key);
//!   mode & 2: append a trailer (0x02, the count, the correct SHA-256);
//!   mode & 4: append one stray byte after the trailer;
//!   mode & 8: the sink refuses the second entry.
#![no_main]

use keyhold::internals::keyring::Keyring;
use keyhold::internals::ops::backup::{read_backup, BackupError};
use keyhold::internals::store::SCHEMA_VERSION;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn ring() -> &'static Keyring {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    RING.get_or_init(Keyring::ephemeral)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        let _ = read_backup(data, ring(), true, |_tree, _k, _v| Ok(()));
        return;
    }
    let mode = data[0];
    let mut count = [0u8; 8];
    count.copy_from_slice(&data[1..9]);
    let body = &data[9..];

    let mut stream = Vec::with_capacity(body.len() + 80);
    if mode & 1 != 0 {
        stream.extend_from_slice(b"KEYHOLD-BACKUP\n");
        stream.extend_from_slice(&1u32.to_be_bytes());
        stream.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
        stream.extend_from_slice(&0i64.to_be_bytes());
    }
    stream.extend_from_slice(body);
    if mode & 2 != 0 {
        stream.push(2);
        stream.extend_from_slice(&count);
        let digest = Sha256::digest(&stream);
        stream.extend_from_slice(&digest);
    }
    if mode & 4 != 0 {
        stream.push(0);
    }

    let mut handed = 0u64;
    let result = read_backup(&stream[..], ring(), true, |_tree, _k, _v| {
        handed += 1;
        if mode & 8 != 0 && handed == 2 {
            return Err(BackupError::Corrupt("refused by the sink".into()));
        }
        Ok(())
    });
    if let Ok(info) = result {
        assert_eq!(info.entries, handed, "the reader miscounted its entries");
    }
});
