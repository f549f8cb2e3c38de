//! What the console shows of the deletions: counts by status, the overdue, failures by error
//! key, outcomes over time, a filtered page, the audit rows of a request. Reads only.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::deadlines::{Deadline, EFFECTIVE_DUE};
use super::{DeletionRow, DeletionStatus, read_columns};

/// Deletions by status: created today (UTC) and in the last 30 days.
pub async fn counts_by_status(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(DeletionStatus, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, count(*) FILTER (WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), \
           count(*) \
         FROM erasure.deletions WHERE created_at >= now() - interval '30 days' \
         GROUP BY status ORDER BY status",
    )
    .fetch_all(db)
    .await
}

/// Deletions still owed past their deadline (open, or FAILED and unresolved; as extended,
/// where it was), the most overdue first, with whole days past due.
pub async fn overdue(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<(String, DeletionStatus, DateTime<Utc>, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT d.id, d.status, {EFFECTIVE_DUE}, floor(extract(epoch FROM now() - {EFFECTIVE_DUE}) / 86400)::bigint \
         FROM erasure.deletions d WHERE {overdue} \
         ORDER BY {EFFECTIVE_DUE} LIMIT $1",
        overdue = Deadline::Overdue.condition(),
    ))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many deletions are overdue, due within seven days, and were completed late.
pub async fn deadline_counts(db: impl PgExecutor<'_>) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}) \
         FROM erasure.deletions d",
        Deadline::Overdue.condition(),
        Deadline::DueSoon.condition(),
        Deadline::Late.condition(),
    ))
    .fetch_one(db)
    .await
}

/// FAILED deletions of the last 30 days by error key.
pub async fn failures_by_key(db: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT error_key, count(*) FROM erasure.deletions \
         WHERE status = '{failed}' AND completed_at >= now() - interval '30 days' \
         GROUP BY error_key ORDER BY count(*) DESC, error_key",
        failed = DeletionStatus::Failed,
    ))
    .fetch_all(db)
    .await
}

/// Outcomes ended per `unit` ("hour" or "day") over the last `span`, as (start of the unit,
/// DONE, FAILED, CANCELED), every unit present (zeros included), oldest first. One range of
/// the index on final deletions' completion time, grouped by unit (not a join of each unit
/// with the whole table).
pub async fn outcomes_over_time(
    db: impl PgExecutor<'_>,
    unit: &str,
    units: i32,
) -> Result<Vec<(DateTime<Utc>, i64, i64, i64)>, sqlx::Error> {
    let unit = if unit == "day" { "day" } else { "hour" };
    sqlx::query_as(&format!(
        "WITH slots AS (SELECT generate_series(date_trunc('{unit}', now()) - ($1 - 1) * interval '1 {unit}', \
           date_trunc('{unit}', now()), interval '1 {unit}') AS at), \
         ended AS (SELECT date_trunc('{unit}', completed_at) AS at, \
             count(*) FILTER (WHERE status = 'DONE') AS done, \
             count(*) FILTER (WHERE status = 'FAILED') AS failed, \
             count(*) FILTER (WHERE status = 'CANCELED') AS canceled \
           FROM erasure.deletions \
           WHERE status IN {final_} AND completed_at >= date_trunc('{unit}', now()) - ($1 - 1) * interval '1 {unit}' \
           GROUP BY 1) \
         SELECT s.at, COALESCE(e.done, 0), COALESCE(e.failed, 0), COALESCE(e.canceled, 0) \
         FROM slots s LEFT JOIN ended e ON e.at = s.at ORDER BY s.at",
        final_ = DeletionStatus::sql_list(DeletionStatus::FINAL),
    ))
    .bind(units)
    .fetch_all(db)
    .await
}

/// What the console's list shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<DeletionStatus>,
    /// Where the deletion stands against its deadline.
    pub deadline: Option<Deadline>,
    /// Created on or after this day, and on or before that one (UTC).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// A page of deletions matching `filter`, newest first.
pub async fn filtered(
    db: impl PgExecutor<'_>,
    filter: &Filter,
    offset: i64,
    limit: i64,
) -> Result<Vec<DeletionRow>, sqlx::Error> {
    filtered_page(db, filter, None, offset, limit).await
}

/// The next `limit` deletions matching `filter` after `after` (the `created_at` and id of the
/// last one read), newest first: the list read in pages by the index on (created_at, id), each
/// as fast as the first, whatever the table's size.
pub async fn filtered_after(
    db: impl PgExecutor<'_>,
    filter: &Filter,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<DeletionRow>, sqlx::Error> {
    filtered_page(db, filter, after, 0, limit).await
}

async fn filtered_page(
    db: impl PgExecutor<'_>,
    filter: &Filter,
    after: Option<(DateTime<Utc>, String)>,
    offset: i64,
    limit: i64,
) -> Result<Vec<DeletionRow>, sqlx::Error> {
    let deadline = filter.deadline.map_or(String::new(), |deadline| {
        format!(
            "AND EXISTS (SELECT 1 FROM erasure.deletions d WHERE d.id = erasure.deletions.id AND {})",
            deadline.condition()
        )
    });
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {columns} FROM erasure.deletions \
         WHERE ($1::text IS NULL OR status = $1) {deadline} \
           AND ($2::date IS NULL OR created_at >= $2::date::timestamp AT TIME ZONE 'UTC') \
           AND ($3::date IS NULL OR created_at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC') \
           AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7)) \
         ORDER BY created_at DESC, id DESC OFFSET $4 LIMIT $5",
        columns = read_columns(),
    ))
    .bind(filter.status)
    .bind(filter.from)
    .bind(filter.to)
    .bind(offset)
    .bind(limit)
    .bind(after_at)
    .bind(after_id)
    .fetch_all(db)
    .await
}

/// One audit row, as the console shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub recorded_at: DateTime<Utc>,
    pub action: String,
    pub channel: String,
    pub requested_by: Option<String>,
    pub error_key: Option<String>,
    pub detail: serde_json::Value,
    /// The API key the action was taken on the authority of.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
}

/// Every audit row of a request (or naming its deletion), oldest first.
pub async fn audit_of(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
    deletion_id: &str,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, recorded_at, action, channel, requested_by, error_key, detail, key_id, key_name \
         FROM erasure.audit_log WHERE request_id = $1 OR deletion_id = $2 ORDER BY id",
    )
    .bind(request_id)
    .bind(deletion_id)
    .fetch_all(db)
    .await
}

/// Whether the outcome event of a deletion is still owed to the broker.
pub async fn event_owed(db: impl PgExecutor<'_>, deletion_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM erasure.event_outbox WHERE deletion_id = $1)")
        .bind(deletion_id)
        .fetch_one(db)
        .await
}
