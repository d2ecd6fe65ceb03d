//! Messages a new operator meets say what happened and what to do (issue
//! 25, point 9): unknown query parameters, a provider-limited caller's
//! 404, plain HTTP to the TLS port, an untrusted server certificate, fatal
//! errors under JSON logs, table widths, help texts and the hints client
//! commands show. Real binary, loopback.

mod common;

use common::*;

#[test]
fn an_unknown_query_parameter_is_refused_on_every_route() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("github", "ci", "sk-query-1");
    // The misspelt filter no longer lists everything.
    let r = api.get("/api/keys?expird=true");
    assert_eq!(r.status(), 422);
    let d = detail(r);
    assert!(d.contains("`expird`") && d.contains("`expired`"), "{d}");
    // Known names still work, empty values included.
    assert_eq!(api.get("/api/keys?expired=true&provider=").status(), 200);
    assert_eq!(api.get(&format!("/api/keys/{id}?version=1")).status(), 200);
    // A route that takes no query refuses one, and says so.
    for path in [
        "/api/whoami?verbose=1",
        "/api/tokens?all",
        &format!("/api/keys/{id}/versions?x=1"),
        "/api/providers/github/key?version=1",
        "/healthz?probe=1",
    ] {
        let r = api.get(path);
        assert_eq!(r.status(), 422, "{path}");
        assert!(r.headers().contains_key("x-request-id"), "{path}");
        let d = detail(r);
        assert!(d.contains("takes no query parameters"), "{path}: {d}");
    }
    // A parameter of another method's route is unknown on this one.
    let r = api.get(&format!("/api/keys/{id}?purge=true"));
    assert_eq!(r.status(), 422);
    assert!(detail(r).contains("takes only `version`"));
    // The audit routes keep refusing theirs.
    assert_eq!(api.get("/api/audit?sinse=1").status(), 422);
    assert_eq!(api.get("/api/audit/stats?bucket=day&x=1").status(), 422);
    // Without a token the answer is the same: the names are public.
    let r = Api::anonymous(&s).get("/api/keys?expird=true");
    assert_eq!(r.status(), 422);
    // Nothing was revealed by a refused request.
    let (_, out, err) = s.stop();
    assert!(!out.contains("sk-query-1") && !err.contains("sk-query-1"));
    let reveals = v
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "reveal")
        .count();
    assert_eq!(reveals, 1, "only the ?version=1 reveal ran");
}

#[test]
fn a_limited_callers_404_does_not_invite_a_duplicate_nor_tell_what_exists() {
    let v = Vault::new();
    let limited = v.token("ci-reader", "reader", Some("openai"));
    let unlimited = v.token("all-reader", "reader", None);
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    admin.create_key("github", "ci", "sk-limited-1");
    let api = Api::new(&s, &limited);
    // github exists beyond its providers; gitlab does not exist at all;
    // openai is its own and empty: one answer, but for the name.
    let said = |path: &str, provider: &str| {
        let r = api.get(path);
        assert_eq!(r.status(), 404, "{path}");
        detail(r).replace(provider, "P")
    };
    let beyond = said("/api/providers/github/key", "github");
    assert_eq!(beyond, said("/api/providers/gitlab/key", "gitlab"));
    assert_eq!(beyond, said("/api/providers/openai/key", "openai"));
    assert!(beyond.contains("no key you may see"), "{beyond}");
    assert!(!beyond.contains("POST /api/keys"), "{beyond}");
    let named = said("/api/providers/github/keys/ci", "github");
    assert_eq!(named, said("/api/providers/gitlab/keys/ci", "gitlab"));
    assert!(named.contains("no key named \"ci\" you may see"), "{named}");
    // An unlimited caller is told to add one.
    let r = Api::new(&s, &unlimited).get("/api/providers/gitlab/key");
    assert_eq!(r.status(), 404);
    assert!(detail(r).contains("add one with POST /api/keys"));
}

