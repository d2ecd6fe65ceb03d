//! What is generated from the clap definitions for the shell and the
//! manual: `keyhold completions bash|zsh|fish`, `keyhold man DIR` (hidden;
//! for packagers), and `keyhold version`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::build_info::BUILD;
use crate::config::{Cli, CompletionsArgs, ManArgs, ShellArg, VersionArgs};

/// `keyhold version [--format json]`
pub(super) fn version(a: VersionArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if a.output.is_json() {
        serde_json::to_writer(&mut out, &BUILD)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{BUILD}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyhold completions SHELL`: the script on stdout.
pub(super) fn completions(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell = match a.shell {
        ShellArg::Bash => clap_complete::Shell::Bash,
        ShellArg::Zsh => clap_complete::Shell::Zsh,
        ShellArg::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "keyhold", &mut out);
    out.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `keyhold man DIR`: one page for keyhold and one for every subcommand
/// (`keyhold-token-create.1`, ...), hidden ones left out (clap_mangen's
/// own walk).
pub(super) fn man(a: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .with_context(|| format!("cannot write the man pages to {}", a.dir.display()))?;
    eprintln!("keyhold: wrote the man pages to {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}
