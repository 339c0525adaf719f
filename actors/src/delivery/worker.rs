//! Processing one partition's records, strictly in order: the part of delivery both
//! transports share. See the module docs of `delivery` for the steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::Recipient;
use alpha_panda_core::{Classify, EventEnvelope, FailureClass, TradingState};

use super::backoff::jitter_unit;
use super::dlq::dead_letter;
use super::origin::{Origin, Source, watermark_key};
use super::producer::EventProducer;
use super::stage::{Deliver, Handled, StageError};
use super::{DeliveryPolicy, Record};
use crate::control::Escalation;
use crate::metrics::metrics;
use crate::store::{Store, StoreError, Watermarks, dedup_key};

/// Makes a fresh stage actor for a partition; called on the partition's arbiter, again after
/// each infrastructure failure.
pub type StageFactory = Arc<dyn Fn() -> Recipient<Deliver> + Send + Sync>;

/// How a record ended. Every variant means "done": its offset may be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Handled; outputs delivered, marked processed.
    Handled { outputs: usize },
    /// Already marked processed by this group: skipped.
    Duplicate,
    /// Sent to the DLQ.
    DeadLettered { class: FailureClass, retries: u32 },
    /// A DLQ replay addressed to another consumer group: not this group's to handle.
    ForAnotherGroup,
}

/// The record was not finished because the partition is being revoked or the process is
/// stopping. Nothing was marked for it; it is redelivered to whoever owns the partition next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

pub struct PartitionWorker {
    policy: Arc<DeliveryPolicy>,
    producer: EventProducer,
    store: Store,
    factory: StageFactory,
    stage: Recipient<Deliver>,
    /// Set when the partition is revoked or the process stops.
    stop: Arc<AtomicBool>,
    /// Restarts of the stage actor since the partition was assigned.
    pub restarts: u32,
    /// Consecutive infrastructure failures, for the restart backoff; forgotten after
    /// `HEALTHY_RESET` without one.
    failures: u32,
    last_failure: Option<std::time::Instant>,
    series: Option<Series>,
    /// Per destination topic, the `records_produced_total` series.
    produced: std::collections::HashMap<alpha_panda_topics::TopicName, prometheus::IntCounter>,
    last_status: std::time::Instant,
    /// The watermarks of the partition this worker handles (its store key and the highest
    /// origin applied per source), read from the store at the first record with an origin
    /// and kept up to date as records are applied.
    watermarks: Option<(String, Watermarks)>,
}

/// How often a busy worker refreshes its `/status` entry.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The metric series of one partition's worker.
#[derive(Clone)]
struct Series {
    topic: alpha_panda_topics::TopicName,
    partition: i32,
    consumed: prometheus::IntCounter,
    partition_records: prometheus::IntCounter,
    dedup_hits: prometheus::IntCounter,
    handling: prometheus::Histogram,
}

/// A stage that ran this long without an infrastructure failure starts its restart backoff
/// from the beginning again.
const HEALTHY_RESET: std::time::Duration = std::time::Duration::from_secs(60);

/// Panics of a handler on one record that make the record poison.
pub const MAX_PANICS: u32 = 3;

/// A failure that stops the record's processing for now.
enum Interrupt {
    /// Replace the actor and handle the record again (nothing was committed).
    Infrastructure(String),
    /// The handler panicked (or its actor died): as infrastructure, but counted.
    Panicked(String),
    /// Dead-letter the record with this class.
    DeadLetter(FailureClass, String, u32),
}

impl PartitionWorker {
    pub fn new(
        policy: Arc<DeliveryPolicy>,
        producer: EventProducer,
        store: Store,
        factory: StageFactory,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let stage = factory();
        Self {
            policy,
            producer,
            store,
            factory,
            stage,
            stop,
            restarts: 0,
            failures: 0,
            last_failure: None,
            series: None,
            produced: Default::default(),
            last_status: std::time::Instant::now() - STATUS_EVERY,
            watermarks: None,
        }
    }

    fn status_key(&self, record: &Record) -> crate::control::WorkerKey {
        (
            self.policy.namespace.clone(),
            self.policy.stage.clone(),
            record.topic.to_string(),
            record.partition,
        )
    }

