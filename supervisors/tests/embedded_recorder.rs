//! The recorder on the embedded default (issue 12): the real `alpha-panda run` binary on
//! the in-process transport fills the `fills` table of `DATA_DIR/paper.sqlite` with exactly
//! the fills of its log, one row per fill, across a SIGKILL and a restart too.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_core::{EventData, EventEnvelope};
use alpha_panda_db::embedded::SqliteJournal;
use alpha_panda_tests::ops::free_port;

/// A directory of the test's own, removed when the test ends (also when it fails).
struct TempDir(PathBuf);

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
"#;

fn write_ticks(dir: &Path, per_instrument: usize) -> PathBuf {
    let path = dir.join("ticks.csv");
    let mut out = String::from("instrument_token,timestamp,last_price\n");
    let mut prices = [(738561u32, 250_000i64), (408065, 150_000)];
    let mut seed: u64 = 0x5eed_1234_abcd_0003;
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T03:45:00Z").unwrap();
    for i in 0..per_instrument {
        for (token, paise) in prices.iter_mut() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
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

fn start(dir: &TempDir, feed: &[(&str, String)]) -> Daemon {
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
        .arg("--config")
        .arg(&config)
        .env("ALPHA_PANDA__DATA_DIR", dir.0.join("data"))
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join(format!("daemon-{port}.log"))).unwrap());
    for (k, v) in feed {
        cmd.env(k, v);
    }
    let d = Daemon {
        child: cmd.spawn().expect("the daemon starts"),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(&d) {
        assert!(Instant::now() < deadline, "no /healthz answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

fn healthy(d: &Daemon) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", d.port)) else {
        return false;
    };
    let _ = write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}

fn stop(mut d: Daemon, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Event id → (strategy, side, quantity, price, fees).
type Fills = BTreeMap<String, (String, String, i64, String, String)>;

/// The fills of the log.
fn log_fills(dir: &TempDir) -> Fills {
    let (journal, restored) = SqliteJournal::open(&dir.0.join("data")).expect("data dir opens");
    journal.close(Duration::from_secs(5)).unwrap();
    let mut out = BTreeMap::new();
    for (topic, partitions) in &restored.topics {
        if topic != "paper.orders.filled" {
            continue;
        }
        for r in partitions.iter().flat_map(|(_, records)| records) {
            let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
            let EventData::OrderFilled(f) = &env.data else {
                panic!("not a fill: {env:?}");
            };
            out.insert(
                env.id.to_string(),
                (
                    f.strategy_id.as_str().to_owned(),
                    if f.side.sign() > 0 { "BUY" } else { "SELL" }.to_owned(),
                    f.quantity.get() as i64,
                    f.fill_price.get().normalize().to_string(),
                    f.fees.normalize().to_string(),
                ),
            );
        }
    }
    out
}

fn table_fills(dir: &TempDir) -> (Fills, usize) {
    let rows = alpha_panda_db::recorder::sqlite::read_fills(
        &dir.0.join("data"),
        &alpha_panda_db::Layout::default(),
        &alpha_panda_core::BrokerName::paper(),
    )
    .expect("paper.sqlite is readable");
    let n = rows.len();
    let dec = |s: &str| {
        s.parse::<alpha_panda_core::Decimal>()
            .unwrap()
            .normalize()
            .to_string()
    };
    let map = rows
        .into_iter()
        .map(|r| {
            (
                r.event_id,
                (
                    r.strategy_id,
                    r.side,
                    r.quantity,
                    dec(&r.price),
                    dec(&r.fees),
                ),
            )
        })
        .collect();
    (map, n)
}

/// Waits until the table stops changing; returns what it holds.
fn settled(dir: &TempDir) -> (Fills, usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = table_fills(dir);
        if last.as_ref() == Some(&now.1) && now.1 > 0 {
            return now;
        }
        last = Some(now.1);
        assert!(Instant::now() < deadline, "the fills table never settled");
    }
}

#[test]
fn the_sqlite_fills_table_holds_exactly_the_fills_of_the_log_one_row_each_across_a_sigkill() {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "ap-embedded-recorder-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let ticks = write_ticks(&dir.0, 400);
    let replay = [("ALPHA_PANDA__FEED__REPLAY", ticks.display().to_string())];

    // Trade, then SIGKILL mid-stream: what was recorded is a prefix, nothing doubled.
    let d = start(&dir, &replay);
    std::thread::sleep(Duration::from_millis(1500));
    stop(d, "-KILL");

    // Restart without a feed: the stages finish the log and the recorder catches up.
    let d = start(&dir, &[("ALPHA_PANDA__FEED", "none".to_owned())]);
    settled(&dir);
    stop(d, "-TERM");

    let log = log_fills(&dir);
    let (table, rows) = table_fills(&dir);
    assert!(!log.is_empty(), "the run traded");
    assert_eq!(rows, log.len(), "one row per fill");
    assert_eq!(table, log, "the table holds exactly the log's fills");

    // The trade book of the embedded default reads the same file: every fill once, with
    // its price and quantity, for the strategy asked.
    let export = Command::new(env!("CARGO_BIN_EXE_alpha-panda"))
        .args(["trades", "export", "--broker", "paper"])
        .args([
            "--from",
            "2000-01-01",
            "--to",
            "2100-12-31",
            "--format",
            "json",
        ])
        .env("ALPHA_PANDA__DATA_DIR", dir.0.join("data"))
        .env_remove("ALPHA_PANDA__DATABASE__URL")
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "trades export: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let book: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    let exported: Fills = book["fills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let dec = |v: &serde_json::Value| {
                v.as_str()
                    .unwrap()
                    .parse::<alpha_panda_core::Decimal>()
                    .unwrap()
                    .normalize()
                    .to_string()
            };
            (
                f["event_id"].as_str().unwrap().to_owned(),
                (
                    f["strategy_id"].as_str().unwrap().to_owned(),
                    f["side"].as_str().unwrap().to_owned(),
                    f["quantity"].as_i64().unwrap(),
                    dec(&f["price"]),
                    dec(&f["total_charges"]),
                ),
            )
        })
        .collect();
    let rounded: Fills = log
        .iter()
        .map(|(id, (s, side, q, price, fees))| {
            let fees = fees
                .parse::<alpha_panda_core::Decimal>()
                .unwrap()
                .round_dp(2)
                .normalize()
                .to_string();
            (
                id.clone(),
                (s.clone(), side.clone(), *q, price.clone(), fees),
            )
        })
        .collect();
    assert_eq!(exported, rounded, "trades export lists the log's fills");
}
