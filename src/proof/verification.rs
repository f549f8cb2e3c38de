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
use crate::plan::sql::{Statement, Sweep, Values, leftovers_statement, sweep_statements};

/// The most deletions checked in one batch.
pub const BATCH: i64 = 256;

/// What the check found of one deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub deletion_id: String,
    /// The tables where something of the customer was left; empty when it passed.
    pub tables: Vec<String>,
    /// Referenced rows an earlier check found unused and the sweep cleared, by table: this
    /// check is the one after the sweep.
    pub swept: Option<Value>,
}

impl Checked {
    pub fn passed(&self) -> bool {
        self.tables.is_empty()
    }

    fn record(&self) -> Value {
        let mut record = match self.passed() {
            true => json!({ "outcome": "passed" }),
            false => json!({ "outcome": "failed", "tables": self.tables }),
        };
        if let Some(swept) = &self.swept {
            record["swept"] = swept.clone();
        }
        record
    }
}

/// Checks DONE deletions after their commit.
#[derive(Clone)]
pub struct Verifier {
    pool: PgPool,
    statement: std::sync::Arc<Statement>,
    sweeps: std::sync::Arc<Vec<Sweep>>,
}

impl Verifier {
    /// A verifier for `plan` (its facts filled by the live-schema check).
    pub fn new(pool: PgPool, plan: &Plan) -> Self {
        Self {
            pool,
            statement: std::sync::Arc::new(leftovers_statement(plan)),
            sweeps: std::sync::Arc::new(sweep_statements(plan)),
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
        // A deletion whose customer is unknown (not an erasure: none here) has nothing to
        // check.
        let checked_ones: Vec<&owed::Unverified> = queued
            .iter()
            .filter(|q| q.related_object_id.is_some())
            .collect();
        let keys: Vec<String> = checked_ones
            .iter()
            .filter_map(|q| q.related_object_id.clone())
            .collect();
        let kept: Vec<Value> = checked_ones.iter().map(|q| q.all_kept()).collect();
        let args = self.statement.arguments(&Values {
            subject_ids: Some(&keys),
            kept: Some(&kept),
            ..Values::default()
        })?;
        let found: HashMap<i64, Vec<String>> = sqlx::query_as_with(&self.statement.sql, args)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let mut tables_of: HashMap<&str, Vec<String>> = HashMap::new();
        for (i, q) in checked_ones.iter().enumerate() {
            if let Some(tables) = found.get(&(i as i64 + 1)) {
                let mut once: Vec<String> = Vec::new();
                for table in tables {
                    if !once.contains(table) {
                        once.push(table.clone());
                    }
                }
                tables_of.insert(&q.deletion_id, once);
            }
        }
        let checked: Vec<Checked> = queued
            .iter()
            .map(|q| Checked {
                tables: tables_of.remove(q.deletion_id.as_str()).unwrap_or_default(),
                deletion_id: q.deletion_id.clone(),
                swept: q.all_kept().get("swept").cloned(),
            })
            .collect();
        let records: Vec<(&str, Value)> = checked
            .iter()
            .map(|c| (c.deletion_id.as_str(), c.record()))
            .collect();
        owed::record_verifications(&mut tx, &records).await?;
        // Checked: what the erasure left behind is recorded next ([`super::residue`]).
        let checked_ids: Vec<&str> = checked.iter().map(|c| c.deletion_id.as_str()).collect();
        crate::deletion::residue::queue(&mut tx, &checked_ids).await?;
        tx.commit().await?;
        for c in &checked {
            crate::metrics::verification(c.passed());
            if !c.passed() {
                tracing::error!(
                    deletion_id = %c.deletion_id,
                    tables = %c.tables.join(", "),
                    "verification after commit failed: the erased customer's data is still found in these tables"
                );
            }
        }
        let failed: Vec<&owed::Unverified> = queued
            .iter()
            .filter(|q| {
                checked
                    .iter()
                    .any(|c| c.deletion_id == q.deletion_id && !c.passed())
            })
            .collect();
        if !failed.is_empty() && !self.sweeps.is_empty() {
            self.sweep(&failed).await?;
        }
        Ok(checked)
    }

    /// Clears the referenced rows that the failed deletions kept because something used them,
    /// where nothing alive uses them any more, as the plan says; audits what it cleared for
    /// each deletion, and queues each such deletion for another check (which records the
    /// sweep beside its outcome).
    async fn sweep(&self, failed: &[&owed::Unverified]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let kept: Vec<(&owed::Unverified, Value)> =
            failed.iter().map(|q| (*q, q.all_kept())).collect();
        let in_use = |kept: &Value, table: &str| -> Vec<String> {
            kept.pointer(&format!(
                "/in_use/{}",
                table.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
        };
        let mut swept_of: HashMap<&str, serde_json::Map<String, Value>> = HashMap::new();
        for sweep in self.sweeps.iter() {
            let mut keys: Vec<String> = kept
                .iter()
                .flat_map(|(_, k)| in_use(k, &sweep.table))
                .collect();
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                continue;
            }
            let values = Values {
                subject_ids: Some(&keys),
                ..Values::default()
            };
            sqlx::query_with(&sweep.lock.sql, sweep.lock.arguments(&values)?)
                .execute(&mut *tx)
                .await?;
            let cleared: Vec<String> =
                sqlx::query_scalar_with(&sweep.clear.sql, sweep.clear.arguments(&values)?)
                    .fetch_all(&mut *tx)
                    .await?;
            for (q, k) in &kept {
                let n = in_use(k, &sweep.table)
                    .iter()
                    .filter(|key| cleared.contains(key))
                    .count();
                if n > 0 {
                    swept_of
                        .entry(q.deletion_id.as_str())
                        .or_default()
                        .insert(sweep.table.clone(), Value::from(n));
                }
            }
        }
        for (q, mut k) in kept {
            let Some(swept) = swept_of.remove(q.deletion_id.as_str()) else {
                continue;
            };
            tracing::warn!(deletion_id = %q.deletion_id, tables = ?swept.keys().collect::<Vec<_>>(), "referenced rows the erasure kept were no longer used; cleared them");
            let swept = Value::Object(swept);
            crate::deletion::audit::swept(&mut tx, &q.deletion_id, &swept).await?;
            k["swept"] = swept;
            owed::requeue_verification(&mut tx, &q.deletion_id, &k).await?;
        }
        tx.commit().await
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
