//! Seals over the audit log. The log is append-only (a trigger refuses changes), but whoever
//! owns the database can drop the trigger; seals make any later edit, deletion, insertion or
//! reordering of sealed rows show.
//!
//! Every audit row records the transaction that wrote it (`xid`). A seal covers every row of
//! the transactions in `[xid_from, xid_to)`, where `xid_to` is at most the oldest transaction
//! still running when the seal was made: all of those transactions had ended, so no row of
//! theirs can appear later, and no writer ever waits for the sealer or for another writer. The
//! seal lists each row's id and the SHA-256 of its canonical JSON, links to the seal before by
//! its digest, and is signed ([`super::signing`]). Checking the log ([`check_log`]) recomputes
//! all of it and names the first row or seal that does not fit.
//!
//! What a seal cannot show: rows changed before they were sealed (seals are made every
//! `proof.seal_every_ms`), and the newest seals removed together with the rows they cover,
//! unless their digest was kept elsewhere (`erasure audit verify` prints the last one).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::signing::{KeySet, Signer, base64url, from_base64url};
use crate::canonical::{self, hex};

/// The most rows one seal covers (a seal lists 40 bytes a row).
pub const MAX_ROWS: i64 = 20_000;

/// The advisory lock that lets one sealer at a time work, across processes.
pub(super) const SEAL_LOCK: i64 = 0x6572_6173_7365_616c;

/// One audit row as sealed.
#[derive(Clone, Debug, sqlx::FromRow)]
struct AuditRow {
    id: i64,
    recorded_at: DateTime<Utc>,
    received_at: Option<DateTime<Utc>>,
    action: String,
    request_id: Option<Uuid>,
    deletion_id: Option<String>,
    related_object_id: Option<String>,
    channel: String,
    requested_by: Option<String>,
    error_key: Option<String>,
    detail: Value,
    xid: i64,
    key_id: Option<String>,
    key_name: Option<String>,
}

fn micros(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl AuditRow {
    /// The SHA-256 of the row's canonical JSON ([`AuditRow::said`]).
    fn hash(&self) -> [u8; 32] {
        canonical::sha256(&self.said())
    }

    /// What a seal hashes of the row: every column (the acting key only where the row names
    /// one, so that rows sealed before keys were recorded keep their hash).
    fn said(&self) -> Value {
        let mut said = json!({
            "id": self.id,
            "recorded_at": micros(self.recorded_at),
            "received_at": self.received_at.map(micros),
            "action": self.action,
            "request_id": self.request_id,
            "deletion_id": self.deletion_id,
            "related_object_id": self.related_object_id,
            "channel": self.channel,
            "requested_by": self.requested_by,
            "error_key": self.error_key,
            "detail": self.detail,
            "xid": self.xid,
        });
        if let Some(id) = &self.key_id {
            said["key"] = json!({ "id": id, "name": self.key_name });
        }
        said
    }
}

/// The columns of an audit row (aliased `a`) as sealed. The acting key is read through the row's
/// JSON, so that a log not yet migrated to record keys reads as rows without one (and seals as
/// it always did).
const ROW_COLUMNS: &str = "a.id, a.recorded_at, a.received_at, a.action, a.request_id, a.deletion_id, \
     a.related_object_id, a.channel, a.requested_by, a.error_key, a.detail, a.xid::text::bigint AS xid, \
     to_jsonb(a) ->> 'key_id' AS key_id, to_jsonb(a) ->> 'key_name' AS key_name";

/// The audit rows of the transactions in `[from, to)`, by id.
async fn rows_between(
    conn: &mut PgConnection,
    from: i64,
    to: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM erasure.audit_log a \
         WHERE a.xid >= $1::text::xid8 AND a.xid < $2::text::xid8 ORDER BY a.id"
    ))
    .bind(from.to_string())
    .bind(to.to_string())
    .fetch_all(conn)
    .await
}