/// `keyhold keys list` against `addr`, trusting `ca` when given.
fn keys_list(addr: &str, token: &str, ca: Option<&std::path::Path>) -> (Option<i32>, String) {
    let mut c = keyhold();
    c.env("KEYHOLD_ADDR", addr)
        .env("KEYHOLD_TOKEN", token)
        .env_remove("KEYHOLD_CA_CERT")
        .args(["keys", "list"]);
    if let Some(ca) = ca {
        c.args(["--ca-cert", ca.to_str().unwrap()]);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_mistakes_say_what_to_do() {
    use std::io::{Read, Write};
    let v = Vault::new();
    let [ca, cert, key] = tls::certificates(v.tmp.path(), "srv");
    let [other_ca, _, _] = tls::certificates(v.tmp.path(), "other");
    let s = tls::serve(&v, &cert, &key, &[]);
    // An untrusted certificate names the flag and the variable.
    let (code, err) = keys_list(&s.base, &v.admin, None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--ca-cert FILE") && err.contains("KEYHOLD_CA_CERT"),
        "{err}"
    );
    // A CA that did not sign it says so.
    let (code, err) = keys_list(&s.base, &v.admin, Some(&other_ca));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("not signed by the CA certificate given"),
        "{err}"
    );
    // The right CA works.
    let (code, err) = keys_list(&s.base, &v.admin, Some(&ca));
    assert_eq!(code, Some(0), "{err}");

    // Plain HTTP on the TLS port: a readable 400, then the connection ends.
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"GET /api/keys?secret=x HTTP/1.1\r\nHost: vault.test:8443\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body["detail"],
        "this port speaks TLS: use https://vault.test:8443/api/keys"
    );
    // Without a Host header, the address it was reached at.
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    sock.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains(&format!("use https://{}/healthz", s.addr)),
        "{answer}"
    );
    // The CLI given http:// for the TLS port shows the same advice, and
    // exits 2 as for any answer 400 (a setup to fix, docs/reference.md).
    let plain = format!("http://{}", s.addr);
    let (code, err) = keys_list(&plain, &v.admin, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("this port speaks TLS: use https://"), "{err}");
    assert!(!err.contains(&v.admin), "{err}");
    // The TLS port still serves TLS.
    let (code, err) = keys_list(&s.base, &v.admin, Some(&ca));
    assert_eq!(code, Some(0), "{err}");
    s.stop();

    // A certificate for another name.
    let [ca, cert, key] = tls::certificates_for(v.tmp.path(), "named", &["vault.test"]);
    let s = tls::serve(&v, &cert, &key, &[]);
    let (code, err) = keys_list(&s.base, &v.admin, Some(&ca));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not issued for the host name"), "{err}");
    s.stop();

    // https:// to a plain port: the CLI says to use http://.
    let s = v.serve(&[]);
    let tls_to_plain = format!("https://{}", s.addr);
    let (code, err) = keys_list(&tls_to_plain, &v.admin, Some(&ca));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not answer in TLS"), "{err}");
}

/// Every stderr line of a `serve` that failed, as JSON.
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

#[test]
fn fatal_errors_are_json_under_json_logs() {
    let v = Vault::new();
    let bad_key = "not-a-fernet-key-at-all";
    let serve = |key: &str, listen: &str, format: &str| {
        keyhold()
            .env("FERNET_KEY", key)
            .env("KEYHOLD_LOG_FORMAT", format)
            .args(["serve", "--data-dir", v.dir_str(), "--listen", listen])
            .output()
            .unwrap()
    };
    // A bad key: exit 2, one JSON error line saying what to do.
    let out = serve(bad_key, "127.0.0.1:0", "json");
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out.stderr);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["exit_status"], 2, "{last}");
    let msg = last["message"].as_str().unwrap();
    assert!(
        msg.starts_with("keyhold: error: ") && msg.contains("FERNET_KEY"),
        "{msg}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(bad_key));
    // The port in use.
    let s = v.serve(&[]);
    let taken = s.addr.clone();
    let other = Vault::new();
    let out = keyhold()
        .env("FERNET_KEY", &other.key)
        .args(["serve", "--data-dir", other.dir_str(), "--listen", &taken])
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out.stderr);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(last["message"].as_str().unwrap().contains(&taken), "{last}");
    s.stop();
    // Text logs keep the plain line.
    let out = serve(bad_key, "127.0.0.1:0", "text");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keyhold: error: "), "{err}");
    assert!(serde_json::from_str::<serde_json::Value>(err.trim()).is_err());
}

/// The widest line of `out`'s stdout, in characters (checks it succeeded).
fn widest(out: &std::process::Output) -> (usize, String) {
    assert_ok(out);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let w = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    (w, text)
}

