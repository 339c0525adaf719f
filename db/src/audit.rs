//! The audit writer: a thread of its own that reads the daemon's audit channel
//! (`alpha_panda_actors::audit`) and writes `admin_audit` and `trading_state_changes` rows,
//! into each broker's schema on PostgreSQL (as the broker's writer role) or each broker's
//! SQLite file (the embedded default's data directory, or a `sqlite://` `database.url`).
//!
//! Contract:
//! - An admin call that names a broker is written to that broker's table; one that names
//!   none (a reload, enabling a strategy, a `market` pause) to every active broker's.
//! - A trading-state change is written to its broker's `trading_state_changes`; `market` or
//!   an inactive broker is logged only.
//! - Actors never wait for it: the channel is bounded and never blocks its senders. While
//!   the database cannot be written, events wait in memory (at most
//!   [`alpha_panda_actors::audit::QUEUE`]; beyond that the oldest is logged and dropped) and
//!   the write is retried with backoff (250 ms doubling to 5 s).
//! - [`AuditWriter::stop`] writes what is queued (one attempt) and ends the thread.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use alpha_panda_actors::audit::{AuditEvent, QUEUE};
use alpha_panda_core::BrokerName;
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};

use crate::target::{connect_as_writer, connect_sqlite};
use crate::{DbError, Layout};

/// Where the rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Each broker's schema, as its writer role (`db migrate` must have run).
    Postgres { url: String },
    /// Each broker's file in `dir` (migrated by the caller).
    Sqlite { dir: PathBuf },
}