/// One seal, as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(super) struct Seal {
    seq: i64,
    sealed_at: DateTime<Utc>,
    xid_from: i64,
    xid_to: i64,
    row_count: i32,
    row_hashes: Vec<u8>,
    prev_digest: Option<Vec<u8>>,
    digest: Vec<u8>,
    key_id: String,
    signature: Vec<u8>,
    /// For a redaction seal: the redaction it records (rows changed on purpose after they were
    /// sealed, each listed with its hash after the change), and why. It covers no transaction
    /// of its own (`xid_from` = `xid_to`).
    redaction_id: Option<i64>,
    reason: Option<String>,
    /// For a purge seal: the rows of every seal up to this one were removed on purpose (the
    /// retention of the service's own records, [`super::purge`]), `purged_rows` of them. It
    /// covers no transaction of its own either.
    purged_through: Option<i64>,
    purged_rows: Option<i64>,
}

/// Read from `erasure.audit_seals` unaliased (the purge columns through its whole row, so that
/// a log whose schema predates them reads too).
const SEAL_COLUMNS: &str = "seq, sealed_at, xid_from::text::bigint AS xid_from, \
     xid_to::text::bigint AS xid_to, row_count, row_hashes, prev_digest, digest, key_id, signature, \
     redaction_id, reason, \
     (to_jsonb(audit_seals) ->> 'purged_through')::bigint AS purged_through, \
     (to_jsonb(audit_seals) ->> 'purged_rows')::bigint AS purged_rows";

impl Seal {
    /// The seal as an evidence pack carries it: every column, bytes in base64url or hex.
    fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "sealed_at": micros(self.sealed_at),
            "xid_from": self.xid_from,
            "xid_to": self.xid_to,
            "row_count": self.row_count,
            "row_hashes": base64url(&self.row_hashes),
            "prev_digest": self.prev_digest.as_deref().map(hex),
            "digest": hex(&self.digest),
            "key_id": self.key_id,
            "signature": base64url(&self.signature),
            "redaction_id": self.redaction_id,
            "reason": self.reason,
            "purged_through": self.purged_through,
            "purged_rows": self.purged_rows,
        })
    }

    /// A seal read back from [`Seal::to_json`]; why not, when it does not read.
    fn from_json(value: &Value) -> Result<Self, String> {
        let int = |name: &str| {
            value[name]
                .as_i64()
                .ok_or_else(|| format!("a seal's {name:?} is not a whole number"))
        };
        let text = |name: &str| {
            value[name]
                .as_str()
                .ok_or_else(|| format!("a seal's {name:?} is not text"))
        };
        let unhex = |text: &str| -> Result<Vec<u8>, String> {
            (0..text.len())
                .step_by(2)
                .map(|i| {
                    text.get(i..i + 2)
                        .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                        .ok_or_else(|| "a seal's digest is not hex".to_string())
                })
                .collect()
        };
        let seq = int("seq")?;
        Ok(Seal {
            seq,
            sealed_at: DateTime::parse_from_rfc3339(text("sealed_at")?)
                .map_err(|_| format!("seal {seq}: \"sealed_at\" is not a time"))?
                .with_timezone(&Utc),
            xid_from: int("xid_from")?,
            xid_to: int("xid_to")?,
            row_count: i32::try_from(int("row_count")?)
                .map_err(|_| format!("seal {seq}: \"row_count\" is out of range"))?,
            row_hashes: from_base64url(text("row_hashes")?)
                .ok_or_else(|| format!("seal {seq}: \"row_hashes\" is not base64url"))?,
            prev_digest: match value["prev_digest"].as_str() {
                Some(digest) => Some(unhex(digest)?),
                None => None,
            },
            digest: unhex(text("digest")?)?,
            key_id: text("key_id")?.to_owned(),
            signature: from_base64url(text("signature")?)
                .ok_or_else(|| format!("seal {seq}: \"signature\" is not base64url"))?,
            redaction_id: value["redaction_id"].as_i64(),
            reason: value["reason"].as_str().map(str::to_owned),
            purged_through: value["purged_through"].as_i64(),
            purged_rows: value["purged_rows"].as_i64(),
        })
    }

    /// The digest of everything the seal says: what is signed.
    fn compute_digest(&self) -> [u8; 32] {
        let mut said = json!({
            "seq": self.seq,
            "sealed_at": micros(self.sealed_at),
            "xid_from": self.xid_from,
            "xid_to": self.xid_to,
            "row_count": self.row_count,
            "row_hashes_sha256": hex(&Sha256::digest(&self.row_hashes)),
            "prev_digest": self.prev_digest.as_deref().map(hex),
            "key_id": self.key_id,
        });
        // Only a redaction seal says more (seals made before redactions existed keep their
        // digest).
        if let Some(id) = self.redaction_id {
            said["redaction_id"] = json!(id);
            said["reason"] = json!(self.reason);
        }
        if let Some(through) = self.purged_through {
            said["purged_through"] = json!(through);
            said["purged_rows"] = json!(self.purged_rows);
            said["reason"] = json!(self.reason);
        }
        canonical::sha256(&said)
    }

    fn is_redaction(&self) -> bool {
        self.redaction_id.is_some()
    }

    /// The seal as if it did not list the rows `gone` says.
    fn without(&self, gone: impl Fn(i64) -> bool) -> Seal {
        let mut row_hashes = Vec::with_capacity(self.row_hashes.len());
        for (id, hash) in self.listed() {
            if !gone(id) {
                row_hashes.extend_from_slice(&id.to_be_bytes());
                row_hashes.extend_from_slice(hash);
            }
        }
        Seal {
            sealed_at: self.sealed_at,
            row_hashes,
            prev_digest: self.prev_digest.clone(),
            digest: self.digest.clone(),
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
            reason: self.reason.clone(),
            ..*self
        }
    }

    /// The (id, hash) of each row the seal lists.
    fn listed(&self) -> impl Iterator<Item = (i64, &[u8])> {
        self.row_hashes.chunks_exact(40).map(|entry| {
            let id = i64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
            (id, &entry[8..])
        })
    }
}

