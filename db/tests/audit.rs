//! The audit writer (`alpha_panda_db::audit`): admin calls and trading-state changes handed
//! to its channel become rows of each broker's `admin_audit` and `trading_state_changes`,
//! on the real PostgreSQL of `scripts/services.sh` (ALPHA_PANDA_TEST_DATABASE; schemas and
//! roles of the test's own, dropped at the end) and in a SQLite directory.

use std::time::{Duration, Instant, SystemTime};

use alpha_panda_actors::audit::{AdminCall, AuditEvent, AuditSink, StateChange};
use alpha_panda_core::BrokerName;
use alpha_panda_db::audit::{AdminRow, AuditTarget, AuditWriter, StateRow};
use alpha_panda_db::{Layout, Target, migrate};
use alpha_panda_tests::{Namespace, database_url};
use diesel::{Connection, PgConnection, RunQueryDsl};

fn brokers() -> Vec<BrokerName> {
    vec![BrokerName::paper(), BrokerName::zerodha()]
}

fn events() -> Vec<AuditEvent> {
    let call = |broker: Option<&str>, what: &str, outcome: &str| {
        AuditEvent::Admin(AdminCall {
            who: "token:0123456789ab".into(),
            from: "127.0.0.1:40000".into(),
            what: what.into(),
            broker: broker.map(str::to_owned),
            summary: "{\"broker\":\"zerodha\",\"state\":\"HALTED\"}".into(),
            outcome: outcome.into(),
            at: SystemTime::now(),
        })
    };
    vec![
        call(Some("zerodha"), "POST /admin/trading-state", "200"),
        call(
            None,
            "POST /admin/strategies/reload",
            "422 refused; `strategies[0].params.lookback` = 0",
        ),
        AuditEvent::TradingState(StateChange {
            broker: "zerodha".into(),
            strategy: None,
            state: "HALTED".into(),
            changed_by: "token:0123456789ab".into(),
            reason: "admin API".into(),
            at: SystemTime::now(),
        }),
        AuditEvent::TradingState(StateChange {
            broker: "paper".into(),
            strategy: Some("mom".into()),
            state: "REDUCING".into(),
            changed_by: "supervision".into(),
            reason: "risk keeps failing".into(),
            at: SystemTime::now(),
        }),
    ]
}

/// Sends the events and waits until `read` shows them all (at most 20 s).
fn write_and_read(
    target: AuditTarget,
    layout: &Layout,
    read: impl Fn(&BrokerName) -> (Vec<AdminRow>, Vec<StateRow>),
) -> Vec<(Vec<AdminRow>, Vec<StateRow>)> {
    let (sink, rx) = AuditSink::channel(16);
    let writer = AuditWriter::spawn(target, layout.clone(), brokers(), rx).expect("writer starts");
    for e in events() {
        sink.record(e);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<_> = brokers().iter().map(&read).collect();
        let n: usize = rows.iter().map(|(a, s)| a.len() + s.len()).sum();
        if n >= 5 || Instant::now() > deadline {
            writer.stop();
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check(rows: &[(Vec<AdminRow>, Vec<StateRow>)]) {
    let (paper, zerodha) = (&rows[0], &rows[1]);
    let actions = |r: &[AdminRow]| r.iter().map(|a| a.action.clone()).collect::<Vec<_>>();
    assert_eq!(actions(&paper.0), vec!["POST /admin/strategies/reload"]);
    assert_eq!(
        actions(&zerodha.0),
        vec!["POST /admin/trading-state", "POST /admin/strategies/reload"]
    );
    let reload = &zerodha.0[1];
    assert_eq!(
        (
            reload.actor.as_str(),
            reload.remote_addr.as_str(),
            reload.target.as_str()
        ),
        ("token:0123456789ab", "127.0.0.1:40000", "*")
    );
    assert!(
        reload.outcome.contains("strategies[0].params.lookback"),
        "{reload:?}"
    );
    assert_eq!(zerodha.0[0].target, "zerodha");
    assert!(zerodha.0[0].detail.contains("HALTED"));
    assert_eq!(
        paper.1,
        vec![StateRow {
            strategy_id: Some("mom".into()),
            state: "REDUCING".into(),
            changed_by: "supervision".into(),
            reason: "risk keeps failing".into(),
        }]
    );
    assert_eq!(zerodha.1.len(), 1);
    assert_eq!(
        (
            zerodha.1[0].strategy_id.as_deref(),
            zerodha.1[0].state.as_str()
        ),
        (None, "HALTED")
    );
}

/// Schemas and roles of one test, dropped at the end.
struct PgScratch(Layout);

impl Drop for PgScratch {
    fn drop(&mut self) {
        let Ok(mut c) = PgConnection::establish(&database_url()) else {
            return;
        };
        let mut schemas = vec![self.0.shared_schema()];
        schemas.extend(brokers().iter().map(|b| self.0.broker_schema(b)));
        for s in schemas {
            let _ =
                diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE")).execute(&mut c);
        }
        for b in brokers() {
            let r = self.0.writer_role(&b);
            let _ = diesel::sql_query(format!("DROP OWNED BY \"{r}\"")).execute(&mut c);
            let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{r}\"")).execute(&mut c);
        }
    }
}

#[test]
fn audit_rows_land_in_each_broker_s_postgresql_schema_as_its_writer_role() {
    let ns = Namespace::new();
    let scratch = PgScratch(Layout::new(format!("t{}_", ns.id)));
    let url = database_url();
    let target = Target::parse(&url).expect("test database URL");
    migrate::migrate(&target, &scratch.0, &brokers()).expect("migrate");
    let rows = write_and_read(
        AuditTarget::Postgres { url: url.clone() },
        &scratch.0,
        |b| alpha_panda_db::audit::read_postgres(&url, &scratch.0, b).unwrap_or_default(),
    );
    check(&rows);
}

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn audit_rows_land_in_each_broker_s_sqlite_file() {
    let dir = Dir(std::env::temp_dir().join(format!("ap-audit-{}", uuid::Uuid::now_v7().simple())));
    let layout = Layout::default();
    migrate::migrate(&Target::Sqlite { dir: dir.0.clone() }, &layout, &brokers()).expect("migrate");
    let rows = write_and_read(AuditTarget::Sqlite { dir: dir.0.clone() }, &layout, |b| {
        alpha_panda_db::audit::read_sqlite(&dir.0, &layout, b).unwrap_or_default()
    });
    check(&rows);
}
