//! The daily tallies of the deletions (`erasure.deletion_tallies`), kept by triggers and read by
//! the console's overview: after every way a deletion is written (an erasure, a batch, a cancel,
//! statements of many rows, an extension, concurrent transactions, the retention purge, an
//! emptied table) they agree with the deletions themselves, and the overview's figures are exact.

use chrono::Utc;
use erasure::deletion::report;
use erasure::deletion::{DeletionStatus, KeyRef};
use erasure::erase::{Outcome, Slot};
use erasure::request::Received;

use crate::helpers::plans::{erase_one, received};
use crate::helpers::{Shape, TestApp};

/// Where the tallies and the deletions disagree, as (tally, day, status, tallied, counted).
async fn disagreements(app: &TestApp) -> Vec<(String, String, String, i64, i64)> {
    sqlx::query_as(
        "WITH tallied AS (SELECT tally, day, status, sum(n)::bigint AS n FROM erasure.deletion_tallies \
                          GROUP BY 1, 2, 3 HAVING sum(n) <> 0), \
              counted AS (SELECT k.tally, k.day, k.status, count(*) AS n FROM erasure.deletions r, \
                            erasure.deletion_tally_keys(r.status, r.created_at, r.completed_at, r.due_at, r.extended_due_at) k \
                          GROUP BY 1, 2, 3) \
         SELECT COALESCE(t.tally, c.tally), COALESCE(t.day, c.day)::text, COALESCE(t.status, c.status), \
                COALESCE(t.n, 0), COALESCE(c.n, 0) \
         FROM tallied t FULL JOIN counted c ON (t.tally, t.day, t.status) = (c.tally, c.day, c.status) \
         WHERE t.n IS DISTINCT FROM c.n ORDER BY 1, 2, 3",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn assert_agree(app: &TestApp, after: &str) {
    let differ = disagreements(app).await;
    assert!(differ.is_empty(), "after {after}: {differ:?}");
}

/// Deletions written by statements of many rows: `n` of `status`, created `created_days_ago`,
/// ended `ended_days_ago` (if final), due `due_days_ago`.
async fn seed(
    app: &TestApp,
    prefix: &str,
    n: i32,
    status: DeletionStatus,
    created_days_ago: i32,
    ended_days_ago: Option<i32>,
    due_days_ago: i32,
) {
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, \
           created_at, completed_at, channel, error_key) \
         SELECT 'del_' || $1 || lpad(i::text, 20, '0'), gen_random_uuid(), NULL, $3, \
           now() - make_interval(days => $4), now() - make_interval(days => $6), \
           now() - make_interval(days => $4), now() - make_interval(days => $5), 'amqp', \
           CASE WHEN $3 = 'FAILED' THEN 'not_found' END \
         FROM generate_series(1, $2) i",
    )
    .bind(prefix)
    .bind(n)
    .bind(status)
    .bind(created_days_ago)
    .bind(ended_days_ago)
    .bind(due_days_ago)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_tallies_agree_with_the_deletions_however_they_are_written_and_the_overview_is_exact() {
    let app = TestApp::new().await;
    assert_agree(&app, "migrating").await;

    // Erasures as the service carries them out: alone, in a batch, of nobody.
    for i in 0..6 {
        app.seed_customer(
            &format!("cust_t{i}"),
            &format!("src_t{i}"),
            Shape::typical(),
        )
        .await;
    }
    assert_eq!(
        erase_one(&app, "cust_t0").await.status,
        DeletionStatus::Done
    );
    assert_eq!(
        erase_one(&app, "cust_nobody").await.status,
        DeletionStatus::Failed
    );
    let mut slot = Slot::new(app.eraser().clone());
    let batch: Vec<Received> = (1..5)
        .map(|i| received(&app, &format!("cust_t{i}")))
        .collect();
    for outcome in slot.erase_batch(&batch).await {
        let Ok(Outcome::Recorded(row)) = outcome else {
            panic!("expected a recorded outcome, got {outcome:?}")
        };
        assert_eq!(row.status, DeletionStatus::Done);
    }
    // The slot keeps its connection between requests: let it go before the cleanup.
    drop(slot);
    assert_agree(&app, "erasures alone and in a batch").await;

    // A PENDING deletion canceled.
    seed(&app, "k", 1, DeletionStatus::Pending, 0, None, -30).await;
    let key = KeyRef {
        id: "key_t".into(),
        name: "desk".into(),
    };
    let canceled = erasure::deletion::lifecycle::cancel(
        &app.pool,
        &format!("del_k{:020}", 1),
        "desk",
        &key,
        None,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            canceled,
            erasure::deletion::lifecycle::Canceled::Canceled(_)
        ),
        "{canceled:?}"
    );
    assert_agree(&app, "a cancel").await;

    // Statements of many rows, over days inside and outside the overview's 30.
    seed(&app, "p", 10, DeletionStatus::Pending, 0, None, -20).await;
    seed(&app, "d", 6, DeletionStatus::Done, 3, Some(2), -10).await;
    seed(&app, "l", 5, DeletionStatus::Done, 40, Some(1), 5).await;
    seed(&app, "f", 4, DeletionStatus::Failed, 40, Some(40), 10).await;
    seed(&app, "c", 3, DeletionStatus::Canceled, 29, Some(29), 0).await;
    seed(&app, "o", 2, DeletionStatus::Canceled, 30, Some(30), 0).await;
    assert_agree(&app, "statements of many rows").await;

    // Half the PENDING ones end, late; an extension makes two of the late ones on time.
    sqlx::query(
        "UPDATE erasure.deletions SET status = 'DONE', completed_at = now(), due_at = now() - interval '1 day' \
         WHERE id LIKE 'del_p%' AND id <= 'del_p' || lpad('5', 20, '0')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE erasure.deletions SET extended_due_at = now() + interval '1 day' \
         WHERE id IN ('del_l' || lpad('1', 20, '0'), 'del_l' || lpad('2', 20, '0'))",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // An update that changes nothing counted writes nothing.
    let rows_before = app
        .count_of("SELECT count(*) FROM erasure.deletion_tallies")
        .await;
    sqlx::query("UPDATE erasure.deletions SET error_message = error_message")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletion_tallies")
            .await,
        rows_before
    );
    assert_agree(&app, "updates of status, completion and deadline").await;

    // The overview's figures, exactly: this test's deletions are all it holds.
    let counts = report::counts_by_status(&app.pool).await.unwrap();
    let today_month = |status: DeletionStatus| {
        counts
            .iter()
            .find(|(s, _, _)| *s == status)
            .map_or((0, 0), |(_, t, m)| (*t, *m))
    };
    // DONE: 5 erasures and the 5 PENDING ended today (created today), the 6 from 3 days ago;
    // the 5 created 40 days ago are outside the 30.
    assert_eq!(today_month(DeletionStatus::Done), (10, 16));
    assert_eq!(today_month(DeletionStatus::Pending), (5, 5));
    assert_eq!(today_month(DeletionStatus::Failed), (1, 1));
    // One canceled today, three 29 days ago (inside), two 30 days ago (outside).
    assert_eq!(today_month(DeletionStatus::Canceled), (1, 4));
    let (_, _, late) = report::deadline_counts(&app.pool).await.unwrap();
    // 5 PENDING ended a day late, 3 of the 5 old ones still late after two were extended.
    assert_eq!(late, 8);
    let daily = report::outcomes_per_day(&app.pool, 30).await.unwrap();
    assert_eq!(daily.len(), 30);
    let today = daily.last().unwrap();
    // The last slot is the UTC day now running.
    let into_day = Utc::now() - today.0;
    assert!(
        into_day >= chrono::Duration::zero() && into_day < chrono::Duration::days(1),
        "{into_day}"
    );
    assert_eq!(today.0.time(), chrono::NaiveTime::MIN);
    // Today: 5 erasures and 5 ended, one FAILED, one canceled.
    assert_eq!((today.1, today.2, today.3), (10, 1, 1));
    let sums = daily.iter().fold((0, 0, 0), |(d, f, c), day| {
        (d + day.1, f + day.2, c + day.3)
    });
    // And 6 DONE two days ago, 5 yesterday, 3 CANCELED 29 days ago; the 40- and 30-day-old ones
    // are outside.
    assert_eq!(sums, (21, 1, 4));

    // Per hour, the last 24 (from the index, not the tallies): what ended today ended within
    // them; what ended a day ago and before did not.
    let hourly = report::outcomes_per_hour(&app.pool, 24).await.unwrap();
    assert_eq!(hourly.len(), 24);
    // The last slot is the hour now running.
    let into_hour = Utc::now() - hourly.last().unwrap().0;
    assert!(
        into_hour >= chrono::Duration::zero() && into_hour < chrono::Duration::hours(1),
        "{into_hour}"
    );
    let sums = hourly.iter().fold((0, 0, 0), |(d, f, c), hour| {
        (d + hour.1, f + hour.2, c + hour.3)
    });
    assert_eq!(sums, (10, 1, 1));

    // Concurrent transactions on their own connections, each ending a few deletions.
    seed(&app, "x", 64, DeletionStatus::Pending, 1, None, -20).await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let pool = app.pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                let n = worker * 8 + i + 1;
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(
                    "UPDATE erasure.deletions SET status = CASE WHEN $1 % 3 = 0 THEN 'FAILED' ELSE 'DONE' END, \
                       error_key = CASE WHEN $1 % 3 = 0 THEN 'not_found' END, completed_at = now() \
                     WHERE id = 'del_x' || lpad($1::text, 20, '0')",
                )
                .bind(n)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_agree(&app, "concurrent transactions").await;

    // The retention purge removes ended deletions; the tallies lose them too.
    let purged = erasure::proof::purge::purge_deletions(&app.pool, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(purged >= 4, "purged {purged}");
    assert_agree(&app, "the retention purge").await;

    // A tally that drifted is found (the comparison above can fail).
    sqlx::query(
        "UPDATE erasure.deletion_tallies SET n = n + 1 \
         WHERE (tally, day, status, shard) IN (SELECT tally, day, status, shard FROM erasure.deletion_tallies LIMIT 1)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(disagreements(&app).await.len(), 1);

    // An emptied table empties its tallies.
    sqlx::raw_sql("TRUNCATE erasure.deletions CASCADE")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.deletion_tallies")
            .await,
        0
    );
    app.cleanup().await;
}
