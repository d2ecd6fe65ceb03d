//! `POST /api/reveal`: several keys in one request, all or nothing (the
//! rules are the vault's, `vault::reveal_batch`).
//!
//! The request's path, in this order: the limiter takes one cell (as any
//! reveal does) → the vault admits the caller (token, `keys:reveal`) →
//! only then is the body read (at most 64 KiB, under a body-read permit)
//! and checked (1 to [`MAX_BATCH`] keys, each by id, provider and name,
//! or provider alone; no repeats; no more than the reveal rate's burst)
//! → the limiter takes the batch's other cells, all or none → the vault
//! opens every key and, when all opened, records and gives them.
//!
//! Not for: the single reveals (see `keys.rs`).

use bytes::Buf;
use futures_util::Stream;
use http::StatusCode;
use serde_json::Value;
use warp::reply::Response;

use super::context::{json_response, secret_json_response, with_rate_headers, Ctx};
use super::error::ApiError;
use super::{AppState, State};
use crate::vault::{BatchRefusal, Target, MAX_BATCH};
use crate::wire::{ErrorBody, FailedKey, RevealedBatch};

/// POST /api/reveal
pub(super) async fn reveal_batch<S, B>(state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    // A limit shared through the database that cannot be read refuses
    // the reveal (503) rather than let it through unlimited.
    let first = match state.core.limiter().decide(ctx.client_key()).await {
        Ok(d) => d,
        Err(e) => {
            ctx.discard_body(body).await;
            return ctx.error(&ApiError::storage(&e));
        }
    };
    let origin = AppState::origin(&ctx);
    let vault = state.vault();
    let purpose = super::request::purpose(&ctx);
    let note = |name: &str| ctx.set_caller(name);
    let admitted = vault
        .admit_batch(
            &origin,
            if first.allowed {
                Ok(())
            } else {
                Err(first.retry_after_secs)
            },
            ctx.bearer(),
            Some(&note),
            purpose.as_deref(),
        )
        .await;
    let caller = match admitted {
        Ok(c) => c,
        Err(refusal) => {
            ctx.discard_body(body).await;
            return with_rate_headers(ctx.error(&ApiError::from(refusal)), &first);
        }
    };
    // Admitted: a body that does not fit is this caller's refused reveal.
    ctx.set_authorized(&caller, crate::vault::Action::Reveal);
    let targets = async {
        let permit = state.body_permit().await?;
        let value = ctx.read_json_body(body).await?;
        drop(permit);
        targets_of(&value)
    };
    let targets = match targets.await {
        Ok(t) => t,
        Err(e) => {
            let e = state.answer_refused(&ctx, e).await;
            return with_rate_headers(ctx.error(&e), &first);
        }
    };
    let rate = state.core.limiter().rate();
    if targets.len() > rate.count.get() as usize {
        let e = ApiError::invalid(format!(
            "this request asks for {} keys, but the reveal rate ({rate}) lets one client have at \
             most {} at once: split it into smaller requests",
            targets.len(),
            rate.count
        ));
        let e = state.answer_refused(&ctx, e).await;
        return with_rate_headers(ctx.error(&e), &first);
    }
    let more = (targets.len() - 1) as u32;
    let rest = match state
        .core
        .limiter()
        .decide_more(ctx.client_key(), more)
        .await
    {
        Ok(d) => d,
        Err(e) => return with_rate_headers(ctx.error(&ApiError::storage(&e)), &first),
    };
    let decision = if more == 0 { first } else { rest };
    let verdict = if rest.allowed {
        Ok(())
    } else {
        Err(rest.retry_after_secs)
    };
    let answer = match vault
        .reveal_batch(&origin, &caller, &targets, verdict, purpose.as_deref())
        .await
    {
        Ok(keys) => {
            let texts: Vec<std::borrow::Cow<'_, str>> = keys
                .iter()
                .map(|k| String::from_utf8_lossy(k.api_key.expose()))
                .collect();
            // Each key with the fields of a single reveal.
            let out = RevealedBatch {
                keys: keys
                    .iter()
                    .zip(&texts)
                    .map(|(k, text)| super::key_routes::revealed(k, text))
                    .collect(),
            };
            let secret_len = texts.iter().map(|t| t.len()).sum::<usize>() + 256 * keys.len();
            // Serialized from borrows into a zeroized buffer: no
            // `serde_json::Value` copy of a key is made (and freed unwiped).
            ctx.finish(secret_json_response(StatusCode::OK, &out, secret_len))
        }
        Err(BatchRefusal::Whole(refusal)) => ctx.error(&ApiError::from(refusal)),
        Err(BatchRefusal::Items(refused)) => ctx.finish(items_refused(targets.len(), refused)),
    };
    with_rate_headers(answer, &decision)
}

