//! `keyhold audit export|verify|public-key --remote`: the audit log of a
//! running server (which holds the store locked), read through its audit
//! routes with an auditor token.
//!
//! `verify --remote` trusts nothing the server says about itself: it
//! streams the whole export and verifies the chain and its signatures
//! here, with the public key the auditor pinned (`--public-key`) or,
//! failing that, the one the server names (said on stderr: a server that
//! lies about its key could sign a forged log, so pin it), and checks
//! that the stream holds the head the server answered with.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::ConfigError;
use crate::client::{Client, ClientError};
use crate::config::{
    AuditExportArgs, AuditPublicKeyArgs, AuditRemoteArgs, AuditVerifyArgs, ExportFormatArg,
};
use crate::vault::{PublicKey, VerifyKeys};

/// How long a whole export may take to stream.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// A connected client, or the exit status of why not (said on stderr).
fn connect(a: &AuditRemoteArgs) -> Result<Client, ExitCode> {
    crate::cli::remote_commands::connect(&a.client).map_err(|e| failed(&e))
}

fn failed(e: &ClientError) -> ExitCode {
    eprintln!("keyhold: error: {e}");
    crate::cli::remote_commands::client_exit(e)
}

/// The public key the server says signs its log.
fn servers_key(c: &Client) -> Result<String, ClientError> {
    let answer: crate::wire::AuditKey = c.get_json("/api/audit/verify")?;
    Ok(answer.public_key)
}

/// `keyhold audit public-key --remote`.
pub(super) fn public_key(a: AuditPublicKeyArgs) -> anyhow::Result<ExitCode> {
    let c = match connect(&a.remote) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let key = match servers_key(&c) {
        Ok(k) => k,
        Err(e) => return Ok(failed(&e)),
    };
    let mut out = std::io::stdout().lock();
    if a.output.is_json() {
        serde_json::to_writer(&mut out, &serde_json::json!({ "public_key": key }))?;
        writeln!(out)?;
    } else {
        writeln!(out, "{key}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The export's query: its format and filters, as the route names them.
fn export_query(a: &AuditExportArgs) -> Vec<(&'static str, String)> {
    let mut q = vec![(
        "format",
        match a.format {
            ExportFormatArg::Jsonl => "jsonl",
            ExportFormatArg::Csv => "csv",
        }
        .to_string(),
    )];
    for (name, v) in super::common::filter_pairs(&a.filter) {
        if let Some(v) = v {
            q.push((name, v.clone()));
        }
    }
    q
}

/// The head the server answered with (`SEQ:MAC`), if it said one.
fn head_of(resp: &reqwest::blocking::Response) -> Option<String> {
    resp.headers()
        .get("x-keyhold-audit-head")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `keyhold audit export --remote`.
pub(super) fn export(a: AuditExportArgs) -> anyhow::Result<ExitCode> {
    let c = match connect(&a.remote) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut resp = match c.get_stream("/api/audit", &export_query(&a), EXPORT_TIMEOUT) {
        Ok(r) => r,
        Err(e) => return Ok(failed(&e)),
    };
    let head = head_of(&resp);
    let copied = match &a.output {
        Some(path) => {
            // Written beside its final name and moved there when whole: an
            // interrupted export leaves no file that looks complete.
            let mut file = crate::private_file::PendingFile::create(path)
                .with_context(|| format!("cannot create the export {}", path.display()))?;
            match std::io::copy(&mut resp, file.file()) {
                Ok(n) => {
                    file.commit()
                        .with_context(|| format!("cannot write the export {}", path.display()))?;
                    n
                }
                // Dropped uncommitted: the partial file is removed.
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "the export stopped before its end ({e}); nothing was kept: run it again"
                    ));
                }
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut resp, &mut out).map_err(|e| {
                anyhow::anyhow!(
                    "the export stopped before its end ({e}): what was written is incomplete; \
                     run it again"
                )
            })?
        }
    };
    match head {
        Some(h) => eprintln!(
            "keyhold: exported {copied} bytes; the log's head when the export began was {h} \
             (verify an unfiltered export with `keyhold audit verify --file FILE --anchor {h} \
             --public-key KEY`)"
        ),
        None => eprintln!("keyhold: exported {copied} bytes"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyhold audit verify --remote`.
pub(super) fn verify(
    a: AuditVerifyArgs,
    anchors: Vec<crate::vault::Anchor>,
) -> anyhow::Result<ExitCode> {
    if a.file.is_some() || a.filtered {
        return Err(ConfigError(
            "--remote verifies the server's whole log: drop --file and --filtered (to verify a \
             file, export it first and use --file without --remote)"
                .into(),
        )
        .into());
    }
    let c = match connect(&a.remote) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let key_text = match &a.public_key {
        Some(k) => k.clone(),
        None => match servers_key(&c) {
            Ok(k) => {
                eprintln!(
                    "keyhold: note: verifying with the public key the server names ({k}); pin \
                     the key you trust with --public-key, or a server that lies about its key \
                     could pass a forged log"
                );
                k
            }
            Err(e) => return Ok(failed(&e)),
        },
    };
    let key: PublicKey = key_text
        .parse()
        .map_err(|e| ConfigError(format!("--public-key: {e}")))?;
    let resp = match c.get_stream(
        "/api/audit",
        &[("format", "jsonl".to_string())],
        EXPORT_TIMEOUT,
    ) {
        Ok(r) => r,
        Err(e) => return Ok(failed(&e)),
    };
    // The stream must hold the head the server answered with: a cut
    // tail is caught, as with --anchor.
    let mut anchors = anchors;
    if let Some(h) = head_of(&resp) {
        anchors.push(super::common::parse_anchor(&h).context("the server's head")?);
    }
    let mut reader = std::io::BufReader::new(resp);
    let reports = crate::vault::verify_export(
        &mut reader,
        "the server's export",
        "the server's export",
        &VerifyKeys::public(key),
        false,
        &anchors,
    )?;
    let ok = super::common::print_reports(&reports, a.output.is_json())?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
