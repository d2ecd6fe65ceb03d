//! Types that hold secret material: zeroized on drop, never printed.
//!
//! Anything decrypted (an API key), any access token and any Fernet key
//! lives in one of these so that `Debug`, `Display` and logs cannot show it.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// Secret bytes (a decrypted API key, an access token). Zeroized on drop;
/// `Debug` prints `[REDACTED]`.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The secret itself. Call sites are few and easy to audit.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        SecretBytes::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A secret string (an access token as typed by a user, a Fernet key in
/// text form). Zeroized on drop; `Debug` prints `[REDACTED]`.
#[derive(Clone, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Read straight into the zeroizing wrapper (a request's `api_key`): the
/// deserializer hands over its `String`, which is never copied.
impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Zeroize for SecretString {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// A secret in a JSON body (an API key, a new access token): sent
/// borrowed from its zeroizing owner, so no plain copy is made to send it;
/// received straight into a `SecretString`. `Debug` prints
/// `[REDACTED]`.
pub(crate) enum SecretText<'a> {
    /// Borrowed from where the secret lives (the side that sends it).
    Borrowed(&'a str),
    /// Read from a body (the side that receives it).
    Owned(SecretString),
}

impl SecretText<'_> {
    /// The secret itself. Call sites are few and easy to audit.
    pub(crate) fn expose(&self) -> &str {
        match self {
            SecretText::Borrowed(s) => s,
            SecretText::Owned(s) => s.expose(),
        }
    }

    /// The secret as an owned, zeroizing string (a copy when borrowed).
    pub(crate) fn into_secret(self) -> SecretString {
        match self {
            SecretText::Borrowed(s) => SecretString::new(s.to_string()),
            SecretText::Owned(s) => s,
        }
    }
}

/// Written as the JSON string it is: only a wire type's field holds one,
/// so nothing else serializes a secret by accident.
impl serde::Serialize for SecretText<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for SecretText<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SecretString::deserialize(d).map(SecretText::Owned)
    }
}

impl fmt::Debug for SecretText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretBytes::new(b"sk-live-123".to_vec());
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        let t = SecretString::new("kh_abc".into());
        assert_eq!(format!("{t:?}"), "[REDACTED]");
        for w in [SecretText::Borrowed("kh_abc"), SecretText::Owned(t)] {
            assert_eq!(format!("{w:?}"), "[REDACTED]");
        }
    }
}
