//! Customers too large for one short transaction: erased in chunks, resumable, counted once.

use erasure::deletion::DeletionStatus;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{Shape, TestApp};

fn large() -> Shape {
    Shape {
        events: 1000,
        customer_events: 120,
        daily_events: 5,
        segments: 2,
        orders: 30,
        order_events_per_order: 5,
    }
}

/// An app erasing in chunks of 40 past 100 rows, with a large customer `cust_big` (source id
/// `src_big`) and a typical `cust_other`; and the checksum of everyone's rows but `cust_big`'s.
async fn big_and_other() -> (TestApp, String) {
    let app = TestApp::with_settings(|s| {
        s.erasure.chunk_threshold = 100;
        s.erasure.chunk_rows = 40;
    })
    .await;
    app.seed_customer("cust_big", "src_big", large()).await;
    app.seed_customer("cust_other", "src_other", Shape::typical())
        .await;
    let others = app.checksum_of_others("cust_big").await;
    (app, others)
}

/// Everyone's rows but `cust_big`'s are as they were (`others`), and none of its personal values
/// is left anywhere.
async fn assert_only_the_big_customer_gone(app: &TestApp, others: &str) {
    assert_eq!(app.checksum_of_others("cust_big").await, others);
    for needle in ["Name of cust_big", "cust_big@mail.example", "src_big"] {
        assert_eq!(
            app.rows_containing(needle).await,
            Vec::<String>::new(),
            "{needle}"
        );
    }
}

#[tokio::test]
async fn a_large_customer_is_erased_in_chunks_counted_once_even_with_a_second_request() {
    let (mut app, others) = big_and_other().await;
    app.start_worker().await;
    app.start_worker().await;

    let by_id = app.request_erasure("cust_big").await;
    let by_source = app.request_erasure("src_big").await;
    let rows = [
        app.wait_for_final(by_id).await,
        app.wait_for_final(by_source).await,
    ];
    let (erased, again): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| !r.already_erased);
    assert_eq!(
        erased.len(),
        1,
        "one request erases, the other finds it done"
    );
    assert_eq!(erased[0].status, DeletionStatus::Done);
    assert_eq!(erased[0].data_json, large().expected_counts());
    assert_eq!(again[0].status, DeletionStatus::Done);
    assert_eq!(again[0].related_object_id.as_deref(), Some("cust_big"));

    let audited: Vec<String> = app.audit_actions(erased[0].request_id).await;
    assert_eq!(audited, ["erasure.done"]);
    assert_eq!(app.count_of("SELECT count(*) FROM erasure.claims").await, 0);
    assert_only_the_big_customer_gone(&app, &others).await;
    app.cleanup().await;
}

#[tokio::test]
async fn chunks_commit_durably_where_the_database_commits_asynchronously() {
    let mut app = TestApp::with_settings(|s| {
        s.erasure.chunk_threshold = 100;
        s.erasure.chunk_rows = 40;
    })
    .await;
    sqlx::query(&format!(
        "ALTER DATABASE \"{}\" SET synchronous_commit = off",
        app.database
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    // New sessions, the worker's among them, commit asynchronously.
    let mut session: sqlx::PgConnection =
        sqlx::Connection::connect(app.settings.database.url.expose())
            .await
            .unwrap();
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut session)
        .await
        .unwrap();
    assert_eq!(setting, "off");
    app.seed_customer("cust_big", "src_big", large()).await;
    app.start_worker().await;

    let request_id = app.request_erasure("cust_big").await;
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.data_json, large().expected_counts());
    // Started with the first chunk, well before the statement that ended it.
    let audit_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT recorded_at FROM erasure.audit_log WHERE request_id = $1 AND action = 'erasure.done'",
    )
    .bind(request_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let started = row.started_at.unwrap();
    assert!(
        started < row.completed_at.unwrap() && started < audit_at,
        "{row:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_million_row_customer_killed_half_way_resumes_and_counts_every_row_once() {
    let app = TestApp::new().await;
    app.seed_customer("cust_before", "src_before", Shape::typical())
        .await;
    let whale = Shape {
        events: 1_000_000,
        ..Shape::typical()
    };
    app.seed_customer("cust_whale", "src_whale", whale).await;
    app.seed_customer("cust_after", "src_after", Shape::typical())
        .await;
    let others = app.checksum_of_others("cust_whale").await;

    let spawn = || {
        let mut command = app.command();
        command
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.spawn().expect("the worker starts")
    };
    let mut worker = spawn();
    let request_id = app.request_erasure("cust_whale").await;
    // Kill it once a good part of the events are gone.
    let mut progress = 0;
    for _ in 0..3000 {
        progress = app
            .count(
                "SELECT COALESCE((SELECT (data_json ->> 'events')::bigint FROM erasure.deletions \
                 WHERE request_id::text = $1 AND status = 'IN_PROGRESS'), 0)",
                &request_id.to_string(),
            )
            .await;
        if progress >= 300_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(progress >= 300_000, "the chunked erasure did not get going");
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every committed chunk is counted, and nothing else: recorded + remaining = all.
    let recorded = app
        .count(
            "SELECT (data_json ->> 'events')::bigint FROM erasure.deletions WHERE request_id::text = $1",
            &request_id.to_string(),
        )
        .await;
    let remaining = app
        .count(
            "SELECT count(*) FROM events WHERE customer_id = $1",
            "cust_whale",
        )
        .await;
    assert!(remaining > 0, "killed before the end");
    assert_eq!(recorded + remaining, 1_000_000);
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_whale")
            .await,
        1
    );

    let mut next = spawn();
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.data_json, whale.expected_counts());
    assert_eq!(app.checksum_of_others("cust_whale").await, others);
    assert_eq!(app.count_of("SELECT count(*) FROM erasure.claims").await, 0);
    next.start_kill().unwrap();
    next.wait().await.unwrap();
    app.cleanup().await;
}

