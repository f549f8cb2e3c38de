//! The SQL made from a plan, once, at start-up:
//! - [`erase`]: the erasure statement, which erases one customer and records the outcome in one
//!   round trip;
//! - [`companions`]: what the other paths need (the size probe, the chunks of a huge customer,
//!   finding a customer by identifier);
//! - [`leftovers`]: the check after commit, of what the plan's paths still find and of the rows
//!   the erasure kept;
//! - [`sweep`]: clearing the referenced rows an erasure kept that nothing uses any more;
//! - [`reach`]: the pieces they share (which rows a path reaches, matching an identifier to the
//!   subject, clearing a row's personal columns).
//!
//! Identifiers are quoted; every value (the request's, and the plan's own: guard values and
//! messages, fixed anonymizing values) is a parameter, listed in the [`Statement`] with its type,
//! so that the statement prepares as printed and nothing is spliced into it. No column is ever
//! cast: a path compares each column with a value of its own type, so its index can be used.

pub mod companions;
pub mod erase;
pub mod guards;
pub mod leftovers;
pub mod reach;
pub mod sweep;

use std::fmt::Write;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Postgres};
use uuid::Uuid;

use super::KeyValue;
use super::sizes::Probing;
use crate::request::Channel;

pub use companions::{
    ChunkStatement, chunk_statements, find_subject_statement, oversized_statement,
    subject_by_identifier, subject_digests_statement,
};
pub use erase::{count_statement, erase_statement, lock_statement};
pub use leftovers::leftovers_statement;
pub use sweep::{Sweep, sweep_statements};

/// What a parameter takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One value of each request of the batch, as an array, in the batch's order.
    Each(Field),
    /// The identifier one request named, as text (finding a customer).
    Customer,
    /// That identifier read as the subject's key (NULL when it does not read as one).
    Key,
    /// That identifier's type (`key`, a lookup's column, or NULL).
    Kind,
    /// The customer's key as text (chunks and probes of a customer already found).
    SubjectId,
    /// Several customers' keys, as text.
    SubjectIds,
    /// Beside each of them, what its erasure recorded it kept (the check after commit).
    KeptRows,
    RequestId,
    /// The inner and outer key pads of the keyed hash.
    InnerPad,
    OuterPad,
    /// A customer with more rows than this in one table is erased in chunks.
    ChunkThreshold,
    /// The keys (as text) of the customers whose size the statement probes; NULL for all.
    Probed,
    /// The most rows a chunk takes.
    ChunkRows,
    /// A value of the plan's own.
    Text(String),
    TextList(Vec<String>),
}

/// What each request of a batch gives the statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The identifier the request named.
    Customer,
    /// The identifier read as the subject's key.
    Key,
    /// The identifier's type: `key`, a lookup's column, or NULL for either.
    Kind,
    RequestId,
    /// The id of a new deletion object.
    DeletionId,
    /// Keyed hash of the identifier the request named.
    RequestedHash,
    RequestedBy,
    Reason,
    RequestedAt,
    DueAt,
    Channel,
    /// When the service received the request.
    ReceivedAt,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Customer => "customer",
            Field::Key => "key",
            Field::Kind => "kind",
            Field::RequestId => "request_id",
            Field::DeletionId => "deletion_id",
            Field::RequestedHash => "requested_hash",
            Field::RequestedBy => "requested_by",
            Field::Reason => "reason",
            Field::RequestedAt => "requested_at",
            Field::DueAt => "due_at",
            Field::Channel => "channel",
            Field::ReceivedAt => "received_at",
        }
    }
}

impl Value {
    fn name(&self) -> &'static str {
        match self {
            Value::Each(field) => field.name(),
            Value::Customer => "customer",
            Value::Key => "key",
            Value::Kind => "kind",
            Value::SubjectId => "subject_id",
            Value::SubjectIds => "subject_ids",
            Value::KeptRows => "kept",
            Value::RequestId => "request_id",
            Value::InnerPad => "inner_pad",
            Value::OuterPad => "outer_pad",
            Value::ChunkThreshold => "chunk_threshold",
            Value::Probed => "probed",
            Value::ChunkRows => "chunk_rows",
            Value::Text(_) | Value::TextList(_) => "constant",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    pub value: Value,
    /// The SQL type the statement gives it.
    pub sql_type: &'static str,
}

/// A statement and its parameters, `$1` first.
#[derive(Clone, Debug, Default)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

/// The parameters of a statement being written: each value once, numbered in order of use.
#[derive(Debug, Default)]
pub struct Params {
    list: Vec<Param>,
    /// Changes are written as the `SELECT` of the rows they would change (the read-only count
    /// of a preview, [`erase::count_statement`]).
    counting: bool,
}

impl Params {
    /// Parameters of a statement that counts what it would change, changing nothing.
    pub fn counting() -> Self {
        Self {
            counting: true,
            ..Self::default()
        }
    }

