//! Everything served over HTTP: the API (contract section 6) for upstream services, the console
//! for compliance staff, and health, readiness and metrics for operators. In the order a request
//! meets them:
//! - [`server`] and [`connection`]: our own HTTP/1.1 server on hyper, with a cap on connections
//!   and timeouts axum's own does not have;
//! - [`router`]: one router for all of it, and the layers every answer goes through (trace id,
//!   request log and metrics by route template, panics as the JSON 500);
//! - [`api`]: the `/v1` routes, authenticated by API key ([`api::auth`]) and rate limited
//!   ([`rate_limit`]); [`error`] is their JSON error envelope;
//! - [`console`]: the HTML pages, with sessions made from API keys;
//! - `ops`: `/healthz`, `/readyz`, `/metrics`;
//! - [`state`]: what every handler may use, and the steps the API and the console share (the
//!   deletion object, submitting a request).
//!
//! The walk of `POST /v1/customers/{customer_id}/permanent-deletion` to its 202:
//! [`server`] accepts the connection and [`connection`] reads the request within its timeouts;
//! [`router`] gives it a trace id and starts its log line; [`api::auth`] checks the key (a write
//! key) and counts it against the key's rate limit; `api::submit` gathers the body's fields,
//! the path's customer id and the `Idempotency-Key` and calls [`HttpState::submit`], which reads
//! them with the one parser of requests ([`crate::request::from_fields`]), reads the identifier
//! for this plan ([`crate::request::Received`]) and hands it to [`crate::intake::Intake::submit`]:
//! the deletion is written PENDING with its message and committed, then published under a
//! publisher confirm; the handler answers 202 with the deletion object ([`HttpState::deletion`])
//! and its `Location`.

pub mod api;
pub mod connection;
pub mod console;
pub mod error;
mod ops;
pub mod rate_limit;
pub mod router;
pub mod server;
pub mod state;

use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use error::ApiError;

/// Largest request body accepted (a request message's limit).
pub const BODY_LIMIT: usize = 64 * 1024;

pub use router::{method_label, ops_router, router};
pub use state::{HttpState, Refused, state};

/// Serves `router` on `listener` until `shutdown`, within the limits `settings` give; requests
/// in progress finish first, within the shutdown grace period.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    settings: &Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let http = &settings.http;
    let limits = server::ServerLimits {
        max_connections: http.max_connections,
        timeouts: connection::Timeouts {
            idle: Duration::from_millis(http.idle_timeout_ms),
            header: Duration::from_millis(http.header_timeout_ms),
            request: Duration::from_millis(http.request_timeout_ms),
        },
        shutdown_grace: Duration::from_millis(settings.worker.shutdown_grace_ms),
    };
    let pool = u64::from(settings.database.max_connections);
    server::serve(listener, router, limits, pool, shutdown).await
}

/// A handler's answer: a value or the error envelope.
pub type ApiResult<T> = Result<T, ApiError>;
