//! keyhold's own load generator and micro-timers for `scripts/bench.sh`
//! (issue 6). Every mode prints its figures as `name: value unit` lines.
//!
//! ```text
//! loadgen reveal  --addr URL --token-file F --ids-file F --conns 64 --secs 10
//! loadgen reveal  --addr URL --token-file F --provider claude,gemini --conns 64
//! loadgen create  --addr URL --token-file F --conns 16 --secs 10
//! loadgen fsync   --dir DIR --secs 2
//! loadgen fernet  --iters 200000
//! loadgen startup --bin target/release/keyhold --data-dir DIR --runs 5
//! ```
//!
//! `reveal` and `create` open exactly `--conns` keep-alive HTTP/1.1
//! connections (hyper's client, one connection per task) and keep one
//! request in flight on each, closed-loop, for `--warmup` seconds (not
//! counted) and then `--secs` seconds. Every loop is bounded in time and by
//! `--max-requests`. The client runs on one thread by default
//! (`--threads`), so on a 2-core machine it leaves the server a core.
//! With `--repeats N` each figure is the median of N windows.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(about = "keyhold's load generator and micro-timers (scripts/bench.sh)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Reveal keys (GET /api/keys/{id} or /api/providers/{p}/key).
    Reveal {
        #[command(flatten)]
        load: LoadArgs,
        /// Ids to reveal, one a line (chosen at random per request).
        #[arg(long, conflicts_with = "provider")]
        ids_file: Option<PathBuf>,
        /// Reveal the newest key of these providers (comma-separated) instead.
        #[arg(long)]
        provider: Option<String>,
    },
    /// Create keys (POST /api/keys with a 100-byte api_key).
    Create {
        #[command(flatten)]
        load: LoadArgs,
        /// Provider of the created keys.
        #[arg(long, default_value = "bench")]
        provider: String,
    },
    /// Serial 4 KiB write + fsync in DIR: the disk's serial fsync rate.
    Fsync {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        #[arg(long, default_value_t = 100_000)]
        max: u64,
        #[arg(long, default_value = "fsync_serial")]
        name: String,
    },
    /// keyhold's Fernet encrypt and decrypt of a 100-byte key, per operation.
    Fernet {
        #[arg(long, default_value_t = 200_000)]
        iters: u64,
        #[arg(long, default_value_t = 5)]
        repeats: u64,
    },
    /// Time from starting `keyhold serve` to a 200 on /healthz.
    Startup {
        /// The keyhold binary.
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: u32,
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
        #[arg(long, default_value = "startup")]
        name: String,
    },
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// The server, e.g. http://127.0.0.1:8787
    #[arg(long)]
    addr: String,
    /// A file holding the bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Measured seconds per window.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Unmeasured seconds before each window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Windows; each figure is the median over them.
    #[arg(long, default_value_t = 1)]
    repeats: u32,
    /// Client threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Hard cap on requests per window (warm-up included).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Prefix of the printed figures.
    #[arg(long, default_value = "load")]
    name: String,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Reveal {
            load,
            ids_file,
            provider,
        } => {
            let paths: Vec<String> = match (ids_file, provider) {
                (Some(f), None) => read_lines(&f)?
                    .into_iter()
                    .map(|id| format!("/api/keys/{id}"))
                    .collect(),
                (None, Some(p)) => p
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|p| format!("/api/providers/{p}/key"))
                    .collect(),
                _ => bail!("give --ids-file or --provider"),
            };
            if paths.is_empty() {
                bail!("nothing to reveal: the ids file or provider list is empty");
            }
            run_load(load, Target::Get(paths))
        }
        Mode::Create { load, provider } => run_load(load, Target::Create(provider)),
        Mode::Fsync {
            dir,
            secs,
            max,
            name,
        } => fsync(&dir, secs, max, &name),
        Mode::Fernet { iters, repeats } => fernet(iters, repeats),
        Mode::Startup {
            bin,
            data_dir,
            runs,
            timeout_secs,
            name,
        } => startup(&bin, &data_dir, runs, timeout_secs, &name),
    }
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

