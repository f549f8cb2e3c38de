//! A worker slot: an [`Eraser`] with a connection kept from one request to the next, and the
//! loop that decides, by an error's class, what becomes of the request.

use backon::BackoffBuilder;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};

use super::{EraseError, Eraser, Outcome};
use crate::db::ErrorClass;
use crate::deletion::ErrorKey;
use crate::plan::sizes::Probing;
use crate::request::Received;

/// A connection going back to the pool costs a round trip (the pool pings it on release), so
/// each worker slot keeps its own: a typical erasure is then exactly one round trip. The
/// connection is dropped after any error and a fresh one taken for the next attempt.
pub struct Slot {
    pub(super) eraser: Eraser,
    conn: Option<PoolConnection<Postgres>>,
    /// Batch statements that failed and were carried out one request at a time.
    pub(super) fallbacks: u64,
}

impl Slot {
    pub fn new(eraser: Eraser) -> Self {
        Self {
            eraser,
            conn: None,
            fallbacks: 0,
        }
    }

    pub fn eraser(&self) -> &Eraser {
        &self.eraser
    }

    /// How many of this slot's batch statements failed and were carried out one request at a
    /// time (also counted in `erasure_batch_fallbacks_total`).
    pub fn batch_fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// Carries out `received`, deciding by [`ErrorClass`]:
    /// - [`ErrorClass::Retry`]: tried again with exponential backoff and jitter, up to the
    ///   configured attempts; when they run out the request is recorded FAILED `internal` with
    ///   the last cause, and [`Outcome::Stopped`] says to dead-letter it;
    /// - [`ErrorClass::Constraint`]: tried again (a row committed meanwhile can cause it), but
    ///   the same constraint failing a second time ends it FAILED `plan_gap`, naming the
    ///   constraint and what the plan lacks, also [`Outcome::Stopped`];
    /// - [`ErrorClass::Permanent`]: recorded FAILED at once (`plan_gap` or `internal`), also
    ///   [`Outcome::Stopped`];
    /// - [`ErrorClass::Hold`]: returned without recording anything and without counting
    ///   against the request: the caller holds the delivery and tries again later.
    ///
    /// The first attempt probes for size the customers the statistics name; every later one
    /// probes every customer (see [`crate::plan::sizes`]).
    pub async fn erase(&mut self, received: &Received) -> Result<Outcome, EraseError> {
        let probing = self.eraser.probing();
        self.erase_probing(received, probing).await
    }

    /// [`Slot::erase`], probing `first` on the first attempt.
    pub(super) async fn erase_probing(
        &mut self,
        received: &Received,
        first: Probing,
    ) -> Result<Outcome, EraseError> {
        let request_id = received.request_id();
        let mut probing = first;
        let mut delays = self.eraser.backoff().build();
        // Tries that count against the request: every failed one but the free reconnect.
        let mut tries: u32 = 0;
        let mut reconnected = false;
        let mut refused_by: Vec<String> = Vec::new();
        let e = loop {
            let eraser = self.eraser.clone();
            let reused = self.conn.is_some();
            let attempt = match self.connection().await {
                Ok(conn) => eraser.erase_once(conn, received, &probing).await,
                Err(e) => Err(e.into()),
            };
            probing = Probing::All;
            let e = match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(e) => e,
            };
            self.conn = None;
            let class = e.class();
            match class {
                // A kept connection that died while idle (a database restart, a terminated
                // backend): one immediate try on a fresh connection before holding.
                ErrorClass::Hold if reused && !reconnected => {
                    reconnected = true;
                    tracing::info!(%request_id, error = %e, "kept connection lost; reconnecting");
                    continue;
                }
                ErrorClass::Hold => return Err(e),
                ErrorClass::Retry | ErrorClass::Constraint | ErrorClass::Permanent => {}
            }
            tries += 1;
            let may_pass = match class {
                // A row committed meanwhile can cause it once; the same constraint again is a gap.
                ErrorClass::Constraint => {
                    let constraint = e.constraint().unwrap_or_default();
                    let first = !refused_by.contains(&constraint);
                    refused_by.push(constraint);
                    first
                }
                ErrorClass::Retry => true,
                ErrorClass::Permanent | ErrorClass::Hold => false,
            };
            match delays.next().filter(|_| may_pass) {
                Some(delay) => {
                    tracing::warn!(%request_id, error = %e, tries, ?delay, "erasure attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => break e,
            }
        };
        let (key, message) = match e.failure() {
            (ErrorKey::PlanGap, gap) => (ErrorKey::PlanGap, gap),
            (key, _) if e.class() == ErrorClass::Retry => (
                key,
                format!("the erasure failed {tries} times; the last time: {e}"),
            ),
            (key, _) => (key, format!("the erasure failed: {e}")),
        };
        tracing::error!(%request_id, error = %e, tries, error_key = %key, "erasure failed");
        self.eraser.record_failure(received, key, &message).await
    }

    pub(super) fn drop_connection(&mut self) {
        self.conn = None;
    }

    pub(super) async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.eraser.inner.pool.acquire().await?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }
}
