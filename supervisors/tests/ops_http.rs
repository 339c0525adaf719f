//! The admin API and the metrics exposition (issue 5), over Apache Kafka and redis-server:
//! - admin routes answer 401 without or with a wrong token, 403 when no token is
//!   configured, 200 with the right one;
//! - pausing the paper execution stage holds 100 validated signals in Kafka (no orders);
//!   resuming places exactly 100 orders;
//! - the daemon's `/metrics` passes `promtool check metrics` and has every metric family
//!   operators rely on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::Output;
use alpha_panda_actors::http::{self, View};
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_config::{Settings, load};
use alpha_panda_core::events::ValidatedSignal;
use alpha_panda_core::{BrokerName, EventBroker, EventData, EventEnvelope};
use alpha_panda_supervisors::pipeline::{Assembly, Transport};
use alpha_panda_tests::ops::{
    Daemon, daemon_command, free_port, fresh_redis_db, get_json, get_json_as, http, read_envelopes,
};
use alpha_panda_tests::{PrivateKafka, eventually, signals};
use alpha_panda_topics::{BrokerTopic, TopicName, topics_for};

const TOKEN: &str = "ops-http-test-token-0123456789";

fn serve(a: &Assembly, settings: Arc<Settings>) -> SocketAddr {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = http::server(
        addr,
        View {
            settings: settings.clone(),
            store: a.store.clone(),
            control: a.control.clone(),
            stages: a.stages(),
            services: alpha_panda_actors::readiness::ServiceChecks::services(
                settings.kafka.bootstrap_servers.clone(),
                &settings.kafka.client_id,
                a.store.clone(),
            ),
            console: Default::default(),
        },
    )
    .unwrap();
    actix_rt::spawn(server);
    addr
}

async fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The `i`-th validated signal for paper: a child of test signal `i`.
fn validated(i: usize) -> EventEnvelope {
    let paper = BrokerName::paper();
    let raw = signals::signal(&paper, i);
    let EventData::TradingSignal(s) = &raw.data else {
        unreachable!()
    };
    raw.child(
        EventBroker::Broker(paper),
        "risk",
        0,
        raw.key.clone(),
        s.timestamp,
        EventData::ValidatedSignal(ValidatedSignal {
            original_signal: s.clone(),
            validated_quantity: s.quantity,
            validated_price: s.price,
            risk_checks: [("test".to_owned(), true)].into(),
            timestamp: s.timestamp,
        }),
    )
}

fn placed(servers: &str) -> Vec<EventEnvelope> {
    read_envelopes(servers, "paper.orders.submitted")
        .into_iter()
        .map(|(_, _, e)| e)
        .filter(|e| matches!(e.data, EventData::OrderPlaced(_)))
        .collect()
}

#[test]
fn admin_routes_need_the_token_and_a_paused_trader_holds_its_signals_until_resumed() {
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(13);
    let servers = kafka.servers.clone();
    let env = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let base = vec![
        env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &servers),
        env("ALPHA_PANDA__REDIS__URL", &redis),
    ];
    let mut with_token = base.clone();
    with_token.push(env("ALPHA_PANDA__ADMIN__TOKEN", TOKEN));
    let settings = Arc::new(load(None, with_token).unwrap());
    let no_token = Arc::new(load(None, base).unwrap());
    assert!(no_token.admin.token.is_none());

    actix_rt::System::new().block_on(async move {
        alpha_panda_actors::kafka::admin::ensure(
            &servers,
            "ops",
            &topics_for(&settings.active_brokers),
        )
        .await
        .unwrap();
        let producer = alpha_panda_tests::producer(&servers, "ops");
        let store = Store::Redis(RedisStore::connect(&redis).await.unwrap());
        let a = Assembly::new(
            settings.clone(),
            Transport::Kafka(servers.clone()),
            producer.clone(),
            store,
        );
        a.load_control().await.unwrap();
        let members = a.start_stages(&Arc::new(Counters::default())).unwrap();
        let addr = serve(&a, settings.clone());
        let open = serve(&a, no_token);

        let pause = r#"{"broker":"paper","stage":"trader"}"#;
        let post = move |at: SocketAddr,
                         path: &'static str,
                         token: Option<&'static str>,
                         body: &'static str| {
            call(move || http(at, "POST", path, token, Some(body)))
        };
        assert_eq!(
            post(addr, "/admin/pause", None, pause).await.0,
            401,
            "no token"
        );
        assert_eq!(
            post(addr, "/admin/pause", Some("wrong"), pause).await.0,
            401,
            "wrong token"
        );
        assert_eq!(
            post(open, "/admin/pause", Some(TOKEN), pause).await.0,
            403,
            "no token configured"
        );
        assert!(
            a.control.pauses().is_empty(),
            "refused commands change nothing"
        );
        assert_eq!(
            post(addr, "/admin/pause", Some("ops-http-test-token"), pause)
                .await
                .0,
            401,
            "a prefix of the token"
        );
        // Positions, PnL and the actor tree need the token when one is configured; probes
        // and Prometheus do not.
        for path in ["/status", "/portfolio/paper", "/console/data"] {
            let (code, body) = call(move || http(addr, "GET", path, None, None)).await;
            assert_eq!(code, 401, "{path} without the token: {body}");
            assert!(body.contains("missing or wrong bearer token"), "{body}");
            let (code, _) = call(move || http(addr, "GET", path, Some("wrong"), None)).await;
            assert_eq!(code, 401, "{path} with a wrong token");
            let (code, body) = call(move || http(addr, "GET", path, Some(TOKEN), None)).await;
            assert_eq!(code, 200, "{path} with the token: {body}");
            let (code, _) = call(move || http(open, "GET", path, None, None)).await;
            assert_eq!(code, 200, "{path} is open without a configured token");
        }
        for path in ["/healthz", "/metrics", "/"] {
            let (code, _) = call(move || http(addr, "GET", path, None, None)).await;
            assert_eq!(code, 200, "{path} stays open");
        }
        let (code, body) = post(addr, "/admin/pause", Some(TOKEN), pause).await;
        assert_eq!(code, 200, "{body}");
        assert!(a.control.stage_paused("paper", "trader"));
        // Bad input names what is wrong.
        let (code, body) = post(
            addr,
            "/admin/pause",
            Some(TOKEN),
            r#"{"broker":"paper","stage":"nope"}"#,
        )
        .await;
        assert_eq!(code, 400);
        assert!(body.contains("unknown stage"), "{body}");
        let (code, body) = post(
            addr,
            "/admin/trading-state",
            Some(TOKEN),
            r#"{"broker":"paper","state":"SLEEPY"}"#,
        )
        .await;
        assert_eq!(code, 400);
        assert!(body.contains("trading state"), "{body}");

        // 100 validated signals while the trader is paused: no orders.
        let signals: Vec<EventEnvelope> = (0..100).map(validated).collect();
        let topic = TopicName::broker(&BrokerName::paper(), BrokerTopic::SignalsValidated);
        for s in &signals {
            producer
                .send_all(&[Output {
                    topic: topic.clone(),
                    envelope: s.clone(),
                }])
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(placed(&servers).len(), 0, "a paused trader places nothing");
        let (_, status) = call(move || get_json_as(addr, "/status", TOKEN)).await;
        assert_eq!(status["paused"][0]["stage"], "trader", "{status}");

        // Resume: exactly 100 orders, one per signal.
        let (code, _) = post(addr, "/admin/resume", Some(TOKEN), pause).await;
        assert_eq!(code, 200);
        let s = servers.clone();
        eventually(Duration::from_secs(60), || {
            (placed(&s).len() >= 100).then_some(())
        })
        .await
        .expect("100 orders after resume");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let orders = placed(&servers);
        let ids: BTreeSet<_> = orders.iter().map(|e| e.causation_id).collect();
        let expected: BTreeSet<_> = signals.iter().map(|s| Some(s.id)).collect();
        assert_eq!(orders.len(), 100, "exactly 100 orders");
        assert_eq!(ids, expected, "one order per validated signal");
        for m in members {
            m.shutdown().await;
        }
    });
}