    pub fn is_counting(&self) -> bool {
        self.counting
    }

    /// `$n` for `value` (a new number the first time).
    pub fn of(&mut self, value: Value, sql_type: &'static str) -> String {
        let n = match self.list.iter().position(|p| p.value == value) {
            Some(i) => i + 1,
            None => {
                self.list.push(Param { value, sql_type });
                self.list.len()
            }
        };
        format!("${n}")
    }

    /// `$n::type`, for a place whose context gives the parameter no type.
    pub fn typed(&mut self, value: Value, sql_type: &'static str) -> String {
        format!("{}::{sql_type}", self.of(value, sql_type))
    }

    pub fn finish(self, sql: String) -> Statement {
        Statement {
            sql,
            params: self.list,
        }
    }
}

/// One request of a batch, as the erasure statement takes it.
#[derive(Clone, Debug)]
pub struct RequestRow<'a> {
    pub customer: &'a str,
    pub key: KeyValue,
    /// The identifier's type (`key`, a lookup's column), or `None` for either.
    pub kind: Option<&'a str>,
    pub request_id: Uuid,
    pub deletion_id: String,
    pub requested_hash: &'a [u8],
    pub requested_by: &'a str,
    pub reason: Option<&'a str>,
    pub requested_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub channel: Channel,
    pub received_at: DateTime<Utc>,
}

/// The values a statement's parameters take: a batch of requests, or one customer (or one
/// chunk).
#[derive(Clone, Debug, Default)]
pub struct Values<'a> {
    pub requests: &'a [RequestRow<'a>],
    pub customer: Option<&'a str>,
    pub key: Option<&'a KeyValue>,
    pub kind: Option<&'a str>,
    pub subject_id: Option<&'a str>,
    pub subject_ids: Option<&'a [String]>,
    pub kept: Option<&'a [serde_json::Value]>,
    pub request_id: Option<Uuid>,
    pub pads: Option<(&'a [u8], &'a [u8])>,
    pub chunk_threshold: Option<i64>,
    pub chunk_rows: Option<i64>,
    pub probing: Option<&'a Probing>,
}

fn add<'q, T>(args: &mut PgArguments, value: T) -> Result<(), sqlx::Error>
where
    T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

fn needed<T>(value: Option<T>, what: &Value) -> Result<T, sqlx::Error> {
    // A missing value is a fault of the code, never of the request: it must not pass for an
    // outage (which would hold the request for ever), so it is a configuration error.
    value.ok_or_else(|| {
        sqlx::Error::Configuration(
            format!("the statement takes {} and none was given", what.name()).into(),
        )
    })
}

