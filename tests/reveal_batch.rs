//! `POST /api/reveal` (issue 25, point 6): several keys in one request,
//! all or none; each key through the single reveal's checks with its own
//! audit record; the batch counted as one reveal a key against the
//! client's rate. Read with an attacker's eye: no token, a limited token,
//! a missing key, more keys than the budget, too many keys, a big body.

mod common;

use common::*;
use serde_json::{json, Value};

fn batch(api: &Api, keys: Value) -> reqwest::blocking::Response {
    api.post_json("/api/reveal", &json!({ "keys": keys }))
}

/// The reveal records of the log (server stopped).
fn reveals(v: &Vault) -> Vec<Value> {
    v.audit_records()
        .into_iter()
        .filter(|r| r["action"] == "reveal")
        .collect()
}

#[test]
fn every_key_is_revealed_in_order_each_with_its_own_record() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let a = api.create_key("claude", "main", "sk-ant-A");
    api.create_key("github", "ci", "ghp-CI");
    api.create_key("gemini", "x", "gm-X");
    let r = api
        .req(reqwest::Method::POST, "/api/reveal")
        .header("X-Keyhold-Purpose", "exec deploy.sh")
        .json(&json!({"keys": [
            {"id": a}, {"provider": "github", "key_name": "ci"}, {"provider": "gemini"}
        ]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-remaining"], "7");
    let body: Value = r.json().unwrap();
    let keys: Vec<&str> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["api_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["sk-ant-A", "ghp-CI", "gm-X"]);
    assert_eq!(body["keys"][1]["key_name"], "ci");
    s.stop();
    let recs = reveals(&v);
    assert_eq!(recs.len(), 3, "{recs:#?}");
    for (i, (r, provider)) in recs.iter().zip(["claude", "github", "gemini"]).enumerate() {
        assert_eq!(r["outcome"], "success");
        assert_eq!(r["provider"], provider);
        assert!(r["key_id"].is_string());
        let detail = r["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("batch item {} of 3", i + 1))
                && detail.contains("for exec deploy.sh"),
            "{detail}"
        );
    }
}

#[test]
fn one_refused_key_reveals_none_and_says_which() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let a = api.create_key("claude", "main", "sk-ant-A");
    let gone = api.create_key("github", "old", "ghp-OLD");
    assert_eq!(api.delete(&format!("/api/keys/{gone}")).status(), 200);
    let r = batch(
        &api,
        json!([{"id": a}, {"provider": "nosuch"}, {"id": gone}, {"provider": "claude", "key_name": "main"}]),
    );
    assert_eq!(r.status(), 404);
    let text = r.text().unwrap();
    assert!(
        !text.contains("sk-ant-A") && !text.contains("ghp-OLD"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("key 2 of 4") && detail.contains("nothing was revealed"),
        "{detail}"
    );
    let failed: Vec<u64> = body["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [1, 2]);
    // The key that would have opened was not touched.
    let list: Vec<Value> = api.get("/api/keys").json().unwrap();
    assert!(list.iter().all(|k| k["last_used"].is_null()), "{list:#?}");
    s.stop();
    let records = reveals(&v);
    let mut outcomes: Vec<String> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect();
    // Refusals are coalesced: written within a second, in any order. The
    // key that would have opened (asked for twice) is recorded withheld
    // (forbidden: it was not given), so every key asked for has its record.
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["deleted", "forbidden", "not_found"],
        "{records:#?}"
    );
    let withheld: Vec<&Value> = records
        .iter()
        .filter(|r| r["key_id"] == a.as_str())
        .collect();
    assert_eq!(withheld.len(), 1, "{records:#?}");
    assert_eq!(withheld[0]["outcome"], "forbidden");
    assert_eq!(withheld[0]["count"], 2, "asked for twice: {records:#?}");
    let d = withheld[0]["detail"].as_str().unwrap();
    assert!(
        d.contains("withheld: key 2 of the batch was refused (not_found)"),
        "{d}"
    );
}

#[test]
fn a_limited_token_gets_for_another_providers_key_what_a_missing_one_gets() {
    let v = Vault::new();
    let reader = v.token("gh-only", "reader", Some("github"));
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let theirs = admin.create_key("claude", "main", "sk-ant-SECRET");
    admin.create_key("github", "ci", "ghp-CI");
    let api = Api::new(&s, &reader);
    let answer = |keys: Value| {
        let r = batch(&api, keys);
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        let f = &body["failed"][0];
        assert_eq!(f["index"], 1, "{body}");
        assert_eq!(body["failed"].as_array().unwrap().len(), 1, "{body}");
        (status, f["status"].clone(), f["detail"].clone())
    };
    let missing_id = uuid::Uuid::new_v4().to_string();
    let ci = json!({"provider": "github", "key_name": "ci"});
    assert_eq!(
        answer(json!([ci, {"id": theirs}])),
        answer(json!([ci, {"id": missing_id}]))
    );
    let (status, _, detail) = answer(json!([ci, {"provider": "claude"}]));
    assert_eq!(status, 404);
    let (_, _, missing) = answer(json!([ci, {"provider": "nosuch"}]));
    assert_eq!(
        detail.as_str().unwrap().replace("claude", "P"),
        missing.as_str().unwrap().replace("nosuch", "P")
    );
    let (status, ..) = answer(json!([ci, {"provider": "claude", "key_name": "main"}]));
    assert_eq!(status, 404);
    s.stop();
    let recs = reveals(&v);
    assert!(recs.iter().all(|r| r["outcome"] != "success"), "{recs:#?}");
    // Recorded as what they were (coalesced per target and second): the
    // other provider's key by id, by provider, by name, and the provider
    // `nosuch`, which is beyond the token's providers too.
    let withheld = |r: &&Value| r["detail"].as_str().is_some_and(|d| d.contains("withheld"));
    let count = |r: &Value| r["count"].as_u64().unwrap_or(1);
    let forbidden: u64 = recs
        .iter()
        .filter(|r| r["outcome"] == "forbidden" && !withheld(r))
        .map(count)
        .sum();
    assert_eq!(forbidden, 4, "{recs:#?}");
    // `ci`, which the token may see and which opened, withheld in each of
    // the five batches, recorded as such.
    let held: Vec<&Value> = recs.iter().filter(withheld).collect();
    assert!(held.iter().all(|r| r["provider"] == "github"), "{held:#?}");
    assert_eq!(held.iter().map(|r| count(r)).sum::<u64>(), 5, "{held:#?}");
}

#[test]
fn a_batch_costs_one_reveal_a_key_all_or_none() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "5/min")]);
    let api = Api::new(&s, &v.admin);
    for p in ["a", "b", "c"] {
        api.create_key(p, "k", &format!("sk-{p}"));
    }
    let three = json!([{"provider": "a"}, {"provider": "b"}, {"provider": "c"}]);
    // More keys than the rate's whole burst can never fit: refused as such.
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"provider": format!("p{i}")}))
        .collect();
    let r = batch(&api, json!(six));
    assert_eq!(r.status(), 422);
    assert!(detail(r).contains("at most 5"));
    // 1 cell spent on the refused request above; 4 left: 3 fit.
    let r = batch(&api, three.clone());
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-remaining"], "1");
    // 1 left, 3 asked: 429 with Retry-After, nothing revealed.
    let r = batch(&api, three);
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Three cells at 12 s each, less what came back meanwhile.
    assert!((20..=37).contains(&retry), "{retry}");
    let text = r.text().unwrap();
    assert!(!text.contains("sk-"), "{text}");
    // The refused batch took its first cell only; none is left now.
    assert_eq!(api.get("/api/providers/a/key").status(), 429);
    s.stop();
    let recs = reveals(&v);
    assert_eq!(recs.iter().filter(|r| r["outcome"] == "success").count(), 3);
    // The refused batch's three keys are counted (coalesced per second).
    let limited: u64 = recs
        .iter()
        .filter(|r| r["outcome"] == "rate_limited")
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert!(limited >= 4, "{recs:#?}");
}

