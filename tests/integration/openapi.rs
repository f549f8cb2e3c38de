//! `docs/openapi.json` is kept true: real answers of a running service, for every documented
//! operation, must have a documented status and match the documented schema.

use std::collections::BTreeSet;

use erasure::startup::Mode;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};
use crate::http_api::Api;

const DOCUMENT: &str = include_str!("../../docs/openapi.json");

struct Document {
    doc: Value,
    exercised: BTreeSet<(String, String)>,
}

impl Document {
    fn load() -> Self {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        Self {
            doc,
            exercised: BTreeSet::new(),
        }
    }

    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    operations.insert((method.to_owned(), path.clone()));
                }
            }
        }
        operations
    }

    /// Follows a `$ref` inside the document.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.trim_start_matches('#');
                self.resolve(self.doc.pointer(pointer).expect("the reference resolves"))
            }
            None => value,
        }
    }

    /// Sends `request` as an instance of `method template` and checks the answer.
    async fn check(
        &mut self,
        method: &str,
        template: &str,
        request: RequestBuilder,
    ) -> (StatusCode, Value) {
        self.exercised
            .insert((method.to_owned(), template.to_owned()));
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let operation = &self.doc["paths"][template][method];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let documented = operation["responses"]
            .get(status.as_str())
            .unwrap_or_else(|| {
                panic!("{method} {template} answered {status}, which is not documented: {text}")
            });
        let documented = self.resolve(documented);
        let Some(content) = documented["content"].as_object() else {
            // A redirect: no body.
            assert!(
                text.is_empty(),
                "{method} {template} {status}: a body {text}"
            );
            return (status, Value::Null);
        };
        let (media, spec) = content.iter().next().unwrap();
        assert!(
            content_type.starts_with(media.as_str()),
            "{method} {template} {status}: content type {content_type}, documented {media}"
        );
        if media != "application/json" {
            return (status, Value::String(text));
        }
        let body: Value = serde_json::from_str(&text).expect("a JSON body");
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [spec["schema"]],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .expect("the schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status} does not match the document: {errors:?}\n{body}"
        );
        (status, body)
    }
}

