//! A test application: its own database (a fresh UUID name) and its own exchanges and queues
//! (names prefixed with the same UUID) on the machine's real PostgreSQL and RabbitMQ, so tests
//! run in parallel and never touch a running service's data.

use std::time::Duration;

use erasure::broker;
use erasure::config::{Secret, Settings};
use erasure::deletion::{self, DeletionRow};
use erasure::startup::{Application, Mode};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
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
}

/// What a seeded customer owns, as the erasure should count it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    pub events: i64,
    pub customer_events: i64,
    pub daily_events: i64,
    pub segments: i64,
    pub orders: i64,
    pub order_events_per_order: i64,
}

impl Shape {
    pub fn typical() -> Self {
        Self {
            events: 16,
            customer_events: 28,
            daily_events: 5,
            segments: 2,
            orders: 3,
            order_events_per_order: 2,
        }
    }

    pub fn expected_counts(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "customer_events": self.customer_events,
            "daily_events": self.daily_events,
            "segments": self.segments,
            "orders": self.orders,
            "order_events": self.orders * self.order_events_per_order,
            "customer": 1,
        })
    }
}

impl TestApp {
    /// A fresh database, migrated, and fresh broker names, declared. No worker runs yet.
    pub async fn new() -> Self {
        Self::with_settings(|_| {}).await
    }

