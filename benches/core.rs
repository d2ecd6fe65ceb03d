//! Micro-benchmarks of keyhold's core operations (issue 6):
//!
//! - `fernet/encrypt_100B`, `fernet/decrypt_100B`: the keyring on a
//!   100-byte API key;
//! - `audit/append_1`, `audit/append_batch_64`: chaining, committing and
//!   fsyncing audit records (reveal records, each with its `last_used`
//!   write) on an on-disk store, one alone and 64 in one batch (what the
//!   group-commit writer does under load);
//! - `store/get_key_by_id`, `store/newest_per_provider`: the two lookups of
//!   a reveal, on a store pre-filled with 10,000 keys over 16 providers.
//!
//! `cargo bench --bench core` runs them; `cargo test --benches` runs each
//! once as a smoke test. The stores live in a temporary directory under
//! `KEYHOLD_BENCH_DIR` (default `/var/tmp`, which is on disk where `/tmp`
//! may be a tmpfs that makes fsync free); `KEYHOLD_BENCH_STORE_KEYS`
//! changes the 10,000.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyhold::internals::audit::{Action, AuditEvent, AuditLog, Outcome};
use keyhold::internals::keyring::Keyring;
use keyhold::internals::store::{KeyRecord, Store, Write};
use uuid::Uuid;

const PROVIDERS: usize = 16;

fn bench_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KEYHOLD_BENCH_DIR") {
        return PathBuf::from(d);
    }
    let var_tmp = PathBuf::from("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp
    } else {
        std::env::temp_dir()
    }
}

/// An initialised on-disk store with `keys` keys, and its audit log.
struct Fixture {
    log: AuditLog,
    ids: Vec<Uuid>,
    // Dropped last: removes the store's directory.
    _dir: tempfile::TempDir,
}

fn provider(i: usize) -> String {
    format!("p{}", i % PROVIDERS)
}

fn fixture(keys: usize) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("keyhold-bench-")
        .tempdir_in(bench_dir())
        .expect("cannot make a temporary directory (set KEYHOLD_BENCH_DIR)");
    let store = Store::open(dir.path()).expect("open the store");
    let ring = Keyring::ephemeral();
    keyhold::internals::unlock::initialise(&store, &ring).expect("initialise the store");
    let log = AuditLog::open(store, &ring).expect("open the audit log");
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut ids = Vec::with_capacity(keys);
    let plaintext = [b'k'; 100];
    for chunk_start in (0..keys).step_by(1000) {
        let chunk_end = (chunk_start + 1000).min(keys);
        let writes: Vec<Write> = (chunk_start..chunk_end)
            .map(|i| {
                let id = Uuid::new_v4();
                ids.push(id);
                Write::PutKey(KeyRecord::new(
                    id,
                    provider(i),
                    format!("bench-{i}"),
                    ring.encrypt(&plaintext),
                    now_us - (keys - i) as i64,
                    None,
                    None,
                ))
            })
            .collect();
        let ev = AuditEvent::cli(Action::Import, Outcome::Success, Some("bench".into()));
        log.append(&[(ev, writes)]).expect("fill the store");
    }
    Fixture {
        log,
        ids,
        _dir: dir,
    }
}

/// What a successful reveal appends: its record and the key's last_used.
fn reveal_record(id: Uuid) -> (AuditEvent, Vec<Write>) {
    let mut ev = AuditEvent::cli(
        Action::Reveal,
        Outcome::Success,
        Some("opened by key 0123456789abcdef".into()),
    );
    ev.caller = "bench".into();
    ev.caller_id = Some(Uuid::new_v4());
    ev.ip = "127.0.0.1".into();
    ev.key_id = Some(id);
    ev.provider = Some("p0".into());
    let at_us = chrono::Utc::now().timestamp_micros();
    (ev, vec![Write::TouchKey { id, at_us }])
}

fn fernet(c: &mut Criterion) {
    let ring = Keyring::ephemeral();
    let plaintext = [b'k'; 100];
    let token = ring.encrypt(&plaintext);
    let mut g = c.benchmark_group("fernet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt_100B", |b| {
        b.iter(|| ring.encrypt(black_box(&plaintext)))
    });
    g.bench_function("decrypt_100B", |b| {
        b.iter(|| ring.decrypt(black_box(&token)).is_ok())
    });
    g.finish();
}

fn audit(c: &mut Criterion) {
    let fx = fixture(1000);
    let one = [reveal_record(fx.ids[0])];
    let batch: Vec<_> = fx
        .ids
        .iter()
        .take(64)
        .map(|id| reveal_record(*id))
        .collect();
    let mut g = c.benchmark_group("audit");
    // Every iteration is an fsync: fewer, longer samples.
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_1", |b| {
        b.iter(|| fx.log.append(black_box(&one)).expect("append"))
    });
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("append_batch_64", |b| {
        b.iter(|| fx.log.append(black_box(&batch)).expect("append"))
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let keys = std::env::var("KEYHOLD_BENCH_STORE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000usize)
        .max(PROVIDERS);
    let fx = fixture(keys);
    let store: &Store = fx.log.store();
    let providers: Vec<String> = (0..PROVIDERS).map(provider).collect();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("get_key_by_id", |b| {
        b.iter(|| {
            i = (i + 7919) % fx.ids.len();
            store
                .get_key(black_box(&fx.ids[i]))
                .expect("get_key")
                .expect("the key is there")
        })
    });
    let mut p = 0usize;
    g.bench_function("newest_per_provider", |b| {
        b.iter(|| {
            p = (p + 1) % providers.len();
            store
                .provider_keys_newest_first(black_box(&providers[p]))
                .next()
                .expect("the provider has keys")
                .expect("readable")
        })
    });
    g.finish();
}

criterion_group!(benches, fernet, audit, store);
criterion_main!(benches);