// ---------------------------------------------------------------- HTTP load

enum Target {
    /// GET one of these paths, chosen at random.
    Get(Vec<String>),
    /// POST /api/keys for this provider.
    Create(String),
}

struct Shared {
    addr: SocketAddr,
    host: String,
    bearer: String,
    target: Target,
}

#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    ok: u64,
    non_ok: u64,
    errors: u64,
    sent: u64,
    first_status: Option<u16>,
}

struct Window {
    per_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    ok: u64,
    non_ok: u64,
    errors: u64,
    sent: u64,
    first_bad_status: Option<u16>,
}

fn run_load(load: LoadArgs, target: Target) -> anyhow::Result<()> {
    if load.conns == 0 {
        bail!("--conns must be at least 1");
    }
    let url = load
        .addr
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--addr must be http://HOST:PORT"))?
        .to_string();
    let addr: SocketAddr = url
        .parse()
        .with_context(|| format!("--addr {}: need an IP:port", load.addr))?;
    let token = std::fs::read_to_string(&load.token_file)
        .with_context(|| format!("cannot read {}", load.token_file.display()))?;
    let shared = Arc::new(Shared {
        addr,
        host: url,
        bearer: format!("Bearer {}", token.trim()),
        target,
    });
    let runtime = if load.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(load.threads)
            .enable_all()
            .build()?
    };
    let mut windows = Vec::new();
    for run in 0..load.repeats.max(1) {
        let w = runtime.block_on(window(shared.clone(), &load, run))?;
        println!(
            "# {} window {}: {:.1} req/s, p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms, \
             {} ok, {} not 200, {} errors",
            load.name,
            run + 1,
            w.per_s,
            w.p50,
            w.p99,
            w.p999,
            w.max,
            w.ok,
            w.non_ok,
            w.errors
        );
        windows.push(w);
    }
    let med = |f: fn(&Window) -> f64| median(windows.iter().map(f).collect());
    let n = &load.name;
    println!("{n}_per_s: {:.1} req/s", med(|w| w.per_s));
    println!("{n}_p50: {:.3} ms", med(|w| w.p50));
    println!("{n}_p99: {:.3} ms", med(|w| w.p99));
    println!("{n}_p999: {:.3} ms", med(|w| w.p999));
    println!("{n}_max: {:.3} ms", med(|w| w.max));
    println!("{n}_conns: {} conns", load.conns);
    let sum = |f: fn(&Window) -> u64| windows.iter().map(f).sum::<u64>();
    println!("{n}_sent: {} requests", sum(|w| w.sent));
    println!("{n}_ok: {} requests", sum(|w| w.ok));
    println!("{n}_not_ok: {} requests", sum(|w| w.non_ok));
    println!("{n}_errors: {} requests", sum(|w| w.errors));
    if let Some(s) = windows.iter().find_map(|w| w.first_bad_status) {
        println!("# {n}: first status other than 200 was {s}");
    }
    Ok(())
}

