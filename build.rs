//! Build information for `keyhold version`, `/healthz` and the
//! `keyhold_build_info` metric: the git commit when built from a checkout
//! ("unknown" from a tarball, or when git is missing) and the target
//! triple cargo builds for. No build-info crate: two facts, one command.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // A checkout with uncommitted changes says so.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    let commit = if dirty && commit != "unknown" {
        format!("{commit}-modified")
    } else {
        commit
    };
    println!("cargo:rustc-env=KEYHOLD_BUILD_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=KEYHOLD_BUILD_TARGET={target}");
    // Rebuild when HEAD moves (a commit, a checkout), not on every build.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&dir).join("HEAD").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&dir).join("index").display()
        );
    }
    if let (Some(common), Some(head)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(common).join(head).display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");
}
