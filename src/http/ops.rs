//! Liveness, readiness and metrics. No authentication: these carry no customer data.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::HttpState;

/// How long readiness waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 only while PostgreSQL and RabbitMQ both answer (and, in a process that consumes, while
/// its consumer is connected).
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let database = async {
        tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    };
    let consumer_connected = state
        .consumer
        .as_ref()
        .is_none_or(|c| c.load(std::sync::atomic::Ordering::SeqCst));
    let broker = async {
        consumer_connected
            && tokio::time::timeout(PROBE_TIMEOUT, state.publisher.is_reachable())
                .await
                .unwrap_or(false)
    };
    let (database, broker) = tokio::join!(database, broker);
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ready = if status == StatusCode::OK {
        "ready"
    } else {
        "not_ready"
    };
    (
        status,
        Json(json!({ "status": ready, "database": word(database), "broker": word(broker) })),
    )
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    match crate::deletion::store::count_overdue(&state.pool).await {
        Ok(n) => crate::metrics::overdue(n),
        Err(e) => {
            tracing::warn!(error = %crate::db::SafeError(&e), "could not count overdue deletions")
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
