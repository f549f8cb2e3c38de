//! A test application: its own database (a fresh UUID name) and its own exchanges and queues
//! (names prefixed with the same UUID) on the machine's real PostgreSQL and RabbitMQ, so tests
//! run in parallel and never touch a running service's data. They are removed when the test
//! ends, also when it fails: a test that panics before `cleanup` removes them as it unwinds.

use std::time::Duration;

use erasure::broker;
use erasure::config::{AmqpSettings, Secret, Settings};
use erasure::deletion::{self, DeletionRow};
use erasure::erase::Outcome;
use erasure::request::{Channel as RequestChannel, ErasureRequest};
use erasure::startup::{Application, Mode};
use lapin::options::QueueDeleteOptions;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn database_server() -> String {
    std::env::var("ERASURE_TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("ERASURE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub struct TestApp {
    pub id: String,
    pub database: String,
    pub settings: Settings,
    pub pool: PgPool,
    pub app: Option<Application>,
    connection: Connection,
    pub channel: Channel,
    workers: Vec<(CancellationToken, JoinHandle<bool>)>,
    /// Set once the database and the broker names are gone.
    removed: bool,
}

impl TestApp {
    /// A fresh database, migrated, and fresh broker names, declared. No worker runs yet.
    pub async fn new() -> Self {
        Self::with_settings(|_| {}).await
    }

    pub async fn with_settings(adjust: impl FnOnce(&mut Settings)) -> Self {
        let (id, database, mut settings) = Self::fresh_settings();
        adjust(&mut settings);
        Self::build(id, database, settings).await
    }

    /// A fresh database holding the business schema `schema_sql` (and no reference schema),
    /// erased by the plan `plan`.
    pub async fn with_schema(schema_sql: &str, plan: &str) -> Self {
        let (id, database, mut settings) = Self::fresh_settings();
        erasure::db::ensure_database(settings.database.url.expose())
            .await
            .expect("the test database is created");
        let pool = PgPool::connect(settings.database.url.expose())
            .await
            .unwrap();
        sqlx::raw_sql(schema_sql)
            .execute(&pool)
            .await
            .expect("the business schema applies");
        pool.close().await;
        let dir = std::env::temp_dir().join(format!("erasure-test-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.toml");
        std::fs::write(&path, plan).unwrap();
        settings.erasure.plan = Some(path);
        settings.database.reference_schema = false;
        Self::build(id, database, settings).await
    }

    fn fresh_settings() -> (String, String, Settings) {
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("erasure_test_{id}");
        let mut settings = Settings::built_in();
        settings.database.url = Secret::new(format!("{}/{database}", database_server()));
        settings.database.max_connections = 8;
        settings.amqp.url = Secret::new(amqp_url());
        let prefix = format!("test.{id}");
        settings.amqp.exchange = format!("{prefix}.erasure");
        settings.amqp.queue = format!("{prefix}.erasure.requests");
        settings.amqp.dead_letter_exchange = format!("{prefix}.erasure.dlx");
        settings.amqp.dead_letter_queue = format!("{prefix}.erasure.requests.dead");
        settings.amqp.events_exchange = format!("{prefix}.erasure.events");
        settings.worker.concurrency = 4;
        settings.worker.prefetch = 32;
        (id, database, settings)
    }

    async fn build(id: String, database: String, settings: Settings) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("the test application builds");
        let pool = app.pool.clone();
        let connection = broker::connect(&settings.amqp)
            .await
            .expect("RabbitMQ answers");
        let channel = broker::confirm_channel(&connection).await.unwrap();
        broker::declare_topology(&channel, &settings.amqp)
            .await
            .unwrap();
        Self {
            id,
            database,
            settings,
            pool,
            app: Some(app),
            connection,
            channel,
            workers: Vec::new(),
            removed: false,
        }
    }

    /// Starts one more worker (consumer and event publisher) in this process.
    pub async fn start_worker(&mut self) {
        self.start(Mode::Worker).await;
    }

    /// Starts one more service process in `mode`, in this process; returns its base URL.
    pub async fn start(&mut self, mode: Mode) -> String {
        let app = Application::build(self.settings.clone())
            .await
            .expect("the service builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(mode, Some(listener), shutdown.clone()));
        self.workers.push((shutdown, handle));
        base
    }

    /// Stops every worker, letting in-flight deliveries finish.
    pub async fn stop_workers(&mut self) {
        for (shutdown, handle) in self.workers.drain(..) {
            shutdown.cancel();
            let clean = tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("the worker stops within 30 s")
                .unwrap();
            assert!(
                clean,
                "the worker finished its deliveries in the grace period"
            );
        }
    }

    /// The `erasure` binary, with this application's configuration in the environment.
    pub fn command(&self) -> tokio::process::Command {
        self.command_for(env!("CARGO_BIN_EXE_erasure"))
    }

    /// `program` (the binary, or a shell that starts it) with this application's configuration
    /// in the environment.
    pub fn command_for(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .envs(self.settings.connection_environment())
            .env("ERASURE_HTTP_ADDR", "127.0.0.1:0")
            .env_remove("ERASURE_ENV")
            .kill_on_drop(true);
        command
    }

    pub fn eraser(&self) -> &erasure::erase::Eraser {
        &self.app.as_ref().unwrap().eraser
    }

    /// Carries out `request` through the engine alone (no queue, no worker) and returns the
    /// deletion it recorded, DONE or FAILED; any other outcome fails the test.
    pub async fn erase_by_engine(&self, request: ErasureRequest) -> DeletionRow {
        let eraser = self.eraser();
        let received = eraser
            .receive(request, RequestChannel::Cli, chrono::Utc::now())
            .unwrap();
        match eraser.erase(&received).await.unwrap() {
            Outcome::Recorded(row) | Outcome::Stopped(row) => row,
            other => panic!("expected a recorded outcome, got {other:?}"),
        }
    }

    /// Waits until the deletion for `request_id` is final.
    pub async fn wait_for_final(&self, request_id: Uuid) -> DeletionRow {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Errors pass: a test may have just killed this pool's connections.
            if let Ok(Some(row)) = deletion::find(&self.pool, &request_id.to_string()).await
                && row.is_final()
            {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request {request_id} did not reach a final status in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A count without parameters.
    pub async fn count_of(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    pub async fn count(&self, sql: &str, bind: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn audit_actions(&self, request_id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT action FROM erasure.audit_log WHERE request_id = $1 ORDER BY id")
            .bind(request_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Stops the workers (each must finish in its grace period) and removes the test's
    /// queues, exchanges and database.
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        if let Some(app) = self.app.take() {
            // Closing waits for every connection to come back; one a test still holds (a worker
            // slot keeps its connection between requests) is not waited for: dropping the
            // database below closes it. Without the bound such a test hangs only sometimes: the
            // pool's close counts each idle connection it closes as one come back, so it ends
            // when the pool had at least as many idle connections as held ones.
            let _ = tokio::time::timeout(Duration::from_secs(5), app.pool.close()).await;
        }
        // Neither may hold a test past its end: the drop below closes what is left. (`pool` is
        // a clone of the service's pool: this closes it a second time, and would wait as above.)
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.connection.close(200, "test done".into()),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
        remove(&self.database, &self.settings.amqp).await;
        remove_plan_dir(&self.id);
        self.removed = true;
    }
}

impl Drop for TestApp {
    /// A test that failed before `cleanup`: remove what it made all the same, from a thread of
    /// its own (the test's runtime may be unwinding).
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        remove_plan_dir(&self.id);
        let database = self.database.clone();
        let amqp = self.settings.amqp.clone();
        let removed = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup")
                .block_on(remove(&database, &amqp));
        })
        .join();
        if removed.is_err() {
            eprintln!("could not remove {}", self.database);
        }
    }
}

/// Removes the directory of the test's plan files ([`TestApp::with_schema`] writes one, and so
/// do tests of plans of their own), if there is one.
fn remove_plan_dir(id: &str) {
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("erasure-test-{id}")));
}

/// Drops `database` (closing its connections) and deletes the queues and exchanges `amqp`
/// names.
async fn remove(database: &str, amqp: &AmqpSettings) {
    if let Ok(connection) = broker::connect(amqp).await {
        if let Ok(channel) = connection.create_channel().await {
            // The events subscriber's queue is only read with basic.get, so it never has a
            // consumer whose leaving would auto-delete it.
            let prefix = amqp.exchange.trim_end_matches(".erasure");
            for queue in [
                &amqp.queue,
                &amqp.dead_letter_queue,
                &erasure::broker::hold_queue(amqp),
                &format!("{prefix}.events.subscriber"),
            ] {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in [
                &amqp.exchange,
                &amqp.dead_letter_exchange,
                &amqp.events_exchange,
            ] {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await;
            }
        }
        let _ = connection.close(200, "test done".into()).await;
    }
    let admin = PgPool::connect(&format!("{}/postgres", database_server()))
        .await
        .expect("PostgreSQL answers");
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    ))
    .execute(&admin)
    .await
    .expect("the test database is dropped");
    admin.close().await;
}

/// A database a test makes beside its own (a restored backup, say), dropped when the value
/// goes, also when the test fails.
pub struct ScratchDatabase {
    pub name: String,
    pub url: String,
}

impl ScratchDatabase {
    /// An empty database named `name`.
    pub async fn create(name: &str) -> Self {
        let admin = PgPool::connect(&format!("{}/postgres", database_server()))
            .await
            .expect("PostgreSQL answers");
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        Self {
            name: name.to_owned(),
            url: format!("{}/{name}", database_server()),
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup")
                .block_on(async move {
                    if let Ok(admin) =
                        PgPool::connect(&format!("{}/postgres", database_server())).await
                    {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&admin)
                        .await;
                        admin.close().await;
                    }
                });
        })
        .join();
    }
}
