//! Answers the broker for the deliveries of one channel, acknowledging many with one frame
//! where it can.
//!
//! An acknowledgement with `multiple` covers every unanswered delivery of the channel up to its
//! tag, so it may only be sent once every one of those is committed. [`Outstanding`] keeps the
//! tags delivered and not yet answered, and decides what to send: when the oldest ones are all
//! done, one acknowledgement with `multiple` answers the whole run. A delivery still in progress
//! holds back the ones after it, but never for long: those done for longer than [`HOLD`] are
//! acknowledged one by one, so that a slow request (a lock wait, an outage) never fills the
//! prefetch window with deliveries that are done. Rejections and requeues are answered at once,
//! one by one. [`Acker`] sends what it decides on the channel.
//!
//! The rule the worker's design rests on ("acknowledged only after the commit") lives in
//! [`Outstanding`] alone, which knows no broker and no clock of its own: a model test drives it
//! with random deliveries, outcomes and ticks, and checks every answer it gives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Mutex;

/// How long a delivery that is done may wait for the ones before it.
pub const HOLD: Duration = Duration::from_millis(100);

/// What to send the broker for deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `basic.ack`: this delivery, or with `multiple` every unanswered one up to it.
    Ack { tag: u64, multiple: bool },
    /// `basic.nack` with requeue (back to the queue), or `basic.reject` without (to the
    /// dead-letter queue).
    Reject { tag: u64, requeue: bool },
}

/// The deliveries of a channel not answered yet, and what to answer when.
#[derive(Debug, Default)]
pub struct Outstanding {
    /// Every delivery not yet answered: when it was done, if it was.
    open: BTreeMap<u64, Option<Instant>>,
}

impl Outstanding {
    /// A delivery arrived.
    pub fn delivered(&mut self, tag: u64) {
        self.open.insert(tag, None);
    }

    /// The delivery's outcome is committed (at `now`): what may be acknowledged now.
    pub fn done(&mut self, tag: u64, now: Instant) -> Vec<Answer> {
        if let Some(done) = self.open.get_mut(&tag) {
            *done = Some(now);
        }
        self.due(now, false)
    }

    /// The delivery goes back to the queue (`requeue`) or to the dead-letter queue: its answer,
    /// then what may be acknowledged now that it holds nothing back.
    pub fn rejected(&mut self, tag: u64, requeue: bool, now: Instant) -> Vec<Answer> {
        let mut answers = vec![Answer::Reject { tag, requeue }];
        self.open.remove(&tag);
        answers.extend(self.due(now, false));
        answers
    }

    /// What may be acknowledged at `now`: the run of done deliveries at the head in one
    /// acknowledgement; then, behind a delivery in progress, those done for at least [`HOLD`]
    /// (or all, with `all`: the channel is closing) one by one. Forgets what it answers.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Answer> {
        let mut answers = Vec::new();
        let mut run: Vec<u64> = Vec::new();
        for (tag, done) in &self.open {
            match done {
                Some(_) => run.push(*tag),
                // An acknowledgement with `multiple` must never reach past a delivery in
                // progress: it would answer for it before its outcome is committed.
                None => break,
            }
        }
        // One frame for the run, a run of one included: the run starts at the oldest delivery
        // not answered, so `multiple` covers exactly the run.
        if let Some(&last) = run.last() {
            answers.push(Answer::Ack {
                tag: last,
                multiple: true,
            });
            for tag in &run {
                self.open.remove(tag);
            }
        }
        let held: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, done)| done.is_some_and(|at| all || now.duration_since(at) >= HOLD))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in held {
            answers.push(Answer::Ack {
                tag,
                multiple: false,
            });
            self.open.remove(&tag);
        }
        answers
    }

    /// The deliveries not answered yet.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

pub struct Acker {
    channel: Channel,
    outstanding: Mutex<Outstanding>,
}

