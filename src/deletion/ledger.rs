//! The ledger: every final deletion as one JSON line, kept outside the database, so that a
//! restored backup can be brought back to what was erased since (`erasure ledger export` and
//! `replay`); and the suppression check (`GET /v1/suppressions/{identifier}`). Reads only.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{DeletionStatus, ErrorKey};
use crate::identity::Naming;

/// One final deletion, as the ledger keeps it: ids, the customer's key, the keyed hashes of its
/// identifiers, the outcome; nothing personal. Written signed ([`crate::proof::signed`]) by
/// `erasure ledger export`, so that a line planted or changed in the file is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub deletion_id: String,
    pub request_id: Uuid,
    /// The erased customer's key; null when the request named nobody.
    pub related_object_id: Option<String>,
    /// Hex keyed hash of the identifier the request named, as given.
    pub requested_id_hash: Option<String>,
    /// Hex keyed hashes of the customer's lookup values, tagged with their lookup
    /// ([`crate::identity`]).
    #[serde(default)]
    pub lookup_digests: Vec<String>,
    /// The untagged hashes of deletions recorded before the tagged ones: the first lookup
    /// value's, and every lookup value's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    lookup_digests: Option<Vec<Vec<u8>>>,
    source_id_hash: Option<Vec<u8>>,
    lookup_hashes: Option<Vec<Vec<u8>>>,
    status: DeletionStatus,
    already_erased: bool,
    error_key: Option<ErrorKey>,
    completed_at: DateTime<Utc>,
    plan_hash: Option<String>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_all(list: Option<Vec<Vec<u8>>>) -> Vec<String> {
    list.unwrap_or_default().iter().map(|h| hex(h)).collect()
}

impl From<Row> for LedgerLine {
    fn from(row: Row) -> Self {
        Self {
            deletion_id: row.id,
            request_id: row.request_id,
            related_object_id: row.related_object_id,
            requested_id_hash: row.requested_id_hash.as_deref().map(hex),
            lookup_digests: hex_all(row.lookup_digests),
            source_id_hash: row.source_id_hash.as_deref().map(hex),
            lookup_hashes: hex_all(row.lookup_hashes),
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

/// The next `limit` final deletions in the ledger's order after `after` (the completion time
/// and id of the last one read), from `since`: the export reads them a page at a time by the
/// index on (completed_at, id), so its memory stays bounded whatever the table's size.
pub async fn final_deletions_after(
    db: impl PgExecutor<'_>,
    since: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<LedgerLine>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT id, request_id, related_object_id, requested_id_hash, lookup_digests, source_id_hash, \
           lookup_hashes, status, already_erased, error_key, completed_at, plan_hash \
         FROM erasure.deletions \
         WHERE status IN {final_} AND ($1::timestamptz IS NULL OR completed_at >= $1) \
           AND ($2::timestamptz IS NULL OR (completed_at, id) > ($2, $3)) \
         ORDER BY completed_at, id LIMIT $4",
        final_ = DeletionStatus::sql_list(DeletionStatus::FINAL),
    ))
    .bind(since)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(LedgerLine::from).collect())
}

/// When the deletion `deletion_id` ended, by this database's clock: where an export that
/// extends a ledger ending with that deletion picks up.
pub async fn completed_at(
    db: impl PgExecutor<'_>,
    deletion_id: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT completed_at FROM erasure.deletions WHERE id = $1")
        .bind(deletion_id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}

/// The DONE deletion that erased the customer an identifier names (read as `naming` says), by
/// the rule of [`crate::identity`]: by its key, if any deletion recorded it (a key never names
/// anyone else, erased or not); else through the keyed hashes of the lookup values erased
/// customers had. Its id and when it ended (the one that erased, rather than one that found the
/// customer erased already); each way is an index lookup.
pub async fn suppression(
    db: impl PgExecutor<'_>,
    naming: &Naming,
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    let key = naming
        .may_be_key()
        .then_some(naming.key_text.as_deref())
        .flatten();
    let (digests, legacy) = match naming.may_be_lookup() {
        true => (naming.lookup_digests.clone(), naming.legacy_hashes.clone()),
        false => (Vec::new(), Vec::new()),
    };
    sqlx::query_as(&format!(
        "SELECT id, completed_at FROM erasure.deletions \
         WHERE status = '{done}' AND (related_object_id = $1 \
           OR (NOT EXISTS (SELECT 1 FROM erasure.deletions k WHERE k.related_object_id = $1) AND ({names}))) \
         ORDER BY already_erased, completed_at DESC LIMIT 1",
        done = DeletionStatus::Done,
        names = super::store::lookup_names("$2", "$3"),
    ))
    .bind(key)
    .bind(digests)
    .bind(legacy)
    .fetch_optional(db)
    .await
}
