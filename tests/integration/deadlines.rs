//! What is owed to the data subject: a FAILED deletion stops being owed when a request retries
//! it or a later request erases its customer, recorded on it (`resolved_by`) by a trigger, also
//! when the failure and the later erasure commit at the same moment.

use std::time::Duration;

use chrono::{DateTime, Utc};
use erasure::deletion::deadlines::{Extended, extend, latest_extension, notes, standing};
use erasure::deletion::{KeyRef, auto, due_at, report, store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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
    // The metric counts open deletions past their deadline only: del_e.
    assert_eq!(store::count_overdue(&app.pool).await.unwrap(), 1);
    // An erasure in progress past its deadline counts too; one whose deadline was extended
    // past now does not.
    insert(&app.pool, "del_j", "cust_o", "IN_PROGRESS", 5, None).await;
    insert(&app.pool, "del_k", "cust_n", "PENDING", 5, None).await;
    sqlx::query(
        "UPDATE erasure.deletions SET extended_due_at = now() + interval '1 month' WHERE id = 'del_k'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(store::count_overdue(&app.pool).await.unwrap(), 2);
    app.cleanup().await;
}

/// A deletion `id` in `status`, asked at `requested_at` and due one month later.
async fn asked_at(app: &TestApp, id: &str, status: &str, requested_at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, completed_at, channel) \
         VALUES ($1, gen_random_uuid(), $2, $3, $4, CASE WHEN $2 = 'DONE' THEN now() END, 'http')",
    )
    .bind(id)
    .bind(status)
    .bind(requested_at)
    .bind(due_at(requested_at))
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The audit rows of extensions, as (deletion, requested_by, key id, key name, detail).
async fn extension_audit(app: &TestApp) -> Vec<(String, String, String, String, Value)> {
    sqlx::query_as(
        "SELECT deletion_id, requested_by, key_id, key_name, detail FROM erasure.audit_log \
         WHERE action = 'erasure.extended' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deadline_is_extended_only_while_owed_in_the_first_month_past_the_due_date_and_to_three_months_at_most()
 {
    let app = TestApp::new().await;
    let key = KeyRef {
        id: "key_ops".into(),
        name: "ops desk".into(),
    };
    let reason = "many systems to search";
    // Whole seconds, so that the bounds compare exactly after a round trip through the database.
    let asked = DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).unwrap();
    let (due, latest) = (due_at(asked), latest_extension(asked));
    let second = chrono::Duration::seconds(1);
    asked_at(&app, "del_open", "PENDING", asked).await;
    asked_at(
        &app,
        "del_old",
        "PENDING",
        asked - chrono::Duration::days(40),
    )
    .await;
    asked_at(&app, "del_done", "DONE", asked).await;
    let extended =
        |id: &'static str, to: DateTime<Utc>| extend(&app.pool, id, to, reason, "ops", &key);

    // Refused: on or before the due date, or past three months after the request.
    for to in [due - second, due, latest + second] {
        let refused = extended("del_open", to).await.unwrap();
        assert!(
            matches!(&refused, Extended::OutOfBounds(m) if m.contains(&auto(due)) && m.contains(&auto(latest))),
            "{to}: {refused:?}"
        );
    }
    // Refused: the first month has passed (the person must be told within it).
    let old_latest = latest_extension(asked - chrono::Duration::days(40));
    let refused = extended("del_old", old_latest).await.unwrap();
    assert!(
        matches!(&refused, Extended::TooLate(m) if m.contains("first month")),
        "{refused:?}"
    );
    // Refused: nothing is owed any more.
    let refused = extended("del_done", latest).await.unwrap();
    assert!(
        matches!(&refused, Extended::TooLate(m) if m.contains("DONE")),
        "{refused:?}"
    );
    assert!(matches!(
        extended("del_nothing", latest).await.unwrap(),
        Extended::NotFound
    ));
    // A refusal writes nothing.
    assert!(extension_audit(&app).await.is_empty());
    for id in ["del_open", "del_old", "del_done"] {
        assert!(notes(&app.pool, id).await.unwrap().is_empty(), "{id}");
        let row = erasure::deletion::find(&app.pool, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.extended_due_at, None, "{id}");
    }

    // Three months to the second: recorded, with the reason as a note and an audit row naming
    // the key, the dates and the note by its id and the reason's hash.
    let Extended::Extended(row) = extended("del_open", latest).await.unwrap() else {
        panic!("the latest date allowed was refused");
    };
    assert_eq!(
        (row.due_at, row.extended_due_at, row.effective_due()),
        (due, Some(latest), latest)
    );
    let noted = notes(&app.pool, "del_open").await.unwrap();
    assert_eq!(noted.len(), 1);
    let note = &noted[0];
    assert_eq!(
        (note.action.as_str(), note.reason.as_str()),
        ("erasure.extended", reason)
    );
    assert_eq!(
        (note.key_id.as_deref(), note.key_name.as_deref()),
        (Some("key_ops"), Some("ops desk"))
    );
    let reason_sha256 = format!("{:x}", Sha256::digest(reason.as_bytes()));
    assert_eq!(
        extension_audit(&app).await,
        [(
            "del_open".to_owned(),
            "ops".to_owned(),
            "key_ops".to_owned(),
            "ops desk".to_owned(),
            json!({"extended_due_at": auto(latest), "due_at": auto(due), "note": note.id,
                   "reason_sha256": reason_sha256}),
        )]
    );
    // Once more, by request id, to a second after the due date: the earliest allowed.
    let Extended::Extended(again) = extend(
        &app.pool,
        &row.request_id.to_string(),
        due + second,
        reason,
        "ops",
        &key,
    )
    .await
    .unwrap() else {
        panic!("a second after the due date was refused");
    };
    assert_eq!(
        (again.id.as_str(), again.extended_due_at),
        ("del_open", Some(due + second))
    );
    assert_eq!(notes(&app.pool, "del_open").await.unwrap().len(), 2);
    app.cleanup().await;
}
