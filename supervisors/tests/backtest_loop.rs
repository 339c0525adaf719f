//! The backtest's event-time loop against the daemon's stages on the in-process transport:
//! on random tick streams and configurations, the same fills (ids included) and the same
//! summary figures. And the command: byte-identical outputs for two runs of one file, bad
//! rows named by line and column (or skipped and counted), a sweep's rows best first.

use std::path::PathBuf;
use std::process::{Command, Output};

use alpha_panda_config::Settings;
use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{Decimal, InstrumentToken, Price, Timestamp};
use alpha_panda_supervisors::backtest::input::TickRow;
use alpha_panda_supervisors::backtest::{inprocess, run_loop};
use proptest::prelude::*;

/// 2024-01-15 09:30 IST.
const START_MS: i64 = 1_705_291_200_000;

/// Settings as `--config` loads them: defaults, then the file.
fn settings(toml_text: &str) -> Settings {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "ap-bt-config-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, toml_text).unwrap();
    let s = alpha_panda_config::load(Some(&path), std::iter::empty()).unwrap();
    let _ = std::fs::remove_file(&path);
    s
}

/// A strategy table of one kind with small windows, so short streams trade.
fn strategy(i: usize, kind: u8, a: usize, limit: bool, instruments: &str) -> String {
    let (kind, params) = match kind % 4 {
        0 => (
            "momentum",
            format!(
                "{{ lookback = {}, threshold = \"0.001\", quantity = 5 }}",
                a.max(1)
            ),
        ),
        1 => (
            "sma_crossover",
            format!(
                "{{ fast = {}, slow = {}, quantity = 3 }}",
                a.max(1),
                a.max(1) + 3
            ),
        ),
        2 => (
            "ema_crossover",
            format!(
                "{{ fast = {}, slow = {}, quantity = 7 }}",
                a.max(1),
                a.max(1) * 2 + 1
            ),
        ),
        _ => (
            "rsi",
            format!(
                "{{ period = {}, oversold = \"40\", overbought = \"60\", quantity = 2 }}",
                a.max(2)
            ),
        ),
    };
    let order = if limit {
        "order_type = \"LIMIT\"\nlimit_offset_bps = \"5\"\n"
    } else {
        ""
    };
    format!(
        "[[strategies]]\nid = \"s{i}\"\nkind = \"{kind}\"\ninstruments = {instruments}\nparams = {params}\n{order}\n"
    )
}

fn config(strategies: &[(u8, usize, bool, bool)], slippage_bps: u32) -> Settings {
    let mut text = String::from("active_brokers = [\"paper\"]\n\n");
    for (i, (kind, a, limit, both)) in strategies.iter().enumerate() {
        let instruments = if *both { "[1, 2]" } else { "[1]" };
        text += &strategy(i, *kind, *a, *limit, instruments);
    }
    text += &format!(
        "[brokers.paper.fill_model]\nslippage_bps = \"{slippage_bps}\"\nstarting_cash = \"1000000000\"\n\n[risk.paper]\nmax_orders_per_day = 1000000\nmax_orders_per_second = 1000000\nmax_gross_exposure = \"1000000000\"\nmax_order_notional = \"1000000000\"\nmax_daily_loss = \"1000000000\"\n"
    );
    settings(&text)
}

