//! Carrying out one request: the erasure statement on the common path, and a short transaction
//! with a fresh snapshot for everything else (duplicates, already erased, not found, reused
//! request ids, rejected messages, internal failures).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::db::{ErrorClass, classify, is_transient};
use crate::deletion::{self, COLUMNS, DeletionRow};
use crate::keyed_hash::KeyedHash;
use crate::plan::sql::{
    CHUNK_COUNT, ChunkStatement, chunk_statements, erase_statement, oversized_statement,
};
use crate::plan::{Plan, ident};
use crate::request::{ErasureRequest, InvalidRequest};

/// The way a request came in, recorded on its deletion object and audit row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Amqp,
    Http,
    Cli,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Amqp => "amqp",
            Channel::Http => "http",
            Channel::Cli => "cli",
        }
    }
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// A final outcome (DONE or FAILED) was recorded just now.
    Recorded(DeletionRow),
    /// The request id already had this final outcome; nothing changed.
    Duplicate(DeletionRow),
    /// The message was not a valid request, or reused a request id for another customer. It was
    /// audited, and recorded as a FAILED deletion when its request id was new.
    Rejected {
        message: String,
        deletion: Option<DeletionRow>,
    },
    /// The request could not be carried out (an error that will not pass, transient errors
    /// past the attempts allowed, or a poison message): recorded FAILED `internal` with the
    /// cause; the message goes to the dead-letter queue for inspection.
    Stopped(DeletionRow),
}

/// Runs erasures for one plan against one database.
#[derive(Clone)]
pub struct Eraser {
    inner: Arc<Inner>,
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
}

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
const WALK_THE_INDEX: &str = "SELECT set_config('enable_bitmapscan', 'off', true), \
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

struct Inner {
    pool: PgPool,
    plan: Plan,
    statement: String,
    oversized: String,
    chunks: Vec<ChunkStatement>,
    chunk_threshold: i64,
    chunk_rows: i64,
    chunk_time: Duration,
    count_keys: Vec<String>,
    hash: KeyedHash,
    max_attempts: u32,
    /// Is a customer with this id or lookup value still there?
    find_customer: String,
}

/// What the fresh-snapshot path found.
enum Settled {
    Done(Box<Outcome>),
    /// The customer is there: run the statement again.
    Again,
    /// The customer is too large for one statement (or this request already started on it in
    /// chunks): erase in chunks, then run the statement again.
    Chunked(String),
}

/// The statement's audit insert failed its check: another delivery of the same request
/// recorded its outcome first, and this statement rolled back.
const LOST_RACE_CONSTRAINT: &str = "audit_log_outcome_has_deletion";
/// How often the fresh-snapshot path may send a request back to the erasure statement.
const MAX_ROUNDS: usize = 5;

