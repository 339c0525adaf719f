//! The seeded chaos run (issue 13): the whole pipeline over a Kafka broker of the test's own
//! (`PrivateKafka`) and a redis-server of its own (`PrivateRedis`, append-only file fsynced
//! on every write), with two daemons sharing the consumer groups, fed a few thousand ticks
//! per instrument while a schedule drawn from the seed strikes: a daemon SIGKILLed and
//! started again, the broker SIGSTOPped for up to 10 s, Redis killed and started again on
//! its data, a daemon added and one removed (rebalances), poison records in `market.ticks`
//! and `paper.signals.validated`, and an operator pause and resume.
//!
//! At the end, exactly: the distinct fill events on `paper.orders.filled` are the fills of
//! the backtest of the same ticks (none lost, none doubled); every strategy's positions,
//! cash and PnL in Redis are those of the backtest's fills; every poison record is in its
//! DLQ once per consumer group that read it, with its topic, partition, offset, group,
//! stage, class and reason, and nothing else is.
//!
//! Seeds come from `ALPHA_PANDA_CHAOS_SEEDS` (default `1,2,3,4,5`, what CI runs; `1..50` is a
//! range) and run three at a time (`ALPHA_PANDA_CHAOS_PARALLEL`), each on a fresh broker and
//! Redis. A failing seed is named with its schedule, and
//! `ALPHA_PANDA_CHAOS_SEEDS=17 cargo test -p alpha-panda-supervisors --test chaos`
//! replays it (the ticks and the schedule are the seed's; the timing is the machine's).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::{EventProducer, Output};
use alpha_panda_actors::feed::SyntheticFeed;
use alpha_panda_config::{Settings, load};
use alpha_panda_core::events::{OrderFilled, PnlSnapshot};
use alpha_panda_core::{
    Decimal, EventBroker, EventData, EventEnvelope, FailureClass, InstrumentToken, Price, Timestamp,
};
use alpha_panda_engine::portfolio::Book;
use alpha_panda_supervisors::backtest::event_loop::tick_id;
use alpha_panda_supervisors::backtest::input::TickRow;
use alpha_panda_supervisors::backtest::{by_strategy, run_loop, starting_cash};
use alpha_panda_tests::PrivateKafka;
use alpha_panda_tests::ops::{
    Daemon, PrivateRedis, daemon_command, free_port, http, read_envelopes, signal,
};
use alpha_panda_topics::{TopicName, keys};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The embedded default's strategies, two of them placing LIMIT orders (so orders rest in
/// the paper trader across the faults).
const CONFIG: &str = r#"
[[strategies]]
id = "momentum_1"
kind = "momentum"
instruments = [738561, 408065]

[[strategies]]
id = "mean_reversion_1"
kind = "mean_reversion"
instruments = [408065, 2953217]
order_type = "LIMIT"
limit_offset_bps = "5"

[[strategies]]
id = "rsi_1"
kind = "rsi"
instruments = [738561, 2953217]
order_type = "LIMIT"
limit_offset_bps = "2"
"#;

/// Ticks per instrument (the synthetic feed's three instruments, one tick each per step).
const STEPS: i64 = 600;
/// The ticks go out in this many chunks; one scheduled fault follows each.
const CHUNKS: usize = 10;
/// How long the pipeline may take to catch up after the last fault.
const DRAIN_SECS: u64 = 180;
const TOKEN: &str = "chaos-test-admin-token-0123456789";

/// splitmix64: a small deterministic generator, so a seed gives the same ticks and schedule
/// on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant at these sizes).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What an operator pause holds: a whole broker or one stage. Every one of them is a
/// consumer pause (records wait in Kafka), so none loses a record. A strategy's pause is
/// left out on purpose: it drops that strategy's signals by design.
const PAUSES: [&str; 5] = [
    r#"{"broker":"paper"}"#,
    r#"{"broker":"paper","stage":"risk"}"#,
    r#"{"broker":"paper","stage":"trader"}"#,
    r#"{"broker":"paper","stage":"portfolio"}"#,
    r#"{"broker":"market","stage":"strategy"}"#,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the n-th running daemon (modulo their number), start it again after `down_ms`.
    Kill { daemon: u64, down_ms: u64 },
    /// SIGSTOP the Kafka broker, SIGCONT after `ms`.
    StallKafka { ms: u64 },
    /// SIGKILL redis-server, start it again on its data after `down_ms`.
    RestartRedis { down_ms: u64 },
    /// Start one more daemon sharing the groups.
    AddDaemon,
    /// SIGTERM the n-th running daemon (modulo their number; never the last one).
    RemoveDaemon { daemon: u64 },
    /// A malformed JSON record and an envelope whose tick payload is invalid, into
    /// `market.ticks`, keyed by the n-th instrument.
    PoisonTicks { instrument: u64 },
    /// The same two kinds into `paper.signals.validated`.
    PoisonValidated { instrument: u64 },
    /// `POST /admin/pause` with `PAUSES[target]` on the n-th daemon, resume after `ms`.
    Pause { target: u64, daemon: u64, ms: u64 },
}

/// One step of a schedule: wait `delay_ms` after the chunk of ticks, then the fault.
#[derive(Debug, Clone, Copy)]
struct Step {
    delay_ms: u64,
    fault: Fault,
}

