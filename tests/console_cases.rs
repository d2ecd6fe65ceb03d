//! The console's answers to what a new operator ran into (issue 25, point
//! 10), each driven in Chromium against a real server, in the light and
//! the dark theme (screenshots in `target/ui-screenshots/case-*`, the
//! ones in docs/console.md copied from there): every outcome has a colour
//! of its own; with the server down one message says so and nothing old
//! looks current; a bad filter's error is shown once; a record opens under
//! its row; an expired token is told it expired; and a console sign-in's
//! pages of the log are recorded as one session, while every other export
//! is recorded each time (also checked through the API alone).
//!
//! Over 500 lines: one Chromium test per case of the issue, each with its light and dark screenshots.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::*;
use common::*;
use serde_json::{json, Value};

/// A vault with keys, 60 reveals (more than one page of 50), a deleted
/// key asked for 20 times (outcome `deleted`, coalesced), and an auditor
/// token.
fn vault_with_cases() -> (Vault, String) {
    let v = Vault::new();
    let auditor = v.token("alice-audit", "auditor", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "10000/min")]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "prod", "sk-claude-prod-secret");
    let gone = admin.create_key("openai", "retired", "sk-openai-retired");
    assert_eq!(admin.delete(&format!("/api/keys/{gone}")).status(), 200);
    for _ in 0..20 {
        assert_eq!(admin.get(&format!("/api/keys/{gone}")).status(), 404);
    }
    for _ in 0..60 {
        assert_eq!(admin.get(&format!("/api/keys/{id}")).status(), 200);
    }
    s.stop();
    (v, auditor)
}

/// What a browser case runs on: Chromium and its driver, the vault of
/// [`vault_with_cases`] served, and a browser profile.
struct Case {
    chromium: PathBuf,
    driver: Driver,
    v: Vault,
    auditor: String,
    s: Server,
    profile: tempfile::TempDir,
}

/// A [`Case`], or None without Chromium (the reason printed; a failure
/// under CI=true).
fn case() -> Option<Case> {
    let (chromium, chromedriver) = browser_binaries()?;
    let (v, auditor) = vault_with_cases();
    let s = v.serve(&[]);
    Some(Case {
        chromium,
        driver: Driver::start(&chromedriver),
        v,
        auditor,
        s,
        profile: tempfile::tempdir().unwrap(),
    })
}

impl Case {
    /// A Chromium session (`extra` flags) signed in with `token`.
    fn signed_in(&self, extra: &[&str], token: &str) -> Session<'_> {
        signed_in(
            &self.driver,
            &self.chromium,
            self.profile.path(),
            extra,
            &self.s,
            token,
        )
    }
}

/// The two themes: a session for each, named for its screenshots.
const THEMES: [(&str, &[&str]); 2] = [("light", &[]), ("dark", &["--force-dark-mode"])];

fn signed_in<'a>(
    driver: &'a Driver,
    chromium: &std::path::Path,
    profile: &std::path::Path,
    extra: &[&str],
    s: &Server,
    token: &str,
) -> Session<'a> {
    let b = driver.session(chromium, profile, extra);
    b.resize(1280, 800);
    b.goto(&s.url("/ui/"));
    b.wait_for("document.activeElement && document.activeElement.id === 'token'");
    b.type_into("#token", token);
    b.click("#signin-button");
    b.wait_for("document.getElementById('signin-view').hidden");
    b
}

/// How often `needle` appears in what the page shows.
fn shown_times(b: &Session, needle: &str) -> u64 {
    b.js(&format!(
        "return document.body.innerText.split({}).length - 1;",
        json!(needle)
    ))
    .as_u64()
    .unwrap()
}

