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
