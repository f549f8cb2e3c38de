//! Every read and write of `erasure.deletions` but three: the erasure statement writes its
//! outcome through [`super::statement`], what a deletion owes is claimed in [`super::owed`], and
//! holding and canceling are in [`super::lifecycle`], all next door. Nothing outside
//! `deletion` names the table.
//!
//! A row is created by whichever comes first for its request id: the HTTP intake (PENDING), a
//! redelivery or the start of a chunked erasure (IN_PROGRESS), or a final outcome. Later writes
//! move it forward only while it is open, so a final outcome is never changed and the first
//! one recorded stands, however many deliveries of the request race.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection, PgExecutor, Postgres};
use uuid::Uuid;

use super::{COLUMNS, DeletionRow, DeletionStatus, due_at, new_id, read_columns};
use crate::identity::Naming;
use crate::request::{Channel, InvalidRequest, Received};

/// The columns a new deletion row starts with, from the request that makes it. They are bound
/// as `$1` to `$9` (with a fresh `del_` id and the due date), in [`NEW_COLUMNS`]'s order.
#[derive(Clone, Copy, Debug)]
pub struct NewDeletion<'a> {
    pub request_id: Uuid,
    /// The customer's key, when known.
    pub related_object_id: Option<&'a str>,
    pub requested_hash: Option<&'a [u8]>,
    pub requested_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub requested_at: DateTime<Utc>,
    pub channel: Channel,
}

pub(super) const NEW_COLUMNS: &str = "id, request_id, related_object_id, requested_id_hash, requested_by, \
     reason, requested_at, due_at, channel";
/// The values of [`NEW_COLUMNS`], with the customer's key in `$3` as `related`.
pub(super) fn new_values(related: &str) -> String {
    format!("$1, $2, {related}, $4, $5, $6, $7, $8, $9")
}

impl<'a> NewDeletion<'a> {
    pub fn of(received: &'a Received) -> Self {
        Self {
            request_id: received.request_id(),
            related_object_id: None,
            requested_hash: Some(received.requested_hash()),
            requested_by: Some(&received.request.requested_by),
            reason: received.request.reason.as_deref(),
            requested_at: received.requested_at(),
            channel: received.channel,
        }
    }

    /// A message that is not a valid request but carries `request_id`.
    pub fn of_invalid(
        invalid: &'a InvalidRequest,
        request_id: Uuid,
        requested_hash: Option<&'a [u8]>,
        channel: Channel,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            request_id,
            related_object_id: None,
            requested_hash,
            requested_by: invalid.requested_by.as_deref(),
            reason: None,
            requested_at: invalid.requested_at.unwrap_or(received_at),
            channel,
        }
    }

    pub fn related(self, related_object_id: Option<&'a str>) -> Self {
        Self {
            related_object_id,
            ..self
        }
    }

    /// `sql` with `{columns}` and `{values}` filled (the customer's key from `related`), and
    /// its arguments `$1` to `$9`; the caller adds its own from `$10`.
    pub(super) fn insert(
        &self,
        sql: &str,
        related: &str,
    ) -> Result<(String, PgArguments), sqlx::Error> {
        let sql = sql
            .replace("{columns}", NEW_COLUMNS)
            .replace("{values}", &new_values(related));
        Ok((sql, self.arguments()?))
    }

    /// `$1` to `$9`; the caller adds its own from `$10`.
    pub(super) fn arguments(&self) -> Result<PgArguments, sqlx::Error> {
        let mut args = PgArguments::default();
        add(&mut args, new_id())?;
        add(&mut args, self.request_id)?;
        add(&mut args, self.related_object_id)?;
        add(&mut args, self.requested_hash)?;
        add(&mut args, self.requested_by)?;
        add(&mut args, self.reason)?;
        add(&mut args, self.requested_at)?;
        add(&mut args, due_at(self.requested_at))?;
        add(&mut args, self.channel)?;
        Ok(args)
    }
}

pub(super) fn add<'q, T>(args: &mut PgArguments, value: T) -> Result<(), sqlx::Error>
where
    T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

/// The statuses a deletion may still leave, as an SQL list.
pub(super) fn open() -> String {
    DeletionStatus::sql_list(DeletionStatus::OPEN)
}

