//! Requests that end without an erasure: messages that are not valid requests, requests that
//! keep coming back without an outcome (poison), and erasures that cannot succeed as things
//! are. Each is recorded (FAILED, with the reason) and audited, then dead-lettered by the
//! caller.

use backon::Retryable;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::{EraseError, Eraser, Named, Outcome};
use crate::db::may_pass;
use crate::deletion::ErrorKey;
use crate::deletion::audit::{Audit, AuditAction};
use crate::deletion::claims;
use crate::deletion::completer::{self, FinalOutcome};
use crate::deletion::store::Earlier;
use crate::deletion::store::{self, NewDeletion};
use crate::identity::{IdentifierType, Naming};
use crate::request::{Channel, InvalidRequest, Received};

impl Eraser {
    /// Counts one more delivery of a redelivered request that has no final outcome, marking its
    /// deletion IN_PROGRESS; returns how many redeliveries have started, or `None` when the
    /// request already has a final outcome (or its id belongs to another customer) and the
    /// erasure will say so. Only redeliveries pay this round trip: a message delivered again
    /// and again without an outcome is what a request that crashes the worker looks like.
    pub async fn count_redelivery(&self, received: &Received) -> Result<Option<u32>, EraseError> {
        let mut conn = self.inner.pool.acquire().await?;
        let attempts = store::mark_in_progress(&mut conn, &NewDeletion::of(received), 1).await?;
        Ok(attempts.map(|n| n.max(0) as u32))
    }

    /// Ends a request that keeps coming back without an outcome: FAILED `internal`, to be
    /// dead-lettered.
    pub async fn stop_poison(
        &self,
        received: &Received,
        deliveries: u32,
    ) -> Result<Outcome, EraseError> {
        let message = format!(
            "the request was delivered {deliveries} times and never finished (the worker stopped \
             or crashed while carrying it out); it is stopped as a poison message"
        );
        tracing::error!(request_id = %received.request_id(), deliveries, "poison message stopped");
        self.record_failure(received, ErrorKey::Internal, &message)
            .await
    }

    /// Audits a message that is not a valid request and, when it carries a request id not seen
    /// before (or an open deletion of the same customer), records it FAILED `invalid_request`.
    pub async fn reject(
        &self,
        invalid: &InvalidRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        size: usize,
    ) -> Result<Outcome, EraseError> {
        let attempt = || self.reject_once(invalid, channel, received_at, size);
        Ok(attempt.retry(self.backoff()).when(may_pass).await?)
    }

    async fn reject_once(
        &self,
        invalid: &InvalidRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        size: usize,
    ) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.inner.pool.begin().await?;
        let mut deletion = None;
        let rejected = || {
            Audit::new(AuditAction::RequestRejected, channel, received_at)
                .request(invalid.request_id, invalid.requested_by.as_deref())
                .error(Some(ErrorKey::InvalidRequest))
                .detail(json!({ "message": invalid.message, "bytes": size }))
        };
        if let Some(request_id) = invalid.request_id {
            let identity = &self.inner.identity;
            let naming = invalid
                .customer_id
                .as_deref()
                .map(|c| (c, identity.naming(c, IdentifierType::Any)));
            let requested_hash = naming.as_ref().map(|(_, n)| n.requested_hash.clone());
            // A final outcome stands, and a bad message naming another customer (or none)
            // under a request id already taken cannot touch that request. But an open deletion
            // of the same customer (accepted over HTTP, then refused here, by a worker whose
            // rules are stricter than those of the process that accepted it, say) ends FAILED
            // with the reason: nothing else would ever end it.
            let may_record = match store::prior(&mut *tx, request_id, true).await? {
                None => true,
                Some(prior) => !prior.row.is_final() && prior.names(requested_hash.as_deref()),
            };
            if may_record {
                let related = match &naming {
                    Some((customer, naming)) => {
                        self.resolve_customer(&mut tx, customer, naming).await?
                    }
                    None => None,
                };
                let new = NewDeletion::of_invalid(
                    invalid,
                    request_id,
                    requested_hash.as_deref(),
                    channel,
                    received_at,
                )
                .related(related.as_deref());
                let outcome = FinalOutcome::failed(ErrorKey::InvalidRequest, &invalid.message);
                deletion = completer::complete(
                    &mut tx,
                    &new,
                    &outcome,
                    self.zero_counts(),
                    self.plan_hash(),
                    rejected(),
                )
                .await?;
            }
        }
        if deletion.is_none() {
            // Nothing recorded (the request id has an outcome, or none could be read): the
            // message is audited alone.
            rejected().append(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Outcome::Rejected {
            message: invalid.message.clone(),
            deletion,
        })
    }

    /// Records FAILED (`internal`, or `plan_gap`) for a request whose erasure cannot succeed as
    /// things are.
    pub(super) async fn record_failure(
        &self,
        received: &Received,
        key: ErrorKey,
        message: &str,
    ) -> Result<Outcome, EraseError> {
        loop {
            if let Some(outcome) = self.try_record_failure(received, key, message).await? {
                return Ok(outcome);
            }
        }
    }

    /// `None`: another delivery recorded a final outcome meanwhile; try again to see it.
    async fn try_record_failure(
        &self,
        received: &Received,
        key: ErrorKey,
        message: &str,
    ) -> Result<Option<Outcome>, sqlx::Error> {
        let mut tx = self.inner.pool.begin().await?;
        if let Some(prior) = store::prior(&mut *tx, received.request_id(), true).await?
            && prior.row.is_final()
        {
            super::recheck::audit_duplicate(&mut tx, received, &prior.row).await?;
            tx.commit().await?;
            return Ok(Some(Outcome::Duplicate(prior.row)));
        }
        let related = self
            .resolve_customer(&mut tx, &received.request.customer_id, &received.naming)
            .await?;
        claims::release(&mut tx, received.request_id()).await?;
        let new = NewDeletion::of(received).related(related.as_deref());
        let outcome = FinalOutcome::failed(key, message);
        let audit =
            Audit::of(AuditAction::ErasureFailed, received).detail(json!({ "message": message }));
        let Some(row) = completer::complete(
            &mut tx,
            &new,
            &outcome,
            self.zero_counts(),
            self.plan_hash(),
            audit,
        )
        .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(Outcome::Stopped(row)))
    }

    /// The customer key to record for `identifier` (read as `naming` says): the live
    /// customer's key, or the key of a customer an earlier deletion erased; `None` when it names
    /// nobody here (or more than one), so that an identifier that named nobody is never kept in
    /// clear (its keyed hash is, as `requested_id_hash`).
    async fn resolve_customer(
        &self,
        conn: &mut PgConnection,
        identifier: &str,
        naming: &Naming,
    ) -> Result<Option<String>, sqlx::Error> {
        match self
            .live_customer(conn, identifier, &naming.kind, naming)
            .await?
        {
            Named::One(key) => return Ok(Some(key)),
            Named::Several => return Ok(None),
            Named::Nobody => {}
        }
        Ok(match store::erased_earlier(conn, naming).await? {
            Earlier::Erased { key, .. } => Some(key),
            Earlier::Ambiguous | Earlier::Nobody => None,
        })
    }
}