#[tokio::test]
async fn real_answers_match_the_openapi_document_for_every_operation() {
    // The failed-key limit per address is not what it tests (it sends many unknown keys).
    let mut app = TestApp::with_settings(|s| {
        // Console pages count against their key too: room for every page, then a burner.
        s.http.rate_limit_per_minute = 200;
        s.http.failed_keys_per_minute = 1_000_000;
    })
    .await;
    app.seed_customer("cust_doc", "src_doc", Shape::typical())
        .await;
    app.seed_customer("cust_preview", "src_preview", Shape::typical())
        .await;
    app.add_open_order("cust_preview").await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base.clone(), false).await;
    let reader = Api::new(&app, base.clone(), true).await;
    let burner = Api::new(&app, base.clone(), true).await;
    let anonymous = reqwest::Client::new();
    let mut doc = Document::load();
    let submit = "/v1/customers/{customer_id}/permanent-deletion";
    let one = "/v1/permanent-deletions/{id}";
    let list = "/v1/permanent-deletions";
    let post_path = "/v1/customers/src_doc/permanent-deletion";
    let key = Uuid::new_v4().to_string();

    let (status, accepted) = doc
        .check(
            "post",
            submit,
            api.request(Method::POST, post_path)
                .header("Idempotency-Key", &key)
                .json(&json!({"requested_by": "dpo", "reason": "Art. 17", "requested_at": "2026-11-23T09:30:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = accepted["id"].as_str().unwrap().to_owned();
    api.wait_for_final(&id).await;
    let repeat = api
        .request(Method::POST, post_path)
        .header("Idempotency-Key", &key);
    assert_eq!(doc.check("post", submit, repeat).await.0, StatusCode::OK);
    let reused = api
        .request(Method::POST, "/v1/customers/cust_other/permanent-deletion")
        .header("Idempotency-Key", &key);
    assert_eq!(
        doc.check("post", submit, reused).await.0,
        StatusCode::CONFLICT
    );
    let not_json = api
        .request(Method::POST, post_path)
        .header("Content-Type", "text/plain")
        .body("x");
    assert_eq!(
        doc.check("post", submit, not_json).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let bad = api
        .request(Method::POST, post_path)
        .json(&json!({"requested_by": ""}));
    assert_eq!(
        doc.check("post", submit, bad).await.0,
        StatusCode::BAD_REQUEST
    );
    let huge = api
        .request(Method::POST, post_path)
        .header("Content-Type", "application/json")
        .body(" ".repeat(70_000));
    assert_eq!(
        doc.check("post", submit, huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let read_only = reader.request(Method::POST, post_path);
    assert_eq!(
        doc.check("post", submit, read_only).await.0,
        StatusCode::FORBIDDEN
    );
    let no_key = anonymous.post(format!("{base}{post_path}"));
    assert_eq!(
        doc.check("post", submit, no_key).await.0,
        StatusCode::UNAUTHORIZED
    );
    let wrong_method = api.request(Method::DELETE, post_path);
    assert_eq!(
        doc.check("post", submit, wrong_method).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    for (path, expected) in [
        (post_path.to_owned(), StatusCode::OK),
        (
            "/v1/customers/cust_doc/permanent-deletion".into(),
            StatusCode::OK,
        ),
        (
            "/v1/customers/nobody/permanent-deletion".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/customers/{}/permanent-deletion", "n".repeat(300)),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let request = reader.request(Method::GET, &path);
        assert_eq!(
            doc.check("get", submit, request).await.0,
            expected,
            "{path}"
        );
    }
    let preview = "/v1/customers/{customer_id}/permanent-deletion/preview";
    for (path, expected) in [
        (
            "/v1/customers/src_preview/permanent-deletion/preview".to_string(),
            StatusCode::OK,
        ),
        (
            "/v1/customers/nobody/permanent-deletion/preview".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!(
                "/v1/customers/{}/permanent-deletion/preview",
                "n".repeat(300)
            ),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let request = reader.request(Method::GET, &path);
        assert_eq!(
            doc.check("get", preview, request).await.0,
            expected,
            "{path}"
        );
    }
    for (path, expected) in [
        (format!("/v1/permanent-deletions/{id}"), StatusCode::OK),
        (format!("/v1/permanent-deletions/{key}"), StatusCode::OK),
        (
            "/v1/permanent-deletions/del_nothing".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/permanent-deletions/abc%00def".into(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let request = reader.request(Method::GET, &path);
        assert_eq!(doc.check("get", one, request).await.0, expected, "{path}");
    }
    let receipt = "/v1/permanent-deletions/{id}/receipt";
    // An open deletion, as the API alone leaves one.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_0penDeletion000000000000', gen_random_uuid(), 'PENDING', now(), now() + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for (path, expected) in [
        (
            format!("/v1/permanent-deletions/{id}/receipt"),
            StatusCode::OK,
        ),
        (
            "/v1/permanent-deletions/del_0penDeletion000000000000/receipt".into(),
            StatusCode::CONFLICT,
        ),
        (
            "/v1/permanent-deletions/del_nothing/receipt".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/permanent-deletions/abc%00def/receipt".into(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let request = reader.request(Method::GET, &path);
        assert_eq!(
            doc.check("get", receipt, request).await.0,
            expected,
            "{path}"
        );
    }
    let suppression = "/v1/suppressions/{identifier}";
    for (path, expected) in [
        ("/v1/suppressions/cust_doc".to_string(), StatusCode::OK),
        ("/v1/suppressions/src_doc".into(), StatusCode::OK),
        ("/v1/suppressions/nobody".into(), StatusCode::NOT_FOUND),
        (
            format!("/v1/suppressions/{}", "n".repeat(300)),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let request = reader.request(Method::GET, &path);
        assert_eq!(
            doc.check("get", suppression, request).await.0,
            expected,
            "{path}"
        );
    }
    // Cancel: the open deletion above, again (idempotent), one that ended, and the errors.
    for (who, path, expected) in [
        (
            &api,
            "/v1/permanent-deletions/del_0penDeletion000000000000".to_string(),
            StatusCode::OK,
        ),
        (
            &api,
            "/v1/permanent-deletions/del_0penDeletion000000000000".into(),
            StatusCode::OK,
        ),
        (
            &api,
            format!("/v1/permanent-deletions/{id}"),
            StatusCode::CONFLICT,
        ),
        (
            &api,
            "/v1/permanent-deletions/del_nothing".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            &api,
            "/v1/permanent-deletions/abc%00def".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            &reader,
            format!("/v1/permanent-deletions/{id}"),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let request = who.request(Method::DELETE, &path);
        assert_eq!(
            doc.check("delete", one, request).await.0,
            expected,
            "{path}"
        );
    }
    // Extending a deadline: an open request in its first month, and the refusals.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_extendMe0000000000000000', gen_random_uuid(), 'PENDING', now() - interval '1 day', \
           now() - interval '1 day' + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let extension = "/v1/permanent-deletions/{id}/extension";
    let in_two_months = (chrono::Utc::now() + chrono::Duration::days(55)).to_rfc3339();
    let in_a_year = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let open_path = "/v1/permanent-deletions/del_extendMe0000000000000000/extension";
    for (who, path, body, expected) in [
        (
            &api,
            open_path.to_string(),
            json!({"extended_due_at": in_two_months, "reason": "many systems to search"}),
            StatusCode::OK,
        ),
        (
            &api,
            open_path.into(),
            json!({"extended_due_at": in_a_year, "reason": "too long"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &api,
            open_path.into(),
            json!({"extended_due_at": in_two_months}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &api,
            format!("/v1/permanent-deletions/{id}/extension"),
            json!({"extended_due_at": in_two_months, "reason": "x"}),
            StatusCode::CONFLICT,
        ),
        (
            &api,
            "/v1/permanent-deletions/del_nothing/extension".into(),
            json!({"extended_due_at": in_two_months, "reason": "x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            &reader,
            open_path.into(),
            json!({"extended_due_at": in_two_months, "reason": "x"}),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let request = who.request(Method::POST, &path).json(&body);
        let (status, answer) = doc.check("post", extension, request).await;
        assert_eq!(status, expected, "{path} {body}");
        if status == StatusCode::OK {
            assert!(answer["extended_due_at"].is_string(), "{answer}");
        }
    }
    let not_json = api
        .request(Method::POST, open_path)
        .header("Content-Type", "text/plain")
        .body("x");
    assert_eq!(
        doc.check("post", extension, not_json).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    check_console(&mut doc, &app, &base, &api, &reader, &id).await;
    let keys = "/v1/receipt-keys";
    let request = anonymous.get(format!("{base}{keys}"));
    assert_eq!(doc.check("get", keys, request).await.0, StatusCode::OK);

    for (query, expected) in [
        ("", StatusCode::OK),
        ("?status=DONE&limit=1", StatusCode::OK),
        ("?overdue=true", StatusCode::OK),
        ("?status=&overdue=&limit=&starting_after=", StatusCode::OK),
        ("?limit=1000", StatusCode::BAD_REQUEST),
        (
            "?starting_after=del_000000000000000000000000",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let request = reader.request(Method::GET, &format!("{list}{query}"));
        assert_eq!(doc.check("get", list, request).await.0, expected, "{query}");
    }
    let mut limited = StatusCode::OK;
    for _ in 0..210 {
        let request = burner.request(Method::GET, list);
        limited = doc.check("get", list, request).await.0;
        if limited == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);

    for path in ["/healthz", "/readyz", "/metrics"] {
        let request = anonymous.get(format!("{base}{path}"));
        assert_eq!(
            doc.check("get", path, request).await.0,
            StatusCode::OK,
            "{path}"
        );
    }

    assert_eq!(
        doc.exercised,
        doc.operations(),
        "every documented operation is exercised"
    );
    app.cleanup().await;
}

/// The console's routes, signed in (a session opened for each key) and not.
async fn check_console(
    doc: &mut Document,
    app: &TestApp,
    base: &str,
    writer: &Api,
    reader: &Api,
    done: &str,
) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = |key: String| async move {
        let caller = erasure::keys::verify(&app.pool, &key)
            .await
            .unwrap()
            .unwrap();
        let token = erasure::http::console::session::open(&app.pool, &caller, 1)
            .await
            .unwrap();
        let csrf: String = sqlx::query_scalar(
            "SELECT csrf_token FROM erasure.console_sessions WHERE token_hash = sha256($1::bytea)",
        )
        .bind(token.as_bytes())
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (format!("erasure_session={token}"), csrf)
    };
    // An open deletion, which has no receipt yet.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_0penConsole0000000000000', gen_random_uuid(), 'PENDING', now(), now() + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (read_cookie, read_csrf) = session(reader.key.clone()).await;
    let (write_cookie, write_csrf) = session(writer.key.clone()).await;
    let get = |path: &str, cookie: &str| http.get(format!("{base}{path}")).header("cookie", cookie);
    let form = |path: &str, cookie: &str, body: String| {
        http.post(format!("{base}{path}"))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    for (template, path, cookie, expected) in [
        ("/", "/", read_cookie.as_str(), StatusCode::OK),
        ("/", "/", "", StatusCode::SEE_OTHER),
        ("/sign-in", "/sign-in", "", StatusCode::OK),
        (
            "/deletions",
            "/deletions?status=DONE&page=1",
            read_cookie.as_str(),
            StatusCode::OK,
        ),
        (
            "/deletions",
            "/deletions?status=done",
            read_cookie.as_str(),
            StatusCode::BAD_REQUEST,
        ),
        ("/deletions", "/deletions", "", StatusCode::SEE_OTHER),
        (
            "/deletions.csv",
            "/deletions.csv?overdue=true",
            read_cookie.as_str(),
            StatusCode::OK,
        ),
        (
            "/deletions.csv",
            "/deletions.csv?from=yesterday",
            read_cookie.as_str(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/deletions/{id}",
            "/deletions/del_0penDeletion000000000000",
            read_cookie.as_str(),
            StatusCode::OK,
        ),
        (
            "/deletions/{id}",
            "/deletions/del_nothing",
            read_cookie.as_str(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/deletions/{id}",
            "/deletions/abc%00def",
            read_cookie.as_str(),
            StatusCode::BAD_REQUEST,
        ),
        ("/submit", "/submit", write_cookie.as_str(), StatusCode::OK),
        (
            "/submit",
            "/submit",
            read_cookie.as_str(),
            StatusCode::FORBIDDEN,
        ),
        ("/console.css", "/console.css", "", StatusCode::OK),
        (
            "/deletions/{id}/receipt",
            "/deletions/del_0penConsole0000000000000/receipt",
            read_cookie.as_str(),
            StatusCode::CONFLICT,
        ),
        (
            "/deletions/{id}/receipt",
            "/deletions/del_nothing/receipt",
            read_cookie.as_str(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/deletions/{id}/evidence",
            "/deletions/del_nothing/evidence",
            read_cookie.as_str(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/deletions/{id}/certificate",
            "/deletions/abc%00def/certificate",
            read_cookie.as_str(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/deletions/{id}/certificate",
            "/deletions/del_0penDeletion000000000000/certificate",
            read_cookie.as_str(),
            StatusCode::CONFLICT,
        ),
        (
            "/deletions/{id}/evidence",
            "/deletions/x/evidence",
            "",
            StatusCode::SEE_OTHER,
        ),
    ] {
        assert_eq!(
            doc.check("get", template, get(path, cookie)).await.0,
            expected,
            "{path}"
        );
    }
    for template in [
        "/deletions/{id}/receipt",
        "/deletions/{id}/evidence",
        "/deletions/{id}/certificate",
    ] {
        let path = template.replace("{id}", done);
        assert_eq!(
            doc.check("get", template, get(&path, &read_cookie)).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_extendPage00000000000000', gen_random_uuid(), 'PENDING', now() - interval '1 day', \
           now() - interval '1 day' + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let extend = "/deletions/{id}/extend";
    let extend_path = "/deletions/del_extendPage00000000000000/extend";
    for (cookie, expected) in [
        (&write_cookie, StatusCode::OK),
        (&read_cookie, StatusCode::FORBIDDEN),
    ] {
        assert_eq!(
            doc.check("get", extend, get(extend_path, cookie)).await.0,
            expected
        );
    }
    let day = (chrono::Utc::now() + chrono::Duration::days(50)).date_naive();
    for (body, expected) in [
        (
            format!("csrf={write_csrf}&to=tomorrow&reason=complex"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("csrf={write_csrf}&to={day}&reason=complex"),
            StatusCode::SEE_OTHER,
        ),
    ] {
        let post = form(extend_path, &write_cookie, body.clone());
        assert_eq!(doc.check("post", extend, post).await.0, expected, "{body}");
    }
    // Cancel and retry, each after its confirmation.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel, \
           completed_at, error_key, error_message) VALUES \
         ('del_cancelPage00000000000000', gen_random_uuid(), 'cust_gone', 'PENDING', now(), now() + interval '1 month', 'http', NULL, NULL, NULL), \
         ('del_retryPage000000000000000', gen_random_uuid(), 'cust_gone', 'FAILED', now(), now() + interval '1 month', 'http', now(), 'conflict', 'x')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for (template, path, cookie, expected) in [
        (
            "/deletions/{id}/cancel",
            "/deletions/del_cancelPage00000000000000/cancel",
            &write_cookie,
            StatusCode::OK,
        ),
        (
            "/deletions/{id}/cancel",
            "/deletions/del_cancelPage00000000000000/cancel",
            &read_cookie,
            StatusCode::FORBIDDEN,
        ),
        (
            "/deletions/{id}/cancel",
            "/deletions/del_retryPage000000000000000/cancel",
            &write_cookie,
            StatusCode::CONFLICT,
        ),
        (
            "/deletions/{id}/retry",
            "/deletions/del_retryPage000000000000000/retry",
            &write_cookie,
            StatusCode::OK,
        ),
        (
            "/deletions/{id}/retry",
            "/deletions/del_cancelPage00000000000000/retry",
            &write_cookie,
            StatusCode::CONFLICT,
        ),
        (
            "/deletions/{id}/retry",
            "/deletions/del_nothing/retry",
            &write_cookie,
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(
            doc.check("get", template, get(path, cookie)).await.0,
            expected,
            "{path}"
        );
    }
    for (template, path, body, expected) in [
        (
            "/deletions/{id}/cancel",
            "/deletions/del_cancelPage00000000000000/cancel",
            format!("csrf={write_csrf}&reason="),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/deletions/{id}/cancel",
            "/deletions/del_cancelPage00000000000000/cancel",
            format!("csrf={write_csrf}&reason=withdrawn"),
            StatusCode::SEE_OTHER,
        ),
        (
            "/deletions/{id}/cancel",
            "/deletions/del_cancelPage00000000000000/cancel",
            format!("csrf={write_csrf}&reason=again"),
            StatusCode::SEE_OTHER,
        ),
        (
            "/deletions/{id}/cancel",
            "/deletions/del_retryPage000000000000000/cancel",
            format!("csrf={write_csrf}&reason=x"),
            StatusCode::CONFLICT,
        ),
        (
            "/deletions/{id}/retry",
            "/deletions/del_retryPage000000000000000/retry",
            format!("csrf={write_csrf}&reason="),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/deletions/{id}/retry",
            "/deletions/del_retryPage000000000000000/retry",
            format!("csrf={write_csrf}&reason=order+closed"),
            StatusCode::SEE_OTHER,
        ),
        (
            "/deletions/{id}/retry",
            "/deletions/del_retryPage000000000000000/retry",
            format!("csrf={write_csrf}&reason=twice"),
            StatusCode::CONFLICT,
        ),
    ] {
        let post = form(path, &write_cookie, body.clone());
        assert_eq!(
            doc.check("post", template, post).await.0,
            expected,
            "{path} {body}"
        );
    }
    let wrong_key = form("/sign-in", "", "key=erk_nope_nope".into());
    assert_eq!(
        doc.check("post", "/sign-in", wrong_key).await.0,
        StatusCode::UNAUTHORIZED
    );
    let right_key = form("/sign-in", "", format!("key={}", reader.key));
    assert_eq!(
        doc.check("post", "/sign-in", right_key).await.0,
        StatusCode::SEE_OTHER
    );
    let no_field = form("/sign-in", "", "other=1".into());
    assert_eq!(
        doc.check("post", "/sign-in", no_field).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let json_body = http
        .post(format!("{base}/sign-in"))
        .json(&json!({"key": "x"}));
    assert_eq!(
        doc.check("post", "/sign-in", json_body).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    for (q, expected) in [
        ("src_doc", StatusCode::SEE_OTHER),
        ("nobody", StatusCode::OK),
    ] {
        let find = form("/find", &read_cookie, format!("q={q}&csrf={read_csrf}"));
        assert_eq!(doc.check("post", "/find", find).await.0, expected, "{q}");
    }
    let forged = form("/find", &read_cookie, "q=src_doc&csrf=forged".into());
    assert_eq!(
        doc.check("post", "/find", forged).await.0,
        StatusCode::FORBIDDEN
    );
    let fields = format!("csrf={write_csrf}&customer_id=cust_preview&reason=test&requested_by=dpo");
    let preview = form("/submit/preview", &write_cookie, fields.clone());
    assert_eq!(
        doc.check("post", "/submit/preview", preview).await.0,
        StatusCode::OK
    );
    let unknown = form(
        "/submit/preview",
        &write_cookie,
        format!("csrf={write_csrf}&customer_id=nobody&requested_by=dpo"),
    );
    assert_eq!(
        doc.check("post", "/submit/preview", unknown).await.0,
        StatusCode::BAD_REQUEST
    );
    let refused = form(
        "/submit",
        &read_cookie,
        format!("csrf={read_csrf}&customer_id=cust_preview&requested_by=dpo"),
    );
    assert_eq!(
        doc.check("post", "/submit", refused).await.0,
        StatusCode::FORBIDDEN
    );
    let submit = form("/submit", &write_cookie, fields);
    assert_eq!(
        doc.check("post", "/submit", submit).await.0,
        StatusCode::SEE_OTHER
    );
    let sign_out = form("/sign-out", &read_cookie, format!("csrf={read_csrf}"));
    assert_eq!(
        doc.check("post", "/sign-out", sign_out).await.0,
        StatusCode::SEE_OTHER
    );
    let gone = get("/", &read_cookie);
    assert_eq!(
        doc.check("get", "/", gone).await.0,
        StatusCode::SEE_OTHER,
        "signed out"
    );
}
