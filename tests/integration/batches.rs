//! Batches: many requests in one statement, each ending exactly as it would alone.

use std::process::Stdio;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use erasure::deletion::{DeletionStatus, ErrorKey};
use erasure::erase::{Outcome, Slot};
use erasure::request::{Channel, ErasureRequest, Received};
use erasure_testkit::RoundTripCounter;
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};

fn received(app: &TestApp, customer: &str, request_id: Uuid) -> Received {
    app.eraser()
        .receive(
            ErasureRequest {
                request_id,
                customer_id: customer.into(),
                requested_by: "support-portal".into(),
                reason: None,
                requested_at: Some(Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap()),
                identifier_type: None,
            },
            Channel::Amqp,
            Utc::now(),
        )
        .unwrap()
}

#[tokio::test]
async fn each_request_of_a_batch_ends_as_it_would_alone() {
    let app = TestApp::new().await;
    let shape = Shape::typical();
    for c in [
        "cust_b1",
        "cust_b2",
        "cust_guarded",
        "cust_twice",
        "cust_gone",
    ] {
        app.seed_customer(c, &format!("src_{c}"), shape).await;
    }
    app.add_open_order("cust_guarded").await;
    let gone = received(&app, "cust_gone", Uuid::new_v4());
    let Outcome::Recorded(first) = app.eraser().erase(&gone).await.unwrap() else {
        panic!("erased alone first")
    };
    let before_guarded = app
        .count(
            "SELECT count(*) FROM events WHERE customer_id = $1",
            "cust_guarded",
        )
        .await;

    let repeated = Uuid::new_v4();
    let batch = vec![
        received(&app, "cust_b1", Uuid::new_v4()),
        received(&app, "cust_guarded", Uuid::new_v4()),
        received(&app, "cust_nobody", Uuid::new_v4()),
        received(&app, "src_cust_gone", Uuid::new_v4()),
        received(&app, "cust_b2", repeated),
        received(&app, "cust_b2", repeated),
        received(&app, "cust_twice", Uuid::new_v4()),
        received(&app, "src_cust_twice", Uuid::new_v4()),
    ];
    let mut slot = Slot::new(app.eraser().clone());
    let outcomes: Vec<Outcome> = slot
        .erase_batch(&batch)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let recorded = |o: &Outcome| match o {
        Outcome::Recorded(row) => row.clone(),
        other => panic!("expected a recorded outcome, got {other:?}"),
    };

    let b1 = recorded(&outcomes[0]);
    assert_eq!(
        (b1.status, b1.data_json.clone()),
        (DeletionStatus::Done, shape.expected_counts())
    );
    let guarded = recorded(&outcomes[1]);
    assert_eq!(guarded.status, DeletionStatus::Failed);
    assert_eq!(guarded.error_key, Some(ErrorKey::Conflict));
    assert!(
        guarded
            .data_json
            .as_object()
            .unwrap()
            .values()
            .all(|n| n == 0)
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM events WHERE customer_id = $1",
            "cust_guarded"
        )
        .await,
        before_guarded
    );
    let nobody = recorded(&outcomes[2]);
    assert_eq!(nobody.error_key, Some(ErrorKey::NotFound));
    let again = recorded(&outcomes[3]);
    assert!(again.already_erased && again.status == DeletionStatus::Done);
    assert_eq!(again.related_object_id.as_deref(), Some("cust_gone"));
    let b2 = recorded(&outcomes[4]);
    assert_eq!(b2.data_json, shape.expected_counts());
    match &outcomes[5] {
        Outcome::Duplicate(row) => assert_eq!(row.id, b2.id),
        other => panic!("the repeated request id is a duplicate, got {other:?}"),
    }
    let (twice_a, twice_b) = (recorded(&outcomes[6]), recorded(&outcomes[7]));
    assert_eq!(twice_a.data_json, shape.expected_counts());
    assert!(twice_b.already_erased, "{twice_b:?}");
    assert_eq!(twice_b.related_object_id.as_deref(), Some("cust_twice"));
    assert_ne!(first.id, again.id);

    // One outcome row each, one audit outcome each, the repeat audited as a duplicate.
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        8
    );
    assert_eq!(
        app.audit_actions(repeated).await,
        ["erasure.done", "request.duplicate"]
    );
    for needle in ["Name of cust_b1", "cust_twice@mail.example", "src_cust_b2"] {
        assert_eq!(
            app.rows_containing(needle).await,
            Vec::<String>::new(),
            "{needle}"
        );
    }
    drop(slot);
    app.cleanup().await;
}