async fn window(shared: Arc<Shared>, load: &LoadArgs, run: u32) -> anyhow::Result<Window> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(load.warmup.max(0.0));
    let until = measure_from + Duration::from_secs_f64(load.secs.max(0.001));
    let budget = Arc::new(AtomicU64::new(load.max_requests));
    let mut tasks = Vec::with_capacity(load.conns);
    for i in 0..load.conns {
        let seed = (u64::from(run) << 32) ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(conn_task(
            shared.clone(),
            seed,
            measure_from,
            until,
            budget.clone(),
        )));
    }
    let mut all = TaskResult::default();
    for t in tasks {
        let r = t.await.context("a load task panicked")?;
        all.latencies_us.extend(r.latencies_us);
        all.ok += r.ok;
        all.non_ok += r.non_ok;
        all.errors += r.errors;
        all.sent += r.sent;
        all.first_status = all.first_status.or(r.first_status);
    }
    let measured = until
        .min(Instant::now())
        .saturating_duration_since(measure_from);
    let mut lat = all.latencies_us;
    lat.sort_unstable();
    let pct =
        |p: f64| -> f64 { rank(lat.len(), p).map_or(f64::NAN, |i| f64::from(lat[i]) / 1000.0) };
    Ok(Window {
        per_s: all.ok as f64 / measured.as_secs_f64().max(1e-9),
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        max: lat.last().map_or(f64::NAN, |&m| f64::from(m) / 1000.0),
        ok: all.ok,
        non_ok: all.non_ok,
        errors: all.errors,
        sent: all.sent,
        first_bad_status: all.first_status,
    })
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One keep-alive connection, one request in flight, until `until`.
async fn conn_task(
    shared: Arc<Shared>,
    mut rng: u64,
    measure_from: Instant,
    until: Instant,
    budget: Arc<AtomicU64>,
) -> TaskResult {
    let mut res = TaskResult::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut n = 0u64;
    while Instant::now() < until {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(shared.addr).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    res.errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let req = match &shared.target {
            Target::Get(paths) => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let path = &paths[(rng % paths.len() as u64) as usize];
                Request::get(path.as_str())
                    .header(hyper::header::HOST, shared.host.as_str())
                    .header(hyper::header::AUTHORIZATION, shared.bearer.as_str())
                    .body(Full::new(Bytes::new()))
            }
            Target::Create(provider) => {
                n += 1;
                let body = serde_json::json!({
                    "provider": provider,
                    "key_name": format!("create-{rng:x}-{n}"),
                    "api_key": format!("sk-create-{n:090}"),
                });
                Request::post("/api/keys")
                    .header(hyper::header::HOST, shared.host.as_str())
                    .header(hyper::header::AUTHORIZATION, shared.bearer.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
            }
        };
        let Ok(req) = req else {
            res.errors += 1;
            break;
        };
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            // Read the whole body so the connection can be reused.
            resp.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        })
        .await;
        let took = t0.elapsed();
        res.sent += 1;
        match outcome {
            Ok(Ok(status)) => {
                if t0 >= measure_from && t0 < until {
                    res.latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    if status == 200 {
                        res.ok += 1;
                    } else {
                        res.non_ok += 1;
                    }
                }
                if status != 200 && res.first_status.is_none() {
                    res.first_status = Some(status);
                }
            }
            _ => {
                res.errors += 1;
                sender = None;
            }
        }
    }
    res
}