/// The seed's schedule: every kind of fault once, in an order drawn from the seed, then
/// two more drawn at random, each after one chunk of ticks. Removal comes after the addition.
fn schedule(rng: &mut SplitMix) -> Vec<Step> {
    let kill = |r: &mut SplitMix| Fault::Kill {
        daemon: r.next() % 8,
        down_ms: r.between(0, 2000),
    };
    let stall = |r: &mut SplitMix| Fault::StallKafka {
        ms: r.between(1000, 8000),
    };
    let redis = |r: &mut SplitMix| Fault::RestartRedis {
        down_ms: r.between(200, 3000),
    };
    let pause = |r: &mut SplitMix| Fault::Pause {
        target: r.next() % PAUSES.len() as u64,
        daemon: r.next() % 8,
        ms: r.between(500, 3000),
    };
    let mut faults = vec![
        kill(rng),
        stall(rng),
        redis(rng),
        Fault::AddDaemon,
        Fault::RemoveDaemon {
            daemon: rng.next() % 8,
        },
        Fault::PoisonTicks {
            instrument: rng.next() % 3,
        },
        Fault::PoisonValidated {
            instrument: rng.next() % 3,
        },
        pause(rng),
    ];
    for _ in faults.len()..CHUNKS {
        faults.push(match rng.next() % 4 {
            0 => kill(rng),
            1 => stall(rng),
            2 => redis(rng),
            _ => pause(rng),
        });
    }
    for i in (1..faults.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        faults.swap(i, j);
    }
    let at = |fs: &[Fault], f: fn(&Fault) -> bool| fs.iter().position(f).unwrap_or(0);
    let (add, remove) = (
        at(&faults, |f| matches!(f, Fault::AddDaemon)),
        at(&faults, |f| matches!(f, Fault::RemoveDaemon { .. })),
    );
    if remove < add {
        faults.swap(add, remove);
    }
    faults
        .into_iter()
        .map(|fault| Step {
            delay_ms: rng.between(0, 1000),
            fault,
        })
        .collect()
}

/// The seed's settings, as the daemons load them (without their infrastructure).
fn settings(config: &std::path::Path, seed: u64) -> Settings {
    let mut env = alpha_panda_tests::ticks::generous_limits();
    env.push(("ALPHA_PANDA__SYNTHETIC__SEED".into(), seed.to_string()));
    load(Some(config), env).unwrap_or_else(|e| panic!("chaos settings: {e}"))
}

fn at(unix_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(unix_ms).unwrap_or_else(|| panic!("{unix_ms} ms is no time"))
}

/// The seed's ticks: `STEPS` steps of the synthetic walk, 200 ms of event time apart.
fn tick_rows(settings: &Settings) -> Vec<TickRow> {
    let mut feed = SyntheticFeed::new(&settings.synthetic);
    let mut rows = Vec::new();
    for i in 0..STEPS {
        let ts = at(1_705_290_000_000 + i * 200);
        for t in feed.next_ticks(ts) {
            rows.push(TickRow {
                instrument_token: t.instrument_token,
                timestamp: t.timestamp,
                last_price: t.last_price,
                volume: None,
            });
        }
    }
    rows
}

/// The n-th tick's envelope as the backtest makes it: its id `tick_id(n)`, so the daemons'
/// fills carry the backtest's ids.
fn tick_envelope(n: usize, row: TickRow) -> EventEnvelope {
    let tick = row.to_tick();
    let id = tick_id(n as u64);
    let mut env = EventEnvelope::root(
        EventBroker::Shared,
        "feed",
        keys::tick(tick.instrument_token),
        tick.timestamp,
        EventData::MarketTick(tick),
    );
    (env.id, env.correlation_id, env.trace_id) = (id, id, id);
    env
}