/// Seals the audit rows of the transactions that ended since the last seal (at most
/// [`MAX_ROWS`] of them); returns how many rows, or `None` when there was nothing to seal or
/// another sealer is at work.
pub async fn seal_once(pool: &PgPool, signer: &Signer) -> Result<Option<usize>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SEAL_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let last: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, xid_to::text::bigint, digest FROM erasure.audit_seals ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (seq, from, prev_digest) = match last {
        Some((seq, to, digest)) => (seq + 1, to, Some(digest)),
        None => (1, 0, None),
    };
    let pending: Option<(i64, Vec<i64>, String)> = sqlx::query_as(
        "SELECT id, row_ids, reason FROM erasure.audit_redactions WHERE sealed_in IS NULL ORDER BY id LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((redaction_id, row_ids, reason)) = pending {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM erasure.audit_log a WHERE a.id = ANY($1) ORDER BY a.id"
        ))
        .bind(&row_ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut seal = Seal::new(seq, from, from, &rows, prev_digest, signer);
        seal.redaction_id = Some(redaction_id);
        seal.reason = Some(reason);
        insert(&mut tx, seal, signer).await?;
        sqlx::query("UPDATE erasure.audit_redactions SET sealed_in = $1 WHERE id = $2")
            .bind(seq)
            .bind(redaction_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            seal = seq,
            rows = rows.len(),
            "sealed a redaction of the audit log"
        );
        return Ok(Some(0));
    }
    let horizon = horizon(&mut tx).await?;
    let cut: Option<i64> = sqlx::query_scalar(
        "SELECT xid::text::bigint FROM erasure.audit_log \
         WHERE xid >= $1::text::xid8 AND xid < $2::text::xid8 ORDER BY xid OFFSET $3 LIMIT 1",
    )
    .bind(from.to_string())
    .bind(horizon.to_string())
    .bind(MAX_ROWS)
    .fetch_optional(&mut *tx)
    .await?;
    // Past MAX_ROWS rows the seal ends at a transaction boundary; one transaction with more
    // rows than that is sealed whole.
    let to = match cut {
        Some(xid) if xid > from => xid,
        Some(xid) => xid + 1,
        None => horizon,
    };
    if to <= from {
        return Ok(None);
    }
    let rows = rows_between(&mut tx, from, to).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let seal = Seal::new(seq, from, to, &rows, prev_digest, signer);
    insert(&mut tx, seal, signer).await?;
    tx.commit().await?;
    crate::metrics::sealed(rows.len());
    Ok(Some(rows.len()))
}

