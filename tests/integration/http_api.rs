//! The HTTP API over real HTTP, against a service running in this process with the test's own
//! database and broker names.

use erasure::deletion::DeletionStatus;
use std::time::Duration;

use erasure::startup::Mode;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};

/// A client for one running service, with one key.
pub struct Api {
    pub base: String,
    pub key: String,
    /// The key's name.
    pub name: String,
    client: Client,
}

impl Api {
    pub async fn new(app: &TestApp, base: String, read_only: bool) -> Self {
        let name = format!("test-{}", Uuid::new_v4().simple());
        let key = erasure::keys::create(&app.pool, &name, read_only)
            .await
            .unwrap();
        let api = Self {
            base,
            key,
            name,
            client: Client::new(),
        };
        api.wait_until_listening().await;
        api
    }

    async fn wait_until_listening(&self) {
        for _ in 0..100 {
            if self.get_plain("/healthz").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the API did not start listening");
    }

    async fn get_plain(&self, path: &str) -> reqwest::Result<Response> {
        self.client.get(format!("{}{path}", self.base)).send().await
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(self.request(Method::GET, path).send().await.unwrap()).await
    }

    pub async fn post(&self, customer: &str, key: Option<Uuid>, body: Option<Value>) -> Response {
        let mut request = self.request(
            Method::POST,
            &format!("/v1/customers/{customer}/permanent-deletion"),
        );
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key.to_string());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// Polls a deletion until it is final.
    pub async fn wait_for_final(&self, id: &str) -> Value {
        for _ in 0..600 {
            let (status, body) = self.get(&format!("/v1/permanent-deletions/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["status"] == "DONE" || body["status"] == "FAILED" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("deletion {id} did not reach a final status in 30 s");
    }
}

pub async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.expect("every answer is JSON");
    (status, body)
}

/// Checks the error envelope of the contract and returns its message.
pub async fn expect_error(response: Response, status: StatusCode, key: &str) -> String {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/json");
    let (got, body) = read(response).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["code"], status.as_u16(), "{body}");
    assert_eq!(body["key"], key, "{body}");
    assert!(body["details"].is_string(), "{body}");
    assert_eq!(body["trace_id"].as_str().unwrap().len(), 32, "{body}");
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_post_is_accepted_pending_and_polled_to_done_then_found_by_id_and_source_id() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_http", "src_http", Shape::typical())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, false).await;

    let response = api
        .post(
            "src_http",
            None,
            Some(json!({"requested_by": "compliance-desk", "reason": "Art. 17 #12", "requested_at": "2026-11-23T09:30:00Z"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, accepted) = read(response).await;
    assert_eq!(accepted["status"], "PENDING");
    assert_eq!(accepted["object"], "permanent_deletion");
    assert_eq!(accepted["requested_by"], "compliance-desk");
    assert_eq!(accepted["due_at"], "2026-12-23T09:30:00Z");
    // Named by source id, recorded under the customer's id.
    assert_eq!(accepted["related_object_id"], "cust_http");
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/permanent-deletions/{id}"));

    let done = api.wait_for_final(id).await;
    assert_eq!(done["status"], "DONE");
    assert_eq!(done["data_json"], Shape::typical().expected_counts());
    assert_eq!(done["error"], Value::Null);
    // By request id, by customer id and by source id, after the customer is gone.
    let request_id = done["request_id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v1/permanent-deletions/{request_id}"))
            .await
            .1,
        done
    );
    for name in ["cust_http", "src_http"] {
        let (status, latest) = api
            .get(&format!("/v1/customers/{name}/permanent-deletion"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(latest["id"], id);
    }
    // Nothing keeps the source id or the message in clear.
    assert_eq!(app.rows_containing("src_http").await, Vec::<String>::new());
    app.cleanup().await;
}

/// A request submitted over the API that ends outside the erasure statement (here: it names
/// nobody) still names the key that submitted it, on the deletion and in its audit row.
#[tokio::test]
async fn a_request_naming_nobody_fails_not_found_and_its_records_name_the_submitting_key() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, false).await;
    let key_id = api
        .key
        .trim_start_matches("erk_")
        .split('_')
        .next()
        .unwrap()
        .to_owned();

    let (_, accepted) = read(api.post("nobody_here", None, None).await).await;
    let id = accepted["id"].as_str().unwrap();
    let failed = api.wait_for_final(id).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["key"], "not_found");
    assert_eq!(
        failed["requested_by_key"],
        json!({"id": key_id, "name": api.name})
    );
    // Its audit row: the error, and (no detail given where it ended) the counts recorded.
    type AuditRow = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Value,
    );
    let audited: Vec<AuditRow> = sqlx::query_as(
        "SELECT action, key_id, key_name, error_key, detail FROM erasure.audit_log \
             WHERE deletion_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [(
            "erasure.failed".to_owned(),
            Some(key_id.clone()),
            Some(api.name.clone()),
            Some("not_found".to_owned()),
            json!({"counts": failed["data_json"], "already_erased": false}),
        )]
    );
    assert_eq!(
        app.rows_containing("nobody_here").await,
        Vec::<String>::new()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_same_idempotency_key_answers_200_with_the_same_object_and_erases_once() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_idem", "src_idem", Shape::typical())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, false).await;
    let key = Uuid::new_v4();

    let first = api.post("cust_idem", Some(key), None).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let (_, first) = read(first).await;
    assert_eq!(first["request_id"], key.to_string());
    // The requester defaults to the key's name.
    assert!(first["requested_by"].as_str().unwrap().starts_with("test-"));
    let id = first["id"].as_str().unwrap();
    api.wait_for_final(id).await;
    // Once the check after commit has run, the object stays as it is.
    let mut done = Value::Null;
    for _ in 0..200 {
        done = api.get(&format!("/v1/permanent-deletions/{id}")).await.1;
        if done["verification"]["outcome"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["verification"]["outcome"], "passed", "{done}");

    let again = api.post("cust_idem", Some(key), None).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.headers().contains_key("location"));
    assert_eq!(read(again).await.1, done);
    let deletions = app
        .count(
            "SELECT count(*) FROM erasure.deletions WHERE request_id::text = $1",
            &key.to_string(),
        )
        .await;
    assert_eq!(deletions, 1);

    // The key reused for another customer is refused and changes nothing.
    let reused = api.post("cust_someone_else", Some(key), None).await;
    expect_error(reused, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(
        api.get(&format!("/v1/permanent-deletions/{key}")).await.1,
        done
    );
    app.cleanup().await;
}

#[tokio::test]
async fn keys_are_required_and_read_only_keys_cannot_write() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let writer = Api::new(&app, base.clone(), false).await;
    let reader = Api::new(&app, base.clone(), true).await;
    let client = Client::new();
    let list = format!("{base}/v1/permanent-deletions");

    let missing = client.get(&list).send().await.unwrap();
    assert!(missing.headers().contains_key("www-authenticate"));
    expect_error(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for presented in [
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        &format!("Bearer {}x", writer.key),
        &format!("Bearer {}", writer.key.replace("erk_", "erk_X")),
    ] {
        let response = client
            .get(&list)
            .header("Authorization", presented)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // A key whose secret is wrong but whose id is right.
    let (id_part, _) = writer.key.rsplit_once('_').unwrap();
    let forged = format!("Bearer {id_part}_{}", "A".repeat(32));
    let response = client
        .get(&list)
        .header("Authorization", forged)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    assert_eq!(
        reader.get("/v1/permanent-deletions").await.0,
        StatusCode::OK
    );
    let refused = reader.post("cust_any", None, None).await;
    expect_error(refused, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        0,
        "a refused write records nothing"
    );
    assert_eq!(
        writer.post("cust_any", None, None).await.status(),
        StatusCode::ACCEPTED
    );

    // Revoked keys stop working at once.
    assert!(
        erasure::keys::revoke(&app.pool, &id_part["erk_".len()..])
            .await
            .unwrap()
    );
    let revoked = writer
        .request(Method::GET, "/v1/permanent-deletions")
        .send()
        .await
        .unwrap();
    expect_error(revoked, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.cleanup().await;
}

#[tokio::test]
async fn every_error_is_the_json_envelope() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let post = "/v1/customers/cust_x/permanent-deletion";

    let unknown = api
        .request(Method::GET, "/v1/nothing-here")
        .send()
        .await
        .unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let unknown = api
        .request(Method::GET, "/nothing-here")
        .send()
        .await
        .unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    // `/` is the console: without a session, its sign-in page.
    let console = api.request(Method::GET, "/").send().await.unwrap();
    assert_eq!(console.status(), StatusCode::OK);
    assert_eq!(console.url().path(), "/sign-in");
    let wrong_method = api.request(Method::DELETE, post).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD,POST");
    expect_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
    )
    .await;
    let wrong_method = api
        .request(Method::PUT, "/v1/permanent-deletions")
        .send()
        .await
        .unwrap();
    expect_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
    )
    .await;

    let malformed = api
        .request(Method::POST, post)
        .header("Content-Type", "application/json")
        .body("{\"requested_by\": \"Jane Roe")
        .send()
        .await
        .unwrap();
    let message = expect_error(malformed, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(!message.contains("Jane"), "{message}");
    let not_an_object = api
        .request(Method::POST, post)
        .json(&json!(["requested_by"]))
        .send()
        .await
        .unwrap();
    expect_error(not_an_object, StatusCode::BAD_REQUEST, "invalid_request").await;
    let wrong_type = api
        .request(Method::POST, post)
        .header("Content-Type", "text/plain")
        .body("please erase")
        .send()
        .await
        .unwrap();
    expect_error(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request",
    )
    .await;
    let bad_field = api
        .post("cust_x", None, Some(json!({"requested_at": "yesterday"})))
        .await;
    expect_error(bad_field, StatusCode::BAD_REQUEST, "invalid_request").await;
    let bad_key = api
        .request(Method::POST, post)
        .header("Idempotency-Key", "not-a-uuid")
        .send()
        .await
        .unwrap();
    expect_error(bad_key, StatusCode::BAD_REQUEST, "invalid_request").await;
    let too_long = api.post(&"c".repeat(256), None, None).await;
    expect_error(too_long, StatusCode::BAD_REQUEST, "invalid_request").await;
    let too_large = api
        .request(Method::POST, post)
        .header("Content-Type", "application/json")
        .body(format!("{{\"reason\": \"{}\"}}", "r".repeat(70_000)))
        .send()
        .await
        .unwrap();
    expect_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request").await;

    for path in [
        "/v1/permanent-deletions/del_unknown",
        "/v1/permanent-deletions/4b1e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
        "/v1/customers/cust_never_seen/permanent-deletion",
    ] {
        let response = api.request(Method::GET, path).send().await.unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    for query in [
        "limit=0",
        "limit=101",
        "status=done",
        "overdue=maybe",
        "starting_after=del_gone",
        "page=2",
    ] {
        let response = api
            .request(Method::GET, &format!("/v1/permanent-deletions?{query}"))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        0,
        "no bad request recorded anything"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn pages_cover_every_deletion_once_newest_first() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    for i in 0..12 {
        let response = api.post(&format!("cust_page_{i}"), None, None).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    // Rows sharing one creation time: the id breaks the tie.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         SELECT 'del_tie' || lpad(n::text, 20, '0'), gen_random_uuid(), 'PENDING', now(), now() + interval '1 month', 'cli' \
         FROM generate_series(1, 9) n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let expected: Vec<String> =
        sqlx::query_scalar("SELECT id FROM erasure.deletions ORDER BY created_at DESC, id DESC")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(expected.len(), 21);

    let mut seen = Vec::new();
    let mut path = "/v1/permanent-deletions?limit=5".to_string();
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 5);
        seen.extend(data.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        path = format!(
            "/v1/permanent-deletions?limit=5&starting_after={}",
            seen.last().unwrap()
        );
    }
    assert_eq!(seen, expected);
    // The default page is 20.
    let (_, page) = api.get("/v1/permanent-deletions").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 20);
    assert_eq!(page["has_more"], true);
    app.cleanup().await;
}

#[tokio::test]
async fn overdue_lists_open_deletions_past_their_due_date() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let old = api
        .post(
            "cust_old",
            None,
            Some(json!({"requested_at": "2026-08-01T10:00:00Z"})),
        )
        .await;
    let (_, old) = read(old).await;
    let (_, fresh) = read(api.post("cust_fresh", None, None).await).await;

    let (_, overdue) = api.get("/v1/permanent-deletions?overdue=true").await;
    let ids: Vec<&str> = overdue["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [old["id"].as_str().unwrap()]);
    let (_, pending) = api.get("/v1/permanent-deletions?status=PENDING").await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 2);
    let (_, done) = api.get("/v1/permanent-deletions?status=DONE").await;
    assert_eq!(done["data"], json!([]));
    // A final deletion is never overdue.
    sqlx::query(
        "UPDATE erasure.deletions SET status = 'FAILED', error_key = 'not_found', \
         error_message = 'gone', completed_at = now(), pending_message = NULL WHERE id = $1",
    )
    .bind(old["id"].as_str().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, overdue) = api.get("/v1/permanent-deletions?overdue=true").await;
    assert_eq!(overdue["data"], json!([]));
    assert_ne!(fresh["id"], old["id"]);
    app.cleanup().await;
}

#[tokio::test]
async fn a_key_over_its_limit_gets_429_with_the_rate_limit_headers() {
    let mut app = TestApp::with_settings(|s| s.http.rate_limit_per_minute = 3).await;
    fresh_minute(&app).await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base.clone(), true).await;
    let other = Api::new(&app, base, true).await;
    for remaining in ["2", "1", "0"] {
        let response = api
            .request(Method::GET, "/v1/permanent-deletions")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert_eq!(response.headers()["x-ratelimit-remaining"], remaining);
        let reset: u64 = response.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset));
    }
    let limited = api
        .request(Method::GET, "/v1/permanent-deletions")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    assert!(limited.headers().contains_key("retry-after"));
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another key has its own allowance.
    assert_eq!(other.get("/v1/permanent-deletions").await.0, StatusCode::OK);
    app.cleanup().await;
}

