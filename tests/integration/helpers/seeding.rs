//! The reference schema's data for tests: seeded customers of a known shape, and the scans
//! that show what an erasure changed (checksums of everyone else, personal values left).

use super::TestApp;

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

    /// Rows of any table of any schema (the business's and the worker's) whose text form
    /// contains `needle`, as "schema.table: n". Partitions are scanned as tables of their own.
    pub async fn rows_containing(&self, needle: &str) -> Vec<String> {
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
               AND table_schema NOT LIKE 'pg\\_%' AND table_type = 'BASE TABLE'",
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
}
