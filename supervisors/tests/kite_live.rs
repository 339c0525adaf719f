//! The daemon with `feed = "kite"` against the loopback Kite simulator, over Apache Kafka
//! (a broker of the test's own) and a real redis-server: `kite session` stores the session, the ticker's ticks reach the strategies,
//! a token expiry halts zerodha only (paper stays ACTIVE), a new session brings ticks back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_kite::sim::{Fault, SimConfig, Simulator};
use alpha_panda_tests::PrivateKafka;
use alpha_panda_tests::ops::{Daemon, PrivateRedis, daemon_command, free_port, get_json_as, http};

const BIN: &str = env!("CARGO_BIN_EXE_alpha-panda");
const ADMIN: &str = "kite-live-admin-token-0123456789";

fn env(redis: &str, sim: &Simulator, http_port: u16) -> Vec<(String, String)> {
    let addr = sim.addr();
    [
        ("ACTIVE_BROKERS", "paper,zerodha".to_owned()),
        ("ALPHA_PANDA__FEED", "kite".to_owned()),
        ("ALPHA_PANDA__REDIS__URL", redis.to_owned()),
        (
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{http_port}"),
        ),
        ("ALPHA_PANDA__ADMIN__TOKEN", ADMIN.to_owned()),
        (
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY",
            "simkey".to_owned(),
        ),
        (
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_SECRET",
            "simsecret".to_owned(),
        ),
        (
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_URL",
            format!("http://{addr}"),
        ),
        (
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_URL",
            format!("ws://{addr}"),
        ),
        (
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_INSTRUMENTS",
            "[738561, 408065, 2953217]".to_owned(),
        ),
        (
            "ALPHA_PANDA__BROKERS__ZERODHA__KITE__TICKER_READ_TIMEOUT_SECS",
            "2".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn metric(addr: std::net::SocketAddr, line_start: &str) -> f64 {
    let (_, body) = http(addr, "GET", "/metrics", None, None);
    body.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn state(addr: std::net::SocketAddr, broker: &str) -> String {
    let (_, v) = get_json_as(addr, "/status", ADMIN);
    v["brokers"][broker]["trading_state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn session(vars: &[(String, String)], sim: &Simulator) -> String {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .envs(vars.iter().cloned())
        .args([
            "kite",
            "session",
            "--request-token",
            &sim.issue_request_token(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("alpha-panda kite session: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = sim.access_token().unwrap_or_default();
    assert!(!token.is_empty());
    assert!(!stdout.contains(&token), "the token is printed: {stdout}");
    stdout
}

#[test]
fn the_kite_feed_trades_on_simulator_ticks_and_a_token_expiry_halts_zerodha_only() {
    let redis = PrivateRedis::start();
    let kafka = PrivateKafka::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = SimConfig::new("simkey", "simsecret");
    cfg.tick_interval = Duration::from_millis(100);
    cfg.heartbeat_interval = Duration::from_millis(500);
    let sim = rt
        .block_on(Simulator::start(
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            cfg,
        ))
        .unwrap_or_else(|e| panic!("simulator: {e}"));
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut vars = env(&redis.url(), &sim, port);
    vars.push((
        "ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS".to_owned(),
        kafka.servers.clone(),
    ));
    let log = std::env::temp_dir().join(format!("alpha-panda-kite-live-{port}.log"));
    let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let _daemon = Daemon(
        daemon_command(BIN)
            .envs(vars.iter().cloned())
            .stdout(log_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    until("the daemon's HTTP server", Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    // No session yet: zerodha is HALTED from the start, paper trades.
    until(
        "zerodha HALTED without a session",
        Duration::from_secs(10),
        || state(addr, "zerodha") == "HALTED",
    );
    assert_eq!(state(addr, "paper"), "ACTIVE");

    let out = session(&vars, &sim);
    assert!(out.contains("zerodha:kite:session"), "{out}");
    until("ticks from the simulator", Duration::from_secs(20), || {
        metric(
            addr,
            "alpha_panda_kite_ticker_events_total{event=\"ticks\"}",
        ) >= 30.0
    });
    let consumed = || metric(addr, "alpha_panda_records_consumed_total{");
    let before = consumed();
    until(
        "the strategies reading those ticks",
        Duration::from_secs(20),
        || consumed() > before + 10.0,
    );
    let (code, _) = http(
        addr,
        "POST",
        "/admin/trading-state",
        Some(ADMIN),
        Some(r#"{"broker":"zerodha","state":"ACTIVE"}"#),
    );
    assert_eq!(code, 200);
    assert_eq!(state(addr, "zerodha"), "ACTIVE");

    sim.inject(Fault::ExpireToken);
    until(
        "zerodha HALTED after the expiry",
        Duration::from_secs(20),
        || state(addr, "zerodha") == "HALTED",
    );
    assert_eq!(state(addr, "paper"), "ACTIVE", "{}", logs());
    assert!(
        metric(
            addr,
            "alpha_panda_kite_ticker_events_total{event=\"token_rejected\"}"
        ) >= 1.0
    );
    assert!(
        logs().contains("kite session --request-token"),
        "{}",
        logs()
    );

    // A new session: the feed reconnects by itself.
    session(&vars, &sim);
    let ticks = metric(
        addr,
        "alpha_panda_kite_ticker_events_total{event=\"ticks\"}",
    );
    until(
        "ticks after the new session",
        Duration::from_secs(20),
        || {
            metric(
                addr,
                "alpha_panda_kite_ticker_events_total{event=\"ticks\"}",
            ) > ticks + 10.0
        },
    );
    let (connections, subscribes) = sim.ticker_stats();
    assert!(
        connections >= 2 && subscribes >= 2,
        "{connections} {subscribes}"
    );
    let secret_leak = sim.access_token().unwrap_or_default();
    assert!(
        !logs().contains(&secret_leak),
        "the access token is in the log"
    );
    drop(rt);
}
