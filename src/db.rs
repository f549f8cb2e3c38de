//! PostgreSQL: creating the database when missing, the pool, and migrations; and, for the
//! commands that only read (`erasure plan`, `plan --draft`, `preview`), a pool that creates
//! and migrates nothing, with what they need of `erasure migrate` checked first.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseSettings;
use crate::plan::ident;

/// The worker's own tables (schema `erasure`).
static ERASURE: Migrator = sqlx::migrate!("./migrations/erasure");
/// The reference business schema (schema `public`), when `database.reference_schema` is on.
static REFERENCE: Migrator = sqlx::migrate!("./migrations/reference");

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .unwrap_or_else(|| options.get_username())
        .to_string();
    // Try the database itself first: it usually exists, and the maintenance database may be
    // closed to this role.
    if options.connect().await.is_ok() {
        return Ok(());
    }
    let mut maintenance = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut maintenance)
            .await?;
    if !exists {
        match sqlx::query(&format!("CREATE DATABASE {}", ident(&name)))
            .execute(&mut maintenance)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e),
        }
    }
    maintenance.close().await
}

/// The pool every query goes through. Server-side settings travel in the start-up packet, so
/// they cost no round trip and hold on every connection.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    Ok(connect_quietly(settings).await?.0)
}

/// [`connect`], and what the server's logging makes of the pool's sessions: each silences
/// the server's logging of what it sends where its role may ([`crate::exhaust`]), which one
/// connection made first asks.
pub async fn connect_quietly(
    settings: &DatabaseSettings,
) -> Result<(PgPool, crate::exhaust::Logging), sqlx::Error> {
    quiet_pool(settings, false).await
}

/// How each connection is made, but for the logging settings ([`quiet_pool`] adds those).
/// `read_only`: every transaction is READ ONLY, so that nothing run through the connection
/// can write.
fn connect_options(
    settings: &DatabaseSettings,
    read_only: bool,
) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(settings.url.expose())?
        .application_name("erasure")
        .options(server_settings(settings, read_only)))
}

fn server_settings(settings: &DatabaseSettings, read_only: bool) -> Vec<(&'static str, String)> {
    let mut server_settings = vec![
        (
            "statement_timeout",
            format!("{}ms", settings.statement_timeout_ms),
        ),
        ("lock_timeout", format!("{}ms", settings.lock_timeout_ms)),
        (
            "idle_in_transaction_session_timeout",
            format!("{}ms", settings.idle_in_transaction_timeout_ms),
        ),
        // JIT compiles a statement the planner costs high (a large customer's, or the one
        // after a chunked erasure, planned with scans turned off) for 100 ms and more; the
        // worker's statements touch one customer's rows and never win that time back.
        ("jit", "off".to_string()),
    ];
    // Without it, a statement whose worker died keeps running, and commits, on its own.
    if settings.client_connection_check_interval_ms > 0 {
        server_settings.push((
            "client_connection_check_interval",
            format!("{}ms", settings.client_connection_check_interval_ms),
        ));
    }
    if read_only {
        server_settings.push(("default_transaction_read_only", "on".to_string()));
    }
    server_settings
}

/// The pool, its sessions silencing the server's logging where the role may.
async fn quiet_pool(
    settings: &DatabaseSettings,
    read_only: bool,
) -> Result<(PgPool, crate::exhaust::Logging), sqlx::Error> {
    let mut server_settings = server_settings(settings, read_only);
    let options = PgConnectOptions::from_str(settings.url.expose())?.application_name("erasure");
    // A setting the role may not set would refuse every connection: ask first.
    let mut probe = options
        .clone()
        .options(server_settings.clone())
        .connect()
        .await?;
    let logging = crate::exhaust::Logging::read(&mut probe).await;
    let _ = probe.close().await;
    let logging = logging?;
    server_settings.extend(logging.startup_options());
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        // A ping before every acquire is a round trip per erasure; broken connections surface
        // as errors on use instead, and those are retried.
        .test_before_acquire(false)
        .connect_with(options.options(server_settings))
        .await?;
    Ok((pool, logging))
}

