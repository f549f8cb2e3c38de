//! Faults injected into real worker processes and real servers. After each scenario the oracle
//! holds: every request ends exactly once as DONE or FAILED (or is still queued or
//! dead-lettered, never vanished), counts are recorded once, other customers' rows are
//! unchanged, and no partial erasure is ever visible.

use erasure::deletion::{DeletionStatus, ErrorKey};
use std::process::Stdio;
use std::time::Duration;

use sqlx::{PgConnection, Postgres, Transaction};
use tokio::process::Child;
use uuid::Uuid;

use crate::fault_proxy::{FaultProxy, Mode};
use crate::helpers::{Shape, TestApp};

/// Twice the default client_connection_check_interval: by then the server has cancelled the
/// statement of a worker that died.
const CLIENT_CHECK: Duration = Duration::from_millis(2000);

/// Starts the worker binary with the test's configuration and `env` on top.
pub(crate) fn spawn_worker(app: &TestApp, env: &[(&str, &str)]) -> Child {
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

/// Holds a lock on one of `customer`'s order_events rows, so that an erasure of that customer
/// stops in the middle of its statement, after it started deleting.
async fn hold_order_event(app: &TestApp, customer: &str) -> Transaction<'static, Postgres> {
    let mut tx = app.pool.begin().await.unwrap();
    let locked: Option<i64> = sqlx::query_scalar(
        "SELECT oe.id FROM order_events oe JOIN orders o ON o.id = oe.order_id \
         WHERE o.customer_id = $1 LIMIT 1 FOR UPDATE OF oe",
    )
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    assert!(locked.is_some(), "the customer has order events");
    tx
}

/// Waits until a backend of the test database waits on a lock.
async fn wait_until_blocked(app: &TestApp) {
    for _ in 0..400 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&app.database)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no erasure got to the lock");
}

/// What the target owns right now, as another session sees it: all or nothing, never half.
async fn visible_rows(conn: &mut PgConnection, customer: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE customer_id = $1), \
                (SELECT count(*) FROM customer_events WHERE customer_id = $1), \
                (SELECT count(*) FROM customers WHERE id = $1)",
    )
    .bind(customer)
    .fetch_one(conn)
    .await
    .unwrap()
}