#[tokio::test]
async fn a_batch_of_typical_customers_is_one_database_round_trip() {
    let app = TestApp::new().await;
    for i in 0..17 {
        app.seed_customer(
            &format!("cust_rtb_{i}"),
            &format!("src_rtb_{i}"),
            Shape::typical(),
        )
        .await;
    }
    let proxy = RoundTripCounter::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let mut settings = app.settings.clone();
    settings.database.url = erasure::config::Secret::new(format!(
        "postgres://postgres@{}/{}?sslmode=disable",
        proxy.addr, app.database
    ));
    settings.database.max_connections = 1;
    let through_proxy = erasure::startup::Application::build(settings)
        .await
        .unwrap();
    let mut slot = Slot::new(through_proxy.eraser.clone());
    // The first statement on a connection also prepares it.
    slot.erase_batch(&[received(&app, "cust_rtb_0", Uuid::new_v4())])
        .await;
    let batch: Vec<Received> = (1..17)
        .map(|i| received(&app, &format!("cust_rtb_{i}"), Uuid::new_v4()))
        .collect();
    let before = proxy.round_trips();
    let outcomes = slot.erase_batch(&batch).await;
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "one round trip for 16 erasures"
    );
    for outcome in outcomes {
        let Ok(Outcome::Recorded(row)) = outcome else {
            panic!("expected a recorded outcome")
        };
        assert_eq!(row.data_json, Shape::typical().expected_counts());
    }
    // Two are a batch too (one round trip, not two); none is no round trip at all.
    for i in 17..19 {
        app.seed_customer(
            &format!("cust_rtb_{i}"),
            &format!("src_rtb_{i}"),
            Shape::typical(),
        )
        .await;
    }
    let two: Vec<Received> = (17..19)
        .map(|i| received(&app, &format!("cust_rtb_{i}"), Uuid::new_v4()))
        .collect();
    let before = proxy.round_trips();
    let outcomes = slot.erase_batch(&two).await;
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "one round trip for 2 erasures"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Outcome::Recorded(_))))
    );
    let before = proxy.round_trips();
    assert!(slot.erase_batch(&[]).await.is_empty());
    assert_eq!(proxy.round_trips(), before, "nothing to do, nothing sent");
    drop(slot);
    through_proxy.pool.close().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_batch_whose_statement_fails_is_carried_out_request_by_request() {
    let app = TestApp::with_settings(|s| {
        s.database.lock_timeout_ms = 200;
        s.worker.max_attempts = 2;
    })
    .await;
    let customers: Vec<String> = (0..6).map(|i| format!("cust_fb_{i}")).collect();
    for c in &customers {
        app.seed_customer(c, &format!("src_{c}"), Shape::typical())
            .await;
    }
    // A row of one customer is locked past the lock timeout: the batch statement fails.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE customer_id = 'cust_fb_3' LIMIT 1 FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let batch: Vec<Received> = customers
        .iter()
        .map(|c| received(&app, c, Uuid::new_v4()))
        .collect();
    let mut slot = Slot::new(app.eraser().clone());
    let outcomes = slot.erase_batch(&batch).await;
    for (customer, outcome) in customers.iter().zip(outcomes) {
        match outcome.unwrap() {
            Outcome::Recorded(row) if customer != "cust_fb_3" => {
                assert_eq!(row.status, DeletionStatus::Done, "{customer}");
                assert_eq!(row.data_json, Shape::typical().expected_counts());
            }
            Outcome::Stopped(row) if customer == "cust_fb_3" => {
                assert_eq!(row.error_key, Some(ErrorKey::Internal));
                assert!(row.error_message.unwrap().contains("55P03"));
            }
            other => panic!("{customer}: {other:?}"),
        }
    }
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_fb_3")
            .await,
        1
    );
    assert_eq!(slot.batch_fallbacks(), 1, "the statement failed once");
    lock.rollback().await.unwrap();
    drop(slot);
    app.cleanup().await;
}

