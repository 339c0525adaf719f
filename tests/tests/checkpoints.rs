//! Delivery v2 over Apache Kafka and redis-server: a checkpointed stage's partition moves
//! between members with its state, and the member that takes it reads none of the history
//! behind the checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::kafka::{ConsumerHandle, ConsumerSpec, start};
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::unit::{CheckpointedFactory, CheckpointedStage};
use alpha_panda_actors::delivery::{
    Checkpointed, Deliver, DeliveryPolicy, Handled, Output, StageError,
};
use alpha_panda_actors::metrics::metrics;
use alpha_panda_actors::store::{Effect, RedisStore, Store};
use alpha_panda_core::EventEnvelope;
use alpha_panda_tests::transport::Bus;
use alpha_panda_tests::{Namespace, kafka_servers, redis_url, signals};
use alpha_panda_topics::{BrokerTopic, TopicName};

/// Records behind the checkpoint.
const HISTORY: usize = 200_000;

/// Counts the records of its partition; the count is its checkpointed state, and it is also
/// written to the store (an effect) so the test can read it.
struct Counting {
    count: u64,
    key: String,
}

impl CheckpointedStage for Counting {
    fn handle(&mut self, _d: &Deliver) -> Result<Handled, StageError> {
        self.count += 1;
        Ok(Handled {
            effects: vec![Effect::Set {
                key: self.key.clone(),
                value: self.count.to_string(),
            }],
            ..Handled::default()
        })
    }

    fn save(&self) -> serde_json::Value {
        serde_json::json!({ "count": self.count })
    }
}

fn counting(key: String) -> CheckpointedFactory {
    Arc::new(move |_unit, state| {
        let count = match state {
            None => 0,
            Some(v) => v["count"]
                .as_u64()
                .ok_or_else(|| format!("no count in {v}"))?,
        };
        Ok(Box::new(Counting {
            count,
            key: key.clone(),
        }) as Box<dyn CheckpointedStage>)
    })
}

async fn member(ns: &Namespace, topic: &TopicName, name: &str, counter: &str) -> ConsumerHandle {
    let mut policy = DeliveryPolicy::new(ns.group("counting"), "counting", ns.broker.as_str());
    policy.checkpointed = Some(Checkpointed {
        factory: counting(counter.to_owned()),
        whole_stage: false,
    });
    // Not used by a checkpointed stage.
    let unused = Arc::new(|| {
        actix::Actor::start(FnStage::new(|_: &Deliver| Ok(Handled::default()))).recipient()
    });
    start(ConsumerSpec {
        servers: kafka_servers(),
        client_id: name.to_owned(),
        topics: vec![topic.clone()],
        policy,
        producer: alpha_panda_tests::producer(&kafka_servers(), name),
        store: Store::Redis(RedisStore::connect(&redis_url()).await.expect("redis")),
        factory: unused,
        arbiters: alpha_panda_actors::delivery::threads::Arbiters::current(),
    })
    .expect("consumer starts")
}

async fn produce(topic: &TopicName, envelopes: &[EventEnvelope]) {
    let producer = alpha_panda_tests::producer(&kafka_servers(), "history");
    for chunk in envelopes.chunks(5_000) {
        let outputs: Vec<Output> = chunk
            .iter()
            .map(|e| Output {
                topic: topic.clone(),
                envelope: e.clone(),
            })
            .collect();
        producer.send_all(&outputs).await.expect("produced");
    }
}

async fn count(store: &Store, key: &str) -> u64 {
    store
        .get(key)
        .await
        .expect("redis")
        .map_or(0, |v| v.parse().expect("a count"))
}

