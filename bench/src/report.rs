//! The table a run prints and writes.
use std::fmt::Write as _;

use crate::cpu::Usage;
use crate::whales::Whale;
use crate::worker::{Verified, WorkerRun};

/// Rows of measures and figures.
#[derive(Default)]
pub struct Figures {
    pub rows: Vec<(String, String)>,
}

impl Figures {
    pub fn row(&mut self, measure: impl Into<String>, figure: impl ToString) {
        self.rows.push((measure.into(), figure.to_string()));
    }

    pub fn markdown(&self) -> String {
        let mut table = String::from("| measure | figure |\n|---|---|\n");
        for (measure, figure) in &self.rows {
            let _ = writeln!(table, "| {measure} | {figure} |");
        }
        table
    }
}

/// Everything a run measured, for the table.
pub struct Results {
    pub customers: i64,
    pub per_set: i64,
    pub rounds: usize,
    pub seeding_secs: f64,
    pub concurrency: usize,
    /// The worker's `batch_max`, and the statement size pgbench runs.
    pub batch: usize,
    pub generated: Usage,
    pub naive: Usage,
    pub drain: Usage,
    pub backlog: usize,
    /// p50 and p99 from publish to DONE of each drain, in ms.
    pub backlog_latency: Vec<(f64, f64)>,
    /// The batches the worker formed while draining, and the requests in them.
    pub batches: f64,
    pub batched: f64,
    pub steady_rate: f64,
    pub light_batching: WorkerRun,
    pub light_alone: WorkerRun,
    pub latency_checkpoints: i64,
    pub counted: usize,
    pub round_trips: Option<f64>,
    pub whale_rows: i64,
    pub whale: Whale,
    pub rss_kib: Option<u64>,
    pub worker_checked: usize,
    pub pgbench_checked: usize,
    /// The checks after commit of the worker's erasures, when switched on.
    pub verified: Option<Verified>,
}

impl Results {
    pub fn table(&self) -> String {
        let (generated_rate, naive_rate, drain_rate) =
            (self.generated.rate(), self.naive.rate(), self.drain.rate());
        let whale = &self.whale;
        let mut figures = Figures::default();
        figures.row(
            format!(
                "customers seeded (3 sets of {}, each erased over {} rounds) + 4 whales",
                self.per_set, self.rounds
            ),
            format!("{} in {:.1} s", self.customers, self.seeding_secs),
        );
        figures.row(
            "concurrency (worker slots, pgbench clients)",
            self.concurrency,
        );
        figures.row(
            format!(
                "pgbench, the worker's statement, {} customers a statement (`-M prepared`)",
                self.batch
            ),
            format!("{generated_rate:.0} erasures/s"),
        );
        figures.row(
            "pgbench, naive per-table transaction, one customer a transaction",
            format!("{naive_rate:.0} erasures/s"),
        );
        figures.row(
            format!(
                "worker (batch_max {}), draining a backlog of {} requests (the worker started after they were published)",
                self.batch, self.backlog
            ),
            format!("{drain_rate:.0} erasures/s"),
        );
        figures.row(
            "batches the worker formed while draining (mean size)",
            format!(
                "{:.0} batches of {:.1} requests",
                self.batches,
                self.batched / self.batches.max(1.0)
            ),
        );
        figures.row(
            "worker / pgbench, the worker's statement",
            format!("{:.2}x", drain_rate / generated_rate),
        );
        figures.row(
            "worker / pgbench naive",
            format!("{:.2}x", drain_rate / naive_rate),
        );
        let backlog: Vec<String> = self
            .backlog_latency
            .iter()
            .map(|(p50, p99)| format!("{p50:.0} / {p99:.0} ms"))
            .collect();
        figures.row(
            "latency publish to DONE under the backlog (each drain), p50 / p99",
            backlog.join("; "),
        );
        for (label, run) in [
            ("batching on", &self.light_batching),
            ("one request a statement", &self.light_alone),
        ] {
            figures.row(
                format!(
                    "latency publish to DONE at {:.0} requests/s ({} requests), {label}, p50 / p99",
                    self.steady_rate, run.checked
                ),
                format!("{:.1} ms / {:.1} ms", run.p50_ms, run.p99_ms),
            );
        }
        figures.row(
            "checkpoints the server began during the latency measurement",
            self.latency_checkpoints,
        );
        figures.row(
            format!(
                "database round trips per typical erasure, its outcome event included ({} erasures)",
                self.counted
            ),
            self.round_trips.map_or(
                "unknown (the database is not reached over TCP)".into(),
                |r| format!("{r:.2}"),
            ),
        );
        for (label, usage) in [
            ("pgbench generated", &self.generated),
            ("pgbench naive", &self.naive),
            ("worker draining", &self.drain),
        ] {
            figures.row(format!("CPU ms per erasure, {label}"), usage.describe());
        }
        figures.row(
            "whales, worker chunked (each from publish to DONE)",
            format!(
                "{:.0} rows/s (2 x {} rows in {:.2} s)",
                whale.worker_rate, self.whale_rows, whale.worker_secs
            ),
        );
        figures.row(
            "whales, one raw DELETE each",
            format!(
                "{:.0} rows/s (2 x {} rows in {:.2} s)",
                whale.raw_rate, self.whale_rows, whale.raw_secs
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
            self.rss_kib.map_or("unknown".into(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            }),
        );
        figures.row(
            "every count equal to the truth table",
            format!(
                "yes ({} worker and {} pgbench deletions checked)",
                self.worker_checked, self.pgbench_checked
            ),
        );
        figures.row(
            "every DONE erasure of the worker checked after commit, nothing left",
            self.verified
                .as_ref()
                .map_or("not run (proof.verify_every_ms = 0)".into(), |v| {
                    format!(
                        "yes ({} checked; {:.1} s of checks were left once the erasures ended)",
                        v.passed, v.lag_secs
                    )
                }),
        );
        figures.markdown()
    }
}
