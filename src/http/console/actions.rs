//! What a write key does to a deletion from the console: cancel it or retry it (each after a
//! confirmation that asks why), and extend its deadline.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;

use super::session::Session;
use super::{
    ConsoleForm, Page, failed, html, internal, named_deletion, posted, read_only, signed_in, views,
};
use crate::deletion::{deadlines, store};
use crate::http::{HttpState, Refused};
use crate::identity::IdentifierType;
use crate::intake::Submitted;

/// `GET /deletions/{id}/extend`: the form that extends a deadline (write key).
pub(super) async fn extend_form(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let row = named_deletion(&state, &session, &id).await?;
    let latest = deadlines::latest_extension(row.requested_at);
    let date = latest.date_naive().to_string();
    Ok(html(views::extend_form(
        &session, &row, latest, &date, "", None,
    )))
}

/// `GET /deletions/{id}/cancel`: the confirmation, asking why (write key).
pub(super) async fn confirm_cancel(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    confirm(state, headers, id, "cancel").await
}

/// `GET /deletions/{id}/retry`: the confirmation, asking why (write key).
pub(super) async fn confirm_retry(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    confirm(state, headers, id, "retry").await
}

async fn confirm(state: HttpState, headers: HeaderMap, id: String, action: &str) -> Page {
    let session = signed_in(&state, &headers).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let row = named_deletion(&state, &session, &id).await?;
    if let Some(why) = not_now(&state, &row, action).await? {
        return Err(failed(
            StatusCode::CONFLICT,
            Some(&session),
            "Not now",
            &why,
        ));
    }
    Ok(html(views::confirm(&session, &row, action, "", None)))
}

/// Why `action` cannot be taken on `row` now, if it cannot: a cancel only while PENDING, a
/// retry only of a FAILED request not yet retried nor resolved.
async fn not_now(
    state: &HttpState,
    row: &crate::deletion::DeletionRow,
    action: &str,
) -> Result<Option<String>, Response> {
    use crate::deletion::DeletionStatus;
    if action == "cancel" {
        return Ok((row.status != DeletionStatus::Pending).then(|| {
            format!(
                "The deletion is {}: only a PENDING request can be canceled.",
                row.status
            )
        }));
    }
    if row.status != DeletionStatus::Failed {
        return Ok(Some(format!(
            "The deletion is {}: only a FAILED request can be retried.",
            row.status
        )));
    }
    let (owed, retried_by) = deadlines::standing(&state.pool, &row.id)
        .await
        .map_err(|e| internal(crate::db::SafeError(&e)))?;
    Ok(match (owed, retried_by) {
        (_, Some(by)) => Some(format!("It was retried already, as {by}.")),
        (false, None) => {
            Some("A later request erased the customer already: nothing is owed.".into())
        }
        (true, None) => None,
    })
}

#[derive(Deserialize)]
pub(super) struct Reasoned {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// For a retry of a request whose customer is not known: the identifier it named.
    #[serde(default)]
    identifier: String,
}

/// The reason of a confirmed action: 1 to 1000 characters.
fn reason_of(form: &Reasoned) -> Option<&str> {
    let reason = form.reason.trim();
    (!reason.is_empty() && reason.chars().count() <= 1000).then_some(reason)
}

/// The confirmation again, saying a reason is required.
fn needs_reason(session: &Session, row: &crate::deletion::DeletionRow, action: &str) -> Response {
    let page = views::confirm(
        session,
        row,
        action,
        "",
        Some("A reason of 1 to 1000 characters is required."),
    );
    (StatusCode::BAD_REQUEST, html(page)).into_response()
}

/// `POST /deletions/{id}/cancel`: cancels a PENDING request, with the reason and the key.
pub(super) async fn cancel(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ConsoleForm(form): ConsoleForm<Reasoned>,
) -> Page {
    use crate::deletion::lifecycle::{self, Canceled};
    let session = posted(&state, &headers, &form.csrf).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let row = named_deletion(&state, &session, &id).await?;
    let Some(reason) = reason_of(&form) else {
        return Err(needs_reason(&session, &row, "cancel"));
    };
    let key = session.caller.key_ref();
    match lifecycle::cancel(
        &state.pool,
        &row.id,
        &session.caller.name,
        &key,
        Some(reason),
    )
    .await
    {
        Ok(Canceled::Canceled(row)) => {
            Ok(Redirect::to(&format!("/deletions/{}", row.id)).into_response())
        }
        Ok(Canceled::TooLate(row)) => Err(failed(
            StatusCode::CONFLICT,
            Some(&session),
            "Not now",
            &format!(
                "The deletion is {}: only a PENDING request can be canceled.",
                row.status
            ),
        )),
        Ok(Canceled::NotFound) => Err(failed(
            StatusCode::NOT_FOUND,
            Some(&session),
            "Not found",
            "No deletion has that id.",
        )),
        Err(e) => Err(internal(crate::db::SafeError(&e))),
    }
}