/// The index of the `p` quantile (nearest rank) in a sorted slice of `len`.
fn rank(len: usize, p: f64) -> Option<usize> {
    if len == 0 {
        return None;
    }
    Some(((p * len as f64).ceil() as usize).clamp(1, len) - 1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

// -------------------------------------------------------------------- fsync

fn fsync(dir: &Path, secs: f64, max: u64, name: &str) -> anyhow::Result<()> {
    /// Wrap to the start after this much, so a fast disk does not fill up.
    const WRAP: u64 = 64 * 1024 * 1024;
    let path = dir.join(".keyhold-fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = [0x5au8; 4096];
    let mut lat = Vec::new();
    let mut offset = 0u64;
    let started = Instant::now();
    let limit = Duration::from_secs_f64(secs.max(0.01));
    let result = (|| -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        while (lat.len() as u64) < max && started.elapsed() < limit {
            let t0 = Instant::now();
            if offset >= WRAP {
                file.seek(SeekFrom::Start(0))?;
                offset = 0;
            }
            file.write_all(&block)?;
            file.sync_all()?;
            offset += block.len() as u64;
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    })();
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).ok();
    result.context("write + fsync failed")?;
    let count = lat.len();
    if count == 0 {
        bail!("no fsync was timed (--max 0?)");
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| rank(count, p).map_or(f64::NAN, |i| lat[i]);
    println!("{name}_per_s: {:.1} fsync/s", count as f64 / elapsed);
    println!("{name}_p50: {:.3} ms", pct(0.5));
    println!("{name}_p99: {:.3} ms", pct(0.99));
    println!("{name}_count: {count} fsyncs");
    Ok(())
}

// ------------------------------------------------------------------- fernet

fn fernet(iters: u64, repeats: u64) -> anyhow::Result<()> {
    use std::hint::black_box;
    let ring = keyhold::internals::keyring::Keyring::ephemeral();
    let plaintext = [b'k'; 100];
    let per_round = (iters / repeats.max(1)).max(1);
    let token = ring.encrypt(&plaintext);
    let opened = ring
        .decrypt(&token)
        .map_err(|_| anyhow!("a fresh token does not decrypt"))?;
    if opened.plaintext.expose() != plaintext {
        bail!("decrypt returned other bytes");
    }
    let mut enc = Vec::new();
    let mut dec = Vec::new();
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        for _ in 0..per_round {
            black_box(ring.encrypt(black_box(&plaintext)));
        }
        enc.push(t0.elapsed().as_nanos() as f64 / per_round as f64);
        let t0 = Instant::now();
        for _ in 0..per_round {
            let _ = black_box(ring.decrypt(black_box(&token)));
        }
        dec.push(t0.elapsed().as_nanos() as f64 / per_round as f64);
    }
    println!("keyhold_fernet_encrypt: {:.0} ns/op", median(enc));
    println!("keyhold_fernet_decrypt: {:.0} ns/op", median(dec));
    Ok(())
}

// ------------------------------------------------------------------ startup

fn startup(
    bin: &Path,
    data_dir: &Path,
    runs: u32,
    timeout_secs: f64,
    name: &str,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs_f64(timeout_secs);
    let mut listening = Vec::new();
    let mut healthy = Vec::new();
    for run in 0..runs.max(1) {
        let t0 = Instant::now();
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let measured = measure_one(&mut child, t0, timeout);
        stop(&mut child);
        let (l, h) = measured?;
        println!(
            "# {name} run {}: listening after {:.1} ms, healthy after {:.1} ms",
            run + 1,
            l * 1000.0,
            h * 1000.0
        );
        listening.push(l * 1000.0);
        healthy.push(h * 1000.0);
    }
    let max = healthy.iter().copied().fold(f64::NAN, f64::max);
    println!("{name}_listening: {:.1} ms", median(listening));
    println!("{name}_healthy: {:.1} ms", median(healthy));
    println!("{name}_healthy_max: {max:.1} ms");
    Ok(())
}

/// Seconds from `t0` to the "listening" line and to the first 200 on /healthz.
fn measure_one(child: &mut Child, t0: Instant, timeout: Duration) -> anyhow::Result<(f64, f64)> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the server never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(timeout)
        .map_err(|_| anyhow!("the server printed no listening line within {timeout:?}"))?;
    let listening = t0.elapsed().as_secs_f64();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("keyhold listening on http://")
        .ok_or_else(|| anyhow!("unexpected first line from the server: {line:?}"))?
        .parse()?;
    loop {
        if healthz(addr).unwrap_or(false) {
            return Ok((listening, t0.elapsed().as_secs_f64()));
        }
        if t0.elapsed() > timeout {
            bail!("/healthz did not answer 200 within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn healthz(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 200"))
}

/// SIGTERM by pid (a clean shutdown that flushes the store), then wait;
/// SIGKILL only if it has not exited after 20 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(rank(0, 0.5), None);
        assert_eq!(rank(1, 0.999), Some(0));
        assert_eq!(rank(100, 0.5), Some(49));
        assert_eq!(rank(100, 0.99), Some(98));
        assert_eq!(rank(1000, 0.999), Some(998));
        assert_eq!(rank(10, 1.0), Some(9));
    }

    #[test]
    fn medians_skip_nan_and_average_the_middle_pair() {
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
    }
}