#[test]
fn every_outcome_has_a_visible_colour_of_its_own_in_both_themes() {
    let Some(c) = case() else {
        return;
    };
    for (theme, extra) in THEMES {
        let b = c.signed_in(extra, &c.auditor);
        b.wait_for("/deleted \\(20\\)/.test(document.getElementById('legend').textContent)");
        // The deleted attempt's bar and swatch are drawn in a colour.
        let drawn = b.js(
            "var r = document.querySelector('#chart rect.o-deleted'), \
                 w = document.querySelector('#legend .swatch.o-deleted'); \
             return [r ? getComputedStyle(r).fill : null, w ? getComputedStyle(w).backgroundColor : null];",
        );
        let transparent = ["rgba(0, 0, 0, 0)", "transparent"];
        for c in drawn.as_array().unwrap() {
            let c = c
                .as_str()
                .unwrap_or_else(|| panic!("{theme}: no deleted bar or swatch"));
            assert!(!transparent.contains(&c), "{theme}: {c}");
        }
        // Every outcome the server names: a colour, not the panel's, not
        // another outcome's.
        let colours = b.js(
            "var panel = getComputedStyle(document.querySelector('.chart-panel')).backgroundColor, out = {}; \
             document.body.dataset.outcomes.split(',').forEach(function (o) { \
               var e = document.createElement('span'); e.className = 'swatch o-' + o; \
               document.getElementById('legend').appendChild(e); \
               out[o] = getComputedStyle(e).backgroundColor; e.remove(); }); \
             out.panel = panel; return out;",
        );
        let colours = colours.as_object().unwrap();
        let panel = colours["panel"].as_str().unwrap();
        let mut seen = std::collections::HashMap::new();
        for (outcome, c) in colours.iter().filter(|(k, _)| *k != "panel") {
            let c = c.as_str().unwrap();
            assert!(
                !transparent.contains(&c) && c != panel,
                "{theme}: outcome {outcome} has no colour of its own ({c})"
            );
            if let Some(other) = seen.insert(c.to_string(), outcome.clone()) {
                panic!("{theme}: {outcome} and {other} share {c}");
            }
        }
        assert!(seen.values().any(|o| o == "deleted"), "{colours:?}");
        b.js("document.querySelector('.chart-panel').scrollIntoView();");
        b.element_screenshot(".chart-panel", &format!("case-outcome-colours-{theme}"));
    }
}

#[test]
fn with_the_server_down_one_message_says_so_and_nothing_old_looks_current() {
    let Some(c) = case() else {
        return;
    };
    // Both browsers at once (the server stops under both): a profile each.
    let profiles = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let sessions: Vec<(&str, Session)> = THEMES
        .iter()
        .zip(&profiles)
        .map(|((theme, extra), profile)| {
            let b = signed_in(
                &c.driver,
                &c.chromium,
                profile.path(),
                extra,
                &c.s,
                &c.v.admin,
            );
            b.wait_for("document.querySelectorAll('#audit-rows tr').length === 50");
            b.wait_for("document.getElementById('chain').classList.contains('ok')");
            (*theme, b)
        })
        .collect();
    c.s.stop();
    for (theme, b) in &sessions {
        b.click("#newest");
        b.wait_for("!document.getElementById('offline').hidden");
        b.wait_for("document.getElementById('audit-table').classList.contains('stale')");
        b.wait_for("document.getElementById('legend').classList.contains('stale')");
        b.wait_for("!/Checking/.test(document.getElementById('chain').textContent)");
        let page = b.js("return document.body.innerText;");
        let page = page.as_str().unwrap();
        assert_eq!(
            shown_times(b, "not answering"),
            1,
            "{theme}: one message: {page}"
        );
        assert!(!page.contains("Failed to fetch"), "{theme}: {page}");
        assert!(
            b.text("#page-info").contains("Out of date"),
            "{theme}: {page}"
        );
        // Not checked is not broken.
        assert_eq!(
            b.js("return document.getElementById('chain').classList.contains('broken');"),
            false,
            "{theme}"
        );
        // Tall enough to show the banner, the dimmed chart and rows.
        b.resize(1280, 1100);
        b.js("window.scrollTo(0, 0);");
        b.screenshot(&format!("case-server-down-{theme}"));
        b.resize(1280, 800);

        // The keys view: never "No keys stored" for a list not read.
        b.click("#tab-keys");
        b.wait_for("/could not be read/.test(document.getElementById('keys-rows').textContent)");
        let page = b.js("return document.body.innerText;");
        let page = page.as_str().unwrap();
        assert!(!page.contains("No keys stored"), "{theme}: {page}");
        assert!(!page.contains("claude"), "{theme}: an old list: {page}");
        assert_eq!(shown_times(b, "not answering"), 1, "{theme}: {page}");
        // Signing in while it does not answer says so on the form.
        b.click("#signout");
        b.wait_for("!document.getElementById('signin-view').hidden");
        b.type_into("#token", &c.v.admin);
        b.click("#signin-button");
        b.wait_for("/not answering/.test(document.getElementById('signin-error').textContent)");
        assert_eq!(shown_times(b, "not answering"), 1, "{theme}");
        assert!(
            b.text("#signin-error")
                .contains("Check that keyhold serve is running"),
            "{theme}"
        );
        let errors = b.script_errors();
        assert!(
            errors
                .iter()
                .all(|e| e.contains("ERR_CONNECTION_REFUSED") || e.contains("Failed to load")),
            "{theme}: {errors:?}"
        );
    }
}

