use erasure::startup::Application;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_table_referencing_customers_outside_the_plan_stops_the_worker() {
    let app = TestApp::new().await;
    let err = refusal_after(
        &app,
        "CREATE TABLE loyalty_cards (id bigserial PRIMARY KEY, \
         holder text NOT NULL REFERENCES customers (id), number text)",
    )
    .await;
    assert!(
        err.contains("public.loyalty_cards references public.customers"),
        "{err}"
    );
    assert!(err.contains("holder -> id"), "{err}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_table_referencing_a_deleted_table_outside_the_plan_stops_the_worker() {
    let app = TestApp::new().await;
    let err = refusal_after(
        &app,
        "CREATE TABLE event_attachments (id bigserial PRIMARY KEY, \
         event_id bigint REFERENCES events (id), blob text)",
    )
    .await;
    assert!(
        err.contains("public.event_attachments references public.events"),
        "{err}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_plan_naming_a_missing_column_stops_the_worker() {
    let app = TestApp::new().await;
    let dir = tempdir(&app.id);
    let plan = erasure::plan::BUILT_IN.replace("\"billing_email\",", "\"billing_fax\",");
    let path = dir.join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    let mut settings = app.settings.clone();
    settings.erasure.plan = Some(path);
    let err = Application::build(settings)
        .await
        .err()
        .expect("the worker refuses to start")
        .to_string();
    assert!(
        err.contains("column public.orders.billing_fax does not exist"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn a_kept_table_is_accepted_when_the_plan_says_why() {
    let app = TestApp::new().await;
    sqlx::query(
        "CREATE TABLE referrals (id bigserial PRIMARY KEY, \
         customer_id text REFERENCES customers (id) ON DELETE SET NULL)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let dir = tempdir(&app.id);
    let path = dir.join("plan.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[[keep]]\ntable = \"referrals\"\nreason = \"holds no personal data; the key is nulled by the database\"\n",
            erasure::plan::BUILT_IN
        ),
    )
    .unwrap();
    let mut settings = app.settings.clone();
    settings.erasure.plan = Some(path);
    Application::build(settings)
        .await
        .expect("a plan that keeps the table on purpose starts");
    std::fs::remove_dir_all(dir).unwrap();
    app.cleanup().await;
}

fn tempdir(id: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("erasure-test-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Adds `ddl` to the test database and returns why the worker then refuses to start.
async fn refusal_after(app: &TestApp, ddl: &str) -> String {
    sqlx::query(ddl).execute(&app.pool).await.unwrap();
    Application::build(app.settings.clone())
        .await
        .err()
        .expect("the worker refuses to start")
        .to_string()
}