impl Seal {
    /// A seal of `rows` (covering the transactions in `[from, to)`), linked to the seal whose
    /// digest is `prev_digest`, not signed yet.
    fn new(
        seq: i64,
        from: i64,
        to: i64,
        rows: &[AuditRow],
        prev_digest: Option<Vec<u8>>,
        signer: &Signer,
    ) -> Self {
        let mut row_hashes = Vec::with_capacity(rows.len() * 40);
        for row in rows {
            row_hashes.extend_from_slice(&row.id.to_be_bytes());
            row_hashes.extend_from_slice(&row.hash());
        }
        let now = Utc::now();
        let sealed_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        Seal {
            seq,
            sealed_at,
            xid_from: from,
            xid_to: to,
            row_count: rows.len() as i32,
            row_hashes,
            prev_digest,
            digest: Vec::new(),
            key_id: signer.id().to_owned(),
            signature: Vec::new(),
            redaction_id: None,
            reason: None,
            purged_through: None,
            purged_rows: None,
        }
    }

    /// A purge seal: the rows of seals 1 to `through` (`rows` of them) were removed on
    /// purpose, for `reason`; it follows the seal `seq - 1` (covering up to `at`).
    pub(super) fn purge(
        seq: i64,
        at: i64,
        through: i64,
        rows: usize,
        reason: String,
        prev_digest: Option<Vec<u8>>,
        signer: &Signer,
    ) -> Self {
        Seal {
            reason: Some(reason),
            purged_through: Some(through),
            purged_rows: Some(rows as i64),
            ..Seal::new(seq, at, at, &[], prev_digest, signer)
        }
    }
}

/// Signs `seal` and stores it.
pub(super) async fn insert(
    conn: &mut PgConnection,
    mut seal: Seal,
    signer: &Signer,
) -> Result<(), sqlx::Error> {
    seal.digest = seal.compute_digest().to_vec();
    seal.signature = signer.sign(&seal.digest).to_vec();
    // The purge columns are named only for a purge seal: a seal of rows or a redaction is
    // written the same whether or not the schema has them yet.
    let purge = match seal.purged_through {
        Some(_) => (", purged_through, purged_rows", ", $13, $14"),
        None => ("", ""),
    };
    let sql = format!(
        "INSERT INTO erasure.audit_seals (seq, sealed_at, xid_from, xid_to, row_count, row_hashes, \
           prev_digest, digest, key_id, signature, redaction_id, reason{}) \
         VALUES ($1, $2, $3::text::xid8, $4::text::xid8, $5, $6, $7, $8, $9, $10, $11, $12{})",
        purge.0, purge.1
    );
    let mut query = sqlx::query(&sql)
        .bind(seal.seq)
        .bind(seal.sealed_at)
        .bind(seal.xid_from.to_string())
        .bind(seal.xid_to.to_string())
        .bind(seal.row_count)
        .bind(&seal.row_hashes)
        .bind(&seal.prev_digest)
        .bind(&seal.digest)
        .bind(&seal.key_id)
        .bind(&seal.signature)
        .bind(seal.redaction_id)
        .bind(&seal.reason);
    if seal.purged_through.is_some() {
        query = query.bind(seal.purged_through).bind(seal.purged_rows);
    }
    query.execute(conn).await?;
    Ok(())
}

/// The first transaction id whose audit rows may not all be written yet: the oldest one of
/// this database still running, or, when none is, the next id to be given out. Every
/// transaction before it has ended, so no row of theirs can appear later.
///
/// Transactions of other databases on the same server are left out: they cannot write this
/// database's audit log, and counting them (the server-wide xmin) let an idle transaction
/// elsewhere stop sealing for as long as it stayed open. A transaction gets its id when it
/// first writes; one that has none yet will get one past the horizon. The snapshot is taken
/// first and the running transactions read after it, so that a transaction given its id
/// before the snapshot is either seen running or has ended.
async fn horizon(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let next: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let running: Option<i64> = sqlx::query_scalar(
        "SELECT min(backend_xid::text::bigint) FROM pg_stat_activity \
         WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(running.map_or(next, |oldest| widen(oldest, next).min(next)))
}

/// A 32-bit transaction id (as `pg_stat_activity` shows it) as the 64-bit one (`xid8`) it is,
/// given `next`, a 64-bit id at or after it: the one of the same low bits at or before `next`.
fn widen(xid: i64, next: i64) -> i64 {
    let low = xid & 0xffff_ffff;
    let candidate = (next & !0xffff_ffff) | low;
    if candidate > next {
        candidate - (1 << 32)
    } else {
        candidate
    }
}

/// How long the oldest audit row not sealed yet has waited (zero when every row is sealed).
pub async fn oldest_unsealed(pool: &PgPool) -> Result<Duration, sqlx::Error> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM clock_timestamp() - min(a.recorded_at))::float8 FROM erasure.audit_log a \
         WHERE a.xid >= COALESCE((SELECT xid_to FROM erasure.audit_seals ORDER BY seq DESC LIMIT 1), '0'::xid8)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Duration::from_secs_f64(seconds.unwrap_or(0.0).max(0.0)))
}

