//! What handlers take from a request, checked at the edge: each extractor turns bad input into
//! an [`ApiError`] before a handler runs, so handlers only see valid values.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::request;

/// The one identifier in a route's path (a customer id, a deletion id): decoded, 1 to 255
/// characters, no NUL.
#[derive(Clone, Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("the path is not valid UTF-8 after decoding"))?;
        let (name, value) = params
            .iter()
            .next()
            .ok_or_else(|| ApiError::internal(&"a route without an identifier took one"))?;
        request::check_identifier(name, value).map_err(ApiError::invalid)?;
        Ok(Self(value.to_owned()))
    }
}

/// The `Idempotency-Key` header: the request id, or a new one when absent.
#[derive(Clone, Copy, Debug)]
pub struct IdempotencyKey(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get("idempotency-key") {
            None => Ok(Self(Uuid::new_v4())),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| Uuid::parse_str(v.trim()).ok())
                .map(Self)
                .ok_or_else(|| ApiError::invalid("the Idempotency-Key header must be a UUID")),
        }
    }
}

/// The query string, as names and values.
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("the query string is malformed"))?;
        Ok(Self(params))
    }
}

/// The fields of an optional JSON object body, null fields left out. Empty: no body.
pub struct JsonFields(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonFields {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(body_error)?;
        json_fields(&headers, &body).map(Self)
    }
}

fn json_fields(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::invalid_with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request body must be JSON (Content-Type: application/json)",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // The position, never the text: the body may name a person.
        ApiError::invalid("the body is not valid JSON").with_details(format!(
            "line {}, column {}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    Ok(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
}

/// Why a request body could not be read: it stalled past `http.request_timeout_ms` (408, the
/// connection closes after the answer), was too large (413), or broke off (400).
fn body_error(rejection: BytesRejection) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return ApiError::invalid_with_status(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
        }
        source = e.source();
    }
    ApiError::invalid_with_status(
        rejection.status(),
        format!(
            "the body could not be read; at most {} bytes are accepted",
            crate::http::BODY_LIMIT
        ),
    )
}
