//! What survives a DELETE: the residue map `erasure plan` reads from the catalog, with the fix
//! for each copy; an erasure under the completed plan that leaves none of the customer's values
//! in the history table a trigger fills, in the materialized view or in `pg_largeobject`; the
//! residue section of the deletion and its receipt.

use chrono::Utc;
use erasure::deletion::{DeletionRow, DeletionStatus};
use erasure::erase::Outcome;
use erasure::request::{Channel, ErasureRequest};
use erasure::startup::Application;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};

/// The reference schema's copies: a materialized view over customers, a trigger that copies
/// each deleted customer into a history table, a photo kept as a large object, a publication
/// that sends no deletes, and a table whose replica identity is FULL.
pub const COPIES: &str = "
    CREATE MATERIALIZED VIEW customer_contacts AS SELECT id, name, email FROM customers;
    CREATE UNIQUE INDEX customer_contacts_id_idx ON customer_contacts (id);
    CREATE TABLE customers_history (id text, source_id text, name text, email text, phone text,
        address jsonb, metadata jsonb, photo oid, deleted_at timestamptz NOT NULL DEFAULT now());
    CREATE INDEX customers_history_id_idx ON customers_history (id);
    CREATE FUNCTION keep_history() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO customers_history (id, source_id, name, email, phone, address, metadata, photo)
        VALUES (OLD.id, OLD.source_id, OLD.name, OLD.email, OLD.phone, OLD.address, OLD.metadata, OLD.photo);
        RETURN OLD;
    END $$;
    CREATE TRIGGER keep_history AFTER DELETE ON customers FOR EACH ROW EXECUTE FUNCTION keep_history();
    ALTER TABLE customers ADD COLUMN photo oid;
    SET client_min_messages = error;
    CREATE PUBLICATION no_deletes FOR TABLE customers WITH (publish = 'insert, update');
    ALTER TABLE events REPLICA IDENTITY FULL;
";

