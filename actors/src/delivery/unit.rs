//! Checkpointed units (DESIGN §3.4, delivery v2). A unit's state is owned by the unit's
//! actor and saved, with the next offset of each input partition and the watermarks, in one
//! checkpoint per batch. A unit is one input partition, for a stage whose state splits by
//! partition (the strategies: an instrument's ticks are in one partition), or the whole
//! stage, for a broker stage whose state spans its partitions (it runs on one member at a
//! time, under a lease: see `lease`).
//!
//! For each batch of a unit's records (what is queued, up to
//! `DeliveryPolicy::batch_max_records`):
//! 1. records before the checkpoint's offset are stepped over (their effect is in the state);
//!    a DLQ replay for another group is stepped over; a record that does not decode is
//!    poison → DLQ;
//! 2. duplicates are dropped: a record with an origin at or below its source's watermark;
//!    a record without one (a foreign producer's) whose event id is marked at another input
//!    position (a mark holds the position of the record that made it: the same record
//!    handled again from an older checkpoint is not its own duplicate) — all the batch's
//!    marks are read in one store round trip;
//! 3. each remaining record goes to the partition's actor; transient failures are retried in
//!    place, then dead-lettered; poison and business failures are dead-lettered; an
//!    infrastructure failure or a panic replaces the actor with one restored from the last
//!    checkpoint and handles the batch again (three panics on one record make it poison);
//! 4. every output of the batch is produced (stamped with its origin); the unit goes on with
//!    its next batch while the unit's checkpoint writer awaits the acknowledgements (at most
//!    `PIPELINE_DEPTH` batches in flight);
//! 5. in the order the batches were handled, one checkpoint per batch is written — the
//!    actor's state (and the parts of it the batch changed), the next offset, the
//!    watermarks — together with the marks of the batch's foreign records and its store
//!    effects, atomically, over the version the batch before it wrote (a refused write
//!    means another member wrote since: the worker reads that checkpoint and goes on from
//!    it, see `superseded`);
//! 6. only then is the next offset handed over for the Kafka commit.
//!
//! A crash anywhere before 5 re-handles the batch from the previous checkpoint: the same
//! state and records give the same outputs with the same origins and ids, which downstream
//! drops. A batch that fails in 4 or 5 takes the batches in flight after it down with it:
//! none of them is written, and all are handled again from the last checkpoint. On
//! assignment the partition's actor starts from its checkpoint: no history is read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, Addr, Handler, Message};
use alpha_panda_core::{Classify, EventEnvelope, FailureClass, TradingState};

use super::backoff::jitter_unit;
use super::checkpoint::{
    Checkpoint, checkpoint_key, partition_name, stage_checkpoint_key, watermark_name,
};
use super::dlq::dead_letter;
use super::origin::{Origin, Source};
use super::producer::{Acks, EventProducer};
use super::stage::{Deliver, Handled, Output, StageError};
use super::worker::MAX_PANICS;
use super::{DeliveryPolicy, Record};
use crate::control::Escalation;
use crate::metrics::metrics;
use crate::store::{Effect, Store, dedup_key};
use alpha_panda_topics::TopicName;
use tokio::sync::mpsc as tmpsc;

/// A stage whose state is owned by one partition and checkpointed.
pub trait CheckpointedStage: Unpin + 'static {
    /// Handles one record. On an error the state must be as before the call.
    fn handle(&mut self, d: &Deliver) -> Result<Handled, StageError>;
    /// The state, for the checkpoint (its parts aside).
    fn save(&self) -> serde_json::Value;
    /// For a stage whose state is large: the parts of it that changed since the last call,
    /// as JSON (`None`: the part is gone), so that a batch's checkpoint writes what the batch
    /// changed and not the whole state. A stage made by the factory and given its parts
    /// (`restore_parts`) has changed none. Default: the state has no parts.
    fn changed_parts(&mut self) -> Vec<(String, Option<String>)> {
        Vec::new()
    }
    /// Store writes that stand for the batch as a whole, made when its checkpoint is and
    /// applied with it, after the writes its records returned: a figure that each record
    /// would set again (of several SETs of one key in a batch only the last counts).
    /// Default: none.
    fn batch_effects(&mut self) -> Vec<Effect> {
        Vec::new()
    }
    /// Takes back the parts of the checkpoint the stage was made from (by the factory, from
    /// the checkpoint's state). Default: a stage that keeps no parts is given none.
    fn restore_parts(
        &mut self,
        parts: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        match parts.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!(
                "the checkpoint has a part {name:?}; this stage keeps none"
            )),
        }
    }
}

/// Makes a unit's stage: fresh (`None`) or from a checkpoint's state. An error says why a
/// saved state cannot be read.
pub type CheckpointedFactory = Arc<
    dyn Fn(&Unit, Option<serde_json::Value>) -> Result<Box<dyn CheckpointedStage>, String>
        + Send
        + Sync,
>;

/// What one checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// One input partition.
    Partition(TopicName, i32),
    /// Every input partition of the stage.
    Stage,
}

/// The per-record stage factory a checkpointed stage's consumer is given, since the
/// consumer's spec needs one: its records go to the stage's units, so it is never called;
/// were it called, its actor would refuse every record as an infrastructure failure.
pub fn no_per_record_stage() -> super::worker::StageFactory {
    Arc::new(|| {
        super::stage::FnStage::new(|d: &Deliver| {
            Err(StageError::infrastructure(format!(
                "{} is read by a checkpointed stage: its records go to the stage's units",
                d.topic
            )))
        })
        .start()
        .recipient()
    })
}

/// Adds a store write to a batch's: of several SETs of one key only the last counts.
fn push_effect(effects: &mut Vec<Effect>, e: Effect) {
    if let Effect::Set { key, .. } = &e {
        effects.retain(|x| !matches!(x, Effect::Set { key: k, .. } if k == key));
    }
    effects.push(e);
}

/// The entry of a record's input partition in a batch's short list of its partitions (a
/// batch reads one or a few), made by `new` if it is not there yet.
fn partition_entry<'l, T>(
    list: &'l mut Vec<(TopicName, i32, T)>,
    r: &Record,
    new: impl FnOnce() -> T,
) -> &'l mut T {
    let i = match list
        .iter()
        .position(|(t, p, _)| *t == r.topic && *p == r.partition)
    {
        Some(i) => i,
        None => {
            list.push((r.topic.clone(), r.partition, new()));
            list.len() - 1
        }
    };
    &mut list[i].2
}

/// Applies a batch's changed parts (`None`: removed) to a checkpoint's parts.
fn apply_parts(
    parts: &mut std::collections::BTreeMap<String, String>,
    changed: impl IntoIterator<Item = (String, Option<String>)>,
) {
    for (name, value) in changed {
        match value {
            Some(v) => parts.insert(name, v),
            None => parts.remove(&name),
        };
    }
}

/// The actor owning one partition's state.
pub struct PartitionActor {
    stage: Box<dyn CheckpointedStage>,
}

impl Actor for PartitionActor {
    type Context = actix::Context<Self>;
}

impl Handler<Deliver> for PartitionActor {
    type Result = Result<Handled, StageError>;

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) -> Self::Result {
        let stage = &mut self.stage;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.handle(&msg)))
            .unwrap_or_else(|payload| Err(StageError::panic(payload.as_ref())))
    }
}