    pub async fn with_settings(adjust: impl FnOnce(&mut Settings)) -> Self {
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
        settings.worker.prefetch = 8;
        adjust(&mut settings);

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

    /// Publishes raw bytes to the request exchange, confirmed.
    pub async fn publish(&self, body: &[u8]) {
        broker::publish_json(
            &self.channel,
            &self.settings.amqp.exchange,
            &self.settings.amqp.routing_key,
            "test",
            body,
            true,
        )
        .await
        .expect("the broker confirms the request");
    }

    pub fn request(request_id: Uuid, customer: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "request_id": request_id,
            "customer_id": customer,
            "requested_by": "support-portal",
            "reason": "GDPR Art. 17 request #4411",
            "requested_at": "2026-11-23T09:30:00Z",
        }))
        .unwrap()
    }

    /// Publishes a valid request for `customer` and returns its request id.
    pub async fn request_erasure(&self, customer: &str) -> Uuid {
        let request_id = Uuid::new_v4();
        self.publish(&Self::request(request_id, customer)).await;
        request_id
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

    /// Takes every message from the dead-letter queue.
    pub async fn dead_letters(&self) -> Vec<Vec<u8>> {
        self.take_all(&self.settings.amqp.dead_letter_queue).await
    }

    pub async fn take_all(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            bodies.push(message.delivery.data.clone());
        }
        bodies
    }

    /// Waits for `n` messages in the dead-letter queue and takes them.
    pub async fn wait_for_dead_letters(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut bodies = Vec::new();
        while bodies.len() < n {
            bodies.extend(self.dead_letters().await);
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} dead letters arrived",
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bodies
    }

    /// A queue of the test's own bound to the events exchange, to see outcome events.
    pub async fn subscribe_to_events(&self) -> String {
        let name = format!("test.{}.events.subscriber", self.id);
        self.channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.channel
            .queue_bind(
                name.as_str().into(),
                self.settings.amqp.events_exchange.as_str().into(),
                "deletion.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        name
    }

    /// Seeds a customer with `shape`, plus unrelated rows of other customers interleaved.
    pub async fn seed_customer(&self, id: &str, source_id: &str, shape: Shape) {
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO customers (id, source_id, name, email, phone, address, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(source_id)
        .bind(format!("Name of {id}"))
        .bind(format!("{id}@mail.example"))
        .bind(format!("+1-555-{id}"))
        .bind(serde_json::json!({ "street": format!("{id} Street 1"), "city": "Lyon" }))
        .bind(serde_json::json!({ "email_copy": format!("{id}@mail.example") }))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO events (customer_id, type, metadata) \
             SELECT $1, 'viewed', jsonb_build_object('n', n, 'email', $1 || '@mail.example') \
             FROM generate_series(1, $2) n",
        )
        .bind(id)
        .bind(shape.events)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO customer_events (customer_id, type, data) \
             SELECT $1, 'updated', jsonb_build_object('name', 'Name of ' || $1) \
             FROM generate_series(1, $2) n",
        )
        .bind(id)
        .bind(shape.customer_events)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO daily_events (customer_id, day, type, count) \
             SELECT $1, date '2026-01-01' + n::int, 'viewed', n::int FROM generate_series(1, $2) n",
        )
        .bind(id)
        .bind(shape.daily_events)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO segments (id, name) SELECT 'seg_' || n, 'segment ' || n \
             FROM generate_series(1, 10) n ON CONFLICT DO NOTHING",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO segment_members (segment_id, customer_id) \
             SELECT 'seg_' || n, $1 FROM generate_series(1, $2) n",
        )
        .bind(id)
        .bind(shape.segments)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO orders (id, customer_id, status, amount, currency, billing_name, \
               billing_email, shipping_address, metadata) \
             SELECT $1 || '_order_' || n, $1, 'COMPLETED', 1000 * n, 'EUR', 'Name of ' || $1, \
               $1 || '@mail.example', jsonb_build_object('street', $1 || ' Street 1'), \
               jsonb_build_object('phone', '+1-555-' || $1) \
             FROM generate_series(1, $2) n",
        )
        .bind(id)
        .bind(shape.orders)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO order_events (order_id, type, data) \
             SELECT o.id, 'paid', jsonb_build_object('by', 'Name of ' || $1) \
             FROM orders o, generate_series(1, $2) n WHERE o.customer_id = $1",
        )
        .bind(id)
        .bind(shape.order_events_per_order)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// Adds an order in status OPEN for `customer`.
    pub async fn add_open_order(&self, customer: &str) {
        sqlx::query(
            "INSERT INTO orders (id, customer_id, status, amount, currency) \
             VALUES ($1 || '_open', $1, 'OPEN', 500, 'EUR')",
        )
        .bind(customer)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// A checksum of every business row that does not belong to `customer` (its orders are
    /// left out by id, since erasure anonymizes them).
    pub async fn checksum_of_others(&self, customer: &str) -> String {
        sqlx::query_scalar(
            "WITH own_orders AS (SELECT id FROM orders WHERE id LIKE $1 || '\\_%') \
             SELECT concat_ws('/', \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customers t WHERE id <> $1), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM events t WHERE customer_id <> $1), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customer_events t WHERE customer_id <> $1), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM daily_events t WHERE customer_id <> $1), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM segments t), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM segment_members t WHERE customer_id <> $1), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM orders t WHERE id NOT IN (SELECT id FROM own_orders)), \
               (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM order_events t WHERE order_id NOT IN (SELECT id FROM own_orders)))",
        )
        .bind(customer)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// A checksum of every business row.
    pub async fn checksum_of_everything(&self) -> String {
        self.checksum_of_others("\u{1}nobody").await
    }

    /// Rows of any table in `public` or `erasure` whose text form contains `needle`, as
    /// "schema.table: n".
    pub async fn rows_containing(&self, needle: &str) -> Vec<String> {
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables \
             WHERE table_schema IN ('public', 'erasure') AND table_type = 'BASE TABLE'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut found = Vec::new();
        for (schema, table) in tables {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE strpos(t::text, $1) > 0"
            ))
            .bind(needle)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if n > 0 {
                found.push(format!("{schema}.{table}: {n}"));
            }
        }
        found
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

    /// Stops the workers and removes the test's queues, exchanges and database.
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        if let Some(app) = self.app.take() {
            app.pool.close().await;
        }
        let amqp = &self.settings.amqp;
        for queue in [&amqp.queue, &amqp.dead_letter_queue] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            &amqp.exchange,
            &amqp.dead_letter_exchange,
            &amqp.events_exchange,
        ] {
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
        self.pool.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", database_server()))
            .await
            .unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database
        ))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
}
