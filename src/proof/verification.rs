//! The check after commit. Whatever ends a deletion DONE queues it in
//! `erasure.verification_queue`, in the same transaction; the verifier takes the queue in
//! batches, in the background, runs the plan's own paths for each customer (read-only,
//! [`crate::plan::sql::leftovers_statement`]), and records for the deletion when it ran and what
//! it found in `erasure.verifications`: `{"outcome": "passed"}`, or `{"outcome": "failed", "tables": [...]}` naming each
//! table where something of the customer is left (logged as an error, and counted). Chunked
//! erasures end with the erasure statement, so they are checked the same way.
//!
//! It runs apart from the erasure path and after its commit, so an erasure never waits for it;
//! a batch is one read statement and one write (an insert into `erasure.verifications`, and
//! the queue rows deleted), at most one batch a tick.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::deletion::owed;
use crate::plan::Plan;
use crate::plan::sql::{Statement, Values, leftovers_statement};

/// The most deletions checked in one batch.
pub const BATCH: i64 = 256;

/// What the check found of one deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub deletion_id: String,
    /// The tables where something of the customer was left; empty when it passed.
    pub tables: Vec<String>,
}

impl Checked {
    pub fn passed(&self) -> bool {
        self.tables.is_empty()
    }

    fn record(&self) -> Value {
        match self.passed() {
            true => json!({ "outcome": "passed" }),
            false => json!({ "outcome": "failed", "tables": self.tables }),
        }
    }
}

/// Checks DONE deletions after their commit.
#[derive(Clone)]
pub struct Verifier {
    pool: PgPool,
    statement: std::sync::Arc<Statement>,
}

impl Verifier {
    /// A verifier for `plan` (its facts filled by the live-schema check).
    pub fn new(pool: PgPool, plan: &Plan) -> Self {
        Self {
            pool,
            statement: std::sync::Arc::new(leftovers_statement(plan)),
        }
    }

    /// Checks up to `limit` queued deletions, oldest first, records each outcome and takes
    /// them off the queue, in one transaction. Another verifier (another process) skips the
    /// ones this one holds.
    pub async fn verify_queued(&self, limit: i64) -> Result<Vec<Checked>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let queued = owed::claim_unverified(&mut tx, limit).await?;
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = queued.iter().filter_map(|(_, k)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        let args = self.statement.arguments(&Values {
            subject_ids: Some(&keys),
            ..Values::default()
        })?;
        let found: HashMap<String, Vec<String>> = sqlx::query_as_with(&self.statement.sql, args)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let checked: Vec<Checked> = queued
            .into_iter()
            .map(|(deletion_id, key)| Checked {
                tables: key.and_then(|k| found.get(&k).cloned()).unwrap_or_default(),
                deletion_id,
            })
            .collect();
        let records: Vec<(&str, Value)> = checked
            .iter()
            .map(|c| (c.deletion_id.as_str(), c.record()))
            .collect();
        owed::record_verifications(&mut tx, &records).await?;
        tx.commit().await?;
        for c in &checked {
            crate::metrics::verification(c.passed());
            if !c.passed() {
                tracing::error!(
                    deletion_id = %c.deletion_id,
                    tables = %c.tables.join(", "),
                    "verification after commit failed: the plan's paths still find the erased customer's data in these tables"
                );
            }
        }
        Ok(checked)
    }

    /// Checks a batch of the queue every `every` until `shutdown`. One batch a tick bounds the
    /// work it takes from the database while erasures run: under a load above a batch a tick,
    /// the checks fall behind and catch up once the load drops.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            match self.verify_queued(BATCH).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::db::SafeError(&e), "verification after commit could not run; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
