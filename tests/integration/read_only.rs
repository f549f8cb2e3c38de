//! `erasure plan`, `plan --sql`, `plan --draft` and `preview` leave the database as they found
//! it: no database created, nothing migrated (neither the worker's schema nor, with
//! `database.reference_schema` at its default, the reference tables), no broker. A preview
//! needs what `erasure migrate` makes, and says so.

use std::process::Output;

use serde_json::json;

use crate::helpers::{FreshDatabase, database_exists, database_server};

const SCHEMA: &str = "\
    CREATE SCHEMA shop; \
    CREATE TABLE shop.customer (customer_id integer PRIMARY KEY, email text NOT NULL); \
    CREATE UNIQUE INDEX customer_email_idx ON shop.customer (lower(email)); \
    CREATE TABLE shop.visit (visit_id serial PRIMARY KEY, \
        customer_id integer NOT NULL REFERENCES shop.customer (customer_id), \
        seen_at timestamptz NOT NULL DEFAULT now()); \
    CREATE INDEX visit_customer_idx ON shop.visit (customer_id); \
    INSERT INTO shop.customer VALUES (1, 'one@example.com'), (2, 'two@example.com'); \
    INSERT INTO shop.visit (customer_id) VALUES (1), (1), (2);";

const PLAN: &str = r#"schema = "shop"
[subject]
table = "customer"
key = "customer_id"
lookups = [{ column = "email", case_insensitive = true }]
counted_as = "customer"

[[step]]
table = "visit"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "visits"
"#;

/// What to run `erasure migrate` first says, as the commands print it.
const MIGRATE_FIRST: &str = "run `erasure migrate` first";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the plan commands that need nothing of the worker's, each succeeding.
async fn plan_commands(fresh: &FreshDatabase) {
    let plan = fresh.run(&["plan"]).await;
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("The plan covers the live schema."));
    let sql = fresh.run(&["plan", "--sql"]).await;
    assert!(sql.status.success(), "{}", stderr(&sql));
    assert!(stdout(&sql).contains("DELETE FROM \"shop\".\"visit\""));
    let draft = fresh
        .run(&["plan", "--draft", "--subject", "shop.customer"])
        .await;
    assert!(draft.status.success(), "{}", stderr(&draft));
    assert!(stdout(&draft).contains("[[step]]\ntable = \"visit\""));
}

/// The business rows, all of them.
async fn business_rows(fresh: &FreshDatabase) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'customer ' || c::text FROM shop.customer c \
         UNION ALL SELECT 'visit ' || v::text FROM shop.visit v ORDER BY 1",
    )
    .fetch_all(&fresh.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn plan_draft_and_preview_leave_the_catalog_as_they_found_it() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    let before = fresh.catalog().await;
    plan_commands(&fresh).await;
    assert_eq!(
        fresh.catalog().await,
        before,
        "a plan command changed the catalog"
    );

    // Once migrated (the worker's schema alone), a preview runs the erasure and rolls it back.
    let migrated = fresh
        .command()
        .arg("migrate")
        .env("ERASURE_DATABASE__REFERENCE_SCHEMA", "false")
        .output()
        .await
        .unwrap();
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let before = fresh.catalog().await;
    let rows = business_rows(&fresh).await;
    let preview = fresh.run(&["preview", "ONE@example.com"]).await;
    assert!(preview.status.success(), "{}", stderr(&preview));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&preview)).unwrap();
    assert_eq!(shown["related_object_id"], "1");
    assert_eq!(shown["data_json"], json!({"visits": 2, "customer": 1}));
    plan_commands(&fresh).await;
    assert_eq!(
        fresh.catalog().await,
        before,
        "a preview changed the catalog"
    );
    assert_eq!(business_rows(&fresh).await, rows);
    // What the statement wrote was rolled back; what stays is the preview's own audit row.
    let deletions: i64 = sqlx::query_scalar("SELECT count(*) FROM erasure.deletions")
        .fetch_one(&fresh.pool)
        .await
        .unwrap();
    assert_eq!(deletions, 0);
    let audited: Vec<String> = sqlx::query_scalar("SELECT action FROM erasure.audit_log")
        .fetch_all(&fresh.pool)
        .await
        .unwrap();
    assert_eq!(audited, ["erasure.previewed"]);
}

#[tokio::test]
async fn a_preview_without_the_erasure_schema_says_to_migrate_and_creates_nothing() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    let before = fresh.catalog().await;
    let preview = fresh.run(&["preview", "1"]).await;
    assert_eq!(preview.status.code(), Some(2), "{}", stderr(&preview));
    assert_eq!(
        stderr(&preview),
        "error: the database has no erasure schema (the worker's tables, which the erasure \
         statement writes to), and this command creates nothing: run `erasure migrate` first\n"
    );
    assert_eq!(stdout(&preview), "");
    assert_eq!(fresh.catalog().await, before);
}

#[tokio::test]
async fn a_preview_on_an_erasure_schema_behind_this_version_says_to_migrate() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    let migrated = fresh
        .command()
        .arg("migrate")
        .env("ERASURE_DATABASE__REFERENCE_SCHEMA", "false")
        .output()
        .await
        .unwrap();
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    // As if the last migration had not run yet.
    sqlx::query(
        "DELETE FROM erasure._sqlx_migrations \
         WHERE version = (SELECT max(version) FROM erasure._sqlx_migrations)",
    )
    .execute(&fresh.pool)
    .await
    .unwrap();
    let before = fresh.catalog().await;
    let preview = fresh.run(&["preview", "1"]).await;
    assert_eq!(preview.status.code(), Some(2), "{}", stderr(&preview));
    let said = stderr(&preview);
    assert!(
        said.contains("the erasure schema lacks migration "),
        "{said}"
    );
    assert_eq!(said.matches(MIGRATE_FIRST).count(), 1, "{said}");
    assert_eq!(fresh.catalog().await, before);
}

#[tokio::test]
async fn a_missing_database_is_not_created_by_plan_or_preview() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    let name = format!("erasure_test_missing_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", database_server());
    for args in [
        &["plan"][..],
        &["plan", "--sql"],
        &["plan", "--draft", "--subject", "shop.customer"],
        &["preview", "1"],
    ] {
        let output = fresh
            .command()
            .args(args)
            .env("ERASURE_DATABASE_URL", &url)
            .output()
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(
            stderr(&output),
            format!(
                "error: the database {name:?} does not exist, and this command creates nothing: \
                 run `erasure migrate` first (it creates the database and the erasure schema)\n"
            ),
            "{args:?}"
        );
        assert!(
            !database_exists(&name).await,
            "{args:?} created the database"
        );
    }
}
