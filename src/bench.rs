//! `erasure bench`: end-to-end throughput of the worker against PostgreSQL itself.
//!
//! In one run, on a database and broker names of its own (`<database>_bench`, `bench.*`):
//! seeds the reference schema with a truth table of counts, erases one third of the customers
//! with `pgbench` running the worker's generated statement, one third with `pgbench` running
//! the naive per-table transaction, and one third with the worker binary end to end through
//! RabbitMQ; then erases a "whale" with the worker (chunked) and a twin whale with one raw
//! `DELETE`. Every deletion object's counts must equal the truth table, or the run fails
//! instead of printing figures.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

use uuid::Uuid;

use crate::broker;
use crate::config::{Secret, Settings};
use crate::plan::{Plan, sql::erase_statement};

/// One in this many customers is heavy (ten times the rows).
const HEAVY_EVERY: i64 = 29;

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Customers to seed (a third each for the two pgbench baselines and the worker).
    #[arg(long, default_value_t = 100_000)]
    pub customers: i64,
    /// Events of the whale (and of its twin, erased by one raw DELETE).
    #[arg(long, default_value_t = 1_000_000)]
    pub whale_rows: i64,
    /// Concurrency of the worker and of pgbench (default: worker.concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Where to write the table of figures.
    #[arg(long, default_value = "target/bench.md")]
    pub out: PathBuf,
}

/// Rows one customer owns, by count key.
fn truth(i: i64) -> Value {
    let f = if i % HEAVY_EVERY == 0 { 10 } else { 1 };
    json!({
        "events": 40 * f, "customer_events": 20 * f, "daily_events": 30 * f,
        "segments": 3 * f, "orders": 5 * f, "order_events": 20 * f, "customer": 1,
    })
}

pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<bool> {
    ensure!(args.customers >= 3, "--customers must be at least 3");
    let concurrency = args
        .concurrency
        .unwrap_or(settings.worker.concurrency)
        .max(1);
    let options = PgConnectOptions::from_str(settings.database.url.expose())?;
    let database = format!("{}_bench", options.get_database().unwrap_or("erasure"));
    let url = with_database(settings.database.url.expose(), &database);
    let mut admin = options.clone().database("postgres").connect().await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    ))
    .execute(&mut admin)
    .await?;
    settings.database.url = Secret::new(url.clone());
    settings.database.max_connections = (concurrency + 4) as u32;
    settings.database.reference_schema = true;
    settings.worker.concurrency = concurrency;
    settings.worker.prefetch = (concurrency * 2).min(u16::MAX as usize) as u16;
    for name in [
        &mut settings.amqp.exchange,
        &mut settings.amqp.queue,
        &mut settings.amqp.dead_letter_exchange,
        &mut settings.amqp.dead_letter_queue,
        &mut settings.amqp.events_exchange,
    ] {
        *name = format!("bench.{name}");
    }
    // Seeding runs long statements; the worker keeps its own limits.
    let mut seeding = settings.database.clone();
    seeding.statement_timeout_ms = 3_600_000;
    let pool = crate::db::prepare(&seeding).await?;
    let plan = Plan::load(settings.erasure.plan.as_deref())?;

    eprintln!(
        "seeding {} customers and two whales of {} events",
        args.customers, args.whale_rows
    );
    let started = Instant::now();
    seed(&pool, args.customers, args.whale_rows).await?;
    let seeding = started.elapsed();

    let per_set = args.customers / 3;
    let (generated, erased) = pgbench(
        &url,
        &generated_script(&plan),
        "bench_a",
        per_set,
        concurrency,
    )
    .await?;
    let pgbench_checked = check_pgbench(&pool, 3, erased).await?;
    let (naive, erased) = pgbench(&url, NAIVE_SCRIPT, "bench_b", per_set, concurrency).await?;
    check_pgbench(&pool, 1, erased).await?;

    let mut worker = spawn_worker(&settings)?;
    let pid = worker.id().context("the worker has a pid")?;
    let e2e = end_to_end(&pool, &settings, args.customers).await?;
    let whale = whale(&pool, &settings, args.whale_rows).await?;
    let rss_kib = peak_rss_kib(pid);
    let _ = worker.start_kill();
    let _ = worker.wait().await;

    let mut table = String::new();
    writeln!(table, "| measure | figure |")?;
    writeln!(table, "|---|---|")?;
    writeln!(
        table,
        "| customers seeded (3 sets of {per_set}) + 2 whales | {} in {:.1} s |",
        args.customers,
        seeding.as_secs_f64()
    )?;
    writeln!(
        table,
        "| concurrency (worker slots, pgbench clients) | {concurrency} |"
    )?;
    writeln!(
        table,
        "| pgbench, generated statement | {generated:.0} erasures/s |"
    )?;
    writeln!(
        table,
        "| pgbench, naive per-table transaction | {naive:.0} erasures/s |"
    )?;
    writeln!(
        table,
        "| worker end to end (publish to DONE) | {:.0} erasures/s |",
        e2e.rate
    )?;
    writeln!(
        table,
        "| worker / pgbench generated | {:.2}x |",
        e2e.rate / generated
    )?;
    writeln!(
        table,
        "| worker / pgbench naive | {:.2}x |",
        e2e.rate / naive
    )?;
    writeln!(
        table,
        "| latency publish to DONE, p50 / p99 | {:.1} ms / {:.1} ms |",
        e2e.p50_ms, e2e.p99_ms
    )?;
    writeln!(
        table,
        "| whale, worker chunked | {:.0} rows/s ({} rows in {:.2} s) |",
        whale.worker_rate, args.whale_rows, whale.worker_secs
    )?;
    writeln!(
        table,
        "| whale, one raw DELETE | {:.0} rows/s ({:.2} s) |",
        whale.raw_rate, whale.raw_secs
    )?;
    writeln!(
        table,
        "| whale worker / raw DELETE | {:.2}x |",
        whale.worker_rate / whale.raw_rate
    )?;
    writeln!(
        table,
        "| longest worker transaction during the whale (sampled every 10 ms) | {:.0} ms |",
        whale.longest_ms
    )?;
    writeln!(
        table,
        "| worker peak RSS (VmHWM) | {} |",
        rss_kib.map_or("unknown".into(), |k| format!(
            "{:.1} MiB",
            k as f64 / 1024.0
        ))
    )?;
    writeln!(
        table,
        "| every count equal to the truth table | yes ({} worker and {pgbench_checked} pgbench deletions checked) |",
        e2e.checked + 1
    )?;
    println!("{table}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &table)?;
    eprintln!("written to {}", args.out.display());
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    ))
    .execute(&mut admin)
    .await?;
    Ok(true)
}

