//! One router for the API, the console and the operations routes, and the layers every answer
//! goes through: a trace id for every request (in the logs and in error bodies), the request log
//! and metrics by matched route (never the raw path: paths carry customer ids), panics turned
//! into the JSON 500.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::{self, ApiError, TRACE_ID};
use super::{BODY_LIMIT, HttpState, api, console, ops};

/// The whole API: `/v1` and the operations routes.
pub fn router(state: HttpState) -> Router {
    let v1 = api::v1().route_layer(middleware::from_fn_with_state(
        state.clone(),
        api::auth::authenticate,
    ));
    let console = console::routes(state.clone());
    finish(
        ops::routes().merge(api::public()).merge(console).merge(v1),
        state,
    )
}

/// Only `/healthz`, `/readyz` and `/metrics`, for a process that runs the worker alone.
pub fn ops_router(state: HttpState) -> Router {
    finish(ops::routes(), state)
}

fn finish(routes: Router<HttpState>, state: HttpState) -> Router {
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(observe))
        .with_state(state)
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