/// `GET` of an operations route, without a key.
async fn ready_or_live(api: &Api, path: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", api.base);
    read(Client::new().get(url).send().await.unwrap()).await
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, true).await;
    let (status, body) = ready_or_live(&api, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "database": "ok", "broker": "ok"})
    );
    assert_eq!(ready_or_live(&api, "/healthz").await.0, StatusCode::OK);

    let admin = sqlx::PgPool::connect(&format!("{}/postgres", crate::helpers::database_server()))
        .await
        .unwrap();
    let lock_out = |allow: bool| {
        format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allow}",
            app.database
        )
    };
    sqlx::query(&lock_out(false)).execute(&admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&app.database)
        .execute(&admin)
        .await
        .unwrap();
    let (status, body) = ready_or_live(&api, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database"], "unreachable");
    assert_eq!(body["broker"], "ok");
    // Liveness does not depend on the database.
    assert_eq!(ready_or_live(&api, "/healthz").await.0, StatusCode::OK);

    sqlx::query(&lock_out(true)).execute(&admin).await.unwrap();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = ready_or_live(&api, "/readyz").await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "ready again once the database is back"
    );
    admin.close().await;
    app.cleanup().await;
}

/// Submits an erasure of `customer` to an API whose broker is unreachable (the request is
/// recorded, its publish fails), which then goes away before anything reached the broker.
async fn accepted_by_a_process_that_dies_before_publishing(app: &TestApp, customer: &str) -> Value {
    let mut cut_off = app.settings.clone();
    cut_off.amqp.url = erasure::config::Secret::new("amqp://guest:guest@127.0.0.1:1/%2f");
    let api_app = erasure::startup::Application::build(cut_off).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let process = tokio::spawn(api_app.run(Mode::Api, Some(listener), shutdown.clone()));
    let api = Api::new(app, base, false).await;
    let (status, accepted) = read(api.post(customer, None, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    process.abort();
    let _ = process.await;
    accepted
}

/// A request is handed to the broker once, by the intake when its publish gets through, by the
/// relay when it failed, and its message (which names the customer) is kept on the deletion no
/// longer than that, even while no worker takes it.
#[tokio::test]
async fn a_request_is_published_once_by_the_intake_or_the_relay_and_its_message_kept_no_longer() {
    let mut app = TestApp::with_settings(|s| s.http.relay_after_ms = 200).await;
    for customer in ["relay", "direct"] {
        app.seed_customer(
            &format!("cust_{customer}"),
            &format!("src_{customer}"),
            Shape::typical(),
        )
        .await;
    }
    // Accepted by an API whose broker is unreachable, which then goes away.
    let relayed = accepted_by_a_process_that_dies_before_publishing(&app, "src_relay").await;
    let pool = app.pool.clone();
    let kept = |accepted: &Value| {
        let pool = pool.clone();
        let id = accepted["id"].as_str().unwrap().to_owned();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT pending_message IS NOT NULL FROM erasure.deletions WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(
        kept(&relayed).await,
        "unpublished: its message waits on the deletion"
    );

    // An API with a working broker relays it, and publishes one of its own; no worker runs.
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let (_, direct) = read(api.post("src_direct", None, None).await).await;
    let mut waited = 0;
    while kept(&relayed).await || kept(&direct).await {
        assert!(waited < 150, "a message was still kept after 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    // Two more rounds of the relay: nothing is published again.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mut published: Vec<String> = app
        .take_all(&app.settings.amqp.queue)
        .await
        .iter()
        .map(|body| serde_json::from_slice::<Value>(body).unwrap()["request_id"].to_string())
        .collect();
    published.sort();
    let mut expected = vec![
        relayed["request_id"].to_string(),
        direct["request_id"].to_string(),
    ];
    expected.sort();
    assert_eq!(published, expected, "each published once");
    for accepted in [&relayed, &direct] {
        let (_, row) = api
            .get(&format!(
                "/v1/permanent-deletions/{}",
                accepted["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(row["status"], "PENDING", "no worker took it");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_accepted_by_a_process_that_dies_before_publishing_is_still_carried_out() {
    let mut app = TestApp::with_settings(|s| s.http.relay_after_ms = 200).await;
    app.seed_customer("cust_orphan", "src_orphan", Shape::typical())
        .await;
    let accepted = accepted_by_a_process_that_dies_before_publishing(&app, "src_orphan").await;
    assert!(app.take_all(&app.settings.amqp.queue).await.is_empty());

    // A worker with a working broker relays and carries it out.
    app.start_worker().await;
    let request_id: Uuid = accepted["request_id"].as_str().unwrap().parse().unwrap();
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.id, accepted["id"].as_str().unwrap());
    assert_eq!(row.data_json, Shape::typical().expected_counts());
    let still_pending = app
        .count_of("SELECT count(*) FROM erasure.deletions WHERE pending_message IS NOT NULL")
        .await;
    assert_eq!(
        still_pending, 0,
        "the stored message is gone once the deletion ended"
    );
    assert_eq!(
        app.rows_containing("src_orphan").await,
        Vec::<String>::new()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_count_outcomes_and_requests_by_route_not_by_path() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_metric", "src_metric", Shape::typical())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, false).await;
    let (_, accepted) = read(api.post("cust_metric", None, None).await).await;
    api.wait_for_final(accepted["id"].as_str().unwrap()).await;

    let response = Client::new()
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for expected in [
        "erasure_outcomes_total{status=\"DONE\",error_key=\"none\"}",
        "erasure_duration_seconds_bucket",
        "erasure_rows_total{table=\"events\"}",
        "route=\"/v1/permanent-deletions/{id}\"",
        "route=\"/v1/customers/{customer_id}/permanent-deletion\"",
        "erasure_deletions_overdue",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(
        !text.contains("cust_metric"),
        "a customer id leaked into metrics"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_preview_shows_what_an_erasure_would_record_and_writes_only_its_audit_row() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_look", "src_look", Shape::typical())
        .await;
    app.seed_customer("cust_held", "src_held", Shape::typical())
        .await;
    app.add_open_order("cust_held").await;
    let before = app.checksum_of_everything().await;
    let base = app.start(Mode::All).await;
    let reader = Api::new(&app, base.clone(), true).await;
    let writer = Api::new(&app, base, false).await;

    let (status, preview) = reader
        .get("/v1/customers/src_look/permanent-deletion/preview")
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview,
        json!({"object": "permanent_deletion_preview", "related_object_id": "cust_look",
               "data_json": Shape::typical().expected_counts(), "blocked_by": null})
    );
    let (_, held) = reader
        .get("/v1/customers/cust_held/permanent-deletion/preview")
        .await;
    assert_eq!(
        held["blocked_by"],
        json!({"key": "conflict", "message": "the customer has an order in status OPEN"})
    );
    let unknown = reader
        .request(
            Method::GET,
            "/v1/customers/nobody/permanent-deletion/preview",
        )
        .send()
        .await
        .unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;

    // Nothing was written but the previews' audit rows; no event is owed.
    assert_eq!(app.checksum_of_everything().await, before);
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletions").await,
        0
    );
    let audited: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT action, related_object_id, requested_by FROM erasure.audit_log ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let previewed = |customer: &str| {
        (
            "erasure.previewed".to_owned(),
            Some(customer.to_owned()),
            Some(reader.name.clone()),
        )
    };
    // Each names the customer by key, though one was asked for by source id.
    assert_eq!(audited, [previewed("cust_look"), previewed("cust_held")]);
    assert_eq!(
        app.rows_containing("src_look").await,
        ["public.customers: 1"]
    );

    // The erasure records what the preview said.
    let (_, accepted) = read(writer.post("src_look", None, None).await).await;
    let done = writer
        .wait_for_final(accepted["id"].as_str().unwrap())
        .await;
    assert_eq!(done["data_json"], preview["data_json"]);
    app.cleanup().await;
}

#[tokio::test]
async fn a_preview_reads_only_writes_no_wal_and_never_waits_on_business_locks() {
    let mut app = TestApp::new().await;
    let big = Shape {
        events: 100_000,
        ..Shape::typical()
    };
    app.seed_customer("cust_big", "src_big", big).await;
    sqlx::query("ANALYZE").execute(&app.pool).await.unwrap();

    // The count statement, explained as it runs: it writes no WAL to speak of (hint bits at
    // most), where the erasure statement it stands for writes the whole erasure's.
    let eraser = app.eraser();
    let plan = eraser.plan();
    let received = eraser
        .receive(
            erasure::request::ErasureRequest {
                request_id: Uuid::new_v4(),
                customer_id: "cust_big".into(),
                requested_by: "dpo".into(),
                reason: None,
                requested_at: None,
                identifier_type: None,
            },
            erasure::request::Channel::Cli,
            chrono::Utc::now(),
        )
        .unwrap();
    let wal_of = |statement: erasure::plan::sql::Statement| {
        let args = eraser
            .arguments_for(
                &statement,
                &[&received],
                &erasure::plan::sizes::Probing::none(),
            )
            .unwrap();
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let explained: Value = sqlx::query_scalar_with(
                &format!("EXPLAIN (ANALYZE, WAL, FORMAT JSON) {}", statement.sql),
                args,
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            tx.rollback().await.unwrap();
            explained[0]["Plan"]["WAL Bytes"].as_i64().unwrap_or(0)
        }
    };
    let counting = wal_of(erasure::plan::sql::count_statement(plan)).await;
    let erasing = wal_of(erasure::plan::sql::erase_statement(plan)).await;
    assert!(
        counting < 1 << 20,
        "the preview wrote {counting} bytes of WAL"
    );
    assert!(
        erasing > 1 << 20,
        "the erasure writes {erasing} bytes of WAL"
    );

    // A business transaction holds the customer's rows: the preview does not wait for it.
    let mut business = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE customers SET name = 'Busy' WHERE id = 'cust_big'")
        .execute(&mut *business)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM events WHERE customer_id = 'cust_big' FOR UPDATE")
        .execute(&mut *business)
        .await
        .unwrap();
    let base = app.start(Mode::Api).await;
    let reader = Api::new(&app, base, true).await;
    let started = std::time::Instant::now();
    let (status, preview) = reader
        .get("/v1/customers/cust_big/permanent-deletion/preview")
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["data_json"], big.expected_counts());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // And the preview held nothing that keeps business writes waiting.
    sqlx::query("UPDATE customers SET name = 'Busier' WHERE id = 'cust_big'")
        .execute(&mut *business)
        .await
        .unwrap();
    business.rollback().await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn a_preview_past_its_timeout_is_503_with_retry_after() {
    let mut app = TestApp::with_settings(|s| s.erasure.preview_timeout_ms = 1).await;
    let big = Shape {
        events: 100_000,
        ..Shape::typical()
    };
    app.seed_customer("cust_slow", "src_slow", big).await;
    let base = app.start(Mode::Api).await;
    let reader = Api::new(&app, base, true).await;
    let response = reader
        .request(
            Method::GET,
            "/v1/customers/cust_slow/permanent-deletion/preview",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("30".into())
    );
    let message = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(message.contains("took too long"), "{message}");
    app.cleanup().await;
}

/// Only a preview the statement timeout stopped says it took too long: another failure of
/// its reading (here a table of the plan dropped under the running service) is an error of the
/// database, not a reason to try again in 30 seconds.
#[tokio::test]
async fn a_preview_that_fails_otherwise_is_an_error_not_too_long() {
    use erasure::erase::preview::PreviewError;
    use erasure::request::Channel;

    let mut app = TestApp::new().await;
    app.seed_customer("cust_gone", "src_gone", Shape::typical())
        .await;
    // The service checks its plan when it starts: the table goes once it runs.
    let base = app.start(Mode::Api).await;
    let reader = Api::new(&app, base, true).await;
    sqlx::query("DROP TABLE daily_events CASCADE")
        .execute(&app.pool)
        .await
        .unwrap();
    match app.eraser().preview("cust_gone", "dpo", Channel::Cli).await {
        Err(PreviewError::Database(e)) => assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42P01"),
            "{e}"
        ),
        other => panic!("a database error: {other:?}"),
    }
    let response = reader
        .request(
            Method::GET,
            "/v1/customers/cust_gone/permanent-deletion/preview",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers().get("retry-after"), None);
    app.cleanup().await;
}

/// Waits, if the database's minute is about to turn, for the next one: the rate limits count
/// in minute windows, and a test that counts must not straddle two.
pub async fn fresh_minute(app: &TestApp) {
    let left: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now())::float8",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    if left < 20.0 {
        tokio::time::sleep(Duration::from_secs_f64(left + 0.2)).await;
    }
}

#[tokio::test]
async fn two_replicas_count_against_one_limit() {
    let mut app = TestApp::with_settings(|s| s.http.rate_limit_per_minute = 4).await;
    let one = app.start(Mode::Api).await;
    let two = app.start(Mode::Api).await;
    fresh_minute(&app).await;
    let first = Api::new(&app, one, true).await;
    // The same key through either replica: four in all, then 429 from both.
    let second = Api {
        key: first.key.clone(),
        name: first.name.clone(),
        ..Api::new(&app, two, true).await
    };
    let mut statuses = Vec::new();
    for i in 0..6 {
        let api = if i % 2 == 0 { &first } else { &second };
        statuses.push(api.get("/v1/permanent-deletions").await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn failed_keys_from_one_address_are_limited_before_any_key_is_looked_up() {
    let mut app = TestApp::with_settings(|s| s.http.failed_keys_per_minute = 5).await;
    let base = app.start(Mode::Api).await;
    fresh_minute(&app).await;
    let good = Api::new(&app, base.clone(), true).await;
    let wrong = Api {
        key: "ek_wrong".into(),
        ..Api::new(&app, base, true).await
    };
    for _ in 0..5 {
        assert_eq!(
            wrong.get("/v1/permanent-deletions").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = wrong
        .request(Method::GET, "/v1/permanent-deletions")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    let message = expect_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(
        message.contains("5 unknown or revoked keys a minute"),
        "{message}"
    );
    // The address is refused for the rest of the minute, whatever key it presents.
    assert_eq!(
        good.get("/v1/permanent-deletions").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.cleanup().await;
}

#[tokio::test]
async fn console_pages_count_against_the_session_keys_limit() {
    let mut app = TestApp::with_settings(|s| s.http.rate_limit_per_minute = 3).await;
    let base = app.start(Mode::Api).await;
    fresh_minute(&app).await;
    let api = Api::new(&app, base.clone(), true).await;
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = console_cookie(&base, &api.key).await;
    let page = |path: &'static str| {
        client
            .get(format!("{base}{path}"))
            .header("cookie", cookie.clone())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(page("/").await.unwrap().status(), StatusCode::OK);
    }
    let limited = page("/deletions").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("3 requests a minute")
    );
    // The same key over the API has used its minute too.
    assert_eq!(
        api.get("/v1/permanent-deletions").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.cleanup().await;
}

/// A console session's cookie for `key`, signed in at `base`.
pub async fn console_cookie(base: &str, key: &str) -> String {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = client
        .post(format!("{base}/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .unwrap();
    signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A process's resident memory, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn the_csv_streams_in_bounded_memory_and_stops_at_its_cap_saying_so() {
    const ROWS: i64 = 50_000;
    let app = TestApp::new().await;
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, data_json, requested_at,            due_at, created_at, completed_at, channel) \
         SELECT 'del_csv' || lpad(n::text, 17, '0'), gen_random_uuid(), 'cust_' || n, 'DONE', \
           '{\"events\": 3, \"customer\": 1}', now() - n * interval '1 second', \
           now() + interval '1 month', now() - n * interval '1 second', now(), 'cli' \
         FROM generate_series(1, $1) n",
    )
    .bind(ROWS)
    .execute(&app.pool)
    .await
    .unwrap();
    // The service in a process of its own, so that its memory is its own (this one runs every
    // other test beside it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cap = (ROWS - 10).to_string();
    let mut service = app
        .command()
        .arg("api")
        .env("ERASURE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ERASURE_CONSOLE__CSV_MAX_ROWS", &cap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = service.id().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let api = Api::new(&app, base.clone(), true).await;
    let cookie = console_cookie(&base, &api.key).await;
    let url = format!("{base}/deletions.csv?status=DONE");
    let request = |cookie: String| Client::new().get(&url).header("cookie", cookie).send();
    // One, read whole: newest first, every row up to the cap, then the line that says so.
    let csv = request(cookie.clone()).await.unwrap().text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len() as i64, 1 + (ROWS - 10) + 1);
    assert!(
        lines[0].starts_with("deletion_id,request_id,status"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("del_csv00000000000000001,"),
        "{}",
        lines[1]
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!(
            "# the export stops at {} rows; narrow the filter (dates, status) for the rest",
            ROWS - 10
        )
    );
    // Eight at once: the process holds a batch per download, not the downloads.
    let idle = resident_bytes(pid);
    // Each read as it comes and let go (the client keeps nothing), so the growth is the
    // server's.
    let downloads: Vec<_> = (0..8)
        .map(|_| {
            let response = request(cookie.clone());
            tokio::spawn(async move {
                let mut response = response.await.unwrap();
                let mut bytes = 0;
                while let Some(chunk) = response.chunk().await.unwrap() {
                    bytes += chunk.len();
                }
                bytes
            })
        })
        .collect();
    let mut peak = idle;
    let watch = async {
        loop {
            peak = peak.max(resident_bytes(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let all = async {
        for d in downloads {
            assert!(d.await.unwrap() > 1_000_000);
        }
    };
    tokio::select! {
        () = all => {}
        () = watch => unreachable!(),
    }
    let grown = peak.saturating_sub(idle);
    assert!(grown < 128 << 20, "grew by {} MiB", grown >> 20);
    service.kill().await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn a_list_filter_given_twice_is_the_consoles_own_refusal_page() {
    let mut app = TestApp::new().await;
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base.clone(), true).await;
    let cookie = console_cookie(&base, &api.key).await;
    for path in ["/deletions", "/deletions.csv"] {
        let response = Client::new()
            .get(format!("{base}{path}?status=DONE&status=FAILED"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let page = response.text().await.unwrap();
        assert!(
            page.contains("Bad filter") && page.contains("duplicate field"),
            "{page}"
        );
    }
    app.cleanup().await;
}
