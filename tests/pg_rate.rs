//! One reveal rate for a PostgreSQL cluster (issue 24, point 6): the rate
//! is stored in the database (written by `init`, changed by `keyhold
//! reveal-rate`, audited), every node uses it, a node given another one
//! refuses to start naming both, and a change reaches running nodes. Real
//! binary, a PostgreSQL server of the test's own.

mod common;

use std::time::{Duration, Instant};

use common::postgres::cluster;
use common::*;

fn serve(url: &str, key: &str, node: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("FERNET_KEY", key)];
    all.extend_from_slice(env);
    let args = [
        "--database-url",
        url,
        "--node-name",
        node,
        "--listen",
        "127.0.0.1:0",
    ];
    Server::start_args(&args, &all)
}

fn reveal_status(s: &Server, token: &str, id: &str) -> u16 {
    Api::new(s, token)
        .get(&format!("/api/keys/{id}"))
        .status()
        .as_u16()
}

#[test]
fn every_node_uses_the_rate_the_database_stores() {
    let Some(pg) = cluster() else { return };
    let url = pg.database("rate");
    let key = keygen();
    let out = run_with_key(&key, &["init", "--database-url", &url]);
    assert_ok(&out);
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let rate = |args: &[&str]| {
        let mut all = vec!["reveal-rate"];
        all.extend_from_slice(args);
        all.extend(["--database-url", &url]);
        run_with_key(&key, &all)
    };
    let out = rate(&[]);
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10/min");

    // A node given another rate than the stored one: exit 2, naming both.
    let out = keyhold()
        .env("FERNET_KEY", &key)
        .env("KEYHOLD_REVEAL_RATE", "100/min")
        .args(["serve", "--database-url", &url, "--node-name", "b"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("100/min") && err.contains("10/min"), "{err}");

    // The admin command sets it for every node, audited.
    assert_ok(&rate(&["4/min"]));
    let a = serve(&url, &key, "a", &[]);
    let b = serve(&url, &key, "b", &[("KEYHOLD_REVEAL_RATE", "4/min")]);
    let id = Api::new(&a, &admin).create_key("claude", "main", "sk-ant-rate-000001");
    // One budget of 4 for the client, whichever node answers.
    let got: Vec<u16> = (0..6)
        .map(|i| reveal_status(if i % 2 == 0 { &a } else { &b }, &admin, &id))
        .collect();
    assert_eq!(got, [200, 200, 200, 200, 429, 429]);

    // Changed while they run: both use the new rate within about 10 s.
    assert_ok(&rate(&["10000/min"]));
    let started = Instant::now();
    while reveal_status(&a, &admin, &id) == 429 || reveal_status(&b, &admin, &id) == 429 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new rate was not taken up"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A rate written into the database behind keyhold's back (no signed
    // head vouches for it) is not taken up by running nodes. Same period
    // as the one in force, so that taking it up would let the next reveal
    // through (the shared limit keeps its state).
    assert_ok(&rate(&["2/h"]));
    let started = Instant::now();
    // Both nodes take it up (each on its own 10 s tick) before the edit.
    while reveal_status(&a, &admin, &id) != 429 || reveal_status(&b, &admin, &id) != 429 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "2/h not taken up"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    pg.psql(
        "rate",
        "UPDATE keyhold_meta SET v = convert_to('100000/h', 'UTF8') WHERE k = 'reveal_rate'",
    );
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(reveal_status(&a, &admin, &id), 429);
    assert_eq!(reveal_status(&b, &admin, &id), 429);
    drop(a);
    drop(b);
    // Put back (the next open would refuse the store otherwise).
    pg.psql(
        "rate",
        "UPDATE keyhold_meta SET v = convert_to('2/h', 'UTF8') WHERE k = 'reveal_rate'",
    );
    let out = run_with_key(&key, &["audit", "export", "--database-url", &url]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reveal rate set to 4/min (was 10/min)"),
        "{text}"
    );
    assert!(
        text.contains("reveal rate set to 10000/min (was 4/min)"),
        "{text}"
    );
}
