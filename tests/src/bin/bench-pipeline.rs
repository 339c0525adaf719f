//! The whole pipeline over Apache Kafka and redis-server, measured from outside, as a user
//! would: the release daemon (`alpha-panda run`, `feed = none`) on a Kafka broker of the
//! bench's own and a Redis database of its own, fed ticks by this process, which reads the
//! fills back. `bash scripts/bench.sh` runs it after `bench-broker`, so the bare broker is
//! measured in the same run.
//!
//! The workload: twelve instruments (so every partition of `market.ticks` is used), one
//! `ema_crossover` 10/30 strategy on all of them (about one fill per 27 ticks), paper broker,
//! limits that never bind. Prints one JSON line per figure:
//! - `pipeline_burst`: N ticks produced as fast as the broker takes them, timed from the first
//!   send until every stage's consumer group has committed the end of every partition it
//!   reads (commits come every `delivery.commit_interval`, 500 ms, so the figure errs low by
//!   at most that); ticks/s, the fills seen, and when each stage's group caught up;
//! - `pipeline_tick_to_fill`: ticks at a steady rate for S seconds on the same (warm) daemon;
//!   each fill timed from the send of the tick it descends from (its `correlation_id`) to its
//!   arrival at a consumer already assigned to the fills topic; p50, p99, max in ms, fills
//!   of the first 10 s left out;
//! - `pipeline_memory`: the daemon's RSS and Redis' `used_memory` and key count 30 s into the
//!   steady run and at its end (flat means no per-record growth), and the size of each
//!   stage's checkpoint at the end (the largest partition's for a partitioned stage): its
//!   head, which every batch writes, and its parts, of which a batch writes what it changed.
//!
//! The ticks carry an origin header as the runtime's own feeds stamp it, so the consumers
//! keep watermarks rather than a dedup key per tick.
//!
//! With `BENCH_BARE_PRODUCE_PER_S` and `BENCH_BARE_HOP_P50_MS` set (bench.sh takes them from
//! `bench-broker`'s lines), the lines carry the issue's targets: burst ≥ 0.5 × bare produce,
//! p50 ≤ 3 × bare hop p50 + 5 ms, p99 ≤ 100 ms.
//!
//! Usage: bench-pipeline [BURST_TICKS] [STEADY_RATE_PER_S] [STEADY_SECONDS]
//! (defaults 100000, 1000, 600). `ALPHA_PANDA_BIN` names the daemon (default
//! `target/release/alpha-panda`); Redis is `ALPHA_PANDA_TEST_REDIS`, database 8, emptied.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpha_panda_actors::feed::SyntheticFeed;
use alpha_panda_actors::kafka::consumer_config;
use alpha_panda_config::{SyntheticFeed as SyntheticSettings, SyntheticInstrument};
use alpha_panda_core::{EventBroker, EventData, EventEnvelope, InstrumentToken, Timestamp};
use alpha_panda_tests::bench::line;
use alpha_panda_tests::ops::{Daemon, daemon_command, free_port, fresh_redis_db};
use alpha_panda_tests::{PrivateKafka, producer_config};
use alpha_panda_topics::keys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

const INSTRUMENTS: [u32; 12] = [
    738561, 408065, 2953217, 341249, 1270529, 492033, 2714625, 779521, 895745, 3861249, 60417,
    81153,
];
const REDIS_DB: u8 = 8;
const FILLS: &str = "paper.orders.filled";
const PREFIX: &str = "bench-pipeline";