fn ticks(steps: &[(bool, i8, u16)]) -> Vec<TickRow> {
    let mut prices = [10_000i64, 20_000i64];
    let mut at = START_MS;
    steps
        .iter()
        .map(|(second, step, gap)| {
            let k = usize::from(*second);
            prices[k] = (prices[k] + i64::from(*step)).max(100);
            at += i64::from(*gap);
            TickRow {
                instrument_token: InstrumentToken(k as u32 + 1),
                timestamp: Timestamp::from_unix_millis(at).unwrap(),
                last_price: Price::new(Decimal::new(prices[k], 2)).unwrap(),
                volume: None,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The loop and the actors on the in-process transport agree on every fill (ids, prices,
    /// fees, times) and every summary figure.
    #[test]
    fn the_event_loop_gives_the_fills_and_summaries_of_the_in_process_pipeline(
        strategies in proptest::collection::vec((0u8..4, 1usize..6, any::<bool>(), any::<bool>()), 1..4),
        slippage in 0u32..20,
        steps in proptest::collection::vec((any::<bool>(), -40i8..=40, 0u16..1500), 1..250),
    ) {
        let s = config(&strategies, slippage);
        let rows = ticks(&steps);
        let looped = run_loop(&s, rows.iter().copied()).unwrap();
        let piped = inprocess::run_in_process(
            s.clone(),
            rows.iter().map(|r| r.to_tick()).collect::<Vec<MarketTick>>(),
        )
        .unwrap();
        prop_assert_eq!(looped.ticks, piped.ticks);
        prop_assert_eq!(&looped.fills, &piped.fills);
        prop_assert_eq!(&looped.summaries, &piped.summaries);
    }
}

/// The comparison above on a fixed stream that trades: not vacuous.
#[test]
fn on_a_stream_that_trades_the_loop_and_the_pipeline_give_the_same_fills() {
    let s = config(
        &[
            (0, 2, false, true),
            (2, 3, true, true),
            (1, 2, false, false),
        ],
        5,
    );
    let steps: Vec<(bool, i8, u16)> = (0..600)
        .map(|i: i32| (i % 3 == 0, (((i * 37) % 81) - 40) as i8, 250))
        .collect();
    let rows = ticks(&steps);
    let looped = run_loop(&s, rows.iter().copied()).unwrap();
    let piped =
        inprocess::run_in_process(s.clone(), rows.iter().map(|r| r.to_tick()).collect()).unwrap();
    assert!(looped.fills.len() > 20, "{} fills", looped.fills.len());
    assert_eq!(looped.fills, piped.fills);
    assert_eq!(looped.summaries, piped.summaries);
}

fn alpha_panda() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alpha-panda"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("alpha-panda runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ap-bt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` ticks of two instruments in the reference file's shape, with `bad` at row `bad_at`.
fn tick_file(dir: &std::path::Path, n: usize, bad_at: Option<(usize, &str)>) -> PathBuf {
    use std::io::Write;
    let p = dir.join("ticks.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    writeln!(f, "instrument_token,timestamp,last_price").unwrap();
    let mut prices = [250_000i64, 380_000];
    let mut seed = 7u64;
    for i in 0..n {
        if let Some((at, row)) = bad_at
            && at == i
        {
            writeln!(f, "{row}").unwrap();
            continue;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = i % 2;
        prices[k] = (prices[k] + (seed >> 33) as i64 % 11 - 5).max(100);
        let ts = Timestamp::from_unix_millis(1_767_585_000_000 + 250 * i as i64).unwrap();
        writeln!(
            f,
            "{},{ts},{}.{:02}",
            [738561, 2953217][k],
            prices[k] / 100,
            prices[k] % 100
        )
        .unwrap();
    }
    p
}

const EMA_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/ema.toml");

#[test]
fn two_backtests_of_one_file_write_byte_identical_fills_and_summaries() {
    let dir = scratch("twice");
    let ticks = tick_file(&dir, 20_000, None);
    let mut outputs = Vec::new();
    for k in 0..2 {
        let out = dir.join(format!("out{k}"));
        let o = run(alpha_panda()
            .args(["backtest", "--config", EMA_CONFIG, "--ticks"])
            .arg(&ticks)
            .arg("--out")
            .arg(&out));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        outputs.push((
            std::fs::read(out.join("fills.jsonl")).unwrap(),
            std::fs::read(out.join("summary.json")).unwrap(),
        ));
    }
    assert!(
        outputs[0].0.len() > 1000,
        "the file makes the strategy trade"
    );
    assert_eq!(outputs[0], outputs[1]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_row_in_the_middle_of_a_1m_file_is_named_or_skipped_and_counted() {
    let dir = scratch("bad");
    let ticks = tick_file(
        &dir,
        1_000_000,
        Some((500_000, "738561,2026-01-05T12:30:00.000Z,12.3.4")),
    );
    let o = run(alpha_panda()
        .args(["backtest", "--config", EMA_CONFIG, "--ticks"])
        .arg(&ticks)
        .arg("--out")
        .arg(dir.join("out")));
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    // The header is line 1, so row 500 000 (0-based) is line 500 002.
    assert!(
        e.contains("ticks.csv: line 500002, column 3 (last_price)") && e.contains("12.3.4"),
        "{e}"
    );
    let o = run(alpha_panda()
        .args([
            "backtest",
            "--skip-bad-rows",
            "--config",
            EMA_CONFIG,
            "--ticks",
        ])
        .arg(&ticks)
        .arg("--out")
        .arg(dir.join("out")));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("999999 ticks") && out.contains("1 bad rows skipped"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sweep_prints_one_row_per_combination_best_first_and_writes_sweep_json() {
    let dir = scratch("sweep");
    let ticks = tick_file(&dir, 20_000, None);
    let o = run(alpha_panda()
        .args(["backtest", "--config", EMA_CONFIG, "--ticks"])
        .arg(&ticks)
        .arg("--out")
        .arg(dir.join("out"))
        .args([
            "--sweep",
            "strategies.0.params.fast=5,10,20",
            "--sweep",
            "strategies.0.params.slow=30,50",
        ]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let sweep: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/sweep.json")).unwrap())
            .unwrap();
    assert_eq!(sweep.len(), 6);
    let pnl: Vec<Decimal> = sweep
        .iter()
        .map(|r| r["total_pnl"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(pnl.windows(2).all(|w| w[0] >= w[1]), "best first: {pnl:?}");
    // A run of the sweep equals a sweep of that one combination (a single loop).
    let best = &sweep[0];
    let (fast, slow) = (
        best["params"]["strategies.0.params.fast"].as_str().unwrap(),
        best["params"]["strategies.0.params.slow"].as_str().unwrap(),
    );
    let o = run(alpha_panda()
        .args(["backtest", "--config", EMA_CONFIG, "--ticks"])
        .arg(&ticks)
        .arg("--out")
        .arg(dir.join("one"))
        .args(["--sweep", &format!("strategies.0.params.fast={fast}")])
        .args(["--sweep", &format!("strategies.0.params.slow={slow}")]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let one: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("one/sweep.json")).unwrap())
            .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["summaries"], best["summaries"]);
    let printed = text(&o.stdout);
    assert!(
        printed.contains(best["total_pnl"].as_str().unwrap()),
        "{printed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
