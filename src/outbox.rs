//! Outcome events, published at least once.
//!
//! Whatever ends a deletion writes, in the same transaction, a row to `erasure.event_outbox`:
//! its outcome event is owed. The worker wakes the publisher after each commit; a periodic
//! sweep catches what a crash between commit and publish left behind. Rows are deleted only
//! after the broker confirmed the event, and claimed with `SKIP LOCKED`, so several workers
//! share the work without publishing the same event over and over.
//!
//! The same loop relays requests accepted over HTTP whose publication was not confirmed (see
//! [`crate::intake`]), once they are older than a grace period that lets the submitting
//! process publish them itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError};
use crate::config::AmqpSettings;
use crate::deletion::DeletionStatus;
use crate::deletion::owed::{
    claim_owed_events, claim_owed_requests, clear_pending_messages, events_published,
};

/// Events claimed per transaction.
const BATCH: i64 = 200;
/// How often the publisher looks for owed events without being woken, and for requests to
/// relay.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long the publisher waits, once woken, for more outcomes to publish with the first.
const COALESCE: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
    count_keys: Arc<[String]>,
    wake: Arc<Notify>,
    relay_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Outbox {
    /// `relay_after`: how old an unpublished HTTP request must be before the relay takes it.
    pub fn new(pool: PgPool, count_keys: &[String], relay_after: Duration) -> Self {
        Self {
            pool,
            count_keys: count_keys.into(),
            wake: Arc::new(Notify::new()),
            relay_after,
        }
    }

    /// Tells the publisher an outcome was just committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes owed events until `shutdown`, reconnecting to the broker as needed; drains
    /// once more before returning.
    pub async fn run(self, settings: AmqpSettings, shutdown: CancellationToken) {
        broker::reconnecting("the event publisher", &shutdown, (), || {
            self.publish_until(&settings, &shutdown)
        })
        .await
    }

    async fn publish_until(
        &self,
        settings: &AmqpSettings,
        shutdown: &CancellationToken,
    ) -> Result<(), OutboxError> {
        let connection = broker::connect(settings).await?;
        let channel = broker::confirm_channel(&connection).await?;
        broker::declare_topology(&channel, settings).await?;
        let mut relayed_at: Option<Instant> = None;
        loop {
            // Requests wait relay_after before the relay takes them: looking at every sweep is
            // soon enough, and costs nothing per outcome.
            if relayed_at.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                self.relay_requests(&channel, settings).await?;
                relayed_at = Some(Instant::now());
            }
            self.drain(&channel, settings).await?;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let drained = self.drain(&channel, settings).await;
                    let _ = connection.close(200, "shutting down".into()).await;
                    return drained.map(|_| ());
                }
                // Outcomes committed in the next moment go out in the same batch.
                _ = self.wake.notified() => tokio::time::sleep(COALESCE).await,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }

    /// Publishes every owed event; returns how many.
    pub async fn drain(
        &self,
        channel: &lapin::Channel,
        settings: &AmqpSettings,
    ) -> Result<usize, OutboxError> {
        let mut published = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let owed = claim_owed_events(&mut tx, BATCH).await?;
            if owed.is_empty() {
                tx.commit().await?;
                return Ok(published);
            }
            let bodies: Vec<(String, &'static str, Vec<u8>)> = owed
                .iter()
                .map(|event| {
                    let row = &event.deletion;
                    let key = match row.status {
                        DeletionStatus::Done => "deletion.done",
                        DeletionStatus::Canceled => "deletion.canceled",
                        _ => "deletion.failed",
                    };
                    let body = serde_json::to_vec(&row.to_object(&self.count_keys))
                        .expect("a deletion object serializes");
                    (row.id.clone(), key, body)
                })
                .collect();
            try_join_all(bodies.iter().map(|(id, key, body)| {
                broker::publish_json(channel, &settings.events_exchange, key, id, body, false)
            }))
            .await?;
            let ids: Vec<i64> = owed.iter().map(|event| event.id).collect();
            events_published(&mut tx, &ids).await?;
            tx.commit().await?;
            published += ids.len();
            tracing::debug!(events = ids.len(), "published outcome events");
            if ids.len() < BATCH as usize {
                // That was all; what commits from now on wakes the publisher again.
                return Ok(published);
            }
        }
    }
}

impl Outbox {
    /// Publishes every request accepted over HTTP that is still owed to the broker and older
    /// than the grace period; returns how many.
    pub async fn relay_requests(
        &self,
        channel: &lapin::Channel,
        settings: &AmqpSettings,
    ) -> Result<usize, OutboxError> {
        let mut relayed = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let owed = claim_owed_requests(&mut tx, self.relay_after.as_millis(), BATCH).await?;
            if owed.is_empty() {
                tx.commit().await?;
                return Ok(relayed);
            }
            try_join_all(owed.iter().map(|request| async move {
                broker::publish_json(
                    channel,
                    &settings.exchange,
                    &settings.routing_key,
                    &request.request_id.to_string(),
                    &request.pending_message,
                    true,
                )
                .await
            }))
            .await?;
            let ids: Vec<&str> = owed.iter().map(|request| request.id.as_str()).collect();
            clear_pending_messages(&mut tx, &ids).await?;
            tx.commit().await?;
            relayed += ids.len();
            tracing::info!(requests = ids.len(), "relayed requests accepted over HTTP");
        }
    }
}
