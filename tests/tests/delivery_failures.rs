//! Failure classes over a real Apache Kafka broker and redis-server: poison records go to the DLQ
//! and the partition goes on; transient failures are retried in place, then dead-lettered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use alpha_panda_actors::delivery::kafka::{ConsumerHandle, ConsumerSpec, start};
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{Backoff, Deliver, DeliveryPolicy, StageError};
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_core::events::ValueEncoding;
use alpha_panda_core::{EventData, EventEnvelope, FailureClass};
use alpha_panda_tests::stages::validate;
use alpha_panda_tests::{Namespace, kafka_servers, read_topic, redis_url, signals};
use alpha_panda_topics::{BrokerTopic, TopicName};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

struct Setup {
    ns: Namespace,
    raw: TopicName,
    validated: TopicName,
    dlq: TopicName,
    counter: String,
    store: Store,
}

async fn setup() -> Setup {
    let ns = Namespace::new();
    let raw = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    let validated = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
    let dlq = raw.dlq().unwrap();
    ns.create_topics(&[raw.clone(), validated.clone(), dlq.clone()])
        .await;
    let counter = format!("{}:test:effects", ns.redis_prefix());
    let store = Store::Redis(RedisStore::connect(&redis_url()).await.unwrap());
    Setup {
        ns,
        raw,
        validated,
        dlq,
        counter,
        store,
    }
}

fn run_stage(s: &Setup, tries: u32, factory: StageFactory) -> ConsumerHandle {
    let mut policy = DeliveryPolicy::new(s.ns.group("risk"), "risk", s.ns.broker.as_str());
    policy.transient = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        tries,
        jitter: 0.2,
    };
    start(ConsumerSpec {
        servers: kafka_servers(),
        client_id: "failure-test".into(),
        topics: vec![s.raw.clone()],
        policy,
        producer: alpha_panda_tests::producer(&kafka_servers(), "failure-test"),
        store: s.store.clone(),
        factory,
        arbiters: alpha_panda_actors::delivery::threads::Arbiters::current(),
    })
    .unwrap()
}

async fn counter(s: &Setup) -> i64 {
    s.store
        .get(&s.counter)
        .await
        .unwrap()
        .map_or(0, |v| v.parse().unwrap())
}

