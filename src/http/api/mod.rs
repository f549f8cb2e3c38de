//! The `/v1` routes.

pub mod auth;
mod extract;

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::deletion::deadlines::{self, Extended};
use crate::deletion::ledger;
use crate::deletion::lifecycle::{self, Canceled};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde_json::{Value, json};

use crate::deletion::store::{self, ListQuery};
use crate::deletion::{DeletionRow, DeletionStatus};
use crate::erase::preview::PreviewError;
use crate::http::error::ApiError;
use crate::http::{ApiResult, HttpState, Refused};
use crate::identity::IdentifierType;
use crate::intake::{Submission, Submitted};
use crate::keys::Caller;
use crate::request::{self, Channel};
use extract::{IdempotencyKey, JsonFields, PathId, QueryParams};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

pub fn v1() -> Router<HttpState> {
    Router::new()
        .route(
            "/v1/customers/{customer_id}/permanent-deletion",
            get(latest_for_customer).post(submit),
        )
        .route(
            "/v1/customers/{customer_id}/permanent-deletion/preview",
            get(preview),
        )
        .route("/v1/permanent-deletions", get(list))
        .route("/v1/permanent-deletions/{id}", get(one).delete(cancel))
        .route("/v1/suppressions/{identifier}", get(suppression))
        .route("/v1/permanent-deletions/{id}/receipt", get(receipt))
        .route(
            "/v1/permanent-deletions/{id}/extension",
            axum::routing::post(extension),
        )
}

/// The routes anyone may call: the public keys that check receipts.
pub fn public() -> Router<HttpState> {
    Router::new().route("/v1/receipt-keys", get(receipt_keys))
}

fn object(state: &HttpState, row: &DeletionRow) -> Value {
    serde_json::to_value(state.deletion(row)).expect("a deletion object serializes")
}