/// The metric families docs/operations.md promises.
const FAMILIES: &[&str] = &[
    "alpha_panda_records_consumed_total",
    "alpha_panda_records_produced_total",
    "alpha_panda_records_retried_total",
    "alpha_panda_records_dead_lettered_total",
    "alpha_panda_handling_seconds",
    "alpha_panda_tick_to_signal_seconds",
    "alpha_panda_signal_to_fill_seconds",
    "alpha_panda_tick_to_fill_seconds",
    "alpha_panda_consumer_lag",
    "alpha_panda_partition_records_total",
    "alpha_panda_partition_records_per_second",
    "alpha_panda_hot_partition",
    "alpha_panda_actor_restarts_total",
    "alpha_panda_dedup_hits_total",
    "alpha_panda_orders_total",
    "alpha_panda_pnl",
    "alpha_panda_trading_state",
    "alpha_panda_broker_degraded",
];

#[test]
fn the_daemons_metrics_pass_promtool_and_have_every_family() {
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_owned());
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(14);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _daemon = Daemon(
        daemon_command(env!("CARGO_BIN_EXE_alpha-panda"))
            .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers)
            .env("ALPHA_PANDA__REDIS__URL", &redis)
            .env("ALPHA_PANDA__SYNTHETIC__TICKS_PER_SECOND", "20")
            .env("ALPHA_PANDA__HTTP__LISTEN", addr.to_string())
            .env("ALPHA_PANDA__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Trading, and the first lag statistics (every 5 s) and partition rates are in.
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        assert!(
            Instant::now() < deadline,
            "the daemon never showed every family"
        );
        std::thread::sleep(Duration::from_secs(1));
        if std::net::TcpStream::connect(addr).is_err() {
            continue; // not listening yet
        }
        let (code, text) = http(addr, "GET", "/metrics", None, None);
        assert_eq!(code, 200);
        let missing: Vec<_> = FAMILIES
            .iter()
            .filter(|f| {
                !text
                    .lines()
                    .any(|l| l.starts_with(*f) && !l.starts_with('#'))
            })
            .collect();
        let filled = text.contains(r#"alpha_panda_orders_total{broker="paper",status="filled"}"#)
            && !text.contains(r#"alpha_panda_orders_total{broker="paper",status="filled"} 0"#);
        if missing.is_empty() && filled {
            break text;
        }
    };
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running {promtool} (install Debian's prometheus, or run scripts/test.sh): {e}")
        });
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Readiness over real Kafka and Redis.
    let (code, ready) = get_json(addr, "/readyz");
    assert_eq!(code, 200, "{ready}");
    for check in ["kafka", "redis", "partitions", "brokers"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
    }
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_use_only_metrics_we_export() {
    let promtool = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_owned());
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/prometheus-rules.yml");
    let out = Command::new(&promtool)
        .args(["check", "rules", rules])
        .output()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(rules).unwrap();
    let used: BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("alpha_panda_"))
        .collect();
    for name in used {
        assert!(
            FAMILIES.contains(&name),
            "{name} is not a metric the daemon exports"
        );
    }
}