/// Starts the worker binary.
fn spawn_worker(app: &TestApp, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = app.command();
    command
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("the worker starts")
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_batch_leaves_each_customer_whole_and_redelivery_erases_each_once()
 {
    let app = TestApp::new().await;
    let customers: Vec<String> = (0..8).map(|i| format!("cust_k9b_{i}")).collect();
    for c in &customers {
        app.seed_customer(c, &format!("src_{c}"), Shape::typical())
            .await;
    }
    // The batch statement stops at a locked row of the last customer, after it began deleting.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM order_events oe JOIN orders o ON o.id = oe.order_id \
         WHERE o.customer_id = 'cust_k9b_7' LIMIT 1 FOR UPDATE OF oe",
    )
    .execute(&mut *lock)
    .await
    .unwrap();
    let mut requests = Vec::new();
    for c in &customers {
        requests.push(app.request_erasure(c).await);
    }
    let mut worker = spawn_worker(&app, &[("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000")]);
    for _ in 0..400 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&app.database)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each customer is whole: its rows all there, or (had it been committed) all gone.
    for c in &customers {
        let (events, customer): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE customer_id = $1), \
                    (SELECT count(*) FROM customers WHERE id = $1)",
        )
        .bind(c)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert!(
            (events, customer) == (16, 1) || (events, customer) == (0, 0),
            "{c}: {events} events, {customer} customer rows"
        );
    }
    let mut next = spawn_worker(&app, &[]);
    for request_id in &requests {
        let row = app.wait_for_final(*request_id).await;
        assert_eq!(row.status, DeletionStatus::Done);
        assert_eq!(row.data_json, Shape::typical().expected_counts(), "{row:?}");
        let outcomes: Vec<String> = app
            .audit_actions(*request_id)
            .await
            .into_iter()
            .filter(|a| a.starts_with("erasure."))
            .collect();
        assert_eq!(outcomes, ["erasure.done"]);
    }
    next.start_kill().unwrap();
    next.wait().await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn two_workers_with_batches_over_the_same_customers_never_deadlock_into_a_failure() {
    let app = TestApp::new().await;
    let customers: Vec<String> = (0..40).map(|i| format!("cust_ov_{i:02}")).collect();
    for c in &customers {
        app.seed_customer(c, &format!("src_{c}"), Shape::typical())
            .await;
    }
    // Each customer asked for twice, by key and by source id, in an order that mixes them, so
    // that both workers' batches name the same customers.
    let mut bodies = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        bodies.push(TestApp::request(Uuid::new_v4(), c));
        bodies.push(TestApp::request(
            Uuid::new_v4(),
            &format!("src_{}", customers[(i * 7) % 40]),
        ));
    }
    for body in &bodies {
        app.publish(body).await;
    }
    let env = [("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000")];
    let mut workers = [spawn_worker(&app, &env), spawn_worker(&app, &env)];
    for _ in 0..600 {
        if app
            .count_of("SELECT count(*) FROM erasure.deletions WHERE status IN ('DONE', 'FAILED')")
            .await
            == 80
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT related_object_id, status, already_erased FROM erasure.deletions ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 80);
    assert!(
        rows.iter().all(|(_, status, _)| status == "DONE"),
        "{rows:?}"
    );
    for c in &customers {
        let erased = rows
            .iter()
            .filter(|(customer, _, again)| customer == c && !again)
            .count();
        assert_eq!(erased, 1, "{c}: {rows:?}");
    }
    let counts: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT data_json FROM erasure.deletions WHERE NOT already_erased")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        counts
            .iter()
            .all(|c| *c == Shape::typical().expected_counts())
    );
    assert_eq!(app.count_of("SELECT count(*) FROM customers").await, 0);
    for worker in &mut workers {
        worker.start_kill().unwrap();
        worker.wait().await.unwrap();
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_id_twice_in_a_batch_ends_as_alone_without_failing_the_batch_statement() {
    let app = TestApp::new().await;
    let shape = Shape::typical();
    for c in ["cust_r1", "cust_r2", "cust_other"] {
        app.seed_customer(c, &format!("src_{c}"), shape).await;
    }
    let other_before = app
        .count(
            "SELECT count(*) FROM events WHERE customer_id = $1",
            "cust_other",
        )
        .await;
    let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
    // The same request twice, and a request id reused for another customer, in one batch.
    let batch = vec![
        received(&app, "cust_r1", one),
        received(&app, "cust_r1", one),
        received(&app, "cust_r2", two),
        received(&app, "cust_other", two),
    ];
    let mut slot = Slot::new(app.eraser().clone());
    // Bounded: a batch path that goes wrong must fail this test, not hang the suite.
    let outcomes: Vec<Outcome> =
        tokio::time::timeout(Duration::from_secs(120), slot.erase_batch(&batch))
            .await
            .expect("the batch ended within two minutes")
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert!(
        matches!(&outcomes[0], Outcome::Recorded(row) if row.data_json == shape.expected_counts()),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], Outcome::Duplicate(_)),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], Outcome::Recorded(row) if row.related_object_id.as_deref() == Some("cust_r2")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[3], Outcome::Rejected { .. }),
        "{outcomes:?}"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM events WHERE customer_id = $1",
            "cust_other"
        )
        .await,
        other_before
    );
    // One statement for the batch, which did not fail: each request id is in it once.
    assert_eq!(slot.batch_fallbacks(), 0);
    drop(slot);
    app.cleanup().await;
}

