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
