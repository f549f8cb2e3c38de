//! What a hostile or careless client can do to the service: dates outside the accepted range,
//! stalled and half-sent connections, floods of connections under a low open-files limit,
//! made-up methods, NUL bytes in identifiers, requests hyper cannot parse.

use erasure::deletion::{DeletionStatus, ErrorKey};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use erasure::startup::Mode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::fault_proxy::FaultProxy;
use crate::helpers::{Shape, TestApp};
use crate::http_api::{Api, expect_error, read};

/// Sends `bytes` on a new connection to `addr` and reads until the server closes it (or `limit`
/// passes); returns what came back and how long the server took to close.
async fn exchange(addr: &str, bytes: &[u8], limit: Duration) -> (Vec<u8>, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
            Err(_) => panic!("the server kept the connection open past {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (answer, started.elapsed()),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).expect("a JSON body"))
}

fn host_of(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

fn at(offset: chrono::TimeDelta) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Dates at and just past each end of the accepted range (the upper end is now + 5 minutes;
/// 4 minutes leaves the request time to travel), each with whether it is accepted.
fn boundary_dates() -> Vec<(String, bool)> {
    vec![
        ("2018-05-25T00:00:00Z".into(), true),
        ("2018-05-25T02:00:00+02:00".into(), true),
        (at(chrono::TimeDelta::minutes(4)), true),
        ("2018-05-24T23:59:59Z".into(), false),
        (at(chrono::TimeDelta::minutes(10)), false),
        ("9999-12-31T23:30:00-01:00".into(), false),
        ("0001-01-01T00:00:00Z".into(), false),
    ]
}

#[tokio::test]
async fn each_boundary_requested_at_over_http_is_erased_or_refused_at_once_never_left_pending() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, false).await;
    for (i, (requested_at, accepted)) in boundary_dates().into_iter().enumerate() {
        let customer = format!("cust_http_date_{i}");
        app.seed_customer(&customer, &format!("src_http_date_{i}"), Shape::typical())
            .await;
        let response = api
            .post(
                &customer,
                None,
                Some(json!({ "requested_at": requested_at })),
            )
            .await;
        if !accepted {
            let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
            assert!(message.starts_with("requested_at: "), "{message}");
            continue;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{requested_at}");
        let (_, pending) = read(response).await;
        let done = api.wait_for_final(pending["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "DONE", "{requested_at}: {done}");
        assert_eq!(done["data_json"], Shape::typical().expected_counts());
        // The dates the answer carries are plain RFC 3339, four-digit years.
        for field in ["requested_at", "due_at"] {
            let value = done[field].as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(value).is_ok(),
                "{value}"
            );
        }
    }
    let refused = boundary_dates().iter().filter(|(_, ok)| !ok).count();
    let accepted = boundary_dates().len() - refused;
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        accepted as i64,
        "a refused request records nothing"
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions WHERE status <> 'DONE'")
            .await,
        0
    );
    app.cleanup().await;
}

#[tokio::test]
async fn each_boundary_requested_at_over_the_queue_is_erased_or_failed_at_once_never_left_pending()
{
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let mut expected = Vec::new();
    for (i, (requested_at, accepted)) in boundary_dates().into_iter().enumerate() {
        let customer = format!("cust_queue_date_{i}");
        app.seed_customer(&customer, &format!("src_queue_date_{i}"), Shape::typical())
            .await;
        let request_id = Uuid::new_v4();
        let body = json!({
            "request_id": request_id, "customer_id": customer,
            "requested_by": "support-portal", "requested_at": requested_at,
        });
        app.publish(&serde_json::to_vec(&body).unwrap()).await;
        expected.push((request_id, customer, requested_at, accepted));
    }
    for (request_id, customer, requested_at, accepted) in &expected {
        let row = app.wait_for_final(*request_id).await;
        if *accepted {
            assert_eq!(row.status, DeletionStatus::Done, "{requested_at}: {row:?}");
            assert_eq!(row.data_json, Shape::typical().expected_counts());
        } else {
            assert_eq!(row.status, DeletionStatus::Failed, "{requested_at}");
            assert_eq!(row.error_key, Some(ErrorKey::InvalidRequest));
            assert!(
                row.error_message
                    .as_deref()
                    .unwrap()
                    .starts_with("requested_at: "),
                "{row:?}"
            );
            // Nothing of the customer was touched.
            assert_eq!(
                app.count(
                    "SELECT count(*) FROM events WHERE customer_id = $1",
                    customer
                )
                .await,
                Shape::typical().events
            );
        }
    }
    let refused = expected.iter().filter(|e| !e.3).count();
    assert_eq!(app.wait_for_dead_letters(refused).await.len(), refused);
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_the_worker_refuses_after_a_202_ends_failed_with_its_reason() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_late_refusal", "src_late_refusal", Shape::typical())
        .await;
    let before = app.checksum_of_everything().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let response = api.post("src_late_refusal", None, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let (_, accepted) = read(response).await;
    let request_id = accepted["request_id"].as_str().unwrap().to_owned();

    // The message as the API published it, read by a worker with stricter rules: here its
    // date no longer parses. Another bad message under the same request id, naming another
    // customer, must not touch the request.
    let published = app.take_all(&app.settings.amqp.queue).await;
    assert_eq!(published.len(), 1);
    let mut message: Value = serde_json::from_slice(&published[0]).unwrap();
    let mut stranger = message.clone();
    stranger["customer_id"] = json!("cust_someone_else");
    stranger["requested_at"] = json!("never");
    app.publish(&serde_json::to_vec(&stranger).unwrap()).await;
    app.start_worker().await;
    app.wait_for_dead_letters(1).await;
    let (_, still) = api
        .get(&format!("/v1/permanent-deletions/{request_id}"))
        .await;
    assert_eq!(still["status"], "PENDING", "{still}");

    message["requested_at"] = json!("yesterday");
    app.publish(&serde_json::to_vec(&message).unwrap()).await;
    let failed = api.wait_for_final(&request_id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["id"], accepted["id"]);
    assert_eq!(failed["error"]["key"], "invalid_request");
    assert_eq!(
        failed["error"]["message"],
        "requested_at: must be an RFC 3339 timestamp"
    );
    assert_eq!(app.wait_for_dead_letters(1).await.len(), 1);
    assert_eq!(
        app.audit_actions(request_id.parse().unwrap()).await,
        ["request.rejected", "request.rejected"]
    );
    // Nothing was erased, and the stored message is gone with the open deletion.
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(
        app.rows_containing("src_late_refusal").await,
        ["public.customers: 1"]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn idle_half_sent_and_stalled_connections_are_closed_within_their_timeouts() {
    let mut app = TestApp::with_settings(|s| {
        s.http.idle_timeout_ms = 600;
        s.http.header_timeout_ms = 300;
        s.http.request_timeout_ms = 900;
    })
    .await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base.clone(), false).await;
    let addr = host_of(&base);
    let limit = Duration::from_secs(5);
    let within = |took: Duration, low: u64, high: u64| {
        assert!(
            took >= Duration::from_millis(low) && took <= Duration::from_millis(high),
            "closed after {took:?}, expected {low} to {high} ms"
        );
    };

    // A connection that sends nothing: the idle timeout.
    let (answer, took) = exchange(&addr, b"", limit).await;
    assert!(answer.is_empty());
    within(took, 500, 2000);
    // Half a request head: the header timeout, counted from its first byte.
    let (answer, took) = exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", limit).await;
    assert!(answer.is_empty());
    within(took, 250, 1000);
    // A head trickled in one byte at a time still has to be whole within the header timeout.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        .iter()
        .cycle()
        .take(200)
    {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !closed {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await;
    }
    within(started.elapsed(), 250, 1500);
    // A head whose body never comes: the request timeout.
    let stalled = format!(
        "POST /v1/customers/c/permanent-deletion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"reas",
        api.key
    );
    let (answer, took) = exchange(&addr, stalled.as_bytes(), limit).await;
    let (status, body) = parse_answer(&answer);
    assert_eq!(
        (status, &body["key"]),
        (408, &json!("invalid_request")),
        "{body}"
    );
    within(took, 800, 2500);
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        0,
        "a request whose body never came records nothing"
    );
    // A connection kept alive after an answer: the idle timeout again.
    let (answer, took) = exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", limit).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    within(took, 500, 2000);
    app.cleanup().await;
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_open_exits_within_the_grace_period() {
    let app = TestApp::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut child = app
        .command()
        .arg("api")
        .env("ERASURE_HTTP_ADDR", &addr)
        .env("ERASURE_WORKER__SHUTDOWN_GRACE_MS", "10000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut half_sent = None;
    for _ in 0..100 {
        if let Ok(mut stream) = TcpStream::connect(&addr).await {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            half_sent = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut half_sent = half_sent.expect("the API listens");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let pid = child.id().unwrap().to_string();
    assert!(
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process exits within its grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), half_sent.read_to_end(&mut rest))
        .await
        .expect("the half-sent connection is closed");
    assert!(closed.is_err() || rest.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn made_up_methods_share_one_metric_label_and_metrics_stay_small() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    Api::new(&app, base.clone(), true).await;
    let addr = host_of(&base);
    let metrics = |base: String| async move {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // One made-up method first, so that the label "other" exists before the baseline.
    let probe = b"MADEUP /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    exchange(&addr, probe, Duration::from_secs(5)).await;
    let before = metrics(base.clone()).await;
    for i in 0..300 {
        let method = format!("M{i}{}", "X".repeat(4000));
        let request = format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (answer, _) = exchange(&addr, request.as_bytes(), Duration::from_secs(5)).await;
        let (status, body) = parse_answer(&answer);
        assert_eq!(status, 405);
        assert_eq!(body["message"], "this route does not take other");
    }
    let after = metrics(base).await;
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(!after.contains("XXXX"));
    assert!(
        after.len() < before.len() + 2048,
        "metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_nul_in_any_identifier_is_a_400_never_a_500() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    for (method, path) in [
        (Method::GET, "/v1/permanent-deletions/abc%00def"),
        (
            Method::GET,
            "/v1/permanent-deletions?starting_after=abc%00def",
        ),
        (
            Method::GET,
            "/v1/permanent-deletions?limit=5&starting_after=%00",
        ),
        (Method::GET, "/v1/customers/abc%00def/permanent-deletion"),
        (Method::POST, "/v1/customers/abc%00def/permanent-deletion"),
        (
            Method::GET,
            &format!("/v1/permanent-deletions/{}", "d".repeat(256)),
        ),
    ] {
        let response = api.request(method.clone(), path).send().await.unwrap();
        let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(
            message.contains("NUL") || message.contains("255"),
            "{path}: {message}"
        );
    }
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        0
    );
    app.cleanup().await;
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_json_envelope() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    Api::new(&app, base.clone(), true).await;
    let addr = host_of(&base);
    let limit = Duration::from_secs(5);
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(500_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..120)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70_000));
    for (request, expected) in [
        (huge_header.into_bytes(), 431),
        (many_headers.into_bytes(), 431),
        (long_uri.into_bytes(), 414),
        (b"GE\x01T / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), 400),
    ] {
        let (answer, _) = exchange(&addr, &request, limit).await;
        let (status, body) = parse_answer(&answer);
        assert_eq!(status, expected, "{body}");
        assert_eq!(body["code"], expected);
        assert_eq!(body["key"], "invalid_request");
        assert_eq!(body["trace_id"].as_str().unwrap().len(), 32);
    }
    // The server still answers.
    let (answer, _) = exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_flood_of_connections_under_a_low_open_files_limit_is_refused_and_the_process_survives() {
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let app = TestApp::new().await;
    app.seed_customer("cust_flood", "src_flood", Shape::typical())
        .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let through_proxy = format!("amqp://guest:guest@{}/%2f?heartbeat=1", proxy.addr);
    // 160 open files: 16 pooled database connections and 64 kept handles leave 80 connections.
    let mut child = app
        .command_for("bash")
        .args(["-c", "ulimit -n 160 && exec \"$0\" run"])
        .arg(env!("CARGO_BIN_EXE_erasure"))
        .env("ERASURE_HTTP_ADDR", &addr)
        .env("ERASURE_AMQP_URL", &through_proxy)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log as it comes, so that the process never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut log = Vec::new();
        let _ = stderr.read_to_end(&mut log).await;
        String::from_utf8_lossy(&log).into_owned()
    });
    let base = format!("http://{addr}");
    Api::new(&app, base.clone(), true).await;

    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let mut first = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {
                assert_eq!(&first[..n.min(12)], &b"HTTP/1.1 503"[..n.min(12)]);
                refused += 1;
            }
            _ => held.push(stream),
        }
    }
    assert!(refused > 0, "some connections are refused at the door");
    assert!(
        held.len() >= 40 && held.len() <= 100,
        "{} connections held",
        held.len()
    );
    // The broker connection drops while the connections are held: the consumer reconnects.
    proxy.reset();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    let request_id = app.request_erasure("cust_flood").await;
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.data_json, Shape::typical().expected_counts());
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(child.try_wait().unwrap().is_none(), "the process runs");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let log = log.await.unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("HTTP connection refused"), "{log}");
    app.cleanup().await;
}
