//! The baselines: pgbench running the worker's own statement, and pgbench running the naive
//! per-table transaction a hand-written script would use.
use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cpu::{Meter, Usage};
use crate::seed::truth;
use crate::server::quiesce;

/// The worker's statement as pgbench runs it: exactly as `erasure plan --sql` prints it, with
/// real parameters (`-M prepared`), for `batch` customers a statement as the worker forms them.
/// The parameters of each statement (the next customers of set 0, new request ids, ...) come
/// from a query before it, as the naive script's customer does; which parameter takes what,
/// the printed list of parameters says.
pub fn generated_script(
    printed: &str,
    chunk_threshold: i64,
    batch: usize,
) -> anyhow::Result<String> {
    let mut values = Vec::new();
    let mut sql = Vec::new();
    for line in printed.lines() {
        let Some(param) = line.strip_prefix("--   $") else {
            if !line.starts_with("--") {
                sql.push(line);
            }
            continue;
        };
        let mut words = param.splitn(3, ' ');
        let (number, sql_type, rest) = (
            words.next(),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        let number: usize = number.context("a parameter's number")?.parse()?;
        let (name, constant) = match rest.split_once(" = ") {
            Some((name, constant)) => (name, Some(constant)),
            None => (rest, None),
        };
        let each = |expression: &str| {
            if sql_type.ends_with("[]") {
                format!("ARRAY(SELECT {expression} FROM generate_series(1, {batch}))")
            } else {
                expression.to_owned()
            }
        };
        let expression = match (name, constant) {
            (_, Some(constant)) => constant.to_owned(),
            ("customer" | "key", _) => "x.c".to_owned(),
            ("request_id", _) => each("gen_random_uuid()"),
            ("deletion_id", _) => each("'del_' || substr(md5(random()::text), 1, 24)"),
            ("requested_hash", _) => each("sha256(convert_to(clock_timestamp()::text, 'UTF8'))"),
            ("requested_by", _) => each("'pgbench'"),
            ("reason", _) => each("'bench'"),
            ("requested_at" | "received_at", _) => each("now()"),
            ("due_at", _) => each("now() + interval '1 month'"),
            ("channel", _) => each("'cli'"),
            // No identifier type: the key, as the worker's requests name it.
            ("kind", _) => each("NULL::text"),
            ("inner_pad", _) => "decode(repeat('36', 64), 'hex')".to_owned(),
            ("outer_pad", _) => "decode(repeat('5c', 64), 'hex')".to_owned(),
            ("chunk_threshold", _) => chunk_threshold.to_string(),
            // The worker probes for size only the customers the statistics say may be large:
            // none of pgbench's.
            ("probed", _) => "ARRAY[]::text[]".to_owned(),
            (other, None) => {
                anyhow::bail!("the statement takes a parameter {other:?} unknown here")
            }
        };
        values.push((number, expression));
    }
    let params: Vec<String> = values
        .iter()
        .map(|(n, expression)| format!("{expression} AS p{n}"))
        .collect();
    let mut sql = sql.join(" ");
    for (n, _) in values.iter().rev() {
        sql = sql.replace(&format!("${n}"), &format!(":p{n}"));
    }
    Ok(format!(
        "SELECT {} FROM (SELECT array_agg('c' || (3 * nextval('bench_a'))::text) AS c FROM generate_series(1, {batch})) x \\gset\n{}\n",
        params.join(", "),
        sql.trim_end()
    ))
}

/// One statement per table in a transaction, as a hand-written script would do it.
pub const NAIVE_SCRIPT: &str = "\
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
    erasures: i64,
    per_transaction: usize,
    clients: usize,
) -> anyhow::Result<(f64, i64)> {
    let per_transaction = per_transaction.max(1) as i64;
    let transactions = (erasures / per_transaction).max(1);
    let clients = clients.min(transactions as usize).max(1);
    let per_client = (transactions / clients as i64).max(1);
    let path = std::env::temp_dir().join(format!("erasure-{name}-{}.sql", Uuid::new_v4()));
    std::fs::write(&path, script)?;
    eprintln!(
        "pgbench {name}: {} erasures, {per_transaction} a transaction, {clients} clients",
        per_client * clients as i64 * per_transaction
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
    Ok((
        tps * per_transaction as f64,
        per_client * clients as i64 * per_transaction,
    ))
}

/// One pgbench contender: its script, the name of its sequence, and how it runs.
pub struct Contender<'a> {
    pub script: &'a str,
    pub name: &'a str,
    /// Customers each transaction erases.
    pub per_transaction: usize,
    pub clients: usize,
}

/// Runs pgbench for `erasures` erasures of `contender` from a quiet database; returns how many
/// it ran and the CPU they took.
pub async fn pgbench_phase(
    pool: &PgPool,
    meter: &Meter,
    url: &str,
    contender: &Contender<'_>,
    erasures: usize,
) -> anyhow::Result<(i64, Usage)> {
    quiesce(pool).await?;
    let wal = crate::server::wal_position(pool).await?;
    let before = meter.sample();
    let clock = Instant::now();
    let (rate, erased) = pgbench(
        url,
        contender.script,
        contender.name,
        erasures as i64,
        contender.per_transaction,
        contender.clients,
    )
    .await?;
    let wall = clock.elapsed().as_secs_f64();
    let usage = before
        .until(&meter.sample(), wall, erased as u64, erased as f64 / rate)
        .with_wal(crate::server::wal_position(pool).await? - wal);
    Ok((erased, usage))
}

/// The first `erased` customers of a pgbench set (`first` + 3k) are gone with their rows, and
/// the deletions the generated statement recorded hold the truth table's counts.
pub async fn check_pgbench(pool: &PgPool, first: i64, erased: i64) -> anyhow::Result<usize> {
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

/// What pgbench recorded owes no outcome event and no check after commit: the worker's
/// publisher and verifier leave it alone, and measure the worker's own erasures only.
pub async fn settle_pgbench_events(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "WITH events AS (DELETE FROM erasure.event_outbox o USING erasure.deletions d \
           WHERE d.id = o.deletion_id AND d.channel = 'cli') \
         DELETE FROM erasure.verification_queue q USING erasure.deletions d \
         WHERE d.id = q.deletion_id AND d.channel = 'cli'",
    )
    .execute(pool)
    .await?;
    Ok(())
}
