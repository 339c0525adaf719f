//! What the operator console shows beyond `/status` and `/portfolio/{broker}`, kept bounded
//! in memory: per broker the equity curve of each strategy (from `{b}.pnl.snapshots`), the
//! latest fills (`{b}.orders.filled`) and rejections (`{b}.signals.rejected`,
//! `{b}.orders.failed`), and the number of records in each DLQ topic.
//!
//! Pure: the readers in `tail.rs` feed it envelopes; nothing here does I/O.
//!
//! Bounds: an equity curve holds at most `Limits::equity_points` points, in event-time
//! order; when full, every other point is dropped (the first always stays, and the newest
//! is added after), so the curve spans the whole session at a coarser resolution instead
//! of forgetting its start. Fills and rejections keep the newest `Limits::rows` each, newest
//! first by event time.

use std::collections::{BTreeMap, VecDeque};

use alpha_panda_core::{Decimal, EventData, EventEnvelope, Timestamp};
use serde::Serialize;

/// How much the console keeps per broker.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Points per strategy's equity curve (at least 2).
    pub equity_points: usize,
    /// Fills, and rejections, kept per broker.
    pub rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            equity_points: 512,
            rows: 50,
        }
    }
}

/// One point of an equity curve: a strategy's PnL at a snapshot's time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EquityPoint {
    pub ts: Timestamp,
    pub total: Decimal,
    pub realized: Decimal,
    pub unrealized: Decimal,
}

/// A fill as the console lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillRow {
    pub ts: Timestamp,
    pub strategy: String,
    pub instrument_token: u32,
    pub side: String,
    pub quantity: String,
    pub price: Decimal,
    pub fees: Decimal,
    pub order_id: String,
}

/// A refused signal (risk) or a failed order (trader), as the console lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionRow {
    pub ts: Timestamp,
    /// `risk` for a rejected signal, `trader` for a failed order.
    pub stage: &'static str,
    pub strategy: String,
    pub instrument_token: u32,
    pub side: String,
    pub quantity: String,
    pub reason: String,
}

/// What the console keeps about one broker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerFeed {
    pub equity: BTreeMap<String, VecDeque<EquityPoint>>,
    /// Newest first.
    pub fills: VecDeque<FillRow>,
    /// Newest first.
    pub rejections: VecDeque<RejectionRow>,
}

/// Everything the console's data route answers besides status and positions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsoleBook {
    #[serde(skip)]
    limits: Limits,
    pub brokers: BTreeMap<String, BrokerFeed>,
    /// Records held in each DLQ topic (retained ones, all partitions).
    pub dlq: BTreeMap<String, i64>,
    /// Why the reader cannot follow the topics right now, when it cannot.
    pub reader_error: Option<String>,
}

impl ConsoleBook {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: Limits {
                equity_points: limits.equity_points.max(2),
                rows: limits.rows.max(1),
            },
            ..Self::default()
        }
    }

    /// Takes in one event consumed from a topic of `broker`; events the console does not
    /// show are ignored.
    pub fn apply(&mut self, broker: &str, envelope: &EventEnvelope) {
        let limits = self.limits;
        let feed = self.brokers.entry(broker.to_owned()).or_default();
        match &envelope.data {
            EventData::PnlSnapshot(s) => {
                let curve = feed
                    .equity
                    .entry(s.strategy_id.as_str().to_owned())
                    .or_default();
                push_point(
                    curve,
                    EquityPoint {
                        ts: s.timestamp,
                        total: s.total_pnl,
                        realized: s.realized_pnl,
                        unrealized: s.unrealized_pnl,
                    },
                    limits.equity_points,
                );
            }
            EventData::OrderFilled(f) => push_row(
                &mut feed.fills,
                FillRow {
                    ts: f.timestamp,
                    strategy: f.strategy_id.as_str().to_owned(),
                    instrument_token: f.instrument_token.0,
                    side: f.side.as_str().to_owned(),
                    quantity: f.quantity.to_string(),
                    price: f.fill_price.get(),
                    fees: f.fees,
                    order_id: f.order_id.as_str().to_owned(),
                },
                limits.rows,
            ),
            EventData::RejectedSignal(r) => push_row(
                &mut feed.rejections,
                RejectionRow {
                    ts: r.timestamp,
                    stage: "risk",
                    strategy: r.original_signal.strategy_id.as_str().to_owned(),
                    instrument_token: r.original_signal.instrument_token.0,
                    side: r.original_signal.signal_type.as_str().to_owned(),
                    quantity: r.original_signal.quantity.to_string(),
                    reason: r.rejection_reason.clone(),
                },
                limits.rows,
            ),
            EventData::OrderFailed(f) => push_row(
                &mut feed.rejections,
                RejectionRow {
                    ts: f.timestamp,
                    stage: "trader",
                    strategy: f.strategy_id.as_str().to_owned(),
                    instrument_token: f.instrument_token.0,
                    side: f.side.as_str().to_owned(),
                    quantity: f.quantity.to_string(),
                    reason: f.error_message.clone(),
                },
                limits.rows,
            ),
            _ => {}
        }
    }

    /// Records how many records a DLQ topic holds.
    pub fn set_dlq_count(&mut self, topic: &str, count: i64) {
        self.dlq.insert(topic.to_owned(), count);
    }

    pub fn set_reader_error(&mut self, error: Option<String>) {
        self.reader_error = error;
    }
}

/// Adds a point in time order (records of different partitions arrive interleaved); a full
/// curve first drops every other point except the first, halving it.
fn push_point(curve: &mut VecDeque<EquityPoint>, point: EquityPoint, cap: usize) {
    if curve.len() >= cap {
        let kept: VecDeque<EquityPoint> = curve
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, p)| p.clone())
            .collect();
        *curve = kept;
    }
    let at = curve.partition_point(|p| p.ts <= point.ts);
    curve.insert(at, point);
}

/// Puts a row in place, newest first, and drops the oldest past `cap`.
fn push_row<T: Timed>(rows: &mut VecDeque<T>, row: T, cap: usize) {
    let at = rows.partition_point(|r| r.ts() > row.ts());
    rows.insert(at, row);
    rows.truncate(cap);
}

/// A row with an event time.
trait Timed {
    fn ts(&self) -> Timestamp;
}

impl Timed for FillRow {
    fn ts(&self) -> Timestamp {
        self.ts
    }
}

impl Timed for RejectionRow {
    fn ts(&self) -> Timestamp {
        self.ts
    }
}

#[cfg(test)]
mod tests;