/// The last `lines` lines of a file.
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A folder removed when dropped (also when a seed fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file removed when dropped (also when a seed fails).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Member {
    instance: String,
    http: SocketAddr,
    daemon: Daemon,
    /// The file this run of the daemon logs into.
    log: PathBuf,
}

/// One seed's world: its broker, its Redis, its daemons (dropped in this order: the daemons
/// first, then the services they use).
struct World {
    members: Vec<Member>,
    /// This run's daemon logs (without `DAEMON_LOG`).
    logs: TempDir,
    seed: u64,
    config: TempFile,
    kafka: PrivateKafka,
    redis: PrivateRedis,
    added: usize,
    started: Instant,
    log: Vec<String>,
}

impl World {
    fn note(&mut self, what: String) {
        let line = format!("[seed {} +{:.1}s] {what}", self.seed, self.elapsed());
        eprintln!("{line}");
        self.log.push(line);
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn prefix(&self) -> String {
        format!("chaos-{}", self.seed)
    }

    fn spawn(&self, instance: &str) -> Member {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = self.daemon_log(instance);
        let child = daemon_command(env!("CARGO_BIN_EXE_alpha-panda"))
            .arg("--config")
            .arg(&self.config.0)
            .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &self.kafka.servers)
            // Killed on purpose: fail over quickly (the broker's minimum).
            .env("ALPHA_PANDA__KAFKA__SESSION_TIMEOUT_MS", "6000")
            .env("ALPHA_PANDA__KAFKA__INSTANCE_ID", instance)
            .env("ALPHA_PANDA__KAFKA__GROUP_PREFIX", self.prefix())
            .env("ALPHA_PANDA__REDIS__URL", self.redis.url())
            .env("ALPHA_PANDA__FEED", "none")
            .env("ALPHA_PANDA__ADMIN__TOKEN", TOKEN)
            .env("ALPHA_PANDA__HTTP__LISTEN", http.to_string())
            .env(
                "ALPHA_PANDA__LOG__LEVEL",
                std::env::var("DAEMON_LOG")
                    .unwrap_or_else(|_| "error,alpha_panda_supervisors::daemon=info".into()),
            )
            .stdout(Stdio::from(
                std::fs::File::create(&log)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", log.display())),
            ))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting daemon {instance}: {e}"));
        let member = Member {
            instance: instance.to_owned(),
            http,
            daemon: Daemon(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(http).is_err() {
            assert!(
                Instant::now() < deadline,
                "daemon {instance} never served HTTP on {http}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        member
    }

    /// Where a daemon run logs: with `DAEMON_LOG` set (a log filter), a file of its own
    /// under `$TMPDIR/ap-chaos-logs/` (kept for reading; remove it when done); else errors
    /// and the shutdown steps, in the run's own folder (removed with the run), for a
    /// failure message.
    fn daemon_log(&self, instance: &str) -> PathBuf {
        let dir = if std::env::var("DAEMON_LOG").is_ok() {
            std::env::temp_dir().join("ap-chaos-logs")
        } else {
            self.logs.0.clone()
        };
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!(
            "seed{}-{instance}-{:.1}s.log",
            self.seed,
            self.elapsed()
        ))
    }

    fn start(&mut self, instance: &str) {
        let m = self.spawn(instance);
        self.members.push(m);
    }

    fn pick(&self, n: u64) -> usize {
        (n % self.members.len() as u64) as usize
    }

    fn apply(&mut self, fault: Fault, poison: &mut Vec<Poison>, rt: &tokio::runtime::Runtime) {
        match fault {
            Fault::Kill { daemon, down_ms } => {
                let i = self.pick(daemon);
                let instance = self.members[i].instance.clone();
                self.note(format!("SIGKILL {instance}, restart after {down_ms} ms"));
                let mut m = self.members.remove(i);
                let _ = m.daemon.0.kill();
                let _ = m.daemon.0.wait();
                drop(m);
                std::thread::sleep(Duration::from_millis(down_ms));
                self.start(&instance);
            }
            Fault::StallKafka { ms } => {
                self.note(format!("SIGSTOP Kafka for {ms} ms"));
                signal(self.kafka.pid(), "STOP");
                std::thread::sleep(Duration::from_millis(ms));
                signal(self.kafka.pid(), "CONT");
            }
            Fault::RestartRedis { down_ms } => {
                self.note(format!(
                    "SIGKILL redis-server, start it again after {down_ms} ms"
                ));
                self.redis.stop();
                std::thread::sleep(Duration::from_millis(down_ms));
                self.redis.resume();
            }
            Fault::AddDaemon => {
                self.added += 1;
                let instance = format!("c{}-chaos-daemon", self.added);
                self.note(format!("add daemon {instance}"));
                self.start(&instance);
            }
            Fault::RemoveDaemon { daemon } => {
                if self.members.len() < 2 {
                    self.note("remove: only one daemon runs, kept".into());
                    return;
                }
                let i = self.pick(daemon);
                let mut m = self.members.remove(i);
                self.note(format!("SIGTERM {} (removed)", m.instance));
                signal(m.daemon.0.id(), "TERM");
                let deadline = Instant::now() + Duration::from_secs(60);
                let status = loop {
                    if let Ok(Some(s)) = m.daemon.0.try_wait() {
                        break s;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not stop within 60 s of SIGTERM; its log ends:\n{}",
                        m.instance,
                        tail(&m.log, 40)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                };
                assert_eq!(status.code(), Some(0), "{} exits 0 on SIGTERM", m.instance);
            }
            Fault::PoisonTicks { instrument } => {
                let topic = TopicName::market_ticks();
                let groups = vec![
                    format!("{}.market.strategy", self.prefix()),
                    format!("{}.paper.trader", self.prefix()),
                    format!("{}.paper.portfolio", self.prefix()),
                ];
                self.inject(rt, &topic, instrument, groups, poison);
            }
            Fault::PoisonValidated { instrument } => {
                let topic: TopicName = "paper.signals.validated"
                    .parse()
                    .unwrap_or_else(|e| panic!("topic: {e}"));
                let groups = vec![format!("{}.paper.trader", self.prefix())];
                self.inject(rt, &topic, instrument, groups, poison);
            }
            Fault::Pause { target, daemon, ms } => {
                let body = PAUSES[target as usize % PAUSES.len()];
                let m = &self.members[self.pick(daemon)];
                let (at, instance) = (m.http, m.instance.clone());
                self.note(format!("pause {body} on {instance} for {ms} ms"));
                let (code, text) = http(at, "POST", "/admin/pause", Some(TOKEN), Some(body));
                assert_eq!(code, 200, "pause {body}: {text}");
                std::thread::sleep(Duration::from_millis(ms));
                let (code, text) = http(at, "POST", "/admin/resume", Some(TOKEN), Some(body));
                assert_eq!(code, 200, "resume {body}: {text}");
            }
        }
    }

    /// Two poison records into `topic`, keyed by one instrument: bytes that are not JSON,
    /// and a whole envelope whose payload does not match its type.
    fn inject(
        &mut self,
        rt: &tokio::runtime::Runtime,
        topic: &TopicName,
        instrument: u64,
        groups: Vec<String>,
        poison: &mut Vec<Poison>,
    ) {
        let token = [738561u32, 408065, 2953217][instrument as usize % 3];
        let key = keys::tick(InstrumentToken(token));
        let n = poison.len();
        let malformed = format!("{{\"id\": \"chaos poison {n}, seed {}", self.seed);
        let mut envelope = serde_json::to_value(EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            key.clone(),
            at(1_705_290_000_000),
            EventData::MarketTick(alpha_panda_core::events::MarketTick::new(
                InstrumentToken(token),
                Price::new(Decimal::new(100, 0)).unwrap_or_else(|e| panic!("{e}")),
                at(1_705_290_000_000),
            )),
        ))
        .unwrap_or_else(|e| panic!("envelope as JSON: {e}"));
        if topic.to_string() == "market.ticks" {
            envelope["data"]["last_price"] = serde_json::json!("minus one rupee");
        } else {
            // A tick's payload under a validated signal's type.
            envelope["type"] = serde_json::json!("validated_signal");
        }
        let well_formed = envelope.to_string();
        let producer: FutureProducer =
            alpha_panda_tests::producer_config(&self.kafka.servers, "chaos-poison")
                .create()
                .unwrap_or_else(|e| panic!("poison producer: {e}"));
        for value in [malformed, well_formed] {
            let name = topic.to_string();
            let delivered = rt
                .block_on(producer.send(
                    FutureRecord::to(&name).key(&key).payload(&value),
                    Duration::from_secs(30),
                ))
                .unwrap_or_else(|(e, _)| panic!("producing poison to {name}: {e}"));
            self.note(format!(
                "poison into {name} partition {} offset {}: {value}",
                delivered.partition, delivered.offset
            ));
            poison.push(Poison {
                topic: name,
                partition: delivered.partition,
                offset: delivered.offset,
                value,
                groups: groups.clone(),
            });
        }
    }
}

/// A poison record the test produced, and the consumer groups that must dead-letter it.
#[derive(Debug)]
struct Poison {
    topic: String,
    partition: i32,
    offset: i64,
    value: String,
    groups: Vec<String>,
}

/// Every consumer group of the pipeline with the topics it reads.
fn consumed(prefix: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("{prefix}.market.strategy"), "market.ticks"),
        (format!("{prefix}.paper.risk"), "paper.signals.raw"),
        (format!("{prefix}.paper.risk"), "paper.orders.filled"),
        (format!("{prefix}.paper.risk"), "paper.orders.failed"),
        (format!("{prefix}.paper.trader"), "paper.signals.validated"),
        (format!("{prefix}.paper.trader"), "market.ticks"),
        (format!("{prefix}.paper.portfolio"), "paper.orders.filled"),
        (format!("{prefix}.paper.portfolio"), "market.ticks"),
    ]
}

/// What is left for a group to commit on a topic (`None` when all of it is committed).
fn behind(servers: &str, group: &str, topic: &str) -> Option<String> {
    let c: BaseConsumer = alpha_panda_actors::kafka::consumer_config(servers, "chaos-probe", group)
        .create()
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let partitions = alpha_panda_actors::kafka::admin::describe(servers, "chaos-probe")
        .ok()?
        .get(topic)
        .copied()
        .unwrap_or(0);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = match c.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return Some(format!("{group} on {topic}: {e}")),
    };
    for e in committed.elements() {
        let high = match c.fetch_watermarks(topic, e.partition(), Duration::from_secs(5)) {
            Ok((_, h)) => h,
            Err(err) => return Some(format!("{group} on {topic}: {err}")),
        };
        let done = high == 0 || e.offset() == rdkafka::Offset::Offset(high);
        if !done {
            return Some(format!(
                "{group} on {topic}/{}: committed {:?} of {high}",
                e.partition(),
                e.offset()
            ));
        }
    }
    None
}

/// Every consumer group of the seed (the stage groups and their `.lease` groups): its state
/// and each member with the partitions the group assigned it, for a report that says who
/// holds what when the pipeline did not drain.
fn group_members(servers: &str, prefix: &str) -> String {
    let probe: BaseConsumer = alpha_panda_actors::kafka::client_config(servers, "chaos-probe")
        .create()
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let list = match probe.fetch_group_list(None, Duration::from_secs(10)) {
        Ok(list) => list,
        Err(e) => return format!("cannot list the consumer groups: {e}"),
    };
    let mut out = Vec::new();
    let mut groups: Vec<_> = list
        .groups()
        .iter()
        .filter(|g| g.name().starts_with(prefix))
        .collect();
    groups.sort_by_key(|g| g.name().to_owned());
    for g in groups {
        out.push(format!("group {} ({}):", g.name(), g.state()));
        for m in g.members() {
            let assigned = m
                .assignment()
                .map_or_else(|| "no assignment".to_owned(), assignment_text);
            out.push(format!("  {} ({}): {assigned}", m.id(), m.client_host()));
        }
    }
    out.join("\n")
}

/// A member's assignment in the consumer protocol (version, then per topic its name and
/// partitions), as `topic[p, …]`.
fn assignment_text(bytes: &[u8]) -> String {
    let mut at = 2; // the version
    let mut take = |n: usize| -> Option<&[u8]> {
        let part = bytes.get(at..at + n)?;
        at += n;
        Some(part)
    };
    let mut parse = || -> Option<String> {
        let mut topics = Vec::new();
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..count {
            let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let name = String::from_utf8_lossy(take(usize::try_from(len).ok()?)?).into_owned();
            let n = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let mut partitions = Vec::new();
            for _ in 0..n {
                partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
            }
            topics.push(format!("{name}{partitions:?}"));
        }
        Some(topics.join(" "))
    };
    parse().unwrap_or_else(|| format!("undecodable assignment {bytes:?}"))
}

/// The daemons' portfolio as Redis holds it: each strategy's snapshot.
fn books(redis: &str, strategies: &[String]) -> BTreeMap<String, PnlSnapshot> {
    let client = redis::Client::open(redis).unwrap_or_else(|e| panic!("redis: {e}"));
    let mut conn = client
        .get_connection()
        .unwrap_or_else(|e| panic!("redis: {e}"));
    let mut out = BTreeMap::new();
    for s in strategies {
        let json: Option<String> = redis::cmd("GET")
            .arg(format!("paper:portfolio:{s}"))
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("redis GET: {e}"));
        if let Some(json) = json {
            let snap: PnlSnapshot =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{s}'s snapshot: {e}"));
            out.insert(s.clone(), snap);
        }
    }
    out
}

