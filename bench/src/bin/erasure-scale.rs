//! `erasure-scale`: the service's own tables at production scale. Seeds a database of its own
//! (`<database>_scale`) with `--deletions` deletions spread over a year and `--audit-rows` audit
//! rows, then measures, against the service running in this process: p50 and p99 of every
//! console page and API read (`--samples` requests each, one at a time), the ledger export's
//! rows per second and memory (the `erasure` binary, over the last `--export-days` days), and
//! the rate of erasures against these tables next to the same erasures against empty ones.
//! Prints a table, and writes it to `--out`.
//!
//!   cargo build --release --workspace
//!   ./target/release/erasure-scale --deletions 10000000 --audit-rows 30000000

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use erasure::config::{Secret, Settings};
use erasure::request::{Channel, ErasureRequest};
use erasure::startup::{Application, Mode};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "erasure-scale")]
struct Args {
    /// Deletions to seed, spread over the last year.
    #[arg(long, default_value_t = 10_000_000)]
    deletions: i64,
    /// Audit rows to seed (three per deletion at the default sizes).
    #[arg(long, default_value_t = 30_000_000)]
    audit_rows: i64,
    /// Requests per read measured.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Days of deletions the ledger export is asked for.
    #[arg(long, default_value_t = 7)]
    export_days: i64,
    /// Customers erased against the full tables, and again against empty ones.
    #[arg(long, default_value_t = 500)]
    erasures: i64,
    #[arg(long, default_value = "target/scale.md")]
    out: PathBuf,
    /// Rows in each of the 20 concurrent CSV downloads (the console's row cap is set to it).
    #[arg(long, default_value_t = 1_000_000)]
    csv_rows: i64,
    /// Measure the tables a previous run seeded (at the same sizes) instead of seeding anew:
    /// seeding 10 million deletions takes a while.
    #[arg(long)]
    reuse: bool,
    #[arg(long, env = "ERASURE_CONFIG_DIR", default_value = "config")]
    config_dir: PathBuf,
}

