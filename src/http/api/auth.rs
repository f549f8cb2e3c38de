//! `Authorization: Bearer <key>` on every `/v1` route, then the key's rate limit.

use axum::extract::{Request, State};
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
    let caller = match caller(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let decision = state.limiter.check(&caller.key_id);
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
