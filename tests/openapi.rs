//! The OpenAPI document served at /openapi.json is kept true: every
//! documented route answers on the running server, and every served route
//! is documented.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_served_document_and_the_served_routes_agree() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let r = client().get(s.url("/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let docs = documented(&doc);
    let served: BTreeSet<(String, String)> = keyhold::internals::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(docs, served, "the document and the route table differ");
    // `/metrics` shows keyhold_requests_total at 0 from start with status
    // 200 for every route (src/http/observe.rs): each route's one success.
    for (method, path) in &docs {
        let ok: Vec<&String> = doc["paths"][path][method.to_lowercase()]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with('2'))
            .collect();
        assert_eq!(ok, ["200"], "{method} {path}: its success answers");
    }

    // Each documented route exists on the server: it does not answer with
    // the router's "no such route" 404 or a 405.
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    for (method, path) in &docs {
        let concrete = path.replace("{id}", &id).replace("{provider}", "claude");
        let m: reqwest::Method = method.parse().unwrap();
        let mut req = api.req(m, &concrete);
        if method == "POST" && path == "/api/keys" {
            req = req.json(&serde_json::json!({"provider": "x", "key_name": "x", "api_key": "x"}));
        }
        if method == "POST" && path == "/api/reveal" {
            req = req.json(&serde_json::json!({"keys": [{"provider": "claude"}]}));
        }
        if method == "POST" && path == "/api/tokens" {
            req = req.json(&serde_json::json!({"name": "doc-bot", "role": "reader"}));
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert!(status != 405, "{method} {path}: 405");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is documented but not served"
        );
        // Documented responses include the status the server gave.
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which is not documented"
        );
    }
    // An undocumented path is not served.
    let r = api.get("/api/not-documented");
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("no such route"));
}

/// The query parameters the document lists are exactly those the server
/// accepts (any other answers 422).
#[test]
fn the_documented_query_parameters_are_the_accepted_ones() {
    let doc: Value = serde_json::from_str(keyhold::internals::http::OPENAPI).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut documented: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let mut accepted =
                keyhold::internals::http::query_guard::known(&method.to_uppercase(), path).to_vec();
            documented.sort_unstable();
            accepted.sort_unstable();
            assert_eq!(documented, accepted, "{method} {path}");
        }
    }
}
