//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::deletion::{DeletionRow, DeletionStatus, ErrorKey};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds: from a millisecond to half a minute.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Requests per batch.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Installs the process's recorder (once) and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("the buckets are not empty")
                .set_buckets_for_metric(Matcher::Full("erasure_batch_size".into()), SIZES)
                .expect("the buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "erasure_outcomes_total",
        "Erasure outcomes recorded, by status and error key"
    );
    describe_histogram!(
        "erasure_duration_seconds",
        "Time from receiving a request to its recorded outcome"
    );
    describe_counter!("erasure_rows_total", "Rows erased or anonymized, by table");
    describe_counter!(
        "erasure_http_requests_total",
        "HTTP requests answered, by method, matched route and status"
    );
    describe_histogram!(
        "erasure_http_request_duration_seconds",
        "HTTP request handling time, by method and matched route"
    );
    describe_histogram!(
        "erasure_batch_size",
        "Deliveries per batch the worker formed"
    );
    describe_histogram!("erasure_batch_seconds", "Time of one batch statement");
    describe_counter!(
        "erasure_unprobed_large_total",
        "Customers larger than the chunk threshold erased in one statement: the statistics did not show them as large"
    );
    describe_counter!(
        "erasure_batch_fallbacks_total",
        "Batch statements that failed, their requests then carried out one at a time"
    );
    describe_counter!(
        "erasure_verifications_total",
        "Checks after commit of DONE deletions, by outcome (passed, failed)"
    );
    describe_counter!("erasure_audit_seals_total", "Seals made over the audit log");
    describe_gauge!(
        "erasure_audit_oldest_unsealed_seconds",
        "How long the oldest audit row not sealed yet has waited"
    );
    describe_counter!(
        "erasure_audit_rows_sealed_total",
        "Audit rows covered by a seal"
    );
    describe_gauge!(
        "erasure_deletions_overdue",
        "Open deletions past their due date (read at scrape time)"
    );
}

/// Records a final outcome and the rows it erased.
pub fn outcome(row: &DeletionRow, took: Duration) {
    let error_key = row.error_key.map_or("none", |key| key.as_str());
    let status = row.status.as_str();
    counter!("erasure_outcomes_total", "status" => status, "error_key" => error_key).increment(1);
    histogram!("erasure_duration_seconds", "status" => status).record(took.as_secs_f64());
    if let Some(counts) = row.data_json.as_object() {
        for (table, n) in counts {
            if let Some(n) = n.as_u64().filter(|n| *n > 0) {
                counter!("erasure_rows_total", "table" => table.clone()).increment(n);
            }
        }
    }
}

/// Records a message rejected before it named a customer.
pub fn rejected() {
    counter!(
        "erasure_outcomes_total",
        "status" => DeletionStatus::Failed.as_str(),
        "error_key" => ErrorKey::InvalidRequest.as_str()
    )
    .increment(1);
}

/// Records an HTTP request. Every label is bounded: `method` one of the standard methods or
/// "other", `route` a route template or "unmatched", `status` a status code.
pub fn http_request(method: &'static str, route: &str, status: u16, took: Duration) {
    counter!("erasure_http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!("erasure_http_request_duration_seconds", "method" => method, "route" => route.to_owned())
        .record(took.as_secs_f64());
}

/// Records a batch of `size` deliveries the worker formed.
pub fn batch_formed(size: usize) {
    histogram!("erasure_batch_size").record(size as f64);
}

/// Records a batch statement and how long it took.
pub fn batch_statement(took: Duration) {
    histogram!("erasure_batch_seconds").record(took.as_secs_f64());
}

pub fn batch_fell_back() {
    counter!("erasure_batch_fallbacks_total").increment(1);
}

/// A customer larger than the chunk threshold was erased in one statement, not probed.
pub fn unprobed_large() {
    counter!("erasure_unprobed_large_total").increment(1);
}

pub fn overdue(count: i64) {
    gauge!("erasure_deletions_overdue").set(count as f64);
}

/// A check after commit ran on a DONE deletion.
pub fn verification(passed: bool) {
    let outcome = if passed { "passed" } else { "failed" };
    counter!("erasure_verifications_total", "outcome" => outcome).increment(1);
}

/// A seal over `rows` audit rows was made.
pub fn unsealed_age(waited: std::time::Duration) {
    gauge!("erasure_audit_oldest_unsealed_seconds").set(waited.as_secs_f64());
}

pub fn sealed(rows: usize) {
    counter!("erasure_audit_seals_total").increment(1);
    counter!("erasure_audit_rows_sealed_total").increment(rows as u64);
}