#[test]
fn malformed_oversized_and_unauthenticated_batches_are_refused() {
    let v = Vault::new();
    let writer = v.token("writer", "writer", None);
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-A");
    for (keys, says) in [
        (json!([]), "no key"),
        (
            json!([{"provider": "claude", "keyname": "main"}]),
            "unknown field",
        ),
        (
            json!([{"provider": "claude"}, {"provider": "claude"}]),
            "repeats key 1",
        ),
        (json!([{"id": "x", "version": 0}]), "version number"),
    ] {
        let r = batch(&api, keys.clone());
        assert_eq!(r.status(), 422, "{keys}");
        assert!(detail(r).contains(says), "{keys}");
    }
    let many: Vec<Value> = (0..33)
        .map(|i| json!({"provider": format!("p{i}")}))
        .collect();
    let r = batch(&api, json!(many));
    assert_eq!(r.status(), 422);
    assert!(detail(r).contains("at most 32"));
    let big = json!({"keys": [{"provider": "claude"}], "pad": "x".repeat(70 * 1024)});
    assert_eq!(api.post_json("/api/reveal", &big).status(), 413);
    // No token, a bad one, one without keys:reveal: refused before the
    // body is read, and recorded as reveal attempts.
    let anon = Api::anonymous(&s);
    let one = json!([{"provider": "claude"}]);
    let r = batch(&anon, one.clone());
    assert_eq!(r.status(), 401);
    assert!(!r.text().unwrap().contains("sk-"));
    assert_eq!(batch(&Api::new(&s, "kh_wrong"), one.clone()).status(), 401);
    let r = batch(&Api::new(&s, &writer), one);
    assert_eq!(r.status(), 403);
    assert!(detail(r).contains("keys:reveal"));
    s.stop();
    let recs = reveals(&v);
    assert!(recs.iter().all(|r| r["outcome"] != "success"), "{recs:#?}");
    let unauthenticated: u64 = recs
        .iter()
        .filter(|r| r["outcome"] == "unauthenticated")
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(unauthenticated, 2, "{recs:#?}");
    assert!(recs
        .iter()
        .any(|r| r["outcome"] == "forbidden" && r["caller"] == "writer"));
}

/// The `outcome` counts of `keyhold_reveals_total`.
fn reveals_counted(s: &Server, token: &str, outcome: &str) -> u64 {
    let line = format!("keyhold_reveals_total{{outcome=\"{outcome}\"}} ");
    metrics_text(s, token)
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

/// A batch the edge refuses for its shape (after the scope check) is
/// recorded, but it is no reveal refused: the reveal metric does not
/// count it.
#[test]
fn a_malformed_batch_is_not_counted_as_a_refused_reveal() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-A");
    let before = reveals_counted(&s, &v.admin, "forbidden");
    for keys in [
        json!([]),
        json!([{"provider": "claude", "keyname": "main"}]),
        json!([{"provider": "claude"}, {"provider": "claude"}]),
    ] {
        assert_eq!(batch(&api, keys.clone()).status(), 422, "{keys}");
    }
    let r = api
        .req(reqwest::Method::POST, "/api/reveal")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(reveals_counted(&s, &v.admin, "forbidden"), before);
    s.stop();
    // Each is recorded all the same, as the admin's refused reveal.
    let recs = reveals(&v);
    let refused: u64 = recs
        .iter()
        .filter(|r| r["outcome"] == "forbidden" && r["caller"] == "admin")
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(refused, 4, "{recs:#?}");
}
