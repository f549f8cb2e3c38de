//! Each test's database and broker names are its own, and go with it, even when it fails.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::PgPool;

use crate::helpers::{TestApp, database_server};

#[tokio::test]
async fn a_test_that_panics_leaves_no_database_or_queue_behind() {
    let (names, made) = std::sync::mpsc::channel();
    // A test of its own, on a runtime of its own, that fails before its cleanup.
    let failing = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let app = TestApp::new().await;
                names
                    .send((app.database.clone(), app.settings.amqp.clone()))
                    .unwrap();
                panic!("a test fails before its cleanup");
            })
    });
    assert!(failing.join().is_err(), "the test failed");
    let (database, amqp) = made.recv().unwrap();

    let admin = PgPool::connect(&format!("{}/postgres", database_server()))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "{database} was left behind");
    admin.close().await;
    let connection = erasure::broker::connect(&amqp).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(amqp.queue.as_str().into(), passive, FieldTable::default())
        .await;
    assert!(queue.is_err(), "{} was left behind", amqp.queue);
    let _ = connection.close(200, "checked".into()).await;
}
