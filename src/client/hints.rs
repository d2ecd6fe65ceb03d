//! The server's details name HTTP routes ("list keys with GET /api/keys");
//! shown by a keyhold command they name the command that does the same
//! instead. Only the shown text changes: `ClientError::Api` keeps the
//! server's detail as it came. A route no command covers stays as it is.

/// A route in a detail, and the command that does what it does (`ID` for
/// the key's id). Longer routes come before the routes they start with.
const COMMANDS: &[(&str, &str)] = &[
    (
        "GET /api/keys?deleted=true",
        "`keyhold keys list --deleted`",
    ),
    ("POST /api/keys/{id}/restore", "`keyhold keys restore ID`"),
    ("GET /api/keys/{id}/versions", "`keyhold keys versions ID`"),
    (
        "DELETE /api/keys/{id}?purge=true",
        "`keyhold keys delete ID --purge`",
    ),
    ("POST /api/keys", "`keyhold keys add`"),
    ("GET /api/keys", "`keyhold keys list`"),
];

/// `GET /api/keys?provider=NAME` becomes this with the provider after it.
const BY_PROVIDER: (&str, &str) = ("GET /api/keys?provider=", "keyhold keys list --provider ");

/// Whether a route ends at byte `i` of `s` (not `/api/keys` in
/// `/api/keys/{id}/...` or `/api/keys?...`).
fn ends_at(s: &str, i: usize) -> bool {
    s[i..]
        .chars()
        .next()
        .is_none_or(|c| !(c.is_alphanumeric() || "/?={}_-".contains(c)))
}

/// `detail` with each route a command covers named as that command.
pub(super) fn for_commands(detail: &str) -> String {
    let mut out = detail.to_string();
    let (route, command) = BY_PROVIDER;
    while let Some(at) = out.find(route) {
        let rest = &out[at + route.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
            .unwrap_or(rest.len());
        let provider = rest[..len].to_string();
        out.replace_range(
            at..at + route.len() + len,
            &format!("`{command}{provider}`"),
        );
    }
    for (route, command) in COMMANDS {
        let mut from = 0;
        while let Some(found) = out[from..].find(route) {
            let at = from + found;
            let end = at + route.len();
            if ends_at(&out, end) {
                out.replace_range(at..end, command);
                from = at + command.len();
            } else {
                from = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_become_commands_and_the_rest_stays() {
        assert_eq!(
            for_commands("no key with this id: list keys with GET /api/keys"),
            "no key with this id: list keys with `keyhold keys list`"
        );
        assert_eq!(
            for_commands(
                "this key is deleted: POST /api/keys/{id}/restore brings it back within the \
                 recovery window (GET /api/keys?deleted=true lists deleted keys)"
            ),
            "this key is deleted: `keyhold keys restore ID` brings it back within the \
             recovery window (`keyhold keys list --deleted` lists deleted keys)"
        );
        assert_eq!(
            for_commands("no live key: list keys with GET /api/keys?provider=git-hub.x"),
            "no live key: list keys with `keyhold keys list --provider git-hub.x`"
        );
        // No command restores a version: the route stays.
        let kept = "an admin can put it back with POST /api/keys/{id}/versions/2/restore";
        assert_eq!(for_commands(kept), kept);
        assert_eq!(
            for_commands("add one with POST /api/keys"),
            "add one with `keyhold keys add`"
        );
    }
}
