//! Strategy reload with audit (issue 12, item 5) and the embedded default's data directory
//! lock, shown on the real `alpha-panda run` binary over the in-process transport, with its
//! `data_dir` in a temporary directory of the test's own and ticks replayed at a pace.
//!
//! A reload from a settings file with a bad parameter is refused naming the key and the
//! old set keeps trading; a good one changes the signals from the next tick of each
//! instrument on; SIGHUP reloads too; every attempt is a row of `admin_audit` in the data
//! directory's `paper.sqlite`. A second daemon on the same data directory is refused naming
//! it and the first one's pid.

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

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ap-reload-{name}-{}-{}",
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

const TOKEN: &str = "reload-test-admin-token-0123456789";

fn strategies(id: &str, params: &str) -> String {
    format!(
        "[[strategies]]\nid = \"{id}\"\nkind = \"momentum\"\ninstruments = [738561, 408065]\nparams = {{ {params} }}\n"
    )
}

const HEAD: &str = "active_brokers = [\"paper\"]\n[portfolio]\nsnapshot_interval_secs = 0\n\n";

/// A deterministic random walk of two instruments, one tick each per second of event time.
fn write_ticks(dir: &Path, per_instrument: usize) -> PathBuf {
    let path = dir.join("ticks.csv");
    let mut out = String::from("instrument_token,timestamp,last_price\n");
    let mut prices = [(738561u32, 250_000i64), (408065, 150_000)];
    let mut seed: u64 = 0x5eed_1234_abcd_0002;
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

fn spawn(dir: &TempDir, config: &Path, env: &[(&str, String)]) -> (Daemon, PathBuf) {
    let port = free_port();
    let log = dir.0.join(format!("daemon-{port}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alpha-panda"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("ALPHA_PANDA__DATA_DIR", dir.0.join("data"))
        .env("ALPHA_PANDA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("ALPHA_PANDA__ADMIN__TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("the daemon starts");
    (Daemon { child, port }, log)
}

fn wait_healthy(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(d, "GET", "/healthz").is_none() {
        assert!(Instant::now() < deadline, "no /healthz answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (status, JSON body) of a request with the admin token.
fn request(d: &Daemon, method: &str, path: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or_default()))
}

fn signal(d: &Daemon, name: &str) {
    let ok = Command::new("kill")
        .args([name, &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {name}");
}

fn stop(mut d: Daemon) {
    signal(&d, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0), "SIGTERM ends with status 0");
            return;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (strategy, instrument) → the event times (ms) of its signals, from the data directory.
fn signals(dir: &TempDir) -> BTreeMap<(String, u32), Vec<i64>> {
    let (journal, restored) = SqliteJournal::open(&dir.0.join("data")).expect("data dir opens");
    journal.close(Duration::from_secs(5)).unwrap();
    let mut out: BTreeMap<(String, u32), Vec<i64>> = BTreeMap::new();
    for (topic, partitions) in &restored.topics {
        if topic != "paper.signals.raw" {
            continue;
        }
        for r in partitions.iter().flat_map(|(_, records)| records) {
            let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
            let EventData::TradingSignal(s) = &env.data else {
                panic!("not a signal on paper.signals.raw: {env:?}");
            };
            out.entry((s.strategy_id.as_str().to_owned(), s.instrument_token.0))
                .or_default()
                .push(s.timestamp.unix_millis());
        }
    }
    out
}

#[test]
fn a_bad_reload_is_refused_by_key_the_old_set_trades_on_and_a_good_one_changes_signals_from_the_next_tick()
 {
    let dir = TempDir::new("reload");
    let config = dir.0.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{HEAD}{}",
            strategies("mom", "lookback = 3, threshold = \"0.004\", quantity = 5")
        ),
    )
    .unwrap();
    let ticks = write_ticks(&dir.0, 900);
    // 20 seconds of event time per second: 900 ticks an instrument last 45 s.
    let (d, log) = spawn(
        &dir,
        &config,
        &[
            ("ALPHA_PANDA__FEED__REPLAY", ticks.display().to_string()),
            ("ALPHA_PANDA__FEED__SPEED", "20".to_owned()),
        ],
    );
    wait_healthy(&d);
    std::thread::sleep(Duration::from_secs(4));

    // A bad parameter: refused, naming the key; the running set stays.
    std::fs::write(
        &config,
        format!("{HEAD}{}", strategies("mom_new", "lookback = 0")),
    )
    .unwrap();
    let (status, body) = request(&d, "POST", "/admin/strategies/reload").expect("reload answers");
    let bad_at = Instant::now();
    assert_eq!(status, 422, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("strategies[0].params.lookback"), "{body}");

    // A good set: accepted as generation 1.
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(
        &config,
        format!(
            "{HEAD}{}",
            strategies(
                "mom_new",
                "lookback = 2, threshold = \"0.001\", quantity = 2"
            )
        ),
    )
    .unwrap();
    let (status, body) = request(&d, "POST", "/admin/strategies/reload").expect("reload answers");
    let good_after_bad = bad_at.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"]["generation"], 1, "{body}");
    assert_eq!(
        body["reloaded"]["strategies"],
        serde_json::json!(["mom_new"])
    );

    // SIGHUP with a bad file again: refused, generation 1 stays.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(
        &config,
        format!("{HEAD}{}", strategies("mom_hup", "threshold = \"-1\"")),
    )
    .unwrap();
    signal(&d, "-HUP");
    std::thread::sleep(Duration::from_secs(3));
    stop(d);

    let by = signals(&dir);
    for instrument in [738561u32, 408065] {
        let old = by
            .get(&("mom".to_owned(), instrument))
            .cloned()
            .unwrap_or_default();
        let new = by
            .get(&("mom_new".to_owned(), instrument))
            .cloned()
            .unwrap_or_default();
        assert!(
            !old.is_empty() && !new.is_empty(),
            "both sets signalled on {instrument}: {by:?}"
        );
        let first_new = new.iter().min().copied().unwrap();
        let last_old = old.iter().max().copied().unwrap();
        assert!(
            last_old < first_new,
            "{instrument}: an old signal at {last_old} after the first new one at {first_new}"
        );
        // The old set kept trading after the refusal: it signalled in the event time
        // replayed between the bad reload and the good one (less 2 s of slack each side).
        let replayed_ms = (good_after_bad.as_millis() as i64 - 4_000) * 20;
        assert!(
            old.iter().any(|t| *t > first_new - replayed_ms),
            "{instrument}: no old signal after the refused reload (window {replayed_ms} ms before {first_new}): {old:?}"
        );
    }
    assert!(
        by.keys().all(|(s, _)| s != "mom_hup"),
        "the refused SIGHUP set never ran"
    );

    let (admin, _) = alpha_panda_db::audit::read_sqlite(
        &dir.0.join("data"),
        &alpha_panda_db::Layout::default(),
        &alpha_panda_core::BrokerName::paper(),
    )
    .expect("the audit is readable");
    let reloads: Vec<_> = admin
        .iter()
        .filter(|r| r.action == "POST /admin/strategies/reload" || r.action == "SIGHUP")
        .collect();
    assert_eq!(
        reloads.len(),
        3,
        "{admin:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        reloads[0].outcome.starts_with("422")
            && reloads[0].outcome.contains("strategies[0].params.lookback"),
        "{:?}",
        reloads[0]
    );
    assert!(
        reloads[0].actor.starts_with("token:") && reloads[0].remote_addr.starts_with("127.0.0.1:"),
        "{:?}",
        reloads[0]
    );
    assert!(reloads[1].outcome.starts_with("200"), "{:?}", reloads[1]);
    assert_eq!(
        (reloads[2].action.as_str(), reloads[2].actor.as_str()),
        ("SIGHUP", "signal")
    );
    assert!(
        reloads[2].outcome.starts_with("422")
            && reloads[2]
                .outcome
                .contains("strategies[0].params.threshold"),
        "{:?}",
        reloads[2]
    );
}

#[test]
fn a_second_daemon_on_the_same_data_directory_is_refused_naming_it_and_the_first_pid() {
    let dir = TempDir::new("lock");
    let config = dir.0.join("config.toml");
    std::fs::write(
        &config,
        format!("{HEAD}{}", strategies("mom", "lookback = 3")),
    )
    .unwrap();
    let none = [("ALPHA_PANDA__FEED", "none".to_owned())];
    let (first, _) = spawn(&dir, &config, &none);
    wait_healthy(&first);
    let (mut second, log) = spawn(&dir, &config, &none);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the second daemon kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    let data = dir.0.join("data").display().to_string();
    assert!(
        err.contains(&data) && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    stop(first);
}
