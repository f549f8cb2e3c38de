//! The HTTP API (contract section 6): submission and status for upstream services and
//! compliance staff, plus health, readiness and metrics for operators.
//!
//! Layers, outermost first: a trace id for every request (in the logs and in error bodies),
//! the request log and metrics by matched route (never the raw path: paths carry customer ids),
//! panics turned into the JSON 500, then, on `/v1` only, authentication and rate limiting.

mod auth;
pub mod connection;
pub mod error;
mod extract;
mod ops;
pub mod rate_limit;
mod routes;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Publisher;
use crate::config::Settings;
use crate::erase::Eraser;
use crate::identity::Identity;
use crate::intake::Intake;
use crate::proof::signing::Signer;
use error::{ApiError, TRACE_ID};
use rate_limit::RateLimiter;

/// Largest request body accepted (a request message's limit).
const BODY_LIMIT: usize = 64 * 1024;

/// What every handler may use.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub intake: Intake,
    /// For previews: the erasure, run and rolled back.
    pub eraser: Eraser,
    pub publisher: Arc<Publisher>,
    pub identity: Identity,
    pub count_keys: Arc<[String]>,
    pub limiter: Arc<RateLimiter>,
    pub metrics: PrometheusHandle,
    /// Signs receipts.
    pub signer: Signer,
    pub console: crate::config::ConsoleSettings,
    /// In a process that consumes: whether the consumer is connected (readiness needs it).
    pub consumer: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The whole API: `/v1` and the operations routes.
pub fn router(state: ApiState) -> Router {
    let v1 = routes::v1().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    let console = crate::console::routes(state.clone());
    finish(
        ops::routes()
            .merge(routes::public())
            .merge(console)
            .merge(v1),
        state,
    )
}

/// Only `/healthz`, `/readyz` and `/metrics`, for a process that runs the worker alone.
pub fn ops_router(state: ApiState) -> Router {
    finish(ops::routes(), state)
}

fn finish(routes: Router<ApiState>, state: ApiState) -> Router {
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

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

/// The method as a metric label or log field: one of the standard methods, or "other". Any
/// token is a valid method, and a label per made-up method would grow without bound.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Gives the request a trace id, logs it by matched route and records its metrics.
async fn observe(request: Request, next: Next) -> Response {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!("http", trace_id = %trace_id, method = %method, route = %route);
    let started = Instant::now();
    let mut response = TRACE_ID
        .scope(trace_id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let took = started.elapsed();
    let status = response.status();
    span.in_scope(|| {
        if let Some(error::Cause(cause)) = response.extensions().get::<error::Cause>() {
            tracing::error!(error = %cause, "request failed");
        }
        tracing::info!(
            status = status.as_u16(),
            ms = took.as_secs_f64() * 1000.0,
            "HTTP request"
        )
    });
    crate::metrics::http_request(method, &route, status.as_u16(), took);
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

async fn wrong_method(method: Method) -> ApiError {
    ApiError::invalid_with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this route does not take {}", method_label(&method)),
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal(&"a handler panicked").into_response()
}

/// Builds the state from the parts the application made.
pub fn state(
    pool: PgPool,
    intake: Intake,
    eraser: Eraser,
    signer: Signer,
    rate_limit_per_minute: u32,
    console: crate::config::ConsoleSettings,
) -> ApiState {
    ApiState {
        publisher: intake.publisher(),
        pool,
        intake,
        identity: eraser.identity().clone(),
        count_keys: eraser.count_keys().into(),
        eraser,
        limiter: Arc::new(RateLimiter::new(rate_limit_per_minute)),
        metrics: crate::metrics::handle(),
        signer,
        console,
        consumer: None,
    }
}

/// A handler's answer: a value or the error envelope.
pub type ApiResult<T> = Result<T, ApiError>;
