//! The vault's refusals as an offline command's user reads them, and the
//! exit code each gives: `?` on a [`Refusal`] in a command makes a
//! [`CliRefusal`], whose message names commands, never an HTTP route.
//!
//! An offline command meets the refusals of tokens (create, revoke,
//! rotate, list), of `init`, of storage and of the audit log; every other
//! refusal is worded here too (the match is exhaustive), so one that
//! becomes reachable offline reads for a terminal. Where the server's words
//! name no route (tokens, tampering: they name `keyhold` commands) the
//! terminal reads the same words (`http::refusal_text`). A failure of
//! storage or of the audit log says "nothing was done" only where the
//! write and its record are one commit ([`Work`]).
//!
//! Not for: the HTTP answer (`http::error`, `http::refusal_text`).

use crate::duration::MAX_TTL_SECONDS;
use crate::vault::{
    Conflict, Denied, EveryProvider, Invalid, Missing, Refusal, Removed, Unauthenticated,
};

/// What the command was doing when it was refused, so that a failure of
/// storage or of the audit log says truly how much was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// One write and its record, committed together (a token change,
    /// `init`): a failure leaves nothing done.
    OneCommit,
    /// A rotation: keys are re-encrypted one by one before the rotation
    /// is recorded, so a failure may leave it partly done.
    Rotation,
}

/// A refusal an offline command met.
#[derive(Debug)]
pub(crate) struct CliRefusal {
    pub(crate) refusal: Refusal,
    pub(crate) work: Work,
}

impl CliRefusal {
    /// A refusal of a command whose write and record are one commit.
    pub(crate) fn of(refusal: Refusal) -> CliRefusal {
        CliRefusal {
            refusal,
            work: Work::OneCommit,
        }
    }

    /// A refusal met during `work`.
    pub(crate) fn during(refusal: Refusal, work: Work) -> CliRefusal {
        CliRefusal { refusal, work }
    }

    /// A value the vault refused as invalid (a name, a provider) is a
    /// usage error, as the server's 422 is for a client command.
    pub(crate) fn is_usage_error(&self) -> bool {
        matches!(self.refusal, Refusal::Invalid(_))
    }

    /// What failed, without what it means for the command (said where the
    /// command already says how far it got, as a restore's re-keying does).
    pub(crate) fn cause(&self) -> String {
        match &self.refusal {
            Refusal::AuditUnavailable => "the audit log cannot be written: check disk space and \
                 the data directory's permissions"
                .into(),
            Refusal::Storage | Refusal::Unavailable(_) => {
                "storage failed: check the data directory (or the database)".into()
            }
            _ => self.to_string(),
        }
    }
}

impl std::fmt::Display for CliRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unwritable = matches!(
            self.refusal,
            Refusal::AuditUnavailable | Refusal::Storage | Refusal::Unavailable(_)
        );
        if unwritable && self.work == Work::Rotation {
            // Keys are re-encrypted before the rotation's record: some (or
            // all) may be under the new key already.
            return write!(
                f,
                "{}; the rotation may be partly done (some keys may already be re-encrypted, or \
                 all of them with the rotation not yet recorded): fix that, then run `keyhold \
                 rotate` again (it finishes what is left), then `keyhold check`",
                self.cause()
            );
        }
        f.write_str(&words(&self.refusal))
    }
}

