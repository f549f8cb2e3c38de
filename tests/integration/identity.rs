//! Who a request names, on every channel: a key (or one that was a key) names that customer
//! only, also once it is erased; a lookup is consulted only for an identifier never a key, each
//! compared exactly or in any case as declared; an identifier that names two customers is
//! refused; and an identifier that named nobody is kept nowhere in clear.

use chrono::Utc;
use erasure::deletion::{DeletionStatus, ErrorKey};
use erasure::erase::Named;
use erasure::request::{Channel, ErasureRequest};
use erasure::startup::Mode;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};
use crate::http_api::Api;

/// People keyed by a bigint, with two lookups compared exactly (an external reference that
/// holds numbers, and a legacy code) and an e-mail compared in any case.
const SCHEMA: &str = "CREATE SCHEMA ident; \
    CREATE TABLE ident.person (id bigint PRIMARY KEY, external_ref text UNIQUE, legacy_code text UNIQUE, \
      email text, name text NOT NULL); \
    CREATE UNIQUE INDEX person_email_idx ON ident.person (lower(email)); \
    CREATE TABLE ident.visit (id bigserial PRIMARY KEY, person_id bigint NOT NULL REFERENCES ident.person (id), note text); \
    CREATE INDEX visit_person_idx ON ident.visit (person_id);";

const PLAN: &str = "schema = \"ident\"\n\
    [subject]\ntable = \"person\"\nkey = \"id\"\n\
    lookups = [{ column = \"external_ref\" }, { column = \"legacy_code\" }, { column = \"email\", case_insensitive = true }]\n\
    counted_as = \"person\"\n\
    [[step]]\ntable = \"visit\"\npath = [\"person_id -> person.id\"]\naction = \"delete\"\ncounted_as = \"visits\"\n";

const PEOPLE: &str = "INSERT INTO ident.person (id, external_ref, legacy_code, email, name) VALUES \
      (42, 'ext-42', NULL, 'forty.two@people.example', 'Forty Two'), \
      (7, '42', 'LEG-7', 'seven@people.example', 'Seven Sevenson'), \
      (1, 'dup-1', NULL, NULL, 'Dee One'), \
      (2, 'Src_X', 'dup-1', 'two@people.example', 'Dee Two'); \
    INSERT INTO ident.visit (person_id, note) SELECT id, 'visit of ' || name FROM ident.person;";

fn request(identifier: &str, identifier_type: Option<&str>) -> ErasureRequest {
    ErasureRequest {
        request_id: Uuid::new_v4(),
        customer_id: identifier.to_owned(),
        requested_by: "dpo".into(),
        reason: None,
        requested_at: None,
        identifier_type: identifier_type.map(str::to_owned),
    }
}

async fn person_rows(app: &TestApp, id: i64) -> i64 {
    app.count_of(&format!(
        "SELECT (SELECT count(*) FROM ident.person WHERE id = {id}) + (SELECT count(*) FROM ident.visit WHERE person_id = {id})"
    ))
    .await
}

