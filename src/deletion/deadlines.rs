//! Deadlines (GDPR Art. 12(3)): a request is owed to the data subject until it is carried out,
//! and is due one calendar month after it was asked (`due_at`), or later where the deadline was
//! extended (`extended_due_at`, at most three months after it was asked, recorded within the
//! first month with the reason given to the person). What the console's deadline views read, as
//! SQL conditions on `erasure.deletions` (aliased `d`), and the one write of an extension.
//!
//! Owed: PENDING or IN_PROGRESS; or FAILED and unresolved: no request retried it
//! (`retry_of`), and no later request erased the same customer (recorded on the deletion as
//! `resolved_by` when either happens).

use chrono::{DateTime, Months, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::audit::{Audit, AuditAction};
use super::{DeletionRow, DeletionStatus, KeyRef, read_columns};
use crate::request::Channel;
use crate::text_enum::text_enum;

/// The longest a deadline may be extended to: three calendar months after the request was asked
/// (one month, and two more).
pub const MAX_MONTHS: u32 = 3;

/// A deletion's deadline as it stands: extended, or one month after it was asked (SQL, `d`).
pub const EFFECTIVE_DUE: &str = "COALESCE(d.extended_due_at, d.due_at)";

/// The condition that deletion `d` is still owed to the data subject. Whether a FAILED one was
/// resolved (retried, or its customer erased by a later request) is recorded on it by a trigger
/// (`resolved_by`, migration 20261205000002): the condition is that of the partial index
/// `deletions_owed_idx`, word for word, so that the planner reads what is owed from it.
pub fn owed() -> String {
    format!(
        "(d.status IN {open} OR (d.status = '{failed}' AND d.resolved_by IS NULL))",
        open = DeletionStatus::sql_list(DeletionStatus::OPEN),
        failed = DeletionStatus::Failed,
    )
}

text_enum! {
    /// Where a deletion stands against its deadline, as the console filters by it.
    pub enum Deadline {
        /// Owed, and its deadline has passed.
        Overdue = "overdue",
        /// Owed, and due within seven days.
        DueSoon = "due_soon",
        /// DONE after its deadline.
        Late = "late",
    }
}

impl Deadline {
    /// The condition on deletion `d`.
    pub fn condition(self) -> String {
        match self.among_owed() {
            Some(due) => format!("({} AND {due})", owed()),
            None => format!(
                "(d.status = '{}' AND d.completed_at > {EFFECTIVE_DUE})",
                DeletionStatus::Done
            ),
        }
    }

    /// For the deadlines of what is owed (overdue, due soon), the condition on the deadline
    /// alone: what a read of the owed deletions adds. It names the deadline's columns only, so
    /// that a count of it reads the index of what is owed without the table.
    pub fn among_owed(self) -> Option<String> {
        match self {
            Deadline::Overdue => Some(format!("{EFFECTIVE_DUE} < now()")),
            Deadline::DueSoon => Some(format!(
                "{EFFECTIVE_DUE} >= now() AND {EFFECTIVE_DUE} < now() + interval '7 days'"
            )),
            Deadline::Late => None,
        }
    }

    /// What the console calls it.
    pub fn label(self) -> &'static str {
        match self {
            Deadline::Overdue => "Overdue",
            Deadline::DueSoon => "Due within 7 days",
            Deadline::Late => "Completed late",
        }
    }
}