/// An offline command's words for `r`: each names commands, never a route.
/// Exhaustive, so a refusal that becomes reachable offline is worded here.
fn words(r: &Refusal) -> String {
    // The server's words where they name no route: tokens, tampering.
    let shared = || crate::http::refusal_text::detail(r);
    match r {
        // An offline command writes to the audit log itself: nothing was
        // done, and there is no server to ask about it.
        Refusal::AuditUnavailable => "the audit log cannot be written, so nothing was done: \
             check disk space and the data directory's permissions, then run the command again"
            .into(),
        Refusal::Unavailable(_) | Refusal::Storage => "storage is unavailable right now, so \
             nothing was done: check the data directory (or the database), then run the command \
             again"
            .into(),
        Refusal::RateLimited(_) | Refusal::TooManyRefusals(_) | Refusal::TooManyRecords(_) => {
            "refused for now (too many requests in a short time): run the command again in a \
             moment"
                .into()
        }
        Refusal::Unauthenticated(Unauthenticated::UnknownToken) => {
            "the token is unknown or revoked: list tokens with `keyhold token list`".into()
        }
        Refusal::Unauthenticated(_) => "no usable token was given: make one with `keyhold \
             token create`"
            .into(),
        Refusal::TokenExpired { .. } => {
            "the token has expired: make a new one with `keyhold token create` or `keyhold token \
             rotate`"
                .into()
        }
        Refusal::Forbidden(Denied::MissingScope(scope)) => {
            format!("the token lacks the `{scope}` scope: use a token whose role grants it")
        }
        Refusal::Forbidden(Denied::OtherProvider { provider }) => {
            format!("the token is limited to other providers than `{provider}`")
        }
        Refusal::Forbidden(Denied::BroaderToken { providers }) => format!(
            "the token is limited to the providers {}: a token it creates must be limited to \
             some of them (`--providers`)",
            providers.join(", ")
        ),
        Refusal::Forbidden(Denied::EveryProvider(what)) => format!(
            "a provider-limited token may not {}: use an admin token without a provider limit",
            match what {
                EveryProvider::Rotation => "rotate the keyring",
                EveryProvider::Reload => "reload the keyring",
                EveryProvider::Backup => "back up the store",
                EveryProvider::AuditLog => "read the audit log",
                EveryProvider::Metrics => "read the metrics",
            }
        ),
        Refusal::NotFound(Missing::Token { .. }) | Refusal::Beyond(Missing::Token { .. }) => {
            shared()
        }
        Refusal::NotFound(m) | Refusal::Beyond(m) => missing(m),
        Refusal::Deleted(Removed::Key) => "the key is deleted: `keyhold keys restore` brings it \
             back within the recovery window (`keyhold keys list --deleted` lists deleted keys)"
            .into(),
        Refusal::Deleted(Removed::KeyPastRecovery) => "the key's recovery window has ended: it \
             is being destroyed; store the key again with `keyhold keys put`"
            .into(),
        Refusal::Deleted(Removed::VersionPastRecovery { version }) => format!(
            "version {version} of the key is past its recovery window: it is being destroyed; \
             store the key again with `keyhold keys put`"
        ),
        Refusal::Expired => {
            "the key has expired (its ttl ran out): store a new one with `keyhold keys put`".into()
        }
        Refusal::DecryptFailed => "no key of the keyring decrypts the stored key (its Fernet key \
             is not in FERNET_KEYS): `keyhold check` lists such keys"
            .into(),
        Refusal::TamperedToken | Refusal::TamperedRecord(_) => shared(),
        Refusal::Invalid(i) => invalid(i, shared),
        Refusal::Conflict(c) => conflict(c, shared),
    }
}

fn missing(m: &Missing) -> String {
    match m {
        Missing::Key => "no key with this id: list keys with `keyhold keys list`".into(),
        Missing::VersionNotANumber => "the version must be a version number (1, 2, ...): list \
             them with `keyhold keys versions`"
            .into(),
        Missing::VersionInRecoveryWindow { version } => format!(
            "version {version} of the key is in the recovery window, so it is not revealable: \
             `keyhold keys versions` lists each version and its state"
        ),
        Missing::VersionNotKept { version, .. } => format!(
            "version {version} of the key is not kept: list them with `keyhold keys versions`"
        ),
        Missing::ProviderKey { provider, .. } => format!(
            "no live key of provider `{provider}` by that name: list keys with `keyhold keys \
             list`"
        ),
        Missing::VersionNotInRecoveryWindow { version } => format!(
            "version {version} of the key is not in the recovery window: `keyhold keys \
             versions` lists each version and its state"
        ),
        Missing::Token { .. } => crate::http::refusal_text::detail(&Refusal::NotFound(m.clone())),
    }
}

