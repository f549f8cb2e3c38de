//! What a DONE deletion's erasure left behind, and what was cleared of it
//! ([`crate::proof::residue`]): the queue of deletions whose residue is not recorded yet
//! (`erasure.residue_queue`, written when their check after commit has run) and the records
//! (`erasure.residue`), which the deletion object shows as its `residue`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// Queues the DONE deletions among `deletion_ids` whose residue is not recorded yet.
pub async fn queue(conn: &mut PgConnection, deletion_ids: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO erasure.residue_queue (deletion_id) \
         SELECT d.id FROM erasure.deletions d WHERE d.id = ANY($1) AND d.status = 'DONE' \
           AND NOT EXISTS (SELECT 1 FROM erasure.residue r WHERE r.deletion_id = d.id) \
         ON CONFLICT (deletion_id) DO NOTHING",
    )
    .bind(deletion_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// A queued deletion, as the recorder needs it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Unrecorded {
    pub deletion_id: String,
    pub completed_at: Option<DateTime<Utc>>,
    /// Its counts, by the plan's count keys.
    pub data_json: Option<Value>,
}

/// Queued deletions, oldest first. Nothing is locked: recording is the same whoever does it
/// (two processes recording one deletion write the same record twice), and the clearing before
/// it may take long.
pub async fn unrecorded(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<Unrecorded>, sqlx::Error> {
    sqlx::query_as(
        "SELECT q.deletion_id, d.completed_at, d.data_json FROM erasure.residue_queue q \
         LEFT JOIN erasure.deletions d ON d.id = q.deletion_id \
         ORDER BY q.queued_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records each deletion's residue, and takes it off the queue.
pub async fn record(conn: &mut PgConnection, records: &[(&str, Value)]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = records.iter().map(|(id, _)| *id).collect();
    let values: Vec<&Value> = records.iter().map(|(_, v)| v).collect();
    sqlx::query(
        "WITH recorded AS (INSERT INTO erasure.residue (deletion_id, record) \
           SELECT * FROM unnest($1::text[], $2::jsonb[]) \
           ON CONFLICT (deletion_id) DO UPDATE SET record = EXCLUDED.record, recorded_at = EXCLUDED.recorded_at) \
         DELETE FROM erasure.residue_queue WHERE deletion_id = ANY($1)",
    )
    .bind(&ids)
    .bind(&values)
    .execute(conn)
    .await?;
    Ok(())
}
