//! kill -9 at random moments loses no record and applies no effect twice.
//!
//! A child process (`stage-child`) consumes 10 000 trading signals, emits one validated
//! signal per input and increments a Redis counter once per input, through the delivery
//! bridge. The test SIGKILLs it at random moments four times, restarting it each time, then
//! checks the output topic and the counter.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_core::{EventData, EventEnvelope};
use alpha_panda_tests::{Namespace, kafka_servers, redis_url, signals};
use alpha_panda_topics::{BrokerTopic, TopicName};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use uuid::Uuid;

const INPUTS: usize = 10_000;
const KILLS: usize = 4;

/// The child process; killed if the test ends early, so no stage outlives its test.
struct StageChild(Child);

impl Drop for StageChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(ns: &Namespace, group: &str, counter: &str) -> StageChild {
    StageChild(
        Command::new(env!("CARGO_BIN_EXE_stage-child"))
            .env("CHILD_BROKER", ns.broker.as_str())
            .env("CHILD_GROUP", group)
            .env("CHILD_COUNTER", counter)
            .env("CHILD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stage-child starts"),
    )
}

/// A pseudo-random delay in [lo, hi) ms, seeded from the clock: each run kills elsewhere.
fn random_ms(lo: u64, hi: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(lo + (nanos.wrapping_mul(2_654_435_761) % (hi - lo)))
}

async fn counter_value(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    let v: Option<i64> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    v.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_doubles_nothing() {
    let ns = Namespace::new();
    let raw = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    let validated = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
    ns.create_topics(&[raw.clone(), raw.dlq().unwrap(), validated.clone()])
        .await;
    let inputs = signals::produce(&ns.broker, &raw, INPUTS).await;
    let input_ids: BTreeSet<Uuid> = inputs.iter().map(|e| e.id).collect();

    let group = ns.group("risk");
    let counter = format!("{}:test:effects", ns.redis_prefix());
    let redis = redis::Client::open(redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();

    let mut child = spawn_child(&ns, &group, &counter);
    let mut kills = 0;
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while kills < KILLS {
        assert!(
            Instant::now() < deadline,
            "the stage stopped making progress at {last} effects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = counter_value(&mut conn, &counter).await;
        // Kill while the child is processing: once it has made progress since it started,
        // after a random further delay.
        if done <= last {
            continue;
        }
        tokio::time::sleep(random_ms(50, 600)).await;
        let done = counter_value(&mut conn, &counter).await;
        assert!(
            done < INPUTS as i64,
            "finished before {KILLS} kills; raise INPUTS"
        );
        child.0.kill().expect("SIGKILL");
        child.0.wait().unwrap();
        kills += 1;
        eprintln!("kill {kills} at {done} effects");
        last = counter_value(&mut conn, &counter).await;
        child = spawn_child(&ns, &group, &counter);
    }

    // Read the whole output topic with a fresh group.
    let reader: BaseConsumer = alpha_panda_actors::kafka::consumer_config(
        &kafka_servers(),
        "kill9-reader",
        &ns.group("reader"),
    )
    .create()
    .unwrap();
    reader.subscribe(&[&validated.to_string()]).unwrap();
    let mut output_ids = BTreeSet::new();
    let mut causes = BTreeSet::new();
    let mut records = 0usize;
    // Read until every output is in, or until nothing new arrived for a minute: a slow
    // (loaded) machine takes longer, a lost record never arrives.
    let mut deadline = Instant::now() + Duration::from_secs(60);
    while output_ids.len() < INPUTS && Instant::now() < deadline {
        let Some(msg) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        deadline = Instant::now() + Duration::from_secs(60);
        let msg = msg.unwrap();
        let env = EventEnvelope::decode(msg.payload().unwrap()).unwrap();
        assert!(matches!(env.data, EventData::ValidatedSignal(_)));
        records += 1;
        output_ids.insert(env.id);
        causes.insert(env.causation_id.unwrap());
    }
    assert_eq!(output_ids.len(), INPUTS, "distinct output ids");
    assert_eq!(causes, input_ids, "every input has its output");
    eprintln!("{records} output records for {INPUTS} distinct ids");

    // Every effect lands exactly once: wait for the last marks, then check it stays put.
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter_value(&mut conn, &counter).await < INPUTS as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counter_value(&mut conn, &counter).await, INPUTS as i64);

    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let exited = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "stage-child exits 0 on SIGTERM: {status}");
            break;
        }
        assert!(
            Instant::now() < exited,
            "stage-child did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _: i64 = redis::cmd("DEL")
        .arg(&counter)
        .query_async(&mut conn)
        .await
        .unwrap();
}
