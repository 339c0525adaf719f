//! Follows the topics the console shows, on the in-process transport or on Kafka, and
//! feeds them into the console's book.
//!
//! The reader is no consumer group member: it assigns itself every partition, starts each
//! at most `BACKLOG` records before its end (so a long log costs a bounded read at start),
//! commits nothing and marks nothing, so the stages' delivery is untouched. Every
//! `DLQ_EVERY` it counts the records each DLQ topic holds (end minus start offsets, all
//! partitions). Records that do not decode are skipped: the stages dead-letter them.
//! When Kafka cannot be reached the reader says why in the book (`reader_error`, shown by
//! the page) and tries again every 5 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alpha_panda_core::{BrokerName, EventEnvelope};
use alpha_panda_topics::{BrokerTopic, TopicName, topics_for};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::Console;
use crate::delivery::inprocess::InProcessBus;
use crate::kafka::{REQUEST_TIMEOUT, consumer_config};

/// Records per partition read back when the reader starts.
pub const BACKLOG: i64 = 256;
/// How often DLQ topics are counted.
pub const DLQ_EVERY: Duration = Duration::from_secs(5);
/// How often the in-process reader looks for new records.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// The topics the console follows, with the broker each belongs to.
pub fn followed(brokers: &[BrokerName]) -> Vec<(TopicName, String)> {
    brokers
        .iter()
        .flat_map(|b| {
            [
                BrokerTopic::PnlSnapshots,
                BrokerTopic::OrdersFilled,
                BrokerTopic::OrdersFailed,
                BrokerTopic::SignalsRejected,
            ]
            .into_iter()
            .map(move |t| (TopicName::broker(b, t), b.as_str().to_owned()))
        })
        .collect()
}

/// Every DLQ topic of these brokers (and `market.ticks.dlq`).
pub fn dlq_topics(brokers: &[BrokerName]) -> Vec<TopicName> {
    topics_for(brokers)
        .into_iter()
        .filter(TopicName::is_dlq)
        .collect()
}

