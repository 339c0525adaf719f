//! Operator tools for dead-letter topics: list what is there, and replay the originals to
//! the topics they came from.
//!
//! Replay gives each original a **new id**, derived from the DLQ record's id (so a replay
//! that is interrupted and run again re-emits the same id, and downstream dedup absorbs it),
//! makes the DLQ record its cause, and adds a `dlq_origin` header (`{dlq}/{partition}/{offset}`)
//! and a `dlq_target_group` header naming the consumer group that dead-lettered it: only that
//! group handles the replayed record, the other groups reading the topic step over it.
//! Its progress is committed in the consumer group `{group_prefix}.dlq-replay`, one record at a
//! time after the broker acknowledged the replayed record, so running it twice replays nothing
//! twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alpha_panda_core::events::{SystemError, ValueEncoding};
use alpha_panda_core::{EventData, EventEnvelope, ids};
use alpha_panda_topics::TopicName;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Header;
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

use crate::delivery::producer::envelope_headers;
use crate::delivery::{DLQ_TARGET_GROUP_HEADER, EventProducer};
use crate::kafka::{KafkaFailure, REQUEST_TIMEOUT, consumer_config};

/// One dead-letter record.
#[derive(Debug, Clone)]
pub struct DlqEntry {
    pub partition: i32,
    pub offset: i64,
    /// The `system_error` envelope, or why the DLQ record itself is unreadable.
    pub record: Result<(EventEnvelope, SystemError), String>,
}

/// What `replay` did with one DLQ record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Republished to `topic` with `new_id` (or would be, in a dry run).
    Replayed { topic: String, new_id: Uuid },
    /// Not replayable; the reason says why and what to do.
    Skipped { reason: String },
}

#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub dry_run: bool,
    pub entries: Vec<(i32, i64, ReplayOutcome)>,
}

impl ReplayReport {
    pub fn replayed(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, _, o)| matches!(o, ReplayOutcome::Replayed { .. }))
            .count()
    }
}

fn failure(
    servers: &str,
    what: &'static str,
) -> impl Fn(rdkafka::error::KafkaError) -> KafkaFailure {
    let servers = servers.to_owned();
    move |source| KafkaFailure::Request {
        servers: servers.clone(),
        what,
        source,
    }
}

/// Reads a DLQ topic from `start` offsets (per partition) to its end, at most `limit`
/// records, in partition order.
fn read(
    consumer: &BaseConsumer,
    servers: &str,
    dlq: &TopicName,
    start: &HashMap<i32, i64>,
    limit: usize,
) -> Result<Vec<DlqEntry>, KafkaFailure> {
    let name = dlq.to_string();
    let metadata = consumer
        .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
        .map_err(failure(servers, "a metadata request"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaFailure::TopicRefused {
            topic: name,
            reason: "no such topic on the cluster".to_owned(),
        });
    }
    let mut entries = Vec::new();
    for partition in partitions {
        if entries.len() >= limit {
            break;
        }
        let (_, high) = consumer
            .fetch_watermarks(&name, partition, REQUEST_TIMEOUT)
            .map_err(failure(servers, "a watermark request"))?;
        let from = start.get(&partition).copied().unwrap_or(0);
        if from >= high {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&name, partition, Offset::Offset(from))
            .map_err(failure(servers, "an assignment"))?;
        consumer
            .assign(&tpl)
            .map_err(failure(servers, "an assignment"))?;
        let mut last_record = Instant::now();
        let mut next = from;
        while next < high && entries.len() < limit && last_record.elapsed() < Duration::from_secs(5)
        {
            let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let msg = msg.map_err(failure(servers, "a fetch"))?;
            last_record = Instant::now();
            next = msg.offset() + 1;
            let record = match msg.payload().map(EventEnvelope::decode) {
                Some(Ok(env)) => match &env.data {
                    EventData::SystemError(e) => {
                        let e = e.clone();
                        Ok((env, e))
                    }
                    _ => Err(format!("a {} event, not a system_error", env.event_type())),
                },
                Some(Err(e)) => Err(e.to_string()),
                None => Err("empty record".to_owned()),
            };
            entries.push(DlqEntry {
                partition,
                offset: msg.offset(),
                record,
            });
        }
    }
    Ok(entries)
}

/// The first `limit` records of a DLQ, from the beginning.
pub fn list(
    servers: &str,
    client_id: &str,
    dlq: &TopicName,
    limit: usize,
) -> Result<Vec<DlqEntry>, KafkaFailure> {
    require_dlq(dlq)?;
    let consumer: BaseConsumer = consumer_config(servers, client_id, "alpha-panda.dlq-list")
        .create()
        .map_err(|source| KafkaFailure::Client {
            servers: servers.to_owned(),
            source,
        })?;
    read(&consumer, servers, dlq, &HashMap::new(), limit)
}

