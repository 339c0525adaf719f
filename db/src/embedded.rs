//! The embedded default's data directory: the in-process transport's log, the consumer
//! groups' committed offsets and the memory store (checkpoints, dedup marks, watermarks,
//! trading states) kept in `DATA_DIR/transport.sqlite`, so a restarted embedded daemon
//! continues where it stopped.
//!
//! Contract:
//! - `SqliteJournal::open` migrates the file (embedded migrations, `migrations/sqlite/
//!   transport`), reads back everything it holds as a `Restored`, and starts one writer
//!   thread of its own. `Journal::record` only queues: an actor's thread never waits for
//!   SQLite.
//! - The writer takes whatever is queued, in order, and writes it in **one transaction**
//!   (so a `record` call's ops — a checkpoint with its marks — are never split). What the
//!   file holds is therefore always a prefix of what happened: after a SIGKILL the daemon
//!   comes back in a state it really passed through, at most the last unwritten batch
//!   behind, and the stages re-handle from there (deterministic ids and watermarks make
//!   that exact).
//! - A write that fails (disk full) is retried with backoff, the ops kept in order; nothing
//!   is dropped while the process lives. `flush` waits until everything queued before it
//!   is in the file: the daemon calls it last on SIGTERM.
//! - WAL journal with `synchronous = NORMAL`: a process crash loses nothing committed; a
//!   power cut may lose the last transactions (still a prefix).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alpha_panda_actors::delivery::inprocess::StoredRecord;
use alpha_panda_actors::journal::{Journal, JournalOp, Restored};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::DbError;
use crate::target::connect_sqlite;

const SQLITE_TRANSPORT: EmbeddedMigrations = embed_migrations!("migrations/sqlite/transport");

/// The file under the data directory.
pub const TRANSPORT_FILE: &str = "transport.sqlite";

/// Most dedup marks kept in the file (as the memory store keeps).
const MAX_MARKS: i64 = alpha_panda_actors::store::MAX_MEMORY_MARKS as i64;

enum Msg {
    Ops(Vec<JournalOp>),
    Flush(mpsc::SyncSender<()>),
}

/// Counters of the writer, for benchmarks and logs.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Transactions written.
    pub transactions: AtomicU64,
    /// Ops written.
    pub ops: AtomicU64,
    /// Writes that failed and were retried.
    pub retries: AtomicU64,
}

/// The journal of the embedded default, writing to `DATA_DIR/transport.sqlite`.
pub struct SqliteJournal {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<JournalStats>,
}

impl SqliteJournal {
    /// Opens (creating and migrating) the data directory's file and reads back what it
    /// holds; from here every op handed to the journal is written by a thread of its own.
    pub fn open(dir: &Path) -> Result<(Arc<Self>, Restored), DbError> {
        let path = dir.join(TRANSPORT_FILE);
        let mut conn = connect_sqlite(&path)?;
        conn.batch_execute("PRAGMA synchronous = NORMAL")
            .map_err(DbError::query(format!(
                "PRAGMA synchronous on {}",
                path.display()
            )))?;
        conn.run_pending_migrations(SQLITE_TRANSPORT)
            .map_err(|e| DbError::Migration {
                scope: format!("file {}", path.display()),
                message: e.to_string(),
            })?;
        let restored = read_all(&mut conn, &path)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(JournalStats::default());
        let writer = {
            let (stats, shown) = (stats.clone(), path.display().to_string());
            std::thread::Builder::new()
                .name("data-dir-writer".into())
                .spawn(move || write_loop(conn, rx, &stats, &shown))
                .map_err(|e| {
                    DbError::Io(format!("starting the writer of {}: {e}", path.display()))
                })?
        };
        Ok((
            Arc::new(Self {
                path,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                stats,
            }),
            restored,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &JournalStats {
        &self.stats
    }

    /// Waits until every op queued before this call is in the file, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), DbError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Msg::Flush(done));
        wait.recv_timeout(timeout).map_err(|_| {
            DbError::Io(format!(
                "{} not written within {} ms (its writer is stopped or the disk refuses)",
                self.path.display(),
                timeout.as_millis()
            ))
        })
    }

    /// Flushes, stops the writer and waits for it. Ops recorded afterwards are dropped.
    pub fn close(&self, timeout: Duration) -> Result<(), DbError> {
        let flushed = self.flush(timeout);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if flushed.is_ok()
            && let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = w.join();
        }
        flushed
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            // The writer only ends when the sender is dropped (`close`).
            let _ = tx.send(msg);
        }
    }
}

impl Journal for SqliteJournal {
    fn record(&self, ops: Vec<JournalOp>) {
        self.send(Msg::Ops(ops));
    }
}

/// Most ops written in one transaction.
const MAX_OPS_PER_TRANSACTION: usize = 20_000;

/// How long the writer gathers ops into one transaction after the first: the most a
/// SIGKILL can take back beyond what was still queued.
const GATHER: Duration = Duration::from_millis(50);

