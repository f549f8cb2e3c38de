//! The restore drill: erased customers brought back by a backup restore are erased again by
//! replaying the ledger exported since the backup, and a second replay erases nothing.

use erasure::deletion::DeletionStatus;
use sqlx::PgPool;

use crate::helpers::{ScratchDatabase, Shape, TestApp};

const ERASED: usize = 100;
const KEPT: usize = 20;

/// The personal values the seeding gave the erased customers, as one pattern.
const PERSONAL: &str =
    r"Name of gone_|gone_[0-9]+@mail\.example|555-gone_|gone_[0-9]+ Street|src_gone_";

/// Tables of `pool`'s database (business and the worker's own) with a row whose text matches
/// `pattern`, as "schema.table: n".
async fn rows_matching(pool: &PgPool, pattern: &str) -> Vec<String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
           AND table_schema NOT LIKE 'pg\\_%' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (schema, table) in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE t::text ~ $1"
        ))
        .bind(pattern)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            found.push(format!("{schema}.{table}: {n}"));
        }
    }
    found
}

/// A checksum of every row of the customers never erased.
async fn kept_checksum(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws('/', \
           (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customers t WHERE id LIKE 'keep\\_%'), \
           (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM events t WHERE customer_id LIKE 'keep\\_%'), \
           (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customer_events t WHERE customer_id LIKE 'keep\\_%'), \
           (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM orders t WHERE id LIKE 'keep\\_%'), \
           (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM order_events t WHERE order_id LIKE 'keep\\_%'))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn run(app: &TestApp, database_url: &str, args: &[&str]) -> (i32, String, String) {
    let out = app
        .command()
        .env("ERASURE_DATABASE_URL", database_url)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_restored_backup_replayed_from_the_ledger_keeps_none_of_the_erased_and_a_second_replay_erases_nothing()
 {
    let mut app = TestApp::new().await;
    for i in 0..ERASED {
        app.seed_customer(
            &format!("gone_{i}"),
            &format!("src_gone_{i}"),
            Shape::typical(),
        )
        .await;
    }
    for i in 0..KEPT {
        app.seed_customer(
            &format!("keep_{i}"),
            &format!("src_keep_{i}"),
            Shape::typical(),
        )
        .await;
    }
    let kept = kept_checksum(&app.pool).await;
    let url = app.settings.database.url.expose().to_owned();

    // The backup, then the erasures.
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("backup.dump");
    let backup_taken = chrono::Utc::now();
    let status = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&url)
        .status()
        .expect("pg_dump runs");
    assert!(status.success());
    app.start_worker().await;
    let mut requests = Vec::new();
    for i in 0..ERASED {
        requests.push(app.request_erasure(&format!("gone_{i}")).await);
    }
    for request_id in &requests {
        assert_eq!(
            app.wait_for_final(*request_id).await.status,
            DeletionStatus::Done
        );
    }
    assert!(rows_matching(&app.pool, PERSONAL).await.is_empty());

    // The ledger since the backup; exporting again adds nothing.
    let ledger = dir.join("ledger.jsonl");
    let ledger_path = ledger.display().to_string();
    let since = backup_taken.to_rfc3339();
    let (code, _, stderr) = run(
        &app,
        &url,
        &["ledger", "export", "--since", &since, "--out", &ledger_path],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("{ERASED} deletions added")),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        &app,
        &url,
        &["ledger", "export", "--since", &since, "--out", &ledger_path],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 deletions added"), "{stderr}");
    let text = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(text.lines().count(), ERASED);
    // Nothing personal in the ledger: ids, keys and keyed hashes only.
    assert!(!holds_personal(&text), "the ledger holds no personal value");

    // The restore: the erased customers are back.
    let restored = ScratchDatabase::create(&format!("{}_restored", app.database)).await;
    let status = std::process::Command::new("pg_restore")
        .args(["--no-owner", "--dbname", &restored.url])
        .arg(&dump)
        .status()
        .expect("pg_restore runs");
    assert!(status.success());
    let restored_pool = PgPool::connect(&restored.url).await.unwrap();
    assert!(!rows_matching(&restored_pool, PERSONAL).await.is_empty());

    // The replay, before the database is opened to traffic.
    let (code, stdout, stderr) =
        run(&app, &restored.url, &["ledger", "replay", &ledger_path]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "replayed {ERASED} lines: {ERASED} customers erased again, 0 not present, 0 lines with nothing to replay, 0 failed"
        )),
        "{stdout}"
    );
    assert_eq!(stdout.matches(": erased again as del_").count(), ERASED);
    let replayed: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT related_object_id, id, data_json FROM erasure.deletions \
         WHERE channel = 'replay' AND status = 'DONE' ORDER BY related_object_id",
    )
    .fetch_all(&restored_pool)
    .await
    .unwrap();
    assert_eq!(replayed.len(), ERASED);
    for (customer, id, counts) in &replayed {
        assert_eq!(*counts, Shape::typical().expected_counts(), "{customer}");
        assert!(
            stdout.contains(&format!("{customer}: erased again as {id} (")),
            "{customer} reported with its deletion: {stdout}"
        );
    }
    assert_eq!(
        rows_matching(&restored_pool, PERSONAL).await,
        Vec::<String>::new()
    );
    assert_eq!(
        kept_checksum(&restored_pool).await,
        kept,
        "the others are untouched"
    );

    // A second replay erases nothing.
    let (code, stdout, stderr) =
        run(&app, &restored.url, &["ledger", "replay", &ledger_path]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "replayed {ERASED} lines: 0 customers erased again, {ERASED} not present"
        )),
        "{stdout}"
    );
    let replays: i64 =
        sqlx::query_scalar("SELECT count(*) FROM erasure.deletions WHERE channel = 'replay'")
            .fetch_one(&restored_pool)
            .await
            .unwrap();
    assert_eq!(replays, ERASED as i64);
    restored_pool.close().await;
    drop(restored);
    app.cleanup().await;
}

