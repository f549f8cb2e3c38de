//! The audit trail, `erasure.audit_log`: one row per outcome, duplicate and rejected message,
//! append-only (a trigger refuses changes). It holds ids, outcomes, error keys, timings and who
//! asked, never a customer's personal data. Every row is written here, through [`Audit`], or by
//! the erasure statement's audit step ([`super::statement::audit`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{DeletionRow, ErrorKey};
use crate::request::{Channel, Received};
use crate::text_enum::text_enum;

text_enum! {
    /// What an audit row records.
    pub enum AuditAction {
        /// A request erased its customer (or found it erased already).
        ErasureDone = "erasure.done",
        /// A request ended FAILED.
        ErasureFailed = "erasure.failed",
        /// A request came again after its outcome was recorded; the outcome stands.
        RequestDuplicate = "request.duplicate",
        /// A message was not a valid request, or reused a request id for another customer.
        RequestRejected = "request.rejected",
        /// What an erasure would do was shown (and nothing done).
        ErasurePreviewed = "erasure.previewed",
        /// A PENDING request was withdrawn.
        ErasureCanceled = "erasure.canceled",
        /// The deadline of a request was extended (GDPR Art. 12(3)); the reason is a note.
        ErasureExtended = "erasure.extended",
        /// A FAILED request was tried again as a new request (`retry_of`); the reason is a note.
        ErasureRetried = "erasure.retried",
        /// Rows the customer referenced, kept by its erasure because something used them, were
        /// found unused by the check after commit and cleared.
        ReferencedSwept = "erasure.swept",
    }
}

/// One audit row, built from what it is about.
#[derive(Clone, Debug)]
pub struct Audit<'a> {
    action: AuditAction,
    channel: Channel,
    received_at: DateTime<Utc>,
    request_id: Option<Uuid>,
    requested_by: Option<&'a str>,
    deletion_id: Option<&'a str>,
    related_object_id: Option<&'a str>,
    error_key: Option<ErrorKey>,
    /// The API key the row's action was taken on the authority of (id, name).
    key: Option<(&'a str, &'a str)>,
    detail: Value,
}

impl<'a> Audit<'a> {
    /// A row about a message received on `channel` at `received_at`.
    pub fn new(action: AuditAction, channel: Channel, received_at: DateTime<Utc>) -> Self {
        Self {
            action,
            channel,
            received_at,
            request_id: None,
            requested_by: None,
            deletion_id: None,
            related_object_id: None,
            error_key: None,
            key: None,
            detail: Value::Object(Default::default()),
        }
    }

    /// A row about the valid request `received`.
    pub fn of(action: AuditAction, received: &'a Received) -> Self {
        Self::new(action, received.channel, received.received_at).request(
            Some(received.request_id()),
            Some(&received.request.requested_by),
        )
    }

    pub fn request(self, request_id: Option<Uuid>, requested_by: Option<&'a str>) -> Self {
        Self {
            request_id,
            requested_by,
            ..self
        }
    }

    /// Names the deletion the row is about, and its customer; and, unless the row names the key
    /// that acted already, the key that submitted the deletion.
    pub fn deletion(self, row: &'a DeletionRow) -> Self {
        let submitted_by = row
            .requested_by_key_id
            .as_deref()
            .zip(row.requested_by_key_name.as_deref());
        Self {
            deletion_id: Some(&row.id),
            related_object_id: row.related_object_id.as_deref(),
            key: self.key.or(submitted_by),
            ..self
        }
    }

    /// Names the API key that acted (`None`: no key, as from the queue or the command line).
    pub fn key(self, key: Option<&'a super::KeyRef>) -> Self {
        Self {
            key: key.map(|k| (k.id.as_str(), k.name.as_str())),
            ..self
        }
    }

    /// Names the customer the row is about, where no deletion is.
    pub fn about_customer(self, related_object_id: &'a str) -> Self {
        Self {
            related_object_id: Some(related_object_id),
            ..self
        }
    }

    pub fn error(self, key: Option<ErrorKey>) -> Self {
        Self {
            error_key: key,
            ..self
        }
    }

    /// What else the row says: counts, a reason, a size; nothing that names a person.
    pub fn detail(self, detail: Value) -> Self {
        Self { detail, ..self }
    }

    /// Whether a detail was given.
    pub fn has_detail(&self) -> bool {
        self.detail.as_object().is_none_or(|d| !d.is_empty())
    }

    /// Appends the row, in the caller's transaction.
    pub async fn append(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO erasure.audit_log (received_at, action, request_id, deletion_id, \
               related_object_id, channel, requested_by, error_key, detail, key_id, key_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(self.received_at)
        .bind(self.action)
        .bind(self.request_id)
        .bind(self.deletion_id)
        .bind(self.related_object_id)
        .bind(self.channel)
        .bind(self.requested_by)
        .bind(self.error_key)
        .bind(&self.detail)
        .bind(self.key.map(|(id, _)| id))
        .bind(self.key.map(|(_, name)| name))
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Audits the sweep of referenced rows kept by deletion `deletion_id` (`swept`: rows cleared by
/// table), on the deletion's own request and channel.
pub async fn swept(
    conn: &mut PgConnection,
    deletion_id: &str,
    swept: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO erasure.audit_log (received_at, action, request_id, deletion_id, related_object_id, channel, detail, \
           key_id, key_name) \
         SELECT now(), '{}', d.request_id, d.id, d.related_object_id, d.channel, jsonb_build_object('swept', $2::jsonb), \
           d.requested_by_key_id, d.requested_by_key_name \
         FROM erasure.deletions d WHERE d.id = $1",
        AuditAction::ReferencedSwept
    ))
    .bind(deletion_id)
    .bind(swept)
    .execute(conn)
    .await?;
    Ok(())
}
