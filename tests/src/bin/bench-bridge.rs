//! Throughput of the delivery bridge alone: consume → handle → produce → mark → commit.
//!
//! `bash scripts/bench.sh` runs it against a fresh Apache Kafka and the test redis-server. It feeds
//! N trading signals, runs the `validate` stage (one output and one store effect per input)
//! and reports records per second from the first record handled to the last effect applied.
//!
//! `kafka-checkpointed` runs the same stage as a checkpointed unit per partition (delivery
//! v2: batches, one checkpoint per batch, origins instead of marks downstream).
//!
//! Partition workers run on `BENCH_THREADS` arbiters (default: the cores), as the daemon's
//! do on `delivery.threads`.
//!
//! Usage: bench-bridge [kafka|kafka-checkpointed|memory] [N]

use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::kafka::{ConsumerSpec, start};
use alpha_panda_actors::delivery::{DeliveryPolicy, EventProducer};
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_tests::stages::{validate_checkpointed, validate_factory};
use alpha_panda_tests::{Namespace, kafka_servers, redis_url, signals};
use alpha_panda_topics::{BrokerTopic, TopicName};

fn main() {
    let mut args = std::env::args().skip(1);
    let transport = args.next().unwrap_or_else(|| "kafka".to_owned());
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("N must be a number"))
        .unwrap_or(20_000);
    match transport.as_str() {
        "kafka" => kafka(n, false),
        "kafka-checkpointed" => kafka(n, true),
        "memory" => memory(n),
        other => {
            eprintln!("unknown transport {other:?}: use kafka or memory");
            std::process::exit(2);
        }
    }
}

fn kafka(n: usize, checkpointed: bool) {
    actix_rt::System::new().block_on(async move {
        let ns = Namespace::new();
        let raw = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
        let validated = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
        ns.create_topics(&[raw.clone(), raw.dlq().expect("dlq"), validated])
            .await;
        let fed = Instant::now();
        signals::produce(&ns.broker, &raw, n).await;
        let feed_secs = fed.elapsed().as_secs_f64();
        let store = Store::Redis(RedisStore::connect(&redis_url()).await.expect("redis"));
        let counter = format!("{}:bench:effects", ns.redis_prefix());
        // As the daemon: `delivery.threads` arbiters (BENCH_THREADS, default the cores).
        let threads = std::env::var("BENCH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let workers = alpha_panda_actors::delivery::threads::WorkerThreads::start(threads);
        let handle = start(ConsumerSpec {
            servers: kafka_servers(),
            client_id: "bench".into(),
            topics: vec![raw],
            policy: DeliveryPolicy {
                checkpointed: checkpointed.then(|| validate_checkpointed(counter.clone())),
                ..DeliveryPolicy::new(ns.group("bench"), "risk", ns.broker.as_str())
            },
            producer: alpha_panda_tests::producer(&kafka_servers(), "bench"),
            store: store.clone(),
            factory: validate_factory(counter.clone()),
            arbiters: workers.arbiters(),
        })
        .expect("consumer");
        let done = |v: Option<String>| v.map_or(0, |v| v.parse::<usize>().unwrap_or(0));
        // Time from the first effect, so group join time is not counted.
        while done(store.get(&counter).await.expect("redis")) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let first = done(store.get(&counter).await.expect("redis"));
        while done(store.get(&counter).await.expect("redis")) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        handle.shutdown().await;
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
        let checkpoints = alpha_panda_actors::metrics::metrics()
            .checkpoint_bytes
            .with_label_values(&["risk"])
            .get_sample_count();
        if checkpointed {
            eprintln!(
                "{checkpoints} checkpoints: {:.1} records per batch",
                n as f64 / checkpoints.max(1) as f64
            );
        }
        let how = if checkpointed {
            "checkpointed unit per partition: batch → handle → produce all, acks=all → one \
             checkpoint with marks and effects → commit"
        } else {
            "per record: consume → handle → produce acks=all → mark+effect → commit"
        };
        println!(
            "bridge over kafka (Apache Kafka, redis), {how}: {} records in {secs:.2} s = {:.0} records/s \
             (6 partitions on {threads} threads; feeding {n} took {feed_secs:.2} s = {:.0} records/s)",
            n - first,
            (n - first) as f64 / secs,
            n as f64 / feed_secs
        );
    });
}

fn memory(n: usize) {
    use alpha_panda_actors::delivery::inprocess::{self, InProcessBus, StoredRecord};
    use alpha_panda_actors::store::MemoryStore;
    actix_rt::System::new().block_on(async move {
        let ns = Namespace::new();
        let raw = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
        let validated = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
        let bus = InProcessBus::new();
        bus.create_topics(&[raw.clone(), raw.dlq().expect("dlq"), validated]);
        for i in 0..n {
            let env = signals::signal(&ns.broker, i);
            bus.append(
                &raw.to_string(),
                StoredRecord {
                    key: Some(env.key.clone().into_bytes()),
                    value: Some(env.encode()),
                    headers: Vec::new(),
                },
            )
            .expect("append");
        }
        let store = Store::Memory(MemoryStore::default());
        let counter = format!("{}:bench:effects", ns.redis_prefix());
        let started = Instant::now();
        let handle = inprocess::start(inprocess::InProcessConsumerSpec {
            bus: bus.clone(),
            topics: vec![raw],
            policy: DeliveryPolicy::new(ns.group("bench"), "risk", ns.broker.as_str()),
            producer: EventProducer::InProcess(bus),
            store: store.clone(),
            factory: validate_factory(counter.clone()),
            arbiter: actix_rt::Arbiter::current(),
        });
        let done = |v: Option<String>| v.map_or(0, |v| v.parse::<usize>().unwrap_or(0));
        while done(store.get(&counter).await.expect("memory")) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        handle.shutdown().await;
        println!(
            "bridge in-process (memory store): {n} records in {secs:.2} s = {:.0} records/s \
             (consume → handle → produce → mark+effect → commit; 6 partitions)",
            n as f64 / secs
        );
    });
}
