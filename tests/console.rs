//! The console (`/ui/`): its security headers on every answer, and the
//! page itself driven in real browsers against a real server — Debian's
//! `chromium` through `chromedriver` (plain W3C WebDriver calls over HTTP),
//! and Debian's `firefox-esr` through its own Marionette socket (the same
//! commands; Debian has no geckodriver). Sign in with an auditor token,
//! filter, page back, open a record, download the filter, see a tampered
//! chain reported, sign out; the page never sends a request without the
//! Bearer header (Chromium's network log) and never stores the token.
//!
//! Without a browser its test says so and does not run; under `CI=true`
//! that is a failure (.ci/run installs them through scripts/test.sh).
//! The drivers are in `common/browser.rs`; screenshots go to
//! `target/ui-screenshots/` (git-ignored).
//!
//! Over 500 lines: the console's whole first flow, in both browsers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::*;
use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- headers

fn assert_console_headers(r: &reqwest::blocking::Response, what: &str) {
    let h = r.headers();
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {n} header"))
            .to_string()
    };
    let csp = get("content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
}

#[test]
fn every_console_answer_carries_the_security_headers_and_assets_are_hashed_and_cached() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(s.url("/ui/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_console_headers(&r, "/ui/");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().unwrap();
    assert!(!page.contains("<script>") && !page.contains("style="));

    // The page names its assets by content hash; each is served for a year.
    let names = keyhold::internals::http::ui::asset_names();
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(page.contains(&format!("assets/{name}")), "{name}");
        let parts: Vec<&str> = name.split('.').collect();
        assert_eq!(parts.len(), 3, "{name}");
        assert!(parts[1].len() == 16 && parts[1].chars().all(|c| c.is_ascii_hexdigit()));
        let r = http
            .get(s.url(&format!("/ui/assets/{name}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_console_headers(&r, name);
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }

    // Everything else under /ui carries the same headers, and no 500.
    for (method, path, status) in [
        ("GET", "/ui", 308),
        ("GET", "/ui/assets/app.js", 404),
        ("GET", "/ui/assets/..%2f..%2fetc%2fpasswd", 404),
        ("GET", "/ui/nothing/here", 404),
        ("GET", "/ui/assets/%00%ff", 404),
        ("POST", "/ui/", 405),
        ("DELETE", "/ui/assets/x", 405),
    ] {
        let r = http
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        assert_console_headers(&r, path);
    }
    let r = http.get(s.url("/ui")).send().unwrap();
    assert_eq!(r.headers()["location"], "ui/");
}

#[test]
fn whoami_names_the_token_its_scopes_and_providers() {
    let v = Vault::new();
    let auditor = v.token("alice-audit", "auditor", None);
    let limited = v.token("ci", "reader", Some("github"));
    let s = v.serve(&[]);
    let me: Value = Api::new(&s, &auditor).get("/api/whoami").json().unwrap();
    assert_eq!(me["name"], "alice-audit");
    assert_eq!(me["scopes"], json!(["audit:read"]));
    assert_eq!(me["providers"], Value::Null);
    let me: Value = Api::new(&s, &limited).get("/api/whoami").json().unwrap();
    assert_eq!(me["scopes"], json!(["keys:list", "keys:reveal"]));
    assert_eq!(me["providers"], json!(["github"]));
    let me: Value = Api::new(&s, &v.admin).get("/api/whoami").json().unwrap();
    assert_eq!(me["scopes"].as_array().unwrap().len(), 6);
    assert_eq!(Api::anonymous(&s).get("/api/whoami").status(), 401);
    assert_eq!(Api::new(&s, "kh_nope").get("/api/whoami").status(), 401);
}

#[test]
fn serve_dev_prints_the_console_address() {
    let s = Server::start_dev();
    let want = format!("{}/ui/", s.base);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.output().contains(&want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = s.output();
    assert!(
        out.contains(&want),
        "the dev banner names the console: {out}"
    );
}

// ---------------------------------------------------------------- the test

/// A vault with history: keys (one expiring in 3 days), successful
/// reveals, and 30 refused (`forbidden`) reveal attempts, enough for
/// more than one page of them.
fn vault_with_history() -> (Vault, String, String) {
    let v = Vault::new();
    let auditor = v.token("alice-audit", "auditor", None);
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "10000/min")]);
    let admin = Api::new(&s, &v.admin);
    let mut ids = Vec::new();
    for (p, n) in [("claude", "prod"), ("gemini", "prod"), ("github", "ci-bot")] {
        ids.push(admin.create_key(p, n, &format!("sk-{p}-{n}-secret")));
    }
    let r = admin.post_json(
        "/api/keys",
        &json!({"provider": "openai", "key_name": "trial", "api_key": "sk-trial", "ttl_seconds": 3 * 86400}),
    );
    assert_eq!(r.status(), 200);
    // A deleted key, still in its recovery window.
    let gone = admin.create_key("openai", "retired", "sk-openai-retired");
    assert_eq!(admin.delete(&format!("/api/keys/{gone}")).status(), 200);
    let reading = Api::new(&s, &reader);
    for id in &ids {
        assert_eq!(reading.get(&format!("/api/keys/{id}")).status(), 200);
    }
    // Each refused attempt at another key id: a token's refusals are
    // coalesced per target and second, so these are thirty records.
    let refused = Api::new(&s, &auditor);
    for _ in 0..30 {
        let id = uuid::Uuid::new_v4();
        assert_eq!(refused.get(&format!("/api/keys/{id}")).status(), 403);
    }
    s.stop();
    (v, auditor, reader)
}

/// Flips one byte inside an older audit record, with sled itself, on the
/// stopped store (as someone who can write the files can).
fn tamper_with_an_old_record(dir: &Path) {
    with_sled(dir, |db| {
        let tree = db.open_tree("audit").unwrap();
        let (k, value) = tree.iter().next().unwrap().unwrap();
        let mut value = value.to_vec();
        // A chunk: 0xFF, then seq:u64 len:u32 record...; else one record.
        let (start, len) = if value[0] == 0xFF {
            let len = u32::from_be_bytes(value[9..13].try_into().unwrap()) as usize;
            (13, len)
        } else {
            (0, value.len())
        };
        let at = start + len - 3;
        value[at] ^= 0x01;
        tree.insert(k, value).unwrap();
    });
}

#[test]
fn the_console_in_chromium_signs_in_filters_pages_shows_a_broken_chain_and_forgets_the_token() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let (v, auditor, reader) = vault_with_history();
    let s = v.serve(&[]);
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let b = driver.session(&chromium, profile.path(), &[]);
    audit_flow(&b, &s, &auditor, "chromium");

    // Download the current filter (outcome=forbidden) as CSV and JSONL.
    b.click("#f-outcome option[value=forbidden]");
    b.click("#apply");
    b.wait_for(
        "document.querySelectorAll('#audit-rows tr').length === 30 && \
         document.querySelector('#audit-rows tr').children[3].textContent.indexOf('forbidden') === 0",
    );
    b.click("#dl-csv");
    b.click("#dl-jsonl");
    let downloads = profile.path().join("downloads");
    let csv = wait_for_file(&downloads.join("keyhold-audit.csv"));
    let jsonl = wait_for_file(&downloads.join("keyhold-audit.jsonl"));
    assert!(csv.starts_with("seq,at,"), "{csv}");
    assert_eq!(
        csv.lines().count(),
        31,
        "the header and 30 refused attempts"
    );
    assert_eq!(jsonl.lines().count(), 30);
    for line in jsonl.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["outcome"], "forbidden");
    }

    // The token is nowhere but in memory.
    let stored = b.everything_stored();
    assert!(!stored.contains(&auditor), "the token was stored: {stored}");
    assert!(!stored.contains("kh_"), "{stored}");

    // Sign out: the page forgets the token and what it showed.
    b.click("#signout");
    b.wait_for("!document.getElementById('signin-view').hidden");
    assert_eq!(
        b.js("return document.querySelectorAll('#audit-rows tr').length;"),
        0
    );
    assert_eq!(
        b.js("return document.getElementById('audit-view').hidden;"),
        true
    );

    let errors = b.script_errors();
    assert!(errors.is_empty(), "the page raised errors: {errors:?}");

    // Every request to the API carried the Bearer header; none left this
    // origin.
    let requests = b.requests();
    let api: Vec<_> = requests
        .iter()
        .filter(|(u, _)| u.contains("/api/"))
        .collect();
    assert!(api.len() >= 6, "{requests:?}");
    for (url, headers) in &requests {
        assert!(url.starts_with(&s.base), "a request left the origin: {url}");
        if url.contains("/api/") {
            assert_eq!(
                headers["Authorization"],
                format!("Bearer {auditor}"),
                "{url} without the Bearer header"
            );
        }
        assert!(!url.contains("kh_"), "a token in a URL: {url}");
    }

    // A reader token: the keys view only, with the soon-expiring key
    // marked, and no way to reveal.
    b.click("#token");
    b.type_into("#token", &reader);
    b.click("#signin-button");
    b.wait_for("!document.getElementById('keys-view').hidden");
    b.wait_for("document.querySelectorAll('#keys-rows tr').length === 5");
    assert_eq!(
        b.js("return document.getElementById('tab-audit').hidden;"),
        true
    );
    let keys = b.text("#keys-table");
    for name in [
        "claude",
        "gemini",
        "github",
        "openai",
        "ci-bot",
        "expires soon",
        "retired",
        "deleted",
        "Version",
        "Destroyed at",
    ] {
        assert!(keys.contains(name), "{name} in {keys}");
    }
    assert!(!keys.contains("sk-"), "no key material: {keys}");
    assert_eq!(
        b.js("return document.querySelectorAll('#keys-rows tr.soon').length;"),
        1
    );
    assert_eq!(
        b.js("return /reveal/i.test(Array.from(document.querySelectorAll('button, a')).map(function (e) { return e.textContent; }).join(' '));"),
        false,
        "the page offers no reveal"
    );
    b.screenshot("chromium-keys-1280");
    for (url, headers) in b.requests() {
        if url.contains("/api/") {
            assert_eq!(
                headers["Authorization"],
                format!("Bearer {reader}"),
                "{url}"
            );
            // Only the lists (live and deleted keys): never a key's own
            // route (a reveal).
            assert!(
                url.ends_with("/api/keys")
                    || url.ends_with("/api/keys?deleted=true")
                    || url.ends_with("/api/whoami"),
                "{url}"
            );
        }
    }
    b.click("#signout");
    b.wait_for("!document.getElementById('signin-view').hidden");
    drop(b);

    // An offline edit of the log: the chain panel reports it.
    s.stop();
    tamper_with_an_old_record(&v.dir);
    let s = v.serve(&[]);
    let b = driver.session(&chromium, profile.path(), &[]);
    b.resize(1280, 800);
    b.goto(&s.url("/ui/"));
    b.wait_for("document.activeElement && document.activeElement.id === 'token'");
    b.type_into("#token", &auditor);
    b.click("#signin-button");
    b.wait_for("document.getElementById('chain').classList.contains('broken')");
    let chain = b.text("#chain");
    assert!(chain.contains("Chain BROKEN"), "{chain}");
    assert!(chain.contains("altered"), "{chain}");
    b.screenshot("chromium-audit-tampered-1280");
    b.click("#signout");
    b.wait_for("!document.getElementById('signin-view').hidden");
    let stored = b.everything_stored();
    assert!(!stored.contains("kh_"), "{stored}");
    for (url, headers) in b.requests() {
        if url.contains("/api/") {
            assert_eq!(
                headers["Authorization"],
                format!("Bearer {auditor}"),
                "{url}"
            );
        }
    }
    drop(b);

    // Dark mode follows the system's preference.
    let dark = driver.session(&chromium, profile.path(), &["--force-dark-mode"]);
    dark.resize(1280, 800);
    dark.goto(&s.url("/ui/"));
    dark.wait_for("document.activeElement && document.activeElement.id === 'token'");
    assert_eq!(
        dark.js("return matchMedia('(prefers-color-scheme: dark)').matches;"),
        true
    );
    dark.type_into("#token", &auditor);
    dark.click("#signin-button");
    dark.wait_for("document.getElementById('chain').classList.contains('broken')");
    dark.wait_for("document.querySelectorAll('#audit-rows tr').length > 0");
    let bg = dark.js("return getComputedStyle(document.body).backgroundColor;");
    assert_eq!(bg, "rgb(15, 19, 24)", "the dark palette applies");
    dark.screenshot("chromium-audit-dark-1280");
}

