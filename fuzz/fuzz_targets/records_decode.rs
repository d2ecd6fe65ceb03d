//! Stored-record decoding: the bytes sled hands back for the audit log,
//! the chain head, keys and access tokens. Every decoder returns a
//! `Result`; none may panic, and a decoded audit record must survive its
//! own encode/decode and export round trips unchanged.
#![no_main]

use keyhold::audit::{AuditRecord, ExportRecord, Head};
use keyhold::store::{KeyRecord, TokenRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = AuditRecord::decode(data) {
        let bytes = rec.encode().expect("a decoded audit record encodes");
        let again = AuditRecord::decode(&bytes).expect("a re-encoded audit record decodes");
        assert_eq!(again, rec, "encode/decode changed the record");

        // What `keyhold audit export` writes and `audit verify --file` reads.
        let exported = rec.to_export();
        let line = serde_json::to_string(&exported).expect("an export record serialises");
        let parsed: ExportRecord = serde_json::from_str(&line).expect("an exported line parses");
        assert_eq!(parsed, exported, "JSON changed the export record");
        if let Ok(back) = AuditRecord::from_export(&parsed) {
            assert_eq!(back, rec, "export/import changed the record");
        }
    }
    let _ = Head::decode(data);
    let _ = KeyRecord::decode(uuid::Uuid::nil(), data);
    let _ = TokenRecord::decode(data);
});