    /// Shows the worker's state for a record in `/status`.
    fn show(&self, record: &Record, state: &'static str, error: Option<&str>) {
        let restarts = self.restarts;
        self.policy.control.worker(self.status_key(record), |w| {
            w.state = state;
            w.restarts = restarts;
            w.next_offset = Some(record.offset);
            if let Some(e) = error {
                w.last_error = Some(e.to_owned());
            }
        });
    }

    /// Shows the partition as held by this worker in `/status`.
    pub fn assigned(&self, topic: &alpha_panda_topics::TopicName, partition: i32) {
        let key = (
            self.policy.namespace.clone(),
            self.policy.stage.clone(),
            topic.to_string(),
            partition,
        );
        self.policy.control.worker(key, |w| w.state = "running");
    }

    /// Marks the partition released in `/status`.
    pub fn released(&self, topic: &alpha_panda_topics::TopicName, partition: i32) {
        let key = (
            self.policy.namespace.clone(),
            self.policy.stage.clone(),
            topic.to_string(),
            partition,
        );
        self.policy.control.worker(key, |w| w.state = "released");
    }

    /// Waits while an operator holds this stage paused; false if the partition is given up
    /// meanwhile.
    async fn wait_while_paused(&self, record: &Record) -> bool {
        let control = &self.policy.control;
        if !control.stage_paused(&self.policy.namespace, &self.policy.stage) {
            return true;
        }
        self.show(record, "paused", None);
        tracing::info!(stage = %self.policy.stage, broker = %self.policy.namespace, topic = %record.topic, partition = record.partition, offset = record.offset, "paused by an operator; the record waits");
        while control.stage_paused(&self.policy.namespace, &self.policy.stage) {
            if self.stopping() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        self.show(record, "running", None);
        true
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The watermarks of the record's partition, read from the store once.
    async fn watermarks_of(&mut self, record: &Record) -> Result<&mut Watermarks, StoreError> {
        let key = watermark_key(
            &self.policy.namespace,
            &self.policy.group,
            &record.topic.to_string(),
            record.partition,
        );
        if self.watermarks.as_ref().is_none_or(|(k, _)| *k != key) {
            let marks = self.store.watermarks(&key).await?;
            self.watermarks = Some((key, marks));
        }
        Ok(&mut self
            .watermarks
            .as_mut()
            .unwrap_or_else(|| unreachable!("set just above"))
            .1)
    }

    /// Whether this group applied the record already: by its origin's watermark when it
    /// has an origin, else by its event id's mark.
    async fn applied(
        &mut self,
        record: &Record,
        envelope: &EventEnvelope,
    ) -> Result<bool, StoreError> {
        match Origin::of(&record.headers) {
            Some(origin) => Ok(self
                .watermarks_of(record)
                .await?
                .get(&origin.source())
                .is_some_and(|p| *p >= origin.position())),
            None => {
                let key = dedup_key(&self.policy.namespace, &self.policy.group, &envelope.id);
                self.store.is_marked(&key).await
            }
        }
    }

    /// Records the record as applied **together with** its effects, atomically: the
    /// origin's watermark advanced, or the event id marked.
    async fn record_applied(
        &mut self,
        record: &Record,
        envelope: &EventEnvelope,
        effects: &[crate::store::Effect],
    ) -> Result<(), StoreError> {
        match Origin::of(&record.headers) {
            Some(origin) => {
                let key = watermark_key(
                    &self.policy.namespace,
                    &self.policy.group,
                    &record.topic.to_string(),
                    record.partition,
                );
                self.store
                    .advance(&key, &origin.source(), origin.position(), effects)
                    .await?;
                let marks = self.watermarks_of(record).await?;
                let at = marks.entry(origin.source()).or_insert(origin.position());
                *at = (*at).max(origin.position());
            }
            None => {
                let key = dedup_key(&self.policy.namespace, &self.policy.group, &envelope.id);
                self.store
                    .mark(&key, self.policy.dedup_ttl, effects)
                    .await?;
            }
        }
        Ok(())
    }

    /// Processes one record to the end, restarting the stage actor with backoff after
    /// infrastructure failures, until it is done or the partition is given up.
    pub async fn process(&mut self, record: &Record) -> Result<Processed, Abandoned> {
        let stage = self.policy.stage.clone();
        let series = self.series(record);
        series.consumed.inc();
        let span = record_span(&stage, record);
        let outcome = tracing::Instrument::instrument(
            async {
                let outcome = self.process_inner(record).await;
                if let Ok(done) = &outcome {
                    tracing::debug!(outcome = ?done, "record done");
                }
                outcome
            },
            span,
        )
        .await;
        if let Ok(done) = &outcome {
            series.partition_records.inc();
            match done {
                Processed::Duplicate => series.dedup_hits.inc(),
                Processed::DeadLettered { class, .. } => metrics()
                    .dead_lettered
                    .with_label_values(&[record.topic.to_string().as_str(), &stage, class.as_str()])
                    .inc(),
                Processed::Handled { .. } | Processed::ForAnotherGroup => {}
            }
            // Status and degradation are for people: refresh them a few times a second,
            // not on every record.
            let now = std::time::Instant::now();
            if now.duration_since(self.last_status) >= STATUS_EVERY {
                self.last_status = now;
                self.policy
                    .control
                    .record_healthy(&self.policy.namespace, &stage);
                self.policy.control.worker(self.status_key(record), |w| {
                    w.state = "running";
                    w.next_offset = Some(record.offset + 1);
                });
            }
        }
        outcome
    }

    /// This worker's metric series for the record's partition, looked up once.
    fn series(&mut self, record: &Record) -> Series {
        if let Some(s) = &self.series
            && s.topic == record.topic
            && s.partition == record.partition
        {
            return s.clone();
        }
        let m = metrics();
        let (stage, topic) = (self.policy.stage.as_str(), record.topic.to_string());
        let s = Series {
            topic: record.topic.clone(),
            partition: record.partition,
            consumed: m.consumed.with_label_values(&[topic.as_str(), stage]),
            partition_records: m.partition_records.with_label_values(&[
                stage,
                topic.as_str(),
                &record.partition.to_string(),
            ]),
            dedup_hits: m.dedup_hits.with_label_values(&[stage]),
            handling: m.handling.with_label_values(&[stage]),
        };
        self.series = Some(s.clone());
        s
    }

    async fn process_inner(&mut self, record: &Record) -> Result<Processed, Abandoned> {
        // What the stage returned for this record, kept across the restarts of this record:
        // when producing or marking failed, the record is finished with the same result
        // instead of being handled again (stages keep state, and must see each record once).
        let mut handled: Option<Handled> = None;
        let mut panics = 0u32;
        loop {
            if self.stopping() || !self.wait_while_paused(record).await {
                return Err(Abandoned);
            }
            match self.attempt(record, &mut handled).await {
                Ok(done) => return Ok(done),
                Err(Interrupt::DeadLetter(class, message, retries)) => {
                    match self.dead_letter(record, class, &message, retries).await {
                        Ok(()) => return Ok(Processed::DeadLettered { class, retries }),
                        Err(e) => {
                            self.restart(record, &format!("DLQ write failed: {e}"))
                                .await;
                        }
                    }
                }
                Err(Interrupt::Panicked(message)) => {
                    panics += 1;
                    if panics >= MAX_PANICS {
                        let message = format!("{message} ({panics} times on this record)");
                        match self
                            .dead_letter(record, FailureClass::Poison, &message, panics - 1)
                            .await
                        {
                            Ok(()) => {
                                return Ok(Processed::DeadLettered {
                                    class: FailureClass::Poison,
                                    retries: panics - 1,
                                });
                            }
                            Err(e) => {
                                self.restart(record, &format!("DLQ write failed: {e}"))
                                    .await
                            }
                        }
                    } else {
                        self.restart(record, &message).await;
                    }
                }
                Err(Interrupt::Infrastructure(message)) => {
                    self.restart(record, &message).await;
                }
            }
        }
    }

    /// Waits out the restart backoff (cut short if the partition is stopped) and replaces
    /// the stage actor.
    async fn restart(&mut self, record: &Record, message: &str) {
        let now = std::time::Instant::now();
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) > HEALTHY_RESET)
        {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = Some(now);
        let failures = self.failures;
        self.show(record, "restarting", Some(message));
        let control = self.policy.control.clone();
        let (namespace, stage) = (self.policy.namespace.clone(), self.policy.stage.clone());
        let actor = format!("{}/{}", record.topic, record.partition);
        if control
            .record_restart(&namespace, &stage, &actor, message)
            .await
            == Escalation::Halted
        {
            // The order path does not restart in a loop: wait for an operator.
            self.show(record, "halted", Some(message));
            while control.trading_state(&namespace, None) == TradingState::Halted {
                if self.stopping() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tracing::info!(broker = %namespace, stage = %stage, "trading resumed by an operator; restarting the stage");
            self.failures = 0;
            self.stage = (self.factory)();
            self.restarts += 1;
            self.show(record, "running", None);
            return;
        }
        let delay = self.policy.restart.delay(failures, jitter_unit());
        tracing::warn!(
            stage = %self.policy.stage,
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            failures,
            delay_ms = delay.as_millis() as u64,
            error = message,
            "infrastructure failure; restarting the stage actor, record will be handled again"
        );
        let deadline = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < deadline && !self.stopping() {
            tokio::time::sleep(std::time::Duration::from_millis(20).min(delay)).await;
        }
        self.stage = (self.factory)();
        self.restarts += 1;
        self.show(record, "running", None);
    }

    async fn attempt(
        &mut self,
        record: &Record,
        cached: &mut Option<Handled>,
    ) -> Result<Processed, Interrupt> {
        if record.replayed_for_another_group(&self.policy.group) {
            tracing::debug!(stage = %self.policy.stage, topic = %record.topic, offset = record.offset, "a DLQ replay for another consumer group; stepped over");
            return Ok(Processed::ForAnotherGroup);
        }
        let envelope = match record.value.as_deref().map(EventEnvelope::decode) {
            Some(Ok(env)) => env,
            Some(Err(e)) => {
                return Err(Interrupt::DeadLetter(
                    FailureClass::Poison,
                    e.to_string(),
                    0,
                ));
            }
            None => {
                return Err(Interrupt::DeadLetter(
                    FailureClass::Poison,
                    "record has no value (tombstone)".to_owned(),
                    0,
                ));
            }
        };
        record_ids(&envelope);
        if self
            .applied(record, &envelope)
            .await
            .map_err(store_interrupt)?
        {
            tracing::debug!(stage = %self.policy.stage, event_id = %envelope.id, "duplicate skipped");
            return Ok(Processed::Duplicate);
        }
        let handled = match cached {
            Some(h) => h.clone(),
            None => {
                let h = self.handle(record, envelope.clone()).await?;
                *cached = Some(h.clone());
                h
            }
        };
        let source = Source {
            group: self.policy.group.clone(),
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
        };
        self.producer
            .send_all_from(&handled.outputs, Some(&source))
            .await
            .map_err(|e| Interrupt::Infrastructure(e.to_string()))?;
        self.record_applied(record, &envelope, &handled.effects)
            .await
            .map_err(store_interrupt)?;
        crate::metrics::observe_outputs(&envelope, &handled.outputs);
        for o in &handled.outputs {
            match self.produced.get(&o.topic) {
                Some(c) => c.inc(),
                None => {
                    let c = metrics()
                        .produced
                        .with_label_values(&[o.topic.to_string().as_str(), &self.policy.stage]);
                    c.inc();
                    self.produced.insert(o.topic.clone(), c);
                }
            }
        }
        Ok(Processed::Handled {
            outputs: handled.outputs.len(),
        })
    }

    /// Sends the record to the stage actor, retrying transient failures in place.
    async fn handle(
        &mut self,
        record: &Record,
        envelope: EventEnvelope,
    ) -> Result<Handled, Interrupt> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let msg = Deliver {
                envelope: envelope.clone(),
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
            };
            let started = std::time::Instant::now();
            let result = match self.stage.send(msg).await {
                Ok(r) => r,
                // An actor that dies while handling a record has panicked (or was stopped).
                Err(mailbox) => Err(StageError {
                    panicked: true,
                    ..StageError::infrastructure(format!("stage actor is gone: {mailbox}"))
                }),
            };
            self.series(record)
                .handling
                .observe(started.elapsed().as_secs_f64());
            let err = match result {
                Ok(handled) => return Ok(handled),
                Err(e) => e,
            };
            if err.panicked {
                tracing::error!(stage = %self.policy.stage, event_id = %envelope.id, error = %err.message, "stage handler panicked");
                return Err(Interrupt::Panicked(err.message));
            }
            match err.class() {
                FailureClass::Transient if self.policy.transient.may_retry(attempts) => {
                    metrics()
                        .retried
                        .with_label_values(&[record.topic.to_string().as_str(), &self.policy.stage])
                        .inc();
                    let delay = self.policy.transient.delay(attempts, jitter_unit());
                    tracing::info!(
                        stage = %self.policy.stage,
                        event_id = %envelope.id,
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        error = %err.message,
                        "transient failure; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    if self.stopping() {
                        return Err(Interrupt::Infrastructure("stopping".to_owned()));
                    }
                }
                FailureClass::Transient => {
                    return Err(Interrupt::DeadLetter(
                        FailureClass::Transient,
                        err.message,
                        attempts - 1,
                    ));
                }
                FailureClass::Poison => {
                    return Err(Interrupt::DeadLetter(
                        FailureClass::Poison,
                        err.message,
                        attempts - 1,
                    ));
                }
                FailureClass::Business => {
                    // A business outcome should arrive as a domain event in `Handled`
                    // (a rejected signal, a failed order). One that arrives as an error
                    // instead is not dropped: it goes to the DLQ with its class, so it is
                    // seen, counted and can be replayed.
                    return Err(Interrupt::DeadLetter(
                        FailureClass::Business,
                        err.message,
                        attempts - 1,
                    ));
                }
                FailureClass::Infrastructure => {
                    return Err(Interrupt::Infrastructure(err.message));
                }
            }
        }
    }

