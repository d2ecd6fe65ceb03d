//! Export of 1,000,000 audit records runs in bounded memory. Slow (it
//! writes a million records first), so it is ignored in the default run:
//!
//!     cargo test --release --test export_memory -- --ignored --nocapture
//!
//! (`scripts/bench-export.sh` runs it.) It prints the peak RSS of the
//! export process and fails above the bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyhold::internals::audit::{Action, AuditEvent, AuditLog, Outcome};
use keyhold::internals::keyring::{KeySource, Keyring};
use keyhold::internals::store::Store;

fn records() -> u64 {
    std::env::var("KEYHOLD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
/// The export streams record by record and walks the store one lookup per
/// entry so sled's cache evicts as it goes; it peaked at 25-29 MiB for a
/// million records (see the figures in docs/audit.md).
const BOUND_MIB: u64 = 64;

/// Peak resident set (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[test]
#[ignore = "writes a million records; run with --ignored (scripts/bench-export.sh)"]
fn exporting_a_million_records_stays_in_bounded_memory() {
    let v = Vault::new();
    {
        let store = Store::open(&v.dir).unwrap();
        let ring = Keyring::parse_list(KeySource::FernetKey, [v.key.as_str()]).unwrap();
        keyhold::internals::unlock::unlock(&store, &ring).unwrap();
        let log = AuditLog::open(store, &ring).unwrap();
        let started = Instant::now();
        let mut written = log.store().audit_last_seq().unwrap();
        while written < records() {
            let n = (records() - written).min(20_000);
            let batch: Vec<_> = (0..n)
                .map(|i| {
                    let mut e = AuditEvent::cli(
                        Action::Reveal,
                        Outcome::Success,
                        Some(format!("filler {i}")),
                    );
                    e.caller = "bench".into();
                    (e, vec![])
                })
                .collect();
            log.append(&batch).unwrap();
            written += n;
        }
        eprintln!("wrote {written} records in {:.1?}", started.elapsed());
    }
    for format in ["jsonl", "csv"] {
        let out = v.tmp.path().join(format!("export.{format}"));
        let started = Instant::now();
        let mut child = keyhold()
            .env("FERNET_KEY", &v.key)
            .args([
                "audit",
                "export",
                "--format",
                format,
                "--data-dir",
                v.dir_str(),
                "-o",
                out.to_str().unwrap(),
            ])
            .spawn()
            .unwrap();
        let mut peak = 0;
        loop {
            if let Some(kib) = peak_rss_kib(child.id()) {
                peak = peak.max(kib);
            }
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = started.elapsed();
        let lines = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
        assert!(lines > records(), "{format}: {lines} lines");
        eprintln!(
            "export {format}: {lines} lines in {elapsed:.2?}, peak RSS {:.1} MiB",
            peak as f64 / 1024.0
        );
        assert!(
            peak / 1024 <= BOUND_MIB,
            "{format}: peak RSS {peak} KiB over {BOUND_MIB} MiB"
        );
    }
}