#[test]
fn a_bad_filter_shows_its_error_once() {
    let Some(c) = case() else {
        return;
    };
    for (theme, extra) in THEMES {
        let b = c.signed_in(extra, &c.auditor);
        b.wait_for("document.querySelectorAll('#audit-rows tr').length === 50");
        b.wait_for("document.querySelectorAll('#chart rect').length > 0");
        b.type_into("#f-key", "not-a-uuid");
        b.click("#apply");
        b.wait_for("!document.getElementById('audit-error').hidden");
        b.wait_for("/Not drawn/.test(document.getElementById('chart').textContent)");
        let error = b.text("#audit-error");
        assert!(error.contains("key_id"), "{theme}: {error}");
        assert_eq!(
            shown_times(&b, &error),
            1,
            "{theme}: the error is shown once"
        );
        b.js("document.getElementById('filters').scrollIntoView();");
        b.screenshot(&format!("case-bad-filter-{theme}"));
    }
}

#[test]
fn a_record_opens_right_under_its_row() {
    let Some(c) = case() else {
        return;
    };
    for (theme, extra) in THEMES {
        let b = c.signed_in(extra, &c.auditor);
        b.wait_for("document.querySelectorAll('#audit-rows tr').length === 50");
        for row in [10, 2] {
            b.js(&format!(
                "document.querySelectorAll('#audit-rows tr')[{row}].scrollIntoView({{block: 'center'}});"
            ));
            b.click(&format!(
                "#audit-rows tr:nth-child({}) td.seq button",
                row + 1
            ));
            b.wait_for("!document.getElementById('detail').hidden");
            let placed = b.js(
                "var sel = document.querySelector('#audit-rows tr.selected'), d = document.getElementById('detail'), \
                     r = d.getBoundingClientRect(); \
                 return { next: !!sel.nextElementSibling && sel.nextElementSibling.contains(d), \
                          gap: r.top - sel.getBoundingClientRect().bottom, top: r.top, height: innerHeight, \
                          seq: sel.querySelector('td.seq').textContent, title: document.getElementById('detail-title').textContent };",
            );
            assert_eq!(placed["next"], true, "{theme}: {placed}");
            let (top, height, gap) = (
                placed["top"].as_f64().unwrap(),
                placed["height"].as_f64().unwrap(),
                placed["gap"].as_f64().unwrap(),
            );
            assert!(
                top >= 0.0 && top < height && (0.0..8.0).contains(&gap),
                "{theme}: {placed}"
            );
            let seq = placed["seq"].as_str().unwrap().to_string();
            assert_eq!(
                placed["title"].as_str().unwrap(),
                format!("Record {seq}"),
                "{theme}"
            );
        }
        // One detail row at a time; closing it takes it away.
        assert_eq!(
            b.js("return document.querySelectorAll('#audit-rows tr.detail-row').length;"),
            1
        );
        b.screenshot(&format!("case-record-at-row-{theme}"));
        b.keys("\u{E00C}");
        b.wait_for("document.getElementById('detail').hidden");
        assert_eq!(
            b.js("return document.querySelectorAll('#audit-rows tr.detail-row').length;"),
            0
        );
    }
}

#[test]
fn an_expired_tokens_sign_in_says_it_expired() {
    let Some(c) = case() else {
        return;
    };
    let r = Api::new(&c.s, &c.v.admin).post_json(
        "/api/tokens",
        &json!({"name": "short-lived", "role": "auditor", "ttl_seconds": 1}),
    );
    assert_eq!(r.status(), 200);
    let made: Value = r.json().unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let expires = made["expires_at"].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    let left = at.signed_duration_since(chrono::Utc::now());
    std::thread::sleep(left.to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(300));
    for (theme, extra) in THEMES {
        let b = c.driver.session(&c.chromium, c.profile.path(), extra);
        b.resize(1280, 800);
        b.goto(&c.s.url("/ui/"));
        b.wait_for("document.activeElement && document.activeElement.id === 'token'");
        b.type_into("#token", &token);
        b.click("#signin-button");
        b.wait_for("!document.getElementById('signin-error').hidden");
        let said = b.text("#signin-error");
        assert!(
            said.contains(&format!("this token expired at {expires}")),
            "{theme}: {said}"
        );
        assert!(said.contains("ask an admin"), "{theme}: {said}");
        b.element_screenshot("#signin-view", &format!("case-expired-token-{theme}"));
    }
}

