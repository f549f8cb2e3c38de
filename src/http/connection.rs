//! One HTTP connection's socket, as hyper sees it: it closes connections that stall, and it turns
//! the bare answers hyper gives to requests it cannot parse into the JSON error envelope.
//!
//! Why here and not in hyper's settings: hyper's own header timeout starts when it begins to wait
//! for a request, so it would also be the keep-alive idle timeout, and a load balancer wants a
//! long keep-alive (longer than its own idle timeout) but a short allowance for a request's
//! headers. The socket sees every byte, so it keeps three clocks apart:
//! - **idle**: nothing in progress (a new connection, or one between requests): closed after
//!   `idle_timeout` without a byte;
//! - **head**: a request's first byte has arrived: its headers must all arrive within
//!   `header_timeout`;
//! - **request**: the headers are in: the body must arrive and the answer be written within
//!   `request_timeout`.
//!
//! hyper answers a request it cannot parse (400), a URI it will not hold (414) and headers over
//! its buffer (431) itself, with no body, and offers no hook to change that; those are the only
//! answers it writes with `content-length: 0` and a 4xx status (every answer of ours has a JSON
//! body), so the socket recognises them as they are written and writes the envelope instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long connections may stall, per phase.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub idle: Duration,
    pub header: Duration,
    pub request: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between requests (or before the first).
    Idle,
    /// Reading a request's line and headers.
    Head,
    /// Reading its body, handling it, writing the answer.
    Request,
}

/// A connection's socket with its clocks. On shutdown it ends connections that are idle or
/// still sending headers at once (nothing was asked of us yet); a request in progress finishes.
pub struct Connection {
    stream: TcpStream,
    timeouts: Timeouts,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    /// Line feeds seen in a row while reading a head (carriage returns ignored): two end it.
    newlines: u8,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutting_down: bool,
    /// The envelope being written in place of a bare parse-error answer of hyper's: the bytes,
    /// how many are written, and how many of hyper's bytes they stand for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl Connection {
    pub fn new(stream: TcpStream, timeouts: Timeouts, shutdown: CancellationToken) -> Self {
        Self {
            stream,
            timeouts,
            phase: Phase::Idle,
            deadline: Box::pin(tokio::time::sleep(timeouts.idle)),
            newlines: 0,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            shutting_down: false,
            replacing: None,
        }
    }

    fn enter(&mut self, phase: Phase) {
        let after = match phase {
            Phase::Idle => self.timeouts.idle,
            Phase::Head => self.timeouts.header,
            Phase::Request => self.timeouts.request,
        };
        self.phase = phase;
        self.newlines = 0;
        self.deadline.as_mut().reset(Instant::now() + after);
    }

    /// Follows the request through bytes just read.
    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.enter(Phase::Head);
        }
        if self.phase != Phase::Head {
            return;
        }
        for &byte in bytes {
            match byte {
                b'\n' => {
                    self.newlines += 1;
                    if self.newlines == 2 {
                        // The rest of this read, if any, is body.
                        self.enter(Phase::Request);
                        return;
                    }
                }
                b'\r' => {}
                _ => self.newlines = 0,
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.shutting_down && this.shutdown.as_mut().poll(cx).is_ready() {
            this.shutting_down = true;
        }
        if this.shutting_down && this.phase != Phase::Request {
            // Nothing was asked of us yet: the connection ends here, as if the client left.
            return Poll::Ready(Ok(()));
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.read(&buf.filled()[filled..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let phase = this.phase;
                    tracing::debug!(?phase, "closing a stalled HTTP connection");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the connection stalled ({phase:?})"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none()
            && let Some(envelope) = envelope_for_bare_error(buf)
        {
            this.replacing = Some((envelope, 0, buf.len()));
        }
        if let Some((envelope, written, stands_for)) = &mut this.replacing {
            while *written < envelope.len() {
                let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &envelope[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let stands_for = *stands_for;
            this.replacing = None;
            this.enter(Phase::Idle);
            return Poll::Ready(Ok(stands_for));
        }
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        // An answer is going out: what is read next is the next request.
        this.enter(Phase::Idle);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The envelope for a bare answer hyper writes to a request it could not parse, or `None` for
/// any other bytes.
fn envelope_for_bare_error(written: &[u8]) -> Option<Vec<u8>> {
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    if head_end + 4 != written.len() {
        return None;
    }
    let head = std::str::from_utf8(&written[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let message = match status {
        400 => "the request could not be parsed as HTTP/1.1",
        414 => "the request's URI is too long",
        431 => "the request's headers are too large",
        _ => return None,
    };
    if !lines.any(|line| line.eq_ignore_ascii_case("content-length: 0")) {
        return None;
    }
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    tracing::info!(trace_id = %trace_id, status, "HTTP request refused before routing");
    Some(super::error::bare_response(status, message, &trace_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_parse_error_answers_are_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 10:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(envelope_for_bare_error(bare).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 "), "{replaced}");
        assert!(replaced.contains("content-type: application/json"));
        assert!(
            replaced.contains("\"key\":\"invalid_request\""),
            "{replaced}"
        );
        assert!(replaced.contains("\"code\":431"), "{replaced}");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 98\r\n\r\n";
        assert!(envelope_for_bare_error(ours).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}";
        assert!(envelope_for_bare_error(with_body).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(envelope_for_bare_error(ok).is_none());
    }
}
