//! The vault's refusals as an offline command's user reads them, and the
//! exit code each gives: `?` on a [`Refusal`] in a command makes a
//! [`CliRefusal`], whose message names commands, never an HTTP route.
//!
//! An offline command meets the refusals of tokens (create, revoke,
//! rotate, list), of `init`, of storage and of the audit log. Where the
//! server's words name no route (tokens, fields, storage, tampering: they
//! name `keyhold` commands) the terminal reads the same words
//! (`http::refusal_text`); the rest are worded here.
//!
//! Not for: the HTTP answer (`http::error`, `http::refusal_text`).

use crate::vault::Refusal;

/// A refusal an offline command met.
#[derive(Debug)]
pub(crate) struct CliRefusal(pub(crate) Refusal);

impl CliRefusal {
    /// A value the vault refused as invalid (a name, a provider) is a
    /// usage error, as the server's 422 is for a client command.
    pub(crate) fn is_usage_error(&self) -> bool {
        matches!(self.0, Refusal::Invalid(_))
    }
}

impl std::fmt::Display for CliRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            // An offline command writes to the audit log itself: nothing
            // was done, and there is no server to ask about it.
            Refusal::AuditUnavailable => f.write_str(
                "the audit log cannot be written, so nothing was done: check disk space and the \
                 data directory's permissions, then run the command again",
            ),
            Refusal::Unavailable(_) | Refusal::Storage => f.write_str(
                "storage is unavailable right now, so nothing was done: check the data directory \
                 (or the database), then run the command again",
            ),
            other => f.write_str(&crate::http::refusal_text::detail(other)),
        }
    }
}

impl std::error::Error for CliRefusal {}

impl From<Refusal> for anyhow::Error {
    fn from(r: Refusal) -> anyhow::Error {
        anyhow::Error::new(CliRefusal(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{Conflict, Invalid, Missing, Tampered};

    /// Every refusal an offline command can meet (tokens, init, storage,
    /// the audit log) reads for a terminal: no HTTP route, status or
    /// header; and only an invalid value is a usage error.
    #[test]
    fn an_offline_refusal_names_commands_never_a_route() {
        let offline = [
            Refusal::Invalid(Invalid::TokenName {
                name: "bad name".into(),
            }),
            Refusal::Invalid(Invalid::TokenProvider {
                provider: "Bad".into(),
            }),
            Refusal::Invalid(Invalid::LimitedAuditor),
            Refusal::NotFound(Missing::Token {
                id_or_name: "bot".into(),
            }),
            Refusal::Conflict(Conflict::TokenNameTaken { name: "bot".into() }),
            Refusal::Conflict(Conflict::TokenRevoked { name: "bot".into() }),
            Refusal::Conflict(Conflict::SeveralLiveTokens {
                name: "bot".into(),
                ids: vec![uuid::Uuid::nil()],
            }),
            Refusal::Conflict(Conflict::AlreadyInitialised {
                location: "/var/lib/keyhold".into(),
            }),
            Refusal::TamperedRecord(Tampered::Token),
            Refusal::AuditUnavailable,
            Refusal::Storage,
        ];
        for r in offline {
            let usage = matches!(r, Refusal::Invalid(_));
            let e = CliRefusal(r);
            let text = e.to_string();
            for http in [
                "/api/",
                "/healthz",
                "Retry-After",
                "GET ",
                "POST ",
                "field `",
            ] {
                assert!(!text.contains(http), "{e:?}: {text}");
            }
            assert_eq!(e.is_usage_error(), usage, "{e:?}");
        }
        let text = CliRefusal(Refusal::NotFound(Missing::Token {
            id_or_name: "bot".into(),
        }))
        .to_string();
        assert!(text.contains("`keyhold token list`"), "{text}");
    }
}
