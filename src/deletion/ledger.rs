//! The ledger: every final deletion as one JSON line, kept outside the database, so that a
//! restored backup can be brought back to what was erased since (`erasure ledger export` and
//! `replay`); and the suppression check (`GET /v1/suppressions/{identifier}`). Reads only.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{DeletionStatus, ErrorKey};

/// One final deletion, as the ledger keeps it: ids, the customer's key, the keyed hashes of its
/// identifiers, the outcome; nothing personal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub deletion_id: String,
    pub request_id: Uuid,
    pub related_object_id: Option<String>,
    /// Hex keyed hashes: of the identifier the request named, of the customer's first lookup
    /// value, of every lookup value.
    pub requested_id_hash: Option<String>,
    pub source_id_hash: Option<String>,
    pub lookup_hashes: Vec<String>,
    pub status: DeletionStatus,
    pub already_erased: bool,
    pub error_key: Option<ErrorKey>,
    /// RFC 3339 with microseconds: the order of the ledger.
    pub completed_at: String,
    pub plan_hash: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    request_id: Uuid,
    related_object_id: Option<String>,
    requested_id_hash: Option<Vec<u8>>,
    source_id_hash: Option<Vec<u8>>,
    lookup_hashes: Option<Vec<Vec<u8>>>,
    status: DeletionStatus,
    already_erased: bool,
    error_key: Option<ErrorKey>,
    completed_at: DateTime<Utc>,
    plan_hash: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<Row> for LedgerLine {
    fn from(row: Row) -> Self {
        Self {
            deletion_id: row.id,
            request_id: row.request_id,
            related_object_id: row.related_object_id,
            requested_id_hash: row.requested_id_hash.as_deref().map(hex),
            source_id_hash: row.source_id_hash.as_deref().map(hex),
            lookup_hashes: row
                .lookup_hashes
                .unwrap_or_default()
                .iter()
                .map(|h| hex(h))
                .collect(),
            status: row.status,
            already_erased: row.already_erased,
            error_key: row.error_key,
            completed_at: row
                .completed_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            plan_hash: row.plan_hash,
        }
    }
}

/// The final deletions completed at or after `since` (all without it), in the ledger's order:
/// by completion time, then id.
pub async fn final_deletions(
    db: impl PgExecutor<'_>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<LedgerLine>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT id, request_id, related_object_id, requested_id_hash, source_id_hash, lookup_hashes, \
           status, already_erased, error_key, completed_at, plan_hash \
         FROM erasure.deletions \
         WHERE status IN {final_} AND ($1::timestamptz IS NULL OR completed_at >= $1) \
         ORDER BY completed_at, id",
        final_ = DeletionStatus::sql_list(DeletionStatus::FINAL),
    ))
    .bind(since)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(LedgerLine::from).collect())
}

/// The DONE deletion that erased the customer an identifier names, by its key or through the
/// keyed hashes `hashes` of the identifier (as given and in lower case): its id and when it
/// ended. Each way is an index lookup.
pub async fn suppression(
    db: impl PgExecutor<'_>,
    identifier: &str,
    hashes: &[Vec<u8>],
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT id, completed_at FROM erasure.deletions \
         WHERE status = '{done}' AND (related_object_id = $1 OR source_id_hash = ANY($2) \
           OR requested_id_hash = ANY($2) OR lookup_hashes && $2) \
         ORDER BY completed_at DESC LIMIT 1",
        done = DeletionStatus::Done,
    ))
    .bind(identifier)
    .bind(hashes)
    .fetch_optional(db)
    .await
}
