//! The `/v1` routes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::{ApiResult, ApiState};
use crate::deletion::{self, COLUMNS, DeletionRow};
use crate::erase::Channel;
use crate::intake::{SubmitError, Submitted};
use crate::keys::Caller;
use crate::request;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

pub fn v1() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/customers/{customer_id}/permanent-deletion",
            get(latest_for_customer).post(submit),
        )
        .route("/v1/permanent-deletions", get(list))
        .route("/v1/permanent-deletions/{id}", get(one))
}

fn path_value(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    path.map(|Path(value)| value)
        .map_err(|_| ApiError::invalid("the path is not valid UTF-8 after decoding"))
}

fn object(state: &ApiState, row: &DeletionRow) -> Value {
    serde_json::to_value(row.to_object(&state.count_keys)).expect("a deletion object serializes")
}

/// `POST /v1/customers/{customer_id}/permanent-deletion`
async fn submit(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let customer_id = path_value(path)?;
    let body = body.map_err(body_error)?;
    let request_id = match headers.get("idempotency-key") {
        None => Uuid::new_v4(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| Uuid::parse_str(v.trim()).ok())
            .ok_or_else(|| ApiError::invalid("the Idempotency-Key header must be a UUID"))?,
    };
    let mut fields = body_fields(&headers, &body)?;
    fields
        .entry("requested_by")
        .or_insert_with(|| Value::String(caller.name.clone()));
    fields.insert("request_id".into(), json!(request_id));
    fields.insert("customer_id".into(), Value::String(customer_id));
    // The same rules as a queued message, so both routes accept exactly the same requests.
    let message = serde_json::to_vec(&fields).expect("a JSON object serializes");
    let received_at = Utc::now();
    let request = request::parse(&message, received_at)
        .map_err(|invalid| ApiError::invalid(invalid.message))?;
    let (status, row) = match state
        .intake
        .submit(&request, Channel::Http, received_at)
        .await
    {
        Ok(Submitted::Accepted(row)) => (StatusCode::ACCEPTED, row),
        Ok(Submitted::Existing(row)) => (StatusCode::OK, row),
        Err(SubmitError::ReusedForAnotherCustomer) => {
            return Err(ApiError::conflict(
                "this Idempotency-Key was already used for another customer",
            )
            .with_details("use a new key for a new request"));
        }
        Err(SubmitError::Database(e)) => return Err(e.into()),
    };
    let location = format!("/v1/permanent-deletions/{}", row.id);
    let mut response = (status, Json(object(&state, &row))).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
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
            super::BODY_LIMIT
        ),
    )
}

/// The optional body: `requested_by`, `reason` and `requested_at`; anything else is ignored.
fn body_fields(headers: &HeaderMap, body: &[u8]) -> ApiResult<Map<String, Value>> {
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
    let mut fields = Map::new();
    for key in ["requested_by", "reason", "requested_at"] {
        if let Some(value) = map.get(key).filter(|v| !v.is_null()) {
            fields.insert(key.into(), value.clone());
        }
    }
    Ok(fields)
}

/// `GET /v1/customers/{customer_id}/permanent-deletion`: by `id` or `source_id`, also after
/// the customer is gone (through the keyed hashes the deletions keep).
async fn latest_for_customer(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let customer_id = path_value(path)?;
    request::check_identifier("customer_id", &customer_id).map_err(ApiError::invalid)?;
    let hash = state.hash.digest(&customer_id);
    let row: Option<DeletionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM erasure.deletions \
         WHERE related_object_id = $1 OR source_id_hash = $2 OR requested_id_hash = $2 \
         ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    .bind(&customer_id)
    .bind(&hash)
    .fetch_optional(&state.pool)
    .await?;
    row.map(|row| Json(object(&state, &row)))
        .ok_or_else(|| ApiError::not_found("no deletion names this customer"))
}