/// Records for the actor to handle in order; it stops after the first that fails, whose
/// error is the last result.
#[derive(Message)]
#[rtype(result = "Vec<Result<Handled, StageError>>")]
pub struct HandleMany(pub Vec<Deliver>);

impl Handler<HandleMany> for PartitionActor {
    type Result = Vec<Result<Handled, StageError>>;

    fn handle(&mut self, msg: HandleMany, _ctx: &mut Self::Context) -> Self::Result {
        let mut results = Vec::with_capacity(msg.0.len());
        for d in &msg.0 {
            let stage = &mut self.stage;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.handle(d)))
                .unwrap_or_else(|payload| Err(StageError::panic(payload.as_ref())));
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }
}

/// What a stage saves for one checkpoint: its state, the parts that changed and the batch's
/// own store writes.
type Saved = (
    serde_json::Value,
    Vec<(String, Option<String>)>,
    Vec<Effect>,
);

/// Asks the actor for its state and the parts that changed since it was last asked.
#[derive(Message)]
#[rtype(result = "Result<Saved, StageError>")]
pub struct Save;

impl Handler<Save> for PartitionActor {
    type Result = Result<Saved, StageError>;

    fn handle(&mut self, _msg: Save, _ctx: &mut Self::Context) -> Self::Result {
        let stage = &mut self.stage;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (stage.save(), stage.changed_parts(), stage.batch_effects())
        }))
        .map_err(|payload| StageError::panic(payload.as_ref()))
    }
}

/// The partition was given up (revoked, stopping) before its batch was checkpointed; the
/// next owner handles it again from the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

/// A failure that makes the batch start again from the checkpoint.
enum Restart {
    Infrastructure(String),
    /// Another writer wrote the checkpoint since the version this worker started from; the
    /// store holds this version.
    Superseded(u64),
    /// The handler panicked on the record at this offset.
    Panicked(i64, String),
}

/// How many batches a unit handles and produces ahead of its last checkpoint. While a
/// batch's acknowledgements and checkpoint are pending, the unit handles the next batches,
/// so a record waits for the broker's round trip of the record before it only when this
/// many are in flight; the checkpoints are still written one after the other, in order.
pub const PIPELINE_DEPTH: usize = 4;

/// The next offset of an input partition: what a checkpoint lets the consumer commit.
pub type NextOffset = (TopicName, i32, i64);

/// A batch handled and produced whose acknowledgements and checkpoint are pending.
struct InFlight {
    /// Its records: handled again from the checkpoint if it, or a batch before it, fails.
    records: Vec<Record>,
    /// The next offset of each input partition it held records of.
    next: Vec<NextOffset>,
    /// The checkpoint it writes, its parts aside: the head of the next batch handled.
    checkpoint: Checkpoint,
    /// The parts it writes: those the batch changed, or every part (`whole`).
    parts: Arc<[(String, Option<String>)]>,
    whole: bool,
    /// Its foreign records' marks, which a later batch must see before they are stored.
    marks: Arc<[(String, String)]>,
    /// What the metrics count once it is checkpointed (not before: a batch handled again
    /// after a restart is counted once).
    outputs: Vec<(EventEnvelope, Vec<Output>)>,
    duplicates: u64,
    dead_lettered: Vec<FailureClass>,
    bytes: usize,
}

/// What the checkpoint writer is given for one batch: wait for these acknowledgements, then
/// write this checkpoint over this version.
struct Commit {
    epoch: u64,
    acks: Acks,
    head: String,
    expected: u64,
    parts: Arc<[(String, Option<String>)]>,
    whole: bool,
    marks: Arc<[(String, String)]>,
    effects: Vec<Effect>,
    /// The unit's partitions, shown in `/status` while the write is retried.
    next: Vec<NextOffset>,
}

/// What became of the oldest batch in flight: acknowledged and checkpointed, or failed
/// (then every batch after it is dropped by the writer, unwritten, and the unit handles
/// them all again). Receiving one loses nothing if the wait is dropped.
pub struct Settled {
    epoch: u64,
    outcome: Result<(), Restart>,
}

/// Writes a unit's checkpoints in the order its batches were handled, each once its
/// acknowledgements are in. After a failed batch it writes none of that epoch's later
/// ones: they were handled from a state that will not be checkpointed.
async fn write_checkpoints(
    store: Store,
    policy: Arc<DeliveryPolicy>,
    key: String,
    stop: Arc<AtomicBool>,
    mut commits: tmpsc::UnboundedReceiver<Commit>,
    settled: tmpsc::UnboundedSender<Settled>,
    #[cfg(test)] gate: Option<Arc<tokio::sync::Semaphore>>,
) {
    let mut failed: Option<u64> = None;
    while let Some(c) = commits.recv().await {
        if failed == Some(c.epoch) {
            continue;
        }
        // Tests hold the writer back, as a slow broker would.
        #[cfg(test)]
        if let Some(gate) = &gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        let epoch = c.epoch;
        let outcome = write_checkpoint(&store, &policy, &key, &stop, c).await;
        if outcome.is_err() {
            failed = Some(epoch);
        }
        if settled.send(Settled { epoch, outcome }).is_err() {
            break;
        }
    }
}