/// The built-in plan, completed as `erasure plan` says.
pub fn completed_plan() -> String {
    let plan = erasure::plan::BUILT_IN.replacen(
        "counted_as = \"customer\"\n",
        "counted_as = \"customer\"\nunlink_large_objects = [\"photo\"]\n",
        1,
    );
    format!(
        "{plan}
[[step]]
table = \"customers_history\"
path = [\"id -> customers.id\"]
action = \"delete\"
counted_as = \"customer_history\"
unlink_large_objects = [\"photo\"]

[[view]]
name = \"customer_contacts\"
refresh = true
"
    )
}

/// The reference schema with [`COPIES`].
pub async fn app_with_copies() -> TestApp {
    let app = TestApp::new().await;
    sqlx::raw_sql(COPIES).execute(&app.pool).await.unwrap();
    app
}

/// Writes `plan` where the application's settings will find it.
pub fn plan_file(app: &TestApp, plan: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("completed-plan.toml");
    std::fs::write(&path, plan).unwrap();
    path
}

fn request(identifier: &str) -> ErasureRequest {
    ErasureRequest {
        request_id: Uuid::new_v4(),
        customer_id: identifier.to_owned(),
        requested_by: "dpo".into(),
        reason: None,
        requested_at: None,
        identifier_type: None,
    }
}

/// Erases the customer `identifier` names with `application`.
pub async fn erase(application: &Application, identifier: &str) -> DeletionRow {
    let eraser = &application.eraser;
    let received = eraser
        .receive(request(identifier), Channel::Cli, Utc::now())
        .unwrap();
    match eraser.erase(&received).await.unwrap() {
        Outcome::Recorded(row) => row,
        other => panic!("expected a recorded outcome, got {other:?}"),
    }
}

/// Seeds `id` with a photo (a large object) and a row in the history table from before;
/// returns the photo's oid.
pub async fn seed_with_copies(app: &TestApp, id: &str) -> u32 {
    app.seed_customer(id, &format!("src_{id}"), Shape::typical())
        .await;
    let photo: sqlx::postgres::types::Oid = sqlx::query_scalar(
        "UPDATE customers SET photo = lo_from_bytea(0, convert_to('photo of ' || id, 'UTF8')) \
         WHERE id = $1 RETURNING photo",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO customers_history (id, name, email) VALUES ($1, 'Name of ' || $1, $1 || '@mail.example')",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("REFRESH MATERIALIZED VIEW customer_contacts")
        .execute(&app.pool)
        .await
        .unwrap();
    photo.0
}

#[tokio::test]
async fn erasure_plan_names_each_copy_a_delete_leaves_with_its_fix() {
    let app = app_with_copies().await;

    let out = app.command().arg("plan").output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    for gap in [
        "trigger keep_history on public.customers copies what the erasure changes into public.customers_history, which the plan does not cover",
        "add a [[step]] for table public.customers_history whose path reaches the customer (by the column that holds its key: path = [\"<column> -> public.customers.id\"])",
        "materialized view public.customer_contacts is built from public.customers: an erased customer stays in it until it is refreshed",
        "add [[view]] name = \"public.customer_contacts\" with refresh = true",
        "column public.customers.photo holds large object references",
        "add unlink_large_objects = [\"photo\"] to [subject]",
    ] {
        assert!(stderr.contains(gap), "{gap} not in {stderr}");
    }
    for warning in [
        "publication no_deletes publishes public.customers without the deletes or updates the erasure makes: its subscribers keep each erased row",
        "ALTER PUBLICATION \"no_deletes\" SET (publish = 'insert, update, delete')",
        "table public.events has REPLICA IDENTITY FULL",
        "ALTER TABLE \"public\".\"events\" REPLICA IDENTITY DEFAULT",
    ] {
        assert!(stdout.contains(warning), "{warning} not in {stdout}");
    }
    // The worker does not start either.
    let refused = Application::build(app.settings.clone())
        .await
        .err()
        .expect("the worker refuses to start")
        .to_string();
    assert!(
        refused.contains("leaves copies of what it erases behind"),
        "{refused}"
    );

    // Completed, the plan passes and says how each copy is covered; the operator's remain.
    let path = plan_file(&app, &completed_plan());
    let out = app
        .command()
        .arg("plan")
        .env("ERASURE_ERASURE__PLAN", &path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for covered in [
        "step public.customers_history covers it, and the erasure clears the copies its own statement makes",
        "materialized view public.customer_contacts is built from public.customers: refreshed after erasures (CONCURRENTLY: it has a unique index)",
        "column public.customers.photo holds large objects: the erasure statement unlinks them",
        "warning: publication no_deletes",
        "warning: table public.events has REPLICA IDENTITY FULL",
    ] {
        assert!(stdout.contains(covered), "{covered} not in {stdout}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn with_the_plan_completed_an_erasure_leaves_nothing_of_the_customer_in_the_view_the_history_or_pg_largeobject()
 {
    let app = app_with_copies().await;
    let id = "cust_copies";
    let photo = seed_with_copies(&app, id).await;
    app.seed_customer("cust_stays", "src_cust_stays", Shape::typical())
        .await;
    let mut settings = app.settings.clone();
    settings.erasure.plan = Some(plan_file(&app, &completed_plan()));
    settings.proof.refresh_views_every_ms = 0;
    let application = Application::build(settings).await.unwrap();
    let in_view =
        "SELECT count(*) FROM customer_contacts WHERE id = $1 OR email = $1 || '@mail.example'";
    assert_eq!(app.count(in_view, id).await, 1);

    let row = erase(&application, id).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    // The history row from before, counted by its step; the copy the trigger made during the
    // erasure is cleared in its transaction, uncounted.
    assert_eq!(row.data_json["customer_history"], 1);
    assert_eq!(
        app.count("SELECT count(*) FROM customers_history WHERE id = $1", id)
            .await,
        0
    );
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1")
            .bind(sqlx::postgres::types::Oid(photo))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "the photo's large object is gone");
    for value in [format!("{id}@mail.example"), format!("Name of {id}")] {
        assert_eq!(
            app.rows_containing(&value).await,
            Vec::<String>::new(),
            "{value}"
        );
    }
    // Another customer's copies stay as they were.
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_stays")
            .await,
        1
    );
    // The check after commit reads the history table too, and passes; then the view the plan
    // lists is refreshed, and the deletion records it.
    let checked = application.verifier.verify_queued(10).await.unwrap();
    assert!(checked.iter().all(|c| c.passed()), "{checked:?}");
    let recorded = application.residue.record_queued(10).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(app.count(in_view, id).await, 0);
    assert_eq!(app.count(in_view, "cust_stays").await, 1);
    let views = &recorded[0].1["classes"]["materialized_views"];
    assert_eq!(views["state"], "cleared", "{views}");
    assert!(
        views["cleared_at"].as_str().unwrap()
            >= erasure::deletion::millis(row.completed_at.unwrap()).as_str()
    );
    application.pool.close().await;
    app.cleanup().await;
}

/// Checks the queued deletions, then records what they left behind, with `application`.
pub async fn check_and_record(application: &Application) {
    application.verifier.verify_queued(100).await.unwrap();
    application.residue.record_queued(100).await.unwrap();
}

#[tokio::test]
async fn the_residue_section_of_the_deletion_and_its_receipt_matches_the_settings() {
    let app = app_with_copies().await;
    let id = "cust_residue";
    seed_with_copies(&app, id).await;
    app.seed_customer("cust_unset", "src_cust_unset", Shape::typical())
        .await;
    let mut settings = app.settings.clone();
    settings.erasure.plan = Some(plan_file(&app, &completed_plan()));
    settings.proof.wal_retention = Some(erasure::config::Retention::parse("7d").unwrap());
    settings.proof.backup_retention = Some(erasure::config::Retention::parse("5w").unwrap());
    settings.proof.refresh_views_every_ms = 0;
    settings.proof.analyze_after_rows = 1;
    let application = Application::build(settings.clone()).await.unwrap();

    let row = erase(&application, id).await;
    assert_eq!(row.status, DeletionStatus::Done);
    // Pending until the check after commit has run and the residue is recorded.
    let object = row.to_object(application.eraser.count_keys());
    assert_eq!(object.residue.as_ref().unwrap()["recorded_at"], Value::Null);
    check_and_record(&application).await;

    let row = erasure::deletion::find(&app.pool, &row.id)
        .await
        .unwrap()
        .unwrap();
    let committed = row.completed_at.unwrap();
    let object = serde_json::to_value(row.to_object(application.eraser.count_keys())).unwrap();
    let residue = &object["residue"];
    assert!(residue["recorded_at"].is_string(), "{residue}");
    let classes = &residue["classes"];
    let date = |at: chrono::DateTime<Utc>| erasure::deletion::millis(at);
    assert_eq!(classes["wal"]["state"], "remains_until", "{classes}");
    assert_eq!(
        classes["wal"]["until"],
        date(committed + chrono::Duration::days(7))
    );
    assert_eq!(classes["backups"]["state"], "remains_until");
    assert_eq!(
        classes["backups"]["until"],
        date(committed + chrono::Duration::weeks(5))
    );
    assert_eq!(classes["page_space"]["state"], "remains");
    assert_eq!(classes["page_space"]["until"], Value::Null);
    assert!(
        classes["page_space"]["note"]
            .as_str()
            .unwrap()
            .contains("until it is reused or the table is rewritten")
    );
    let objects = |class: &str| -> Vec<String> {
        serde_json::from_value(classes[class]["objects"].clone()).unwrap()
    };
    assert!(objects("page_space").contains(&"public.customers".to_string()));
    assert_eq!(classes["large_objects"]["state"], "cleared");
    assert_eq!(classes["large_objects"]["cleared_at"], date(committed));
    assert_eq!(
        objects("large_objects"),
        ["public.customers.photo", "public.customers_history.photo"]
    );
    assert_eq!(classes["trigger_copies"]["state"], "cleared");
    assert_eq!(
        objects("trigger_copies"),
        ["public.customers_history (trigger keep_history on public.customers)"]
    );
    // The publication sends no deletes, and events' replica identity is FULL.
    assert_eq!(classes["change_streams"]["state"], "not_covered");
    assert!(
        objects("change_streams")
            .iter()
            .any(|o| o.starts_with("publication no_deletes (public.customers)"))
    );
    assert_eq!(classes["server_log"]["state"], "none");
    // Cleared after commit: the view refreshed, the changed tables analyzed.
    assert_eq!(classes["materialized_views"]["state"], "cleared");
    assert_eq!(objects("materialized_views"), ["public.customer_contacts"]);
    assert_eq!(classes["statistics"]["state"], "cleared", "{classes}");
    assert!(objects("statistics").contains(&"public.customers_history".to_string()));
    assert!(classes["replicas"]["state"].is_string());

    // The receipt carries the same section, signed.
    let signer = &application.signer;
    let receipt =
        erasure::proof::receipt::issue(&row, application.eraser.count_keys(), signer, Utc::now())
            .unwrap();
    assert_eq!(receipt["residue"], *residue);
    let keys = erasure::proof::signing::KeySet::of(signer);
    erasure::proof::receipt::check(&receipt, &keys).unwrap();
    let mut changed = receipt.clone();
    changed["residue"]["classes"]["wal"]["state"] = "cleared".into();
    assert!(erasure::proof::receipt::check(&changed, &keys).is_err());

    // Without retentions set, WAL and backups are unknown: never a guess.
    settings.proof.wal_retention = None;
    settings.proof.backup_retention = None;
    settings.proof.analyze_after_rows = 0;
    let unset = Application::build(settings).await.unwrap();
    let row = erase(&unset, "cust_unset").await;
    check_and_record(&unset).await;
    let row = erasure::deletion::find(&app.pool, &row.id)
        .await
        .unwrap()
        .unwrap();
    let classes = &row.residue.unwrap()["classes"];
    for class in ["wal", "backups"] {
        assert_eq!(classes[class]["state"], "unknown", "{classes}");
        assert_eq!(classes[class]["until"], Value::Null);
    }
    unset.pool.close().await;
    application.pool.close().await;
    app.cleanup().await;
}
