//! The canary (`erasure canary`): plants a synthetic customer on every path of the plan,
//! erases it as a request would, lets the service clear what it clears after commit, and then
//! scans for the customer's values: every table and materialized view, `pg_largeobject`, the
//! planner's statistics, `pg_stat_statements` (when installed) and the server's log (when
//! readable). It passes only when none is found. Meant for CI after each migration: a column
//! the plan does not clear (a new `alt_email`), a trigger that copies rows, a view not
//! refreshed, show up by name.
//!
//! Each planted value that should go carries one random token (`cnry` and 12 hex digits): the
//! values of the rows the plan deletes, the columns it clears where it keeps rows, and every
//! column that looks personal ([`crate::plan::drift`]). The customer's key, and the columns of
//! kept rows that hold nothing personal, get values without it (the service keeps the key on
//! purpose). The request names the customer by its first text lookup (so that the identifier a
//! request carries is looked for too), or by its key.
//!
//! What is left of the canary when it fails (rows it could not erase, rows borrowed for a
//! foreign key) is removed afterwards, as far as it can be.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::Utc;
use serde_json::{Map, Value, json};
use sqlx::{PgPool, Row};

use crate::deletion::DeletionStatus;
use crate::erase::Eraser;
use crate::erase::Outcome;
use crate::plan::live::LiveSchema;
use crate::plan::residue::Treatment;
use crate::plan::{Action, Anonymize, LookupType, Plan, TableName, Test, ident};
use crate::proof::residue::Recorder;
use crate::proof::verification::Verifier;
use crate::request::{Channel, ErasureRequest};

/// Where to look beyond the database.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The server's log file, read from where it ended when the canary began. Unset: the
    /// logging collector's current file, read through the database where the role may.
    pub server_log: Option<PathBuf>,
}

/// What the canary found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub token: String,
    /// The deletion that erased it.
    pub deletion_id: Option<String>,
    /// The rows it planted, as "table (path)".
    pub planted: Vec<String>,
    /// Where its values were found after the erasure: fails the canary.
    pub found: Vec<String>,
    /// What remains for a known time (the planner's statistics until the next ANALYZE): said,
    /// does not fail it.
    pub remains: Vec<String>,
    /// What could not be scanned, and why.
    pub not_scanned: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.found.is_empty()
    }
}

/// Why the canary could not run.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("cannot plant the canary: {0}")]
    Plant(String),
    #[error("the canary's erasure did not end DONE: {0}")]
    Erasure(String),
    #[error("database: {}", crate::db::SafeError(.0))]
    Database(#[from] sqlx::Error),
}

/// A column of a table the canary plants into.
#[derive(Clone, Debug)]
struct Col {
    name: String,
    /// `format_type`'s spelling.
    sql_type: String,
    nullable: bool,
    has_default: bool,
    generated: bool,
    /// `pg_type.typcategory` (of the base type, for a domain).
    category: String,
    base: String,
    max_length: Option<i32>,
    first_label: Option<String>,
}

async fn columns_of(pool: &PgPool, table: &TableName) -> Result<Vec<Col>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS sql_type, \
                NOT a.attnotnull AS nullable, a.atthasdef AS has_default, \
                (a.attgenerated <> '' OR a.attidentity <> '') AS generated, \
                COALESCE(bt.typcategory, t.typcategory)::text AS category, \
                COALESCE(bt.typname, t.typname)::text AS base, \
                CASE WHEN a.atttypmod > 4 AND COALESCE(bt.typcategory, t.typcategory) = 'S' THEN a.atttypmod - 4 END AS max_length, \
                (SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder LIMIT 1) AS first_label \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(table.sql())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Col {
                name: r.try_get("name")?,
                sql_type: r.try_get("sql_type")?,
                nullable: r.try_get("nullable")?,
                has_default: r.try_get("has_default")?,
                generated: r.try_get("generated")?,
                category: r.try_get("category")?,
                base: r.try_get("base")?,
                max_length: r.try_get("max_length")?,
                first_label: r.try_get("first_label")?,
            })
        })
        .collect()
}

