//! The fresh look: what the erasure statement cannot see, one short transaction with a fresh
//! snapshot decides, for every request the statement found nothing to act on.

use serde_json::json;

use super::{EraseError, Eraser, Named, Outcome};
use crate::deletion::ErrorKey;
use crate::deletion::audit::{Audit, AuditAction};
use crate::deletion::claims;
use crate::deletion::completer::{self, FinalOutcome};
use crate::deletion::store::{self, Earlier, NewDeletion};
use crate::plan::sql::Values;
use crate::request::Received;

/// Why a request whose identifier matches the lookup values of several customers ends FAILED
/// `conflict` ([`crate::identity`]).
pub const NAMES_SEVERAL: &str = "the identifier names more than one customer (by their lookup values); \
     nothing was erased: name the customer by its key, or say which identifier it is (identifier_type)";

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
            if !prior.names(Some(received.requested_hash())) {
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

        let named = self.named_by(&mut tx, received).await?;
        if let Named::One(subject_id) = named {
            let claimed_by = claims::claimed_by(&mut tx, &subject_id).await?;
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

        let earlier = match named {
            Named::Several => Earlier::Ambiguous,
            _ => store::erased_earlier(&mut tx, &received.naming).await?,
        };
        let (related, outcome) = match earlier {
            Earlier::Erased {
                key,
                lookup_digests,
            } => (Some(key), FinalOutcome::already_erased(lookup_digests)),
            // The identifier names more than one customer: nobody is erased on a guess.
            Earlier::Ambiguous => (
                None,
                FinalOutcome::failed(ErrorKey::Conflict, NAMES_SEVERAL),
            ),
            // Unknown to this service: the identifier is nobody's data here, and is kept only
            // as its keyed hash (`requested_id_hash`), by which compliance staff find it.
            Earlier::Nobody => (
                None,
                FinalOutcome::failed(
                    ErrorKey::NotFound,
                    "no customer has this id or lookup value",
                ),
            ),
        };
        let new = NewDeletion::of(received).related(related.as_deref());
        let Some(row) = completer::complete(
            &mut tx,
            &new,
            &outcome,
            self.zero_counts(),
            self.plan_hash(),
            Audit::of(outcome.action(), received),
        )
        .await?
        else {
            // A concurrent delivery of this request finished first: the next round sees it.
            tx.rollback().await?;
            return Ok(Recheck::Again);
        };
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
