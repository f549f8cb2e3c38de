//! The test's own broker names: publishing requests, and reading what reached a queue.

use std::time::Duration;

use erasure::broker;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

use super::TestApp;

impl TestApp {
    /// Publishes raw bytes to the request exchange, confirmed.
    pub async fn publish(&self, body: &[u8]) {
        broker::publish_json(
            &self.channel,
            &self.settings.amqp.exchange,
            &self.settings.amqp.routing_key,
            "test",
            body,
            true,
        )
        .await
        .expect("the broker confirms the request");
    }

    pub fn request(request_id: Uuid, customer: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "request_id": request_id,
            "customer_id": customer,
            "requested_by": "support-portal",
            "reason": "GDPR Art. 17 request #4411",
            "requested_at": "2026-11-23T09:30:00Z",
        }))
        .unwrap()
    }

    /// Publishes a valid request for `customer` and returns its request id.
    pub async fn request_erasure(&self, customer: &str) -> Uuid {
        let request_id = Uuid::new_v4();
        self.publish(&Self::request(request_id, customer)).await;
        request_id
    }

    /// Takes every message from the dead-letter queue.
    pub async fn dead_letters(&self) -> Vec<Vec<u8>> {
        self.take_all(&self.settings.amqp.dead_letter_queue).await
    }

    pub async fn take_all(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            bodies.push(message.delivery.data.clone());
        }
        bodies
    }

    /// Waits for `n` messages in the dead-letter queue and takes them.
    pub async fn wait_for_dead_letters(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut bodies = Vec::new();
        while bodies.len() < n {
            bodies.extend(self.dead_letters().await);
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} dead letters arrived",
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bodies
    }

    /// A queue of the test's own bound to the events exchange, to see outcome events.
    pub async fn subscribe_to_events(&self) -> String {
        let name = format!("test.{}.events.subscriber", self.id);
        self.channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.channel
            .queue_bind(
                name.as_str().into(),
                self.settings.amqp.events_exchange.as_str().into(),
                "deletion.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        name
    }
}
