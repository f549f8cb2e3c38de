//! `erasure bench`: end-to-end throughput of the worker against PostgreSQL itself.
//!
//! In one run, on a database and broker names of its own (`<database>_bench`, `bench.*`):
//! seeds the reference schema with a truth table of counts, erases one third of the customers
//! with `pgbench` running the worker's generated statement, one third with `pgbench` running
//! the naive per-table transaction, and one third with the worker binary end to end through
//! RabbitMQ; then erases two "whales" with the worker (chunked) and their twins with one raw
//! `DELETE` each. Every deletion object's counts must equal the truth table, or the run fails
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

mod cpu;

use crate::broker;
use crate::config::{Secret, Settings};
use crate::plan::{Plan, sql::erase_statement};
use crate::roundtrip::RoundTripCounter;
use cpu::{Meter, Usage};

/// Rounds in which the three contenders take turns.
const ROUNDS: usize = 3;

/// One in this many customers is heavy (ten times the rows).
const HEAVY_EVERY: i64 = 29;

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Customers to seed (a third each for the two pgbench baselines and the worker).
    #[arg(long, default_value_t = 100_000)]
    pub customers: i64,
    /// Events of each whale (two erased by the worker, their twins by one raw DELETE each).
    #[arg(long, default_value_t = 1_000_000)]
    pub whale_rows: i64,
    /// Concurrency of the worker and of pgbench (default: worker.concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Where to write the table of figures.
    #[arg(long, default_value = "target/bench.md")]
    pub out: PathBuf,
    /// Leave the benchmark's database in place afterwards, to inspect it.
    #[arg(long)]
    pub keep: bool,
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
        "seeding {} customers and four whales of {} events",
        args.customers, args.whale_rows
    );
    let started = Instant::now();
    seed(&pool, args.customers, args.whale_rows).await?;
    let seeding = started.elapsed();
    let mut meter = Meter {
        postmaster: postmaster(&pool).await,
        worker: None,
    };

    let per_set = args.customers / 3;
    let mut figures = Figures::default();
    let script = generated_script(&plan, settings.erasure.chunk_threshold);

    // The worker's set: most of it is a backlog to drain, then requests at a steady rate for
    // latency, then a few through a counting proxy for round trips.
    let ids: Vec<i64> = (1..=3 * per_set).filter(|c| c % 3 == 2).collect();
    let paced = (ids.len() / 10)
        .clamp(1, 3000)
        .min(ids.len().saturating_sub(2).max(1));
    let counted = (ids.len() / 20)
        .clamp(1, 500)
        .min(ids.len().saturating_sub(paced + 1).max(1));
    let (backlog, rest) = ids.split_at(ids.len().saturating_sub(paced + counted).max(1));
    let (paced_ids, counted_ids) = rest.split_at(rest.len().saturating_sub(counted));

    // The three contenders take turns, in a different order each round, so that none is
    // always the first on a freshly seeded database or the last on a well-worn one.
    let rounds = ROUNDS.min(backlog.len()).max(1);
    let mut generated = Usage::default();
    let mut naive = Usage::default();
    let mut drain = Usage::default();
    let (mut generated_erased, mut naive_erased, mut worker_checked) = (0, 0, 0);
    let mut rss_kib: Option<u64> = None;
    for round in 0..rounds {
        let share = |total: usize| total * (round + 1) / rounds - total * round / rounds;
        for turn in 0..3 {
            match (round + turn) % 3 {
                0 => {
                    let (erased, usage) = pgbench_phase(
                        &pool,
                        &meter,
                        &url,
                        &script,
                        "bench_a",
                        share(per_set as usize),
                        concurrency,
                    )
                    .await?;
                    generated_erased += erased;
                    generated.add(&usage);
                }
                1 => {
                    let (erased, usage) = pgbench_phase(
                        &pool,
                        &meter,
                        &url,
                        NAIVE_SCRIPT,
                        "bench_b",
                        share(per_set as usize),
                        concurrency,
                    )
                    .await?;
                    naive_erased += erased;
                    naive.add(&usage);
                }
                _ => {
                    let from = backlog.len() * round / rounds;
                    let slice = &backlog[from..from + share(backlog.len())];
                    let (usage, rss) = drain_phase(&pool, &mut meter, &settings, slice).await?;
                    worker_checked += slice.len();
                    drain.add(&usage);
                    rss_kib = rss_kib.max(rss);
                }
            }
        }
    }
    let pgbench_checked = check_pgbench(&pool, 3, generated_erased).await?;
    check_pgbench(&pool, 1, naive_erased).await?;
    let (generated_rate, naive_rate, drain_rate) = (generated.rate(), naive.rate(), drain.rate());

    settle_pgbench_events(&pool).await?;
    let mut worker = spawn_worker(&settings)?;
    let started_at = Utc::now();
    let steady_rate = (drain_rate / 2.0).max(1.0);
    eprintln!(
        "worker: {} requests at {steady_rate:.0}/s for latency",
        paced_ids.len()
    );
    let checkpoints_before = checkpoints(&pool).await?;
    let paced = publish_paced(&settings, paced_ids, steady_rate).await?;
    wait_final(&pool, &paced).await?;
    let latency_checkpoints = checkpoints(&pool).await? - checkpoints_before;
    let latency = check_worker(&pool, &paced, started_at).await?;

    let whale = whale(&pool, &settings, args.whale_rows).await?;
    rss_kib = rss_kib.max(worker.id().and_then(peak_rss_kib));
    let _ = worker.start_kill();
    let _ = worker.wait().await;

    let round_trips = round_trips(&pool, &settings, counted_ids).await?;

    figures.rows.push((
        format!(
            "customers seeded (3 sets of {per_set}, each erased over {rounds} rounds) + 4 whales"
        ),
        format!("{} in {:.1} s", args.customers, seeding.as_secs_f64()),
    ));
    figures.row("concurrency (worker slots, pgbench clients)", concurrency);
    figures.row(
        "pgbench, generated statement (`-M prepared`)",
        format!("{generated_rate:.0} erasures/s"),
    );
    figures.row(
        "pgbench, naive per-table transaction",
        format!("{naive_rate:.0} erasures/s"),
    );
    figures.row(
        format!(
            "worker, draining a backlog of {} requests (the worker started after they were published)",
            backlog.len()
        ),
        format!("{drain_rate:.0} erasures/s"),
    );
    figures.row(
        "worker / pgbench generated",
        format!("{:.2}x", drain_rate / generated_rate),
    );
    figures.row(
        "worker / pgbench naive",
        format!("{:.2}x", drain_rate / naive_rate),
    );
    figures.row(
        format!(
            "latency publish to DONE at {steady_rate:.0} requests/s ({} requests), p50 / p99",
            paced.len()
        ),
        format!("{:.1} ms / {:.1} ms", latency.p50_ms, latency.p99_ms),
    );
    figures.row(
        "checkpoints the server began during the latency measurement",
        latency_checkpoints,
    );
    figures.row(
        format!(
            "database round trips per typical erasure, its outcome event included ({} erasures)",
            counted_ids.len()
        ),
        round_trips.map_or(
            "unknown (the database is not reached over TCP)".into(),
            |r| format!("{r:.2}"),
        ),
    );
    for (label, usage) in [
        ("pgbench generated", &generated),
        ("pgbench naive", &naive),
        ("worker draining", &drain),
    ] {
        figures.row(format!("CPU ms per erasure, {label}"), usage.describe());
    }
    figures.row(
        "whales, worker chunked (each from publish to DONE)",
        format!(
            "{:.0} rows/s (2 x {} rows in {:.2} s)",
            whale.worker_rate, args.whale_rows, whale.worker_secs
        ),
    );
    figures.row(
        "whales, one raw DELETE each",
        format!(
            "{:.0} rows/s (2 x {} rows in {:.2} s)",
            whale.raw_rate, args.whale_rows, whale.raw_secs
        ),
    );
    figures.row(
        "whales, worker / raw DELETE",
        format!("{:.2}x", whale.worker_rate / whale.raw_rate),
    );
    figures.row(
        "WAL during the whales (whole server): worker chunked; raw DELETE",
        format!("{}; {}", whale.worker_wal, whale.raw_wal),
    );
    figures.row(
        "longest worker transaction during the whales (sampled every 10 ms)",
        format!("{:.0} ms", whale.longest_ms),
    );
    figures.row(
        "worker peak RSS (VmHWM), after the backlog, the steady requests and the whales",
        rss_kib.map_or("unknown".into(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        }),
    );
    figures.row(
        "every count equal to the truth table",
        format!(
            "yes ({} worker and {pgbench_checked} pgbench deletions checked)",
            worker_checked + latency.checked + counted_ids.len() + 1
        ),
    );
    let table = figures.markdown();
    println!("{table}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &table)?;
    eprintln!("written to {}", args.out.display());
    if args.keep {
        eprintln!("kept database {database}");
    } else {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .execute(&mut admin)
        .await?;
    }
    Ok(true)
}

