//! Infrastructure faults (issue 5): a Redis outage and a Kafka broker stall in the middle of
//! a stream. A consume-handle-produce stage whose every record also increments a Redis
//! counter (applied atomically with its dedup mark) must come out with every input having
//! exactly one effect and one distinct output.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::kafka::{self, ConsumerSpec};
use alpha_panda_actors::delivery::{DeliveryPolicy, EventProducer, Output};
use alpha_panda_actors::http::{self, View};
use alpha_panda_actors::metrics::metrics;
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_config::Settings;
use alpha_panda_tests::ops::{PrivateRedis, free_port, get_json, read_envelopes, signal};
use alpha_panda_tests::{Namespace, PrivateKafka, kafka_servers, redis_url, signals, stages};
use alpha_panda_topics::{BrokerTopic, TopicName};

/// Produces `n` test signals to `topic`, `gap` apart, in the background.
fn feed_slowly(
    producer: EventProducer,
    ns_broker: alpha_panda_core::BrokerName,
    topic: TopicName,
    n: usize,
    gap: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            let out = Output {
                topic: topic.clone(),
                envelope: signals::signal(&ns_broker, i),
            };
            // A stalled broker makes a send fail after its timeout: send it again (the same
            // id, so dedup absorbs a copy that did land).
            while let Err(e) = producer.send_all(std::slice::from_ref(&out)).await {
                eprintln!("feeding signal {i} failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(gap).await;
        }
    })
}

/// A member of the `validate` stage over `input`, counting each record into `counter_key`.
fn validating_member(
    servers: &str,
    client_id: &str,
    input: &TopicName,
    policy: DeliveryPolicy,
    producer: EventProducer,
    store: Store,
    counter_key: &str,
) -> kafka::ConsumerHandle {
    kafka::start(ConsumerSpec {
        servers: servers.to_owned(),
        client_id: client_id.into(),
        topics: vec![input.clone()],
        policy,
        producer,
        store,
        factory: stages::validate_factory(counter_key.to_owned()),
        arbiters: alpha_panda_actors::delivery::threads::Arbiters::current(),
    })
    .unwrap()
}

/// Logs to the test's output, filtered by RUST_LOG (off by default).
fn log_to_test() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

async fn counter(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<i64>>(&mut conn)
        .await
        .unwrap()
        .unwrap_or(0)
}

fn distinct_outputs(servers: &str, topic: &TopicName) -> (usize, BTreeSet<uuid::Uuid>) {
    let all = read_envelopes(servers, &topic.to_string());
    let ids = all.iter().map(|(_, _, e)| e.id).collect();
    (all.len(), ids)
}