/// Marks the request's deletion IN_PROGRESS (creating it if needed), adding `attempt` to its
/// attempts (a redelivery counts, the start of a chunked erasure does not) and recording the
/// customer when `new` names one. Returns the attempts, or `None` when the request already
/// ended or its id belongs to another customer.
pub async fn mark_in_progress(
    conn: &mut PgConnection,
    new: &NewDeletion<'_>,
    attempt: i32,
) -> Result<Option<i32>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO erasure.deletions AS d ({NEW_COLUMNS}, status, attempts, started_at) \
         VALUES ({}, '{in_progress}', $10, now()) \
         ON CONFLICT (request_id) DO UPDATE SET status = '{in_progress}', \
           started_at = COALESCE(d.started_at, now()), \
           related_object_id = COALESCE(EXCLUDED.related_object_id, d.related_object_id), \
           attempts = d.attempts + $10 \
         WHERE d.status IN {open} AND d.requested_id_hash = EXCLUDED.requested_id_hash \
         RETURNING d.attempts",
        new_values("$3"),
        in_progress = DeletionStatus::InProgress,
        open = open(),
    );
    let mut args = new.arguments()?;
    add(&mut args, attempt)?;
    sqlx::query_scalar_with(&sql, args)
        .fetch_optional(conn)
        .await
}

/// The insert of a request accepted over HTTP, PENDING with its message, for one plan (the
/// customer's key is looked up in the statement, from the identifier in `$3`, its reading as a
/// key in `$11` (as text) and its type in `$13`), with the API key that submitted it (`$14`,
/// `$15`) and the FAILED deletion it retries (`$16`).
#[derive(Clone, Debug)]
pub struct PendingInsert {
    sql: String,
}

impl PendingInsert {
    /// `subject_key`: SQL giving the subject's key (as text) for the identifier in `$3`, its
    /// key reading in `$11` (as text) and its type in `$13`, or NULL when it names no one
    /// customer.
    pub fn new(subject_key: &str) -> Self {
        Self {
            sql: format!(
                "INSERT INTO erasure.deletions ({NEW_COLUMNS}, status, pending_message, scheduled_at, \
                   requested_by_key_id, requested_by_key_name, retry_of) \
                 VALUES ({}, '{pending}', $10, $12, $14, $15, $16) \
                 ON CONFLICT (request_id) DO NOTHING \
                 RETURNING {COLUMNS}",
                new_values(subject_key),
                pending = DeletionStatus::Pending,
            ),
        }
    }

    /// Records `received` as PENDING with `message`, to be carried out at `scheduled_at` (with a
    /// grace period), submitted with the API key `key`, retrying the deletion `retry_of`; `None`
    /// when its request id has a row.
    pub async fn run(
        &self,
        db: impl PgExecutor<'_>,
        received: &Received,
        message: &[u8],
        scheduled_at: Option<DateTime<Utc>>,
        key: Option<&super::KeyRef>,
        retry_of: Option<&str>,
    ) -> Result<Option<DeletionRow>, sqlx::Error> {
        let new = NewDeletion::of(received).related(Some(&received.request.customer_id));
        let mut args = new.arguments()?;
        add(&mut args, message)?;
        add(&mut args, received.naming.key_text.as_deref())?;
        add(&mut args, scheduled_at)?;
        add(&mut args, received.request.identifier_type.as_deref())?;
        add(&mut args, key.map(|k| k.id.as_str()))?;
        add(&mut args, key.map(|k| k.name.as_str()))?;
        add(&mut args, retry_of)?;
        sqlx::query_as_with(&self.sql, args)
            .fetch_optional(db)
            .await
    }
}

