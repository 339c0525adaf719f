//! The in-process transport: the same contract as Kafka, inside one process, for the
//! embedded default and for backtests.
//!
//! - Topics are created explicitly (producing to an unknown topic is an error, as on a Kafka
//!   broker with `auto.create.topics.enable=false`);
//!   each partition is an append-only log; a keyed record goes to partition
//!   `fnv1a(key) % partitions`, so a key always lands on the same partition.
//! - Consumer groups keep committed offsets per partition. Members of a group share the
//!   partitions of their topics (round-robin over members sorted by id); a partition is
//!   handled by one member at a time: the new owner starts only after the old one finished
//!   its in-flight record, committed, and released it.
//! - A member reads each partition from the committed offset, so whatever was not committed
//!   (a record abandoned at shutdown) is delivered again to the next owner.
//! - Records are processed by the same `PartitionWorker` as on Kafka: decode, dedup, retries,
//!   DLQ, effects and commit-after-completion behave identically.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_rt::ArbiterHandle;
use alpha_panda_topics::TopicName;
use tokio::sync::Notify;

use super::worker::{PartitionWorker, StageFactory};
use super::{DeliveryPolicy, EventProducer, Record};
use crate::store::Store;

/// A record as the in-process log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("topic {0} does not exist (create it first)")]
    UnknownTopic(String),
}

type Partition = (String, i32);

#[derive(Default)]
struct Log {
    partitions: Vec<PartitionLog>,
}

/// One partition's records from `base` on: those below were read by every consumer group of
/// the topic and dropped (when the bus trims, see [`InProcessBus::trim_consumed`]).
#[derive(Default, Clone)]
struct PartitionLog {
    base: i64,
    records: std::collections::VecDeque<StoredRecord>,
}

impl PartitionLog {
    fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }

    fn get(&self, offset: i64) -> Option<&StoredRecord> {
        self.records.get(usize::try_from(offset - self.base).ok()?)
    }
}

/// A partition is trimmed once every group of its topic has committed this many records
/// past its first kept record: memory holds about this many records per partition beyond
/// the slowest group.
const TRIM_EVERY: i64 = 10_000;

#[derive(Default)]
struct Group {
    committed: HashMap<Partition, i64>,
    /// Member id → subscribed topics.
    members: BTreeMap<u64, Vec<String>>,
    /// Partition → the member that holds it now.
    owners: HashMap<Partition, u64>,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Log>,
    groups: HashMap<String, Group>,
    /// Topics whose records every consumer group has committed are dropped.
    trimmed: BTreeSet<String>,
}

struct Inner {
    state: Mutex<State>,
    /// Woken on every append and every group change.
    changed: Notify,
    next_member: AtomicU64,
    /// Where every append, topic and commit is journalled (the embedded default's data
    /// directory); `None`: memory only.
    journal: Option<crate::journal::SharedJournal>,
}

