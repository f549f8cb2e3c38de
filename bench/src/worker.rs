//! Driving the worker under measure: publishing requests (a backlog, or at a steady rate),
//! waiting for their outcomes, and checking every count against the truth table.
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use erasure::broker;
use erasure::config::{Secret, Settings};
use erasure_testkit::RoundTripCounter;
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::binary::Erasure;
use crate::cpu::{Meter, Usage};
use crate::pgbench::settle_pgbench_events;
use crate::seed::truth;
use crate::server::quiesce;
use crate::url::with_host;

/// What one drain of a backlog measured.
pub struct Drain {
    /// CPU over the time from the worker's start to the last completion.
    pub usage: Usage,
    pub rss_kib: Option<u64>,
    /// Latency from publish to DONE, which under a backlog is mostly waiting in the queue.
    pub run: WorkerRun,
    /// The batches the worker formed: how many, and the requests in them.
    pub batches: (f64, f64),
}

/// Publishes a request for each of `customers`, then starts a worker on a quiet database and
/// lets it drain them.
pub async fn drain_phase(
    pool: &PgPool,
    meter: &mut Meter,
    erasure: &Erasure,
    settings: &Settings,
    customers: &[i64],
) -> anyhow::Result<Drain> {
    settle_pgbench_events(pool).await?;
    let published = publish(settings, customers).await?;
    quiesce(pool).await?;
    let wal = crate::server::wal_position(pool).await?;
    let before = meter.sample();
    let clock = Instant::now();
    let mut observed = settings.clone();
    observed.worker.ops_addr = Some(free_address()?);
    let mut worker = erasure.spawn_worker(&observed)?;
    let started_at = Utc::now();
    meter.worker = worker.id();
    wait_final(pool, &published).await?;
    let after = meter.sample();
    let wall = clock.elapsed().as_secs_f64();
    let wal = crate::server::wal_position(pool).await? - wal;
    let rss_kib = worker.id().and_then(peak_rss_kib);
    let batches = batch_sizes(observed.worker.ops_addr.expect("set")).await?;
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    meter.worker = None;
    let run = check_worker(pool, &published, started_at).await?;
    let seconds = published.len() as f64 / run.rate;
    Ok(Drain {
        usage: before
            .until(&after, wall, published.len() as u64, seconds)
            .with_wal(wal),
        rss_kib,
        run,
        batches,
    })
}

/// A free local address for a worker's operations routes.
pub fn free_address() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The batches a worker formed, read from its metrics: how many, and the requests in them.
async fn batch_sizes(addr: std::net::SocketAddr) -> anyhow::Result<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("erasure_batch_size_count"),
        value("erasure_batch_size_sum"),
    ))
}

/// A request the benchmark published: its id, its customer's number and when.
#[derive(Clone, Copy)]
pub struct Published {
    pub request_id: Uuid,
    pub customer: i64,
    pub at: DateTime<Utc>,
}

pub fn request_body(customer: i64) -> (Uuid, Vec<u8>) {
    let id = Uuid::new_v4();
    let body =
        json!({"request_id": id, "customer_id": format!("c{customer}"), "requested_by": "bench"});
    (id, serde_json::to_vec(&body).expect("JSON"))
}

/// Publishes one request per customer of `customers`, as fast as the broker confirms them.
pub async fn publish(settings: &Settings, customers: &[i64]) -> anyhow::Result<Vec<Published>> {
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
pub async fn publish_paced(
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
pub async fn wait_final(pool: &PgPool, published: &[Published]) -> anyhow::Result<usize> {
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
pub struct WorkerRun {
    /// Erasures per second from `since` to the last completion.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub checked: usize,
}

/// Checks every outcome of `published` against the truth table, and measures.
pub async fn check_worker(
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
pub async fn round_trips(
    pool: &PgPool,
    erasure: &Erasure,
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
    let mut worker = erasure.spawn_worker(&through)?;
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
            "SELECT count(*) FROM erasure.event_outbox o JOIN erasure.deletions d ON d.id = o.deletion_id \
             WHERE d.request_id = ANY($1)",
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

/// The peak resident set of process `pid`, from /proc (Linux).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What the check after commit found of the worker's erasures.
pub struct Verified {
    pub passed: i64,
    /// How long the last checks took to finish once the benchmark was done erasing.
    pub lag_secs: f64,
}

/// Runs a worker until the check after commit has run on every DONE deletion it queued; a
/// check that found something left fails the run, as a wrong count does. `None` when the
/// checks are switched off (`proof.verify_every_ms = 0`).
pub async fn wait_verified(
    pool: &PgPool,
    erasure: &Erasure,
    settings: &Settings,
) -> anyhow::Result<Option<Verified>> {
    if settings.proof.verify_every_ms == 0 {
        return Ok(None);
    }
    let started = Instant::now();
    let mut running = erasure.spawn_worker(settings)?;
    let queued = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM erasure.verification_queue")
            .fetch_one(pool)
            .await
    };
    while queued().await? > 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the checks after commit did not finish in an hour"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lag_secs = started.elapsed().as_secs_f64();
    let _ = running.start_kill();
    let _ = running.wait().await;
    let failed: Vec<(String, Value)> = sqlx::query_as(
        "SELECT deletion_id, outcome FROM erasure.verifications WHERE outcome->>'outcome' <> 'passed' LIMIT 5",
    )
    .fetch_all(pool)
    .await?;
    ensure!(
        failed.is_empty(),
        "the check after commit found data left: {failed:?}"
    );
    let passed = sqlx::query_scalar("SELECT count(*) FROM erasure.verifications")
        .fetch_one(pool)
        .await?;
    Ok(Some(Verified { passed, lag_secs }))
}
