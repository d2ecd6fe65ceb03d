//! After a session of work, no API key, access token or Fernet key is in
//! clear in any file of the data directory, nor anywhere in what the
//! server printed.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

#[test]
fn no_secret_in_the_data_directory_or_the_server_output() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[("KEYHOLD_LOG", "debug")]);
    let admin = Api::new(&s, &v.admin);
    let api_keys: Vec<String> = (0..5)
        .map(|i| format!("sk-ant-api03-PLAINTEXT-MARKER-{i}-{}", "q".repeat(20)))
        .collect();
    let mut ids = Vec::new();
    for (i, k) in api_keys.iter().enumerate() {
        ids.push(admin.create_key(
            if i % 2 == 0 { "claude" } else { "gemini" },
            &format!("k{i}"),
            k,
        ));
    }
    let r = admin.post_json("/api/tokens", &json!({"name": "online", "role": "writer"}));
    let online: serde_json::Value = r.json().unwrap();
    let online = online["token"].as_str().unwrap().to_string();
    let rd = Api::new(&s, &reader);
    for id in &ids {
        assert_eq!(rd.get(&format!("/api/keys/{id}")).status(), 200);
    }
    assert_eq!(rd.get("/api/providers/claude/key").status(), 200);
    // Failed attempts with a wrong token and a secret-looking path too.
    let _ = client()
        .get(s.url("/api/keys"))
        .bearer_auth(format!("{online}x"))
        .send();
    assert_eq!(admin.get("/api/audit").status(), 200);
    admin.delete(&format!("/api/keys/{}", ids[4]));
    let (code, stdout, stderr) = s.stop();
    assert_eq!(code, Some(0));

    let raw_key = base64::engine::general_purpose::URL_SAFE
        .decode(&v.key)
        .unwrap();
    // keyhold's own secrets, unsealed with the keyring as keyhold does.
    let (record_secret, signing_seed) = with_store(&v.dir, |store| {
        let ring = keyhold::internals::keyring::Keyring::parse_list(
            keyhold::internals::keyring::KeySource::FernetKey,
            [v.key.as_str()],
        )
        .unwrap();
        let open = |name: &[u8], purpose: &str| {
            let sealed = store
                .meta_string(name)
                .unwrap()
                .expect("sealed secret stored");
            ring.unseal(purpose, &sealed)
                .unwrap()
                .secret
                .expose()
                .to_vec()
        };
        (
            open(
                keyhold::internals::store::META_RECORD_SECRET,
                keyhold::internals::store::RECORD_SECRET_PURPOSE,
            ),
            open(
                keyhold::internals::store::META_SIGNING_KEY,
                keyhold::internals::audit::SIGNING_PURPOSE,
            ),
        )
    });
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("Fernet key (text)".into(), v.key.as_bytes().to_vec()),
        ("Fernet signing key (raw)".into(), raw_key[..16].to_vec()),
        ("Fernet encryption key (raw)".into(), raw_key[16..].to_vec()),
        ("admin token".into(), v.admin.as_bytes().to_vec()),
        ("reader token".into(), reader.as_bytes().to_vec()),
        ("online token".into(), online.as_bytes().to_vec()),
        ("record secret (raw)".into(), record_secret.clone()),
        (
            "record secret (hex)".into(),
            keyhold::internals::audit::hex(&record_secret).into_bytes(),
        ),
        ("audit signing seed (raw)".into(), signing_seed.clone()),
        (
            "audit signing seed (hex)".into(),
            keyhold::internals::audit::hex(&signing_seed).into_bytes(),
        ),
    ];
    for k in &api_keys {
        needles.push((format!("api key {k}"), k.as_bytes().to_vec()));
        // A distinctive part too, in case of a partial copy.
        needles.push((format!("part of {k}"), b"PLAINTEXT-MARKER".to_vec()));
    }
    let files = read_tree(&v.dir);
    assert!(files.len() >= 2, "the store wrote files");
    for (path, bytes) in &files {
        for (what, needle) in &needles {
            assert!(
                !contains(bytes, needle),
                "{what} found in clear in {}",
                path.display()
            );
        }
    }
    let printed = format!("{stdout}{stderr}");
    assert!(!printed.is_empty());
    for (what, needle) in &needles {
        assert!(
            !contains(printed.as_bytes(), needle),
            "{what} found in the server's output"
        );
    }
}

