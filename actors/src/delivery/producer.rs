//! The shared producer. Every record is keyed with its envelope's key and carries the
//! envelope's id, type, correlation id and trace id as headers too, so tools can route and
//! trace without decoding the value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alpha_panda_core::{Classify, EventEnvelope, FailureClass};
use alpha_panda_topics::TopicName;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::inprocess::{InProcessBus, StoredRecord};
use super::origin::{ORIGIN_HEADER, Source};
use super::stage::Output;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("producing to {topic} failed: {source}")]
    Kafka { topic: String, source: KafkaError },
    #[error("delivery to {topic} was cancelled: the producer is shutting down")]
    Cancelled { topic: String },
    #[error(
        "producing to {topic} failed: the Kafka producer failed fatally ({fatal}); it is \
         replaced and the records are handled again"
    )]
    Fatal { topic: String, fatal: String },
    #[error("in-process delivery failed: {0}")]
    InProcess(#[from] super::inprocess::BusError),
}

impl Classify for ProduceError {
    fn class(&self) -> FailureClass {
        // The broker could not take the record: nothing is committed, the record is handled
        // again once the actor restarts.
        FailureClass::Infrastructure
    }
}

/// Headers of a record: the envelope's identity, readable without decoding.
pub fn envelope_headers(env: &EventEnvelope) -> OwnedHeaders {
    let id = env.id.to_string();
    let correlation = env.correlation_id.to_string();
    let trace = env.trace_id.to_string();
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_id",
            value: Some(id.as_str()),
        })
        .insert(Header {
            key: "event_type",
            value: Some(env.event_type().as_str()),
        })
        .insert(Header {
            key: "correlation_id",
            value: Some(correlation.as_str()),
        })
        .insert(Header {
            key: "trace_id",
            value: Some(trace.as_str()),
        })
}

/// One producer for the whole process (it is internally thread-safe and batches).
#[derive(Clone)]
pub enum EventProducer {
    Kafka(Arc<KafkaProducer>),
    /// The in-process transport: an append is its own acknowledgement.
    InProcess(InProcessBus),
}

/// The process's librdkafka producer, replaced by a new one when librdkafka declares it
/// fatally failed (an idempotence error it cannot recover from, or a gap it will not leave:
/// `enable.gapless.guarantee`). A fatal producer writes nothing more, so what it wrote is a
/// prefix of what it was given on every partition; the records whose outputs failed are
/// handled again from their checkpoint and produced by the new one, and downstream drops
/// the copies of what the old one had written (docs/architecture.md, "Checkpointed units").
pub struct KafkaProducer {
    config: ClientConfig,
    current: RwLock<Arc<FutureProducer>>,
    replaced: AtomicU64,
}

impl KafkaProducer {
    /// The producer to send on now.
    pub fn current(&self) -> Arc<FutureProducer> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times a fatally failed producer was replaced.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// After a send or delivery on `used` failed: if librdkafka raised a fatal error on it,
    /// a new producer replaces it (once, however many sends saw the failure). Returns the
    /// fatal error, to name in the failure.
    fn after_failure(&self, used: &Arc<FutureProducer>) -> Option<String> {
        let (code, reason) = used.client().fatal_error()?;
        let fatal = format!("{code:?}: {reason}");
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&current, used) {
            match self.config.create::<FutureProducer>() {
                Ok(p) => {
                    *current = Arc::new(p);
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        error = %fatal,
                        "the Kafka producer failed fatally and was replaced; the records \
                         whose outputs it failed are handled again from their checkpoints"
                    );
                }
                Err(e) => tracing::error!(
                    error = %fatal,
                    create = %e,
                    "the Kafka producer failed fatally and a new one could not be created; \
                     the next failure tries again"
                ),
            }
        }
        Some(fatal)
    }

    /// `error`, naming the fatal error behind it if there was one.
    fn failed(
        &self,
        used: &Arc<FutureProducer>,
        topic: String,
        source: KafkaError,
    ) -> ProduceError {
        match self.after_failure(used) {
            Some(fatal) => ProduceError::Fatal { topic, fatal },
            None => ProduceError::Kafka { topic, source },
        }
    }
}