/// Seals every `every` until `shutdown`, a seal after another while there is a backlog; says,
/// in a metric and past `warn_after` in a warning, how long the oldest row not sealed yet has
/// waited (until sealed, it can be changed without trace).
pub async fn keep_sealing(
    pool: PgPool,
    signer: Signer,
    every: Duration,
    warn_after: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match seal_once(&pool, &signer).await {
            Ok(Some(rows)) if rows as i64 >= MAX_ROWS => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::db::SafeError(&e), "sealing the audit log failed; retrying")
            }
        }
        if let Ok(waited) = oldest_unsealed(&pool).await {
            crate::metrics::unsealed_age(waited);
            if waited > warn_after {
                tracing::warn!(
                    seconds = waited.as_secs(),
                    "audit rows have waited this long to be sealed: a transaction of this database that has written \
                     and stays open holds the seals back (pg_stat_activity names it)"
                );
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What checking the log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub seals: usize,
    pub rows: usize,
    /// Rows of transactions after the last seal (checked once sealed).
    pub unsealed: i64,
    /// The last seal's digest (hex): kept elsewhere, it shows if the newest seals are removed.
    pub head: Option<String>,
    /// The first row or seal that does not fit.
    pub problem: Option<String>,
    /// Each redaction the log records: the seal that recorded it, why, and how many rows it
    /// changed.
    pub redactions: Vec<(i64, String, usize)>,
    /// Each purge the log records: the seal that recorded it, why, how many rows it removed,
    /// and the last seal whose rows it removed.
    pub purges: Vec<(i64, String, usize, i64)>,
}

/// Checks the seals (from the first one made at or after `since`, linked to the one before
/// it) and every row they cover, against `keys`.
pub async fn check_log(
    pool: &PgPool,
    keys: &KeySet,
    since: Option<DateTime<Utc>>,
) -> Result<Report, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let first: Option<i64> = match since {
        Some(at) => {
            sqlx::query_scalar("SELECT min(seq) FROM erasure.audit_seals WHERE sealed_at >= $1")
                .bind(at)
                .fetch_one(&mut *conn)
                .await?
        }
        None => Some(1),
    };
    let mut report = Report {
        seals: 0,
        rows: 0,
        unsealed: 0,
        head: None,
        problem: None,
        redactions: Vec::new(),
        purges: Vec::new(),
    };
    // The rows of every seal up to the last purge's were removed on purpose: those seals are
    // checked (whole, signed, linked), their rows are not; and the highest row id they list
    // is where rows a redaction listed may be missing for that reason.
    let purged: Option<(i64, i64)> = {
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT max((to_jsonb(audit_seals) ->> 'purged_through')::bigint) FROM erasure.audit_seals",
        )
        .fetch_one(&mut *conn)
        .await?;
        match through {
            Some(through) => {
                let last: Option<Seal> = sqlx::query_as(&format!(
                    "SELECT {SEAL_COLUMNS} FROM erasure.audit_seals WHERE seq = $1"
                ))
                .bind(through)
                .fetch_optional(&mut *conn)
                .await?;
                let max_id = last
                    .as_ref()
                    .and_then(|s| s.listed().map(|(id, _)| id).max())
                    .unwrap_or(0);
                Some((through, max_id))
            }
            None => None,
        }
    };
    // Rows changed on purpose after they were sealed, each with its hash after the change and
    // the redaction seal that says so (itself checked in order below).
    let redacted: std::collections::HashMap<i64, (Vec<u8>, i64)> = {
        let seals: Vec<Seal> = sqlx::query_as(&format!(
            "SELECT {SEAL_COLUMNS} FROM erasure.audit_seals WHERE redaction_id IS NOT NULL ORDER BY seq"
        ))
        .fetch_all(&mut *conn)
        .await?;
        seals
            .iter()
            .flat_map(|s| {
                s.listed()
                    .map(move |(id, hash)| (id, (hash.to_vec(), s.seq)))
            })
            .collect()
    };
    let mut previous: Option<Seal> = match first {
        Some(seq) if seq > 1 => {
            sqlx::query_as(&format!(
                "SELECT {SEAL_COLUMNS} FROM erasure.audit_seals WHERE seq = $1"
            ))
            .bind(seq - 1)
            .fetch_optional(&mut *conn)
            .await?
        }
        _ => None,
    };
    if let Some(Err(why)) = previous.as_ref().map(|p| check_seal(p, None, keys)) {
        report.problem = Some(why);
        return Ok(report);
    }
    let start = first.unwrap_or(i64::MAX);
    let seals: Vec<Seal> = sqlx::query_as(&format!(
        "SELECT {SEAL_COLUMNS} FROM erasure.audit_seals WHERE seq >= $1 ORDER BY seq"
    ))
    .bind(start)
    .fetch_all(&mut *conn)
    .await?;
    if let Some(seal) = seals.first().filter(|s| since.is_none() && s.seq != 1) {
        report.problem = Some(format!(
            "seal 1 to {} are missing: the first seal is {}",
            seal.seq - 1,
            seal.seq
        ));
        return Ok(report);
    }
    for seal in seals {
        if let Err(why) = check_seal(&seal, previous.as_ref(), keys) {
            report.problem = Some(why);
            return Ok(report);
        }
        if let Some(through) = seal.purged_through {
            report.purges.push((
                seal.seq,
                seal.reason.clone().unwrap_or_default(),
                seal.purged_rows.unwrap_or(0).max(0) as usize,
                through,
            ));
            report.seals += 1;
            previous = Some(seal);
            continue;
        }
        if purged.is_some_and(|(through, _)| seal.seq <= through) && !seal.is_redaction() {
            // Its rows were purged, as a later purge seal records.
            report.seals += 1;
            previous = Some(seal);
            continue;
        }
        if seal.is_redaction() {
            let ids: Vec<i64> = seal.listed().map(|(id, _)| id).collect();
            let rows: Vec<AuditRow> = sqlx::query_as(&format!(
                "SELECT {ROW_COLUMNS} FROM erasure.audit_log a WHERE a.id = ANY($1) ORDER BY a.id"
            ))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
            // A row it listed that a purge removed (one of the purged seals' rows) is not
            // missing: its own seal is checked above.
            let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
            let max_purged = purged.map_or(0, |(_, max_id)| max_id);
            let kept = seal.without(|id| !present.contains(&id) && id <= max_purged);
            if let Some(why) = compare(&kept, &rows, &Default::default()) {
                report.problem = Some(why);
                return Ok(report);
            }
            report
                .redactions
                .push((seal.seq, seal.reason.clone().unwrap_or_default(), ids.len()));
            report.seals += 1;
            previous = Some(seal);
            continue;
        }
        let rows = rows_between(&mut conn, seal.xid_from, seal.xid_to).await?;
        if let Some(why) = compare(&seal, &rows, &redacted) {
            report.problem = Some(why);
            return Ok(report);
        }
        report.seals += 1;
        report.rows += rows.len();
        previous = Some(seal);
    }
    let sealed_to = previous.as_ref().map_or(0, |s| s.xid_to);
    report.head = previous.as_ref().map(|s| hex(&s.digest));
    report.unsealed =
        sqlx::query_scalar("SELECT count(*) FROM erasure.audit_log WHERE xid >= $1::text::xid8")
            .bind(sealed_to.to_string())
            .fetch_one(&mut *conn)
            .await?;
    Ok(report)
}