/// One value of an `INSERT` the canary writes: SQL with its own placeholders bound later.
enum Planted {
    /// Left to the column's default.
    Default,
    /// SQL with no parameter.
    Sql(String),
    /// A text parameter cast to the column's type.
    Bound(String),
    /// A large object holding the text.
    LargeObject(String),
}

/// The rows the canary planted, by table: each as its columns' values (JSON).
type Rows = BTreeMap<TableName, Vec<Map<String, Value>>>;

struct Planter<'a> {
    plan: &'a Plan,
    pool: &'a PgPool,
    live: LiveSchema,
    token: String,
    /// A token-free prefix for values that must stay unique but are not personal.
    neutral: String,
    counter: usize,
    rows: Rows,
    /// The tables planted into, in the order of their first row.
    order: Vec<TableName>,
    /// Rows planted in tables outside the plan (a parent a foreign key needs), to remove.
    borrowed: Vec<(TableName, String, String)>,
    report: Vec<String>,
}

impl Planter<'_> {
    fn next(&mut self) -> usize {
        self.counter += 1;
        self.counter
    }

    /// A value carrying the token, shaped for the column.
    fn marker(&mut self, column: &Col) -> Option<Planted> {
        let n = self.next();
        let text = format!("{}-{n}", self.token);
        let ty = crate::plan::live::Column {
            sql_type: column.sql_type.clone(),
            nullable: true,
            has_default: false,
            identity: false,
        };
        let shaped = match crate::plan::drift::personal_by_name(&column.name, &ty) {
            Some("an e-mail address") => format!("{text}@example.invalid"),
            _ => text.clone(),
        };
        match (column.base.as_str(), column.category.as_str()) {
            ("oid", _) => Some(Planted::LargeObject(text)),
            ("jsonb" | "json", _) => Some(Planted::Bound(json!({ "canary": text }).to_string())),
            ("bytea", _) => Some(Planted::Sql(format!(
                "convert_to('{}', 'UTF8')",
                text.replace('\'', "''")
            ))),
            (_, "S") => {
                let fits = |v: &str| column.max_length.is_none_or(|m| v.len() <= m as usize);
                if fits(&shaped) {
                    Some(Planted::Bound(shaped))
                } else if fits(&text) {
                    Some(Planted::Bound(text))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// A value without the token, for a column that must hold one.
    fn neutral(&mut self, column: &Col) -> Option<Planted> {
        let n = self.next();
        let cast = |sql: &str| Planted::Sql(format!("CAST({sql} AS {})", column.sql_type));
        Some(match (column.base.as_str(), column.category.as_str()) {
            ("uuid", _) => cast("gen_random_uuid()"),
            ("jsonb" | "json", _) => cast("'{}'"),
            ("bytea", _) => cast("'\\x'"),
            ("oid", _) => return None,
            (_, "S") => {
                let value = format!("{}-{n}", self.neutral);
                let value = match column.max_length {
                    Some(m) if value.len() > m as usize => {
                        value[value.len() - m as usize..].to_string()
                    }
                    _ => value,
                };
                Planted::Bound(value)
            }
            (_, "N") => cast("0"),
            (_, "B") => cast("false"),
            (_, "D") => cast("now()"),
            (_, "T") => cast("'0'"),
            (_, "A") => cast("'{}'"),
            (_, "I") => cast("'192.0.2.1'"),
            (_, "E") => Planted::Bound(column.first_label.clone()?),
            _ => return None,
        })
    }

    /// Inserts one row into `table` with `fixed` columns (paths and foreign keys) and the rest
    /// as the plan's action on it says; returns the row as planted.
    async fn insert(
        &mut self,
        conn: &mut sqlx::PgConnection,
        table: &TableName,
        fixed: &BTreeMap<String, Value>,
        action: Option<&Action>,
        what: &str,
    ) -> Result<Map<String, Value>, CanaryError> {
        let columns = columns_of(self.pool, table).await?;
        let personal_named: Vec<String> = {
            let live = self.live.tables.get(table);
            columns
                .iter()
                .filter(|c| {
                    live.and_then(|t| t.columns.get(&c.name)).is_some_and(|ty| {
                        crate::plan::drift::personal_by_name(&c.name, ty).is_some()
                    })
                })
                .map(|c| c.name.clone())
                .collect()
        };
        let guarded = guarded_columns(self.plan, table);
        let mut names = Vec::new();
        let mut values: Vec<Planted> = Vec::new();
        for column in &columns {
            if column.generated {
                continue;
            }
            let planted = if let Some(value) = fixed.get(&column.name) {
                match value {
                    Value::Null => Planted::Sql(format!("NULL::{}", column.sql_type)),
                    Value::String(s) => Planted::Bound(s.clone()),
                    other => Planted::Bound(other.to_string()),
                }
            } else {
                let goes = match action {
                    Some(Action::Delete) => true,
                    Some(Action::Anonymize(a)) => a.cleared().any(|c| c == column.name),
                    None => false,
                };
                let wanted = goes || personal_named.contains(&column.name);
                let remove_keys = match action {
                    Some(Action::Anonymize(Anonymize { remove_keys, .. })) => remove_keys
                        .iter()
                        .find(|(c, _)| *c == column.name)
                        .map(|(_, keys)| keys.clone()),
                    _ => None,
                };
                match (wanted, action.is_some()) {
                    _ if guarded.get(&column.name) == Some(&GuardHint::NotNull)
                        && column.nullable =>
                    {
                        Planted::Sql(format!("NULL::{}", column.sql_type))
                    }
                    (true, _) if remove_keys.is_some() => {
                        let keys = remove_keys.unwrap_or_default();
                        let n = self.next();
                        Planted::Bound(nested(&keys, &format!("{}-{n}", self.token)).to_string())
                    }
                    (true, _) => match self.marker(column) {
                        Some(p) => p,
                        None => self.filler(column, &guarded)?,
                    },
                    (false, _) => self.filler(column, &guarded)?,
                }
            };
            names.push(ident(&column.name));
            values.push(planted);
        }
        let mut sql_values = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        for (planted, column) in values.iter().zip(columns.iter().filter(|c| !c.generated)) {
            let sql = match planted {
                Planted::Default => "DEFAULT".to_string(),
                Planted::Sql(sql) => sql.clone(),
                Planted::Bound(text) => {
                    binds.push(text.clone());
                    format!("CAST(${}::text AS {})", binds.len(), column.sql_type)
                }
                Planted::LargeObject(text) => {
                    binds.push(text.clone());
                    format!(
                        "CAST(lo_from_bytea(0, convert_to(${}::text, 'UTF8')) AS {})",
                        binds.len(),
                        column.sql_type
                    )
                }
            };
            sql_values.push(sql);
        }
        let sql = format!(
            "INSERT INTO {} AS x ({}) VALUES ({}) RETURNING to_jsonb(x)",
            table.sql(),
            names.join(", "),
            sql_values.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, Value>(&sql);
        for bind in &binds {
            query = query.bind(bind);
        }
        let row = match query.fetch_one(&mut *conn).await {
            Ok(Value::Object(row)) => row,
            Ok(_) => return Err(CanaryError::Plant(format!("{table} answered no row"))),
            Err(sqlx::Error::Database(e)) => {
                return Err(CanaryError::Plant(format!(
                    "{table} ({what}) refused the row: {} {}",
                    e.code().unwrap_or_default(),
                    e.constraint()
                        .map_or(String::new(), |c| format!("(constraint {c})"))
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.report.push(format!("{table} ({what})"));
        if !self.order.contains(table) {
            self.order.push(table.clone());
        }
        Ok(row)
    }

    /// A value for a column nothing asks a token of: its default, NULL, or a neutral value; a
    /// guard's column gets one that keeps the guard from holding.
    fn filler(
        &mut self,
        column: &Col,
        guarded: &BTreeMap<String, GuardHint>,
    ) -> Result<Planted, CanaryError> {
        match guarded.get(&column.name) {
            Some(GuardHint::IsNull) | Some(GuardHint::Avoid) => {
                return self.neutral(column).ok_or_else(|| {
                    CanaryError::Plant(format!(
                        "column {} ({}) is tested by a guard and the canary has no value of its type",
                        column.name, column.sql_type
                    ))
                });
            }
            _ => {}
        }
        if column.has_default {
            return Ok(Planted::Default);
        }
        if column.nullable {
            return Ok(Planted::Sql(format!("NULL::{}", column.sql_type)));
        }
        self.neutral(column).ok_or_else(|| {
            CanaryError::Plant(format!(
                "column {} is {} NOT NULL without a default, and the canary has no value of that type",
                column.name, column.sql_type
            ))
        })
    }

    /// The value of column `column` for a foreign key of `table` to `parent`: the canary's own
    /// row of `parent` if it planted one, else NULL where it may, else a row of `parent` that
    /// exists (or a neutral row planted there and removed afterwards).
    async fn parent_value(
        &mut self,
        conn: &mut sqlx::PgConnection,
        parent: &TableName,
        parent_column: &str,
        nullable: bool,
    ) -> Result<Value, CanaryError> {
        if let Some(row) = self.rows.get(parent).and_then(|rows| rows.first()) {
            return Ok(row.get(parent_column).cloned().unwrap_or(Value::Null));
        }
        if nullable {
            return Ok(Value::Null);
        }
        let existing: Option<String> = sqlx::query_scalar(&format!(
            "SELECT {c}::text FROM {t} WHERE {c} IS NOT NULL LIMIT 1",
            c = ident(parent_column),
            t = parent.sql()
        ))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(value) = existing {
            return Ok(Value::String(value));
        }
        let row = self
            .insert(
                conn,
                parent,
                &BTreeMap::new(),
                None,
                "a row a foreign key needs",
            )
            .await?;
        let value = row.get(parent_column).cloned().unwrap_or(Value::Null);
        let key = self
            .live
            .tables
            .get(parent)
            .and_then(|t| t.primary_key.clone())
            .unwrap_or_else(|| parent_column.to_owned());
        if let Some(k) = row.get(&key) {
            self.borrowed.push((parent.clone(), key, json_text(k)));
        }
        Ok(value)
    }

    /// The fixed columns of a row of `table`: every single-column foreign key (to the canary's
    /// rows where it has them), then `paths` (the path this row is planted for first).
    async fn fixed(
        &mut self,
        conn: &mut sqlx::PgConnection,
        table: &TableName,
    ) -> Result<BTreeMap<String, Value>, CanaryError> {
        let mut fixed = BTreeMap::new();
        let keys: Vec<_> = self
            .live
            .foreign_keys
            .iter()
            .filter(|k| &k.child == table && k.child_columns.len() == 1 && &k.parent != table)
            .cloned()
            .collect();
        for key in keys {
            let column = &key.child_columns[0];
            let nullable = self.live.column(table, column).is_none_or(|c| c.nullable);
            let value = self
                .parent_value(conn, &key.parent, &key.parent_columns[0], nullable)
                .await?;
            fixed.insert(column.clone(), value);
        }
        Ok(fixed)
    }
}

/// What a guard asks of a column, so that the canary's row does not trip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuardHint {
    /// The guard holds when it is null: give it a value.
    IsNull,
    /// The guard holds when it has a value: leave it null.
    NotNull,
    /// The guard compares it with values: a neutral value (which none of them is).
    Avoid,
}

fn guarded_columns(plan: &Plan, table: &TableName) -> BTreeMap<String, GuardHint> {
    let mut hints = BTreeMap::new();
    for guard in plan.guards.iter().filter(|g| &g.table == table) {
        for condition in &guard.when {
            let hint = match condition.test {
                Test::IsNull => GuardHint::IsNull,
                Test::NotNull => GuardHint::NotNull,
                _ => GuardHint::Avoid,
            };
            hints.entry(condition.column.clone()).or_insert(hint);
        }
    }
    hints
}

/// A JSON object holding `value` at each of `keys` (paths joined by dots).
fn nested(keys: &[String], value: &str) -> Value {
    let mut root = Map::new();
    for key in keys {
        let parts: Vec<&str> = key.split('.').collect();
        let mut at = &mut root;
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                at.insert((*part).to_owned(), Value::String(value.to_owned()));
            } else {
                let next = at
                    .entry((*part).to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                at = next.as_object_mut().expect("an object");
            }
        }
    }
    Value::Object(root)
}

/// A JSON value as the text PostgreSQL reads back into its column.
fn json_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the canary runs with: an application's pool, eraser, check after commit and residue
/// recorder.
pub struct Parts<'a> {
    pub pool: &'a PgPool,
    pub eraser: &'a Eraser,
    pub verifier: &'a Verifier,
    pub residue: &'a Recorder,
}

/// Plants, erases, clears, scans and cleans up; the report says what it found.
pub async fn run(app: &Parts<'_>, options: &Options) -> Result<Report, CanaryError> {
    let pool = app.pool;
    let plan = app.eraser.plan().clone();
    let hex = uuid::Uuid::new_v4().simple().to_string();
    let token = format!("cnry{}", &hex[..12]);
    let mut report = Report {
        token: token.clone(),
        ..Report::default()
    };
    let log = ServerLog::open(pool, options).await;

    // Plant, in one transaction.
    let live = LiveSchema::read(pool).await?;
    let mut planter = Planter {
        plan: &plan,
        pool,
        live,
        token: token.clone(),
        neutral: format!("canary{}", &hex[12..20]),
        counter: 0,
        rows: Rows::new(),
        order: Vec::new(),
        borrowed: Vec::new(),
        report: Vec::new(),
    };
    let mut tx = pool.begin().await?;
    let planted = plant(&mut planter, &mut tx).await;
    let subject_key = match planted {
        Ok(key) => {
            tx.commit().await?;
            key
        }
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    report.planted = planter.report.clone();
    // The views the plan refreshes, so that they hold the canary before its erasure.
    for view in &plan.residue.views {
        if view.treatment == Treatment::Refresh {
            let _ = sqlx::query(&format!("REFRESH MATERIALIZED VIEW {}", view.name.sql()))
                .execute(pool)
                .await;
        }
    }

    // Erase it as a request would: by its first text lookup, or by its key.
    let subject_row = planter
        .rows
        .get(&plan.subject.table)
        .and_then(|rows| rows.first())
        .cloned()
        .unwrap_or_default();
    let identifier = plan
        .subject
        .lookups
        .iter()
        .filter(|l| matches!(l.value_type, LookupType::Text | LookupType::Citext(_)))
        .find_map(|l| subject_row.get(&l.column).map(json_text))
        .unwrap_or_else(|| subject_key.clone());
    let erased = erase(app, &identifier).await;
    let outcome = match erased {
        Ok(id) => {
            report.deletion_id = Some(id.clone());
            // What the service clears after commit: the check, then the residue.
            for _ in 0..50 {
                app.verifier
                    .verify_queued(crate::proof::verification::BATCH)
                    .await?;
                app.residue
                    .record_queued(crate::proof::residue::BATCH)
                    .await?;
                let recorded: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM erasure.residue WHERE deletion_id = $1)",
                )
                .bind(&id)
                .fetch_one(pool)
                .await?;
                if recorded {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            scan(pool, &token, &log, &mut report).await?;
            Ok(())
        }
        Err(e) => Err(e),
    };
    cleanup(pool, &planter, &token).await;
    outcome.map(|()| report)
}

/// Plants the subject's referenced rows, the subject, and a row of each step for each of its
/// paths; returns the subject's key as text.
async fn plant(
    planter: &mut Planter<'_>,
    conn: &mut sqlx::PgConnection,
) -> Result<String, CanaryError> {
    let plan = planter.plan;
    for r in &plan.referenced {
        let fixed = planter.fixed(conn, &r.table).await?;
        let row = planter
            .insert(conn, &r.table, &fixed, Some(&r.action), "referenced")
            .await?;
        planter.rows.entry(r.table.clone()).or_default().push(row);
    }
    let subject = &plan.subject;
    let mut fixed = planter.fixed(conn, &subject.table).await?;
    for r in &plan.referenced {
        let value = planter.rows[&r.table][0]
            .get(&r.key)
            .cloned()
            .unwrap_or(Value::Null);
        fixed.insert(r.from.clone(), value);
    }
    // The key: a value without the token (the service keeps it), unless the column makes one.
    let has_default = columns_of(planter.pool, &subject.table)
        .await?
        .iter()
        .any(|c| c.name == subject.key && (c.has_default || c.generated));
    if !has_default {
        let key = match plan.facts.key_type {
            crate::plan::KeyType::Text => Value::String(format!("{}-customer", planter.neutral)),
            crate::plan::KeyType::Uuid => Value::String(uuid::Uuid::new_v4().to_string()),
            crate::plan::KeyType::Integer | crate::plan::KeyType::Bigint => {
                let next: i64 = sqlx::query_scalar(&format!(
                    "SELECT COALESCE(max({k})::bigint, 0) + 1 FROM {t}",
                    k = ident(&subject.key),
                    t = subject.table.sql()
                ))
                .fetch_one(&mut *conn)
                .await?;
                Value::String(next.to_string())
            }
        };
        fixed.insert(subject.key.clone(), key);
    }
    let row = planter
        .insert(
            conn,
            &subject.table,
            &fixed,
            Some(&subject.action),
            "the customer",
        )
        .await?;
    let key = row.get(&subject.key).map(json_text).unwrap_or_default();
    planter
        .rows
        .entry(subject.table.clone())
        .or_default()
        .push(row);

    let mut steps: Vec<_> = plan.steps.iter().collect();
    steps.sort_by_key(|s| plan.depth(s));
    for step in steps {
        for (i, path) in step.paths.iter().enumerate() {
            let hop = &path[0];
            let Some(target) = planter
                .rows
                .get(&hop.table)
                .and_then(|rows| rows.first())
                .and_then(|row| row.get(&hop.key))
                .cloned()
            else {
                planter.report.push(format!(
                    "{} (path {}: not planted, it goes through {}, where the canary has no row)",
                    step.table,
                    i + 1,
                    hop.table
                ));
                continue;
            };
            let mut fixed = planter.fixed(conn, &step.table).await?;
            // The other paths' first columns: null where they may be, else the canary's too.
            for (j, other) in step.paths.iter().enumerate() {
                if j == i {
                    continue;
                }
                let column = &other[0].column;
                let nullable = planter
                    .live
                    .column(&step.table, column)
                    .is_none_or(|c| c.nullable);
                if nullable {
                    fixed.insert(column.clone(), Value::Null);
                }
            }
            fixed.insert(hop.column.clone(), target);
            let what = match step.paths.len() {
                1 => "step".to_string(),
                _ => format!("step, path {}", i + 1),
            };
            let row = planter
                .insert(conn, &step.table, &fixed, Some(&step.action), &what)
                .await?;
            planter
                .rows
                .entry(step.table.clone())
                .or_default()
                .push(row);
        }
    }
    Ok(key)
}

/// Erases the canary; the deletion's id.
async fn erase(app: &Parts<'_>, identifier: &str) -> Result<String, CanaryError> {
    let eraser = app.eraser;
    let request = ErasureRequest {
        request_id: uuid::Uuid::new_v4(),
        customer_id: identifier.to_owned(),
        requested_by: "erasure-canary".into(),
        reason: Some("canary".into()),
        requested_at: None,
        identifier_type: None,
    };
    let received = eraser
        .receive(request, Channel::Cli, Utc::now())
        .map_err(|e| CanaryError::Erasure(e.message))?;
    match eraser.erase(&received).await {
        Ok(Outcome::Recorded(row)) if row.status == DeletionStatus::Done => Ok(row.id),
        Ok(Outcome::Recorded(row) | Outcome::Stopped(row)) => Err(CanaryError::Erasure(format!(
            "{} {}",
            row.status,
            row.error_message.unwrap_or_default()
        ))),
        Ok(other) => Err(CanaryError::Erasure(format!("{other:?}"))),
        Err(e) => Err(CanaryError::Erasure(e.to_string())),
    }
}

/// The server's log, from where it ended when the canary began.
enum ServerLog {
    File(PathBuf, u64),
    /// The logging collector's file, read through the database.
    Database(String, i64),
    Unreadable(String),
}

impl ServerLog {
    async fn open(pool: &PgPool, options: &Options) -> Self {
        if let Some(path) = &options.server_log {
            return match std::fs::metadata(path) {
                Ok(m) => Self::File(path.clone(), m.len()),
                Err(e) => Self::Unreadable(format!("{}: {e}", path.display())),
            };
        }
        let current: Result<Option<String>, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_current_logfile()")
                .fetch_one(pool)
                .await;
        let Ok(Some(file)) = current else {
            return Self::Unreadable(
                "the server logs to no file it names (no logging collector): give --server-log"
                    .into(),
            );
        };
        let size: Result<i64, sqlx::Error> = sqlx::query_scalar("SELECT (pg_stat_file($1)).size")
            .bind(&file)
            .fetch_one(pool)
            .await;
        match size {
            Ok(size) => Self::Database(file, size),
            Err(e) => Self::Unreadable(format!(
                "{file} cannot be read through the database ({}): give --server-log",
                crate::db::SafeError(&e)
            )),
        }
    }

    async fn since(&self, pool: &PgPool) -> Result<String, String> {
        match self {
            Self::File(path, start) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let start = (*start as usize).min(bytes.len());
                Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
            }
            Self::Database(file, start) => {
                sqlx::query_scalar("SELECT pg_read_file($1, $2, (pg_stat_file($1)).size - $2)")
                    .bind(file)
                    .bind(start)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| format!("{file}: {}", crate::db::SafeError(&e)))
            }
            Self::Unreadable(why) => Err(why.clone()),
        }
    }
}

/// Looks for the token everywhere the canary can.
async fn scan(
    pool: &PgPool,
    token: &str,
    log: &ServerLog,
    report: &mut Report,
) -> Result<(), CanaryError> {
    // Every table (partitioned ones with their partitions) and populated materialized view.
    let relations: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition \
           AND (c.relkind <> 'm' OR c.relispopulated) \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (schema, name, kind) in relations {
        let table = TableName::new(&schema, &name);
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} t WHERE strpos(t::text, $1) > 0",
            table.sql()
        ))
        .bind(token)
        .fetch_one(pool)
        .await?;
        if n == 0 {
            continue;
        }
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = $1::regclass \
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(table.sql())
        .fetch_all(pool)
        .await?;
        let mut holding = Vec::new();
        for column in columns {
            let found: bool = sqlx::query_scalar(&format!(
                "SELECT EXISTS (SELECT 1 FROM {} t WHERE strpos(t.{}::text, $1) > 0)",
                table.sql(),
                ident(&column)
            ))
            .bind(token)
            .fetch_one(pool)
            .await?;
            if found {
                holding.push(column);
            }
        }
        let what = if kind == "m" {
            "materialized view"
        } else {
            "table"
        };
        report.found.push(format!(
            "{what} {table}: {n} rows, in {}",
            holding.join(", ")
        ));
    }

    let large: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT count(DISTINCT loid) FROM pg_largeobject WHERE position(convert_to($1, 'UTF8') IN data) > 0",
    )
    .bind(token)
    .fetch_one(pool)
    .await;
    match large {
        Ok(0) => {}
        Ok(n) => report
            .found
            .push(format!("pg_largeobject: {n} large objects")),
        Err(e) => report.not_scanned.push(format!(
            "pg_largeobject ({}; it takes a superuser)",
            crate::db::SafeError(&e)
        )),
    }

    let stats: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text, attname::text FROM pg_stats \
         WHERE strpos(most_common_vals::text, $1) > 0 OR strpos(histogram_bounds::text, $1) > 0",
    )
    .bind(token)
    .fetch_all(pool)
    .await?;
    for (s, t, c) in stats {
        report.remains.push(format!(
            "the planner's statistics of {s}.{t}.{c}, until the table's next ANALYZE"
        ));
    }

    let installed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
    )
    .fetch_one(pool)
    .await?;
    if installed {
        let n: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_statements WHERE strpos(query, $1) > 0",
        )
        .bind(token)
        .fetch_one(pool)
        .await;
        match n {
            Ok(0) => {}
            Ok(n) => report
                .found
                .push(format!("pg_stat_statements: {n} statements")),
            Err(e) => report
                .not_scanned
                .push(format!("pg_stat_statements ({})", crate::db::SafeError(&e))),
        }
    } else {
        report
            .not_scanned
            .push("pg_stat_statements (not installed in this database)".into());
    }

    // The server writes its log as it goes; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    match log.since(pool).await {
        Ok(text) => {
            let lines = text.lines().filter(|l| l.contains(token)).count();
            if lines > 0 {
                report
                    .found
                    .push(format!("the server's log: {lines} lines"));
            }
        }
        Err(why) => report.not_scanned.push(format!("the server's log ({why})")),
    }
    Ok(())
}

