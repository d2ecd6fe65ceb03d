use super::*;
use crate::secret::SecretString;

fn info() -> TokenInfo {
    TokenInfo {
        id: "0b5c2d8e-4f1a-4c3b-9d7e-6a5f4e3d2c1b".into(),
        name: "ci".into(),
        role: "reader".into(),
        scopes: vec!["keys:list".into(), "keys:reveal".into()],
        providers: Some(vec!["claude".into()]),
        created_at: "2026-12-01T10:00:00Z".into(),
        revoked_at: None,
        expires_at: Some("2027-03-01T10:00:00Z".into()),
        expired: false,
        ttl_seconds: Some(7_776_000),
        last_used: None,
        rotated_to: None,
    }
}

/// A live key's metadata, for tests here and of the CLI's tables.
pub(crate) fn sample_key_meta() -> KeyMeta {
    KeyMeta {
        id: "3f2a7c1e-8d4b-4e6f-9a0b-1c2d3e4f5a6b".into(),
        provider: "claude".into(),
        key_name: "prod".into(),
        created_at: "2026-12-01T10:00:00Z".into(),
        last_used: None,
        expires_at: None,
        version: 2,
        deleted_at: None,
        purge_at: None,
    }
}

#[test]
fn key_metadata_round_trips_in_its_wire_order() {
    let meta = sample_key_meta();
    let text = serde_json::to_string(&meta).unwrap();
    assert_eq!(
        text,
        "{\"id\":\"3f2a7c1e-8d4b-4e6f-9a0b-1c2d3e4f5a6b\",\"provider\":\"claude\",\
         \"key_name\":\"prod\",\"created_at\":\"2026-12-01T10:00:00Z\",\"last_used\":null,\
         \"expires_at\":null,\"version\":2,\"deleted_at\":null,\"purge_at\":null}"
    );
    assert_eq!(serde_json::from_str::<KeyMeta>(&text).unwrap(), meta);
    let v = VersionMeta {
        version: 1,
        created_at: "2026-12-01T10:00:00Z".into(),
        created_by: Some("ci".into()),
        expires_at: None,
        state: "recovery".into(),
        restorable_until: Some("2026-12-08T10:00:00Z".into()),
    };
    let text = serde_json::to_string(&v).unwrap();
    assert_eq!(serde_json::from_str::<VersionMeta>(&text).unwrap(), v);
    let current = VersionMeta {
        state: "current".into(),
        restorable_until: None,
        ..v
    };
    let text = serde_json::to_string(&current).unwrap();
    assert!(!text.contains("restorable_until"), "{text}");
    assert_eq!(serde_json::from_str::<VersionMeta>(&text).unwrap(), current);
}

#[test]
fn a_reveal_round_trips_and_its_key_is_never_in_debug() {
    let sent = RevealedKey {
        id: "3f2a7c1e-8d4b-4e6f-9a0b-1c2d3e4f5a6b".into(),
        provider: "claude".into(),
        key_name: "prod".into(),
        api_key: SecretText::Borrowed("sk-live-1234"),
        version: 3,
        expires_at: None,
    };
    let text = serde_json::to_string(&RevealedBatch { keys: vec![sent] }).unwrap();
    assert_eq!(
        text,
        "{\"keys\":[{\"id\":\"3f2a7c1e-8d4b-4e6f-9a0b-1c2d3e4f5a6b\",\"provider\":\"claude\",\
         \"key_name\":\"prod\",\"api_key\":\"sk-live-1234\",\"version\":3,\"expires_at\":null}]}"
    );
    let got: RevealedBatch<'static> = serde_json::from_str(&text).unwrap();
    let key = &got.keys[0];
    assert_eq!(key.api_key.expose(), "sk-live-1234");
    assert!(matches!(key.api_key, SecretText::Owned(_)));
    assert_eq!((key.version, key.provider.as_ref()), (3, "claude"));
    let debug = format!("{got:?}");
    assert!(!debug.contains("sk-live-1234"), "{debug}");
    assert!(debug.contains("[REDACTED]"), "{debug}");
}