/// `POST /deletions/{id}/retry`: a new request for the customer of a FAILED one, linked to it
/// (`retry_of`), asked when it was (so its deadline stays), by the same requester, submitted
/// with the session's key and the reason; then its page.
pub(super) async fn retry(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ConsoleForm(form): ConsoleForm<Reasoned>,
) -> Page {
    let session = posted(&state, &headers, &form.csrf).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let row = named_deletion(&state, &session, &id).await?;
    if let Some(why) = not_now(&state, &row, "retry").await? {
        return Err(failed(
            StatusCode::CONFLICT,
            Some(&session),
            "Not now",
            &why,
        ));
    }
    let Some(reason) = reason_of(&form) else {
        return Err(needs_reason(&session, &row, "retry"));
    };
    let again = |why: &str| {
        let page = views::confirm(&session, &row, "retry", reason, Some(why));
        (StatusCode::BAD_REQUEST, html(page)).into_response()
    };
    // By the customer's key when the request found one; else by the identifier it named,
    // given again and checked against the keyed hash the deletion kept of it.
    let (customer, identifier_type) = match &row.related_object_id {
        Some(key) => (key.clone(), Some("key")),
        None => {
            let given = form.identifier.trim();
            let kept = store::prior(&state.pool, row.request_id, false)
                .await
                .map_err(|e| internal(crate::db::SafeError(&e)))?
                .and_then(|prior| prior.requested_id_hash);
            let Some(kept) = kept else {
                return Err(again(
                    "This request named no identifier that could be kept: submit a new request instead.",
                ));
            };
            if given.is_empty()
                || state
                    .identity
                    .naming(given, IdentifierType::Any)
                    .requested_hash
                    != kept
            {
                return Err(again("That is not the identifier this request named."));
            }
            (given.to_owned(), None)
        }
    };
    let serde_json::Value::Object(fields) = serde_json::json!({
        "request_id": uuid::Uuid::new_v4(),
        "customer_id": customer,
        "identifier_type": identifier_type,
        "requested_by": row.requested_by.as_deref().unwrap_or(&session.caller.name),
        "reason": row.reason,
        "requested_at": crate::deletion::millis(row.requested_at),
    }) else {
        unreachable!("an object")
    };
    let fields = fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let key = session.caller.key_ref();
    let submission = crate::intake::Submission {
        key: Some(&key),
        retry: Some(crate::intake::Retry {
            failed: &row,
            reason,
            by: &session.caller.name,
        }),
    };
    match state.submit(fields, Utc::now(), submission).await {
        Ok(Submitted::Accepted(new) | Submitted::Existing(new)) => {
            Ok(Redirect::to(&format!("/deletions/{}", new.id)).into_response())
        }
        Err(Refused::RetriedAlready) => Err(failed(
            StatusCode::CONFLICT,
            Some(&session),
            "Not now",
            "It was retried already.",
        )),
        Err(Refused::Invalid(message)) => Err(again(&message)),
        Err(Refused::ReusedForAnotherCustomer) => Err(internal("a fresh request id was taken")),
        Err(Refused::Database(e)) => Err(internal(crate::db::SafeError(&e))),
    }
}

#[derive(Deserialize)]
pub(super) struct Extension {
    #[serde(default)]
    csrf: String,
    to: String,
    reason: String,
}

/// `POST /deletions/{id}/extend`: the new deadline (on the day given, at the time of day the
/// request was asked, so that three months to the day fit), with its reason.
pub(super) async fn extend(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ConsoleForm(form): ConsoleForm<Extension>,
) -> Page {
    let session = posted(&state, &headers, &form.csrf).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let row = named_deletion(&state, &session, &id).await?;
    let latest = deadlines::latest_extension(row.requested_at);
    let reason = form.reason.trim();
    let again = |why: &str| {
        let page = views::extend_form(&session, &row, latest, form.to.trim(), reason, Some(why));
        (StatusCode::BAD_REQUEST, html(page)).into_response()
    };
    let Ok(day) = chrono::NaiveDate::parse_from_str(form.to.trim(), "%Y-%m-%d") else {
        return Err(again("The new deadline is not a date (YYYY-MM-DD)."));
    };
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(again(
            "A reason of 1 to 1000 characters is required: it is what the person is told.",
        ));
    }
    let to = day.and_time(row.requested_at.time()).and_utc();
    let key = session.caller.key_ref();
    match deadlines::extend(&state.pool, &row.id, to, reason, &session.caller.name, &key).await {
        Ok(deadlines::Extended::Extended(row)) => {
            Ok(Redirect::to(&format!("/deletions/{}", row.id)).into_response())
        }
        Ok(deadlines::Extended::TooLate(why) | deadlines::Extended::OutOfBounds(why)) => {
            Err(again(&format!("Refused: {why}.")))
        }
        Ok(deadlines::Extended::NotFound) => Err(failed(
            StatusCode::NOT_FOUND,
            Some(&session),
            "Not found",
            "No deletion has that id.",
        )),
        Err(e) => Err(internal(crate::db::SafeError(&e))),
    }
}
