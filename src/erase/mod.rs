//! Carrying out one request. In the order a request travels:
//! - [`slot`]: a worker slot keeps a database connection from one request to the next, and
//!   decides by the error's class whether to retry, hold the delivery, or give up;
//! - `batch`: many requests in one statement, each ending as it would alone ([`Slot::erase_batch`]);
//! - this file: the common path, [`Eraser::erase_once`]: the plan's erasure statement, which
//!   erases a typical customer and records the outcome in one round trip;
//! - [`recheck`]: when the statement found nothing to act on, one short transaction with a
//!   fresh snapshot says why (a duplicate, already erased, not found, a reused request id, a
//!   customer too large for one statement);
//! - [`chunked`]: a customer too large for one statement, erased in short transactions;
//! - [`failure`]: requests that end without an erasure: invalid messages, poison messages,
//!   failures that will not pass;
//! - [`preview`]: what an erasure would do, run and rolled back;
//! - [`error`]: why an attempt ended without an outcome, and what to do about it.
//!
//! Every record it writes goes through [`crate::deletion::store`] and
//! [`crate::deletion::audit`].

mod batch;
pub mod chunked;
pub mod error;
pub mod failure;
pub mod hold;
pub mod preview;
mod recheck;
pub mod slot;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::ExponentialBuilder;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

use crate::deletion::{self, DeletionRow};
use crate::identity::{IdentifierType, Identity, Naming};
use crate::keyed_hash::KeyedHash;
use crate::plan::sizes::{self, Probing};
use crate::plan::sql::{
    ChunkStatement, RequestRow, Statement, Values, chunk_statements, erase_statement,
    find_subject_statement, lock_statement, oversized_statement, subject_digests_statement,
};
use crate::plan::{KeyValue, Plan};
use crate::request::{Channel, ErasureRequest, InvalidRequest, Received};

pub use chunked::ChunkSize;
pub use error::EraseError;
pub use slot::Slot;

use recheck::Recheck;

/// Which live customer an identifier names ([`crate::identity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Named {
    /// This customer (its key, as text).
    One(String),
    /// More than one, by their lookup values: the request is refused.
    Several,
    /// No live customer.
    Nobody,
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// A final outcome (DONE or FAILED) was recorded just now.
    Recorded(DeletionRow),
    /// The request id already had this final outcome; nothing changed.
    Duplicate(DeletionRow),
    /// The message was not a valid request, or reused a request id for another customer. It was
    /// audited, and recorded as a FAILED deletion when its request id was new (or open for the
    /// same customer).
    Rejected {
        message: String,
        deletion: Option<DeletionRow>,
    },
    /// The request could not be carried out (an error that will not pass, retries run out,
    /// or a poison message): recorded FAILED `internal` with the cause; the message goes to
    /// the dead-letter queue for inspection.
    Stopped(DeletionRow),
}

/// How hard to try, and when to erase in chunks.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_attempts: u32,
    pub chunk_threshold: i64,
    /// The most rows one chunk takes.
    pub chunk_rows: i64,
    /// How long one chunk's transaction should take; chunks are sized to it.
    pub chunk_time: Duration,
    /// How long each request is held before it is carried out.
    pub grace_period: crate::config::GracePeriod,
    /// The longest a preview may read before it is stopped (and answered "try later").
    pub preview_timeout: Duration,
}

/// Runs erasures for one plan against one database. Cheap to clone.
#[derive(Clone)]
pub struct Eraser {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    plan: Plan,
    /// The erasure statement (what `erasure plan --sql` prints).
    statement: Statement,
    /// Its reading twin, for previews ([`crate::plan::sql::count_statement`]).
    count: Statement,
    /// For a plan with rows the customer references: the statement that locks them first, in
    /// the erasure statement's transaction ([`crate::plan::sql::lock_statement`]).
    lock: Option<Statement>,
    /// For a plan whose steps' tables triggers write to during the erasure: the statement that
    /// clears them once more after it, in its transaction
    /// ([`crate::plan::residue::trailing_statement`]).
    trailing: Option<Statement>,
    /// Whether a customer has more rows in a step's table than one statement should take.
    oversized: Statement,
    chunks: Vec<ChunkStatement>,
    limits: Limits,
    count_keys: Vec<String>,
    /// Who a request names, and the keyed hashes of identifiers ([`crate::identity`]).
    identity: Identity,
    /// Finds the key of the live customer an identifier names (the key wins over a lookup).
    find_customer: Statement,
    /// Which customers the statement probes for size, from the statistics as last read
    /// ([`Eraser::read_statistics`]); all of them until then.
    probing: RwLock<Probing>,
}

