//! The steps the consumer takes for deliveries: [`handle_delivery`] for one, [`handle_batch`]
//! for several at once. Each reads its messages, carries them out, and says what to do with
//! each delivery; neither touches the broker. Tests call them directly.

use std::time::Instant;

use chrono::Utc;

use crate::erase::hold::Hold;
use crate::erase::{EraseError, Outcome, Slot};
use crate::request::{self, Channel, Received};

/// What to do with a delivery once its message was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The outcome is committed (or was already): acknowledge.
    Ack,
    /// The message can never succeed: reject it to the dead-letter queue, body intact.
    DeadLetter,
    /// Nothing was recorded and the cause may pass (the database is unreachable, another
    /// request holds the customer): give it back, or hold it and try again.
    Requeue,
}

/// A delivery as the steps see it: its body, and whether the broker delivered it before.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub body: &'a [u8],
    pub redelivered: bool,
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
    let started = Instant::now();
    let received = match slot.eraser().read(body, Channel::Amqp, received_at) {
        Ok(received) => received,
        Err(invalid) => return reject(slot, &invalid, received_at, body.len()).await,
    };
    if let Some(held) = hold(slot, &received, body).await {
        return held;
    }
    let outcome = carry_out(slot, &received, redelivered, max_deliveries).await;
    disposition(&received, outcome, started)
}

/// With a grace period: the disposition of a request not to be carried out now (held: its
/// message kept in the database until it is due, so the delivery is acknowledged; or refused
/// because its hold would pass its due date); `None` to carry it out.
async fn hold(slot: &mut Slot, received: &Received, body: &[u8]) -> Option<Disposition> {
    match slot.eraser().schedule(received, body).await {
        Ok(Hold::Now) => None,
        Ok(Hold::Until(at)) => {
            tracing::info!(request_id = %received.request_id(), until = %at.to_rfc3339(), "request held for its grace period");
            Some(Disposition::Ack)
        }
        Ok(Hold::PastDue(invalid)) => {
            Some(reject(slot, &invalid, received.received_at, body.len()).await)
        }
        Err(e) => {
            tracing::warn!(request_id = %received.request_id(), error = %crate::db::SafeError(&e), "could not record the request's grace period; it goes back to the queue");
            Some(Disposition::Requeue)
        }
    }
}

/// Handles several messages at once: the new, valid requests in one batch statement
/// ([`Slot::erase_batch`]), every other one (invalid, redelivered) on its own, as
/// [`handle_delivery`] would. The dispositions are in the messages' order.
pub async fn handle_batch(
    slot: &mut Slot,
    messages: &[Message<'_>],
    max_deliveries: u32,
) -> Vec<Disposition> {
    let received_at = Utc::now();
    let started = Instant::now();
    let mut dispositions: Vec<Option<Disposition>> = vec![None; messages.len()];
    let mut batch: Vec<(usize, Received)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        match slot.eraser().read(message.body, Channel::Amqp, received_at) {
            Ok(received) if !message.redelivered => {
                match hold(slot, &received, message.body).await {
                    Some(held) => dispositions[i] = Some(held),
                    None => batch.push((i, received)),
                }
            }
            Ok(_) => {
                // A redelivery may be a request that crashes workers: it is counted alone.
                let handled = handle_delivery(slot, message.body, true, max_deliveries).await;
                dispositions[i] = Some(handled);
            }
            Err(invalid) => {
                dispositions[i] =
                    Some(reject(slot, &invalid, received_at, message.body.len()).await);
            }
        }
    }
    let requests: Vec<Received> = batch.iter().map(|(_, r)| r.clone()).collect();
    let outcomes = slot.erase_batch(&requests).await;
    for ((i, received), outcome) in batch.iter().zip(outcomes) {
        dispositions[*i] = Some(disposition(received, outcome, started));
    }
    dispositions
        .into_iter()
        .map(|d| d.expect("every message has a disposition"))
        .collect()
}

/// Audits and dead-letters a message that is not a valid request.
async fn reject(
    slot: &mut Slot,
    invalid: &request::InvalidRequest,
    received_at: chrono::DateTime<Utc>,
    bytes: usize,
) -> Disposition {
    match slot
        .eraser()
        .reject(invalid, Channel::Amqp, received_at, bytes)
        .await
    {
        Ok(_) => {
            crate::metrics::rejected();
            tracing::warn!(request_id = ?invalid.request_id, reason = %invalid.message, bytes, "invalid message rejected to the dead-letter queue");
            Disposition::DeadLetter
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record an invalid message; it goes back to the queue");
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

/// What becomes of the delivery of `received`, given how its erasure ended; logged and counted.
fn disposition(
    received: &Received,
    outcome: Result<Outcome, EraseError>,
    started: Instant,
) -> Disposition {
    let request_id = received.request_id();
    match outcome {
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
