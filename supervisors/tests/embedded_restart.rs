//! The embedded default survives restarts (issue 12, item 4): the real `alpha-panda run`
//! binary on the in-process transport, its `data_dir` in a temporary directory of the test's
//! own, ticks replayed from a file the test writes. After SIGTERM a second run shows the
//! same positions, cash and trading states; after SIGKILL the second run carries on from the data directory
//! and its books are exactly the fills in the log, each applied once; `--ephemeral` keeps
//! nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use alpha_panda_core::{Decimal, EventData, EventEnvelope};
use alpha_panda_db::embedded::SqliteJournal;
use alpha_panda_tests::ops::free_port;

/// A directory of the test's own, removed when the test ends (also when it fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ap-embedded-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon killed when the test ends, whatever happens.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = r#"
active_brokers = ["paper"]
[portfolio]
snapshot_interval_secs = 0

[[strategies]]
id = "mom"
kind = "momentum"
instruments = [738561, 408065]
params = { lookback = 3, threshold = "0.004", quantity = 5 }

[[strategies]]
id = "mom_limit"
kind = "momentum"
instruments = [738561, 408065]
params = { lookback = 5, threshold = "0.006", quantity = 3 }
order_type = "LIMIT"
limit_offset_bps = "20"
"#;

const TOKEN: &str = "embedded-restart-token-0123456789";

/// A deterministic random walk of two instruments, one tick each per second.
fn write_ticks(dir: &Path, per_instrument: usize) -> PathBuf {
    let path = dir.join("ticks.csv");
    let mut out = String::from("instrument_token,timestamp,last_price\n");
    let mut prices = [(738561u32, 250_000i64), (408065, 150_000)];
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T03:45:00Z").unwrap();
    for i in 0..per_instrument {
        for (token, paise) in prices.iter_mut() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // A step of -0.8%..+0.8%, kept on the 0.05 grid.
            let step = ((seed >> 33) % 161) as i64 - 80;
            *paise += *paise * step / 10_000;
            *paise -= *paise % 5;
            let ts = start + chrono::Duration::seconds(i as i64);
            out.push_str(&format!(
                "{token},{},{}.{:02}\n",
                ts.format("%Y-%m-%dT%H:%M:%SZ"),
                *paise / 100,
                *paise % 100
            ));
        }
    }
    std::fs::write(&path, out).unwrap();
    path
}