#[test]
fn a_reader_ignores_unknown_fields_and_names_a_missing_one() {
    let newer = "{\"id\":\"a\",\"provider\":\"p\",\"key_name\":\"n\",\"api_key\":\"sk\",\
                 \"version\":1,\"expires_at\":null,\"added_later\":[1,2]}";
    let key: RevealedKey<'static> = serde_json::from_str(newer).unwrap();
    assert_eq!(key.api_key.expose(), "sk");
    // Servers before versions said no version: it was the first.
    let old = "{\"id\":\"a\",\"provider\":\"p\",\"key_name\":\"n\",\"api_key\":\"sk\"}";
    let key: RevealedKey<'static> = serde_json::from_str(old).unwrap();
    assert_eq!(key.version, 1);
    let e = serde_json::from_str::<RevealedKey<'static>>("{\"id\":\"a\",\"provider\":\"p\"}")
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing field `key_name`"), "{e}");
    let e = serde_json::from_str::<KeyMeta>("{\"id\":\"a\"}")
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing field"), "{e}");
}

#[test]
fn a_minted_token_is_sent_in_name_order_and_its_secret_never_in_debug() {
    let minted = MintedToken {
        token: SecretText::Borrowed("kh_secret"),
        replaced: None,
        info: info(),
    };
    let text = serde_json::to_string(&minted).unwrap();
    // The order the answer has always had: every field by name.
    assert_eq!(
        text,
        "{\"created_at\":\"2026-12-01T10:00:00Z\",\"expired\":false,\
         \"expires_at\":\"2027-03-01T10:00:00Z\",\"id\":\"0b5c2d8e-4f1a-4c3b-9d7e-6a5f4e3d2c1b\",\
         \"last_used\":null,\"name\":\"ci\",\"providers\":[\"claude\"],\"revoked_at\":null,\
         \"role\":\"reader\",\"rotated_to\":null,\"scopes\":[\"keys:list\",\"keys:reveal\"],\
         \"token\":\"kh_secret\",\"ttl_seconds\":7776000}"
    );
    let got: MintedToken<'static> = serde_json::from_str(&text).unwrap();
    assert_eq!(got.token.expose(), "kh_secret");
    assert_eq!(got.info, info());
    assert!(got.replaced.is_none());
    let debug = format!("{got:?}");
    assert!(!debug.contains("kh_secret"), "{debug}");

    let rotated = MintedToken {
        token: SecretText::Owned(SecretString::new("kh_next".into())),
        replaced: Some(TokenInfo {
            rotated_to: Some("new".into()),
            ..info()
        }),
        info: info(),
    };
    let text = serde_json::to_string(&rotated).unwrap();
    let replaced_at = text.find("\"replaced\":").unwrap();
    assert!(
        text.find("\"providers\"").unwrap() < replaced_at
            && replaced_at < text.find("\"revoked_at\"").unwrap(),
        "{text}"
    );
    assert!(
        text.contains("\"replaced\":{\"created_at\":\"2026-12-01T10:00:00Z\",\"expired\":false"),
        "{text}"
    );
    let got: MintedToken<'static> = serde_json::from_str(&text).unwrap();
    assert_eq!(got.replaced.unwrap().rotated_to.as_deref(), Some("new"));
    assert_eq!(got.token.expose(), "kh_next");
    assert!(serde_json::from_str::<MintedToken<'static>>("{\"token\":\"kh\"}").is_err());
}

#[test]
fn request_bodies_round_trip_and_hold_their_secret_out_of_debug() {
    let key = SecretString::new("sk-new".into());
    let body = NewKey {
        api_key: SecretText::Borrowed(key.expose()),
        key_name: "prod".into(),
        provider: "claude".into(),
        ttl_seconds: None,
    };
    let text = serde_json::to_string(&body).unwrap();
    assert_eq!(
        text,
        "{\"api_key\":\"sk-new\",\"key_name\":\"prod\",\"provider\":\"claude\"}"
    );
    let got: NewKey<'static> = serde_json::from_str(&text).unwrap();
    assert_eq!(got.api_key.expose(), "sk-new");
    assert!(!format!("{got:?} {body:?}").contains("sk-new"));
    let put = NewVersion {
        api_key: SecretText::Borrowed("sk-2"),
        ttl_seconds: Some(60),
    };
    assert_eq!(
        serde_json::to_string(&put).unwrap(),
        "{\"api_key\":\"sk-2\",\"ttl_seconds\":60}"
    );
    let token = NewToken {
        name: "ci".into(),
        providers: None,
        role: "reader".into(),
        ttl_seconds: None,
    };
    let text = serde_json::to_string(&token).unwrap();
    assert_eq!(
        text,
        "{\"name\":\"ci\",\"providers\":null,\"role\":\"reader\"}"
    );
    assert_eq!(serde_json::from_str::<NewToken>(&text).unwrap(), token);
    assert_eq!(
        serde_json::to_string(&RotateToken::default()).unwrap(),
        "{}"
    );
    let batch = RevealBatch {
        keys: vec![
            KeyRef {
                provider: Some("claude".into()),
                key_name: Some("prod".into()),
                ..KeyRef::default()
            },
            KeyRef {
                provider: Some("openai".into()),
                ..KeyRef::default()
            },
        ],
    };
    let text = serde_json::to_string(&batch).unwrap();
    assert_eq!(
        text,
        "{\"keys\":[{\"key_name\":\"prod\",\"provider\":\"claude\"},{\"provider\":\"openai\"}]}"
    );
    assert_eq!(serde_json::from_str::<RevealBatch>(&text).unwrap(), batch);
}

#[test]
fn errors_whoami_and_admin_answers_round_trip() {
    let plain = ErrorBody {
        detail: "no such key".into(),
        failed: vec![],
    };
    let text = serde_json::to_string(&plain).unwrap();
    assert_eq!(text, "{\"detail\":\"no such key\"}");
    assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), plain);
    let batch = ErrorBody {
        detail: "key 1 of 2: no such key".into(),
        failed: vec![FailedKey {
            detail: "no such key".into(),
            index: 0,
            status: 404,
        }],
    };
    let text = serde_json::to_string(&batch).unwrap();
    assert!(
        text.ends_with("\"failed\":[{\"detail\":\"no such key\",\"index\":0,\"status\":404}]}"),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), batch);
    let me = WhoAmI {
        name: "ci".into(),
        id: "x".into(),
        scopes: vec!["keys:list".into()],
        providers: None,
    };
    let text = serde_json::to_string(&me).unwrap();
    assert_eq!(
        text,
        "{\"name\":\"ci\",\"id\":\"x\",\"scopes\":[\"keys:list\"],\"providers\":null}"
    );
    assert_eq!(serde_json::from_str::<WhoAmI>(&text).unwrap(), me);
    let done = Done {
        id: "x".into(),
        status: "revoked".into(),
    };
    let text = serde_json::to_string(&done).unwrap();
    assert_eq!(text, "{\"id\":\"x\",\"status\":\"revoked\"}");
    assert_eq!(serde_json::from_str::<Done>(&text).unwrap(), done);
    let reload = ReloadReport {
        source: "FERNET_KEY_FILE".into(),
        fingerprints: vec!["ab12".into()],
        previous: vec![],
        changed: true,
    };
    let text = serde_json::to_string(&reload).unwrap();
    assert_eq!(serde_json::from_str::<ReloadReport>(&text).unwrap(), reload);
    let rotate = RotateReport {
        rotated: 2,
        failed: vec![uuid::Uuid::nil()],
        ..RotateReport::default()
    };
    let text = serde_json::to_string(&rotate).unwrap();
    assert_eq!(serde_json::from_str::<RotateReport>(&text).unwrap(), rotate);
    let key: AuditKey =
        serde_json::from_str("{\"ok\":true,\"records\":3,\"public_key\":\"ed25519:ab\"}").unwrap();
    assert_eq!(key.public_key, "ed25519:ab");
}