fn main() {
    let [burst, rate, seconds] = alpha_panda_tests::bench::numbers(
        ["burst ticks", "steady ticks per second", "steady seconds"],
        [100_000, 1_000, 600],
    );
    let bin = std::env::var("ALPHA_PANDA_BIN")
        .unwrap_or_else(|_| "target/release/alpha-panda".to_owned());
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(REDIS_DB);
    let config =
        std::env::temp_dir().join(format!("ap-bench-pipeline-{}.toml", std::process::id()));
    std::fs::write(&config, config_toml()).expect("writing the bench config");
    let daemon = start(&bin, &config, &kafka.servers, &redis);
    wait_for_topics(&kafka.servers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let producer: FutureProducer = producer_config(&kafka.servers, "bench-pipeline-feed")
        .create()
        .expect("producer");
    let mut feed = SyntheticFeed::new(&synthetic());
    let mut seq = 0;

    // Burst.
    let fills = FillClock::start(&kafka.servers);
    let started = Instant::now();
    runtime.block_on(produce_burst(&producer, &mut feed, &mut seq, burst));
    let produced = started.elapsed();
    let caught_up = wait_caught_up(&kafka.servers, started, Duration::from_secs(1800));
    let drained = started.elapsed();
    line(
        "pipeline_burst",
        serde_json::json!({
            "ticks": burst,
            "produce_s": round(produced.as_secs_f64()),
            "seconds": round(drained.as_secs_f64()),
            "ticks_per_s": (burst as f64 / drained.as_secs_f64()).round(),
            "fills": fills.count(),
            "target_ticks_per_s": env_f64("BENCH_BARE_PRODUCE_PER_S").map(|p| (p * 0.5).round()),
            "stage_caught_up_s": caught_up,
        }),
    );

    // Steady, on the same daemon.
    fills.reset();
    let memory = Arc::new(Mutex::new(Vec::new()));
    let pid = daemon.0.id();
    let steady_started = Instant::now();
    let sampler = {
        let (memory, redis) = (memory.clone(), redis.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(30.min(seconds / 2)));
            memory.lock().expect("samples").push(sample(pid, &redis));
        })
    };
    runtime.block_on(produce_steady(
        &producer,
        &mut feed,
        &mut seq,
        rate,
        Duration::from_secs(seconds),
        &fills,
    ));
    // The last ticks' fills.
    std::thread::sleep(Duration::from_secs(5));
    sampler.join().expect("sampler");
    memory.lock().expect("samples").push(sample(pid, &redis));
    let mut latencies = fills.latencies_after(steady_started + Duration::from_secs(10));
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
    };
    let hop = env_f64("BENCH_BARE_HOP_P50_MS");
    line(
        "pipeline_tick_to_fill",
        serde_json::json!({
            "rate_per_s": rate,
            "seconds": seconds,
            "fills": latencies.len(),
            "p50_ms": pct(0.50).map(round),
            "p99_ms": pct(0.99).map(round),
            "max_ms": latencies.last().copied().map(round),
            "target_p50_ms": hop.map(|h| round(3.0 * h + 5.0)),
            "target_p99_ms": 100,
        }),
    );
    let samples = memory.lock().expect("samples").clone();
    if let [first, .., last] = samples.as_slice() {
        line(
            "pipeline_memory",
            serde_json::json!({
                "seconds": seconds,
                "rss_mib_start": round(first.rss_kib as f64 / 1024.0),
                "rss_mib_end": round(last.rss_kib as f64 / 1024.0),
                "redis_used_mib_start": round(first.redis_bytes as f64 / 1_048_576.0),
                "redis_used_mib_end": round(last.redis_bytes as f64 / 1_048_576.0),
                "redis_keys_start": first.redis_keys,
                "redis_keys_end": last.redis_keys,
                "checkpoint_bytes_end": checkpoint_sizes(&redis),
            }),
        );
    }
    drop(daemon);
    let _ = std::fs::remove_file(&config);
}

fn config_toml() -> String {
    let list = INSTRUMENTS.map(|t| t.to_string()).join(", ");
    format!(
        r#"active_brokers = ["paper"]

[[strategies]]
id = "ema_10_30"
kind = "ema_crossover"
instruments = [{list}]
params = {{ fast = 10, slow = 30, quantity = 10 }}

[brokers.paper.fill_model]
slippage_bps = "0"
starting_cash = "1000000000000"

[risk.paper]
max_position_per_instrument = 1000000000
max_order_notional = "1000000000000"
max_gross_exposure = "1000000000000"
max_daily_loss = "1000000000000"
max_orders_per_day = 1000000000
max_orders_per_second = 1000000
"#
    )
}

fn synthetic() -> SyntheticSettings {
    SyntheticSettings {
        seed: 7,
        ticks_per_second: 1.0,
        volatility: 0.001,
        instruments: INSTRUMENTS
            .iter()
            .enumerate()
            .map(|(i, &t)| SyntheticInstrument {
                instrument_token: InstrumentToken(t),
                symbol: format!("BENCH{i}"),
                start_price: rust_decimal::Decimal::new(100_000 + 25_000 * i as i64, 2),
            })
            .collect(),
    }
}

fn start(bin: &str, config: &std::path::Path, servers: &str, redis: &str) -> Daemon {
    let child = daemon_command(bin)
        .arg("--config")
        .arg(config)
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", servers)
        .env("ALPHA_PANDA__KAFKA__GROUP_PREFIX", PREFIX)
        .env("ALPHA_PANDA__KAFKA__INSTANCE_ID", "bench-pipeline")
        .env("ALPHA_PANDA__REDIS__URL", redis)
        .env("ALPHA_PANDA__FEED", "none")
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ALPHA_PANDA__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin} (build it: cargo build --release): {e}"));
    Daemon(child)
}

