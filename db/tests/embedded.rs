//! The embedded default's data directory (`alpha_panda_db::embedded`): what is journalled
//! comes back after the file is closed and opened again, exactly as the journal's own fold
//! (`Restored::apply`) says, with every kind of op and a `record` call's ops kept together.

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::delivery::inprocess::StoredRecord;
use alpha_panda_actors::journal::{Journal, JournalOp, VecJournal, unix_ms_now};
use alpha_panda_db::embedded::SqliteJournal;

/// Removed when the test ends, also on failure.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    TempDir(std::env::temp_dir().join(format!("ap-datadir-{}", uuid::Uuid::now_v7().simple())))
}

fn ops(round: i64) -> Vec<Vec<JournalOp>> {
    let rec = |n: i64| StoredRecord {
        key: (n % 2 == 0).then(|| n.to_be_bytes().to_vec()),
        value: Some(format!("{{\"n\":{n}}}").into_bytes()),
        headers: vec![
            ("origin".into(), Some(vec![1, 2, 3])),
            ("empty".into(), None),
        ],
    };
    let base = round * 3;
    vec![
        vec![JournalOp::Topic {
            topic: "market.ticks".into(),
            partitions: 2,
        }],
        (0..3)
            .map(|i| JournalOp::Append {
                topic: "market.ticks".into(),
                partition: 1,
                offset: base + i,
                record: rec(base + i),
            })
            .collect(),
        // Every group read past `base`: the records below it go.
        vec![JournalOp::Trimmed {
            topic: "market.ticks".into(),
            partition: 1,
            below: base + 1,
        }],
        vec![
            JournalOp::Commit {
                group: "g".into(),
                topic: "market.ticks".into(),
                partition: 1,
                next: base + 1,
            },
            JournalOp::Commit {
                group: "g".into(),
                topic: "market.ticks".into(),
                partition: 1,
                next: base + 3,
            },
        ],
        vec![
            JournalOp::Mark {
                key: format!("dedup:{round}"),
                expires_unix_ms: unix_ms_now() + 60_000,
            },
            JournalOp::Value {
                key: "checkpoint".into(),
                value: format!("at {round}"),
            },
            // A checkpoint part per round; the previous round's goes.
            JournalOp::Value {
                key: format!("checkpoint:parts:{round}"),
                value: format!("[{round}]"),
            },
            JournalOp::Removed {
                key: format!("checkpoint:parts:{}", round - 1),
            },
            JournalOp::Watermark {
                key: "wm".into(),
                source: "strategy".into(),
                position: (base, 2),
            },
        ],
    ]
}

#[test]
fn what_was_journalled_comes_back_after_the_file_is_opened_again() {
    let dir = temp_dir();
    let expected = VecJournal::default();
    for round in 0..3 {
        let (journal, restored) = SqliteJournal::open(&dir.0).expect("opens");
        assert_eq!(
            restored,
            expected.restored(),
            "round {round}: what came back"
        );
        for call in ops(round) {
            expected.record(call.clone());
            journal.record(call);
        }
        journal.close(Duration::from_secs(10)).expect("closes");
    }
    let (journal, restored) = SqliteJournal::open(&dir.0).expect("opens");
    journal.close(Duration::from_secs(10)).expect("closes");
    let want = expected.restored();
    assert_eq!(restored, want);
    let (first, records) = &want.topics[0].1[1];
    assert_eq!(
        (*first, records.len()),
        (7, 2),
        "three rounds of three records, those below the last trim gone"
    );
    assert_eq!(
        want.committed,
        vec![("g".into(), "market.ticks".into(), 1, 9)]
    );
    assert_eq!(want.marks.len(), 3);
    let mut values = want.values.clone();
    values.sort();
    assert_eq!(
        values,
        vec![
            ("checkpoint".to_owned(), "at 2".to_owned()),
            ("checkpoint:parts:2".to_owned(), "[2]".to_owned())
        ],
        "a removed value is gone from the file"
    );
}

#[test]
fn expired_marks_are_dropped_when_the_file_is_opened() {
    let dir = temp_dir();
    let (journal, _) = SqliteJournal::open(&dir.0).expect("opens");
    journal.record(vec![
        JournalOp::Mark {
            key: "gone".into(),
            expires_unix_ms: unix_ms_now() - 1,
        },
        JournalOp::Mark {
            key: "kept".into(),
            expires_unix_ms: unix_ms_now() + 60_000,
        },
    ]);
    journal.close(Duration::from_secs(10)).expect("closes");
    let (journal, restored) = SqliteJournal::open(&dir.0).expect("opens");
    journal.close(Duration::from_secs(10)).expect("closes");
    let keys: Vec<&str> = restored.marks.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["kept"]);
}

#[test]
fn a_damaged_log_is_refused_naming_the_file_and_the_record() {
    let dir = temp_dir();
    let (journal, _) = SqliteJournal::open(&dir.0).expect("opens");
    let mut calls = ops(0);
    // Offset 5 after 0..3: a gap no bus would leave.
    calls.push(vec![JournalOp::Append {
        topic: "market.ticks".into(),
        partition: 1,
        offset: 5,
        record: StoredRecord {
            key: None,
            value: None,
            headers: vec![],
        },
    }]);
    for c in calls {
        journal.record(c);
    }
    journal.close(Duration::from_secs(10)).expect("closes");
    let err = SqliteJournal::open(&dir.0)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("transport.sqlite"), "{err}");
    assert!(err.contains("market.ticks/1/5"), "{err}");
}

#[derive(diesel::QueryableByName)]
struct Kv {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

#[test]
fn after_flush_what_was_recorded_is_in_the_file() {
    use diesel::{Connection, RunQueryDsl};
    let dir = temp_dir();
    let (journal, _) = SqliteJournal::open(&dir.0).expect("opens");
    let shared: Arc<dyn Journal> = journal.clone();
    shared.record(vec![JournalOp::Value {
        key: "k".into(),
        value: "v".into(),
    }]);
    journal.flush(Duration::from_secs(10)).expect("flushed");
    // Another connection, as after a SIGKILL: the row is committed.
    let path = dir.0.join(alpha_panda_db::embedded::TRANSPORT_FILE);
    let mut c = diesel::SqliteConnection::establish(&path.display().to_string()).expect("open");
    let rows: Vec<Kv> = diesel::sql_query("SELECT value FROM kv WHERE key = 'k'")
        .load(&mut c)
        .expect("reads");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value, "v");
    journal.close(Duration::from_secs(10)).expect("closes");
}
