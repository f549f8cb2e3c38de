//! The HTTP server: accepts connections up to a cap, serves each with hyper (HTTP/1.1) through a
//! [`Connection`] that closes those that stall, and on shutdown lets the requests in progress
//! finish within the grace period, then closes whatever is left.
//!
//! The cap is also what keeps the process inside its open-files limit: it is lowered to fit that
//! limit, with room left for the database pool and the broker connections, so that a flood of
//! connections is refused at the door instead of starving the rest of the process of handles.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::connection::{Connection, Timeouts};

/// What the server allows its connections.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Connections served at once (lowered to fit the open-files limit); more are refused.
    pub max_connections: usize,
    pub timeouts: Timeouts,
    /// After shutdown is asked for, how long requests in progress may take.
    pub shutdown_grace: Duration,
}

/// File handles kept for everything but HTTP connections: the standard streams, the listener,
/// the runtime's own, the broker connections, TLS roots, a few files. The database pool's
/// connections come on top.
const HANDLES_KEPT: u64 = 64;

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    reserved_handles: u64,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let cap = connection_cap(limits.max_connections, open_files_limit(), reserved_handles);
    tracing::info!(addr = %listener.local_addr()?, max_connections = cap, "HTTP listening");
    let slots = Arc::new(Semaphore::new(cap));
    let mut connections = JoinSet::new();
    let mut warned_at: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let router = router.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        router,
                        limits.timeouts,
                        shutdown,
                        slot,
                    ));
                }
                Err(_) => refuse(stream),
            },
            // The client gave up before we took its connection: nothing to do.
            Err(e) if is_client_gone(&e) => {}
            Err(e) => {
                // Out of file handles (or memory): the pending connection stays in the
                // listen queue; wait for handles to free up instead of spinning on it.
                if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "cannot accept HTTP connections for now");
                    warned_at = Some(Instant::now());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "HTTP requests still in progress at the end of the grace period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Connection::new(stream, timeouts, shutdown.clone()));
    // Handlers that limit by client (the console's sign-in) read the peer's address.
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let connection = http1::Builder::new()
        // The connection keeps its own clocks (see `Connection`).
        .header_read_timeout(None)
        // Each answer's head is written in one piece, so a bare parse-error answer of hyper's
        // is recognised whole.
        .writev(false)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = shutdown.cancelled() => {
            // The request in progress, if any, finishes; then the connection closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers a connection over the cap with a 503 (best effort, never waiting) and closes it.
fn refuse(stream: TcpStream) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let answer = super::error::busy_response(&trace_id);
    let _ = stream.try_write(&answer);
    tracing::warn!(trace_id = %trace_id, "HTTP connection refused: too many open connections");
}

fn is_client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The configured cap, lowered so that the connections, the `reserved` handles of the database
/// pool and [`HANDLES_KEPT`] fit in `limit` (the open-files limit, when known).
pub fn connection_cap(configured: usize, limit: Option<u64>, reserved: u64) -> usize {
    let configured = configured.max(1);
    match limit {
        None => configured,
        Some(limit) => {
            let room = limit.saturating_sub(reserved + HANDLES_KEPT).max(1);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
    }
}

/// This process's soft limit on open files (Linux; `None` elsewhere or when unlimited).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_pool_and_the_process() {
        assert_eq!(connection_cap(1024, None, 16), 1024);
        assert_eq!(connection_cap(1024, Some(1_048_576), 16), 1024);
        assert_eq!(
            connection_cap(1024, Some(1024), 16),
            1024 - 16 - HANDLES_KEPT as usize
        );
        assert_eq!(connection_cap(1024, Some(50), 16), 1);
        assert_eq!(connection_cap(0, None, 16), 1);
    }

    #[test]
    fn the_open_files_limit_is_read() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
