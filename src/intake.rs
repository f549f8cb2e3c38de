//! Requests accepted over HTTP: recorded first, published second.
//!
//! A submission writes the deletion object in status PENDING together with the request message
//! (`pending_message`), commits, and only then publishes with a publisher confirm. Once the
//! commit is done the request cannot be lost: if the publish fails or the process dies before
//! it, the relay in [`crate::outbox`] publishes the stored message later. The message is
//! cleared once the broker has it, or when the deletion ends.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::broker::Publisher;
use crate::config::GracePeriod;
use crate::deletion::store::{self, PendingInsert};
use crate::deletion::{DeletionRow, KeyRef};
use crate::plan::Plan;
use crate::request::{ErasureRequest, Received};

/// How long a submission waits for the broker before leaving the message to the relay.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Intake {
    pool: PgPool,
    insert: Arc<PendingInsert>,
    publisher: Arc<Publisher>,
    grace_period: GracePeriod,
}

/// Who submits a request, beyond what the request says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Submission<'a> {
    /// The API key that submits it (over the API or the console).
    pub key: Option<&'a KeyRef>,
    /// A retry: the FAILED deletion it tries again, why, and who asked.
    pub retry: Option<Retry<'a>>,
}

/// A request that tries a FAILED one again.
#[derive(Clone, Copy, Debug)]
pub struct Retry<'a> {
    pub failed: &'a DeletionRow,
    pub reason: &'a str,
    pub by: &'a str,
}

#[derive(Debug)]
pub enum Submitted {
    /// A new deletion object, PENDING.
    Accepted(DeletionRow),
    /// The request id was seen before, for the same customer: its deletion object as it is now.
    Existing(DeletionRow),
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the request id was already used for another customer")]
    ReusedForAnotherCustomer,
    /// The FAILED deletion was retried already (a deletion is retried once; a retry that fails
    /// is retried in its turn).
    #[error("the deletion was retried already")]
    RetriedAlready,
    /// The grace period would end after the request's due date.
    #[error("{}", .0.message)]
    PastDue(crate::request::InvalidRequest),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Intake {
    pub fn new(
        pool: PgPool,
        plan: &Plan,
        publisher: Arc<Publisher>,
        grace_period: GracePeriod,
    ) -> Self {
        // The identifier's reading as a key, bound as text and cast here, never the column.
        let key = format!("CAST($11::text AS {})", plan.facts.key_type.sql());
        let named = crate::plan::sql::subject_by_identifier(plan, "$3", &key, "$13::text", None);
        let subject_key = format!("(SELECT i.key FROM {named} i)");
        Self {
            pool,
            insert: Arc::new(PendingInsert::new(&subject_key)),
            publisher,
            grace_period,
        }
    }

    pub fn publisher(&self) -> Arc<Publisher> {
        self.publisher.clone()
    }

    /// Records `received` as PENDING (with a grace period, scheduled for when it ends) and
    /// publishes it. `Accepted` means the request is durable.
    pub async fn submit(
        &self,
        received: &Received,
        submission: Submission<'_>,
    ) -> Result<Submitted, SubmitError> {
        let request = &received.request;
        let scheduled_at = match (self.grace_period.is_zero(), submission.retry) {
            (true, _) => None,
            // A retry was held once already, as the request it tries again: it goes now (and
            // its due date, that of the request, may have passed).
            (false, Some(_)) => Some(received.received_at),
            (false, None) => Some(received.received_at + self.grace_period.chrono()),
        };
        let past_due = scheduled_at
            .filter(|_| submission.retry.is_none())
            .and_then(|at| crate::deletion::lifecycle::past_due(received, at, self.grace_period));
        if let Some(invalid) = past_due {
            // A repeat of a request recorded before stands as it is.
            if let Some(prior) = store::prior(&self.pool, received.request_id(), false).await?
                && prior.names(Some(received.requested_hash()))
            {
                return Ok(Submitted::Existing(self.as_shown(prior.row).await?));
            }
            return Err(SubmitError::PastDue(invalid));
        }
        // Its time of asking fixed at receipt: the message the relay may publish later says the
        // same as the deletion recorded now.
        let message = ErasureRequest {
            requested_at: Some(received.requested_at()),
            ..request.clone()
        }
        .to_message();
        let mut tx = self.pool.begin().await?;
        let inserted = self
            .insert
            .run(
                &mut *tx,
                received,
                &message,
                scheduled_at,
                submission.key,
                submission.retry.map(|r| r.failed.id.as_str()),
            )
            .await;
        let inserted = match inserted {
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("deletions_retry_of_idx") => {
                return Err(SubmitError::RetriedAlready);
            }
            other => other?,
        };
        let Some(row) = inserted else {
            tx.rollback().await?;
            return self.existing(received).await.map(Submitted::Existing);
        };
        if let (Some(retry), Some(key)) = (submission.retry, submission.key) {
            crate::deletion::lifecycle::record_retry(
                &mut tx,
                retry.failed,
                &row,
                retry.reason,
                retry.by,
                key,
            )
            .await?;
        }
        tx.commit().await?;
        self.publish(&row.id, received, &message).await;
        Ok(Submitted::Accepted(row))
    }

    /// Publishes a recorded request now; on failure the relay does it later.
    async fn publish(&self, deletion_id: &str, received: &Received, message: &[u8]) {
        let request_id = received.request_id().to_string();
        let published = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.publisher.publish_request(&request_id, message),
        )
        .await;
        match published {
            Ok(Ok(())) => {
                if let Err(e) = store::clear_pending_message(&self.pool, deletion_id).await {
                    // Harmless: the relay publishes it again and the worker sees a duplicate.
                    tracing::warn!(request_id, error = %crate::db::SafeError(&e), "could not mark the request published");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(request_id, error = %e, "publishing the request failed; the relay retries it")
            }
            Err(_) => {
                tracing::warn!(
                    request_id,
                    "the broker did not confirm in time; the relay retries it"
                )
            }
        }
    }

    async fn existing(&self, received: &Received) -> Result<DeletionRow, SubmitError> {
        let prior = store::prior(&self.pool, received.request_id(), false)
            .await?
            .ok_or(SubmitError::Database(sqlx::Error::RowNotFound))?;
        // A rejected message may have recorded the request id without a customer.
        if !prior.names(Some(received.requested_hash())) {
            return Err(SubmitError::ReusedForAnotherCustomer);
        }
        self.as_shown(prior.row).await
    }

    /// The deletion as the API shows it: with what the check after commit recorded.
    async fn as_shown(&self, row: DeletionRow) -> Result<DeletionRow, SubmitError> {
        Ok(store::find(&self.pool, &row.id).await?.unwrap_or(row))
    }
}
