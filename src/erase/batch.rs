//! A batch of requests in one statement. Every request ends exactly as it would alone: those
//! the statement recorded an outcome for are done; every other (a second request for a
//! customer of the batch, one that names nobody, one already carried out, a huge customer) is
//! carried out alone afterwards, through [`Slot::erase`]; and when the statement fails
//! (a deadlock, a lock or statement timeout, a backend killed, an error that will not pass),
//! every request of the batch is carried out alone, probing every customer for size, so that
//! one bad request costs the others no more than a retry, each gets its own error class, and
//! a customer too large for one statement whom the statistics missed is erased in chunks.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use uuid::Uuid;

use super::{EraseError, Outcome, Slot};
use crate::db::SafeError;
use crate::plan::sizes::Probing;
use crate::request::Received;

impl Slot {
    /// Carries out `batch`; the outcomes are in the batch's order.
    pub async fn erase_batch(&mut self, batch: &[Received]) -> Vec<Result<Outcome, EraseError>> {
        if batch.len() < 2 {
            let mut outcomes = Vec::with_capacity(batch.len());
            for received in batch {
                outcomes.push(self.erase(received).await);
            }
            return outcomes;
        }
        // A request id once per statement: a repeat in the same batch is carried out alone,
        // after, and finds the outcome recorded (or, naming another customer, is rejected as a
        // reused request id). Outcomes would be the same without this: the statement takes one
        // request per customer, and two rows of one request id in its insert fail the whole
        // statement, which is then carried out request by request. But that failure would cost
        // every request of the batch a second round trip.
        let mut seen: HashSet<Uuid> = HashSet::new();
        let together: Vec<&Received> = batch
            .iter()
            .filter(|r| seen.insert(r.request_id()))
            .collect();
        let started = Instant::now();
        let mut recorded: HashMap<Uuid, crate::deletion::DeletionRow> = HashMap::new();
        let mut alone = self.eraser.probing();
        match self.run_batch(&together, &alone).await {
            Ok(rows) => {
                crate::metrics::batch_statement(started.elapsed());
                for row in rows {
                    recorded.insert(row.request_id, row);
                }
            }
            Err(e) => {
                alone = Probing::All;
                self.fallbacks += 1;
                crate::metrics::batch_fell_back();
                tracing::warn!(requests = together.len(), error = %SafeError(&e), "the batch statement failed; carrying out its requests one at a time");
            }
        }
        // A repeated request id finds its row taken by the first, and is carried out alone.
        let mut outcomes = Vec::with_capacity(batch.len());
        for received in batch {
            match recorded.remove(&received.request_id()) {
                Some(row) => outcomes.push(Ok(Outcome::Recorded(row))),
                None => outcomes.push(self.erase_probing(received, alone.clone()).await),
            }
        }
        outcomes
    }

    /// The erasure statement for `batch`, on the slot's connection (dropped after an error).
    async fn run_batch(
        &mut self,
        batch: &[&Received],
        probing: &Probing,
    ) -> Result<Vec<crate::deletion::DeletionRow>, sqlx::Error> {
        let eraser = self.eraser.clone();
        let conn = self.connection().await?;
        let rows = eraser.run_statement(conn, batch, false, probing).await;
        if rows.is_err() {
            self.drop_connection();
        }
        rows
    }
}
