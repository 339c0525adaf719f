//! The operator console in a real browser (issue 14): the embedded daemon, Debian's
//! headless Chromium driven through chromedriver (WebDriver, `fantoccini`).
//!
//! - the page asks for the token (reads need it when one is set) and shows the API's 401
//!   words for a wrong one;
//! - with the token it shows the three default strategies with positions;
//! - clicking "Pause paper" stops new orders (`alpha_panda_orders_total{status="placed"}`
//!   stops moving) and the page shows the pause; "Resume paper" restarts them;
//! - asking for HALTED opens a confirmation, and cancelling it changes nothing;
//! - no horizontal scrolling at 1280×800 nor at 390×844; no error in the browser console
//!   (apart from the 401s the wrong token provokes on purpose).
//!
//! Screenshots go to `target/screenshots/console-*.png` for a person to look at.
//! Needs `CHROMIUM_BIN` and `CHROMEDRIVER_BIN` (exported by `scripts/services.sh`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_tests::ops::{free_port, http};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const TOKEN: &str = "console-test-token-0123456789";

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn daemon(addr: SocketAddr) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_alpha-panda"))
            .args(["run", "--ephemeral"])
            .env("ALPHA_PANDA__HTTP__LISTEN", addr.to_string())
            .env("ALPHA_PANDA__ADMIN__TOKEN", TOKEN)
            // Lively ticks, so every strategy trades within seconds.
            .env("ALPHA_PANDA__SYNTHETIC__TICKS_PER_SECOND", "100")
            .env("ALPHA_PANDA__SYNTHETIC__VOLATILITY", "0.003")
            .env("ALPHA_PANDA__PORTFOLIO__SNAPSHOT_INTERVAL_SECS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the daemon starts"),
    )
}

fn chromedriver(addr: SocketAddr) -> Killed {
    let bin = std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "chromedriver".to_owned());
    Killed(
        Command::new(&bin)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} (run under scripts/services.sh, which installs chromium-driver): {e}")
            }),
    )
}

