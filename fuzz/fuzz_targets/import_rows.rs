//! The import parsers (`keyhold import`): `read_rows` for `sqlite3 -json`
//! arrays, JSON Lines and `sqlite3 -csv -header`, plus the row field
//! parsers `parse_reference_time` and `import_id`.
//!
//! Input: one selector byte (format, or all three), then the file's bytes.
#![no_main]

use keyhold::internals::ops::import::{import_id, parse_reference_time, read_rows, ImportFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let formats: &[ImportFormat] = match sel % 4 {
        0 => &[ImportFormat::Json],
        1 => &[ImportFormat::Jsonl],
        2 => &[ImportFormat::Csv],
        _ => &[ImportFormat::Json, ImportFormat::Jsonl, ImportFormat::Csv],
    };
    for &fmt in formats {
        let _ = read_rows(body, fmt);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse_reference_time(text);
        if let Some(id) = import_id(text) {
            // Stable: the same text maps to the same id.
            assert_eq!(import_id(text), Some(id));
            // A UUID as given is kept.
            if let Ok(u) = uuid::Uuid::parse_str(text) {
                assert_eq!(id, u);
            }
        }
    }
});
