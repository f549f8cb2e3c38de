//! Customers too large for one short transaction: their rows are erased a chunk at a time,
//! each chunk one statement and its count in a transaction of its own, under a claim that keeps
//! every other request for the customer waiting. The customer row, the outcome and the audit
//! row come last, in the usual erasure statement. Resumable: the claim and the IN_PROGRESS
//! deletion with its counts survive a crash, and the rows already erased are gone.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::{EraseError, Eraser};
use crate::deletion::claims;
use crate::deletion::store::{self, NewDeletion};
use crate::plan::sql::Values;
use crate::request::Received;

/// How a chunk finds its rows: by walking the customer's index entries in order, stopping at
/// the chunk's size. A bitmap scan (the planner's choice for a customer that large) reads
/// every entry of the customer each time, and the heap pages of the rows earlier chunks
/// erased, so each chunk would take longer than the one before and the last one longest. An
/// index scan also marks the entries of erased rows dead, so later chunks skip them.
///
/// Chunks commit synchronously, even where the server or role turned `synchronous_commit`
/// off: until a commit is on disk, the rows it erased cannot be marked dead (PostgreSQL sets
/// no hint bits for an asynchronous commit not yet flushed), and every later chunk would walk
/// their entries and fetch their rows again.
pub(super) const WALK_THE_INDEX: &str = "SELECT set_config('enable_bitmapscan', 'off', true), \
     set_config('enable_seqscan', 'off', true), \
     CASE WHEN current_setting('synchronous_commit') = 'off' \
          THEN set_config('synchronous_commit', 'local', true) END";

/// The most rows the first chunk of a chunked erasure takes.
const FIRST_CHUNK_ROWS: i64 = 1000;

/// The size of the next chunk: it starts small, then follows how long chunks take, so that
/// each transaction stays near its time budget whether the rows are cached or not, never
/// taking more than `max` rows.
#[derive(Clone, Copy, Debug)]
pub struct ChunkSize {
    rows: i64,
    max: i64,
    target: Duration,
}

impl ChunkSize {
    /// The first chunk's rows: a tenth of the most and no more than `FIRST_CHUNK_ROWS`, so
    /// that a cold table cannot make it long.
    pub fn new(max: i64, target: Duration) -> Self {
        let max = max.max(1);
        Self {
            rows: (max / 10).clamp(1, FIRST_CHUNK_ROWS),
            max,
            target,
        }
    }

    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// A full chunk took `took`: size the next one to the budget, growing by half at most
    /// (rows further on may be colder) and shrinking by half at most.
    pub fn took(&mut self, took: Duration) {
        let ratio = self.target.as_secs_f64() / took.as_secs_f64().max(1e-6);
        let next = (self.rows as f64 * ratio.clamp(0.5, 1.5)) as i64;
        self.rows = next.clamp(1, self.max);
    }
}

impl Eraser {
    /// Erases the rows of every step of customer `subject_id`, a chunk at a time. Leaves the
    /// customer row and the final outcome to the erasure statement.
    pub(super) async fn erase_in_chunks(
        &self,
        conn: &mut PgConnection,
        received: &Received,
        subject_id: &str,
    ) -> Result<(), EraseError> {
        let inner = &self.inner;
        let request_id = received.request_id();
        if !self.claim(conn, received, subject_id).await? {
            // Claimed by another request, or this request already ended: the next round of
            // the statement and the fresh look say which.
            return Ok(());
        }
        tracing::info!(%request_id, "erasing a large customer in chunks");
        let mut size = ChunkSize::new(inner.limits.chunk_rows, inner.limits.chunk_time);
        for chunk in &inner.chunks {
            loop {
                let rows = size.rows();
                let started = Instant::now();
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query(WALK_THE_INDEX).execute(&mut *tx).await?;
                let args = chunk.statement.arguments(&Values {
                    subject_id: Some(subject_id),
                    chunk_rows: Some(rows),
                    request_id: Some(request_id),
                    ..Values::default()
                })?;
                let erased: i64 = match chunk.selects_count {
                    true => {
                        sqlx::query_scalar_with(&chunk.statement.sql, args)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                    false => sqlx::query_with(&chunk.statement.sql, args)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected() as i64,
                };
                if erased == 0 {
                    // This step is done (or the deletion ended, and so does every step).
                    tx.rollback().await?;
                    break;
                }
                if !store::add_chunk_count(&mut tx, request_id, &chunk.counted_as, erased).await? {
                    // The deletion ended while this chunk ran: it erases nothing.
                    tx.rollback().await?;
                    return Ok(());
                }
                tx.commit().await?;
                let took = started.elapsed();
                tracing::debug!(%request_id, table = %chunk.table, rows = erased, ?took, "chunk erased");
                if erased < rows {
                    break;
                }
                size.took(took);
            }
        }
        Ok(())
    }

    /// Claims the customer for this request and marks its deletion IN_PROGRESS; false when
    /// another request holds the claim or this one has already ended.
    async fn claim(
        &self,
        conn: &mut PgConnection,
        received: &Received,
        subject_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let claimed = claims::claim(&mut tx, subject_id, received.request_id()).await?;
        let started = match claimed {
            false => None,
            true => {
                let new = NewDeletion::of(received).related(Some(subject_id));
                store::mark_in_progress(&mut tx, &new, 0).await?
            }
        };
        if started.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(100);

    #[test]
    fn the_first_chunk_is_small() {
        assert_eq!(ChunkSize::new(5000, BUDGET).rows(), 500);
        assert_eq!(ChunkSize::new(100_000, BUDGET).rows(), FIRST_CHUNK_ROWS);
        assert_eq!(ChunkSize::new(5, BUDGET).rows(), 1);
    }

    #[test]
    fn fast_chunks_grow_to_the_most_by_half_at_a_time() {
        let mut size = ChunkSize::new(5000, BUDGET);
        size.took(Duration::from_millis(1));
        assert_eq!(size.rows(), 750);
        for _ in 0..10 {
            size.took(Duration::from_millis(1));
        }
        assert_eq!(size.rows(), 5000);
    }

    #[test]
    fn slow_chunks_shrink_toward_the_budget_at_most_halving() {
        let mut size = ChunkSize::new(5000, BUDGET);
        size.took(Duration::from_millis(400));
        assert_eq!(size.rows(), 250);
        size.took(Duration::from_millis(125));
        assert_eq!(size.rows(), 200);
        for _ in 0..20 {
            size.took(Duration::from_secs(10));
        }
        assert_eq!(size.rows(), 1);
    }
}
