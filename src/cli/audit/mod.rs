//! `keyhold audit export|verify|public-key`: offline (`local`), or with
//! `--remote` through a running server's audit routes (`remote`); what
//! both forms share is in `common`.

use std::process::ExitCode;

use crate::config::AuditCommand;

mod common;
mod local;
mod remote_audit;

pub(super) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export(a) if a.remote.remote => remote_audit::export(a),
        AuditCommand::Verify(a) if a.remote.remote => {
            let anchors = common::parse_anchors(&a.anchor)?;
            remote_audit::verify(a, anchors)
        }
        AuditCommand::PublicKey(a) if a.remote.remote => remote_audit::public_key(a),
        AuditCommand::Export(a) => local::export(a),
        AuditCommand::Verify(a) => local::verify(a),
        AuditCommand::PublicKey(a) => local::public_key(a),
    }
}