/// The broker has the request message of this deletion: it is kept no longer.
pub async fn clear_pending_message(
    db: impl PgExecutor<'_>,
    deletion_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE erasure.deletions SET pending_message = NULL WHERE id = $1")
        .bind(deletion_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Adds `rows` under `count_key` to the IN_PROGRESS deletion of `request_id`, in a chunk's
/// transaction. False: the deletion ended meanwhile (another delivery finished it), and the
/// chunk must roll back.
pub async fn add_chunk_count(
    conn: &mut PgConnection,
    request_id: Uuid,
    count_key: &str,
    rows: i64,
) -> Result<bool, sqlx::Error> {
    let counted: Option<i32> = sqlx::query_scalar(&format!(
        "UPDATE erasure.deletions d \
         SET data_json = jsonb_set(d.data_json, ARRAY[$2::text], \
           to_jsonb(COALESCE((d.data_json ->> $2::text)::bigint, 0) + $3::bigint)) \
         WHERE d.request_id = $1 AND d.status = '{}' RETURNING 1",
        DeletionStatus::InProgress
    ))
    .bind(request_id)
    .bind(count_key)
    .bind(rows)
    .fetch_optional(conn)
    .await?;
    Ok(counted.is_some())
}

/// The deletion already holding a request id, with the keyed hash of the identifier it was
/// asked for.
#[derive(Debug, sqlx::FromRow)]
pub struct Prior {
    #[sqlx(flatten)]
    pub row: DeletionRow,
    pub requested_id_hash: Option<Vec<u8>>,
}

impl Prior {
    /// Whether it was asked for the identifier whose keyed hash is `hash`.
    pub fn names(&self, hash: Option<&[u8]>) -> bool {
        hash.is_some() && self.requested_id_hash.as_deref() == hash
    }
}

/// The deletion holding `request_id`; with `lock`, locked until the transaction ends (so that
/// no other delivery of the request records an outcome meanwhile).
pub async fn prior(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
    lock: bool,
) -> Result<Option<Prior>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}, requested_id_hash FROM erasure.deletions WHERE request_id = $1{lock}"
    ))
    .bind(request_id)
    .fetch_optional(db)
    .await
}

/// The keyed hashes of a customer's lookup values, as a deletion keeps them.
type Digests = Option<Vec<Vec<u8>>>;

/// What the deletions say of an identifier no live customer has (the "erased earlier" look of
/// [`crate::identity`]'s rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Earlier {
    /// A DONE deletion erased the customer it names: its key, and its lookup values' hashes.
    Erased {
        key: String,
        lookup_digests: Option<Vec<Vec<u8>>>,
    },
    /// It matches the lookup values of more than one erased customer.
    Ambiguous,
    /// Nobody here has it, or had it (or it was the key of a customer never erased here).
    Nobody,
}

/// What the deletions say of the identifier `naming` describes, when no live customer has it:
/// a key any deletion recorded names that customer only (erased if a DONE deletion erased it);
/// an identifier never a key is compared with the lookup values erased customers had, through
/// their keyed hashes. Each way is an index lookup.
pub async fn erased_earlier(
    conn: &mut PgConnection,
    naming: &Naming,
) -> Result<Earlier, sqlx::Error> {
    if naming.may_be_key() {
        let by_key: Option<(String, Digests, bool)> = sqlx::query_as(&format!(
            "SELECT related_object_id, lookup_digests, status = '{done}' AND NOT already_erased AS erased \
             FROM erasure.deletions WHERE related_object_id = $1 \
             ORDER BY erased DESC, completed_at LIMIT 1",
            done = DeletionStatus::Done
        ))
        .bind(&naming.key_text)
        .fetch_optional(&mut *conn)
        .await?;
        match by_key {
            Some((key, lookup_digests, true)) => {
                return Ok(Earlier::Erased {
                    key,
                    lookup_digests,
                });
            }
            Some(_) => return Ok(Earlier::Nobody),
            None => {}
        }
    }
    if !naming.may_be_lookup() {
        return Ok(Earlier::Nobody);
    }
    let found: Vec<(String, Digests)> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (related_object_id) related_object_id, lookup_digests FROM erasure.deletions \
         WHERE status = '{done}' AND NOT already_erased AND related_object_id IS NOT NULL AND ({names}) \
         ORDER BY related_object_id, completed_at LIMIT 2",
        done = DeletionStatus::Done,
        names = lookup_names("$1", "$2"),
    ))
    .bind(&naming.lookup_digests)
    .bind(&naming.legacy_hashes)
    .fetch_all(conn)
    .await?;
    Ok(match found.len() {
        0 => Earlier::Nobody,
        1 => {
            let (key, lookup_digests) = found.into_iter().next().expect("one");
            Earlier::Erased {
                key,
                lookup_digests,
            }
        }
        _ => Earlier::Ambiguous,
    })
}

/// The condition that a deletion kept one of the lookup-value hashes `digests` (tagged, as
/// [`crate::identity`] computes them), or, recorded before they were, one of the untagged
/// `legacy` hashes.
pub fn lookup_names(digests: &str, legacy: &str) -> String {
    format!(
        "lookup_digests && {digests} OR (lookup_digests IS NULL AND (source_id_hash = ANY({legacy}) OR lookup_hashes && {legacy}))"
    )
}