/// Creates the database if needed, connects, and applies migrations.
pub async fn prepare(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(prepare_quietly(settings).await?.0)
}

/// [`prepare`], and what the server's logging makes of the pool's sessions.
pub async fn prepare_quietly(
    settings: &DatabaseSettings,
) -> anyhow::Result<(PgPool, crate::exhaust::Logging)> {
    ensure_database(settings.url.expose()).await?;
    let (pool, logging) = connect_quietly(settings).await?;
    migrate(&pool, settings.reference_schema).await?;
    Ok((pool, logging))
}

/// What a command that creates nothing found missing: what `erasure migrate` makes.
#[derive(Debug, thiserror::Error)]
pub enum NotPrepared {
    #[error(
        "the database {0:?} does not exist, and this command creates nothing: run `erasure migrate` first (it creates the database and the erasure schema)"
    )]
    NoDatabase(String),
    #[error(
        "the database has no erasure schema (the worker's tables, which the erasure statement writes to), and this command creates nothing: run `erasure migrate` first"
    )]
    NoSchema,
    #[error(
        "the erasure schema lacks migration {version} ({description}) of this version, and this command changes nothing: run `erasure migrate` first"
    )]
    Behind { version: i64, description: String },
}

/// The pool of a command that must leave the database as it found it: the database must exist
/// (it is not created) and nothing is migrated. `read_only`: every transaction is READ ONLY
/// (`erasure plan` and `plan --draft`, which only read the catalog); a preview runs the
/// erasure statement, which writes, and rolls it back.
pub async fn connect_existing(
    settings: &DatabaseSettings,
    read_only: bool,
) -> anyhow::Result<PgPool> {
    let options = connect_options(settings, read_only)?;
    // One connection first, for its error as it is (a pool out of reach only times out).
    match options.connect().await {
        Ok(connection) => connection.close().await?,
        // invalid_catalog_name: the database named in the URL does not exist.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let name = options
                .get_database()
                .unwrap_or_else(|| options.get_username())
                .to_string();
            return Err(NotPrepared::NoDatabase(name).into());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(quiet_pool(settings, read_only).await?.0)
}

/// Whether every migration of the worker's schema this version has is applied, for a command
/// that uses the schema without migrating it (the erasure statement a preview runs writes
/// to `erasure.deletions`, `erasure.audit_log` and others, and reads `erasure.instance`).
pub async fn require_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let recorded: bool =
        sqlx::query_scalar("SELECT to_regclass('erasure._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !recorded {
        return Err(NotPrepared::NoSchema.into());
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM erasure._sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    let missing = ERASURE
        .migrations
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .find(|m| !applied.contains(&m.version));
    match missing {
        Some(m) => Err(NotPrepared::Behind {
            version: m.version,
            description: m.description.to_string(),
        }
        .into()),
        None => Ok(()),
    }
}

/// Applies the worker's migrations, and the reference schema's when asked. Both sets are
/// recorded in `erasure._sqlx_migrations` (disjoint version numbers), so nothing of the
/// worker's lands in `public`.
pub async fn migrate(pool: &PgPool, reference_schema: bool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS erasure")
        .execute(&mut *conn)
        .await
        .or_else(ignore_concurrent_create)?;
    sqlx::query("SET search_path TO erasure")
        .execute(&mut *conn)
        .await?;
    let result = run_migrations(&mut conn, reference_schema).await;
    // The connection goes back to the pool: restore what every other query expects.
    sqlx::query("RESET search_path").execute(&mut *conn).await?;
    result
}

async fn run_migrations(conn: &mut PgConnection, reference_schema: bool) -> anyhow::Result<()> {
    let sets: &[&Migrator] = if reference_schema {
        &[&ERASURE, &REFERENCE]
    } else {
        &[&ERASURE]
    };
    for set in sets {
        // Each set tolerates the other's rows in the shared history table.
        let migrator = Migrator {
            migrations: set.migrations.clone(),
            ignore_missing: true,
            ..Migrator::DEFAULT
        };
        migrator.run(&mut *conn).await?;
    }
    Ok(())
}

fn ignore_concurrent_create(e: sqlx::Error) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    match &e {
        // Two processes starting at once both try to create the schema.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Ok(Default::default())
        }
        _ => Err(e),
    }
}

