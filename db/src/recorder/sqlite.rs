//! The recorder of one broker on the embedded default: a thread of its own that follows the
//! broker's order, fill, snapshot and rejection topics on the in-process bus (outside every
//! consumer group) and writes their rows into the broker's SQLite file in the data
//! directory, so `orders`, `fills`, `pnl_snapshots` and `signal_rejections` fill there as
//! they do on PostgreSQL.
//!
//! Contract (as the Kafka recorder's, `super`):
//! - A batch (up to `batch_records` records) is one transaction holding its rows
//!   (`INSERT OR IGNORE`, keyed by event id: a record read twice changes nothing) and the
//!   next offset of every partition read (`recorder_offsets`, never moved backwards).
//! - It starts each partition at its stored offset, so a restart neither skips nor doubles.
//! - Backpressure, not loss: a batch that cannot be written is kept and retried with
//!   backoff (250 ms doubling to 5 s) while the broker is marked degraded; trading goes on.
//! - Only what is durable is recorded: before a batch is written the data directory's
//!   journal is flushed past the records read, so a SIGKILL never leaves a row whose record
//!   the restarted daemon's log does not hold.
//! - [`SqliteRecorder::stop`] writes what the bus holds (one attempt) and ends the thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::inprocess::InProcessBus;
use alpha_panda_config::Charges;
use alpha_panda_core::{BrokerName, EventEnvelope};
use alpha_panda_topics::TopicName;
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::{Connection, RunQueryDsl, SqliteConnection};

use super::{RECORDED, STAGE};
use crate::DbError;
use crate::rows::Rows;
use crate::target::{Layout, connect_sqlite};

/// What the embedded recorder needs.
#[derive(Clone)]
pub struct SqliteRecorderConfig {
    /// The directory holding `{prefix}{broker}.sqlite` (migrated by the caller).
    pub dir: PathBuf,
    pub layout: Layout,
    pub broker: BrokerName,
    pub charges: Charges,
    pub batch_records: usize,
    pub batch_wait: Duration,
    /// The data directory's journal (absent with `--ephemeral`): flushed before each batch.
    pub journal: Option<Arc<crate::embedded::SqliteJournal>>,
}

/// A running embedded recorder.
pub struct SqliteRecorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SqliteRecorder {
    /// Opens the broker's file and starts the thread.
    pub fn spawn(
        cfg: SqliteRecorderConfig,
        bus: InProcessBus,
        control: Arc<Control>,
    ) -> Result<Self, DbError> {
        let mut conn = connect_sqlite(&cfg.layout.broker_file(&cfg.dir, &cfg.broker))?;
        let next = read_offsets(&mut conn)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("recorder-{}", cfg.broker))
            .spawn(move || run(&cfg, &bus, conn, next, &control, &flag))
            .map_err(|e| DbError::Io(format!("starting the recorder thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes what the bus holds and stops.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("a recorder thread panicked");
        }
    }
}

impl Drop for SqliteRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// (topic, partition) → the next offset to read.
type Offsets = BTreeMap<(String, i32), i64>;

fn read_offsets(conn: &mut SqliteConnection) -> Result<Offsets, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        topic: String,
        #[diesel(sql_type = Integer)]
        partition: i32,
        #[diesel(sql_type = BigInt)]
        next_offset: i64,
    }
    let rows: Vec<Row> =
        diesel::sql_query("SELECT topic, partition, next_offset FROM recorder_offsets")
            .load(conn)
            .map_err(DbError::query("reading recorder_offsets"))?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.topic, r.partition), r.next_offset))
        .collect())
}

/// A `fills` row as read back: event id, strategy, side, quantity, price and fees as the
/// exact decimal text stored.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct StoredFill {
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub strategy_id: String,
    #[diesel(sql_type = Text)]
    pub side: String,
    #[diesel(sql_type = BigInt)]
    pub quantity: i64,
    #[diesel(sql_type = Text)]
    pub price: String,
    #[diesel(sql_type = Text)]
    pub fees: String,
}