/// After `quiet` with nothing more coming: exactly one effect and one distinct output for
/// each of the `n` inputs.
async fn exactly_once(
    n: usize,
    url: &str,
    counter_key: &str,
    servers: &str,
    output: &TopicName,
    quiet: Duration,
) {
    tokio::time::sleep(quiet).await;
    assert_eq!(
        counter(url, counter_key).await,
        n as i64,
        "exactly one effect per input"
    );
    let (s, o) = (servers.to_owned(), output.clone());
    let (records, ids) = blocking(move || distinct_outputs(&s, &o)).await;
    assert_eq!(
        ids.len(),
        n,
        "one distinct output per input ({records} records)"
    );
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[test]
fn a_redis_outage_restarts_the_stage_with_backoff_shows_in_readiness_and_loses_nothing() {
    const N: usize = 300;
    log_to_test();
    let ns = Namespace::new();
    let servers = kafka_servers();
    let input = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    let output = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let counter_key = format!("{}:effects", ns.redis_prefix());
    let broker = ns.broker.as_str().to_owned();
    let mut settings = Settings::default();
    settings.kafka.bootstrap_servers = Some(servers.clone());

    actix_rt::System::new().block_on(async move {
        ns.create_topics(&[input.clone(), input.dlq().unwrap(), output.clone()])
            .await;
        let store = Store::Redis(RedisStore::connect(&url).await.unwrap());
        let control = Arc::new(Control::new(store.clone(), vec![broker.clone()]));
        let mut policy = DeliveryPolicy::new(ns.group("risk"), "risk", broker.as_str());
        policy.control = control.clone();
        let producer = alpha_panda_tests::producer(&servers, "ops-faults");
        let member = validating_member(
            &servers,
            "ops-faults",
            &input,
            policy,
            producer.clone(),
            store.clone(),
            &counter_key,
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let services = alpha_panda_actors::readiness::ServiceChecks::services(
            settings.kafka.bootstrap_servers.clone(),
            &settings.kafka.client_id,
            store.clone(),
        );
        let server = http::server(
            addr,
            View {
                settings: Arc::new(settings),
                store,
                control: control.clone(),
                stages: vec![(broker.clone(), "risk".to_owned())],
                services,
                console: Default::default(),
            },
        )
        .unwrap();
        actix_rt::spawn(server);

        let feeding = feed_slowly(
            producer,
            ns.broker.clone(),
            input.clone(),
            N,
            Duration::from_millis(40),
        );
        // Healthy and under way first.
        let started = Instant::now();
        loop {
            let (code, ready) = blocking(move || get_json(addr, "/readyz")).await;
            if code == 200 && counter(&url, &counter_key).await >= 50 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never under way: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !feeding.is_finished(),
            "the outage must hit a running stream"
        );

        // Redis goes away for 5 s; readiness says so while it lasts.
        redis.stop();
        let down = Instant::now();
        let mut saw_outage = None;
        while down.elapsed() < Duration::from_secs(5) {
            let (code, ready) = blocking(move || get_json(addr, "/readyz")).await;
            if code == 503 && ready["checks"]["redis"]["ok"] == false {
                saw_outage = Some(ready);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let outage = saw_outage.expect("readiness reported the outage");
        assert!(outage["checks"]["kafka"]["ok"] == true, "{outage}");
        redis.resume();

        // Back to ready, everything handled once.
        feeding.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let effects = counter(&url, &counter_key).await;
            let (code, _) = blocking(move || get_json(addr, "/readyz")).await;
            if effects >= N as i64 && code == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{effects} effects of {N}, readiness {code}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        exactly_once(
            N,
            &url,
            &counter_key,
            &servers,
            &output,
            Duration::from_secs(2),
        )
        .await;
        let dlq = input.dlq().unwrap().to_string();
        let s = servers.clone();
        assert!(
            blocking(move || read_envelopes(&s, &dlq)).await.is_empty(),
            "nothing dead-lettered"
        );
        // The stage was restarted (with backoff) during the outage.
        let restarts = metrics()
            .restarts
            .with_label_values(&["risk", broker.as_str()])
            .get();
        assert!(restarts > 0, "the stage restarted during the outage");
        let worker_restarts: u32 = control.workers().values().map(|w| w.restarts).sum();
        assert!(worker_restarts > 0);
        member.shutdown().await;
    });
}

#[test]
fn a_stalled_kafka_broker_recovers_with_nothing_lost_or_doubled() {
    const N: usize = 600;
    log_to_test();
    let kafka = PrivateKafka::start();
    let servers = kafka.servers.clone();
    let ns = Namespace::new();
    let input = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    let output = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
    let url = redis_url();
    let counter_key = format!("{}:effects", ns.redis_prefix());
    let broker = ns.broker.as_str().to_owned();
    let pid = kafka.pid();

    actix_rt::System::new().block_on(async move {
        alpha_panda_actors::kafka::admin::ensure(
            &servers,
            "ops-faults",
            &[input.clone(), input.dlq().unwrap(), output.clone()],
        )
        .await
        .unwrap();
        let store = Store::Redis(RedisStore::connect(&url).await.unwrap());
        let policy = DeliveryPolicy::new(ns.group("risk"), "risk", broker.as_str());
        let producer = alpha_panda_tests::producer(&servers, "ops-faults");
        let member = validating_member(
            &servers,
            "ops-faults",
            &input,
            policy,
            producer.clone(),
            store,
            &counter_key,
        );
        let feeding = feed_slowly(
            producer,
            ns.broker.clone(),
            input.clone(),
            N,
            Duration::from_millis(20),
        );
        // Let the stream get going, then freeze the broker for 10 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter(&url, &counter_key).await < 50 {
            assert!(Instant::now() < deadline, "the stage never got going");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signal(pid, "STOP");
        tokio::time::sleep(Duration::from_secs(10)).await;
        signal(pid, "CONT");
        feeding.await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(180);
        while counter(&url, &counter_key).await < N as i64 {
            assert!(
                Instant::now() < deadline,
                "{} effects of {N} after the stall",
                counter(&url, &counter_key).await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        exactly_once(
            N,
            &url,
            &counter_key,
            &servers,
            &output,
            Duration::from_secs(3),
        )
        .await;
        member.shutdown().await;
    });
    drop(kafka);
}

/// A store call while Redis is down fails (the worker then restarts with its backoff)
/// instead of hanging inside the client's reconnect loop, and works again within seconds when
/// Redis is back. (redis 0.32's default reconnect backoff kept one call for two minutes.)
#[test]
fn store_calls_fail_promptly_while_redis_is_down_and_work_when_it_is_back() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    actix_rt::System::new().block_on(async move {
        let store = Store::Redis(RedisStore::connect(&url).await.unwrap());
        store.is_marked("x").await.unwrap();
        redis.stop();
        for _ in 0..3 {
            let t = Instant::now();
            assert!(store.is_marked("x").await.is_err());
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "took {:?}",
                t.elapsed()
            );
        }
        redis.resume();
        // Back within a few seconds: the client reconnects on its next call (a call made
        // while the server is still loading its append-only file, or while the client's
        // short reconnect backoff runs, fails like one made while it was down).
        let t = Instant::now();
        loop {
            match store.is_marked("x").await {
                Ok(marked) => {
                    assert!(!marked);
                    break;
                }
                Err(e) => assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "Redis is back but the store still fails after {:?}: {e}",
                    t.elapsed()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Makes librdkafka declare `producer`'s current client fatally failed, as it does when an
/// idempotent producer cannot go on without a gap (`enable.gapless.guarantee`) or loses its
/// sequence with the broker: librdkafka's own test hook for that path.
fn fail_fatally(producer: &EventProducer) {
    let EventProducer::Kafka(k) = producer else {
        unreachable!("a Kafka producer")
    };
    let p = k.current();
    let reason = std::ffi::CString::new("injected by ops_faults").unwrap();
    use rdkafka::producer::Producer;
    // SAFETY: the client pointer is alive while `p` is held; the reason is a valid C string
    // that librdkafka copies.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            p.client().native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(
        err,
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    );
    assert!(p.client().fatal_error().is_some());
}

/// A producer librdkafka declares fatally failed writes nothing more: the stage's outputs in
/// flight fail, the producer is replaced, and the records are handled again from their
/// checkpoints. Every input still has exactly one effect and one distinct output.
#[test]
fn a_fatally_failed_producer_is_replaced_with_nothing_lost_or_doubled() {
    const N: usize = 400;
    log_to_test();
    let ns = Namespace::new();
    let servers = kafka_servers();
    let input = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    let output = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
    let url = redis_url();
    let counter_key = format!("{}:effects", ns.redis_prefix());
    let broker = ns.broker.as_str().to_owned();

    actix_rt::System::new().block_on(async move {
        ns.create_topics(&[input.clone(), input.dlq().unwrap(), output.clone()])
            .await;
        let store = Store::Redis(RedisStore::connect(&url).await.unwrap());
        let mut policy = DeliveryPolicy::new(ns.group("risk"), "risk", broker.as_str());
        policy.checkpointed = Some(stages::validate_checkpointed(counter_key.clone()));
        // The stage's own producer; the feed has another, which stays healthy.
        let producer = alpha_panda_tests::producer(&servers, "ops-faults-fatal");
        let member = validating_member(
            &servers,
            "ops-faults-fatal",
            &input,
            policy,
            producer.clone(),
            store,
            &counter_key,
        );
        let feeding = feed_slowly(
            alpha_panda_tests::producer(&servers, "ops-faults-feed"),
            ns.broker.clone(),
            input.clone(),
            N,
            Duration::from_millis(5),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter(&url, &counter_key).await < 100 {
            assert!(Instant::now() < deadline, "the stage never got going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fail_fatally(&producer);
        feeding.await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(120);
        while counter(&url, &counter_key).await < N as i64 {
            assert!(
                Instant::now() < deadline,
                "{} effects of {N} after the producer failed",
                counter(&url, &counter_key).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let EventProducer::Kafka(k) = &producer else {
            unreachable!()
        };
        assert_eq!(k.replaced(), 1, "the failed producer was replaced once");
        exactly_once(
            N,
            &url,
            &counter_key,
            &servers,
            &output,
            Duration::from_secs(3),
        )
        .await;
        member.shutdown().await;
    });
}

/// An operator's call right after Redis restarted (the store's connection dropped, not yet
/// noticed) works on its first try: a plain GET or SET is tried once more on a dropped
/// connection. (Chaos seed 13: a pause 0.8 s after a Redis restart answered 503 "broken
/// pipe".)
#[test]
fn a_plain_store_call_right_after_a_redis_restart_works_first_time() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    actix_rt::System::new().block_on(async move {
        let store = Store::Redis(RedisStore::connect(&url).await.unwrap());
        store.set("paused", "[]").await.unwrap();
        redis.stop();
        redis.resume();
        // Wait for the server with a client of its own, so the store's connection is left
        // as it was: dropped and not yet noticed.
        let probe = redis::Client::open(url.as_str()).unwrap();
        let t = Instant::now();
        loop {
            if let Ok(mut c) = probe.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "Redis did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store
            .set("paused", "[{\"broker\":\"paper\"}]")
            .await
            .expect("the first SET after the restart");
        assert_eq!(
            store.get("paused").await.unwrap().as_deref(),
            Some("[{\"broker\":\"paper\"}]")
        );
    });
}