/// A book's figures: cash, fees, (realized, unrealized, total) PnL, and per instrument the
/// quantity, average price and realized PnL.
#[derive(Debug, PartialEq)]
struct Figures {
    cash: Decimal,
    fees: Decimal,
    pnl: (Decimal, Decimal, Decimal),
    positions: Vec<(u32, i64, Decimal, Decimal)>,
}

impl Figures {
    fn new(
        cash: Decimal,
        fees: Decimal,
        pnl: (Decimal, Decimal, Decimal),
        positions: Vec<(u32, i64, Decimal, Decimal)>,
    ) -> Self {
        Self {
            cash,
            fees,
            pnl,
            positions,
        }
    }

    /// What does not depend on the order of the fills: cash, fees, total PnL (to 1e-6; an
    /// average price is a quotient) and quantities.
    fn order_free(&self) -> String {
        let held: Vec<String> = self
            .positions
            .iter()
            .map(|(t, q, _, _)| format!("{t}: {q}"))
            .collect();
        format!(
            "cash {} fees {} total {} positions [{}]",
            self.cash.normalize(),
            self.fees.normalize(),
            self.pnl.2.round_dp(6).normalize(),
            held.join(", ")
        )
    }

    /// Realized and unrealized PnL, and the average prices.
    fn split(&self) -> String {
        let avg: Vec<String> = self
            .positions
            .iter()
            .map(|(t, _, a, _)| format!("{t} @ {}", a.round_dp(4)))
            .collect();
        format!(
            "realized {} unrealized {} [{}]",
            self.pnl.0.round_dp(4),
            self.pnl.1.round_dp(4),
            avg.join(", ")
        )
    }
}