#[tokio::test]
async fn a_key_names_its_customer_only_and_keeps_naming_it_once_erased() {
    let mut app = TestApp::with_schema(SCHEMA, PLAN).await;
    sqlx::raw_sql(PEOPLE).execute(&app.pool).await.unwrap();
    // 42 is person 42's key, and person 7's external reference: the key wins.
    let first = app.erase_by_engine(request("42", None)).await;
    assert_eq!(first.status, DeletionStatus::Done);
    assert_eq!(first.related_object_id.as_deref(), Some("42"));
    assert_eq!(person_rows(&app, 7).await, 2, "person 7 untouched");
    // Asked again with a new request id, through the engine, the queue and the API: already
    // erased, for person 42; person 7 is never touched.
    let again = app.erase_by_engine(request("42", None)).await;
    assert!(again.already_erased, "{again:?}");
    assert_eq!(again.related_object_id.as_deref(), Some("42"));
    app.start_worker().await;
    let queued = app.request_erasure("42").await;
    let queued = app.wait_for_final(queued).await;
    assert!(queued.already_erased, "{queued:?}");
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let response = api.post("42", None, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = response.json().await.unwrap();
    let done = api.wait_for_final(body["id"].as_str().unwrap()).await;
    assert_eq!(done["already_erased"], true, "{done}");
    assert_eq!(done["related_object_id"], "42", "{done}");
    assert_eq!(person_rows(&app, 7).await, 2, "person 7 untouched");
    // Suppression and the customer's latest deletion follow the same rule.
    let (status, suppressed) = api.get("/v1/suppressions/42").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(suppressed["deletion_id"], first.id.as_str());
    let (_, latest) = api.get("/v1/customers/42/permanent-deletion").await;
    assert_eq!(latest["related_object_id"], "42", "{latest}");
    // Said to be a lookup value, 42 is person 7's external reference.
    let seven = app
        .erase_by_engine(request("42", Some("external_ref")))
        .await;
    assert_eq!(seven.related_object_id.as_deref(), Some("7"));
    assert_eq!(person_rows(&app, 7).await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn an_identifier_that_names_two_customers_is_refused_and_its_type_resolves_it() {
    let app = TestApp::with_schema(SCHEMA, PLAN).await;
    sqlx::raw_sql(PEOPLE).execute(&app.pool).await.unwrap();
    let everything = "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \
        (SELECT p::text FROM ident.person p UNION ALL SELECT v::text FROM ident.visit v) t";
    let checksum = || async {
        sqlx::query_scalar::<_, Option<String>>(everything)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let before = checksum().await;
    // dup-1 is person 1's external reference and person 2's legacy code.
    let refused = app.erase_by_engine(request("dup-1", None)).await;
    assert_eq!(refused.status, DeletionStatus::Failed);
    assert_eq!(refused.error_key, Some(ErrorKey::Conflict));
    assert!(
        refused
            .error_message
            .as_deref()
            .unwrap()
            .starts_with("the identifier names more than one customer"),
        "{refused:?}"
    );
    assert_eq!(refused.related_object_id, None);
    assert_eq!(checksum().await, before, "nothing changed");
    let preview = app.eraser().preview("dup-1", "dpo", Channel::Cli).await;
    assert!(
        matches!(
            preview,
            Err(erasure::erase::preview::PreviewError::Ambiguous)
        ),
        "{preview:?}"
    );
    // The console's search asks the same question of the live customers: by any lookup, two;
    // by the type said, one each.
    let identity = app.eraser().identity();
    for (word, named) in [
        (None, Named::Several),
        (Some("external_ref"), Named::One("1".into())),
        (Some("legacy_code"), Named::One("2".into())),
        (Some("key"), Named::Nobody),
    ] {
        let kind = identity.identifier_type(word).unwrap();
        assert_eq!(
            app.eraser()
                .live_customer_key("dup-1", &kind)
                .await
                .unwrap(),
            named,
            "{word:?}"
        );
    }
    // Said which it is, it names one.
    let two = app
        .erase_by_engine(request("dup-1", Some("legacy_code")))
        .await;
    assert_eq!(two.related_object_id.as_deref(), Some("2"));
    assert_eq!(person_rows(&app, 2).await, 0);
    // Person 2 is erased, but its legacy code still names it: dup-1 alone still names two
    // customers (person 1 alive, person 2 erased), and is refused.
    let still = app.erase_by_engine(request("dup-1", None)).await;
    assert_eq!(still.error_key, Some(ErrorKey::Conflict), "{still:?}");
    assert_eq!(person_rows(&app, 1).await, 2, "person 1 untouched");
    // An identifier type that is neither the key nor a lookup is not a valid request.
    let eraser = app.eraser();
    let invalid = eraser
        .receive(request("dup-1", Some("phone")), Channel::Cli, Utc::now())
        .unwrap_err();
    assert_eq!(
        invalid.message,
        "identifier_type: must be one of key, external_ref, legacy_code, email"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_lookup_compared_exactly_matches_one_spelling_and_one_in_any_case_every_spelling() {
    let app = TestApp::with_schema(SCHEMA, PLAN).await;
    sqlx::raw_sql(PEOPLE).execute(&app.pool).await.unwrap();
    // Src_X is person 2's external reference, compared exactly.
    assert_eq!(
        app.erase_by_engine(request("SRC_X", None)).await.error_key,
        Some(ErrorKey::NotFound)
    );
    assert_eq!(
        app.erase_by_engine(request("src_x", None)).await.error_key,
        Some(ErrorKey::NotFound)
    );
    assert_eq!(person_rows(&app, 2).await, 2);
    let two = app.erase_by_engine(request("Src_X", None)).await;
    assert_eq!(two.related_object_id.as_deref(), Some("2"));
    // Erased: the exact spelling is found erased, another spelling names nobody, in the
    // "erased earlier" look and in suppression alike.
    assert!(
        app.erase_by_engine(request("Src_X", None))
            .await
            .already_erased
    );
    let other = app.erase_by_engine(request("SRC_X", None)).await;
    assert_eq!(other.error_key, Some(ErrorKey::NotFound), "{other:?}");
    let identity = app.eraser().identity();
    let naming = |id: &str| identity.naming(id, erasure::identity::IdentifierType::Any);
    assert!(
        erasure::deletion::ledger::suppression(&app.pool, &naming("Src_X"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        erasure::deletion::ledger::suppression(&app.pool, &naming("SRC_X"))
            .await
            .unwrap()
            .is_none()
    );
    // The e-mail, compared in any case: found in any case, alive and erased.
    let seven = app
        .erase_by_engine(request("SEVEN@People.Example", None))
        .await;
    assert_eq!(seven.related_object_id.as_deref(), Some("7"));
    let again = app
        .erase_by_engine(request("seven@PEOPLE.example", None))
        .await;
    assert!(again.already_erased, "{again:?}");
    assert!(
        erasure::deletion::ledger::suppression(&app.pool, &naming("Seven@people.EXAMPLE"))
            .await
            .unwrap()
            .is_some()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_source_id_equal_to_another_customers_key_never_erases_that_customer_on_any_channel() {
    let mut app = TestApp::new().await;
    let shape = Shape::typical();
    app.seed_customer("cust_a", "src_a", shape).await;
    // Customer B's source id is customer A's key.
    app.seed_customer("cust_b", "cust_a", shape).await;
    app.start_worker().await;
    let first = app
        .wait_for_final(app.request_erasure("cust_a").await)
        .await;
    assert_eq!(first.related_object_id.as_deref(), Some("cust_a"));
    assert!(!first.already_erased);
    let b_before = app.checksum_of_others("cust_a").await;
    // The queue.
    let queued = app
        .wait_for_final(app.request_erasure("cust_a").await)
        .await;
    assert!(queued.already_erased, "{queued:?}");
    // The API.
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base.clone(), false).await;
    let response = api.post("cust_a", None, None).await;
    let body: serde_json::Value = response.json().await.unwrap();
    let over_http = api.wait_for_final(body["id"].as_str().unwrap()).await;
    assert_eq!(over_http["already_erased"], true, "{over_http}");
    // The console.
    let caller = erasure::keys::verify(&app.pool, &api.key)
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
    let submitted = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/submit"))
        .header("cookie", format!("erasure_session={token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={csrf}&customer_id=cust_a&reason=asked+twice&requested_by=privacy-officer"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let page = submitted.headers()["location"].to_str().unwrap().to_owned();
    let deletion_id = page.trim_start_matches("/deletions/");
    let in_console = api.wait_for_final(deletion_id).await;
    assert_eq!(in_console["already_erased"], true, "{in_console}");
    // The ledger replay, on this database where customer A is gone: not present, B untouched.
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.jsonl");
    let path = ledger.display().to_string();
    let cli = |args: &[&str]| {
        let mut command = app.command();
        command
            .args(args)
            .env("ERASURE_DATABASE__REFERENCE_SCHEMA", "true");
        command
    };
    let export = cli(&["ledger", "export", "--out", &path])
        .output()
        .await
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let replay = cli(&["ledger", "replay", &path]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(stdout.contains("cust_a: not present"), "{stdout}");
    assert!(stdout.contains("0 customers erased again"), "{stdout}");
    assert_eq!(
        app.checksum_of_others("cust_a").await,
        b_before,
        "customer B untouched"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_b")
            .await,
        1
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_identifier_that_named_nobody_is_kept_nowhere_in_clear() {
    let mut app = TestApp::with_settings(|s| s.proof.seal_every_ms = 0).await;
    // The worker binary, its log (every level) kept in a file.
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("worker.log");
    let mut worker = app
        .command()
        .arg("worker")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let email = "nobody.here@unknown.example";
    let row = app.wait_for_final(app.request_erasure(email).await).await;
    // Asked again: not found again, and found by it.
    let second = app.wait_for_final(app.request_erasure(email).await).await;
    assert_eq!(second.error_key, Some(ErrorKey::NotFound));
    crate::faults::kill_9(&mut worker).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&row.request_id.to_string()),
        "the log is there"
    );
    assert!(!logged.contains(email), "{logged}");
    assert_eq!(row.error_key, Some(ErrorKey::NotFound));
    assert_eq!(row.related_object_id, None);
    // Found again by it, through its keyed hash.
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, true).await;
    let (status, latest) = api
        .get(&format!("/v1/customers/{email}/permanent-deletion"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["id"], second.id.as_str());
    assert_eq!(latest["related_object_id"], json!(null));
    let (status, receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", row.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!receipt.to_string().contains(email), "{receipt}");
    // In no table of the service's, and no ledger line.
    assert_eq!(app.rows_containing(email).await, Vec::<String>::new());
    let ledger = app
        .command()
        .args(["ledger", "export"])
        .output()
        .await
        .unwrap();
    let lines = String::from_utf8_lossy(&ledger.stdout);
    assert!(lines.contains(&row.id), "{lines}");
    assert!(!lines.contains(email), "{lines}");
    app.cleanup().await;
}
