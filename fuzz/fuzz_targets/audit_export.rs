//! What `keyhold audit verify --file` reads: JSON Lines of
//! `ExportRecord`, rebuilt with `AuditRecord::from_export` and fed in order
//! to a `ChainVerifier` (whole chain, and filtered), then `finish`.
//!
//! Input: one flags byte, then UTF-8 JSON Lines. A random MAC never
//! verifies, so to reach the chain logic past the MAC check the harness
//! can re-sign records with the verifier's key:
//!   flags & 1: set each record's `mac` to its correct MAC;
//!   flags & 2: first set each record's `prev` to the previous record's
//!              mac (the genesis value for the first), so it links.
#![no_main]

use std::sync::OnceLock;

use keyhold::internals::audit::{AuditRecord, ChainVerifier, ExportRecord, MacKey, VerifyKeys, GENESIS};
use libfuzzer_sys::fuzz_target;

fn key() -> MacKey {
    static KEY: OnceLock<MacKey> = OnceLock::new();
    KEY.get_or_init(|| MacKey::from_bytes(&[7u8; 32]).expect("a 32-byte MAC key"))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let key = key();
    let keys = VerifyKeys {
        legacy: Some(key.clone()),
        ..VerifyKeys::default()
    };
    let mut whole = Some(ChainVerifier::new(keys.clone()));
    let mut filtered = Some(ChainVerifier::filtered(keys));
    let mut prev = GENESIS;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(e) = serde_json::from_str::<ExportRecord>(line) else {
            break;
        };
        let Ok(mut rec) = AuditRecord::from_export(&e) else {
            break;
        };
        // The record survives another export round trip.
        assert_eq!(
            AuditRecord::from_export(&rec.to_export()).as_ref(),
            Ok(&rec),
            "re-export changed the record"
        );
        if flags & 2 != 0 {
            rec.prev = prev;
        }
        if flags & 1 != 0 {
            rec.mac = key.record_mac(&rec.prev, rec.seq, rec.at_us, &rec.event);
        }
        prev = rec.mac;
        for v in [&mut whole, &mut filtered] {
            if let Some(verifier) = v {
                if verifier.feed(rec.clone()).is_some() {
                    // Broken: the CLI stops reading here.
                    *v = None;
                }
            }
        }
    }
    for v in [whole, filtered].into_iter().flatten() {
        assert!(v.finish().is_ok());
    }
});
