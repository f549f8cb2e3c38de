//! The error envelope: every error the API answers, JSON with a status, a key and the id of
//! the HTTP request in the logs. Never HTML, never a stack trace or a database message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

tokio::task_local! {
    /// The id of the HTTP request being served, set by the outermost middleware.
    pub static TRACE_ID: String;
}

/// The current HTTP request's trace id ("" outside a request).
pub fn trace_id() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub key: &'static str,
    pub message: String,
    pub details: String,
    /// Extra headers (`Allow`, `Retry-After`, ...).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// For an internal failure, what went wrong: logged by the request layer under the trace
    /// id (see [`Cause`]), never shown to the caller.
    pub cause: Option<String>,
}

/// The cause of an internal failure, carried on the response from the handler to the request
/// layer, which logs it once, with the request's trace id and route.
#[derive(Clone, Debug)]
pub struct Cause(pub String);

#[derive(Serialize)]
struct Envelope<'a> {
    code: u16,
    key: &'a str,
    message: &'a str,
    details: &'a str,
    trace_id: String,
}

impl ApiError {
    fn new(status: StatusCode, key: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            key,
            message: message.into(),
            details: String::new(),
            headers: Vec::new(),
            cause: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"erasure\""),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// An invalid request whose answer has a more precise status (405, 413, 415).
    pub fn invalid_with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "invalid_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The service cannot answer now, and says when to ask again.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    /// An internal failure. `cause` goes to the log under the trace id, never to the caller.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server could not complete the request",
            )
            .with_details("quote the trace_id when reporting this")
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// A whole HTTP/1.1 answer carrying the envelope of an `invalid_request`, for a request hyper
/// refused before it reached the router (see [`super::connection`]); the connection closes after
/// it.
pub fn bare_response(status: u16, message: &str, trace_id: &str) -> Vec<u8> {
    whole_answer(status, "invalid_request", message, trace_id, "")
}

/// The answer to a connection over the server's cap: 503, try again in a second.
pub fn busy_response(trace_id: &str) -> Vec<u8> {
    whole_answer(
        503,
        "rate_limited",
        "the server has too many open connections; try again shortly",
        trace_id,
        "retry-after: 1\r\n",
    )
}

fn whole_answer(
    status: u16,
    key: &str,
    message: &str,
    trace_id: &str,
    extra_headers: &str,
) -> Vec<u8> {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = serde_json::to_string(&Envelope {
        code: status,
        key,
        message,
        details: "",
        trace_id: trace_id.to_owned(),
    })
    .expect("an envelope serializes");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-trace-id: {trace_id}\r\n{extra_headers}connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(&crate::db::SafeError(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            code: self.status.as_u16(),
            key: self.key,
            message: &self.message,
            details: &self.details,
            trace_id: trace_id(),
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(Cause(cause));
        }
        response
    }
}