impl Eraser {
    pub fn new(pool: PgPool, plan: Plan, hash: KeyedHash, limits: Limits) -> Self {
        let subject = &plan.subject;
        let table = format!("{}.{}", ident(&plan.schema), ident(&subject.table));
        let key = ident(&subject.key);
        let find_customer = match &subject.lookup {
            Some(lookup) => format!(
                "SELECT s.{key}::text FROM {table} s WHERE s.{key} = $1 OR s.{} = $1 \
                 ORDER BY (s.{key} = $1) DESC LIMIT 1",
                ident(lookup)
            ),
            None => format!("SELECT s.{key}::text FROM {table} s WHERE s.{key} = $1"),
        };
        Self {
            inner: Arc::new(Inner {
                statement: erase_statement(&plan),
                oversized: oversized_statement(&plan),
                chunks: chunk_statements(&plan),
                chunk_threshold: limits.chunk_threshold.max(1),
                chunk_rows: limits.chunk_rows.max(1),
                chunk_time: limits.chunk_time,
                count_keys: plan.count_keys(),
                pool,
                plan,
                hash,
                max_attempts: limits.max_attempts.max(1),
                find_customer,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    pub fn count_keys(&self) -> &[String] {
        &self.inner.count_keys
    }

    pub fn keyed_hash(&self) -> &KeyedHash {
        &self.inner.hash
    }

    /// The generated erasure statement (what `erasure plan --sql` prints).
    pub fn statement(&self) -> &str {
        &self.inner.statement
    }

    /// Carries out `request` on a connection of its own. Hot paths keep a [`Session`] instead.
    pub async fn erase(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Outcome, sqlx::Error> {
        Session::new(self.clone())
            .erase(request, channel, received_at)
            .await
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(self.inner.max_attempts as usize - 1)
    }

    async fn erase_once(
        &self,
        conn: &mut PgConnection,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Outcome, sqlx::Error> {
        let mut after_chunks = false;
        for _ in 0..MAX_ROUNDS {
            match self
                .run_statement(conn, request, channel, received_at, after_chunks)
                .await
            {
                Ok(Some(row)) => return Ok(Outcome::Recorded(row)),
                Ok(None) => {}
                Err(sqlx::Error::Database(e)) if e.constraint() == Some(LOST_RACE_CONSTRAINT) => {}
                Err(e) => return Err(e),
            }
            match self.settle(request, channel, received_at).await? {
                Settled::Done(outcome) => return Ok(*outcome),
                Settled::Again => {}
                Settled::Chunked(subject_id) => {
                    // Then the statement once more: the customer row, the outcome, the audit.
                    self.erase_in_chunks(conn, request, channel, received_at, &subject_id)
                        .await?;
                    after_chunks = true;
                }
            }
        }
        // The customer keeps reappearing between the two paths: let the caller retry later.
        Err(sqlx::Error::Protocol(
            "the customer changed under every attempt; giving up for now".into(),
        ))
    }

    /// The erasure statement. `None`: it found no customer to act on for this request.
    ///
    /// `after_chunks`: the customer's rows were just erased in chunks. The statistics still
    /// count them, so the planner would check the customer's foreign keys (and probe its steps)
    /// by scanning whole tables; in its own transaction the statement walks the indexes
    /// instead, past the few rows left.
    async fn run_statement(
        &self,
        conn: &mut PgConnection,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        after_chunks: bool,
    ) -> Result<Option<DeletionRow>, sqlx::Error> {
        let inner = &self.inner;
        let requested_at = request.requested_at.unwrap_or(received_at);
        let (inner_pad, outer_pad) = inner.hash.pads();
        let mut query = sqlx::query_as::<_, DeletionRow>(&inner.statement)
            .bind(&request.customer_id)
            .bind(request.request_id)
            .bind(deletion::new_id())
            .bind(inner.hash.digest(&request.customer_id))
            .bind(&request.requested_by)
            .bind(&request.reason)
            .bind(requested_at)
            .bind(deletion::due_at(requested_at))
            .bind(channel.as_str())
            .bind(received_at)
            .bind(inner_pad)
            .bind(outer_pad)
            .bind(inner.chunk_threshold);
        for guard in &inner.plan.guards {
            query = query.bind(&guard.when.values).bind(&guard.message);
        }
        if !after_chunks {
            return Ok(query.fetch_all(conn).await?.pop());
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(WALK_THE_INDEX).execute(&mut *tx).await?;
        let row = query.fetch_all(&mut *tx).await?.pop();
        tx.commit().await?;
        Ok(row)
    }

    /// The path for every request the statement did not settle, in one transaction with a
    /// fresh snapshot.
    async fn settle(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Settled, sqlx::Error> {
        let inner = &self.inner;
        let requested_hash = inner.hash.digest(&request.customer_id);
        let mut tx = inner.pool.begin().await?;
        let prior = lock_prior(&mut tx, request.request_id).await?;
        if let Some((prior, prior_hash)) = prior {
            let same_customer = prior_hash.as_deref() == Some(requested_hash.as_slice());
            if !same_customer {
                let message = "request_id was already used for another customer".to_string();
                audit(
                    &mut tx,
                    &Audit {
                        action: "request.rejected",
                        request_id: Some(request.request_id),
                        deletion_id: None,
                        related_object_id: None,
                        channel,
                        requested_by: Some(&request.requested_by),
                        error_key: Some("invalid_request"),
                        detail: json!({ "message": message }),
                        received_at,
                    },
                )
                .await?;
                tx.commit().await?;
                return Ok(Settled::Done(Box::new(Outcome::Rejected {
                    message,
                    deletion: None,
                })));
            }
            if prior.is_final() {
                audit_duplicate(&mut tx, request, &prior, channel, received_at).await?;
                tx.commit().await?;
                return Ok(Settled::Done(Box::new(Outcome::Duplicate(prior))));
            }
        }

        let live: Option<String> = sqlx::query_scalar(&inner.find_customer)
            .bind(&request.customer_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(subject_id) = live {
            let claimed_by: Option<Uuid> =
                sqlx::query_scalar("SELECT request_id FROM erasure.claims WHERE subject_id = $1")
                    .bind(&subject_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let oversized: Option<bool> = sqlx::query_scalar(&inner.oversized)
                .bind(&subject_id)
                .bind(inner.chunk_threshold)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return match claimed_by {
                Some(other) if other != request.request_id => Err(sqlx::Error::Protocol(format!(
                    "the customer is being erased in chunks by request {other}; waiting for it"
                ))),
                Some(_) => Ok(Settled::Chunked(subject_id)),
                None if oversized == Some(true) => Ok(Settled::Chunked(subject_id)),
                None => Ok(Settled::Again),
            };
        }

        let earlier =
            erased_by_earlier_deletion(&mut tx, &request.customer_id, &requested_hash).await?;
        let requested_at = request.requested_at.unwrap_or(received_at);
        let record = match &earlier {
            Some((customer, source_hash)) => Final {
                related_object_id: Some(customer.clone()),
                source_id_hash: source_hash.clone(),
                status: "DONE",
                already_erased: true,
                error: None,
                ..Final::new(
                    request.request_id,
                    Some(requested_hash.clone()),
                    requested_at,
                    channel,
                )
            },
            None => Final {
                // Unknown to this service: the identifier is nobody's data here, and compliance
                // staff need to see what was asked for.
                related_object_id: Some(request.customer_id.clone()),
                status: "FAILED",
                error: Some(("not_found", "no customer has this id or source id".into())),
                ..Final::new(
                    request.request_id,
                    Some(requested_hash.clone()),
                    requested_at,
                    channel,
                )
            },
        };
        let record = Final {
            requested_by: Some(&request.requested_by),
            reason: request.reason.as_deref(),
            ..record
        };
        let Some(row) = record_final(&mut tx, &record, self.zero_counts()).await? else {
            // A concurrent delivery of this request finished first: the next round sees it.
            tx.rollback().await?;
            return Ok(Settled::Again);
        };
        audit(
            &mut tx,
            &Audit {
                action: if row.status == "DONE" {
                    "erasure.done"
                } else {
                    "erasure.failed"
                },
                request_id: Some(request.request_id),
                deletion_id: Some(&row.id),
                related_object_id: row.related_object_id.as_deref(),
                channel,
                requested_by: Some(&request.requested_by),
                error_key: row.error_key.as_deref(),
                detail: json!({ "counts": row.data_json, "already_erased": row.already_erased }),
                received_at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Settled::Done(Box::new(Outcome::Recorded(row))))
    }

    /// Erases the rows of every step of a customer too large for one short transaction, a
    /// chunk at a time, each chunk one statement with its counts. Leaves the customer row and
    /// the final outcome to the erasure statement. Resumable: the claim and the IN_PROGRESS
    /// deletion with its counts survive a crash, and the rows already erased are gone.
    async fn erase_in_chunks(
        &self,
        conn: &mut PgConnection,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        subject_id: &str,
    ) -> Result<(), sqlx::Error> {
        let inner = &self.inner;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO erasure.claims (subject_id, request_id) VALUES ($1, $2) \
             ON CONFLICT (subject_id) DO UPDATE SET claimed_at = erasure.claims.claimed_at \
             WHERE erasure.claims.request_id = EXCLUDED.request_id \
             RETURNING request_id",
        )
        .bind(subject_id)
        .bind(request.request_id)
        .fetch_optional(&mut *tx)
        .await?;
        let started: Option<i32> = match claimed {
            None => None,
            Some(_) => {
                self.mark_in_progress(&mut tx, request, channel, received_at, Some(subject_id), 0)
                    .await?
            }
        };
        if started.is_none() {
            // Claimed by another request, or this request already ended: the next round of
            // the statement and the settle path say which.
            tx.rollback().await?;
            return Ok(());
        }
        tx.commit().await?;
        tracing::info!(request_id = %request.request_id, "erasing a large customer in chunks");
        let mut size = ChunkSize::new(inner.chunk_rows, inner.chunk_time);
        for chunk in &inner.chunks {
            loop {
                let rows = size.rows();
                let started = std::time::Instant::now();
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query(WALK_THE_INDEX).execute(&mut *tx).await?;
                let erased = sqlx::query(&chunk.sql)
                    .bind(subject_id)
                    .bind(rows)
                    .bind(request.request_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64;
                if erased == 0 {
                    // This step is done (or the deletion ended, and so does every step).
                    tx.rollback().await?;
                    break;
                }
                let counted: Option<i32> = sqlx::query_scalar(CHUNK_COUNT)
                    .bind(request.request_id)
                    .bind(&chunk.counted_as)
                    .bind(erased)
                    .fetch_optional(&mut *tx)
                    .await?;
                if counted.is_none() {
                    // The deletion ended while this chunk ran: it erases nothing.
                    tx.rollback().await?;
                    return Ok(());
                }
                tx.commit().await?;
                let took = started.elapsed();
                tracing::debug!(request_id = %request.request_id, table = %chunk.table, rows = erased, ?took, "chunk erased");
                if erased < rows {
                    break;
                }
                size.took(took);
            }
        }
        Ok(())
    }

    /// Counts one more delivery of a redelivered request that has no final outcome, marking its
    /// deletion IN_PROGRESS; returns how many redeliveries have started, or `None` when the
    /// request already has a final outcome (or its id belongs to another customer) and the
    /// erasure will say so. Only redeliveries pay this round trip: a message delivered again
    /// and again without an outcome is what a request that crashes the worker looks like.
    pub async fn count_redelivery(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Option<u32>, sqlx::Error> {
        let mut conn = self.inner.pool.acquire().await?;
        let attempts = self
            .mark_in_progress(&mut conn, request, channel, received_at, None, 1)
            .await?;
        Ok(attempts.map(|n| n.max(0) as u32))
    }

    /// Marks the request's deletion IN_PROGRESS (creating it if needed), adding `count` to its
    /// attempts (a redelivery counts, the start of a chunked erasure does not) and recording `related` when given. Returns the attempts, or `None` when the
    /// request already ended or its id belongs to another customer.
    async fn mark_in_progress(
        &self,
        conn: &mut PgConnection,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        related: Option<&str>,
        count: i32,
    ) -> Result<Option<i32>, sqlx::Error> {
        let requested_at = request.requested_at.unwrap_or(received_at);
        sqlx::query_scalar(
            "INSERT INTO erasure.deletions AS d (id, request_id, related_object_id, \
               requested_id_hash, status, requested_by, reason, requested_at, due_at, channel, attempts) \
             VALUES ($1, $2, $3, $4, 'IN_PROGRESS', $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (request_id) DO UPDATE SET status = 'IN_PROGRESS', \
               related_object_id = COALESCE(EXCLUDED.related_object_id, d.related_object_id), \
               attempts = d.attempts + $10 \
             WHERE d.status IN ('PENDING', 'IN_PROGRESS') \
               AND d.requested_id_hash = EXCLUDED.requested_id_hash \
             RETURNING d.attempts",
        )
        .bind(deletion::new_id())
        .bind(request.request_id)
        .bind(related)
        .bind(self.inner.hash.digest(&request.customer_id))
        .bind(&request.requested_by)
        .bind(&request.reason)
        .bind(requested_at)
        .bind(deletion::due_at(requested_at))
        .bind(channel.as_str())
        .bind(count)
        .fetch_optional(conn)
        .await
    }

    /// Ends a request that keeps coming back without an outcome: FAILED `internal`, to be
    /// dead-lettered.
    pub async fn stop_poison(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        deliveries: u32,
    ) -> Result<Outcome, sqlx::Error> {
        let message = format!(
            "the request was delivered {deliveries} times and never finished (the worker stopped \
             or crashed while carrying it out); it is stopped as a poison message"
        );
        tracing::error!(request_id = %request.request_id, deliveries, "poison message stopped");
        self.record_internal_failure(request, channel, received_at, &message)
            .await
    }

    /// Audits a message that is not a valid request and, when it carries a request id not seen
    /// before, records a FAILED deletion with error key `invalid_request`.
    pub async fn reject(
        &self,
        invalid: &InvalidRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        size: usize,
    ) -> Result<Outcome, sqlx::Error> {
        let attempt = || self.reject_once(invalid, channel, received_at, size);
        attempt.retry(self.backoff()).when(is_retryable).await
    }

    async fn reject_once(
        &self,
        invalid: &InvalidRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        size: usize,
    ) -> Result<Outcome, sqlx::Error> {
        let inner = &self.inner;
        let mut tx = inner.pool.begin().await?;
        let mut deletion = None;
        if let Some(request_id) = invalid.request_id {
            let requested_hash = invalid.customer_id.as_deref().map(|c| inner.hash.digest(c));
            // A final outcome stands, and a bad message naming another customer (or none) under
            // a request id already taken cannot touch that request. But an open deletion of the
            // same customer (accepted over HTTP, then refused here, by a worker whose rules are
            // stricter than those of the process that accepted it, say) ends FAILED with the
            // reason: nothing else would ever end it.
            let may_record = match lock_prior(&mut tx, request_id).await? {
                None => true,
                Some((prior, prior_hash)) => {
                    !prior.is_final() && requested_hash.is_some() && prior_hash == requested_hash
                }
            };
            if may_record {
                let related = match &invalid.customer_id {
                    Some(customer) => Some(self.resolve_customer(&mut tx, customer).await?),
                    None => None,
                };
                let requested_at = invalid.requested_at.unwrap_or(received_at);
                let record = Final {
                    related_object_id: related,
                    status: "FAILED",
                    error: Some(("invalid_request", invalid.message.clone())),
                    requested_by: invalid.requested_by.as_deref(),
                    ..Final::new(request_id, requested_hash.clone(), requested_at, channel)
                };
                deletion = record_final(&mut tx, &record, self.zero_counts()).await?;
            }
        }
        audit(
            &mut tx,
            &Audit {
                action: "request.rejected",
                request_id: invalid.request_id,
                deletion_id: deletion.as_ref().map(|d| d.id.as_str()),
                related_object_id: deletion
                    .as_ref()
                    .and_then(|d| d.related_object_id.as_deref()),
                channel,
                requested_by: invalid.requested_by.as_deref(),
                error_key: Some("invalid_request"),
                detail: json!({ "message": invalid.message, "bytes": size }),
                received_at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Outcome::Rejected {
            message: invalid.message.clone(),
            deletion,
        })
    }

    /// Records FAILED `internal` for a request whose erasure cannot succeed as things are.
    async fn record_internal_failure(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        message: &str,
    ) -> Result<Outcome, sqlx::Error> {
        loop {
            if let Some(outcome) = self
                .try_record_internal_failure(request, channel, received_at, message)
                .await?
            {
                return Ok(outcome);
            }
        }
    }

    /// `None`: another delivery recorded a final outcome meanwhile; try again to see it.
    async fn try_record_internal_failure(
        &self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        message: &str,
    ) -> Result<Option<Outcome>, sqlx::Error> {
        let inner = &self.inner;
        let mut tx = inner.pool.begin().await?;
        if let Some((prior, _)) = lock_prior(&mut tx, request.request_id).await?
            && prior.is_final()
        {
            audit_duplicate(&mut tx, request, &prior, channel, received_at).await?;
            tx.commit().await?;
            return Ok(Some(Outcome::Duplicate(prior)));
        }
        let related = self.resolve_customer(&mut tx, &request.customer_id).await?;
        sqlx::query("DELETE FROM erasure.claims WHERE request_id = $1")
            .bind(request.request_id)
            .execute(&mut *tx)
            .await?;
        let record = Final {
            related_object_id: Some(related),
            status: "FAILED",
            error: Some(("internal", message.to_string())),
            requested_by: Some(&request.requested_by),
            reason: request.reason.as_deref(),
            ..Final::new(
                request.request_id,
                Some(inner.hash.digest(&request.customer_id)),
                request.requested_at.unwrap_or(received_at),
                channel,
            )
        };
        let Some(row) = record_final(&mut tx, &record, self.zero_counts()).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        audit(
            &mut tx,
            &Audit {
                action: "erasure.failed",
                request_id: Some(request.request_id),
                deletion_id: Some(&row.id),
                related_object_id: row.related_object_id.as_deref(),
                channel,
                requested_by: Some(&request.requested_by),
                error_key: Some("internal"),
                detail: json!({ "message": message }),
                received_at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Outcome::Stopped(row)))
    }

    /// The customer id to record for `identifier`: the live customer's id, the id of a
    /// customer an earlier deletion erased, or, when nobody here has it, the identifier itself.
    /// Never a source id in clear.
    async fn resolve_customer(
        &self,
        conn: &mut PgConnection,
        identifier: &str,
    ) -> Result<String, sqlx::Error> {
        let live: Option<String> = sqlx::query_scalar(&self.inner.find_customer)
            .bind(identifier)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = live {
            return Ok(id);
        }
        let hash = self.inner.hash.digest(identifier);
        Ok(erased_by_earlier_deletion(conn, identifier, &hash)
            .await?
            .map(|(id, _)| id)
            .unwrap_or_else(|| identifier.to_string()))
    }

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

/// An [`Eraser`] with a connection kept from one erasure to the next.
///
/// A connection going back to the pool costs a round trip (the pool pings it on release), so
/// each worker slot keeps its own: a typical erasure is then exactly one round trip. The
/// connection is dropped after any error and a fresh one taken for the next attempt.
pub struct Session {
    eraser: Eraser,
    conn: Option<PoolConnection<Postgres>>,
}

impl Session {
    pub fn new(eraser: Eraser) -> Self {
        Self { eraser, conn: None }
    }

    pub fn eraser(&self) -> &Eraser {
        &self.eraser
    }

    /// Carries out `request`, deciding by [`ErrorClass`]:
    /// - transient errors are retried with exponential backoff and jitter, up to the configured
    ///   attempts; when they run out the request is recorded FAILED `internal` with the last
    ///   cause, and [`Outcome::Stopped`] says to dead-letter it;
    /// - permanent errors are recorded FAILED `internal` at once, also [`Outcome::Stopped`];
    /// - infrastructure errors are returned without recording anything and without counting
    ///   against the request: the caller holds the delivery and tries again later.
    pub async fn erase(
        &mut self,
        request: &ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Result<Outcome, sqlx::Error> {
        let mut delays = self.eraser.backoff().build();
        let mut attempts: u32 = 0;
        let mut reconnected = false;
        let (e, attempts) = loop {
            let eraser = self.eraser.clone();
            let reused = self.conn.is_some();
            let attempt = match self.connection().await {
                Ok(conn) => eraser.erase_once(conn, request, channel, received_at).await,
                Err(e) => Err(e),
            };
            let e = match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(e) => e,
            };
            self.conn = None;
            match classify(&e) {
                // A kept connection that died while idle (a database restart, a terminated
                // backend): one immediate try on a fresh connection before calling it an outage.
                ErrorClass::Infrastructure if reused && !reconnected => {
                    reconnected = true;
                    tracing::info!(request_id = %request.request_id, error = %SafeError(&e), "kept connection lost; reconnecting");
                }
                ErrorClass::Infrastructure => return Err(e),
                ErrorClass::Transient => {
                    attempts += 1;
                    match delays.next() {
                        Some(delay) => {
                            tracing::warn!(request_id = %request.request_id, error = %SafeError(&e), attempts, ?delay, "erasure attempt failed; retrying");
                            tokio::time::sleep(delay).await;
                        }
                        None => break (e, attempts),
                    }
                }
                ErrorClass::Permanent => break (e, attempts + 1),
            }
        };
        let message = if classify(&e) == ErrorClass::Transient {
            format!(
                "the erasure failed {attempts} times; the last time: {}",
                SafeError(&e)
            )
        } else {
            format!("the erasure failed: {}", SafeError(&e))
        };
        tracing::error!(request_id = %request.request_id, error = %SafeError(&e), attempts, "erasure failed");
        self.eraser
            .record_internal_failure(request, channel, received_at, &message)
            .await
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.eraser.inner.pool.acquire().await?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }
}

/// Retry what may pass, including the foreign-key violations a concurrent insert of a child
/// row causes (the next attempt's snapshot sees and erases that row).
fn is_retryable(e: &sqlx::Error) -> bool {
    is_transient(e)
}

/// An error as it may be logged and stored: database errors by code and constraint, never
/// their message or detail (PostgreSQL puts key values there).
pub struct SafeError<'a>(pub &'a sqlx::Error);

impl std::fmt::Display for SafeError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            sqlx::Error::Database(db) => {
                write!(
                    f,
                    "database error {}",
                    db.code().as_deref().unwrap_or("without code")
                )?;
                if let Some(constraint) = db.constraint() {
                    write!(f, " on constraint {constraint}")?;
                }
                if let Some(table) = db.table() {
                    write!(f, " in table {table}")?;
                }
                Ok(())
            }
            sqlx::Error::Io(e) => write!(f, "database connection: {}", e.kind()),
            sqlx::Error::PoolTimedOut => f.write_str("no database connection available in time"),
            sqlx::Error::PoolClosed => f.write_str("the database pool is closed"),
            sqlx::Error::Protocol(p) => write!(f, "database protocol: {p}"),
            other => write!(f, "database: {}", kind_name(other)),
        }
    }
}

fn kind_name(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "configuration",
        sqlx::Error::Tls(_) => "tls",
        sqlx::Error::RowNotFound => "row not found",
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decoding a value",
        sqlx::Error::WorkerCrashed => "connection worker crashed",
        _ => "other error",
    }
}

/// The deletion already holding `request_id`, locked, with its requested-id hash.
async fn lock_prior(
    conn: &mut PgConnection,
    request_id: Uuid,
) -> Result<Option<(DeletionRow, Option<Vec<u8>>)>, sqlx::Error> {
    let row: Option<DeletionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM erasure.deletions WHERE request_id = $1 FOR UPDATE"
    ))
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let hash: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT requested_id_hash FROM erasure.deletions WHERE request_id = $1",
            )
            .bind(request_id)
            .fetch_one(&mut *conn)
            .await?;
            Ok(Some((row, hash)))
        }
    }
}

/// The customer id, and source id hash, of an earlier DONE deletion that erased the customer
/// `identifier` names (by id, or by source id through its keyed hash).
async fn erased_by_earlier_deletion(
    conn: &mut PgConnection,
    identifier: &str,
    hash: &[u8],
) -> Result<Option<(String, Option<Vec<u8>>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT related_object_id, source_id_hash FROM erasure.deletions \
         WHERE status = 'DONE' AND NOT already_erased AND related_object_id IS NOT NULL \
           AND (related_object_id = $1 OR source_id_hash = $2) \
         ORDER BY (related_object_id = $1) DESC, completed_at LIMIT 1",
    )
    .bind(identifier)
    .bind(hash)
    .fetch_optional(conn)
    .await
}

/// A final outcome written outside the erasure statement.
struct Final<'a> {
    request_id: Uuid,
    related_object_id: Option<String>,
    requested_id_hash: Option<Vec<u8>>,
    source_id_hash: Option<Vec<u8>>,
    status: &'static str,
    already_erased: bool,
    error: Option<(&'static str, String)>,
    requested_by: Option<&'a str>,
    reason: Option<&'a str>,
    requested_at: DateTime<Utc>,
    channel: Channel,
}

impl Final<'_> {
    fn new(
        request_id: Uuid,
        requested_id_hash: Option<Vec<u8>>,
        requested_at: DateTime<Utc>,
        channel: Channel,
    ) -> Self {
        Self {
            request_id,
            related_object_id: None,
            requested_id_hash,
            source_id_hash: None,
            status: "FAILED",
            already_erased: false,
            error: None,
            requested_by: None,
            reason: None,
            requested_at,
            channel,
        }
    }
}

/// `None`: another delivery of the same request recorded a final outcome first.
async fn record_final(
    conn: &mut PgConnection,
    record: &Final<'_>,
    counts: Value,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO erasure.deletions AS d (id, request_id, related_object_id, requested_id_hash, \
           source_id_hash, status, data_json, already_erased, error_key, error_message, requested_by, \
           reason, requested_at, due_at, channel, completed_at, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, clock_timestamp(), 1) \
         ON CONFLICT (request_id) DO UPDATE SET related_object_id = EXCLUDED.related_object_id, \
           source_id_hash = EXCLUDED.source_id_hash, status = EXCLUDED.status, \
           data_json = (SELECT COALESCE(jsonb_object_agg(k, COALESCE((d.data_json ->> k)::bigint, 0) \
             + COALESCE((EXCLUDED.data_json ->> k)::bigint, 0)), '{{}}'::jsonb) \
             FROM jsonb_object_keys(d.data_json || EXCLUDED.data_json) k), \
           already_erased = EXCLUDED.already_erased, \
           error_key = EXCLUDED.error_key, error_message = EXCLUDED.error_message, \
           completed_at = EXCLUDED.completed_at, attempts = d.attempts + 1, pending_message = NULL \
         WHERE d.status IN ('PENDING', 'IN_PROGRESS') \
         RETURNING {COLUMNS}"
    ))
    .bind(deletion::new_id())
    .bind(record.request_id)
    .bind(&record.related_object_id)
    .bind(&record.requested_id_hash)
    .bind(&record.source_id_hash)
    .bind(record.status)
    .bind(counts)
    .bind(record.already_erased)
    .bind(record.error.as_ref().map(|(key, _)| *key))
    .bind(record.error.as_ref().map(|(_, message)| message.as_str()))
    .bind(record.requested_by)
    .bind(record.reason)
    .bind(record.requested_at)
    .bind(deletion::due_at(record.requested_at))
    .bind(record.channel.as_str())
    .fetch_optional(conn)
    .await
}