/// How often the worker reads the tables' statistics again, to know whom to probe for size:
/// ANALYZE (by autovacuum or by hand) runs on that scale or slower.
pub const READ_STATISTICS_EVERY: Duration = Duration::from_secs(60);

/// How often the fresh look may send a request back to the erasure statement.
const MAX_ROUNDS: usize = 5;

/// The statement's audit insert failed its check: another delivery of the same request
/// recorded its outcome first, and this statement rolled back.
const LOST_RACE_CONSTRAINT: &str = "audit_log_outcome_has_deletion";

/// The table of a deletion's `counts` with the most rows, and how many, when one statement
/// erased more than `threshold` rows of it: a customer the statistics did not show as large,
/// so not probed, erased in one long transaction instead of chunks. Not after chunks: the
/// chunks erased those rows, and the counts are the whole erasure's.
fn unprobed_large(
    counts: &serde_json::Value,
    threshold: i64,
    after_chunks: bool,
) -> Option<(&str, i64)> {
    if after_chunks {
        return None;
    }
    counts
        .as_object()?
        .iter()
        .filter_map(|(table, n)| Some((table.as_str(), n.as_i64()?)))
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > threshold)
}

impl Eraser {
    /// `plan` as the live-schema check returned it (with its facts).
    pub fn new(pool: PgPool, plan: Plan, hash: KeyedHash, limits: Limits) -> Self {
        let find_customer = find_subject_statement(&plan);
        let identity = Identity::new(plan.facts.key_type, plan.subject.lookups.clone(), hash);
        let limits = Limits {
            max_attempts: limits.max_attempts.max(1),
            chunk_threshold: limits.chunk_threshold.max(1),
            chunk_rows: limits.chunk_rows.max(1),
            ..limits
        };
        Self {
            inner: Arc::new(Inner {
                statement: erase_statement(&plan),
                count: crate::plan::sql::count_statement(&plan),
                lock: lock_statement(&plan),
                trailing: crate::plan::residue::trailing_statement(&plan),
                oversized: oversized_statement(&plan),
                chunks: chunk_statements(&plan),
                count_keys: plan.count_keys(),
                pool,
                plan,
                limits,
                identity,
                find_customer,
                probing: RwLock::new(Probing::All),
            }),
        }
    }

    pub fn count_keys(&self) -> &[String] {
        &self.inner.count_keys
    }

    pub fn keyed_hash(&self) -> &KeyedHash {
        self.inner.identity.hash()
    }

    /// Who a request names, for this plan.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// Which customers the erasure statement probes for size now.
    pub fn probing(&self) -> Probing {
        self.inner
            .probing
            .read()
            .expect("no writer panics holding it")
            .clone()
    }

    /// Reads the statistics of the plan's tables again, and from now on probes the customers
    /// they say may be too large for one statement (see [`crate::plan::sizes`]).
    pub async fn read_statistics(&self) -> Result<Probing, sqlx::Error> {
        let inner = &self.inner;
        let probing = sizes::read(&inner.pool, &inner.plan, inner.limits.chunk_threshold).await?;
        let mut current = inner.probing.write().expect("no writer panics holding it");
        if *current != probing {
            match &probing {
                Probing::All => {
                    tracing::info!("the erasure statement probes every customer for size")
                }
                Probing::Only(keys) => tracing::info!(
                    customers = keys.len(),
                    "the erasure statement probes for size only the customers the statistics say may be large"
                ),
            }
            *current = probing.clone();
        }
        Ok(probing)
    }

