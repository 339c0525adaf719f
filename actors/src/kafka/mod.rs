//! Kafka adapters. Everything that talks to a Kafka-API broker goes through here, so the
//! delivery settings of DESIGN §3.4 are written once.

pub mod admin;

use std::time::Duration;

use alpha_panda_core::{Classify, FailureClass};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// How long an admin or metadata request may take before it counts as a transient failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Base client settings every Kafka client of the runtime shares.
pub fn client_config(bootstrap_servers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers)
        .set("client.id", client_id)
        // Keep metadata fresh enough that a restarted broker (or a moved partition leader)
        // is found again quickly.
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("socket.keepalive.enable", "true");
    c
}

/// Settings of the shared producer: idempotent, `acks=all`, lz4 (DESIGN §3.4), and no gap
/// in what it writes to a partition: a record is never given up on after a timeout (a record
/// given up on while later ones are written would be a gap downstream's watermark cannot
/// refill), and an error that would leave a gap fails the producer instead
/// (`EventProducer` replaces it). `max_batch_records` is librdkafka's `batch.num.messages`
/// (docs/configuration.md says why each setting has its value).
pub fn producer_config(
    bootstrap_servers: &str,
    client_id: &str,
    linger_ms: u32,
    max_batch_records: u32,
) -> ClientConfig {
    let mut c = client_config(bootstrap_servers, client_id);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", max_batch_records.to_string())
        .set("message.timeout.ms", "0")
        .set("enable.gapless.guarantee", "true");
    c
}

/// Settings of a stage's consumer: manual commits of offsets stored only after success.
pub fn consumer_config(bootstrap_servers: &str, client_id: &str, group_id: &str) -> ClientConfig {
    let mut c = client_config(bootstrap_servers, client_id);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A member that stays silent this long loses its partitions: long enough to ride out
        // a short broker stall without a rebalance, short enough that a crashed member's
        // partitions move on. Stages set it from `kafka.session_timeout_ms`
        // (DeliveryPolicy::session_timeout).
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout: how long the coordinator waits for members (dead ones
        // included) to rejoin. The poll thread polls continuously.
        .set("max.poll.interval.ms", "30000")
        .set("enable.partition.eof", "false")
        // One fetch per broker is in flight at a time, and the broker holds it this long when
        // the partitions in it have nothing new. A partition resumed after backpressure (its
        // queue full, see `delivery::kafka`) waits for that fetch to come back before it is
        // fetched again: at librdkafka's default of 500 ms that stalled a burst in half-second
        // steps (7,000–8,000 ticks/s end to end, 12,000 at 100 ms). An idle consumer sends
        // ten fetches a second per broker.
        .set("fetch.wait.max.ms", "100");
    c
}

/// A failure talking to Kafka, classified.
#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    #[error("cannot create a Kafka client for {servers}: {source}")]
    Client { servers: String, source: KafkaError },
    #[error("Kafka at {servers} did not answer {what}: {source}")]
    Request {
        servers: String,
        what: &'static str,
        source: KafkaError,
    },
    #[error("Kafka refused to create topic {topic}: {reason}")]
    TopicRefused { topic: String, reason: String },
    #[error(
        "replaying {dlq} {partition}:{offset} to {topic} failed: {reason}. It and the records \
         after it are not marked replayed: run the replay again once Kafka takes records \
         (a replay run twice replays nothing twice)"
    )]
    Replay {
        dlq: String,
        partition: i32,
        offset: i64,
        topic: String,
        reason: String,
    },
}

impl Classify for KafkaFailure {
    fn class(&self) -> FailureClass {
        match self {
            KafkaFailure::Client { .. } | KafkaFailure::TopicRefused { .. } => {
                FailureClass::Infrastructure
            }
            KafkaFailure::Request { .. } | KafkaFailure::Replay { .. } => FailureClass::Transient,
        }
    }
}