/// The `audit_export` records of `caller`, oldest first.
fn exports_of(records: &[Value], caller: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["action"] == "audit_export" && r["caller"] == caller)
        .cloned()
        .collect()
}

/// The records that open a console session.
fn session_records(exports: &[Value]) -> Vec<&Value> {
    exports
        .iter()
        .filter(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("opens a console session"))
        })
        .collect()
}

#[test]
fn a_console_sign_in_writes_one_record_for_its_pages_and_each_download_its_own() {
    let Some(c) = case() else {
        return;
    };
    let b = c.signed_in(&[], &c.auditor);
    b.wait_for("document.querySelectorAll('#audit-rows tr').length === 50");
    b.wait_for("!document.getElementById('older').disabled");
    // Pages: older, newer, a filter, another page size, newest.
    b.click("#older");
    b.wait_for("!document.getElementById('newer').disabled");
    b.click("#newer");
    b.wait_for("document.getElementById('newer').disabled");
    b.click("#f-action option[value=reveal]");
    b.click("#apply");
    b.wait_for("/Records/.test(document.getElementById('page-info').textContent)");
    b.click("#f-limit option[value='25']");
    b.click("#apply");
    b.wait_for("document.querySelectorAll('#audit-rows tr').length === 25");
    b.click("#newest");
    b.wait_for("/Records/.test(document.getElementById('page-info').textContent)");
    // Two downloads: each an export of its own.
    b.click("#dl-csv");
    b.click("#dl-jsonl");
    let downloads = c.profile.path().join("downloads");
    for name in ["keyhold-audit.csv", "keyhold-audit.jsonl"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !downloads.join(name).exists() {
            assert!(std::time::Instant::now() < deadline, "{name} never came");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let pages: Vec<(String, Value)> = b
        .requests()
        .into_iter()
        .filter(|(u, _)| u.contains("/api/audit?") && u.contains("limit="))
        .collect();
    assert!(pages.len() >= 6, "{pages:?}");
    let session = pages[0].1["X-Keyhold-Console-Session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session header: {pages:?}"))
        .to_string();
    assert!(!session.contains("kh_") && session.len() == 32, "{session}");
    for (url, headers) in &pages {
        assert_eq!(headers["X-Keyhold-Console-Session"], session, "{url}");
    }
    b.click("#signout");
    b.wait_for("!document.getElementById('signin-view').hidden");
    drop(b);
    c.s.stop();

    let records = c.v.audit_records();
    let exports = exports_of(&records, "alice-audit");
    let opening = session_records(&exports);
    assert_eq!(opening.len(), 1, "{exports:#?}");
    // The session's one record, whatever the number of pages.
    assert!(
        exports.iter().all(|r| r["count"].is_null()),
        "no closing record: {exports:#?}"
    );
    let detail = opening[0]["detail"].as_str().unwrap();
    assert!(detail.contains("stands for its further pages"), "{detail}");
    // The downloads: one record each, not in the session.
    let downloads: Vec<&Value> = exports
        .iter()
        .filter(|r| r["detail"].as_str().is_some_and(|d| !d.contains("limit=")))
        .collect();
    assert_eq!(downloads.len(), 2, "{exports:#?}");
    assert_eq!(exports.len(), 3, "{exports:#?}");
}

/// GET /api/audit with a console session header.
fn page(api: &Api, query: &str, session: Option<&str>) -> reqwest::blocking::Response {
    let mut r = api.req(reqwest::Method::GET, &format!("/api/audit?{query}"));
    if let Some(id) = session {
        r = r.header("X-Keyhold-Console-Session", id);
    }
    r.send().unwrap()
}

#[test]
fn only_small_console_pages_join_a_session_and_every_other_export_is_recorded_each_time() {
    let (v, auditor) = vault_with_cases();
    let other = v.token("bob-audit", "auditor", None);
    let s = v.serve(&[]);
    let api = Api::new(&s, &auditor);
    let id = "0123456789abcdef0123456789abcdef";
    // The console's kind: one session.
    for before in ["", "&before_seq=40", "&before_seq=20"] {
        let r = page(&api, &format!("order=desc&limit=25{before}"), Some(id));
        assert_eq!(r.status(), 200);
        assert!(r.text().unwrap().lines().count() > 0);
    }
    // Anything else, even naming the session: its own record each time.
    let alone = [
        "order=desc&limit=25&format=csv",
        "order=desc",
        "",
        "order=desc&limit=101",
        "order=asc&limit=25",
    ];
    for q in alone {
        for _ in 0..2 {
            assert_eq!(page(&api, q, Some(id)).status(), 200, "{q}");
        }
    }
    for _ in 0..2 {
        assert_eq!(page(&api, "order=desc&limit=25", None).status(), 200);
    }
    // Another token naming the same session has its own; without a token
    // the id gives nothing.
    let bob = Api::new(&s, &other);
    for _ in 0..2 {
        assert_eq!(page(&bob, "order=desc&limit=25", Some(id)).status(), 200);
    }
    assert_eq!(
        page(&Api::anonymous(&s), "order=desc&limit=25", Some(id)).status(),
        401
    );
    // A malformed id is refused, saying what it must be.
    for bad in ["short", "0123456789abcdef 0123", "ünïcode-ünïcode-ünïcode"] {
        let r = api
            .req(reqwest::Method::GET, "/api/audit?order=desc&limit=25")
            .header("X-Keyhold-Console-Session", bad.as_bytes())
            .send()
            .unwrap();
        assert_eq!(r.status(), 422, "{bad}");
        let body: Value = r.json().unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("X-Keyhold-Console-Session"),
            "{body}"
        );
    }
    s.stop();

    let records = v.audit_records();
    let (mine, refused): (Vec<Value>, Vec<Value>) = exports_of(&records, "alice-audit")
        .into_iter()
        .partition(|r| r["outcome"] == "success");
    // The malformed ids were refused to a token that passed its scope
    // check: recorded, coalesced (the three in one second or two).
    let counted: u64 = refused
        .iter()
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(counted, 3, "{refused:#?}");
    assert!(refused.iter().all(|r| r["outcome"] == "forbidden"));
    // The session's one record (for its 3 pages) + 5 kinds x 2 + 2
    // without the header.
    assert_eq!(mine.len(), 1 + 10 + 2, "{mine:#?}");
    let sessions = session_records(&mine);
    assert_eq!(sessions.len(), 1, "{mine:#?}");
    assert!(mine.iter().all(|r| r["count"].is_null()), "{mine:#?}");
    for q in alone {
        let shown = mine
            .iter()
            .filter(|r| {
                let d = r["detail"].as_str().unwrap_or_default();
                // (oldest first is the default, not named in the record)
                q.split('&')
                    .filter(|p| !p.is_empty() && *p != "order=asc")
                    .all(|p| d.contains(p))
                    && r["count"].is_null()
            })
            .count();
        assert!(shown >= 2, "{q}: {mine:#?}");
    }
    let theirs = exports_of(&records, "bob-audit");
    assert_eq!(theirs.len(), 1, "a session of its own: {theirs:#?}");
    assert!(theirs[0]["detail"]
        .as_str()
        .unwrap()
        .contains("opens a console session"));
}

#[test]
fn console_pages_take_from_the_record_budget() {
    let (v, auditor) = vault_with_cases();
    let s = v.serve(&[("KEYHOLD_RECORD_BUDGET", "4/min")]);
    let api = Api::new(&s, &auditor);
    let id = "abcdefabcdefabcdef";
    for _ in 0..4 {
        assert_eq!(page(&api, "order=desc&limit=25", Some(id)).status(), 200);
    }
    let r = page(&api, "order=desc&limit=25", Some(id));
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    s.stop();
    let records = v.audit_records();
    let mine = exports_of(&records, "alice-audit");
    assert_eq!(mine.len(), 2, "the session, the 429 counted: {mine:#?}");
    let outcomes: Vec<(&str, u64)> = mine
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["count"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    assert!(outcomes.contains(&("rate_limited", 1)), "{mine:#?}");
    assert!(outcomes.contains(&("success", 1)), "{mine:#?}");
}
