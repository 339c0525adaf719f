//! Creating and listing the runtime's topics. A production Kafka (and the test broker) does
//! not auto-create topics, so the runtime creates every topic it needs, idempotently.

use std::collections::BTreeMap;
use std::fmt;

use alpha_panda_topics::TopicName;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaFailure, REQUEST_TIMEOUT, client_config};

/// What `ensure` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created {
        partitions: i32,
    },
    Existed {
        partitions: i32,
    },
    /// It exists, with another partition count than the runtime's default. Left as it is:
    /// changing partitions remaps keys and breaks per-key order.
    ExistedDifferently {
        partitions: i32,
        expected: i32,
    },
}

impl fmt::Display for Ensured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ensured::Created { partitions } => write!(f, "created, {partitions} partition(s)"),
            Ensured::Existed { partitions } => write!(f, "exists, {partitions} partition(s)"),
            Ensured::ExistedDifferently {
                partitions,
                expected,
            } => write!(
                f,
                "exists with {partitions} partitions (default {expected}; left unchanged)"
            ),
        }
    }
}

/// Whether the cluster answers a metadata request within `timeout` (readiness).
pub fn ping(
    servers: &str,
    client_id: &str,
    timeout: std::time::Duration,
) -> Result<(), KafkaFailure> {
    metadata(servers, client_id, timeout).map(|_| ())
}

/// The cluster's metadata for every topic.
fn metadata(
    servers: &str,
    client_id: &str,
    timeout: std::time::Duration,
) -> Result<rdkafka::metadata::Metadata, KafkaFailure> {
    let consumer: BaseConsumer = client_config(servers, client_id)
        .create()
        .map_err(|source| KafkaFailure::Client {
            servers: servers.to_owned(),
            source,
        })?;
    consumer
        .fetch_metadata(None, timeout)
        .map_err(|source| KafkaFailure::Request {
            servers: servers.to_owned(),
            what: "a metadata request",
            source,
        })
}

/// The partition count of every topic on the cluster.
pub fn describe(servers: &str, client_id: &str) -> Result<BTreeMap<String, i32>, KafkaFailure> {
    let metadata = metadata(servers, client_id, REQUEST_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}

/// Creates every topic in `topics` that does not exist yet, with its default partition
/// count and retention. Safe to run any number of times.
pub async fn ensure(
    servers: &str,
    client_id: &str,
    topics: &[TopicName],
) -> Result<Vec<(TopicName, Ensured)>, KafkaFailure> {
    let existing = describe(servers, client_id)?;
    let admin: AdminClient<DefaultClientContext> = client_config(servers, client_id)
        .create()
        .map_err(|source| KafkaFailure::Client {
            servers: servers.to_owned(),
            source,
        })?;
    let missing: Vec<&TopicName> = topics
        .iter()
        .filter(|t| !existing.contains_key(&t.to_string()))
        .collect();
    let names: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
    let retentions: Vec<String> = missing
        .iter()
        .map(|t| t.spec().retention_ms.to_string())
        .collect();
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .zip(names.iter().zip(&retentions))
        .map(|(t, (name, retention))| {
            // -1: the broker's default replication factor (3 on a production Redpanda
            // cluster, 1 on a single test broker).
            NewTopic::new(name, t.spec().partitions, TopicReplication::Fixed(-1))
                .set("retention.ms", retention)
        })
        .collect();
    let mut created = BTreeMap::new();
    if !new_topics.is_empty() {
        let results = admin
            .create_topics(
                &new_topics,
                &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
            )
            .await
            .map_err(|source| KafkaFailure::Request {
                servers: servers.to_owned(),
                what: "a create-topics request",
                source,
            })?;
        for result in results {
            match result {
                Ok(name) => {
                    created.insert(name, true);
                }
                // Another process created it between our metadata read and the request.
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    created.insert(name, false);
                }
                Err((name, code)) => {
                    return Err(KafkaFailure::TopicRefused {
                        topic: name,
                        reason: code.to_string(),
                    });
                }
            }
        }
    }
    Ok(topics
        .iter()
        .map(|t| {
            let name = t.to_string();
            let expected = t.spec().partitions;
            let outcome = match (existing.get(&name), created.get(&name)) {
                (Some(&p), _) if p != expected => Ensured::ExistedDifferently {
                    partitions: p,
                    expected,
                },
                (Some(&p), _) => Ensured::Existed { partitions: p },
                (None, Some(true)) => Ensured::Created {
                    partitions: expected,
                },
                (None, _) => Ensured::Existed {
                    partitions: expected,
                },
            };
            (t.clone(), outcome)
        })
        .collect())
}
