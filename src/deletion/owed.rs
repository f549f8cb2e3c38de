//! What is owed once a deletion is written: its outcome event to the broker
//! (`erasure.event_outbox`), the request message of an HTTP submission to the broker
//! (`pending_message`), and the check after commit of a DONE deletion
//! (`erasure.verification_queue`). Each is claimed in batches, locked and skipped by other
//! claimants, and settled when done. Beside [`super::store`], which writes the rows that owe them.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{COLUMNS, DeletionRow};

/// A final deletion whose outcome event the broker has not confirmed yet.
#[derive(Debug)]
pub struct OwedEvent {
    /// Its place in `erasure.event_outbox`.
    pub id: i64,
    pub deletion: DeletionRow,
}

/// Outcome events owed to the broker, oldest first, locked for this transaction and skipped by
/// any other publisher's.
pub async fn claim_owed_events(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<OwedEvent>, sqlx::Error> {
    let columns: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("d.{}", c.trim()))
        .collect();
    let sql = format!(
        "SELECT o.id AS outbox_id, {} FROM erasure.event_outbox o \
         JOIN erasure.deletions d ON d.id = o.deletion_id \
         ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
        columns.join(", ")
    );
    let rows = sqlx::query(&sql).bind(limit).fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            Ok(OwedEvent {
                id: sqlx::Row::try_get(row, "outbox_id")?,
                deletion: sqlx::FromRow::from_row(row)?,
            })
        })
        .collect()
}

/// The broker confirmed these outcome events (by their place in the outbox).
pub async fn events_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM erasure.event_outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// A request accepted over HTTP whose message the broker has not confirmed.
#[derive(Debug, sqlx::FromRow)]
pub struct OwedRequest {
    pub id: String,
    pub request_id: Uuid,
    pub pending_message: Vec<u8>,
}

/// Requests accepted over HTTP longer than `older_than_ms` ago and still owed to the broker,
/// locked for this transaction and skipped by any other relay's.
pub async fn claim_owed_requests(
    conn: &mut PgConnection,
    older_than_ms: u128,
    limit: i64,
) -> Result<Vec<OwedRequest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, request_id, pending_message FROM erasure.deletions \
         WHERE pending_message IS NOT NULL AND created_at < now() - $1::interval \
         ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(format!("{older_than_ms} milliseconds"))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The broker has the messages of these deletions.
pub async fn clear_pending_messages(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE erasure.deletions SET pending_message = NULL WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// DONE deletions not yet checked after their commit, oldest first, with their customer's key;
/// locked for this transaction and skipped by others.
pub async fn claim_unverified(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT q.deletion_id, d.related_object_id FROM erasure.verification_queue q \
         LEFT JOIN erasure.deletions d ON d.id = q.deletion_id \
         ORDER BY q.queued_at LIMIT $1 FOR UPDATE OF q SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records what the check after commit found of each deletion, and takes it off the queue.
pub async fn record_verifications(
    conn: &mut PgConnection,
    records: &[(&str, Value)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = records.iter().map(|(id, _)| *id).collect();
    let found: Vec<&Value> = records.iter().map(|(_, v)| v).collect();
    sqlx::query(
        "WITH recorded AS (INSERT INTO erasure.verifications (deletion_id, outcome) \
           SELECT * FROM unnest($1::text[], $2::jsonb[]) ON CONFLICT (deletion_id) DO NOTHING) \
         DELETE FROM erasure.verification_queue WHERE deletion_id = ANY($1)",
    )
    .bind(&ids)
    .bind(&found)
    .execute(conn)
    .await?;
    Ok(())
}
