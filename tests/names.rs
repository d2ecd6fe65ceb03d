//! Names and token shapes (issue 24, points 7 and 8): key names that could
//! pass for another key's name in a listing are refused, a store that
//! already holds one still opens and `check` names it, `exec` says which
//! variable cannot carry a NUL, and an auditor token cannot be limited to
//! providers. Every test runs the real binary.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn key_names_with_format_characters_or_not_in_nfc_are_refused_saying_why() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    for (name, says) in [
        ("prod\u{202e}\u{200b}", "U+202E"),
        ("prod\u{200b}", "U+200B"),
        ("\u{2066}prod\u{2069}", "U+2066"),
        ("prod\u{feff}", "U+FEFF"),
        ("cafe\u{301}", "NFC"),
        ("prod\u{7}", "control"),
        ("prod\u{34f}", "U+034F"),
        ("prod\u{3164}", "U+3164"),
        ("prod\u{a0}main", "U+00A0"),
        ("prod\u{2028}", "U+2028"),
        ("prod ", "space"),
        ("", "1 to 200"),
    ] {
        let r = api.post_json(
            "/api/keys",
            &serde_json::json!({"provider": "claude", "key_name": name, "api_key": "sk-x-000001"}),
        );
        assert_eq!(r.status(), 422, "{name:?}");
        let body: Value = r.json().unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("key_name"), "{name:?}: {detail}");
        assert!(detail.contains(says), "{name:?}: {detail}");
    }
    // Names in NFC, in any script, are fine.
    for name in ["café", "東京-prod", "prod main"] {
        let r = api.post_json(
            "/api/keys",
            &serde_json::json!({"provider": "claude", "key_name": name, "api_key": "sk-x-000002"}),
        );
        assert_eq!(r.status(), 200, "{name:?}");
    }
}

#[test]
fn a_store_holding_such_a_name_still_opens_and_check_lists_it() {
    let v = Vault::new();
    // A key stored before the rule, as an older keyhold would have.
    let id = with_unlocked_store(&v.dir, &v.key, |store| {
        let ring = keyhold::internals::keyring::Keyring::parse_list(
            keyhold::internals::keyring::KeySource::FernetKey,
            [v.key.as_str()],
        )
        .unwrap();
        let log = keyhold::internals::audit::AuditLog::open(store.clone(), &ring).unwrap();
        let rec = keyhold::internals::store::KeyRecord::new(
            uuid::Uuid::new_v4(),
            "claude".into(),
            "prod\u{202e}niam".into(),
            ring.encrypt(b"sk-ant-older-000001"),
            keyhold::internals::time::now_us(),
            None,
            Some("older".into()),
        );
        let id = rec.id;
        let ev = keyhold::internals::audit::AuditEvent::cli(
            keyhold::internals::audit::Action::KeyCreate,
            keyhold::internals::audit::Outcome::Success,
            None,
        );
        log.append(&[(ev, vec![keyhold::internals::store::Write::PutKey(rec)])])
            .unwrap();
        id
    });
    let s = v.serve(&[]);
    let r = Api::new(&s, &v.admin).get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200);
    s.stop();
    let out = run_with_key(&v.key, &["check", "--data-dir", v.dir_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // A warning, not a failure: the store is sound.
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("WARN 1 keys have names the API refuses"),
        "{text}"
    );
    assert!(text.contains(&id.to_string()), "{text}");
    // Shown escaped: the listing itself spoofs nothing.
    assert!(text.contains("prod\\u{202e}niam"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
}

#[test]
fn exec_with_a_key_holding_nul_names_the_variable_and_runs_nothing() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let r = api.post_json(
        "/api/keys",
        &serde_json::json!({"provider": "claude", "key_name": "main", "api_key": "sk-nul\u{0}-0001"}),
    );
    assert_eq!(r.status(), 200);
    let marker = v.tmp.path().join("ran");
    let out = keyhold()
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", &v.admin)
        .args(["exec", "--provider", "claude", "--env", "CLAUDE_KEY", "--"])
        .args(["touch", marker.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("CLAUDE_KEY"), "{err}");
    assert!(err.contains("NUL"), "{err}");
    assert!(!err.contains("sk-nul"), "{err}");
    assert!(!marker.exists(), "nothing was run");
}

#[test]
fn an_auditor_token_cannot_be_limited_to_providers() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let r = api.post_json(
        "/api/tokens",
        &serde_json::json!({"name": "audit-claude", "role": "auditor", "providers": ["claude"]}),
    );
    assert_eq!(r.status(), 422);
    let body: Value = r.json().unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be limited to providers"),
        "{body}"
    );
    // The same through the CLI.
    s.stop();
    let create = |name: &str, role: &str, more: &[&str]| {
        let mut args = vec!["token", "create", "--data-dir", v.dir_str()];
        args.extend(["--name", name, "--role", role]);
        args.extend(more);
        run_with_key(&v.key, &args)
    };
    let out = create("audit-claude", "auditor", &["--providers", "claude"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("cannot be limited to providers"), "{err}");
    // Unlimited auditors and limited readers are fine.
    assert_ok(&create("audit", "auditor", &[]));
    assert_ok(&create("read-claude", "reader", &["--providers", "claude"]));
}

/// A token whose name was stored before names starting with `kh_` were
/// refused still rotates, by name, keeping its name. (Written through the
/// library as an older keyhold stored it: sled stores only, as the other
/// tests of stored records.)
#[test]
fn a_token_named_before_the_kh_rule_still_rotates() {
    let v = Vault::new();
    v.stored_token(
        "kh_legacy",
        keyhold::internals::access::Role::Reader,
        "claude",
    );
    let [flag, place] = v.store_args();
    let out = run_with_key(
        &v.key,
        &[
            "token",
            "rotate",
            flag,
            place,
            "kh_legacy",
            "--overlap",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8(out.stdout).unwrap();
    assert!(new.trim().starts_with("kh_"), "a new token is printed");
    let out = run_with_key(&v.key, &["token", "list", flag, place]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("kh_legacy"), "{listed}");
}
