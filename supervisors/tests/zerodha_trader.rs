//! The zerodha trader end to end against the loopback Kite simulator. Over Kafka (a broker
//! of the test's own) and redis-server: a validated signal on `zerodha.signals.validated`
//! becomes exactly one order at the simulator and one fill downstream (`zerodha.orders.filled`
//! and the portfolio), when Kite's reply is lost after it accepted the order, and when the
//! daemon is SIGKILLed between sending the order and reading the reply; a burst of 50
//! signals reaches the simulator at no more than 10 orders a second. On the embedded default:
//! the whole pipeline from the simulator's ticks to the portfolio.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::Output;
use alpha_panda_core::events::{PnlSnapshot, TradingSignal, ValidatedSignal};
use alpha_panda_core::{
    BrokerName, EventBroker, EventData, EventEnvelope, InstrumentToken, OrderType, Price, Product,
    Quantity, Side, StrategyId, Timestamp, Validity,
};
use alpha_panda_kite::sim::{Fault, SimConfig, Simulator};
use alpha_panda_tests::PrivateKafka;
use alpha_panda_tests::ops::{Daemon, PrivateRedis, daemon_command, free_port};
use alpha_panda_topics::{BrokerTopic, TopicName, keys};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use uuid::Uuid;

const TOKEN: &str = "simaccesstoken1";
const STRATEGY: &str = "momentum_1";
const TCS: u32 = 2953217;

/// How the daemon learns of its orders: the ticker's order messages and the order book
/// read every `poll_ms`, or only the book.
#[derive(Clone, Copy)]
enum Updates {
    TickerAndPoll { poll_ms: u64 },
    PollOnly { poll_ms: u64 },
}

fn start(
    kafka: &PrivateKafka,
    redis: &str,
    sim: &Simulator,
    request_timeout_ms: u64,
    updates: Updates,
) -> Daemon {
    let (feed, poll_ms) = match updates {
        Updates::TickerAndPoll { poll_ms } => ("kite", poll_ms),
        Updates::PollOnly { poll_ms } => ("none", poll_ms),
    };
    let addr = sim.addr();
    let log = std::env::var("DAEMON_LOG").is_ok();
    let child = daemon_command(env!("CARGO_BIN_EXE_alpha-panda"))
        .env("ACTIVE_BROKERS", "paper,zerodha")
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers)
        // Killed on purpose: the restarted daemon takes its partitions back at once.
        .env("ALPHA_PANDA__KAFKA__SESSION_TIMEOUT_MS", "10000")
        .env("ALPHA_PANDA__KAFKA__INSTANCE_ID", "zerodha-trader-test")
        .env("ALPHA_PANDA__REDIS__URL", redis)
        .env("ALPHA_PANDA__FEED", feed)
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY", "simkey")
        .env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__ACCESS_TOKEN", TOKEN)
        .env(
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_URL",
            format!("http://{addr}"),
        )
        .env(
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_URL",
            format!("ws://{addr}"),
        )
        .env(
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_INSTRUMENTS",
            format!("[{TCS}]"),
        )
        .env(
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__REQUEST_TIMEOUT_MS",
            request_timeout_ms.to_string(),
        )
        .env(
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__ORDER_POLL_MS",
            poll_ms.to_string(),
        )
        .env(
            "ALPHA_PANDA__LOG__LEVEL",
            std::env::var("DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(if log { Stdio::inherit() } else { Stdio::null() })
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("the daemon does not start: {e}"));
    Daemon(child)
}

fn validated_signal(quantity: u64) -> EventEnvelope {
    validated_signal_on(STRATEGY, TCS, quantity)
}

fn validated_signal_on(strategy: &str, token: u32, quantity: u64) -> EventEnvelope {
    let at = Timestamp::now();
    let strategy = StrategyId::new(strategy).unwrap_or_else(|e| panic!("{e}"));
    let signal = TradingSignal {
        strategy_id: strategy.clone(),
        instrument_token: InstrumentToken(token),
        signal_type: Side::Buy,
        quantity: Quantity::new(quantity).unwrap_or_else(|e| panic!("{e}")),
        price: Price::new(3500.into()).unwrap_or_else(|e| panic!("{e}")),
        timestamp: at,
        confidence: None,
        metadata: BTreeMap::new(),
        order_type: OrderType::Market,
        product: Product::Mis,
        validity: Validity::Day,
        trigger_price: None,
    };
    EventEnvelope::root(
        EventBroker::Broker(BrokerName::zerodha()),
        "risk",
        keys::signal(&strategy, InstrumentToken(token)),
        at,
        EventData::ValidatedSignal(ValidatedSignal {
            validated_quantity: signal.quantity,
            validated_price: signal.price,
            original_signal: signal,
            risk_checks: BTreeMap::new(),
            timestamp: at,
        }),
    )
}

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Distinct event ids seen per topic, and the fill quantity of each distinct fill.
#[derive(Default)]
struct Seen {
    ids: BTreeMap<String, BTreeSet<Uuid>>,
    filled: BTreeMap<Uuid, u64>,
}