struct Audit<'a> {
    action: &'static str,
    request_id: Option<Uuid>,
    deletion_id: Option<&'a str>,
    related_object_id: Option<&'a str>,
    channel: Channel,
    requested_by: Option<&'a str>,
    error_key: Option<&'a str>,
    detail: Value,
    received_at: DateTime<Utc>,
}

/// Audits a repeat of a request whose outcome `prior` stands.
async fn audit_duplicate(
    conn: &mut PgConnection,
    request: &ErasureRequest,
    prior: &DeletionRow,
    channel: Channel,
    received_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    audit(
        conn,
        &Audit {
            action: "request.duplicate",
            request_id: Some(request.request_id),
            deletion_id: Some(&prior.id),
            related_object_id: prior.related_object_id.as_deref(),
            channel,
            requested_by: Some(&request.requested_by),
            error_key: None,
            detail: json!({ "status": prior.status }),
            received_at,
        },
    )
    .await
}

async fn audit(conn: &mut PgConnection, entry: &Audit<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO erasure.audit_log (received_at, action, request_id, deletion_id, \
           related_object_id, channel, requested_by, error_key, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(entry.received_at)
    .bind(entry.action)
    .bind(entry.request_id)
    .bind(entry.deletion_id)
    .bind(entry.related_object_id)
    .bind(entry.channel.as_str())
    .bind(entry.requested_by)
    .bind(entry.error_key)
    .bind(&entry.detail)
    .execute(conn)
    .await?;
    Ok(())
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
