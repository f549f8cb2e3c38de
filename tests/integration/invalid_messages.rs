use uuid::Uuid;

use crate::helpers::{Shape, TestApp};
use erasure::deletion::{DeletionStatus, ErrorKey};

/// Starts a worker, publishes `body`, and returns what reached the dead-letter queue.
async fn dead_letter(app: &mut TestApp, body: &[u8]) -> Vec<u8> {
    if app.settings.worker.concurrency > 0 {
        app.start_worker().await;
        app.settings.worker.concurrency = 0;
    }
    app.publish(body).await;
    let mut letters = app.wait_for_dead_letters(1).await;
    assert_eq!(letters.len(), 1);
    letters.remove(0)
}

async fn rejected_audit_rows(
    app: &TestApp,
) -> Vec<(Option<Uuid>, Option<String>, serde_json::Value)> {
    sqlx::query_as(
        "SELECT request_id, error_key, detail FROM erasure.audit_log \
         WHERE action = 'request.rejected' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_message_that_is_not_json_is_dead_lettered_intact_and_audited() {
    let mut app = TestApp::new().await;
    let body = b"customer jane@example.com, please forget me \xff".to_vec();
    assert_eq!(dead_letter(&mut app, &body).await, body);
    let audit = rejected_audit_rows(&app).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, None);
    assert_eq!(audit[0].1.as_deref(), Some("invalid_request"));
    assert!(
        audit[0].2["message"]
            .as_str()
            .unwrap()
            .starts_with("message is not valid JSON")
    );
    assert_eq!(
        app.rows_containing("jane@example.com").await,
        Vec::<String>::new()
    );
    assert_eq!(
        app.count("SELECT count(*) FROM erasure.deletions WHERE $1 = $1", "")
            .await,
        0
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_message_missing_a_field_is_recorded_failed_with_invalid_request() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_m", "src_m", Shape::typical()).await;
    let before = app.checksum_of_everything().await;
    let events = app.subscribe_to_events().await;
    let request_id = Uuid::new_v4();
    let body = serde_json::to_vec(&serde_json::json!({
        "request_id": request_id, "customer_id": "src_m"
    }))
    .unwrap();
    assert_eq!(dead_letter(&mut app, &body).await, body);
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Failed);
    assert_eq!(row.error_key, Some(ErrorKey::InvalidRequest));
    assert_eq!(
        row.error_message.as_deref(),
        Some("requested_by: is required")
    );
    // Named by source id: recorded under the customer's id, never the source id.
    assert_eq!(row.related_object_id.as_deref(), Some("cust_m"));
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(app.audit_actions(request_id).await, ["request.rejected"]);
    let erasure_rows_with_source = app.rows_containing("src_m").await;
    assert_eq!(erasure_rows_with_source, ["public.customers: 1"]);
    // Its outcome event goes out, once, and nothing stays owed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let published = loop {
        let bodies = app.take_all(&events).await;
        if !bodies.is_empty() {
            break bodies;
        }
        assert!(tokio::time::Instant::now() < deadline, "no outcome event");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(published.len(), 1);
    let event: serde_json::Value = serde_json::from_slice(&published[0]).unwrap();
    assert_eq!(
        (event["id"].as_str(), event["status"].as_str()),
        (Some(row.id.as_str()), Some("FAILED"))
    );
    // The publisher forgets it once the broker confirmed it (just after the delivery).
    while app
        .count_of("SELECT count(*) FROM erasure.event_outbox")
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event stays owed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_malformed_request_id_is_dead_lettered_and_audited_without_a_deletion() {
    let mut app = TestApp::new().await;
    let body = br#"{"request_id":"1234","customer_id":"cust_1","requested_by":"x"}"#.to_vec();
    assert_eq!(dead_letter(&mut app, &body).await, body);
    let audit = rejected_audit_rows(&app).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].2["message"], "request_id: must be a UUID");
    assert_eq!(
        app.count("SELECT count(*) FROM erasure.deletions WHERE $1 = $1", "")
            .await,
        0
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_message_over_64_kib_is_dead_lettered_and_recorded() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_big", "src_big", Shape::typical())
        .await;
    let request_id = Uuid::new_v4();
    let body = serde_json::to_vec(&serde_json::json!({
        "request_id": request_id, "customer_id": "cust_big", "requested_by": "x",
        "padding": "p".repeat(64 * 1024),
    }))
    .unwrap();
    assert_eq!(dead_letter(&mut app, &body).await, body);
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.error_key, Some(ErrorKey::InvalidRequest));
    assert!(
        row.error_message
            .as_deref()
            .unwrap()
            .contains("the limit is 65536")
    );
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_big")
            .await,
        1
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_id_reused_for_another_customer_is_rejected_and_the_first_outcome_stands() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_first", "src_first", Shape::typical())
        .await;
    app.seed_customer("cust_second", "src_second", Shape::typical())
        .await;
    app.start_worker().await;
    app.settings.worker.concurrency = 0;
    let request_id = app.request_erasure("cust_first").await;
    let first = app.wait_for_final(request_id).await;
    assert_eq!(first.status, DeletionStatus::Done);
    let before = app.checksum_of_everything().await;

    let reused = TestApp::request(request_id, "cust_second");
    assert_eq!(dead_letter(&mut app, &reused).await, reused);
    let after = app.wait_for_final(request_id).await;
    assert_eq!(
        (
            &after.id,
            &after.status,
            &after.related_object_id,
            &after.data_json
        ),
        (
            &first.id,
            &first.status,
            &first.related_object_id,
            &first.data_json
        )
    );
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(
        app.audit_actions(request_id).await,
        ["erasure.done", "request.rejected"]
    );
    let audit = rejected_audit_rows(&app).await;
    assert_eq!(
        audit[0].2["message"],
        "request_id was already used for another customer"
    );
    app.cleanup().await;
}
