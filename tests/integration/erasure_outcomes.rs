use std::time::Duration;

use chrono::{TimeZone, Utc};
use erasure::deletion::{DeletionStatus, ErrorKey, report};
use erasure::erase::{Outcome, Slot};
use erasure::request::Channel;
use erasure::request::ErasureRequest;
use erasure::worker::{Disposition, handle_delivery};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};
use erasure_testkit::RoundTripCounter;

/// status, amount, customer_id, billing_email, anonymized.
type KeptOrder = (String, i64, Option<String>, Option<String>, bool);

#[tokio::test]
async fn a_seeded_customer_is_erased_with_exact_counts_and_nothing_else_changes() {
    let mut app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_target", "src_target", shape).await;
    app.seed_customer("cust_other", "src_other", Shape::typical())
        .await;
    app.seed_customer("cust_third", "src_third", Shape::default())
        .await;
    let before = app.checksum_of_others("cust_target").await;
    let events = app.subscribe_to_events().await;
    app.start_worker().await;

    let request_id = app.request_erasure("cust_target").await;
    let row = app.wait_for_final(request_id).await;

    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.related_object_id.as_deref(), Some("cust_target"));
    // Started by the erasing transaction, completed within it.
    let (started, completed) = (row.started_at.unwrap(), row.completed_at.unwrap());
    assert!(row.created_at <= started && started <= completed, "{row:?}");
    assert_eq!(row.data_json, shape.expected_counts());
    assert!(!row.already_erased);
    assert_eq!(row.requested_by.as_deref(), Some("support-portal"));
    let object = row.to_object(app.eraser().count_keys());
    assert_eq!(object.requested_at, "2026-11-23T09:30:00Z");
    assert_eq!(object.due_at, "2026-12-23T09:30:00Z");
    assert_eq!(object.object, "permanent_deletion");
    assert!(object.id.starts_with("del_"));

    // Every other customer's rows are exactly as they were.
    assert_eq!(app.checksum_of_others("cust_target").await, before);
    // The customer's orders are kept, stripped of the person.
    let kept: Vec<KeptOrder> = sqlx::query_as(
        "SELECT status, amount, customer_id, billing_email, anonymized_at IS NOT NULL \
         FROM orders WHERE id LIKE 'cust\\_target\\_%' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept.len(), shape.orders as usize);
    for (status, amount, customer, email, anonymized) in &kept {
        assert_eq!(status, "COMPLETED");
        assert!(*amount > 0);
        assert_eq!((customer, email, anonymized), (&None, &None, &true));
    }
    let shipping_or_metadata = app
        .count(
            "SELECT count(*) FROM orders WHERE id LIKE $1 AND (shipping_address IS NOT NULL OR metadata IS NOT NULL OR billing_name IS NOT NULL)",
            "cust\\_target\\_%",
        )
        .await;
    assert_eq!(shipping_or_metadata, 0);
    // No text or JSON column of any table, the worker's own included, holds the person.
    for needle in [
        "Name of cust_target",
        "cust_target@mail.example",
        "+1-555-cust_target",
        "src_target",
    ] {
        assert_eq!(
            app.rows_containing(needle).await,
            Vec::<String>::new(),
            "{needle}"
        );
    }
    // One audit row for the outcome.
    assert_eq!(app.audit_actions(request_id).await, ["erasure.done"]);
    // The outcome event, with the deletion object as its body.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let published = loop {
        let bodies = app.take_all(&events).await;
        if !bodies.is_empty() {
            break bodies;
        }
        assert!(tokio::time::Instant::now() < deadline, "no outcome event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let event: serde_json::Value = serde_json::from_slice(&published[0]).unwrap();
    assert_eq!(event["id"], row.id.as_str());
    assert_eq!(event["status"], "DONE");
    assert_eq!(event["data_json"], shape.expected_counts());
    app.cleanup().await;
}

#[tokio::test]
async fn a_customer_named_by_source_id_is_erased_and_recorded_under_its_id() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_s", "crm-77", Shape::typical())
        .await;
    app.start_worker().await;

    let first = app.request_erasure("crm-77").await;
    let erased = app.wait_for_final(first).await;
    assert_eq!(erased.status, DeletionStatus::Done);
    assert_eq!(erased.related_object_id.as_deref(), Some("cust_s"));
    assert_eq!(erased.data_json, Shape::typical().expected_counts());
    assert_eq!(app.rows_containing("crm-77").await, Vec::<String>::new());

    // Asked again by source id after the customer is gone: already erased, found by hash.
    let again = app.request_erasure("crm-77").await;
    let row = app.wait_for_final(again).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert!(row.already_erased);
    assert_eq!(row.related_object_id.as_deref(), Some("cust_s"));
    assert_eq!(app.rows_containing("crm-77").await, Vec::<String>::new());
    // Each audit row names its deletion and the customer by key (never the source id it was
    // asked by), the one that found the customer erased already too.
    for (request_id, deletion) in [(first, &erased), (again, &row)] {
        let audited: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT action, deletion_id, related_object_id FROM erasure.audit_log WHERE request_id = $1",
        )
        .bind(request_id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(
            audited,
            [(
                "erasure.done".to_owned(),
                Some(deletion.id.clone()),
                Some("cust_s".to_owned())
            )]
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn an_id_wins_over_a_source_id_that_happens_to_equal_it() {
    let app = TestApp::new().await;
    app.seed_customer("cust_a", "cust_b", Shape::typical())
        .await;
    app.seed_customer("cust_b", "src_b", Shape::typical()).await;
    let request = request_for("cust_b");
    let row = app.erase_by_engine(request).await;
    assert_eq!(row.related_object_id.as_deref(), Some("cust_b"));
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_a")
            .await,
        1
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_same_request_published_twice_erases_once() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_dup", "src_dup", Shape::typical())
        .await;
    let request_id = Uuid::new_v4();
    let body = TestApp::request(request_id, "cust_dup");
    app.publish(&body).await;
    app.publish(&body).await;
    app.start_worker().await;

    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.data_json, Shape::typical().expected_counts());
    // Wait for the second copy to be handled too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.audit_actions(request_id).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "second copy not handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.audit_actions(request_id).await,
        ["erasure.done", "request.duplicate"]
    );
    let deletions = app
        .count(
            "SELECT count(*) FROM erasure.deletions WHERE request_id::text = $1",
            &request_id.to_string(),
        )
        .await;
    assert_eq!(deletions, 1);
    let again = app.wait_for_final(request_id).await;
    assert_eq!((again.id, again.data_json), (row.id, row.data_json));
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_redelivered_after_the_worker_stopped_before_acknowledging_erases_once() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_redo", "src_redo", Shape::typical())
        .await;
    let request_id = app.request_erasure("cust_redo").await;

    // A worker takes the message, commits the erasure, and stops before acknowledging.
    {
        let connection = erasure::broker::connect(&app.settings.amqp).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                app.settings.amqp.queue.as_str().into(),
                "crashing-worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let delivery = consumer.next().await.unwrap().unwrap();
        assert!(!delivery.redelivered);
        assert_eq!(
            handle_delivery(
                &mut Slot::new(app.eraser().clone()),
                &delivery.data,
                delivery.redelivered,
                app.settings.worker.max_deliveries,
            )
            .await,
            Disposition::Ack
        );
        connection.close(320, "worker died".into()).await.unwrap();
    }
    let first = app.wait_for_final(request_id).await;
    assert_eq!(first.data_json, Shape::typical().expected_counts());

    // The broker redelivers to the next worker, which finds the outcome already recorded.
    app.start_worker().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.audit_actions(request_id).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery not handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.audit_actions(request_id).await,
        ["erasure.done", "request.duplicate"]
    );
    let after = app.wait_for_final(request_id).await;
    assert_eq!((after.id, after.data_json), (first.id, first.data_json));
    app.stop_workers().await;
    assert!(
        app.take_all(&app.settings.amqp.queue.clone())
            .await
            .is_empty()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn two_consumers_and_two_requests_for_one_customer_give_one_erasure_and_one_already_erased() {
    let mut app = TestApp::new().await;
    let shape = Shape {
        events: 3000,
        ..Shape::typical()
    };
    let customers: Vec<String> = (0..4).map(|i| format!("cust_race_{i}")).collect();
    for c in &customers {
        app.seed_customer(c, &format!("src_{c}"), shape).await;
    }
    app.start_worker().await;
    app.start_worker().await;

    for c in &customers {
        // One by id, one by source id: the same person, asked for twice at once.
        let a = app.request_erasure(c).await;
        let b = app.request_erasure(&format!("src_{c}")).await;
        let rows = [app.wait_for_final(a).await, app.wait_for_final(b).await];
        let erased: Vec<_> = rows.iter().filter(|r| !r.already_erased).collect();
        let repeated: Vec<_> = rows.iter().filter(|r| r.already_erased).collect();
        assert_eq!((erased.len(), repeated.len()), (1, 1), "{rows:?}");
        assert_eq!(erased[0].data_json, shape.expected_counts());
        assert!(
            repeated[0]
                .data_json
                .as_object()
                .unwrap()
                .values()
                .all(|v| v == 0)
        );
        assert!(rows.iter().all(|r| r.status == DeletionStatus::Done));
        assert!(
            rows.iter()
                .all(|r| r.related_object_id.as_deref() == Some(c))
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn concurrent_erasures_of_one_customer_are_serialized_and_counted_once() {
    let app = TestApp::with_settings(|s| s.database.max_connections = 12).await;
    let shape = Shape {
        events: 2000,
        ..Shape::typical()
    };
    app.seed_customer("cust_many", "src_many", shape).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let eraser = app.eraser().clone();
        let customer = if i % 2 == 0 { "cust_many" } else { "src_many" };
        let request = request_for(customer);
        tasks.push(tokio::spawn(async move {
            eraser
                .erase(&eraser.receive(request, Channel::Amqp, Utc::now()).unwrap())
                .await
        }));
    }
    let mut counted = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Outcome::Recorded(row) => {
                assert_eq!(row.status, DeletionStatus::Done);
                if !row.already_erased {
                    counted.push(row.data_json);
                }
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(counted, [shape.expected_counts()]);
    app.cleanup().await;
}

#[tokio::test]
async fn an_open_order_gives_conflict_and_changes_nothing() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_open", "src_open", Shape::typical())
        .await;
    app.add_open_order("cust_open").await;
    let before = app.checksum_of_everything().await;
    app.start_worker().await;

    let request_id = app.request_erasure("cust_open").await;
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Failed);
    assert_eq!(row.error_key, Some(ErrorKey::Conflict));
    assert_eq!(row.related_object_id.as_deref(), Some("cust_open"));
    assert!(row.data_json.as_object().unwrap().values().all(|v| v == 0));
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(app.audit_actions(request_id).await, ["erasure.failed"]);

    // A redelivery of the failed request keeps its outcome even once the order is closed.
    sqlx::query("UPDATE orders SET status = 'COMPLETED' WHERE status = 'OPEN'")
        .execute(&app.pool)
        .await
        .unwrap();
    let before = app.checksum_of_everything().await;
    app.publish(&TestApp::request(request_id, "cust_open"))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.audit_actions(request_id).await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "repeat not handled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(
        app.wait_for_final(request_id).await.status,
        DeletionStatus::Failed
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_unknown_customer_gives_not_found() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_known", "src_known", Shape::typical())
        .await;
    let before = app.checksum_of_everything().await;
    app.start_worker().await;
    let request_id = app.request_erasure("cust_nobody").await;
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Failed);
    assert_eq!(row.error_key, Some(ErrorKey::NotFound));
    assert!(!row.already_erased);
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(app.audit_actions(request_id).await, ["erasure.failed"]);
    app.cleanup().await;
}

#[tokio::test]
async fn hostile_identifiers_are_bound_not_spliced() {
    let app = TestApp::new().await;
    let hostile = "x'); DELETE FROM customers; --\"ü\u{202e}";
    app.seed_customer(hostile, "src_hostile", Shape::typical())
        .await;
    app.seed_customer("cust_bystander", "src_bystander", Shape::typical())
        .await;
    let before = app.checksum_of_others(hostile).await;
    let row = app.erase_by_engine(request_for(hostile)).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.related_object_id.as_deref(), Some(hostile));
    assert_eq!(row.data_json, Shape::typical().expected_counts());
    assert_eq!(app.checksum_of_others(hostile).await, before);
    app.cleanup().await;
}

fn request_for(customer: &str) -> ErasureRequest {
    ErasureRequest {
        request_id: Uuid::new_v4(),
        customer_id: customer.to_string(),
        requested_by: "support-portal".into(),
        reason: None,
        requested_at: Some(Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap()),
        identifier_type: None,
    }
}

#[tokio::test]
async fn concurrent_deliveries_of_one_request_record_one_outcome() {
    let app = TestApp::new().await;
    app.seed_customer("cust_same", "src_same", Shape::typical())
        .await;
    app.add_open_order("cust_same").await;
    let before = app.checksum_of_everything().await;
    let request = request_for("cust_same");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let eraser = app.eraser().clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            eraser
                .erase(&eraser.receive(request, Channel::Amqp, Utc::now()).unwrap())
                .await
        }));
    }
    let (mut recorded, mut duplicates) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Outcome::Recorded(row) => recorded.push(row),
            Outcome::Duplicate(row) => {
                assert_eq!(row.error_key, Some(ErrorKey::Conflict));
                duplicates += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((recorded.len(), duplicates), (1, 5));
    assert_eq!(recorded[0].error_key, Some(ErrorKey::Conflict));
    assert_eq!(app.checksum_of_everything().await, before);
    let actions = app.audit_actions(request.request_id).await;
    assert_eq!(actions.iter().filter(|a| *a == "erasure.failed").count(), 1);
    assert_eq!(
        actions.iter().filter(|a| *a == "request.duplicate").count(),
        5
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_typical_erasure_is_one_database_round_trip() {
    let app = TestApp::new().await;
    for i in 0..6 {
        app.seed_customer(
            &format!("cust_rt_{i}"),
            &format!("src_rt_{i}"),
            Shape::typical(),
        )
        .await;
    }
    let proxy = RoundTripCounter::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let url = format!(
        "postgres://postgres@{}/{}?sslmode=disable",
        proxy.addr, app.database
    );
    let mut settings = app.settings.clone();
    settings.database.url = erasure::config::Secret::new(url);
    settings.database.max_connections = 1;
    let through_proxy = erasure::startup::Application::build(settings)
        .await
        .unwrap();
    let eraser = through_proxy.eraser.clone();
    let mut slot = Slot::new(eraser.clone());

    // The first erasure on a connection also prepares the statement.
    let first = slot
        .erase(
            &eraser
                .receive(request_for("cust_rt_0"), Channel::Amqp, Utc::now())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Recorded(ref row) if row.status == DeletionStatus::Done));
    let before = proxy.round_trips();
    for i in 1..6 {
        let outcome = slot
            .erase(
                &eraser
                    .receive(
                        request_for(&format!("cust_rt_{i}")),
                        Channel::Amqp,
                        Utc::now(),
                    )
                    .unwrap(),
            )
            .await
            .unwrap();
        let Outcome::Recorded(row) = outcome else {
            panic!("expected a recorded outcome")
        };
        assert_eq!(row.data_json, Shape::typical().expected_counts());
    }
    assert_eq!(
        proxy.round_trips() - before,
        5,
        "one round trip per erasure"
    );
    // The slot holds its connection until dropped; closing the pool waits for it.
    drop(slot);
    through_proxy.pool.close().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_outcomes_event_is_owed_from_its_commit_until_the_publisher_has_it() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_owed", "src_owed", Shape::typical())
        .await;
    let events = app.subscribe_to_events().await;
    // Erased by the engine alone, with no publisher running: the outcome and its owed event
    // committed together.
    let row = app.erase_by_engine(request_for("cust_owed")).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert!(report::event_owed(&app.pool, &row.id).await.unwrap());
    assert!(
        !report::event_owed(&app.pool, "del_000000000000000000000000")
            .await
            .unwrap()
    );
    assert!(app.take_all(&events).await.is_empty());
    // A worker's publisher sends it, and it is owed no longer.
    app.start_worker().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut published = Vec::new();
    while published.is_empty() || report::event_owed(&app.pool, &row.id).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event stays owed"
        );
        published.extend(app.take_all(&events).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published.len(), 1);
    let event: serde_json::Value = serde_json::from_slice(&published[0]).unwrap();
    assert_eq!(
        (event["id"].as_str(), event["status"].as_str()),
        (Some(row.id.as_str()), Some("DONE"))
    );
    app.cleanup().await;
}
