//! Answers the broker for the deliveries of one channel, acknowledging many with one frame
//! where it can.
//!
//! An acknowledgement with `multiple` covers every unanswered delivery of the channel up to its
//! tag, so it may only be sent once every one of those is committed. The acker keeps the tags
//! delivered and not yet answered; when the oldest ones are all done, one acknowledgement with
//! `multiple` answers the whole run. A delivery still in progress holds back the ones after it,
//! but never for long: those done for longer than [`HOLD`] are acknowledged one by one, so that
//! a slow request (a lock wait, an outage) never fills the prefetch window with deliveries that
//! are done. Rejections and requeues are answered at once, one by one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Mutex;

/// How long a delivery that is done may wait for the ones before it.
pub const HOLD: Duration = Duration::from_millis(100);

pub struct Acker {
    channel: Channel,
    /// A confirm channel for putting requests in the hold queue.
    holds: Option<Channel>,
    /// Every delivery not yet answered: when it arrived, and when it was done (if it was).
    open: Mutex<BTreeMap<u64, (Instant, Option<Instant>)>>,
}

impl Acker {
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            holds: None,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Holds requests for their grace period on the confirm channel `holds`.
    pub fn with_holds(self, holds: Channel) -> Self {
        Self {
            holds: Some(holds),
            ..self
        }
    }

    /// Puts the delivery's message in the hold queue for `ttl`, and once the broker confirms
    /// it, acknowledges the delivery; if it cannot, gives the delivery back (a message is
    /// never dropped: at worst it is held twice, and the recorded schedule stands).
    pub async fn hold(
        &self,
        tag: u64,
        settings: &crate::config::AmqpSettings,
        message_id: &str,
        body: &[u8],
        ttl: Duration,
    ) -> Result<(), lapin::Error> {
        let held = match &self.holds {
            Some(holds) => {
                crate::broker::publish_held(holds, settings, message_id, body, ttl).await
            }
            None => return self.reject(tag, true).await,
        };
        match held {
            Ok(()) => self.ack(tag).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not hold a request; it goes back to the queue");
                self.reject(tag, true).await
            }
        }
    }

    /// A delivery arrived.
    pub async fn delivered(&self, tag: u64) {
        self.open.lock().await.insert(tag, (Instant::now(), None));
    }

    /// The delivery's outcome is committed.
    pub async fn ack(&self, tag: u64) -> Result<(), lapin::Error> {
        let mut open = self.open.lock().await;
        if let Some(entry) = open.get_mut(&tag) {
            entry.1 = Some(Instant::now());
        }
        self.answer_done(&mut open, false).await
    }

    /// The delivery goes to the dead-letter queue (`requeue` false) or back to the queue.
    pub async fn reject(&self, tag: u64, requeue: bool) -> Result<(), lapin::Error> {
        let mut open = self.open.lock().await;
        let answered = if requeue {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    },
                )
                .await
        } else {
            self.channel
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await
        };
        // Answered: no longer holds back the deliveries after it.
        open.remove(&tag);
        answered?;
        self.answer_done(&mut open, false).await
    }

    /// Acknowledges what has waited too long behind a delivery still in progress.
    pub async fn flush_held(&self) -> Result<(), lapin::Error> {
        let mut open = self.open.lock().await;
        self.answer_done(&mut open, false).await
    }

    /// Acknowledges every delivery that is done (before the channel closes).
    pub async fn flush_all(&self) -> Result<(), lapin::Error> {
        let mut open = self.open.lock().await;
        self.answer_done(&mut open, true).await
    }

    /// The run of done deliveries at the head in one acknowledgement; then, behind a delivery
    /// in progress, those done for longer than [`HOLD`] (or all, with `all`) one by one.
    async fn answer_done(
        &self,
        open: &mut BTreeMap<u64, (Instant, Option<Instant>)>,
        all: bool,
    ) -> Result<(), lapin::Error> {
        let mut run: Vec<u64> = Vec::new();
        for (tag, (_, done)) in open.iter() {
            match done {
                Some(_) => run.push(*tag),
                None => break,
            }
        }
        if let Some(&last) = run.last() {
            self.channel
                .basic_ack(
                    last,
                    BasicAckOptions {
                        multiple: run.len() > 1,
                    },
                )
                .await?;
            for tag in &run {
                open.remove(tag);
            }
        }
        let held: Vec<u64> = open
            .iter()
            .filter(|(_, (_, done))| done.is_some_and(|at| all || at.elapsed() >= HOLD))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in held {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await?;
            open.remove(&tag);
        }
        Ok(())
    }
}