    async fn dead_letter(
        &mut self,
        record: &Record,
        class: FailureClass,
        message: &str,
        retries: u32,
    ) -> Result<(), String> {
        let decoded = record
            .value
            .as_deref()
            .and_then(|v| EventEnvelope::decode(v).ok());
        let Some(out) = dead_letter(
            record,
            decoded.as_ref(),
            &self.policy,
            class,
            message,
            retries,
        ) else {
            return Err(format!("topic {} has no DLQ", record.topic));
        };
        tracing::warn!(
            stage = %self.policy.stage,
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            class = %class,
            retries,
            error = message,
            dlq = %out.topic,
            "record dead-lettered"
        );
        self.producer
            .send_all(std::slice::from_ref(&out))
            .await
            .map_err(|e| e.to_string())?;
        // A decodable original is recorded as applied, so a redelivery does not
        // dead-letter it again (replay gives it a new id and no origin).
        if let Some(env) = decoded {
            self.record_applied(record, &env, &[])
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The span every log line about a record carries: where it came from and, when it
/// decodes, its event, correlation and trace ids.
fn record_span(stage: &str, record: &Record) -> tracing::Span {
    let span = tracing::info_span!(
        "record",
        stage,
        topic = %record.topic,
        partition = record.partition,
        offset = record.offset,
        event_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    span
}

/// Fills the ids of the current record span once the envelope is decoded.
fn record_ids(envelope: &EventEnvelope) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("event_id", tracing::field::display(envelope.id));
        span.record(
            "correlation_id",
            tracing::field::display(envelope.correlation_id),
        );
        span.record("trace_id", tracing::field::display(envelope.trace_id));
    }
}

fn store_interrupt(e: crate::store::StoreError) -> Interrupt {
    // Transient store errors are also handled by restarting: the record is simply handled
    // again, and marks are idempotent.
    Interrupt::Infrastructure(e.to_string())
}
