//! A deletion's life before it is carried out: held for the grace period
//! (`erasure.grace_period`), and withdrawn while PENDING. Writes `erasure.deletions`,
//! `erasure.audit_log` and `erasure.event_outbox`, beside [`super::store`].

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::audit::{Audit, AuditAction};
use super::due_at;
use super::store::NewDeletion;
use super::{DeletionRow, DeletionStatus};
use crate::request::{Channel, InvalidRequest, Received};

/// Where a request stands against its grace period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Carry it out now (no grace period, its hold has passed, or it has already ended).
    Now,
    /// Hold it until then.
    Until(DateTime<Utc>),
}

/// Records the request PENDING with `scheduled_at` the first time it is seen (an HTTP
/// submission records it on intake); a later sight keeps the first time, so that restarts,
/// reconnects and redeliveries never move it. Says whether to carry it out now.
pub async fn schedule(
    conn: &mut PgConnection,
    new: &NewDeletion<'_>,
    scheduled_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Schedule, sqlx::Error> {
    let (sql, mut args) = new.insert(
        &format!(
            "INSERT INTO erasure.deletions AS d ({{columns}}, status, scheduled_at) \
             VALUES ({{values}}, '{pending}', $10) \
             ON CONFLICT (request_id) DO UPDATE SET scheduled_at = COALESCE(d.scheduled_at, EXCLUDED.scheduled_at) \
             WHERE d.status IN {open} AND d.requested_id_hash = EXCLUDED.requested_id_hash \
             RETURNING d.scheduled_at",
            pending = DeletionStatus::Pending,
            open = DeletionStatus::sql_list(DeletionStatus::OPEN),
        ),
        "$3",
    )?;
    super::store::add(&mut args, scheduled_at)?;
    let at: Option<Option<DateTime<Utc>>> = sqlx::query_scalar_with(&sql, args)
        .fetch_optional(conn)
        .await?;
    Ok(match at.flatten() {
        Some(at) if at > now => Schedule::Until(at),
        // Ended already, or its id names another customer: the erasure path says which.
        _ => Schedule::Now,
    })
}

/// The refusal of a request (`received`) held until `scheduled_at` for the grace period `grace`
/// when that is after its due date, as invalid: a request must be carried out within a month of
/// when it was asked. `None` when the hold fits. The one rule for the HTTP intake and the worker.
pub fn past_due(
    received: &Received,
    scheduled_at: DateTime<Utc>,
    grace: crate::config::GracePeriod,
) -> Option<InvalidRequest> {
    let due = due_at(received.requested_at());
    if scheduled_at <= due {
        return None;
    }
    let request = &received.request;
    Some(InvalidRequest {
        message: format!(
            "the grace period ({} s) would end after the request's due date ({}): a request must be carried out within a month of requested_at",
            grace.0.as_secs(),
            due.to_rfc3339()
        ),
        request_id: Some(request.request_id),
        customer_id: Some(request.customer_id.clone()),
        requested_by: Some(request.requested_by.clone()),
        requested_at: Some(received.requested_at()),
    })
}

/// Records, in the caller's transaction, that the FAILED deletion `failed` was retried as
/// `retry` on the authority of the API key `key` (named `by`), for `reason`: an audit row on the
/// FAILED deletion naming the key, the retry and the note that keeps the reason.
pub async fn record_retry(
    conn: &mut PgConnection,
    failed: &DeletionRow,
    retry: &DeletionRow,
    reason: &str,
    by: &str,
    key: &super::KeyRef,
) -> Result<(), sqlx::Error> {
    let note =
        super::deadlines::note(conn, &failed.id, AuditAction::ErasureRetried, reason, key).await?;
    Audit::new(AuditAction::ErasureRetried, Channel::Http, Utc::now())
        .request(Some(failed.request_id), Some(by))
        .key(Some(key))
        .deletion(failed)
        .detail(serde_json::json!({
            "retry": retry.id,
            "note": note.id,
            "reason_sha256": note.reason_sha256,
        }))
        .append(conn)
        .await
}

/// How a cancel ended.
#[derive(Debug)]
pub enum Canceled {
    /// Canceled now, or already: the deletion as it is.
    Canceled(DeletionRow),
    /// Too late: IN_PROGRESS, DONE or FAILED.
    TooLate(DeletionRow),
    NotFound,
}

/// Cancels the PENDING deletion with this `del_` id or request id on the authority of the API
/// key `key` (named `canceled_by`), for `reason` where one was given: CANCELED, with an audit
/// row naming the key (and the note that keeps the reason), and its `deletion.canceled` event
/// owed to the broker, in one transaction. The row lock makes
/// a cancel and an erasure of the same request exclusive: whichever commits first stands, and
/// the other finds the deletion ended.
pub async fn cancel(
    pool: &PgPool,
    id_or_request_id: &str,
    canceled_by: &str,
    key: &super::KeyRef,
    reason: Option<&str>,
) -> Result<Canceled, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(row) = super::store::lock(&mut *tx, id_or_request_id).await? else {
        return Ok(Canceled::NotFound);
    };
    match row.status {
        DeletionStatus::Canceled => return Ok(Canceled::Canceled(row)),
        DeletionStatus::Pending => {}
        _ => return Ok(Canceled::TooLate(row)),
    }
    let mut audit = Audit::new(AuditAction::ErasureCanceled, Channel::Http, Utc::now())
        .request(Some(row.request_id), Some(canceled_by))
        .key(Some(key));
    if let Some(reason) = reason {
        let note =
            super::deadlines::note(&mut tx, &row.id, AuditAction::ErasureCanceled, reason, key)
                .await?;
        audit = audit.detail(serde_json::json!({
            "note": note.id,
            "reason_sha256": note.reason_sha256,
        }));
    }
    let row = super::completer::cancel(&mut tx, &row.id, audit).await?;
    tx.commit().await?;
    Ok(Canceled::Canceled(row))
}
