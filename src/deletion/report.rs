//! What the console shows of the deletions: counts by status, the overdue, failures by error
//! key, outcomes over time, a filtered page, the audit rows of a request. Reads only.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::deadlines::{Deadline, EFFECTIVE_DUE, owed};
use super::{DeletionRow, DeletionStatus, read_columns};

/// Deletions by status: created today and in the last 30 days (today and the 29 UTC days
/// before it, as the daily chart counts them). Read from the daily tallies the deletions'
/// triggers keep (`erasure.deletion_tallies`), not from the deletions themselves.
pub async fn counts_by_status(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(DeletionStatus, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, COALESCE(sum(n) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)::bigint, \
           sum(n)::bigint \
         FROM erasure.deletion_tallies \
         WHERE tally = 'created' AND day > (now() AT TIME ZONE 'UTC')::date - 30 \
         GROUP BY status HAVING sum(n) <> 0 ORDER BY status",
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

/// How many deletions are overdue, due within seven days, and were completed late (this last
/// from the daily tallies: it counts over the whole table).
pub async fn deadline_counts(db: impl PgExecutor<'_>) -> Result<(i64, i64, i64), sqlx::Error> {
    let among_owed = |deadline: Deadline| deadline.among_owed().unwrap_or_else(|| "false".into());
    sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}), \
           (SELECT COALESCE(sum(n), 0)::bigint FROM erasure.deletion_tallies WHERE tally = 'late') \
         FROM erasure.deletions d WHERE {}",
        among_owed(Deadline::Overdue),
        among_owed(Deadline::DueSoon),
        owed(),
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

/// Outcomes ended per hour over the last `hours` hours, as (start of the hour, DONE, FAILED,
/// CANCELED), every hour present (zeros included), oldest first. One range of the index on
/// final deletions' completion time, grouped by hour (not a join of each hour with the whole
/// table): a day of deletions at most. The span is written into the statement, not bound: with
/// a bound span, the plan PostgreSQL keeps for a prepared statement after a few runs cannot
/// know the range is short, and read all 10 million deletions (7 s) instead of a day.
pub async fn outcomes_per_hour(
    db: impl PgExecutor<'_>,
    hours: u16,
) -> Result<Vec<(DateTime<Utc>, i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH slots AS (SELECT generate_series(date_trunc('hour', now()) - {back} * interval '1 hour', \
           date_trunc('hour', now()), interval '1 hour') AS at), \
         ended AS (SELECT date_trunc('hour', completed_at) AS at, \
             count(*) FILTER (WHERE status = '{done}') AS done, \
             count(*) FILTER (WHERE status = '{failed}') AS failed, \
             count(*) FILTER (WHERE status = '{canceled}') AS canceled \
           FROM erasure.deletions \
           WHERE status IN {final_} AND completed_at >= date_trunc('hour', now()) - {back} * interval '1 hour' \
           GROUP BY 1) \
         SELECT s.at, COALESCE(e.done, 0), COALESCE(e.failed, 0), COALESCE(e.canceled, 0) \
         FROM slots s LEFT JOIN ended e ON e.at = s.at ORDER BY s.at",
        done = DeletionStatus::Done,
        failed = DeletionStatus::Failed,
        canceled = DeletionStatus::Canceled,
        final_ = DeletionStatus::sql_list(DeletionStatus::FINAL),
        back = hours.max(1) - 1,
    ))
    .fetch_all(db)
    .await
}

/// Outcomes ended per UTC day over the last `days` days (today included), as (start of the
/// day, DONE, FAILED, CANCELED), every day present (zeros included), oldest first. Read from
/// the daily tallies (`erasure.deletion_tallies`): a month holds 820,000 deletions at 10,000
/// erasures a day, its tallies a few thousand rows.
pub async fn outcomes_per_day(
    db: impl PgExecutor<'_>,
    days: u16,
) -> Result<Vec<(DateTime<Utc>, i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH slots AS (SELECT generate_series((now() AT TIME ZONE 'UTC')::date - {back}, \
           (now() AT TIME ZONE 'UTC')::date, interval '1 day')::date AS day), \
         ended AS (SELECT day, \
             sum(n) FILTER (WHERE status = '{done}') AS done, \
             sum(n) FILTER (WHERE status = '{failed}') AS failed, \
             sum(n) FILTER (WHERE status = '{canceled}') AS canceled \
           FROM erasure.deletion_tallies \
           WHERE tally = 'ended' AND day > (now() AT TIME ZONE 'UTC')::date - {days} \
           GROUP BY day) \
         SELECT s.day::timestamp AT TIME ZONE 'UTC', COALESCE(e.done, 0)::bigint, \
           COALESCE(e.failed, 0)::bigint, COALESCE(e.canceled, 0)::bigint \
         FROM slots s LEFT JOIN ended e ON e.day = s.day ORDER BY s.day",
        done = DeletionStatus::Done,
        failed = DeletionStatus::Failed,
        canceled = DeletionStatus::Canceled,
        back = days.max(1) - 1,
    ))
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
        format!("AND {}", deadline.condition())
    });
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {columns} FROM erasure.deletions WHERE id IN ( \
           SELECT d.id FROM erasure.deletions d \
           WHERE ($1::text IS NULL OR d.status = $1) {deadline} \
             AND ($2::date IS NULL OR d.created_at >= $2::date::timestamp AT TIME ZONE 'UTC') \
             AND ($3::date IS NULL OR d.created_at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC') \
             AND ($6::timestamptz IS NULL OR (d.created_at, d.id) < ($6, $7)) \
           ORDER BY d.created_at DESC, d.id DESC OFFSET $4 LIMIT $5) \
         ORDER BY created_at DESC, id DESC",
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
