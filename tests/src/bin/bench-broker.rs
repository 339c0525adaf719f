//! The bare broker, measured with the runtime's own producer and consumer settings
//! (`alpha_panda_actors::kafka::{producer_config, consumer_config}` with the daemon's
//! defaults), so the pipeline's figures can be read against what the broker itself gives on
//! this machine. `bash scripts/bench.sh` runs it against the Apache Kafka it starts.
//!
//! Prints one JSON line per figure:
//! - `broker_produce`: N tick-sized records (an encoded `market_tick` envelope) produced to a
//!   topic with `market.ticks`' partition count, every ack awaited; records/s from the first
//!   send to the last ack;
//! - `broker_consume`: the same N records read by a fresh consumer group from the earliest
//!   offset; records/s from the first record to the last;
//! - `broker_hop`: one record at a time at a steady rate (default 1 000/s for 5 s), each
//!   timed from the send to its arrival at a consumer already assigned; p50, p99, max in ms.
//!
//! Usage: bench-broker [N] [HOP_RATE_PER_S] [HOP_SECONDS]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alpha_panda_actors::kafka::{client_config, consumer_config};
use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{EventBroker, EventData, EventEnvelope, Timestamp};
use alpha_panda_tests::bench::line;
use alpha_panda_tests::{kafka_servers, producer_config};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn main() {
    let [n, rate, secs] = alpha_panda_tests::bench::numbers(
        ["records", "ticks per second", "seconds"],
        [200_000, 1_000, 5],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let servers = kafka_servers();
        let partitions = alpha_panda_topics::TopicName::market_ticks()
            .spec()
            .partitions;
        let topic = create_topic(&servers, partitions).await;
        let record = tick_record();
        produce(&servers, &topic, &record, n).await;
        consume(&servers, &topic, n);
        hop(&servers, &topic, &record, rate, secs).await;
    });
}

/// A tick as the feed publishes it: the encoded envelope of one `market_tick`.
fn tick_record() -> Vec<u8> {
    let ts = Timestamp::from_unix_millis(1_705_290_000_000).expect("time");
    let price =
        alpha_panda_core::Price::new(rust_decimal::Decimal::new(245_065, 2)).expect("price");
    let tick = MarketTick::new(alpha_panda_core::InstrumentToken(738_561), price, ts);
    EventEnvelope::root(
        EventBroker::Shared,
        "feed",
        "738561".to_owned(),
        ts,
        EventData::MarketTick(tick),
    )
    .encode()
}

async fn create_topic(servers: &str, partitions: i32) -> String {
    let topic = format!("bench-broker-{}", uuid::Uuid::now_v7().simple());
    let admin: AdminClient<DefaultClientContext> = client_config(servers, "bench-broker")
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
    topic
}

async fn produce(servers: &str, topic: &str, record: &[u8], n: u64) {
    let producer: FutureProducer = producer_config(servers, "bench-broker")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let key = (i % 64).to_string();
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(record)) {
                Ok(ack) => {
                    pending.push(ack);
                    break;
                }
                // The local queue is full: let deliveries drain.
                Err((_, _)) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for ack in pending {
        ack.await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }
    let secs = started.elapsed().as_secs_f64();
    line(
        "broker_produce",
        serde_json::json!({
            "records": n, "record_bytes": record.len(), "seconds": round(secs),
            "records_per_s": (n as f64 / secs).round(),
        }),
    );
}

fn consume(servers: &str, topic: &str, n: u64) {
    let group = format!("bench-broker-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = consumer_config(servers, "bench-broker", &group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut got = 0u64;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while got < n && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    assert_eq!(got, n, "the consumer read {got} of {n} records");
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    line(
        "broker_consume",
        serde_json::json!({
            "records": n, "seconds": round(secs),
            "records_per_s": (n as f64 / secs).round(),
        }),
    );
}

async fn hop(servers: &str, topic: &str, record: &[u8], rate: u64, secs: u64) {
    let producer: FutureProducer = producer_config(servers, "bench-broker-hop")
        .create()
        .expect("producer");
    let group = format!("bench-broker-hop-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = consumer_config(servers, "bench-broker-hop", &group)
        .set("auto.offset.reset", "latest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    // Wait until the consumer holds every partition, then time from a fresh marker.
    while consumer.assignment().map_or(0, |a| a.count()) == 0 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let arrived = origin.elapsed().as_nanos() as u64;
                    let sent = m
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.split_once('@'))
                        .and_then(|(_, t)| t.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        latencies.push(arrived.saturating_sub(sent));
                    }
                }
            }
            latencies
        })
    };
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = Instant::now();
    let mut acks = Vec::with_capacity(total as usize);
    for i in 0..total {
        next += interval;
        tokio::time::sleep_until(next.into()).await;
        let key = format!("{}@{}", i % 64, origin.elapsed().as_nanos());
        match producer.send_result(FutureRecord::to(topic).key(&key).payload(record)) {
            Ok(ack) => acks.push(ack),
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
    for ack in acks {
        let _ = ack.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = reader.join().expect("reader thread");
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |ns| round(*ns as f64 / 1e6))
    };
    line(
        "broker_hop",
        serde_json::json!({
            "records": latencies.len(), "sent": total, "rate_per_s": rate,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        }),
    );
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
