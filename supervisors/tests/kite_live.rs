//! The daemon with `feed = "kite"` against the loopback Kite simulator, over Apache Kafka
//! (a broker of the test's own) and a real redis-server: `kite session` stores the session,
//! the ticker's ticks reach the strategies, a dropped socket reconnects and subscribes again,
//! a token expiry halts zerodha only (paper stays ACTIVE), a new session brings ticks back,
//! a stored session from before the latest 06:00 IST halts zerodha although Kite would still
//! take its token, and the access token never reaches the log. With another feed (synthetic,
//! on the embedded default with a redis-server), the trader halts zerodha at that expiry and
//! paper goes on filling orders.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_kite::sim::{Fault, SimConfig, Simulator};
use alpha_panda_supervisors::kite::StoredSession;
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

/// A daemon's log file in the temporary directory, removed when dropped (also when the test
/// fails).
struct TempLog(std::path::PathBuf);

impl TempLog {
    fn create(name: &str) -> (Self, std::fs::File) {
        let path = std::env::temp_dir().join(name);
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        (Self(path), file)
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

/// Waits for `f`; the timeouts are generous (a minute) because the tests share a loaded
/// machine: they bound a hang, they measure nothing.
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
    let (log, log_file) = TempLog::create(&format!("alpha-panda-kite-live-{port}.log"));
    let _daemon = Daemon(
        daemon_command(BIN)
            .envs(vars.iter().cloned())
            .stdout(log_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let logs = || std::fs::read_to_string(&log.0).unwrap_or_default();
    until("the daemon's HTTP server", Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    // No session yet: zerodha is HALTED from the start, paper trades.
    until(
        "zerodha HALTED without a session",
        Duration::from_secs(60),
        || state(addr, "zerodha") == "HALTED",
    );
    assert_eq!(state(addr, "paper"), "ACTIVE");

    let out = session(&vars, &sim);
    assert!(out.contains("zerodha:kite:session"), "{out}");
    until("ticks from the simulator", Duration::from_secs(60), || {
        metric(
            addr,
            "alpha_panda_kite_ticker_events_total{event=\"ticks\"}",
        ) >= 30.0
    });
    let consumed = || metric(addr, "alpha_panda_records_consumed_total{");
    let before = consumed();
    until(
        "the strategies reading those ticks",
        Duration::from_secs(60),
        || consumed() > before + 10.0,
    );

    // A dropped socket: the feed connects again by itself, subscribes again, and ticks flow
    // over the new connection. The feed handles its events in order, so ticks counted after
    // it counted the new connection came over that connection.
    let ticks_metric = "alpha_panda_kite_ticker_events_total{event=\"ticks\"}";
    let connected_metric = "alpha_panda_kite_ticker_events_total{event=\"connected\"}";
    let disconnected_metric = "alpha_panda_kite_ticker_events_total{event=\"disconnected\"}";
    let (connections, subscribes) = sim.ticker_stats();
    let connected = metric(addr, connected_metric);
    assert_eq!(metric(addr, disconnected_metric), 0.0);
    sim.inject(Fault::DropSockets);
    until(
        "the feed to count the drop and a new connection",
        Duration::from_secs(60),
        || metric(addr, disconnected_metric) >= 1.0 && metric(addr, connected_metric) > connected,
    );
    let (c, s) = sim.ticker_stats();
    assert!(
        c > connections && s > subscribes,
        "a new connection and subscription at the simulator: {c} {s}"
    );
    let after_reconnect = metric(addr, ticks_metric);
    until("ticks after the reconnect", Duration::from_secs(60), || {
        metric(addr, ticks_metric) > after_reconnect + 10.0
    });
    assert_eq!(state(addr, "zerodha"), "HALTED", "still as it was");

    activate(addr);
    sim.inject(Fault::ExpireToken);
    until(
        "zerodha HALTED after the expiry",
        Duration::from_secs(60),
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
        Duration::from_secs(60),
        || {
            metric(
                addr,
                "alpha_panda_kite_ticker_events_total{event=\"ticks\"}",
            ) > ticks + 10.0
        },
    );
    let (connections, subscribes) = sim.ticker_stats();
    assert!(
        connections >= 3 && subscribes >= 3,
        "{connections} {subscribes}"
    );

    // The daily expiry: the stored session now dates from before the latest 06:00 IST. Kite
    // (the simulator) would still take its token; the daemon halts zerodha all the same.
    activate(addr);
    age_stored_session(&redis.url());
    until(
        "zerodha HALTED at the 06:00 IST expiry",
        Duration::from_secs(60),
        || state(addr, "zerodha") == "HALTED",
    );
    assert_eq!(state(addr, "paper"), "ACTIVE");
    assert!(logs().contains("expired (06:00 IST)"), "{}", logs());
    assert!(
        sim.access_token().is_some(),
        "the simulator's session is intact"
    );

    let secret_leak = sim.access_token().unwrap_or_default();
    assert!(
        !logs().contains(&secret_leak),
        "the access token is in the log"
    );
    drop(rt);
}

fn activate(addr: std::net::SocketAddr) {
    let (code, _) = http(
        addr,
        "POST",
        "/admin/trading-state",
        Some(ADMIN),
        Some(r#"{"broker":"zerodha","state":"ACTIVE"}"#),
    );
    assert_eq!(code, 200);
    assert_eq!(state(addr, "zerodha"), "ACTIVE");
}

/// Rewrites the stored session's login time to 25 hours ago: before the latest 06:00 IST,
/// whatever the time of day. The token is kept.
fn age_stored_session(redis: &str) {
    let key = alpha_panda_supervisors::kite::session_key("zerodha");
    let client = redis::Client::open(redis).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = client.get_connection().unwrap_or_else(|e| panic!("{e}"));
    let json: String = redis::cmd("GET")
        .arg(&key)
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let mut session: StoredSession =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{key}: {e}"));
    session.login_time = chrono::Utc::now() - chrono::Duration::hours(25);
    let json = serde_json::to_string(&session).unwrap_or_else(|e| panic!("{e}"));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(json)
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("{key}: {e}"));
}

/// Fills paper's trader published, by the daemon's metrics.
fn paper_fills(addr: std::net::SocketAddr) -> f64 {
    let (_, body) = http(addr, "GET", "/metrics", None, None);
    body.lines()
        .filter(|l| l.starts_with("alpha_panda_records_produced_total{"))
        .filter(|l| l.contains("topic=\"paper.orders.filled\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With a feed other than `kite` (here the synthetic one, on the embedded default with the
/// Redis store), the trader's session refresher halts zerodha when the stored session passes
/// 06:00 IST, and paper goes on trading.
#[test]
fn with_another_feed_the_trader_halts_zerodha_at_the_six_am_ist_expiry_and_paper_trades_on() {
    let redis = PrivateRedis::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let sim = rt
        .block_on(Simulator::start(
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            SimConfig::new("simkey", "simsecret"),
        ))
        .unwrap_or_else(|e| panic!("simulator: {e}"));
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut vars = env(&redis.url(), &sim, port);
    vars.retain(|(k, _)| k != "ALPHA_PANDA__FEED");
    vars.push(("ALPHA_PANDA__FEED".to_owned(), "synthetic".to_owned()));
    // A valid session before the start.
    session(&vars, &sim);
    let (log, log_file) = TempLog::create(&format!("alpha-panda-kite-expiry-{port}.log"));
    let _daemon = Daemon(
        daemon_command(BIN)
            .envs(vars.iter().cloned())
            .stdout(log_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let logs = || std::fs::read_to_string(&log.0).unwrap_or_default();
    until("the daemon's HTTP server", Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    until("zerodha ACTIVE", Duration::from_secs(60), || {
        state(addr, "zerodha") == "ACTIVE"
    });
    // Longer than the refresher's 5 s: a valid session halts nothing.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(state(addr, "zerodha"), "ACTIVE", "{}", logs());

    age_stored_session(&redis.url());
    until(
        "zerodha HALTED at the 06:00 IST expiry",
        Duration::from_secs(60),
        || state(addr, "zerodha") == "HALTED",
    );
    assert_eq!(state(addr, "paper"), "ACTIVE");
    assert!(logs().contains("expired (06:00 IST)"), "{}", logs());
    let fills = paper_fills(addr);
    until(
        "paper fills after zerodha halted",
        Duration::from_secs(60),
        || paper_fills(addr) > fills,
    );
    let token = sim.access_token().unwrap_or_default();
    assert!(
        !token.is_empty() && !logs().contains(&token),
        "the token is in the log"
    );
    drop(rt);
}
