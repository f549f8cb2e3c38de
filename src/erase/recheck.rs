//! The fresh look: what the erasure statement cannot see, one short transaction with a fresh
//! snapshot decides, for every request the statement found nothing to act on.

use serde_json::json;
use uuid::Uuid;

use super::{EraseError, Eraser, Outcome};
use crate::deletion::ErrorKey;
use crate::deletion::audit::{Audit, AuditAction};
use crate::deletion::store::{self, FinalOutcome, NewDeletion};
use crate::plan::sql::Values;
use crate::request::Received;

/// What the fresh look found.
pub(super) enum Recheck {
    /// The request ended here (a duplicate, already erased, not found, a reused request id).
    Ended(Box<Outcome>),
    /// The customer is there: run the statement again.
    Again,
    /// The customer is too large for one statement (or this request already started on it in
    /// chunks): erase in chunks, then run the statement again.
    Chunked(String),
}

impl Eraser {
    pub(super) async fn recheck(&self, received: &Received) -> Result<Recheck, EraseError> {
        let inner = &self.inner;
        let request = &received.request;
        let mut tx = inner.pool.begin().await?;
        if let Some(prior) = store::prior(&mut *tx, received.request_id(), true).await? {
            if !prior.names(Some(&received.requested_hash)) {
                let message = "request_id was already used for another customer".to_string();
                Audit::of(AuditAction::RequestRejected, received)
                    .error(Some(ErrorKey::InvalidRequest))
                    .detail(json!({ "message": message }))
                    .append(&mut tx)
                    .await?;
                tx.commit().await?;
                return Ok(Recheck::Ended(Box::new(Outcome::Rejected {
                    message,
                    deletion: None,
                })));
            }
            if prior.row.is_final() {
                audit_duplicate(&mut tx, received, &prior.row).await?;
                tx.commit().await?;
                return Ok(Recheck::Ended(Box::new(Outcome::Duplicate(prior.row))));
            }
        }

        if let Some(subject_id) = self.live_customer(&mut tx, &request.customer_id).await? {
            let claimed_by: Option<Uuid> =
                sqlx::query_scalar("SELECT request_id FROM erasure.claims WHERE subject_id = $1")
                    .bind(&subject_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let args = inner.oversized.arguments(&Values {
                subject_id: Some(&subject_id),
                chunk_threshold: Some(inner.limits.chunk_threshold),
                ..Values::default()
            })?;
            let oversized: Option<bool> = sqlx::query_scalar_with(&inner.oversized.sql, args)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return match claimed_by {
                Some(other) if other != request.request_id => {
                    Err(EraseError::ClaimedByAnotherRequest(other))
                }
                Some(_) => Ok(Recheck::Chunked(subject_id)),
                None if oversized == Some(true) => Ok(Recheck::Chunked(subject_id)),
                None => Ok(Recheck::Again),
            };
        }

        let earlier =
            store::erased_earlier(&mut tx, &request.customer_id, &received.identifier_hashes())
                .await?;
        let (related, outcome) = match earlier {
            Some((customer, source_hash)) => (customer, FinalOutcome::already_erased(source_hash)),
            // Unknown to this service: the identifier is nobody's data here, and compliance
            // staff need to see what was asked for.
            None => (
                request.customer_id.clone(),
                FinalOutcome::failed(ErrorKey::NotFound, "no customer has this id or source id"),
            ),
        };
        let new = NewDeletion::of(received).related(Some(&related));
        let Some(row) = store::record_final(
            &mut tx,
            &new,
            &outcome,
            self.zero_counts(),
            self.plan_hash(),
        )
        .await?
        else {
            // A concurrent delivery of this request finished first: the next round sees it.
            tx.rollback().await?;
            return Ok(Recheck::Again);
        };
        Audit::of(AuditAction::outcome(row.status), received)
            .deletion(&row)
            .error(row.error_key)
            .detail(json!({ "counts": row.data_json, "already_erased": row.already_erased }))
            .append(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Recheck::Ended(Box::new(Outcome::Recorded(row))))
    }
}

/// Audits a repeat of a request whose outcome `prior` stands.
pub(super) async fn audit_duplicate(
    conn: &mut sqlx::PgConnection,
    received: &Received,
    prior: &crate::deletion::DeletionRow,
) -> Result<(), sqlx::Error> {
    Audit::of(AuditAction::RequestDuplicate, received)
        .deletion(prior)
        .detail(json!({ "status": prior.status }))
        .append(conn)
        .await
}
