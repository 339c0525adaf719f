//! The recorder inside the daemon, over its own Apache Kafka and the real PostgreSQL of
//! `scripts/services.sh`, each test in schemas and roles of its own (`database.schema_prefix`):
//! a SIGKILL of the daemon mid-stream leaves exactly one row per fill and per order state,
//! equal to the events on the topics; and `trades export` of the golden run gives the
//! hand-computed charges and PnL.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::Output as Produce;
use alpha_panda_config::{Settings, load};
use alpha_panda_core::{EventData, EventEnvelope};
use alpha_panda_tests::ops::{Daemon, daemon_command, free_port, fresh_redis_db, read_envelopes};
use alpha_panda_tests::{Namespace, PrivateKafka, database_url, ticks};
use alpha_panda_topics::TopicName;
use diesel::{Connection, PgConnection, RunQueryDsl};
use uuid::Uuid;

/// The embedded default's strategies, two of them placing LIMIT orders (as restart_kafka.rs).
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
    let path = std::env::temp_dir().join(format!("ap-recorder-{}.toml", std::process::id()));
    std::fs::write(&path, CONFIG).expect("config file");
    path
}

/// Drops the test's schemas and roles at the end.
struct Schemas(String);

impl Drop for Schemas {
    fn drop(&mut self) {
        let Ok(mut c) = PgConnection::establish(&database_url()) else {
            return;
        };
        for s in ["shared", "paper", "zerodha"] {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{}{s}\" CASCADE", self.0))
                .execute(&mut c);
        }
        for b in ["paper", "zerodha"] {
            let r = format!("{}{b}_writer", self.0);
            let _ = diesel::sql_query(format!("DROP OWNED BY \"{r}\"")).execute(&mut c);
            let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{r}\"")).execute(&mut c);
        }
    }
}

fn cli(prefix: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alpha-panda"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("ALPHA_PANDA__DATABASE__URL", database_url())
        .env("ALPHA_PANDA__DATABASE__SCHEMA_PREFIX", prefix)
        .output()
        .expect("alpha-panda runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn migrate(prefix: &str) {
    let first = cli(prefix, &["db", "migrate"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("4 migrations applied"), "{out}");
    let again = cli(prefix, &["db", "migrate"]);
    assert!(
        text(&again.stdout).contains("0 migrations applied"),
        "{}",
        text(&again.stdout)
    );
}

fn start(
    kafka: &PrivateKafka,
    redis: Option<&str>,
    group_prefix: &str,
    schema_prefix: &str,
    config: &std::path::Path,
) -> Daemon {
    let mut cmd = daemon_command(env!("CARGO_BIN_EXE_alpha-panda"));
    cmd.arg("--config")
        .arg(config)
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers)
        .env("ALPHA_PANDA__KAFKA__SESSION_TIMEOUT_MS", "10000")
        .env("ALPHA_PANDA__KAFKA__INSTANCE_ID", "recorder-test-daemon")
        .env("ALPHA_PANDA__KAFKA__GROUP_PREFIX", group_prefix)
        .env("ALPHA_PANDA__DATABASE__URL", database_url())
        .env("ALPHA_PANDA__DATABASE__SCHEMA_PREFIX", schema_prefix)
        .env("ALPHA_PANDA__FEED", "none")
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "ALPHA_PANDA__LOG__LEVEL",
            std::env::var("DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(r) = redis {
        cmd.env("ALPHA_PANDA__REDIS__URL", r);
    }
    Daemon(cmd.spawn().expect("daemon starts"))
}

fn wait_for_topics(kafka: &PrivateKafka) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alpha_panda_actors::kafka::admin::describe(&kafka.servers, "t")
        .map(|t| !t.contains_key("paper.orders.filled"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "topics never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce_ticks(kafka: &PrivateKafka, ticks: &[EventEnvelope]) {
    produce_ticks_paced(&kafka.servers, ticks, Duration::ZERO);
}

/// Produces the ticks one at a time, `pause` apart.
fn produce_ticks_paced(servers: &str, ticks: &[EventEnvelope], pause: Duration) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let producer = alpha_panda_tests::producer(servers, "recorder-feed");
        for env in ticks {
            producer
                .send_all(&[Produce {
                    topic: TopicName::market_ticks(),
                    envelope: env.clone(),
                }])
                .await
                .expect("tick produced");
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    });
}

/// Distinct event ids on the topics, and how many records carried them.
fn ids_on(kafka: &PrivateKafka, topics: &[&str]) -> (BTreeSet<Uuid>, usize) {
    let mut ids = BTreeSet::new();
    let mut records = 0;
    for t in topics {
        for (_, _, env) in read_envelopes(&kafka.servers, t) {
            records += 1;
            ids.insert(env.id);
        }
    }
    (ids, records)
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
}

