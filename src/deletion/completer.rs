//! The one writer of a deletion's end outside the erasure statement (which ends the requests
//! of a batch in its own SQL, [`super::statement`]): a final outcome is written together with
//! its audit row, the outcome event it owes the broker and, for a DONE deletion, the check after
//! commit it owes, in the caller's transaction. Nothing else writes a final status.

use serde_json::{Value, json};
use sqlx::PgConnection;

use super::audit::{Audit, AuditAction};
use super::store::{NEW_COLUMNS, NewDeletion, add, new_values, open};
use super::{COLUMNS, DeletionRow, DeletionStatus, ErrorKey};

/// How a request ended, when it ends outside the erasure statement.
#[derive(Clone, Debug)]
pub struct FinalOutcome {
    pub status: DeletionStatus,
    pub already_erased: bool,
    pub error: Option<(ErrorKey, String)>,
    /// The keyed hashes of the erased customer's lookup values, when an earlier deletion kept
    /// them.
    pub lookup_digests: Option<Vec<Vec<u8>>>,
}

impl FinalOutcome {
    pub fn failed(key: ErrorKey, message: impl Into<String>) -> Self {
        Self {
            status: DeletionStatus::Failed,
            already_erased: false,
            error: Some((key, message.into())),
            lookup_digests: None,
        }
    }

    /// DONE with nothing erased: an earlier deletion erased the customer already.
    pub fn already_erased(lookup_digests: Option<Vec<Vec<u8>>>) -> Self {
        Self {
            status: DeletionStatus::Done,
            already_erased: true,
            error: None,
            lookup_digests,
        }
    }

    /// The audit action recording it (a cancel is not a final outcome of an erasure: it has
    /// its own writer, [`cancel`]).
    pub fn action(&self) -> AuditAction {
        match self.status {
            DeletionStatus::Done => AuditAction::ErasureDone,
            _ => AuditAction::ErasureFailed,
        }
    }
}

/// Ends the deletion of `new` with `outcome` (adding `counts` to what chunks counted before), and
/// appends `audit` about it (its detail, unless the caller gave one: the counts recorded and
/// whether the customer was erased already). `None`: the request already has a final outcome
/// (another delivery recorded it first), which stands, and nothing was written.
pub async fn complete(
    conn: &mut PgConnection,
    new: &NewDeletion<'_>,
    outcome: &FinalOutcome,
    counts: Value,
    plan_hash: &str,
    audit: Audit<'_>,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    let Some(row) = record_final(conn, new, outcome, counts, plan_hash).await? else {
        return Ok(None);
    };
    let audit = match audit.has_detail() {
        true => audit,
        false => {
            audit.detail(json!({ "counts": row.data_json, "already_erased": row.already_erased }))
        }
    };
    audit
        .deletion(&row)
        .error(row.error_key)
        .append(conn)
        .await?;
    Ok(Some(row))
}

/// Ends the PENDING deletion `deletion_id` CANCELED (the caller holds its row lock and has seen
/// it PENDING), with `audit` about it and its `deletion.canceled` event owed to the broker.
pub async fn cancel(
    conn: &mut PgConnection,
    deletion_id: &str,
    audit: Audit<'_>,
) -> Result<DeletionRow, sqlx::Error> {
    let row: DeletionRow = sqlx::query_as(&format!(
        "WITH d AS (UPDATE erasure.deletions SET status = '{canceled}', completed_at = clock_timestamp(), \
           pending_message = NULL WHERE id = $1 RETURNING {COLUMNS}), \
         owed AS (INSERT INTO erasure.event_outbox (deletion_id) SELECT id FROM d) \
         SELECT * FROM d",
        canceled = DeletionStatus::Canceled,
    ))
    .bind(deletion_id)
    .fetch_one(&mut *conn)
    .await?;
    audit.deletion(&row).append(conn).await?;
    Ok(row)
}

/// Records a final outcome, adding `counts` to what chunks counted before. `None`: the request
/// already has a final outcome (another delivery recorded it first), which stands.
async fn record_final(
    conn: &mut PgConnection,
    new: &NewDeletion<'_>,
    outcome: &FinalOutcome,
    counts: Value,
    plan_hash: &str,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    // The outcome's event is owed to the broker in the same transaction (see crate::outbox).
    let sql = format!(
        "WITH d AS (INSERT INTO erasure.deletions AS d ({NEW_COLUMNS}, lookup_digests, status, data_json, \
           already_erased, error_key, error_message, completed_at, attempts, plan_hash, started_at) \
         VALUES ({}, $10, $11, $12, $13, $14, $15, clock_timestamp(), 1, $16, now()) \
         ON CONFLICT (request_id) DO UPDATE SET related_object_id = EXCLUDED.related_object_id, \
           lookup_digests = EXCLUDED.lookup_digests, status = EXCLUDED.status, \
           data_json = (SELECT COALESCE(jsonb_object_agg(k, COALESCE((d.data_json ->> k)::bigint, 0) \
             + COALESCE((EXCLUDED.data_json ->> k)::bigint, 0)), '{{}}'::jsonb) \
             FROM jsonb_object_keys(d.data_json || EXCLUDED.data_json) k), \
           already_erased = EXCLUDED.already_erased, \
           error_key = EXCLUDED.error_key, error_message = EXCLUDED.error_message, \
           completed_at = EXCLUDED.completed_at, attempts = d.attempts + 1, pending_message = NULL, \
           plan_hash = EXCLUDED.plan_hash, started_at = COALESCE(d.started_at, EXCLUDED.started_at) \
         WHERE d.status IN {open} \
         RETURNING {COLUMNS}), \
         owed AS (INSERT INTO erasure.event_outbox (deletion_id) SELECT id FROM d), \
         to_verify AS (INSERT INTO erasure.verification_queue (deletion_id) \
           SELECT id FROM d WHERE status = '{done}') \
         SELECT * FROM d",
        new_values("$3"),
        open = open(),
        done = DeletionStatus::Done,
    );
    let mut args = new.arguments()?;
    add(&mut args, outcome.lookup_digests.as_deref())?;
    add(&mut args, outcome.status)?;
    add(&mut args, counts)?;
    add(&mut args, outcome.already_erased)?;
    add(&mut args, outcome.error.as_ref().map(|(key, _)| *key))?;
    add(&mut args, outcome.error.as_ref().map(|(_, m)| m.as_str()))?;
    add(&mut args, plan_hash)?;
    sqlx::query_as_with(&sql, args).fetch_optional(conn).await
}