/// Whether `seal` is whole, signed, and follows `previous`.
fn check_seal(seal: &Seal, previous: Option<&Seal>, keys: &KeySet) -> Result<(), String> {
    if let Some(p) = previous {
        if seal.seq != p.seq + 1 {
            return Err(format!(
                "seal {} to {} are missing: seal {} follows seal {}",
                p.seq + 1,
                seal.seq - 1,
                seal.seq,
                p.seq
            ));
        }
        if seal.xid_from != p.xid_to || seal.prev_digest.as_deref() != Some(p.digest.as_slice()) {
            return Err(format!(
                "seal {} does not follow seal {}: the chain was rewritten",
                seal.seq, p.seq
            ));
        }
    }
    if seal.compute_digest().as_slice() != seal.digest.as_slice() {
        return Err(format!(
            "seal {} was changed after it was made: its digest does not match what it says",
            seal.seq
        ));
    }
    keys.check(&seal.key_id, &seal.digest, &seal.signature)
        .map_err(|why| format!("seal {}: {why}", seal.seq))
}

/// The first row that does not fit the seal's list, if any. A row whose hash is the one a
/// later redaction seal lists for it (`redacted`) fits: it was changed on purpose, and the
/// redaction is sealed.
fn compare(
    seal: &Seal,
    rows: &[AuditRow],
    redacted: &std::collections::HashMap<i64, (Vec<u8>, i64)>,
) -> Option<String> {
    let mut listed = seal.listed().peekable();
    let mut present = rows.iter().peekable();
    loop {
        match (listed.peek(), present.peek()) {
            (None, None) => return None,
            (Some((id, _)), None) => {
                return Some(format!(
                    "audit row {id} was deleted: seal {} lists it",
                    seal.seq
                ));
            }
            (None, Some(row)) => {
                return Some(format!(
                    "audit row {} was added after seal {} covered its transaction",
                    row.id, seal.seq
                ));
            }
            (Some((id, hash)), Some(row)) => {
                if *id < row.id {
                    return Some(format!(
                        "audit row {id} was deleted: seal {} lists it",
                        seal.seq
                    ));
                }
                if *id > row.id {
                    return Some(format!(
                        "audit row {} was added after seal {} covered its transaction",
                        row.id, seal.seq
                    ));
                }
                let now = row.hash();
                let by_redaction = redacted.get(id).is_some_and(|(after, at)| {
                    *at > seal.seq && after.as_slice() == now.as_slice()
                });
                if *hash != now.as_slice() && !by_redaction {
                    return Some(format!(
                        "audit row {id} was changed after seal {} sealed it",
                        seal.seq
                    ));
                }
                listed.next();
                present.next();
            }
        }
    }
}

