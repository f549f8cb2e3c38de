//! A database holding a business schema alone, as an operator's is before `erasure migrate`:
//! nothing of the worker's in it, and the `erasure` binary pointed at it with a plan of the
//! test's. The database and the plan's directory are removed when the value goes, also when
//! the test fails.

use std::path::PathBuf;
use std::process::Output;

use sqlx::PgPool;
use uuid::Uuid;

use super::ScratchDatabase;
use super::app::database_server;

pub struct FreshDatabase {
    pub pool: PgPool,
    pub url: String,
    dir: PathBuf,
    plan: PathBuf,
    // Dropped last: its drop removes the database.
    _database: ScratchDatabase,
}

impl FreshDatabase {
    /// A new database with `schema_sql` applied, and `plan` as the configured plan.
    pub async fn new(schema_sql: &str, plan: &str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let database = ScratchDatabase::create(&format!("erasure_test_{id}")).await;
        let pool = PgPool::connect(&database.url).await.unwrap();
        sqlx::raw_sql(schema_sql)
            .execute(&pool)
            .await
            .expect("the business schema applies");
        let dir = std::env::temp_dir().join(format!("erasure-test-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let fresh = Self {
            pool,
            url: database.url.clone(),
            plan: dir.join("plan.toml"),
            dir,
            _database: database,
        };
        fresh.write_plan(plan);
        fresh
    }

    pub fn write_plan(&self, plan: &str) {
        std::fs::write(&self.plan, plan).unwrap();
    }

    /// The `erasure` binary on this database and plan, with the configuration's defaults
    /// otherwise (`database.reference_schema` on among them) and a broker that cannot be
    /// reached: a command that needs none must not try one.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_erasure"));
        command
            .env("ERASURE_DATABASE_URL", &self.url)
            .env("ERASURE_ERASURE__PLAN", &self.plan)
            .env("ERASURE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .env_remove("ERASURE_ENV")
            .env_remove("ERASURE_DATABASE__REFERENCE_SCHEMA")
            .kill_on_drop(true);
        command
    }

    /// Runs the binary to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .await
            .expect("the binary runs")
    }

    /// The names (with their schemas) of the database's schemas, relations, functions, types
    /// and triggers: what creating or migrating anything would change.
    pub async fn catalog(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT 'schema ' || nspname FROM pg_namespace \
             UNION ALL SELECT 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             UNION ALL SELECT 'function ' || n.nspname || '.' || p.proname \
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             UNION ALL SELECT 'type ' || n.nspname || '.' || t.typname \
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             UNION ALL SELECT 'trigger ' || n.nspname || '.' || c.relname || ' ' || t.tgname \
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a database named `name` exists on the test server.
pub async fn database_exists(name: &str) -> bool {
    let admin = PgPool::connect(&format!("{}/postgres", database_server()))
        .await
        .expect("PostgreSQL answers");
    let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&admin)
        .await
        .unwrap();
    admin.close().await;
    exists
}
