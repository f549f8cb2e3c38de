//! What is owed to the data subject: a FAILED deletion stops being owed when a request retries
//! it or a later request erases its customer, recorded on it (`resolved_by`) by a trigger, also
//! when the failure and the later erasure commit at the same moment.

use std::time::Duration;

use erasure::deletion::deadlines::standing;
use erasure::deletion::report;

use crate::helpers::TestApp;

/// A deletion `id` of `customer`, `status`, created `minutes_ago`, due a day ago.
async fn insert(
    db: impl sqlx::PgExecutor<'_>,
    id: &str,
    customer: &str,
    status: &str,
    minutes_ago: i32,
    retry_of: Option<&str>,
) {
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, \
           created_at, completed_at, channel, error_key, retry_of) \
         VALUES ($1, gen_random_uuid(), $2, $3, now() - make_interval(mins => $4), now() - interval '1 day', \
           now() - make_interval(mins => $4), \
           CASE WHEN $3 IN ('DONE', 'FAILED') THEN now() - make_interval(mins => $4) END, 'amqp', \
           CASE WHEN $3 = 'FAILED' THEN 'conflict' END, $5)",
    )
    .bind(id)
    .bind(customer)
    .bind(status)
    .bind(minutes_ago)
    .bind(retry_of)
    .execute(db)
    .await
    .unwrap();
}

async fn resolved_by(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT resolved_by FROM erasure.deletions WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failure_is_owed_until_retried_or_its_customer_is_erased_later_even_when_both_commit_at_once()
 {
    let app = TestApp::new().await;
    // Owed while FAILED and nothing else happened; a later DONE erasure of the customer resolves it.
    insert(&app.pool, "del_a", "cust_r", "FAILED", 60, None).await;
    assert_eq!(standing(&app.pool, "del_a").await.unwrap(), (true, None));
    insert(&app.pool, "del_b", "cust_r", "DONE", 30, None).await;
    assert_eq!(resolved_by(&app, "del_a").await.as_deref(), Some("del_b"));
    assert_eq!(standing(&app.pool, "del_a").await.unwrap(), (false, None));
    // A failure after that erasure is owed: the erasure did not answer it.
    insert(&app.pool, "del_c", "cust_r", "FAILED", 10, None).await;
    assert_eq!(resolved_by(&app, "del_c").await, None);
    // A retry resolves what it retries, whatever becomes of the retry.
    insert(&app.pool, "del_d", "cust_s", "FAILED", 60, None).await;
    insert(&app.pool, "del_e", "cust_s", "PENDING", 5, Some("del_d")).await;
    assert_eq!(
        standing(&app.pool, "del_d").await.unwrap(),
        (false, Some("del_e".to_owned()))
    );

    // A failure and a later erasure of the same customer, committing at the same moment: the
    // erasure's transaction is open when the failure is written; the failure waits for it, and
    // sees it.
    insert(&app.pool, "del_f", "cust_q", "IN_PROGRESS", 60, None).await;
    let mut erasure = app.pool.begin().await.unwrap();
    insert(&mut *erasure, "del_g", "cust_q", "DONE", 1, None).await;
    let pool = app.pool.clone();
    let failing = tokio::spawn(async move {
        sqlx::query(
            "UPDATE erasure.deletions SET status = 'FAILED', error_key = 'conflict', completed_at = now() \
             WHERE id = 'del_f'",
        )
        .execute(&pool)
        .await
        .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!failing.is_finished(), "the failure waits for the erasure");
    erasure.commit().await.unwrap();
    failing.await.unwrap();
    assert_eq!(resolved_by(&app, "del_f").await.as_deref(), Some("del_g"));
    // The other way round: the failure's transaction open when the erasure is written.
    insert(&app.pool, "del_h", "cust_p", "IN_PROGRESS", 60, None).await;
    let mut failure = app.pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE erasure.deletions SET status = 'FAILED', error_key = 'conflict', completed_at = now() \
         WHERE id = 'del_h'",
    )
    .execute(&mut *failure)
    .await
    .unwrap();
    let pool = app.pool.clone();
    let erasing =
        tokio::spawn(async move { insert(&pool, "del_i", "cust_p", "DONE", 1, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    failure.commit().await.unwrap();
    erasing.await.unwrap();
    assert_eq!(resolved_by(&app, "del_h").await.as_deref(), Some("del_i"));

    // Owed past the deadline: del_c only (del_a, del_d, del_f, del_h resolved; del_e PENDING is
    // owed too, and due a day ago).
    let (overdue, due_soon, _) = report::deadline_counts(&app.pool).await.unwrap();
    assert_eq!((overdue, due_soon), (2, 0));
    let listed: Vec<String> = report::overdue(&app.pool, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&"del_c".to_owned()) && listed.contains(&"del_e".to_owned()));
    app.cleanup().await;
}
