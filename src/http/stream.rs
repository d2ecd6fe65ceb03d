//! Streaming answers from blocking producers (export, backup): the
//! producer writes into a bounded channel on a blocking thread and waits
//! when the client reads slowly, so memory stays flat.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;
use warp::reply::{Reply, Response};

/// Chunks in flight between the producer and the socket.
const IN_FLIGHT: usize = 8;

/// Runs `produce` on a blocking thread and streams what it writes. An
/// error ends the stream early (the client sees a truncated body; the
/// error is logged).
pub(super) fn stream_blocking<F, E>(produce: F) -> Response
where
    F: FnOnce(&mut ChannelWriter) -> Result<(), E> + Send + 'static,
    E: std::fmt::Display,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    let handle = tokio::runtime::Handle::current();
    // The answer's status is sent before the producer ends, so a panic in
    // it cannot become a 500: it is logged by the panic hook (which knows
    // the request from the thread), counted, and ends the body with an
    // error, so the client sees a broken transfer rather than a body that
    // looks whole.
    let request = crate::blocking::current();
    let route = request.as_ref().map_or("stream", |r| r.route);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter { tx, handle };
        let produced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::blocking::on_thread(request, || produce(&mut writer))
        }));
        let stopped = match produced {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a streamed answer stopped early");
                "the stream stopped early"
            }
            Err(_) => {
                metrics::counter!("keyhold_request_panics_total", "route" => route).increment(1);
                "the stream stopped early on an internal error"
            }
        };
        let _ = writer.tx.blocking_send(Err(std::io::Error::other(stopped)));
    });
    warp::reply::stream(ChunkStream(rx)).into_response()
}

/// How long a producer waits for a client that stopped reading.
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `std::io::Write` into the bounded channel.
pub(super) struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    handle: tokio::runtime::Handle,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A client that stops reading does not park this thread forever.
        let chunk = Ok(Bytes::copy_from_slice(buf));
        let sent = self
            .handle
            .block_on(async { tokio::time::timeout(STALL_LIMIT, self.tx.send(chunk)).await });
        match sent {
            Ok(Ok(())) => Ok(buf.len()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
        }
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