/// A running reader; `shutdown` stops it.
pub enum TailHandle {
    InProcess(actix_rt::task::JoinHandle<()>),
    Kafka {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl TailHandle {
    pub async fn shutdown(self) {
        match self {
            TailHandle::InProcess(task) => task.abort(),
            TailHandle::Kafka { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = thread {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
            }
        }
    }
}

/// Follows the in-process bus (runs on the current actix system).
pub fn spawn_inprocess(bus: InProcessBus, brokers: &[BrokerName], console: Console) -> TailHandle {
    let topics = followed(brokers);
    let dlqs = dlq_topics(brokers);
    TailHandle::InProcess(actix_rt::spawn(async move {
        let mut next: Vec<Vec<i64>> = topics
            .iter()
            .map(|(t, _)| {
                bus.end_offsets(t)
                    .into_iter()
                    .map(|end| (end - BACKLOG).max(0))
                    .collect()
            })
            .collect();
        let mut last_dlq: Option<Instant> = None;
        loop {
            for ((topic, broker), offsets) in topics.iter().zip(next.iter_mut()) {
                for (partition, from) in offsets.iter_mut().enumerate() {
                    let records = bus.read_from(topic, partition as i32, *from, 1024);
                    let mut book = console.book();
                    for (offset, record) in records {
                        *from = offset + 1;
                        if let Some(Ok(env)) = record.value.as_deref().map(EventEnvelope::decode) {
                            book.apply(broker, &env);
                        }
                    }
                }
            }
            if last_dlq.is_none_or(|t| t.elapsed() >= DLQ_EVERY) {
                let mut book = console.book();
                for t in &dlqs {
                    book.set_dlq_count(&t.to_string(), bus.end_offsets(t).iter().sum());
                }
                last_dlq = Some(Instant::now());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }))
}

/// Follows the topics on Kafka from a thread of its own.
pub fn spawn_kafka(
    servers: String,
    client_id: String,
    group: String,
    brokers: &[BrokerName],
    console: Console,
) -> TailHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let topics = followed(brokers);
    let dlqs = dlq_topics(brokers);
    let flag = stop.clone();
    let shared = console.clone();
    let thread = std::thread::Builder::new()
        .name("console-reader".to_owned())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let reader = Reader {
                    servers: &servers,
                    client_id: &client_id,
                    group: &group,
                    topics: &topics,
                    dlqs: &dlqs,
                    console: &shared,
                    stop: &flag,
                };
                if let Err(e) = reader.follow() {
                    tracing::warn!(error = %e, "the console cannot follow Kafka; trying again in 5 s");
                    shared.book().set_reader_error(Some(e));
                    let until = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
    match thread {
        Ok(t) => TailHandle::Kafka {
            stop,
            thread: Some(t),
        },
        Err(e) => {
            console
                .book()
                .set_reader_error(Some(format!("cannot start the console reader: {e}")));
            TailHandle::Kafka { stop, thread: None }
        }
    }
}

struct Reader<'a> {
    servers: &'a str,
    client_id: &'a str,
    group: &'a str,
    topics: &'a [(TopicName, String)],
    dlqs: &'a [TopicName],
    console: &'a Console,
    stop: &'a AtomicBool,
}

impl Reader<'_> {
    fn follow(&self) -> Result<(), String> {
        let at = |what: &str| {
            let servers = self.servers.to_owned();
            let what = what.to_owned();
            move |e: rdkafka::error::KafkaError| format!("Kafka at {servers}: {what}: {e}")
        };
        let consumer: BaseConsumer = consumer_config(self.servers, self.client_id, self.group)
            .create()
            .map_err(at("creating a consumer"))?;
        let mut tpl = TopicPartitionList::new();
        for (topic, _) in self.topics {
            let name = topic.to_string();
            for (partition, low, high) in self.partitions(&consumer, &name)? {
                let start = low.max(high - BACKLOG);
                tpl.add_partition_offset(&name, partition, Offset::Offset(start))
                    .map_err(at("an assignment"))?;
            }
        }
        consumer.assign(&tpl).map_err(at("an assignment"))?;
        let brokers: HashMap<String, &str> = self
            .topics
            .iter()
            .map(|(t, b)| (t.to_string(), b.as_str()))
            .collect();
        self.console.book().set_reader_error(None);
        let mut last_dlq: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if last_dlq.is_none_or(|t| t.elapsed() >= DLQ_EVERY) {
                for t in self.dlqs {
                    let name = t.to_string();
                    let held: i64 = self
                        .partitions(&consumer, &name)?
                        .into_iter()
                        .map(|(_, low, high)| high - low)
                        .sum();
                    self.console.book().set_dlq_count(&name, held);
                }
                last_dlq = Some(Instant::now());
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg.map_err(at("a fetch"))?;
            let Some(broker) = brokers.get(msg.topic()) else {
                continue;
            };
            if let Some(Ok(env)) = msg.payload().map(EventEnvelope::decode) {
                self.console.book().apply(broker, &env);
            }
        }
        Ok(())
    }

    /// (partition, low, high) of each partition of a topic.
    fn partitions(
        &self,
        consumer: &BaseConsumer,
        name: &str,
    ) -> Result<Vec<(i32, i64, i64)>, String> {
        let servers = self.servers;
        let metadata = consumer
            .fetch_metadata(Some(name), REQUEST_TIMEOUT)
            .map_err(|e| format!("Kafka at {servers}: metadata of {name}: {e}"))?;
        let ids: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        ids.into_iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(name, p, REQUEST_TIMEOUT)
                    .map(|(low, high)| (p, low, high))
                    .map_err(|e| format!("Kafka at {servers}: offsets of {name}/{p}: {e}"))
            })
            .collect()
    }
}
