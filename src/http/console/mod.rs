//! The web console for compliance staff, served under `/` beside the API: sign in with an API
//! key, an overview, finding a request, a deletion's page, the list with a CSV for auditors,
//! and (with a write key) submitting a request after its preview.
//!
//! - [`session`]: the key exchanged for a cookie, and the form token (CSRF);
//! - [`views`]: the pages, rendered on the server; [`chart`]: the SVG chart;
//! - [`listing`]: the filtered list and its CSV;
//! - [`evidence`]: what proves an erasure: the receipt, the evidence pack, the certificate;
//! - [`actions`]: what a write key does to a deletion: cancel, retry, extend its deadline;
//! - this file: the routes, the headers every page carries, and the other pages.
//!
//! Safe by default: no script at all (the Content-Security-Policy allows none), no framing, no
//! referrer, no caching of pages; a customer identifier is only ever sent in a POST body (the
//! search, the submission), never in a URL, so it is in no browser history and no log line.

mod actions;
mod chart;
mod evidence;
mod listing;
pub mod session;
mod views;

use axum::extract::{ConnectInfo, Form, FromRequest, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, extract::Request};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;

use crate::deletion::deadlines;
use crate::deletion::report;
use crate::deletion::store;
use crate::erase::preview::PreviewError;
use crate::http::{HttpState, Refused};
use crate::identity::IdentifierType;
use crate::intake::Submitted;
use crate::request::{self, Channel};
use session::Session;

/// The console's routes.
pub fn routes(state: HttpState) -> Router<HttpState> {
    Router::new()
        .route("/", get(overview))
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/deletions", get(listing::list))
        .route("/deletions.csv", get(listing::csv))
        .route("/deletions/{id}", get(detail))
        .route("/deletions/{id}/receipt", get(evidence::receipt))
        .route("/deletions/{id}/evidence", get(evidence::evidence))
        .route("/deletions/{id}/certificate", get(evidence::certificate))
        .route(
            "/deletions/{id}/extend",
            get(actions::extend_form).post(actions::extend),
        )
        .route(
            "/deletions/{id}/cancel",
            get(actions::confirm_cancel).post(actions::cancel),
        )
        .route(
            "/deletions/{id}/retry",
            get(actions::confirm_retry).post(actions::retry),
        )
        .route("/find", post(find))
        .route("/submit", get(submit_form).post(submit))
        .route("/submit/preview", post(submit_preview))
        .route("/console.css", get(stylesheet))
        .layer(middleware::from_fn(same_site_posts))
        .layer(middleware::from_fn_with_state(state, headers))
}

/// Every console POST, sign-in included, must come from a page of the console itself: a form
/// another site posts (login CSRF: the attacker's key signing the victim's browser into the
/// attacker's session; or any form riding on a session) is refused with the console's page.
/// Browsers say where a request comes from in `Sec-Fetch-Site`; those that do not yet send it
/// send `Origin` on every POST, which must then name this host. A client that sends neither is
/// no browser (curl, a script), which no other site can drive.
async fn same_site_posts(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::POST && !from_this_site(request.headers()) {
        return failed(
            StatusCode::FORBIDDEN,
            None,
            "Refused",
            "This form was sent from another site. Open the console yourself and use its own forms.",
        );
    }
    next.run(request).await
}

/// Whether a request's headers say it comes from this site (or say nothing: no browser).
fn from_this_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: the person typed the address or used a bookmark, no page made the request.
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// A console form: the body read as `T`, or the console's own refusal page when it does not
/// read (not a form, too large, a field missing), with the status that says why.
pub(super) struct ConsoleForm<T>(pub T);