fn write_loop(
    mut conn: SqliteConnection,
    rx: mpsc::Receiver<Msg>,
    stats: &JournalStats,
    path: &str,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = Vec::new();
        let mut flushes = Vec::new();
        take(first, &mut ops, &mut flushes);
        // Whatever comes within `GATHER` goes into the same transaction (a `record` call is
        // never split): a few transactions a second however busy the stages are, and most
        // of a hot key's updates (a checkpoint, a committed offset) are coalesced away.
        // A flush (shutdown) ends the gathering: it wants everything written now.
        let until = std::time::Instant::now() + GATHER;
        while ops.len() < MAX_OPS_PER_TRANSACTION && flushes.is_empty() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(m) => take(m, &mut ops, &mut flushes),
                Err(_) => break,
            }
        }
        let ops = coalesce(ops);
        let mut delay = Duration::from_millis(100);
        loop {
            match conn.transaction(|c| write_ops(c, &ops)) {
                Ok(()) => break,
                Err(e) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(file = path, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot write the data directory; retrying (nothing is dropped)");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        for f in flushes {
            let _ = f.try_send(());
        }
    }
}

fn take(m: Msg, ops: &mut Vec<JournalOp>, flushes: &mut Vec<mpsc::SyncSender<()>>) {
    match m {
        Msg::Ops(o) => ops.extend(o),
        Msg::Flush(f) => flushes.push(f),
    }
}

/// Within one transaction only the last value of a key (a store value, a committed offset,
/// a watermark) matters: the earlier ones are left out. Appends, topics and marks stay.
fn coalesce(ops: Vec<JournalOp>) -> Vec<JournalOp> {
    let slot = |op: &JournalOp| -> Option<(u8, String)> {
        match op {
            JournalOp::Value { key, .. } | JournalOp::Removed { key } => Some((0, key.clone())),
            JournalOp::Commit {
                group,
                topic,
                partition,
                ..
            } => Some((1, format!("{group}\u{0}{topic}\u{0}{partition}"))),
            JournalOp::Watermark { key, source, .. } => Some((2, format!("{key}\u{0}{source}"))),
            _ => None,
        }
    };
    let mut last: HashMap<(u8, String), usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(s) = slot(op) {
            last.insert(s, i);
        }
    }
    ops.into_iter()
        .enumerate()
        .filter(|(i, op)| slot(op).is_none_or(|s| last.get(&s) == Some(i)))
        .map(|(_, op)| op)
        .collect()
}

fn write_ops(c: &mut SqliteConnection, ops: &[JournalOp]) -> Result<(), diesel::result::Error> {
    for op in ops {
        match op {
            JournalOp::Topic { topic, partitions } => {
                diesel::sql_query("INSERT OR IGNORE INTO topics (topic, partitions) VALUES (?, ?)")
                    .bind::<Text, _>(topic)
                    .bind::<BigInt, _>(*partitions as i64)
                    .execute(c)?;
            }
            JournalOp::Append {
                topic,
                partition,
                offset,
                record,
            } => {
                let headers = serde_json::to_string(&record.headers)
                    .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
                diesel::sql_query(
                    "INSERT OR IGNORE INTO log (topic, partition, \"offset\", key, value, headers) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(*partition)
                .bind::<BigInt, _>(*offset)
                .bind::<Nullable<Binary>, _>(record.key.as_deref())
                .bind::<Nullable<Binary>, _>(record.value.as_deref())
                .bind::<Text, _>(headers)
                .execute(c)?;
            }
            JournalOp::Commit {
                group,
                topic,
                partition,
                next,
            } => {
                diesel::sql_query(
                    "INSERT INTO committed (grp, topic, partition, next_offset) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (grp, topic, partition) DO UPDATE SET \
                     next_offset = max(next_offset, excluded.next_offset)",
                )
                .bind::<Text, _>(group)
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(*partition)
                .bind::<BigInt, _>(*next)
                .execute(c)?;
            }
            JournalOp::Value { key, value } => {
                diesel::sql_query(
                    "INSERT INTO kv (key, value) VALUES (?, ?) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind::<Text, _>(key)
                .bind::<Text, _>(value)
                .execute(c)?;
            }
            JournalOp::Trimmed {
                topic,
                partition,
                below,
            } => {
                diesel::sql_query(
                    "DELETE FROM log WHERE topic = ? AND partition = ? AND \"offset\" < ?",
                )
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(*partition)
                .bind::<BigInt, _>(*below)
                .execute(c)?;
            }
            JournalOp::Removed { key } => {
                diesel::sql_query("DELETE FROM kv WHERE key = ?")
                    .bind::<Text, _>(key)
                    .execute(c)?;
            }
            JournalOp::Mark {
                key,
                expires_unix_ms,
            } => {
                diesel::sql_query(
                    "INSERT OR REPLACE INTO marks (key, expires_unix_ms) VALUES (?, ?)",
                )
                .bind::<Text, _>(key)
                .bind::<BigInt, _>(*expires_unix_ms)
                .execute(c)?;
            }
            JournalOp::Watermark {
                key,
                source,
                position,
            } => {
                diesel::sql_query(
                    "INSERT INTO watermarks (key, source, \"offset\", ordinal) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (key, source) DO UPDATE SET \
                     \"offset\" = excluded.\"offset\", ordinal = excluded.ordinal",
                )
                .bind::<Text, _>(key)
                .bind::<Text, _>(source)
                .bind::<BigInt, _>(position.0)
                .bind::<BigInt, _>(i64::from(position.1))
                .execute(c)?;
            }
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct TopicRow {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = BigInt)]
    partitions: i64,
}

#[derive(QueryableByName)]
struct LogRow {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    record_offset: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    key: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    headers: String,
}

#[derive(QueryableByName)]
struct CommittedRow {
    #[diesel(sql_type = Text)]
    grp: String,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    next_offset: i64,
}

#[derive(QueryableByName)]
struct KvRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct MarkRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    expires_unix_ms: i64,
}

#[derive(QueryableByName)]
struct WatermarkRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = BigInt)]
    record_offset: i64,
    #[diesel(sql_type = BigInt)]
    ordinal: i64,
}