/// The in-process broker. Cheap to clone; clones share the same logs and groups.
#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a, 32-bit: a fixed hash, so partitioning is the same in every run.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::with_state(State::default(), None)
    }

    fn with_state(state: State, journal: Option<crate::journal::SharedJournal>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changed: Notify::new(),
                next_member: AtomicU64::new(1),
                journal,
            }),
        }
    }

    /// A bus rebuilt from what `journal` kept (its topics, logs and committed offsets) that
    /// journals every further change to it (see `crate::journal`).
    pub fn journalled(
        journal: crate::journal::SharedJournal,
        restored: &crate::journal::Restored,
    ) -> Self {
        let mut state = State::default();
        for (topic, partitions) in &restored.topics {
            state.topics.insert(
                topic.clone(),
                Log {
                    partitions: partitions
                        .iter()
                        .map(|(base, records)| PartitionLog {
                            base: *base,
                            records: records.iter().cloned().collect(),
                        })
                        .collect(),
                },
            );
        }
        for (group, topic, partition, next) in &restored.committed {
            state
                .groups
                .entry(group.clone())
                .or_default()
                .committed
                .insert((topic.clone(), *partition), *next);
        }
        Self::with_state(state, Some(journal))
    }

    /// From now on, drops the records of these topics that every consumer group reading
    /// them has committed, so that a long-lived process holds (and journals) only what is
    /// still to be read. Only topics that nothing but consumer groups reads may be given:
    /// a reader that is not a group (the recorder, the console, `records`) is not waited
    /// for. A group that has members but has not committed yet holds the topic whole; a
    /// group that first reads a topic after a trim starts at the first record kept. The
    /// daemon's embedded default trims the ticks and the signals; a backtest, which reads
    /// its fills back at the end, trims nothing.
    pub fn trim_consumed(&self, topics: &[TopicName]) {
        self.state()
            .trimmed
            .extend(topics.iter().map(ToString::to_string));
    }

    fn journal(&self, op: impl FnOnce() -> crate::journal::JournalOp) {
        if let Some(j) = &self.inner.journal {
            j.record(vec![op()]);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a topic with `partitions` partitions; an existing topic is left as it is.
    pub fn create_topic(&self, topic: &TopicName, partitions: usize) {
        let mut st = self.state();
        if let std::collections::hash_map::Entry::Vacant(e) = st.topics.entry(topic.to_string()) {
            let partitions = partitions.max(1);
            self.journal(|| crate::journal::JournalOp::Topic {
                topic: e.key().clone(),
                partitions,
            });
            e.insert(Log {
                partitions: vec![PartitionLog::default(); partitions],
            });
        }
    }

    /// Creates every topic with its default partition count.
    pub fn create_topics(&self, topics: &[TopicName]) {
        for t in topics {
            self.create_topic(t, t.spec().partitions.max(1) as usize);
        }
    }

    /// Appends a record; returns its (partition, offset).
    pub fn append(&self, topic: &str, record: StoredRecord) -> Result<(i32, i64), BusError> {
        let mut st = self.state();
        let log = st
            .topics
            .get_mut(topic)
            .ok_or_else(|| BusError::UnknownTopic(topic.to_owned()))?;
        let n = log.partitions.len() as u32;
        let p = match &record.key {
            Some(k) => fnv1a(k) % n,
            None => 0,
        } as usize;
        let offset = log.partitions[p].end();
        if let Some(j) = &self.inner.journal {
            j.record(vec![crate::journal::JournalOp::Append {
                topic: topic.to_owned(),
                partition: p as i32,
                offset,
                record: record.clone(),
            }]);
        }
        log.partitions[p].records.push_back(record);
        drop(st);
        self.inner.changed.notify_waiters();
        Ok((p as i32, offset))
    }

    /// Every record of a topic as (partition, offset, record), partition by partition.
    pub fn records(&self, topic: &TopicName) -> Vec<(i32, i64, StoredRecord)> {
        let st = self.state();
        let Some(log) = st.topics.get(&topic.to_string()) else {
            return Vec::new();
        };
        log.partitions
            .iter()
            .enumerate()
            .flat_map(|(p, part)| {
                part.records
                    .iter()
                    .zip(part.base..)
                    .map(move |(r, o)| (p as i32, o, r.clone()))
            })
            .collect()
    }

    /// Up to `max` records of one partition from offset `from` (or the first kept, if it
    /// was trimmed), as (offset, record): a reader that is not a consumer group member (the
    /// console) follows a topic with it.
    pub fn read_from(
        &self,
        topic: &TopicName,
        partition: i32,
        from: i64,
        max: usize,
    ) -> Vec<(i64, StoredRecord)> {
        let st = self.state();
        let Some(part) = st
            .topics
            .get(&topic.to_string())
            .and_then(|l| l.partitions.get(usize::try_from(partition).ok()?))
        else {
            return Vec::new();
        };
        let from = from.max(part.base);
        let start = usize::try_from(from - part.base).unwrap_or(usize::MAX);
        part.records
            .iter()
            .zip(part.base..)
            .skip(start)
            .take(max)
            .map(|(r, o)| (o, r.clone()))
            .collect()
    }

    /// The next offset of each partition.
    pub fn end_offsets(&self, topic: &TopicName) -> Vec<i64> {
        let st = self.state();
        st.topics
            .get(&topic.to_string())
            .map(|l| l.partitions.iter().map(PartitionLog::end).collect())
            .unwrap_or_default()
    }

    /// Per (group, topic, partition): records between the group's committed offset and the
    /// end of the partition, for every group that committed or has members.
    pub fn lags(&self) -> Vec<(String, String, i32, i64)> {
        let st = self.state();
        let mut out = Vec::new();
        for (group, g) in &st.groups {
            let topics: BTreeSet<&String> = g.members.values().flatten().collect();
            for t in topics {
                if let Some(log) = st.topics.get(t) {
                    for (p, part) in log.partitions.iter().enumerate() {
                        let committed = g
                            .committed
                            .get(&(t.clone(), p as i32))
                            .copied()
                            .unwrap_or(0);
                        out.push((
                            group.clone(),
                            t.clone(),
                            p as i32,
                            part.end() - committed.max(part.base),
                        ));
                    }
                }
            }
        }
        out
    }

    /// The committed offset of a group on a partition.
    pub fn committed(&self, group: &str, topic: &TopicName, partition: i32) -> Option<i64> {
        let st = self.state();
        st.groups
            .get(group)?
            .committed
            .get(&(topic.to_string(), partition))
            .copied()
    }

    fn record_at(&self, p: &Partition, offset: i64) -> Option<StoredRecord> {
        let st = self.state();
        st.topics
            .get(&p.0)?
            .partitions
            .get(p.1 as usize)?
            .get(offset)
            .cloned()
    }

    /// The first offset a partition keeps: a reader behind it (a group that first reads the
    /// topic after a trim) starts there.
    fn first_kept(&self, p: &Partition) -> i64 {
        let st = self.state();
        st.topics
            .get(&p.0)
            .and_then(|l| l.partitions.get(p.1 as usize))
            .map_or(0, |part| part.base)
    }

    fn commit(&self, group: &str, p: &Partition, next: i64) {
        let mut st = self.state();
        let g = st.groups.entry(group.to_owned()).or_default();
        let e = g.committed.entry(p.clone()).or_insert(i64::MIN);
        if next > *e {
            *e = next;
            self.journal(|| crate::journal::JournalOp::Commit {
                group: group.to_owned(),
                topic: p.0.clone(),
                partition: p.1,
                next,
            });
            if st.trimmed.contains(&p.0) {
                self.trim(&mut st, p);
            }
        }
    }

    /// Drops the partition's records below every group's committed offset (groups with
    /// members that have not committed hold it whole), in steps of [`TRIM_EVERY`], keeping
    /// at least the last record so that a journal restored later still knows the offsets.
    fn trim(&self, st: &mut State, p: &Partition) {
        let mut below = i64::MAX;
        for g in st.groups.values() {
            match g.committed.get(p) {
                Some(c) => below = below.min(*c),
                None if g.members.values().flatten().any(|t| *t == p.0) => return,
                None => {}
            }
        }
        let Some(part) = st
            .topics
            .get_mut(&p.0)
            .and_then(|l| l.partitions.get_mut(p.1 as usize))
        else {
            return;
        };
        if below == i64::MAX {
            return;
        }
        let below = below.min(part.end() - 1);
        if below - part.base < TRIM_EVERY {
            return;
        }
        let n = usize::try_from(below - part.base).unwrap_or(0);
        part.records.drain(..n);
        part.base = below;
        self.journal(|| crate::journal::JournalOp::Trimmed {
            topic: p.0.clone(),
            partition: p.1,
            below,
        });
    }

    fn join(&self, group: &str, topics: Vec<String>) -> u64 {
        let id = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        self.state()
            .groups
            .entry(group.to_owned())
            .or_default()
            .members
            .insert(id, topics);
        self.inner.changed.notify_waiters();
        id
    }

    fn leave(&self, group: &str, member: u64) {
        if let Some(g) = self.state().groups.get_mut(group) {
            g.members.remove(&member);
            g.owners.retain(|_, m| *m != member);
        }
        self.inner.changed.notify_waiters();
    }

    /// The partitions `member` should hold now: all partitions of the group's topics, dealt
    /// round-robin over the members in id order.
    fn desired(&self, group: &str, member: u64) -> BTreeSet<Partition> {
        let st = self.state();
        let Some(g) = st.groups.get(group) else {
            return BTreeSet::new();
        };
        let members: Vec<u64> = g.members.keys().copied().collect();
        let Some(me) = members.iter().position(|m| *m == member) else {
            return BTreeSet::new();
        };
        let topics: BTreeSet<&String> = g.members.values().flatten().collect();
        let mut all = Vec::new();
        for t in topics {
            if let Some(log) = st.topics.get(t) {
                all.extend((0..log.partitions.len() as i32).map(|p| (t.clone(), p)));
            }
        }
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| i % members.len() == me)
            .map(|(_, p)| p)
            .collect()
    }

    /// Takes a partition if nobody holds it; returns where to start reading.
    fn claim(&self, group: &str, member: u64, p: &Partition) -> Option<i64> {
        let mut st = self.state();
        let g = st.groups.get_mut(group)?;
        match g.owners.get(p) {
            Some(owner) if *owner != member => None,
            _ => {
                g.owners.insert(p.clone(), member);
                Some(g.committed.get(p).copied().unwrap_or(0))
            }
        }
    }

    fn release(&self, group: &str, member: u64, p: &Partition) {
        if let Some(g) = self.state().groups.get_mut(group)
            && g.owners.get(p) == Some(&member)
        {
            g.owners.remove(p);
        }
        self.inner.changed.notify_waiters();
    }
}

