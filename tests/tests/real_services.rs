//! The first test over the real parts: envelopes through Apache Kafka with the runtime's producer
//! and consumer settings, a consumer group resuming from committed offsets, Redis `SET NX PX`
//! and a private PostgreSQL schema.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use alpha_panda_actors::kafka::consumer_config;
use alpha_panda_core::EventEnvelope;
use alpha_panda_tests::{Namespace, kafka_servers, redis_url, signals};
use alpha_panda_topics::{BrokerTopic, TopicName};
use diesel::RunQueryDsl;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

const RECORDS: usize = 40;
const FIRST_CONSUMER_TAKES: usize = 15;

/// Consumes up to `limit` records, committing each one's offset after "handling" it, and
/// returns the decoded envelopes. Stops early after `idle` without records.
fn consume_and_commit(consumer: &BaseConsumer, limit: usize, idle: Duration) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    let mut last_record = std::time::Instant::now();
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    while out.len() < limit && last_record.elapsed() < idle {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = result.expect("consumer error");
        last_record = std::time::Instant::now();
        // In order within a partition: each offset follows the one before.
        if let Some(prev) = positions.insert(msg.partition(), msg.offset()) {
            assert!(
                msg.offset() > prev,
                "partition {} went backwards",
                msg.partition()
            );
        }
        let env = EventEnvelope::decode(msg.payload().expect("record has a value"))
            .expect("record decodes");
        assert_eq!(
            msg.key(),
            Some(env.key.as_bytes()),
            "record is keyed by its envelope key"
        );
        out.push(env);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            msg.topic(),
            msg.partition(),
            Offset::Offset(msg.offset() + 1),
        )
        .unwrap();
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_group_member_resumes_after_the_committed_offsets() {
    let ns = Namespace::new();
    let servers = kafka_servers();
    let topic = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
    ns.create_topics(std::slice::from_ref(&topic)).await;
    let topic_name = topic.to_string();

    let producer: FutureProducer = alpha_panda_tests::producer_config(&servers, "test-producer")
        .create()
        .expect("producer");
    let sent: Vec<EventEnvelope> = (0..RECORDS)
        .map(|i| signals::signal(&ns.broker, i))
        .collect();
    for env in &sent {
        let payload = env.encode();
        let delivery = producer
            .send(
                FutureRecord::to(&topic_name)
                    .key(&env.key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await;
        delivery.unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
    }

    let group = ns.group("resume");
    let first: BaseConsumer = consumer_config(&servers, "test-consumer-a", &group)
        .create()
        .expect("consumer a");
    first.subscribe(&[&topic_name]).unwrap();
    let taken = consume_and_commit(&first, FIRST_CONSUMER_TAKES, Duration::from_secs(30));
    assert_eq!(
        taken.len(),
        FIRST_CONSUMER_TAKES,
        "first consumer got its records"
    );
    drop(first);

    let second: BaseConsumer = consumer_config(&servers, "test-consumer-b", &group)
        .create()
        .expect("consumer b");
    second.subscribe(&[&topic_name]).unwrap();
    let rest = consume_and_commit(&second, RECORDS, Duration::from_secs(8));

    let ids = |envs: &[EventEnvelope]| envs.iter().map(|e| e.id).collect::<BTreeSet<Uuid>>();
    let (a, b, all) = (ids(&taken), ids(&rest), ids(&sent));
    assert!(
        a.is_disjoint(&b),
        "records handled twice: {:?}",
        a.intersection(&b).collect::<Vec<_>>()
    );
    assert_eq!(
        a.union(&b).copied().collect::<BTreeSet<_>>(),
        all,
        "records lost"
    );
    // What came back is what went in, field for field.
    for env in taken.iter().chain(&rest) {
        let original = sent.iter().find(|s| s.id == env.id).unwrap();
        assert_eq!(env, original);
    }
}

#[tokio::test]
async fn redis_set_nx_px_marks_once_and_expires() {
    let ns = Namespace::new();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!(
        "{}:dedup:{}:{}",
        ns.redis_prefix(),
        ns.group("g"),
        Uuid::now_v7()
    );

    let set = || {
        redis::cmd("SET")
            .arg(&key)
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .clone()
    };
    let first: Option<String> = set().query_async(&mut conn).await.unwrap();
    assert_eq!(first.as_deref(), Some("OK"), "first mark wins");
    let second: Option<String> = set().query_async(&mut conn).await.unwrap();
    assert_eq!(second, None, "a second mark of the same id is refused");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60_000).contains(&ttl), "the mark expires: pttl {ttl}");

    let short = format!("{key}:short");
    let _: Option<String> = redis::cmd("SET")
        .arg(&short)
        .arg("1")
        .arg("NX")
        .arg("PX")
        .arg(50)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again: Option<String> = redis::cmd("SET")
        .arg(&short)
        .arg("1")
        .arg("NX")
        .arg("PX")
        .arg(50)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        again.as_deref(),
        Some("OK"),
        "after expiry the id can be marked again"
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .arg(&short)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[test]
fn each_test_gets_its_own_postgres_schema() {
    let (a, b) = (Namespace::new(), Namespace::new());
    let mut pa = a.postgres();
    let mut pb = b.postgres();
    diesel::sql_query("CREATE TABLE fills (id text primary key)")
        .execute(&mut pa.conn)
        .unwrap();
    diesel::sql_query("INSERT INTO fills VALUES ('f1')")
        .execute(&mut pa.conn)
        .unwrap();
    // The same table name in the other schema is a different, empty table.
    diesel::sql_query("CREATE TABLE fills (id text primary key)")
        .execute(&mut pb.conn)
        .unwrap();
    let inserted = diesel::sql_query("INSERT INTO fills VALUES ('f1')")
        .execute(&mut pb.conn)
        .unwrap();
    assert_eq!(inserted, 1, "no clash with the other test's row");
}
