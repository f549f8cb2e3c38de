//! `erasure-bench`: end-to-end throughput of the `erasure` worker against PostgreSQL itself.
//!
//! In one run, on a database and broker names of its own (`<database>_bench`, `bench.*`):
//! seeds the reference schema with a truth table of counts ([`seed`]); erases one third of the
//! customers with `pgbench` running the worker's statement as `erasure plan --sql` prints it,
//! one third with `pgbench` running the naive per-table transaction ([`pgbench`]), and one
//! third with the `erasure worker` binary end to end through RabbitMQ ([`worker`]), the three
//! taking turns from a quiet database ([`server`]); then measures latency, erases the whales
//! ([`whales`]) and counts round trips. Every deletion's counts must equal the truth table, or
//! the run fails instead of printing figures ([`report`]).

mod binary;
mod cpu;
mod pgbench;
mod report;
mod seed;
mod server;
mod url;
mod whales;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, ensure};
use chrono::Utc;
use clap::Parser;
use erasure::config::{Secret, Settings};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use binary::Erasure;
use cpu::{Meter, Usage};
use report::Results;

/// Rounds in which the three contenders take turns.
const ROUNDS: usize = 3;

/// Benchmarks the erasure worker end to end against pgbench on this machine (a database and
/// broker names of its own; prints a table of figures and writes it to --out).
#[derive(Clone, Debug, Parser)]
#[command(name = "erasure-bench")]
struct Args {
    /// Customers to seed (a third each for the two pgbench baselines and the worker).
    #[arg(long, default_value_t = 100_000)]
    customers: i64,
    /// Events of each whale (two erased by the worker, their twins by one raw DELETE each).
    #[arg(long, default_value_t = 1_000_000)]
    whale_rows: i64,
    /// Concurrency of the worker and of pgbench (default: worker.concurrency).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Where to write the table of figures.
    #[arg(long, default_value = "target/bench.md")]
    out: PathBuf,
    /// Leave the benchmark's database in place afterwards, to inspect it.
    #[arg(long)]
    keep: bool,
    /// The `erasure` binary to measure (default: the one beside this executable).
    #[arg(long)]
    erasure: Option<PathBuf>,
    /// Directory holding the service's default.toml and $ERASURE_ENV.toml.
    #[arg(long, env = "ERASURE_CONFIG_DIR", default_value = "config")]
    config_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.customers >= 3, "--customers must be at least 3");
    let erasure = Erasure::locate(args.erasure.clone())?;
    eprintln!("measuring {}", erasure.path().display());
    let mut settings = Settings::load(&args.config_dir).context("reading the configuration")?;
    let concurrency = args
        .concurrency
        .unwrap_or(settings.worker.concurrency)
        .max(1);
    let options = PgConnectOptions::from_str(settings.database.url.expose())?;
    let database = format!("{}_bench", options.get_database().unwrap_or("erasure"));
    let url = url::with_database(settings.database.url.expose(), &database);
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
    // Room for every slot's batch, and as many again waiting: a batch forms from what is
    // already delivered.
    settings.worker.prefetch = (concurrency * settings.worker.batch_max.max(1) * 2)
        .max(usize::from(settings.worker.prefetch))
        .min(u16::MAX as usize) as u16;
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
    let pool = erasure::db::prepare(&seeding).await?;
    let batch = settings.worker.batch_max.max(1);
    let script = pgbench::generated_script(
        &erasure.statement(&settings).await?,
        settings.erasure.chunk_threshold,
        batch,
    )?;

    eprintln!(
        "seeding {} customers and four whales of {} events",
        args.customers, args.whale_rows
    );
    let started = Instant::now();
    seed::seed(&pool, args.customers, args.whale_rows).await?;
    let seeding_secs = started.elapsed().as_secs_f64();
    let mut meter = Meter {
        postmaster: server::postmaster(&pool).await,
        worker: None,
    };

    let per_set = args.customers / 3;
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
    let generated_contender = pgbench::Contender {
        script: &script,
        name: "bench_a",
        per_transaction: batch,
        clients: concurrency,
    };
    let naive_contender = pgbench::Contender {
        script: pgbench::NAIVE_SCRIPT,
        name: "bench_b",
        per_transaction: 1,
        clients: concurrency,
    };
    let mut generated = Usage::default();
    let mut naive = Usage::default();
    let mut drain = Usage::default();
    let (mut generated_erased, mut naive_erased, mut worker_checked) = (0, 0, 0);
    let mut rss_kib: Option<u64> = None;
    let (mut batches, mut batched) = (0.0, 0.0);
    let mut backlog_latency = Vec::new();
    for round in 0..rounds {
        let share = |total: usize| total * (round + 1) / rounds - total * round / rounds;
        for turn in 0..3 {
            match (round + turn) % 3 {
                0 => {
                    let (erased, usage) = pgbench::pgbench_phase(
                        &pool,
                        &meter,
                        &url,
                        &generated_contender,
                        share(per_set as usize),
                    )
                    .await?;
                    generated_erased += erased;
                    generated.add(&usage);
                }
                1 => {
                    let (erased, usage) = pgbench::pgbench_phase(
                        &pool,
                        &meter,
                        &url,
                        &naive_contender,
                        share(per_set as usize),
                    )
                    .await?;
                    naive_erased += erased;
                    naive.add(&usage);
                }
                _ => {
                    let from = backlog.len() * round / rounds;
                    let slice = &backlog[from..from + share(backlog.len())];
                    let drained =
                        worker::drain_phase(&pool, &mut meter, &erasure, &settings, slice).await?;
                    worker_checked += slice.len();
                    drain.add(&drained.usage);
                    rss_kib = rss_kib.max(drained.rss_kib);
                    batches += drained.batches.0;
                    batched += drained.batches.1;
                    backlog_latency.push((drained.run.p50_ms, drained.run.p99_ms));
                }
            }
        }
    }
    let pgbench_checked = pgbench::check_pgbench(&pool, 3, generated_erased).await?;
    pgbench::check_pgbench(&pool, 1, naive_erased).await?;

    // Light load, at a tenth of the drain rate: half the requests with the batching settings,
    // half one request a statement, each worker started afresh.
    pgbench::settle_pgbench_events(&pool).await?;
    let steady_rate = (drain.rate() / 10.0).max(1.0);
    let (batching_ids, alone_ids) = paced_ids.split_at(paced_ids.len() / 2);
    let mut alone = settings.clone();
    alone.worker.batch_max = 1;
    let checkpoints_before = server::checkpoints(&pool).await?;
    let mut light = Vec::new();
    for (label, ids, worker_settings) in [
        ("batching on", batching_ids, &settings),
        ("one a statement", alone_ids, &alone),
    ] {
        eprintln!(
            "worker ({label}): {} requests at {steady_rate:.0}/s for latency",
            ids.len()
        );
        let mut running = erasure.spawn_worker(worker_settings)?;
        let started_at = Utc::now();
        let paced = worker::publish_paced(&settings, ids, steady_rate).await?;
        worker::wait_final(&pool, &paced).await?;
        light.push(worker::check_worker(&pool, &paced, started_at).await?);
        rss_kib = rss_kib.max(running.id().and_then(worker::peak_rss_kib));
        let _ = running.start_kill();
        let _ = running.wait().await;
    }
    let latency_checkpoints = server::checkpoints(&pool).await? - checkpoints_before;
    let mut running = erasure.spawn_worker(&settings)?;
    let whale = whales::whale(&pool, &settings, args.whale_rows).await?;
    rss_kib = rss_kib.max(running.id().and_then(worker::peak_rss_kib));
    let _ = running.start_kill();
    let _ = running.wait().await;

    let round_trips = worker::round_trips(&pool, &erasure, &settings, counted_ids).await?;
    let verified = worker::wait_verified(&pool, &erasure, &settings).await?;

    let light_alone = light.pop().expect("two light-load runs");
    let light_batching = light.pop().expect("two light-load runs");
    let results = Results {
        customers: args.customers,
        per_set,
        rounds,
        seeding_secs,
        concurrency,
        batch,
        generated,
        naive,
        drain,
        backlog: backlog.len(),
        backlog_latency,
        batches,
        batched,
        steady_rate,
        worker_checked: worker_checked
            + light_batching.checked
            + light_alone.checked
            + counted_ids.len()
            + 1,
        light_batching,
        light_alone,
        latency_checkpoints,
        counted: counted_ids.len(),
        round_trips,
        whale_rows: args.whale_rows,
        whale,
        rss_kib,
        pgbench_checked,
        verified,
    };
    let table = results.table();
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
    Ok(())
}
