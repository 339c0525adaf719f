//! One harness over both transports, so the same delivery tests run against Kafka (Apache Kafka +
//! Redis) and the in-process transport (+ the in-memory store).

use std::time::Duration;

use alpha_panda_actors::delivery::inprocess::{self, InProcessBus, StoredRecord};
use alpha_panda_actors::delivery::kafka;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{DeliveryPolicy, EventProducer};
use alpha_panda_actors::store::{MemoryStore, RedisStore, Store};
use alpha_panda_core::{BrokerName, EventEnvelope};
use alpha_panda_topics::TopicName;

use crate::{Namespace, ReadRecord, kafka_servers, read_topic, redis_url, signals};

#[derive(Clone)]
pub enum Bus {
    Kafka,
    InProcess(InProcessBus),
}

pub enum Member {
    Kafka(kafka::ConsumerHandle),
    InProcess(inprocess::InProcessConsumerHandle),
}

impl Member {
    pub fn assignment(&self) -> Vec<(String, i32)> {
        match self {
            Member::Kafka(h) => h.assignment(),
            Member::InProcess(h) => h.assignment(),
        }
    }

    pub async fn shutdown(self) {
        match self {
            Member::Kafka(h) => h.shutdown().await,
            Member::InProcess(h) => h.shutdown().await,
        }
    }
}

impl Bus {
    pub fn in_process() -> Self {
        Bus::InProcess(InProcessBus::new())
    }

    pub fn name(&self) -> &'static str {
        match self {
            Bus::Kafka => "kafka",
            Bus::InProcess(_) => "in-process",
        }
    }

    pub async fn create_topics(&self, ns: &Namespace, topics: &[TopicName]) {
        match self {
            Bus::Kafka => ns.create_topics(topics).await,
            Bus::InProcess(bus) => bus.create_topics(topics),
        }
    }

    /// `n` test signals on `topic`, acknowledged.
    pub async fn feed(
        &self,
        broker: &BrokerName,
        topic: &TopicName,
        n: usize,
    ) -> Vec<EventEnvelope> {
        match self {
            Bus::Kafka => signals::produce(broker, topic, n).await,
            Bus::InProcess(bus) => {
                let envs: Vec<EventEnvelope> = (0..n).map(|i| signals::signal(broker, i)).collect();
                for env in &envs {
                    bus.append(
                        &topic.to_string(),
                        StoredRecord {
                            key: Some(env.key.clone().into_bytes()),
                            value: Some(env.encode()),
                            headers: Vec::new(),
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                }
                envs
            }
        }
    }

    /// A raw record (for poison); returns its (partition, offset).
    pub async fn feed_raw(&self, topic: &TopicName, key: &str, value: &[u8]) -> (i32, i64) {
        self.producer()
            .send_raw(topic, key, value, rdkafka::message::OwnedHeaders::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let found = self
            .read(topic, usize::MAX, Duration::from_secs(3))
            .await
            .into_iter()
            .rev()
            .find(|r| r.3.as_deref() == Some(value))
            .unwrap_or_else(|| panic!("raw record not found on {topic}"));
        (found.0, found.1)
    }

    pub fn producer(&self) -> EventProducer {
        match self {
            Bus::Kafka => crate::producer(&kafka_servers(), "conformance"),
            Bus::InProcess(bus) => EventProducer::InProcess(bus.clone()),
        }
    }

    /// Redis for Kafka, the in-memory store for the in-process transport, as deployed.
    pub async fn store(&self) -> Store {
        match self {
            Bus::Kafka => Store::Redis(
                RedisStore::connect(&redis_url())
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            Bus::InProcess(_) => Store::Memory(MemoryStore::default()),
        }
    }

    pub fn member(
        &self,
        topics: Vec<TopicName>,
        mut policy: DeliveryPolicy,
        store: Store,
        factory: StageFactory,
    ) -> Member {
        // Rebalance tests stop members on purpose: fail over quickly.
        policy.session_timeout = Duration::from_secs(10);
        let arbiter = actix_rt::Arbiter::current();
        match self {
            Bus::Kafka => Member::Kafka(
                kafka::start(kafka::ConsumerSpec {
                    servers: kafka_servers(),
                    client_id: "conformance".into(),
                    topics,
                    policy,
                    producer: self.producer(),
                    store,
                    factory,
                    arbiters: alpha_panda_actors::delivery::threads::Arbiters::current(),
                })
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            Bus::InProcess(bus) => {
                Member::InProcess(inprocess::start(inprocess::InProcessConsumerSpec {
                    bus: bus.clone(),
                    topics,
                    policy,
                    producer: self.producer(),
                    store,
                    factory,
                    arbiter,
                }))
            }
        }
    }

    /// The records of `topic`: at least `want` (waiting up to `timeout`) on Kafka; all of
    /// them at once in-process.
    pub async fn read(&self, topic: &TopicName, want: usize, timeout: Duration) -> Vec<ReadRecord> {
        match self {
            Bus::Kafka => read_topic(topic, want, timeout).await,
            Bus::InProcess(bus) => {
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let recs: Vec<ReadRecord> = bus
                        .records(topic)
                        .into_iter()
                        .map(|(p, o, r)| (p, o, r.key, r.value))
                        .collect();
                    if recs.len() >= want || tokio::time::Instant::now() >= deadline {
                        return recs;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