pub(crate) async fn kill_9(child: &mut Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// The oracle for one erased customer: DONE once with the exact counts, one audit outcome,
/// everyone else unchanged.
async fn assert_erased_once(app: &TestApp, request_id: Uuid, shape: Shape, others: &str) {
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(row.data_json, shape.expected_counts());
    let outcomes: Vec<String> = app
        .audit_actions(request_id)
        .await
        .into_iter()
        .filter(|a| a.starts_with("erasure."))
        .collect();
    assert_eq!(outcomes, ["erasure.done"]);
    assert_eq!(
        app.checksum_of_others(&row.related_object_id.unwrap())
            .await,
        others
    );
}

#[tokio::test]
async fn kill_9_in_the_middle_of_the_statement_leaves_nothing_half_done() {
    let app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_k9", "src_k9", shape).await;
    app.seed_customer("cust_bystander", "src_bystander", shape)
        .await;
    let others = app.checksum_of_others("cust_k9").await;
    let lock = hold_order_event(&app, "cust_k9").await;
    let slow_locks = [("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000")];
    let mut worker = spawn_worker(&app, &slow_locks);
    let request_id = app.request_erasure("cust_k9").await;
    wait_until_blocked(&app).await;
    let mut observer = app.pool.acquire().await.unwrap();
    assert_eq!(visible_rows(&mut observer, "cust_k9").await, (16, 28, 1));

    kill_9(&mut worker).await;
    // The server notices the dead client within client_connection_check_interval and cancels
    // its statement: released after that, nothing the dead worker started takes effect.
    tokio::time::sleep(CLIENT_CHECK).await;
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(visible_rows(&mut observer, "cust_k9").await, (16, 28, 1));

    let mut next = spawn_worker(&app, &[]);
    assert_erased_once(&app, request_id, shape, &others).await;
    assert_eq!(visible_rows(&mut observer, "cust_k9").await, (0, 0, 0));
    drop(observer);
    kill_9(&mut next).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_that_kills_every_worker_is_stopped_as_poison_and_innocents_go_through() {
    let app = TestApp::new().await;
    app.seed_customer("cust_poison", "src_poison", Shape::typical())
        .await;
    app.seed_customer("cust_innocent", "src_innocent", Shape::typical())
        .await;
    let lock = hold_order_event(&app, "cust_poison").await;
    let env = [
        ("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000"),
        ("ERASURE_WORKER__MAX_DELIVERIES", "2"),
    ];
    let poison = app.request_erasure("cust_poison").await;
    // Twice the request hangs its worker, which is then killed.
    for round in 0..2 {
        let mut worker = spawn_worker(&app, &env);
        wait_until_blocked(&app).await;
        if round == 0 {
            app.request_erasure("cust_innocent").await;
        }
        kill_9(&mut worker).await;
        // Let the killed worker's backend notice and give up the statement.
        tokio::time::sleep(CLIENT_CHECK).await;
    }
    let mut worker = spawn_worker(&app, &env);
    let stopped = app.wait_for_final(poison).await;
    assert_eq!(stopped.status, DeletionStatus::Failed);
    assert_eq!(stopped.error_key, Some(ErrorKey::Internal));
    // Two deliveries killed their workers; the third is the one that stops it.
    assert!(
        stopped
            .error_message
            .as_deref()
            .unwrap()
            .contains("delivered 3 times and never finished")
            && stopped.error_message.as_deref().unwrap().contains("poison"),
        "{stopped:?}"
    );
    let dead = app.wait_for_dead_letters(1).await;
    assert_eq!(dead.len(), 1, "only the poison message is dead-lettered");
    let body: serde_json::Value = serde_json::from_slice(&dead[0]).unwrap();
    assert_eq!(body["request_id"], poison.to_string());
    // The poison customer is untouched; the innocent one is erased, once.
    let mut observer = app.pool.acquire().await.unwrap();
    assert_eq!(
        visible_rows(&mut observer, "cust_poison").await,
        (16, 28, 1)
    );
    for _ in 0..200 {
        if visible_rows(&mut observer, "cust_innocent").await == (0, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        visible_rows(&mut observer, "cust_innocent").await,
        (0, 0, 0)
    );
    let innocent = app
        .count(
            "SELECT count(*) FROM erasure.deletions WHERE status = 'DONE' AND related_object_id = $1",
            "cust_innocent",
        )
        .await;
    assert_eq!(innocent, 1);
    drop(observer);
    lock.rollback().await.unwrap();
    kill_9(&mut worker).await;
    app.cleanup().await;
}

#[tokio::test]
async fn sigterm_lets_the_erasure_in_flight_finish_and_exits_0() {
    let app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_term", "src_term", shape).await;
    let others = app.checksum_of_others("cust_term").await;
    let lock = hold_order_event(&app, "cust_term").await;
    let mut worker = spawn_worker(&app, &[("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000")]);
    let request_id = app.request_erasure("cust_term").await;
    wait_until_blocked(&app).await;
    signal(&worker, "-TERM").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker stops within its grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_erased_once(&app, request_id, shape, &others).await;
    // Acknowledged: nothing comes back.
    assert!(app.take_all(&app.settings.amqp.queue).await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn past_the_grace_period_the_worker_exits_non_zero_and_the_request_is_redelivered() {
    let app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_grace", "src_grace", shape).await;
    let others = app.checksum_of_others("cust_grace").await;
    let lock = hold_order_event(&app, "cust_grace").await;
    let mut worker = spawn_worker(
        &app,
        &[
            ("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000"),
            ("ERASURE_WORKER__SHUTDOWN_GRACE_MS", "1000"),
        ],
    );
    let request_id = app.request_erasure("cust_grace").await;
    wait_until_blocked(&app).await;
    signal(&worker, "-TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker gives up after its grace period")
        .unwrap();
    assert_eq!(status.code(), Some(3));
    tokio::time::sleep(CLIENT_CHECK).await;
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut observer = app.pool.acquire().await.unwrap();
    assert_eq!(visible_rows(&mut observer, "cust_grace").await, (16, 28, 1));
    drop(observer);

    let mut next = spawn_worker(&app, &[]);
    assert_erased_once(&app, request_id, shape, &others).await;
    kill_9(&mut next).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_lock_held_past_every_attempt_fails_internal_and_dead_letters_without_erasing() {
    let mut app = TestApp::with_settings(|s| {
        s.database.lock_timeout_ms = 200;
        s.worker.max_attempts = 3;
    })
    .await;
    app.seed_customer("cust_locked", "src_locked", Shape::typical())
        .await;
    let lock = hold_order_event(&app, "cust_locked").await;
    app.start_worker().await;
    let request_id = app.request_erasure("cust_locked").await;
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Failed);
    assert_eq!(row.error_key, Some(ErrorKey::Internal));
    let message = row.error_message.unwrap();
    assert!(message.contains("failed 3 times"), "{message}");
    assert!(message.contains("55P03"), "{message}");
    let dead = app.wait_for_dead_letters(1).await;
    let body: serde_json::Value = serde_json::from_slice(&dead[0]).unwrap();
    assert_eq!(body["request_id"], request_id.to_string());
    let mut observer = app.pool.acquire().await.unwrap();
    assert_eq!(
        visible_rows(&mut observer, "cust_locked").await,
        (16, 28, 1)
    );
    drop(observer);
    lock.rollback().await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn killed_backends_and_a_database_outage_lose_nothing_and_fail_nothing() {
    let mut app = TestApp::new().await;
    for i in 0..4 {
        app.seed_customer(
            &format!("cust_out_{i}"),
            &format!("src_out_{i}"),
            Shape::typical(),
        )
        .await;
    }
    app.start_worker().await;
    let first = app.request_erasure("cust_out_0").await;
    app.wait_for_final(first).await;

    let admin = sqlx::PgPool::connect(&format!("{}/postgres", crate::helpers::database_server()))
        .await
        .unwrap();
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()";
    // Every connection of the worker is killed while idle; the next request still goes through.
    sqlx::query(terminate)
        .bind(&app.database)
        .execute(&admin)
        .await
        .unwrap();
    let second = app.request_erasure("cust_out_1").await;
    assert_eq!(
        app.wait_for_final(second).await.status,
        DeletionStatus::Done
    );

    // The database refuses connections for a while, with requests waiting.
    let allow = |on: bool| format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {on}", app.database);
    sqlx::query(&allow(false)).execute(&admin).await.unwrap();
    sqlx::query(terminate)
        .bind(&app.database)
        .execute(&admin)
        .await
        .unwrap();
    let waiting = [
        app.request_erasure("cust_out_2").await,
        app.request_erasure("cust_out_3").await,
    ];
    tokio::time::sleep(Duration::from_secs(4)).await;
    sqlx::query(&allow(true)).execute(&admin).await.unwrap();
    for request_id in waiting {
        let row = app.wait_for_final(request_id).await;
        assert_eq!(
            row.status,
            DeletionStatus::Done,
            "an outage never fails a request: {row:?}"
        );
        assert_eq!(row.data_json, Shape::typical().expected_counts());
        assert_eq!(app.audit_actions(request_id).await, ["erasure.done"]);
    }
    // Each held delivery was acknowledged once its erasure committed, not tried again: when the
    // worker stops, none goes back to the queue.
    app.stop_workers().await;
    assert!(
        app.take_all(&app.settings.amqp.queue.clone())
            .await
            .is_empty()
    );
    admin.close().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_reset_or_blackholed_broker_connection_is_replaced_and_nothing_is_lost() {
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let app = TestApp::new().await;
    for i in 0..3 {
        app.seed_customer(
            &format!("cust_net_{i}"),
            &format!("src_net_{i}"),
            Shape::typical(),
        )
        .await;
    }
    let through_proxy = format!("amqp://guest:guest@{}/%2f?heartbeat=1", proxy.addr);
    let http = free_addr().await;
    let mut worker = spawn_worker(
        &app,
        &[
            ("ERASURE_AMQP_URL", &through_proxy),
            ("ERASURE_WORKER__OPS_ADDR", &http),
        ],
    );
    let first = app.request_erasure("cust_net_0").await;
    assert_eq!(app.wait_for_final(first).await.status, DeletionStatus::Done);

    // Reset: every connection closed at once.
    proxy.reset();
    let second = app.request_erasure("cust_net_1").await;
    assert_eq!(
        app.wait_for_final(second).await.status,
        DeletionStatus::Done
    );

    // Blackholed: connections stay open but nothing passes; heartbeats notice.
    proxy.set(Mode::Blackhole);
    let third = app.request_erasure("cust_net_2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        readiness(&http).await,
        503,
        "not ready while the broker is out of reach"
    );
    proxy.reset();
    proxy.set(Mode::Pass);
    let row = app.wait_for_final(third).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.data_json, Shape::typical().expected_counts());
    let deletions = app.count_of("SELECT count(*) FROM erasure.deletions").await;
    assert_eq!(deletions, 3);
    let mut ready = 0;
    for _ in 0..100 {
        ready = readiness(&http).await;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "ready again once the broker is back");
    kill_9(&mut worker).await;
    app.cleanup().await;
}

async fn signal(child: &Child, which: &str) {
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args([which, &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
}

/// A free local address for a child's HTTP port.
async fn free_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The status of `GET /readyz` (waiting for the server to listen).
async fn readiness(addr: &str) -> u16 {
    for _ in 0..100 {
        if let Ok(response) = reqwest::get(format!("http://{addr}/readyz")).await {
            return response.status().as_u16();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the worker's HTTP port never answered");
}

#[tokio::test]
async fn duplicate_bursts_on_two_worker_processes_erase_once() {
    let app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_burst", "src_burst", shape).await;
    app.seed_customer("cust_calm", "src_calm", shape).await;
    let others = app.checksum_of_others("cust_burst").await;
    let mut workers = [spawn_worker(&app, &[]), spawn_worker(&app, &[])];
    let first = Uuid::new_v4();
    let second = Uuid::new_v4();
    for _ in 0..10 {
        app.publish(&TestApp::request(first, "cust_burst")).await;
        app.publish(&TestApp::request(second, "src_burst")).await;
    }
    let rows = [
        app.wait_for_final(first).await,
        app.wait_for_final(second).await,
    ];
    let erased: Vec<_> = rows.iter().filter(|r| !r.already_erased).collect();
    assert_eq!(erased.len(), 1, "{rows:?}");
    assert_eq!(erased[0].data_json, shape.expected_counts());
    assert!(rows.iter().all(|r| r.status == DeletionStatus::Done));
    // Every copy is answered: the queue drains, and each request has one outcome.
    for _ in 0..200 {
        let audited = app
            .count_of(
                "SELECT count(*) FROM erasure.audit_log WHERE action IN ('erasure.done', 'request.duplicate')",
            )
            .await;
        if audited == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for request_id in [first, second] {
        let actions = app.audit_actions(request_id).await;
        assert_eq!(
            actions.iter().filter(|a| *a == "erasure.done").count(),
            1,
            "{actions:?}"
        );
        assert_eq!(actions.len(), 10, "{actions:?}");
    }
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        2
    );
    assert_eq!(app.checksum_of_others("cust_burst").await, others);
    for worker in &mut workers {
        kill_9(worker).await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn kill_9_after_commit_before_the_acknowledgement_erases_once() {
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_unacked", "src_unacked", shape)
        .await;
    let others = app.checksum_of_others("cust_unacked").await;
    // The erasure waits on a lock while its broker connection goes silent; then it commits,
    // and its acknowledgement is lost with the process.
    let lock = hold_order_event(&app, "cust_unacked").await;
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let mut worker = spawn_worker(
        &app,
        &[
            ("ERASURE_AMQP_URL", &through_proxy),
            ("ERASURE_DATABASE__LOCK_TIMEOUT_MS", "60000"),
        ],
    );
    let request_id = app.request_erasure("cust_unacked").await;
    wait_until_blocked(&app).await;
    proxy.set(Mode::Blackhole);
    lock.rollback().await.unwrap();
    let committed = app.wait_for_final(request_id).await;
    assert_eq!(committed.status, DeletionStatus::Done);
    kill_9(&mut worker).await;
    proxy.reset();

    // The broker redelivers to the next worker, which finds the outcome recorded.
    let mut next = spawn_worker(&app, &[]);
    for _ in 0..400 {
        if app.audit_actions(request_id).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.audit_actions(request_id).await,
        ["erasure.done", "request.duplicate"]
    );
    assert_erased_once(&app, request_id, shape, &others).await;
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        1
    );
    kill_9(&mut next).await;
    assert!(app.take_all(&app.settings.amqp.queue).await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn later_deliveries_committed_before_an_earlier_one_never_answer_for_it_across_a_kill_9() {
    // Three deliveries on one channel: the first waits on a lock, the two after it commit. Their
    // acknowledgements must not cover the first (an acknowledgement with `multiple` would), so
    // that when the worker is killed before the first commits, the broker gives it again.
    let app = TestApp::new().await;
    let shape = Shape::typical();
    for customer in ["cust_slow", "cust_quick_1", "cust_quick_2"] {
        app.seed_customer(customer, &format!("src_{customer}"), shape)
            .await;
    }
    let lock = hold_order_event(&app, "cust_slow").await;
    let env = [
        ("ERASURE_WORKER__BATCH_MAX", "1"),
        ("ERASURE_WORKER__CONCURRENCY", "3"),
    ];
    let mut worker = spawn_worker(&app, &env);
    let slow = app.request_erasure("cust_slow").await;
    wait_until_blocked(&app).await;
    let quick = [
        app.request_erasure("cust_quick_1").await,
        app.request_erasure("cust_quick_2").await,
    ];
    for id in quick {
        assert_eq!(app.wait_for_final(id).await.status, DeletionStatus::Done);
    }
    let others = app.checksum_of_others("cust_slow").await;
    // Past the time a done delivery waits for the ones before it: the two are acknowledged.
    tokio::time::sleep(4 * erasure::worker::acker::HOLD).await;
    kill_9(&mut worker).await;
    // The dead worker's statement is cancelled by the server before the lock goes.
    tokio::time::sleep(CLIENT_CHECK).await;
    lock.rollback().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM erasure.deletions WHERE request_id = $1::uuid",
            &slow.to_string()
        )
        .await,
        0,
        "the first delivery had nothing committed when the worker died"
    );
    let mut worker = spawn_worker(&app, &env);
    assert_erased_once(&app, slow, shape, &others).await;
    // The two were acknowledged before the kill (each alone, once it had waited for the one
    // before it): never given again.
    for id in quick {
        assert_eq!(app.audit_actions(id).await, ["erasure.done"], "{id}");
    }
    kill_9(&mut worker).await;
    app.cleanup().await;
}

/// A worker slot keeps its connection from one request to the next. One that died while idle
/// (a restart, a terminated backend) is replaced at once, and the request carried out; a
/// database that cannot be reached holds the request (the caller tries it again later) after
/// that one try, instead of trying on and on.
#[tokio::test]
async fn a_kept_connection_lost_while_idle_is_replaced_at_once_and_an_unreachable_database_holds_the_request()
 {
    use erasure::erase::{Outcome, Slot};
    use erasure::request::{Channel, ErasureRequest};

    let app = TestApp::new().await;
    let customers = ["cust_kept_1", "cust_kept_2", "cust_kept_3"];
    for customer in customers {
        app.seed_customer(customer, &format!("src_{customer}"), Shape::typical())
            .await;
    }
    let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut settings = app.settings.clone();
    settings.database.url = erasure::config::Secret::new(format!(
        "postgres://postgres@{}/{}?sslmode=disable",
        proxy.addr, app.database
    ));
    settings.database.max_connections = 1;
    settings.database.acquire_timeout_ms = 1000;
    let through_proxy = erasure::startup::Application::build(settings)
        .await
        .unwrap();
    let eraser = through_proxy.eraser.clone();
    let received = |customer: &str| {
        let request = ErasureRequest {
            request_id: Uuid::new_v4(),
            customer_id: customer.into(),
            requested_by: "support-portal".into(),
            reason: None,
            requested_at: None,
            identifier_type: None,
        };
        eraser
            .receive(request, Channel::Amqp, chrono::Utc::now())
            .unwrap()
    };
    let mut slot = Slot::new(eraser.clone());
    let done = |outcome: Outcome| match outcome {
        Outcome::Recorded(row) => assert_eq!(row.status, DeletionStatus::Done, "{row:?}"),
        other => panic!("recorded: {other:?}"),
    };
    done(slot.erase(&received(customers[0])).await.unwrap());

    proxy.reset();
    let second = tokio::time::timeout(Duration::from_secs(30), slot.erase(&received(customers[1])))
        .await
        .expect("a kept connection lost is replaced, not waited on");
    done(second.expect("carried out on a fresh connection, not held"));

    let before = app.checksum_of_everything().await;
    proxy.set(Mode::Refuse);
    proxy.reset();
    let third = tokio::time::timeout(Duration::from_secs(30), slot.erase(&received(customers[2])))
        .await
        .expect("an unreachable database holds the request instead of trying on and on");
    let Err(e) = third else {
        panic!("held: {third:?}")
    };
    assert_eq!(e.class(), erasure::db::ErrorClass::Hold, "{e}");
    drop(slot);
    proxy.set(Mode::Pass);
    assert_eq!(
        app.checksum_of_everything().await,
        before,
        "nothing erased while held"
    );
    app.cleanup().await;
}