fn start(dir: &TempDir, feed: &[(&str, String)], args: &[&str]) -> Daemon {
    let config = dir.0.join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alpha-panda"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("run")
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("ALPHA_PANDA__DATA_DIR", dir.0.join("data"))
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("ALPHA_PANDA__ADMIN__TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join(format!("daemon-{port}.log"))).unwrap());
    for (k, v) in feed {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("the daemon starts");
    let d = Daemon { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&d, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "no /healthz answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

fn replay(ticks: &Path) -> Vec<(&'static str, String)> {
    vec![("ALPHA_PANDA__FEED__REPLAY", ticks.display().to_string())]
}

fn no_feed() -> Vec<(&'static str, String)> {
    vec![("ALPHA_PANDA__FEED", "none".to_owned())]
}

fn get(d: &Daemon, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    serde_json::from_str(body.split_once("\r\n\r\n")?.1).ok()
}

/// The books without their stamp (it says when they were read).
fn books(d: &Daemon) -> serde_json::Value {
    let mut v = get(d, "/portfolio/paper").expect("/portfolio/paper answers");
    if let Some(m) = v["strategies"].as_object_mut() {
        for s in m.values_mut().filter_map(|s| s.as_object_mut()) {
            s.remove("timestamp");
        }
    }
    v
}

fn lags(v: &serde_json::Value, out: &mut Vec<i64>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_i64()) {
                    ("lag", Some(n)) => out.push(n),
                    _ => lags(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| lags(x, out)),
        _ => {}
    }
}

/// Waits until every stage has caught up (no lag on two samples a sampling period apart)
/// and the books stopped moving; returns them.
fn settled(d: &Daemon, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        let status = get(d, "/status").unwrap_or_default();
        let mut l = Vec::new();
        lags(&status, &mut l);
        let now = books(d);
        let caught_up = !l.is_empty() && l.iter().all(|n| *n == 0);
        if caught_up && last.as_ref() == Some(&now) {
            return now;
        }
        last = caught_up.then_some(now);
        assert!(
            Instant::now() < deadline,
            "the daemon never caught up: lags {l:?}"
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
}

fn stop(mut d: Daemon, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    if signal == "-TERM" {
        assert_eq!(status.code(), Some(0), "SIGTERM ends with status 0");
    }
}

/// A fill as the log holds it.
#[derive(Debug, Clone, PartialEq)]
struct Fill {
    strategy: String,
    instrument: u32,
    buy: bool,
    quantity: i64,
    price: Decimal,
    fees: Decimal,
}

/// What the data directory holds (read with the daemon stopped).
fn data_of(dir: &TempDir) -> alpha_panda_actors::journal::Restored {
    let (journal, restored) = SqliteJournal::open(&dir.0.join("data")).expect("data dir opens");
    journal.close(Duration::from_secs(5)).unwrap();
    restored
}

fn ticks_in(dir: &TempDir) -> usize {
    data_of(dir)
        .topics
        .iter()
        .filter(|(t, _)| t == "market.ticks")
        .flat_map(|(_, ps)| ps.iter().map(|(_, records)| records.len()))
        .sum()
}

/// Every `order_filled` record in the data directory's log, by event id, and how many
/// records there were (a fill re-emitted after a crash is there twice with one id).
fn fills_in(dir: &TempDir) -> (BTreeMap<String, Fill>, usize) {
    let restored = data_of(dir);
    let mut out = BTreeMap::new();
    let mut records = 0;
    for (topic, partitions) in &restored.topics {
        if topic != "paper.orders.filled" {
            continue;
        }
        for r in partitions.iter().flat_map(|(_, records)| records) {
            records += 1;
            let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
            let EventData::OrderFilled(f) = &env.data else {
                panic!("not a fill on paper.orders.filled: {env:?}");
            };
            let fill = Fill {
                strategy: f.strategy_id.as_str().to_owned(),
                instrument: f.instrument_token.0,
                buy: f.side.sign() > 0,
                quantity: f.quantity.get() as i64,
                price: f.fill_price.get(),
                fees: f.fees,
            };
            if let Some(seen) = out.insert(env.id.to_string(), fill.clone()) {
                assert_eq!(seen, fill, "one id, two different fills: {}", env.id);
            }
        }
    }
    (out, records)
}

/// Cash and quantities per strategy if each fill is applied exactly once.
fn books_from(fills: &BTreeMap<String, Fill>) -> BTreeMap<String, (Decimal, BTreeMap<u32, i64>)> {
    let mut out: BTreeMap<String, (Decimal, BTreeMap<u32, i64>)> = BTreeMap::new();
    for f in fills.values() {
        let (cash, qty) = out
            .entry(f.strategy.clone())
            .or_insert_with(|| (Decimal::new(1_000_000, 0), BTreeMap::new()));
        let value = f.price * Decimal::from(f.quantity);
        if f.buy {
            *cash -= value + f.fees;
            *qty.entry(f.instrument).or_default() += f.quantity;
        } else {
            *cash += value - f.fees;
            *qty.entry(f.instrument).or_default() -= f.quantity;
        }
    }
    out
}

fn shown(books: &serde_json::Value) -> BTreeMap<String, (Decimal, BTreeMap<u32, i64>)> {
    let mut out = BTreeMap::new();
    for (id, s) in books["strategies"].as_object().unwrap() {
        if s.is_null() {
            continue;
        }
        let cash = Decimal::from_str(s["cash"].as_str().unwrap()).unwrap();
        let qty = s["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["instrument_token"].as_u64().unwrap() as u32,
                    p["quantity"].as_i64().unwrap(),
                )
            })
            .collect();
        out.insert(id.clone(), (cash.normalize(), qty));
    }
    out
}

fn normalized(
    b: BTreeMap<String, (Decimal, BTreeMap<u32, i64>)>,
) -> BTreeMap<String, (Decimal, BTreeMap<u32, i64>)> {
    b.into_iter()
        .map(|(k, (c, q))| (k, (c.normalize(), q)))
        .collect()
}

#[test]
fn after_sigterm_a_second_run_shows_the_same_positions_cash_and_trading_states() {
    let dir = TempDir::new("term");
    let ticks = write_ticks(&dir.0, 300);
    let first = start(&dir, &replay(&ticks), &[]);
    let before = settled(&first, Duration::from_secs(120));
    assert!(
        before["strategies"]
            .as_object()
            .unwrap()
            .values()
            .any(|s| !s.is_null()),
        "the first run traded: {before}"
    );
    let addr = format!("127.0.0.1:{}", first.port).parse().unwrap();
    let (code, body) = alpha_panda_tests::ops::http(
        addr,
        "POST",
        "/admin/trading-state",
        Some(TOKEN),
        Some(r#"{"broker": "paper", "strategy": "mom", "state": "REDUCING"}"#),
    );
    assert_eq!(code, 200, "{body}");
    stop(first, "-TERM");
    let (fills_before, _) = fills_in(&dir);
    assert!(!fills_before.is_empty());

    let second = start(&dir, &no_feed(), &[]);
    // At once, before anything could be recomputed: the books were kept, not rebuilt.
    assert_eq!(books(&second), before, "the books after the restart");
    let status = get(&second, "/status").unwrap();
    assert_eq!(
        status["strategy_trading_states"],
        serde_json::json!([{ "broker": "paper", "strategy": "mom", "trading_state": "REDUCING" }]),
        "the trading state set before the restart"
    );
    let again = settled(&second, Duration::from_secs(60));
    assert_eq!(again, before, "nothing moved once the second run caught up");
    stop(second, "-TERM");
    let (fills_after, _) = fills_in(&dir);
    assert_eq!(
        fills_after.keys().collect::<Vec<_>>(),
        fills_before.keys().collect::<Vec<_>>(),
        "the same fills, none added or lost"
    );
    assert_eq!(shown(&before), normalized(books_from(&fills_after)));
}

#[test]
fn after_sigkill_the_books_are_the_fills_of_the_log_each_applied_once() {
    let dir = TempDir::new("kill");
    let ticks = write_ticks(&dir.0, 1500);
    let mut feed = replay(&ticks);
    // Paced so the kill lands mid-stream: 1500 s of ticks in about 7 s.
    feed.push(("ALPHA_PANDA__FEED__SPEED", "200".to_owned()));
    let first = start(&dir, &feed, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = books(&first);
        let traded = b["strategies"]
            .as_object()
            .is_some_and(|m| m.values().filter(|s| !s.is_null()).count() == 2);
        if traded {
            break;
        }
        assert!(Instant::now() < deadline, "no fills before the kill: {b}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(700));
    stop(first, "-KILL");
    let (at_kill, _) = fills_in(&dir);
    assert!(!at_kill.is_empty(), "fills were kept up to the kill");
    let ticks_at_kill = ticks_in(&dir);
    assert!(
        ticks_at_kill < 3000,
        "the kill came mid-stream ({ticks_at_kill} of 3000 ticks published)"
    );

    let second = start(&dir, &no_feed(), &[]);
    let after = settled(&second, Duration::from_secs(180));
    stop(second, "-TERM");
    let (fills, records) = fills_in(&dir);
    for id in at_kill.keys() {
        assert!(fills.contains_key(id), "fill {id} was lost in the restart");
    }
    assert_eq!(
        shown(&after),
        normalized(books_from(&fills)),
        "the books are the log's {} fills ({records} records) each applied once",
        fills.len()
    );
}

#[test]
fn an_ephemeral_daemon_keeps_nothing() {
    let dir = TempDir::new("ephemeral");
    let ticks = write_ticks(&dir.0, 150);
    let first = start(&dir, &replay(&ticks), &["--ephemeral"]);
    let before = settled(&first, Duration::from_secs(120));
    assert!(
        before["strategies"]
            .as_object()
            .unwrap()
            .values()
            .any(|s| !s.is_null()),
        "the first run traded: {before}"
    );
    stop(first, "-TERM");
    assert!(
        !dir.0.join("data").exists(),
        "--ephemeral wrote nothing to data_dir"
    );
    let second = start(&dir, &no_feed(), &["--ephemeral"]);
    let after = books(&second);
    assert!(
        after["strategies"]
            .as_object()
            .unwrap()
            .values()
            .all(|s| s.is_null()),
        "a second ephemeral run starts with empty books: {after}"
    );
    stop(second, "-TERM");
}
