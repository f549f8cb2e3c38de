//! `Authorization: Bearer <key>` on every `/v1` route, then the key's rate limit. Failed key
//! attempts are limited per client address: past `http.failed_keys_per_minute`, a client is
//! refused before its key is even looked up (each lookup is a database query).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::HttpState;
use crate::http::error::ApiError;
use crate::http::rate_limit::Decision;
use crate::keys::{self, Caller};

pub async fn authenticate(
    State(state): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    let failures = failures_bucket(&request);
    let limit = state.failed_keys_per_minute;
    if state.limiter.exhausted(&failures, limit).await {
        return too_many_failures(&state, limit).await;
    }
    let caller = match caller(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => {
            state.limiter.check_limit(&failures, limit).await;
            return e.into_response();
        }
    };
    let decision = state.limiter.check(&caller.key_id).await;
    if !decision.allowed {
        let mut response = ApiError::rate_limited(format!(
            "this key may make {} requests a minute",
            decision.limit
        ))
        .with_details(format!("try again in {} s", decision.reset_after))
        .with_header(header::RETRY_AFTER, HeaderValue::from(decision.reset_after))
        .into_response();
        add_headers(response.headers_mut(), decision);
        return response;
    }
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let mut response = if writes && caller.read_only {
        ApiError::forbidden("this key is read-only").into_response()
    } else {
        tracing::debug!(key_id = %caller.key_id, "authenticated");
        request.extensions_mut().insert(caller);
        next.run(request).await
    };
    add_headers(response.headers_mut(), decision);
    response
}

/// The bucket of a request's client address for failed key attempts: the peer's address
/// (behind a proxy, the proxy's, so that a client cannot pick its own bucket by a header).
pub fn failures_bucket(request: &Request) -> String {
    let client = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or("unknown".to_string(), |ConnectInfo(addr)| {
            addr.ip().to_string()
        });
    format!("failed-keys:{client}")
}

async fn too_many_failures(state: &HttpState, limit: u32) -> Response {
    let reset_after = state.limiter.reset_after().await;
    ApiError::rate_limited(format!(
        "this address may present {limit} unknown or revoked keys a minute"
    ))
    .with_details(format!("try again in {reset_after} s"))
    .with_header(header::RETRY_AFTER, HeaderValue::from(reset_after))
    .into_response()
}

async fn caller(state: &HttpState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "an Authorization: Bearer <key> header is required",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must read Bearer <key>"))?;
    keys::verify(&state.pool, presented)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key is unknown or revoked"))
}

fn add_headers(headers: &mut HeaderMap, decision: Decision) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(decision.reset_after));
}
