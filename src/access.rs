//! Access tokens: their format, scopes, roles and who may do what.
//!
//! A token is `kh_` followed by 43 characters of url-safe base64 (32 random
//! bytes), shown once at creation and stored only as its SHA-256. Lookups
//! go by digest and the digest is compared in constant time.
//!
//! Not for: storing tokens (see `store`) or HTTP (see `http`).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

/// The prefix every keyhold access token carries, so secret scanners can
/// recognise one.
pub(crate) const TOKEN_PREFIX: &str = "kh_";
const TOKEN_RANDOM_BYTES: usize = 32;
/// Length of a well-formed token: prefix plus unpadded base64 of 32 bytes.
pub(crate) const TOKEN_LEN: usize = 3 + 43;

/// What a token may do. One source of truth for scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Scope {
    KeysWrite,
    KeysList,
    KeysReveal,
    AuditRead,
    Admin,
    /// Read `/metrics` (stored last: records keep their scopes' indexes).
    MetricsRead,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::KeysWrite,
        Scope::KeysList,
        Scope::KeysReveal,
        Scope::AuditRead,
        Scope::MetricsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::KeysWrite => "keys:write",
            Scope::KeysList => "keys:list",
            Scope::KeysReveal => "keys:reveal",
            Scope::AuditRead => "audit:read",
            Scope::MetricsRead => "metrics:read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token presets. One source of truth for what each role grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Create, delete and list keys (a dashboard backend).
    Writer,
    /// List and reveal keys (an orchestrator).
    Reader,
    /// Read and verify the audit log.
    Auditor,
    /// Read `/metrics` (a Prometheus scraper).
    Metrics,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Writer,
        Role::Reader,
        Role::Auditor,
        Role::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Metrics => "metrics",
        }
    }

    pub fn scopes(self) -> Vec<Scope> {
        match self {
            Role::Admin => Scope::ALL.to_vec(),
            Role::Writer => vec![Scope::KeysWrite, Scope::KeysList],
            Role::Reader => vec![Scope::KeysList, Scope::KeysReveal],
            Role::Auditor => vec![Scope::AuditRead],
            Role::Metrics => vec![Scope::MetricsRead],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: use one of admin, writer, reader, auditor, metrics")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(40).collect()))
    }
}

/// The rule for provider names (also used for token provider limits).
pub(crate) fn valid_provider(p: &str) -> bool {
    let b = p.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// Longest key name, in characters.
pub(crate) const MAX_KEY_NAME: usize = 200;

/// Why a key name is refused (its words name the first offending
/// character by its code point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyNameProblem {
    #[error("must be 1 to {MAX_KEY_NAME} characters")]
    Length,
    #[error("must not contain control characters (found U+{:04X})", *.0 as u32)]
    Control(char),
    #[error("must not begin or end with a space")]
    OuterSpace,
    #[error(
        "must not contain separators other than the space, or characters that show as nothing \
         (found U+{:04X}), which make one name look like another", *.0 as u32
    )]
    Invisible(char),
    #[error(
        "must not contain Unicode format characters such as bidi controls or zero-width \
         characters (found U+{:04X}), which make one name look like another", *.0 as u32
    )]
    Format(char),
    #[error(
        "must be in Unicode normalization form C (NFC): normalize it first (for example \
         Python's unicodedata.normalize('NFC', name))"
    )]
    NotNfc,
}

/// Why a key name is refused, if it is, in words (see [`check_key_name`]).
pub(crate) fn key_name_problem(name: &str) -> Option<String> {
    check_key_name(name).map(|p| p.to_string())
}

/// Why a key name is refused, if it is: 1 to [`MAX_KEY_NAME`] characters,
/// none of them a control character or a Unicode format character (bidi
/// controls such as U+202E, zero-width characters such as U+200B: they make
/// one name look like another in the console and in `keys list`), and in
/// Unicode NFC (so that two names that look the same are the same string).
pub(crate) fn check_key_name(name: &str) -> Option<KeyNameProblem> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let n = name.chars().count();
    if n == 0 || n > MAX_KEY_NAME {
        return Some(KeyNameProblem::Length);
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(KeyNameProblem::Control(c));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Some(KeyNameProblem::OuterSpace);
    }
    // Separators other than the plain space, and characters that show as
    // nothing (default-ignorable code points, fillers, the braille blank).
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c.general_category(),
            GeneralCategory::SpaceSeparator
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        ) && *c != ' '
            || invisible(*c)
    }) {
        return Some(KeyNameProblem::Invisible(c));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        return Some(KeyNameProblem::Format(c));
    }
    if !unicode_normalization::is_nfc(name) {
        return Some(KeyNameProblem::NotNfc);
    }
    None
}

