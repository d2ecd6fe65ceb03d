//! Room under pressure (issue 24, point 1): keep-alive connections from a
//! few addresses hold every slot (here the cap is lowered to 64 and 8 an
//! address: 8 loopback addresses x 8 connections, each asking for
//! `/healthz` every 2 s and reconnecting when closed), and a client from
//! another address is still answered within 2 s throughout: at the cap the
//! server closes the connection idle longest of the address holding the
//! most. Once over HTTP/1.1 keep-alive, once over HTTP/2 (prior
//! knowledge, as the flood did). Real binary, loopback addresses
//! 127.0.0.10-17 and 127.0.0.2.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One keep-alive client from `local`: a request every 2 s on one
/// connection, a new connection when the server closes it.
async fn hold(
    local: std::net::IpAddr,
    server: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    h2: bool,
    answered: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            return;
        };
        if socket.bind((local, 0).into()).is_err() {
            return;
        }
        let Ok(conn) = socket.connect(server).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if h2 {
            hold_h2(conn, server, &stop, &answered).await;
            continue;
        }
        let mut conn = conn;
        let mut buf = vec![0u8; 4096];
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let asked = conn
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await;
            let got = match asked {
                Ok(()) => tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await,
                Err(_) => break,
            };
            match got {
                Ok(Ok(n)) if n > 0 => {
                    if buf.starts_with(b"HTTP/1.1 200") {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => break,
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// HTTP/2 on `conn`: a request every 2 s until the server ends the
/// connection (a GOAWAY, when it is closed to make room).
async fn hold_h2(
    conn: tokio::net::TcpStream,
    server: std::net::SocketAddr,
    stop: &AtomicBool,
    answered: &AtomicU64,
) {
    let io = hyper_util::rt::TokioIo::new(conn);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await
    else {
        tokio::time::sleep(Duration::from_millis(200)).await;
        return;
    };
    let driver = tokio::spawn(connection);
    while !stop.load(Ordering::Relaxed) {
        let Ok(req) = http::Request::get(format!("http://{server}/healthz"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
        else {
            break;
        };
        match tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await {
            Ok(Ok(r)) if r.status() == 200 && r.version() == http::Version::HTTP_2 => {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    driver.abort();
}

/// A fresh connection from 127.0.0.2 asking for `/healthz`: how long until
/// the whole answer came (or `None` within 5 s).
fn probe(server: std::net::SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(([127, 0, 0, 2], 0).into()).ok()?;
        let work = async {
            let mut conn = socket.connect(server).await.ok()?;
            conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            conn.read_to_end(&mut out).await.ok()?;
            let text = String::from_utf8_lossy(&out);
            if !text.starts_with("HTTP/1.1 200") {
                eprintln!("probe answered: {text:?}");
            }
            text.starts_with("HTTP/1.1 200").then_some(())
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .ok()
            .flatten()
    })?;
    Some(started.elapsed())
}

#[test]
fn a_keep_alive_flood_holding_every_slot_leaves_room_for_another_client() {
    flood_leaves_room(false);
}

#[test]
fn an_http2_keep_alive_flood_holding_every_slot_leaves_room_for_another_client() {
    flood_leaves_room(true);
}

fn flood_leaves_room(h2: bool) {
    let v = Vault::new();
    let s = v.serve(&[
        ("KEYHOLD_MAX_CONNECTIONS", "64"),
        ("KEYHOLD_MAX_CONNECTIONS_PER_IP", "8"),
    ]);
    let server: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Requests of the flood answered 200 (so it did hold its connections,
    // whichever protocol).
    let answered = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut tasks = Vec::new();
                for a in 10..18u8 {
                    for i in 0..8u64 {
                        let local = std::net::IpAddr::from([127, 0, 0, a]);
                        let (stop, answered) = (stop.clone(), answered.clone());
                        // Spread over the 2 s between requests.
                        let offset = Duration::from_millis(i * 250 + u64::from(a) * 7);
                        tasks.push(tokio::spawn(async move {
                            tokio::time::sleep(offset).await;
                            hold(local, server, stop, h2, answered).await
                        }));
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    // Let the flood take every slot.
    std::thread::sleep(Duration::from_secs(3));
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let Some(took) = probe(server) else {
            panic!(
                "/healthz from another address was not answered; the server said:\n{}",
                s.output()
            );
        };
        worst = worst.max(took);
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    // 64 connections asking every 2 s for 11 s: a few hundred answers.
    let answered = answered.load(Ordering::Relaxed);
    assert!(
        answered >= 150,
        "the flood was answered only {answered} times"
    );
    assert!(
        worst < Duration::from_secs(2),
        "the slowest answer took {worst:?}"
    );
    let text = metrics_text(&s, &v.admin);
    let evicted = text
        .lines()
        .find_map(|l| l.strip_prefix("keyhold_connections_evicted_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        evicted >= 1.0,
        "no connection was closed to make room:\n{text}"
    );
}
