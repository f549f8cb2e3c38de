//! The benchmark's data: typical customers, one in 29 heavy, four whales, and the truth table
//! of what each owns.
use serde_json::{Value, json};
use sqlx::PgPool;

/// One in this many customers is heavy (ten times the rows).
pub const HEAVY_EVERY: i64 = 29;

/// Rows one customer owns, by count key.
pub fn truth(i: i64) -> Value {
    let f = if i % HEAVY_EVERY == 0 { 10 } else { 1 };
    json!({
        "events": 40 * f, "customer_events": 20 * f, "daily_events": 30 * f,
        "segments": 3 * f, "orders": 5 * f, "order_events": 20 * f, "customer": 1,
    })
}

/// Seeds `customers` customers (`c1`, `c2`, ...) and four whales of `whale_rows` events, and
/// the sequences pgbench takes its customers from.
pub async fn seed(pool: &PgPool, customers: i64, whale_rows: i64) -> anyhow::Result<()> {
    let statements = [
        "INSERT INTO segments (id, name) SELECT 's' || n, 'segment ' || n FROM generate_series(1, 50) n",
        "INSERT INTO customers (id, source_id, name, email, phone, address) \
         SELECT 'c' || c, 'src' || c, 'Name ' || c, 'c' || c || '@mail.example', '+1-555-' || c, \
                jsonb_build_object('street', c || ' Main St') \
         FROM generate_series(1, $1) c \
         UNION ALL SELECT w, 'src_' || w, 'Whale', w || '@mail.example', NULL, NULL \
         FROM unnest(ARRAY['whale1', 'whale1_raw', 'whale2', 'whale2_raw']) w",
        // Everyone's events in random order: no customer's rows are stored together. Each pair
        // of whales is in its own half of the table (see `whale`); everyone else's rows are in
        // both.
        "INSERT INTO events (customer_id, type, metadata) \
         SELECT customer_id, 'viewed', jsonb_build_object('n', n) FROM ( \
           SELECT 'c' || c AS customer_id, n, random() < 0.5 AS later \
           FROM generate_series(1, $1) c, generate_series(1, 400) n \
           WHERE n <= CASE WHEN c % $3 = 0 THEN 400 ELSE 40 END \
           UNION ALL \
           SELECT 'whale' || w || CASE WHEN n % 2 = 0 THEN '' ELSE '_raw' END, n, w = 2 \
           FROM generate_series(1, 2) w, generate_series(1, 2 * $2) n \
         ) e ORDER BY later, random()",
        "INSERT INTO customer_events (customer_id, type, data) \
         SELECT 'c' || c, 'updated', jsonb_build_object('n', n) FROM generate_series(1, $1) c, generate_series(1, 200) n \
         WHERE n <= CASE WHEN c % $3 = 0 THEN 200 ELSE 20 END ORDER BY n, c",
        "INSERT INTO daily_events (customer_id, day, type, count) \
         SELECT 'c' || c, date '2026-01-01' + n, 'viewed', n FROM generate_series(1, $1) c, generate_series(1, 300) n \
         WHERE n <= CASE WHEN c % $3 = 0 THEN 300 ELSE 30 END ORDER BY n, c",
        "INSERT INTO segment_members (segment_id, customer_id) \
         SELECT 's' || n, 'c' || c FROM generate_series(1, $1) c, generate_series(1, 30) n \
         WHERE n <= CASE WHEN c % $3 = 0 THEN 30 ELSE 3 END",
        "INSERT INTO orders (id, customer_id, status, amount, currency, billing_name, billing_email) \
         SELECT 'o' || c || '_' || n, 'c' || c, 'COMPLETED', 1000 + n, 'EUR', 'Name ' || c, 'c' || c || '@mail.example' \
         FROM generate_series(1, $1) c, generate_series(1, 50) n \
         WHERE n <= CASE WHEN c % $3 = 0 THEN 50 ELSE 5 END ORDER BY n, c",
        "INSERT INTO order_events (order_id, type, data) \
         SELECT o.id, 'shipped', jsonb_build_object('k', k) FROM orders o, generate_series(1, 4) k ORDER BY k, o.id",
        "ANALYZE",
    ];
    for statement in statements {
        let statement = statement.replace("$3", &HEAVY_EVERY.to_string());
        let mut query = sqlx::query(&statement);
        if statement.contains("$1") {
            query = query.bind(customers);
        }
        if statement.contains("$2") {
            query = query.bind(whale_rows);
        }
        query.execute(pool).await?;
    }
    for set in ["bench_a", "bench_b"] {
        sqlx::query(&format!("CREATE SEQUENCE {set}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_customers_own_ten_times_the_rows() {
        assert_eq!(truth(1)["events"], 40);
        assert_eq!(truth(HEAVY_EVERY)["order_events"], 200);
        assert_eq!(truth(HEAVY_EVERY)["customer"], 1);
    }
}