/// The check after commit of `request_id`'s deletion, run now: the tables it names.
async fn check_now(app: &TestApp, request_id: uuid::Uuid) -> Vec<String> {
    let row = app.wait_for_final(request_id).await;
    let checked = app
        .app
        .as_ref()
        .unwrap()
        .verifier
        .verify_queued(256)
        .await
        .unwrap();
    checked
        .into_iter()
        .find(|c| c.deletion_id == row.id)
        .expect("checked")
        .tables
}

#[tokio::test]
async fn the_check_after_commit_reads_the_orders_the_erasure_kept_also_when_chunks_kept_them() {
    // The orders are kept, let go of the customer (customer_id nulled): no path of the plan
    // leads to them any more. The erasure records them, and the check reads them again, with
    // what hangs off them; in chunks too.
    let mut app = TestApp::with_settings(|s| {
        s.erasure.chunk_threshold = 100;
        s.erasure.chunk_rows = 40;
        s.proof.verify_every_ms = 0;
    })
    .await;
    app.seed_customer("cust_big", "src_big", large()).await;
    app.seed_customer("cust_small", "src_small", Shape::typical())
        .await;
    app.start_worker().await;
    let big = app.request_erasure("cust_big").await;
    let small = app.request_erasure("cust_small").await;
    let big_row = app.wait_for_final(big).await;
    assert_eq!(big_row.data_json, large().expected_counts());
    app.wait_for_final(small).await;
    // An event of one of each customer's kept orders appears after the commit.
    for customer in ["cust_big", "cust_small"] {
        sqlx::query(
            "INSERT INTO order_events (order_id, type) SELECT id, 'late' FROM orders \
             WHERE anonymized_at IS NOT NULL AND id LIKE $1 LIMIT 1",
        )
        .bind(format!("{customer}%"))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    assert_eq!(check_now(&app, big).await, ["public.order_events"]);
    assert_eq!(
        app.count_of(
            "SELECT count(*) FROM erasure.verifications WHERE outcome ->> 'outcome' = 'failed'"
        )
        .await,
        2
    );
    app.cleanup().await;
}

/// A customer another request is erasing in chunks (its claim) holds every other request for
/// that customer: the slot answers at once that the request waits on the claim, erases
/// nothing, and carries it out once the claim ends.
#[tokio::test]
async fn a_customer_claimed_by_another_request_holds_the_request_until_the_claim_ends() {
    use erasure::erase::{EraseError, Outcome, Slot};
    use erasure::request::{Channel, ErasureRequest};

    let app = TestApp::new().await;
    app.seed_customer("cust_claimed", "src_claimed", Shape::typical())
        .await;
    app.seed_customer("cust_other", "src_other", Shape::typical())
        .await;
    let claimant = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO erasure.claims (subject_id, request_id) VALUES ($1, $2)")
        .bind("cust_claimed")
        .bind(claimant)
        .execute(&app.pool)
        .await
        .unwrap();
    let before = app.checksum_of_everything().await;
    let eraser = app.eraser();
    let request = ErasureRequest {
        request_id: uuid::Uuid::new_v4(),
        customer_id: "src_claimed".into(),
        requested_by: "support-portal".into(),
        reason: None,
        requested_at: None,
        identifier_type: None,
    };
    let received = eraser
        .receive(request, Channel::Amqp, chrono::Utc::now())
        .unwrap();
    let mut slot = Slot::new(eraser.clone());
    let held = tokio::time::timeout(Duration::from_secs(20), slot.erase(&received))
        .await
        .expect("answered at once, not tried on while the claim stands");
    match held {
        Err(EraseError::ClaimedByAnotherRequest(by)) => assert_eq!(by, claimant),
        other => panic!("held by the claim: {other:?}"),
    }
    assert_eq!(app.checksum_of_everything().await, before);

    sqlx::query("DELETE FROM erasure.claims")
        .execute(&app.pool)
        .await
        .unwrap();
    let others = app.checksum_of_others("cust_claimed").await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), slot.erase(&received))
        .await
        .expect("carried out once the claim ended");
    // The slot keeps its connection between requests: let it go before the cleanup.
    drop(slot);
    match outcome.unwrap() {
        Outcome::Recorded(row) => {
            assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
            assert_eq!(row.data_json, Shape::typical().expected_counts());
        }
        other => panic!("recorded: {other:?}"),
    }
    assert_eq!(app.checksum_of_others("cust_claimed").await, others);
    assert_eq!(
        app.rows_containing("cust_claimed@mail.example").await,
        Vec::<String>::new()
    );
    app.cleanup().await;
}

