//! The checks meant for CI after each migration: `erasure plan --strict` (the drift gate) and
//! `erasure canary`, on the reference schema with its copies and the completed plan; both pass,
//! and both fail naming the table when a personal column is added without a plan change.

use std::process::Output;

use crate::exhaust::ServerLog;
use crate::helpers::{Shape, TestApp};
use crate::residue::{app_with_copies, completed_plan, plan_file};

async fn erasure(app: &TestApp, plan: &std::path::Path, args: &[&str]) -> Output {
    app.command()
        .args(args)
        .env("ERASURE_ERASURE__PLAN", plan)
        .output()
        .await
        .expect("the binary runs")
}

fn both(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_canary_and_the_drift_gate_pass_on_the_completed_plan_and_fail_naming_a_new_personal_column()
 {
    let app = app_with_copies().await;
    app.seed_customer("cust_seeded", "src_cust_seeded", Shape::typical())
        .await;
    let plan = plan_file(&app, &completed_plan());
    let log = ServerLog::open(&app.pool).await;
    let log_path = log.path.display().to_string();

    let out = erasure(&app, &plan, &["plan", "--strict"]).await;
    let (stdout, stderr) = both(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("Strict: every column that looks personal"),
        "{stdout}"
    );

    let out = erasure(&app, &plan, &["canary", "--server-log", &log_path]).await;
    let (stdout, stderr) = both(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("no value of the canary was found"),
        "{stdout}"
    );
    for planted in [
        "public.customers (the customer)",
        "public.customers_history (step)",
        "public.orders (step)",
        "public.order_events (step)",
        "public.segment_members (step)",
    ] {
        assert!(stdout.contains(planted), "{planted} not in {stdout}");
    }
    assert!(
        !stdout.contains("not scanned: the server's log"),
        "{stdout}"
    );
    assert!(!stdout.contains("not scanned: pg_largeobject"), "{stdout}");

    // A migration adds a personal column the plan does not clear.
    sqlx::query("ALTER TABLE orders ADD COLUMN alt_email text")
        .execute(&app.pool)
        .await
        .unwrap();
    let out = erasure(&app, &plan, &["plan", "--strict"]).await;
    let (stdout, stderr) = both(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("public.orders.alt_email (its name says an e-mail address)"),
        "{stderr}"
    );
    let out = erasure(&app, &plan, &["canary", "--server-log", &log_path]).await;
    let (stdout, stderr) = both(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("table public.orders: 1 rows, in alt_email"),
        "{stderr}"
    );

    // Exempted with a reason, the gate passes again.
    let exempt = plan_file(
        &app,
        &format!(
            "{}\n[[exempt]]\ntable = \"orders\"\ncolumns = [\"alt_email\"]\nreason = \"a shared mailbox of the company, never a person's\"\n",
            completed_plan()
        ),
    );
    let out = erasure(&app, &exempt, &["plan", "--strict"]).await;
    assert!(out.status.success(), "{:?}", both(&out));

    // Nothing of the canaries stays behind.
    let left: i64 = app
        .count_of("SELECT count(*) FROM orders WHERE alt_email LIKE 'cnry%'")
        .await;
    assert_eq!(left, 0);
    assert_eq!(
        app.count_of(
            "SELECT count(*) FROM customers WHERE name LIKE 'cnry%' OR email LIKE 'cnry%'"
        )
        .await,
        0
    );
    app.cleanup().await;
}
