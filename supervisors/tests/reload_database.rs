//! Strategy reload from the database and the audit in PostgreSQL (issue 12), on the real
//! `alpha-panda run` binary with `database.strategies_from_database = true` and the
//! PostgreSQL of `scripts/services.sh` (ALPHA_PANDA_TEST_DATABASE; schemas and roles of the
//! test's own, dropped at the end). The daemon runs `--ephemeral` on the in-process
//! transport: its audit goes to PostgreSQL because `database.url` is set.

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use alpha_panda_core::BrokerName;
use alpha_panda_db::Layout;
use alpha_panda_tests::ops::{free_port, http};
use alpha_panda_tests::{Namespace, database_url};
use diesel::{Connection, PgConnection, RunQueryDsl};

const TOKEN: &str = "reload-database-admin-token-0123456789";

/// Drops the test's schemas and roles, and its files, at the end.
struct Scratch {
    prefix: String,
    dir: std::path::PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let Ok(mut c) = PgConnection::establish(&database_url()) else {
            return;
        };
        for s in ["shared", "paper"] {
            let _ = diesel::sql_query(format!(
                "DROP SCHEMA IF EXISTS \"{}{s}\" CASCADE",
                self.prefix
            ))
            .execute(&mut c);
        }
        let r = format!("{}paper_writer", self.prefix);
        let _ = diesel::sql_query(format!("DROP OWNED BY \"{r}\"")).execute(&mut c);
        let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{r}\"")).execute(&mut c);
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command(prefix: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alpha-panda"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    cmd.env("ACTIVE_BROKERS", "paper")
        .env("ALPHA_PANDA__DATABASE__URL", database_url())
        .env("ALPHA_PANDA__DATABASE__SCHEMA_PREFIX", prefix);
    cmd
}

fn cli(prefix: &str, args: &[&str]) -> Output {
    command(prefix)
        .args(args)
        .output()
        .expect("alpha-panda runs")
}

fn import(s: &Scratch, name: &str, text: &str) {
    let file = s.dir.join(name);
    std::fs::write(&file, text).expect("write");
    let out = cli(
        &s.prefix,
        &["strategies", "import", file.to_str().expect("path")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reload_from_the_database_is_refused_by_key_then_applied_and_every_admin_call_is_audited_in_postgresql()
 {
    let ns = Namespace::new();
    let s = Scratch {
        prefix: format!("t{}_", ns.id),
        dir: std::env::temp_dir().join(format!("ap-reload-db-{}", ns.id)),
    };
    std::fs::create_dir_all(&s.dir).expect("temp dir");
    let out = cli(&s.prefix, &["db", "migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    import(
        &s,
        "one.toml",
        "[[strategies]]\nid = \"mom\"\nkind = \"momentum\"\ninstruments = [738561]\n\
         params = { lookback = 2, threshold = \"0.001\", quantity = 1 }\n",
    );

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let _daemon = Daemon(
        command(&s.prefix)
            .args(["run", "--ephemeral"])
            .env("ALPHA_PANDA__DATABASE__STRATEGIES_FROM_DATABASE", "true")
            .env("ALPHA_PANDA__HTTP__LISTEN", addr.to_string())
            .env("ALPHA_PANDA__ADMIN__TOKEN", TOKEN)
            .env("ALPHA_PANDA__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("daemon starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A stored set that breaks a rule (written past `import`, as a person with SQL could).
    let mut c = PgConnection::establish(&database_url()).expect("connect");
    diesel::sql_query(format!(
        "UPDATE \"{}shared\".strategies SET definition = \
         jsonb_set(definition, '{{params,lookback}}', '0')",
        s.prefix
    ))
    .execute(&mut c)
    .expect("update");
    let (status, body) = http(addr, "POST", "/admin/strategies/reload", Some(TOKEN), None);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("strategies[0].params.lookback"), "{body}");

    import(
        &s,
        "two.toml",
        "[[strategies]]\nid = \"mom2\"\nkind = \"momentum\"\ninstruments = [738561]\n\
         params = { lookback = 3 }\n",
    );
    let (status, body) = http(addr, "POST", "/admin/strategies/reload", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"mom2\"") && body.contains("\"generation\":1"),
        "{body}"
    );

    // The new strategy's book is listed beside the one it replaced.
    let (status, body) = http(addr, "GET", "/portfolio/paper", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"mom2\"") && body.contains("\"mom\""),
        "{body}"
    );

    // The new strategy is known to the admin API at once; its state change is recorded.
    let (status, body) = http(
        addr,
        "POST",
        "/admin/trading-state",
        Some(TOKEN),
        Some(r#"{"broker":"paper","strategy":"mom2","state":"REDUCING"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        addr,
        "POST",
        "/admin/strategies/reload",
        Some("wrong-token"),
        None,
    );
    assert_eq!(status, 401);

    let layout = Layout::new(s.prefix.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let (admin, states) = loop {
        let (admin, states) =
            alpha_panda_db::audit::read_postgres(&database_url(), &layout, &BrokerName::paper())
                .expect("the audit is readable as the writer role");
        if admin.len() >= 4 && !states.is_empty() {
            break (admin, states);
        }
        assert!(
            Instant::now() < deadline,
            "audit rows missing: {admin:?} {states:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let calls: Vec<(&str, &str)> = admin
        .iter()
        .map(|r| (r.action.as_str(), r.outcome.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("POST /admin/strategies/reload", "422"),
            ("POST /admin/strategies/reload", "200"),
            ("POST /admin/trading-state", "200"),
            ("POST /admin/strategies/reload", "401"),
        ]
    );
    assert!(
        admin[0].outcome.contains("strategies[0].params.lookback"),
        "{:?}",
        admin[0]
    );
    assert!(admin[0].actor.starts_with("token:") && admin[0].remote_addr.starts_with("127.0.0.1:"));
    assert_ne!(
        admin[3].actor, admin[0].actor,
        "a wrong token has another fingerprint"
    );
    assert_eq!(admin[2].target, "paper");
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(
        (
            states[0].strategy_id.as_deref(),
            states[0].state.as_str(),
            states[0].changed_by.as_str()
        ),
        (Some("mom2"), "REDUCING", admin[0].actor.as_str())
    );
}