/// `POST /v1/customers/{customer_id}/permanent-deletion`
async fn submit(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    PathId(customer_id): PathId,
    IdempotencyKey(request_id): IdempotencyKey,
    JsonFields(body): JsonFields,
) -> ApiResult<Response> {
    // The optional body: requested_by, reason, requested_at and identifier_type; anything else
    // is ignored.
    let mut fields: serde_json::Map<String, Value> =
        ["requested_by", "reason", "requested_at", "identifier_type"]
            .into_iter()
            .filter_map(|key| body.get(key).map(|v| (key.to_owned(), v.clone())))
            .collect();
    fields
        .entry("requested_by")
        .or_insert_with(|| Value::String(caller.name.clone()));
    fields.insert("request_id".into(), json!(request_id));
    fields.insert("customer_id".into(), Value::String(customer_id));
    let key = caller.key_ref();
    let submission = Submission {
        key: Some(&key),
        retry: None,
    };
    let (status, row) = match state.submit(fields, Utc::now(), submission).await {
        Ok(Submitted::Accepted(row)) => (StatusCode::ACCEPTED, row),
        Ok(Submitted::Existing(row)) => (StatusCode::OK, row),
        Err(Refused::ReusedForAnotherCustomer) => {
            return Err(ApiError::conflict(
                "this Idempotency-Key was already used for another customer",
            )
            .with_details("use a new key for a new request"));
        }
        Err(Refused::Invalid(message)) => return Err(ApiError::invalid(message)),
        Err(Refused::RetriedAlready) => return Err(ApiError::internal(&"a submission retried")),
        Err(Refused::Database(e)) => return Err(e.into()),
    };
    let location = format!("/v1/permanent-deletions/{}", row.id);
    let mut response = (status, Json(object(&state, &row))).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/customers/{customer_id}/permanent-deletion`: by `id` or `source_id`, also after
/// the customer is gone (through the keyed hashes the deletions keep).
async fn latest_for_customer(
    State(state): State<HttpState>,
    PathId(customer_id): PathId,
) -> ApiResult<Json<Value>> {
    let naming = state.identity.naming(&customer_id, IdentifierType::Any);
    store::latest_for_customer(&state.pool, &naming)
        .await?
        .map(|row| Json(object(&state, &row)))
        .ok_or_else(|| ApiError::not_found("no deletion names this customer"))
}

/// `GET /v1/customers/{customer_id}/permanent-deletion/preview`: what an erasure would record
/// (counted, reading only), and the guard that would refuse it.
async fn preview(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    PathId(customer_id): PathId,
) -> ApiResult<Json<Value>> {
    match state
        .eraser
        .preview_by(
            &customer_id,
            &caller.name,
            Some(&caller.key_ref()),
            Channel::Http,
        )
        .await
    {
        Ok(preview) => Ok(Json(preview.to_json())),
        Err(e @ PreviewError::NotFound) => Err(ApiError::not_found(e.to_string())),
        Err(e @ (PreviewError::Busy | PreviewError::Ambiguous)) => {
            Err(ApiError::conflict(e.to_string()))
        }
        Err(e @ PreviewError::TimedOut) => Err(ApiError::unavailable(e.to_string(), 30)),
        Err(PreviewError::Database(e)) => Err(e.into()),
    }
}

/// `GET /v1/permanent-deletions/{id}`: by `del_` id or request id.
async fn one(State(state): State<HttpState>, PathId(id): PathId) -> ApiResult<Json<Value>> {
    store::find(&state.pool, &id)
        .await?
        .map(|row| Json(object(&state, &row)))
        .ok_or_else(|| ApiError::not_found("no deletion has this id or request id"))
}

/// `DELETE /v1/permanent-deletions/{id}`: cancels a PENDING deletion (200 with it CANCELED,
/// also when it already was); 409 once it is IN_PROGRESS or has ended.
async fn cancel(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    match lifecycle::cancel(&state.pool, &id, &caller.name, &caller.key_ref(), None).await? {
        // Its event goes out with the outbox's next sweep.
        Canceled::Canceled(row) => Ok(Json(object(&state, &row))),
        Canceled::TooLate(row) => Err(ApiError::conflict(format!(
            "the deletion is {}: only a PENDING deletion can be canceled",
            row.status
        ))
        .with_details("a deletion being carried out or ended stays as it is")),
        Canceled::NotFound => Err(ApiError::not_found("no deletion has this id or request id")),
    }
}

/// `POST /v1/permanent-deletions/{id}/extension`: extends the deadline of a request still owed
/// (GDPR Art. 12(3)), within its first month, to `extended_due_at` (after `due_at`, at most
/// three months after `requested_at`), for `reason` (what the person is told). 200 with the
/// deletion; 400 for a date out of bounds or no reason; 409 once the request is no longer owed
/// or its first month has passed.
async fn extension(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    JsonFields(body): JsonFields,
) -> ApiResult<Json<Value>> {
    let to = body
        .get("extended_due_at")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| ApiError::invalid("extended_due_at: is required, an RFC 3339 time"))?
        .with_timezone(&Utc);
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.chars().count() <= 1000)
        .ok_or_else(|| {
            ApiError::invalid("reason: is required, 1 to 1000 characters (what the person is told)")
        })?;
    let key = caller.key_ref();
    match deadlines::extend(&state.pool, &id, to, reason, &caller.name, &key).await? {
        Extended::Extended(row) => Ok(Json(object(&state, &row))),
        Extended::OutOfBounds(why) => Err(ApiError::invalid(why)),
        Extended::TooLate(why) => Err(ApiError::conflict(why).with_details(
            "an extension is recorded within the first month of a request still owed",
        )),
        Extended::NotFound => Err(ApiError::not_found("no deletion has this id or request id")),
    }
}

/// `GET /v1/suppressions/{identifier}`: whether a DONE erasure matched the identifier (the
/// customer's key, or a lookup value through its keyed hash), for upstream services to ask
/// before they create a customer.
async fn suppression(
    State(state): State<HttpState>,
    PathId(identifier): PathId,
) -> ApiResult<Json<Value>> {
    let naming = state.identity.naming(&identifier, IdentifierType::Any);
    match ledger::suppression(&state.pool, &naming).await? {
        Some((deletion_id, completed_at)) => Ok(Json(json!({
            "object": "suppression",
            "erased": true,
            "deletion_id": deletion_id,
            "completed_at": crate::deletion::millis(completed_at),
        }))),
        None => Err(ApiError::not_found(
            "no DONE erasure matched this identifier",
        )),
    }
}

/// `GET /v1/permanent-deletions/{id}/receipt`: the signed receipt of a final deletion; 409
/// while it is open.
async fn receipt(State(state): State<HttpState>, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let row = store::find(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("no deletion has this id or request id"))?;
    crate::proof::receipt::issue(&row, &state.count_keys, &state.signer, Utc::now())
        .map(Json)
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "the deletion is {}: only a final deletion (DONE or FAILED) has a receipt",
                row.status
            ))
            .with_details("ask again once the deletion has ended")
        })
}

/// `GET /v1/receipt-keys`: the public keys receipts are checked against, as a JWK set: those
/// pinned by `proof.trusted_keys`, never a key only the database holds; without a pinned set,
/// the keys the database holds.
async fn receipt_keys(State(state): State<HttpState>) -> ApiResult<Response> {
    let keys = match &state.pinned {
        Some(pinned) => pinned.clone(),
        None => crate::proof::signing::KeySet::published(&state.pool).await?,
    };
    let mut response = Json(keys.to_jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(response)
}

/// `GET /v1/permanent-deletions`: newest first, filtered, cursor-paginated.
async fn list(
    State(state): State<HttpState>,
    QueryParams(params): QueryParams,
) -> ApiResult<Json<Value>> {
    let filter = ListFilter::parse(&params)?;
    let after = match &filter.starting_after {
        None => None,
        Some(id) => Some(
            store::find(&state.pool, id)
                .await?
                .ok_or_else(|| ApiError::invalid("starting_after names no deletion"))?,
        ),
    };
    let query = ListQuery {
        status: filter.status,
        overdue: filter.overdue,
        after,
        limit: filter.limit + 1,
    };
    let mut rows = store::list(&state.pool, &query).await?;
    let has_more = rows.len() as i64 > filter.limit;
    rows.truncate(filter.limit as usize);
    let data: Vec<Value> = rows.iter().map(|row| object(&state, row)).collect();
    Ok(Json(
        json!({ "object": "list", "data": data, "has_more": has_more }),
    ))
}

#[derive(Debug, PartialEq)]
struct ListFilter {
    status: Option<DeletionStatus>,
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
            Some(word) => Some(word.parse::<DeletionStatus>().map_err(|_| {
                let words: Vec<&str> = DeletionStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid(format!("status must be one of {}", words.join(", ")))
            })?),
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
        assert_eq!(filter.status, Some(DeletionStatus::Done));
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