/// Removes what is left of the canary: rows still holding its token (the plan's tables that
/// kept them), the large objects it made, and the rows it planted outside the plan.
async fn cleanup(pool: &PgPool, planter: &Planter<'_>, token: &str) {
    // Children first; twice, for rows a later table's still pointed at.
    for _ in 0..2 {
        for table in planter.order.iter().rev() {
            let _ = sqlx::query(&format!(
                "DELETE FROM {} t WHERE strpos(t::text, $1) > 0",
                table.sql()
            ))
            .bind(token)
            .execute(pool)
            .await;
        }
    }
    for (table, key, value) in planter.borrowed.iter().rev() {
        let _ = sqlx::query(&format!(
            "DELETE FROM {} WHERE {}::text = $1",
            table.sql(),
            ident(key)
        ))
        .bind(value)
        .execute(pool)
        .await;
    }
    let _ = sqlx::query(
        "SELECT lo_unlink(m.oid) FROM pg_largeobject_metadata m \
         WHERE EXISTS (SELECT 1 FROM pg_largeobject l WHERE l.loid = m.oid \
           AND position(convert_to($1, 'UTF8') IN l.data) > 0)",
    )
    .bind(token)
    .execute(pool)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_hold_the_value_where_remove_keys_takes_it() {
        let keys = vec!["email".to_string(), "contact.phone".to_string()];
        assert_eq!(
            nested(&keys, "v"),
            json!({"email": "v", "contact": {"phone": "v"}})
        );
    }
}
