//! The recorder of one broker: a thread of its own that consumes the broker's order, fill,
//! snapshot and rejection topics (consumer group `{group_prefix}.{broker}.recorder`) and
//! writes their rows into the broker's schema, as the broker's writer role.
//!
//! - Batches: up to `database.batch_records` records or `database.batch_ms`, one
//!   transaction each, holding the rows and the next offset of every partition read.
//! - Offsets live in the database: on assignment each partition starts at its stored offset
//!   (the start of the topic when none is stored, or when the database cannot be read then:
//!   re-reading is harmless, rows are keyed by event id). Kafka commits follow, for lag.
//! - Backpressure, not loss: while a batch cannot be written the recorder pauses its
//!   partitions, keeps the batch, marks the broker degraded with the database's error (so
//!   `/readyz` says why) and retries with backoff; the trading stages are not touched.
//! - A record that is not an event envelope is logged and skipped: the stages that read the
//!   same topic send it to their DLQ.

pub mod sqlite;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alpha_panda_actors::control::Control;
use alpha_panda_config::Charges;
use alpha_panda_core::{BrokerName, EventEnvelope};
use alpha_panda_topics::{BrokerTopic, TopicName};
use diesel::PgConnection;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::DbError;
use crate::rows::Rows;
use crate::target::{Layout, connect_as_writer};
use write::Offsets;

/// The topics a broker's recorder reads.
pub const RECORDED: [BrokerTopic; 6] = [
    BrokerTopic::OrdersSubmitted,
    BrokerTopic::OrdersAck,
    BrokerTopic::OrdersFilled,
    BrokerTopic::OrdersFailed,
    BrokerTopic::PnlSnapshots,
    BrokerTopic::SignalsRejected,
];

/// The stage name the recorder reports under (degradation, logs).
pub const STAGE: &str = "recorder";

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub kafka_servers: String,
    pub client_id: String,
    /// Consumer group, `{group_prefix}.{broker}.recorder` in the daemon.
    pub group: String,
    pub session_timeout_ms: u32,
    pub broker: BrokerName,
    /// `postgres://…`
    pub database_url: String,
    pub layout: Layout,
    /// The broker's charges model, to break each fill's charges down.
    pub charges: Charges,
    pub batch_records: usize,
    pub batch_wait: Duration,
}

/// What the recorder has done so far, for tests and status.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub failed_writes: AtomicU64,
    pub skipped: AtomicU64,
}

/// A running recorder; [`Recorder::stop`] finishes the batch in hand and returns.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RecorderStats>,
}

impl Recorder {
    /// Starts the recorder thread. It reports a database it cannot write to `control` as
    /// a degraded broker.
    pub fn spawn(cfg: RecorderConfig, control: Arc<Control>) -> Result<Self, DbError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RecorderStats::default());
        let consumer = consumer(&cfg)?;
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("recorder-{}", cfg.broker))
                .spawn(move || run(cfg, consumer, control, &stop, &stats))
                .map_err(|e| DbError::Io(format!("starting the recorder thread: {e}")))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Stops after the batch in hand is written (or given up, when the database is down:
    /// its offsets are not stored either, so it is read again next time).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seeks each assigned partition to the offset stored in the database.
struct Context {
    url: String,
    layout: Layout,
    broker: BrokerName,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let topics: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| e.topic().to_owned())
                    .collect();
                let stored =
                    connect_as_writer(&self.url, &self.layout, &self.broker).and_then(|mut c| {
                        write::read_offsets(&mut c, &topics)
                            .map_err(DbError::query("reading the recorder's offsets"))
                    });
                let stored = match stored {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(broker = %self.broker, error = %e,
                            "recorder: offsets unreadable at assignment; reading its topics from the start (rows are keyed by event id)");
                        Offsets::new()
                    }
                };
                let mut with_offsets = TopicPartitionList::new();
                for e in tpl.elements() {
                    let offset = stored
                        .get(&(e.topic().to_owned(), e.partition()))
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    if let Err(err) =
                        with_offsets.add_partition_offset(e.topic(), e.partition(), offset)
                    {
                        tracing::error!(topic = e.topic(), partition = e.partition(), error = %err, "recorder: bad offset");
                    }
                }
                tracing::info!(broker = %self.broker, partitions = with_offsets.count(), "recorder: partitions assigned at their stored offsets");
                if let Err(e) = consumer.assign(&with_offsets) {
                    tracing::error!(broker = %self.broker, error = %e, "recorder: cannot assign");
                }
            }
            _ => {
                if let Err(e) = consumer.unassign() {
                    tracing::error!(broker = %self.broker, error = %e, "recorder: cannot unassign");
                }
            }
        }
    }
}

