//! Proof of erasure: the check after commit, signed receipts checked offline with the
//! `erasure` binary, key rotation, and the audit log's seals against tampering.

use std::time::Duration;

use erasure::config::Secret;
use erasure::deletion::{self, DeletionStatus};
use erasure::proof::seal;
use erasure::proof::signing::{KeySet, Signer};
use erasure::startup::Mode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};
use crate::http_api::{Api, expect_error};

/// Runs `erasure` with `args` in `app`'s environment: (exit code, stdout, stderr).
async fn run(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = app.command().args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `erasure audit verify ARGS`, against the application's own signing key, pinned.
async fn audit_verify(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let signer = &app.app.as_ref().unwrap().signer;
    let keys = scratch(app, "pinned-keys.json", &KeySet::of(signer).to_jwks());
    let mut all = vec!["audit", "verify", "--key", &keys];
    all.extend_from_slice(args);
    run(app, &all).await
}

fn scratch(app: &TestApp, name: &str, value: &Value) -> String {
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

/// Waits until the check after commit has run on deletion `id`: what it recorded.
async fn wait_verified(app: &TestApp, id: &str) -> Value {
    for _ in 0..300 {
        let row = deletion::find(&app.pool, id).await.unwrap().unwrap();
        if let Some(outcome) = row.verification {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deletion {id} was not verified in 15 s");
}

#[tokio::test]
async fn a_done_erasure_is_verified_and_its_receipt_checks_offline_and_fails_when_changed() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_proof", "src_proof", Shape::typical())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base.clone(), true).await;
    let request_id = app.request_erasure("cust_proof").await;
    let row = app.wait_for_final(request_id).await;
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(
        wait_verified(&app, &row.id).await,
        json!({"outcome": "passed"})
    );
    assert_eq!(
        row.plan_hash.as_deref(),
        Some(app.app.as_ref().unwrap().eraser.plan_hash())
    );

    let (status, object) = api
        .get(&format!("/v1/permanent-deletions/{}", row.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(object["verification"]["outcome"], "passed", "{object}");
    assert!(object["verification"]["verified_at"].is_string());
    let (status, receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", row.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["object"], "erasure_receipt");
    assert_eq!(receipt["deletion_id"], row.id);
    assert_eq!(receipt["status"], "DONE");
    assert_eq!(receipt["related_object_id"], "cust_proof");
    assert_eq!(receipt["data_json"], Shape::typical().expected_counts());
    assert_eq!(receipt["verification"]["outcome"], "passed");
    assert_eq!(receipt["plan_hash"], row.plan_hash.clone().unwrap());
    // Nothing personal: the seeded values of the customer appear nowhere in it.
    let text = receipt.to_string();
    for personal in ["src_proof", "cust_proof@mail.example", "Name of cust_proof"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }

    // The published keys, unauthenticated.
    let jwks: Value = reqwest::get(format!("{base}/v1/receipt-keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], receipt["key_id"]);
    let keys_file = scratch(&app, "keys.json", &jwks);
    let receipt_file = scratch(&app, "receipt.json", &receipt);

    // Offline, with the key set as a file; and fetched from the service.
    let (code, stdout, stderr) = run(
        &app,
        &["receipt", "verify", &receipt_file, "--key", &keys_file],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("deletion {} DONE", row.id)),
        "{stdout}"
    );
    let url = format!("{base}/v1/receipt-keys");
    let (code, _, stderr) = run(&app, &["receipt", "verify", &receipt_file, "--key", &url]).await;
    assert_eq!(code, 0, "{stderr}");

    // Any field changed: it no longer checks, and says so.
    for (field, value) in [
        ("status", json!("FAILED")),
        ("data_json", json!({"events": 0})),
        ("completed_at", json!("2020-01-01T00:00:00.000Z")),
        (
            "verification",
            json!({"outcome": "passed", "verified_at": null, "failed_tables": []}),
        ),
    ] {
        let mut changed = receipt.clone();
        changed[field] = value;
        let file = scratch(&app, "changed.json", &changed);
        let (code, _, stderr) = run(&app, &["receipt", "verify", &file, "--key", &keys_file]).await;
        assert_eq!(code, 1, "{field}");
        assert!(stderr.contains("does not check"), "{field}: {stderr}");
    }
    // Against another key: named as missing from the set.
    let other = Signer::generate();
    let other_keys = scratch(&app, "other.json", &KeySet::of(&other).to_jwks());
    let (code, _, stderr) = run(
        &app,
        &["receipt", "verify", &receipt_file, "--key", &other_keys],
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no key with id"), "{stderr}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_receipt_is_a_409_until_the_deletion_is_final_and_a_404_for_an_unknown_id() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_wait", "src_wait", Shape::default())
        .await;
    // The API alone: the request stays PENDING.
    let base = app.start(Mode::Api).await;
    let api = Api::new(&app, base, false).await;
    let (status, body) = crate::http_api::read(api.post("cust_wait", None, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let response = api
        .request(
            Method::GET,
            &format!("/v1/permanent-deletions/{id}/receipt"),
        )
        .send()
        .await
        .unwrap();
    let message = expect_error(response, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains("PENDING"), "{message}");
    let response = api
        .request(
            Method::GET,
            "/v1/permanent-deletions/del_000000000000000000000000/receipt",
        )
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_row_left_behind_after_commit_fails_the_verification_and_names_its_table() {
    let mut app = TestApp::with_settings(|s| s.proof.verify_every_ms = 0).await;
    app.seed_customer("cust_left", "src_left", Shape::typical())
        .await;
    app.seed_customer("cust_clean", "src_clean", Shape::typical())
        .await;
    app.start_worker().await;
    let left = app
        .wait_for_final(app.request_erasure("cust_left").await)
        .await;
    let clean = app
        .wait_for_final(app.request_erasure("cust_clean").await)
        .await;
    assert_eq!(left.status, DeletionStatus::Done);

    // Between the commit and the check: an event of the erased customer appears (foreign
    // keys off, as a bulk load with triggers disabled would write it), a stale import brings
    // the customer row back, and another writes a billing email back onto one of the orders
    // the erasure kept (anonymized).
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (customer_id, type, metadata) \
         VALUES ('cust_left', 'late', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO customers (id, source_id, email) VALUES ('cust_left', 'src_left', 'back@mail.example')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let restored = sqlx::query(
        "UPDATE orders SET billing_email = 'back@mail.example' WHERE id = 'cust_left_order_2'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(restored.rows_affected(), 1);
    tx.commit().await.unwrap();

    let verifier = &app.app.as_ref().unwrap().verifier;
    let checked = verifier.verify_queued(256).await.unwrap();
    assert_eq!(checked.len(), 2);
    let of = |id: &str| {
        checked
            .iter()
            .find(|c| c.deletion_id == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        of(&left.id).tables,
        ["public.events", "public.orders", "public.customers"]
    );
    assert!(of(&clean.id).passed());
    assert!(
        verifier.verify_queued(256).await.unwrap().is_empty(),
        "the queue is empty"
    );

    let row = deletion::find(&app.pool, &left.id).await.unwrap().unwrap();
    assert!(row.verified_at.is_some());
    assert_eq!(
        row.verification,
        Some(
            json!({"outcome": "failed", "tables": ["public.events", "public.orders", "public.customers"]})
        )
    );
    let v = row.verification();
    assert_eq!(
        v.failed_tables,
        ["public.events", "public.orders", "public.customers"]
    );
    let receipt = erasure::proof::receipt::issue(
        &row,
        app.eraser().count_keys(),
        &app.app.as_ref().unwrap().signer,
        chrono::Utc::now(),
    )
    .unwrap();
    assert_eq!(receipt["verification"]["outcome"], "failed");
    assert_eq!(
        receipt["verification"]["failed_tables"],
        json!(["public.events", "public.orders", "public.customers"])
    );
    app.cleanup().await;
}

#[tokio::test]
async fn receipts_signed_before_a_key_rotation_still_check() {
    let first = Signer::generate();
    let second = Signer::generate();
    let first_secret = first.secret_base64();
    let mut app =
        TestApp::with_settings(|s| s.proof.signing_key = Some(Secret::new(first_secret))).await;
    app.seed_customer("cust_old", "src_old", Shape::default())
        .await;
    app.seed_customer("cust_new", "src_new", Shape::default())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base.clone(), true).await;
    let old = app
        .wait_for_final(app.request_erasure("cust_old").await)
        .await;
    let (_, old_receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", old.id))
        .await;
    assert_eq!(old_receipt["key_id"], first.id());
    app.stop_workers().await;

    // Restarted with a new key.
    app.settings.proof.signing_key = Some(Secret::new(second.secret_base64()));
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base.clone(), true).await;
    let new = app
        .wait_for_final(app.request_erasure("cust_new").await)
        .await;
    let (_, new_receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", new.id))
        .await;
    assert_eq!(new_receipt["key_id"], second.id());

    let url = format!("{base}/v1/receipt-keys");
    let jwks: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&first.id()) && kids.contains(&second.id()),
        "{kids:?}"
    );
    for receipt in [&old_receipt, &new_receipt] {
        let file = scratch(&app, "receipt.json", receipt);
        let (code, _, stderr) = run(&app, &["receipt", "verify", &file, "--key", &url]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    // No private half of a configured key is kept.
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.signing_keys WHERE private_key IS NOT NULL")
            .await,
        0
    );
    app.cleanup().await;
}

/// Seals what is there, and checks the log with the binary: (exit code, stdout, stderr).
async fn seal_and_check(app: &TestApp) -> (i32, String, String) {
    let signer = &app.app.as_ref().unwrap().signer;
    while seal::seal_once(&app.pool, signer).await.unwrap().is_some() {}
    audit_verify(app, &[]).await
}

/// Seals until every audit row is sealed, then checks. A transaction still open in the
/// database (the worker's, the outbox's) holds sealing back until it ends, so one pass can leave
/// the newest rows unsealed; a test that then tampers with "the newest row" must know it is
/// sealed, or `audit verify` rightly says nothing.
async fn seal_all_and_check(app: &TestApp) -> (i32, String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, stdout, stderr) = seal_and_check(app).await;
        if code != 0 || stdout.contains(" 0 rows not sealed yet") {
            return (code, stdout, stderr);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows stayed unsealed for 20 s: {stdout}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn editing_deleting_adding_or_reordering_a_sealed_audit_row_is_named_by_audit_verify() {
    let mut app = TestApp::with_settings(|s| s.proof.seal_every_ms = 0).await;
    for i in 0..6 {
        app.seed_customer(&format!("cust_{i}"), &format!("src_{i}"), Shape::default())
            .await;
    }
    app.start_worker().await;
    for i in 0..6 {
        app.wait_for_final(app.request_erasure(&format!("cust_{i}")).await)
            .await;
    }
    let (code, stdout, stderr) = seal_and_check(&app).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("0 rows not sealed yet"), "{stdout}");
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM erasure.audit_log ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 6);
    let (a, b) = (ids[2], ids[3]);
    app.stop_workers().await;

    let tamper = |sql: String| {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("ALTER TABLE erasure.audit_log DISABLE TRIGGER audit_log_append_only")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::raw_sql(&sql).execute(&mut *tx).await.unwrap();
            sqlx::query("ALTER TABLE erasure.audit_log ENABLE TRIGGER audit_log_append_only")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    let fails_naming = |expected: String| {
        let app = &app;
        async move {
            let (code, _, stderr) = audit_verify(app, &[]).await;
            assert_eq!(code, 1, "{expected}: {stderr}");
            assert!(
                stderr.contains(&expected),
                "expected {expected:?}: {stderr}"
            );
        }
    };

    // An edit of one row's detail, then undone.
    tamper(format!(
        "CREATE TABLE erasure.kept AS SELECT * FROM erasure.audit_log WHERE id = {a}; \
         UPDATE erasure.audit_log SET detail = '{{\"counts\": {{}}}}' WHERE id = {a}"
    ))
    .await;
    fails_naming(format!("audit row {a} was changed")).await;
    tamper(format!(
        "UPDATE erasure.audit_log l SET detail = k.detail FROM erasure.kept k WHERE l.id = {a}"
    ))
    .await;
    assert_eq!(audit_verify(&app, &[]).await.0, 0, "undone, it checks");

    // Deleted, then put back as it was.
    tamper(format!("DELETE FROM erasure.audit_log WHERE id = {a}")).await;
    fails_naming(format!("audit row {a} was deleted")).await;
    tamper("INSERT INTO erasure.audit_log SELECT * FROM erasure.kept".into()).await;
    assert_eq!(audit_verify(&app, &[]).await.0, 0, "restored, it checks");

    // Reordered: two rows swap their times.
    tamper(format!(
        "UPDATE erasure.audit_log l SET recorded_at = o.recorded_at \
         FROM erasure.audit_log o WHERE (l.id, o.id) IN (({a}, {b}), ({b}, {a}))"
    ))
    .await;
    fails_naming(format!("audit row {a} was changed")).await;
    tamper(format!(
        "UPDATE erasure.audit_log l SET recorded_at = o.recorded_at \
         FROM erasure.audit_log o WHERE (l.id, o.id) IN (({a}, {b}), ({b}, {a}))"
    ))
    .await;
    assert_eq!(
        audit_verify(&app, &[]).await.0,
        0,
        "swapped back, it checks"
    );

    // A row added into a sealed transaction's range.
    tamper(format!(
        "INSERT INTO erasure.audit_log (id, action, channel, xid) \
         SELECT 1000000, 'erasure.previewed', 'cli', xid FROM erasure.audit_log WHERE id = {a}"
    ))
    .await;
    fails_naming("audit row 1000000 was added".into()).await;
    tamper("DELETE FROM erasure.audit_log WHERE id = 1000000".into()).await;

    // A seal rewritten by someone without the key.
    sqlx::raw_sql(
        "ALTER TABLE erasure.audit_seals DISABLE TRIGGER audit_seals_append_only; \
         UPDATE erasure.audit_seals SET row_count = row_count WHERE seq = 1; \
         UPDATE erasure.audit_seals SET sealed_at = sealed_at + interval '1 second' WHERE seq = 1; \
         ALTER TABLE erasure.audit_seals ENABLE TRIGGER audit_seals_append_only",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    fails_naming("seal 1 was changed".into()).await;
    app.cleanup().await;
}

#[tokio::test]
async fn audit_verify_passes_after_thousands_of_concurrent_erasures() {
    const CUSTOMERS: usize = 2000;
    let mut app = TestApp::with_settings(|s| {
        s.proof.seal_every_ms = 200;
        s.proof.verify_every_ms = 200;
    })
    .await;
    sqlx::query(
        "INSERT INTO customers (id, source_id, name, email) \
         SELECT 'bulk_' || i, 'bulk_src_' || i, 'Bulk ' || i, 'bulk' || i || '@mail.example' \
         FROM generate_series(1, $1) i",
    )
    .bind(CUSTOMERS as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (customer_id, type, metadata) \
         SELECT 'bulk_' || (i % $1 + 1), 'view', '{}' FROM generate_series(1, $1 * 3) i",
    )
    .bind(CUSTOMERS as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    // Two workers, four slots each, batches of up to 32: erasures commit in parallel while
    // the seals are made.
    app.start_worker().await;
    app.start_worker().await;
    let mut requests = Vec::new();
    for i in 1..=CUSTOMERS {
        let request_id = Uuid::new_v4();
        app.publish(&crate::helpers::TestApp::request(
            request_id,
            &format!("bulk_{i}"),
        ))
        .await;
        requests.push(request_id);
    }
    for request_id in &requests {
        assert_eq!(
            app.wait_for_final(*request_id).await.status,
            DeletionStatus::Done
        );
    }
    // Every row sealed by the workers' sealers, and every erasure verified.
    let keys = KeySet::published(&app.pool).await.unwrap();
    let mut report = seal::check_log(&app.pool, &keys, None).await.unwrap();
    for _ in 0..100 {
        if report.unsealed == 0 && report.problem.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = seal::check_log(&app.pool, &keys, None).await.unwrap();
    }
    assert_eq!(report.problem, None);
    assert_eq!(report.rows, CUSTOMERS);
    assert_eq!(report.unsealed, 0);
    let (code, stdout, stderr) = audit_verify(&app, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("covering {CUSTOMERS} rows")),
        "{stdout}"
    );
    // From a later seal on, linked to the one before it.
    let since: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT sealed_at FROM erasure.audit_seals ORDER BY seq DESC LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let (code, _, stderr) = audit_verify(&app, &["--since", &since.to_rfc3339()]).await;
    assert_eq!(code, 0, "{stderr}");
    for _ in 0..100 {
        if app
            .count_of("SELECT count(*) FROM erasure.verification_queue")
            .await
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.count_of(
            "SELECT count(*) FROM erasure.verifications WHERE outcome = '{\"outcome\": \"passed\"}'"
        )
        .await,
        CUSTOMERS as i64
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_malformed_signing_key_stops_the_start_saying_why_and_an_empty_one_is_none() {
    let app = TestApp::new().await;
    let mut settings = app.settings.clone();
    settings.proof.signing_key = Some(Secret::new("not a key"));
    let error = match erasure::startup::Application::build(settings.clone()).await {
        Ok(_) => panic!("a malformed key must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("32 bytes in base64 or hex"), "{error}");
    assert!(
        !error.contains("not a key"),
        "the key is not echoed: {error}"
    );

    settings.proof.signing_key_file = Some(std::env::temp_dir().join("erasure-no-such-key"));
    settings.proof.signing_key = None;
    let error = match erasure::startup::Application::build(settings.clone()).await {
        Ok(_) => panic!("a missing key file must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("cannot read the signing key file"),
        "{error}"
    );

    // Empty, as a compose file passes an unset variable: the generated key, kept once.
    settings.proof.signing_key = Some(Secret::new(""));
    settings.proof.signing_key_file = None;
    let first = erasure::startup::Application::build(settings.clone())
        .await
        .unwrap();
    let second = erasure::startup::Application::build(settings)
        .await
        .unwrap();
    assert_eq!(first.signer.id(), second.signer.id());
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.signing_keys WHERE private_key IS NOT NULL")
            .await,
        1
    );
    first.pool.close().await;
    second.pool.close().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_retention_purge_is_sealed_and_audit_verify_names_it_while_other_deletions_still_show() {
    let mut app = TestApp::with_settings(|s| s.proof.seal_every_ms = 0).await;
    for i in 0..5 {
        app.seed_customer(
            &format!("cust_old_{i}"),
            &format!("src_old_{i}"),
            Shape::default(),
        )
        .await;
    }
    app.start_worker().await;
    for i in 0..3 {
        app.wait_for_final(app.request_erasure(&format!("cust_old_{i}")).await)
            .await;
    }
    let (code, _, stderr) = seal_and_check(&app).await;
    assert_eq!(code, 0, "{stderr}");
    // Then an open request with a row of its own, and one more erasure, sealed after: the
    // open request's rows are never purged, nor any row sealed with or after them.
    sqlx::raw_sql(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_0penRetention0000000000', '00000000-0000-4000-8000-0000000000aa', 'PENDING', now(), now() + interval '1 month', 'http'); \
         INSERT INTO erasure.audit_log (action, request_id, channel) \
         VALUES ('request.accepted', '00000000-0000-4000-8000-0000000000aa', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app.wait_for_final(app.request_erasure("cust_old_3").await)
        .await;
    let (code, _, stderr) = seal_and_check(&app).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.audit_log").await,
        5
    );
    app.stop_workers().await;

    let signer = app.app.as_ref().unwrap().signer.clone();
    let purged = erasure::proof::purge::purge_audit(&app.pool, &signer, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(purged.audit_rows, 3, "{purged:?}");
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.audit_log").await,
        2
    );
    let (code, stdout, stderr) = audit_verify(&app, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("3 rows of seals 1 to")
            && stdout.contains("purged on purpose, as seal")
            && stdout.contains("records.keep_audit"),
        "{stdout}"
    );
    // Purged again: nothing more (no seal old enough is left unpurged).
    let again = erasure::proof::purge::purge_audit(&app.pool, &signer, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.audit_rows, 0);

    // Rows written later are sealed after the purge seal and checked as before.
    app.start_worker().await;
    app.wait_for_final(app.request_erasure("cust_old_4").await)
        .await;
    app.stop_workers().await;
    let (code, stdout, stderr) = seal_all_and_check(&app).await;
    assert_eq!(code, 0, "{stderr}{stdout}");
    // A row deleted outside the purge is still named (the newest row: sealed, as just checked).
    let id: i64 = sqlx::query_scalar("SELECT max(id) FROM erasure.audit_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL erasure.purging = on")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM erasure.audit_log WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (code, _, stderr) = audit_verify(&app, &[]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("audit row {id} was deleted")),
        "{stderr}"
    );
    // And a purge seal changed after it was made does not check.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE erasure.audit_seals DISABLE TRIGGER audit_seals_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE erasure.audit_seals SET purged_through = purged_through + 1 WHERE purged_through IS NOT NULL",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (code, _, stderr) = audit_verify(&app, &[]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("was changed after it was made"), "{stderr}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_deletion_purge_removes_what_owes_nothing_with_its_notes_and_keeps_every_done_one() {
    let app = TestApp::new().await;
    sqlx::raw_sql(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, error_key, requested_at, due_at, completed_at, channel) VALUES \
         ('del_done000000000000000001', gen_random_uuid(), 'cust_a', 'DONE', NULL, now(), now(), now() - interval '2 days', 'cli'), \
         ('del_canc000000000000000001', gen_random_uuid(), 'cust_b', 'CANCELED', NULL, now(), now(), now() - interval '2 days', 'http'), \
         ('del_nobo000000000000000001', gen_random_uuid(), NULL, 'FAILED', 'not_found', now(), now(), now() - interval '2 days', 'cli'), \
         ('del_fail000000000000000001', gen_random_uuid(), 'cust_a', 'FAILED', 'conflict', now(), now(), now() - interval '3 days', 'cli'), \
         ('del_owed000000000000000001', gen_random_uuid(), 'cust_c', 'FAILED', 'conflict', now(), now(), now() - interval '2 days', 'cli'), \
         ('del_rcnt000000000000000001', gen_random_uuid(), NULL, 'FAILED', 'not_found', now(), now(), now(), 'cli')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Staff's reasons for acting on two of them: the canceled one (purged) and the owed one.
    sqlx::raw_sql(
        "INSERT INTO erasure.deletion_notes (deletion_id, action, reason) VALUES \
         ('del_canc000000000000000001', 'erasure.canceled', 'asked twice by phone'), \
         ('del_owed000000000000000001', 'erasure.extended', 'the shop system is migrating')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Outside the purge the notes stay append-only.
    let refused = sqlx::raw_sql("DELETE FROM erasure.deletion_notes")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("erasure.deletion_notes is append-only"),
        "{refused}"
    );
    let removed = erasure::proof::purge::purge_deletions(&app.pool, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(removed, 3);
    // The purged deletion's note went with it; the kept one's stays.
    let notes: Vec<String> =
        sqlx::query_scalar("SELECT deletion_id FROM erasure.deletion_notes ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(notes, ["del_owed000000000000000001"]);
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM erasure.deletions ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    // Kept: the DONE one, the FAILED one still owed to cust_c (nothing erased it since), and
    // the recent one.
    assert_eq!(
        left,
        [
            "del_done000000000000000001",
            "del_owed000000000000000001",
            "del_rcnt000000000000000001"
        ]
    );
    app.cleanup().await;
}