fn read(consumer: &BaseConsumer, seen: &mut Seen, for_how_long: Duration) {
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
            && let Ok(env) = EventEnvelope::decode(m.payload().unwrap_or_default())
        {
            if let EventData::OrderFilled(f) = &env.data {
                seen.filled.insert(env.id, f.quantity.get());
            }
            seen.ids
                .entry(m.topic().to_owned())
                .or_default()
                .insert(env.id);
        }
    }
}

fn position(redis: &str) -> Option<i64> {
    let client = redis::Client::open(redis).ok()?;
    let mut conn = client.get_connection().ok()?;
    let json: Option<String> = redis::cmd("GET")
        .arg(format!("zerodha:portfolio:{STRATEGY}"))
        .query(&mut conn)
        .ok()?;
    let snap: PnlSnapshot = serde_json::from_str(&json?).ok()?;
    snap.positions
        .iter()
        .find(|p| p.instrument_token == InstrumentToken(TCS))
        .map(|p| p.quantity)
}

fn intent_states(redis: &str) -> Vec<String> {
    let client = redis::Client::open(redis).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = client.get_connection().unwrap_or_else(|e| panic!("{e}"));
    let json: Option<String> = redis::cmd("GET")
        .arg("zerodha:trader:intents")
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value =
        serde_json::from_str(&json.unwrap_or_else(|| "{}".into())).unwrap_or_default();
    v["intents"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|i| i["state"]["state"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A simulator on loopback with a session valid from the start.
fn simulator(rt: &tokio::runtime::Runtime, tick: Duration) -> Simulator {
    let mut cfg = SimConfig::new("simkey", "simsecret");
    cfg.tick_interval = tick;
    cfg.heartbeat_interval = Duration::from_millis(500);
    cfg.access_token = Some(TOKEN.to_owned());
    rt.block_on(Simulator::start(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        cfg,
    ))
    .unwrap_or_else(|e| panic!("simulator: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn wait_for_topics(kafka: &PrivateKafka) {
    until("the daemon's topics", Duration::from_secs(60), || {
        alpha_panda_actors::kafka::admin::describe(&kafka.servers, "t")
            .map(|t| t.contains_key("zerodha.signals.validated"))
            .unwrap_or(false)
    });
}

fn order_events_reader(kafka: &PrivateKafka) -> BaseConsumer {
    let reader: BaseConsumer =
        alpha_panda_actors::kafka::consumer_config(&kafka.servers, "reader", "zerodha-test-reader")
            .create()
            .unwrap_or_else(|e| panic!("{e}"));
    reader
        .subscribe(&[
            "zerodha.orders.submitted",
            "zerodha.orders.ack",
            "zerodha.orders.filled",
            "zerodha.orders.failed",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    reader
}

fn publish(rt: &tokio::runtime::Runtime, kafka: &PrivateKafka, signals: &[EventEnvelope]) {
    let outputs: Vec<Output> = signals
        .iter()
        .map(|s| Output {
            topic: TopicName::broker(&BrokerName::zerodha(), BrokerTopic::SignalsValidated),
            envelope: s.clone(),
        })
        .collect();
    rt.block_on(async {
        alpha_panda_tests::producer(&kafka.servers, "zerodha-test")
            .send_all(&outputs)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    });
}

/// Runs one signal through a daemon with `fault` injected at its placement; with
/// `kill_when_sent`, SIGKILLs the daemon once the simulator holds the order (the reply still
/// pending) and starts it again. Asserts one order at the simulator and one fill downstream.
fn one_signal_one_order_one_fill(
    fault: Fault,
    request_timeout_ms: u64,
    updates: Updates,
    kill_when_sent: bool,
) {
    let kafka = PrivateKafka::start();
    let redis = PrivateRedis::start();
    let rt = runtime();
    let sim = simulator(&rt, Duration::from_millis(200));
    let mut daemon = start(&kafka, &redis.url(), &sim, request_timeout_ms, updates);
    wait_for_topics(&kafka);
    let reader = order_events_reader(&kafka);
    sim.inject(fault);
    let signal = validated_signal(5);
    publish(&rt, &kafka, std::slice::from_ref(&signal));

    if kill_when_sent {
        until(
            "the order at the simulator",
            Duration::from_secs(60),
            || !sim.orders().is_empty(),
        );
        std::thread::sleep(Duration::from_millis(300));
        // The reply is still held back and no order update is read before the kill (the
        // book is read at start, then every ten minutes): the intent is recorded, its
        // outcome not.
        assert_eq!(intent_states(&redis.url()), vec!["recorded".to_owned()]);
        daemon.0.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        daemon.0.wait().unwrap_or_else(|e| panic!("{e}"));
        daemon = start(&kafka, &redis.url(), &sim, request_timeout_ms, updates);
    }

    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.filled.values().sum::<u64>() < 5 {
        assert!(
            Instant::now() < deadline,
            "no fill of the order: {:?}",
            seen.ids
        );
        read(&reader, &mut seen, Duration::from_millis(200));
    }
    // Settle: polling and WebSocket updates go on; nothing new may come of them.
    read(&reader, &mut seen, Duration::from_secs(5));
    until("the portfolio's position", Duration::from_secs(60), || {
        position(&redis.url()).is_some()
    });

    let orders = sim.orders();
    assert_eq!(orders.len(), 1, "orders at the simulator: {orders:?}");
    assert_eq!(
        sim.placements().len(),
        1,
        "order calls: {:?}",
        sim.placements()
    );
    assert_eq!(orders[0].quantity, 5);
    assert_eq!(
        orders[0].tag.as_deref(),
        Some(
            alpha_panda_kite::intent::tag_for(alpha_panda_kite::intent::intent_id(signal.id))
                .as_str()
        )
    );
    assert_eq!(seen.filled.len(), 1, "distinct fills: {:?}", seen.filled);
    assert_eq!(seen.filled.values().sum::<u64>(), 5);
    assert_eq!(seen.ids["zerodha.orders.submitted"].len(), 1);
    assert_eq!(seen.ids["zerodha.orders.ack"].len(), 1);
    assert!(
        !seen.ids.contains_key("zerodha.orders.failed"),
        "{:?}",
        seen.ids
    );
    assert_eq!(position(&redis.url()), Some(5));
    drop(daemon);
    drop(rt);
}

#[test]
fn a_timeout_after_kite_accepted_the_order_gives_one_order_and_one_fill() {
    one_signal_one_order_one_fill(
        Fault::TimeoutAfterAccept(Duration::from_secs(4)),
        1000,
        Updates::TickerAndPoll { poll_ms: 300 },
        false,
    );
}

#[test]
fn a_daemon_killed_between_sending_and_the_reply_places_one_order_after_restart() {
    one_signal_one_order_one_fill(
        Fault::TimeoutAfterAccept(Duration::from_secs(40)),
        60_000,
        // After the restart only the stage's redelivery and the follower's first reading
        // of the book (at its start) can resolve the intent.
        Updates::PollOnly { poll_ms: 600_000 },
        true,
    );
}

/// The embedded default (in-process transport, memory store) with `feed = "kite"`: the
/// simulator's ticks → a strategy of the zerodha broker → risk → the zerodha trader → the
/// simulator's matching engine → fills → portfolio. Every order reaches the simulator once,
/// and the portfolio holds exactly what the simulator filled.
#[test]
fn the_embedded_daemon_trades_simulator_ticks_through_the_zerodha_trader_to_the_portfolio() {
    simulator_ticks_through_the_zerodha_trader_to_the_portfolio(None);
}

#[test]
fn over_kafka_and_redis_simulator_ticks_go_through_the_zerodha_trader_to_the_portfolio() {
    let kafka = PrivateKafka::start();
    let redis = PrivateRedis::start();
    simulator_ticks_through_the_zerodha_trader_to_the_portfolio(Some((
        kafka.servers.clone(),
        redis.url(),
    )));
}

/// The simulator's WebSocket ticks → a zerodha strategy → risk → the zerodha trader → the
/// simulator's matching engine → fills → the portfolio, which ends up holding what the
/// simulator filled; in process, or over Kafka and Redis (`over`: servers and Redis URL).
fn simulator_ticks_through_the_zerodha_trader_to_the_portfolio(over: Option<(String, String)>) {
    const ADMIN: &str = "zerodha-trader-admin-token-0123";
    let rt = runtime();
    let sim = simulator(&rt, Duration::from_millis(100));
    let config = std::env::temp_dir().join(format!("ap-zerodha-embedded-{}.toml", free_port()));
    std::fs::write(
        &config,
        format!(
            r#"
active_brokers = ["zerodha"]
feed = "kite"

[[strategies]]
id = "{STRATEGY}"
kind = "momentum"
instruments = [{TCS}]
brokers = ["zerodha"]
params = {{ lookback = 1, threshold = "0.000001", quantity = 5 }}
"#
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let sim_addr = sim.addr();
    let mut command = daemon_command(env!("CARGO_BIN_EXE_alpha-panda"));
    if let Some((servers, redis)) = &over {
        command
            .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", servers)
            .env("ALPHA_PANDA__REDIS__URL", redis);
    }
    let _daemon = Daemon(
        command
            .arg("--config")
            .arg(&config)
            .env("ALPHA_PANDA__HTTP__LISTEN", addr.to_string())
            .env("ALPHA_PANDA__ADMIN__TOKEN", ADMIN)
            .env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY", "simkey")
            .env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__ACCESS_TOKEN", TOKEN)
            .env(
                "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_URL",
                format!("http://{sim_addr}"),
            )
            .env(
                "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_URL",
                format!("ws://{sim_addr}"),
            )
            .env(
                "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_INSTRUMENTS",
                format!("[{TCS}]"),
            )
            .env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__ORDER_POLL_MS", "300")
            .env(
                "ALPHA_PANDA__LOG__LEVEL",
                std::env::var("DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("the daemon does not start: {e}")),
    );
    let complete = || {
        sim.orders()
            .iter()
            .filter(|o| o.status.as_str() == "COMPLETE")
            .count()
    };
    until(
        "two filled orders at the simulator",
        Duration::from_secs(90),
        || complete() >= 2,
    );
    // Stop new orders, let the last ones settle.
    let (code, body) = alpha_panda_tests::ops::http(
        addr,
        "POST",
        "/admin/trading-state",
        Some(ADMIN),
        Some(r#"{"broker":"zerodha","state":"HALTED"}"#),
    );
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_secs(3));

    let net = || -> i64 {
        sim.orders()
            .iter()
            .map(|o| {
                let q = i64::try_from(o.filled_quantity).unwrap_or(i64::MAX);
                match o.transaction_type {
                    alpha_panda_kite::types::order::TransactionType::Buy => q,
                    alpha_panda_kite::types::order::TransactionType::Sell => -q,
                }
            })
            .sum()
    };
    let held = || -> Option<i64> {
        let (_, v) = alpha_panda_tests::ops::get_json_as(addr, "/portfolio/zerodha", ADMIN);
        let snap: PnlSnapshot = serde_json::from_value(v["strategies"][STRATEGY].clone()).ok()?;
        Some(
            snap.positions
                .iter()
                .filter(|p| p.instrument_token == InstrumentToken(TCS))
                .map(|p| p.quantity)
                .sum(),
        )
    };
    until(
        "the portfolio to hold what the simulator filled",
        Duration::from_secs(30),
        || held() == Some(net()),
    );
    let orders = sim.orders();
    let tags: BTreeSet<Option<String>> = orders.iter().map(|o| o.tag.clone()).collect();
    assert_eq!(tags.len(), orders.len(), "one order per tag: {orders:?}");
    assert!(
        tags.iter()
            .all(|t| t.as_deref().is_some_and(|t| t.starts_with("ap")))
    );
    assert_eq!(sim.placements().len(), orders.len(), "no order call twice");
    let _ = std::fs::remove_file(&config);
    drop(rt);
}

#[test]
fn a_burst_of_50_signals_reaches_the_simulator_at_no_more_than_10_orders_a_second() {
    let kafka = PrivateKafka::start();
    let redis = PrivateRedis::start();
    let rt = runtime();
    let sim = simulator(&rt, Duration::from_millis(200));
    let _daemon = start(
        &kafka,
        &redis.url(),
        &sim,
        5000,
        Updates::TickerAndPoll { poll_ms: 300 },
    );
    wait_for_topics(&kafka);
    let reader = order_events_reader(&kafka);
    // Spread over five strategies and the three instruments (15 keys), so every partition
    // of the topic places at once and the trader could go faster than Kite allows.
    let strategies = [
        "momentum_1",
        "momentum_2",
        "momentum_3",
        "momentum_4",
        "momentum_5",
    ];
    let signals: Vec<EventEnvelope> = (0..50)
        .map(|i| validated_signal_on(strategies[i % 5], [738561, 408065, TCS][i % 3], 1))
        .collect();
    publish(&rt, &kafka, &signals);
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.filled.len() < 50 {
        assert!(
            Instant::now() < deadline,
            "{} of 50 fills; {} orders at the simulator",
            seen.filled.len(),
            sim.orders().len()
        );
        read(&reader, &mut seen, Duration::from_millis(200));
    }
    let mut at: Vec<Instant> = sim.placements().iter().map(|(t, _)| *t).collect();
    at.sort();
    assert_eq!(at.len(), 50, "one call per signal");
    for w in at.windows(11) {
        assert!(
            w[10] - w[0] >= Duration::from_secs(1),
            "11 order calls within {:?}",
            w[10] - w[0]
        );
    }
    // 50 calls at 10 a second take at least 4 s from the first to the last.
    assert!(at[49] - at[0] >= Duration::from_secs(4));
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t - at[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "50 order calls in {:?}; at most {busiest} in any second",
        at[49] - at[0]
    );
    drop(rt);
}
