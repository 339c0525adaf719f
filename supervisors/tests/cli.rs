//! The `alpha-panda` binary as a person runs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_tests::{Namespace, kafka_servers};

fn alpha_panda() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alpha-panda"));
    // A clean environment for settings: nothing from the caller's shell leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("alpha-panda runs")
}

#[test]
fn config_check_names_a_misspelt_environment_key_and_exits_2() {
    let out = run(alpha_panda()
        .args(["config", "check"])
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVRS", "x"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("kafka.bootstrap_servrs"), "{err}");
    assert!(
        err.contains("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVRS"),
        "{err}"
    );
    assert!(
        err.contains("bootstrap_servers"),
        "says what is expected: {err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_daemon_refuses_to_start_with_an_admin_token_shorter_than_24_characters() {
    let mut child = alpha_panda()
        .args(["run", "--ephemeral"])
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ALPHA_PANDA__ADMIN__TOKEN", "guessable-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started with a 15-character admin token");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("`admin.token`"), "names the key: {err}");
    assert!(err.contains("at least 24"), "says what is expected: {err}");
    assert!(
        !err.contains("guessable-token"),
        "never shows the token: {err}"
    );
}

#[test]
fn config_check_refuses_a_bad_broker_name_with_the_reason() {
    let out = run(alpha_panda()
        .args(["config", "check"])
        .env("ACTIVE_BROKERS", "Paper!"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("Paper!") && err.contains("lowercase"), "{err}");
}

#[test]
fn config_check_prints_the_effective_settings_with_secrets_masked() {
    let dir = std::env::temp_dir().join(format!("ap-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("settings.toml");
    std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = run(alpha_panda()
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("ALPHA_PANDA__ADMIN__TOKEN", "topsecret-topsecret-topsecret"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("listen = \"127.0.0.1:9999\""),
        "file applied: {shown}"
    );
    assert!(shown.contains("token = \"********\""), "{shown}");
    assert!(!shown.contains("topsecret"), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn the_embedded_daemon_trades_on_paper_serves_positions_and_stops_with_status_0_on_sigterm() {
    let port = free_port();
    let mut child = alpha_panda()
        .args(["run", "--ephemeral"])
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        // Faster, livelier ticks than the default, so strategies trade within seconds.
        .env("ALPHA_PANDA__SYNTHETIC__TICKS_PER_SECOND", "100")
        .env("ALPHA_PANDA__SYNTHETIC__VOLATILITY", "0.003")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        if let Some(r) = http_get(port, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "no /healthz answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#"{"status":"ok"}"#), "{reply}");

    // Ticks → signals → risk → paper fills → portfolio, all in-process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let portfolio = loop {
        let body = http_get(port, "/portfolio/paper").unwrap_or_default();
        let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(json)
            && v["strategies"]
                .as_object()
                .is_some_and(|m| m.values().filter(|s| !s.is_null()).count() >= 2)
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no fills reached the portfolio: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (id, snap) in portfolio["strategies"].as_object().unwrap() {
        for p in snap["positions"].as_array().into_iter().flatten() {
            let q = p["quantity"].as_i64().unwrap();
            assert!(q >= 0, "{id} went short without allow_short: {p}");
        }
        if !snap.is_null() {
            let fees: f64 = snap["fees"].as_str().unwrap().parse().unwrap();
            assert!(fees > 0.0, "{id}: fills pay charges");
        }
    }
    let unknown = http_get(port, "/portfolio/zerodha").unwrap_or_default();
    assert!(
        unknown.starts_with("HTTP/1.1 404"),
        "inactive broker: {unknown}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped_by = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > stopped_by {
            let _ = child.kill();
            panic!("daemon did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn topics_ensure_creates_the_missing_topics_once_and_list_shows_them() {
    let ns = Namespace::new();
    let ensure = || {
        run(alpha_panda()
            .args(["topics", "ensure"])
            .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", kafka_servers())
            .env(
                "ALPHA_PANDA__BROKERS__".to_owned()
                    + &ns.broker.as_str().to_ascii_uppercase()
                    + "__KIND",
                "paper",
            )
            .env(
                "ALPHA_PANDA__BROKERS__".to_owned()
                    + &ns.broker.as_str().to_ascii_uppercase()
                    + "__ACCOUNT",
                "acct",
            )
            .env("ACTIVE_BROKERS", ns.broker.as_str()))
    };
    let first = ensure();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let report = text(&first.stdout);
    let ours: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with(&format!("{}.", ns.broker)))
        .collect();
    assert_eq!(ours.len(), 14, "8 topics and 6 DLQs: {report}");
    assert!(ours.iter().all(|l| l.contains("created")), "{report}");
    assert!(
        report.contains(&format!("{}.orders.filled.dlq", ns.broker)),
        "{report}"
    );

    let second = ensure();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let report = text(&second.stdout);
    assert!(report.contains("0 created, 16 already existed"), "{report}");

    let list = run(alpha_panda()
        .args(["topics", "list"])
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", kafka_servers())
        .env(
            "ALPHA_PANDA__BROKERS__".to_owned()
                + &ns.broker.as_str().to_ascii_uppercase()
                + "__KIND",
            "paper",
        )
        .env(
            "ALPHA_PANDA__BROKERS__".to_owned()
                + &ns.broker.as_str().to_ascii_uppercase()
                + "__ACCOUNT",
            "acct",
        )
        .env("ACTIVE_BROKERS", ns.broker.as_str()));
    let shown = text(&list.stdout);
    let line = shown
        .lines()
        .find(|l| l.starts_with(&format!("{}.orders.filled ", ns.broker)))
        .unwrap_or_else(|| panic!("{shown}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1..], ["6", "6", "-1"], "{line}");
}

/// Administration needs no Kite credentials; only `run` (trading) does, and it says which key.
#[test]
fn zerodha_credentials_are_required_to_trade_but_not_to_administer() {
    let admin = run(alpha_panda()
        .args(["topics", "list"])
        .env("ACTIVE_BROKERS", "paper,zerodha"));
    let err = text(&admin.stderr);
    assert!(!err.contains("api_key"), "{err}");
    assert!(err.contains("kafka.bootstrap_servers"), "{err}");
    let check = run(alpha_panda()
        .args(["config", "check"])
        .env("ACTIVE_BROKERS", "paper,zerodha"));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));

    let trade = run(alpha_panda()
        .args(["run", "--ephemeral"])
        .env("ACTIVE_BROKERS", "paper,zerodha"));
    assert_eq!(trade.status.code(), Some(2));
    let err = text(&trade.stderr);
    assert!(err.contains("brokers.zerodha.kite.api_key"), "{err}");
}

#[test]
fn topics_without_kafka_configured_say_what_to_set() {
    let out = run(alpha_panda().args(["topics", "list"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("kafka.bootstrap_servers"));
}

/// The golden tick file through `alpha-panda backtest`.
///
/// Momentum (lookback 2, threshold 1 %, 10 shares) on RELIANCE ticks 100, 101, 102, 104, 105,
/// 103, 101:
/// - tick 3 (102): (102 − 100) / 100 = +2 % > 1 % → BUY 10. Slippage 10 bps against the buyer:
///   102 × 1.001 = 102.102 → 102.10. Stamp duty 0.01 % of 1 021.00 = 0.1021 → fees 0.10.
/// - ticks 104, 105 (+2.0 %, +2.9 %): still BUY → nothing new. Tick 103: −1.0 % is not below
///   −1 % → nothing.
/// - tick 101: (101 − 105) / 105 = −3.8 % → SELL 10 at 101 × 0.999 = 100.899 → 100.90, no
///   stamp duty on a sell → fees 0.
/// - INFY (408065) rises 13 % but no strategy trades it → no fills.
///
/// Realized (100.90 − 102.10) × 10 = −12.00, net of fees −12.10; flat at the end, so total
/// PnL −12.10; one closing fill, at a loss → win rate 0. The last tick (102) is −1.0 % on
/// tick 103: nothing.
///
/// `mom_limit` decides the same but places LIMIT orders 40 bps better than the tick:
/// - tick 102 → BUY LIMIT 102 × 0.996 = 101.592 → 101.59. It rests: 104, 105, 103 are above
///   it; tick 101 (04:00:06) reaches it → filled at its limit 101.59; stamp duty 0.01 % of
///   1 015.90 = 0.10159 → fees 0.10.
/// - tick 101 → SELL LIMIT 101 × 1.004 = 101.404 → 101.40, placed at 04:00:06 after that
///   tick's fill, so 10 are held and it is no short sale. 101 is below it: it rests until
///   tick 102 (04:00:07) → filled at 101.40, fees 0.
///
/// Realized (101.40 − 101.59) × 10 = −1.90, net of fees −2.00.
#[test]
fn backtest_of_the_golden_tick_file_gives_the_hand_computed_fills() {
    let dir = std::env::temp_dir().join(format!("ap-golden-{}", std::process::id()));
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");
    let out = run(alpha_panda()
        .args(["backtest", "--config"])
        .arg(format!("{fixtures}/config.toml"))
        .arg("--ticks")
        .arg(format!("{fixtures}/ticks.csv"))
        .arg("--out")
        .arg(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let fills: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("fills.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, String, String, u64, String, String)> = fills
        .iter()
        .map(|f| {
            (
                f["side"].as_str().unwrap().to_owned(),
                f["fill_price"].as_str().unwrap().to_owned(),
                f["fees"].as_str().unwrap().to_owned(),
                f["instrument_token"].as_u64().unwrap(),
                f["timestamp"].as_str().unwrap().to_owned(),
                f["strategy_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut got = got;
    got.sort_by(|a, b| (&a.5, &a.4).cmp(&(&b.5, &b.4)));
    assert_eq!(
        got,
        vec![
            (
                "BUY".into(),
                "102.10".into(),
                "0.10".into(),
                738561,
                "2024-01-15T04:00:02Z".into(),
                "mom".into()
            ),
            (
                "SELL".into(),
                "100.90".into(),
                "0.00".into(),
                738561,
                "2024-01-15T04:00:06Z".into(),
                "mom".into()
            ),
            (
                "BUY".into(),
                "101.59".into(),
                "0.10".into(),
                738561,
                "2024-01-15T04:00:06Z".into(),
                "mom_limit".into()
            ),
            (
                "SELL".into(),
                "101.40".into(),
                "0.00".into(),
                738561,
                "2024-01-15T04:00:07Z".into(),
                "mom_limit".into()
            ),
        ]
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let s = &summary[0];
    assert_eq!(s["strategy_id"], "mom");
    assert_eq!(s["trades"], 2);
    assert_eq!(s["total_pnl"], "-12.10");
    assert_eq!(s["realized_pnl"], "-12.10");
    assert_eq!(s["fees"], "0.10");
    assert_eq!(s["win_rate"], "0");
    let s = &summary[1];
    assert_eq!(s["strategy_id"], "mom_limit");
    assert_eq!(s["trades"], 2);
    assert_eq!(s["total_pnl"], "-2.00");
    assert_eq!(s["fees"], "0.10");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same golden tick file through the daemon over Kafka (its own Apache Kafka) and Redis, with
/// `feed = none` and the ticks produced by the test: exactly the backtest's fills.
#[test]
fn the_daemon_over_kafka_gives_the_golden_fills_too() {
    let kafka = alpha_panda_tests::PrivateKafka::start();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");
    let port = free_port();
    let group_prefix = format!("golden-{}", std::process::id());
    let log = RemovedOnDrop(
        std::env::temp_dir().join(format!("ap-golden-kafka-{}.log", std::process::id())),
    );
    let mut daemon = alpha_panda()
        .args(["run", "--config"])
        .arg(format!("{fixtures}/config.toml"))
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers)
        .env("ALPHA_PANDA__KAFKA__GROUP_PREFIX", &group_prefix)
        .env("ALPHA_PANDA__REDIS__URL", alpha_panda_tests::redis_url())
        .env("ALPHA_PANDA__FEED", "none")
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        // Warnings and the shutdown steps, for the message if it does not stop in time.
        .env(
            "ALPHA_PANDA__LOG__LEVEL",
            "warn,alpha_panda_supervisors::daemon=info",
        )
        .stdout(Stdio::from(
            std::fs::File::create(&log.0).expect("log file"),
        ))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The golden ticks, in file order, keyed by instrument.
    let ticks = alpha_panda_actors::feed::load_ticks(std::path::Path::new(&format!(
        "{fixtures}/ticks.csv"
    )))
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = alpha_panda_tests::producer(&kafka.servers, "golden-feed");
        for tick in ticks {
            let env = alpha_panda_core::EventEnvelope::root(
                alpha_panda_core::EventBroker::Shared,
                "feed",
                tick.instrument_token.to_string(),
                tick.timestamp,
                alpha_panda_core::EventData::MarketTick(tick),
            );
            producer
                .send_all(&[alpha_panda_actors::delivery::Output {
                    topic: alpha_panda_topics::TopicName::market_ticks(),
                    envelope: env,
                }])
                .await
                .unwrap();
        }
    });

    // Read paper.orders.filled until the two fills are there.
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = alpha_panda_actors::kafka::consumer_config(
        &kafka.servers,
        "golden-reader",
        &format!("{group_prefix}-reader"),
    )
    .create()
    .unwrap();
    reader.subscribe(&["paper.orders.filled"]).unwrap();
    let mut fills = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while fills.len() < 4 && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            let env = alpha_panda_core::EventEnvelope::decode(m.payload().unwrap()).unwrap();
            if let alpha_panda_core::EventData::OrderFilled(f) = env.data {
                fills.push(f);
            }
        }
    }
    fills.sort_by_key(|f| (f.strategy_id.to_string(), f.timestamp));
    let got: Vec<(String, String, String, String, String)> = fills
        .iter()
        .map(|f| {
            (
                f.strategy_id.to_string(),
                f.side.to_string(),
                f.fill_price.to_string(),
                f.fees.to_string(),
                f.timestamp.to_string(),
            )
        })
        .collect();
    let fill = |s: &str, side: &str, price: &str, fees: &str, at: &str| {
        (
            s.to_owned(),
            side.to_owned(),
            price.to_owned(),
            fees.to_owned(),
            at.to_owned(),
        )
    };
    assert_eq!(
        got,
        vec![
            fill("mom", "BUY", "102.10", "0.10", "2024-01-15T04:00:02Z"),
            fill("mom", "SELL", "100.90", "0.00", "2024-01-15T04:00:06Z"),
            fill("mom_limit", "BUY", "101.59", "0.10", "2024-01-15T04:00:06Z"),
            fill(
                "mom_limit",
                "SELL",
                "101.40",
                "0.00",
                "2024-01-15T04:00:07Z"
            ),
        ],
        "the same fills as the backtest"
    );

    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let stop = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "daemon exits 0 on SIGTERM");
            break;
        }
        if Instant::now() > stop {
            let _ = daemon.kill();
            let text = std::fs::read_to_string(&log.0).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!(
                "daemon did not stop within 15 s of SIGTERM; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `feed = { replay = FILE }` on the embedded default: the golden ticks give the golden PnL,
/// readable over HTTP.
#[test]
fn the_daemon_replays_a_tick_file_into_the_golden_portfolio() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");
    let port = free_port();
    let mut daemon = alpha_panda()
        .args(["run", "--ephemeral", "--config"])
        .arg(format!("{fixtures}/config.toml"))
        .env("ALPHA_PANDA__FEED__REPLAY", format!("{fixtures}/ticks.csv"))
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let snapshot = loop {
        let body = http_get(port, "/portfolio/paper").unwrap_or_default();
        let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(json)
            && v["strategies"]["mom"]["total_pnl"] == "-12.10"
        {
            break v;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("the golden PnL never showed: {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(snapshot["strategies"]["mom"]["cash"], "999987.90");
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn json_logs_carry_each_records_ids_and_never_a_secret() {
    const ADMIN: &str = "admin-secret-4f1c9-0123456789";
    const KITE: &str = "kite-secret-77ab2";
    let mut child = alpha_panda()
        .args(["run", "--ephemeral"])
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ALPHA_PANDA__LOG__FORMAT", "json")
        .env(
            "ALPHA_PANDA__LOG__LEVEL",
            "info,alpha_panda_actors::delivery=debug",
        )
        .env("ALPHA_PANDA__ADMIN__TOKEN", ADMIN)
        .env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_SECRET", KITE)
        .env("ALPHA_PANDA__SYNTHETIC__TICKS_PER_SECOND", "50")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.contains("record done");
            seen.push(line);
            if done && seen.len() > 50 {
                break;
            }
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.is_finished() {
        if Instant::now() >= deadline {
            // Not left running after the test (it once was, for over an hour).
            let _ = child.kill();
            let _ = child.wait();
            panic!("no record was logged");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let lines = lines.join().unwrap();
    let all = format!("{}{}", lines.join("\n"), text(&out.stderr));
    assert!(
        !all.contains(ADMIN) && !all.contains(KITE),
        "a secret was logged"
    );
    let record: serde_json::Value = lines
        .iter()
        .filter(|l| l.contains("record done"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .next()
        .unwrap();
    let span = &record["span"];
    for field in ["event_id", "correlation_id", "trace_id"] {
        let id = span[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field}: {record}"));
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{field} = {id}");
    }
    assert!(
        span["topic"].is_string() && span["stage"].is_string(),
        "{record}"
    );
    assert!(
        span["partition"].is_u64() && span["offset"].is_u64(),
        "{record}"
    );
}

/// A file removed when dropped (also when the test fails).
struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
