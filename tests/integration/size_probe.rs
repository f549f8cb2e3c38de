//! Probing for size only the customers the statistics say may be too large for one statement.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use erasure::deletion::{DeletionStatus, ErrorKey};
use erasure::erase::{Outcome, Slot};
use erasure::plan::sizes::Probing;
use erasure::request::{Channel, ErasureRequest, Received};
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};

/// Past the threshold in one table (events), typical everywhere else.
fn whale() -> Shape {
    Shape {
        events: 3000,
        ..Shape::typical()
    }
}

async fn app() -> TestApp {
    TestApp::with_settings(|s| {
        s.erasure.chunk_threshold = 2000;
        s.erasure.chunk_rows = 500;
        s.database.lock_timeout_ms = 200;
        s.worker.max_attempts = 2;
    })
    .await
}

fn received(app: &TestApp, customer: &str) -> Received {
    app.eraser()
        .receive(
            ErasureRequest {
                request_id: Uuid::new_v4(),
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

/// Ten typical customers, `cust_t0` to `cust_t9`: well under the threshold.
async fn seed_typical(app: &TestApp) {
    for i in 0..10 {
        let c = format!("cust_t{i}");
        app.seed_customer(&c, &format!("src_{c}"), Shape::typical())
            .await;
    }
}

async fn analyze(app: &TestApp) {
    sqlx::raw_sql("ANALYZE").execute(&app.pool).await.unwrap();
}

/// From now on, the transaction that deletes each event is written down, by customer: one
/// transaction for a customer erased in one statement, several for one erased in chunks.
async fn log_event_deletions(app: &TestApp) {
    sqlx::raw_sql(
        "CREATE TABLE deleted_by (customer_id text, xid bigint);
         CREATE FUNCTION log_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO deleted_by VALUES (OLD.customer_id, txid_current()); RETURN OLD; END $$;
         CREATE TRIGGER log_deletion AFTER DELETE ON events
           FOR EACH ROW EXECUTE FUNCTION log_deletion();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The transactions that deleted `customer`'s events.
async fn transactions_deleting(app: &TestApp, customer: &str) -> HashSet<i64> {
    sqlx::query_scalar("SELECT DISTINCT xid FROM deleted_by WHERE customer_id = $1")
        .bind(customer)
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Drops the log (it holds erased customers' ids), then scans for what the erasure of
/// `customer` must have left nowhere.
async fn assert_nothing_left_of(app: &TestApp, customer: &str) {
    sqlx::raw_sql("DROP TRIGGER log_deletion ON events; DROP TABLE deleted_by;")
        .execute(&app.pool)
        .await
        .unwrap();
    for needle in [
        format!("Name of {customer}"),
        format!("{customer}@mail.example"),
        format!("src_{customer}"),
    ] {
        assert_eq!(app.rows_containing(&needle).await, Vec::<String>::new());
    }
}

fn done(outcome: Result<Outcome, erasure::erase::EraseError>, shape: Shape) {
    match outcome.unwrap() {
        Outcome::Recorded(row) => {
            assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
            assert_eq!(row.data_json, shape.expected_counts());
        }
        other => panic!("expected a recorded outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn the_statistics_name_the_customers_probed_and_a_batch_erases_those_in_chunks() {
    let app = app().await;
    app.seed_customer("cust_whale", "src_cust_whale", whale())
        .await;
    seed_typical(&app).await;
    // Never analyzed: nothing to go by, everyone is probed.
    assert_eq!(app.eraser().read_statistics().await.unwrap(), Probing::All);
    analyze(&app).await;
    assert_eq!(
        app.eraser().read_statistics().await.unwrap(),
        Probing::Only(vec!["cust_whale".to_string()].into())
    );
    let bystanders = app
        .count_of("SELECT count(*) FROM events WHERE customer_id IN ('cust_t2', 'cust_t3')")
        .await;

    log_event_deletions(&app).await;
    let batch = [
        received(&app, "cust_t0"),
        received(&app, "cust_whale"),
        received(&app, "cust_t1"),
    ];
    let mut slot = Slot::new(app.eraser().clone());
    let mut outcomes = slot.erase_batch(&batch).await.into_iter();
    done(outcomes.next().unwrap(), Shape::typical());
    done(outcomes.next().unwrap(), whale());
    done(outcomes.next().unwrap(), Shape::typical());

    let typical = transactions_deleting(&app, "cust_t0").await;
    assert_eq!(typical.len(), 1);
    assert_eq!(transactions_deleting(&app, "cust_t1").await, typical);
    let chunks = transactions_deleting(&app, "cust_whale").await;
    assert!(chunks.len() > 1, "erased in chunks: {chunks:?}");
    assert!(chunks.is_disjoint(&typical));
    assert_eq!(
        app.count_of("SELECT count(*) FROM events WHERE customer_id IN ('cust_t2', 'cust_t3')")
            .await,
        bystanders
    );
    drop(slot);
    assert_nothing_left_of(&app, "cust_whale").await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_customer_grown_since_the_statistics_is_erased_in_one_statement_all_the_same() {
    let app = app().await;
    seed_typical(&app).await;
    analyze(&app).await;
    app.seed_customer("cust_grown", "src_cust_grown", whale())
        .await;
    let probing = app.eraser().read_statistics().await.unwrap();
    let Probing::Only(probed) = &probing else {
        panic!("the statistics bound everyone: {probing:?}")
    };
    assert!(probed.is_empty(), "{probed:?}");

    log_event_deletions(&app).await;
    let mut slot = Slot::new(app.eraser().clone());
    done(slot.erase(&received(&app, "cust_grown")).await, whale());
    assert_eq!(transactions_deleting(&app, "cust_grown").await.len(), 1);
    drop(slot);
    assert_nothing_left_of(&app, "cust_grown").await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_failed_batch_carried_out_alone_probes_everyone_and_erases_a_missed_whale_in_chunks() {
    let app = app().await;
    seed_typical(&app).await;
    analyze(&app).await;
    app.seed_customer("cust_grown", "src_cust_grown", whale())
        .await;
    assert!(matches!(
        app.eraser().read_statistics().await.unwrap(),
        Probing::Only(probed) if probed.is_empty()
    ));
    log_event_deletions(&app).await;
    // A row of one customer is locked past the lock timeout: the batch statement fails.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE customer_id = 'cust_t1' LIMIT 1 FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let batch = [
        received(&app, "cust_t0"),
        received(&app, "cust_grown"),
        received(&app, "cust_t1"),
        received(&app, "cust_t2"),
    ];
    let mut slot = Slot::new(app.eraser().clone());
    let mut outcomes = slot.erase_batch(&batch).await.into_iter();
    done(outcomes.next().unwrap(), Shape::typical());
    done(outcomes.next().unwrap(), whale());
    match outcomes.next().unwrap().unwrap() {
        Outcome::Stopped(row) => assert_eq!(row.error_key, Some(ErrorKey::Internal)),
        other => panic!("the locked customer stops: {other:?}"),
    }
    done(outcomes.next().unwrap(), Shape::typical());
    let chunks = transactions_deleting(&app, "cust_grown").await;
    assert!(chunks.len() > 1, "erased in chunks: {chunks:?}");
    lock.rollback().await.unwrap();
    drop(slot);
    assert_nothing_left_of(&app, "cust_grown").await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_service_reads_the_statistics_again_as_they_change_and_stops_reading_at_shutdown() {
    let app = app().await;
    app.seed_customer("cust_whale", "src_cust_whale", whale())
        .await;
    seed_typical(&app).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reader = tokio::spawn(
        app.eraser()
            .clone()
            .keep_reading_statistics(std::time::Duration::from_millis(50), shutdown.clone()),
    );
    // Not analyzed yet: everyone is probed. Once the tables are analyzed, the running reader
    // (not this test) narrows the probing to the one customer the statistics say is large.
    assert_eq!(app.eraser().probing(), Probing::All);
    analyze(&app).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.eraser().probing() != Probing::Only(vec!["cust_whale".to_string()].into()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the statistics were not read again: {:?}",
            app.eraser().probing()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("the reader stops at shutdown")
        .unwrap();
    app.cleanup().await;
}
