//! The whales: customers of a million rows, each pair erased once by the worker (in chunks)
//! and once by one raw `DELETE`, with the WAL each side wrote and the worker's longest
//! transaction.
use std::time::{Duration, Instant};

use anyhow::ensure;
use erasure::broker;
use erasure::config::Settings;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::server::quiesce;

pub struct Whale {
    pub worker_rate: f64,
    pub worker_secs: f64,
    pub raw_rate: f64,
    pub raw_secs: f64,
    pub longest_ms: f64,
    pub worker_wal: Wal,
    pub raw_wal: Wal,
}

/// WAL the server wrote and flushed to disk (`pg_stat_wal`, the whole server) over a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wal {
    syncs: i64,
    bytes: f64,
}

impl Wal {
    async fn now(pool: &PgPool) -> anyhow::Result<Self> {
        let (syncs, bytes): (i64, f64) =
            sqlx::query_as("SELECT wal_sync, wal_bytes::float8 FROM pg_stat_wal")
                .fetch_one(pool)
                .await?;
        Ok(Self { syncs, bytes })
    }

    /// What was written since `self`. Other backends (the worker's) report their WAL
    /// statistics when their transaction ends only once a second, else after ten idle seconds
    /// (PostgreSQL 15's `PGSTAT_IDLE_INTERVAL`): a phase shorter than that reads as nothing
    /// unless the reading waits for them.
    async fn since(self, pool: &PgPool) -> anyhow::Result<Self> {
        tokio::time::sleep(Duration::from_secs(11)).await;
        let now = Self::now(pool).await?;
        Ok(Self {
            syncs: now.syncs - self.syncs,
            bytes: now.bytes - self.bytes,
        })
    }
}

impl std::ops::Add for Wal {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            syncs: self.syncs + other.syncs,
            bytes: self.bytes + other.bytes,
        }
    }
}

impl std::fmt::Display for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} flushes, {:.1} MiB",
            self.syncs,
            self.bytes / (1024.0 * 1024.0)
        )
    }
}

/// The whales come in two pairs, each pair's rows sharing pages in its own half of the table.
/// The first erasure in a pair's pages finds them full; the second finds them compacted by the
/// `VACUUM` in between, and writes smaller full-page images. So the worker goes first in one
/// pair and the raw `DELETE` in the other, and each side's rate is over both of its whales.
pub async fn whale(pool: &PgPool, settings: &Settings, rows: i64) -> anyhow::Result<Whale> {
    eprintln!("whales: two pairs of {rows} events, each pair a worker erasure and a raw DELETE");
    let mut worker = Side::default();
    let mut raw = Side::default();
    let mut longest_ms = worker_whale(pool, settings, "whale1", rows, &mut worker).await?;
    raw_whale(pool, "whale2_raw", rows, &mut raw).await?;
    longest_ms = longest_ms.max(worker_whale(pool, settings, "whale2", rows, &mut worker).await?);
    raw_whale(pool, "whale1_raw", rows, &mut raw).await?;
    Ok(Whale {
        worker_rate: 2.0 * rows as f64 / worker.secs,
        worker_secs: worker.secs,
        raw_rate: 2.0 * rows as f64 / raw.secs,
        raw_secs: raw.secs,
        longest_ms,
        worker_wal: worker.wal,
        raw_wal: raw.wal,
    })
}

/// Time and WAL one side spent on its whales.
#[derive(Default)]
struct Side {
    secs: f64,
    wal: Wal,
}

/// Erases `customer` with the worker from a checkpoint, from publish to DONE; returns the
/// longest worker transaction sampled meanwhile, in milliseconds.
async fn worker_whale(
    pool: &PgPool,
    settings: &Settings,
    customer: &str,
    rows: i64,
    side: &mut Side,
) -> anyhow::Result<f64> {
    let request_id = Uuid::new_v4();
    let body = serde_json::to_vec(
        &json!({"request_id": request_id, "customer_id": customer, "requested_by": "bench"}),
    )?;
    quiesce(pool).await?;
    let wal = Wal::now(pool).await?;
    let started = Instant::now();
    broker::publish_request_once(&settings.amqp, &request_id.to_string(), &body).await?;
    let mut longest_ms: f64 = 0.0;
    let counts: Value = loop {
        let longest: Option<f64> = sqlx::query_scalar(
            "SELECT max(extract(epoch FROM clock_timestamp() - xact_start) * 1000)::float8 FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'erasure' AND xact_start IS NOT NULL \
               AND pid <> pg_backend_pid()",
        )
        .fetch_one(pool)
        .await?;
        longest_ms = longest_ms.max(longest.unwrap_or(0.0));
        let row: Option<(String, Value)> = sqlx::query_as(
            "SELECT status, data_json FROM erasure.deletions WHERE request_id = $1 AND status IN ('DONE', 'FAILED')",
        )
        .bind(request_id)
        .fetch_optional(pool)
        .await?;
        if let Some((status, counts)) = row {
            ensure!(status == "DONE", "{customer} ended {status}");
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    side.secs += started.elapsed().as_secs_f64();
    side.wal = side.wal + wal.since(pool).await?;
    ensure!(
        counts["events"] == json!(rows),
        "{customer}: counts {counts}, expected {rows} events"
    );
    Ok(longest_ms)
}

/// Deletes `customer`'s events with one raw `DELETE` from a checkpoint.
async fn raw_whale(
    pool: &PgPool,
    customer: &str,
    rows: i64,
    side: &mut Side,
) -> anyhow::Result<()> {
    quiesce(pool).await?;
    let wal = Wal::now(pool).await?;
    let started = Instant::now();
    let deleted = sqlx::query("DELETE FROM events WHERE customer_id = $1")
        .bind(customer)
        .execute(pool)
        .await?
        .rows_affected();
    side.secs += started.elapsed().as_secs_f64();
    side.wal = side.wal + wal.since(pool).await?;
    ensure!(
        deleted as i64 == rows,
        "the raw DELETE of {customer} removed {deleted} rows"
    );
    Ok(())
}
