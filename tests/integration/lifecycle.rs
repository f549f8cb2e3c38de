//! Cancel, the suppression check, and the grace period: held requests survive a killed worker
//! and a dropped broker connection, and are erased once, after their hold and not before.

use std::time::Duration;

use chrono::{DateTime, Utc};
use erasure::config::GracePeriod;
use erasure::deletion::{self, DeletionStatus, ErrorKey};
use erasure::startup::Mode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fault_proxy::FaultProxy;
use crate::faults::{kill_9, spawn_worker};
use crate::helpers::{Shape, TestApp};
use crate::http_api::{Api, expect_error, read};

async fn customer_rows(app: &TestApp, customer: &str) -> i64 {
    app.count(
        "SELECT (SELECT count(*) FROM customers WHERE id = $1) \
              + (SELECT count(*) FROM events WHERE customer_id = $1)",
        customer,
    )
    .await
}

#[tokio::test]
async fn cancel_while_pending_is_idempotent_too_late_once_done_and_a_late_message_erases_nothing() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_mind", "src_mind", Shape::typical())
        .await;
    app.seed_customer("cust_gone", "src_gone", Shape::typical())
        .await;
    let events = app.subscribe_to_events().await;
    // The API alone: the request stays PENDING, its message waits in the queue.
    let base = app.start(Mode::Api).await;
    let writer = Api::new(&app, base.clone(), false).await;
    let reader = Api::new(&app, base, true).await;
    let (status, pending) = read(writer.post("cust_mind", None, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = pending["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/permanent-deletions/{id}");

    let refused = reader.request(Method::DELETE, &path).send().await.unwrap();
    expect_error(refused, StatusCode::FORBIDDEN, "forbidden").await;
    let (status, canceled) =
        read(writer.request(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["status"], "CANCELED");
    assert!(canceled["completed_at"].is_string());
    let (status, again) = read(writer.request(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "cancel is idempotent: {again}");
    assert_eq!(again["status"], "CANCELED");
    assert_eq!(again["completed_at"], canceled["completed_at"]);
    let request_id: Uuid = canceled["request_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.audit_actions(request_id).await, ["erasure.canceled"]);
    let missing = writer
        .request(
            Method::DELETE,
            "/v1/permanent-deletions/del_000000000000000000000000",
        )
        .send()
        .await
        .unwrap();
    expect_error(missing, StatusCode::NOT_FOUND, "not_found").await;

    // Its event, from the outbox.
    let mut published: Vec<Value> = Vec::new();
    for _ in 0..100 {
        published.extend(
            app.take_all(&events)
                .await
                .iter()
                .map(|b| serde_json::from_slice(b).unwrap()),
        );
        if !published.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["id"], id.as_str());
    assert_eq!(published[0]["status"], "CANCELED");

    // A worker now takes the request's message: nothing is erased, the deletion stays CANCELED.
    app.start_worker().await;
    let done = app.request_erasure("cust_gone").await;
    let done = app.wait_for_final(done).await;
    assert_eq!(done.status, DeletionStatus::Done);
    for _ in 0..100 {
        if app.take_all(&app.settings.amqp.queue).await.is_empty()
            && app.audit_actions(request_id).await.len() > 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.audit_actions(request_id).await,
        ["erasure.canceled", "request.duplicate"]
    );
    let row = deletion::find(&app.pool, &id).await.unwrap().unwrap();
    assert_eq!(row.status, DeletionStatus::Canceled);
    assert_eq!(
        customer_rows(&app, "cust_mind").await,
        1 + Shape::typical().events
    );

    // Too late once DONE.
    let late = writer
        .request(
            Method::DELETE,
            &format!("/v1/permanent-deletions/{}", done.id),
        )
        .send()
        .await
        .unwrap();
    let message = expect_error(late, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains("DONE"), "{message}");
    app.cleanup().await;
}

#[tokio::test]
async fn suppression_answers_for_the_key_and_a_lookup_after_done_and_404_before_and_for_strangers()
{
    let mut app = TestApp::new().await;
    app.seed_customer("cust_sup", "src_sup", Shape::default())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, true).await;
    for identifier in ["cust_sup", "src_sup", "cust_stranger"] {
        let response = api
            .request(Method::GET, &format!("/v1/suppressions/{identifier}"))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let row = app
        .wait_for_final(app.request_erasure("cust_sup").await)
        .await;
    assert_eq!(row.status, DeletionStatus::Done);
    for identifier in ["cust_sup", "src_sup"] {
        let (status, body) = api.get(&format!("/v1/suppressions/{identifier}")).await;
        assert_eq!(status, StatusCode::OK, "{identifier}: {body}");
        assert_eq!(
            body,
            json!({
                "object": "suppression",
                "erased": true,
                "deletion_id": row.id,
                "completed_at": deletion::millis(row.completed_at.unwrap()),
            })
        );
    }
    let response = api
        .request(Method::GET, "/v1/suppressions/cust_stranger")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    // A FAILED request for a stranger suppresses nothing.
    let failed = app
        .wait_for_final(app.request_erasure("cust_stranger").await)
        .await;
    assert_eq!(failed.error_key, Some(ErrorKey::NotFound));
    let response = api
        .request(Method::GET, "/v1/suppressions/cust_stranger")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    app.cleanup().await;
}

const GRACE_SECS: i64 = 5;

/// (status, scheduled_at, completed_at) of the deletion of `request_id`, if recorded.
async fn state_of(
    app: &TestApp,
    request_id: Uuid,
) -> Option<(DeletionStatus, Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    deletion::find(&app.pool, &request_id.to_string())
        .await
        .unwrap()
        .map(|row| (row.status, row.scheduled_at, row.completed_at))
}

#[tokio::test]
async fn held_requests_survive_a_killed_worker_and_a_dropped_broker_connection_and_are_erased_once_after_their_hold()
 {
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let app = TestApp::new().await;
    let customers: Vec<String> = (0..4).map(|i| format!("cust_hold_{i}")).collect();
    for customer in &customers {
        app.seed_customer(customer, &format!("src_{customer}"), Shape::typical())
            .await;
    }
    let grace = format!("{GRACE_SECS}s");
    let through_proxy = format!("amqp://guest:guest@{}/%2f?heartbeat=1", proxy.addr);
    let env = [
        ("ERASURE_AMQP_URL", through_proxy.as_str()),
        ("ERASURE_ERASURE__GRACE_PERIOD", grace.as_str()),
    ];
    let mut worker = spawn_worker(&app, &env);
    let published_at = Utc::now();
    let mut requests = Vec::new();
    for customer in &customers {
        requests.push(app.request_erasure(customer).await);
    }
    // A request whose hold would end after its due date is refused.
    let late = Uuid::new_v4();
    let requested_at =
        (Utc::now() - chrono::Months::new(1) + chrono::Duration::seconds(2)).to_rfc3339();
    app.publish(
        &serde_json::to_vec(&json!({
            "request_id": late, "customer_id": "cust_hold_0", "requested_by": "crm",
            "requested_at": requested_at,
        }))
        .unwrap(),
    )
    .await;

    // Each is recorded PENDING with its scheduled time, none erased.
    let mut scheduled = Vec::new();
    for request_id in &requests {
        let mut seen = None;
        for _ in 0..100 {
            if let Some((DeletionStatus::Pending, Some(at), None)) =
                state_of(&app, *request_id).await
            {
                seen = Some(at);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let at = seen.expect("the request is recorded PENDING with its scheduled time");
        assert!(
            at >= published_at + chrono::Duration::seconds(GRACE_SECS),
            "{at}"
        );
        assert!(
            at <= Utc::now() + chrono::Duration::seconds(GRACE_SECS),
            "{at}"
        );
        scheduled.push(at);
    }
    let refused = app.wait_for_final(late).await;
    assert_eq!(refused.error_key, Some(ErrorKey::InvalidRequest));
    assert!(
        refused
            .error_message
            .as_deref()
            .unwrap()
            .contains("grace period"),
        "{refused:?}"
    );

    // The worker is killed during the hold, another starts, and its broker connection drops.
    kill_9(&mut worker).await;
    let mut worker = spawn_worker(&app, &env);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.reset();
    for (customer, request_id) in customers.iter().zip(&requests) {
        if Utc::now() < scheduled[0] - chrono::Duration::milliseconds(500) {
            assert_eq!(
                customer_rows(&app, customer).await,
                1 + Shape::typical().events,
                "{customer} is not erased during its hold"
            );
            assert!(matches!(
                state_of(&app, *request_id).await,
                Some((DeletionStatus::Pending, Some(_), None))
            ));
        }
    }

    for ((customer, request_id), at) in customers.iter().zip(&requests).zip(&scheduled) {
        let row = app.wait_for_final(*request_id).await;
        assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
        assert_eq!(row.data_json, Shape::typical().expected_counts());
        assert!(row.completed_at.unwrap() >= *at, "erased after its hold");
        assert_eq!(row.scheduled_at, Some(*at), "the hold never moved");
        let outcomes: Vec<String> = app
            .audit_actions(*request_id)
            .await
            .into_iter()
            .filter(|a| a.starts_with("erasure."))
            .collect();
        assert_eq!(outcomes, ["erasure.done"], "erased once");
        assert_eq!(customer_rows(&app, customer).await, 0);
    }
    kill_9(&mut worker).await;
    assert!(
        app.take_all(&erasure::broker::hold_queue(&app.settings.amqp))
            .await
            .is_empty()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn with_a_grace_period_a_submission_shows_its_schedule_and_one_past_its_due_date_is_refused()
{
    let mut app =
        TestApp::with_settings(|s| s.erasure.grace_period = GracePeriod::parse("2d").unwrap())
            .await;
    app.seed_customer("cust_wait", "src_wait", Shape::default())
        .await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let before = Utc::now();
    let (status, body) = read(api.post("cust_wait", None, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let scheduled: DateTime<Utc> = body["scheduled_at"].as_str().unwrap().parse().unwrap();
    assert!(scheduled >= before + chrono::Duration::days(2) - chrono::Duration::seconds(1));
    assert!(scheduled <= Utc::now() + chrono::Duration::days(2));
    // due_at still counts from requested_at.
    let requested_at: DateTime<Utc> = body["requested_at"].as_str().unwrap().parse().unwrap();
    let due_at: DateTime<Utc> = body["due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(due_at, requested_at + chrono::Months::new(1));

    let old = (Utc::now() - chrono::Duration::days(30)).to_rfc3339();
    let response = api
        .post("cust_wait", None, Some(json!({ "requested_at": old })))
        .await;
    let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(message.contains("grace period"), "{message}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_shorter_grace_period_after_a_restart_does_not_wait_behind_longer_holds_and_a_purged_broker_loses_none()
 {
    let app = TestApp::new().await;
    for customer in ["cust_long", "cust_short"] {
        app.seed_customer(customer, &format!("src_{customer}"), Shape::typical())
            .await;
    }
    let mut worker = spawn_worker(&app, &[("ERASURE_ERASURE__GRACE_PERIOD", "8s")]);
    let long = app.request_erasure("cust_long").await;
    let long_at = wait_scheduled(&app, long).await;

    // Restarted with a shorter grace period; the broker's queues purged while the first is held.
    kill_9(&mut worker).await;
    app.take_all(&app.settings.amqp.queue).await;
    app.take_all(&erasure::broker::hold_queue(&app.settings.amqp))
        .await;
    let mut worker = spawn_worker(&app, &[("ERASURE_ERASURE__GRACE_PERIOD", "2s")]);
    let short = app.request_erasure("cust_short").await;
    let short_at = wait_scheduled(&app, short).await;
    assert!(short_at < long_at, "{short_at} {long_at}");

    // The later, shorter hold ends first, within seconds of its time; the longer one is still held.
    let row = app.wait_for_final(short).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    let done = row.completed_at.unwrap();
    assert!(done >= short_at, "not before its time");
    assert!(
        done - short_at <= chrono::Duration::seconds(10),
        "{done} is within 10 s of {short_at}"
    );
    if Utc::now() < long_at {
        assert!(matches!(
            state_of(&app, long).await,
            Some((DeletionStatus::Pending, Some(_), None))
        ));
        assert_eq!(
            app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_long")
                .await,
            1
        );
    }
    // The first, though the broker lost its message, is erased at its own time, once.
    let row = app.wait_for_final(long).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert!(row.completed_at.unwrap() >= long_at);
    assert_eq!(row.scheduled_at, Some(long_at), "the hold never moved");
    assert!(row.completed_at.unwrap() - long_at <= chrono::Duration::seconds(10));
    let outcomes: Vec<String> = app
        .audit_actions(long)
        .await
        .into_iter()
        .filter(|a| a.starts_with("erasure."))
        .collect();
    assert_eq!(outcomes, ["erasure.done"], "erased once");
    kill_9(&mut worker).await;
    app.cleanup().await;
}

/// Waits until the request is recorded PENDING with its scheduled time, and returns the time.
async fn wait_scheduled(app: &TestApp, request_id: Uuid) -> DateTime<Utc> {
    for _ in 0..200 {
        if let Some((DeletionStatus::Pending, Some(at), None)) = state_of(app, request_id).await {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{request_id} was not recorded PENDING with its scheduled time")
}