async fn seed(pool: &PgPool, customers: i64, whale_rows: i64) -> anyhow::Result<()> {
    let statements = [
        "INSERT INTO segments (id, name) SELECT 's' || n, 'segment ' || n FROM generate_series(1, 50) n",
        "INSERT INTO customers (id, source_id, name, email, phone, address) \
         SELECT 'c' || c, 'src' || c, 'Name ' || c, 'c' || c || '@mail.example', '+1-555-' || c, \
                jsonb_build_object('street', c || ' Main St') \
         FROM generate_series(1, $1) c \
         UNION ALL SELECT w, 'src_' || w, 'Whale', w || '@mail.example', NULL, NULL \
         FROM unnest(ARRAY['whale', 'whale_raw']) w",
        // Everyone's events in one random order: no customer's rows are stored together.
        "INSERT INTO events (customer_id, type, metadata) \
         SELECT customer_id, 'viewed', jsonb_build_object('n', n) FROM ( \
           SELECT 'c' || c AS customer_id, n FROM generate_series(1, $1) c, generate_series(1, 400) n \
           WHERE n <= CASE WHEN c % $3 = 0 THEN 400 ELSE 40 END \
           UNION ALL \
           SELECT CASE WHEN n % 2 = 0 THEN 'whale' ELSE 'whale_raw' END, n FROM generate_series(1, 2 * $2) n \
         ) e ORDER BY random()",
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

/// The worker's statement as one pgbench transaction: its parameters come from a first CTE
/// (the next customer of set 0, a new request id, ...), so it stays one round trip.
fn generated_script(plan: &Plan) -> String {
    let params = "params AS MATERIALIZED (SELECT 'c' || (3 * nextval('bench_a'))::text AS p1, \
        gen_random_uuid() AS p2, 'del_' || substr(md5(random()::text), 1, 24) AS p3, \
        sha256(convert_to(clock_timestamp()::text, 'UTF8')) AS p4, 'pgbench'::text AS p5, NULL::text AS p6, \
        now() AS p7, now() + interval '1 month' AS p8, 'cli'::text AS p9, now() AS p10, \
        decode(repeat('36', 64), 'hex') AS p11, decode(repeat('5c', 64), 'hex') AS p12, \
        20000::bigint AS p13, ARRAY['OPEN']::text[] AS p14, 'open order'::text AS p15),\n";
    let mut sql = erase_statement(plan).replacen("WITH\n", &format!("WITH\n{params}"), 1);
    for n in (1..=15).rev() {
        sql = sql.replace(&format!("${n}"), &format!("(SELECT p{n} FROM params)"));
    }
    format!("{};\n", sql.replace('\n', " "))
}

/// One statement per table in a transaction, as a hand-written script would do it.
const NAIVE_SCRIPT: &str = "\
BEGIN;
SELECT 'c' || (3 * nextval('bench_b') - 2)::text AS c \\gset
SELECT id FROM customers WHERE id = :c FOR UPDATE;
SELECT count(*) AS open FROM orders WHERE customer_id = :c AND status = 'OPEN';
DELETE FROM events WHERE customer_id = :c;
DELETE FROM customer_events WHERE customer_id = :c;
DELETE FROM daily_events WHERE customer_id = :c;
DELETE FROM segment_members WHERE customer_id = :c;
DELETE FROM order_events WHERE order_id IN (SELECT id FROM orders WHERE customer_id = :c);
UPDATE orders SET customer_id = NULL, billing_name = NULL, billing_email = NULL, shipping_address = NULL, metadata = NULL, anonymized_at = now() WHERE customer_id = :c;
DELETE FROM customers WHERE id = :c;
INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel, completed_at) VALUES ('del_' || substr(md5(random()::text), 1, 24), gen_random_uuid(), :c, 'DONE', now(), now() + interval '1 month', 'cli', now()) RETURNING id AS d \\gset
INSERT INTO erasure.audit_log (action, deletion_id, related_object_id, channel) VALUES ('erasure.done', :d, :c, 'cli');
COMMIT;
";

/// Runs `script` for up to `transactions` erasures; returns erasures per second and how many
/// it ran.
async fn pgbench(
    url: &str,
    script: &str,
    name: &str,
    transactions: i64,
    clients: usize,
) -> anyhow::Result<(f64, i64)> {
    let clients = clients.min(transactions.max(1) as usize);
    let per_client = (transactions / clients as i64).max(1);
    let path = std::env::temp_dir().join(format!("erasure-{name}-{}.sql", Uuid::new_v4()));
    std::fs::write(&path, script)?;
    eprintln!(
        "pgbench {name}: {} erasures, {clients} clients",
        per_client * clients as i64
    );
    let output = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.to_string(),
        ])
        .args(["-t", &per_client.to_string(), "-f"])
        .arg(&path)
        .arg(url)
        .output()
        .await
        .context("running pgbench (PostgreSQL's client tools)")?;
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    Ok((tps, per_client * clients as i64))
}