/// Rows seeded per statement.
const CHUNK: i64 = 500_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = Settings::load(&args.config_dir).context("reading the configuration")?;
    let mut out = String::from("| measure | figure |\n|---|---|\n");
    let full = database(&base, "scale", args.reuse).await?;
    let empty = database(&base, "scale_empty", false).await?;
    let pool = erasure::db::prepare(&seeding(&full)).await?;
    let seeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM erasure.deletions WHERE id ~ '^del_s[0-9]{19}$'")
            .fetch_one(&pool)
            .await?;
    if seeded == args.deletions {
        eprintln!("measuring the {seeded} deletions seeded before");
    } else {
        anyhow::ensure!(
            seeded == 0,
            "the scale database holds {seeded} seeded deletions, not {}: run without --reuse",
            args.deletions
        );
        let started = Instant::now();
        seed_records(&pool, args.deletions, args.audit_rows).await?;
        eprintln!(
            "seeded {} deletions and {} audit rows in {:.0} s",
            args.deletions,
            args.audit_rows,
            started.elapsed().as_secs_f64()
        );
    }
    out.push_str(&format!(
        "| deletions / audit rows | {} / {} |\n",
        args.deletions, args.audit_rows
    ));

    // The service, with the background work that is not measured turned off.
    let app = Application::build(full.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(app.run(Mode::Api, Some(listener), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let key =
        erasure::keys::create(&pool, &format!("scale-{}", Uuid::new_v4().simple()), true).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&client, &base_url, &key).await?;
    let some = |n: i64| format!("del_s{:019}", n);
    // A DONE deletion from the middle of the table (see `seed_records`).
    let middle = (args.deletions / 2..)
        .find(|n| n % 1000 != 7 && n % 50 != 0 && n % 97 != 0)
        .unwrap_or(1);
    let reads: Vec<(&str, String, bool)> = vec![
        (
            "API: list, first page",
            "/v1/permanent-deletions".into(),
            false,
        ),
        (
            "API: one deletion",
            format!("/v1/permanent-deletions/{}", some(middle)),
            false,
        ),
        (
            "API: a customer's latest",
            format!("/v1/customers/cust_s{middle}/permanent-deletion"),
            false,
        ),
        (
            "API: suppression",
            format!("/v1/suppressions/cust_s{middle}"),
            false,
        ),
        (
            "API: receipt",
            format!("/v1/permanent-deletions/{}/receipt", some(middle)),
            false,
        ),
        ("console: overview", "/".into(), true),
        ("console: list", "/deletions".into(), true),
        (
            "console: list, FAILED",
            "/deletions?status=FAILED".into(),
            true,
        ),
        (
            "console: list, overdue",
            "/deletions?overdue=true".into(),
            true,
        ),
        (
            "console: list, completed late",
            "/deletions?deadline=late".into(),
            true,
        ),
        (
            "console: list, page 100",
            "/deletions?page=100".into(),
            true,
        ),
        (
            "console: one deletion",
            format!("/deletions/{}", some(middle)),
            true,
        ),
    ];
    for (name, path, console) in &reads {
        let mut took = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let request = client.get(format!("{base_url}{path}"));
            let request = match console {
                true => request.header("cookie", &cookie),
                false => request.bearer_auth(&key),
            };
            let started = Instant::now();
            let response = request.send().await?;
            let status = response.status();
            response.bytes().await?;
            took.push(started.elapsed());
            anyhow::ensure!(status.is_success(), "{name}: {status}");
        }
        took.sort();
        let (p50, p99) = (
            took[took.len() / 2],
            took[(took.len() * 99 / 100).min(took.len() - 1)],
        );
        eprintln!("{name}: p50 {:.1} ms, p99 {:.1} ms", ms(p50), ms(p99));
        out.push_str(&format!(
            "| {name}: p50 / p99 | {:.1} / {:.1} ms |\n",
            ms(p50),
            ms(p99)
        ));
    }
    shutdown.cancel();
    let _ = served.await;

    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM erasure.deletions WHERE status = 'DONE'")
            .fetch_one(&pool)
            .await?;
    let (downloads, rows, secs, idle, grown) =
        csv_downloads(&full, &cookie, args.csv_rows, done).await?;
    out.push_str(&format!(
        "| console: CSV, {downloads} downloads of {rows} rows at once: seconds, memory idle / grown | {secs:.0} s, {:.0} / +{:.0} MiB |\n",
        idle as f64 / 1024.0,
        grown as f64 / 1024.0
    ));

    let (rows, secs, peak) = export(&full, args.export_days).await?;
    out.push_str(&format!(
        "| ledger export, last {} days: rows, rows/s, peak memory | {rows}, {:.0}, {:.0} MiB |\n",
        args.export_days,
        rows as f64 / secs,
        peak as f64 / 1024.0
    ));

    let with = erasure_rate(&full, args.erasures).await?;
    let without = erasure_rate(&empty, args.erasures).await?;
    out.push_str(&format!(
        "| erasures/s, full tables / empty tables (ratio) | {with:.0} / {without:.0} ({:.2}x) |\n",
        with / without
    ));
    println!("{out}");
    std::fs::write(&args.out, &out)?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Settings for a database `<database>_<suffix>` (fresh, unless `reuse`), with the background
/// work that is not measured (the check after commit, sealing, the retention) off.
async fn database(base: &Settings, suffix: &str, reuse: bool) -> anyhow::Result<Settings> {
    let options = PgConnectOptions::from_str(base.database.url.expose())?;
    let name = format!("{}_{suffix}", options.get_database().unwrap_or("erasure"));
    if !reuse {
        let mut admin = options.clone().database("postgres").connect().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    let mut settings = base.clone();
    settings.database.url = Secret::new(options.database(&name).to_url_lossy().to_string());
    settings.database.reference_schema = true;
    settings.proof.verify_every_ms = 0;
    settings.proof.seal_every_ms = 0;
    settings.http.rate_limit_per_minute = 1_000_000;
    Ok(settings)
}

fn seeding(settings: &Settings) -> erasure::config::DatabaseSettings {
    let mut db = settings.database.clone();
    db.statement_timeout_ms = 3_600_000;
    db
}

/// Deletions over the last year (one in fifty FAILED, one in ninety-seven CANCELED, one in a
/// thousand still open, one in five hundred due when it was asked and so completed late), each
/// with audit rows, in chunks.
async fn seed_records(pool: &PgPool, deletions: i64, audit_rows: i64) -> anyhow::Result<()> {
    let per = (audit_rows / deletions.max(1)).max(1);
    let mut from = 1;
    while from <= deletions {
        let to = (from + CHUNK - 1).min(deletions);
        sqlx::query(
            "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, error_key, data_json, \
               requested_by, requested_at, due_at, created_at, completed_at, channel) \
             SELECT 'del_s' || lpad(n::text, 19, '0'), gen_random_uuid(), 'cust_s' || n, \
               CASE WHEN n % 1000 = 7 THEN 'PENDING' WHEN n % 50 = 0 THEN 'FAILED' WHEN n % 97 = 0 THEN 'CANCELED' ELSE 'DONE' END, \
               CASE WHEN n % 1000 <> 7 AND n % 50 = 0 THEN 'conflict' END, \
               '{\"events\": 3, \"customer\": 1}', 'crm', t, \
               CASE WHEN n % 500 = 3 THEN t ELSE t + interval '1 month' END, t, \
               CASE WHEN n % 1000 = 7 THEN NULL ELSE t + interval '1 minute' END, 'amqp' \
             FROM (SELECT n, now() - ($3 - n) * (interval '365 days' / $3) AS t FROM generate_series($1, $2) n) s",
        )
        .bind(from)
        .bind(to)
        .bind(deletions)
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO erasure.audit_log (recorded_at, action, request_id, deletion_id, related_object_id, channel, detail) \
             SELECT d.created_at, CASE WHEN k = 1 THEN 'erasure.done' ELSE 'request.accepted' END, d.request_id, d.id, \
               d.related_object_id, 'amqp', '{}' \
             FROM erasure.deletions d, generate_series(1, $3) k \
             WHERE d.id BETWEEN 'del_s' || lpad($1::text, 19, '0') AND 'del_s' || lpad($2::text, 19, '0')",
        )
        .bind(from)
        .bind(to)
        .bind(per)
        .execute(pool)
        .await?;
        eprintln!("seeded deletions up to {to}");
        from = to + 1;
    }
    for table in ["erasure.deletions", "erasure.audit_log"] {
        sqlx::raw_sql(&format!("VACUUM (ANALYZE) {table}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn sign_in(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await?;
    let cookie = response
        .headers()
        .get("set-cookie")
        .context("the console set no cookie")?
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(cookie)
}

/// `erasure ledger export --since` over the last `days`: lines, seconds, peak resident KiB.
async fn export(settings: &Settings, days: i64) -> anyhow::Result<(usize, f64, u64)> {
    let binary = std::env::current_exe()?.with_file_name("erasure");
    let since = (Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    let out = std::env::temp_dir().join(format!("erasure-scale-{}.jsonl", Uuid::new_v4()));
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args(["ledger", "export", "--since", &since, "--out"])
        .arg(&out)
        .env("ERASURE_DATABASE_URL", settings.database.url.expose())
        .env("ERASURE_DATABASE__REFERENCE_SCHEMA", "true")
        .spawn()
        .context("running the erasure binary beside this one")?;
    let pid = child.id().context("the export has a process id")?;
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "the export failed: {status}");
            break;
        }
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows = std::fs::read_to_string(&out)?.lines().count();
    let _ = std::fs::remove_file(&out);
    Ok((rows, secs, peak))
}

/// A process's resident memory, in KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Twenty CSV downloads of `rows` DONE deletions at once from the `erasure api` binary in a
/// process of its own (so its memory is the service's alone): downloads, rows each, seconds,
/// resident KiB idle and grown at the peak.
async fn csv_downloads(
    settings: &Settings,
    cookie: &str,
    rows: i64,
    done: i64,
) -> anyhow::Result<(usize, i64, f64, u64, u64)> {
    const DOWNLOADS: usize = 20;
    let binary = std::env::current_exe()?.with_file_name("erasure");
    // The service's log, kept where a failed download says.
    let log = std::env::temp_dir().join(format!("erasure-scale-csv-{}.log", Uuid::new_v4()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(binary)
        .arg("api")
        .envs(settings.connection_environment())
        .env("ERASURE_DATABASE__REFERENCE_SCHEMA", "true")
        .env("ERASURE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ERASURE_HTTP__RATE_LIMIT_PER_MINUTE", "1000000")
        .env("ERASURE_CONSOLE__CSV_MAX_ROWS", rows.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("running the erasure binary beside this one")?;
    let pid = child.id().context("the service has a process id")?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(up, "the service did not start");
    // Warm: one small page, so that idle is a serving process.
    client
        .get(format!("{base}/deletions"))
        .header("cookie", cookie)
        .send()
        .await?
        .bytes()
        .await?;
    let idle = resident_kib(pid).unwrap_or(0);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..DOWNLOADS {
        let request = client
            .get(format!("{base}/deletions.csv?status=DONE"))
            .header("cookie", cookie)
            .send();
        tasks.push(tokio::spawn(async move {
            let mut response = request.await?;
            anyhow::ensure!(response.status().is_success(), "CSV: {}", response.status());
            let mut lines = 0_i64;
            while let Some(chunk) = response.chunk().await? {
                lines += chunk.iter().filter(|b| **b == b'\n').count() as i64;
            }
            Ok(lines)
        }));
    }
    let mut peak = idle;
    let watch = async {
        loop {
            peak = peak.max(resident_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let all = async {
        let mut counted = Vec::new();
        for task in tasks {
            counted.push(task.await??);
        }
        anyhow::Ok(counted)
    };
    let counted = tokio::select! {
        counted = all => counted.with_context(|| format!("a download failed; the service's log: {}", log.display()))?,
        () = watch => unreachable!("the watch never ends"),
    };
    let secs = started.elapsed().as_secs_f64();
    // A header, the rows, and the line that says the cap was reached (if it was).
    let expected = if done > rows { rows + 2 } else { done + 1 };
    for lines in &counted {
        anyhow::ensure!(*lines == expected, "a CSV of {lines} lines, not {expected}");
    }
    child.kill().await?;
    Ok((
        DOWNLOADS,
        rows.min(done),
        secs,
        idle,
        peak.saturating_sub(idle),
    ))
}

/// Erasures per second of `count` seeded customers, one after another, in-process.
async fn erasure_rate(settings: &Settings, count: i64) -> anyhow::Result<f64> {
    // Customers of this run's own, never erased before (a reused database holds earlier runs').
    let prefix = format!("rate_{}_", &Uuid::new_v4().simple().to_string()[..8]);
    let pool = erasure::db::prepare(&seeding(settings)).await?;
    sqlx::query(
        "INSERT INTO customers (id, source_id, name, email) \
         SELECT $2 || c, 'src_' || $2 || c, 'Name ' || c, $2 || c || '@mail.example' FROM generate_series(1, $1) c",
    )
    .bind(count)
    .bind(&prefix)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO events (customer_id, type, metadata) \
         SELECT $2 || c, 'viewed', '{}' FROM generate_series(1, $1) c, generate_series(1, 20) n",
    )
    .bind(count)
    .bind(&prefix)
    .execute(&pool)
    .await?;
    sqlx::raw_sql("ANALYZE").execute(&pool).await?;
    let app = Application::build(settings.clone()).await?;
    let eraser = app.eraser.clone();
    let started = Instant::now();
    for c in 1..=count {
        let request = ErasureRequest {
            request_id: Uuid::new_v4(),
            customer_id: format!("{prefix}{c}"),
            requested_by: "scale".into(),
            reason: None,
            requested_at: None,
            identifier_type: None,
        };
        let received = eraser
            .receive(request, Channel::Cli, Utc::now())
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        eraser.erase(&received).await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