/// The audit rows of one deletion (those naming its request id or its id), each with the seal
/// that lists it as it is now (or, when none does, the seal that covers its transaction), and
/// those seals: what an evidence pack carries so that the rows can be checked offline against
/// the public keys ([`check_evidence`]). A row of a transaction not sealed yet has no seal.
pub async fn evidence(
    pool: &PgPool,
    deletion_id: &str,
    request_id: Uuid,
) -> Result<Value, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let rows: Vec<AuditRow> = sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM erasure.audit_log a WHERE a.request_id = $1 OR a.deletion_id = $2 ORDER BY a.id"
    ))
    .bind(request_id)
    .bind(deletion_id)
    .fetch_all(&mut *conn)
    .await?;
    let xids: Vec<String> = rows.iter().map(|r| r.xid.to_string()).collect();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // The seals covering the rows' transactions, and the redaction seals naming any of them.
    let seals: Vec<Seal> = sqlx::query_as(&format!(
        "SELECT {SEAL_COLUMNS} FROM erasure.audit_seals \
         WHERE (audit_seals.redaction_id IS NULL AND EXISTS (SELECT 1 FROM unnest($1::text[]) x \
                  WHERE x::xid8 >= audit_seals.xid_from AND x::xid8 < audit_seals.xid_to)) \
            OR (audit_seals.redaction_id IS NOT NULL AND EXISTS (SELECT 1 FROM erasure.audit_redactions r \
                  WHERE r.id = audit_seals.redaction_id AND r.row_ids && $2)) \
         ORDER BY audit_seals.seq"
    ))
    .bind(&xids)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut used = std::collections::BTreeSet::new();
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            let hash = row.hash();
            let listing = seals.iter().rev().find(|s| {
                s.listed()
                    .any(|(id, listed)| id == row.id && listed == hash.as_slice())
            });
            let covering = seals
                .iter()
                .find(|s| !s.is_redaction() && s.xid_from <= row.xid && row.xid < s.xid_to);
            let seal = listing.or(covering).map(|s| s.seq);
            if let Some(seq) = seal {
                used.insert(seq);
            }
            json!({ "row": row.said(), "seal": seal })
        })
        .collect();
    let seals: Vec<Value> = seals
        .iter()
        .filter(|s| used.contains(&s.seq))
        .map(Seal::to_json)
        .collect();
    Ok(json!({
        "object": "audit_evidence",
        "version": 1,
        "deletion_id": deletion_id,
        "request_id": request_id,
        "rows": rows,
        "seals": seals,
    }))
}