/// Many keys (of one type) as one array argument.
fn add_keys<'k>(
    args: &mut sqlx::postgres::PgArguments,
    keys: impl Iterator<Item = &'k KeyValue>,
) -> Result<(), sqlx::Error> {
    use sqlx::Arguments;
    let keys: Vec<&KeyValue> = keys.collect();
    let added = match keys.first() {
        None | Some(KeyValue::Text(_)) => args.add(
            keys.iter()
                .map(|k| match k {
                    KeyValue::Text(v) => Some(v.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        Some(KeyValue::Integer(_)) => args.add(
            keys.iter()
                .map(|k| match k {
                    KeyValue::Integer(v) => *v,
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        Some(KeyValue::Bigint(_)) => args.add(
            keys.iter()
                .map(|k| match k {
                    KeyValue::Bigint(v) => *v,
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        Some(KeyValue::Uuid(_)) => args.add(
            keys.iter()
                .map(|k| match k {
                    KeyValue::Uuid(v) => *v,
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
    };
    added.map_err(sqlx::Error::Encode)
}

/// One key as an argument, of its type.
fn add_key(key: &KeyValue, args: &mut sqlx::postgres::PgArguments) -> Result<(), sqlx::Error> {
    use sqlx::Arguments;
    match key {
        KeyValue::Text(v) => args.add(v.as_str()),
        KeyValue::Integer(v) => args.add(*v),
        KeyValue::Bigint(v) => args.add(*v),
        KeyValue::Uuid(v) => args.add(*v),
    }
    .map_err(sqlx::Error::Encode)
}

/// One field of every request, as an array.
fn add_each(
    args: &mut PgArguments,
    field: Field,
    rows: &[RequestRow<'_>],
) -> Result<(), sqlx::Error> {
    let all = |f: fn(&RequestRow<'_>) -> String| rows.iter().map(f).collect::<Vec<_>>();
    match field {
        Field::Customer => add(args, all(|r| r.customer.to_owned())),
        Field::Key => add_keys(args, rows.iter().map(|r| &r.key)),
        Field::Kind => add(
            args,
            rows.iter()
                .map(|r| r.kind.map(str::to_owned))
                .collect::<Vec<_>>(),
        ),
        Field::RequestId => add(args, rows.iter().map(|r| r.request_id).collect::<Vec<_>>()),
        Field::DeletionId => add(args, all(|r| r.deletion_id.clone())),
        Field::RequestedHash => add(
            args,
            rows.iter()
                .map(|r| r.requested_hash.to_vec())
                .collect::<Vec<_>>(),
        ),
        Field::RequestedBy => add(args, all(|r| r.requested_by.to_owned())),
        Field::Reason => add(
            args,
            rows.iter()
                .map(|r| r.reason.map(str::to_owned))
                .collect::<Vec<_>>(),
        ),
        Field::RequestedAt => add(
            args,
            rows.iter().map(|r| r.requested_at).collect::<Vec<_>>(),
        ),
        Field::DueAt => add(args, rows.iter().map(|r| r.due_at).collect::<Vec<_>>()),
        Field::Channel => add(args, all(|r| r.channel.as_str().to_owned())),
        Field::ReceivedAt => add(args, rows.iter().map(|r| r.received_at).collect::<Vec<_>>()),
    }
}

impl Statement {
    /// The arguments for this statement from `values`, in parameter order.
    pub fn arguments(&self, values: &Values<'_>) -> Result<PgArguments, sqlx::Error> {
        let mut args = PgArguments::default();
        for param in &self.params {
            let v = &param.value;
            match v {
                Value::Each(field) => add_each(&mut args, *field, values.requests)?,
                Value::Customer => add(&mut args, needed(values.customer, v)?)?,
                Value::Key => add_key(needed(values.key, v)?, &mut args)?,
                Value::Kind => add(&mut args, values.kind)?,
                Value::SubjectId => add(&mut args, needed(values.subject_id, v)?)?,
                Value::SubjectIds => add(&mut args, needed(values.subject_ids, v)?)?,
                Value::KeptRows => add(&mut args, needed(values.kept, v)?)?,
                Value::RequestId => add(&mut args, needed(values.request_id, v)?)?,
                Value::InnerPad => add(&mut args, needed(values.pads, v)?.0)?,
                Value::OuterPad => add(&mut args, needed(values.pads, v)?.1)?,
                Value::ChunkThreshold => add(&mut args, needed(values.chunk_threshold, v)?)?,
                Value::ChunkRows => add(&mut args, needed(values.chunk_rows, v)?)?,
                Value::Probed => add(&mut args, needed(values.probing, v)?.keys())?,
                Value::Text(text) => add(&mut args, text.clone())?,
                Value::TextList(list) => add(&mut args, list.clone())?,
            }
        }
        Ok(args)
    }

    /// The statement as `erasure plan --sql` prints it: a comment naming each parameter (and
    /// the plan's own values), then the SQL.
    pub fn render(&self) -> String {
        let mut out = String::from("-- Parameters:\n");
        for (i, param) in self.params.iter().enumerate() {
            let _ = write!(
                out,
                "--   ${} {} {}",
                i + 1,
                param.sql_type,
                param.value.name()
            );
            match &param.value {
                Value::Text(text) => {
                    let _ = write!(out, " = {}", literal(text));
                }
                Value::TextList(list) => {
                    let items: Vec<String> = list.iter().map(|v| literal(v)).collect();
                    let _ = write!(out, " = ARRAY[{}]::text[]", items.join(", "));
                }
                _ => {}
            }
            out.push('\n');
        }
        let _ = write!(out, "{};", self.sql);
        out
    }
}

/// `value` as an SQL string literal (for the printed parameter list only).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