/// The answer when some keys were refused: the first one's status (and
/// `Retry-After`), every refused key by its place, nothing revealed.
fn items_refused(n: usize, refused: Vec<(usize, crate::vault::Refusal)>) -> Response {
    let failed: Vec<(usize, ApiError)> = refused
        .into_iter()
        .map(|(i, r)| (i, ApiError::from(r)))
        .collect();
    let Some((i, first)) = failed.first() else {
        return json_response(StatusCode::OK, &serde_json::json!({ "keys": [] }));
    };
    let detail = format!(
        "key {} of {n}: {}{}; nothing was revealed (every key of a batch is revealed, or none)",
        i + 1,
        first.detail,
        match failed.len() {
            1 => String::new(),
            more => format!(" (and {} more refused: see `failed`)", more - 1),
        }
    );
    let mut resp = json_response(
        first.status,
        &ErrorBody {
            detail,
            failed: failed
                .iter()
                .map(|(index, e)| FailedKey {
                    detail: e.detail.clone(),
                    index: *index,
                    status: e.status.as_u16(),
                })
                .collect(),
        },
    );
    if let Some(secs) = first.retry_after {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from(secs));
    }
    if first.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The keys a body asks for: `{"keys": [{"id": ID, "version"?: N} |
/// {"provider": P, "key_name"?: NAME}, ...]}`, checked.
fn targets_of(body: &Value) -> Result<Vec<Target>, ApiError> {
    let form = "the body must be {\"keys\": [...]}, each key {\"id\": ID} (with \"version\": N \
                for an older version), {\"provider\": P, \"key_name\": NAME} or {\"provider\": P} \
                (its newest live key)";
    let Some(items) = body.get("keys").and_then(Value::as_array) else {
        return Err(ApiError::invalid(format!(
            "field `keys` is required and must be a list: {form}"
        )));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "field `keys` lists no key: ask for at least one",
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "field `keys` lists {} keys; at most {MAX_BATCH} a request: split it",
            items.len()
        )));
    }
    let mut out: Vec<Target> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let bad = |why: &str| ApiError::invalid(format!("key {} of `keys`: {why}; {form}", i + 1));
        let Some(obj) = item.as_object() else {
            return Err(bad("not an object"));
        };
        if let Some(other) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "id" | "version" | "provider" | "key_name"))
        {
            let other: String = other.chars().take(40).collect();
            return Err(bad(&format!("unknown field {other:?}")));
        }
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(&format!("field `{name}` must be a string"))),
            }
        };
        let version = match obj.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => Some(n),
                _ => return Err(bad("field `version` must be a version number (1, 2, ...)")),
            },
        };
        let target = match (text("id")?, text("provider")?, text("key_name")?) {
            (Some(id), None, None) => Target::Id(id, version),
            (None, Some(p), name) if version.is_none() => match name {
                Some(n) => Target::Named(p, n),
                None => Target::NewestOf(p),
            },
            (None, Some(_), _) => return Err(bad("`version` goes with `id` only")),
            (Some(_), Some(_), _) | (Some(_), None, Some(_)) => {
                return Err(bad("give `id`, or `provider` (with `key_name`), not both"))
            }
            (None, None, _) => return Err(bad("give `id` or `provider`")),
        };
        if let Some(j) = out.iter().position(|t| same(t, &target)) {
            return Err(ApiError::invalid(format!(
                "key {} of `keys` repeats key {}: ask for each key once",
                i + 1,
                j + 1
            )));
        }
        out.push(target);
    }
    Ok(out)
}

