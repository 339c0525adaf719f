//! The delivery contract, run against both transports: Kafka (Apache Kafka + Redis) and the
//! in-process transport (+ in-memory store). Each scenario is written once.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{Backoff, Deliver, DeliveryPolicy, StageError};
use alpha_panda_actors::store::Store;
use alpha_panda_core::{EventData, EventEnvelope, FailureClass};
use alpha_panda_tests::Namespace;
use alpha_panda_tests::stages::validate;
use alpha_panda_tests::transport::{Bus, Member};
use alpha_panda_topics::{BrokerTopic, TopicName};
use uuid::Uuid;

/// Handler invocations per input id.
type Calls = Arc<Mutex<HashMap<Uuid, u32>>>;
/// Whether (and how) a record fails, given its id and how often it was seen.
type FailWhen = Arc<dyn Fn(Uuid, u32) -> Option<StageError> + Send + Sync>;

struct Case {
    bus: Bus,
    ns: Namespace,
    raw: TopicName,
    validated: TopicName,
    dlq: TopicName,
    store: Store,
    counter: String,
    calls: Calls,
}

impl Case {
    async fn new(bus: Bus) -> Self {
        let ns = Namespace::new();
        let raw = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
        let validated = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
        let dlq = raw.dlq().unwrap();
        bus.create_topics(&ns, &[raw.clone(), validated.clone(), dlq.clone()])
            .await;
        let store = bus.store().await;
        let counter = format!("{}:test:effects", ns.redis_prefix());
        Self {
            bus,
            ns,
            raw,
            validated,
            dlq,
            store,
            counter,
            calls: Calls::default(),
        }
    }

