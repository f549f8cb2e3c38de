//! The queue consumer. [`handle_delivery`] is the one step: read a message, carry it out, and
//! say what to do with the delivery. The loop around it only receives, bounds concurrency,
//! acknowledges after the commit, reconnects, and stops.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError};
use crate::config::{AmqpSettings, WorkerSettings};
use crate::erase::{EraseError, Eraser, Outcome, Slot};
use crate::outbox::Outbox;
use crate::request::{self, Channel, Received};

/// What to do with a delivery once its message was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The outcome is committed (or was already): acknowledge.
    Ack,
    /// The message can never succeed: reject it to the dead-letter queue, body intact.
    DeadLetter,
    /// Nothing was recorded and the cause may pass (the database is unreachable): give it back.
    Requeue,
}

/// Handles one message body. Never panics on bad input; every path ends in a disposition.
/// `redelivered`: the broker delivered it before; such deliveries are counted, and one past
/// `max_deliveries` is stopped as a poison message instead of being tried again.
pub async fn handle_delivery(
    slot: &mut Slot,
    body: &[u8],
    redelivered: bool,
    max_deliveries: u32,
) -> Disposition {
    let received_at = Utc::now();
    let started = std::time::Instant::now();
    let request = match request::parse(body, received_at) {
        Ok(request) => request,
        Err(invalid) => {
            return match slot
                .eraser()
                .reject(&invalid, Channel::Amqp, received_at, body.len())
                .await
            {
                Ok(_) => {
                    crate::metrics::rejected();
                    tracing::warn!(request_id = ?invalid.request_id, reason = %invalid.message, bytes = body.len(), "invalid message rejected to the dead-letter queue");
                    Disposition::DeadLetter
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not record an invalid message; it goes back to the queue");
                    Disposition::Requeue
                }
            };
        }
    };
    let received = slot.eraser().receive(request, Channel::Amqp, received_at);
    let request_id = received.request_id();
    match carry_out(slot, &received, redelivered, max_deliveries).await {
        Ok(Outcome::Recorded(row)) => {
            crate::metrics::outcome(&row, started.elapsed());
            tracing::info!(
                %request_id,
                deletion_id = %row.id,
                status = %row.status,
                error_key = row.error_key.map(|k| k.as_str()),
                already_erased = row.already_erased,
                "request carried out"
            );
            Disposition::Ack
        }
        Ok(Outcome::Duplicate(row)) => {
            tracing::info!(%request_id, deletion_id = %row.id, status = %row.status, "request already carried out; acknowledging the repeat");
            Disposition::Ack
        }
        Ok(Outcome::Stopped(row)) => {
            crate::metrics::outcome(&row, started.elapsed());
            tracing::error!(
                %request_id,
                deletion_id = %row.id,
                error = row.error_message.as_deref(),
                "request failed; its message goes to the dead-letter queue"
            );
            Disposition::DeadLetter
        }
        Ok(Outcome::Rejected { message, .. }) => {
            crate::metrics::rejected();
            tracing::warn!(%request_id, reason = %message, "request rejected to the dead-letter queue");
            Disposition::DeadLetter
        }
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "request not carried out; it goes back to the queue");
            Disposition::Requeue
        }
    }
}

/// Counts a redelivery (stopping a poison message), then erases.
async fn carry_out(
    slot: &mut Slot,
    received: &Received,
    redelivered: bool,
    max_deliveries: u32,
) -> Result<Outcome, EraseError> {
    if redelivered {
        let eraser = slot.eraser();
        if let Some(redeliveries) = eraser.count_redelivery(received).await?
            && redeliveries >= max_deliveries
        {
            return eraser.stop_poison(received, redeliveries + 1).await;
        }
    }
    slot.erase(received).await
}

/// The consumer, with what it needs.
pub struct Worker {
    pub eraser: Eraser,
    pub outbox: Outbox,
    pub amqp: AmqpSettings,
    /// True while the consumer is connected and consuming (readiness reads it).
    pub consuming: Arc<AtomicBool>,
    pub settings: WorkerSettings,
}