    /// Reads the statistics every `every` until `shutdown`; a failed read keeps what was read
    /// last.
    pub async fn keep_reading_statistics(
        self,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.read_statistics().await {
                tracing::warn!(error = %crate::db::SafeError(&e), "could not read the tables' statistics; probing as before");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// The generated erasure statement (what `erasure plan --sql` prints).
    /// The plan, with its facts.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    pub fn statement(&self) -> &Statement {
        &self.inner.statement
    }

    /// `identifier` read as the customer's key (matching nothing when it does not read as one).
    pub fn key(&self, identifier: &str) -> KeyValue {
        self.inner.plan.facts.key_type.key(identifier)
    }

    /// A request message received on `channel` at `received_at` ([`crate::request::parse`]),
    /// as [`Eraser::receive`] takes it; or why it is not a valid request.
    pub fn read(
        &self,
        body: &[u8],
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Received, InvalidRequest> {
        self.receive(
            crate::request::parse(body, received_at)?,
            channel,
            received_at,
        )
    }

    /// `request` as received on `channel` at `received_at`, with its identifier's hashes; or
    /// why it is not valid for this plan (an `identifier_type` it does not know).
    pub fn receive(
        &self,
        request: ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Received, InvalidRequest> {
        Received::new(request, channel, received_at, &self.inner.identity)
    }

    /// The live customer `identifier` (of type `kind`) names, by the rule of
    /// [`crate::identity`].
    pub async fn find_customer(
        &self,
        identifier: &str,
        kind: IdentifierType,
    ) -> Result<Named, sqlx::Error> {
        let mut conn = self.inner.pool.acquire().await?;
        let naming = self.inner.identity.naming(identifier, kind.clone());
        self.live_customer(&mut conn, identifier, &kind, &naming)
            .await
    }

    /// The keyed hashes of the lookup values of the live customer with key `key`, as deletions
    /// keep them; `None` when no customer has that key.
    pub async fn lookup_digests_of(&self, key: &str) -> Result<Option<Vec<Vec<u8>>>, sqlx::Error> {
        let statement = subject_digests_statement(&self.inner.plan);
        let args = statement.arguments(&Values {
            subject_id: Some(key),
            pads: Some(self.inner.identity.hash().pads()),
            ..Values::default()
        })?;
        let digests: Option<Option<Vec<Vec<u8>>>> = sqlx::query_scalar_with(&statement.sql, args)
            .fetch_optional(&self.inner.pool)
            .await?;
        Ok(digests.map(Option::unwrap_or_default))
    }

    /// Carries out `received` on a connection of its own; the hot path keeps a [`Slot`].
    pub async fn erase(&self, received: &Received) -> Result<Outcome, EraseError> {
        Slot::new(self.clone()).erase(received).await
    }

    /// Backoff between attempts of an erasure that may pass.
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(self.inner.limits.max_attempts as usize - 1)
    }

    /// One attempt: the erasure statement (probing `probing` for size the first time, every
    /// customer after); when it found nothing to act on, the fresh look, which ends the
    /// request, sends it back to the statement, or erases it in chunks first.
    async fn erase_once(
        &self,
        conn: &mut PgConnection,
        received: &Received,
        probing: &Probing,
    ) -> Result<Outcome, EraseError> {
        let mut after_chunks = false;
        let mut probing = probing;
        for _ in 0..MAX_ROUNDS {
            let run = self
                .run_statement(conn, &[received], after_chunks, probing)
                .await;
            probing = &Probing::All;
            match run {
                Ok(mut rows) if !rows.is_empty() => return Ok(Outcome::Recorded(rows.remove(0))),
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.constraint() == Some(LOST_RACE_CONSTRAINT) => {}
                Err(e) => return Err(e.into()),
            }
            match self.recheck(received).await? {
                Recheck::Ended(outcome) => return Ok(*outcome),
                Recheck::Again => {}
                Recheck::Chunked(subject_id) => {
                    // Then the statement once more: the customer row, the outcome, the audit.
                    self.erase_in_chunks(conn, received, &subject_id).await?;
                    after_chunks = true;
                }
            }
        }
        Err(EraseError::CustomerKeptChanging)
    }

    /// A request as the erasure statement takes it (with a new deletion id).
    fn request_row<'a>(&'a self, received: &'a Received) -> RequestRow<'a> {
        let request = &received.request;
        let requested_at = received.requested_at();
        RequestRow {
            customer: &request.customer_id,
            key: received.naming.key.clone(),
            kind: received.naming.kind.word(self.inner.identity.lookups()),
            request_id: request.request_id,
            deletion_id: deletion::new_id(),
            requested_hash: received.requested_hash(),
            requested_by: &request.requested_by,
            reason: request.reason.as_deref(),
            requested_at,
            due_at: deletion::due_at(requested_at),
            channel: received.channel,
            received_at: received.received_at,
        }
    }

    /// The erasure statement's arguments for `batch` (new deletion ids each time), probing
    /// `probing` for size.
    pub fn statement_arguments(
        &self,
        batch: &[&Received],
        probing: &Probing,
    ) -> Result<sqlx::postgres::PgArguments, sqlx::Error> {
        self.arguments_for(&self.inner.statement, batch, probing)
    }

    /// The arguments of `statement` (the erasure statement, or its reading twin,
    /// [`crate::plan::sql::count_statement`]) for `batch`, probing `probing` for size.
    pub fn arguments_for(
        &self,
        statement: &Statement,
        batch: &[&Received],
        probing: &Probing,
    ) -> Result<sqlx::postgres::PgArguments, sqlx::Error> {
        let inner = &self.inner;
        let requests: Vec<RequestRow<'_>> = batch.iter().map(|r| self.request_row(r)).collect();
        statement.arguments(&Values {
            requests: &requests,
            pads: Some(inner.identity.hash().pads()),
            chunk_threshold: Some(inner.limits.chunk_threshold),
            probing: Some(probing),
            ..Values::default()
        })
    }

    /// The erasure statement for `batch`: the outcomes it recorded, one per request it carried
    /// out (a request it found nothing to act on for has none; see [`erase_statement`]).
    ///
    /// `after_chunks`: the customer's rows were just erased in chunks. The statistics still
    /// count them, so the planner would check the customer's foreign keys (and probe its steps)
    /// by scanning whole tables; in its own transaction the statement walks the indexes
    /// instead, past the few rows left.
    async fn run_statement(
        &self,
        conn: &mut PgConnection,
        batch: &[&Received],
        after_chunks: bool,
        probing: &Probing,
    ) -> Result<Vec<DeletionRow>, sqlx::Error> {
        let args = self.statement_arguments(batch, probing)?;
        let query = sqlx::query_as_with::<_, DeletionRow, _>(&self.inner.statement.sql, args);
        if !after_chunks && self.inner.lock.is_none() && self.inner.trailing.is_none() {
            let rows = query.fetch_all(conn).await?;
            self.tell_large_in_one_statement(&rows, false);
            return Ok(rows);
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        self.lock_shared_rows(&mut tx, batch).await?;
        if after_chunks {
            sqlx::query(chunked::WALK_THE_INDEX)
                .execute(&mut *tx)
                .await?;
        }
        let rows = query.fetch_all(&mut *tx).await?;
        self.clear_trigger_copies(&mut tx, &rows).await?;
        tx.commit().await?;
        self.tell_large_in_one_statement(&rows, after_chunks);
        Ok(rows)
    }

    /// Locks the customers of `batch` and the rows they reference, for a plan that has such
    /// rows (see [`lock_statement`]); the erasure statement runs next, in the same transaction.
    async fn lock_shared_rows(
        &self,
        conn: &mut PgConnection,
        batch: &[&Received],
    ) -> Result<(), sqlx::Error> {
        let Some(lock) = &self.inner.lock else {
            return Ok(());
        };
        let requests: Vec<RequestRow<'_>> = batch.iter().map(|r| self.request_row(r)).collect();
        let args = lock.arguments(&Values {
            requests: &requests,
            ..Values::default()
        })?;
        sqlx::query_with(&lock.sql, args).execute(conn).await?;
        Ok(())
    }

    /// Clears once more, in the erasure's transaction, the steps' tables that triggers wrote
    /// to while the statement erased the customers of `rows` (see
    /// [`crate::plan::residue::trailing_statement`]).
    async fn clear_trigger_copies(
        &self,
        conn: &mut PgConnection,
        rows: &[DeletionRow],
    ) -> Result<(), sqlx::Error> {
        let Some(trailing) = &self.inner.trailing else {
            return Ok(());
        };
        let erased: Vec<String> = rows
            .iter()
            .filter(|r| r.status == deletion::DeletionStatus::Done)
            .filter_map(|r| r.related_object_id.clone())
            .collect();
        if erased.is_empty() {
            return Ok(());
        }
        let args = trailing.arguments(&Values {
            subject_ids: Some(&erased),
            ..Values::default()
        })?;
        sqlx::query_with(&trailing.sql, args).execute(conn).await?;
        Ok(())
    }

    /// Says so when the statement erased more rows of one table than the chunk threshold: the
    /// statistics did not show that customer as large (they were older than its rows), so it
    /// was not probed, and its erasure took one long transaction instead of chunks.
    fn tell_large_in_one_statement(&self, rows: &[DeletionRow], after_chunks: bool) {
        let threshold = self.inner.limits.chunk_threshold;
        for row in rows {
            if let Some((table, n)) = unprobed_large(&row.data_json, threshold, after_chunks) {
                crate::metrics::unprobed_large();
                tracing::warn!(deletion_id = %row.id, count_key = %table, rows = n, threshold, "erased a customer larger than the chunk threshold in one statement; the tables' statistics did not show it (ANALYZE them)");
            }
        }
    }

    /// The live customer `identifier` (of type `kind`, read as `naming` says) names.
    async fn live_customer(
        &self,
        conn: &mut PgConnection,
        identifier: &str,
        kind: &IdentifierType,
        naming: &Naming,
    ) -> Result<Named, sqlx::Error> {
        let args = self.inner.find_customer.arguments(&Values {
            customer: Some(identifier),
            key: Some(&naming.key),
            kind: kind.word(self.inner.identity.lookups()),
            pads: Some(self.inner.identity.hash().pads()),
            ..Values::default()
        })?;
        let (key, ambiguous): (Option<String>, bool) =
            sqlx::query_as_with(&self.inner.find_customer.sql, args)
                .fetch_one(conn)
                .await?;
        Ok(match (key, ambiguous) {
            (_, true) => Named::Several,
            (Some(key), false) => Named::One(key),
            (None, false) => Named::Nobody,
        })
    }

    /// The key of the live customer `identifier` (of type `kind`) names, if one does (the
    /// console's search finds the requests of a customer not erased yet by a lookup value so).
    pub async fn live_customer_key(
        &self,
        identifier: &str,
        kind: &IdentifierType,
    ) -> Result<Named, sqlx::Error> {
        let naming = self.inner.identity.naming(identifier, kind.clone());
        let mut conn = self.inner.pool.acquire().await?;
        self.live_customer(&mut conn, identifier, kind, &naming)
            .await
    }

    /// The live customer `received` names.
    async fn named_by(
        &self,
        conn: &mut PgConnection,
        received: &Received,
    ) -> Result<Named, sqlx::Error> {
        self.live_customer(
            conn,
            &received.request.customer_id,
            &received.naming.kind,
            &received.naming,
        )
        .await
    }

    /// The hash of the plan every deletion records.
    pub fn plan_hash(&self) -> &str {
        &self.inner.plan.hash
    }

    /// Every count key at 0, for an outcome that erased nothing.
    fn zero_counts(&self) -> Value {
        let counts: Map<String, Value> = self
            .inner
            .count_keys
            .iter()
            .map(|k| (k.clone(), Value::from(0)))
            .collect();
        Value::Object(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_table_past_the_threshold_in_one_statement_is_told() {
        let counts = json!({"customers": 1, "events": 2500, "orders": 40, "note": "x"});
        assert_eq!(unprobed_large(&counts, 2000, false), Some(("events", 2500)));
        // Exactly at the threshold is not past it; after chunks, the chunks erased the rows.
        assert_eq!(unprobed_large(&counts, 2500, false), None);
        assert_eq!(unprobed_large(&counts, 2000, true), None);
        assert_eq!(unprobed_large(&json!({"events": 3}), 2000, false), None);
        assert_eq!(unprobed_large(&json!("not counts"), 0, false), None);
    }
}
