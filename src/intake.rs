//! Requests accepted over HTTP: recorded first, published second.
//!
//! A submission writes the deletion object in status PENDING together with the request message
//! (`pending_message`), commits, and only then publishes with a publisher confirm. Once the
//! commit is done the request cannot be lost: if the publish fails or the process dies before
//! it, the relay in [`crate::outbox`] publishes the stored message later. The message is
//! cleared once the broker has it, or when the deletion ends.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::broker::Publisher;
use crate::deletion::{self, COLUMNS, DeletionRow};
use crate::erase::Channel;
use crate::keyed_hash::KeyedHash;
use crate::plan::Plan;
use crate::request::ErasureRequest;

/// How long a submission waits for the broker before leaving the message to the relay.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Intake {
    pool: PgPool,
    hash: KeyedHash,
    insert: Arc<str>,
    publisher: Arc<Publisher>,
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
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Intake {
    pub fn new(pool: PgPool, plan: &Plan, hash: KeyedHash, publisher: Arc<Publisher>) -> Self {
        let insert = format!(
            "INSERT INTO erasure.deletions (id, request_id, related_object_id, requested_id_hash, \
               status, requested_by, reason, requested_at, due_at, channel, pending_message) \
             VALUES ($1, $2, {subject}, $4, 'PENDING', $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (request_id) DO NOTHING \
             RETURNING {COLUMNS}",
            subject = crate::plan::sql::subject_key_of(plan, 3),
        );
        Self {
            pool,
            hash,
            insert: insert.into(),
            publisher,
        }
    }

    pub fn publisher(&self) -> Arc<Publisher> {
        self.publisher.clone()
    }

    /// Records `request` as PENDING and publishes it. `Accepted` means the request is durable.
    pub async fn submit(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Submitted, SubmitError> {
        let requested_at = request.requested_at.unwrap_or(received_at);
        let message = serde_json::to_vec(&serde_json::json!({
            "request_id": request.request_id,
            "customer_id": request.customer_id,
            "requested_by": request.requested_by,
            "reason": request.reason,
            "requested_at": requested_at,
        }))
        .expect("a request serializes");
        let requested_id_hash = self.hash.digest(&request.customer_id);
        let inserted: Option<DeletionRow> = sqlx::query_as(&self.insert)
            .bind(deletion::new_id())
            .bind(request.request_id)
            .bind(&request.customer_id)
            .bind(&requested_id_hash)
            .bind(&request.requested_by)
            .bind(&request.reason)
            .bind(requested_at)
            .bind(deletion::due_at(requested_at))
            .bind(channel.as_str())
            .bind(&message)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = inserted else {
            return self
                .existing(request, &requested_id_hash)
                .await
                .map(Submitted::Existing);
        };
        self.publish(&row.id, request, &message).await;
        Ok(Submitted::Accepted(row))
    }

    /// Publishes a recorded request now; on failure the relay does it later.
    async fn publish(&self, deletion_id: &str, request: &ErasureRequest, message: &[u8]) {
        let request_id = request.request_id.to_string();
        let published = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.publisher.publish_request(&request_id, message),
        )
        .await;
        match published {
            Ok(Ok(())) => {
                let cleared = sqlx::query(
                    "UPDATE erasure.deletions SET pending_message = NULL WHERE id = $1",
                )
                .bind(deletion_id)
                .execute(&self.pool)
                .await;
                if let Err(e) = cleared {
                    // Harmless: the relay publishes it again and the worker sees a duplicate.
                    tracing::warn!(request_id, error = %e, "could not mark the request published");
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

    async fn existing(
        &self,
        request: &ErasureRequest,
        requested_id_hash: &[u8],
    ) -> Result<DeletionRow, SubmitError> {
        let row: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT requested_id_hash FROM erasure.deletions WHERE request_id = $1")
                .bind(request.request_id)
                .fetch_optional(&self.pool)
                .await?;
        // A rejected message may have recorded the request id without a customer.
        if row.is_some_and(|(hash,)| hash.as_deref() != Some(requested_id_hash)) {
            return Err(SubmitError::ReusedForAnotherCustomer);
        }
        deletion::find(&self.pool, &request.request_id.to_string())
            .await?
            .ok_or(SubmitError::Database(sqlx::Error::RowNotFound))
    }
}