/// Everything the file holds, after dropping expired marks and marks beyond the window.
fn read_all(conn: &mut SqliteConnection, path: &Path) -> Result<Restored, DbError> {
    let shown = path.display();
    let what = |t: &str| format!("reading {t} from {shown}");
    diesel::sql_query("DELETE FROM marks WHERE expires_unix_ms <= ?")
        .bind::<BigInt, _>(alpha_panda_actors::journal::unix_ms_now())
        .execute(conn)
        .map_err(DbError::query(what("marks")))?;
    diesel::sql_query("DELETE FROM marks WHERE rowid <= (SELECT max(rowid) FROM marks) - ?")
        .bind::<BigInt, _>(MAX_MARKS)
        .execute(conn)
        .map_err(DbError::query(what("marks")))?;

    let mut r = Restored::default();
    let topics: Vec<TopicRow> =
        diesel::sql_query("SELECT topic, partitions FROM topics ORDER BY topic")
            .load(conn)
            .map_err(DbError::query(what("topics")))?;
    let mut index = HashMap::new();
    for t in topics {
        let n = usize::try_from(t.partitions).unwrap_or(0).max(1);
        index.insert(t.topic.clone(), r.topics.len());
        r.topics.push((t.topic, vec![(0, Vec::new()); n]));
    }
    let rows: Vec<LogRow> = diesel::sql_query(
        "SELECT topic, partition, \"offset\" AS record_offset, key, value, headers FROM log \
         ORDER BY topic, partition, \"offset\"",
    )
    .load(conn)
    .map_err(DbError::query(what("the log")))?;
    for row in rows {
        let place = format!(
            "{shown}: record {}/{}/{}",
            row.topic, row.partition, row.record_offset
        );
        let log = index
            .get(&row.topic)
            .and_then(|i| r.topics[*i].1.get_mut(usize::try_from(row.partition).ok()?))
            .ok_or_else(|| DbError::Io(format!("{place} is of no known topic partition")))?;
        // A partition's first row is its first record kept (those before were trimmed).
        if log.1.is_empty() {
            log.0 = row.record_offset;
        }
        if row.record_offset != log.0 + log.1.len() as i64 {
            return Err(DbError::Io(format!(
                "{place} follows offset {} (the log has a gap; the file is damaged)",
                log.0 + log.1.len() as i64 - 1
            )));
        }
        let headers = serde_json::from_str(&row.headers)
            .map_err(|e| DbError::Io(format!("{place}: headers do not read: {e}")))?;
        log.1.push(StoredRecord {
            key: row.key,
            value: row.value,
            headers,
        });
    }
    let committed: Vec<CommittedRow> =
        diesel::sql_query("SELECT grp, topic, partition, next_offset FROM committed")
            .load(conn)
            .map_err(DbError::query(what("committed offsets")))?;
    r.committed = committed
        .into_iter()
        .map(|c| (c.grp, c.topic, c.partition, c.next_offset))
        .collect();
    let kv: Vec<KvRow> = diesel::sql_query("SELECT key, value FROM kv")
        .load(conn)
        .map_err(DbError::query(what("store values")))?;
    r.values = kv.into_iter().map(|k| (k.key, k.value)).collect();
    let marks: Vec<MarkRow> =
        diesel::sql_query("SELECT key, expires_unix_ms FROM marks ORDER BY rowid")
            .load(conn)
            .map_err(DbError::query(what("dedup marks")))?;
    r.marks = marks
        .into_iter()
        .map(|m| (m.key, m.expires_unix_ms))
        .collect();
    let wms: Vec<WatermarkRow> = diesel::sql_query(
        "SELECT key, source, \"offset\" AS record_offset, ordinal FROM watermarks",
    )
    .load(conn)
    .map_err(DbError::query(what("watermarks")))?;
    for w in wms {
        let ordinal = u32::try_from(w.ordinal).map_err(|_| {
            DbError::Io(format!(
                "{shown}: watermark {}/{} has ordinal {} (not a u32)",
                w.key, w.source, w.ordinal
            ))
        })?;
        r.watermarks
            .push((w.key, w.source, (w.record_offset, ordinal)));
    }
    Ok(r)
}