async fn wait_counter(s: &Setup, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter(s).await < want {
        assert!(
            Instant::now() < deadline,
            "stuck at {} of {want}",
            counter(s).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Decides whether a record fails: `Some(error)` fails it.
type FailWhen = Arc<dyn Fn(&Deliver) -> Option<StageError> + Send + Sync>;

/// A validate stage whose handler first asks `fail` about each record.
fn failing_factory(counter: String, fail: FailWhen) -> StageFactory {
    Arc::new(move || {
        let (counter, fail) = (counter.clone(), fail.clone());
        FnStage::new(move |d: &Deliver| match fail(d) {
            Some(e) => Err(e),
            None => validate(d, &counter),
        })
        .start()
        .recipient()
    })
}

async fn dlq_records(s: &Setup, want: usize) -> Vec<(i32, i64, EventEnvelope)> {
    read_topic(
        &s.dlq,
        want,
        Duration::from_secs(if want == 0 { 2 } else { 30 }),
    )
    .await
    .into_iter()
    .map(|(p, o, _, v)| (p, o, EventEnvelope::decode(&v.unwrap()).unwrap()))
    .collect()
}

#[test]
fn a_poison_record_goes_to_the_dlq_with_its_metadata_and_the_partition_goes_on() {
    actix_rt::System::new().block_on(async {
        let s = setup().await;
        let key = "s0|738561";
        let producer: FutureProducer =
            alpha_panda_tests::producer_config(&kafka_servers(), "poison")
                .create()
                .unwrap();
        let (partition, offset) = producer
            .send(
                FutureRecord::to(&s.raw.to_string())
                    .key(key)
                    .payload("{not an envelope"),
                Duration::from_secs(10),
            )
            .await
            .map(|d| (d.partition, d.offset))
            .unwrap_or_else(|(e, _)| panic!("{e}"));
        // Valid records after it, on the same partition (same key).
        let mut valid = Vec::new();
        for i in 0..5 {
            let env = signals::signal(&s.ns.broker, i * 4 * 3); // i*12 keeps key s0|738561
            assert_eq!(env.key, key);
            producer
                .send(
                    FutureRecord::to(&s.raw.to_string())
                        .key(key)
                        .payload(&env.encode()),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("{e}"));
            valid.push(env);
        }

        let handle = run_stage(
            &s,
            5,
            alpha_panda_tests::stages::validate_factory(s.counter.clone()),
        );
        wait_counter(&s, 5).await;
        let dead = dlq_records(&s, 1).await;
        assert_eq!(dead.len(), 1);
        let EventData::SystemError(e) = &dead[0].2.data else {
            panic!("DLQ holds system_error envelopes");
        };
        assert_eq!(e.original_topic, s.raw.to_string());
        assert_eq!(
            (e.original_partition, e.original_offset),
            (partition, offset)
        );
        assert_eq!(e.original_key.as_deref(), Some(key));
        assert_eq!(e.original_value.as_deref(), Some("{not an envelope"));
        assert_eq!(e.value_encoding, ValueEncoding::Utf8);
        assert_eq!(e.error_class, FailureClass::Poison);
        assert!(
            e.error_message.contains("not a JSON envelope"),
            "{}",
            e.error_message
        );
        assert_eq!(e.retry_count, 0);
        assert_eq!(e.consumer_group, s.ns.group("risk"));
        assert_eq!(e.stage, "risk");
        let out = read_topic(&s.validated, 5, Duration::from_secs(30)).await;
        assert_eq!(
            out.len(),
            5,
            "the valid records behind the poison one were handled"
        );
        handle.shutdown().await;
        assert_eq!(counter(&s).await, 5);
    });
}

#[test]
fn a_record_failing_transiently_twice_is_handled_once_without_a_dlq_entry() {
    actix_rt::System::new().block_on(async {
        let s = setup().await;
        let inputs = signals::produce(&s.ns.broker, &s.raw, 6).await;
        let target: Uuid = inputs[2].id;
        let attempts: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
        let seen = attempts.clone();
        let fail = Arc::new(move |d: &Deliver| {
            let mut m = seen.lock().unwrap();
            let n = m.entry(d.envelope.id).or_insert(0);
            *n += 1;
            (d.envelope.id == target && *n <= 2)
                .then(|| StageError::transient("broker briefly unavailable"))
        });
        let handle = run_stage(&s, 5, failing_factory(s.counter.clone(), fail));
        wait_counter(&s, 6).await;
        handle.shutdown().await;
        assert_eq!(
            attempts.lock().unwrap()[&target],
            3,
            "failed twice, then succeeded"
        );
        assert_eq!(counter(&s).await, 6, "each record's effect once");
        assert!(dlq_records(&s, 0).await.is_empty(), "nothing dead-lettered");
        let out = read_topic(&s.validated, 6, Duration::from_secs(30)).await;
        assert_eq!(out.len(), 6);
    });
}

#[test]
fn a_record_that_always_fails_transiently_is_dead_lettered_after_the_configured_tries() {
    actix_rt::System::new().block_on(async {
        let s = setup().await;
        let inputs = signals::produce(&s.ns.broker, &s.raw, 4).await;
        let target: Uuid = inputs[1].id;
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let fail = Arc::new(move |d: &Deliver| {
            (d.envelope.id == target).then(|| {
                c.fetch_add(1, Ordering::SeqCst);
                StageError::transient("upstream keeps timing out")
            })
        });
        let handle = run_stage(&s, 3, failing_factory(s.counter.clone(), fail));
        wait_counter(&s, 3).await;
        let dead = dlq_records(&s, 1).await;
        handle.shutdown().await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "tried exactly the configured 3 times"
        );
        assert_eq!(dead.len(), 1);
        let EventData::SystemError(e) = &dead[0].2.data else {
            panic!("system_error expected");
        };
        assert_eq!(e.error_class, FailureClass::Transient);
        assert_eq!(e.retry_count, 2, "two retries after the first attempt");
        assert!(e.error_message.contains("timing out"));
        let original =
            EventEnvelope::decode(e.original_value.as_deref().unwrap().as_bytes()).unwrap();
        assert_eq!(
            original, inputs[1],
            "the DLQ keeps the original record whole"
        );
        assert_eq!(dead[0].2.causation_id, Some(target));
        assert_eq!(counter(&s).await, 3, "the failed record had no effect");
    });
}

#[test]
fn dlq_replay_republishes_once_and_the_record_is_processed_once() {
    use alpha_panda_actors::dlq_tools::{self, ReplayOutcome};
    use alpha_panda_actors::kafka::KafkaFailure;
    use std::sync::atomic::AtomicBool;
    actix_rt::System::new().block_on(async {
        let s = setup().await;
        let inputs = signals::produce(&s.ns.broker, &s.raw, 3).await;
        let target: Uuid = inputs[0].id;
        let broken = Arc::new(AtomicBool::new(true));
        let b = broken.clone();
        let fail = Arc::new(move |d: &Deliver| {
            let is_target = d.envelope.id == target
                || d.envelope.causation_id == Some(target)
                || d.envelope.correlation_id == target;
            (is_target && b.load(Ordering::SeqCst)).then(|| StageError::transient("down"))
        });
        let handle = run_stage(&s, 2, failing_factory(s.counter.clone(), fail));
        wait_counter(&s, 2).await;
        assert_eq!(dlq_records(&s, 1).await.len(), 1);

        let listed = tokio::task::spawn_blocking({
            let dlq = s.dlq.clone();
            move || dlq_tools::list(&kafka_servers(), "test", &dlq, 10).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(listed.len(), 1);
        let (_, err) = listed[0].record.as_ref().unwrap();
        assert_eq!(err.error_class, FailureClass::Transient);

        // The cause is fixed; replay.
        broken.store(false, Ordering::SeqCst);
        let producer = alpha_panda_tests::producer(&kafka_servers(), "replay");
        let prefix = s.ns.group("ops");
        let dry = dlq_tools::replay(
            &kafka_servers(),
            "test",
            &prefix,
            &producer,
            &s.dlq,
            100,
            true,
        )
        .await
        .unwrap();
        assert_eq!(dry.replayed(), 1, "a dry run reports what it would replay");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(counter(&s).await, 2, "a dry run publishes nothing");

        // A broker that does not take the replayed record: the replay stops with an error
        // naming the record (it used to wait for ever), and marks nothing replayed.
        let unreachable = alpha_panda_actors::delivery::EventProducer::kafka_awaiting_each(
            "127.0.0.1:9",
            "replay-unreachable",
            Duration::from_secs(2),
        )
        .unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(60),
            dlq_tools::replay(
                &kafka_servers(),
                "test",
                &prefix,
                &unreachable,
                &s.dlq,
                100,
                false,
            ),
        )
        .await
        .expect("a replay whose record the broker never takes gives up");
        match refused {
            Err(KafkaFailure::Replay {
                dlq, topic, reason, ..
            }) => {
                assert_eq!((dlq, topic), (s.dlq.to_string(), s.raw.to_string()));
                assert!(reason.contains("timed out"), "{reason}");
            }
            other => panic!("a replay failure naming the record expected: {other:?}"),
        }

        let first = dlq_tools::replay(
            &kafka_servers(),
            "test",
            &prefix,
            &producer,
            &s.dlq,
            100,
            false,
        )
        .await
        .unwrap();
        assert_eq!(first.replayed(), 1);
        let ReplayOutcome::Replayed { topic, new_id } = &first.entries[0].2 else {
            panic!("replayed expected: {:?}", first.entries);
        };
        assert_eq!(topic, &s.raw.to_string());
        assert_ne!(*new_id, target, "a replayed event gets a new id");
        wait_counter(&s, 3).await;

        let second = dlq_tools::replay(
            &kafka_servers(),
            "test",
            &prefix,
            &producer,
            &s.dlq,
            100,
            false,
        )
        .await
        .unwrap();
        assert_eq!(second.replayed(), 0, "a second run replays nothing");
        tokio::time::sleep(Duration::from_secs(1)).await;
        handle.shutdown().await;
        assert_eq!(
            counter(&s).await,
            3,
            "the replayed record was processed once"
        );
        let out = read_topic(&s.validated, 4, Duration::from_secs(5)).await;
        let causes: Vec<Uuid> = out
            .iter()
            .filter_map(|(_, _, _, v)| EventEnvelope::decode(v.as_deref()?).ok())
            .filter_map(|e| e.causation_id)
            .collect();
        assert_eq!(causes.len(), 3);
        assert!(
            causes.contains(new_id),
            "the replayed record produced its output"
        );
    });
}

/// Three consumer groups read one topic, as the strategy, trader and portfolio stages read
/// `market.ticks`. Only the trader's group fails a record; replaying the DLQ delivers it to
/// the trader's group alone: the other two handle it once, not twice.
#[test]
fn a_dlq_replay_reaches_only_the_group_that_failed() {
    use alpha_panda_actors::dlq_tools;
    use std::sync::atomic::AtomicBool;
    actix_rt::System::new().block_on(async {
        let s = setup().await;
        let inputs = signals::produce(&s.ns.broker, &s.raw, 5).await;
        let target: Uuid = inputs[2].id;
        let broken = Arc::new(AtomicBool::new(true));
        let counter_of = |stage: &str| format!("{}:test:{stage}:effects", s.ns.redis_prefix());
        let start_group = |stage: &str, fail: Option<FailWhen>| {
            let policy = DeliveryPolicy::new(s.ns.group(stage), stage, s.ns.broker.as_str());
            let counter = counter_of(stage);
            let fail = fail.unwrap_or_else(|| Arc::new(|_: &Deliver| None));
            start(ConsumerSpec {
                servers: kafka_servers(),
                client_id: format!("replay-{stage}"),
                topics: vec![s.raw.clone()],
                policy,
                producer: alpha_panda_tests::producer(&kafka_servers(), "replay-groups"),
                store: s.store.clone(),
                factory: failing_factory(counter, fail),
                arbiters: alpha_panda_actors::delivery::threads::Arbiters::current(),
            })
            .unwrap()
        };
        let b = broken.clone();
        let trader_fails: FailWhen = Arc::new(move |d: &Deliver| {
            let is_target = d.envelope.id == target || d.envelope.correlation_id == target;
            (is_target && b.load(Ordering::SeqCst))
                .then(|| StageError::poison("bad for the trader"))
        });
        let groups = [
            start_group("strategy", None),
            start_group("trader", Some(trader_fails)),
            start_group("portfolio", None),
        ];
        let effects = |stage: &str| {
            let (store, key) = (s.store.clone(), counter_of(stage));
            async move {
                store
                    .get(&key)
                    .await
                    .unwrap()
                    .map_or(0, |v| v.parse::<i64>().unwrap())
            }
        };
        let wait = |stage: &'static str, want: i64| {
            let effects = &effects;
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while effects(stage).await < want {
                    assert!(Instant::now() < deadline, "{stage} stuck below {want}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        wait("strategy", 5).await;
        wait("portfolio", 5).await;
        wait("trader", 4).await;
        assert_eq!(dlq_records(&s, 1).await.len(), 1);

        broken.store(false, Ordering::SeqCst);
        let producer = alpha_panda_tests::producer(&kafka_servers(), "replay");
        let prefix = s.ns.group("ops");
        for _ in 0..2 {
            dlq_tools::replay(
                &kafka_servers(),
                "test",
                &prefix,
                &producer,
                &s.dlq,
                100,
                false,
            )
            .await
            .unwrap();
        }
        wait("trader", 5).await;
        // Time for the other groups to reach the replayed record and step over it.
        let end = read_topic(&s.raw, 6, Duration::from_secs(10)).await;
        assert_eq!(end.len(), 6, "five records and one replay on the topic");
        tokio::time::sleep(Duration::from_secs(3)).await;
        for g in groups {
            g.shutdown().await;
        }
        assert_eq!(
            effects("strategy").await,
            5,
            "the strategy saw the record once"
        );
        assert_eq!(
            effects("portfolio").await,
            5,
            "the portfolio saw the record once"
        );
        assert_eq!(
            effects("trader").await,
            5,
            "the trader handled the replay once"
        );
    });
}

/// Produces `env` to `topic` as an upstream stage emits it: with an origin header.
async fn produce_with_origin(topic: &TopicName, env: &EventEnvelope, origin: &str) {
    use rdkafka::message::{Header, OwnedHeaders};
    let producer = alpha_panda_tests::producer(&kafka_servers(), "origin-test");
    let alpha_panda_actors::delivery::EventProducer::Kafka(k) = producer else {
        unreachable!("a Kafka producer")
    };
    let p = k.current();
    let payload = env.encode();
    let name = topic.to_string();
    let record = FutureRecord::to(&name)
        .key(&env.key)
        .payload(&payload)
        .headers(OwnedHeaders::new().insert(Header {
            key: "origin",
            value: Some(origin),
        }));
    p.send(record, Duration::from_secs(30))
        .await
        .unwrap_or_else(|(e, _)| panic!("delivery: {e}"));
}

#[test]
fn a_record_re_emitted_by_a_restarted_upstream_member_is_dropped_by_the_watermark() {
    actix_rt::System::new().block_on(async {
        let s = setup().await;
        let handled = Arc::new(AtomicU32::new(0));
        let count = handled.clone();
        let stage = run_stage(
            &s,
            3,
            failing_factory(
                s.counter.clone(),
                Arc::new(move |_: &Deliver| {
                    count.fetch_add(1, Ordering::SeqCst);
                    None
                }),
            ),
        );
        let upstream = format!("{}|market.ticks|3", s.ns.group("strategy"));
        // One key: every record in one partition, so partition order is the test's order.
        let envs: Vec<EventEnvelope> = (0..6)
            .map(|i| EventEnvelope {
                key: "one-partition".into(),
                ..signals::signal(&s.ns.broker, i)
            })
            .collect();
        // An upstream member handles ticks at offsets 100..=103 and emits one signal each.
        for (i, env) in envs[..4].iter().enumerate() {
            produce_with_origin(&s.raw, env, &format!("{upstream}|{}|0", 100 + i)).await;
        }
        wait_counter(&s, 4).await;
        // It is killed before its checkpoint and handles 102 and 103 again: the same
        // origins come back, one of them even under another event id (a re-emission the
        // ids alone would not catch).
        produce_with_origin(&s.raw, &envs[2], &format!("{upstream}|102|0")).await;
        produce_with_origin(&s.raw, &envs[4], &format!("{upstream}|103|0")).await;
        // Then it goes on past what it had emitted.
        produce_with_origin(&s.raw, &envs[5], &format!("{upstream}|104|0")).await;
        wait_counter(&s, 5).await;
        // The two re-emissions were consumed (the sixth record was handled after them, in
        // partition order) but never handed to the stage.
        assert_eq!(counter(&s).await, 5);
        assert_eq!(
            handled.load(Ordering::SeqCst),
            5,
            "re-emissions reached the stage"
        );

        // No key per record: one watermark per (input partition, source).
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let dedup: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:dedup:*", s.ns.redis_prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(dedup.is_empty(), "per-record marks written: {dedup:?}");
        let marks: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:watermark:*", s.ns.redis_prefix()))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(marks.len(), 1, "{marks:?}");
        let at: Option<String> = redis::cmd("HGET")
            .arg(&marks[0])
            .arg(&upstream)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(at.as_deref(), Some("104:0"));
        stage.shutdown().await;
    });
}