fn header_pairs(headers: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

impl EventProducer {
    pub fn kafka(
        servers: &str,
        client_id: &str,
        linger_ms: u32,
        max_batch_records: u32,
    ) -> Result<Self, KafkaError> {
        let config =
            crate::kafka::producer_config(servers, client_id, linger_ms, max_batch_records);
        let p: FutureProducer = config.create()?;
        Ok(EventProducer::Kafka(Arc::new(KafkaProducer {
            config,
            current: RwLock::new(Arc::new(p)),
            replaced: AtomicU64::new(0),
        })))
    }

    /// A producer for a tool that awaits each record before it sends the next (DLQ replay):
    /// a record the broker has not taken within `give_up_after` fails with librdkafka's
    /// timeout instead of waiting for the broker for ever. Since nothing is sent behind a
    /// record until it is acknowledged, giving one up leaves no gap before a later one.
    pub fn kafka_awaiting_each(
        servers: &str,
        client_id: &str,
        give_up_after: std::time::Duration,
    ) -> Result<Self, KafkaError> {
        let mut config = crate::kafka::producer_config(servers, client_id, 0, 1);
        config
            .set(
                "message.timeout.ms",
                give_up_after.as_millis().max(1).to_string(),
            )
            .set("enable.gapless.guarantee", "false");
        let p: FutureProducer = config.create()?;
        Ok(EventProducer::Kafka(Arc::new(KafkaProducer {
            config,
            current: RwLock::new(Arc::new(p)),
            replaced: AtomicU64::new(0),
        })))
    }

    /// Produces every output and waits until the broker has acknowledged all of them.
    pub async fn send_all(&self, outputs: &[Output]) -> Result<(), ProduceError> {
        self.send_all_from(outputs, None).await
    }

    /// As [`send_all`](Self::send_all), stamping each output with its origin: the record
    /// `source` it was emitted for and its ordinal among that record's outputs.
    pub async fn send_all_from(
        &self,
        outputs: &[Output],
        source: Option<&Source>,
    ) -> Result<(), ProduceError> {
        let headers = |i: usize, out: &Output| stamped(out, source, i);
        match self {
            EventProducer::Kafka(k) => {
                let p = k.current();
                let mut pending = Vec::with_capacity(outputs.len());
                for (i, out) in outputs.iter().enumerate() {
                    let topic = out.topic.to_string();
                    let payload = out.envelope.encode();
                    let fut = enqueue(k, &p, &topic, &out.envelope.key, &payload, headers(i, out))
                        .await?;
                    pending.push((topic, fut));
                }
                Acks::Kafka {
                    producer: k.clone(),
                    used: p,
                    pending,
                }
                .wait()
                .await
            }
            EventProducer::InProcess(bus) => {
                for (i, out) in outputs.iter().enumerate() {
                    bus.append(
                        &out.topic.to_string(),
                        StoredRecord {
                            key: Some(out.envelope.key.clone().into_bytes()),
                            value: Some(out.envelope.encode()),
                            headers: header_pairs(&headers(i, out)),
                        },
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Produces the outputs of a batch of records, each group stamped with the origin of
    /// the record it was emitted for (`None`: no origin, e.g. a DLQ record), and waits
    /// until the broker has acknowledged all of them. Everything is enqueued before the
    /// first wait, so the batch costs one round trip to the broker, not one per record.
    pub async fn send_batch(
        &self,
        batch: &[(Option<Source>, Vec<Output>)],
    ) -> Result<(), ProduceError> {
        self.enqueue_batch(batch).await?.wait().await
    }

    /// Enqueues the outputs of a batch of records as [`send_batch`](Self::send_batch) does,
    /// without waiting for the broker: the acknowledgements are awaited on the returned
    /// [`Acks`], so the caller can handle its next batch meanwhile. Records enqueued later
    /// are sent after these on every partition (the producer is idempotent).
    pub async fn enqueue_batch(
        &self,
        batch: &[(Option<Source>, Vec<Output>)],
    ) -> Result<Acks, ProduceError> {
        match self {
            EventProducer::Kafka(k) => {
                let p = k.current();
                let mut pending = Vec::new();
                for (source, outputs) in batch {
                    for (i, out) in outputs.iter().enumerate() {
                        let topic = out.topic.to_string();
                        let payload = out.envelope.encode();
                        let fut = enqueue(
                            k,
                            &p,
                            &topic,
                            &out.envelope.key,
                            &payload,
                            stamped(out, source.as_ref(), i),
                        )
                        .await?;
                        pending.push((topic, fut));
                    }
                }
                Ok(Acks::Kafka {
                    producer: k.clone(),
                    used: p,
                    pending,
                })
            }
            EventProducer::InProcess(_) => {
                for (source, outputs) in batch {
                    self.send_all_from(outputs, source.as_ref()).await?;
                }
                Ok(Acks::InProcess)
            }
        }
    }

    /// Produces one raw record (DLQ replay) and waits for its acknowledgement.
    pub async fn send_raw(
        &self,
        topic: &TopicName,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), ProduceError> {
        match self {
            EventProducer::Kafka(k) => {
                let p = k.current();
                let topic = topic.to_string();
                let fut = enqueue(k, &p, &topic, key, payload, headers).await?;
                Acks::Kafka {
                    producer: k.clone(),
                    used: p,
                    pending: vec![(topic, fut)],
                }
                .wait()
                .await
            }
            EventProducer::InProcess(bus) => {
                bus.append(
                    &topic.to_string(),
                    StoredRecord {
                        key: Some(key.as_bytes().to_vec()),
                        value: Some(payload.to_vec()),
                        headers: header_pairs(&headers),
                    },
                )?;
                Ok(())
            }
        }
    }

    /// Waits until everything sent so far is acknowledged (revocation, shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        match self {
            EventProducer::Kafka(k) => {
                let p = k.current();
                p.flush(timeout)
                    .map_err(|source| k.failed(&p, "(flush)".to_owned(), source))
            }
            EventProducer::InProcess(_) => Ok(()),
        }
    }
}

/// The broker's acknowledgements of records enqueued together (none on the in-process
/// transport, where an append is its own).
#[must_use = "records are acknowledged only once the acks are awaited"]
pub enum Acks {
    Kafka {
        producer: Arc<KafkaProducer>,
        /// The producer the records were enqueued on.
        used: Arc<FutureProducer>,
        pending: Vec<(String, DeliveryFuture)>,
    },
    InProcess,
}

impl Acks {
    /// Waits for every acknowledgement; the first failure is the batch's.
    pub async fn wait(self) -> Result<(), ProduceError> {
        let Acks::Kafka {
            producer,
            used,
            pending,
        } = self
        else {
            return Ok(());
        };
        for (topic, fut) in pending {
            match fut.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => return Err(producer.failed(&used, topic, source)),
                Err(_) => return Err(ProduceError::Cancelled { topic }),
            }
        }
        Ok(())
    }
}

/// The headers of the `i`-th output emitted for `source`: the envelope's, and the origin.
fn stamped(out: &Output, source: Option<&Source>, i: usize) -> OwnedHeaders {
    let h = envelope_headers(&out.envelope);
    match source {
        Some(s) => {
            let origin = s.output(i as u32).to_string();
            h.insert(Header {
                key: ORIGIN_HEADER,
                value: Some(origin.as_str()),
            })
        }
        None => h,
    }
}

/// Enqueues a record on `p`, waiting while the local queue is full.
async fn enqueue(
    k: &KafkaProducer,
    p: &Arc<FutureProducer>,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
) -> Result<DeliveryFuture, ProduceError> {
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(headers);
    loop {
        match p.send_result(record) {
            Ok(fut) => return Ok(fut),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((source, _)) => return Err(k.failed(p, topic.to_owned(), source)),
        }
    }
}
