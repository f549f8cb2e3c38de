//! The `erasure` binary itself, as an operator runs it.

use erasure::deletion::DeletionStatus;
use std::process::Output;

use tokio::process::Command;

use crate::helpers::{Shape, TestApp};

/// Runs the binary to completion.
async fn erasure(app: &TestApp, args: &[&str]) -> Output {
    app.command()
        .args(args)
        .output()
        .await
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn enqueue_leads_to_a_done_deletion_that_status_prints() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_cli", "src_cli", Shape::typical())
        .await;
    app.start_worker().await;

    let enqueued = erasure(
        &app,
        &[
            "enqueue",
            "src_cli",
            "--requested-by",
            "ops",
            "--reason",
            "ticket 9",
        ],
    )
    .await;
    assert!(enqueued.status.success(), "{}", stderr(&enqueued));
    let request_id = stdout(&enqueued).trim().lines().last().unwrap().to_string();
    let row = app.wait_for_final(request_id.parse().unwrap()).await;
    assert_eq!(row.status, DeletionStatus::Done);

    for id in [request_id.as_str(), row.id.as_str()] {
        let status = erasure(&app, &["status", id]).await;
        assert!(status.status.success(), "{}", stderr(&status));
        let object: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
        assert_eq!(object["id"], row.id.as_str());
        assert_eq!(object["request_id"], request_id.as_str());
        assert_eq!(object["status"], "DONE");
        assert_eq!(object["related_object_id"], "cust_cli");
        assert_eq!(object["data_json"], Shape::typical().expected_counts());
        assert_eq!(object["error"], serde_json::Value::Null);
    }
    app.cleanup().await;
}

#[tokio::test]
async fn status_of_an_unknown_id_exits_1() {
    let app = TestApp::new().await;
    let output = erasure(&app, &["status", "del_doesnotexist"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no deletion has the id"));
    app.cleanup().await;
}

#[tokio::test]
async fn enqueue_refuses_an_invalid_request_without_publishing() {
    let app = TestApp::new().await;
    let long = "c".repeat(256);
    let output = erasure(&app, &["enqueue", &long, "--requested-by", "ops"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("customer_id: must be 1 to 255 characters"));
    assert!(app.take_all(&app.settings.amqp.queue).await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn plan_prints_the_plan_and_its_sql_and_names_a_gap() {
    let app = TestApp::new().await;
    let output = erasure(&app, &["plan"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("The plan covers the live schema."));
    let output = erasure(&app, &["plan", "--sql"]).await;
    let sql = stdout(&output);
    assert!(sql.contains("DELETE FROM \"public\".\"events\""));
    // Each parameter the statement takes is listed once, in order, by name, and the plan's own
    // values quoted: what someone running the statement by hand has to supply.
    assert!(
        sql.starts_with(
            "-- Parameters:\n--   $1 text[] customer\n--   $2 uuid[] request_id\n--   $3 text[] deletion_id\n"
        ),
        "{sql}"
    );
    assert!(
        sql.contains("\n--   $11 bytea inner_pad\n--   $12 bytea outer_pad\n"),
        "{sql}"
    );
    assert!(
        sql.contains(" text constant = 'the customer has an order in status OPEN'\n"),
        "{sql}"
    );
    assert!(
        sql.contains(" text[] constant = ARRAY['OPEN']::text[]\n"),
        "{sql}"
    );
    let listed = sql.lines().filter(|l| l.starts_with("--   $")).count();
    let highest = sql
        .lines()
        .filter(|l| !l.starts_with("--"))
        .flat_map(|l| l.split('$').skip(1))
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .max();
    assert_eq!(Some(listed), highest, "{sql}");

    sqlx::query(
        "CREATE TABLE wishlists (id bigserial PRIMARY KEY, owner text REFERENCES customers (id))",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let output = erasure(&app, &["plan"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("public.wishlists references public.customers"),
        "{}",
        stderr(&output)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_service_stops_cleanly_on_sigterm() {
    let app = TestApp::new().await;
    let mut child = app
        .command()
        .arg("run")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it consumes: a request gets an outcome.
    let request_id = app.request_erasure("cust_nobody").await;
    app.wait_for_final(request_id).await;
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("the service stops within 30 s")
        .unwrap();
    assert!(status.success(), "{status:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked() {
    let app = TestApp::new().await;
    let created = erasure(&app, &["keys", "create", "--name", "portal", "--read-only"]).await;
    assert!(created.status.success(), "{}", stderr(&created));
    let printed = stdout(&created);
    let key = printed.lines().last().unwrap().to_owned();
    let caller = erasure::keys::verify(&app.pool, &key)
        .await
        .unwrap()
        .expect("the printed key works");
    assert_eq!(caller.name, "portal");
    assert!(caller.read_only);
    // The secret is stored only as a hash.
    let secret = key.rsplit_once('_').unwrap().1;
    assert!(app.rows_containing(secret).await.is_empty());

    let taken = erasure(&app, &["keys", "create", "--name", "portal"]).await;
    assert_eq!(taken.status.code(), Some(2));
    assert!(
        stderr(&taken).contains("already named"),
        "{}",
        stderr(&taken)
    );

    let listed = stdout(&erasure(&app, &["keys", "list"]).await);
    assert!(listed.contains("portal\tread-only"), "{listed}");
    assert!(!listed.contains(secret));

    let revoked = erasure(&app, &["keys", "revoke", "portal"]).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        erasure::keys::verify(&app.pool, &key)
            .await
            .unwrap()
            .is_none()
    );
    let again = erasure(&app, &["keys", "revoke", "portal"]).await;
    assert_eq!(again.status.code(), Some(1));
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_alone_leaves_the_api_address_to_erasure_api() {
    let app = TestApp::new().await;
    // The API's address is taken (as by `erasure api` on the same host).
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut worker = app
        .command()
        .arg("worker")
        .env("ERASURE_HTTP_ADDR", &addr)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let request_id = app.request_erasure("cust_nobody").await;
    assert_eq!(
        app.wait_for_final(request_id).await.status,
        DeletionStatus::Failed
    );
    assert!(worker.try_wait().unwrap().is_none(), "the worker runs");
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
    drop(taken);
    app.cleanup().await;
}

#[tokio::test]
async fn preview_prints_what_an_erasure_would_record_and_draft_prints_a_plan_that_passes() {
    let app = TestApp::new().await;
    app.seed_customer("cust_cli_look", "src_cli_look", Shape::typical())
        .await;
    let output = erasure(&app, &["preview", "src_cli_look"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let preview: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(preview["related_object_id"], "cust_cli_look");
    assert_eq!(preview["data_json"], Shape::typical().expected_counts());
    assert_eq!(
        app.count(
            "SELECT count(*) FROM customers WHERE id = $1",
            "cust_cli_look"
        )
        .await,
        1
    );
    let unknown = erasure(&app, &["preview", "cust_nobody"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no customer has this id"));

    let output = erasure(&app, &["plan", "--draft"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let drafted = stdout(&output);
    assert!(
        drafted.contains("[[step]]\ntable = \"order_events\""),
        "{drafted}"
    );
    let live = erasure::plan::live::LiveSchema::read(&app.pool)
        .await
        .unwrap();
    let plan = erasure::plan::Plan::parse(&drafted).expect("the draft parses");
    erasure::plan::check::against(plan, &live).expect("the draft covers the schema");
    let missing = erasure(&app, &["plan", "--draft", "--subject", "public.nothing"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("table public.nothing does not exist"));
    app.cleanup().await;
}
