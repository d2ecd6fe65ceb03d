//! Fills an initialised, stopped keyhold store with keys and audit records
//! through the library, in large batches: the fast way to build the big
//! stores of the scale benchmarks (issue 6). Used by `scripts/bench.sh`.
//!
//! ```sh
//! FERNET_KEY=... keyhold init --data-dir DIR > DIR.token
//! FERNET_KEY=... cargo run --release --example fill -- DIR --keys 100000 --audit 1000000 \
//!     --ids-out DIR.ids
//! ```
//!
//! Keys get a 100-byte plaintext (`sk-bench-...`), Fernet-encrypted under
//! the keyring's newest key, spread round-robin over `--providers`
//! providers (`claude`, `gemini`, `github`, `openai`, then `p4`, `p5`, ...).
//! Each batch of keys is one audit record (action `import`) carrying the
//! keys, committed and fsynced in one transaction, exactly as the server's
//! writer commits; audit records are reveal records of the filled keys.
//! `--ids-out` writes a sample of the ids (at most `--ids-sample`, spread
//! evenly), one a line, for the load generator to reveal.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use keyhold::internals::audit::{Action, AuditEvent, AuditLog, Outcome};
use keyhold::internals::keyring::Keyring;
use keyhold::internals::store::{KeyRecord, Store, Write};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Fill a stopped, initialised keyhold store with keys and audit records")]
struct Args {
    /// The data directory (made by `keyhold init`; the server must be stopped).
    data_dir: PathBuf,
    /// Keys to add.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Audit records to add (besides one record per key batch).
    #[arg(long, default_value_t = 0)]
    audit: u64,
    /// Records (or keys) per transaction + fsync.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Providers the keys are spread over.
    #[arg(long, default_value_t = 16)]
    providers: usize,
    /// Write a sample of the new keys' ids here, one a line.
    #[arg(long)]
    ids_out: Option<PathBuf>,
    /// At most this many ids in `--ids-out`.
    #[arg(long, default_value_t = 10_000)]
    ids_sample: u64,
    /// The store's page cache while filling, MiB.
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
}

const NAMED: [&str; 4] = ["claude", "gemini", "github", "openai"];

fn provider(i: u64, n: usize) -> String {
    let p = (i % n.max(1) as u64) as usize;
    match NAMED.get(p) {
        Some(name) => (*name).to_string(),
        None => format!("p{p}"),
    }
}

/// A 100-byte plaintext, distinct per key.
fn plaintext(i: u64) -> String {
    format!("sk-bench-{i:091}")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let keyring = Keyring::from_env().context("set FERNET_KEY (the store's key)")?;
    if !keyhold::internals::store::holds_store(&args.data_dir) {
        bail!(
            "{} holds no store: run `keyhold init --data-dir {}` first",
            args.data_dir.display(),
            args.data_dir.display()
        );
    }
    let store = Store::open_with_cache(&args.data_dir, args.cache_mb * 1024 * 1024)
        .context("cannot open the store (is the server still running on it?)")?;
    if !store.is_initialised()? {
        bail!("{} is not initialised", args.data_dir.display());
    }
    keyhold::internals::unlock::unlock(&store, &keyring)?;
    let log = AuditLog::open(store.clone(), &keyring)?;
    let started = Instant::now();

    // Keys, oldest first, one microsecond apart, ending now.
    let now_us = chrono::Utc::now().timestamp_micros();
    let first_us = now_us - args.keys as i64;
    let every = (args.keys / args.ids_sample.max(1)).max(1);
    let mut sample: Vec<Uuid> = Vec::new();
    let mut written = 0u64;
    let mut last_report = Instant::now();
    while written < args.keys {
        let n = (args.keys - written).min(args.batch as u64);
        let mut writes = Vec::with_capacity(n as usize);
        for i in written..written + n {
            let id = Uuid::new_v4();
            if i % every == 0 && (sample.len() as u64) < args.ids_sample {
                sample.push(id);
            }
            writes.push(Write::PutKey(KeyRecord::new(
                id,
                provider(i, args.providers),
                format!("bench-{i}"),
                keyring.encrypt(plaintext(i).as_bytes()),
                first_us + i as i64,
                None,
                None,
            )));
        }
        let mut ev = AuditEvent::cli(
            Action::Import,
            Outcome::Success,
            Some(format!("bench fill: keys {written}..{}", written + n)),
        );
        ev.caller = "bench-fill".into();
        log.append(&[(ev, writes)])?;
        written += n;
        if last_report.elapsed().as_secs() >= 5 {
            eprintln!("fill: {written}/{} keys", args.keys);
            last_report = Instant::now();
        }
    }
    let keys_done = started.elapsed();

    // Audit records: reveals of the sampled keys (or of no key).
    let mut appended = 0u64;
    while appended < args.audit {
        let n = (args.audit - appended).min(args.batch as u64);
        let batch: Vec<(AuditEvent, Vec<Write>)> = (appended..appended + n)
            .map(|i| {
                let mut ev = AuditEvent::cli(
                    Action::Reveal,
                    Outcome::Success,
                    Some("bench fill; opened by key 0000000000000000".into()),
                );
                ev.caller = "bench-fill".into();
                ev.ip = "127.0.0.1".into();
                if !sample.is_empty() {
                    ev.key_id = Some(sample[(i % sample.len() as u64) as usize]);
                    ev.provider = Some(provider(i, args.providers));
                }
                (ev, Vec::new())
            })
            .collect();
        log.append(&batch)?;
        appended += n;
        if last_report.elapsed().as_secs() >= 5 {
            eprintln!("fill: {appended}/{} audit records", args.audit);
            last_report = Instant::now();
        }
    }
    store.flush()?;
    let total = started.elapsed();

    if let Some(path) = &args.ids_out {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        for id in &sample {
            writeln!(out, "{id}")?;
        }
        out.flush()?;
    }
    println!("fill_keys: {} keys", args.keys);
    println!("fill_keys_time: {:.3} s", keys_done.as_secs_f64());
    println!("fill_audit: {} records", args.audit);
    println!(
        "fill_audit_time: {:.3} s",
        (total - keys_done).as_secs_f64()
    );
    println!("fill_store_keys: {} keys", store.key_count());
    println!("fill_store_audit_last_seq: {} seq", store.audit_last_seq()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintexts_are_100_bytes_and_distinct() {
        assert_eq!(plaintext(0).len(), 100);
        assert_eq!(plaintext(999_999_999).len(), 100);
        assert_ne!(plaintext(1), plaintext(2));
    }

    #[test]
    fn providers_are_named_then_numbered_round_robin() {
        assert_eq!(provider(0, 16), "claude");
        assert_eq!(provider(3, 16), "openai");
        assert_eq!(provider(4, 16), "p4");
        assert_eq!(provider(17, 16), "gemini");
        assert_eq!(provider(5, 0), "claude");
    }
}
