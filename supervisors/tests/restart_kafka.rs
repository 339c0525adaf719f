//! Restart equivalence over Kafka: the daemon (its own Apache Kafka, Redis, `feed = none`) is
//! SIGKILLed in the middle of a replay and started again; the fills and every strategy's
//! final positions and PnL equal those of an uninterrupted run of the same ticks. Two of
//! the three strategies place LIMIT orders, so orders resting in the paper trader when it
//! is killed must come back and fill exactly as they would have.
//!
//! Scale-out: two daemons share the consumer groups, and the one holding the broker stages
//! is SIGKILLed twice; the result is still that of one undisturbed daemon.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::Output;
use alpha_panda_config::{Settings, load};
use alpha_panda_core::events::PnlSnapshot;
use alpha_panda_core::{EventData, EventEnvelope};
use alpha_panda_tests::ops::{Daemon, daemon_command, free_port, fresh_redis_db};
use alpha_panda_tests::{PrivateKafka, ticks};
use alpha_panda_topics::TopicName;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use uuid::Uuid;

/// The embedded default's strategies, two of them placing LIMIT orders.
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

fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ap-restart-kafka-{}.toml", std::process::id()));
    std::fs::write(&path, CONFIG).unwrap();
    path
}

fn start(kafka: &PrivateKafka, redis: &str, prefix: &str, instance: &str) -> Daemon {
    let child = daemon_command(env!("CARGO_BIN_EXE_alpha-panda"))
        .arg("--config")
        .arg(config_file())
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers)
        // Killed on purpose: fail over quickly.
        .env("ALPHA_PANDA__KAFKA__SESSION_TIMEOUT_MS", "10000")
        .env("ALPHA_PANDA__KAFKA__INSTANCE_ID", instance)
        .env("ALPHA_PANDA__KAFKA__GROUP_PREFIX", prefix)
        .env("ALPHA_PANDA__REDIS__URL", redis)
        .env("ALPHA_PANDA__FEED", "none")
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "ALPHA_PANDA__LOG__LEVEL",
            std::env::var("DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(if std::env::var("DAEMON_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::inherit())
        .spawn()
        .expect("daemon starts");
    Daemon(child)
}

/// Fill ids, with the strategy that got each fill.
type Fills = BTreeSet<(Uuid, String)>;

fn fill_ids(consumer: &BaseConsumer, ids: &mut Fills, for_how_long: Duration) {
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
            && let Ok(env) = EventEnvelope::decode(m.payload().unwrap_or_default())
            && let EventData::OrderFilled(f) = &env.data
        {
            ids.insert((env.id, f.strategy_id.to_string()));
        }
    }
}