fn ids_in(table: &str) -> Vec<Uuid> {
    let mut c = PgConnection::establish(&database_url()).expect("connect");
    diesel::sql_query(format!("SELECT event_id FROM {table}"))
        .load::<Id>(&mut c)
        .expect(table)
        .into_iter()
        .map(|i| i.event_id)
        .collect()
}

const ORDER_TOPICS: [&str; 4] = [
    "paper.orders.submitted",
    "paper.orders.ack",
    "paper.orders.filled",
    "paper.orders.failed",
];

#[test]
fn a_sigkill_of_the_daemon_mid_stream_leaves_exactly_one_row_per_fill_and_order_state() {
    let ns = Namespace::new();
    let prefix = format!("t{}_", ns.id);
    let _schemas = Schemas(prefix.clone());
    migrate(&prefix);
    let config = config_file();
    let settings: Settings = load(Some(&config), ticks::generous_limits()).expect("settings");
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(15);
    let group_prefix = format!("recorder-{}", ns.id);
    let mut daemon = start(&kafka, Some(&redis), &group_prefix, &prefix, &config);
    wait_for_topics(&kafka);
    // Paced over several seconds, so that ticks are still coming when the daemon is killed
    // however fast it handles them.
    let feed = std::thread::spawn({
        let servers = kafka.servers.clone();
        let ticks = ticks::numbered(&settings, 500);
        move || produce_ticks_paced(&servers, &ticks, Duration::from_millis(2))
    });

    // Kill once the recorder has written some fills and more are coming.
    let fills_table = format!("\"{prefix}paper\".fills");
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids_in(&fills_table).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no fill recorded before the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.0.kill().expect("SIGKILL");
    let _ = daemon.0.wait();
    assert!(!feed.is_finished(), "the feed ended before the kill");
    let recorded_at_kill = ids_in(&fills_table).len();
    let _daemon = start(&kafka, Some(&redis), &group_prefix, &prefix, &config);
    feed.join().expect("the feed ran");

    // Settled: the topics stop growing and the tables hold what they hold.
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut fills, mut orders);
    loop {
        std::thread::sleep(Duration::from_secs(5));
        fills = ids_on(&kafka, &["paper.orders.filled"]);
        orders = ids_on(&kafka, &ORDER_TOPICS);
        let (db_fills, db_orders) = (
            ids_in(&fills_table),
            ids_in(&format!("\"{prefix}paper\".orders")),
        );
        let settled = db_fills.iter().copied().collect::<BTreeSet<_>>() == fills.0
            && db_orders.iter().copied().collect::<BTreeSet<_>>() == orders.0;
        if settled {
            std::thread::sleep(Duration::from_secs(5));
            if ids_on(&kafka, &ORDER_TOPICS).1 == orders.1 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {} fills on the topic, {} recorded; {} order events, {} recorded",
            fills.0.len(),
            db_fills.len(),
            orders.0.len(),
            db_orders.len()
        );
    }
    let db_fills = ids_in(&fills_table);
    let db_orders = ids_in(&format!("\"{prefix}paper\".orders"));
    assert!(
        fills.0.len() > recorded_at_kill,
        "the kill was not mid-stream"
    );
    assert_eq!(db_fills.len(), fills.0.len(), "one row per fill");
    assert_eq!(db_orders.len(), orders.0.len(), "one row per order state");
    assert_eq!(db_fills.into_iter().collect::<BTreeSet<_>>(), fills.0);
    assert_eq!(db_orders.into_iter().collect::<BTreeSet<_>>(), orders.0);
}

