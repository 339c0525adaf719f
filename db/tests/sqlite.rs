//! `db migrate` and `db status` on the bundled SQLite: a file per broker and one for the
//! shared tables in the directory of `sqlite://DIR`; a second migrate applies nothing.

use alpha_panda_core::BrokerName;
use alpha_panda_db::{Layout, Target, migrate};
use diesel::{Connection, RunQueryDsl, SqliteConnection};

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

fn tables(path: &std::path::Path) -> Vec<String> {
    let mut c = SqliteConnection::establish(&path.display().to_string()).expect("open");
    diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .load::<Name>(&mut c)
        .expect("tables")
        .into_iter()
        .map(|n| n.name)
        .collect()
}

#[test]
fn migrating_a_sqlite_directory_twice_applies_everything_once() {
    let dir = std::env::temp_dir().join(format!("ap-sqlite-{}", uuid::Uuid::now_v7().simple()));
    let target = Target::parse(&format!("sqlite://{}", dir.display())).expect("target");
    let layout = Layout::default();
    let brokers = vec![BrokerName::paper(), BrokerName::zerodha()];

    let pending = migrate::status(&target, &layout, &brokers).expect("status");
    assert!(
        pending
            .iter()
            .all(|r| r.present.is_empty() && !r.pending.is_empty())
    );
    assert!(!dir.exists(), "status created files");

    let first = migrate::migrate(&target, &layout, &brokers).expect("migrate");
    let applied: Vec<usize> = first.iter().map(|r| r.applied.len()).collect();
    assert_eq!(applied, vec![2, 1, 1], "{first:?}");
    let paper = tables(&dir.join("paper.sqlite"));
    for t in [
        "orders",
        "fills",
        "pnl_snapshots",
        "signal_rejections",
        "admin_audit",
        "recorder_offsets",
    ] {
        assert!(paper.contains(&t.to_owned()), "{t} missing from {paper:?}");
    }
    assert!(tables(&dir.join("shared.sqlite")).contains(&"strategies".to_owned()));

    let second = migrate::migrate(&target, &layout, &brokers).expect("migrate again");
    assert!(second.iter().all(|r| r.applied.is_empty()), "{second:?}");
    assert_eq!(tables(&dir.join("paper.sqlite")), paper);
    let status = migrate::status(&target, &layout, &brokers).expect("status");
    assert!(status.iter().all(|r| r.pending.is_empty()), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