/// What both browsers do: sign in from the keyboard with an auditor
/// token, see the chain verify, filter by outcome, page back, open a
/// record and close it with Escape, fit a phone's width, and keep the
/// token out of every store.
fn audit_flow(b: &Session, s: &Server, auditor: &str, name: &str) {
    b.resize(1280, 800);
    b.goto(&s.url("/ui/"));
    b.wait_for("document.activeElement && document.activeElement.id === 'token'");

    // Sign in from the keyboard: the token field has the focus.
    b.keys(&format!("{auditor}\u{E007}"));
    b.wait_for("!document.getElementById('audit-view').hidden");
    b.wait_for("document.querySelectorAll('#audit-rows tr').length > 0");
    b.wait_for("document.getElementById('chain').classList.contains('ok')");
    b.wait_for("document.querySelectorAll('#chart rect').length > 0");
    assert_eq!(b.js("return document.getElementById('token').value;"), "");
    // An auditor token: the audit view, and no keys view.
    assert_eq!(
        b.js("return document.getElementById('tab-keys').hidden;"),
        true
    );
    assert!(b.text("#who-name").contains("alice-audit"));
    let chain = b.text("#chain");
    assert!(chain.contains("Chain verifies"), "{chain}");
    assert!(
        chain.contains("ed25519:"),
        "the public key is shown: {chain}"
    );
    b.screenshot(&format!("{name}-audit-1280"));

    // Filter by outcome: only `forbidden` rows, more than one page.
    b.click("#f-outcome option[value=forbidden]");
    b.click("#f-limit option[value='25']");
    b.click("#apply");
    let all_forbidden = "(function () { var rows = document.querySelectorAll('#audit-rows tr'); \
        if (rows.length === 0) return false; \
        for (var i = 0; i < rows.length; i++) if (rows[i].children[3].textContent.indexOf('forbidden') !== 0) return false; \
        return true; })()";
    b.wait_for(&format!(
        "{all_forbidden} && document.querySelectorAll('#audit-rows tr').length === 25"
    ));
    b.wait_for("!document.getElementById('older').disabled");
    b.js("document.querySelector('.toolbar').scrollIntoView();");
    b.screenshot(&format!("{name}-audit-filtered-1280"));
    let first_page_last: u64 = b
        .js("var r = document.querySelectorAll('#audit-rows tr'); return Number(r[r.length - 1].children[0].textContent.slice(1));")
        .as_u64()
        .unwrap();

    // Page back: the older forbidden attempts, all before the first page.
    b.click("#older");
    b.wait_for(&format!(
        "{all_forbidden} && document.querySelectorAll('#audit-rows tr').length === 5"
    ));
    let newest_on_page_two = b
        .js("return Number(document.querySelector('#audit-rows tr td').textContent.slice(1));")
        .as_u64()
        .unwrap();
    assert!(newest_on_page_two < first_page_last);
    assert_eq!(
        b.js("return document.getElementById('older').disabled;"),
        true
    );
    assert_eq!(
        b.js("return document.getElementById('newer').disabled;"),
        false
    );

    // Open a record: its detail, with its chain fields.
    b.click("#audit-rows tr td.seq button");
    b.wait_for("!document.getElementById('detail').hidden");
    let detail = b.text("#detail");
    assert!(
        detail.contains(&format!("Record #{newest_on_page_two}")),
        "{detail}"
    );
    for field in [
        "forbidden",
        "alice-audit",
        "reveal",
        "mac",
        "prev",
        "request_id",
    ] {
        assert!(detail.contains(field), "{field} in {detail}");
    }
    b.screenshot(&format!("{name}-audit-record-1280"));
    // Escape closes it and gives the focus back to the row.
    b.keys("\u{E00C}");
    b.wait_for("document.getElementById('detail').hidden");
    b.wait_for("document.activeElement && document.activeElement.closest('td.seq')");

    // Clear empties the filter: the newest records of every outcome.
    b.click("#clear-filters");
    b.wait_for(
        "document.getElementById('f-outcome').value === '' && \
         Array.prototype.some.call(document.querySelectorAll('#audit-rows tr'), \
           function (tr) { return tr.children[3].textContent.indexOf('forbidden') !== 0; })",
    );

    // A phone-sized screen.
    b.resize(390, 844);
    // The chart is drawn again at the phone's width (headless Firefox
    // keeps a window at least 500 pixels wide).
    b.wait_for(
        "Number(document.querySelector('#chart svg').getAttribute('width')) <= \
         Math.max(200, document.getElementById('chart').clientWidth) && window.innerWidth <= 500",
    );
    b.js("document.getElementById('chart').scrollIntoView();");
    b.screenshot(&format!("{name}-audit-phone"));
    assert_eq!(
        b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;"),
        true,
        "the page does not scroll sideways on a phone"
    );
    b.resize(1280, 800);
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never arrived",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_provider_limited_token_sees_only_its_keys_and_no_audit_view() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let v = Vault::new();
    let limited = v.token("gh-only", "admin", Some("github"));
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    admin.create_key("github", "ci-bot", "ghp-secret");
    admin.create_key("claude", "prod", "sk-ant-secret");
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let b = driver.session(&chromium, profile.path(), &[]);
    b.goto(&s.url("/ui/"));
    b.wait_for("document.activeElement && document.activeElement.id === 'token'");
    b.type_into("#token", &limited);
    b.click("#signin-button");
    b.wait_for("document.querySelectorAll('#keys-rows tr').length === 1");
    assert_eq!(
        b.js("return document.getElementById('tab-audit').hidden;"),
        true
    );
    assert_eq!(
        b.js("return document.getElementById('limited-note').hidden;"),
        false
    );
    let keys = b.text("#keys-table");
    assert!(
        keys.contains("github") && !keys.contains("claude"),
        "{keys}"
    );
    assert!(b.text("#who-name").contains("providers: github"));
    for (url, _) in b.requests() {
        assert!(
            !url.contains("/api/audit"),
            "no audit call for a limited token: {url}"
        );
    }
}

#[test]
fn the_console_in_firefox_signs_in_filters_pages_opens_a_record_and_forgets_the_token() {
    let Some(firefox) = find_binary(
        "KEYHOLD_FIREFOX",
        &["/usr/bin/firefox-esr", "/usr/bin/firefox"],
    ) else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the console's Firefox test needs Debian's firefox-esr (scripts/test.sh installs it)");
        }
        eprintln!(
            "console Firefox test not run here: firefox-esr missing (apt-get install firefox-esr)"
        );
        return;
    };
    let (v, auditor, _reader) = vault_with_history();
    let s = v.serve(&[]);
    let fx = Firefox::start(&firefox);
    let b = fx.session();
    audit_flow(&b, &s, &auditor, "firefox");
    let stored = b.everything_stored();
    assert!(!stored.contains("kh_"), "the token was stored: {stored}");
    b.click("#signout");
    b.wait_for("!document.getElementById('signin-view').hidden");
    assert_eq!(
        b.js("return document.querySelectorAll('#audit-rows tr').length;"),
        0
    );
}