impl<T, S> FromRequest<S> for ConsoleForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Form::<T>::from_request(request, state).await {
            Ok(Form(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let text = match status {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        "The request was not sent as a form. Use the console's own pages."
                    }
                    StatusCode::PAYLOAD_TOO_LARGE => "The form is larger than the console accepts.",
                    StatusCode::UNPROCESSABLE_ENTITY => {
                        "The form lacks a field it needs. Reload the page and try again."
                    }
                    _ => "The form could not be read. Reload the page and try again.",
                };
                Err(failed(status, None, "Refused", text))
            }
        }
    }
}

/// The headers of every console answer.
async fn headers(State(_): State<HttpState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show customer keys and who asked: never kept by a browser or a proxy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// An answer of the console: a page, a redirect, or an error page.
type Page = Result<Response, Response>;

fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn failed(status: StatusCode, session: Option<&Session>, title: &str, text: &str) -> Response {
    (status, html(views::message(session, title, text))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    failed(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "Something went wrong",
        "The request could not be answered; the logs say why.",
    )
}

/// The session of the request, or a redirect to sign in. A page counts against the session's
/// key's rate limit, as an API call with that key would.
async fn signed_in(state: &HttpState, headers: &HeaderMap) -> Result<Session, Response> {
    let mut session = match session::find(&state.pool, headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(Redirect::to("/sign-in").into_response()),
        Err(e) => return Err(internal(crate::db::SafeError(&e))),
    };
    session.lookups = state
        .identity
        .lookups()
        .iter()
        .map(|l| l.column.clone())
        .collect();
    let decision = state.limiter.check(&session.caller.key_id).await;
    if !decision.allowed {
        let mut response = failed(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&session),
            "Too many requests",
            &format!(
                "This key may make {} requests a minute. Try again in {} seconds.",
                decision.limit, decision.reset_after
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(decision.reset_after));
        return Err(response);
    }
    Ok(session)
}

/// The session, checked against the form's token; a forged form is refused.
async fn posted(state: &HttpState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let session = signed_in(state, headers).await?;
    if !session.csrf_matches(csrf) {
        return Err(failed(
            StatusCode::FORBIDDEN,
            Some(&session),
            "Refused",
            "The form did not come from this session. Reload the page and try again.",
        ));
    }
    Ok(session)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

async fn sign_in_form() -> Response {
    html(views::sign_in(None))
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

/// `POST /sign-in`: the key for a session cookie. Attempts are limited per client address
/// (`http.rate_limit_per_minute`), as API calls are per key.
async fn sign_in(
    State(state): State<HttpState>,
    peer: Option<axum::extract::Extension<ConnectInfo<std::net::SocketAddr>>>,
    ConsoleForm(form): ConsoleForm<SignIn>,
) -> Page {
    let peer = peer.map(|axum::extract::Extension(info)| info);
    // The peer's address: behind a proxy, the proxy's, so that a client cannot pick its own
    // bucket by a header.
    let client = peer.map_or("unknown".to_string(), |ConnectInfo(addr)| {
        addr.ip().to_string()
    });
    // Every attempt counts against the address's allowance, and a failed one against its
    // failed key attempts (shared with the API's).
    let failures = format!("failed-keys:{client}");
    let decision = state
        .limiter
        .check(&format!("console-sign-in:{client}"))
        .await;
    if !decision.allowed
        || state
            .limiter
            .exhausted(&failures, state.failed_keys_per_minute)
            .await
    {
        let reset_after = state.limiter.reset_after().await;
        return Err(failed(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            "Too many attempts",
            &format!("Try again in {reset_after} seconds."),
        ));
    }
    let caller = crate::keys::verify(&state.pool, form.key.trim())
        .await
        .map_err(|e| internal(crate::db::SafeError(&e)))?;
    let Some(caller) = caller else {
        state
            .limiter
            .check_limit(&failures, state.failed_keys_per_minute)
            .await;
        return Err((
            StatusCode::UNAUTHORIZED,
            html(views::sign_in(Some("That key is unknown or revoked."))),
        )
            .into_response());
    };
    let hours = state.console.session_hours;
    let token = session::open(&state.pool, &caller, hours)
        .await
        .map_err(|e| internal(crate::db::SafeError(&e)))?;
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(
        &token,
        hours,
        state.console.secure_cookie,
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct Token {
    // A form without its token is refused like a forged one, with the same page.
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<Token>,
) -> Page {
    posted(&state, &headers, &form.csrf).await?;
    session::close(&state.pool, &headers)
        .await
        .map_err(|e| internal(crate::db::SafeError(&e)))?;
    let mut response = Redirect::to("/sign-in").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(state.console.secure_cookie)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

async fn overview(State(state): State<HttpState>, headers: HeaderMap) -> Page {
    let session = signed_in(&state, &headers).await?;
    let db = &state.pool;
    let safe = |e: sqlx::Error| internal(crate::db::SafeError(&e));
    let o = views::Overview {
        counts: report::counts_by_status(db).await.map_err(safe)?,
        deadlines: report::deadline_counts(db).await.map_err(safe)?,
        overdue: report::overdue(db, 100).await.map_err(safe)?,
        failures: report::failures_by_key(db).await.map_err(safe)?,
        hourly: report::outcomes_per_hour(db, 24).await.map_err(safe)?,
        daily: report::outcomes_per_day(db, 30).await.map_err(safe)?,
    };
    Ok(html(views::overview(&session, &o)))
}

async fn detail(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let safe = |e: sqlx::Error| internal(crate::db::SafeError(&e));
    if request::check_identifier("id", &id).is_err() {
        return Err(failed(
            StatusCode::BAD_REQUEST,
            Some(&session),
            "Not a deletion id",
            "That is not a deletion id.",
        ));
    }
    let Some(row) = store::find(&state.pool, &id).await.map_err(safe)? else {
        return Err(failed(
            StatusCode::NOT_FOUND,
            Some(&session),
            "Not found",
            "No deletion has that id.",
        ));
    };
    let audit = report::audit_of(&state.pool, row.request_id, &row.id)
        .await
        .map_err(safe)?;
    let owed = report::event_owed(&state.pool, &row.id)
        .await
        .map_err(safe)?;
    let object = state.deletion(&row);
    let notes = deadlines::notes(&state.pool, &row.id).await.map_err(safe)?;
    let (owed_to_subject, retried_by) = deadlines::standing(&state.pool, &row.id)
        .await
        .map_err(safe)?;
    let page = views::Detail {
        row: &row,
        object: &object,
        audit: &audit,
        notes: &notes,
        event_owed: owed,
        owed: owed_to_subject,
        retried_by,
    };
    Ok(html(views::detail(&session, &page)))
}

/// The deletion the path names, for a signed-in `session`; the console's page when there is
/// none.
pub(super) async fn named_deletion(
    state: &HttpState,
    session: &Session,
    id: &str,
) -> Result<crate::deletion::DeletionRow, Response> {
    if request::check_identifier("id", id).is_err() {
        return Err(failed(
            StatusCode::BAD_REQUEST,
            Some(session),
            "Not a deletion id",
            "That is not a deletion id.",
        ));
    }
    store::find(&state.pool, id)
        .await
        .map_err(|e| internal(crate::db::SafeError(&e)))?
        .ok_or_else(|| {
            failed(
                StatusCode::NOT_FOUND,
                Some(session),
                "Not found",
                "No deletion has that id.",
            )
        })
}

#[derive(Deserialize)]
struct Find {
    q: String,
    /// Which identifier `q` is: `any`, `id` (a deletion or request id), `key` (the customer's
    /// key), or a lookup's column.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    csrf: String,
}

/// What looks like an e-mail address or a phone number, when the plan declares no lookup of
/// that kind: the words for it, so that the search says it cannot find requests by it.
fn undeclared_kind(q: &str, lookups: &[String]) -> Option<&'static str> {
    let declared = |word: &str| lookups.iter().any(|l| l.to_lowercase().contains(word));
    let at = q.find('@');
    if at.is_some_and(|i| i > 0 && q[i + 1..].contains('.')) && !declared("mail") {
        return Some("an e-mail address");
    }
    let digits = q.chars().filter(char::is_ascii_digit).count();
    let phone_like = digits >= 7
        && q.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if phone_like && !declared("phone") && !declared("tel") {
        return Some("a phone number");
    }
    None
}

/// `POST /find`: by `del_` id, request id, the customer's key, or any lookup the plan declares
/// (through its keyed hash; for a customer not erased yet, through the live customer it names).
/// The identifier comes in the body and the results are the answer: it never reaches a URL.
async fn find(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<Find>,
) -> Page {
    let session = posted(&state, &headers, &form.csrf).await?;
    let q = form.q.trim();
    let kind = form.kind.trim();
    let lookups = session.lookups.clone();
    let nothing = |why: Option<String>| html(views::found(&session, &[], why.as_deref()));
    if request::check_identifier("q", q).is_err() {
        return Ok(nothing(None));
    }
    let safe = |e: sqlx::Error| internal(crate::db::SafeError(&e));
    let mut rows = Vec::new();
    if matches!(kind, "" | "any" | "id")
        && let Some(row) = store::find(&state.pool, q).await.map_err(safe)?
    {
        rows.push(row);
    }
    if rows.is_empty() && kind != "id" {
        let identifier_type = match kind {
            "" | "any" => IdentifierType::Any,
            "key" => IdentifierType::Key,
            column => match lookups.iter().position(|l| l == column) {
                Some(i) => IdentifierType::Lookup(i),
                None => {
                    return Ok(nothing(Some(format!(
                        "{column:?} is not an identifier this plan declares."
                    ))));
                }
            },
        };
        let naming = state.identity.naming(q, identifier_type.clone());
        rows = store::all_for_customer(&state.pool, &naming, 100)
            .await
            .map_err(safe)?;
        if rows.is_empty()
            && let crate::erase::Named::One(key) = state
                .eraser
                .live_customer_key(q, &identifier_type)
                .await
                .map_err(safe)?
        {
            let naming = state.identity.naming(&key, IdentifierType::Key);
            rows = store::all_for_customer(&state.pool, &naming, 100)
                .await
                .map_err(safe)?;
        }
    }
    if let [row] = rows.as_slice() {
        return Ok(Redirect::to(&format!("/deletions/{}", row.id)).into_response());
    }
    if rows.is_empty()
        && matches!(kind, "" | "any")
        && let Some(what) = undeclared_kind(q, &lookups)
    {
        return Ok(nothing(Some(format!(
            "That looks like {what}, and this plan declares no lookup of that kind: a request cannot be found by it, because the service keeps nothing of it (not even its keyed hash). Search by {}.",
            views::searchable(&lookups)
        ))));
    }
    Ok(html(views::found(&session, &rows, None)))
}

async fn submit_form(State(state): State<HttpState>, headers: HeaderMap) -> Page {
    let session = signed_in(&state, &headers).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    Ok(html(views::submit_form(&session, "", "", None)))
}

fn read_only(session: &Session) -> Response {
    failed(
        StatusCode::FORBIDDEN,
        Some(session),
        "Read-only key",
        "This key may read everything and change nothing: sign in with a write key to submit.",
    )
}

/// The submission form again, filled as it was sent, with why it was refused.
fn refused(session: &Session, form: &Submission, why: &str) -> Response {
    let page = views::submit_form(
        session,
        form.customer_id.trim(),
        form.reason.trim(),
        Some(why),
    );
    (StatusCode::BAD_REQUEST, html(page)).into_response()
}

#[derive(Deserialize)]
struct Submission {
    #[serde(default)]
    csrf: String,
    customer_id: String,
    #[serde(default)]
    reason: String,
    requested_by: String,
}

async fn submit_preview(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<Submission>,
) -> Page {
    let session = posted(&state, &headers, &form.csrf).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let customer = form.customer_id.trim();
    let invalid = |why: &str| refused(&session, &form, why);
    if let Err(why) = request::check_identifier("customer id", customer) {
        return Err(invalid(&why));
    }
    match state
        .eraser
        .preview_by(
            customer,
            &session.caller.name,
            Some(&session.caller.key_ref()),
            Channel::Http,
        )
        .await
    {
        Ok(preview) => Ok(html(views::preview(
            &session,
            &preview,
            customer,
            &form.reason,
            &form.requested_by,
        ))),
        Err(PreviewError::NotFound) => Err(invalid("No customer has that id or source id.")),
        Err(e @ (PreviewError::Busy | PreviewError::Ambiguous | PreviewError::TimedOut)) => {
            Err(invalid(&e.to_string()))
        }
        Err(PreviewError::Database(e)) => Err(internal(crate::db::SafeError(&e))),
    }
}

/// `POST /submit`: the request, through the same intake (and parser) as the API.
async fn submit(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<Submission>,
) -> Page {
    let session = posted(&state, &headers, &form.csrf).await?;
    if session.caller.read_only {
        return Err(read_only(&session));
    }
    let reason = form.reason.trim();
    let serde_json::Value::Object(fields) = serde_json::json!({
        "request_id": uuid::Uuid::new_v4(),
        "customer_id": form.customer_id.trim(),
        "requested_by": form.requested_by.trim(),
        "reason": if reason.is_empty() { None } else { Some(reason) },
    }) else {
        unreachable!("an object")
    };
    let key = session.caller.key_ref();
    let submission = crate::intake::Submission {
        key: Some(&key),
        retry: None,
    };
    match state.submit(fields, Utc::now(), submission).await {
        Ok(Submitted::Accepted(row) | Submitted::Existing(row)) => {
            Ok(Redirect::to(&format!("/deletions/{}", row.id)).into_response())
        }
        Err(Refused::Invalid(message)) => Err(refused(&session, &form, &message)),
        Err(Refused::ReusedForAnotherCustomer | Refused::RetriedAlready) => {
            Err(internal("a fresh request id was taken"))
        }
        Err(Refused::Database(e)) => Err(internal(crate::db::SafeError(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn an_e_mail_or_a_phone_number_is_named_when_the_plan_has_no_such_lookup() {
        let source = vec!["source_id".to_string()];
        let email = vec!["source_id".to_string(), "email".to_string()];
        assert_eq!(
            undeclared_kind("jane@example.com", &source),
            Some("an e-mail address")
        );
        assert_eq!(undeclared_kind("jane@example.com", &email), None);
        assert_eq!(
            undeclared_kind("+44 20 7946 0958", &email),
            Some("a phone number")
        );
        assert_eq!(undeclared_kind("cust_8Xk2", &source), None);
        assert_eq!(undeclared_kind("12345", &source), None);
    }

    #[test]
    fn only_posts_from_this_site_or_from_no_browser_pass() {
        let host = ("host", "console.example:8080");
        for pass in [
            headers(&[host]),
            headers(&[host, ("sec-fetch-site", "same-origin")]),
            headers(&[host, ("sec-fetch-site", "none")]),
            headers(&[host, ("origin", "https://console.example:8080")]),
            headers(&[host, ("origin", "http://console.example:8080")]),
        ] {
            assert!(from_this_site(&pass), "{pass:?}");
        }
        for refuse in [
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("sec-fetch-site", "same-site")]),
            headers(&[
                host,
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://console.example:8080"),
            ]),
            headers(&[host, ("origin", "http://evil.example")]),
            headers(&[host, ("origin", "http://console.example:8081")]),
            headers(&[host, ("origin", "null")]),
            headers(&[("origin", "http://console.example:8080")]),
        ] {
            assert!(!from_this_site(&refuse), "{refuse:?}");
        }
    }
}
