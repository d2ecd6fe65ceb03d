//! The connection hyper reads and writes: first the bytes the sniff
//! already read (so nothing is lost), then the socket. On HTTP/1, hyper's
//! own bare parse-error answers are rewritten with a JSON `detail`; every
//! write large enough to be an answer is noted, so that a client reading a
//! long answer is not closed as idle.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::sniff::json_answer;

/// The fewest bytes one write must carry to count as an answer making
/// progress (HTTP/2 control frames are 9-17 bytes).
const PROGRESS_BYTES: usize = 64;

/// hyper's own answer to an HTTP/1 request it could not parse is a bare
/// head with an empty body (keyhold's answers always carry JSON). Returns
/// the same status with a JSON `detail` instead.
fn json_for_bare_error(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap checks first: this looks at every HTTP/1 write.
    if head.len() > 1024 || !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let code: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    if !text.ends_with("\r\n\r\n")
        || !text
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let detail = match code {
        400 => "the request could not be read as HTTP/1.1: check its request line and headers",
        414 => "the request target is too long: send a shorter path and query",
        431 => "the request headers are larger than 64 KiB: send fewer or shorter headers",
        _ => return None,
    };
    Some(json_answer(code, detail))
}

/// A connection whose first bytes were already read (to tell HTTP/1 from
/// HTTP/2 under a deadline): reads return them first. On HTTP/1, hyper's
/// bare parse-error answers are rewritten with a JSON `detail`.
pub(super) struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    io: I,
    rewrite_errors: bool,
    /// A rewritten answer still being written.
    pending: Vec<u8>,
    written: usize,
    /// When bytes were last written to the client (ms since `opened`): a
    /// client that reads is active even while one long answer streams.
    progress: Option<(Instant, Arc<AtomicU64>)>,
}

impl<I> Prefixed<I> {
    pub(super) fn new(prefix: Vec<u8>, io: I, rewrite_errors: bool) -> Prefixed<I> {
        Prefixed {
            prefix,
            read: 0,
            io,
            rewrite_errors,
            pending: Vec::new(),
            written: 0,
            progress: None,
        }
    }

    /// Notes write progress in `clock` (ms since `opened`).
    pub(super) fn with_progress(mut self, opened: Instant, clock: Arc<AtomicU64>) -> Prefixed<I> {
        self.progress = Some((opened, clock));
        self
    }

    fn note(&self, written: &Poll<std::io::Result<usize>>) {
        if let (Poll::Ready(Ok(n)), Some((opened, clock))) = (written, &self.progress) {
            // HTTP/2's own small frames (a PING's answer, a window update,
            // a settings ack) are not an answer making progress: an idle
            // connection that answers PINGs is still idle.
            if *n >= PROGRESS_BYTES {
                clock.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> Prefixed<I> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let n = (this.prefix.len() - this.read).min(buf.remaining());
            buf.put_slice(&this.prefix[this.read..this.read + n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.rewrite_errors {
            if let Some(answer) = json_for_bare_error(buf) {
                this.pending = answer;
                // Taken whole; poll_flush and poll_shutdown finish it.
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.rewrite_errors {
            // A bare answer is a head alone, in one slice.
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let answer = bufs
                .iter()
                .find(|b| !b.is_empty())
                .filter(|b| b.len() == total)
                .and_then(|b| json_for_bare_error(b));
            if let Some(answer) = answer {
                this.pending = answer;
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(total));
            }
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_parse_errors_get_a_json_detail_and_nothing_else_does() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(json_for_bare_error(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("\"detail\""), "{out}");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n";
        assert!(json_for_bare_error(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(json_for_bare_error(ok).is_none());
    }
}