async fn wait_count(store: &Store, key: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n = count(store, key).await;
        if n >= want {
            assert_eq!(n, want, "counted more records than there are");
            return;
        }
        assert!(Instant::now() < deadline, "counted {n} of {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_member_taking_over_a_partition_reads_none_of_the_history_behind_its_checkpoint() {
    actix_rt::System::new().block_on(async {
        let ns = Namespace::new();
        let topic = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
        ns.create_topics(&[topic.clone(), topic.dlq().unwrap()])
            .await;
        let store = Store::Redis(RedisStore::connect(&redis_url()).await.unwrap());
        let key = format!("{}:test:counted", ns.redis_prefix());
        // 200,000 records of history, all in one partition (one key).
        let history: Vec<EventEnvelope> = (0..HISTORY)
            .map(|i| EventEnvelope {
                key: "one-partition".into(),
                ..signals::signal(&ns.broker, i)
            })
            .collect();
        let t = Instant::now();
        produce(&topic, &history).await;
        eprintln!("history produced in {:?}", t.elapsed());

        let t = Instant::now();
        let first = member(&ns, &topic, "first-member", &key).await;
        wait_count(&store, &key, HISTORY as u64, Duration::from_secs(300)).await;
        first.shutdown().await;
        eprintln!(
            "history handled in {:?}, {} checkpoints",
            t.elapsed(),
            metrics()
                .checkpoint_bytes
                .with_label_values(&["counting"])
                .get_sample_count()
        );

        let read = || {
            metrics()
                .consumed
                .with_label_values(&[topic.to_string().as_str(), "counting"])
                .get()
        };
        let before = read();
        let more: Vec<EventEnvelope> = (HISTORY..HISTORY + 10)
            .map(|i| EventEnvelope {
                key: "one-partition".into(),
                ..signals::signal(&ns.broker, i)
            })
            .collect();
        produce(&topic, &more).await;
        let second = member(&ns, &topic, "second-member", &key).await;
        // The state came with the checkpoint: the count goes on from 200,000.
        wait_count(&store, &key, HISTORY as u64 + 10, Duration::from_secs(60)).await;
        assert_eq!(
            read() - before,
            10,
            "the new member read records behind the checkpoint"
        );
        second.shutdown().await;
    });
}

/// Over redis-server: member A checkpoints a batch of a feed's ticks (no origin: deduplicated
/// by event id) after member B loaded the partition's checkpoint, as when a partition moves
/// while its old owner finishes a batch. B handles the same records again and must count
/// each once (the marks A wrote are of these very records), while a second copy of an event
/// at another offset stays a duplicate.
#[test]
fn records_checkpointed_by_a_member_that_lost_the_partition_are_applied_by_the_next_owner() {
    use alpha_panda_actors::delivery::checkpoint::{Checkpoint, checkpoint_key};
    use alpha_panda_actors::delivery::inprocess::InProcessBus;
    use alpha_panda_actors::delivery::unit::{CheckpointWorker, Unit};
    use alpha_panda_actors::delivery::{EventProducer, Record};
    actix_rt::System::new().block_on(async {
        let ns = Namespace::new();
        let store = Store::Redis(RedisStore::connect(&redis_url()).await.unwrap());
        let topic = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
        let worker = || {
            let policy = DeliveryPolicy::new(ns.group("counting"), "counting", ns.broker.as_str());
            CheckpointWorker::new(
                Arc::new(policy),
                EventProducer::InProcess(InProcessBus::new()),
                store.clone(),
                counting(format!("{}:test:unused", ns.redis_prefix())),
                Unit::Partition(topic.clone(), 0),
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
            )
        };
        let record = |offset: i64, env: &EventEnvelope| Record {
            topic: topic.clone(),
            partition: 0,
            offset,
            key: Some(env.key.clone().into_bytes()),
            value: Some(env.encode()),
            headers: Vec::new(),
        };
        let key = checkpoint_key(
            ns.broker.as_str(),
            &ns.group("counting"),
            &topic.to_string(),
            0,
        );
        let counted = |store: Store, key: String| async move {
            let json = store.get(&key).await.unwrap().expect("a checkpoint");
            Checkpoint::decode(&json).unwrap().state["count"]
                .as_u64()
                .unwrap()
        };
        let events: Vec<EventEnvelope> = (0..5).map(|i| signals::signal(&ns.broker, i)).collect();
        let batch: Vec<Record> = events.iter().zip(0..).map(|(e, o)| record(o, e)).collect();
        let (mut a, mut b) = (worker(), worker());
        assert!(a.load().await.unwrap().is_none());
        assert!(b.load().await.unwrap().is_none());
        a.process(&batch).await.unwrap();
        a.finish().await.unwrap();
        assert_eq!(counted(store.clone(), key.clone()).await, 5);
        b.process(&batch).await.unwrap();
        b.finish().await.unwrap();
        assert_eq!(
            counted(store.clone(), key.clone()).await,
            5,
            "the next owner's state has every record once"
        );
        b.process(&[record(5, &events[2])]).await.unwrap();
        b.finish().await.unwrap();
        assert_eq!(
            counted(store.clone(), key.clone()).await,
            5,
            "a second copy is a duplicate"
        );
        b.process(&[record(6, &signals::signal(&ns.broker, 6))])
            .await
            .unwrap();
        b.finish().await.unwrap();
        assert_eq!(counted(store.clone(), key.clone()).await, 6);

        // An operator removes the checkpoint's head by hand (not its version and parts, and a
        // part is left over): a member starting afresh reads none, is refused once (the
        // version stays), then writes its own, and no part of the old one is left.
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(format!("{key}:parts"))
            .arg("stale")
            .arg("[1]")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut c = worker();
        assert!(c.load().await.unwrap().is_none());
        c.process(&[record(7, &signals::signal(&ns.broker, 7))])
            .await
            .unwrap();
        c.finish().await.unwrap();
        assert_eq!(counted(store.clone(), key.clone()).await, 1);
        let stored = store.load_checkpoint(&key).await.unwrap().unwrap();
        assert!(stored.parts.is_empty(), "{:?}", stored.parts);
        assert_eq!(
            stored.version, 4,
            "three writes before, the new one over them"
        );
    });
}

/// In redis-server: a checkpoint is written only over the version its writer started from,
/// with its parts, marks and effects, or not at all; a checkpoint written before versions
/// were kept reads as version 0.
#[test]
fn checkpoint_writes_in_redis_are_compare_and_set_with_their_parts_marks_and_effects() {
    use alpha_panda_actors::store::{CheckpointWrite, Written};
    actix_rt::System::new().block_on(async {
        let ns = Namespace::new();
        let store = Store::Redis(RedisStore::connect(&redis_url()).await.expect("redis"));
        let key = format!("{}:checkpoint:g", ns.redis_prefix());
        let counter = format!("{}:test:effects", ns.redis_prefix());
        let mark = format!("{}:dedup:g:x", ns.redis_prefix());
        let fx = [Effect::IncrBy {
            key: counter.clone(),
            by: 1,
        }];
        let marks = [(mark.clone(), "t/0@4".to_owned())];
        let write = |head: &'static str, expected: u64, parts: Vec<(String, Option<String>)>| {
            let store = store.clone();
            let (key, marks, fx) = (key.clone(), marks.clone(), fx.clone());
            async move {
                store
                    .save_checkpoint(&CheckpointWrite {
                        key: &key,
                        head,
                        expected,
                        parts: &parts,
                        replace_parts: false,
                        marks: &marks,
                        ttl: Duration::from_secs(60),
                        effects: &fx,
                    })
                    .await
                    .unwrap()
            }
        };
        let part = |n: &str, v: Option<&str>| (n.to_owned(), v.map(str::to_owned));

        // A checkpoint as written before versions: a plain value.
        store.set(&key, "old").await.unwrap();
        let old = store.load_checkpoint(&key).await.unwrap().unwrap();
        assert_eq!(
            (old.head.as_str(), old.version, old.parts.len()),
            ("old", 0, 0)
        );

        let first = vec![part("a", Some("[1]")), part("b", Some("[2]"))];
        assert_eq!(write("h1", 0, first.clone()).await, Written::Done);
        assert_eq!(
            write("zombie", 0, vec![part("a", Some("[9]"))]).await,
            Written::Superseded(1),
            "a writer still at version 0 is refused"
        );
        assert_eq!(
            write("h2", 1, vec![part("a", None), part("c", Some("[3]"))]).await,
            Written::Done
        );
        let cp = store.load_checkpoint(&key).await.unwrap().unwrap();
        assert_eq!(cp.head, "h2");
        assert_eq!(cp.version, 2);
        assert_eq!(
            cp.parts,
            vec![
                ("b".to_owned(), "[2]".to_owned()),
                ("c".to_owned(), "[3]".to_owned())
            ],
            "a part not written stays, a removed one is gone"
        );
        assert_eq!(
            store.get(&counter).await.unwrap().as_deref(),
            Some("2"),
            "the refused write applied no effect"
        );
        assert_eq!(
            store.marked(std::slice::from_ref(&mark)).await.unwrap(),
            vec![Some("t/0@4".to_owned())]
        );
        assert!(
            store
                .load_checkpoint(&format!("{key}:none"))
                .await
                .unwrap()
                .is_none()
        );
    });
}