async fn write_checkpoint(
    store: &Store,
    policy: &DeliveryPolicy,
    key: &str,
    stop: &AtomicBool,
    c: Commit,
) -> Result<(), Restart> {
    c.acks
        .wait()
        .await
        .map_err(|e| Restart::Infrastructure(e.to_string()))?;
    let write = crate::store::CheckpointWrite {
        key,
        head: &c.head,
        expected: c.expected,
        parts: &c.parts,
        replace_parts: c.whole,
        marks: &c.marks,
        ttl: policy.dedup_ttl,
        effects: &c.effects,
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match store.save_checkpoint(&write).await {
            Ok(crate::store::Written::Done) => return Ok(()),
            Ok(crate::store::Written::Superseded(version)) => {
                return Err(Restart::Superseded(version));
            }
            Err(e) if !stop.load(Ordering::Acquire) => {
                let delay = policy.restart.delay(attempt.min(8), jitter_unit());
                tracing::warn!(stage = %policy.stage, %key, error = %e, attempt, "writing the checkpoint failed; retrying");
                let error = e.to_string();
                for (topic, partition, _) in &c.next {
                    let key = (
                        policy.namespace.clone(),
                        policy.stage.clone(),
                        topic.to_string(),
                        *partition,
                    );
                    policy.control.worker(key, |w| {
                        w.state = "restarting";
                        w.last_error = Some(error.clone());
                    });
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                return Err(Restart::Infrastructure(format!(
                    "stopping before the checkpoint: {e}"
                )));
            }
        }
    }
}

/// Works one partition of a checkpointed stage.
pub struct CheckpointWorker {
    policy: Arc<DeliveryPolicy>,
    producer: EventProducer,
    store: Store,
    factory: CheckpointedFactory,
    unit: Unit,
    stop: Arc<AtomicBool>,
    actor: Option<Addr<PartitionActor>>,
    /// The last checkpoint written (or loaded): what a restarted actor starts from.
    checkpoint: Option<Checkpoint>,
    /// The version of the checkpoint in the store this worker's next write goes over.
    version: u64,
    /// The next batch handled writes every part of the state and removes any other (the
    /// store's parts may not be this worker's).
    parts_whole: bool,
    /// Batches handled and produced, oldest first, whose checkpoints are pending.
    in_flight: std::collections::VecDeque<InFlight>,
    /// Bumped when the batches in flight are dropped: what the writer says of them after
    /// is stale.
    epoch: u64,
    /// Records of dropped batches, handled again before anything else.
    redo: Vec<Record>,
    /// Offsets checkpointed and not yet taken by the consumer to commit.
    done: Vec<NextOffset>,
    /// The checkpoint writer's queue and what it says back; started with the first batch.
    writer: Option<(
        tmpsc::UnboundedSender<Commit>,
        tmpsc::UnboundedReceiver<Settled>,
    )>,
    restarts: u32,
    /// Panics per offset in the current batch.
    panics: HashMap<i64, u32>,
    /// Input partitions whose first record read was compared with the checkpoint's offset.
    gap_checked: std::collections::HashSet<(TopicName, i32)>,
    /// One permit per checkpoint the writer may write (tests).
    #[cfg(test)]
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// What one record of a batch came to.
enum Step {
    /// Not handled: stepped over or a duplicate.
    Skipped { duplicate: bool },
    Handled {
        outputs: Vec<Output>,
        effects: Vec<Effect>,
        mark: Option<(String, String)>,
    },
    DeadLettered {
        dlq: Box<Output>,
        class: FailureClass,
        mark: Option<(String, String)>,
    },
}

impl CheckpointWorker {
    pub fn new(
        policy: Arc<DeliveryPolicy>,
        producer: EventProducer,
        store: Store,
        factory: CheckpointedFactory,
        unit: Unit,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            policy,
            producer,
            store,
            factory,
            unit,
            stop,
            actor: None,
            checkpoint: None,
            version: 0,
            parts_whole: false,
            in_flight: Default::default(),
            epoch: 0,
            redo: Vec::new(),
            done: Vec::new(),
            writer: None,
            restarts: 0,
            panics: HashMap::new(),
            gap_checked: Default::default(),
            #[cfg(test)]
            gate: None,
        }
    }

    fn key(&self) -> String {
        match &self.unit {
            Unit::Partition(topic, partition) => checkpoint_key(
                &self.policy.namespace,
                &self.policy.group,
                &topic.to_string(),
                *partition,
            ),
            Unit::Stage => stage_checkpoint_key(&self.policy.namespace, &self.policy.group),
        }
    }

    /// The unit's name in logs and restarts: `topic/partition` or `stage`.
    fn label(&self) -> String {
        match &self.unit {
            Unit::Partition(topic, partition) => partition_name(&topic.to_string(), *partition),
            Unit::Stage => "stage".to_owned(),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Reads the partition's checkpoint, retrying while the store is unreachable; `None`
    /// if the partition has none (it starts at the earliest offset) or the partition is
    /// given up meanwhile.
    pub async fn load(&mut self) -> Result<Option<Checkpoint>, Abandoned> {
        let key = self.key();
        let mut attempt = 0u32;
        loop {
            if self.stopping() {
                return Err(Abandoned);
            }
            attempt += 1;
            match self.store.load_checkpoint(&key).await {
                Ok(None) => return Ok(None),
                Ok(Some(stored)) => match Checkpoint::from_stored(stored) {
                    Ok(c) => {
                        self.version = c.version;
                        self.checkpoint = Some(c.clone());
                        return Ok(Some(c));
                    }
                    Err(e) => {
                        let message = format!("the checkpoint {key} does not read: {e}");
                        self.halt_on(&message).await;
                    }
                },
                Err(e) => {
                    let delay = self.policy.restart.delay(attempt.min(8), jitter_unit());
                    tracing::warn!(stage = %self.policy.stage, %key, error = %e, "cannot read the checkpoint; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// A failure an operator must see and act on: the stage is shown failing and waits.
    async fn halt_on(&self, message: &str) {
        tracing::error!(stage = %self.policy.stage, unit = %self.label(), error = message, "the unit cannot start");
        self.show("failed", Some(message), None);
        self.policy
            .control
            .record_restart(
                &self.policy.namespace,
                &self.policy.stage,
                &self.label(),
                message,
            )
            .await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && !self.stopping() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Shows the partition as held by this worker in `/status`.
    pub fn assigned(&self) {
        self.show("running", None, None);
    }

    /// Shows the unit's partitions in `/status`: a partition unit's own, a stage unit's
    /// every partition it has read (`next` per partition).
    fn show(
        &self,
        state: &'static str,
        error: Option<&str>,
        next: Option<&[(TopicName, i32, i64)]>,
    ) {
        let mut partitions: Vec<(String, i32, Option<i64>)> = match (&self.unit, next) {
            (_, Some(next)) => next
                .iter()
                .map(|(t, p, o)| (t.to_string(), *p, Some(*o)))
                .collect(),
            (Unit::Partition(topic, partition), None) => {
                vec![(topic.to_string(), *partition, None)]
            }
            (Unit::Stage, None) => self
                .checkpoint
                .iter()
                .flat_map(|c| c.offsets.keys())
                .filter_map(|name| {
                    let (t, p) = name.rsplit_once('/')?;
                    Some((t.to_owned(), p.parse().ok()?, None))
                })
                .collect(),
        };
        partitions.dedup();
        let restarts = self.restarts;
        for (topic, partition, next) in partitions {
            let key = (
                self.policy.namespace.clone(),
                self.policy.stage.clone(),
                topic,
                partition,
            );
            self.policy.control.worker(key, |w| {
                w.state = state;
                w.restarts = restarts;
                if next.is_some() {
                    w.next_offset = next;
                }
                if let Some(e) = error {
                    w.last_error = Some(e.to_owned());
                }
            });
        }
    }

    /// The partition's actor, made from the checkpoint's state when there is none.
    fn actor(&mut self) -> Result<Addr<PartitionActor>, String> {
        if let Some(a) = &self.actor
            && a.connected()
        {
            return Ok(a.clone());
        }
        let state = self.checkpoint.as_ref().map(|c| c.state.clone());
        let mut stage = (self.factory)(&self.unit, state)?;
        if let Some(c) = &self.checkpoint {
            stage.restore_parts(&c.parts)?;
        }
        let addr = PartitionActor { stage }.start();
        self.actor = Some(addr.clone());
        Ok(addr)
    }

    /// Handles a batch and produces its outputs; its checkpoint is written once the broker
    /// has acknowledged them, while the unit goes on with the next batch (at most
    /// [`PIPELINE_DEPTH`] in flight). What is checkpointed meanwhile is taken with
    /// [`take_checkpointed`](Self::take_checkpointed).
    pub async fn process(&mut self, batch: &[Record]) -> Result<(), Abandoned> {
        let m = metrics();
        for r in batch {
            self.check_gap(r);
        }
        let mut counted: Vec<(&TopicName, u64)> = Vec::new();
        for r in batch {
            match counted.iter_mut().find(|(t, _)| **t == r.topic) {
                Some(c) => c.1 += 1,
                None => counted.push((&r.topic, 1)),
            }
        }
        for (topic, n) in counted {
            m.consumed
                .with_label_values(&[topic.to_string().as_str(), &self.policy.stage])
                .inc_by(n);
        }
        self.panics.clear();
        self.advance(batch.to_vec()).await?;
        // What was checkpointed meanwhile, without waiting.
        while let Some(s) = self.writer.as_mut().and_then(|(_, rx)| rx.try_recv().ok()) {
            self.settled(s).await?;
        }
        Ok(())
    }

    /// Whether batches are in flight: their checkpoints are pending.
    pub fn pending(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Waits for what the checkpoint writer says of the oldest batch in flight; to pass to
    /// [`settled`](Self::settled). Dropping the wait loses nothing. `None`: nothing is in
    /// flight, or the writer is gone.
    pub async fn acknowledged(&mut self) -> Option<Settled> {
        if self.in_flight.is_empty() {
            return None;
        }
        self.writer.as_mut()?.1.recv().await
    }

    /// Takes in what the checkpoint writer said of a batch: checkpointed, or failed, when
    /// the unit handles it and every batch after it again from the checkpoint.
    pub async fn settled(&mut self, s: Settled) -> Result<(), Abandoned> {
        self.apply(s).await?;
        if !self.redo.is_empty() {
            self.advance(Vec::new()).await?;
        }
        Ok(())
    }

    /// Waits until every batch handled is checkpointed.
    pub async fn finish(&mut self) -> Result<(), Abandoned> {
        loop {
            if !self.redo.is_empty() {
                self.advance(Vec::new()).await?;
            }
            if self.in_flight.is_empty() {
                return Ok(());
            }
            self.wait_one().await?;
        }
    }

    /// The next offset of each input partition checkpointed since last asked: the
    /// consumer commits them.
    pub fn take_checkpointed(&mut self) -> Vec<NextOffset> {
        std::mem::take(&mut self.done)
    }

    /// The checkpoint the next batch is handled from: the last batch's in flight, or the
    /// last written.
    fn head(&self) -> Option<&Checkpoint> {
        self.in_flight
            .back()
            .map(|f| &f.checkpoint)
            .or(self.checkpoint.as_ref())
    }

    /// Handles the records (after any to handle again) until they are in flight.
    async fn advance(&mut self, mut records: Vec<Record>) -> Result<(), Abandoned> {
        loop {
            if !self.redo.is_empty() {
                let mut redo = std::mem::take(&mut self.redo);
                redo.append(&mut records);
                records = redo;
            }
            // What the head holds already is stepped over.
            let head = self.head();
            // Looked up once per input partition of the batch.
            let mut starts: Vec<(TopicName, i32, i64)> = Vec::new();
            records.retain(|r| {
                let from = *partition_entry(&mut starts, r, || {
                    head.and_then(|c| c.next_offset(&r.topic.to_string(), r.partition))
                        .unwrap_or(0)
                });
                r.offset >= from
            });
            if records.is_empty() {
                return Ok(());
            }
            if self.stopping() || !self.wait_while_paused().await {
                return Err(Abandoned);
            }
            // A batch that writes every part is written over the last checkpoint, with
            // nothing in flight before it.
            let whole = self.parts_whole || self.checkpoint.is_none();
            if self.in_flight.len() >= PIPELINE_DEPTH || (whole && !self.in_flight.is_empty()) {
                self.wait_one().await?;
                continue;
            }
            let failure = match self.attempt(&mut records).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            // The actor is replaced from the last checkpoint: what is in flight is
            // checkpointed first, or dropped to be handled again.
            let epoch = self.epoch;
            while !self.in_flight.is_empty() {
                self.wait_one().await?;
            }
            self.actor = None;
            match failure {
                Restart::Panicked(offset, _) if self.epoch != epoch => {
                    *self.panics.entry(offset).or_default() += 1;
                }
                // A batch in flight failed and its recovery restarted the actor already.
                _ if self.epoch != epoch => {}
                failure => self.recover(failure).await?,
            }
        }
    }

    /// Waits for the oldest batch in flight to be checkpointed, or to fail.
    async fn wait_one(&mut self) -> Result<(), Abandoned> {
        let s = match self.acknowledged().await {
            Some(s) => s,
            None => {
                self.writer = None;
                Settled {
                    epoch: self.epoch,
                    outcome: Err(Restart::Infrastructure(
                        "the checkpoint writer is gone".to_owned(),
                    )),
                }
            }
        };
        self.apply(s).await
    }

    async fn apply(&mut self, s: Settled) -> Result<(), Abandoned> {
        if s.epoch != self.epoch {
            return Ok(());
        }
        match s.outcome {
            Ok(()) => {
                let f = self
                    .in_flight
                    .pop_front()
                    .expect("the writer settles only batches in flight");
                self.checkpointed(f);
                Ok(())
            }
            Err(failure) => {
                // Every batch in flight is dropped and handled again from the checkpoint.
                self.epoch += 1;
                let mut redo: Vec<Record> =
                    self.in_flight.drain(..).flat_map(|f| f.records).collect();
                redo.append(&mut self.redo);
                self.redo = redo;
                self.actor = None;
                if self.stopping() {
                    return Err(Abandoned);
                }
                self.recover(failure).await
            }
        }
    }

    async fn recover(&mut self, failure: Restart) -> Result<(), Abandoned> {
        match failure {
            Restart::Panicked(offset, message) => {
                *self.panics.entry(offset).or_default() += 1;
                self.restart(&message).await;
            }
            Restart::Infrastructure(message) => self.restart(&message).await,
            Restart::Superseded(version) => self.superseded(version).await?,
        }
        Ok(())
    }

    /// A batch is checkpointed: its checkpoint is the one a restarted actor starts from,
    /// its offsets may be committed, and the metrics count it.
    fn checkpointed(&mut self, f: InFlight) {
        let m = metrics();
        let stage = self.policy.stage.as_str();
        m.checkpoint_bytes
            .with_label_values(&[stage])
            .observe(f.bytes as f64);
        // Records produced, orders by status, PnL and latencies.
        let mut produced: HashMap<&TopicName, u64> = HashMap::new();
        for (env, outputs) in &f.outputs {
            crate::metrics::observe_outputs(env, outputs);
            for o in outputs {
                *produced.entry(&o.topic).or_default() += 1;
            }
        }
        for (topic, n) in produced {
            m.produced
                .with_label_values(&[topic.to_string().as_str(), stage])
                .inc_by(n);
        }
        if f.duplicates > 0 {
            m.dedup_hits
                .with_label_values(&[stage])
                .inc_by(f.duplicates);
        }
        let source = match &self.unit {
            Unit::Partition(topic, _) => topic.to_string(),
            Unit::Stage => f
                .records
                .first()
                .map(|r| r.topic.to_string())
                .unwrap_or_default(),
        };
        for class in &f.dead_lettered {
            m.dead_lettered
                .with_label_values(&[source.as_str(), stage, class.as_str()])
                .inc();
        }
        let mut per_partition: Vec<(TopicName, i32, u64)> = Vec::new();
        for r in &f.records {
            *partition_entry(&mut per_partition, r, || 0) += 1;
        }
        for (topic, partition, n) in per_partition {
            m.partition_records
                .with_label_values(&[stage, topic.to_string().as_str(), &partition.to_string()])
                .inc_by(n);
        }
        // The parts are the last checkpoint's with the batch's changes, or the batch's.
        let mut parts = match (f.whole, self.checkpoint.as_mut()) {
            (false, Some(c)) => std::mem::take(&mut c.parts),
            _ => Default::default(),
        };
        apply_parts(&mut parts, f.parts.iter().cloned());
        let mut checkpoint = f.checkpoint;
        checkpoint.parts = parts;
        self.version = checkpoint.version;
        self.checkpoint = Some(checkpoint);
        if f.whole {
            self.parts_whole = false;
        }
        self.policy
            .control
            .record_healthy(&self.policy.namespace, &self.policy.stage);
        self.show("running", None, Some(&f.next));
        self.done.extend(f.next);
    }

    /// Another writer (a member that lost the unit, or one that took it before this one
    /// loaded) wrote the checkpoint since the one this worker holds, so this worker's write
    /// was refused. The worker reads the store's checkpoint and goes on from it when it
    /// holds at least every record this worker's does (the batch's records it covers are
    /// then stepped over); otherwise the store's is behind this worker's on some input
    /// partition, this worker's is kept and written over the store's version, and the
    /// records it is ahead on are handled again downstream's dedup absorbs.
    async fn superseded(&mut self, version: u64) -> Result<(), Abandoned> {
        self.actor = None;
        let ours = self.checkpoint.take();
        let theirs = self.load().await?;
        let covers = |theirs: &Checkpoint, ours: &Checkpoint| {
            ours.offsets
                .iter()
                .all(|(p, o)| theirs.offsets.get(p).is_some_and(|t| t >= o))
        };
        match (ours, theirs) {
            (Some(ours), Some(theirs)) if !covers(&theirs, &ours) => {
                tracing::warn!(stage = %self.policy.stage, unit = %self.label(), version = theirs.version, "another member wrote a checkpoint behind this member's; this member's is kept");
                self.checkpoint = Some(ours);
                self.parts_whole = true;
            }
            (ours, None) => {
                // Only the head is gone (removed by hand): the version stays.
                tracing::warn!(stage = %self.policy.stage, unit = %self.label(), version, "the checkpoint was removed while this member held it; this member's is kept");
                self.checkpoint = ours;
                self.version = version;
                self.parts_whole = true;
            }
            (_, Some(theirs)) => {
                tracing::info!(stage = %self.policy.stage, unit = %self.label(), version = theirs.version, "another member checkpointed this unit after this member loaded it; going on from that checkpoint");
            }
        }
        Ok(())
    }

    /// The first record read of an input partition must be the one its checkpoint expects;
    /// a later one means retention deleted records before this stage handled them.
    fn check_gap(&mut self, r: &Record) {
        if !self.gap_checked.insert((r.topic.clone(), r.partition)) {
            return;
        }
        let Some(expected) = self
            .checkpoint
            .as_ref()
            .and_then(|c| c.next_offset(&r.topic.to_string(), r.partition))
        else {
            return;
        };
        if r.offset > expected {
            let reason = format!(
                "{}/{}: records {}..{} were deleted (retention) before this stage handled them; its checkpointed state misses them. See docs/operations.md, \"A checkpoint behind retention\"",
                r.topic,
                r.partition,
                expected,
                r.offset - 1
            );
            self.policy
                .control
                .degrade(&self.policy.namespace, &self.policy.stage, reason.clone());
            self.show("running", Some(&reason), None);
        }
    }

    /// Replaces the actor with one restored from the checkpoint, after the restart backoff.
    async fn restart(&mut self, message: &str) {
        self.actor = None;
        self.restarts += 1;
        self.show("restarting", Some(message), None);
        let (namespace, stage) = (self.policy.namespace.clone(), self.policy.stage.clone());
        let actor = self.label();
        let control = self.policy.control.clone();
        if control
            .record_restart(&namespace, &stage, &actor, message)
            .await
            == Escalation::Halted
        {
            while control.trading_state(&namespace, None) == TradingState::Halted
                && !self.stopping()
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return;
        }
        let delay = self
            .policy
            .restart
            .delay(self.restarts.min(16), jitter_unit());
        tracing::warn!(stage = %stage, unit = %self.label(), delay_ms = delay.as_millis() as u64, error = message, "restarting the partition's actor from its checkpoint; the batch is handled again");
        let deadline = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < deadline && !self.stopping() {
            tokio::time::sleep(std::time::Duration::from_millis(20).min(delay)).await;
        }
    }

    async fn wait_while_paused(&self) -> bool {
        let control = &self.policy.control;
        if !control.stage_paused(&self.policy.namespace, &self.policy.stage) {
            return true;
        }
        self.show("paused", None, None);
        while control.stage_paused(&self.policy.namespace, &self.policy.stage) {
            if self.stopping() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        self.show("running", None, None);
        true
    }

    /// Handles a batch from the head, produces its outputs and hands its checkpoint to the
    /// writer; the batch is then in flight.
    async fn attempt(&mut self, records: &mut Vec<Record>) -> Result<(), Restart> {
        let infra = |e: String| Restart::Infrastructure(e);
        let actor = self.actor().map_err(infra)?;
        let batch: Vec<&Record> = records.iter().collect();
        let batch = batch.as_slice();
        let mut next: Vec<NextOffset> = Vec::new();
        for r in batch {
            let n = partition_entry(&mut next, r, || r.offset + 1);
            *n = (*n).max(r.offset + 1);
        }
        let head = self.head();
        let mut watermarks = head.map(|c| c.watermarks.clone()).unwrap_or_default();
        let mut offsets = head.map(|c| c.offsets.clone()).unwrap_or_default();
        // Decode, and read the marks of records without an origin in one round trip.
        let decoded: Vec<Option<Result<EventEnvelope, String>>> = batch
            .iter()
            .map(|r| {
                if r.replayed_for_another_group(&self.policy.group) {
                    return None;
                }
                Some(match r.value.as_deref() {
                    Some(v) => EventEnvelope::decode(v).map_err(|e| e.to_string()),
                    None => Err("record has no value (tombstone)".to_owned()),
                })
            })
            .collect();
        let origins: Vec<Option<Origin>> = batch.iter().map(|r| Origin::of(&r.headers)).collect();
        let mut foreign: Vec<(usize, String)> = Vec::new();
        for (i, (d, o)) in decoded.iter().zip(&origins).enumerate() {
            let marked_topic = self.policy.marked_topics.contains(&batch[i].topic);
            if let (Some(Ok(env)), true) = (d, o.is_none() || marked_topic) {
                foreign.push((
                    i,
                    dedup_key(&self.policy.namespace, &self.policy.group, &env.id),
                ));
            }
        }
        let keys: Vec<String> = foreign.iter().map(|(_, k)| k.clone()).collect();
        let marked = self
            .store
            .marked(&keys)
            .await
            .map_err(|e| infra(e.to_string()))?;
        // A mark of a batch in flight is not in the store yet.
        let in_flight: HashMap<&str, &str> = self
            .in_flight
            .iter()
            .flat_map(|f| f.marks.iter())
            .map(|(k, at)| (k.as_str(), at.as_str()))
            .collect();
        let mut seen_marked: HashMap<usize, (Option<String>, String)> = foreign
            .into_iter()
            .zip(marked)
            .map(|((i, k), m)| {
                let m = m.or_else(|| in_flight.get(k.as_str()).map(|at| (*at).to_owned()));
                (i, (m, k))
            })
            .collect();
        drop(in_flight);
        // Within a batch, a foreign record's id seen twice is a duplicate the second time.
        let mut batch_ids: std::collections::HashSet<String> = Default::default();

        // First pass, in order: what each record comes to without the actor, and which go
        // to it. Handled or dead-lettered, a record's origin is applied either way.
        let mut steps: Vec<Option<Step>> = Vec::with_capacity(batch.len());
        let mut candidates: Vec<(usize, Option<(String, String)>)> = Vec::new();
        // The input partition's name, made once per run of records from one partition.
        let mut input = String::new();
        let mut input_of: Option<(&TopicName, i32)> = None;
        for (i, record) in batch.iter().enumerate() {
            if input_of != Some((&record.topic, record.partition)) {
                input = partition_name(&record.topic.to_string(), record.partition);
                input_of = Some((&record.topic, record.partition));
            }
            let origin = &origins[i];
            let watermark = origin
                .as_ref()
                .map(|o| (watermark_name(&input, &o.source()), o.position()));
            let mark = seen_marked.remove(&i);
            let step = match &decoded[i] {
                None => Some(Step::Skipped { duplicate: false }),
                Some(Err(message)) => Some(self.dead_letter_step(
                    record,
                    None,
                    FailureClass::Poison,
                    message,
                    0,
                    None,
                )?),
                Some(Ok(env)) => {
                    let by_watermark = watermark
                        .as_ref()
                        .is_some_and(|(name, at)| watermarks.get(name).is_some_and(|p| p >= at));
                    // A mark made at this very record's position is not a duplicate: it
                    // is this record, handled under a checkpoint this unit did not start
                    // from (a member that lost the partition wrote one after this member
                    // loaded its own), and this unit's state has not seen it.
                    let here = mark_position(&input, record.offset);
                    let by_mark = match &mark {
                        Some((marked, key)) => {
                            marked.as_ref().is_some_and(|at| *at != here)
                                || !batch_ids.insert(key.clone())
                        }
                        None => false,
                    };
                    let duplicate = by_watermark || by_mark;
                    let mark = mark.map(|(_, k)| (k, here));
                    if duplicate {
                        Some(Step::Skipped { duplicate: true })
                    } else if self.panics.get(&record.offset).copied().unwrap_or(0) >= MAX_PANICS {
                        Some(self.dead_letter_step(
                            record,
                            Some(env),
                            FailureClass::Poison,
                            &format!("handler panicked {MAX_PANICS} times on this record"),
                            MAX_PANICS - 1,
                            mark,
                        )?)
                    } else {
                        candidates.push((i, mark));
                        None
                    }
                }
            };
            let applied = match &step {
                Some(Step::DeadLettered { .. }) | None => watermark,
                _ => None,
            };
            if let Some((name, at)) = applied {
                watermarks.insert(name, at);
            }
            steps.push(step);
        }
        // Second pass: the actor handles the candidates in one message (until one fails).
        self.handle_all(&actor, batch, &decoded, candidates, &mut steps)
            .await?;
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|s| s.unwrap_or(Step::Skipped { duplicate: false }))
            .collect();

        // Produce everything, in record order; the acknowledgements are awaited by the
        // checkpoint writer.
        let mut sends: Vec<(Option<Source>, Vec<Output>)> = Vec::new();
        let mut sent_for: Vec<Option<EventEnvelope>> = Vec::new();
        let mut marks = Vec::new();
        let mut effects = Vec::new();
        let mut duplicates = 0u64;
        let mut dead_lettered = Vec::new();
        for ((record, step), d) in batch.iter().zip(steps).zip(decoded) {
            match step {
                Step::Handled {
                    outputs,
                    effects: fx,
                    mark,
                } => {
                    for e in fx {
                        push_effect(&mut effects, e);
                    }
                    marks.extend(mark);
                    if !outputs.is_empty() {
                        sends.push((
                            Some(Source {
                                group: self.policy.group.clone(),
                                topic: record.topic.to_string(),
                                partition: record.partition,
                                offset: record.offset,
                            }),
                            outputs,
                        ));
                        sent_for.push(d.and_then(Result::ok));
                    }
                }
                Step::DeadLettered { dlq, class, mark } => {
                    marks.extend(mark);
                    dead_lettered.push(class);
                    sends.push((None, vec![*dlq]));
                    sent_for.push(None);
                }
                Step::Skipped { duplicate } => duplicates += u64::from(duplicate),
            }
        }
        let acks = self
            .producer
            .enqueue_batch(&sends)
            .await
            .map_err(|e| infra(e.to_string()))?;
        let outputs: Vec<(EventEnvelope, Vec<Output>)> = sends
            .into_iter()
            .zip(sent_for)
            .filter_map(|((_, outputs), env)| Some((env?, outputs)))
            .collect();

        // One checkpoint for the batch, over the version the batch before it writes.
        let (state, changed, batch_effects) = actor
            .send(Save)
            .await
            .map_err(|e| Restart::Infrastructure(format!("the partition's actor is gone: {e}")))?
            .map_err(|e| Restart::Infrastructure(e.message))?;
        for e in batch_effects {
            push_effect(&mut effects, e);
        }
        let expected = self.version + self.in_flight.len() as u64;
        for (topic, partition, n) in &next {
            offsets.insert(partition_name(&topic.to_string(), *partition), *n);
        }
        let checkpoint = Checkpoint {
            offsets,
            watermarks,
            state,
            version: expected + 1,
            parts: Default::default(),
        };
        let head = checkpoint.encode();
        // A unit that starts afresh, or writes its own checkpoint over another's, writes
        // every part, so that no part of another checkpoint is read with its own (nothing
        // is in flight then: `advance`).
        let whole = self.parts_whole || self.checkpoint.is_none();
        let parts: Arc<[(String, Option<String>)]> = if whole {
            let mut parts = self
                .checkpoint
                .as_ref()
                .map(|c| c.parts.clone())
                .unwrap_or_default();
            apply_parts(&mut parts, changed);
            parts.into_iter().map(|(n, v)| (n, Some(v))).collect()
        } else {
            changed.into()
        };
        let marks: Arc<[(String, String)]> = marks.into();
        let bytes = head.len()
            + parts
                .iter()
                .map(|(n, v)| n.len() + v.as_ref().map_or(0, String::len))
                .sum::<usize>();
        let commit = Commit {
            epoch: self.epoch,
            acks,
            head,
            expected,
            parts: parts.clone(),
            whole,
            marks: marks.clone(),
            effects,
            next: next.clone(),
        };
        self.writer()
            .send(commit)
            .map_err(|_| infra("the checkpoint writer is gone".to_owned()))?;
        self.in_flight.push_back(InFlight {
            records: std::mem::take(records),
            next,
            checkpoint,
            parts,
            whole,
            marks,
            outputs,
            duplicates,
            dead_lettered,
            bytes,
        });
        Ok(())
    }

    /// The checkpoint writer's queue, started on first use.
    fn writer(&mut self) -> &tmpsc::UnboundedSender<Commit> {
        if self.writer.is_none() {
            let (commits, commits_rx) = tmpsc::unbounded_channel();
            let (settled, settled_rx) = tmpsc::unbounded_channel();
            actix_rt::spawn(write_checkpoints(
                self.store.clone(),
                self.policy.clone(),
                self.key(),
                self.stop.clone(),
                commits_rx,
                settled,
                #[cfg(test)]
                self.gate.clone(),
            ));
            self.writer = Some((commits, settled_rx));
        }
        &self.writer.as_ref().expect("started above").0
    }

    /// Hands the candidates to the actor in as few messages as possible: all at once, and
    /// after a failure the rest again. Transient failures are retried in place, then
    /// dead-lettered; poison and business failures are dead-lettered; an infrastructure
    /// failure or a panic restarts the batch from the checkpoint.
    async fn handle_all(
        &self,
        actor: &Addr<PartitionActor>,
        batch: &[&Record],
        decoded: &[Option<Result<EventEnvelope, String>>],
        candidates: Vec<(usize, Option<(String, String)>)>,
        steps: &mut [Option<Step>],
    ) -> Result<(), Restart> {
        let deliver = |i: usize| {
            let envelope = match &decoded[i] {
                Some(Ok(env)) => env.clone(),
                _ => unreachable!("only decoded records are candidates"),
            };
            Deliver {
                envelope,
                topic: batch[i].topic.clone(),
                partition: batch[i].partition,
                offset: batch[i].offset,
            }
        };
        let mut next = 0;
        let mut attempts = 0u32;
        while next < candidates.len() {
            let started = std::time::Instant::now();
            let sent: Vec<Deliver> = candidates[next..]
                .iter()
                .map(|(i, _)| deliver(*i))
                .collect();
            let results = actor
                .send(HandleMany(sent))
                .await
                .unwrap_or_else(|mailbox| {
                    vec![Err(StageError {
                        panicked: true,
                        ..StageError::infrastructure(format!(
                            "the partition's actor is gone: {mailbox}"
                        ))
                    })]
                });
            let per = started.elapsed().as_secs_f64() / results.len().max(1) as f64;
            let handling = metrics().handling.with_label_values(&[&self.policy.stage]);
            for result in results {
                handling.observe(per);
                let (i, mark) = candidates[next].clone();
                let record = batch[i];
                let err = match result {
                    Ok(h) => {
                        if tracing::enabled!(tracing::Level::DEBUG)
                            && let Some(Ok(env)) = &decoded[i]
                        {
                            let span = tracing::debug_span!(
                                "record",
                                stage = %self.policy.stage,
                                topic = %record.topic,
                                partition = record.partition,
                                offset = record.offset,
                                event_id = %env.id,
                                correlation_id = %env.correlation_id,
                                trace_id = %env.trace_id,
                            );
                            let _in = span.enter();
                            tracing::debug!(outputs = h.outputs.len(), "record done");
                        }
                        steps[i] = Some(Step::Handled {
                            outputs: h.outputs,
                            effects: h.effects,
                            mark,
                        });
                        next += 1;
                        attempts = 0;
                        continue;
                    }
                    Err(e) => e,
                };
                attempts += 1;
                if err.panicked {
                    return Err(Restart::Panicked(record.offset, err.message));
                }
                match err.class() {
                    FailureClass::Transient if self.policy.transient.may_retry(attempts) => {
                        metrics()
                            .retried
                            .with_label_values(&[
                                record.topic.to_string().as_str(),
                                &self.policy.stage,
                            ])
                            .inc();
                        tokio::time::sleep(self.policy.transient.delay(attempts, jitter_unit()))
                            .await;
                        if self.stopping() {
                            return Err(Restart::Infrastructure("stopping".to_owned()));
                        }
                    }
                    FailureClass::Infrastructure => {
                        return Err(Restart::Infrastructure(err.message));
                    }
                    class => {
                        let envelope = match &decoded[i] {
                            Some(Ok(env)) => Some(env),
                            _ => None,
                        };
                        steps[i] = Some(self.dead_letter_step(
                            record,
                            envelope,
                            class,
                            &err.message,
                            attempts - 1,
                            mark,
                        )?);
                        next += 1;
                        attempts = 0;
                    }
                }
                // After a failure the actor handled nothing more: send the rest again.
                break;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter_step(
        &self,
        record: &Record,
        envelope: Option<&EventEnvelope>,
        class: FailureClass,
        message: &str,
        retries: u32,
        mark: Option<(String, String)>,
    ) -> Result<Step, Restart> {
        let Some(dlq) = dead_letter(record, envelope, &self.policy, class, message, retries) else {
            return Err(Restart::Infrastructure(format!(
                "topic {} has no DLQ",
                record.topic
            )));
        };
        tracing::warn!(stage = %self.policy.stage, topic = %record.topic, partition = record.partition, offset = record.offset, class = %class, retries, error = message, dlq = %dlq.topic, "record dead-lettered");
        Ok(Step::DeadLettered {
            dlq: Box::new(dlq),
            class,
            mark,
        })
    }
}

/// What a foreign record's dedup mark holds: its input partition (`topic/partition`) and
/// offset, so that a unit handling the same record again (from an older checkpoint) tells
/// it from another copy of the same event.
fn mark_position(input: &str, offset: i64) -> String {
    format!("{input}@{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::inprocess::InProcessBus;
    use crate::store::MemoryStore;
    use alpha_panda_core::events::MarketTick;
    use alpha_panda_core::{Decimal, EventBroker, EventData, InstrumentToken, Price, Timestamp};

    /// Counts the records it handles; the count is its state.
    struct Counting(u64);

    impl CheckpointedStage for Counting {
        fn handle(&mut self, _d: &Deliver) -> Result<Handled, StageError> {
            self.0 += 1;
            Ok(Handled::default())
        }

        fn save(&self) -> serde_json::Value {
            serde_json::json!(self.0)
        }
    }

    fn counting() -> CheckpointedFactory {
        Arc::new(|_, saved| {
            let n = saved.and_then(|v| v.as_u64()).unwrap_or(0);
            Ok(Box::new(Counting(n)) as Box<dyn CheckpointedStage>)
        })
    }

    /// A member's worker for `market.ticks/0`, on the shared store.
    fn member(store: &Store) -> CheckpointWorker {
        let mut policy = DeliveryPolicy::new("g", "strategy", "market");
        policy.restart.initial = std::time::Duration::from_millis(1);
        CheckpointWorker::new(
            Arc::new(policy),
            EventProducer::InProcess(InProcessBus::new()),
            store.clone(),
            counting(),
            Unit::Partition(TopicName::market_ticks(), 0),
            Arc::new(AtomicBool::new(false)),
        )
    }

    /// A feed's tick (no origin header: deduplicated by event id) at `offset`.
    fn tick(offset: i64, env: &EventEnvelope) -> Record {
        Record {
            topic: TopicName::market_ticks(),
            partition: 0,
            offset,
            key: Some(env.key.clone().into_bytes()),
            value: Some(env.encode()),
            headers: Vec::new(),
        }
    }

    fn envelope(n: i64) -> EventEnvelope {
        let at = Timestamp::from_unix_millis(1_705_290_000_000 + n).unwrap();
        let tick = MarketTick::new(
            InstrumentToken(1),
            Price::new(Decimal::from(100 + n)).unwrap(),
            at,
        );
        EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            "1",
            at,
            EventData::MarketTick(tick),
        )
    }

    /// Handles a batch and waits for its checkpoint.
    async fn checkpointed(worker: &mut CheckpointWorker, batch: &[Record]) {
        worker.process(batch).await.unwrap();
        worker.finish().await.unwrap();
    }

    async fn state(store: &Store, worker: &CheckpointWorker) -> u64 {
        let json = store.get(&worker.key()).await.unwrap().unwrap();
        Checkpoint::decode(&json).unwrap().state.as_u64().unwrap()
    }

    /// Member A loses the partition while it checkpoints a batch; member B loaded the
    /// checkpoint before A's write, so it handles the same records again. The marks A wrote
    /// are of these very records (same positions): B applies them, and its state counts
    /// each once. A second copy of an event (same id, another offset) is still a duplicate.
    #[actix_rt::test]
    async fn a_member_handling_records_another_member_checkpointed_after_its_load_applies_them() {
        let store = Store::Memory(MemoryStore::default());
        let mut a = member(&store);
        let mut b = member(&store);
        assert_eq!(a.load().await, Ok(None));
        assert_eq!(b.load().await, Ok(None));
        let events: Vec<EventEnvelope> = (0..5).map(envelope).collect();
        let batch: Vec<Record> = events.iter().zip(0..).map(|(e, o)| tick(o, e)).collect();
        checkpointed(&mut a, &batch).await;
        assert_eq!(state(&store, &a).await, 5);

        checkpointed(&mut b, &batch).await;
        assert_eq!(
            state(&store, &b).await,
            5,
            "B's state saw every record once"
        );
        // The feed sent event 2 again: another offset, the same id.
        checkpointed(&mut b, &[tick(5, &events[2])]).await;
        assert_eq!(state(&store, &b).await, 5, "a second copy is a duplicate");
        checkpointed(&mut b, &[tick(6, &envelope(6))]).await;
        assert_eq!(state(&store, &b).await, 6);
    }

    fn ticks(offsets: std::ops::Range<i64>) -> Vec<Record> {
        offsets.map(|o| tick(o, &envelope(o))).collect()
    }

    /// A member that lost the partition (a zombie, still at the checkpoint it wrote) cannot
    /// write over the checkpoint its successor wrote since: its write is refused, it goes on
    /// from the successor's checkpoint, and the stored state never moves back.
    #[actix_rt::test]
    async fn a_zombie_cannot_move_the_checkpoint_back() {
        let store = Store::Memory(MemoryStore::default());
        let mut zombie = member(&store);
        zombie.load().await.unwrap();
        checkpointed(&mut zombie, &ticks(0..5)).await;
        let mut successor = member(&store);
        successor.load().await.unwrap();
        checkpointed(&mut successor, &ticks(5..8)).await;
        assert_eq!(state(&store, &successor).await, 8);

        // The zombie handles the next record from its own, older checkpoint: written, its
        // checkpoint would move the partition back from 8 to 6.
        checkpointed(&mut zombie, &ticks(5..6)).await;
        let stored = store.load_checkpoint(&zombie.key()).await.unwrap().unwrap();
        assert_eq!(stored.version, 2, "the zombie wrote nothing");
        assert_eq!(state(&store, &zombie).await, 8);
        // It went on from the successor's checkpoint: what that holds is stepped over.
        checkpointed(&mut zombie, &ticks(6..10)).await;
        assert_eq!(state(&store, &zombie).await, 10);
        // And the successor, now behind the store, goes on from the zombie's.
        checkpointed(&mut successor, &ticks(8..11)).await;
        assert_eq!(
            state(&store, &successor).await,
            11,
            "each record counted once"
        );
    }

    /// A checkpoint another writer left behind this member's own (a stage unit's partitions
    /// read by two members at once) does not make this member drop what it holds: its own
    /// checkpoint is written over the store's version.
    #[actix_rt::test]
    async fn a_checkpoint_behind_this_members_own_is_written_over() {
        let store = Store::Memory(MemoryStore::default());
        let mut a = member(&store);
        a.load().await.unwrap();
        checkpointed(&mut a, &ticks(0..5)).await;
        let behind = Checkpoint {
            offsets: [("market.ticks/0".to_owned(), 2)].into(),
            watermarks: Default::default(),
            state: serde_json::json!(2),
            version: 0,
            parts: Default::default(),
        };
        let written = store
            .save_checkpoint(&crate::store::CheckpointWrite {
                key: &a.key(),
                head: &behind.encode(),
                expected: 1,
                parts: &[],
                replace_parts: false,
                marks: &[],
                ttl: std::time::Duration::from_secs(60),
                effects: &[],
            })
            .await
            .unwrap();
        assert_eq!(written, crate::store::Written::Done);
        checkpointed(&mut a, &ticks(5..7)).await;
        assert_eq!(state(&store, &a).await, 7);
        let stored = store.load_checkpoint(&a.key()).await.unwrap().unwrap();
        assert_eq!(stored.version, 3);
    }

    /// Batches handled while the checkpoints before them are pending are checkpointed one
    /// after the other, in order, each over the version the one before it wrote; what is
    /// checkpointed is handed over to commit, in order.
    #[actix_rt::test]
    async fn batches_in_flight_are_checkpointed_in_order() {
        let store = Store::Memory(MemoryStore::default());
        let mut a = member(&store);
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        a.gate = Some(gate.clone());
        a.load().await.unwrap();
        checkpointed(&mut a, &ticks(0..2)).await;
        // The writer is held back: batches pile up in flight, then wait for room.
        for from in (2..2 + 2 * PIPELINE_DEPTH as i64).step_by(2) {
            a.process(&ticks(from..from + 2)).await.unwrap();
        }
        assert_eq!(a.in_flight.len(), PIPELINE_DEPTH);
        assert_eq!(
            state(&store, &a).await,
            2,
            "nothing more is checkpointed yet"
        );
        gate.add_permits(1000);
        for from in (2 + 2 * PIPELINE_DEPTH as i64..40).step_by(2) {
            a.process(&ticks(from..from + 2)).await.unwrap();
            assert!(a.in_flight.len() <= PIPELINE_DEPTH);
        }
        a.finish().await.unwrap();
        assert!(!a.pending());
        let stored = store.load_checkpoint(&a.key()).await.unwrap().unwrap();
        assert_eq!(stored.version, 20, "one checkpoint per batch");
        assert_eq!(state(&store, &a).await, 40);
        let committed: Vec<i64> = a.take_checkpointed().iter().map(|n| n.2).collect();
        assert_eq!(committed, (2..=40).step_by(2).collect::<Vec<i64>>());
    }

    /// A batch whose checkpoint is refused (another member wrote since) takes every batch
    /// in flight after it down with it: none of them is written, and their records are
    /// handled again from the store's checkpoint, each once.
    #[actix_rt::test]
    async fn batches_in_flight_behind_a_refused_checkpoint_are_handled_again() {
        let store = Store::Memory(MemoryStore::default());
        let mut zombie = member(&store);
        zombie.load().await.unwrap();
        checkpointed(&mut zombie, &ticks(0..5)).await;
        let mut successor = member(&store);
        successor.load().await.unwrap();
        checkpointed(&mut successor, &ticks(5..8)).await;

        // The zombie handles three batches from its own, older checkpoint before it hears
        // that the first is refused.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        zombie.gate = Some(gate.clone());
        zombie.writer = None;
        for from in [5, 7, 9] {
            zombie.process(&ticks(from..from + 2)).await.unwrap();
        }
        assert_eq!(zombie.in_flight.len(), 3);
        gate.add_permits(1000);
        zombie.finish().await.unwrap();
        assert_eq!(
            state(&store, &zombie).await,
            11,
            "records 8..11 counted once, those the successor holds not again"
        );
        let stored = store.load_checkpoint(&zombie.key()).await.unwrap().unwrap();
        assert!(stored.version >= 3);
        checkpointed(&mut successor, &ticks(11..12)).await;
        assert_eq!(state(&store, &successor).await, 12);
    }
}