/// What checking an evidence pack's audit rows found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceChecked {
    /// Rows each listed, as they are, by a seal that checks.
    pub sealed: usize,
    /// Rows of transactions not sealed when the pack was made.
    pub unsealed: usize,
    pub seals: usize,
}

/// Checks the audit rows of an evidence pack ([`evidence`]) offline: every seal's digest is
/// what it says and is signed by a key of `keys`, every row is listed with its hash by the seal
/// it names, and every row is about `deletion_id`. Says why when something does not fit.
pub fn check_evidence(
    evidence: &Value,
    keys: &KeySet,
    deletion_id: &str,
) -> Result<EvidenceChecked, String> {
    if evidence["object"].as_str() != Some("audit_evidence") {
        return Err("not audit evidence: its \"object\" is not \"audit_evidence\"".into());
    }
    let request_id = evidence["request_id"].as_str().unwrap_or_default();
    if evidence["deletion_id"].as_str() != Some(deletion_id) {
        return Err(format!(
            "the audit evidence is about another deletion than {deletion_id}"
        ));
    }
    let mut seals = std::collections::HashMap::new();
    for value in evidence["seals"].as_array().into_iter().flatten() {
        let seal = Seal::from_json(value)?;
        if seal.compute_digest().as_slice() != seal.digest.as_slice() {
            return Err(format!(
                "seal {}: its digest does not match what it says",
                seal.seq
            ));
        }
        keys.check(&seal.key_id, &seal.digest, &seal.signature)
            .map_err(|why| format!("seal {}: {why}", seal.seq))?;
        if seal.row_hashes.len() != 40 * seal.row_count.max(0) as usize {
            return Err(format!(
                "seal {}: its list does not hold row_count rows",
                seal.seq
            ));
        }
        seals.insert(seal.seq, seal);
    }
    let mut checked = EvidenceChecked {
        sealed: 0,
        unsealed: 0,
        seals: seals.len(),
    };
    let rows = evidence["rows"]
        .as_array()
        .ok_or("the audit evidence has no \"rows\"")?;
    for entry in rows {
        let row = &entry["row"];
        let id = row["id"]
            .as_i64()
            .ok_or("an audit row of the evidence has no id")?;
        let about = row["deletion_id"].as_str() == Some(deletion_id)
            || (!request_id.is_empty() && row["request_id"].as_str() == Some(request_id));
        if !about {
            return Err(format!(
                "audit row {id} is not about deletion {deletion_id}"
            ));
        }
        let Some(seq) = entry["seal"].as_i64() else {
            checked.unsealed += 1;
            continue;
        };
        let seal = seals
            .get(&seq)
            .ok_or_else(|| format!("audit row {id} names seal {seq}, which the evidence lacks"))?;
        let hash = canonical::sha256(row);
        if !seal
            .listed()
            .any(|(listed_id, listed)| listed_id == id && listed == hash.as_slice())
        {
            return Err(format!(
                "audit row {id} is not as seal {seq} sealed it: it was changed, or does not belong to it"
            ));
        }
        checked.sealed += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::widen;

    #[test]
    fn a_short_transaction_id_widens_to_the_one_at_or_before_the_next() {
        assert_eq!(widen(750, 800), 750);
        let epoch = 3_i64 << 32;
        assert_eq!(widen(750, epoch + 800), epoch + 750);
        // Just before the low bits wrapped around.
        assert_eq!(widen(0xffff_fff0, epoch + 5), epoch - 16);
    }
}
