//! What this binary is: version, git commit and target triple (set by
//! `build.rs`). Printed by `keyhold version`, served in `/healthz` and as
//! the `keyhold_build_info` metric, so an operator can tell which build a
//! server runs without shell access to it.

use serde::Serialize;

/// The crate version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit (12 hex digits, `-modified` with uncommitted changes),
/// or `unknown` when built outside a checkout.
pub(crate) const COMMIT: &str = env!("KEYHOLD_BUILD_COMMIT");
/// The target triple, e.g. `x86_64-unknown-linux-gnu`.
pub(crate) const TARGET: &str = env!("KEYHOLD_BUILD_TARGET");

/// The three facts, as `keyhold version --format json` and `/healthz`
/// show them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub target: &'static str,
}

/// This binary's build.
pub(crate) const BUILD: BuildInfo = BuildInfo {
    version: VERSION,
    commit: COMMIT,
    target: TARGET,
};

impl std::fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "keyhold {} (commit {}, target {})",
            self.version, self.commit, self.target
        )
    }
}