/// The requests of one batch share the moment the batch was received: their audit rows' times
/// give the batches the worker formed, in order.
async fn batch_sizes(app: &TestApp, requests: &[Uuid]) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT count(DISTINCT request_id) FROM erasure.audit_log WHERE request_id = ANY($1) \
         GROUP BY received_at ORDER BY min(id)",
    )
    .bind(requests)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_worker_waits_batch_wait_for_a_batch_to_fill_and_never_takes_more_than_batch_max() {
    let mut app = TestApp::with_settings(|s| {
        s.worker.concurrency = 1;
        s.worker.batch_max = 3;
        s.worker.batch_wait_ms = 1500;
    })
    .await;
    let customers: Vec<String> = (0..7).map(|i| format!("cust_g{i}")).collect();
    for c in &customers {
        app.seed_customer(c, &format!("src_{c}"), Shape::default())
            .await;
    }
    app.start_worker().await;
    // Three requests 200 ms apart: the first waits for the other two, and the three are one
    // batch (without the wait, each would be a batch of its own).
    let mut first = Vec::new();
    for c in &customers[..3] {
        first.push(app.request_erasure(c).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &first {
        app.wait_for_final(*id).await;
    }
    assert_eq!(batch_sizes(&app, &first).await, [3]);
    // Four at once: a full batch of three, then the last alone once the wait has passed.
    let mut rest = Vec::new();
    for c in &customers[3..] {
        rest.push(app.request_erasure(c).await);
    }
    for id in &rest {
        let row = app.wait_for_final(*id).await;
        assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    }
    assert_eq!(batch_sizes(&app, &rest).await, [3, 1]);
    app.stop_workers().await;
    app.cleanup().await;
}