/// Whether `text` holds one of the erased customers' personal values.
fn holds_personal(text: &str) -> bool {
    [
        "Name of gone_",
        "@mail.example",
        "555-gone_",
        " Street",
        "src_gone_",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[tokio::test]
async fn a_ledger_line_that_does_not_read_is_reported_and_fails_the_replay_and_others_still_go_through()
 {
    let mut app = TestApp::new().await;
    app.seed_customer("gone_x", "src_gone_x", Shape::default())
        .await;
    app.start_worker().await;
    let request_id = app.request_erasure("gone_x").await;
    app.wait_for_final(request_id).await;
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.jsonl");
    let path = ledger.display().to_string();
    let url = app.settings.database.url.expose().to_owned();
    let (code, _, stderr) = run(&app, &url, &["ledger", "export", "--out", &path]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut text = std::fs::read_to_string(&ledger).unwrap();
    text.push_str("{\"not\": \"a ledger line\"}\n");
    std::fs::write(&ledger, text).unwrap();
    let (code, stdout, _) = run(&app, &url, &["ledger", "replay", &path]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("line 2: refused: not signed"), "{stdout}");
    assert!(stdout.contains("line 1: gone_x: not present"), "{stdout}");
    assert!(
        stdout.contains("1 not present, 0 lines with nothing to replay, 1 failed or refused"),
        "{stdout}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn planted_changed_unreadable_and_oversized_ledger_lines_are_refused_by_number_and_the_rest_replayed()
 {
    let mut app = TestApp::new().await;
    for name in ["gone_a", "gone_b", "gone_c"] {
        app.seed_customer(name, &format!("src_{name}"), Shape::default())
            .await;
    }
    app.seed_customer("victim", "src_victim", Shape::default())
        .await;
    app.start_worker().await;
    for name in ["gone_a", "gone_b", "gone_c", "nobody_here"] {
        app.wait_for_final(app.request_erasure(name).await).await;
    }
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.jsonl");
    let path = ledger.display().to_string();
    let url = app.settings.database.url.expose().to_owned();
    let (code, _, stderr) = run(&app, &url, &["ledger", "export", "--out", &path]).await;
    assert_eq!(code, 0, "{stderr}");
    let exported = std::fs::read_to_string(&ledger).unwrap();
    let lines: Vec<&str> = exported.lines().collect();
    assert_eq!(lines.len(), 4, "{exported}");
    let line_of = |key: &str| {
        *lines
            .iter()
            .find(|l| l.contains(&format!("\"related_object_id\":\"{key}\"")))
            .unwrap()
    };
    let failed = *lines.iter().find(|l| l.contains("\"FAILED\"")).unwrap();
    // As after a restore: the erased customers are back (gone_c now holding another person's
    // source id under its key).
    for name in ["gone_a", "gone_b"] {
        app.seed_customer(name, &format!("src_{name}"), Shape::default())
            .await;
    }
    app.seed_customer("gone_c", "src_someone_else", Shape::default())
        .await;
    let untouched = "SELECT concat_ws('/', \
        (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM customers t WHERE id IN ('victim', 'gone_c')), \
        (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM events t WHERE customer_id IN ('victim', 'gone_c')), \
        (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM orders t WHERE customer_id IN ('victim', 'gone_c')))";
    let checksum = || async {
        sqlx::query_scalar::<_, String>(untouched)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let victim_before = checksum().await;

    let planted = line_of("gone_a").replace("gone_a", "victim");
    let changed = line_of("gone_b").replace("\"status\":\"DONE\"", "\"status\":\"DONE\" ");
    let mut file = Vec::new();
    for line in [
        line_of("gone_a").to_string(),                   // 1: replayed
        planted,                                         // 2: refused, its signature
        changed.replace("gone_b", "victim"),             // 3: refused, its signature
        "{\"deletion_id\": \"del_x\u{0}\"}".to_string(), // 4: refused, a NUL byte
        "x".repeat(100 * 1024 * 1024),                   // 5: refused, too long
        failed.to_string(),                              // 6: nothing to replay
        line_of("gone_c").to_string(),                   // 7: refused, another person
        line_of("gone_b").to_string(),                   // 8: replayed
    ] {
        file.extend_from_slice(line.as_bytes());
        file.push(b'\n');
    }
    std::fs::write(&ledger, file).unwrap();
    let (code, stdout, stderr) = run(&app, &url, &["ledger", "replay", &path]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    for expected in [
        "line 1: gone_a: erased again",
        "line 2: refused: does not verify",
        "line 3: refused: does not verify",
        "line 4: refused: not a ledger line",
        "line 5: refused: longer than 64 KiB",
        "ended FAILED: nothing to replay",
        "line 7: gone_c: refused: the customer with this key has none of the lookup values the erased one had",
        "line 8: gone_b: erased again",
        "replayed 8 lines: 2 customers erased again, 0 not present, 1 lines with nothing to replay, 5 failed or refused",
    ] {
        assert!(stdout.contains(expected), "{expected}:\n{stdout}");
    }
    assert!(stdout.contains("line 6: "), "{stdout}");
    assert_eq!(
        checksum().await,
        victim_before,
        "the victim and gone_c untouched"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "gone_c")
            .await,
        1
    );

    // An export into a file whose last line's time is far ahead of the database's clock still
    // adds what the file lacks: it goes by the ids the file holds.
    let ahead = exported.replace("\"completed_at\":\"2026", "\"completed_at\":\"2100");
    std::fs::write(&ledger, &ahead).unwrap();
    app.wait_for_final(app.request_erasure("victim").await)
        .await;
    let (code, _, stderr) = run(&app, &url, &["ledger", "export", "--out", &path]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("3 deletions added"), "{stderr}");
    let now = std::fs::read_to_string(&ledger).unwrap();
    assert!(now.contains("\"related_object_id\":\"victim\""), "{now}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_export_reads_in_pages_and_writes_every_final_deletion_once_in_order() {
    let app = TestApp::new().await;
    // 2,500 final deletions, many ending at the same instant (the id orders those), one open.
    sqlx::raw_sql(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, \
           completed_at, channel) \
         SELECT 'del_page' || lpad(n::text, 16, '0'), gen_random_uuid(), 'cust_' || n, 'DONE', now(), \
           now() + interval '1 month', timestamptz '2026-11-01' + (n / 7) * interval '1 second', 'cli' \
         FROM generate_series(1, 2500) n; \
         INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_open000000000000000000', gen_random_uuid(), 'PENDING', now(), now() + interval '1 month', 'cli')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let url = app.settings.database.url.expose().to_owned();
    let (code, stdout, stderr) = run(&app, &url, &["ledger", "export"]).await;
    assert_eq!(code, 0, "{stderr}");
    let expected: Vec<String> = (1..=2500).map(|n| format!("del_page{n:016}")).collect();
    assert_eq!(ledger_ids(&stdout), expected);
    app.cleanup().await;
}

/// The ids of a ledger's lines, in order.
fn ledger_ids(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["deletion_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn extending_a_ledger_file_reads_from_a_little_before_its_last_deletion_and_adds_each_new_one_once()
 {
    let app = TestApp::new().await;
    // DONE deletions (id, when it ended).
    let done_at = |ended: &[(&str, &str)]| {
        let rows: Vec<String> = ended
            .iter()
            .map(|(id, at)| {
                format!(
                    "('{id}', gen_random_uuid(), 'cust_{id}', 'DONE', now(), \
                     now() + interval '1 month', timestamptz '{at}', 'cli')"
                )
            })
            .collect();
        format!(
            "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, \
               due_at, completed_at, channel) VALUES {}",
            rows.join(", ")
        )
    };
    sqlx::raw_sql(&done_at(&[
        ("del_before", "2026-11-01 00:00:00Z"),
        ("del_first", "2026-11-01 01:00:00Z"),
        ("del_last", "2026-11-01 01:00:10Z"),
    ]))
    .execute(&app.pool)
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.jsonl");
    let path = ledger.display().to_string();
    let url = app.settings.database.url.expose().to_owned();
    let since = "2026-11-01T00:30:00Z";
    let (code, _, stderr) = run(
        &app,
        &url,
        &["ledger", "export", "--since", since, "--out", &path],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        ledger_ids(&std::fs::read_to_string(&ledger).unwrap()),
        ["del_first", "del_last"]
    );
    // Committed since: one that ended just before the file's last (a transaction that took its
    // time), inside the overlap the extension reads again; and a new one.
    sqlx::raw_sql(&done_at(&[
        ("del_late", "2026-11-01 00:58:00Z"),
        ("del_new", "2026-11-01 02:00:00Z"),
    ]))
    .execute(&app.pool)
    .await
    .unwrap();
    // Without --since: the file says where it ends, so the deletion before the first export's
    // start is not added (the file was started from there on purpose), and none twice.
    let (code, _, stderr) = run(&app, &url, &["ledger", "export", "--out", &path]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("2 deletions added"), "{stderr}");
    assert_eq!(
        ledger_ids(&std::fs::read_to_string(&ledger).unwrap()),
        ["del_first", "del_last", "del_late", "del_new"]
    );
    app.cleanup().await;
}