/// `alpha_panda_orders_total{broker="paper",status="placed"}`.
fn orders_placed(addr: SocketAddr) -> f64 {
    let (_, text) = http(addr, "GET", "/metrics", None, None);
    text.lines()
        .find(|l| {
            l.starts_with("alpha_panda_orders_total")
                && l.contains(r#"broker="paper""#)
                && l.contains(r#"status="placed""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .canonicalize()
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = screenshots().join(format!("console-{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// chromedriver's `POST /session/{id}/se/log {"type": "browser"}`: the browser console's
/// entries since the last call (the session asks for them with `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

async fn browser_log(c: &Client) -> Vec<Value> {
    let v = c.issue_cmd(BrowserLog).await.expect("the browser log");
    v.as_array().cloned().unwrap_or_default()
}

fn errors(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits until `probe` answers Some, polling the page.
async fn until<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The text of the first element matching `css`. The page's poll re-renders it every second,
/// so an element found just before a re-render is stale by the time its text is read: read
/// again (up to 2 s) rather than take that for an empty text.
async fn text_of(c: &Client, css: &str) -> String {
    for _ in 0..20 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::new()
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Clicks a button, finding it again if the page's poll re-rendered it between the find and
/// the click (a stale element).
async fn click_button(c: &Client, scope: &str, label: &str) {
    let xpath = format!("{scope}//button[normalize-space(.)='{label}']");
    let mut attempts = 0;
    loop {
        attempts += 1;
        let button = c
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?}: {e}"));
        match button.click().await {
            Ok(_) => return,
            Err(e) if attempts < 10 && e.to_string().contains("stale element") => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("clicking {label:?}: {e}"),
        }
    }
}

async fn enter_token(c: &Client, token: &str) {
    let input = c.find(Locator::Id("token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    c.find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// (document width, viewport width): equal when nothing scrolls sideways.
async fn widths(c: &Client) -> (u64, u64) {
    let v = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
}

#[test]
fn an_operator_sees_the_strategies_and_pauses_and_resumes_paper_from_the_console_in_chromium() {
    let site: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _daemon = daemon(site);
    wait_until_listening(site, "the daemon");
    assert_eq!(http(site, "GET", "/healthz", None, None).0, 200);
    let driver_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _driver = chromedriver(driver_addr);
    wait_until_listening(driver_addr, "chromedriver");
    let profile = std::env::temp_dir().join(format!("ap-console-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let chromium =
            std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{driver_addr}"))
            .await
            .expect("a Chromium session");
        c.set_window_size(1280, 800).await.unwrap();
        let base = format!("http://{site}/");
        c.goto(&base).await.unwrap();

        // Without a token, and with a wrong one, the page shows the API's 401.
        let shown = until("the 401 without a token", 20, || async {
            let m = text_of(&c, "#message").await;
            m.contains("401").then_some(m)
        })
        .await;
        assert!(shown.contains("missing or wrong bearer token"), "{shown}");
        enter_token(&c, "not-the-token-not-the-token").await;
        let shown = until("the 401 with a wrong token", 20, || async {
            let m = text_of(&c, "#message").await;
            (m.contains("401") && !m.contains("enter the admin token")).then_some(m)
        })
        .await;
        assert!(
            shown.contains("401 Unauthorized: missing or wrong bearer token"),
            "{shown}"
        );
        screenshot(&c, "wrong-token").await;

        // With the token: the three strategies of paper, each with positions.
        enter_token(&c, TOKEN).await;
        until("three strategies with positions on paper", 120, || async {
            let blocks = count(&c, "#broker-paper .strategy").await;
            let books = count(&c, "#broker-paper .strategy table.positions").await;
            (blocks == 3 && books == 3).then_some(())
        })
        .await;
        let names = text_of(&c, "#broker-paper").await;
        for id in ["momentum_1", "mean_reversion_1", "rsi_1"] {
            assert!(names.contains(id), "{id} missing from the page: {names}");
        }
        assert_eq!(
            text_of(&c, "#message").await,
            "",
            "no error once the token is right"
        );
        // Until now the page polled without or with a wrong token: Chromium logs each 401
        // it got, and nothing else may be logged. From here on, nothing at all.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for e in errors(&browser_log(&c).await) {
            assert!(
                e.contains("status of 401"),
                "only the provoked 401s may be logged: {e}"
            );
        }
        until("an equity curve", 30, || async {
            (count(&c, "#broker-paper svg.equity polyline").await > 0).then_some(())
        })
        .await;
        until("a fill listed", 30, || async {
            (count(&c, "#broker-paper table.fills tbody tr").await > 0).then_some(())
        })
        .await;
        let (doc, view) = widths(&c).await;
        assert!(doc <= view, "1280×800 scrolls sideways: {doc} > {view}");
        screenshot(&c, "1280x800").await;

        // Orders flow; pause paper from the page: they stop and the page shows the pause.
        let before = orders_placed(site);
        until("orders being placed", 60, || async {
            (orders_placed(site) > before).then_some(())
        })
        .await;
        click_button(&c, "//section[@id='broker-paper']", "Pause paper").await;
        until("the page to show paper paused", 20, || async {
            (count(&c, "#broker-paper [data-paused='all']").await == 1).then_some(())
        })
        .await;
        assert!(text_of(&c, "#message").await.contains("pause done"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let paused_at = orders_placed(site);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            orders_placed(site),
            paused_at,
            "no new orders while paper is paused"
        );
        screenshot(&c, "paused").await;

        // Resume from the page: orders flow again.
        click_button(&c, "//section[@id='broker-paper']", "Resume paper").await;
        until("the pause to go from the page", 20, || async {
            (count(&c, "#broker-paper [data-paused='all']").await == 0).then_some(())
        })
        .await;
        until("orders after resume", 60, || async {
            (orders_placed(site) > paused_at).then_some(())
        })
        .await;

        // HALTED asks first; cancelling changes nothing.
        click_button(&c, "//section[@id='broker-paper']", "Set HALTED").await;
        until("the confirmation", 10, || async {
            let open = c
                .execute("return document.getElementById('confirm').open;", vec![])
                .await
                .ok()?;
            (open == json!(true)).then_some(())
        })
        .await;
        c.find(Locator::Id("confirm-cancel"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            text_of(&c, "#broker-paper [data-trading-state]").await,
            "ACTIVE",
            "a cancelled halt changes nothing"
        );

        // A phone-sized window: nothing scrolls sideways.
        c.set_window_size(390, 844).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (doc, view) = widths(&c).await;
        assert!(
            doc <= view,
            "a narrow window scrolls sideways: {doc} > {view}"
        );
        screenshot(&c, "narrow").await;

        let errors = errors(&browser_log(&c).await);
        assert!(errors.is_empty(), "browser console errors: {errors:#?}");
        c.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("ap-console-chromium-{}", std::process::id())),
    );
}
