//! The queue consumer. The steps it takes are in [`delivery`] ([`handle_delivery`] for one
//! message, [`handle_batch`] for several): read the messages, carry them out, say what to do
//! with each delivery. The loop here only receives, gathers the deliveries already received
//! into a batch, bounds how many batches run at once, answers the broker after the commit
//! (through the [`acker::Acker`]), reconnects, and stops.
//!
//! The walk of one request from the queue to its commit and acknowledgement: [`Worker::run`]
//! takes a free slot and the deliveries the broker has already sent (a batch, registered with
//! the acker as delivered); [`handle_batch`] reads each message with the one parser of requests
//! ([`crate::erase::Eraser::read`]: [`crate::request::parse`], then the identifier read for this
//! plan) and asks [`crate::erase::Eraser::schedule`] whether a grace period holds it; the rest go
//! to [`crate::erase::Slot::erase_batch`], which runs the plan's erasure statement for the batch
//! ([`crate::plan::sql::erase_statement`]: every customer's rows, its deletion object, its audit
//! row, its owed event and check after commit, in one statement) and carries out alone whatever
//! it left ([`crate::erase::Slot::erase`], with the fresh look and chunks); each outcome becomes
//! a [`Disposition`], and [`acker::Acker`] acknowledges it once committed, one frame for a run
//! of done deliveries ([`acker::Outstanding`]); the outbox is woken to publish the events.

pub mod acker;
pub mod delivery;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError};
use crate::config::{AmqpSettings, WorkerSettings};
use crate::erase::{Eraser, Slot};
use crate::outbox::Outbox;
use acker::Acker;
pub use delivery::{Disposition, Message, handle_batch, handle_delivery};

/// How long a held delivery waits before it is tried again alone the first time.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a held delivery.
const LONGEST_RETRY: Duration = Duration::from_secs(30);