/// Characters that are not format characters but show as nothing:
/// Unicode's default-ignorable code points outside category Cf (combining
/// grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian free
/// variation selectors, variation selectors), and the braille blank.
fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x034F
            | 0x115F
            | 0x1160
            | 0x17B4
            | 0x17B5
            | 0x180B..=0x180F
            | 0x2800
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFFA0
            | 0xE0100..=0xE01EF
    )
}

/// The rule for token names: 1–64 characters, letters, digits, `_.-@`,
/// not starting with [`TOKEN_PREFIX`] (a name that could be a token's
/// secret would be kept in lists and the audit log).
pub(crate) fn valid_token_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(TOKEN_PREFIX)
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'@'))
}

/// A freshly generated token: the secret (shown once) and its digest.
pub struct NewToken {
    pub secret: SecretString,
    pub hash: [u8; 32],
}

/// Generates a new random access token.
pub(crate) fn generate_token() -> Result<NewToken, getrandom::Error> {
    let mut raw = zeroize::Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
    getrandom::fill(raw.as_mut())?;
    let mut s = String::with_capacity(TOKEN_LEN);
    s.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_ref(), &mut s);
    let secret = SecretString::new(s);
    let hash = hash_token(secret.expose());
    Ok(NewToken { secret, hash })
}

/// SHA-256 of a token's text.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// True when `token` has the shape of a keyhold token (cheap pre-check, so
/// garbage never reaches the store).
pub(crate) fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(TOKEN_PREFIX)
        && token[3..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Constant-time equality of two digests.
pub(crate) fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Who is calling: a token's identity and grants (never the token).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub id: uuid::Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub providers: Option<Vec<String>>,
}

impl Caller {
    pub(crate) fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    pub(crate) fn may_use_provider(&self, provider: &str) -> bool {
        match &self.providers {
            None => true,
            Some(list) => list.iter().any(|p| p == provider),
        }
    }

    /// True when the token is limited to some providers.
    pub(crate) fn is_limited(&self) -> bool {
        self.providers.is_some()
    }

    /// True when a token limited to `providers` (`None`: all) reaches no
    /// further than this caller: a limited caller never mints, sees or
    /// revokes a broader token.
    pub(crate) fn covers(&self, providers: Option<&[String]>) -> bool {
        match (&self.providers, providers) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(theirs)) => theirs.iter().all(|p| self.may_use_provider(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_name_says_which_rule_and_which_character() {
        let said = |name: &str| key_name_problem(name).unwrap_or_default();
        assert_eq!(said("fine name"), "");
        assert_eq!(said(""), "must be 1 to 200 characters");
        assert_eq!(
            said("a\u{7}b"),
            "must not contain control characters (found U+0007)"
        );
        assert_eq!(said(" a"), "must not begin or end with a space");
        assert!(said("a\u{2028}b").contains("(found U+2028), which make one name look like"));
        assert!(said("a\u{202E}b").contains("(found U+202E)"));
        assert!(said("e\u{301}").starts_with("must be in Unicode normalization form C (NFC)"));
    }

    #[test]
    fn tokens_are_prefixed_long_and_distinct() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert!(well_formed(a.secret.expose()));
        assert_eq!(a.secret.expose().len(), TOKEN_LEN);
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert!(digests_equal(&a.hash, &hash_token(a.secret.expose())));
        assert!(!digests_equal(&a.hash, &b.hash));
    }

    #[test]
    fn provider_rule() {
        assert!(valid_provider("claude"));
        assert!(valid_provider("0x.y-z_"));
        assert!(!valid_provider(""));
        assert!(!valid_provider("Claude"));
        assert!(!valid_provider("-a"));
        assert!(!valid_provider(&"a".repeat(65)));
        assert!(valid_provider(&"a".repeat(64)));
    }

    #[test]
    fn a_limited_caller_covers_only_narrower_tokens() {
        let limited = Caller {
            id: uuid::Uuid::nil(),
            name: "team".into(),
            scopes: Role::Admin.scopes(),
            providers: Some(vec!["claude".into(), "gemini".into()]),
        };
        let all = Caller {
            providers: None,
            ..limited.clone()
        };
        let list = |ps: &[&str]| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert!(limited.covers(Some(&list(&["claude"]))));
        assert!(limited.covers(Some(&list(&["gemini", "claude"]))));
        assert!(!limited.covers(Some(&list(&["claude", "openai"]))));
        assert!(!limited.covers(None));
        assert!(all.covers(None));
        assert!(all.covers(Some(&list(&["openai"]))));
        assert!(limited.is_limited() && !all.is_limited());
    }

    #[test]
    fn roles_grant_their_scopes() {
        assert!(Role::Reader.scopes().contains(&Scope::KeysReveal));
        assert!(!Role::Writer.scopes().contains(&Scope::KeysReveal));
        assert_eq!("auditor".parse::<Role>().unwrap(), Role::Auditor);
        assert!("root".parse::<Role>().is_err());
    }
}