/// Each strategy's book after `fills`, in this order, marked to each instrument's last tick.
fn expected_books(
    fills: &[(String, OrderFilled)],
    starting_cash: Decimal,
    last: &HashMap<InstrumentToken, Decimal>,
) -> BTreeMap<String, Figures> {
    let mut out = BTreeMap::new();
    for ((_, strategy), fills) in by_strategy(fills) {
        let mut book = Book::new(starting_cash);
        for f in &fills {
            book.apply_fill(
                f.instrument_token,
                f.side,
                f.quantity.get(),
                f.fill_price.get(),
                f.fees,
            );
        }
        for (token, price) in last {
            book.mark(*token, *price);
        }
        let positions = book
            .positions
            .iter()
            .map(|(t, p)| (t.0, p.quantity, p.average_price, p.realized))
            .collect();
        let pnl = (book.realized_pnl(), book.unrealized_pnl(), book.total_pnl());
        out.insert(
            strategy.to_string(),
            Figures::new(book.cash, book.fees, pnl, positions),
        );
    }
    out
}

/// Where a fill that differs from the backtest's came from: every record of its strategy and
/// instrument on the signal and order topics within 3 s of event time of it, in event-time
/// order, with topic, partition, offset and what risk or the trader said.
fn trail(servers: &str, fills: &[&OrderFilled]) -> String {
    let topics = [
        "paper.signals.raw",
        "paper.signals.validated",
        "paper.signals.rejected",
        "paper.orders.submitted",
        "paper.orders.failed",
        "paper.orders.filled",
    ];
    let mut records = Vec::new();
    for topic in topics {
        for (p, o, env) in read_envelopes(servers, topic) {
            records.push((topic, p, o, env));
        }
    }
    let ticks = read_envelopes(servers, "market.ticks");
    let mut copies: HashMap<uuid::Uuid, usize> = HashMap::new();
    for (_, _, env) in &ticks {
        *copies.entry(env.id).or_default() += 1;
    }
    let doubled = copies.values().filter(|n| **n > 1).count();
    let mut out = vec![format!(
        "  market.ticks: {} records, {} ids on it more than once",
        ticks.len(),
        doubled
    )];
    for f in fills {
        let near = |t: Timestamp| (t.0 - f.timestamp.0).num_milliseconds().abs() <= 3_000;
        let mut lines: Vec<(Timestamp, String)> = Vec::new();
        for (p, o, env) in &ticks {
            if let EventData::MarketTick(t) = &env.data
                && t.instrument_token == f.instrument_token
                && near(t.timestamp)
            {
                lines.push((
                    t.timestamp,
                    format!(
                        "    {} market.ticks {p}@{o} id {}: {}{}",
                        t.timestamp,
                        env.id,
                        t.last_price,
                        if copies.get(&env.id).copied().unwrap_or(0) > 1 {
                            " (id on the topic more than once)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        for (topic, p, o, env) in &records {
            let what = match &env.data {
                EventData::TradingSignal(s)
                    if s.strategy_id == f.strategy_id
                        && s.instrument_token == f.instrument_token =>
                {
                    Some((
                        s.timestamp,
                        format!("{} {} @ {}", s.signal_type, s.quantity, s.price),
                    ))
                }
                EventData::ValidatedSignal(v)
                    if v.original_signal.strategy_id == f.strategy_id
                        && v.original_signal.instrument_token == f.instrument_token =>
                {
                    let s = &v.original_signal;
                    Some((
                        s.timestamp,
                        format!("{} {} @ {}", s.signal_type, s.quantity, s.price),
                    ))
                }
                EventData::RejectedSignal(r)
                    if r.original_signal.strategy_id == f.strategy_id
                        && r.original_signal.instrument_token == f.instrument_token =>
                {
                    let s = &r.original_signal;
                    Some((
                        s.timestamp,
                        format!(
                            "{} {} @ {}: {}",
                            s.signal_type, s.quantity, s.price, r.rejection_reason
                        ),
                    ))
                }
                EventData::OrderPlaced(o)
                    if o.strategy_id == f.strategy_id
                        && o.instrument_token == f.instrument_token =>
                {
                    Some((
                        o.timestamp,
                        format!(
                            "{:?} {} {} @ {} ({})",
                            o.order_type, o.side, o.quantity, o.price, o.order_id
                        ),
                    ))
                }
                EventData::OrderFailed(o)
                    if o.strategy_id == f.strategy_id
                        && o.instrument_token == f.instrument_token =>
                {
                    Some((
                        o.timestamp,
                        format!(
                            "{} {} @ {} ({}): {}",
                            o.side, o.quantity, o.price, o.order_id, o.error_message
                        ),
                    ))
                }
                EventData::OrderFilled(o)
                    if o.strategy_id == f.strategy_id
                        && o.instrument_token == f.instrument_token =>
                {
                    Some((
                        o.timestamp,
                        format!(
                            "{} {} @ {} ({})",
                            o.side, o.quantity, o.fill_price, o.order_id
                        ),
                    ))
                }
                _ => None,
            };
            if let Some((t, text)) = what.filter(|(t, _)| near(*t)) {
                lines.push((t, format!("    {t} {topic} {p}@{o} id {}: {text}", env.id)));
            }
        }
        lines.sort_by_key(|l| l.0);
        out.push(format!(
            "  around {} {} {} {} @ {} ({}):",
            f.strategy_id, f.instrument_token.0, f.side, f.quantity, f.fill_price, f.timestamp
        ));
        out.extend(lines.into_iter().map(|(_, l)| l));
    }
    out.join("\n")
}

/// Runs one seed; `Err` says what differed.
fn run_seed(seed: u64) -> Result<(), String> {
    let started = Instant::now();
    // One file per run: a seed listed twice runs twice at once, and a run that ends removes
    // its file while the other's daemons still read theirs.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config = TempFile(
        std::env::temp_dir().join(format!("ap-chaos-{}-{seed}-{run}.toml", std::process::id())),
    );
    std::fs::write(&config.0, CONFIG).unwrap_or_else(|e| panic!("writing config: {e}"));
    let settings = settings(&config.0, seed);
    let rows = tick_rows(&settings);
    let reference = run_loop(&settings, rows.iter().copied())
        .unwrap_or_else(|e| panic!("the reference backtest: {e}"));
    let mut rng = SplitMix(seed);
    let plan = schedule(&mut rng);
    eprintln!(
        "[seed {seed}] {} ticks, the backtest gives {} fills; schedule (one step after each \
         chunk of {} ticks):",
        rows.len(),
        reference.fills.len(),
        rows.len() / CHUNKS
    );
    for (i, s) in plan.iter().enumerate() {
        eprintln!(
            "[seed {seed}]   {i}: after {} ms, {:?}",
            s.delay_ms, s.fault
        );
    }

    let mut world = World {
        members: Vec::new(),
        logs: TempDir(
            std::env::temp_dir().join(format!("ap-chaos-run-{}-{seed}-{run}", std::process::id())),
        ),
        seed,
        config,
        kafka: PrivateKafka::start(),
        redis: PrivateRedis::start(),
        added: 0,
        started,
        log: Vec::new(),
    };
    world.note(format!(
        "Kafka on {}, Redis on {}",
        world.kafka.servers,
        world.redis.url()
    ));
    world.start("a-chaos-daemon");
    let deadline = Instant::now() + Duration::from_secs(60);
    while alpha_panda_actors::kafka::admin::describe(&world.kafka.servers, "chaos")
        .map(|t| !t.contains_key("paper.orders.filled"))
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the daemon never created the topics"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    world.start("b-chaos-daemon");
    world.note("two daemons up".into());

    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let producer: EventProducer =
        rt.block_on(async { alpha_panda_tests::producer(&world.kafka.servers, "chaos-feed") });
    let envelopes: Vec<Output> = rows
        .iter()
        .enumerate()
        .map(|(n, row)| Output {
            topic: TopicName::market_ticks(),
            envelope: tick_envelope(n, *row),
        })
        .collect();
    let mut poison = Vec::new();
    let per_chunk = envelopes.len().div_ceil(CHUNKS);
    for (chunk, step) in envelopes.chunks(per_chunk).zip(&plan) {
        // A feed retries what Kafka did not acknowledge (a stall can outlast the delivery
        // timeout on a loaded machine); the copies keep their ids and are deduplicated.
        let mut tries = 0;
        while let Err(e) = rt.block_on(producer.send_all(chunk)) {
            tries += 1;
            assert!(
                tries < 4,
                "producing ticks failed 4 times: {e}\nthe broker's log:\n{}",
                world.kafka.log_tail(60)
            );
            world.note(format!(
                "producing ticks failed ({e}); sending the chunk again"
            ));
        }
        std::thread::sleep(Duration::from_millis(step.delay_ms));
        world.apply(step.fault, &mut poison, &rt);
    }
    world.note("every tick sent, every fault done".into());

    // Drained: every group has committed the end of every topic it reads, twice in a row.
    let prefix = world.prefix();
    let deadline = Instant::now() + Duration::from_secs(DRAIN_SECS);
    let mut quiet = 0;
    while quiet < 2 {
        let left: Vec<String> = consumed(&prefix)
            .iter()
            .filter_map(|(g, t)| behind(&world.kafka.servers, g, t))
            .collect();
        if left.is_empty() {
            quiet += 1;
        } else {
            quiet = 0;
            if Instant::now() > deadline {
                let status: Vec<String> = world
                    .members
                    .iter()
                    .map(|m| {
                        let (code, body) = http(m.http, "GET", "/status", Some(TOKEN), None);
                        format!("{} /status ({code}): {body}", m.instance)
                    })
                    .collect();
                return Err(format!(
                    "the pipeline did not drain within {DRAIN_SECS} s: {}\n{}\n{}\n{}",
                    left.join("; "),
                    status.join("\n"),
                    group_members(&world.kafka.servers, &prefix),
                    world.log.join("\n")
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    world.note("drained".into());

    let mut errors = Vec::new();

    // Fills: the distinct fill events on the topic are the backtest's, one each.
    let mut by_id: HashMap<uuid::Uuid, OrderFilled> = HashMap::new();
    // The distinct fills in the order the portfolio reads them (a strategy's fills share a
    // partition: key `account|strategy`).
    let mut published: Vec<(String, OrderFilled)> = Vec::new();
    let mut records = 0;
    let mut on_topic = read_envelopes(&world.kafka.servers, "paper.orders.filled");
    on_topic.sort_by_key(|(p, o, _)| (*p, *o));
    for (_, _, env) in on_topic {
        records += 1;
        if let EventData::OrderFilled(f) = env.data {
            match by_id.insert(env.id, f.clone()) {
                Some(before) if before != f => {
                    errors.push(format!("fill id {} carries two different fills", env.id))
                }
                Some(_) => {}
                None => published.push(("paper".to_owned(), f)),
            }
        }
    }
    let count = |fills: &mut dyn Iterator<Item = &OrderFilled>| {
        let mut m: BTreeMap<String, i32> = BTreeMap::new();
        for f in fills {
            *m.entry(format!("{f:?}")).or_default() += 1;
        }
        m
    };
    let got = count(&mut by_id.values());
    let want = count(&mut reference.fills.iter().map(|(_, f)| f));
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n)
        .map(|(k, _)| k.clone())
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k).copied().unwrap_or(0) < **n)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let differing: Vec<&OrderFilled> = reference
            .fills
            .iter()
            .map(|(_, f)| f)
            .filter(|f| missing.contains(&format!("{f:?}")))
            .chain(by_id.values().filter(|f| {
                want.get(&format!("{f:?}")).copied().unwrap_or(0)
                    < got.get(&format!("{f:?}")).copied().unwrap_or(0)
            }))
            .collect();
        errors.push(format!(
            "fills differ from the backtest ({} distinct on the topic in {records} records, {} \
             in the backtest): missing {missing:#?}, extra or doubled {extra:#?}\nwhere they \
             came from:\n{}",
            by_id.len(),
            reference.fills.len(),
            trail(&world.kafka.servers, &differing)
        ));
    }
    world.note(format!(
        "{} distinct fills in {records} records on paper.orders.filled, {} in the backtest",
        by_id.len(),
        reference.fills.len()
    ));

    // Positions, cash and PnL. A book's average prices and the split of its PnL between
    // realized and unrealized depend on the order of its fills; cash, fees, quantities and
    // total PnL do not. So: the books in Redis are exactly the fills on the topic applied in
    // the order the portfolio reads them (none lost, none applied twice), and their
    // order-free figures are the backtest's; a strategy whose fills reached the topic in the
    // backtest's order has exactly the backtest's book, and one whose fills did not is named
    // in an `ORDER:` line (see docs/testing.md, "The chaos run").
    let mut last: HashMap<InstrumentToken, Decimal> = HashMap::new();
    for r in &rows {
        last.insert(r.instrument_token, r.last_price.get());
    }
    let strategies: Vec<String> = settings
        .strategies
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    let held = books(&world.redis.url(), &strategies);
    let cash = starting_cash(&settings, "paper");
    let actual: BTreeMap<String, Figures> = held
        .iter()
        .map(|(s, snap)| {
            let positions = snap
                .positions
                .iter()
                .map(|p| {
                    (
                        p.instrument_token.0,
                        p.quantity,
                        p.average_price,
                        p.realized_pnl,
                    )
                })
                .collect();
            let pnl = (snap.realized_pnl, snap.unrealized_pnl, snap.total_pnl);
            (
                s.clone(),
                Figures::new(snap.cash, snap.fees, pnl, positions),
            )
        })
        .collect();
    let from_topic = expected_books(&published, cash, &last);
    if actual != from_topic {
        errors.push(format!(
            "the books in Redis are not the fills on paper.orders.filled applied once each, in \
             order:\n  redis {actual:#?}\n  topic {from_topic:#?}"
        ));
    }
    // The backtest's books: its fills in the order its report applies them, by event time
    // (then broker and order id), which is a function of the records and their event times.
    let backtest = expected_books(&reference.fills, cash, &last);
    let order_free = |m: &BTreeMap<String, Figures>| -> BTreeMap<String, String> {
        m.iter().map(|(s, f)| (s.clone(), f.order_free())).collect()
    };
    if order_free(&actual) != order_free(&backtest) {
        errors.push(format!(
            "cash, fees, quantities or total PnL differ from the backtest's:\n  redis    {:#?}\n  \
             backtest {:#?}",
            order_free(&actual),
            order_free(&backtest)
        ));
    }
    let sequence = |fills: &[(String, OrderFilled)], s: &str| -> Vec<String> {
        fills
            .iter()
            .filter(|(_, f)| f.strategy_id.to_string() == s)
            .map(|(_, f)| {
                format!(
                    "{} {} {} {} @ {} ({})",
                    f.timestamp, f.instrument_token.0, f.side, f.quantity, f.fill_price, f.order_id
                )
            })
            .collect()
    };
    // Average prices and the realized/unrealized split depend on the order the fills are
    // applied in. Where a strategy's fills reached the topic in the backtest's order, its
    // book must be the backtest's to the last digit; where they did not, the seed's log says
    // where the orders part (docs/testing.md, "The chaos run").
    for (s, want) in &backtest {
        let (topic, canonical) = (sequence(&published, s), sequence(&reference.fills, s));
        let got = from_topic.get(s);
        if topic == canonical {
            if got != Some(want) {
                errors.push(format!(
                    "{s}'s fills reached paper.orders.filled in the backtest's order, yet its \
                     book differs from the backtest's: {got:#?} against {want:#?}"
                ));
            }
        } else if got != Some(want) {
            let first = topic.iter().zip(&canonical).position(|(a, b)| a != b);
            world.note(format!(
                "ORDER: {s}'s fills reached paper.orders.filled in another order than their \
                 event times, so its average prices and realized/unrealized PnL differ from the \
                 backtest's ({:?} against {:?}); first difference at its fill {first:?}: topic \
                 {:?}, backtest {:?}",
                got.map(Figures::split),
                want.split(),
                first.map(|i| &topic[i..(i + 3).min(topic.len())]),
                first.map(|i| &canonical[i..(i + 3).min(canonical.len())]),
            ));
        }
    }

    // Poison: each in its DLQ once per group that read it, with its provenance; nothing else.
    let mut dead: BTreeMap<(String, i32, i64, String), Vec<String>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for dlq in ["market.ticks.dlq", "paper.signals.validated.dlq"] {
        for (_, _, env) in read_envelopes(&world.kafka.servers, dlq) {
            if !ids.insert(env.id) {
                continue; // The same dead letter written again after a crash: same id.
            }
            let EventData::SystemError(e) = env.data else {
                errors.push(format!("{dlq} holds a {:?}", env.event_type()));
                continue;
            };
            let mut problems = Vec::new();
            if e.error_class != FailureClass::Poison {
                problems.push(format!("class {:?}", e.error_class));
            }
            if e.error_message.is_empty() || e.stage.is_empty() {
                problems.push("no reason or no stage".to_owned());
            }
            let known = poison.iter().find(|p| {
                p.topic == e.original_topic
                    && p.partition == e.original_partition
                    && p.offset == e.original_offset
            });
            match known {
                None => problems.push("not a record the test poisoned".to_owned()),
                Some(p) if e.original_value.as_deref() != Some(p.value.as_str()) => {
                    problems.push(format!("value {:?}", e.original_value))
                }
                Some(_) => {}
            }
            if !problems.is_empty() {
                errors.push(format!(
                    "dead letter {} ({}/{}@{}, group {}, stage {}, {}): {}",
                    env.id,
                    e.original_topic,
                    e.original_partition,
                    e.original_offset,
                    e.consumer_group,
                    e.stage,
                    e.error_message,
                    problems.join(", ")
                ));
            }
            dead.entry((
                e.original_topic,
                e.original_partition,
                e.original_offset,
                e.consumer_group,
            ))
            .or_default()
            .push(e.stage);
        }
    }
    for p in &poison {
        for g in &p.groups {
            let key = (p.topic.clone(), p.partition, p.offset, g.clone());
            match dead.get(&key).map(Vec::len) {
                Some(1) => {}
                Some(n) => errors.push(format!(
                    "{}/{}@{} dead-lettered {n} times with different ids by {g}",
                    p.topic, p.partition, p.offset
                )),
                None => errors.push(format!(
                    "{}/{}@{} ({}) is not in the DLQ for group {g}",
                    p.topic, p.partition, p.offset, p.value
                )),
            }
        }
    }
    world.note(format!(
        "{} poison records, {} distinct dead letters; {} s in all",
        poison.len(),
        ids.len(),
        started.elapsed().as_secs()
    ));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", errors.join("\n"), world.log.join("\n")))
    }
}

/// Seeds from `ALPHA_PANDA_CHAOS_SEEDS`: `1,2,3` or `1..50` (inclusive), or both mixed.
fn parse_seeds(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim().parse::<u64>().map_err(|_| {
                format!(
                    "ALPHA_PANDA_CHAOS_SEEDS={text:?}: {s:?} is not a seed (expected numbers such \
                     as `1,2,3` or a range `1..50`)"
                )
            })
        };
        match part.split_once("..") {
            Some((a, b)) => out.extend(num(a)?..=num(b)?),
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        return Err(format!("ALPHA_PANDA_CHAOS_SEEDS={text:?} names no seed"));
    }
    Ok(out)
}

fn seeds() -> Vec<u64> {
    let text = std::env::var("ALPHA_PANDA_CHAOS_SEEDS").unwrap_or_else(|_| "1,2,3,4,5".into());
    parse_seeds(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn seed_lists_and_ranges_parse_and_a_bad_seed_is_named() {
    assert_eq!(parse_seeds("1,2, 3"), Ok(vec![1, 2, 3]));
    assert_eq!(parse_seeds("7,20..23"), Ok(vec![7, 20, 21, 22, 23]));
    let e = parse_seeds("1,x2").unwrap_err();
    assert!(e.contains("\"x2\" is not a seed"), "{e}");
    assert!(parse_seeds(" , ").unwrap_err().contains("names no seed"));
}

proptest::proptest! {
    /// A seed gives one schedule, every time: each kind of fault at least once, one fault per
    /// chunk, the removal of a daemon after its addition, durations within their bounds.
    #[test]
    fn a_seed_gives_one_schedule_with_every_fault_and_the_removal_after_the_addition(seed in proptest::prelude::any::<u64>()) {
        let plan = schedule(&mut SplitMix(seed));
        let again = schedule(&mut SplitMix(seed));
        proptest::prop_assert_eq!(format!("{plan:?}"), format!("{again:?}"));
        proptest::prop_assert_eq!(plan.len(), CHUNKS);
        let kind = |f: &Fault| std::mem::discriminant(f);
        let kinds: std::collections::HashSet<_> = plan.iter().map(|s| kind(&s.fault)).collect();
        proptest::prop_assert_eq!(kinds.len(), 8);
        let add = plan.iter().position(|s| matches!(s.fault, Fault::AddDaemon));
        let remove = plan
            .iter()
            .position(|s| matches!(s.fault, Fault::RemoveDaemon { .. }));
        proptest::prop_assert!(add < remove, "added at {:?}, removed at {:?}", add, remove);
        for s in &plan {
            proptest::prop_assert!(s.delay_ms <= 1000);
            match s.fault {
                Fault::StallKafka { ms } => proptest::prop_assert!((1000..=8000).contains(&ms)),
                Fault::Kill { down_ms, .. } => proptest::prop_assert!(down_ms <= 2000),
                Fault::RestartRedis { down_ms } => proptest::prop_assert!((200..=3000).contains(&down_ms)),
                Fault::Pause { ms, target, .. } => {
                    proptest::prop_assert!((500..=3000).contains(&ms));
                    proptest::prop_assert!((target as usize) < PAUSES.len());
                }
                _ => {}
            }
        }
    }
}

#[test]
fn every_seeded_chaos_schedule_gives_the_backtests_fills_books_and_dead_letters() {
    let seeds = seeds();
    // Seeds run this many at a time (each on its own broker and Redis): most of a seed is
    // waiting (stalls, session timeouts, the drain), so three share a 2-core machine well.
    let parallel: usize = std::env::var("ALPHA_PANDA_CHAOS_PARALLEL")
        .map(|v| {
            v.parse().unwrap_or_else(|_| {
                panic!("ALPHA_PANDA_CHAOS_PARALLEL={v:?} is not a number of seeds at a time")
            })
        })
        .unwrap_or(3);
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, seeds.len()) {
            scope.spawn(|| {
                while let Some(&seed) =
                    seeds.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let t = Instant::now();
                    let outcome =
                        std::panic::catch_unwind(|| run_seed(seed)).unwrap_or_else(|panic| {
                            Err(panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_else(|| "panicked".to_owned()))
                        });
                    let secs = t.elapsed().as_secs_f64();
                    match outcome {
                        Ok(()) => eprintln!("chaos seed {seed}: ok in {secs:.1} s"),
                        Err(why) => {
                            eprintln!(
                                "chaos seed {seed}: FAILED after {secs:.1} s (replay: \
                                 ALPHA_PANDA_CHAOS_SEEDS={seed} cargo test -p \
                                 alpha-panda-supervisors --test chaos -- --nocapture)\n{why}"
                            );
                            failed.lock().unwrap_or_else(|p| p.into_inner()).push(seed);
                        }
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort_unstable();
    eprintln!(
        "chaos: {} seeds, {parallel} at a time, in {:.1} s, failed: {failed:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "chaos seeds failed: {failed:?} (replay one with ALPHA_PANDA_CHAOS_SEEDS=<seed>; the \
         log above has each one's schedule and what differed)"
    );
}