impl Worker {
    /// Consumes until `shutdown`, reconnecting with backoff when the broker goes away. On
    /// shutdown, stops taking deliveries and lets the ones in flight finish within the grace
    /// period. Returns false when the grace period ran out with deliveries still in flight (they
    /// were not acknowledged: the broker gives them to another worker, and their uncommitted
    /// work rolls back when this process exits).
    pub async fn run(self, shutdown: CancellationToken) -> bool {
        // One slot per concurrent delivery: taking one is the permit to handle a delivery, and
        // its connection stays with it across deliveries and reconnects.
        let slots = self.settings.concurrency.max(1);
        let (release, free) = mpsc::channel(slots);
        for _ in 0..slots {
            release
                .try_send(Slot::new(self.eraser.clone()))
                .expect("the channel holds every slot");
        }
        let this = Arc::new(self);
        // Each connection's consumer takes the free slots for as long as it runs.
        let free = Arc::new(tokio::sync::Mutex::new(free));
        broker::reconnecting("the consumer", &shutdown, true, || {
            let (this, free, release, shutdown) = (
                this.clone(),
                free.clone(),
                release.clone(),
                shutdown.clone(),
            );
            async move {
                let mut free = free.lock().await;
                this.consume(&mut free, &release, &shutdown).await
            }
        })
        .await
    }

    async fn consume(
        self: Arc<Self>,
        free: &mut mpsc::Receiver<Slot>,
        release: &mpsc::Sender<Slot>,
        shutdown: &CancellationToken,
    ) -> Result<bool, BrokerError> {
        let connection = broker::connect(&self.amqp).await?;
        let channel = connection.create_channel().await?;
        broker::declare_topology(&channel, &self.amqp).await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("erasure-{}", uuid::Uuid::new_v4());
        let mut consumer = channel
            .basic_consume(
                self.amqp.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %self.amqp.queue, prefetch = self.settings.prefetch, concurrency = self.settings.concurrency, "consuming requests");
        self.consuming.store(true, Ordering::SeqCst);

        let mut in_flight = JoinSet::new();
        let result: Result<(), BrokerError> = loop {
            while in_flight.try_join_next().is_some() {}
            let mut slot = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                slot = free.recv() => slot.expect("the worker holds a sender"),
            };
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => break Err(BrokerError::from(e)),
                    None => break Err(BrokerError::ConsumerClosed),
                },
            };
            let worker = self.clone();
            let shutdown = shutdown.clone();
            let release = release.clone();
            in_flight.spawn(async move {
                worker.answer(&mut slot, delivery, &shutdown).await;
                let _ = release.send(slot).await;
            });
        };

        // Stop the broker from sending more, then let what is in flight commit and acknowledge.
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        self.consuming.store(false, Ordering::SeqCst);
        let grace = Duration::from_millis(self.settings.shutdown_grace_ms);
        let drained = async { while in_flight.join_next().await.is_some() {} };
        let finished = if shutdown.is_cancelled() {
            let finished = tokio::time::timeout(grace, drained).await.is_ok();
            if !finished {
                tracing::error!(
                    in_flight = in_flight.len(),
                    grace_ms = self.settings.shutdown_grace_ms,
                    "the shutdown grace period ran out; unfinished deliveries go back to the queue"
                );
                return Ok(false);
            }
            finished
        } else {
            drained.await;
            true
        };
        let _ = connection.close(200, "shutting down".into()).await;
        result.map(|()| finished)
    }

    /// Handles one delivery and answers the broker. A message that could not be handled for
    /// now (the database is unreachable, another request holds the customer) is held (intake
    /// pauses as slots run out) and tried again with backoff; on shutdown it goes back to the
    /// queue.
    async fn answer(&self, slot: &mut Slot, delivery: Delivery, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(500);
        loop {
            let disposition = handle_delivery(
                slot,
                &delivery.data,
                delivery.redelivered,
                self.settings.max_deliveries,
            )
            .await;
            let answered = match disposition {
                Disposition::Ack => {
                    let acked = delivery.ack(BasicAckOptions::default()).await;
                    self.outbox.wake();
                    acked
                }
                Disposition::DeadLetter => {
                    let rejected = delivery.reject(BasicRejectOptions { requeue: false }).await;
                    self.outbox.wake();
                    rejected
                }
                Disposition::Requeue => {
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await
                        }
                        _ = tokio::time::sleep(delay) => {
                            delay = (delay * 2).min(Duration::from_secs(30));
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = answered {
                // The channel is gone; the broker redelivers, and the recorded outcome stands.
                tracing::warn!(error = %e, "could not answer the broker for a delivery");
            }
            return;
        }
    }
}
