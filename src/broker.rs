//! RabbitMQ: the topology, and publishing with publisher confirms.
//!
//! Topology (names from [`AmqpSettings`]): the direct exchange `erasure` routes requests to the
//! quorum queue `erasure.requests`; that queue dead-letters (at least once, so nothing is ever
//! dropped) to the fanout exchange `erasure.dlx` and its quorum queue `erasure.requests.dead`;
//! outcome events go to the topic exchange `erasure.events`.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The reason, never the URL itself (it may carry a password).
    #[error("the AMQP URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("RabbitMQ ended the consumer")]
    ConsumerClosed,
    #[error("RabbitMQ did not confirm the message (nack)")]
    Nacked,
    #[error(
        "RabbitMQ could not route the message to any queue (exchange {exchange:?}, routing key {routing_key:?})"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

/// The longest wait between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Runs `session` again and again until one ends or `shutdown` comes, and returns what it
/// returned (or `on_shutdown`). A session connects to the broker and works until it is done or
/// its connection fails; between sessions, a delay doubling from 200 ms to 30 s, with jitter,
/// that starts over after a session that lasted longer than the longest delay.
pub async fn reconnecting<T, E, F, Fut>(
    who: &'static str,
    shutdown: &CancellationToken,
    on_shutdown: T,
    mut session: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(MAX_RECONNECT_DELAY)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let e = match session().await {
            Ok(done) => return done,
            Err(e) => e,
        };
        if started.elapsed() > MAX_RECONNECT_DELAY {
            delays = backoff();
        }
        let delay = delays.next().unwrap_or(MAX_RECONNECT_DELAY);
        tracing::warn!(error = %e, ?delay, "{who} lost its broker connection; reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    on_shutdown
}

/// Builds, now, the runtime lapin's socket adapter falls back on outside Tokio.
///
/// lapin runs each connection's I/O on a thread of its own, outside the Tokio runtime, and its
/// socket adapter (`async-compat`) falls back there on a runtime of its own, built the first time
/// it is needed and never again. Built at a moment when the process is out of file handles (a
/// flood of HTTP connections), that build fails, and every later close of a broker connection
/// panics on it. Built at start, while handles are plenty, it cannot fail later.
pub fn prepare_io_runtime() {
    let built = std::thread::spawn(|| drop(async_compat::Compat::new(()))).join();
    if built.is_err() {
        tracing::error!("could not build the broker client's I/O runtime");
    }
}

/// Connects with heartbeats on (`amqp.heartbeat_secs`, unless the URL sets `heartbeat`), so a
/// dead peer is noticed within two heartbeats, and without lapin's automatic recovery: the
/// consumer and publishers own their reconnect loops.
pub async fn connect(settings: &AmqpSettings) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name("erasure".into());
    let mut uri: lapin::uri::AMQPUri = settings
        .url
        .expose()
        .parse()
        .map_err(BrokerError::InvalidUrl)?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(settings.heartbeat_secs);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(10_000);
    }
    Ok(Connection::connect_uri(uri, properties).await?)
}

/// A channel in confirm mode: every publish on it is acknowledged by the broker.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Declares every exchange, queue and binding. Idempotent; a queue that exists with other
/// arguments makes the broker refuse, and the error says so.
pub async fn declare_topology(
    channel: &Channel,
    settings: &AmqpSettings,
) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            settings.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            settings.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            settings.events_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;

    let mut requests = quorum();
    requests.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(settings.dead_letter_exchange.as_str().into()),
    );
    // Quorum queues dead-letter at most once unless told otherwise; at-least-once needs the
    // queue to refuse publishes when full instead of dropping its head.
    requests.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    requests.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    requests.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(settings.delivery_limit.min(i32::MAX as u32) as i32),
    );
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(settings.queue.as_str().into(), durable_queue, requests)
        .await?;
    channel
        .queue_declare(
            settings.dead_letter_queue.as_str().into(),
            durable_queue,
            quorum(),
        )
        .await?;
    channel
        .queue_bind(
            settings.queue.as_str().into(),
            settings.exchange.as_str().into(),
            settings.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Requests held for their grace period used to wait here, each with its own expiration,
    // dead-lettered back to the requests queue when it passed. They now wait in the database
    // (see `erase::hold`); the queue is still declared so that messages held in it before an
    // upgrade come back when due.
    let mut hold = FieldTable::default();
    hold.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(settings.exchange.as_str().into()),
    );
    hold.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(settings.routing_key.as_str().into()),
    );
    channel
        .queue_declare(hold_queue(settings).as_str().into(), durable_queue, hold)
        .await?;
    channel
        .queue_bind(
            settings.dead_letter_queue.as_str().into(),
            settings.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// The queue where requests held before holds moved to the database wait out their grace
/// period: `<amqp.queue>.hold`.
pub fn hold_queue(settings: &AmqpSettings) -> String {
    format!("{}.hold", settings.queue)
}

fn quorum() -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    table
}