/// `delivery.batch_max_ms`: records arriving 40 ms apart within the batch's wait are handled
/// as one batch with one checkpoint, on both transports (each would be a batch of its own
/// without the wait: the unit is idle when each arrives).
async fn a_batch_is_held_open_for_the_records_within_its_wait(bus: Bus) {
    const N: usize = 12;
    let ns = Namespace::new();
    let topic = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    bus.create_topics(&ns, &[topic.clone(), topic.dlq().unwrap()])
        .await;
    let store = bus.store().await;
    let key = format!("{}:test:counted", ns.redis_prefix());
    // A stage name of this test's own: the checkpoint metric counts this stage alone.
    let stage = format!("held-open-{}", bus.name());
    let mut policy = DeliveryPolicy::new(ns.group("held-open"), stage.as_str(), ns.broker.as_str());
    policy.checkpointed = Some(Checkpointed {
        factory: counting(key.clone()),
        whole_stage: false,
    });
    // Far longer than the feed takes, so the test does not depend on the machine's pace.
    policy.batch_max_wait = Duration::from_secs(3);
    let unused = Arc::new(|| {
        actix::Actor::start(FnStage::new(|_: &Deliver| Ok(Handled::default()))).recipient()
    });
    let member = bus.member(vec![topic.clone()], policy, store.clone(), unused);
    let producer = bus.producer();
    let record = |i: usize| Output {
        topic: topic.clone(),
        envelope: EventEnvelope {
            key: "one-partition".into(),
            ..signals::signal(&ns.broker, i)
        },
    };
    let checkpoints = || {
        metrics()
            .checkpoint_bytes
            .with_label_values(&[stage.as_str()])
            .get_sample_count()
    };
    // The unit is assigned and idle: a first record is handled and checkpointed (after
    // its wait).
    producer.send_all(&[record(0)]).await.expect("produced");
    wait_count(&store, &key, 1, Duration::from_secs(60)).await;
    while checkpoints() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = checkpoints();
    let started = Instant::now();
    for i in 1..=N {
        producer.send_all(&[record(i)]).await.expect("produced");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    wait_count(&store, &key, 1 + N as u64, Duration::from_secs(60)).await;
    let batches = checkpoints() - before;
    eprintln!(
        "{}: {N} records in {batches} checkpoint(s), {:?}",
        bus.name(),
        started.elapsed()
    );
    assert!(
        (1..=2).contains(&batches),
        "{batches} checkpoints for {N} records within one wait"
    );
    member.shutdown().await;
}

#[test]
fn a_batch_is_held_open_for_the_records_within_its_wait_over_kafka() {
    actix_rt::System::new().block_on(a_batch_is_held_open_for_the_records_within_its_wait(
        Bus::Kafka,
    ));
}

#[test]
fn a_batch_is_held_open_for_the_records_within_its_wait_in_process() {
    actix_rt::System::new().block_on(a_batch_is_held_open_for_the_records_within_its_wait(
        Bus::in_process(),
    ));
}
