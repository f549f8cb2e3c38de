//! The console's pages, as HTML rendered on the server (maud). No script: every page works with
//! JavaScript off, and the Content-Security-Policy allows none.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::chart;
use super::session::Session;
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
                                placeholder="del_ id, request id, customer id or source id";
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Find" }
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

/// Counts by status, the overdue, failures by key, and the charts.
pub struct Overview {
    pub counts: Vec<(DeletionStatus, i64, i64)>,
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
                                td class="today" { (today) }
                                td class="month" { (month) }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="overdue" {
                h2 id="overdue" { "Overdue (GDPR Art. 12(3): one month)" }
                @if o.overdue.is_empty() {
                    p id="overdue-none" { "No open request is past its due date." }
                } @else {
                    table id="overdue-list" {
                        thead { tr { th scope="col" { "Deletion" } th scope="col" { "Status" } th scope="col" { "Due" } th scope="col" { "Days past due" } } }
                        tbody {
                            @for (id, status, due, days) in &o.overdue {
                                tr {
                                    td { a href=(format!("/deletions/{id}")) { (id) } }
                                    td { (status) }
                                    td { (when(*due)) }
                                    td class="days" { (days) }
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
                                tr data-key=(key) { th scope="row" { (key) } td { (n) } }
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
    if filter.overdue {
        parts.push("overdue=true".into());
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
                        td { a href=(format!("/deletions/{}", row.id)) { (row.id) } }
                        td { (row.status) @if let Some(key) = row.error_key { " (" (key) ")" } }
                        td { (when(row.created_at)) }
                        td { (when(row.due_at)) }
                        td { (maybe(row.completed_at)) }
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
                label for="overdue" { "Overdue only" }
                input id="overdue" type="checkbox" name="overdue" value="true" checked[filter.overdue];
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

pub fn found(session: &Session, rows: &[DeletionRow]) -> Markup {
    page(
        "Found",
        Some(session),
        html! {
            @if rows.is_empty() {
                p id="nothing-found" { "No request has that deletion id, request id, customer id or source id." }
            } @else {
                (rows_table(rows))
            }
        },
    )
}

pub fn detail(
    session: &Session,
    row: &DeletionRow,
    object: &DeletionObject,
    audit: &[AuditEntry],
    event_owed: bool,
) -> Markup {
    let days_left = (row.due_at - Utc::now()).num_days();
    let event = match (row.is_final(), event_owed) {
        (false, _) => "not yet (the request has not ended)",
        (true, true) => "owed: the outbox will publish it",
        (true, false) => "published",
    };
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
                dt { "Due" } dd { (when(row.due_at)) @if !row.is_final() { " (" (days_left) " days left)" } }
                @if let Some(at) = row.scheduled_at { dt { "Scheduled" } dd { (when(at)) } }
                dt { "Outcome event" } dd id="event" { (event) }
            }
            h2 { "Timeline" }
            ol class="timeline" {
                li { "Requested " (when(row.requested_at)) }
                li { "Received " (when(row.created_at)) }
                @if let Some(at) = row.scheduled_at { li { "Scheduled for " (when(at)) } }
                li { "Started " (maybe(row.started_at)) }
                li { "Completed " (maybe(row.completed_at)) }
            }
            @if let Some(key) = row.error_key {
                h2 { "Error" }
                p id="error" class="error" { code { (key) } ": " (row.error_message.as_deref().unwrap_or("")) }
            }
            (proof(row))
            h2 { "Rows erased or anonymized" }
            table id="counts" {
                thead { tr { th scope="col" { "Table" } th scope="col" { "Rows" } } }
                tbody {
                    @if let Value::Object(counts) = &object.data_json {
                        @for (table, n) in counts {
                            tr data-table=(table) { th scope="row" { (table) } td { (n) } }
                        }
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
                    @for entry in audit {
                        tr {
                            td { (entry.id) } td { (when(entry.recorded_at)) } td class="action" { (entry.action) }
                            td { (entry.channel) } td { (entry.requested_by.as_deref().unwrap_or("—")) }
                            td class="key" {
                                @match (&entry.key_name, &entry.key_id) {
                                    (Some(name), Some(id)) => { (name) " (" code { (id) } ")" }
                                    _ => { "—" }
                                }
                            }
                            td { (entry.error_key.as_deref().unwrap_or("—")) } td { code { (entry.detail) } }
                        }
                    }
                }
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
                                tr { th scope="row" { (table) } td { (n) } }
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
                        @for (table, n) in counts { tr { th scope="row" { (table) } td { (n) } } }
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
