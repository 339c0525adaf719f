//! The embedded default's data directory (`alpha_panda_db::embedded`): what one tick costs
//! the journal as the embedded paper pipeline makes it — the tick appended to
//! `market.ticks`, the committed offsets of the four consumer groups that read it, three
//! dedup marks, and a portfolio checkpoint (a 2 KB value) — recorded for 1,000 ticks and
//! flushed into `transport.sqlite` (one or more transactions). No services; the file is in
//! a temporary directory removed at the end. Figures in docs/performance.md ("Data
//! directory").

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::delivery::inprocess::StoredRecord;
use alpha_panda_actors::journal::{Journal, JournalOp, unix_ms_now};
use alpha_panda_db::embedded::SqliteJournal;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TICKS: u64 = 1_000;

fn tick_ops(n: u64, checkpoint: &str) -> Vec<Vec<JournalOp>> {
    let value = format!(
        "{{\"id\":\"01a22b10-7db7-787d-8e53-{n:012x}\",\"type\":\"market_tick\",\"data\":{{\"instrument_token\":738561,\"last_price\":\"2450.05\",\"timestamp\":\"2026-11-02T03:45:00Z\"}}}}"
    );
    let mut calls = vec![vec![JournalOp::Append {
        topic: "market.ticks".into(),
        partition: (n % 10) as i32,
        offset: (n / 10) as i64,
        record: StoredRecord {
            key: Some(b"738561".to_vec()),
            value: Some(value.into_bytes()),
            headers: vec![],
        },
    }]];
    for group in ["strategy", "paper.trader", "paper.portfolio", "console"] {
        calls.push(vec![JournalOp::Commit {
            group: group.into(),
            topic: "market.ticks".into(),
            partition: (n % 10) as i32,
            next: (n / 10) as i64 + 1,
        }]);
    }
    for group in ["strategy", "paper.trader", "paper.risk"] {
        calls.push(vec![JournalOp::Mark {
            key: format!("market:dedup:{group}:{n}"),
            expires_unix_ms: unix_ms_now() + 3_600_000,
        }]);
    }
    calls.push(vec![JournalOp::Value {
        key: "paper:checkpoint:alpha-panda.paper.portfolio".into(),
        value: checkpoint.to_owned(),
    }]);
    calls
}

fn data_dir(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("ap-bench-datadir-{}", std::process::id()));
    let (journal, _) = SqliteJournal::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let shared: Arc<dyn Journal> = journal.clone();
    let checkpoint = "x".repeat(2048);
    let mut n = 0u64;
    let mut g = c.benchmark_group("data_dir");
    g.throughput(Throughput::Elements(TICKS));
    g.bench_function("journal_1000_ticks_and_flush", |b| {
        b.iter(|| {
            for _ in 0..TICKS {
                for call in tick_ops(n, &checkpoint) {
                    shared.record(call);
                }
                n += 1;
            }
            journal
                .flush(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
        })
    });
    g.finish();
    let stats = journal.stats();
    eprintln!(
        "data_dir: {} ops in {} transactions",
        stats.ops.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = journal.close(Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = data_dir
}
criterion_main!(benches);