/// The running writer thread.
pub struct AuditWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts the thread writing what `events` receives for `brokers`.
    pub fn spawn(
        target: AuditTarget,
        layout: Layout,
        brokers: Vec<BrokerName>,
        events: Receiver<AuditEvent>,
    ) -> Result<Self, DbError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || run(Tables::new(target, layout, brokers), events, &flag))
            .map_err(|e| DbError::Io(format!("starting the audit writer thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes what is queued and stops the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the audit writer thread panicked");
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Rows of one event, each for one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Admin {
        broker: BrokerName,
        actor: String,
        remote_addr: String,
        action: String,
        target: String,
        outcome: String,
        detail: String,
        at: DateTime<Utc>,
    },
    TradingState {
        broker: BrokerName,
        strategy_id: Option<String>,
        state: String,
        changed_by: String,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl Row {
    fn broker(&self) -> &BrokerName {
        match self {
            Row::Admin { broker, .. } | Row::TradingState { broker, .. } => broker,
        }
    }
}

fn utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// The rows `event` makes among `brokers` (see the module's contract).
pub fn rows_of(event: &AuditEvent, brokers: &[BrokerName]) -> Vec<Row> {
    match event {
        AuditEvent::Admin(c) => {
            let named: Vec<&BrokerName> = match &c.broker {
                Some(b) => brokers.iter().filter(|x| x.as_str() == b).collect(),
                None => brokers.iter().collect(),
            };
            let named = if named.is_empty() {
                // A broker that is not active here (a refused call): kept by every broker.
                brokers.iter().collect()
            } else {
                named
            };
            named
                .into_iter()
                .map(|b| Row::Admin {
                    broker: b.clone(),
                    actor: c.who.clone(),
                    remote_addr: c.from.clone(),
                    action: c.what.clone(),
                    target: c.broker.clone().unwrap_or_else(|| "*".to_owned()),
                    outcome: c.outcome.clone(),
                    detail: c.summary.clone(),
                    at: utc(c.at),
                })
                .collect()
        }
        AuditEvent::TradingState(c) => brokers
            .iter()
            .filter(|b| b.as_str() == c.broker)
            .map(|b| Row::TradingState {
                broker: b.clone(),
                strategy_id: c.strategy.clone(),
                state: c.state.clone(),
                changed_by: c.changed_by.clone(),
                reason: c.reason.clone(),
                at: utc(c.at),
            })
            .collect(),
    }
}

/// Connections per broker, opened when first needed and dropped after a failure.
struct Tables {
    target: AuditTarget,
    layout: Layout,
    brokers: Vec<BrokerName>,
    pg: Vec<(BrokerName, PgConnection)>,
    sqlite: Vec<(BrokerName, SqliteConnection)>,
}

impl Tables {
    fn new(target: AuditTarget, layout: Layout, brokers: Vec<BrokerName>) -> Self {
        Self {
            target,
            layout,
            brokers,
            pg: Vec::new(),
            sqlite: Vec::new(),
        }
    }

    /// Writes the rows of one broker in one transaction.
    fn write(&mut self, broker: &BrokerName, rows: &[Row]) -> Result<(), DbError> {
        let what = format!("writing {} audit rows of {broker}", rows.len());
        match &self.target {
            AuditTarget::Postgres { url } => {
                if !self.pg.iter().any(|(b, _)| b == broker) {
                    let conn = connect_as_writer(url, &self.layout, broker)?;
                    self.pg.push((broker.clone(), conn));
                }
                let i = self.pg.iter().position(|(b, _)| b == broker).unwrap_or(0);
                let result = self.pg[i]
                    .1
                    .transaction(|c| rows.iter().try_for_each(|r| insert_pg(c, r)));
                if result.is_err() {
                    self.pg.remove(i);
                }
                result.map_err(DbError::query(what))
            }
            AuditTarget::Sqlite { dir } => {
                if !self.sqlite.iter().any(|(b, _)| b == broker) {
                    let conn = connect_sqlite(&self.layout.broker_file(dir, broker))?;
                    self.sqlite.push((broker.clone(), conn));
                }
                let i = self
                    .sqlite
                    .iter()
                    .position(|(b, _)| b == broker)
                    .unwrap_or(0);
                let result = self.sqlite[i]
                    .1
                    .transaction(|c| rows.iter().try_for_each(|r| insert_sqlite(c, r)));
                if result.is_err() {
                    self.sqlite.remove(i);
                }
                result.map_err(DbError::query(what))
            }
        }
    }
}

use diesel::sql_types::{Nullable, Text, Timestamptz};

fn insert_pg(c: &mut PgConnection, row: &Row) -> Result<(), diesel::result::Error> {
    match row {
        Row::Admin {
            actor,
            remote_addr,
            action,
            target,
            outcome,
            detail,
            at,
            ..
        } => diesel::sql_query(
            "INSERT INTO admin_audit (actor, remote_addr, action, target, outcome, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind::<Text, _>(actor)
        .bind::<Text, _>(remote_addr)
        .bind::<Text, _>(action)
        .bind::<Text, _>(target)
        .bind::<Text, _>(outcome)
        .bind::<Text, _>(detail)
        .bind::<Timestamptz, _>(at)
        .execute(c)
        .map(drop),
        Row::TradingState {
            strategy_id,
            state,
            changed_by,
            reason,
            at,
            ..
        } => diesel::sql_query(
            "INSERT INTO trading_state_changes (strategy_id, state, changed_by, reason, changed_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind::<Nullable<Text>, _>(strategy_id)
        .bind::<Text, _>(state)
        .bind::<Text, _>(changed_by)
        .bind::<Text, _>(reason)
        .bind::<Timestamptz, _>(at)
        .execute(c)
        .map(drop),
    }
}

/// SQLite keeps times as RFC 3339 text in UTC, to the microsecond.
fn text_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn insert_sqlite(c: &mut SqliteConnection, row: &Row) -> Result<(), diesel::result::Error> {
    match row {
        Row::Admin {
            actor,
            remote_addr,
            action,
            target,
            outcome,
            detail,
            at,
            ..
        } => diesel::sql_query(
            "INSERT INTO admin_audit (actor, remote_addr, action, target, outcome, detail, at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind::<Text, _>(actor)
        .bind::<Text, _>(remote_addr)
        .bind::<Text, _>(action)
        .bind::<Text, _>(target)
        .bind::<Text, _>(outcome)
        .bind::<Text, _>(detail)
        .bind::<Text, _>(text_time(at))
        .execute(c)
        .map(drop),
        Row::TradingState {
            strategy_id,
            state,
            changed_by,
            reason,
            at,
            ..
        } => diesel::sql_query(
            "INSERT INTO trading_state_changes (strategy_id, state, changed_by, reason, changed_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind::<Nullable<Text>, _>(strategy_id)
        .bind::<Text, _>(state)
        .bind::<Text, _>(changed_by)
        .bind::<Text, _>(reason)
        .bind::<Text, _>(text_time(at))
        .execute(c)
        .map(drop),
    }
}

/// An `admin_audit` row as read back.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct AdminRow {
    #[diesel(sql_type = Text)]
    pub actor: String,
    #[diesel(sql_type = Text)]
    pub remote_addr: String,
    #[diesel(sql_type = Text)]
    pub action: String,
    #[diesel(sql_type = Text)]
    pub target: String,
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Text)]
    pub detail: String,
    #[diesel(sql_type = Text)]
    pub at: String,
}

/// A `trading_state_changes` row as read back.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct StateRow {
    #[diesel(sql_type = Nullable<Text>)]
    pub strategy_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Text)]
    pub changed_by: String,
    #[diesel(sql_type = Text)]
    pub reason: String,
}

const ADMIN_ROWS: &str = "SELECT actor, remote_addr, action, target, outcome, detail,      CAST(at AS text) AS at FROM admin_audit ORDER BY id";
const STATE_ROWS: &str =
    "SELECT strategy_id, state, changed_by, reason FROM trading_state_changes ORDER BY id";

/// A broker's `admin_audit` and `trading_state_changes` rows in order, from its SQLite file
/// (for operators' tools and tests).
pub fn read_sqlite(
    dir: &std::path::Path,
    layout: &Layout,
    broker: &BrokerName,
) -> Result<(Vec<AdminRow>, Vec<StateRow>), DbError> {
    let path = layout.broker_file(dir, broker);
    let mut c = connect_sqlite(&path)?;
    let what = format!("reading the audit of {}", path.display());
    let admin = diesel::sql_query(ADMIN_ROWS)
        .load(&mut c)
        .map_err(DbError::query(what.clone()))?;
    let states = diesel::sql_query(STATE_ROWS)
        .load(&mut c)
        .map_err(DbError::query(what))?;
    Ok((admin, states))
}

/// The same from a broker's schema on PostgreSQL, as its writer role.
pub fn read_postgres(
    url: &str,
    layout: &Layout,
    broker: &BrokerName,
) -> Result<(Vec<AdminRow>, Vec<StateRow>), DbError> {
    let mut c = connect_as_writer(url, layout, broker)?;
    let what = format!(
        "reading the audit of schema {}",
        layout.broker_schema(broker)
    );
    let admin = diesel::sql_query(ADMIN_ROWS)
        .load(&mut c)
        .map_err(DbError::query(what.clone()))?;
    let states = diesel::sql_query(STATE_ROWS)
        .load(&mut c)
        .map_err(DbError::query(what))?;
    Ok((admin, states))
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn run(mut tables: Tables, events: Receiver<AuditEvent>, stop: &AtomicBool) {
    let mut pending: VecDeque<Row> = VecDeque::new();
    let mut backoff = Duration::ZERO;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let wait = if pending.is_empty() {
            Duration::from_millis(200)
        } else {
            backoff.max(Duration::from_millis(1))
        };
        match events.recv_timeout(wait) {
            Ok(e) => {
                let rows = rows_of(&e, &tables.brokers);
                if rows.is_empty() {
                    tracing::debug!(target: "alpha_panda::audit", event = ?e, "no active broker keeps this event");
                }
                pending.extend(rows);
                pending.extend(events.try_iter().flat_map(|e| rows_of(&e, &tables.brokers)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut tables, &mut pending);
                return;
            }
        }
        while pending.len() > QUEUE {
            if let Some(row) = pending.pop_front() {
                tracing::error!(target: "alpha_panda::audit", ?row, "audit rows waiting beyond the queue: oldest dropped");
            }
        }
        if flush(&mut tables, &mut pending) {
            backoff = Duration::ZERO;
        } else {
            backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        }
        if stopping {
            if !pending.is_empty() {
                tracing::error!(target: "alpha_panda::audit", rows = pending.len(), "audit rows not written at shutdown");
            }
            return;
        }
    }
}

/// Writes every pending row, broker by broker; true when nothing is left.
fn flush(tables: &mut Tables, pending: &mut VecDeque<Row>) -> bool {
    let brokers = tables.brokers.clone();
    for broker in &brokers {
        let rows: Vec<Row> = pending
            .iter()
            .filter(|r| r.broker() == broker)
            .cloned()
            .collect();
        if rows.is_empty() {
            continue;
        }
        match tables.write(broker, &rows) {
            Ok(()) => pending.retain(|r| r.broker() != broker),
            Err(e) => {
                tracing::warn!(target: "alpha_panda::audit", broker = %broker, error = %e, rows = rows.len(), "audit rows not written yet; retrying");
            }
        }
    }
    pending.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    use alpha_panda_actors::audit::{AdminCall, StateChange};

    fn brokers() -> Vec<BrokerName> {
        vec![
            BrokerName::paper(),
            BrokerName::new("zerodha").unwrap_or_else(|e| panic!("{e}")),
        ]
    }

    fn call(broker: Option<&str>) -> AuditEvent {
        AuditEvent::Admin(AdminCall {
            who: "anonymous".into(),
            from: "127.0.0.1:5".into(),
            what: "POST /admin/pause".into(),
            broker: broker.map(str::to_owned),
            summary: "{}".into(),
            outcome: "200".into(),
            at: SystemTime::UNIX_EPOCH,
        })
    }

    fn to(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.broker().as_str()).collect()
    }

    #[test]
    fn a_call_naming_a_broker_is_kept_by_that_broker_and_one_naming_none_by_every_broker() {
        assert_eq!(
            to(&rows_of(&call(Some("zerodha")), &brokers())),
            vec!["zerodha"]
        );
        assert_eq!(
            to(&rows_of(&call(None), &brokers())),
            vec!["paper", "zerodha"]
        );
        assert_eq!(
            to(&rows_of(&call(Some("ghost")), &brokers())),
            vec!["paper", "zerodha"]
        );
    }

    #[test]
    fn a_trading_state_change_is_kept_by_its_broker_only() {
        let change = |broker: &str| {
            AuditEvent::TradingState(StateChange {
                broker: broker.into(),
                strategy: Some("s".into()),
                state: "HALTED".into(),
                changed_by: "supervision".into(),
                reason: String::new(),
                at: SystemTime::UNIX_EPOCH,
            })
        };
        assert_eq!(to(&rows_of(&change("paper"), &brokers())), vec!["paper"]);
        assert!(rows_of(&change("market"), &brokers()).is_empty());
    }
}