/// The wait before the next try of a held delivery, after waiting `delay`: twice as long, up to
/// [`LONGEST_RETRY`] (a customer held for long is not asked for every half second).
fn next_retry(delay: Duration) -> Duration {
    (delay * 2).min(LONGEST_RETRY)
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
        // One slot per concurrent batch: taking one is the permit to handle a batch, and its
        // connection stays with it across batches and reconnects.
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
        tracing::info!(queue = %self.amqp.queue, prefetch = self.settings.prefetch, concurrency = self.settings.concurrency, batch_max = self.settings.batch_max, "consuming requests");
        self.consuming.store(true, Ordering::SeqCst);
        let acker = Arc::new(Acker::new(channel.clone()));
        let mut held = tokio::time::interval(acker::HOLD);
        held.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut in_flight = JoinSet::new();
        let result: Result<(), BrokerError> = loop {
            while in_flight.try_join_next().is_some() {}
            let slot = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    _ = held.tick() => {
                        if let Err(e) = acker.flush_held().await {
                            tracing::warn!(error = %e, "could not acknowledge deliveries");
                        }
                    }
                    slot = free.recv() => break Some(slot.expect("the worker holds a sender")),
                }
            };
            let Some(mut slot) = slot else { break Ok(()) };
            let first = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    _ = held.tick() => {
                        if let Err(e) = acker.flush_held().await {
                            tracing::warn!(error = %e, "could not acknowledge deliveries");
                        }
                    }
                    next = consumer.next() => break Some(next),
                }
            };
            let first = match first {
                None => break Ok(()),
                Some(Some(Ok(delivery))) => delivery,
                Some(Some(Err(e))) => break Err(BrokerError::from(e)),
                Some(None) => break Err(BrokerError::ConsumerClosed),
            };
            let (batch, ended) = self.gather(first, &mut consumer, shutdown).await;
            crate::metrics::batch_formed(batch.len());
            for delivery in &batch {
                acker.delivered(delivery.delivery_tag).await;
            }
            let worker = self.clone();
            let shutdown = shutdown.clone();
            let release = release.clone();
            let acker = acker.clone();
            in_flight.spawn(async move {
                worker.answer(&mut slot, batch, &acker, &shutdown).await;
                let _ = release.send(slot).await;
            });
            if let Some(ended) = ended {
                break ended;
            }
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
        if let Err(e) = acker.flush_all().await {
            tracing::warn!(error = %e, "could not acknowledge the last deliveries; they are redelivered, and found done");
        }
        let _ = connection.close(200, "shutting down".into()).await;
        result.map(|()| finished)
    }

    /// A batch: `first`, then whatever the broker has already delivered, up to `batch_max`;
    /// when `batch_wait_ms` is set, it waits that long at most for the batch to fill. Also says
    /// how consuming ended, if it ended meanwhile.
    async fn gather(
        &self,
        first: Delivery,
        consumer: &mut lapin::Consumer,
        shutdown: &CancellationToken,
    ) -> (Vec<Delivery>, Option<Result<(), BrokerError>>) {
        let mut batch = vec![first];
        let deadline = Instant::now() + Duration::from_millis(self.settings.batch_wait_ms);
        while batch.len() < self.settings.batch_max {
            // What has arrived joins at once; otherwise wait for more until the deadline (one
            // already passed, as with no `batch_wait_ms`, ends the wait at once).
            let next = match consumer.next().now_or_never() {
                Some(next) => next,
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    next = consumer.next() => next,
                },
            };
            match next {
                Some(Ok(delivery)) => batch.push(delivery),
                Some(Err(e)) => return (batch, Some(Err(BrokerError::from(e)))),
                None => return (batch, Some(Err(BrokerError::ConsumerClosed))),
            }
        }
        (batch, None)
    }

    /// Handles a batch and answers the broker for each delivery. A delivery that could not be
    /// handled for now (the database is unreachable, another request holds the customer) is
    /// held (intake pauses as slots run out) and tried again alone with backoff; on shutdown it
    /// goes back to the queue.
    async fn answer(
        &self,
        slot: &mut Slot,
        batch: Vec<Delivery>,
        acker: &Acker,
        shutdown: &CancellationToken,
    ) {
        let messages: Vec<Message<'_>> = batch
            .iter()
            .map(|d| Message {
                body: &d.data,
                redelivered: d.redelivered,
            })
            .collect();
        let dispositions = handle_batch(slot, &messages, self.settings.max_deliveries).await;
        // Those with an outcome first, so that one held delivery does not hold back their
        // acknowledgements; then each held one, alone, until it has one.
        let mut held = Vec::new();
        for (delivery, disposition) in batch.iter().zip(dispositions) {
            match disposition {
                Disposition::Requeue => held.push(delivery),
                done => self.settle(acker, delivery, done).await,
            }
        }
        self.outbox.wake();
        for delivery in held {
            let mut delay = FIRST_RETRY;
            let disposition = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break Disposition::Requeue,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = next_retry(delay);
                let disposition = handle_delivery(
                    slot,
                    &delivery.data,
                    delivery.redelivered,
                    self.settings.max_deliveries,
                )
                .await;
                if disposition != Disposition::Requeue {
                    break disposition;
                }
            };
            self.settle(acker, delivery, disposition).await;
        }
        self.outbox.wake();
    }

    /// Answers the broker for `delivery`.
    async fn settle(&self, acker: &Acker, delivery: &Delivery, disposition: Disposition) {
        let tag = delivery.delivery_tag;
        let answered = match disposition {
            Disposition::Ack => acker.ack(tag).await,
            Disposition::DeadLetter => acker.reject(tag, false).await,
            Disposition::Requeue => acker.reject(tag, true).await,
        };
        if let Err(e) = answered {
            // The channel is gone; the broker redelivers, and the recorded outcome stands.
            tracing::warn!(error = %e, "could not answer the broker for a delivery");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_delivery_waits_twice_as_long_each_time_up_to_thirty_seconds() {
        let waits: Vec<u64> = std::iter::successors(Some(FIRST_RETRY), |d| Some(next_retry(*d)))
            .take(9)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }
}