/// A token's secret pasted where its id or name goes (a lookup, a revoke,
/// a new token's name) is never kept: not in the audit log (its export,
/// its records), not in any file of the data directory, not in what the
/// server printed.
#[test]
fn a_token_pasted_as_an_id_or_a_name_is_kept_nowhere() {
    let v = Vault::new();
    let pasted = v.token("orchestrator", "reader", None);
    let other = v.token("ci", "reader", None);
    let s = v.serve(&[("KEYHOLD_LOG", "debug")]);
    let admin = Api::new(&s, &v.admin);
    // A lookup and a revoke by the secret instead of the id: no such token.
    let r = admin.get(&format!("/api/tokens/{pasted}"));
    assert_eq!(r.status(), 404);
    assert!(!r.text().unwrap().contains(&pasted));
    let r = admin.delete(&format!("/api/tokens/{other}"));
    assert_eq!(r.status(), 404);
    // A new token named with a secret: refused, the name not repeated.
    let r = admin.post_json("/api/tokens", &json!({"name": other, "role": "reader"}));
    assert_eq!(r.status(), 422);
    let said = detail(r);
    assert!(!said.contains(&other), "{said}");
    assert!(said.contains("`kh_`"), "{said}");
    let export = admin.get("/api/audit?format=jsonl");
    assert_eq!(export.status(), 200);
    let export = export.text().unwrap();
    let (code, stdout, stderr) = s.stop();
    assert_eq!(code, Some(0));
    // The refusals are recorded, saying what they were.
    let records = v.audit_records();
    let refused: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["caller"] == "admin" && r["outcome"] != "success")
        .collect();
    assert!(
        refused.iter().any(|r| r["action"] == "token_list"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("refused: no such token"))),
        "{refused:#?}"
    );
    assert!(
        refused.iter().any(|r| r["action"] == "token_create"),
        "{refused:#?}"
    );
    let records = serde_json::to_string(&records).unwrap();
    let printed = format!("{stdout}{stderr}");
    for (what, secret) in [("pasted", &pasted), ("other", &other)] {
        // The random part too, in case the prefix was cut.
        let random = &secret[3..];
        assert!(!export.contains(random), "{what}'s secret in the export");
        assert!(!records.contains(random), "{what}'s secret in a record");
        assert!(!printed.contains(random), "{what}'s secret in the output");
        for (path, bytes) in read_tree(&v.dir) {
            assert!(
                !contains(&bytes, random.as_bytes()),
                "{what}'s secret in {}",
                path.display()
            );
        }
    }
}

/// What a caller types where a record keeps it (an export's caller filter,
/// a reveal's key name, its purpose) never reaches the log whole when it
/// looks like a secret: a token, or a long run such as a provider's key.
#[test]
fn a_secret_typed_into_a_filter_a_name_or_a_purpose_is_kept_nowhere() {
    let v = Vault::new();
    let pasted = v.token("orchestrator", "reader", None);
    let auditor = v.token("auditor", "auditor", None);
    let provider_key = "sk-live-0123456789abcdefghijklmnopqrstuvwxyzABCD";
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    admin.create_key("claude", "prod", "sk-ant-stored");
    // An auditor filters the log by a token's secret (and by a bidi trick).
    let audit = Api::new(&s, &auditor);
    let r = audit.get(&format!("/api/audit?format=jsonl&caller={pasted}"));
    assert_eq!(r.status(), 200);
    let r = audit.get("/api/audit?format=jsonl&caller=x%0A%E2%80%AEevil");
    assert_eq!(r.status(), 200);
    // A reveal by a name that is a secret, with a purpose holding another.
    let r = admin
        .req(
            reqwest::Method::GET,
            &format!("/api/providers/claude/keys/{pasted}"),
        )
        .header("x-keyhold-purpose", format!("ci run {provider_key}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let (code, _, _) = s.stop();
    assert_eq!(code, Some(0));
    let records = v.audit_records();
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&pasted[3..]), "a token's secret in a record");
    assert!(
        !text.contains(&provider_key[4..]),
        "a provider key in a record"
    );
    assert!(!text.contains('\u{202E}'), "a bidi override in a record");
    // What was filtered and asked is still said, cut.
    assert!(
        records.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("caller=kh_…"))),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("by name \"kh_…\"") && d.contains("for ci run sk-l…"))),
        "{records:#?}"
    );
    for (path, bytes) in read_tree(&v.dir) {
        assert!(
            !contains(&bytes, &pasted.as_bytes()[3..]),
            "the token's secret in {}",
            path.display()
        );
    }
}