/// Runs the ticks through daemons with these instance ids (the first started first), killing
/// the first with SIGKILL (and starting it again) after each number of fills in `kills`,
/// and returns the fill ids and each strategy's final book.
fn run(
    settings: &Settings,
    ticks: &[EventEnvelope],
    db: u8,
    instances: &[&str],
    kills: &[usize],
    expect: Option<usize>,
) -> (Fills, Vec<String>) {
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(db);
    let prefix = format!("restart-{db}-{}", std::process::id());
    let mut daemon = start(&kafka, &redis, &prefix, instances[0]);
    // The daemon creates the topics at start; wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alpha_panda_actors::kafka::admin::describe(&kafka.servers, "t")
        .map(|t| !t.contains_key("paper.orders.filled"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "topics never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The others join once the first is running: it holds the broker stages' leases.
    let _others: Vec<Daemon> = instances[1..]
        .iter()
        .map(|id| start(&kafka, &redis, &prefix, id))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = alpha_panda_tests::producer(&kafka.servers, "restart-feed");
        for env in ticks {
            producer
                .send_all(&[Output {
                    topic: TopicName::market_ticks(),
                    envelope: env.clone(),
                }])
                .await
                .unwrap();
        }
    });
    let reader: BaseConsumer = alpha_panda_actors::kafka::consumer_config(
        &kafka.servers,
        "reader",
        &format!("{prefix}-reader"),
    )
    .create()
    .unwrap();
    reader.subscribe(&["paper.orders.filled"]).unwrap();
    let mut ids = BTreeSet::new();
    for &n in kills {
        let deadline = Instant::now() + Duration::from_secs(120);
        while ids.len() < n {
            assert!(Instant::now() < deadline, "too few fills before the kill");
            fill_ids(&reader, &mut ids, Duration::from_millis(100));
        }
        daemon.0.kill().unwrap(); // SIGKILL
        daemon.0.wait().unwrap();
        daemon = start(&kafka, &redis, &prefix, instances[0]);
    }
    // After a kill the restarted daemon rejoins under its instance id, but a group that was
    // rebalancing waits for its members: wait for the expected number of fills first.
    let deadline = Instant::now() + Duration::from_secs(180);
    while ids.len() < expect.unwrap_or(0) {
        if Instant::now() > deadline {
            // The comparison with the uninterrupted run says which are missing.
            eprintln!("only {} of {expect:?} fills", ids.len());
            break;
        }
        fill_ids(&reader, &mut ids, Duration::from_millis(200));
    }
    // Settled: no new fill for 8 s.
    loop {
        let before = ids.len();
        fill_ids(&reader, &mut ids, Duration::from_secs(8));
        if ids.len() == before && before > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "fills kept coming");
    }
    // The portfolio has applied every fill: its group's committed offsets reach the end.
    let portfolio: BaseConsumer = alpha_panda_actors::kafka::consumer_config(
        &kafka.servers,
        "probe",
        &format!("{prefix}.paper.portfolio"),
    )
    .create()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition("paper.orders.filled", p);
        }
        let committed = portfolio
            .committed_offsets(tpl, Duration::from_secs(5))
            .unwrap();
        let caught_up = committed.elements().iter().all(|e| {
            let (_, high) = portfolio
                .fetch_watermarks("paper.orders.filled", e.partition(), Duration::from_secs(5))
                .unwrap();
            high == 0 || e.offset() == rdkafka::Offset::Offset(high)
        });
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the portfolio never caught up");
        std::thread::sleep(Duration::from_millis(250));
    }
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut books = Vec::new();
    for st in &settings.strategies {
        let json: Option<String> = redis::cmd("GET")
            .arg(format!("paper:portfolio:{}", st.id))
            .query(&mut conn)
            .unwrap();
        if let Some(json) = json {
            let s: PnlSnapshot = serde_json::from_str(&json).unwrap();
            let held: Vec<_> = s
                .positions
                .iter()
                .map(|p| {
                    (
                        p.instrument_token.0,
                        p.quantity,
                        p.average_price.to_string(),
                    )
                })
                .collect();
            books.push(format!(
                "{}: cash {} realized {} fees {} positions {held:?}",
                st.id, s.cash, s.realized_pnl, s.fees
            ));
        }
    }
    drop(daemon);
    (ids, books)
}

#[test]
fn kill_9_in_the_middle_of_a_replay_changes_nothing() {
    let settings: Settings = load(Some(&config_file()), ticks::generous_limits()).unwrap();
    assert!(
        settings
            .strategies
            .iter()
            .any(|s| s.order_type == alpha_panda_core::OrderType::Limit)
    );
    let ticks = ticks::numbered(&settings, 500);
    let whole = run(&settings, &ticks, 9, &["restart-test-daemon"], &[], None);
    assert!(
        whole.0.len() >= 8,
        "enough fills to compare: {}",
        whole.0.len()
    );
    assert!(
        whole.0.iter().any(|(_, s)| s != "momentum_1"),
        "resting LIMIT orders filled: {:?}",
        whole.0
    );
    let killed = run(
        &settings,
        &ticks,
        10,
        &["restart-test-daemon"],
        &[whole.0.len() / 3],
        Some(whole.0.len()),
    );
    let missing: Vec<_> = whole.0.difference(&killed.0).collect();
    let extra: Vec<_> = killed.0.difference(&whole.0).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the same set of fill ids: missing after the kill {missing:?}, extra {extra:?}"
    );
    assert_eq!(killed.1, whole.1, "the same positions, cash, PnL and fees");

    // Two daemons sharing the groups; the one holding the broker stages killed twice.
    let shared = run(
        &settings,
        &ticks,
        9,
        &["a-scale-out-daemon", "b-scale-out-daemon"],
        &[whole.0.len() / 4, whole.0.len() / 2],
        Some(whole.0.len()),
    );
    let missing: Vec<_> = whole.0.difference(&shared.0).collect();
    let extra: Vec<_> = shared.0.difference(&whole.0).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "two daemons, one killed twice: missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(
        shared.1, whole.1,
        "two daemons: the same positions, cash, PnL and fees"
    );
}