/// The latest a deadline may be extended to for a request asked at `requested_at`.
pub fn latest_extension(requested_at: DateTime<Utc>) -> DateTime<Utc> {
    requested_at
        .checked_add_months(Months::new(MAX_MONTHS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How an extension ended.
#[derive(Debug)]
pub enum Extended {
    /// Recorded: the deletion as it is now.
    Extended(Box<DeletionRow>),
    /// Not allowed any more, and why: the deletion is no longer owed, or its first month has
    /// passed.
    TooLate(String),
    /// The new date is not after the due date, or is past three months after the request.
    OutOfBounds(String),
    NotFound,
}

/// Extends the deadline of the deletion with this `del_` id or request id to `to`, for `reason`,
/// on the authority of the API key `key` (named `by`): allowed while the request is owed, within
/// its first month, to a date after its due date and at most [`MAX_MONTHS`] months after it was
/// asked. Records `extended_due_at`, the reason (a note), and an audit row naming the key, the
/// new date and the note, in one transaction.
pub async fn extend(
    pool: &PgPool,
    id_or_request_id: &str,
    to: DateTime<Utc>,
    reason: &str,
    by: &str,
    key: &KeyRef,
) -> Result<Extended, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(row) = super::store::lock(&mut *tx, id_or_request_id).await? else {
        return Ok(Extended::NotFound);
    };
    let owed: bool = sqlx::query_scalar(&format!(
        "SELECT {} FROM erasure.deletions d WHERE d.id = $1",
        owed()
    ))
    .bind(&row.id)
    .fetch_one(&mut *tx)
    .await?;
    let now = Utc::now();
    let latest = latest_extension(row.requested_at);
    let refused = if !owed {
        Some(Extended::TooLate(format!(
            "the deletion is {} and owes the data subject nothing more: only an open or unresolved FAILED request has a deadline to extend",
            row.status
        )))
    } else if now > row.due_at {
        Some(Extended::TooLate(format!(
            "the first month ended at {}: GDPR Art. 12(3) allows an extension only when the person is told within the first month",
            super::auto(row.due_at)
        )))
    } else if to <= row.due_at || to > latest {
        Some(Extended::OutOfBounds(format!(
            "the new deadline must be after the due date ({}) and at most three months after the request was asked ({})",
            super::auto(row.due_at),
            super::auto(latest)
        )))
    } else {
        None
    };
    if let Some(refused) = refused {
        return Ok(refused);
    }
    let note = note(&mut tx, &row.id, AuditAction::ErasureExtended, reason, key).await?;
    let row: DeletionRow = sqlx::query_as(&format!(
        "UPDATE erasure.deletions SET extended_due_at = $2 WHERE id = $1 RETURNING {}",
        read_columns()
    ))
    .bind(&row.id)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    Audit::new(AuditAction::ErasureExtended, Channel::Http, now)
        .request(Some(row.request_id), Some(by))
        .key(Some(key))
        .deletion(&row)
        .detail(json!({
            "extended_due_at": super::auto(to),
            "due_at": super::auto(row.due_at),
            "note": note.id,
            "reason_sha256": note.reason_sha256,
        }))
        .append(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(Extended::Extended(Box::new(row)))
}

/// A note recorded: its id, and the SHA-256 (hex) of its reason, which the audit row carries.
pub struct Noted {
    pub id: i64,
    pub reason_sha256: String,
}

/// Records why `key` took `action` on deletion `deletion_id`, in the caller's transaction.
pub async fn note(
    conn: &mut sqlx::PgConnection,
    deletion_id: &str,
    action: AuditAction,
    reason: &str,
    key: &KeyRef,
) -> Result<Noted, sqlx::Error> {
    use sha2::{Digest, Sha256};
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO erasure.deletion_notes (deletion_id, action, reason, key_id, key_name) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(deletion_id)
    .bind(action)
    .bind(reason)
    .bind(&key.id)
    .bind(&key.name)
    .fetch_one(conn)
    .await?;
    Ok(Noted {
        id,
        reason_sha256: crate::canonical::hex(&Sha256::digest(reason.as_bytes())),
    })
}

/// Whether deletion `deletion_id` is still owed to the data subject, and the request that
/// retries it, if one does.
pub async fn standing(
    pool: &PgPool,
    deletion_id: &str,
) -> Result<(bool, Option<String>), sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {}, (SELECT r.id FROM erasure.deletions r WHERE r.retry_of = d.id) \
         FROM erasure.deletions d WHERE d.id = $1",
        owed()
    ))
    .bind(deletion_id)
    .fetch_one(pool)
    .await
}

/// A note as the console shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Note {
    pub id: i64,
    pub action: String,
    pub reason: String,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub noted_at: DateTime<Utc>,
}

/// The notes of a deletion, oldest first.
pub async fn notes(pool: &PgPool, deletion_id: &str) -> Result<Vec<Note>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, action, reason, key_id, key_name, noted_at FROM erasure.deletion_notes \
         WHERE deletion_id = $1 ORDER BY id",
    )
    .bind(deletion_id)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_extension_reaches_three_calendar_months_after_the_request() {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
        assert_eq!(
            latest_extension(at),
            Utc.with_ymd_and_hms(2027, 2, 28, 9, 0, 0).unwrap()
        );
    }
}