/// `GET /v1/permanent-deletions/{id}`: by `del_` id or request id.
async fn one(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = path_value(path)?;
    request::check_identifier("id", &id).map_err(ApiError::invalid)?;
    deletion::find(&state.pool, &id)
        .await?
        .map(|row| Json(object(&state, &row)))
        .ok_or_else(|| ApiError::not_found("no deletion has this id or request id"))
}

/// `GET /v1/permanent-deletions`: newest first, filtered, cursor-paginated.
async fn list(
    State(state): State<ApiState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = query.map_err(|_| ApiError::invalid("the query string is malformed"))?;
    let filter = ListFilter::parse(&params)?;
    let cursor = match &filter.starting_after {
        None => None,
        Some(id) => Some(
            deletion::find(&state.pool, id)
                .await?
                .ok_or_else(|| ApiError::invalid("starting_after names no deletion"))?,
        ),
    };
    let mut rows: Vec<DeletionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM erasure.deletions \
         WHERE ($1::text IS NULL OR status = $1) \
           AND (NOT $2 OR (status IN ('PENDING', 'IN_PROGRESS') AND due_at < now())) \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(&filter.status)
    .bind(filter.overdue)
    .bind(cursor.as_ref().map(|row| row.created_at))
    .bind(cursor.as_ref().map(|row| row.id.as_str()))
    .bind(filter.limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let has_more = rows.len() as i64 > filter.limit;
    rows.truncate(filter.limit as usize);
    let data: Vec<Value> = rows.iter().map(|row| object(&state, row)).collect();
    Ok(Json(
        json!({ "object": "list", "data": data, "has_more": has_more }),
    ))
}

#[derive(Debug, PartialEq)]
struct ListFilter {
    status: Option<String>,
    overdue: bool,
    limit: i64,
    starting_after: Option<String>,
}

impl ListFilter {
    fn parse(params: &HashMap<String, String>) -> ApiResult<Self> {
        if let Some(unknown) = params
            .keys()
            .find(|k| !["status", "overdue", "limit", "starting_after"].contains(&k.as_str()))
        {
            return Err(
                ApiError::invalid(format!("unknown query parameter {unknown:?}"))
                    .with_details("the parameters are status, overdue, limit and starting_after"),
            );
        }
        let status = match params.get("status").map(String::as_str) {
            None | Some("") => None,
            Some(s @ ("PENDING" | "IN_PROGRESS" | "DONE" | "FAILED")) => Some(s.to_owned()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "status must be PENDING, IN_PROGRESS, DONE or FAILED",
                ));
            }
        };
        let overdue = match params.get("overdue").map(String::as_str) {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::invalid("overdue must be true or false")),
        };
        let limit = match params.get("limit").map(String::as_str) {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::invalid("limit must be a whole number from 1 to 100"))?,
        };
        let starting_after = params
            .get("starting_after")
            .filter(|s| !s.is_empty())
            .cloned();
        if let Some(cursor) = &starting_after {
            request::check_identifier("starting_after", cursor).map_err(ApiError::invalid)?;
        }
        Ok(Self {
            status,
            overdue,
            limit,
            starting_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn list_parameters_have_defaults_and_bounds() {
        let filter = ListFilter::parse(&params(&[])).unwrap();
        assert_eq!(filter.limit, 20);
        assert!(!filter.overdue);
        let filter = ListFilter::parse(&params(&[
            ("status", "DONE"),
            ("overdue", "true"),
            ("limit", "100"),
        ]))
        .unwrap();
        assert_eq!(filter.status.as_deref(), Some("DONE"));
        assert!(filter.overdue);
        assert_eq!(filter.limit, 100);
        for bad in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
            ("status", "done"),
            ("overdue", "yes"),
            ("colour", "blue"),
            ("starting_after", "abc\0def"),
        ] {
            let err = ListFilter::parse(&params(&[bad])).unwrap_err();
            assert_eq!(err.key, "invalid_request", "{bad:?}");
        }
    }
}
