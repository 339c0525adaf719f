//! Effectively-once delivery (DESIGN §3.4, §3.5): the contract between the transports
//! (Kafka, in-process) and the stage actors, and the per-partition processing that both
//! transports share.
//!
//! For each record of a partition, strictly in order:
//! 1. decode the envelope; a record that does not decode is poison → DLQ;
//! 2. skip it if its id is already marked processed by this consumer group (dedup);
//! 3. send it to the partition's stage actor; transient failures are retried in place with
//!    backoff, then dead-lettered; poison → DLQ; infrastructure → the actor is replaced and
//!    the record handled again, nothing committed meanwhile;
//! 4. produce every output and wait for the broker's acknowledgement of each;
//! 5. mark the id processed **together with** the handler's store effects (atomically);
//! 6. store the next offset for commit. Commits are batched, never ahead of step 6.
//!
//! A crash anywhere re-runs from the last commit: outputs are re-produced with the same
//! (derived) ids and absorbed by downstream dedup; marks and effects are applied once.

pub mod backoff;
pub mod checkpoint;
pub mod dlq;
pub mod inprocess;
pub mod kafka;
pub mod lease;
pub mod origin;
pub mod producer;
pub mod stage;
pub mod threads;
pub mod unit;
pub mod worker;

pub use backoff::Backoff;
pub use producer::EventProducer;
pub use stage::{Deliver, Handled, Output, StageError};

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_topics::TopicName;

use crate::control::Control;

/// Default of `delivery.batch_max_records`.
pub const DEFAULT_BATCH_MAX_RECORDS: usize = 500;

/// Default of `delivery.batch_max_ms`.
pub const DEFAULT_BATCH_MAX_WAIT: Duration = Duration::ZERO;

/// A record as it came off a partition, before decoding.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: TopicName,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Header of a record replayed from a DLQ: the consumer group that dead-lettered it. Only
/// that group handles the replayed record; every other group reading the topic steps over
/// it (so a tick one stage failed is not handled twice by the stages that did not).
pub const DLQ_TARGET_GROUP_HEADER: &str = "dlq_target_group";

impl Record {
    /// A DLQ replay addressed to another consumer group than `group`.
    pub fn replayed_for_another_group(&self, group: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k == DLQ_TARGET_GROUP_HEADER && v.as_deref() != Some(group.as_bytes()))
    }
}

/// How a consumer group processes its records.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Consumer group, also part of the dedup key.
    pub group: String,
    /// The stage's name, as it appears in `source`, DLQ records and metrics.
    pub stage: String,
    /// Prefix of the dedup keys: the broker name, or `market` for shared stages.
    pub namespace: String,
    pub transient: Backoff,
    /// Delays between restarts after infrastructure failures.
    pub restart: Backoff,
    pub dedup_ttl: Duration,
    /// Longest time to wait for in-flight records when partitions are revoked or the
    /// process stops.
    pub drain_timeout: Duration,
    /// Kafka consumer session timeout (`kafka.session_timeout_ms`).
    pub session_timeout: Duration,
    /// Kafka static membership (`kafka.instance_id`).
    pub instance_id: Option<String>,
    /// How often stored offsets are committed.
    pub commit_interval: Duration,
    /// Pauses, trading states and supervision shared with the daemon's HTTP server.
    pub control: Arc<Control>,
    /// Delivery v2: the stage's state is owned per partition and checkpointed (`unit`);
    /// `None`: the stage is fed record by record with a dedup mark each (`worker`).
    pub checkpointed: Option<Checkpointed>,
    /// Most records a checkpointed partition handles between two checkpoints.
    pub batch_max_records: usize,
    /// Longest a checkpointed unit holds a batch open for more records after its first
    /// (zero: a batch is what is queued when the unit takes it).
    pub batch_max_wait: Duration,
    /// Topics whose records a checkpointed unit also deduplicates by event id, origin or
    /// not. A whole-stage unit that reads two topics (the paper trader: signals and ticks)
    /// and takes over after a crash may read them in another interleaving than the first
    /// time, and emit the same event (same id) as the output of another record, so with
    /// another origin: the watermark alone would apply it twice. Only low-volume topics
    /// (fills): a mark per record.
    pub marked_topics: Vec<alpha_panda_topics::TopicName>,
}

/// A checkpointed stage: the factory of its units' actors, and what a unit is.
#[derive(Clone)]
pub struct Checkpointed {
    pub factory: unit::CheckpointedFactory,
    /// One unit for every partition the member holds (a broker stage, run on one member at
    /// a time); else one unit per partition.
    pub whole_stage: bool,
}

impl std::fmt::Debug for Checkpointed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpointed {{ whole_stage: {} }}", self.whole_stage)
    }
}

impl DeliveryPolicy {
    pub fn new(
        group: impl Into<String>,
        stage: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            stage: stage.into(),
            namespace: namespace.into(),
            transient: Backoff::default(),
            restart: Backoff {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(30),
                tries: u32::MAX,
                jitter: 0.2,
            },
            dedup_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            drain_timeout: Duration::from_secs(5),
            commit_interval: Duration::from_millis(500),
            session_timeout: Duration::from_secs(30),
            instance_id: None,
            control: Arc::new(Control::detached()),
            checkpointed: None,
            batch_max_records: DEFAULT_BATCH_MAX_RECORDS,
            batch_max_wait: DEFAULT_BATCH_MAX_WAIT,
            marked_topics: Vec::new(),
        }
    }
}