impl Acker {
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            outstanding: Mutex::new(Outstanding::default()),
        }
    }

    /// A delivery arrived.
    pub async fn delivered(&self, tag: u64) {
        self.outstanding.lock().await.delivered(tag);
    }

    /// The delivery's outcome is committed.
    pub async fn ack(&self, tag: u64) -> Result<(), lapin::Error> {
        let mut outstanding = self.outstanding.lock().await;
        let answers = outstanding.done(tag, Instant::now());
        self.send(&answers).await
    }

    /// The delivery goes to the dead-letter queue (`requeue` false) or back to the queue.
    pub async fn reject(&self, tag: u64, requeue: bool) -> Result<(), lapin::Error> {
        let mut outstanding = self.outstanding.lock().await;
        let answers = outstanding.rejected(tag, requeue, Instant::now());
        self.send(&answers).await
    }

    /// Acknowledges what has waited too long behind a delivery still in progress.
    pub async fn flush_held(&self) -> Result<(), lapin::Error> {
        let mut outstanding = self.outstanding.lock().await;
        let answers = outstanding.due(Instant::now(), false);
        self.send(&answers).await
    }

    /// Acknowledges every delivery that is done (before the channel closes).
    pub async fn flush_all(&self) -> Result<(), lapin::Error> {
        let mut outstanding = self.outstanding.lock().await;
        let answers = outstanding.due(Instant::now(), true);
        self.send(&answers).await
    }

    /// Sends `answers`, in order, while the caller holds the lock (so that answers of two
    /// callers never interleave out of the order they were decided in).
    async fn send(&self, answers: &[Answer]) -> Result<(), lapin::Error> {
        for answer in answers {
            match *answer {
                Answer::Ack { tag, multiple } => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions { multiple })
                        .await?
                }
                Answer::Reject { tag, requeue: true } => {
                    self.channel
                        .basic_nack(
                            tag,
                            BasicNackOptions {
                                requeue: true,
                                multiple: false,
                            },
                        )
                        .await?
                }
                Answer::Reject {
                    tag,
                    requeue: false,
                } => {
                    self.channel
                        .basic_reject(tag, BasicRejectOptions { requeue: false })
                        .await?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// What the broker would make of the answers: the deliveries it still waits an answer
    /// for, and the checks every answer must pass.
    #[derive(Default)]
    struct Broker {
        /// Delivered and not answered.
        outstanding: BTreeSet<u64>,
        /// Whose outcome is committed (or was rejected by the worker), and when it was done.
        done: BTreeMap<u64, Instant>,
        rejected: BTreeSet<u64>,
        /// How many times each delivery was answered.
        answered: BTreeMap<u64, u32>,
        /// The channel is closing: everything done goes now.
        closing: bool,
    }

    impl Broker {
        /// Takes `answers` given at `now`.
        fn take(&mut self, answers: &[Answer], now: Instant) {
            for answer in answers {
                // Behind a delivery still in progress, a done one waits up to HOLD, so that the
                // run it belongs to can go in one frame once the one before is done.
                if let Answer::Ack {
                    tag,
                    multiple: false,
                } = *answer
                    && self
                        .outstanding
                        .range(..tag)
                        .any(|t| !self.done.contains_key(t))
                    && let Some(at) = self.done.get(&tag)
                {
                    assert!(
                        now.duration_since(*at) >= HOLD || self.closing,
                        "{tag} acknowledged alone behind a delivery in progress after {:?}",
                        now.duration_since(*at)
                    );
                }
                let covered: Vec<u64> = match *answer {
                    Answer::Ack {
                        tag,
                        multiple: true,
                    } => self.outstanding.range(..=tag).copied().collect(),
                    Answer::Ack { tag, .. } | Answer::Reject { tag, .. } => {
                        assert!(
                            self.outstanding.contains(&tag),
                            "{answer:?}: {tag} is not outstanding"
                        );
                        vec![tag]
                    }
                };
                for tag in covered {
                    match answer {
                        Answer::Ack { .. } => assert!(
                            self.done.contains_key(&tag),
                            "{answer:?} answers for {tag}, which is not done"
                        ),
                        Answer::Reject { .. } => assert!(self.rejected.contains(&tag)),
                    }
                    self.outstanding.remove(&tag);
                    *self.answered.entry(tag).or_default() += 1;
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Deliver,
        /// The outcome of the i-th (modulo) delivery in progress is committed.
        Done(usize),
        /// It is rejected, to the dead letters or back to the queue.
        Failed(usize, bool),
        /// Time passes, in milliseconds.
        Tick(u64),
        /// The worker's periodic flush.
        Flush,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Deliver),
            4 => (0..64usize).prop_map(Step::Done),
            1 => (0..64usize, any::<bool>()).prop_map(|(i, r)| Step::Failed(i, r)),
            2 => (0..250u64).prop_map(Step::Tick),
            2 => Just(Step::Flush),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_answer_covers_a_delivery_in_progress_and_each_done_one_is_answered_once(
            steps in prop::collection::vec(step(), 1..120)
        ) {
            let mut outstanding = Outstanding::default();
            let mut broker = Broker::default();
            let mut in_progress: Vec<u64> = Vec::new();
            let mut next_tag = 1;
            let start = Instant::now();
            let mut now = start;
            for step in steps {
                match step {
                    Step::Deliver => {
                        outstanding.delivered(next_tag);
                        broker.outstanding.insert(next_tag);
                        in_progress.push(next_tag);
                        next_tag += 1;
                    }
                    Step::Done(i) if !in_progress.is_empty() => {
                        let tag = in_progress.remove(i % in_progress.len());
                        broker.done.insert(tag, now);
                        let answers = outstanding.done(tag, now);
                        broker.take(&answers, now);
                    }
                    Step::Failed(i, requeue) if !in_progress.is_empty() => {
                        let tag = in_progress.remove(i % in_progress.len());
                        broker.rejected.insert(tag);
                        let answers = outstanding.rejected(tag, requeue, now);
                        prop_assert_eq!(answers[0], Answer::Reject { tag, requeue });
                        broker.take(&answers, now);
                    }
                    Step::Done(_) | Step::Failed(..) => {}
                    Step::Tick(ms) => now += Duration::from_millis(ms),
                    Step::Flush => {
                        let answers = outstanding.due(now, false);
                        broker.take(&answers, now);
                        // A done delivery waits at most HOLD for the ones before it.
                        for (tag, at) in &broker.done {
                            if broker.outstanding.contains(tag) {
                                prop_assert!(
                                    now.duration_since(*at) < HOLD,
                                    "{} done for {:?} and still not answered", tag, now.duration_since(*at)
                                );
                            }
                        }
                    }
                }
                prop_assert_eq!(outstanding.len(), broker.outstanding.len());
            }
            // Closing the channel: everything done is answered, exactly once; what is still
            // in progress is not.
            broker.closing = true;
            let answers = outstanding.due(now, true);
            broker.take(&answers, now);
            for tag in broker.done.keys().chain(&broker.rejected) {
                prop_assert_eq!(broker.answered.get(tag), Some(&1), "{} answered", tag);
            }
            for tag in &in_progress {
                prop_assert!(broker.outstanding.contains(tag), "{} in progress was answered", tag);
            }
        }
    }

    #[test]
    fn a_run_of_done_deliveries_is_one_acknowledgement_and_one_in_progress_holds_the_rest() {
        let mut outstanding = Outstanding::default();
        let start = Instant::now();
        for tag in 1..=4 {
            outstanding.delivered(tag);
        }
        // 2 and 3 are done behind 1: nothing yet, then each alone once they waited HOLD.
        assert_eq!(outstanding.done(2, start), []);
        assert_eq!(outstanding.done(3, start), []);
        assert_eq!(
            outstanding.due(start + HOLD, false),
            [
                Answer::Ack {
                    tag: 2,
                    multiple: false
                },
                Answer::Ack {
                    tag: 3,
                    multiple: false
                }
            ]
        );
        // 1 done: alone (4 is in progress); then 4: alone.
        assert_eq!(
            outstanding.done(1, start + HOLD),
            [Answer::Ack {
                tag: 1,
                multiple: true
            }]
        );
        outstanding.delivered(5);
        outstanding.delivered(6);
        assert_eq!(outstanding.done(5, start + HOLD), []);
        assert!(!outstanding.is_empty(), "4 and 6 are open");
        assert_eq!(
            outstanding.done(4, start + HOLD),
            [Answer::Ack {
                tag: 5,
                multiple: true
            }]
        );
        assert_eq!(
            outstanding.rejected(6, false, start + HOLD),
            [Answer::Reject {
                tag: 6,
                requeue: false
            }]
        );
        assert!(outstanding.is_empty());
    }
}