/// A chunked erasure that fails after some chunks committed lets its claim on the customer go
/// with its FAILED record: a later request for the customer is carried out, not held for ever.
#[tokio::test]
async fn a_chunked_erasure_that_fails_half_way_lets_its_claim_go() {
    use serde_json::json;

    let (mut app, others) = big_and_other().await;
    // An event in the middle of the customer's refuses to go: chunks before it commit, the one
    // holding it fails with an error no retry passes.
    sqlx::raw_sql(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'kept'; END $$; \
         DO $$ BEGIN EXECUTE format('CREATE TRIGGER refuse BEFORE DELETE ON public.events FOR EACH ROW \
           WHEN (OLD.id = %s) EXECUTE FUNCTION public.refuse()', \
           (SELECT id FROM public.events WHERE customer_id = 'cust_big' ORDER BY id OFFSET 500 LIMIT 1)); END $$;",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app.start_worker().await;

    let failed = app
        .wait_for_final(app.request_erasure("cust_big").await)
        .await;
    assert_eq!(failed.status, DeletionStatus::Failed, "{failed:?}");
    assert_eq!(
        failed.error_key,
        Some(erasure::deletion::ErrorKey::Internal)
    );
    let left = app
        .count(
            "SELECT count(*) FROM events WHERE customer_id = $1",
            "cust_big",
        )
        .await;
    assert!(
        left > 0 && left < large().events,
        "chunks committed before the failure: {left} of {} events left",
        large().events
    );
    // What the committed chunks erased is recorded on the failure: every order event (their
    // step comes first) and the events before the one that refused.
    assert_eq!(failed.data_json["order_events"], json!(150));
    assert_eq!(failed.data_json["events"], json!(large().events - left));
    assert_eq!(app.count_of("SELECT count(*) FROM erasure.claims").await, 0);

    sqlx::raw_sql("DROP TRIGGER refuse ON public.events")
        .execute(&app.pool)
        .await
        .unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        app.wait_for_final(app.request_erasure("src_big").await),
    )
    .await
    .expect("the later request is carried out, not held by the failed one's claim");
    assert_eq!(done.status, DeletionStatus::Done, "{done:?}");
    assert!(!done.already_erased);
    let mut expected = large().expected_counts();
    expected["events"] = left.into();
    expected["order_events"] = 0.into();
    assert_eq!(done.data_json, expected);
    assert_only_the_big_customer_gone(&app, &others).await;
    app.cleanup().await;
}
