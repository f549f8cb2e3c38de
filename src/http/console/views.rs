//! The console's pages, as HTML rendered on the server (maud). No script: every page works with
//! JavaScript off, and the Content-Security-Policy allows none.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::chart;
use super::session::Session;
use crate::deletion::deadlines::{Deadline, Note};
use crate::deletion::report::{AuditEntry, Filter};
use crate::deletion::{DeletionObject, DeletionRow, DeletionStatus, VerificationOutcome};
use crate::erase::preview::Preview;

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn maybe(at: Option<DateTime<Utc>>) -> String {
    at.map_or("—".into(), when)
}

/// The frame of every page.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · erasure" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                a class="skip" href="#main" { "Skip to the content" }
                header {
                    span class="brand" { "erasure" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            a href="/" { "Overview" }
                            a href="/deletions" { "Deletions" }
                            @if !s.caller.read_only { a href="/submit" { "Submit a request" } }
                        }
                        form class="find" method="post" action="/find" role="search" {
                            label for="find-q" { "Find a request" }
                            input id="find-q" name="q" type="search" required maxlength="255"
                                aria-describedby="find-hint" placeholder=(format!("del_ id, request id, customer key{}", s.lookups.iter().map(|l| format!(", {l}")).collect::<String>()));
                            label for="find-kind" class="visually-hidden" { "by" }
                            select id="find-kind" name="kind" {
                                option value="any" { "any identifier" }
                                option value="id" { "deletion or request id" }
                                option value="key" { "customer key" }
                                @for lookup in s.lookups.iter() { option value=(lookup) { (lookup) } }
                            }
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Find" }
                            span id="find-hint" class="visually-hidden" { "Searches by " (searchable(&s.lookups)) "." }
                        }
                        form class="signout" method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { (s.caller.name) @if s.caller.read_only { " (read-only)" } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { h1 { (title) } (body) }
            }
        }
    }
}