#[test]
fn tables_fit_100_columns_and_wide_shows_everything() {
    let v = Vault::new();
    let long_provider = "p".repeat(60);
    let long_name = format!("a-very-long-key-name-{}", "x".repeat(150));
    let long_token = format!("ci-{}", "t".repeat(61));
    v.token(
        &long_token,
        "reader",
        Some(&format!("{long_provider},github,openai")),
    );
    let rotated = v.token("rotating", "admin", None);
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key(&long_provider, &long_name, "sk-wide-1");
    let put = api
        .req(reqwest::Method::PUT, &format!("/api/keys/{id}"))
        .json(&serde_json::json!({"api_key": "sk-wide-2", "ttl_seconds": 3600}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    let tokens: serde_json::Value = api.get("/api/tokens").json().unwrap();
    let rot_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "rotating")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api.post_json(
        &format!("/api/tokens/{rot_id}/rotate"),
        &serde_json::json!({}),
    );
    assert_eq!(r.status(), 200);
    drop(rotated);
    let client = |args: &[&str]| {
        keyhold()
            .env("KEYHOLD_ADDR", &s.base)
            .env("KEYHOLD_TOKEN", &v.admin)
            .args(args)
            .output()
            .unwrap()
    };
    let tables: [&[&str]; 3] = [
        &["keys", "list"],
        &["keys", "versions", &id],
        &["token", "list", "--remote"],
    ];
    // A whole RFC 3339 timestamp (`…07T22:…`), not the minute form.
    let whole_time = |t: &str| {
        t.as_bytes()
            .windows(3)
            .any(|w| w[0].is_ascii_digit() && w[1] == b'T' && w[2].is_ascii_digit())
    };
    for args in tables {
        let (w, text) = widest(&client(args));
        assert!(w <= 100, "{args:?} is {w} wide:\n{text}");
        assert!(!whole_time(&text), "{text}");
        let wide: Vec<&str> = args.iter().copied().chain(["--wide"]).collect();
        let (_, full) = widest(&client(&wide));
        assert!(whole_time(&full) && !full.contains('…'), "{full}");
    }
    let (_, keys) = widest(&client(&["keys", "list"]));
    assert!(keys.contains(&id) && keys.contains('…'), "{keys}");
    let (w, keys) = widest(&client(&["keys", "list", "--wide"]));
    assert!(keys.contains(&long_name) && keys.contains(&long_provider));
    assert!(w > 100);
    let (w, tokens) = widest(&client(&["token", "list", "--remote", "--wide"]));
    assert!(
        tokens.contains(&long_token) && tokens.contains(&rot_id),
        "{tokens}"
    );
    assert!(w > 100);
    assert!(tokens.contains("rotated to "), "{tokens}");
    s.stop();
    // Offline, the same.
    let [flag, place] = v.store_args();
    let (w, text) = widest(&run_with_key(&v.key, &["token", "list", flag, place]));
    assert!(w <= 100, "{w}:\n{text}");
    assert!(text.contains("rotated, in overlap"), "{text}");
    let (w, _) = widest(&run_with_key(
        &v.key,
        &["token", "list", flag, place, "--wide"],
    ));
    assert!(w > 100);
}

#[test]
fn serve_and_init_help_name_the_key_variables() {
    for args in [
        ["serve", "--help"],
        ["serve", "-h"],
        ["init", "--help"],
        ["init", "-h"],
    ] {
        let out = keyhold().args(args).output().unwrap();
        assert_ok(&out);
        let help = String::from_utf8(out.stdout).unwrap();
        for var in [
            "FERNET_KEY ",
            "FERNET_KEYS ",
            "FERNET_KEY_FILE ",
            "KEYHOLD_KEY_COMMAND ",
        ] {
            assert!(help.contains(var), "{args:?} does not name {var}:\n{help}");
        }
    }
}

#[test]
fn cli_hints_name_commands_and_http_hints_routes() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("github", "ci", "sk-hints-1");
    let cli = |args: &[&str]| {
        let out = keyhold()
            .env("KEYHOLD_ADDR", &s.base)
            .env("KEYHOLD_TOKEN", &v.admin)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8(out.stderr).unwrap()
    };
    let missing = "00000000-0000-4000-8000-000000000000";
    let err = cli(&["keys", "reveal", missing]);
    assert!(
        err.contains("`keyhold keys list`") && !err.contains("/api/"),
        "{err}"
    );
    let err = cli(&["keys", "reveal", "github/nope"]);
    assert!(
        err.contains("`keyhold keys list --provider github`"),
        "{err}"
    );
    assert!(!err.contains("/api/"), "{err}");
    assert_ok(
        &keyhold()
            .env("KEYHOLD_ADDR", &s.base)
            .env("KEYHOLD_TOKEN", &v.admin)
            .args(["keys", "delete", &id])
            .output()
            .unwrap(),
    );
    let err = cli(&["keys", "reveal", &id]);
    assert!(
        err.contains("`keyhold keys restore ID`") && err.contains("`keyhold keys list --deleted`"),
        "{err}"
    );
    // The HTTP answers still name the routes.
    let d = detail(api.get(&format!("/api/keys/{missing}")));
    assert!(d.contains("GET /api/keys"), "{d}");
    let d = detail(api.get(&format!("/api/keys/{id}")));
    assert!(d.contains("POST /api/keys/{id}/restore"), "{d}");
}