/// The key of the keyed hash generated by the first migration.
pub async fn instance_source_id_key(pool: &PgPool) -> Result<Vec<u8>, sqlx::Error> {
    sqlx::query_scalar("SELECT source_id_key FROM erasure.instance")
        .fetch_one(pool)
        .await
}

/// What an error means for the request that met it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Caused by this request meeting others (serialization failure, deadlock, lock or
    /// statement timeout, a child row inserted concurrently): retried a bounded number of
    /// times, each counted; when they run out, the request is FAILED `internal`.
    Retry,
    /// The request cannot go on for now, through no fault of its own: the database is out of
    /// reach (connection lost or refused, backend terminated, server shutting down, pool
    /// exhausted or closed), or another request holds the customer. Never counted against it,
    /// never a FAILED outcome: the delivery is held and tried again later.
    Hold,
    /// A constraint of the schema refused the erasure (a foreign key still referencing a row it
    /// deletes, a unique key refusing an anonymized value). A row another transaction committed
    /// meanwhile can do that (a new event of the customer's, inserted between the snapshot and
    /// the delete), so it is tried once more with a fresh snapshot; the same constraint again
    /// means the plan does not cover it, and the request ends FAILED `plan_gap` naming it.
    Constraint,
    /// Will fail the same way every time (a NOT NULL column the plan sets to null, a statement
    /// that does not parse): FAILED at once, `plan_gap` when the schema refused what the plan
    /// asked ([`plan_gap`]), `internal` otherwise.
    Permanent,
}

pub fn classify(e: &sqlx::Error) -> ErrorClass {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match code {
                "40001" | "40P01" | "55P03" | "57014" => ErrorClass::Retry,
                "23503" | "23505" => ErrorClass::Constraint,
                "57P01" | "57P02" | "57P03" | "53300" | "53100" | "53200" => ErrorClass::Hold,
                _ if code.starts_with("08") => ErrorClass::Hold,
                _ => ErrorClass::Permanent,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Hold,
        _ => ErrorClass::Permanent,
    }
}

/// What the plan lacks, when the schema refused what it asked: the constraint (and table or
/// column) that refused, and the change to the plan that would cover it. `None` for any other
/// error. Names only, never a value.
pub fn plan_gap(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let code = db.code();
    let table = db.table().unwrap_or("a table");
    let constraint = db.constraint().unwrap_or("without a name");
    let column = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.column())
        .map(str::to_owned);
    match code.as_deref()? {
        "23503" => Some(format!(
            "foreign key {constraint} of table {table} still references rows the erasure deletes (also with a fresh snapshot): \
             the plan does not cover that table; add a [[step]] for {table} whose path starts with the key's column \
             (or a [[keep]], if the database nulls or deletes its rows itself); `erasure plan` names the gap"
        )),
        "23505" => Some(format!(
            "unique constraint {constraint} on table {table} refused the value the plan writes (also with a fresh snapshot): \
             a fixed set_value on a unique column gives every erased row the same value; put {{key}} in it, or set it to null"
        )),
        "23502" => Some(format!(
            "column {} of table {table} cannot be null, and the plan sets it to null: give it a fixed value with set_value instead",
            column.as_deref().unwrap_or("(unnamed)")
        )),
        _ => None,
    }
}

/// The constraint an error names, when it does.
pub fn constraint_of(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
        _ => None,
    }
}

/// True for errors that may pass by trying again (retried or held).
pub fn may_pass(e: &sqlx::Error) -> bool {
    classify(e) != ErrorClass::Permanent
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