pub fn sign_in(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p class="error" role="alert" { (error) } }
            form method="post" action="/sign-in" class="stack" {
                label for="key" { "API key" }
                input id="key" name="key" type="password" required autocomplete="off" maxlength="200";
                p class="hint" { "A read-only key shows everything and changes nothing; a write key can also submit requests." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn message(session: Option<&Session>, title: &str, text: &str) -> Markup {
    page(title, session, html! { p { (text) } })
}

/// Counts by status, the deadlines, the overdue, failures by key, and the charts.
pub struct Overview {
    pub counts: Vec<(DeletionStatus, i64, i64)>,
    /// Overdue, due within seven days, completed late.
    pub deadlines: (i64, i64, i64),
    pub overdue: Vec<(String, DeletionStatus, DateTime<Utc>, i64)>,
    pub failures: Vec<(String, i64)>,
    pub hourly: Vec<chart::Slot>,
    pub daily: Vec<chart::Slot>,
}

pub fn overview(session: &Session, o: &Overview) -> Markup {
    let count = |status: DeletionStatus| {
        o.counts
            .iter()
            .find(|(s, _, _)| *s == status)
            .map_or((0, 0), |(_, today, month)| (*today, *month))
    };
    page(
        "Overview",
        Some(session),
        html! {
            section aria-labelledby="by-status" {
                h2 id="by-status" { "Requests by status" }
                table id="status-counts" {
                    thead { tr { th scope="col" { "Status" } th scope="col" { "Today" } th scope="col" { "Last 30 days" } } }
                    tbody {
                        @for status in DeletionStatus::ALL {
                            @let (today, month) = count(*status);
                            tr data-status=(status) {
                                th scope="row" { a href=(format!("/deletions?status={status}")) { (status) } }
                                td class="today" data-label="Today" { (today) }
                                td class="month" data-label="Last 30 days" { (month) }
                            }
                        }
                    }
                }
                p class="hint" { "By the day the service received them, in UTC: today, and today with the 29 days before it." }
            }
            section aria-labelledby="deadlines" {
                h2 id="deadlines" { "Deadlines (GDPR Art. 12(3))" }
                p class="hint" { "Owed to the data subject: PENDING and IN_PROGRESS requests, and FAILED ones not yet retried or resolved by a later erasure. Due one month after they were asked, or as extended." }
                table id="deadline-counts" {
                    thead { tr { th scope="col" { "Deadline" } th scope="col" { "Requests" } } }
                    tbody {
                        @for (deadline, n) in [(Deadline::Overdue, o.deadlines.0), (Deadline::DueSoon, o.deadlines.1), (Deadline::Late, o.deadlines.2)] {
                            tr data-deadline=(deadline) {
                                th scope="row" { a href=(format!("/deletions?deadline={deadline}")) { (deadline.label()) } }
                                td data-label="Requests" { (n) }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="overdue" {
                h2 id="overdue" { "Overdue" }
                @if o.overdue.is_empty() {
                    p id="overdue-none" { "No request owed to a data subject is past its deadline." }
                } @else {
                    table id="overdue-list" {
                        thead { tr { th scope="col" { "Deletion" } th scope="col" { "Status" } th scope="col" { "Due" } th scope="col" { "Days past due" } } }
                        tbody {
                            @for (id, status, due, days) in &o.overdue {
                                tr {
                                    td data-label="Deletion" { a href=(format!("/deletions/{id}")) { (id) } }
                                    td data-label="Status" { (status) }
                                    td data-label="Due" { (when(*due)) }
                                    td class="days" data-label="Days past due" { (days) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="failures" {
                h2 id="failures" { "FAILED in the last 30 days, by error" }
                @if o.failures.is_empty() {
                    p { "None." }
                } @else {
                    table id="failures-by-key" {
                        thead { tr { th scope="col" { "Error" } th scope="col" { "Requests" } } }
                        tbody {
                            @for (key, n) in &o.failures {
                                tr data-key=(key) { th scope="row" { (key) } td data-label="Requests" { (n) } }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="over-time" {
                h2 id="over-time" { "Outcomes over time" }
                p class="legend" {
                    span class="swatch done" {} " DONE " span class="swatch failed" {} " FAILED " span class="swatch canceled" {} " CANCELED"
                }
                h3 { "Per hour, last 24 hours" }
                (chart::bars("Outcomes per hour, last 24 hours", &o.hourly, |at| at.format("%H:00").to_string()))
                h3 { "Per day, last 30 days" }
                (chart::bars("Outcomes per day, last 30 days", &o.daily, |at| at.format("%m-%d").to_string()))
            }
        },
    )
}

fn query_of(filter: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(status) = filter.status {
        parts.push(format!("status={status}"));
    }
    if let Some(deadline) = filter.deadline {
        parts.push(format!("deadline={deadline}"));
    }
    if let Some(from) = filter.from {
        parts.push(format!("from={from}"));
    }
    if let Some(to) = filter.to {
        parts.push(format!("to={to}"));
    }
    parts.join("&")
}

fn rows_table(rows: &[DeletionRow]) -> Markup {
    html! {
        table id="deletions" {
            thead { tr {
                th scope="col" { "Deletion" } th scope="col" { "Status" } th scope="col" { "Created" }
                th scope="col" { "Due" } th scope="col" { "Completed" }
            } }
            tbody {
                @for row in rows {
                    tr {
                        td data-label="Deletion" { a href=(format!("/deletions/{}", row.id)) { (row.id) } }
                        td data-label="Status" { (row.status) @if let Some(key) = row.error_key { " (" (key) ")" } }
                        td data-label="Created" { (when(row.created_at)) }
                        td data-label="Due" { (when(row.effective_due())) }
                        td data-label="Completed" { (maybe(row.completed_at)) }
                    }
                }
            }
        }
    }
}

pub fn list(
    session: &Session,
    filter: &Filter,
    rows: &[DeletionRow],
    page_number: i64,
    has_more: bool,
) -> Markup {
    let query = query_of(filter);
    let link = |p: i64| {
        let sep = if query.is_empty() { "" } else { "&" };
        format!("/deletions?{query}{sep}page={p}")
    };
    page(
        "Deletions",
        Some(session),
        html! {
            form method="get" action="/deletions" class="filters" {
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" selected[filter.status.is_none()] { "Any" }
                    @for status in DeletionStatus::ALL {
                        option value=(status) selected[filter.status == Some(*status)] { (status) }
                    }
                }
                label for="deadline" { "Deadline" }
                select id="deadline" name="deadline" {
                    option value="" selected[filter.deadline.is_none()] { "Any" }
                    @for deadline in Deadline::ALL {
                        option value=(deadline) selected[filter.deadline == Some(*deadline)] { (deadline.label()) }
                    }
                }
                label for="from" { "Created from" }
                input id="from" type="date" name="from" value=(filter.from.map(|d| d.to_string()).unwrap_or_default());
                label for="to" { "to" }
                input id="to" type="date" name="to" value=(filter.to.map(|d| d.to_string()).unwrap_or_default());
                button type="submit" { "Filter" }
            }
            p { a id="csv" href=(format!("/deletions.csv?{query}")) { "Download these as CSV" } " (ids, statuses, dates and counts; nothing personal)" }
            @if rows.is_empty() { p { "No deletion matches." } } @else { (rows_table(rows)) }
            nav aria-label="Pages" class="pages" {
                @if page_number > 1 { a rel="prev" href=(link(page_number - 1)) { "Newer" } }
                span { "Page " (page_number) }
                @if has_more { a rel="next" href=(link(page_number + 1)) { "Older" } }
            }
        },
    )
}

/// What the search accepts, in words: "a deletion id, a request id, a customer key or a lookup
/// value (source_id, email)".
pub fn searchable(lookups: &[String]) -> String {
    match lookups {
        [] => "a deletion id, a request id or a customer key".to_string(),
        _ => format!(
            "a deletion id, a request id, a customer key or a lookup value ({})",
            lookups.join(", ")
        ),
    }
}

/// The search's answer: the deletions found, or why nothing was (`not_a_lookup`: what was
/// given is no identifier the plan can search by).
pub fn found(session: &Session, rows: &[DeletionRow], not_a_lookup: Option<&str>) -> Markup {
    page(
        "Found",
        Some(session),
        html! {
            @if let Some(why) = not_a_lookup {
                p id="not-a-lookup" { (why) }
            } @else if rows.is_empty() {
                p id="nothing-found" { "No request was found by " (searchable(&session.lookups)) "." }
            } @else {
                (rows_table(rows))
            }
        },
    )
}

/// What a deletion's page shows.
pub struct Detail<'a> {
    pub row: &'a DeletionRow,
    pub object: &'a DeletionObject,
    pub audit: &'a [AuditEntry],
    /// Why staff extended, canceled or retried it, in their words.
    pub notes: &'a [Note],
    /// Whether its outcome event is still owed to the broker.
    pub event_owed: bool,
    /// Whether the request is still owed to the data subject.
    pub owed: bool,
    /// The request that tries it again, if one does.
    pub retried_by: Option<String>,
}

fn plural(n: i64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Where a deletion stands against its deadline, in words: "9 days overdue", "5 days left",
/// "completed 2 days late".
pub fn deadline_words(row: &DeletionRow, owed: bool, now: DateTime<Utc>) -> Option<String> {
    let due = row.effective_due();
    if owed {
        return Some(if due < now {
            match (now - due).num_days() {
                0 => "less than a day overdue".into(),
                n => format!("{} overdue", plural(n, "day")),
            }
        } else {
            match (due - now).num_days() {
                0 => "due within a day".into(),
                n => format!("{} left", plural(n, "day")),
            }
        });
    }
    match (row.status, row.completed_at) {
        (DeletionStatus::Done, Some(at)) if at > due => Some(match (at - due).num_days() {
            0 => "completed less than a day late".into(),
            n => format!("completed {} late", plural(n, "day")),
        }),
        (DeletionStatus::Done, Some(_)) => Some("completed in time".into()),
        _ => None,
    }
}

fn action_label(action: &str) -> &'static str {
    match action {
        "erasure.extended" => "Deadline extended",
        "erasure.canceled" => "Canceled",
        "erasure.retried" => "Retried",
        _ => "Noted",
    }
}

pub fn detail(session: &Session, d: &Detail<'_>) -> Markup {
    let row = d.row;
    let now = Utc::now();
    let event = match (row.is_final(), d.event_owed) {
        (false, _) => "not yet (the request has not ended)",
        (true, true) => "owed: the outbox will publish it",
        (true, false) => "published",
    };
    let erased_any = row
        .data_json
        .as_object()
        .is_some_and(|counts| counts.values().any(|n| n.as_i64().unwrap_or(0) > 0));
    let writes = !session.caller.read_only;
    let may_extend = writes && d.owed && now <= row.due_at;
    let may_cancel = writes && row.status == DeletionStatus::Pending;
    let may_retry =
        writes && row.status == DeletionStatus::Failed && d.owed && d.retried_by.is_none();
    page(
        &format!("Deletion {}", row.id),
        Some(session),
        html! {
            dl class="facts" {
                dt { "Status" } dd id="status" { (row.status) }
                dt { "Request id" } dd { code { (row.request_id) } }
                dt { "Customer" } dd { (row.related_object_id.as_deref().unwrap_or("—")) }
                dt { "Requested by" } dd { (row.requested_by.as_deref().unwrap_or("—")) }
                dt { "Submitted with key" } dd id="requested-by-key" {
                    @match row.requested_by_key() {
                        Some(key) => { (key.name) " (id " code { (key.id) } ")" }
                        None => { "none (a request from the queue or the command line)" }
                    }
                }
                dt { "Reason" } dd { (row.reason.as_deref().unwrap_or("—")) }
                dt { "Due" } dd id="due" {
                    (when(row.effective_due()))
                    @if let Some(words) = deadline_words(row, d.owed, now) { " (" span id="deadline" { (words) } ")" }
                    @if row.extended_due_at.is_some() { br; span id="extended" { "Extended from " (when(row.due_at)) } }
                }
                @if let Some(at) = row.scheduled_at { dt { "Scheduled" } dd { (when(at)) } }
                @if let Some(of) = &row.retry_of {
                    dt { "Retry of" } dd id="retry-of" { a href=(format!("/deletions/{of}")) { (of) } }
                }
                @if let Some(by) = &d.retried_by {
                    dt { "Retried as" } dd id="retried-by" { a href=(format!("/deletions/{by}")) { (by) } }
                }
                dt { "Outcome event" } dd id="event" { (event) }
            }
            @if may_extend || may_cancel || may_retry {
                h2 { "Actions" }
                ul class="actions" {
                    @if may_extend { li { a id="extend" href=(format!("/deletions/{}/extend", row.id)) { "Extend the deadline" } } }
                    @if may_cancel { li { a id="cancel" href=(format!("/deletions/{}/cancel", row.id)) { "Cancel the request" } } }
                    @if may_retry { li { a id="retry" href=(format!("/deletions/{}/retry", row.id)) { "Retry the request" } } }
                }
            }
            h2 { "Timeline" }
            ol class="timeline" id="timeline" {
                li { "Requested " (when(row.requested_at)) }
                li { "Received " (when(row.created_at)) }
                @if let Some(at) = row.scheduled_at { li { "Scheduled for " (when(at)) } }
                @if let Some(at) = row.started_at { li { "Started " (when(at)) } }
                @for note in d.notes {
                    li class="note" data-action=(note.action) {
                        (action_label(&note.action)) " " (when(note.noted_at))
                        @if let Some(name) = &note.key_name { " by key " (name) }
                        ": " q { (note.reason) }
                    }
                }
                @match (row.status, row.completed_at) {
                    (DeletionStatus::Done, Some(at)) => { li id="ended" { "Completed " (when(at)) } }
                    (DeletionStatus::Failed, Some(at)) => { li id="ended" { "Failed " (when(at)) } }
                    (DeletionStatus::Canceled, Some(at)) => { li id="ended" { "Canceled " (when(at)) } }
                    _ => { li id="ended" { "Not ended yet" } }
                }
            }
            @if let Some(key) = row.error_key {
                h2 { "Error" }
                p id="error" class="error" { code { (key) } ": " (row.error_message.as_deref().unwrap_or("")) }
            }
            (proof(row))
            h2 { "Rows erased or anonymized" }
            @if row.status == DeletionStatus::Done || erased_any {
                table id="counts" {
                    thead { tr { th scope="col" { "Table" } th scope="col" { "Rows" } } }
                    tbody {
                        @if let Value::Object(counts) = &d.object.data_json {
                            @for (table, n) in counts {
                                tr data-table=(table) { th scope="row" { (table) } td data-label="Rows" { (n) } }
                            }
                        }
                    }
                }
            } @else {
                p id="no-counts" {
                    @match row.status {
                        DeletionStatus::Canceled => { "Nothing was erased: the request was canceled." }
                        DeletionStatus::Failed => { "Nothing was erased: the request failed." }
                        _ => { "Nothing has been erased yet: the request has not been carried out." }
                    }
                }
            }
            h2 { "Audit trail" }
            table id="audit" {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Recorded" } th scope="col" { "Action" }
                    th scope="col" { "Channel" } th scope="col" { "By" } th scope="col" { "Key" } th scope="col" { "Error" } th scope="col" { "Detail" }
                } }
                tbody {
                    @for entry in d.audit {
                        tr {
                            td data-label="#" { (entry.id) } td data-label="Recorded" { (when(entry.recorded_at)) } td class="action" data-label="Action" { (entry.action) }
                            td data-label="Channel" { (entry.channel) } td data-label="By" { (entry.requested_by.as_deref().unwrap_or("—")) }
                            td class="key" data-label="Key" {
                                @match (&entry.key_name, &entry.key_id) {
                                    (Some(name), Some(id)) => { (name) " (" code { (id) } ")" }
                                    _ => { "—" }
                                }
                            }
                            td data-label="Error" { (entry.error_key.as_deref().unwrap_or("—")) } td data-label="Detail" { code { (entry.detail) } }
                        }
                    }
                }
            }
        },
    )
}

/// The confirmation of an action on a deletion (`action`: "cancel" or "retry"): what it will do,
/// and the reason it requires; for a retry of a request whose customer is not known, the
/// identifier it named, again.
pub fn confirm(
    session: &Session,
    row: &DeletionRow,
    action: &str,
    reason: &str,
    error: Option<&str>,
) -> Markup {
    let (title, button) = match action {
        "cancel" => ("Cancel the request?", "Cancel the request"),
        _ => ("Retry the request?", "Retry the request"),
    };
    let asks_identifier = action == "retry" && row.related_object_id.is_none();
    page(
        title,
        Some(session),
        html! {
            dl class="facts" {
                dt { "Deletion" } dd { a href=(format!("/deletions/{}", row.id)) { (row.id) } }
                dt { "Status" } dd { (row.status) }
                dt { "Customer" } dd { (row.related_object_id.as_deref().unwrap_or("— (the request named nobody known)")) }
                dt { "Requested" } dd { (when(row.requested_at)) " by " (row.requested_by.as_deref().unwrap_or("—")) }
                @if let Some(key) = row.error_key { dt { "Error" } dd { code { (key) } ": " (row.error_message.as_deref().unwrap_or("")) } }
            }
            @if action == "cancel" {
                p id="consequence" { "The request will not be carried out: nothing of the customer is erased, the deletion ends CANCELED, and its event " code { "deletion.canceled" } " is published. This cannot be undone; a new request can be submitted later." }
            } @else {
                p id="consequence" { "A new request is made for the same customer, linked to this one (" code { "retry_of" } "), asked at the same time, so its deadline stays this request's. It is carried out at once, and this request counts as resolved." }
            }
            @if let Some(error) = error { p class="error" role="alert" id="refused" { (error) } }
            form method="post" action=(format!("/deletions/{}/{action}", row.id)) class="stack" {
                input type="hidden" name="csrf" value=(session.csrf);
                @if asks_identifier {
                    label for="identifier" { "The identifier this request named" }
                    input id="identifier" name="identifier" required maxlength="255" autocomplete="off";
                    p class="hint" { "It is kept only as its keyed hash: give it again, and it is checked against that." }
                }
                label for="reason" { "Reason (recorded with your key)" }
                textarea id="reason" name="reason" required maxlength="1000" rows="3" { (reason) }
                button type="submit" { (button) }
                a href=(format!("/deletions/{}", row.id)) { "Keep it as it is" }
            }
        },
    )
}

/// The form that extends a deadline: a new date (after the due date, at most three months after
/// the request was asked) and the reason given to the person.
pub fn extend_form(
    session: &Session,
    row: &DeletionRow,
    latest: DateTime<Utc>,
    date: &str,
    reason: &str,
    error: Option<&str>,
) -> Markup {
    let earliest = row.due_at.date_naive() + chrono::Days::new(1);
    page(
        "Extend the deadline",
        Some(session),
        html! {
            p { "Deletion " a href=(format!("/deletions/{}", row.id)) { (row.id) } ", asked " (when(row.requested_at)) ", due " (when(row.due_at)) "." }
            p class="hint" { "GDPR Art. 12(3): the one-month deadline may be extended by two further months where a request is complex, and the person must be told, with the reasons, within the first month. The reason is recorded with your key and shown on the deletion's timeline." }
            @if let Some(error) = error { p class="error" role="alert" id="refused" { (error) } }
            form method="post" action=(format!("/deletions/{}/extend", row.id)) class="stack" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="to" { "New deadline (UTC)" }
                input id="to" name="to" type="date" required value=(date)
                    min=(earliest.to_string()) max=(latest.date_naive().to_string());
                label for="reason" { "Reason given to the person" }
                textarea id="reason" name="reason" required maxlength="1000" rows="4" { (reason) }
                button type="submit" { "Extend the deadline" }
            }
        },
    )
}

/// What proves the erasure: the check after commit, the plan applied, and the receipt, the
/// evidence pack and the certificate.
fn proof(row: &DeletionRow) -> Markup {
    let verification = row.verification();
    html! {
        h2 id="proof" { "Proof" }
        dl class="facts" {
            dt { "Check after commit" }
            dd id="verification" data-outcome=(verification.outcome) {
                @match verification.outcome {
                    VerificationOutcome::Passed => { "Passed: nothing of the customer is left where the plan erases" }
                    VerificationOutcome::Failed => {
                        "Failed: something of the customer was found left in "
                        @for (i, table) in verification.failed_tables.iter().enumerate() {
                            @if i > 0 { ", " }
                            code { (table) }
                        }
                    }
                    VerificationOutcome::Pending => { "Pending: it runs seconds after the commit" }
                    VerificationOutcome::NotApplicable => { "Not applicable: only a DONE erasure is checked" }
                }
                @if let Some(at) = &verification.verified_at { " (" (at) ")" }
            }
            dt { "Plan applied" }
            dd id="plan-hash" { @if let Some(hash) = &row.plan_hash { code { (hash) } } @else { "—" } }
        }
        @if row.is_final() {
            ul class="proof-links" {
                li { a id="receipt" href=(format!("/deletions/{}/receipt", row.id)) { "Signed receipt (JSON)" } }
                li { a id="evidence" href=(format!("/deletions/{}/evidence", row.id)) { "Evidence pack (ZIP: receipt, public keys, sealed audit rows, how to check offline)" } }
                @if row.status == DeletionStatus::Done {
                    li { a id="certificate" href=(format!("/deletions/{}/certificate", row.id)) { "Certificate of erasure (to print)" } }
                }
            }
        } @else {
            p id="no-proof-yet" { "The receipt, the evidence pack and the certificate come once the request has ended." }
        }
    }
}

/// The certificate of erasure of a DONE deletion: a page to print (the print stylesheet leaves
/// out the console's header), holding nothing personal beyond what the deletion holds.
pub fn certificate(
    session: &Session,
    row: &DeletionRow,
    object: &DeletionObject,
    receipt: &Value,
) -> Markup {
    let verification = row.verification();
    page(
        "Certificate of erasure",
        Some(session),
        html! {
            div class="certificate" {
                p class="noprint" { a href=(format!("/deletions/{}", row.id)) { "Back to the deletion" } " · Print this page (Ctrl+P) to keep it or send it." }
                p id="statement" {
                    "This certifies that the erasure request " code { (row.request_id) }
                    " for the customer " strong { (row.related_object_id.as_deref().unwrap_or("—")) }
                    @if row.already_erased {
                        " found the customer already erased by an earlier request, and erased nothing more."
                    } @else {
                        " was carried out: the customer's personal data was erased or anonymized as listed below."
                    }
                }
                dl class="facts" {
                    dt { "Deletion" } dd id="cert-deletion" { code { (row.id) } }
                    dt { "Requested" } dd { (when(row.requested_at)) }
                    dt { "Due" } dd { (when(row.due_at)) }
                    dt { "Completed" } dd id="cert-completed" { (maybe(row.completed_at)) }
                    dt { "Requested by" } dd { (row.requested_by.as_deref().unwrap_or("—")) }
                dt { "Submitted with key" } dd id="requested-by-key" {
                    @match row.requested_by_key() {
                        Some(key) => { (key.name) " (id " code { (key.id) } ")" }
                        None => { "none (a request from the queue or the command line)" }
                    }
                }
                    dt { "Check after commit" } dd id="cert-verification" {
                        (verification.outcome)
                        @if !verification.failed_tables.is_empty() { ": " (verification.failed_tables.join(", ")) }
                        @if let Some(at) = &verification.verified_at { " (" (at) ")" }
                    }
                    dt { "Plan applied" } dd { code { (row.plan_hash.as_deref().unwrap_or("—")) } }
                    dt { "Receipt signed by key" } dd id="cert-key" { code { (receipt["key_id"].as_str().unwrap_or("—")) } " (kept in: " (receipt["key_custody"].as_str().unwrap_or("—")) ")" }
                    dt { "Certificate made" } dd { (receipt["issued_at"].as_str().unwrap_or("—")) }
                }
                h2 { "Rows erased or anonymized" }
                table id="cert-counts" {
                    thead { tr { th scope="col" { "Table" } th scope="col" { "Rows" } } }
                    tbody {
                        @if let Value::Object(counts) = &object.data_json {
                            @for (table, n) in counts {
                                tr { th scope="row" { (table) } td data-label="Rows" { (n) } }
                            }
                        }
                    }
                }
                p class="hint" {
                    "The signed receipt of this deletion (in its evidence pack) proves these facts to anyone holding the public key: "
                    code { "erasure receipt verify receipt.json --key receipt-keys.json --audit audit.json" } "."
                }
            }
        },
    )
}

pub fn submit_form(session: &Session, customer: &str, reason: &str, error: Option<&str>) -> Markup {
    page(
        "Submit a request",
        Some(session),
        html! {
            @if let Some(error) = error { p class="error" role="alert" { (error) } }
            form method="post" action="/submit/preview" class="stack" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="customer_id" { "Customer id or source id" }
                input id="customer_id" name="customer_id" required maxlength="255" value=(customer);
                label for="reason" { "Reason" }
                input id="reason" name="reason" maxlength="1000" value=(reason);
                label for="requested_by" { "Requested by" }
                input id="requested_by" name="requested_by" required maxlength="255" value=(session.caller.name);
                button type="submit" { "Preview" }
            }
        },
    )
}

pub fn preview(
    session: &Session,
    preview: &Preview,
    customer: &str,
    reason: &str,
    requested_by: &str,
) -> Markup {
    page(
        "Confirm the request",
        Some(session),
        html! {
            p { "Erasing customer " strong { (preview.related_object_id) } " would record:" }
            table id="preview" {
                thead { tr { th scope="col" { "Table" } th scope="col" { "Rows" } } }
                tbody {
                    @if let Value::Object(counts) = &preview.data_json {
                        @for (table, n) in counts { tr { th scope="row" { (table) } td data-label="Rows" { (n) } } }
                    }
                }
            }
            @if let Some((key, message)) = &preview.blocked_by {
                p class="error" role="alert" { "It would be refused now (" (key) "): " (message) }
            }
            form method="post" action="/submit" class="stack" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="customer_id" value=(customer);
                input type="hidden" name="reason" value=(reason);
                input type="hidden" name="requested_by" value=(requested_by);
                button type="submit" { "Submit the request" }
            }
        },
    )
}
