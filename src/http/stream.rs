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
pub fn stream_blocking<F>(produce: F) -> Response
where
    F: FnOnce(&mut ChannelWriter) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter { tx };
        if let Err(e) = produce(&mut writer) {
            tracing::warn!(error = %e, "a streamed answer stopped early");
            let _ = writer
                .tx
                .blocking_send(Err(std::io::Error::other("the stream stopped early")));
        }
    });
    warp::reply::stream(ChunkStream(rx)).into_response()
}

/// `std::io::Write` into the bounded channel.
pub struct ChannelWriter {
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
