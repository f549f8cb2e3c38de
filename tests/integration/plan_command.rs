//! `erasure plan` as an operator reads it: every plan problem exits 2, each message said once,
//! and a warning (a gap with `--strict`) for each column the plan finds rows by that no index
//! serves.

use std::process::Output;

use crate::helpers::FreshDatabase;

const SCHEMA: &str = "\
    CREATE SCHEMA shop; \
    CREATE TABLE shop.customer (customer_id integer PRIMARY KEY, nickname text); \
    CREATE TABLE shop.rental (rental_id integer PRIMARY KEY, \
        customer_id integer NOT NULL REFERENCES shop.customer (customer_id)); \
    CREATE INDEX rental_customer_idx ON shop.rental (customer_id); \
    CREATE TABLE shop.review (review_id integer PRIMARY KEY, \
        customer_id integer NOT NULL REFERENCES shop.customer (customer_id), body text); \
    CREATE TABLE shop.payment (payment_id integer, \
        customer_id integer NOT NULL REFERENCES shop.customer (customer_id), \
        paid_at date NOT NULL, PRIMARY KEY (payment_id, paid_at)) PARTITION BY RANGE (paid_at); \
    CREATE TABLE shop.payment_2025 PARTITION OF shop.payment \
        FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
    CREATE TABLE shop.payment_2026 PARTITION OF shop.payment \
        FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
    CREATE INDEX payment_2025_customer_idx ON shop.payment_2025 (customer_id); \
    INSERT INTO shop.customer SELECT n, 'nick' || n FROM generate_series(1, 50) n; \
    INSERT INTO shop.rental SELECT n, 1 + n % 50 FROM generate_series(1, 120) n; \
    INSERT INTO shop.review SELECT n, 1 + n % 50, 'fine' FROM generate_series(1, 30) n; \
    INSERT INTO shop.payment SELECT n, 1 + n % 50, date '2025-03-01' FROM generate_series(1, 40) n; \
    INSERT INTO shop.payment SELECT n, 1 + n % 50, date '2026-03-01' FROM generate_series(41, 65) n;";

const PLAN: &str = r#"schema = "shop"
[subject]
table = "customer"
key = "customer_id"
counted_as = "customer"

[[step]]
table = "rental"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "rentals"

[[step]]
table = "review"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "reviews"

[[step]]
table = "payment"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "payments"
"#;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `erasure plan` with `plan` as the configured plan.
async fn plan_with(fresh: &FreshDatabase, plan: &str) -> Output {
    fresh.write_plan(plan);
    fresh.run(&["plan"]).await
}

#[tokio::test]
async fn every_plan_problem_exits_2_saying_it_once() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;

    let not_toml = plan_with(&fresh, "schema = \"shop\"\n[subject\n").await;
    assert_eq!(not_toml.status.code(), Some(2), "{}", stderr(&not_toml));
    let said = stderr(&not_toml);
    assert!(
        said.starts_with("error: the erasure plan is not valid TOML for a plan: TOML parse error at line 2, column 9\n"),
        "{said}"
    );
    assert_eq!(said.matches("TOML parse error").count(), 1, "{said}");
    assert_eq!(said.matches("invalid table header").count(), 1, "{said}");

    let inconsistent = plan_with(
        &fresh,
        &PLAN.replace("counted_as = \"rentals\"", "counted_as = \"\""),
    )
    .await;
    assert_eq!(inconsistent.status.code(), Some(2));
    assert_eq!(
        stderr(&inconsistent),
        "error: the erasure plan is inconsistent:\n  - step.counted_as must be a non-empty name without NUL\n"
    );

    let lookups = PLAN.replace(
        "counted_as = \"customer\"",
        "lookups = [{ column = \"nickname\" }]\ncounted_as = \"customer\"",
    );
    let not_unique = plan_with(&fresh, &lookups).await;
    assert_eq!(not_unique.status.code(), Some(2));
    assert_eq!(
        stderr(&not_unique),
        "error: the erasure plan does not fit the live schema:\n  \
         - column shop.customer.nickname has no unique index of its own; a lookup must name one row\n"
    );
    let any_case = lookups.replace(
        "{ column = \"nickname\" }",
        "{ column = \"nickname\", case_insensitive = true }",
    );
    let not_unique = plan_with(&fresh, &any_case).await;
    assert_eq!(not_unique.status.code(), Some(2));
    assert!(
        stderr(&not_unique).contains(
            "column shop.customer.nickname has no unique index on lower(nickname); a lookup must name one row"
        ),
        "{}",
        stderr(&not_unique)
    );

    let missing = fresh
        .command()
        .arg("plan")
        .env("ERASURE_ERASURE__PLAN", "/nonexistent/erasure-plan.toml")
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing),
        "error: cannot read the erasure plan /nonexistent/erasure-plan.toml: No such file or directory (os error 2)\n"
    );
}

#[tokio::test]
async fn a_database_error_is_said_once() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    let role = format!("nobody_{}", uuid::Uuid::new_v4().simple());
    let url = fresh.url.replacen("postgres@", &format!("{role}@"), 1);
    let refused = fresh
        .command()
        .arg("plan")
        .env("ERASURE_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused),
        format!("error: error returned from database: role \"{role}\" does not exist\n")
    );
}

#[tokio::test]
async fn columns_without_an_index_are_warnings_and_with_strict_gaps() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    sqlx::query("ANALYZE").execute(&fresh.pool).await.unwrap();
    let expected = [
        "shop.payment_2026.customer_id has no index (about 25 rows): every erasure scans this \
         partition of shop.payment; CREATE INDEX ON shop.payment_2026 (customer_id)",
        "shop.review.customer_id has no index (about 30 rows): every erasure scans the table; \
         CREATE INDEX ON shop.review (customer_id)",
    ];

    let warned = fresh.run(&["plan"]).await;
    assert!(warned.status.success(), "{}", stderr(&warned));
    let warnings: Vec<String> = stderr(&warned).lines().map(str::to_owned).collect();
    assert_eq!(
        warnings,
        expected.map(|w| format!("warning: {w}")),
        "the warnings name exactly the columns without an index"
    );
    let said = stdout(&warned);
    assert!(
        said.contains("The plan covers the live schema.\n"),
        "{said}"
    );
    assert!(
        said.contains("2 of the columns it filters on have no index"),
        "{said}"
    );

    for args in [&["plan", "--strict"][..], &["plan", "--sql", "--strict"]] {
        let strict = fresh.run(args).await;
        assert_eq!(strict.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&strict),
            format!(
                "error: the erasure plan does not fit the live schema:\n  - {}\n  - {}\n",
                expected[0], expected[1]
            )
        );
        assert_eq!(stdout(&strict), "");
    }

    // The index each warning names takes it away.
    for warning in expected {
        let (_, create) = warning.split_once("; ").unwrap();
        sqlx::raw_sql(create).execute(&fresh.pool).await.unwrap();
    }
    let quiet = fresh.run(&["plan", "--strict"]).await;
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "");
    assert!(!stdout(&quiet).contains("have no index"));
}