fn invalid(i: &Invalid, shared: impl Fn() -> String) -> String {
    match i {
        Invalid::TokenName { .. } | Invalid::TokenProvider { .. } | Invalid::LimitedAuditor => {
            shared()
        }
        Invalid::Provider | Invalid::ProviderFilter => {
            "the provider must match [a-z0-9][a-z0-9_.-]{0,63} (for example `claude`)".into()
        }
        Invalid::KeyName(why) => format!("the key name {why}"),
        Invalid::ApiKeySize => format!(
            "the API key must be 1 byte to {} KiB",
            crate::vault::MAX_API_KEY / 1024
        ),
        Invalid::KeyTtl | Invalid::TokenTtl => {
            format!("--ttl must be from 1 s to 10 years ({MAX_TTL_SECONDS} s), e.g. 90d")
        }
        Invalid::Overlap => format!(
            "--overlap must be from 0 to 10 years ({MAX_TTL_SECONDS} s; 0: the old token stops \
             now)"
        ),
        Invalid::Request => "the command's arguments are invalid: see `keyhold --help`".into(),
    }
}

fn conflict(c: &Conflict, shared: impl Fn() -> String) -> String {
    match c {
        Conflict::SeveralLiveTokens { .. }
        | Conflict::TokenNameTaken { .. }
        | Conflict::TokenRevoked { .. }
        | Conflict::TokenRotated { .. }
        | Conflict::UnknownStoredRole { .. }
        | Conflict::AlreadyInitialised { .. } => shared(),
        Conflict::KeyNotDeleted => "the key is not deleted: there is nothing to restore".into(),
        Conflict::RecoveryWindowFull { held, .. } => format!(
            "the key's recovery window holds no more versions ({held} held): purge the key's \
             deleted versions with `keyhold keys delete --purge`, or wait for the window to end"
        ),
        Conflict::MaintenanceRunning => "a rotation, backup or reload is already running: run \
             the command again when it is done"
            .into(),
    }
}

impl std::error::Error for CliRefusal {}

