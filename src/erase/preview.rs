//! What an erasure of a customer would do, without doing it: the erasure statement's reading
//! twin ([`crate::plan::sql::count_statement`]: the same conditions, each change read as the
//! rows it would change) runs in a `READ ONLY` transaction with a statement timeout, so its
//! counts and the guard that would refuse it are the erasure's, no row is written or locked
//! (a business update to the customer never waits for a preview), and a preview that reads for
//! too long is stopped. The one write is an audit row of the preview itself (who looked at
//! whom, with the counts): one small row per call, and calls are rate-limited per key.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Eraser, Named};
use crate::deletion::audit::{Audit, AuditAction};
use crate::deletion::{self, ErrorKey};
use crate::identity::IdentifierType;
use crate::plan::sizes::Probing;
use crate::plan::sql::{RequestRow, Values};
use crate::request::Channel;

/// What an erasure would record.
#[derive(Clone, Debug)]
pub struct Preview {
    /// The customer's key.
    pub related_object_id: String,
    /// The counts the erasure would record, in the plan's order.
    pub data_json: Value,
    /// The guard that would refuse it, if one holds.
    pub blocked_by: Option<(ErrorKey, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no customer has this id or lookup value")]
    NotFound,
    #[error("the customer is being erased in chunks now; preview it once that ends")]
    Busy,
    #[error(
        "the identifier names more than one customer (by their lookup values); name the customer by its key"
    )]
    Ambiguous,
    /// It read for longer than `erasure.preview_timeout_ms` and was stopped.
    #[error("the preview took too long and was stopped; try again later")]
    TimedOut,
    #[error("{}", crate::db::SafeError(.0))]
    Database(#[from] sqlx::Error),
}

/// A row of the count statement.
#[derive(sqlx::FromRow)]
struct Counted {
    related_object_id: String,
    data_json: Value,
    error_key: Option<ErrorKey>,
    error_message: Option<String>,
}

impl Preview {
    /// The preview as the API and `erasure preview` show it.
    pub fn to_json(&self) -> Value {
        json!({
            "object": "permanent_deletion_preview",
            "related_object_id": self.related_object_id,
            "data_json": self.data_json,
            "blocked_by": self.blocked_by.as_ref().map(|(key, message)| json!({"key": key, "message": message})),
        })
    }
}

impl Eraser {
    /// Counts what erasing the customer `identifier` names would do, reading only; audits the
    /// preview, as asked by `requested_by` on `channel` (no API key: the command line).
    pub async fn preview(
        &self,
        identifier: &str,
        requested_by: &str,
        channel: Channel,
    ) -> Result<Preview, PreviewError> {
        self.preview_by(identifier, requested_by, None, channel)
            .await
    }

    /// [`Eraser::preview`], asked with the API key `key`, which its audit row names.
    pub async fn preview_by(
        &self,
        identifier: &str,
        requested_by: &str,
        key: Option<&crate::deletion::KeyRef>,
        channel: Channel,
    ) -> Result<Preview, PreviewError> {
        let inner = &self.inner;
        let now = Utc::now();
        let naming = inner.identity.naming(identifier, IdentifierType::Any);
        let request = RequestRow {
            customer: identifier,
            key: naming.key.clone(),
            kind: None,
            request_id: Uuid::new_v4(),
            deletion_id: deletion::new_id(),
            requested_hash: &naming.requested_hash,
            requested_by,
            reason: None,
            requested_at: now,
            due_at: deletion::due_at(now),
            channel,
            received_at: now,
        };
        let args = inner.count.arguments(&Values {
            requests: std::slice::from_ref(&request),
            pads: Some(inner.identity.hash().pads()),
            // Never too large for a preview: the whole erasure is counted, in one statement,
            // and nobody is probed for size.
            chunk_threshold: Some(i64::MAX),
            probing: Some(&Probing::none()),
            ..Values::default()
        })?;
        let mut tx = inner.pool.begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await?;
        let timeout = format!(
            "SET LOCAL statement_timeout = {}",
            inner.limits.preview_timeout.as_millis().max(1)
        );
        sqlx::query(&timeout).execute(&mut *tx).await?;
        let row: Option<Counted> = match sqlx::query_as_with(&inner.count.sql, args)
            .fetch_optional(&mut *tx)
            .await
        {
            Ok(row) => row,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => {
                return Err(PreviewError::TimedOut);
            }
            Err(e) => return Err(e.into()),
        };
        let named = match &row {
            Some(_) => Named::Nobody,
            None => {
                self.live_customer(&mut tx, identifier, &IdentifierType::Any, &naming)
                    .await?
            }
        };
        tx.rollback().await?;
        let Some(row) = row else {
            return Err(match named {
                Named::One(_) => PreviewError::Busy,
                Named::Several => PreviewError::Ambiguous,
                Named::Nobody => PreviewError::NotFound,
            });
        };
        // The counts in the plan's order, as a deletion object shows them.
        let data_json: serde_json::Map<String, Value> = self
            .count_keys()
            .iter()
            .map(|k| (k.clone(), row.data_json.get(k).cloned().unwrap_or(json!(0))))
            .collect();
        let preview = Preview {
            related_object_id: row.related_object_id,
            data_json: Value::Object(data_json),
            blocked_by: row
                .error_key
                .map(|key| (key, row.error_message.unwrap_or_default())),
        };
        let mut conn = inner.pool.acquire().await?;
        Audit::new(AuditAction::ErasurePreviewed, channel, now)
            .request(None, Some(requested_by))
            .key(key)
            .about_customer(&preview.related_object_id)
            .error(preview.blocked_by.as_ref().map(|(key, _)| *key))
            .detail(json!({ "counts": preview.data_json }))
            .append(&mut conn)
            .await?;
        Ok(preview)
    }
}