/// Everything an in-process consumer needs; the twin of `kafka::ConsumerSpec`.
pub struct InProcessConsumerSpec {
    pub bus: InProcessBus,
    pub topics: Vec<TopicName>,
    pub policy: DeliveryPolicy,
    pub producer: EventProducer,
    pub store: Store,
    pub factory: StageFactory,
    pub arbiter: ArbiterHandle,
}

struct Running {
    stop: Arc<AtomicBool>,
    ended: Arc<Notify>,
    done: Arc<AtomicBool>,
}

/// A running in-process group member.
pub struct InProcessConsumerHandle {
    bus: InProcessBus,
    group: String,
    member: u64,
    stop: Arc<AtomicBool>,
    finished: Arc<Notify>,
    finished_flag: Arc<AtomicBool>,
    assigned: Arc<Mutex<BTreeSet<Partition>>>,
}

impl InProcessConsumerHandle {
    /// The partitions this member currently holds.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stops intake, lets in-flight records finish (bounded), commits, leaves the group.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        self.bus.inner.changed.notify_waiters();
        while !self.finished_flag.load(Ordering::Acquire) {
            let notified = self.finished.notified();
            if self.finished_flag.load(Ordering::Acquire) {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        self.bus.leave(&self.group, self.member);
    }
}

/// Joins the group and starts the member's control loop on `arbiter`.
pub fn start(spec: InProcessConsumerSpec) -> InProcessConsumerHandle {
    let group = spec.policy.group.clone();
    let member = spec.bus.join(
        &group,
        spec.topics.iter().map(ToString::to_string).collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(Notify::new());
    let finished_flag = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new(Mutex::new(BTreeSet::new()));
    let handle = InProcessConsumerHandle {
        bus: spec.bus.clone(),
        group: group.clone(),
        member,
        stop: stop.clone(),
        finished: finished.clone(),
        finished_flag: finished_flag.clone(),
        assigned: assigned.clone(),
    };
    let topics: HashMap<String, TopicName> = spec
        .topics
        .iter()
        .map(|t| (t.to_string(), t.clone()))
        .collect();
    let policy = Arc::new(spec.policy);
    let (bus, producer, store, factory) = (spec.bus, spec.producer, spec.store, spec.factory);
    if let Some(c) = policy.checkpointed.clone().filter(|c| c.whole_stage) {
        spec.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                whole_stage_member(
                    bus, group, member, topics, policy, producer, store, c.factory, stop, assigned,
                )
                .await;
                finished_flag.store(true, Ordering::Release);
                finished.notify_waiters();
            });
        });
        return handle;
    }
    spec.arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let mut running: HashMap<Partition, Running> = HashMap::new();
            loop {
                let changed = bus.inner.changed.notified();
                let stopping = stop.load(Ordering::Acquire);
                let want = if stopping {
                    BTreeSet::new()
                } else {
                    bus.desired(&group, member)
                };
                // Give up what is no longer ours: stop after the in-flight record, release.
                let gone: Vec<Partition> =
                    running.keys().filter(|p| !want.contains(*p)).cloned().collect();
                for p in gone {
                    if let Some(r) = running.remove(&p) {
                        r.stop.store(true, Ordering::Release);
                        bus.inner.changed.notify_waiters();
                        let deadline = tokio::time::Instant::now() + policy.drain_timeout;
                        while !r.done.load(Ordering::Acquire)
                            && tokio::time::Instant::now() < deadline
                        {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(20),
                                r.ended.notified(),
                            )
                            .await;
                        }
                        bus.release(&group, member, &p);
                        tracing::info!(stage = %policy.stage, topic = %p.0, partition = p.1, "partition released");
                    }
                }
                if stopping && running.is_empty() {
                    break;
                }
                // Take what is ours and free.
                for p in &want {
                    if running.contains_key(p) {
                        continue;
                    }
                    let Some(from) = bus.claim(&group, member, p) else {
                        continue;
                    };
                    let Some(topic) = topics.get(&p.0).cloned() else {
                        continue;
                    };
                    tracing::info!(stage = %policy.stage, topic = %p.0, partition = p.1, from, "partition assigned");
                    let r = Running {
                        stop: Arc::new(AtomicBool::new(false)),
                        ended: Arc::new(Notify::new()),
                        done: Arc::new(AtomicBool::new(false)),
                    };
                    if let Some(c) = policy.checkpointed.clone() {
                        let worker = super::unit::CheckpointWorker::new(
                            policy.clone(),
                            producer.clone(),
                            store.clone(),
                            c.factory,
                            super::unit::Unit::Partition(topic.clone(), p.1),
                            r.stop.clone(),
                        );
                        actix_rt::spawn(checkpointed_loop(
                            bus.clone(),
                            vec![(p.clone(), topic)],
                            worker,
                            policy.clone(),
                            Ended {
                                stop: r.stop.clone(),
                                ended: r.ended.clone(),
                                done: r.done.clone(),
                            },
                        ));
                        running.insert(p.clone(), r);
                        continue;
                    }
                    actix_rt::spawn(partition_loop(
                        bus.clone(),
                        p.clone(),
                        topic,
                        from,
                        PartitionWorker::new(
                            policy.clone(),
                            producer.clone(),
                            store.clone(),
                            factory.clone(),
                            r.stop.clone(),
                        ),
                        policy.clone(),
                        r.stop.clone(),
                        r.ended.clone(),
                        r.done.clone(),
                    ));
                    running.insert(p.clone(), r);
                }
                *assigned.lock().unwrap_or_else(|p| p.into_inner()) =
                    running.keys().cloned().collect();
                let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
            }
            *assigned.lock().unwrap_or_else(|p| p.into_inner()) = BTreeSet::new();
            finished_flag.store(true, Ordering::Release);
            finished.notify_waiters();
        });
    });
    handle
}