/// The condition that a deletion names the customer the identifier `naming` describes, for
/// showing deletions (parameters `$1` the key's text, `$2` the exact hash, `$3` the lookup
/// hashes, `$4` the legacy ones): by the key, if any deletion recorded it; else as it was asked
/// (a request that named nobody) or by a lookup value.
fn names_customer() -> String {
    format!(
        "(related_object_id = $1 OR (NOT EXISTS (SELECT 1 FROM erasure.deletions k WHERE k.related_object_id = $1) \
           AND (requested_id_hash = $2 OR {})))",
        lookup_names("$3", "$4")
    )
}

/// The deletion with this `del_` id or request id.
pub async fn find(
    db: impl PgExecutor<'_>,
    id_or_request_id: &str,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    find_with(db, id_or_request_id, "").await
}

/// The same, its row locked until the transaction ends: what a cancel or an extension reads
/// before it decides, so that an erasure of the same request waits for it (or it for that).
pub async fn lock(
    db: impl PgExecutor<'_>,
    id_or_request_id: &str,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    find_with(db, id_or_request_id, " FOR UPDATE").await
}

async fn find_with(
    db: impl PgExecutor<'_>,
    id_or_request_id: &str,
    locking: &str,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    match Uuid::parse_str(id_or_request_id) {
        Ok(request_id) => {
            sqlx::query_as(&format!(
                "SELECT {} FROM erasure.deletions WHERE request_id = $1{locking}",
                read_columns()
            ))
            .bind(request_id)
            .fetch_optional(db)
            .await
        }
        Err(_) => {
            sqlx::query_as(&format!(
                "SELECT {} FROM erasure.deletions WHERE id = $1{locking}",
                read_columns()
            ))
            .bind(id_or_request_id)
            .fetch_optional(db)
            .await
        }
    }
}

/// The latest deletion naming the customer `naming` describes (see [`names_customer`]), also
/// after erasure.
pub async fn latest_for_customer(
    db: impl PgExecutor<'_>,
    naming: &Naming,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    Ok(all_for_customer(db, naming, 1).await?.into_iter().next())
}

/// Every deletion naming the customer `naming` describes (as [`latest_for_customer`] finds
/// them), newest first.
pub async fn all_for_customer(
    db: impl PgExecutor<'_>,
    naming: &Naming,
    limit: i64,
) -> Result<Vec<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {columns} FROM erasure.deletions WHERE {names} \
         ORDER BY created_at DESC, id DESC LIMIT $5",
        columns = read_columns(),
        names = names_customer(),
    ))
    .bind(
        naming
            .may_be_key()
            .then_some(naming.key_text.as_deref())
            .flatten(),
    )
    .bind(&naming.requested_hash)
    .bind(&naming.lookup_digests)
    .bind(if naming.may_be_lookup() {
        naming.legacy_hashes.clone()
    } else {
        Vec::new()
    })
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What a page of the list holds.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub status: Option<DeletionStatus>,
    /// Only open deletions past their due date (as extended, where it was).
    pub overdue: bool,
    /// Only deletions after this one in the order (newest first).
    pub after: Option<DeletionRow>,
    pub limit: i64,
}

/// Deletions newest first, ties broken by id, as [`ListQuery`] says.
pub async fn list(
    db: impl PgExecutor<'_>,
    query: &ListQuery,
) -> Result<Vec<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {columns} FROM erasure.deletions \
         WHERE ($1::text IS NULL OR status = $1) \
           AND (NOT $2 OR (status IN {open} AND due_at < now() AND COALESCE(extended_due_at, due_at) < now())) \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5",
        open = open(),
        columns = read_columns(),
    ))
    .bind(query.status)
    .bind(query.overdue)
    .bind(query.after.as_ref().map(|row| row.created_at))
    .bind(query.after.as_ref().map(|row| row.id.as_str()))
    .bind(query.limit)
    .fetch_all(db)
    .await
}

/// Open deletions past their due date (as extended, where it was).
pub async fn count_overdue(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM erasure.deletions WHERE status IN {} AND due_at < now() AND COALESCE(extended_due_at, due_at) < now()",
        open()
    ))
    .fetch_one(db)
    .await
}