/// Every `fills` row of a broker's SQLite file, by event id (for tools and tests).
pub fn read_fills(
    dir: &std::path::Path,
    layout: &Layout,
    broker: &BrokerName,
) -> Result<Vec<StoredFill>, DbError> {
    let path = layout.broker_file(dir, broker);
    let mut conn = connect_sqlite(&path)?;
    diesel::sql_query(
        "SELECT event_id, strategy_id, side, quantity, price, fees FROM fills ORDER BY event_id",
    )
    .load(&mut conn)
    .map_err(DbError::query(format!(
        "reading the fills of {}",
        path.display()
    )))
}

fn text_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One batch: its rows and the next offsets, in one transaction.
pub fn write_batch(
    conn: &mut SqliteConnection,
    rows: &Rows,
    offsets: &Offsets,
) -> Result<(), diesel::result::Error> {
    conn.transaction(|c| {
        for o in &rows.orders {
            diesel::sql_query(
                "INSERT OR IGNORE INTO orders (event_id, order_id, state, strategy_id, \
                 instrument_token, side, quantity, price, broker_order_id, error_message, event_ts) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind::<Text, _>(o.event_id.to_string())
            .bind::<Text, _>(&o.order_id)
            .bind::<Text, _>(&o.state)
            .bind::<Text, _>(&o.strategy_id)
            .bind::<BigInt, _>(o.instrument_token)
            .bind::<Text, _>(&o.side)
            .bind::<BigInt, _>(o.quantity)
            .bind::<Text, _>(o.price.to_string())
            .bind::<Nullable<Text>, _>(&o.broker_order_id)
            .bind::<Nullable<Text>, _>(&o.error_message)
            .bind::<Text, _>(text_time(&o.event_ts))
            .execute(c)?;
        }
        for f in &rows.fills {
            diesel::sql_query(
                "INSERT OR IGNORE INTO fills (event_id, order_id, trade_id, account, strategy_id, \
                 instrument_token, side, quantity, price, fees, brokerage, stt, exchange_txn, gst, \
                 sebi, stamp, event_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind::<Text, _>(f.event_id.to_string())
            .bind::<Text, _>(&f.order_id)
            .bind::<Nullable<Text>, _>(&f.trade_id)
            .bind::<Text, _>(&f.account)
            .bind::<Text, _>(&f.strategy_id)
            .bind::<BigInt, _>(f.instrument_token)
            .bind::<Text, _>(&f.side)
            .bind::<BigInt, _>(f.quantity)
            .bind::<Text, _>(f.price.to_string())
            .bind::<Text, _>(f.fees.to_string())
            .bind::<Text, _>(f.brokerage.to_string())
            .bind::<Text, _>(f.stt.to_string())
            .bind::<Text, _>(f.exchange_txn.to_string())
            .bind::<Text, _>(f.gst.to_string())
            .bind::<Text, _>(f.sebi.to_string())
            .bind::<Text, _>(f.stamp.to_string())
            .bind::<Text, _>(text_time(&f.event_ts))
            .execute(c)?;
        }
        for s in &rows.snapshots {
            diesel::sql_query(
                "INSERT OR IGNORE INTO pnl_snapshots (event_id, strategy_id, realized_pnl, \
                 unrealized_pnl, total_pnl, fees, cash, positions, event_ts) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind::<Text, _>(s.event_id.to_string())
            .bind::<Text, _>(&s.strategy_id)
            .bind::<Text, _>(s.realized_pnl.to_string())
            .bind::<Text, _>(s.unrealized_pnl.to_string())
            .bind::<Text, _>(s.total_pnl.to_string())
            .bind::<Text, _>(s.fees.to_string())
            .bind::<Text, _>(s.cash.to_string())
            .bind::<Text, _>(s.positions.to_string())
            .bind::<Text, _>(text_time(&s.event_ts))
            .execute(c)?;
        }
        for r in &rows.rejections {
            diesel::sql_query(
                "INSERT OR IGNORE INTO signal_rejections (event_id, strategy_id, instrument_token, \
                 side, quantity, price, reason, event_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind::<Text, _>(r.event_id.to_string())
            .bind::<Text, _>(&r.strategy_id)
            .bind::<BigInt, _>(r.instrument_token)
            .bind::<Text, _>(&r.side)
            .bind::<BigInt, _>(r.quantity)
            .bind::<Text, _>(r.price.to_string())
            .bind::<Text, _>(&r.reason)
            .bind::<Text, _>(text_time(&r.event_ts))
            .execute(c)?;
        }
        for ((topic, partition), next) in offsets {
            diesel::sql_query(
                "INSERT INTO recorder_offsets (topic, partition, next_offset) VALUES (?, ?, ?) \
                 ON CONFLICT (topic, partition) DO UPDATE SET \
                 next_offset = MAX(recorder_offsets.next_offset, excluded.next_offset), \
                 updated_at = CURRENT_TIMESTAMP",
            )
            .bind::<Text, _>(topic)
            .bind::<Integer, _>(*partition)
            .bind::<BigInt, _>(*next)
            .execute(c)?;
        }
        Ok(())
    })
}

/// Reads the next batch from the bus: its rows and the offsets after it.
fn read_batch(cfg: &SqliteRecorderConfig, bus: &InProcessBus, next: &Offsets) -> (Rows, Offsets) {
    let mut rows = Rows::default();
    let mut moved = Offsets::new();
    let mut left = cfg.batch_records.max(1);
    for t in RECORDED {
        let topic = TopicName::broker(&cfg.broker, t);
        let name = topic.to_string();
        for partition in 0..bus.end_offsets(&topic).len() {
            if left == 0 {
                return (rows, moved);
            }
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            let from = next.get(&(name.clone(), partition)).copied().unwrap_or(0);
            let records = bus.read_from(&topic, partition, from, left);
            let Some((last, _)) = records.last() else {
                continue;
            };
            moved.insert((name.clone(), partition), last + 1);
            left -= records.len();
            for (offset, r) in &records {
                match r.value.as_deref().map(EventEnvelope::decode) {
                    Some(Ok(env)) => rows.add(&env, &cfg.charges),
                    _ => {
                        tracing::warn!(topic = %name, partition, offset, "recorder: not an event envelope, skipped")
                    }
                }
            }
        }
    }
    (rows, moved)
}

fn run(
    cfg: &SqliteRecorderConfig,
    bus: &InProcessBus,
    mut conn: SqliteConnection,
    mut next: Offsets,
    control: &Control,
    stop: &AtomicBool,
) {
    let namespace = cfg.broker.as_str();
    let mut backoff = Duration::ZERO;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let (rows, moved) = read_batch(cfg, bus, &next);
        if moved.is_empty() {
            if stopping {
                return;
            }
            std::thread::sleep(cfg.batch_wait);
            continue;
        }
        let durable = match &cfg.journal {
            Some(j) => j.flush(Duration::from_secs(10)),
            None => Ok(()),
        };
        let written = durable
            .map_err(|e| e.to_string())
            .and_then(|()| write_batch(&mut conn, &rows, &moved).map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                next.extend(moved);
                if !backoff.is_zero() {
                    control.clear_degraded(namespace, STAGE);
                    backoff = Duration::ZERO;
                }
            }
            Err(e) => {
                let why = format!("recorder paused: {e}");
                tracing::warn!(broker = namespace, error = %e, "recorder batch not written; retrying");
                control.mark_degraded(namespace, STAGE, &why);
                if stopping {
                    tracing::error!(
                        broker = namespace,
                        "recorder stopped with records unwritten; they are written at the next start"
                    );
                    return;
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
                std::thread::sleep(backoff);
            }
        }
    }
}