#[allow(clippy::too_many_arguments)]
async fn partition_loop(
    bus: InProcessBus,
    p: Partition,
    topic: TopicName,
    mut next: i64,
    mut worker: PartitionWorker,
    policy: Arc<DeliveryPolicy>,
    stop: Arc<AtomicBool>,
    ended: Arc<Notify>,
    done: Arc<AtomicBool>,
) {
    worker.assigned(&topic, p.1);
    while !stop.load(Ordering::Acquire) {
        let changed = bus.inner.changed.notified();
        next = next.max(bus.first_kept(&p));
        let Some(stored) = bus.record_at(&p, next) else {
            let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
            continue;
        };
        let record = Record {
            topic: topic.clone(),
            partition: p.1,
            offset: next,
            key: stored.key,
            value: stored.value,
            headers: stored.headers,
        };
        match worker.process(&record).await {
            Ok(_) => {
                next += 1;
                // In-process commits are a map write: commit each finished record.
                bus.commit(&policy.group, &p, next);
            }
            Err(_) => break,
        }
    }
    worker.released(&topic, p.1);
    done.store(true, Ordering::Release);
    ended.notify_waiters();
}

/// How a partition's loop is told to stop and says it has.
struct Ended {
    stop: Arc<AtomicBool>,
    ended: Arc<Notify>,
    done: Arc<AtomicBool>,
}

