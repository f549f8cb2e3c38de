//! Zero exhaust: the worker's sessions keep what they erase out of the server's log, where
//! their role may silence it, and say so where it may not.

use chrono::Utc;
use erasure::deletion::DeletionStatus;
use erasure::erase::Outcome;
use erasure::request::{Channel, ErasureRequest};
use erasure::startup::Application;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Shape, TestApp, database_server};

/// The server's log, read from where it stood when the value was made.
pub struct ServerLog {
    pub path: std::path::PathBuf,
    start: u64,
}

impl ServerLog {
    /// The log PostgreSQL writes to: `ERASURE_TEST_SERVER_LOG`, the logging collector's current
    /// file, or Debian's file for the cluster; it must be readable by the tests.
    pub async fn open(pool: &PgPool) -> Self {
        let path = match std::env::var("ERASURE_TEST_SERVER_LOG") {
            Ok(path) => std::path::PathBuf::from(path),
            Err(_) => {
                let (current, data, major): (Option<String>, String, String) = sqlx::query_as(
                    "SELECT pg_current_logfile(), current_setting('data_directory'), \
                            split_part(current_setting('server_version'), '.', 1)",
                )
                .fetch_one(pool)
                .await
                .unwrap();
                match current {
                    Some(file) => std::path::Path::new(&data).join(file),
                    None => format!("/var/log/postgresql/postgresql-{major}-main.log").into(),
                }
            }
        };
        let start = std::fs::metadata(&path)
            .unwrap_or_else(|e| {
                panic!(
                    "the server's log {} cannot be read ({e}): set ERASURE_TEST_SERVER_LOG to it",
                    path.display()
                )
            })
            .len();
        Self { path, start }
    }

    /// What the server logged since, after it had a moment to write it.
    pub async fn since(&self) -> String {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let bytes = std::fs::read(&self.path).unwrap();
        let start = (self.start as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
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

#[tokio::test]
async fn an_erasure_by_source_id_leaves_no_line_with_it_in_a_server_log_that_logs_every_statement()
{
    let app = TestApp::new().await;
    // Not the test's id, which the log's lines carry in the database's name.
    let token = &Uuid::new_v4().simple().to_string()[..12];
    let (customer, source_id) = (format!("cust_quiet_{token}"), format!("src_quiet_{token}"));
    app.seed_customer(&customer, &source_id, Shape::typical())
        .await;
    let log = ServerLog::open(&app.pool).await;
    sqlx::query(&format!(
        "ALTER DATABASE \"{}\" SET log_statement = 'all'",
        app.database
    ))
    .execute(&app.pool)
    .await
    .unwrap();

    // A session that silences nothing is logged, parameters and all.
    let control = format!("control_{token}");
    let loud = PgPool::connect(&format!("{}/{}", database_server(), app.database))
        .await
        .unwrap();
    let _: String = sqlx::query_scalar("SELECT $1::text")
        .bind(&control)
        .fetch_one(&loud)
        .await
        .unwrap();
    loud.close().await;

    // The worker's, started after the setting, by source id.
    let fresh = Application::build(app.settings.clone()).await.unwrap();
    let eraser = fresh.eraser.clone();
    let received = eraser
        .receive(request(&source_id), Channel::Cli, Utc::now())
        .unwrap();
    let Outcome::Recorded(row) = eraser.erase(&received).await.unwrap() else {
        panic!("the erasure is recorded")
    };
    assert_eq!(row.status, DeletionStatus::Done);
    assert_eq!(row.related_object_id.as_deref(), Some(customer.as_str()));
    fresh.pool.close().await;

    let logged = log.since().await;
    assert!(
        logged.contains(&control),
        "the server logs statements with their parameters ({})",
        log.path.display()
    );
    assert!(
        !logged.contains(&source_id),
        "the source id is in the server's log"
    );
    let lines: Vec<&str> = logged.lines().filter(|l| l.contains(token)).collect();
    assert!(
        lines.iter().all(|l| l.contains(&control)),
        "the erasure's values are in the server's log: {lines:#?}"
    );

    // `erasure plan` says the sessions are quiet.
    let out = app.command().arg("plan").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("set log_statement = none")
            && stdout.contains("nothing an erasure names reaches the server's log"),
        "{stdout}"
    );
    app.cleanup().await;
}

/// A login role that is not a superuser, dropped (with what was granted to it) when the value
/// goes, also when the test fails.
struct Role(String);

impl Role {
    async fn create(name: &str) -> Self {
        let admin = PgPool::connect(&format!("{}/postgres", database_server()))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE ROLE \"{name}\" LOGIN"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        Self(name.to_owned())
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup")
                .block_on(async move {
                    if let Ok(admin) =
                        PgPool::connect(&format!("{}/postgres", database_server())).await
                    {
                        // Revokes what parameters were granted it (shared objects) too.
                        let _ = sqlx::query(&format!("DROP OWNED BY \"{name}\""))
                            .execute(&admin)
                            .await;
                        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{name}\""))
                            .execute(&admin)
                            .await;
                        admin.close().await;
                    }
                });
        })
        .join();
    }
}

#[tokio::test]
async fn a_role_that_cannot_silence_its_statements_is_told_the_grants_and_may_refuse_to_start() {
    let app = TestApp::new().await;
    let role = Role::create(&format!("erasure_quiet_{}", &app.id[..12])).await;
    sqlx::query(&format!(
        "ALTER DATABASE \"{}\" SET log_statement = 'mod'",
        app.database
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let mut database = app.settings.database.clone();
    database.url = erasure::config::Secret::new(format!(
        "{}/{}",
        database_server().replace("postgres@", &format!("{}@", role.0)),
        app.database
    ));

    let (pool, logging) = erasure::db::connect_quietly(&database).await.unwrap();
    assert!(!logging.superuser);
    // Anyone may set this one.
    assert_eq!(
        logging.startup_options(),
        [("log_parameter_max_length_on_error", "0".to_string())]
    );
    let leaks = logging.leaks();
    assert!(
        leaks.iter().any(|l| l.settings.contains(&"log_statement")
            && l.settings.contains(&"log_parameter_max_length")),
        "{leaks:?}"
    );
    let said = logging.describe();
    assert!(
        said.contains(&format!(
            "GRANT SET ON PARAMETER log_statement, log_parameter_max_length TO \"{}\"",
            role.0
        )),
        "{said}"
    );
    let refused = erasure::exhaust::at_start(&logging, true)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("require_quiet_logging"), "{refused}");
    erasure::exhaust::at_start(&logging, false).unwrap();
    // The pool works all the same, the server's settings untouched.
    let statement: String = sqlx::query_scalar("SHOW log_statement")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(statement, "mod");
    pool.close().await;

    let names: Vec<&str> = erasure::exhaust::QUIET.iter().map(|q| q.name).collect();
    sqlx::query(&format!(
        "GRANT SET ON PARAMETER {} TO \"{}\"",
        names.join(", "),
        role.0
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let (pool, logging) = erasure::db::connect_quietly(&database).await.unwrap();
    assert!(logging.is_quiet(), "{:?}", logging.leaks());
    assert_eq!(logging.startup_options().len(), names.len());
    for (name, quiet) in [
        ("log_statement", "none"),
        ("log_min_duration_statement", "-1"),
        ("log_parameter_max_length", "0"),
        ("log_parameter_max_length_on_error", "0"),
        ("log_error_verbosity", "terse"),
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(value, quiet, "{name}");
    }
    pool.close().await;
    erasure::exhaust::at_start(&logging, true).unwrap();
    app.cleanup().await;
    drop(role);
}