/// Whether two targets ask for the same thing.
fn same(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Id(x, v), Target::Id(y, w)) => x.eq_ignore_ascii_case(y) && v == w,
        (Target::NewestOf(p), Target::NewestOf(q)) => p == q,
        (Target::Named(p, n), Target::Named(q, m)) => p == q && n == m,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_lists_1_to_32_distinct_well_formed_keys() {
        let ok = targets_of(&serde_json::json!({"keys": [
            {"id": "a", "version": 2}, {"provider": "p"}, {"provider": "p", "key_name": "n"}
        ]}))
        .unwrap();
        assert_eq!(ok.len(), 3);
        for (body, says) in [
            (serde_json::json!({}), "required"),
            (serde_json::json!({"keys": {}}), "required"),
            (serde_json::json!({"keys": []}), "no key"),
            (serde_json::json!({"keys": [1]}), "not an object"),
            (
                serde_json::json!({"keys": [{"provider": "p", "keyname": "n"}]}),
                "unknown field",
            ),
            (
                serde_json::json!({"keys": [{"provider": 1}]}),
                "must be a string",
            ),
            (
                serde_json::json!({"keys": [{"id": "a", "version": 0}]}),
                "version number",
            ),
            (
                serde_json::json!({"keys": [{"id": "a", "version": -1}]}),
                "version number",
            ),
            (
                serde_json::json!({"keys": [{"provider": "p", "version": 2}]}),
                "with `id` only",
            ),
            (
                serde_json::json!({"keys": [{"id": "a", "provider": "p"}]}),
                "not both",
            ),
            (
                serde_json::json!({"keys": [{"key_name": "n"}]}),
                "give `id` or `provider`",
            ),
            (
                serde_json::json!({"keys": [{"provider": "p"}, {"provider": "p"}]}),
                "repeats key 1",
            ),
            (
                serde_json::json!({"keys": [{"id": "A"}, {"id": "a"}]}),
                "repeats key 1",
            ),
        ] {
            let e = targets_of(&body).err().unwrap();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(e.detail.contains(says), "{body}: {}", e.detail);
        }
        let many: Vec<Value> = (0..=MAX_BATCH)
            .map(|i| serde_json::json!({"id": i.to_string()}))
            .collect();
        let e = targets_of(&serde_json::json!({ "keys": many }))
            .err()
            .unwrap();
        assert!(e.detail.contains("at most 32"), "{}", e.detail);
    }

    #[test]
    fn the_body_a_client_writes_is_the_body_the_server_reads() {
        let body = crate::wire::RevealBatch {
            keys: vec![
                crate::wire::KeyRef {
                    provider: Some("claude".into()),
                    key_name: Some("prod".into()),
                    ..Default::default()
                },
                crate::wire::KeyRef {
                    provider: Some("openai".into()),
                    ..Default::default()
                },
                crate::wire::KeyRef {
                    id: Some("3f2a7c1e".into()),
                    version: Some(2),
                    ..Default::default()
                },
            ],
        };
        let got = targets_of(&serde_json::to_value(&body).unwrap()).unwrap();
        assert!(matches!(&got[0], Target::Named(p, n) if p == "claude" && n == "prod"));
        assert!(matches!(&got[1], Target::NewestOf(p) if p == "openai"));
        assert!(matches!(&got[2], Target::Id(id, Some(2)) if id == "3f2a7c1e"));
    }
}