/// The golden tick file (tests/fixtures/golden, hand-computed in cli.rs) through the daemon
/// over Kafka, recorded, then exported: the charges and the PnL per round trip by hand.
#[test]
fn trades_export_of_the_golden_run_gives_the_hand_computed_charges_and_pnl() {
    let ns = Namespace::new();
    let prefix = format!("t{}_", ns.id);
    let _schemas = Schemas(prefix.clone());
    migrate(&prefix);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");
    let config = std::path::PathBuf::from(format!("{fixtures}/config.toml"));
    let kafka = PrivateKafka::start();
    let _daemon = start(&kafka, None, &format!("golden-{}", ns.id), &prefix, &config);
    wait_for_topics(&kafka);
    let ticks = alpha_panda_actors::feed::load_ticks(std::path::Path::new(&format!(
        "{fixtures}/ticks.csv"
    )))
    .expect("golden ticks");
    let envs: Vec<EventEnvelope> = ticks
        .into_iter()
        .map(|tick| {
            EventEnvelope::root(
                alpha_panda_core::EventBroker::Shared,
                "feed",
                tick.instrument_token.to_string(),
                tick.timestamp,
                EventData::MarketTick(tick),
            )
        })
        .collect();
    produce_ticks(&kafka, &envs);
    let fills_table = format!("\"{prefix}paper\".fills");
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids_in(&fills_table).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the 4 golden fills were not recorded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let export = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            config.to_str().expect("utf-8 path"),
            "trades",
            "export",
            "--broker",
            "paper",
            "--from",
            "2024-01-15",
            "--to",
            "2024-01-15",
        ];
        args.extend_from_slice(extra);
        let out = cli(&prefix, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let csv = export(&[]);
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let pick = |r: &Vec<String>| {
        [
            "strategy_id",
            "trade_time",
            "side",
            "quantity",
            "price",
            "turnover",
            "stamp",
            "stt",
            "brokerage",
            "total_charges",
            "net_amount",
            "realized_pnl",
        ]
        .iter()
        .map(|c| r[col(c)].clone())
        .collect::<Vec<_>>()
        .join(" ")
    };
    let mut got: Vec<String> = rows.iter().map(pick).collect();
    got.sort();
    // Golden fills (cli.rs): stamp duty 0.01 % on buys is the only charge.
    // mom: BUY 10 @ 102.10 (turnover 1021.00, stamp 0.1021 → 0.10), SELL 10 @ 100.90
    // → gross (1009.00 − 1021.00) = −12.00, net −12.10.
    // mom_limit: BUY 10 @ 101.59 (1015.90, stamp 0.10159 → 0.10), SELL 10 @ 101.40
    // → gross −1.90, net −2.00. Times are IST (UTC+05:30).
    assert_eq!(
        got,
        vec![
            "mom 09:30:02 BUY 10 102.10 1021.00 0.10 0.00 0.00 0.10 -1021.10 ",
            "mom 09:30:06 SELL 10 100.90 1009.00 0.00 0.00 0.00 0.00 1009.00 -12.10",
            "mom_limit 09:30:06 BUY 10 101.59 1015.90 0.10 0.00 0.00 0.10 -1016.00 ",
            "mom_limit 09:30:07 SELL 10 101.40 1014.00 0.00 0.00 0.00 0.00 1014.00 -2.00",
        ]
    );

    let json: serde_json::Value =
        serde_json::from_str(&export(&["--strategy", "mom", "--format", "json"])).expect("JSON");
    let trips = json["round_trips"].as_array().expect("round_trips");
    assert_eq!(trips.len(), 1, "{json}");
    assert_eq!(trips[0]["gross_pnl"], "-12.00");
    assert_eq!(trips[0]["net_pnl"], "-12.10");
    assert_eq!(trips[0]["charges"], "0.10");
    assert_eq!(json["fills"].as_array().map(Vec::len), Some(2));
}

/// `strategies import` holds a file to the start-up rules: a bad parameter is refused with
/// its key and the stored set stays; a good file replaces it and `export` gives it back.
#[test]
fn strategies_import_refuses_a_bad_parameter_by_key_and_keeps_the_stored_set() {
    let ns = Namespace::new();
    let prefix = format!("t{}_", ns.id);
    let _schemas = Schemas(prefix.clone());
    migrate(&prefix);
    let dir = std::env::temp_dir().join(format!("ap-strategies-{}", ns.id));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[strategies]]\nid = \"mom\"\nkind = \"momentum\"\ninstruments = [738561]\n\
         params = { lookback = 2, threshold = \"0.01\", quantity = 10 }\n",
    )
    .expect("write");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[strategies]]\nid = \"mom2\"\nkind = \"momentum\"\ninstruments = [738561]\n\
         params = { lookback = \"two\" }\n",
    )
    .expect("write");

    let out = cli(
        &prefix,
        &["strategies", "import", good.to_str().expect("path")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 strategies stored"),
        "{}",
        text(&out.stdout)
    );

    let out = cli(
        &prefix,
        &["strategies", "import", bad.to_str().expect("path")],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("strategies[0].params.lookback"), "{err}");

    // A daemon told to take its strategies from the database trades the stored set.
    let port = free_port();
    // `--ephemeral`: the embedded transport keeps nothing in the default data directory
    // (which would be the source tree).
    let daemon = Command::new(env!("CARGO_BIN_EXE_alpha-panda"))
        .args(["run", "--ephemeral"])
        .env("ALPHA_PANDA__DATABASE__URL", database_url())
        .env("ALPHA_PANDA__DATABASE__SCHEMA_PREFIX", &prefix)
        .env("ALPHA_PANDA__DATABASE__STRATEGIES_FROM_DATABASE", "true")
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("ALPHA_PANDA__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("daemon starts");
    let daemon = Daemon(daemon);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            let (status, body) =
                alpha_panda_tests::ops::http(addr, "GET", "/portfolio/paper", None, None);
            if status == 200 {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        body.contains("\"mom\"") && !body.contains("momentum_1"),
        "{body}"
    );
    drop(daemon);

    let out = cli(&prefix, &["strategies", "export"]);
    let exported = text(&out.stdout);
    assert!(
        exported.contains("id = \"mom\"") && !exported.contains("mom2"),
        "{exported}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
