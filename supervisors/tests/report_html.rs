//! `report.html` in headless Chromium (Debian's `chromium`, `CHROMIUM_BIN` from
//! scripts/services.sh): the page loads offline, its charts are SVG paths with points, and
//! its console stays empty. A screenshot goes to `target/screenshots/report.png` for a
//! person to look at.
//!
//! Chromium's `--enable-logging=stderr` writes every console message as a `:CONSOLE` line;
//! a control page with a deliberate error shows that the check sees them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> String {
    std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| {
        panic!("CHROMIUM_BIN is not set: run the tests under scripts/services.sh, which installs Debian's chromium")
    })
}

/// Runs headless Chromium on `page` with `args`; returns (stdout, console lines).
fn headless(page: &Path, args: &[&str]) -> (String, Vec<String>) {
    let profile =
        std::env::temp_dir().join(format!("ap-chromium-{}-{}", std::process::id(), args.len()));
    let _ = std::fs::remove_dir_all(&profile);
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ap-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_report_renders_its_charts_in_headless_chromium_without_console_errors() {
    let dir = scratch();
    // The check sees console errors: a control page with one.
    let control = dir.join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><script>console.error('deliberate')</script></body></html>",
    )
    .unwrap();
    let (_, console) = headless(&control, &["--dump-dom"]);
    assert!(
        console.iter().any(|l| l.contains("deliberate")),
        "{console:?}"
    );

    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden");
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_alpha-panda"))
        .env_clear()
        .args(["backtest", "--config"])
        .arg(format!("{fixtures}/config.toml"))
        .arg("--ticks")
        .arg(format!("{fixtures}/ticks.csv"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let page = out.join("report.html");
    let (dom, console) = headless(&page, &["--dump-dom"]);
    assert!(console.is_empty(), "console: {console:?}");
    for strategy in ["mom", "mom_limit"] {
        assert!(
            dom.contains(&format!("<h2>{strategy} on paper</h2>")),
            "{dom}"
        );
    }
    // Two strategies, each an equity and a drawdown chart whose path has its points.
    for class in ["equity", "drawdown"] {
        let paths: Vec<&str> = dom
            .split(&format!("<path class=\"{class}\" d=\""))
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default())
            .collect();
        assert_eq!(paths.len(), 2, "{class}: {dom}");
        for d in paths {
            assert!(d.starts_with('M') && d.matches(" L").count() >= 1, "{d}");
        }
    }
    assert!(
        dom.contains("-12.10"),
        "the summary figures are on the page"
    );

    let shots = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/screenshots"
    ));
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let (_, console) = headless(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,1400",
            "--hide-scrollbars",
        ],
    );
    assert!(console.is_empty(), "console: {console:?}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
