//! The Kafka consumer bridge: one rdkafka consumer per stage consumer group, its assigned
//! partitions split into their own queues, each queue driving one `PartitionWorker` (and so
//! one stage actor) on one of the worker arbiters it is given (`delivery.threads`; see
//! `threads`).
//!
//! Threads: a dedicated poll thread owns the consumer. It serves rebalance callbacks,
//! dispatches records to the partition queues, stores the offsets workers report as done
//! and commits them every `commit_interval`. Workers never touch the consumer.
//!
//! Backpressure: a full partition queue pauses that partition in the consumer (its records
//! wait in Kafka) until the queue drains; other partitions go on.
//!
//! Revocation and shutdown: the partition's worker is told to stop after its in-flight
//! record (bounded by `drain_timeout`), the offsets it finished are stored and committed
//! synchronously, and only then is the partition released.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alpha_panda_topics::TopicName;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc as tmpsc;

use super::producer::EventProducer;
use super::worker::{PartitionWorker, StageFactory};
use super::{DeliveryPolicy, Record};
use crate::store::Store;

/// Records queued per partition before the partition is paused (a whole-stage unit: four
/// times this over all its partitions). A paused partition is fetched again only after its
/// queue drains and a fetch goes out, so the queue holds what a unit takes in a few batches:
/// at 512 a 100,000-tick burst went through at 12,000 ticks/s, at 2,048 at 14,000–15,000
/// (about 2,048 records of up to a few hundred bytes each per partition at most).
const QUEUE_DEPTH: usize = 2048;

type PartitionKey = (String, i32);

/// A worker's report that everything before `next_offset` is done.
struct Done {
    topic: String,
    partition: i32,
    next_offset: i64,
}

#[derive(Clone)]
struct Slot {
    tx: tmpsc::Sender<Record>,
    stop: Arc<AtomicBool>,
    /// True while the worker is processing a record.
    busy: Arc<AtomicBool>,
    /// True once the worker loop has ended.
    ended: Arc<AtomicBool>,
}

/// What the consumer's callbacks need: the slots and how to start workers.
struct Shared {
    servers: String,
    policy: Arc<DeliveryPolicy>,
    producer: EventProducer,
    store: Store,
    factory: StageFactory,
    arbiters: super::threads::Arbiters,
    slots: Mutex<HashMap<PartitionKey, Slot>>,
    /// A whole-stage checkpointed unit: the one queue and worker every partition feeds.
    stage_unit: Mutex<Option<Slot>>,
    done_tx: Mutex<mpsc::Sender<Done>>,
    done_rx: Mutex<mpsc::Receiver<Done>>,
    topics: HashMap<String, TopicName>,
    /// The operator's pause as applied to the consumer's assignment (see `Held`).
    held: Held,
    /// Set by the commit callback when an asynchronous commit failed: the poll loop commits
    /// again at its next interval, whether or not a worker finished anything since.
    commit_failed: AtomicBool,
}

/// Whether the operator's pause is applied to the consumer's partitions. Two places apply
/// it: the poll loop, when the operator's wish changes, and an assignment, whose new
/// partitions follow the wish of that moment. Both record it here, so the loop compares the
/// wish with what the consumer really has: a pause that began and ended while a rebalance
/// kept the loop inside `poll` (an assignment paused on the way) is then lifted, not left in
/// place for ever.
#[derive(Debug, Default)]
struct Held(AtomicBool);

impl Held {
    /// An assignment's partitions were paused (or resumed) as the operator wishes now.
    fn assigned(&self, paused: bool) {
        self.0.store(paused, Ordering::Release);
    }

    /// The poll loop's check: `Some(wish)` when the consumer must be paused (`true`) or
    /// resumed (`false`) to match the operator's wish, which is then recorded as applied.
    fn change(&self, wish: bool) -> Option<bool> {
        (self.0.swap(wish, Ordering::AcqRel) != wish).then_some(wish)
    }

