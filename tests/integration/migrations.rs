//! Upgrades keep what an earlier version recorded.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

use crate::helpers::TestApp;

static ERASURE: Migrator = sqlx::migrate!("./migrations/erasure");

/// Replaces the worker's schema with the one `version` (and those before it) made.
async fn migrated_up_to(app: &TestApp, version: i64) {
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::raw_sql("DROP SCHEMA erasure CASCADE; CREATE SCHEMA erasure; SET search_path TO erasure")
        .execute(&mut *conn)
        .await
        .unwrap();
    let earlier = Migrator {
        migrations: Cow::Owned(
            ERASURE
                .migrations
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    earlier.run(&mut *conn).await.unwrap();
    sqlx::raw_sql("RESET search_path")
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn outcome_events_owed_before_the_outbox_table_are_owed_after_it() {
    let app = TestApp::new().await;
    migrated_up_to(&app, 20261124000001).await;
    sqlx::raw_sql(
        "INSERT INTO erasure.deletions (id, request_id, status, error_key, requested_at, due_at, \
           channel, completed_at, event_published_at) VALUES \
         ('del_owed', gen_random_uuid(), 'FAILED', 'not_found', now(), now(), 'amqp', now(), NULL), \
         ('del_published', gen_random_uuid(), 'DONE', NULL, now(), now(), 'amqp', now(), now()), \
         ('del_open', gen_random_uuid(), 'PENDING', NULL, now(), now(), 'http', NULL, NULL)",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    erasure::db::migrate(&app.pool, false).await.unwrap();
    let owed: Vec<String> = sqlx::query_scalar("SELECT deletion_id FROM erasure.event_outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(owed, ["del_owed"]);
    app.cleanup().await;
}

#[tokio::test]
async fn identifiers_that_named_nobody_are_redacted_and_the_sealed_log_still_checks_naming_it() {
    use erasure::proof::{seal, signing};
    let app = TestApp::with_settings(|s| s.proof.seal_every_ms = 0).await;
    migrated_up_to(&app, 20261204000002).await;
    let email = "never.a.customer@unknown.example";
    sqlx::raw_sql(&format!(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, error_key, error_message, \
           requested_at, due_at, channel, completed_at) VALUES \
         ('del_nobody', gen_random_uuid(), '{email}', 'FAILED', 'not_found', 'no customer', now(), now(), 'amqp', now()), \
         ('del_someone', gen_random_uuid(), 'cust_1', 'DONE', NULL, NULL, now(), now(), 'amqp', now()); \
         INSERT INTO erasure.audit_log (action, deletion_id, related_object_id, channel, error_key) VALUES \
         ('erasure.failed', 'del_nobody', '{email}', 'amqp', 'not_found'), \
         ('erasure.done', 'del_someone', 'cust_1', 'amqp', NULL);"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    // Sealed by the version before.
    let signer = signing::Signer::load(&app.pool, &app.settings.proof)
        .await
        .unwrap();
    while seal::seal_once(&app.pool, &signer).await.unwrap().is_some() {}
    let keys = signing::KeySet::published(&app.pool).await.unwrap();
    assert_eq!(
        seal::check_log(&app.pool, &keys, None)
            .await
            .unwrap()
            .problem,
        None
    );

    erasure::db::migrate(&app.pool, false).await.unwrap();
    assert_eq!(app.rows_containing(email).await, Vec::<String>::new());
    // Until the redaction is sealed, the change shows as one.
    let report = seal::check_log(&app.pool, &keys, None).await.unwrap();
    assert!(
        report
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("was changed after seal 1")),
        "{report:?}"
    );
    while seal::seal_once(&app.pool, &signer).await.unwrap().is_some() {}
    let report = seal::check_log(&app.pool, &keys, None).await.unwrap();
    assert_eq!(report.problem, None, "{report:?}");
    assert_eq!(report.redactions.len(), 1, "{report:?}");
    assert_eq!(report.redactions[0].2, 1);
    assert!(
        report.redactions[0].1.contains("named nobody"),
        "{report:?}"
    );
    // The binary says so.
    let out = app
        .command()
        .args(["audit", "verify"])
        // The reference schema is there, but the history that says so went with the schema.
        .env("ERASURE_DATABASE__REFERENCE_SCHEMA", "false")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Checked against the keys the database holds (none pinned here): it says so, exit 3.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 rows redacted on purpose after they were sealed, as seal 2 records: identifiers of requests that named nobody"),
        "{stdout}"
    );
    // A redacted row changed again is named.
    sqlx::raw_sql(
        "ALTER TABLE erasure.audit_log DISABLE TRIGGER USER; \
         UPDATE erasure.audit_log SET related_object_id = 'someone' WHERE deletion_id = 'del_nobody'; \
         ALTER TABLE erasure.audit_log ENABLE TRIGGER USER;",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let report = seal::check_log(&app.pool, &keys, None).await.unwrap();
    assert!(report.problem.is_some(), "{report:?}");
    app.cleanup().await;
}
