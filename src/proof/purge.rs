//! Retention of the service's own records (`[records]`): audit rows older than
//! `records.keep_audit`, and deletions that no longer matter older than
//! `records.keep_deletions`, are removed, in batches, by a background task.
//!
//! The audit log is sealed, so removing rows would look like tampering: a purge removes the
//! rows of whole seals only (every seal up to one sealed before the cut-off), in one
//! transaction with a purge seal that records it in the chain (through which seal, how many
//! rows, why), signed like the others. `erasure audit verify` checks the purged seals (whole,
//! signed, linked) but not their rows, and names the purge. A seal whose rows include one of a
//! request still open is never purged, nor any after it.
//!
//! Deletions are the memory of who was erased (the suppression check, the ledger, the rule that
//! an erased customer's key never names anyone else): DONE deletions are kept. What is removed:
//! CANCELED ones, and FAILED ones that no longer owe anything (the request named nobody or was
//! invalid, or a later DONE deletion erased the same customer), with what the check after
//! commit recorded of them; never one whose outcome event is still owed.

use std::time::Duration;

use sqlx::PgPool;

use super::seal::{self, Seal};
use super::signing::Signer;

/// What a purge removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub audit_rows: u64,
    /// The purge seal that records it.
    pub seal: Option<i64>,
    pub deletions: u64,
}

/// Removes the audit rows of every seal sealed more than `older_than` ago (up to the first one
/// holding a row of a request still open), with a purge seal that records it.
pub async fn purge_audit(
    pool: &PgPool,
    signer: &Signer,
    older_than: Duration,
) -> Result<Purged, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(seal::SEAL_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Purged::default());
    }
    let seconds = older_than.as_secs_f64();
    // The newest seal old enough whose rows, and those of every seal before it, belong to no
    // open request; and not one already purged.
    let through: Option<(i64, i64)> = sqlx::query_as(
        "SELECT s.seq, s.xid_to::text::bigint FROM erasure.audit_seals s \
         WHERE s.sealed_at < now() - make_interval(secs => $1) AND s.redaction_id IS NULL AND s.purged_through IS NULL \
           AND s.seq > COALESCE((SELECT max(purged_through) FROM erasure.audit_seals), 0) \
           AND NOT EXISTS (SELECT 1 FROM erasure.audit_log l JOIN erasure.deletions d ON d.request_id = l.request_id \
                           WHERE l.xid < s.xid_to AND d.status IN ('PENDING', 'IN_PROGRESS')) \
         ORDER BY s.seq DESC LIMIT 1",
    )
    .bind(seconds)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((through, xid_to)) = through else {
        return Ok(Purged::default());
    };
    sqlx::query("SET LOCAL erasure.purging = on")
        .execute(&mut *tx)
        .await?;
    let removed = sqlx::query("DELETE FROM erasure.audit_log WHERE xid < $1::text::xid8")
        .bind(xid_to.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("SET LOCAL erasure.purging = off")
        .execute(&mut *tx)
        .await?;
    let (last, at, prev): (i64, i64, Vec<u8>) = sqlx::query_as(
        "SELECT seq, xid_to::text::bigint, digest FROM erasure.audit_seals ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&mut *tx)
    .await?;
    let reason = format!(
        "retention: audit rows of seals sealed more than {} days ago (records.keep_audit)",
        (seconds / 86_400.0).round()
    );
    let purge = Seal::purge(
        last + 1,
        at,
        through,
        removed as usize,
        reason,
        Some(prev),
        signer,
    );
    seal::insert(&mut tx, purge, signer).await?;
    tx.commit().await?;
    tracing::info!(
        rows = removed,
        through_seal = through,
        "purged audit rows past their retention"
    );
    Ok(Purged {
        audit_rows: removed,
        seal: Some(last + 1),
        deletions: 0,
    })
}

/// Removes the deletions that no longer matter (above) that ended more than `older_than` ago.
pub async fn purge_deletions(pool: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    let mut removed = 0;
    loop {
        let mut tx = pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "DELETE FROM erasure.deletions d WHERE d.id IN ( \
               SELECT c.id FROM erasure.deletions c \
               WHERE c.status IN ('FAILED', 'CANCELED') AND c.completed_at < now() - make_interval(secs => $1) \
                 AND (c.status = 'CANCELED' OR c.related_object_id IS NULL \
                      OR c.error_key IN ('not_found', 'invalid_request') \
                      OR EXISTS (SELECT 1 FROM erasure.deletions l WHERE l.related_object_id = c.related_object_id \
                                 AND l.status = 'DONE' AND l.completed_at > c.completed_at)) \
                 AND NOT EXISTS (SELECT 1 FROM erasure.event_outbox o WHERE o.deletion_id = c.id) \
               LIMIT 1000) \
             RETURNING d.id",
        )
        .bind(older_than.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM erasure.verifications WHERE deletion_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        // The notes of why staff acted on them (append-only, but for the purge).
        sqlx::query("SET LOCAL erasure.purging = on")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM erasure.deletion_notes WHERE deletion_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET LOCAL erasure.purging = off")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        removed += ids.len() as u64;
        if ids.len() < 1000 {
            return Ok(removed);
        }
    }
}

/// How often the retention runs.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Purges what `records` says has been kept long enough, now and every hour until `shutdown`.
pub async fn keep_purging(
    pool: PgPool,
    signer: Signer,
    records: crate::config::RecordsSettings,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Some(keep) = records.keep_audit.0
            && let Err(e) = purge_audit(&pool, &signer, keep).await
        {
            tracing::warn!(error = %crate::db::SafeError(&e), "purging old audit rows failed; trying again in an hour");
        }
        if let Some(keep) = records.keep_deletions.0 {
            match purge_deletions(&pool, keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deletions = n, "purged deletions past their retention"),
                Err(e) => {
                    tracing::warn!(error = %crate::db::SafeError(&e), "purging old deletions failed; trying again in an hour")
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}
