//! The `erasure` binary the benchmark measures: it runs the worker and prints the statement
//! that pgbench runs, exactly as shipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, ensure};
use erasure::config::Settings;

pub struct Erasure {
    path: PathBuf,
}

impl Erasure {
    /// `given`, or the `erasure` beside this benchmark's own executable (both are built into
    /// the same `target/<profile>/`).
    pub fn locate(given: Option<PathBuf>) -> anyhow::Result<Self> {
        let path = match given {
            Some(path) => path,
            None => std::env::current_exe()?
                .parent()
                .context("the benchmark's executable has no folder")?
                .join("erasure"),
        };
        ensure!(
            path.is_file(),
            "no erasure binary at {}: build it first (cargo build --release --workspace), or name one with --erasure",
            path.display()
        );
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn command(&self, settings: &Settings) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.path);
        command
            .envs(settings.connection_environment())
            .env(
                "ERASURE_DATABASE__MAX_CONNECTIONS",
                settings.database.max_connections.to_string(),
            )
            .env_remove("ERASURE_ENV")
            .kill_on_drop(true);
        command
    }

    /// Starts `erasure worker` with `settings`' connections, concurrency, prefetch, batches and
    /// operations address.
    pub fn spawn_worker(&self, settings: &Settings) -> anyhow::Result<tokio::process::Child> {
        let worker = &settings.worker;
        Ok(self
            .command(settings)
            .arg("worker")
            .env(
                "ERASURE_WORKER__CONCURRENCY",
                worker.concurrency.to_string(),
            )
            .env("ERASURE_WORKER__PREFETCH", worker.prefetch.to_string())
            .env("ERASURE_WORKER__BATCH_MAX", worker.batch_max.to_string())
            .env(
                "ERASURE_WORKER__BATCH_WAIT_MS",
                worker.batch_wait_ms.to_string(),
            )
            .envs(
                worker
                    .ops_addr
                    .map(|addr| ("ERASURE_WORKER__OPS_ADDR", addr.to_string())),
            )
            // One runtime thread: on a machine it shares with PostgreSQL and RabbitMQ, the
            // worker spends less CPU per erasure waking threads (BENCHMARKS.md). Set it to
            // compare.
            .env(
                "TOKIO_WORKER_THREADS",
                std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| "1".into()),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?)
    }

    /// The erasure statement, as `erasure plan --sql` prints it against `settings`' database.
    pub async fn statement(&self, settings: &Settings) -> anyhow::Result<String> {
        let output = self
            .command(settings)
            .args(["plan", "--sql"])
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "erasure plan --sql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }
}