/// A checkpointed unit (delivery v2) over these partitions: each starts at its checkpoint
/// offset (or the beginning of its log); what is there is handed in batches, taken from the
/// partitions in turn; each partition is committed after each checkpoint.
async fn checkpointed_loop(
    bus: InProcessBus,
    parts: Vec<(Partition, TopicName)>,
    mut worker: super::unit::CheckpointWorker,
    policy: Arc<DeliveryPolicy>,
    end: Ended,
) {
    worker.assigned();
    let max = policy.batch_max_records.max(1);
    if let Ok(checkpoint) = worker.load().await {
        let mut next: Vec<i64> = parts
            .iter()
            .map(|(p, _)| {
                checkpoint
                    .as_ref()
                    .and_then(|c| c.next_offset(&p.0, p.1))
                    .unwrap_or(0)
            })
            .collect();
        for (i, (p, _)) in parts.iter().enumerate() {
            if next[i] > 0 {
                bus.commit(&policy.group, p, next[i]);
            }
        }
        let mut turn = 0;
        while !end.stop.load(Ordering::Acquire) {
            let mut batch: Vec<Record> = Vec::new();
            let mut taken = vec![0i64; parts.len()];
            // Held open up to `batch_max_wait` after its first record, for more records.
            let mut close = None;
            let idle = loop {
                let more = bus.inner.changed.notified();
                take_records(&bus, &parts, &mut next, &mut taken, &mut batch, turn, max);
                if batch.is_empty() {
                    break Some(more);
                }
                if batch.len() >= max
                    || policy.batch_max_wait.is_zero()
                    || end.stop.load(Ordering::Acquire)
                {
                    break None;
                }
                let at = *close
                    .get_or_insert_with(|| tokio::time::Instant::now() + policy.batch_max_wait);
                if tokio::time::timeout_at(at, more).await.is_err() {
                    break None;
                }
            };
            turn += 1;
            if let Some(more) = idle {
                let _ = tokio::time::timeout(Duration::from_millis(200), more).await;
                continue;
            }
            // An append is its own acknowledgement here: each batch is checkpointed
            // before the next is read.
            let outcome = match worker.process(&batch).await {
                Ok(()) => worker.finish().await,
                Err(a) => Err(a),
            };
            // Everything handled is checkpointed now: the read position is committed.
            worker.take_checkpointed();
            match outcome {
                Ok(()) => {
                    for (i, (p, _)) in parts.iter().enumerate() {
                        if let Some(last) = batch
                            .iter()
                            .filter(|r| r.topic.to_string() == p.0 && r.partition == p.1)
                            .map(|r| r.offset)
                            .max()
                        {
                            next[i] = last + 1;
                            bus.commit(&policy.group, p, next[i]);
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }
    end.done.store(true, Ordering::Release);
    end.ended.notify_waiters();
}

/// Takes what is there into `batch`, fair to every partition: each takes up to its share per
/// pass, starting at partition `turn`, and passes repeat while records come and the batch
/// has room. `taken[i]` counts what partition `i` gave past `next[i]`.
fn take_records(
    bus: &InProcessBus,
    parts: &[(Partition, TopicName)],
    next: &mut [i64],
    taken: &mut [i64],
    batch: &mut Vec<Record>,
    turn: usize,
    max: usize,
) {
    let share = (max / parts.len()).max(1);
    loop {
        let before = batch.len();
        for k in 0..parts.len() {
            let i = (turn + k) % parts.len();
            let (p, topic) = &parts[i];
            if taken[i] == 0 {
                // A unit with no checkpoint, of a topic trimmed before it first read it,
                // starts at the first record kept.
                next[i] = next[i].max(bus.first_kept(p));
            }
            for _ in 0..share {
                if batch.len() >= max {
                    break;
                }
                let o = next[i] + taken[i];
                let Some(r) = bus.record_at(p, o) else { break };
                batch.push(Record {
                    topic: topic.clone(),
                    partition: p.1,
                    offset: o,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
                taken[i] += 1;
            }
        }
        if batch.len() == before || batch.len() >= max {
            return;
        }
    }
}

/// The control loop of a member of a whole-stage checkpointed group: one unit over every
/// partition the member holds, started again whenever that set changes.
#[allow(clippy::too_many_arguments)]
async fn whole_stage_member(
    bus: InProcessBus,
    group: String,
    member: u64,
    topics: HashMap<String, TopicName>,
    policy: Arc<DeliveryPolicy>,
    producer: EventProducer,
    store: Store,
    factory: super::unit::CheckpointedFactory,
    stop: Arc<AtomicBool>,
    assigned: Arc<Mutex<BTreeSet<Partition>>>,
) {
    let mut unit: Option<Running> = None;
    let mut held: BTreeSet<Partition> = BTreeSet::new();
    loop {
        let changed = bus.inner.changed.notified();
        let stopping = stop.load(Ordering::Acquire);
        let want = if stopping {
            BTreeSet::new()
        } else {
            bus.desired(&group, member)
        };
        let gone: Vec<Partition> = held.difference(&want).cloned().collect();
        let newly: Vec<Partition> = want
            .difference(&held)
            .filter(|p| topics.contains_key(&p.0) && bus.claim(&group, member, p).is_some())
            .cloned()
            .collect();
        if !gone.is_empty() || !newly.is_empty() {
            if let Some(r) = unit.take() {
                r.stop.store(true, Ordering::Release);
                bus.inner.changed.notify_waiters();
                let deadline = tokio::time::Instant::now() + policy.drain_timeout;
                while !r.done.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(20), r.ended.notified()).await;
                }
            }
            for p in &gone {
                held.remove(p);
                bus.release(&group, member, p);
                tracing::info!(stage = %policy.stage, topic = %p.0, partition = p.1, "partition released");
            }
            for p in newly {
                tracing::info!(stage = %policy.stage, topic = %p.0, partition = p.1, "partition assigned");
                held.insert(p);
            }
            if !held.is_empty() {
                let r = Running {
                    stop: Arc::new(AtomicBool::new(false)),
                    ended: Arc::new(Notify::new()),
                    done: Arc::new(AtomicBool::new(false)),
                };
                let parts = held
                    .iter()
                    .filter_map(|p| topics.get(&p.0).map(|t| (p.clone(), t.clone())))
                    .collect();
                let worker = super::unit::CheckpointWorker::new(
                    policy.clone(),
                    producer.clone(),
                    store.clone(),
                    factory.clone(),
                    super::unit::Unit::Stage,
                    r.stop.clone(),
                );
                actix_rt::spawn(checkpointed_loop(
                    bus.clone(),
                    parts,
                    worker,
                    policy.clone(),
                    Ended {
                        stop: r.stop.clone(),
                        ended: r.ended.clone(),
                        done: r.done.clone(),
                    },
                ));
                unit = Some(r);
            }
        }
        *assigned.lock().unwrap_or_else(|p| p.into_inner()) = held.clone();
        if stopping && unit.is_none() && held.is_empty() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Restored, VecJournal};

    fn record(n: i64) -> StoredRecord {
        StoredRecord {
            key: None,
            value: Some(n.to_be_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    /// A trimming bus drops what every group of a topic committed, in steps, and keeps at
    /// least the last record; a topic no group reads keeps everything; a group with members
    /// that has not committed holds the topic whole; a reader behind the trim starts at the
    /// first record kept; and the journal, replayed, gives the same log.
    #[test]
    fn a_trimming_bus_keeps_only_what_a_group_has_still_to_read() {
        let journal = Arc::new(VecJournal::default());
        let bus = InProcessBus::journalled(journal.clone(), &Restored::default());
        let ticks = TopicName::market_ticks();
        let dlq = TopicName::market_ticks().dlq().unwrap();
        bus.trim_consumed(std::slice::from_ref(&ticks));
        bus.create_topic(&ticks, 1);
        bus.create_topic(&dlq, 1);
        let n = 3 * TRIM_EVERY;
        for i in 0..n {
            bus.append(&ticks.to_string(), record(i)).unwrap();
            bus.append(&dlq.to_string(), record(i)).unwrap();
        }
        let p: Partition = (ticks.to_string(), 0);
        let a = bus.join("a", vec![ticks.to_string(), dlq.to_string()]);
        bus.commit("a", &(dlq.to_string(), 0), n);
        let b = bus.join("b", vec![ticks.to_string()]);
        bus.commit("a", &p, n);
        assert_eq!(bus.first_kept(&p), 0, "b has members and has not committed");
        bus.commit("b", &p, TRIM_EVERY - 1);
        assert_eq!(bus.first_kept(&p), 0, "less than a step behind the slowest");
        bus.commit("b", &p, 2 * TRIM_EVERY + 5);
        assert_eq!(bus.first_kept(&p), 2 * TRIM_EVERY + 5);
        assert_eq!(bus.end_offsets(&ticks), vec![n]);
        assert_eq!(
            bus.read_from(&ticks, 0, 0, 1)[0].0,
            2 * TRIM_EVERY + 5,
            "a reader behind the trim starts at the first record kept"
        );
        assert_eq!(
            bus.record_at(&p, 2 * TRIM_EVERY + 5),
            Some(record(2 * TRIM_EVERY + 5))
        );
        assert_eq!(bus.record_at(&p, 2 * TRIM_EVERY + 4), None);
        for i in n..n + TRIM_EVERY {
            bus.append(&ticks.to_string(), record(i)).unwrap();
        }
        let end = n + TRIM_EVERY;
        bus.commit("a", &p, end);
        bus.commit("b", &p, end);
        assert_eq!(bus.first_kept(&p), end - 1, "the last record stays");
        assert_eq!(
            bus.records(&dlq).len() as i64,
            n,
            "a topic not given to trim is kept, read or not"
        );
        bus.leave("a", a);
        bus.leave("b", b);

        let again = InProcessBus::journalled(journal.clone(), &journal.restored());
        assert_eq!(again.records(&ticks), bus.records(&ticks));
        assert_eq!(again.end_offsets(&ticks), vec![end]);
        again.append(&ticks.to_string(), record(end)).unwrap();
        assert_eq!(again.end_offsets(&ticks), vec![end + 1], "offsets go on");
    }

    /// A topic the bus does not trim (fills the recorder reads; any topic of a backtest,
    /// which reads its fills back at the end) keeps every record however far its groups
    /// have read.
    #[test]
    fn a_bus_that_does_not_trim_keeps_every_record() {
        let bus = InProcessBus::new();
        let ticks = TopicName::market_ticks();
        bus.create_topic(&ticks, 1);
        for i in 0..2 * TRIM_EVERY {
            bus.append(&ticks.to_string(), record(i)).unwrap();
        }
        bus.join("a", vec![ticks.to_string()]);
        bus.commit("a", &(ticks.to_string(), 0), 2 * TRIM_EVERY);
        assert_eq!(bus.records(&ticks).len() as i64, 2 * TRIM_EVERY);
    }
}