    fn member(&self, fail: Option<FailWhen>, slow: Duration) -> Member {
        let mut policy =
            DeliveryPolicy::new(self.ns.group("risk"), "risk", self.ns.broker.as_str());
        policy.transient = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            tries: 3,
            jitter: 0.2,
        };
        let (counter, calls) = (self.counter.clone(), self.calls.clone());
        let factory: StageFactory = Arc::new(move || {
            let (counter, calls, fail) = (counter.clone(), calls.clone(), fail.clone());
            FnStage::new(move |d: &Deliver| {
                let seen = {
                    let mut c = calls.lock().unwrap();
                    let n = c.entry(d.envelope.id).or_insert(0);
                    *n += 1;
                    *n
                };
                if let Some(e) = fail.as_ref().and_then(|f| f(d.envelope.id, seen)) {
                    return Err(e);
                }
                if !slow.is_zero() {
                    std::thread::sleep(slow);
                }
                validate(d, &counter)
            })
            .start()
            .recipient()
        });
        self.bus
            .member(vec![self.raw.clone()], policy, self.store.clone(), factory)
    }

    async fn effects(&self) -> usize {
        self.store
            .get(&self.counter)
            .await
            .unwrap()
            .map_or(0, |v| v.parse().unwrap())
    }

    async fn wait_effects(&self, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.effects().await < want {
            assert!(
                Instant::now() < deadline,
                "{}: stuck at {} of {want} effects",
                self.bus.name(),
                self.effects().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn outputs(&self, want: usize) -> Vec<EventEnvelope> {
        self.bus
            .read(&self.validated, want, Duration::from_secs(30))
            .await
            .into_iter()
            .map(|r| EventEnvelope::decode(&r.3.unwrap()).unwrap())
            .collect()
    }

    fn handled_more_than_once(&self) -> Vec<Uuid> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect()
    }
}

fn run<F, Fut>(bus: Bus, scenario: F)
where
    F: FnOnce(Bus) -> Fut,
    Fut: Future<Output = ()>,
{
    actix_rt::System::new().block_on(scenario(bus));
}

async fn every_input_has_one_output_and_one_effect(bus: Bus) {
    const N: usize = 600;
    let c = Case::new(bus).await;
    let inputs = c.bus.feed(&c.ns.broker, &c.raw, N).await;
    let m = c.member(None, Duration::ZERO);
    c.wait_effects(N).await;
    m.shutdown().await;
    let outs = c.outputs(N).await;
    let ids: BTreeSet<Uuid> = outs.iter().map(|e| e.id).collect();
    let causes: BTreeSet<Uuid> = outs.iter().filter_map(|e| e.causation_id).collect();
    assert_eq!(ids.len(), N, "{}: distinct output ids", c.bus.name());
    assert_eq!(
        causes,
        inputs.iter().map(|e| e.id).collect(),
        "{}",
        c.bus.name()
    );
    assert_eq!(c.effects().await, N);
    assert!(c.handled_more_than_once().is_empty(), "{}", c.bus.name());
}

async fn poison_is_dead_lettered_and_the_partition_goes_on(bus: Bus) {
    let c = Case::new(bus).await;
    let key = "s0|738561";
    let (p, o) = c.bus.feed_raw(&c.raw, key, b"\xff\xfe not json").await;
    // Three more records on the same key, so the same partition, behind the poison one.
    let after = c.bus.feed(&c.ns.broker, &c.raw, 25).await;
    let same_key = after.iter().filter(|e| e.key == key).count();
    let m = c.member(None, Duration::ZERO);
    c.wait_effects(after.len()).await;
    let dead = c.bus.read(&c.dlq, 1, Duration::from_secs(30)).await;
    m.shutdown().await;
    assert!(
        same_key >= 2,
        "records followed the poison one on its partition"
    );
    assert_eq!(dead.len(), 1, "{}", c.bus.name());
    let env = EventEnvelope::decode(dead[0].3.as_deref().unwrap()).unwrap();
    let EventData::SystemError(e) = env.data else {
        panic!("system_error expected")
    };
    assert_eq!((e.original_partition, e.original_offset), (p, o));
    assert_eq!(e.error_class, FailureClass::Poison);
    assert_eq!(e.original_key.as_deref(), Some(key));
    assert_eq!(
        e.value_encoding,
        alpha_panda_core::events::ValueEncoding::Base64,
        "non-UTF-8 bytes are kept as base64"
    );
}

async fn transient_failures_are_retried_in_place(bus: Bus) {
    let c = Case::new(bus).await;
    let inputs = c.bus.feed(&c.ns.broker, &c.raw, 12).await;
    let (flaky, doomed) = (inputs[3].id, inputs[7].id);
    let fail: FailWhen = Arc::new(move |id, seen| {
        ((id == flaky && seen <= 2) || id == doomed).then(|| StageError::transient("timeout"))
    });
    let m = c.member(Some(fail), Duration::ZERO);
    c.wait_effects(11).await;
    let dead = c.bus.read(&c.dlq, 1, Duration::from_secs(30)).await;
    m.shutdown().await;
    let calls = c.calls.lock().unwrap().clone();
    assert_eq!(calls[&flaky], 3, "failed twice, handled on the third try");
    assert_eq!(calls[&doomed], 3, "tried the configured 3 times");
    assert_eq!(dead.len(), 1, "only the doomed record is dead-lettered");
    let env = EventEnvelope::decode(dead[0].3.as_deref().unwrap()).unwrap();
    assert_eq!(env.causation_id, Some(doomed));
    assert_eq!(c.effects().await, 11);
}

/// A business failure that a stage reports as an error instead of a domain event is not
/// dropped with a log line: it reaches the DLQ with its class, once, and the rest goes on.
async fn a_business_failure_without_an_event_is_dead_lettered(bus: Bus) {
    let c = Case::new(bus).await;
    let inputs = c.bus.feed(&c.ns.broker, &c.raw, 12).await;
    let refused = inputs[5].id;
    let fail: FailWhen = Arc::new(move |id, _| {
        (id == refused).then(|| StageError::new(FailureClass::Business, "order refused"))
    });
    let m = c.member(Some(fail), Duration::ZERO);
    c.wait_effects(11).await;
    let dead = c.bus.read(&c.dlq, 1, Duration::from_secs(30)).await;
    m.shutdown().await;
    assert_eq!(dead.len(), 1, "{}", c.bus.name());
    let env = EventEnvelope::decode(dead[0].3.as_deref().unwrap()).unwrap();
    assert_eq!(env.causation_id, Some(refused));
    let EventData::SystemError(e) = env.data else {
        panic!("system_error expected")
    };
    assert_eq!(e.error_class, FailureClass::Business);
    assert!(
        e.error_message.contains("order refused"),
        "{}",
        e.error_message
    );
    assert_eq!(c.calls.lock().unwrap()[&refused], 1, "not retried");
    assert_eq!(c.effects().await, 11);
}

async fn a_new_member_resumes_after_the_committed_offsets(bus: Bus) {
    const N: usize = 1_500;
    let c = Case::new(bus).await;
    let inputs = c.bus.feed(&c.ns.broker, &c.raw, N).await;
    let first = c.member(None, Duration::from_micros(800));
    c.wait_effects(200).await;
    first.shutdown().await;
    let stopped_at = c.effects().await;
    assert!(stopped_at < N, "stopped mid-stream");
    let second = c.member(None, Duration::ZERO);
    c.wait_effects(N).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.shutdown().await;
    assert_eq!(
        c.effects().await,
        N,
        "{}: every effect exactly once",
        c.bus.name()
    );
    let handled: BTreeSet<Uuid> = c.calls.lock().unwrap().keys().copied().collect();
    assert_eq!(
        handled,
        inputs.iter().map(|e| e.id).collect(),
        "nothing lost"
    );
    assert!(
        c.handled_more_than_once().is_empty(),
        "{}: the second member redid committed work",
        c.bus.name()
    );
}

async fn members_split_partitions_and_hand_over_on_leaving(bus: Bus) {
    const N: usize = 3_000;
    let c = Case::new(bus).await;
    let inputs = c.bus.feed(&c.ns.broker, &c.raw, N).await;
    let a = c.member(None, Duration::from_micros(500));
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.assignment().len() < 6 {
        assert!(Instant::now() < deadline, "a never got its partitions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = c.member(None, Duration::from_micros(500));
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.assignment().is_empty()
        || b.assignment().is_empty()
        || a.assignment().len() + b.assignment().len() != 6
    {
        assert!(Instant::now() < deadline, "{}: no split", c.bus.name());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (
        a.assignment().into_iter().collect(),
        b.assignment().into_iter().collect(),
    );
    assert!(
        sa.is_disjoint(&sb),
        "{}: a partition owned twice",
        c.bus.name()
    );
    assert!(c.effects().await < N, "handover happens mid-stream");
    a.shutdown().await;
    c.wait_effects(N).await;
    assert_eq!(
        b.assignment().len(),
        6,
        "{}: b took everything over",
        c.bus.name()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.shutdown().await;
    assert_eq!(c.effects().await, N);
    let handled: BTreeSet<Uuid> = c.calls.lock().unwrap().keys().copied().collect();
    assert_eq!(
        handled,
        inputs.iter().map(|e| e.id).collect(),
        "nothing lost"
    );
    assert!(
        c.handled_more_than_once().is_empty(),
        "{}: handled twice",
        c.bus.name()
    );
}

async fn an_unfinished_record_is_redelivered_to_the_next_member(bus: Bus) {
    let c = Case::new(bus).await;
    let inputs = c.bus.feed(&c.ns.broker, &c.raw, 30).await;
    let stuck = inputs[5].id;
    // The first member cannot finish `stuck`: its store "connection" keeps failing, so the
    // record is retried with restarts and never committed.
    let fail: FailWhen =
        Arc::new(move |id, _| (id == stuck).then(|| StageError::infrastructure("redis down")));
    let first = c.member(Some(fail), Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.calls.lock().unwrap().get(&stuck).copied().unwrap_or(0) < 2 {
        assert!(
            Instant::now() < deadline,
            "{}: stuck record never retried",
            c.bus.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.shutdown().await;
    let before = c.effects().await;
    assert!(
        before < 30,
        "the stuck record and those behind it are unfinished"
    );
    let second = c.member(None, Duration::ZERO);
    c.wait_effects(30).await;
    second.shutdown().await;
    assert_eq!(
        c.effects().await,
        30,
        "{}: redelivered and handled once",
        c.bus.name()
    );
    assert!(
        c.calls.lock().unwrap()[&stuck] >= 3,
        "handled again by the second member"
    );
}

macro_rules! on_both {
    ($($scenario:ident),+ $(,)?) => {
        mod kafka {
            use super::*;
            $(#[test] fn $scenario() { run(Bus::Kafka, super::$scenario); })+
        }
        mod in_process {
            use super::*;
            $(#[test] fn $scenario() { run(Bus::in_process(), super::$scenario); })+
        }
    };
}

on_both!(
    every_input_has_one_output_and_one_effect,
    poison_is_dead_lettered_and_the_partition_goes_on,
    transient_failures_are_retried_in_place,
    a_business_failure_without_an_event_is_dead_lettered,
    a_new_member_resumes_after_the_committed_offsets,
    members_split_partitions_and_hand_over_on_leaving,
    an_unfinished_record_is_redelivered_to_the_next_member,
);
