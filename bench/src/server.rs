//! The PostgreSQL server under measure: bringing it to the same quiet state before each phase,
//! and what it did meanwhile.
use std::time::Instant;

use sqlx::PgPool;

use crate::cpu;

/// Checkpoints the server has begun, for whatever reason (time, WAL volume, request). Its
/// sync phase writes the data files on the disk the WAL is on, and commits wait meanwhile.
pub async fn checkpoints(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            .fetch_one(pool)
            .await?,
    )
}

/// Every phase starts from the same state: no dead rows left by the phase before, and a fresh
/// checkpoint (so each pays its own full-page writes, none pays the previous phase's).
pub async fn quiesce(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await?;
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        eprintln!(
            "no checkpoint before the phase ({e}); figures may carry the previous phase's writes"
        );
    }
    eprintln!(
        "vacuumed and checkpointed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The server's WAL position in bytes: the difference between two readings is the WAL written
/// in between (by anyone), exactly and at once.
pub async fn wal_position(pool: &PgPool) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
            .fetch_one(pool)
            .await?,
    )
}

/// The PostgreSQL server's main process, when it runs on this machine.
pub async fn postmaster(pool: &PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .ok()?;
    let backend = u32::try_from(backend).ok()?;
    // A backend of a server elsewhere has no such process here, or one with another name.
    std::fs::read_to_string(format!("/proc/{backend}/comm"))
        .ok()
        .filter(|comm| comm.trim() == "postgres")?;
    cpu::parent_of(backend)
}