fn wait_for_topics(servers: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alpha_panda_actors::kafka::admin::describe(servers, "bench-pipeline")
        .map(|t| !t.contains_key(FILLS))
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the daemon never created its topics"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The next tick of the round-robin over the instruments, stamped with the wall clock.
fn next_tick(feed: &mut SyntheticFeed, pending: &mut Vec<EventEnvelope>) -> EventEnvelope {
    if pending.is_empty() {
        let ts = Timestamp::now();
        pending.extend(feed.next_ticks(ts).into_iter().rev().map(|tick| {
            EventEnvelope::root(
                EventBroker::Shared,
                "feed",
                keys::tick(tick.instrument_token),
                ts,
                EventData::MarketTick(tick),
            )
        }));
    }
    pending.pop().expect("the feed makes a tick per instrument")
}

/// Sends a tick stamped with an origin, as the runtime's feeds do
/// (`delivery::origin::FeedOrigin`): the consumers keep a watermark, not a key per tick.
async fn send(
    producer: &FutureProducer,
    env: &EventEnvelope,
    seq: &mut i64,
) -> rdkafka::producer::DeliveryFuture {
    let payload = env.encode();
    *seq += 1;
    let origin = format!("feed.bench-pipeline|feed|0|{seq}|0");
    loop {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: alpha_panda_actors::delivery::origin::ORIGIN_HEADER,
            value: Some(origin.as_bytes()),
        });
        match producer.send_result(
            FutureRecord::to("market.ticks")
                .key(&env.key)
                .payload(&payload)
                .headers(headers),
        ) {
            Ok(ack) => return ack,
            // The local queue is full: let deliveries drain.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn produce_burst(producer: &FutureProducer, feed: &mut SyntheticFeed, seq: &mut i64, n: u64) {
    let mut pending = Vec::new();
    let mut acks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let env = next_tick(feed, &mut pending);
        acks.push(send(producer, &env, seq).await);
    }
    for ack in acks {
        ack.await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("producing a tick: {e}"));
    }
}

async fn produce_steady(
    producer: &FutureProducer,
    feed: &mut SyntheticFeed,
    seq: &mut i64,
    rate: u64,
    for_how_long: Duration,
    fills: &FillClock,
) {
    let mut pending = Vec::new();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let started = tokio::time::Instant::now();
    let mut acks = Vec::new();
    let mut i: u32 = 0;
    while started.elapsed() < for_how_long {
        // Send on schedule, not after the previous ack: a steady rate, as a feed has.
        tokio::time::sleep_until(started + period * i).await;
        i += 1;
        let env = next_tick(feed, &mut pending);
        fills.sent(env.id);
        acks.push(send(producer, &env, seq).await);
        if acks.len() >= 1000 {
            for ack in acks.drain(..) {
                ack.await
                    .expect("delivery future")
                    .unwrap_or_else(|(e, _)| panic!("producing a tick: {e}"));
            }
        }
    }
    for ack in acks {
        ack.await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("producing a tick: {e}"));
    }
}

/// A fill: when it arrived, and how long after its tick was sent (if this run sent it).
type Seen = (Instant, Option<Duration>);

/// Reads the fills topic from its end on a thread of its own, timing each fill from the send
/// of the tick it descends from.
struct FillClock {
    sent: Arc<Mutex<HashMap<Uuid, Instant>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FillClock {
    fn start(servers: &str) -> Self {
        let consumer: BaseConsumer =
            consumer_config(servers, "bench-pipeline-fills", "bench-pipeline-fills")
                .create()
                .expect("fills consumer");
        let partitions = consumer
            .fetch_metadata(Some(FILLS), Duration::from_secs(10))
            .expect("fills topic metadata")
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(FILLS, p, Offset::End)
                .expect("fills partition");
        }
        consumer.assign(&tpl).expect("assigning the fills topic");
        let clock = Self {
            sent: Arc::default(),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (sent, seen, stop) = (clock.sent.clone(), clock.seen.clone(), clock.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let now = Instant::now();
                if let Ok(env) = EventEnvelope::decode(m.payload().unwrap_or_default())
                    && matches!(env.data, EventData::OrderFilled(_))
                {
                    let latency = sent
                        .lock()
                        .expect("sent")
                        .get(&env.correlation_id)
                        .map(|t| now.duration_since(*t));
                    seen.lock().expect("seen").push((now, latency));
                }
            }
        });
        clock
    }

    fn sent(&self, tick: Uuid) {
        self.sent.lock().expect("sent").insert(tick, Instant::now());
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    fn reset(&self) {
        self.seen.lock().expect("seen").clear();
    }

    fn latencies_after(&self, from: Instant) -> Vec<f64> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(at, _)| *at >= from)
            .filter_map(|(_, l)| l.map(|d| d.as_secs_f64() * 1000.0))
            .collect()
    }
}

