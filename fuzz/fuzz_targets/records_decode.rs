//! Stored-record decoding: the bytes sled hands back for the audit log
//! (chunks of records and single records), the chain head, keys and
//! access tokens. Every decoder returns a
//! `Result`; none may panic, and a decoded audit record must survive its
//! own encode/decode and export round trips unchanged.
#![no_main]

use keyhold::internals::audit::{AuditRecord, ExportRecord, Head};
use keyhold::internals::store::audit_chunks::{plan_append, Entries, IVec};
use keyhold::internals::store::{KeyRecord, TokenRecord};
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
    // An entry of the audit tree: a chunk of records, or one record.
    let mut framed = 0;
    for (_, bytes) in Entries::new(1, data) {
        framed += bytes.len();
        let _ = AuditRecord::decode(&bytes);
    }
    assert!(framed <= data.len(), "entries framed more bytes than there are");
    // Records appended after it read back as the last ones planned.
    let records = vec![(2, b"two".to_vec()), (3, data.to_vec())];
    let plan = plan_append(Some((1, &IVec::from(data))), &records);
    let back: Vec<(u64, Vec<u8>)> = plan
        .iter()
        .flat_map(|(key, value)| Entries::new(*key, value.as_slice()))
        .map(|(seq, bytes)| (seq, bytes.to_vec()))
        .collect();
    assert!(back.ends_with(&records), "appended records do not read back");
    let _ = Head::decode(data);
    let _ = KeyRecord::decode(uuid::Uuid::nil(), data);
    let _ = TokenRecord::decode(data);
});
