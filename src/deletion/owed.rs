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

/// Requests owed to the broker, locked for this transaction and skipped by any other relay's:
/// those accepted over HTTP longer than `older_than_ms` ago whose publish did not get through,
/// and those held for their grace period whose time has come (in the order they came due).
pub async fn claim_owed_requests(
    conn: &mut PgConnection,
    older_than_ms: u128,
    limit: i64,
) -> Result<Vec<OwedRequest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, request_id, pending_message FROM erasure.deletions \
         WHERE pending_message IS NOT NULL AND COALESCE(scheduled_at, created_at) <= now() \
           AND created_at < now() - $1::interval \
         ORDER BY COALESCE(scheduled_at, created_at) LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(format!("{older_than_ms} milliseconds"))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Keeps the message of a request held for its grace period on its deletion, for the relay to
/// publish when it is due; `false` when the deletion is no longer PENDING (canceled, say).
pub async fn keep_held_message(
    conn: &mut PgConnection,
    request_id: Uuid,
    message: &[u8],
) -> Result<bool, sqlx::Error> {
    let kept = sqlx::query(
        "UPDATE erasure.deletions SET pending_message = $2 WHERE request_id = $1 AND status = 'PENDING'",
    )
    .bind(request_id)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(kept.rows_affected() == 1)
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

/// A DONE deletion waiting for its check after commit.
#[derive(Debug, sqlx::FromRow)]
pub struct Unverified {
    pub deletion_id: String,
    /// The erased customer's key.
    pub related_object_id: Option<String>,
    /// The rows its erasure kept, by key (see [`crate::plan::sql::leftovers_statement`]).
    pub kept: Option<Value>,
    /// What the chunks of a chunked erasure kept, one object like `kept` per chunk.
    pub chunk_kept: Option<Value>,
}

impl Unverified {
    /// Everything the erasure kept, its chunks' included, as one `kept` object.
    pub fn all_kept(&self) -> Value {
        let mut all = self.kept.clone().unwrap_or_else(|| serde_json::json!({}));
        let chunks = self.chunk_kept.as_ref().and_then(Value::as_array);
        for chunk in chunks.into_iter().flatten() {
            merge_kept(&mut all, chunk);
        }
        all
    }
}

/// Adds the keys of `more` to `into`, both `{kind: {table: [keys]}}`.
fn merge_kept(into: &mut Value, more: &Value) {
    let Some(more) = more.as_object() else { return };
    for (kind, tables) in more {
        let Some(tables) = tables.as_object() else {
            continue;
        };
        for (table, keys) in tables {
            let slot = into
                .as_object_mut()
                .map(|o| {
                    o.entry(kind.clone())
                        .or_insert_with(|| serde_json::json!({}))
                })
                .and_then(Value::as_object_mut)
                .map(|o| {
                    o.entry(table.clone())
                        .or_insert_with(|| serde_json::json!([]))
                })
                .and_then(Value::as_array_mut);
            if let (Some(slot), Some(keys)) = (slot, keys.as_array()) {
                slot.extend(keys.iter().cloned());
            }
        }
    }
}

/// DONE deletions not yet checked after their commit, oldest first, with their customer's key
/// and the rows their erasure kept; locked for this transaction and skipped by others.
pub async fn claim_unverified(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<Unverified>, sqlx::Error> {
    sqlx::query_as(
        "SELECT q.deletion_id, d.related_object_id, q.kept, q.chunk_kept FROM erasure.verification_queue q \
         LEFT JOIN erasure.deletions d ON d.id = q.deletion_id \
         ORDER BY q.queued_at LIMIT $1 FOR UPDATE OF q SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Queues a deletion for its check after commit once more (after the sweep cleared rows its
/// erasure had kept), with what its erasure kept and what the sweep cleared.
pub async fn requeue_verification(
    conn: &mut PgConnection,
    deletion_id: &str,
    kept: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO erasure.verification_queue (deletion_id, kept) VALUES ($1, $2) \
         ON CONFLICT (deletion_id) DO NOTHING",
    )
    .bind(deletion_id)
    .bind(kept)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records what the check after commit found of each deletion (a later check, after a sweep,
/// replaces an earlier one), and takes it off the queue.
pub async fn record_verifications(
    conn: &mut PgConnection,
    records: &[(&str, Value)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = records.iter().map(|(id, _)| *id).collect();
    let found: Vec<&Value> = records.iter().map(|(_, v)| v).collect();
    sqlx::query(
        "WITH recorded AS (INSERT INTO erasure.verifications (deletion_id, outcome) \
           SELECT * FROM unnest($1::text[], $2::jsonb[]) \
           ON CONFLICT (deletion_id) DO UPDATE SET outcome = EXCLUDED.outcome, verified_at = EXCLUDED.verified_at) \
         DELETE FROM erasure.verification_queue WHERE deletion_id = ANY($1)",
    )
    .bind(&ids)
    .bind(&found)
    .execute(conn)
    .await?;
    Ok(())
}