impl From<Refusal> for anyhow::Error {
    fn from(r: Refusal) -> anyhow::Error {
        anyhow::Error::new(CliRefusal::of(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;
    use crate::vault::{Tampered, Unfinished};

    /// One refusal of each kind, offline or not.
    fn every_kind() -> Vec<Refusal> {
        let name = || "bot".to_string();
        vec![
            Refusal::RateLimited(3),
            Refusal::TooManyRefusals(3),
            Refusal::TooManyRecords(3),
            Refusal::Unauthenticated(Unauthenticated::Missing),
            Refusal::Unauthenticated(Unauthenticated::UnknownToken),
            Refusal::TokenExpired {
                at_us: 0,
                rotated: true,
            },
            Refusal::TamperedToken,
            Refusal::Forbidden(Denied::MissingScope(Scope::KeysReveal)),
            Refusal::Forbidden(Denied::OtherProvider {
                provider: "claude".into(),
            }),
            Refusal::Forbidden(Denied::BroaderToken {
                providers: vec!["claude".into()],
            }),
            Refusal::Forbidden(Denied::EveryProvider(EveryProvider::AuditLog)),
            Refusal::NotFound(Missing::Key),
            Refusal::NotFound(Missing::VersionNotANumber),
            Refusal::NotFound(Missing::VersionInRecoveryWindow { version: 2 }),
            Refusal::NotFound(Missing::VersionNotKept {
                version: 2,
                kept: vec![3],
            }),
            Refusal::NotFound(Missing::ProviderKey {
                provider: "claude".into(),
                name: Some("prod".into()),
                limited: true,
            }),
            Refusal::NotFound(Missing::VersionNotInRecoveryWindow { version: 2 }),
            Refusal::NotFound(Missing::Token { id_or_name: name() }),
            Refusal::Beyond(Missing::Key),
            Refusal::Deleted(Removed::Key),
            Refusal::Deleted(Removed::KeyPastRecovery),
            Refusal::Deleted(Removed::VersionPastRecovery { version: 2 }),
            Refusal::Expired,
            Refusal::DecryptFailed,
            Refusal::TamperedRecord(Tampered::Token),
            Refusal::TamperedRecord(Tampered::Key),
            Refusal::Invalid(Invalid::Provider),
            Refusal::Invalid(Invalid::ApiKeySize),
            Refusal::Invalid(Invalid::KeyTtl),
            Refusal::Invalid(Invalid::TokenTtl),
            Refusal::Invalid(Invalid::Overlap),
            Refusal::Invalid(Invalid::ProviderFilter),
            Refusal::Invalid(Invalid::TokenName {
                name: "bad name".into(),
            }),
            Refusal::Invalid(Invalid::TokenProvider {
                provider: "Bad".into(),
            }),
            Refusal::Invalid(Invalid::LimitedAuditor),
            Refusal::Invalid(Invalid::Request),
            Refusal::Conflict(Conflict::KeyNotDeleted),
            Refusal::Conflict(Conflict::RecoveryWindowFull {
                held: 5,
                kept: 3,
                in_window: 2,
                bytes: 10,
                until_us: None,
            }),
            Refusal::Conflict(Conflict::SeveralLiveTokens {
                name: name(),
                ids: vec![uuid::Uuid::nil()],
            }),
            Refusal::Conflict(Conflict::TokenNameTaken { name: name() }),
            Refusal::Conflict(Conflict::TokenRevoked { name: name() }),
            Refusal::Conflict(Conflict::AlreadyInitialised {
                location: "/var/lib/keyhold".into(),
            }),
            Refusal::Conflict(Conflict::MaintenanceRunning),
            Refusal::AuditUnavailable,
            Refusal::Unavailable(Unfinished::RotationInterrupted),
            Refusal::Storage,
        ]
    }

    /// Every refusal reads for a terminal: no HTTP route, status or
    /// header; and only an invalid value is a usage error.
    #[test]
    fn every_refusal_names_commands_never_a_route() {
        for r in every_kind() {
            let usage = matches!(r, Refusal::Invalid(_));
            let e = CliRefusal::of(r);
            let text = e.to_string();
            for http in [
                "/api/",
                "/healthz",
                "/openapi",
                "Retry-After",
                "GET ",
                "POST ",
                "DELETE ",
                "field `",
                "query parameter",
            ] {
                assert!(!text.contains(http), "{e:?}: {text}");
            }
            assert_eq!(e.is_usage_error(), usage, "{e:?}");
        }
        let text = CliRefusal::of(Refusal::NotFound(Missing::Token {
            id_or_name: "bot".into(),
        }))
        .to_string();
        assert!(text.contains("`keyhold token list`"), "{text}");
    }

    /// "Nothing was done" is said only of one commit; a rotation that
    /// failed says it may be partly done and what to run; the cause a
    /// restore's re-keying appends says nothing of what was done.
    #[test]
    fn a_failed_write_says_how_much_was_done() {
        for r in [
            Refusal::AuditUnavailable,
            Refusal::Storage,
            Refusal::Unavailable(Unfinished::RotationInterrupted),
        ] {
            let one = CliRefusal::of(r.clone()).to_string();
            assert!(one.contains("so nothing was done"), "{one}");
            let rotation = CliRefusal::during(r.clone(), Work::Rotation).to_string();
            assert!(!rotation.contains("nothing was done"), "{rotation}");
            assert!(rotation.contains("may be partly done"), "{rotation}");
            assert!(
                rotation.contains("`keyhold rotate` again") && rotation.contains("`keyhold check`"),
                "{rotation}"
            );
            let cause = CliRefusal::of(r).cause();
            assert!(!cause.contains("nothing was done"), "{cause}");
        }
        // A refusal that is no failure of storage reads the same in a rotation.
        let r = Refusal::Conflict(Conflict::MaintenanceRunning);
        assert_eq!(
            CliRefusal::during(r.clone(), Work::Rotation).to_string(),
            CliRefusal::of(r).to_string()
        );
    }
}
