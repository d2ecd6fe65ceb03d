//! The core tested directly on a temporary store: no HTTP, no terminal.

use super::keys::MAX_KEEP_VERSIONS;
use super::*;
use crate::access::Role;
use crate::audit::AuditRecord;
use crate::duration::MAX_TTL_SECONDS;
use crate::secret::SecretString;

/// A fresh vault: a temporary store initialised under a random keyring,
/// its audit log, and the first admin token.
struct Fixture {
    store: Store,
    keyring: Keyring,
    log: AuditLog,
    admin: String,
}

fn fixture() -> Fixture {
    let store = Store::temporary().unwrap();
    let keyring = Keyring::ephemeral();
    let done = initialise(&store, &keyring, "admin").unwrap();
    let log = AuditLog::open(store.clone(), &keyring).unwrap();
    Fixture {
        store,
        keyring,
        log,
        admin: done.admin_token.expose().to_string(),
    }
}

impl Fixture {
    fn vault(&self) -> Vault<'_> {
        Vault {
            store: &self.store,
            keyring: (&self.keyring).into(),
            audit: Sink::Log(&self.log),
            coalescer: None,
        }
    }

    fn records(&self) -> Vec<AuditRecord> {
        self.store
            .audit_iter(0)
            .map(|r| AuditRecord::decode(&r.unwrap().1).unwrap())
            .collect()
    }

    fn last(&self) -> AuditRecord {
        self.records().pop().unwrap()
    }

    fn caller(&self, token: &str) -> Caller {
        match super::check(&self.store, token, crate::time::now_us()).unwrap() {
            super::Checked::Valid(c) => c,
            other => panic!("not a live token: {other:?}"),
        }
    }

    fn token(&self, role: Role, providers: Option<Vec<String>>) -> String {
        let minted = block(self.vault().create_token(
            &Origin::cli(),
            None,
            TokenRequest {
                name: format!("t{}", uuid::Uuid::new_v4().simple()),
                role,
                providers,
                ttl_seconds: None,
            },
        ))
        .unwrap();
        minted.secret.expose().to_string()
    }

    fn key(&self, provider: &str, api_key: &str, ttl: Option<i64>) -> uuid::Uuid {
        let admin = self.caller(&self.admin);
        let rec = block(self.vault().create_key(
            &Origin::cli(),
            &admin,
            NewKey {
                provider: provider.into(),
                key_name: "main".into(),
                api_key: SecretString::new(api_key.into()),
                ttl_seconds: ttl,
            },
        ))
        .unwrap();
        rec.id
    }

    fn reveal(&self, token: Option<&str>, target: Target) -> Result<Revealed, Refusal> {
        block(self.vault().reveal(RevealRequest {
            origin: Origin::cli(),
            token: token.ok_or(Refusal::Unauthenticated(Unauthenticated::Missing)),
            target,
            verdict: Ok(()),
            purpose: None,
            on_caller: None,
        }))
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_reveal_answers_only_after_its_success_record_is_written() {
    let f = fixture();
    let id = f.key("claude", "sk-ant-1", None);
    let reader = f.token(Role::Reader, None);
    let key = f
        .reveal(Some(&reader), Target::NewestOf("claude".into()))
        .unwrap();
    assert_eq!(key.api_key.expose(), b"sk-ant-1");
    let rec = f.last();
    assert_eq!(
        (rec.event.action, rec.event.outcome, rec.event.key_id),
        (Action::Reveal, Outcome::Success, Some(id))
    );
    assert!(
        f.store.last_used(&id).unwrap().is_some(),
        "last_used lands with the record"
    );
}

#[test]
fn each_refusal_is_recorded_with_its_outcome() {
    let f = fixture();
    let id = f.key("claude", "sk-ant-1", None);
    let gone = f.key("gemini", "AIza", Some(1));
    let writer = f.token(Role::Writer, None);
    let limited = f.token(Role::Reader, Some(vec!["gemini".into()]));
    let cases: Vec<(Option<&str>, Target, Refusal, Outcome)> = vec![
        (
            None,
            Target::Id(id.to_string(), None),
            Refusal::Unauthenticated(Unauthenticated::Missing),
            Outcome::Unauthenticated,
        ),
        (
            Some(&writer),
            Target::Id(id.to_string(), None),
            Refusal::missing_scope(crate::access::Scope::KeysReveal),
            Outcome::Forbidden,
        ),
        (
            Some(&f.admin),
            Target::Id(uuid::Uuid::new_v4().to_string(), None),
            Refusal::NotFound(Missing::Key),
            Outcome::NotFound,
        ),
        // Another provider's key answers like a missing one, recorded forbidden.
        (
            Some(&limited),
            Target::Id(id.to_string(), None),
            Refusal::Beyond(Missing::Key),
            Outcome::Forbidden,
        ),
    ];
    for (token, target, want, outcome) in cases {
        let got = f.reveal(token, target).unwrap_err();
        assert_eq!(got, want);
        assert_eq!(f.last().event.outcome, outcome, "{want:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        f.reveal(Some(&f.admin), Target::Id(gone.to_string(), None))
            .unwrap_err(),
        Refusal::Expired
    );
    assert_eq!(f.last().event.outcome, Outcome::Expired);
}

#[test]
fn a_rate_limited_reveal_is_refused_before_the_token_is_looked_at() {
    let f = fixture();
    let before = f.records().len();
    let got = block(f.vault().reveal(RevealRequest {
        origin: Origin::cli(),
        token: Ok("kh_not-even-checked"),
        target: Target::NewestOf("claude".into()),
        verdict: Err(7),
        purpose: None,
        on_caller: None,
    }))
    .unwrap_err();
    assert_eq!(got, Refusal::RateLimited(7));
    let recs = f.records();
    assert_eq!(recs.len(), before + 1);
    assert_eq!(recs[before].event.outcome, Outcome::RateLimited);
    assert_eq!(recs[before].event.caller, "cli");
}

#[test]
fn a_tampered_token_record_is_refused_and_recorded_as_such() {
    let f = fixture();
    let reader = f.token(Role::Reader, None);
    // Move the admin's authentic record under the reader's storage key.
    let sha = crate::access::hash_token(&reader);
    let at = f.store.token_key(&sha).unwrap();
    let admin_at = f
        .store
        .token_key(&crate::access::hash_token(&f.admin))
        .unwrap();
    let admin_value = f
        .store
        .entries("tokens")
        .map(|e| e.unwrap())
        .find(|(k, _)| **k == admin_at)
        .unwrap()
        .1;
    f.store.put_entry("tokens", &at, &admin_value).unwrap();
    let got = f.reveal(Some(&reader), Target::NewestOf("claude".into()));
    assert_eq!(got.unwrap_err(), Refusal::TamperedToken);
    let rec = f.last();
    assert_eq!(
        (rec.event.action, rec.event.outcome),
        (Action::Authenticate, Outcome::Tampered)
    );
}

#[test]
fn a_limited_admin_mints_nothing_broader_and_revokes_nothing_broader() {
    let f = fixture();
    let limited = f.token(Role::Admin, Some(vec!["claude".into()]));
    let caller = f.caller(&limited);
    let broad = TokenRequest {
        name: "broad".into(),
        role: Role::Reader,
        providers: None,
        ttl_seconds: None,
    };
    let got = block(f.vault().create_token(&Origin::cli(), Some(&caller), broad)).unwrap_err();
    assert!(matches!(got, Refusal::Forbidden(_)), "{got:?}");
    assert_eq!(f.last().event.outcome, Outcome::Forbidden);
    let got = block(
        f.vault()
            .revoke_token(&Origin::cli(), Some(&caller), "admin"),
    )
    .unwrap_err();
    assert!(matches!(got, Refusal::Beyond(_)), "{got:?}");
    assert!(block(f.vault().list_tokens(&Origin::cli(), Some(&caller)))
        .unwrap()
        .iter()
        .all(|t| t.record.name != "admin"));
    // The operator offline reaches everything.
    let rec = block(f.vault().revoke_token(&Origin::cli(), None, "admin")).unwrap();
    assert_eq!(rec.name, "admin");
}

#[test]
fn keys_are_checked_created_and_deleted_with_their_records() {
    let f = fixture();
    let admin = f.caller(&f.admin);
    let bad = NewKey {
        provider: "Claude".into(),
        key_name: "k".into(),
        api_key: SecretString::new("x".into()),
        ttl_seconds: None,
    };
    let got = block(f.vault().create_key(&Origin::cli(), &admin, bad)).unwrap_err();
    assert!(
        matches!(&got, Refusal::Invalid(Invalid::Provider)),
        "{got:?}"
    );
    let id = f.key("claude", "sk", None);
    assert_eq!(f.last().event.action, Action::KeyCreate);
    let deleted = block(
        f.vault()
            .delete_key(&Origin::cli(), &admin, &id.to_string()),
    )
    .unwrap();
    assert_eq!(deleted, id);
    assert_eq!(f.last().event.action, Action::KeyDelete);
    // Soft: the record stays, marked, until it is purged.
    let kept = f.store.get_key(&id).unwrap().unwrap();
    assert!(kept.deleted_at_us.is_some());
    let purged = block(f.vault().purge_key(&Origin::cli(), &admin, &id.to_string())).unwrap();
    assert_eq!(purged, id);
    assert_eq!(f.last().event.action, Action::KeyPurge);
    assert!(f.store.get_key(&id).unwrap().is_none());
}

#[test]
fn an_expiring_token_is_refused_once_expired_and_a_rotation_keeps_the_grants() {
    let f = fixture();
    let minted = block(f.vault().create_token(
        &Origin::cli(),
        None,
        TokenRequest {
            name: "bot".into(),
            role: Role::Reader,
            providers: Some(vec!["claude".into()]),
            ttl_seconds: Some(60),
        },
    ))
    .unwrap();
    let secret = minted.secret.expose().to_string();
    let rec = minted.record;
    assert_eq!(rec.ttl_seconds, Some(60));
    assert_eq!(rec.expires_at_us, Some(rec.created_at_us + 60_000_000));
    let at = |us| super::check(&f.store, &secret, us).unwrap();
    assert!(matches!(
        at(rec.created_at_us + 59_000_000),
        super::Checked::Valid(_)
    ));
    match at(rec.created_at_us + 60_000_000) {
        super::Checked::Expired {
            caller, rotated, ..
        } => {
            assert_eq!(caller.id, rec.id);
            assert!(!rotated);
        }
        other => panic!("{other:?}"),
    }
    // Out of range ttls and overlaps are refused before anything is written.
    for ttl in [0, -1, MAX_TTL_SECONDS + 1] {
        let got = block(f.vault().create_token(
            &Origin::cli(),
            None,
            TokenRequest {
                name: "bad".into(),
                role: Role::Reader,
                providers: None,
                ttl_seconds: Some(ttl),
            },
        ))
        .unwrap_err();
        assert!(matches!(got, Refusal::Invalid(_)), "{got:?}");
    }
    let got = block(
        f.vault()
            .rotate_token(&Origin::cli(), None, "bot", Some(-1)),
    )
    .unwrap_err();
    assert!(matches!(got, Refusal::Invalid(_)), "{got:?}");
    // Rotation: same grants and ttl; the old one ends after the overlap.
    let rotated = block(f.vault().rotate_token(&Origin::cli(), None, "bot", Some(0))).unwrap();
    let new = &rotated.new.record;
    assert_eq!(
        (
            &new.name,
            &new.role,
            &new.scopes,
            &new.providers,
            new.ttl_seconds
        ),
        (
            &rec.name,
            &rec.role,
            &rec.scopes,
            &rec.providers,
            rec.ttl_seconds
        )
    );
    assert_ne!(new.id, rec.id);
    assert_eq!(rotated.old.rotated_to, Some(new.id));
    assert!(rotated.old.expires_at_us.unwrap() <= new.created_at_us);
    let last = f.last();
    assert_eq!(last.event.action, Action::TokenRotate);
    assert_eq!(last.event.outcome, Outcome::Success);
    // The old token is now expired (rotated); the new one works.
    let got = block(f.vault().authenticate(&Origin::cli(), Ok(&secret))).unwrap_err();
    match &got {
        Refusal::TokenExpired { rotated, .. } => assert!(rotated),
        other => panic!("{other:?}"),
    }
    let last = f.last();
    assert_eq!(last.event.action, Action::Authenticate);
    assert_eq!(last.event.outcome, Outcome::Expired);
    assert_eq!(last.event.caller_id, Some(rec.id));
    assert_eq!(last.event.caller, "bot");
    assert!(f.caller(rotated.new.secret.expose()).id == new.id);
    // The name now means the replacement; the old one cannot be rotated again.
    let got = block(
        f.vault()
            .rotate_token(&Origin::cli(), None, &rec.id.to_string(), None),
    )
    .unwrap_err();
    assert!(matches!(got, Refusal::Conflict(_)), "{got:?}");
    // Last use: neither the offline rotation (no token) nor the refusal
    // of the expired token is a use; a record made with the new token is,
    // at that record's time, in the same commit.
    let usage = f.store.token_usage().unwrap();
    assert!(!usage.contains_key(&new.id) && !usage.contains_key(&rec.id));
    let c = f.caller(rotated.new.secret.expose());
    let ev = f.vault().event(
        &Origin::cli(),
        Action::AuditExport,
        Some(&c),
        Outcome::Success,
    );
    block(f.vault().record(ev, vec![])).unwrap();
    assert_eq!(
        f.store.token_usage().unwrap().get(&new.id),
        Some(&f.last().at_us)
    );
}

#[test]
fn a_key_policy_takes_1_to_100_versions_and_a_window_up_to_ten_years() {
    let p = KeyPolicy::new(1, 0).unwrap();
    assert_eq!((p.keep_versions.get(), p.recovery_window_us), (1, 0));
    let ten_years = MAX_TTL_SECONDS as u64;
    let p = KeyPolicy::new(MAX_KEEP_VERSIONS, ten_years).unwrap();
    assert_eq!(p.keep_versions.get(), MAX_KEEP_VERSIONS);
    assert_eq!(p.recovery_window_us, MAX_TTL_SECONDS * 1_000_000);
    for keep in [0, MAX_KEEP_VERSIONS + 1, u32::MAX] {
        assert_eq!(
            KeyPolicy::new(keep, 60),
            Err(KeyPolicyError::KeepVersions(keep))
        );
    }
    for secs in [ten_years + 1, u64::MAX] {
        let e = KeyPolicy::new(10, secs).unwrap_err();
        assert_eq!(e, KeyPolicyError::RecoveryWindow(secs));
        assert!(e.to_string().contains("at most 10 years"), "{e}");
    }
    assert_eq!(
        KeyPolicy::default(),
        KeyPolicy::new(10, 7 * 86_400).unwrap()
    );
}

/// Every refusal a vault method gives a caller is recorded by the vault
/// itself (the HTTP edge counts on it: it records only its own), field
/// rules and lookups included; a failure of storage is not a refusal.
#[test]
fn field_rules_and_lookups_are_refused_with_their_records() {
    let f = fixture();
    let writer = f.caller(&f.token(Role::Writer, None));
    let admin = f.caller(&f.admin);
    let n = || f.records().len();
    let before = n();
    let bad = NewKey {
        provider: "claude".into(),
        key_name: " padded".into(),
        api_key: SecretString::new("sk".into()),
        ttl_seconds: None,
    };
    let got = block(f.vault().create_key(&Origin::cli(), &writer, bad)).unwrap_err();
    assert!(
        matches!(got, Refusal::Invalid(Invalid::KeyName(_))),
        "{got:?}"
    );
    let last = f.last();
    assert_eq!(
        (last.event.action, last.event.outcome, last.event.caller_id),
        (Action::KeyCreate, Outcome::Forbidden, Some(writer.id))
    );
    let taken = TokenRequest {
        name: "admin".into(),
        role: Role::Reader,
        providers: None,
        ttl_seconds: None,
    };
    let got = block(f.vault().create_token(&Origin::cli(), Some(&admin), taken)).unwrap_err();
    assert!(
        matches!(got, Refusal::Conflict(Conflict::TokenNameTaken { .. })),
        "{got:?}"
    );
    assert_eq!(f.last().event.action, Action::TokenCreate);
    let missing = uuid::Uuid::new_v4().to_string();
    let got = block(f.vault().key_versions(&Origin::cli(), &writer, &missing)).unwrap_err();
    assert_eq!(got, Refusal::NotFound(Missing::Key));
    assert_eq!(
        (f.last().event.action, f.last().event.outcome),
        (Action::KeyList, Outcome::NotFound)
    );
    let filter = KeyFilter {
        provider: Some("Not A Provider".into()),
        ..KeyFilter::default()
    };
    let got = block(f.vault().list_keys(&Origin::cli(), &writer, &filter)).unwrap_err();
    assert_eq!(got, Refusal::Invalid(Invalid::ProviderFilter));
    let got = block(f.vault().find_token(&Origin::cli(), Some(&admin), "nobody")).unwrap_err();
    assert!(matches!(got, Refusal::NotFound(Missing::Token { .. })));
    assert_eq!(n(), before + 5);
}