/// The first `erased` customers of a pgbench set (`first` + 3k) are gone with their rows, and
/// the deletions the generated statement recorded hold the truth table's counts.
async fn check_pgbench(pool: &PgPool, first: i64, erased: i64) -> anyhow::Result<usize> {
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE customer_id IN ( \
           SELECT 'c' || ($1 + 3 * k) FROM generate_series(0, $2 - 1) k)",
    )
    .bind(first)
    .bind(erased)
    .fetch_one(pool)
    .await?;
    ensure!(
        left == 0,
        "pgbench left {left} events of the set starting at c{first}"
    );
    let recorded: Vec<(String, Value)> = sqlx::query_as(
        "SELECT related_object_id, data_json FROM erasure.deletions WHERE requested_by = 'pgbench'",
    )
    .fetch_all(pool)
    .await?;
    for (customer, counts) in &recorded {
        let i: i64 = customer.trim_start_matches('c').parse()?;
        ensure!(
            *counts == truth(i),
            "{customer}: counts {counts}, expected {}",
            truth(i)
        );
    }
    Ok(recorded.len())
}

fn spawn_worker(settings: &Settings) -> anyhow::Result<tokio::process::Child> {
    let worker = &settings.worker;
    Ok(tokio::process::Command::new(std::env::current_exe()?)
        .arg("worker")
        .envs(settings.connection_environment())
        .env(
            "ERASURE_DATABASE__MAX_CONNECTIONS",
            settings.database.max_connections.to_string(),
        )
        .env(
            "ERASURE_WORKER__CONCURRENCY",
            worker.concurrency.to_string(),
        )
        .env("ERASURE_WORKER__PREFETCH", worker.prefetch.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

struct EndToEnd {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    checked: usize,
}

async fn end_to_end(
    pool: &PgPool,
    settings: &Settings,
    customers: i64,
) -> anyhow::Result<EndToEnd> {
    let ids: Vec<i64> = (1..=3 * (customers / 3)).filter(|c| c % 3 == 2).collect();
    eprintln!("worker: {} erasures through RabbitMQ", ids.len());
    let connection = broker::connect(&settings.amqp).await?;
    let channel = broker::confirm_channel(&connection).await?;
    broker::declare_topology(&channel, &settings.amqp).await?;
    let mut published: Vec<(Uuid, i64, DateTime<Utc>)> = Vec::with_capacity(ids.len());
    let first = Instant::now();
    for batch in ids.chunks(500) {
        let messages: Vec<(Uuid, String, i64, Vec<u8>)> = batch
            .iter()
            .map(|c| {
                let id = Uuid::new_v4();
                let body = json!({"request_id": id, "customer_id": format!("c{c}"), "requested_by": "bench"});
                (id, id.to_string(), *c, serde_json::to_vec(&body).expect("JSON"))
            })
            .collect();
        let at = Utc::now();
        try_join_all(messages.iter().map(|(_, key, _, body)| {
            broker::publish_json(
                &channel,
                &settings.amqp.exchange,
                &settings.amqp.routing_key,
                key,
                body,
                true,
            )
        }))
        .await?;
        published.extend(messages.iter().map(|(id, _, c, _)| (*id, *c, at)));
    }
    let _ = connection.close(200, "published".into()).await;
    let total = published.len() as i64;
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM erasure.deletions WHERE status IN ('DONE', 'FAILED') AND channel = 'amqp'",
        )
        .fetch_one(pool)
        .await?;
        if done >= total {
            break;
        }
        if first.elapsed() > Duration::from_secs(3600) {
            bail!("only {done} of {total} erasures finished in an hour");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<(Uuid, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT request_id, status, data_json, completed_at FROM erasure.deletions WHERE channel = 'amqp'",
    )
    .fetch_all(pool)
    .await?;
    let by_id: std::collections::HashMap<Uuid, (String, Value, DateTime<Utc>)> = rows
        .into_iter()
        .map(|(id, s, d, c)| (id, (s, d, c)))
        .collect();
    let mut latencies = Vec::with_capacity(published.len());
    let mut last = published[0].2;
    for (id, customer, at) in &published {
        let (status, counts, completed) = by_id.get(id).context("a request has no deletion")?;
        ensure!(status == "DONE", "customer c{customer} ended {status}");
        ensure!(
            *counts == truth(*customer),
            "customer c{customer}: counts {counts}, expected {}",
            truth(*customer)
        );
        latencies.push((*completed - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        last = last.max(*completed);
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let span = (last - published[0].2)
        .num_microseconds()
        .unwrap_or(1)
        .max(1) as f64
        / 1e6;
    Ok(EndToEnd {
        rate: total as f64 / span,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        checked: published.len(),
    })
}

struct Whale {
    worker_rate: f64,
    worker_secs: f64,
    raw_rate: f64,
    raw_secs: f64,
    longest_ms: f64,
}

async fn whale(pool: &PgPool, settings: &Settings, rows: i64) -> anyhow::Result<Whale> {
    eprintln!("whale: {rows} events, worker against one raw DELETE");
    let request_id = Uuid::new_v4();
    let body = serde_json::to_vec(
        &json!({"request_id": request_id, "customer_id": "whale", "requested_by": "bench"}),
    )?;
    let started = Instant::now();
    broker::publish_request_once(&settings.amqp, &request_id.to_string(), &body).await?;
    let mut longest_ms: f64 = 0.0;
    let counts: Value = loop {
        let longest: Option<f64> = sqlx::query_scalar(
            "SELECT max(extract(epoch FROM clock_timestamp() - xact_start) * 1000)::float8 FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'erasure' AND xact_start IS NOT NULL",
        )
        .fetch_one(pool)
        .await?;
        longest_ms = longest_ms.max(longest.unwrap_or(0.0));
        let row: Option<(String, Value)> = sqlx::query_as(
            "SELECT status, data_json FROM erasure.deletions WHERE request_id = $1 AND status IN ('DONE', 'FAILED')",
        )
        .bind(request_id)
        .fetch_optional(pool)
        .await?;
        if let Some((status, counts)) = row {
            ensure!(status == "DONE", "the whale ended {status}");
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let worker_secs = started.elapsed().as_secs_f64();
    ensure!(
        counts["events"] == json!(rows),
        "whale counts {counts}, expected {rows} events"
    );
    let started = Instant::now();
    let deleted = sqlx::query("DELETE FROM events WHERE customer_id = 'whale_raw'")
        .execute(pool)
        .await?
        .rows_affected();
    let raw_secs = started.elapsed().as_secs_f64();
    ensure!(
        deleted as i64 == rows,
        "the raw DELETE removed {deleted} rows"
    );
    Ok(Whale {
        worker_rate: rows as f64 / worker_secs,
        worker_secs,
        raw_rate: rows as f64 / raw_secs,
        raw_secs,
        longest_ms,
    })
}

/// `url` naming database `name` instead (libpq form, which pgbench also reads).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out = format!("{out}?{query}");
    }
    out
}

/// The peak resident set of process `pid`, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_database_replaces_only_the_name() {
        assert_eq!(
            with_database(
                "postgres://postgres@localhost:5432/erasure",
                "erasure_bench"
            ),
            "postgres://postgres@localhost:5432/erasure_bench"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }

    #[test]
    fn heavy_customers_own_ten_times_the_rows() {
        assert_eq!(truth(1)["events"], 40);
        assert_eq!(truth(HEAVY_EVERY)["order_events"], 200);
        assert_eq!(truth(HEAVY_EVERY)["customer"], 1);
    }
}
