//! Handlers of the audit routes: streamed export and chain verification
//! (scope `audit:read`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use tokio::sync::mpsc;
use warp::reply::{Reply, Response};

use super::context::Ctx;
use super::error::ApiError;
use super::keys::form_pairs;
use super::{require, State};
use crate::access::Scope;
use crate::audit::{self, Action, ExportFilter, ExportFormat, Exporter, Outcome};

/// Parses the export query (`since`, `until`, `key_id`, `caller`,
/// `outcome`, `action`, `format`).
pub fn parse_export_query(query: &str) -> Result<(ExportFilter, ExportFormat), ApiError> {
    let mut f = ExportFilter::default();
    let mut format = ExportFormat::default();
    for (k, v) in form_pairs(query)? {
        if v.is_empty() {
            continue;
        }
        if k == "format" {
            format = ExportFormat::parse(&v).ok_or_else(|| {
                ApiError::invalid("query parameter `format` must be `jsonl` or `csv`")
            })?;
            continue;
        }
        f.set(&k, &v)
            .map_err(|e| ApiError::invalid(format!("query parameter {e}")))?;
    }
    Ok((f, format))
}

/// GET /api/audit
pub async fn export(state: State, ctx: Ctx, query: String) -> Response {
    let res = async {
        let caller = state.authenticate(&ctx)?;
        if let Err(e) = require(&caller, Scope::AuditRead) {
            let ev = state.event(&ctx, Action::AuditExport, Some(&caller), Outcome::Forbidden);
            state.audit(ev, vec![]).await?;
            return Err(e);
        }
        let (filter, format) = parse_export_query(&query)?;
        let mut ev = state.event(&ctx, Action::AuditExport, Some(&caller), Outcome::Success);
        ev.detail = Some(format!("format={} {}", format.as_str(), filter.describe()));
        state.audit(ev, vec![]).await?;

        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter { tx: tx.clone() };
            let exporter = Exporter::new(&store, filter, format);
            if let Err(e) = exporter.write_to(writer, |_| {}) {
                tracing::warn!(error = %e, "audit export stopped");
                let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
            }
        });
        let mut resp = warp::reply::stream(ChunkStream(rx)).into_response();
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        Ok::<_, ApiError>(ctx.finish(resp))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// GET /api/audit/verify
pub async fn verify(state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = state.authenticate(&ctx)?;
        require(&caller, Scope::AuditRead)?;
        let store = state.store.clone();
        let key = state.audit.log().mac_key().clone();
        let report = tokio::task::spawn_blocking(move || audit::verify_store(&store, &key))
            .await
            .map_err(|_| ApiError::unavailable("verification was interrupted; retry"))?
            .map_err(|e| ApiError::storage(&e))?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &report))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// `std::io::Write` into a bounded channel: the blocking exporter waits
/// when the client reads slowly, so memory stays flat.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChunkStream(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_util::Stream for ChunkStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