/// The table the run prints and writes.
#[derive(Default)]
struct Figures {
    rows: Vec<(String, String)>,
}

impl Figures {
    fn row(&mut self, measure: impl Into<String>, figure: impl ToString) {
        self.rows.push((measure.into(), figure.to_string()));
    }

    fn markdown(&self) -> String {
        let mut table = String::from("| measure | figure |\n|---|---|\n");
        for (measure, figure) in &self.rows {
            let _ = writeln!(table, "| {measure} | {figure} |");
        }
        table
    }
}

/// Every phase starts from the same state: no dead rows left by the phase before, and a fresh
/// checkpoint (so each pays its own full-page writes, none pays the previous phase's).
/// Checkpoints the server has begun, for whatever reason (time, WAL volume, request). Its
/// sync phase writes the data files on the disk the WAL is on, and commits wait meanwhile.
async fn checkpoints(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            .fetch_one(pool)
            .await?,
    )
}

async fn quiesce(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await?;
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        eprintln!(
            "no checkpoint before the phase ({e}); figures may carry the previous phase's writes"
        );
    }
    eprintln!(
        "vacuumed and checkpointed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs pgbench for `transactions` erasures from a quiet database; returns how many it ran
/// and the CPU they took.
async fn pgbench_phase(
    pool: &PgPool,
    meter: &Meter,
    url: &str,
    script: &str,
    name: &str,
    transactions: usize,
    clients: usize,
) -> anyhow::Result<(i64, Usage)> {
    quiesce(pool).await?;
    let before = meter.sample();
    let clock = Instant::now();
    let (tps, erased) = pgbench(url, script, name, transactions as i64, clients).await?;
    let wall = clock.elapsed().as_secs_f64();
    let usage = before.until(&meter.sample(), wall, erased as u64, erased as f64 / tps);
    Ok((erased, usage))
}

/// What pgbench recorded owes no outcome event: the worker's publisher leaves it alone.
async fn settle_pgbench_events(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE erasure.deletions SET event_published_at = now() \
         WHERE event_published_at IS NULL AND channel = 'cli'",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Publishes a request for each of `customers`, then starts a worker on a quiet database and
/// lets it drain them; returns the CPU it took (over the time from the worker's start to the
/// last completion) and the worker's peak RSS.
async fn drain_phase(
    pool: &PgPool,
    meter: &mut Meter,
    settings: &Settings,
    customers: &[i64],
) -> anyhow::Result<(Usage, Option<u64>)> {
    settle_pgbench_events(pool).await?;
    let published = publish(settings, customers).await?;
    quiesce(pool).await?;
    let before = meter.sample();
    let clock = Instant::now();
    let mut worker = spawn_worker(settings)?;
    let started_at = Utc::now();
    meter.worker = worker.id();
    wait_final(pool, &published).await?;
    let after = meter.sample();
    let wall = clock.elapsed().as_secs_f64();
    let rss = worker.id().and_then(peak_rss_kib);
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    meter.worker = None;
    let run = check_worker(pool, &published, started_at).await?;
    let seconds = published.len() as f64 / run.rate;
    Ok((
        before.until(&after, wall, published.len() as u64, seconds),
        rss,
    ))
}

/// The PostgreSQL server's main process, when it runs on this machine.
async fn postmaster(pool: &PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .ok()?;
    let backend = u32::try_from(backend).ok()?;
    // A backend of a server elsewhere has no such process here, or one with another name.
    std::fs::read_to_string(format!("/proc/{backend}/comm"))
        .ok()
        .filter(|comm| comm.trim() == "postgres")?;
    cpu::parent_of(backend)
}

async fn seed(pool: &PgPool, customers: i64, whale_rows: i64) -> anyhow::Result<()> {
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

/// The worker's statement as pgbench runs it: exactly as `erasure plan --sql` prints it, with
/// real parameters (`-M prepared`). The parameters of each erasure (the next customer of set
/// 0, a new request id, ...) come from a query before it, as the naive script's customer does.
fn generated_script(plan: &Plan, chunk_threshold: i64) -> String {
    let params = format!(
        "SELECT 'c' || (3 * nextval('bench_a'))::text AS p1, gen_random_uuid() AS p2, \
        'del_' || substr(md5(random()::text), 1, 24) AS p3, sha256(convert_to(clock_timestamp()::text, 'UTF8')) AS p4, \
        'pgbench' AS p5, 'bench' AS p6, now() AS p7, now() + interval '1 month' AS p8, 'cli' AS p9, now() AS p10, \
        decode(repeat('36', 64), 'hex') AS p11, decode(repeat('5c', 64), 'hex') AS p12, {chunk_threshold} AS p13, \
        '{{OPEN}}' AS p14, 'open order' AS p15 \\gset"
    );
    let mut sql = erase_statement(plan);
    for n in (1..=15).rev() {
        sql = sql.replace(&format!("${n}"), &format!(":p{n}"));
    }
    format!("{params}\n{};\n", sql.replace('\n', " "))
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
    // The worker's sessions run with JIT off (`db::connect`); pgbench's do the same, so that
    // both plan and run the statement alike.
    let options = std::env::var("PGOPTIONS").unwrap_or_default();
    let output = tokio::process::Command::new("pgbench")
        .env("PGOPTIONS", format!("{options} -c jit=off"))
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
        // One runtime thread: on a machine it shares with PostgreSQL and RabbitMQ, the worker
        // spends less CPU per erasure waking threads (BENCHMARKS.md). Set it to compare.
        .env(
            "TOKIO_WORKER_THREADS",
            std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| "1".into()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// A request the benchmark published: its id, its customer's number and when.
#[derive(Clone, Copy)]
struct Published {
    request_id: Uuid,
    customer: i64,
    at: DateTime<Utc>,
}

fn request_body(customer: i64) -> (Uuid, Vec<u8>) {
    let id = Uuid::new_v4();
    let body =
        json!({"request_id": id, "customer_id": format!("c{customer}"), "requested_by": "bench"});
    (id, serde_json::to_vec(&body).expect("JSON"))
}

/// Publishes one request per customer of `customers`, as fast as the broker confirms them.
async fn publish(settings: &Settings, customers: &[i64]) -> anyhow::Result<Vec<Published>> {
    eprintln!(
        "worker: publishing a backlog of {} requests",
        customers.len()
    );
    let connection = broker::connect(&settings.amqp).await?;
    let channel = broker::confirm_channel(&connection).await?;
    broker::declare_topology(&channel, &settings.amqp).await?;
    let mut published = Vec::with_capacity(customers.len());
    for batch in customers.chunks(500) {
        let messages: Vec<(i64, Uuid, Vec<u8>)> = batch
            .iter()
            .map(|c| {
                let (id, body) = request_body(*c);
                (*c, id, body)
            })
            .collect();
        let at = Utc::now();
        try_join_all(messages.iter().map(|(_, id, body)| {
            let key = id.to_string();
            let channel = &channel;
            let amqp = &settings.amqp;
            async move {
                broker::publish_json(channel, &amqp.exchange, &amqp.routing_key, &key, body, true)
                    .await
            }
        }))
        .await?;
        published.extend(messages.iter().map(|(customer, request_id, _)| Published {
            request_id: *request_id,
            customer: *customer,
            at,
        }));
    }
    let _ = connection.close(200, "published".into()).await;
    Ok(published)
}

/// Publishes one request per customer of `customers` at `rate` requests per second.
async fn publish_paced(
    settings: &Settings,
    customers: &[i64],
    rate: f64,
) -> anyhow::Result<Vec<Published>> {
    let connection = broker::connect(&settings.amqp).await?;
    let channel = broker::confirm_channel(&connection).await?;
    broker::declare_topology(&channel, &settings.amqp).await?;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut confirmations = tokio::task::JoinSet::new();
    let mut published = Vec::with_capacity(customers.len());
    for customer in customers {
        ticks.tick().await;
        let (request_id, body) = request_body(*customer);
        published.push(Published {
            request_id,
            customer: *customer,
            at: Utc::now(),
        });
        let channel = channel.clone();
        let amqp = settings.amqp.clone();
        confirmations.spawn(async move {
            broker::publish_json(
                &channel,
                &amqp.exchange,
                &amqp.routing_key,
                &request_id.to_string(),
                &body,
                true,
            )
            .await
        });
    }
    while let Some(confirmed) = confirmations.join_next().await {
        confirmed??;
    }
    let _ = connection.close(200, "published".into()).await;
    Ok(published)
}

/// Waits until every request of `published` has a final outcome; returns how many have.
/// Looks at the last ones published first, so that waiting costs the database little.
async fn wait_final(pool: &PgPool, published: &[Published]) -> anyhow::Result<usize> {
    let ids: Vec<Uuid> = published.iter().map(|p| p.request_id).collect();
    let tail = &ids[ids.len().saturating_sub(100)..];
    let started = Instant::now();
    let finished = |ids: Vec<Uuid>| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM erasure.deletions WHERE request_id = ANY($1) AND status IN ('DONE', 'FAILED')",
        )
        .bind(ids)
        .fetch_one(pool)
        .await
    };
    loop {
        if finished(tail.to_vec()).await? as usize == tail.len() {
            let all = finished(ids.clone()).await? as usize;
            if all == ids.len() {
                return Ok(all);
            }
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "the worker did not finish {} requests in an hour",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the worker did with requests the benchmark published.
struct WorkerRun {
    /// Erasures per second from `since` to the last completion.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    checked: usize,
}

/// Checks every outcome of `published` against the truth table, and measures.
async fn check_worker(
    pool: &PgPool,
    published: &[Published],
    since: DateTime<Utc>,
) -> anyhow::Result<WorkerRun> {
    let ids: Vec<Uuid> = published.iter().map(|p| p.request_id).collect();
    let rows: Vec<(Uuid, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT request_id, status, data_json, completed_at FROM erasure.deletions WHERE request_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let by_id: std::collections::HashMap<Uuid, (String, Value, DateTime<Utc>)> = rows
        .into_iter()
        .map(|(id, s, d, c)| (id, (s, d, c)))
        .collect();
    let mut latencies = Vec::with_capacity(published.len());
    let mut last = since;
    for p in published {
        let (status, counts, completed) = by_id
            .get(&p.request_id)
            .context("a request has no deletion")?;
        let customer = p.customer;
        ensure!(status == "DONE", "customer c{customer} ended {status}");
        ensure!(
            *counts == truth(customer),
            "customer c{customer}: counts {counts}, expected {}",
            truth(customer)
        );
        latencies.push((*completed - p.at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        last = last.max(*completed);
    }
    ensure!(!latencies.is_empty(), "no requests to measure");
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let span = (last - since).num_microseconds().unwrap_or(1).max(1) as f64 / 1e6;
    Ok(WorkerRun {
        rate: published.len() as f64 / span,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        checked: published.len(),
    })
}

/// Database round trips per typical erasure: a second worker reaches PostgreSQL through a
/// counting proxy and erases `customers`, outcome events included. `None` when the database
/// is not reached over TCP.
async fn round_trips(
    pool: &PgPool,
    settings: &Settings,
    customers: &[i64],
) -> anyhow::Result<Option<f64>> {
    let options = PgConnectOptions::from_str(settings.database.url.expose())?;
    let host = options.get_host();
    if host.starts_with('/') {
        return Ok(None);
    }
    let Some(upstream) = tokio::net::lookup_host((host, options.get_port()))
        .await?
        .next()
    else {
        return Ok(None);
    };
    let proxy = RoundTripCounter::start(upstream).await?;
    let mut through = settings.clone();
    through.database.url = Secret::new(with_host(
        settings.database.url.expose(),
        &proxy.addr.to_string(),
    ));
    let mut worker = spawn_worker(&through)?;
    // Counting starts once the worker consumes, so that its start-up is not counted.
    let connection = broker::connect(&settings.amqp).await?;
    let channel = connection.create_channel().await?;
    let started = Instant::now();
    while broker::consumers(&channel, &settings.amqp.queue).await? == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the counted worker did not start consuming"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = connection.close(200, "counted".into()).await;
    let before = proxy.round_trips();
    let published = publish(settings, customers).await?;
    wait_final(pool, &published).await?;
    check_worker(pool, &published, Utc::now()).await?;
    // And until the outcome events are out, which the same worker publishes.
    let ids: Vec<Uuid> = published.iter().map(|p| p.request_id).collect();
    loop {
        let owed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM erasure.deletions WHERE request_id = ANY($1) AND event_published_at IS NULL",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await?;
        if owed == 0 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the counted worker did not publish its events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counted = proxy.round_trips() - before;
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    Ok(Some(counted as f64 / customers.len() as f64))
}

struct Whale {
    worker_rate: f64,
    worker_secs: f64,
    raw_rate: f64,
    raw_secs: f64,
    longest_ms: f64,
    worker_wal: Wal,
    raw_wal: Wal,
}

/// WAL the server wrote and flushed to disk (`pg_stat_wal`, the whole server) over a phase.
#[derive(Clone, Copy, Debug, Default)]
struct Wal {
    syncs: i64,
    bytes: f64,
}

impl Wal {
    async fn now(pool: &PgPool) -> anyhow::Result<Self> {
        let (syncs, bytes): (i64, f64) =
            sqlx::query_as("SELECT wal_sync, wal_bytes::float8 FROM pg_stat_wal")
                .fetch_one(pool)
                .await?;
        Ok(Self { syncs, bytes })
    }

    async fn since(self, pool: &PgPool) -> anyhow::Result<Self> {
        let now = Self::now(pool).await?;
        Ok(Self {
            syncs: now.syncs - self.syncs,
            bytes: now.bytes - self.bytes,
        })
    }
}

impl std::ops::Add for Wal {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            syncs: self.syncs + other.syncs,
            bytes: self.bytes + other.bytes,
        }
    }
}

impl std::fmt::Display for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} flushes, {:.1} MiB",
            self.syncs,
            self.bytes / (1024.0 * 1024.0)
        )
    }
}

/// The whales come in two pairs, each pair's rows sharing pages in its own half of the table.
/// The first erasure in a pair's pages finds them full; the second finds them compacted by the
/// `VACUUM` in between, and its full-page images are smaller. So the worker goes first in one
/// pair and the raw `DELETE` in the other, and each side's rate is over both of its whales.
/// The whales come in two pairs, each pair's rows sharing pages in its own half of the table.
/// The first erasure in a pair's pages finds them full; the second finds them compacted by the
/// `VACUUM` in between, and writes smaller full-page images. So the worker goes first in one
/// pair and the raw `DELETE` in the other, and each side's rate is over both of its whales.
async fn whale(pool: &PgPool, settings: &Settings, rows: i64) -> anyhow::Result<Whale> {
    eprintln!("whales: two pairs of {rows} events, each pair a worker erasure and a raw DELETE");
    let mut worker = Side::default();
    let mut raw = Side::default();
    let mut longest_ms = worker_whale(pool, settings, "whale1", rows, &mut worker).await?;
    raw_whale(pool, "whale2_raw", rows, &mut raw).await?;
    longest_ms = longest_ms.max(worker_whale(pool, settings, "whale2", rows, &mut worker).await?);
    raw_whale(pool, "whale1_raw", rows, &mut raw).await?;
    Ok(Whale {
        worker_rate: 2.0 * rows as f64 / worker.secs,
        worker_secs: worker.secs,
        raw_rate: 2.0 * rows as f64 / raw.secs,
        raw_secs: raw.secs,
        longest_ms,
        worker_wal: worker.wal,
        raw_wal: raw.wal,
    })
}

/// Time and WAL one side spent on its whales.
#[derive(Default)]
struct Side {
    secs: f64,
    wal: Wal,
}

/// Erases `customer` with the worker from a checkpoint, from publish to DONE; returns the
/// longest worker transaction sampled meanwhile, in milliseconds.
async fn worker_whale(
    pool: &PgPool,
    settings: &Settings,
    customer: &str,
    rows: i64,
    side: &mut Side,
) -> anyhow::Result<f64> {
    let request_id = Uuid::new_v4();
    let body = serde_json::to_vec(
        &json!({"request_id": request_id, "customer_id": customer, "requested_by": "bench"}),
    )?;
    quiesce(pool).await?;
    let wal = Wal::now(pool).await?;
    let started = Instant::now();
    broker::publish_request_once(&settings.amqp, &request_id.to_string(), &body).await?;
    let mut longest_ms: f64 = 0.0;
    let counts: Value = loop {
        let longest: Option<f64> = sqlx::query_scalar(
            "SELECT max(extract(epoch FROM clock_timestamp() - xact_start) * 1000)::float8 FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'erasure' AND xact_start IS NOT NULL \
               AND pid <> pg_backend_pid()",
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
            ensure!(status == "DONE", "{customer} ended {status}");
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    side.secs += started.elapsed().as_secs_f64();
    side.wal = side.wal + wal.since(pool).await?;
    ensure!(
        counts["events"] == json!(rows),
        "{customer}: counts {counts}, expected {rows} events"
    );
    Ok(longest_ms)
}

/// Deletes `customer`'s events with one raw `DELETE` from a checkpoint.
async fn raw_whale(
    pool: &PgPool,
    customer: &str,
    rows: i64,
    side: &mut Side,
) -> anyhow::Result<()> {
    quiesce(pool).await?;
    let wal = Wal::now(pool).await?;
    let started = Instant::now();
    let deleted = sqlx::query("DELETE FROM events WHERE customer_id = $1")
        .bind(customer)
        .execute(pool)
        .await?
        .rows_affected();
    side.secs += started.elapsed().as_secs_f64();
    side.wal = side.wal + wal.since(pool).await?;
    ensure!(
        deleted as i64 == rows,
        "the raw DELETE of {customer} removed {deleted} rows"
    );
    Ok(())
}

/// A libpq-style URL cut into `scheme://user:password@`, `host:port`, `/database` and the
/// query string.
struct UrlParts<'a> {
    head: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> Self {
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let authority_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        let host_start = base[scheme_end..authority_end]
            .rfind('@')
            .map_or(scheme_end, |i| scheme_end + i + 1);
        Self {
            head: &base[..host_start],
            host: &base[host_start..authority_end],
            path: &base[authority_end..],
            query,
        }
    }
}

/// `url` naming database `name` instead (libpq form, which pgbench also reads).
fn with_database(url: &str, name: &str) -> String {
    let parts = UrlParts::of(url);
    let mut out = format!("{}{}/{name}", parts.head, parts.host);
    if let Some(query) = parts.query {
        out = format!("{out}?{query}");
    }
    out
}

/// `url` with its host and port replaced by `address` and TLS off, so that a proxy between
/// the client and the server can read the stream.
fn with_host(url: &str, address: &str) -> String {
    let parts = UrlParts::of(url);
    let mut params: Vec<&str> = parts
        .query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    params.push("sslmode=disable");
    format!("{}{address}{}?{}", parts.head, parts.path, params.join("&"))
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
    fn the_proxy_address_replaces_host_and_port_and_turns_tls_off() {
        assert_eq!(
            with_host(
                "postgres://u:p@db:5432/erasure?sslmode=require&application_name=x",
                "127.0.0.1:9"
            ),
            "postgres://u:p@127.0.0.1:9/erasure?application_name=x&sslmode=disable"
        );
        assert_eq!(
            with_host("postgres://localhost/erasure", "127.0.0.1:9"),
            "postgres://127.0.0.1:9/erasure?sslmode=disable"
        );
    }

    #[test]
    fn heavy_customers_own_ten_times_the_rows() {
        assert_eq!(truth(1)["events"], 40);
        assert_eq!(truth(HEAVY_EVERY)["order_events"], 200);
        assert_eq!(truth(HEAVY_EVERY)["customer"], 1);
    }
}
