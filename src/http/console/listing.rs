//! The list of deletions: filtered by status, deadline and creation dates, in pages, and the
//! same filter as a CSV for auditors (ids, statuses, dates and counts; nothing personal).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{NaiveDate, Utc};
use futures_util::StreamExt;
use serde::Deserialize;

use super::{Page, failed, html, internal, signed_in, views};
use crate::deletion::deadlines::Deadline;
use crate::deletion::report::{self, Filter};
use crate::deletion::{DeletionRow, DeletionStatus};
use crate::http::HttpState;

/// Deletions a page of the list shows.
const PAGE: i64 = 50;
/// Rows the CSV export reads from the database at a time.
const CSV_BATCH: i64 = 1000;

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    status: Option<String>,
    /// `overdue=true`: the same as `deadline=overdue` (links made before deadlines had a filter).
    overdue: Option<String>,
    deadline: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> Result<(Filter, i64), String> {
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(word) => Some(
                word.parse::<DeletionStatus>()
                    .map_err(|_| format!("{word:?} is not a status"))?,
            ),
        };
        let date = |text: &Option<String>| -> Result<Option<NaiveDate>, String> {
            match text.as_deref() {
                None | Some("") => Ok(None),
                Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| format!("{d:?} is not a date (YYYY-MM-DD)")),
            }
        };
        let page = match self.page.as_deref() {
            None | Some("") => 1,
            Some(p) => p
                .parse::<i64>()
                .ok()
                .filter(|p| (1..=100_000).contains(p))
                .ok_or_else(|| format!("{p:?} is not a page number"))?,
        };
        let deadline = match self.deadline.as_deref() {
            None | Some("") if self.overdue.as_deref() == Some("true") => Some(Deadline::Overdue),
            None | Some("") => None,
            Some(word) => Some(
                word.parse::<Deadline>()
                    .map_err(|_| format!("{word:?} is not a deadline filter"))?,
            ),
        };
        let filter = Filter {
            status,
            deadline,
            from: date(&self.from)?,
            to: date(&self.to)?,
        };
        Ok((filter, page))
    }
}

/// The list's query, or why it does not read (a field given twice, say), for the console's
/// own refusal page instead of the framework's plain-text one.
fn read_query(query: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, String> {
    query.map(|Query(q)| q).map_err(|e| e.body_text())
}

pub(super) async fn list(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let (filter, page) = read_query(query)
        .and_then(|q| q.filter())
        .map_err(|why| failed(StatusCode::BAD_REQUEST, Some(&session), "Bad filter", &why))?;
    let mut rows = report::filtered(&state.pool, &filter, (page - 1) * PAGE, PAGE + 1)
        .await
        .map_err(|e| internal(crate::db::SafeError(&e)))?;
    let has_more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    Ok(html(views::list(&session, &filter, &rows, page, has_more)))
}

/// `GET /deletions.csv`: the filtered list for auditors: ids, statuses, dates, the API key that
/// submitted each, and counts; nothing personal (no customer key, no requester, no reason).
pub(super) async fn csv(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let (filter, _) = read_query(query)
        .and_then(|q| q.filter())
        .map_err(|why| failed(StatusCode::BAD_REQUEST, Some(&session), "Bad filter", &why))?;
    let keys = state.count_keys.clone();
    let mut head = String::from(
        "deletion_id,request_id,status,error_key,created_at,requested_at,due_at,completed_at,requested_by_key_id,requested_by_key_name",
    );
    for key in keys.iter() {
        head.push(',');
        head.push_str(&csv_field(key));
    }
    head.push('\n');
    let rows = CsvRows {
        pool: state.pool.clone(),
        filter,
        keys,
        after: None,
        written: 0,
        cap: state.console.csv_max_rows.max(1),
        done: false,
    };
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(futures_util::stream::unfold(rows, CsvRows::next));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"deletions.csv\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The CSV's rows, read a batch at a time after the last one written (by the index on
/// `created_at, id`), so that the export holds one batch in memory whatever its size, up to
/// `cap` rows; past it, a last line says the export stopped there.
struct CsvRows {
    pool: sqlx::PgPool,
    filter: Filter,
    keys: std::sync::Arc<[String]>,
    after: Option<(chrono::DateTime<Utc>, String)>,
    written: i64,
    cap: i64,
    done: bool,
}

impl CsvRows {
    async fn next(mut self) -> Option<(Result<String, std::io::Error>, Self)> {
        if self.done {
            return None;
        }
        let want = CSV_BATCH.min(self.cap - self.written + 1);
        let rows =
            match report::filtered_after(&self.pool, &self.filter, self.after.take(), want).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The download ends short (the client sees it cut off), and the log says why.
                    tracing::error!(error = %crate::db::SafeError(&e), "the CSV export stopped");
                    self.done = true;
                    return Some((Err(std::io::Error::other("the CSV export stopped")), self));
                }
            };
        if rows.is_empty() {
            return None;
        }
        let mut out = String::new();
        for row in &rows {
            if self.written == self.cap {
                out.push_str(&format!(
                    "# the export stops at {} rows; narrow the filter (dates, status) for the rest\n",
                    self.cap
                ));
                self.done = true;
                break;
            }
            out.push_str(&csv_line(row, &self.keys));
            self.written += 1;
        }
        let last = rows.last().expect("not empty");
        self.after = Some((last.created_at, last.id.clone()));
        if (rows.len() as i64) < want {
            self.done = true;
        }
        Some((Ok(out), self))
    }
}

fn csv_field(text: &str) -> String {
    // A field that starts like a formula is quoted and prefixed, so no spreadsheet runs it.
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(row: &DeletionRow, keys: &[String]) -> String {
    let at = |t: Option<chrono::DateTime<Utc>>| t.map(crate::deletion::millis).unwrap_or_default();
    let mut fields = vec![
        row.id.clone(),
        row.request_id.to_string(),
        row.status.to_string(),
        row.error_key.map(|k| k.to_string()).unwrap_or_default(),
        at(Some(row.created_at)),
        at(Some(row.requested_at)),
        at(Some(row.due_at)),
        at(row.completed_at),
        row.requested_by_key_id.clone().unwrap_or_default(),
        row.requested_by_key_name.clone().unwrap_or_default(),
    ];
    for key in keys {
        let n = row.data_json.get(key).and_then(|v| v.as_i64()).unwrap_or(0);
        fields.push(n.to_string());
    }
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}
