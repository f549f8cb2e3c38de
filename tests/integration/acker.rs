//! The acker against the real broker: what it sends on a channel is what the broker keeps.
//! (Its decisions alone are model-tested in `src/worker/acker.rs`.)

use erasure::broker;
use erasure::worker::acker::Acker;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

use crate::helpers::TestApp;

#[tokio::test]
async fn closing_acknowledges_what_is_done_and_leaves_the_delivery_in_progress_to_the_queue() {
    let app = TestApp::new().await;
    let requests: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (i, id) in requests.iter().enumerate() {
        app.publish(&TestApp::request(*id, &format!("cust_ack_{i}")))
            .await;
    }
    let connection = broker::connect(&app.settings.amqp).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            app.settings.amqp.queue.as_str().into(),
            "acker-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let acker = Acker::new(channel.clone());
    let mut tags = Vec::new();
    for _ in 0..3 {
        let delivery = consumer.next().await.unwrap().unwrap();
        acker.delivered(delivery.delivery_tag).await;
        tags.push(delivery.delivery_tag);
    }
    // The first is still in progress; the two after it are done, and held behind it.
    acker.ack(tags[1]).await.unwrap();
    acker.ack(tags[2]).await.unwrap();
    // The channel closes: the done ones are acknowledged first, the one in progress is not.
    acker.flush_all().await.unwrap();
    channel.close(200, "test done".into()).await.unwrap();
    let _ = connection.close(200, "test done".into()).await;

    // Back in the queue: the one in progress, and only it.
    let left: Vec<serde_json::Value> = app
        .take_all(&app.settings.amqp.queue)
        .await
        .iter()
        .map(|body| serde_json::from_slice(body).unwrap())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["request_id"], requests[0].to_string());
    app.cleanup().await;
}