/// How many consumers the queue `queue` has (a passive declare: the queue must exist).
pub async fn consumers(channel: &Channel, queue: &str) -> Result<u32, BrokerError> {
    let queue = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.consumer_count())
}

/// Publishes a persistent JSON message on a confirm channel and waits for the broker's
/// confirm. With `mandatory`, a message no queue takes is an error instead of being dropped
/// (requests must reach the queue; events may have no subscriber yet).
pub async fn publish_json(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message_id: &str,
    body: &[u8],
    mandatory: bool,
) -> Result<(), BrokerError> {
    let properties = persistent_json(message_id);
    publish_confirmed(channel, exchange, routing_key, body, properties, mandatory).await
}

/// A persistent JSON message's properties.
fn persistent_json(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
}

/// Publishes and waits for the broker's confirm: a nack, or (with `mandatory`) a message no
/// queue took, is an error.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<(), BrokerError> {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    if confirmation.is_nack() {
        return Err(BrokerError::Nacked);
    }
    if confirmation.take_message().is_some() {
        return Err(BrokerError::Unroutable {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        });
    }
    Ok(())
}

/// Publishes one request on a connection of its own (declaring the topology first), waiting
/// for the broker's confirm; for one-off callers like `erasure enqueue`.
pub async fn publish_request_once(
    settings: &AmqpSettings,
    request_id: &str,
    body: &[u8],
) -> Result<(), BrokerError> {
    let connection = connect(settings).await?;
    let channel = confirm_channel(&connection).await?;
    declare_topology(&channel, settings).await?;
    let published = publish_json(
        &channel,
        &settings.exchange,
        &settings.routing_key,
        request_id,
        body,
        true,
    )
    .await;
    let _ = connection.close(200, "published".into()).await;
    published
}

/// A shared confirm channel for publishing requests, opened on first use and again after the
/// connection is lost. Also answers whether the broker is reachable.
pub struct Publisher {
    settings: AmqpSettings,
    open: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(settings: AmqpSettings) -> Self {
        Self {
            settings,
            open: tokio::sync::Mutex::new(None),
        }
    }

    /// The channel, connecting (and declaring the topology) when there is none or it broke.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *open = None;
        let connection = connect(&self.settings).await?;
        let channel = confirm_channel(&connection).await?;
        declare_topology(&channel, &self.settings).await?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Publishes one request message to the requests queue, confirmed and routed.
    pub async fn publish_request(&self, request_id: &str, body: &[u8]) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let published = publish_json(
            &channel,
            &self.settings.exchange,
            &self.settings.routing_key,
            request_id,
            body,
            true,
        )
        .await;
        if published.is_err() {
            // Start from a fresh channel next time.
            *self.open.lock().await = None;
        }
        published
    }

    /// True when a channel is open or can be opened.
    pub async fn is_reachable(&self) -> bool {
        self.channel().await.is_ok()
    }

    /// Closes the connection, if any.
    pub async fn close(&self) {
        if let Some((connection, _)) = self.open.lock().await.take() {
            let _ = connection.close(200, "shutting down".into()).await;
        }
    }
}