fn require_dlq(dlq: &TopicName) -> Result<(), KafkaFailure> {
    if dlq.is_dlq() {
        Ok(())
    } else {
        Err(KafkaFailure::TopicRefused {
            topic: dlq.to_string(),
            reason: "not a DLQ topic (its name ends in .dlq)".to_owned(),
        })
    }
}

/// The original envelope of a DLQ record, re-identified for replay.
fn replayable(
    dlq: &TopicName,
    env: &EventEnvelope,
    e: &SystemError,
) -> Result<(TopicName, EventEnvelope), String> {
    let origin: TopicName = e
        .original_topic
        .parse()
        .map_err(|err| format!("original topic unknown: {err}"))?;
    if dlq.origin().as_ref() != Some(&origin) {
        return Err(format!("original topic {origin} does not belong to {dlq}"));
    }
    let Some(value) = e.original_value.as_deref() else {
        return Err("the original had no value".to_owned());
    };
    if e.value_encoding != ValueEncoding::Utf8 {
        return Err("the original is not UTF-8, so not an envelope: inspect it, fix the producer, republish by hand".to_owned());
    }
    let mut original = EventEnvelope::decode(value.as_bytes()).map_err(|err| {
        format!("the original is not a valid envelope ({err}): replaying would fail again; fix the producer and republish by hand")
    })?;
    original.id = ids::child_id(env.id, "dlq-replay", 0);
    original.causation_id = Some(env.id);
    original.parent_trace_id = Some(env.id);
    Ok((origin, original))
}

/// How long a replayed record may wait for the broker to take it before the replay stops
/// and says so (`EventProducer::kafka_awaiting_each`).
pub const REPLAY_GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Replays up to `limit` DLQ records not replayed before, committing progress after each.
/// `producer` should give a record up after a while (`EventProducer::kafka_awaiting_each`):
/// the replay stops at the first record the broker did not take, with an error that names it.
pub async fn replay(
    servers: &str,
    client_id: &str,
    group_prefix: &str,
    producer: &EventProducer,
    dlq: &TopicName,
    limit: usize,
    dry_run: bool,
) -> Result<ReplayReport, KafkaFailure> {
    require_dlq(dlq)?;
    let group = format!("{group_prefix}.dlq-replay");
    let consumer: BaseConsumer = consumer_config(servers, client_id, &group)
        .create()
        .map_err(|source| KafkaFailure::Client {
            servers: servers.to_owned(),
            source,
        })?;
    let name = dlq.to_string();
    // Where the last run stopped.
    let metadata = consumer
        .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
        .map_err(failure(servers, "a metadata request"))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition(&name, p.id());
        }
    }
    let committed = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(failure(servers, "a committed-offsets request"))?;
    let start: HashMap<i32, i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    let entries = read(&consumer, servers, dlq, &start, limit)?;
    let mut report = ReplayReport {
        dry_run,
        entries: Vec::new(),
    };
    for entry in entries {
        let outcome = match &entry.record {
            Err(reason) => ReplayOutcome::Skipped {
                reason: format!("unreadable DLQ record: {reason}"),
            },
            Ok((env, e)) => match replayable(dlq, env, e) {
                Err(reason) => ReplayOutcome::Skipped { reason },
                Ok((topic, original)) => {
                    if !dry_run {
                        let origin = format!("{dlq}/{}/{}", entry.partition, entry.offset);
                        let headers = envelope_headers(&original)
                            .insert(Header {
                                key: "dlq_origin",
                                value: Some(origin.as_str()),
                            })
                            .insert(Header {
                                key: DLQ_TARGET_GROUP_HEADER,
                                value: Some(e.consumer_group.as_str()),
                            });
                        producer
                            .send_raw(&topic, &original.key, &original.encode(), headers)
                            .await
                            .map_err(|e| KafkaFailure::Replay {
                                dlq: name.clone(),
                                partition: entry.partition,
                                offset: entry.offset,
                                topic: topic.to_string(),
                                reason: e.to_string(),
                            })?;
                    }
                    ReplayOutcome::Replayed {
                        topic: topic.to_string(),
                        new_id: original.id,
                    }
                }
            },
        };
        if !dry_run {
            let mut done = TopicPartitionList::new();
            done.add_partition_offset(&name, entry.partition, Offset::Offset(entry.offset + 1))
                .map_err(failure(servers, "a commit"))?;
            consumer
                .commit(&done, CommitMode::Sync)
                .map_err(failure(servers, "a commit"))?;
        }
        report
            .entries
            .push((entry.partition, entry.offset, outcome));
    }
    Ok(report)
}
