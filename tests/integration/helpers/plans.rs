//! For the tests of plans on schemas of their own: erase one customer in the test's process,
//! checksum what must not change, and the plan check's gaps.

use chrono::Utc;
use erasure::deletion::DeletionRow;
use erasure::erase::Outcome;
use erasure::plan::{Plan, check};
use erasure::request::{Channel, ErasureRequest, Received};
use uuid::Uuid;

use super::TestApp;

/// A request to erase the customer `identifier` names, received now (as the worker receives a
/// message), ready for the eraser or a batch.
pub fn received(app: &TestApp, identifier: &str) -> Received {
    let request = ErasureRequest {
        request_id: Uuid::new_v4(),
        customer_id: identifier.to_owned(),
        requested_by: "dpo".into(),
        reason: None,
        requested_at: None,
        identifier_type: None,
    };
    app.eraser()
        .receive(request, Channel::Cli, Utc::now())
        .unwrap()
}

/// Erases the customer `identifier` names and returns the recorded outcome.
pub async fn erase_one(app: &TestApp, identifier: &str) -> DeletionRow {
    match app
        .eraser()
        .erase(&received(app, identifier))
        .await
        .unwrap()
    {
        Outcome::Recorded(row) => row,
        other => panic!("expected a recorded outcome, got {other:?}"),
    }
}

/// One checksum over the rows `query` selects.
pub async fn checksum_of(app: &TestApp, query: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(&format!(
        "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ({query}) t"
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .unwrap_or_default()
}

/// What the plan check says of `plan` against the test's database: empty when it passes.
pub async fn gaps_of(app: &TestApp, plan: &str) -> String {
    match Plan::parse(plan) {
        Err(e) => e.to_string(),
        Ok(plan) => match check::against_live_schema(plan, &app.pool).await {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        },
    }
}
