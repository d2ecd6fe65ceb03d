//! Files in a data directory belong to its owner. An offline command run
//! as root on a store owned by another user (the service user) would
//! write root-owned files there (sled's snapshots, a rewrite, a restored
//! store) and lock the service out ("Permission denied"). So root is
//! refused on another user's data directory, with the `runuser` line that
//! runs the same command as the owner; and a data directory this process
//! cannot read is said to be a permission problem, not a missing store.
//!
//! Not for: the key file (root's by design, see docs/operations.md).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ConfigError;

/// The name of user `uid` from /etc/passwd, if it has one.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// `name (uid N)`, or `uid N` without a name.
pub(crate) fn who(uid: u32) -> String {
    match user_name(uid) {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// A URL's password (`scheme://user:PASSWORD@host`) replaced by `***`:
/// `migrate --to-database-url` is the one flag that may carry one.
fn without_password(arg: &str) -> String {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return arg.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => arg.to_string(),
    }
}

/// This command's words, quoted for a shell. keyhold takes no secret on
/// its command line but a database URL's password, which is masked.
fn this_command() -> String {
    std::env::args_os()
        .map(|a| without_password(&a.to_string_lossy()))
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Refuses to work as root on a data directory (or, for one that does not
/// exist yet, its parent) that belongs to another user, naming the
/// `runuser` line that runs this command as that user.
pub(crate) fn refuse_foreign_owner(dir: &Path) -> Result<(), ConfigError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    // A directory still to be made takes its nearest existing ancestor's
    // owner (init, restore or migrate into a new directory).
    let Some((at, meta)) = dir.ancestors().find_map(|d| {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        std::fs::metadata(d).ok().map(|m| (d, m))
    }) else {
        return Ok(());
    };
    let owner = meta.uid();
    if owner == 0 {
        return Ok(());
    }
    let as_user = user_name(owner).unwrap_or_else(|| format!("#{owner}"));
    Err(ConfigError(format!(
        "keyhold runs as root, but {} belongs to {}: files written as root would lock that \
         user (the service) out. Nothing was done; run the same command as the owner: runuser \
         -u {as_user} -- {}",
        if at == dir {
            format!("the data directory {}", dir.display())
        } else {
            format!(
                "{} (where the data directory {} would be made)",
                at.display(),
                dir.display()
            )
        },
        who(owner),
        this_command()
    )))
}

/// Why `dir` cannot be read by this process, when the cause is a
/// permission: said so, with what to do, instead of "not initialised".
pub(crate) fn unreadable(dir: &Path) -> Option<ConfigError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        _ => return None,
    }
    let me = rustix::process::geteuid().as_raw();
    let owner = std::fs::metadata(dir)
        .map(|m| who(m.uid()))
        .unwrap_or_else(|_| "another user".into());
    Some(ConfigError(format!(
        "cannot read the data directory {}: permission denied (it belongs to {owner}; keyhold \
         runs as {}). Run keyhold as the directory's owner, or give the service user the store: \
         chown -R USER: {}",
        dir.display(),
        who(me),
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_urls_password_is_masked() {
        for (given, shown) in [
            (
                "postgres://keyhold:s3cret@db:5432/k",
                "postgres://keyhold:***@db:5432/k",
            ),
            (
                "--to-database-url=postgres://u:p@h/d",
                "--to-database-url=postgres://u:***@h/d",
            ),
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("/var/lib/keyhold", "/var/lib/keyhold"),
        ] {
            assert_eq!(super::without_password(given), shown);
        }
    }
}
