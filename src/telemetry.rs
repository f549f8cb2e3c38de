//! Logs: JSON lines on stderr, filtered by `RUST_LOG` (default `info`, with PostgreSQL's
//! notices only from `warn`).
//!
//! Fields carry ids (`request_id`, `deletion_id`), never a customer's personal data.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // A second call (tests spawning several applications) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