fn consumer(cfg: &RecorderConfig) -> Result<BaseConsumer<Context>, DbError> {
    let topics: Vec<String> = RECORDED
        .iter()
        .map(|t| TopicName::broker(&cfg.broker, *t).to_string())
        .collect();
    let mut config =
        alpha_panda_actors::kafka::consumer_config(&cfg.kafka_servers, &cfg.client_id, &cfg.group);
    config
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("max.poll.interval.ms", cfg.session_timeout_ms.to_string());
    let consumer: BaseConsumer<Context> = config
        .create_with_context(Context {
            url: cfg.database_url.clone(),
            layout: cfg.layout.clone(),
            broker: cfg.broker.clone(),
        })
        .map_err(|e| DbError::Io(format!("recorder consumer for {}: {e}", cfg.kafka_servers)))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|e| DbError::Io(format!("recorder subscribing to {topics:?}: {e}")))?;
    Ok(consumer)
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    rows: Rows,
    offsets: Offsets,
    records: usize,
}

impl Batch {
    fn add(&mut self, m: &BorrowedMessage<'_>, charges: &Charges, stats: &RecorderStats) {
        self.records += 1;
        self.offsets
            .insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
        match m.payload().map(EventEnvelope::decode) {
            Some(Ok(env)) => self.rows.add(&env, charges),
            Some(Err(e)) => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "recorder: not an event, skipped");
            }
            None => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn run(
    cfg: RecorderConfig,
    consumer: BaseConsumer<Context>,
    control: Arc<Control>,
    stop: &AtomicBool,
    stats: &RecorderStats,
) {
    let ns = cfg.broker.as_str().to_owned();
    let mut conn: Option<PgConnection> = None;
    tracing::info!(broker = %ns, group = %cfg.group, "recorder started");
    while !stop.load(Ordering::SeqCst) {
        let mut batch = Batch::default();
        let deadline = Instant::now() + cfg.batch_wait;
        while batch.records < cfg.batch_records && !stop.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => batch.add(&m, &cfg.charges, stats),
                Some(Err(e)) => tracing::warn!(broker = %ns, error = %e, "recorder: Kafka error"),
                None => {}
            }
        }
        if batch.records == 0 {
            continue;
        }
        write_until_done(
            &cfg, &consumer, &control, &mut conn, &mut batch, stop, stats,
        );
    }
    tracing::info!(broker = %ns, "recorder stopped");
}

/// Writes the batch, retrying with backoff while the database refuses; meanwhile the
/// partitions are paused and any record still delivered joins the batch.
fn write_until_done(
    cfg: &RecorderConfig,
    consumer: &BaseConsumer<Context>,
    control: &Control,
    conn: &mut Option<PgConnection>,
    batch: &mut Batch,
    stop: &AtomicBool,
    stats: &RecorderStats,
) {
    let ns = cfg.broker.as_str();
    let mut backoff = Duration::from_millis(250);
    let mut paused = false;
    loop {
        let result = match conn {
            Some(c) => write::write_batch(c, &batch.rows, &batch.offsets).map_err(DbError::query(
                format!("writing a batch of {} records", batch.records),
            )),
            None => {
                connect_as_writer(&cfg.database_url, &cfg.layout, &cfg.broker).and_then(|mut c| {
                    let r = write::write_batch(&mut c, &batch.rows, &batch.offsets).map_err(
                        DbError::query(format!("writing a batch of {} records", batch.records)),
                    );
                    *conn = Some(c);
                    r
                })
            }
        };
        match result {
            Ok(()) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .records
                    .fetch_add(batch.records as u64, Ordering::Relaxed);
                commit_to_kafka(consumer, &batch.offsets);
                if paused {
                    set_paused(consumer, false);
                    control.clear_degraded(ns, STAGE);
                    tracing::info!(
                        broker = ns,
                        "recorder: the database takes rows again; resumed"
                    );
                }
                return;
            }
            Err(e) => {
                stats.failed_writes.fetch_add(1, Ordering::Relaxed);
                *conn = None;
                let reason = format!("recorder paused: {e}");
                control.mark_degraded(ns, STAGE, &reason);
                if !paused {
                    tracing::warn!(broker = ns, error = %e, "recorder: cannot write; pausing its partitions and retrying");
                    paused = true;
                }
                if stop.load(Ordering::SeqCst) {
                    tracing::warn!(
                        broker = ns,
                        records = batch.records,
                        "recorder: stopping with an unwritten batch; its records are read again on the next start"
                    );
                    return;
                }
                // Pause (again: a rebalance may have brought new partitions), and keep
                // polling so the group keeps this member; anything delivered joins the batch.
                set_paused(consumer, true);
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                        batch.add(&m, &cfg.charges, stats);
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn set_paused(consumer: &BaseConsumer<Context>, pause: bool) {
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "recorder: cannot read its assignment");
            return;
        }
    };
    let r: KafkaResult<()> = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, pause, "recorder: cannot pause or resume");
    }
}

/// Kafka's committed offsets follow the database's, so consumer lag tools see the
/// recorder's progress. The database's offsets are the ones that count.
fn commit_to_kafka(consumer: &BaseConsumer<Context>, offsets: &Offsets) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "recorder: Kafka commit failed (the database's offsets count)");
    }
}