    fn applied(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// When the poll loop commits the offsets stored in the consumer: some are stored that were
/// not committed yet, or the last commit of them failed, and `commit_interval` has passed.
/// A failed commit is retried even when nothing new is stored: a partition whose last records
/// are done would otherwise keep its committed offset behind them for ever (the pipeline
/// never drains, and its lag never clears).
#[derive(Debug)]
struct CommitPacing {
    pending: bool,
    last: Instant,
}

impl CommitPacing {
    fn new(now: Instant) -> Self {
        Self {
            pending: false,
            last: now,
        }
    }

    /// Offsets were stored, or a commit of them failed: they are to be committed.
    fn pending(&mut self) {
        self.pending = true;
    }

    /// Nothing is left to commit (what was stored was handed to a synchronous commit, or
    /// belonged to a consumer that was replaced).
    fn clear(&mut self) {
        self.pending = false;
    }

    /// Whether to commit now; if so, the commit is taken as under way.
    fn due(&mut self, now: Instant, interval: Duration) -> bool {
        if !self.pending || now.duration_since(self.last) < interval {
            return false;
        }
        self.pending = false;
        self.last = now;
        true
    }
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionKey, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores every offset workers reported done.
    fn store_done(&self, consumer: &BaseConsumer<BridgeContext>) -> bool {
        let rx = self.done_rx.lock().unwrap_or_else(|p| p.into_inner());
        let mut latest: HashMap<PartitionKey, i64> = HashMap::new();
        while let Ok(d) = rx.try_recv() {
            let e = latest
                .entry((d.topic, d.partition))
                .or_insert(d.next_offset);
            *e = (*e).max(d.next_offset);
        }
        if latest.is_empty() {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &latest {
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .is_err()
            {
                tracing::error!(topic, partition, offset, "invalid offset to store");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::warn!(error = %e, "storing offsets failed (partition no longer assigned?)");
        }
        true
    }

    /// Starts the worker of an assigned partition.
    fn start_worker(&self, key: PartitionKey) {
        let Some(topic) = self.topics.get(&key.0).cloned() else {
            tracing::error!(topic = %key.0, "assigned a topic this bridge did not subscribe to");
            return;
        };
        let whole_stage = self
            .policy
            .checkpointed
            .as_ref()
            .is_some_and(|c| c.whole_stage);
        if whole_stage {
            let unit = self.stage_unit.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(u) = unit
                .as_ref()
                .filter(|u| !u.ended.load(Ordering::Acquire) && !u.stop.load(Ordering::Acquire))
            {
                tracing::info!(stage = %self.policy.stage, topic = %key.0, partition = key.1, "partition assigned");
                let slot = u.clone();
                drop(unit);
                self.slots().insert(key, slot);
                return;
            }
        }
        let (tx, mut rx) = tmpsc::channel::<Record>(if whole_stage {
            4 * QUEUE_DEPTH
        } else {
            QUEUE_DEPTH
        });
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let slot = Slot {
            tx,
            stop: stop.clone(),
            busy: busy.clone(),
            ended: ended.clone(),
        };
        if whole_stage {
            *self.stage_unit.lock().unwrap_or_else(|p| p.into_inner()) = Some(slot.clone());
        }
        let (policy, producer, store, factory) = (
            self.policy.clone(),
            self.producer.clone(),
            self.store.clone(),
            self.factory.clone(),
        );
        let done_tx = self
            .done_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let partition = key.1;
        tracing::info!(stage = %policy.stage, topic = %topic, partition, "partition assigned");
        self.slots().insert(key, slot);
        if let Some(checkpointed) = policy.checkpointed.clone() {
            let unit = if checkpointed.whole_stage {
                super::unit::Unit::Stage
            } else {
                super::unit::Unit::Partition(topic.clone(), partition)
            };
            let max = policy.batch_max_records.max(1);
            let wait = policy.batch_max_wait;
            self.arbiters.for_partition(partition).spawn_fn(move || {
                actix_rt::spawn(async move {
                    let mut worker = super::unit::CheckpointWorker::new(
                        policy,
                        producer,
                        store,
                        checkpointed.factory,
                        unit,
                        stop.clone(),
                    );
                    worker.assigned();
                    let report = |worker: &mut super::unit::CheckpointWorker| {
                        for (topic, partition, next_offset) in worker.take_checkpointed() {
                            let _ = done_tx.send(Done {
                                topic: topic.to_string(),
                                partition,
                                next_offset,
                            });
                        }
                    };
                    if worker.load().await.is_ok() {
                        let mut batch = Vec::with_capacity(max);
                        // Batches are handled as they come; their checkpoints follow as
                        // the broker acknowledges them (`unit::PIPELINE_DEPTH`).
                        loop {
                            let outcome = tokio::select! {
                                biased;
                                Some(settled) = worker.acknowledged(), if worker.pending() => {
                                    worker.settled(settled).await
                                }
                                first = rx.recv() => {
                                    let Some(first) = first else { break };
                                    if stop.load(Ordering::Acquire) {
                                        break;
                                    }
                                    batch.push(first);
                                    // What is queued, then what comes within
                                    // `batch_max_wait` of the first record.
                                    let close = tokio::time::Instant::now() + wait;
                                    while batch.len() < max {
                                        match rx.try_recv() {
                                            Ok(r) => batch.push(r),
                                            Err(_) if wait.is_zero() => break,
                                            Err(_) => match tokio::time::timeout_at(close, rx.recv()).await {
                                                Ok(Some(r)) => batch.push(r),
                                                Ok(None) | Err(_) => break,
                                            },
                                        }
                                    }
                                    busy.store(true, Ordering::Release);
                                    let outcome = worker.process(&batch).await;
                                    batch.clear();
                                    outcome
                                }
                            };
                            report(&mut worker);
                            // Busy while checkpoints are pending: a revocation waits for
                            // them (up to `drain_timeout`).
                            busy.store(worker.pending(), Ordering::Release);
                            if outcome.is_err() {
                                break;
                            }
                        }
                        // What is in flight is checkpointed before the partition goes.
                        busy.store(true, Ordering::Release);
                        let _ = worker.finish().await;
                        report(&mut worker);
                        busy.store(false, Ordering::Release);
                    }
                    ended.store(true, Ordering::Release);
                });
            });
            return;
        }
        self.arbiters.for_partition(partition).spawn_fn(move || {
            actix_rt::spawn(async move {
                let mut worker =
                    PartitionWorker::new(policy, producer, store, factory, stop.clone());
                worker.assigned(&topic, partition);
                while let Some(record) = rx.recv().await {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    busy.store(true, Ordering::Release);
                    let outcome = worker.process(&record).await;
                    if outcome.is_ok() {
                        let _ = done_tx.send(Done {
                            topic: topic.to_string(),
                            partition,
                            next_offset: record.offset + 1,
                        });
                    }
                    busy.store(false, Ordering::Release);
                    if outcome.is_err() {
                        break;
                    }
                }
                ended.store(true, Ordering::Release);
            });
        });
    }

    /// Stops the workers of these partitions after their in-flight record, waiting at most
    /// `drain_timeout`.
    fn stop_workers(&self, keys: &[PartitionKey]) {
        let removed: Vec<(PartitionKey, Slot)> = {
            let mut slots = self.slots();
            keys.iter()
                .filter_map(|k| slots.remove(k).map(|s| (k.clone(), s)))
                .collect()
        };
        for (_, slot) in &removed {
            slot.stop.store(true, Ordering::Release);
        }
        // A stopped whole-stage unit lets go of its queue, so its worker sees it close.
        {
            let mut unit = self.stage_unit.lock().unwrap_or_else(|p| p.into_inner());
            if unit
                .as_ref()
                .is_some_and(|u| u.stop.load(Ordering::Acquire))
            {
                *unit = None;
            }
        }
        let deadline = Instant::now() + self.policy.drain_timeout;
        for ((topic, partition), slot) in removed {
            drop(slot.tx);
            while slot.busy.load(Ordering::Acquire) && !slot.ended.load(Ordering::Acquire) {
                if Instant::now() > deadline {
                    tracing::warn!(
                        topic,
                        partition,
                        "in-flight record did not finish in time; it will be redelivered"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            self.policy.control.worker(
                (
                    self.policy.namespace.clone(),
                    self.policy.stage.clone(),
                    topic.clone(),
                    partition,
                ),
                |w| w.state = "released",
            );
            tracing::info!(stage = %self.policy.stage, topic, partition, "partition released");
        }
    }
}

impl Shared {
    /// Sets each partition's start to its checkpoint's offset; a partition without one
    /// starts at the earliest offset. A store that does not answer is retried for a while;
    /// after that the partition starts at the group's committed offset, which is never past
    /// the checkpoint (commits follow checkpoints), and its worker steps over what its
    /// checkpoint already holds.
    fn seek_to_checkpoints(&self, tpl: &mut TopicPartitionList) {
        let policy = &self.policy;
        let give_up = Instant::now() + policy.session_timeout / 3;
        let whole_stage = policy.checkpointed.as_ref().is_some_and(|c| c.whole_stage);
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in partitions {
            let key = if whole_stage {
                super::checkpoint::stage_checkpoint_key(&policy.namespace, &policy.group)
            } else {
                super::checkpoint::checkpoint_key(
                    &policy.namespace,
                    &policy.group,
                    &topic,
                    partition,
                )
            };
            let start = loop {
                match self.store.get_blocking(&key, Duration::from_secs(2)) {
                    Ok(Some(json)) => match super::checkpoint::Checkpoint::decode(&json) {
                        Ok(c) => {
                            break Some(
                                c.next_offset(&topic, partition)
                                    .map_or(Offset::Beginning, Offset::Offset),
                            );
                        }
                        // The worker reports it (and waits for an operator).
                        Err(_) => break None,
                    },
                    Ok(None) => break Some(Offset::Beginning),
                    Err(e) if Instant::now() < give_up => {
                        tracing::warn!(stage = %policy.stage, %key, error = %e, "cannot read the checkpoint at assignment; retrying");
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Err(e) => {
                        tracing::error!(stage = %policy.stage, %key, error = %e, "cannot read the checkpoint at assignment; starting at the committed offset");
                        break None;
                    }
                }
            };
            if let Some(offset) = start {
                if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                    tracing::error!(stage = %policy.stage, topic, partition, error = %e, "cannot set the start offset");
                }
                // The group's committed offset catches up with the checkpoint even when the
                // partition gets no new record (a commit lost in a crash would otherwise
                // stay behind, and show as lag, for ever).
                if let Offset::Offset(next_offset) = offset {
                    let _ = self
                        .done_tx
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .send(Done {
                            topic: topic.clone(),
                            partition,
                            next_offset,
                        });
                }
            }
        }
    }
}

/// The consumer context: rebalance callbacks run on the poll thread, inside `poll`.
pub struct BridgeContext {
    shared: Arc<Shared>,
}

impl ClientContext for BridgeContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the consumer lag of each
    /// partition this member owns.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let owned = self.shared.slots().keys().cloned().collect::<Vec<_>>();
        let group = &self.shared.policy.group;
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if owned.contains(&(topic.clone(), *partition)) && p.consumer_lag >= 0 {
                    self.shared
                        .policy
                        .control
                        .set_lag(group, topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for BridgeContext {
    /// As rdkafka's own, except that a checkpointed stage's partitions are assigned at
    /// their checkpoint's offset (or the earliest offset when they have none), so the
    /// records before it are never read.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.shared.policy.checkpointed.is_some() {
                    self.shared.seek_to_checkpoints(tpl);
                }
                self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(stage = %self.shared.policy.stage, error = %e, "assigning partitions failed");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                if let Err(e) = consumer.unassign() {
                    tracing::error!(stage = %self.shared.policy.stage, error = %e, "unassigning partitions failed");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(stage = %self.shared.policy.stage, error = %code, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let keys: Vec<PartitionKey> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            self.shared.stop_workers(&keys);
            self.shared.store_done(consumer);
            commit_sync(consumer);
            // Whatever an abandoned record already sent is acknowledged (or failed) before
            // the partition moves, so the new owner does not race our late writes.
            if let Err(e) = self.shared.producer.flush(self.shared.policy.drain_timeout) {
                tracing::warn!(error = %e, "producer flush on revocation failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            for e in tpl.elements() {
                self.shared
                    .start_worker((e.topic().to_owned(), e.partition()));
            }
            let p = &self.shared.policy;
            let paused = p.control.stage_paused(&p.namespace, &p.stage);
            self.shared.held.assigned(paused);
            if paused {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(stage = %p.stage, error = %e, "cannot pause newly assigned partitions");
                }
            } else if let Err(e) = consumer.resume(tpl) {
                // A partition paused for backpressure under an earlier assignment stays
                // paused in librdkafka when it comes back to this member, and its old queue
                // is dropped (see `poll_loop`): it would never be read again.
                tracing::warn!(stage = %p.stage, error = %e, "cannot resume newly assigned partitions");
            }
        }
    }

    /// A commit that failed, as a whole or for some of its partitions (librdkafka reports
    /// "unknown member" or a stale generation per partition, with an overall success), is
    /// committed again at the next interval.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let failed: Vec<String> = offsets
            .elements()
            .iter()
            .filter_map(|e| {
                e.error()
                    .err()
                    .map(|err| format!("{}/{}: {err}", e.topic(), e.partition()))
            })
            .collect();
        let error = match result {
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return,
            Ok(()) if failed.is_empty() => return,
            Ok(()) => failed.join(", "),
            Err(e) => e.to_string(),
        };
        self.shared.commit_failed.store(true, Ordering::Release);
        tracing::warn!(stage = %self.shared.policy.stage, error, "offset commit failed; retrying at the next commit interval");
    }
}

fn commit_sync(consumer: &BaseConsumer<BridgeContext>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "synchronous commit failed"),
    }
}

/// A running consumer bridge.
pub struct ConsumerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl ConsumerHandle {
    /// The partitions this member currently owns.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self.shared.slots().keys().cloned().collect();
        v.sort();
        v
    }

    /// Stops intake, lets in-flight records finish (bounded), commits, leaves the group.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Err(e) = self.shared.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "producer flush at shutdown failed");
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Everything a consumer bridge needs.
pub struct ConsumerSpec {
    pub servers: String,
    pub client_id: String,
    pub topics: Vec<TopicName>,
    pub policy: DeliveryPolicy,
    pub producer: EventProducer,
    pub store: Store,
    pub factory: StageFactory,
    /// Where the partition workers and stage actors run: partition `p` on
    /// `arbiters.for_partition(p)`.
    pub arbiters: super::threads::Arbiters,
}

/// A consumer of the stage's group, subscribed to its topics. A static member (with
/// `policy.instance_id`) that a fatal error fenced is replaced by another from here.
fn subscribe(
    shared: &Arc<Shared>,
    client_id: &str,
) -> Result<BaseConsumer<BridgeContext>, KafkaError> {
    let mut config =
        crate::kafka::consumer_config(&shared.servers, client_id, &shared.policy.group);
    if let Some(id) = &shared.policy.instance_id {
        config.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<BridgeContext> = config
        .set("statistics.interval.ms", "5000")
        .set(
            "session.timeout.ms",
            shared.policy.session_timeout.as_millis().to_string(),
        )
        .set(
            "max.poll.interval.ms",
            shared.policy.session_timeout.as_millis().to_string(),
        )
        .create_with_context(BridgeContext {
            shared: shared.clone(),
        })?;
    let names: Vec<String> = shared.topics.keys().cloned().collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(consumer)
}

/// Subscribes and starts the poll thread.
pub fn start(spec: ConsumerSpec) -> Result<ConsumerHandle, KafkaError> {
    let (done_tx, done_rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        servers: spec.servers.clone(),
        topics: spec
            .topics
            .iter()
            .map(|t| (t.to_string(), t.clone()))
            .collect(),
        policy: Arc::new(spec.policy),
        producer: spec.producer,
        store: spec.store,
        factory: spec.factory,
        arbiters: spec.arbiters,
        slots: Mutex::new(HashMap::new()),
        stage_unit: Mutex::new(None),
        done_tx: Mutex::new(done_tx),
        done_rx: Mutex::new(done_rx),
        held: Held::default(),
        commit_failed: AtomicBool::new(false),
    });
    let client_id = spec.client_id;
    let consumer = subscribe(&shared, &client_id)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name(format!("consume-{}", shared.policy.stage))
        .spawn({
            let stop = stop.clone();
            let shared = shared.clone();
            move || poll_loop(consumer, shared, stop, client_id)
        })
        .map_err(|e| KafkaError::Subscription(format!("cannot start the poll thread: {e}")))?;
    Ok(ConsumerHandle {
        stop,
        thread: Some(thread),
        shared,
    })
}

/// Applies (or lifts) an operator's pause to every assigned partition: their records wait in
/// Kafka. Lifting it leaves partitions paused for backpressure (`waiting`) paused.
fn hold(
    consumer: &BaseConsumer<BridgeContext>,
    pause: bool,
    waiting: &HashMap<PartitionKey, (Arc<AtomicBool>, VecDeque<Record>)>,
    stage: &str,
) {
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(stage, error = %e, "cannot read the assignment to pause it");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for e in assignment.elements() {
        if pause || !waiting.contains_key(&(e.topic().to_owned(), e.partition())) {
            tpl.add_partition(e.topic(), e.partition());
        }
    }
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => tracing::info!(
            stage,
            partitions = tpl.count(),
            paused = pause,
            "consumer {}",
            if pause { "paused" } else { "resumed" }
        ),
        Err(e) => tracing::warn!(stage, error = %e, "consumer pause/resume failed"),
    }
}

fn to_record(msg: &rdkafka::message::BorrowedMessage<'_>, topic: TopicName) -> Record {
    let headers = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic,
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers,
    }
}

fn poll_loop(
    mut consumer: BaseConsumer<BridgeContext>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    client_id: String,
) {
    // Records held back while a partition's worker queue is full, with the slot (one
    // assignment of the partition) they were fetched for.
    let mut waiting: HashMap<PartitionKey, (Arc<AtomicBool>, VecDeque<Record>)> = HashMap::new();
    let mut commits = CommitPacing::new(Instant::now());
    while !stop.load(Ordering::Acquire) {
        if shared.store_done(&consumer) || shared.commit_failed.swap(false, Ordering::AcqRel) {
            commits.pending();
        }
        let p = &shared.policy;
        let wish = p.control.stage_paused(&p.namespace, &p.stage);
        if let Some(pause) = shared.held.change(wish) {
            hold(&consumer, pause, &waiting, &p.stage);
        }
        let held = shared.held.applied();
        // Hand paused partitions' records over as their queues drain.
        waiting.retain(|key, (owner, queue)| {
            let slots = shared.slots();
            let Some(slot) = slots.get(key) else {
                return false; // revoked: the records will be redelivered to the new owner
            };
            if !Arc::ptr_eq(owner, &slot.stop) {
                // Revoked and assigned again within one poll: the new assignment reads from
                // its own start, so the old queue must not go ahead of it.
                return false;
            }
            while let Some(rec) = queue.pop_front() {
                match slot.tx.try_send(rec) {
                    Ok(()) => {}
                    Err(tmpsc::error::TrySendError::Full(rec)) => {
                        queue.push_front(rec);
                        return true;
                    }
                    Err(tmpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            if !held {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&key.0, key.1);
                if let Err(e) = consumer.resume(&tpl) {
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "resume failed");
                }
            }
            false
        });
        let mut fenced = false;
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                tracing::error!(stage = %shared.policy.stage, error = %code, "the consumer failed for good; replacing it");
                fenced = true;
            }
            Some(Err(e)) => {
                tracing::warn!(stage = %shared.policy.stage, error = %e, "consumer error")
            }
            Some(Ok(msg)) => {
                let key = (msg.topic().to_owned(), msg.partition());
                let slots = shared.slots();
                let current = slots.get(&key).map(|slot| &slot.stop);
                // A queue left by an earlier assignment of this partition is dropped (see
                // above): its records are redelivered from the new assignment's start.
                if waiting
                    .get(&key)
                    .is_some_and(|(owner, _)| current.is_none_or(|c| !Arc::ptr_eq(owner, c)))
                {
                    waiting.remove(&key);
                }
                if let Some((_, queue)) = waiting.get_mut(&key) {
                    if let Some(topic) = shared.topics.get(&key.0) {
                        queue.push_back(to_record(&msg, topic.clone()));
                    }
                } else {
                    if let (Some(slot), Some(topic)) = (slots.get(&key), shared.topics.get(&key.0))
                    {
                        match slot.tx.try_send(to_record(&msg, topic.clone())) {
                            Ok(()) => {}
                            Err(tmpsc::error::TrySendError::Full(rec)) => {
                                let mut tpl = TopicPartitionList::new();
                                tpl.add_partition(&key.0, key.1);
                                if let Err(e) = consumer.pause(&tpl) {
                                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "pause failed");
                                }
                                let owner = slot.stop.clone();
                                drop(slots);
                                waiting.insert(key, (owner, VecDeque::from([rec])));
                            }
                            Err(tmpsc::error::TrySendError::Closed(_)) => {}
                        }
                    }
                }
            }
        }
        if fenced {
            // A static member whose session timed out (a broker stall longer than the session)
            // rejoins and is then fenced by its own new membership: librdkafka makes that a
            // fatal error and the consumer never reads again. What it owned is given up as
            // in a revocation (its assignment is lost, so nothing is committed; the records
            // come again to the next owner and are deduplicated), and a new member joins
            // under the same instance id.
            let keys: Vec<PartitionKey> = shared.slots().keys().cloned().collect();
            shared.stop_workers(&keys);
            waiting.clear();
            commits.clear();
            match subscribe(&shared, &client_id) {
                Ok(fresh) => drop(std::mem::replace(&mut consumer, fresh)),
                Err(e) => {
                    tracing::error!(stage = %shared.policy.stage, error = %e, "cannot replace the failed consumer; trying again");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            continue;
        }
        if commits.due(Instant::now(), shared.policy.commit_interval)
            && let Err(e) = consumer.commit_consumer_state(CommitMode::Async)
            && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
        {
            tracing::warn!(error = %e, "commit failed; retrying at the next commit interval");
            commits.pending();
        }
    }
    // Shutdown: finish in-flight work, store and commit it, then leave the group.
    let keys: Vec<PartitionKey> = shared.slots().keys().cloned().collect();
    shared.stop_workers(&keys);
    shared.store_done(&consumer);
    commit_sync(&consumer);
    consumer.unsubscribe();
    tracing::info!(stage = %shared.policy.stage, "consumer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_that_began_and_ended_inside_a_rebalance_is_lifted_from_the_new_assignment() {
        let held = Held::default();
        // The loop sees no pause; then, inside one `poll`, a rebalance assigns partitions
        // while the operator's pause holds (they are paused), and the pause ends before the
        // loop looks again.
        assert_eq!(held.change(false), None);
        held.assigned(true);
        assert_eq!(
            held.change(false),
            Some(false),
            "the new partitions must be resumed"
        );
        assert_eq!(held.change(false), None);
    }

    #[test]
    fn an_assignment_resumed_inside_a_pause_is_paused_again_by_the_loop() {
        let held = Held::default();
        assert_eq!(held.change(true), Some(true));
        // Assigned while the operator had lifted the pause for a moment, and paused again
        // before the loop looked.
        held.assigned(false);
        assert_eq!(held.change(true), Some(true));
        assert_eq!(held.change(false), Some(false));
    }

    #[test]
    fn a_failed_commit_is_retried_at_the_next_interval_with_nothing_new_stored() {
        let start = Instant::now();
        let interval = Duration::from_millis(500);
        let mut commits = CommitPacing::new(start);
        assert!(
            !commits.due(start + interval, interval),
            "nothing stored yet"
        );
        commits.pending();
        assert!(
            !commits.due(start + interval / 2, interval),
            "not before the interval"
        );
        assert!(commits.due(start + interval, interval));
        // The last records of a partition are done and their commit fails: no worker will
        // store anything again, and the commit must still come.
        commits.pending();
        assert!(!commits.due(start + interval + interval / 2, interval));
        assert!(commits.due(start + interval * 2, interval));
        assert!(
            !commits.due(start + interval * 4, interval),
            "committed: nothing pending"
        );
    }
}
