//! The grace period (`erasure.grace_period`): each request is held that long before it is
//! carried out. The time it may be carried out is recorded on its deletion the first time the
//! service sees it ([`lifecycle::schedule`]), and never moved; until then its message waits in
//! the database, on its deletion (`pending_message`), and the relay ([`crate::outbox`])
//! publishes it again when that time comes. So each request is carried out at its own time,
//! whatever was held before it or with another grace period (a broker queue with per-message
//! expiry releases a message only once those ahead of it expired). The delivery is
//! acknowledged only once the message is kept; a restart, a reconnect or a redelivery finds
//! the recorded time, so nothing is held twice or lost.

use chrono::{DateTime, Utc};

use super::Eraser;
use crate::deletion::lifecycle::{self, Schedule};
use crate::deletion::store::NewDeletion;
use crate::request::{InvalidRequest, Received};

/// What to do with a request now, given the grace period.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    /// Carry it out.
    Now,
    /// Hold it until then.
    Until(DateTime<Utc>),
    /// Its hold would end after its due date: it is refused as invalid.
    PastDue(InvalidRequest),
}

impl Eraser {
    /// Whether `received` may be carried out now; the first time a request is seen with a
    /// grace period, its deletion is recorded PENDING with the time it may be. A request held
    /// has its `message` kept on its deletion until then.
    pub async fn schedule(&self, received: &Received, message: &[u8]) -> Result<Hold, sqlx::Error> {
        let grace = self.inner.limits.grace_period;
        if grace.is_zero() {
            return Ok(Hold::Now);
        }
        let first = received.received_at + grace.chrono();
        let mut conn = self.inner.pool.acquire().await?;
        let now = Utc::now();
        let scheduled =
            lifecycle::schedule(&mut conn, &NewDeletion::of(received), first, now).await?;
        let at = match scheduled {
            Schedule::Now => return Ok(Hold::Now),
            Schedule::Until(at) => at,
        };
        if let Some(refused) = lifecycle::past_due(received, at, grace) {
            return Ok(Hold::PastDue(refused));
        }
        if !crate::deletion::owed::keep_held_message(&mut conn, received.request_id(), message)
            .await?
        {
            // Ended meanwhile (canceled): the erasure path finds its outcome.
            return Ok(Hold::Now);
        }
        Ok(Hold::Until(at))
    }
}