impl Drop for FillClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until every stage group has committed the end of every partition it reads; returns
/// when each group got there, in seconds since `started` (which stage the burst waits for).
fn wait_caught_up(
    servers: &str,
    started: Instant,
    within: Duration,
) -> serde_json::Map<String, serde_json::Value> {
    let groups: [(&str, &[&str]); 4] = [
        ("market.strategy", &["market.ticks"]),
        (
            "paper.risk",
            &[
                "paper.signals.raw",
                "paper.orders.filled",
                "paper.orders.failed",
            ],
        ),
        ("paper.trader", &["paper.signals.validated", "market.ticks"]),
        ("paper.portfolio", &["paper.orders.filled", "market.ticks"]),
    ];
    let probes: Vec<(BaseConsumer, TopicPartitionList)> = groups
        .iter()
        .map(|(stage, topics)| {
            let c: BaseConsumer = consumer_config(
                servers,
                "bench-pipeline-probe",
                &format!("{PREFIX}.{stage}"),
            )
            .create()
            .expect("probe consumer");
            let mut tpl = TopicPartitionList::new();
            for t in *topics {
                let n = c
                    .fetch_metadata(Some(t), Duration::from_secs(10))
                    .expect("metadata")
                    .topics()
                    .first()
                    .map_or(0, |m| m.partitions().len() as i32);
                for p in 0..n {
                    tpl.add_partition(t, p);
                }
            }
            (c, tpl)
        })
        .collect();
    let at_end = |(c, tpl): &(BaseConsumer, TopicPartitionList)| {
        let Ok(committed) = c.committed_offsets(tpl.clone(), Duration::from_secs(5)) else {
            return false;
        };
        committed.elements().iter().all(|e| {
            let high = c
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .map_or(i64::MAX, |(_, h)| h);
            high == 0 || e.offset() == Offset::Offset(high)
        })
    };
    let deadline = Instant::now() + within;
    let mut caught_up = serde_json::Map::new();
    loop {
        // In pipeline order: a stage has caught up once the stages feeding it have and it
        // has then read all they wrote.
        for ((stage, _), probe) in groups.iter().zip(&probes).skip(caught_up.len()) {
            if !at_end(probe) {
                break;
            }
            caught_up.insert(
                (*stage).to_owned(),
                round(started.elapsed().as_secs_f64()).into(),
            );
        }
        // The end: every group at the end at once (risk also reads the trader's fills).
        if caught_up.len() == groups.len() && probes.iter().all(at_end) {
            return caught_up;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not catch up within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    redis_bytes: u64,
    redis_keys: u64,
}

fn sample(pid: u32, redis: &str) -> Sample {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let mut conn = redis::Client::open(redis)
        .and_then(|c| c.get_connection())
        .expect("redis connection");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut conn)
        .expect("INFO memory");
    let redis_bytes = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let redis_keys: u64 = redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE");
    Sample {
        rss_kib,
        redis_bytes,
        redis_keys,
    }
}

/// The size of each stage's checkpoints at the end, in bytes, by key (the partitions of a
/// partitioned stage folded into their largest): the head a batch writes whole, and the
/// parts (`{key}:parts`, of which a batch writes only what it changed).
fn checkpoint_sizes(redis: &str) -> serde_json::Value {
    let mut conn = redis::Client::open(redis)
        .and_then(|c| c.get_connection())
        .expect("redis connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*checkpoint*")
        .query(&mut conn)
        .expect("KEYS");
    let (mut heads, mut parts) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    for key in keys {
        if key.ends_with(":version") {
            continue;
        }
        // `{ns}:checkpoint:{group}[:{topic}:{partition}][:parts]`: one entry per group.
        let group = key.split(':').take(3).collect::<Vec<_>>().join(":");
        let (sizes, len) = if key.ends_with(":parts") {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(&key)
                .query(&mut conn)
                .unwrap_or_default();
            (&mut parts, values.iter().map(|v| v.len() as u64).sum())
        } else {
            let len: u64 = redis::cmd("STRLEN").arg(&key).query(&mut conn).unwrap_or(0);
            (&mut heads, len)
        };
        let e = sizes.entry(group).or_insert(0);
        *e = (*e).max(len);
    }
    serde_json::json!({ "head": heads, "parts": parts })
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
