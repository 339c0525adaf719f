//! The day PnL of each strategy on one broker, as its risk stage can know it: from the
//! broker's fills (realized, net of charges) and from market prices (marks). Pure.
//!
//! Day PnL of a strategy on trading day `D` (the NSE day, Asia/Kolkata, of the event time),
//! as of event time `T` in `D`, marked to market: for each instrument it has filled,
//!
//! `cash of D's fills up to T + position at T × mark at T − position at D's start × mark
//! before D`
//!
//! where a fill's cash is `−signed quantity × price − charges`. Realized and unrealized PnL
//! of the day are both in it; a position carried into the day counts only its move since
//! the previous close.
//!
//! It depends on the records and their event times only, never on the order they arrive in:
//! fills and marks are kept by (event time, event id), a copy of one changes nothing, and the
//! figure as of `T` leaves out every record later than `T`. Marks are the prices the risk
//! stage sees: MARKET signals' prices (the tick the strategy decided on); when an
//! instrument has no such mark at or before `T`, the strategy's latest fill price there
//! stands in. At equal event times the record with the higher event id wins.
//!
//! State grows with the signals and fills of the days it keeps: [`DayPnl::forget_before`]
//! drops what no question about a later day needs (the risk stage calls it as event time
//! passes midnight, keeping the day before), so a daemon that runs for months keeps about two
//! days of fills and MARKET-signal marks, not every one since it started.
//!
//! For a checkpoint, the fills and marks are not serialized with the rest: with
//! [`DayPnl::log_chunks`] on, every record applied is also logged, in arrival order, to
//! chunks of [`CHUNK_RECORDS`]; a chunk is written once full and never again
//! ([`DayPnl::changed_chunks`]), and dropped once every record in it is on a forgotten day.
//! So a checkpoint writes the records since the last one, not the day's every record, and a
//! restore replays the chunks ([`DayPnl::restore_chunks`]) — in any order, since the figure
//! does not depend on it.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use alpha_panda_core::events::OrderFilled;
use alpha_panda_core::{Decimal, InstrumentToken, StrategyId, Timestamp};
use chrono::NaiveDate;
use uuid::Uuid;

use crate::risk::trading_day;

/// A record's place in event time: its time, then its event id.
type At = (Timestamp, Uuid);

/// Each instrument's marks, by their place in event time.
type Marks = HashMap<InstrumentToken, BTreeMap<At, Decimal>>;

/// Records per logged chunk: a checkpoint rewrites at most this many (about 150 bytes of
/// JSON each).
pub const CHUNK_RECORDS: usize = 256;

/// The part name of a logged chunk.
const CHUNK_PREFIX: &str = "pnl.";

/// A record as logged: a fill of a strategy, or a mark.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Logged {
    F(StrategyId, InstrumentToken, At, Fill),
    M(InstrumentToken, At, Decimal),
}

impl Logged {
    fn day_time(&self) -> Timestamp {
        match self {
            Logged::F(_, _, at, _) | Logged::M(_, at, _) => at.0,
        }
    }

    fn day(&self) -> NaiveDate {
        trading_day(self.day_time())
    }
}

/// The chunks the records are logged to.
#[derive(Debug, Clone, Default)]
struct Log {
    /// Records per chunk.
    size: usize,
    /// The chunk being filled, and its id.
    open: Vec<Logged>,
    open_id: u64,
    /// Whether `open` changed since the last `changed_chunks`.
    open_changed: bool,
    /// Chunks filled since the last `changed_chunks`, as JSON.
    filled: Vec<(u64, String)>,
    /// Chunks to remove at the next `changed_chunks`.
    removed: Vec<u64>,
    /// The latest trading day of each chunk's records (the open one's included).
    days: BTreeMap<u64, NaiveDate>,
}

impl Log {
    fn push(&mut self, record: Logged) {
        let day = record.day();
        let latest = self.days.entry(self.open_id).or_insert(day);
        *latest = (*latest).max(day);
        self.open.push(record);
        self.open_changed = true;
        if self.open.len() >= self.size {
            let full = std::mem::take(&mut self.open);
            self.filled.push((self.open_id, encode_chunk(&full)));
            self.open_id += 1;
            self.open_changed = false;
        }
    }
}

fn encode_chunk(records: &[Logged]) -> String {
    // Strings, integers, decimals, timestamps and uuids always serialize.
    serde_json::to_string(records).unwrap_or_else(|e| unreachable!("a chunk serializes: {e}"))
}

/// One fill of a strategy in an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Fill {
    /// Positive for a BUY.
    signed: i128,
    price: Decimal,
    /// `−signed × price − charges`; `None` when beyond `Decimal`'s range.
    cash: Option<Decimal>,
}

/// The fills of one trading day.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct DayFills {
    #[serde(with = "crate::pairs")]
    fills: BTreeMap<At, Fill>,
    /// Sums over every fill of the day (the common case: a question about a time after the
    /// day's last fill).
    qty: i128,
    cash: Option<Decimal>,
}

impl DayFills {
    fn add(&mut self, at: At, fill: Fill) {
        if self.fills.insert(at, fill).is_some() {
            return;
        }
        if self.fills.len() == 1 {
            self.cash = Some(Decimal::ZERO);
        }
        self.qty += fill.signed;
        self.cash = self.cash.zip(fill.cash).and_then(|(a, b)| a.checked_add(b));
    }

    /// Quantity and cash of the fills at or before `t`.
    fn up_to(&self, t: Timestamp) -> (i128, Option<Decimal>) {
        if self
            .fills
            .last_key_value()
            .is_none_or(|(last, _)| last.0 <= t)
        {
            return (self.qty, self.cash);
        }
        let mut qty = 0;
        let mut cash = Some(Decimal::ZERO);
        for f in self.fills.range(..=(t, Uuid::max())).map(|(_, f)| f) {
            qty += f.signed;
            cash = cash.zip(f.cash).and_then(|(a, b)| a.checked_add(b));
        }
        (qty, cash)
    }
}

/// The fills of a strategy in one instrument, by trading day.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Ledger {
    days: BTreeMap<NaiveDate, DayFills>,
    /// Net quantity of every fill (forgotten days' included).
    total: i128,
    /// The price of the latest fill of the forgotten days: the stand-in mark when no mark
    /// and no kept fill precedes a question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    carried_price: Option<Decimal>,
}

impl Ledger {
    /// Net quantity of the fills before day `day`.
    fn before(&self, day: NaiveDate) -> i128 {
        self.total - self.days.range(day..).map(|(_, d)| d.qty).sum::<i128>()
    }

    /// The price of the latest fill below `upto`.
    fn last_fill_price(&self, upto: Bound<At>) -> Option<Decimal> {
        let day = match upto {
            Bound::Included(at) | Bound::Excluded(at) => trading_day(at.0),
            Bound::Unbounded => NaiveDate::MAX,
        };
        self.days
            .range(..=day)
            .rev()
            .find_map(|(_, d)| d.fills.range((Bound::Unbounded, upto)).next_back())
            .map(|(_, f)| f.price)
            .or(self.carried_price)
    }
}

/// Day PnL of every strategy of one broker. It serializes without its fills and marks
/// (those are in the logged chunks, see the module docs), but reads the whole form it was
/// saved in before chunks too.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(from = "Saved")]
pub struct DayPnl {
    ledgers: HashMap<StrategyId, BTreeMap<InstrumentToken, Ledger>>,
    marks: HashMap<InstrumentToken, BTreeMap<At, Decimal>>,
    /// Days before this one are forgotten, and their records ignored if they come later.
    horizon: Option<NaiveDate>,
    /// The chunks records are logged to, when on.
    log: Option<Log>,
    /// The id of the chunk to fill next, as restored (before logging is turned on).
    chunk: u64,
}

/// What a day PnL serializes to: what its logged chunks do not hold.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    horizon: Option<NaiveDate>,
    /// Per strategy and instrument with forgotten fills: their net quantity and the price of
    /// the latest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    carried: Vec<(StrategyId, InstrumentToken, i128, Option<Decimal>)>,
    /// The marks kept from forgotten days (each instrument's latest before the horizon).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    closes: Vec<(InstrumentToken, At, Decimal)>,
    /// The id of the chunk being filled.
    #[serde(default)]
    chunk: u64,
    /// The whole form, as saved before chunks: read, never written.
    #[serde(default, skip_serializing)]
    ledgers: Option<HashMap<StrategyId, BTreeMap<InstrumentToken, Ledger>>>,
    #[serde(default, skip_serializing, deserialize_with = "marks::deserialize")]
    marks: Option<HashMap<InstrumentToken, BTreeMap<At, Decimal>>>,
}

impl From<Saved> for DayPnl {
    fn from(s: Saved) -> Self {
        let mut p = DayPnl {
            ledgers: s.ledgers.unwrap_or_default(),
            marks: s.marks.unwrap_or_default(),
            horizon: s.horizon,
            log: None,
            chunk: s.chunk,
        };
        for (strategy, token, qty, price) in s.carried {
            let ledger = p
                .ledgers
                .entry(strategy)
                .or_default()
                .entry(token)
                .or_default();
            ledger.total += qty;
            ledger.carried_price = price;
        }
        for (token, at, price) in s.closes {
            p.marks.entry(token).or_default().insert(at, price);
        }
        p
    }
}

impl serde::Serialize for DayPnl {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let horizon_start = self.horizon.map(|h| (day_start(h), Uuid::nil()));
        let mut carried = Vec::new();
        for (strategy, ledgers) in &self.ledgers {
            for (token, ledger) in ledgers {
                let kept: i128 = ledger.days.values().map(|d| d.qty).sum();
                let qty = ledger.total - kept;
                if qty != 0 || ledger.carried_price.is_some() {
                    carried.push((strategy.clone(), *token, qty, ledger.carried_price));
                }
            }
        }
        carried.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut closes = Vec::new();
        if let Some(start) = horizon_start {
            for (token, marks) in &self.marks {
                closes.extend(marks.range(..start).map(|(at, p)| (*token, *at, *p)));
            }
        }
        closes.sort_by_key(|c| (c.0, c.1));
        Saved {
            horizon: self.horizon,
            carried,
            closes,
            chunk: self.log.as_ref().map_or(self.chunk, |l| l.open_id),
            ledgers: None,
            marks: None,
        }
        .serialize(ser)
    }
}

/// Serde for the marks: per instrument, its `[at, price]` pairs.
mod marks {
    use super::*;
    use serde::{Deserialize, Deserializer};

    /// The whole form's marks, as saved before chunks (for tests of reading it).
    #[cfg(test)]
    pub fn serialize<S: serde::Serializer>(
        m: &HashMap<InstrumentToken, BTreeMap<At, Decimal>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.iter().collect::<Vec<_>>())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Marks>, D::Error> {
        let m = Option::<HashMap<InstrumentToken, Vec<(At, Decimal)>>>::deserialize(d)?;
        Ok(m.map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect()
        }))
    }
}

impl DayPnl {
    /// A market price of `token` at `at` (`id`: the event that carried it).
    pub fn mark(&mut self, token: InstrumentToken, at: Timestamp, id: Uuid, price: Decimal) {
        self.apply(Logged::M(token, (at, id), price), true);
    }

    /// Turns on logging to chunks (see the module docs), for a checkpoint that writes only
    /// what changed: the fills and marks held now (of a day PnL restored from the whole form,
    /// or one that was not logging) are logged first.
    pub fn log_chunks(&mut self) {
        self.log_chunks_of(CHUNK_RECORDS);
    }

    fn log_chunks_of(&mut self, size: usize) {
        if self.log.is_some() {
            return;
        }
        let mut log = Log {
            size: size.max(1),
            open_id: self.chunk,
            ..Log::default()
        };
        let mut held = Vec::new();
        for (strategy, ledgers) in &self.ledgers {
            for (token, ledger) in ledgers {
                for day in ledger.days.values() {
                    held.extend(
                        day.fills
                            .iter()
                            .map(|(at, f)| Logged::F(strategy.clone(), *token, *at, *f)),
                    );
                }
            }
        }
        for (token, marks) in &self.marks {
            held.extend(
                marks
                    .iter()
                    .filter(|(at, _)| !self.forgotten(at.0))
                    .map(|(at, p)| Logged::M(*token, *at, *p)),
            );
        }
        held.into_iter().for_each(|r| log.push(r));
        self.log = Some(log);
    }

    /// The chunks that changed since the last call (name and JSON; `None`: the chunk is
    /// gone): those filled since, and the one being filled if it changed. Empty when
    /// logging is off.
    pub fn changed_chunks(&mut self) -> Vec<(String, Option<String>)> {
        let Some(log) = &mut self.log else {
            return Vec::new();
        };
        let name = |id: u64| format!("{CHUNK_PREFIX}{id}");
        let mut changed: Vec<(String, Option<String>)> =
            log.removed.drain(..).map(|id| (name(id), None)).collect();
        changed.extend(
            log.filled
                .drain(..)
                .map(|(id, json)| (name(id), Some(json))),
        );
        if std::mem::take(&mut log.open_changed) {
            changed.push((name(log.open_id), Some(encode_chunk(&log.open))));
        }
        changed
    }

    /// Whether a checkpoint part is one of this day PnL's chunks.
    pub fn is_chunk(name: &str) -> bool {
        name.starts_with(CHUNK_PREFIX)
    }

    /// Replays a checkpoint's chunks into a day PnL restored from its serialized rest; the
    /// chunk being filled goes on being filled. An error names the chunk that does not read.
    pub fn restore_chunks<'a>(
        &mut self,
        chunks: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), String> {
        let mut ordered = Vec::new();
        for (name, json) in chunks {
            let id: u64 = name
                .strip_prefix(CHUNK_PREFIX)
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| format!("{name:?} is not a day-PnL chunk"))?;
            ordered.push((id, name, json));
        }
        // In the order they were logged.
        ordered.sort_by_key(|c| c.0);
        for (id, name, json) in ordered {
            let records: Vec<Logged> = serde_json::from_str(json)
                .map_err(|e| format!("the day-PnL chunk {name} does not read: {e}"))?;
            let open = self.log.as_ref().map_or(self.chunk, |l| l.open_id);
            if let (Some(log), Some(day)) = (&mut self.log, records.iter().map(Logged::day).max()) {
                log.days.insert(id, day);
            }
            for r in &records {
                self.apply(r.clone(), false);
            }
            if id == open
                && let Some(log) = &mut self.log
            {
                log.open = records;
            }
        }
        Ok(())
    }

    /// Applies a record; logs it if it is new and `log` is asked and on.
    fn apply(&mut self, r: Logged, log: bool) {
        if self.forgotten(r.day_time()) {
            return;
        }
        let new = match &r {
            Logged::F(strategy, token, at, fill) => {
                let ledger = self
                    .ledgers
                    .entry(strategy.clone())
                    .or_default()
                    .entry(*token)
                    .or_default();
                let day = ledger.days.entry(trading_day(at.0)).or_default();
                let before = day.fills.len();
                day.add(*at, *fill);
                let new = day.fills.len() > before;
                if new {
                    ledger.total += fill.signed;
                }
                new
            }
            Logged::M(token, at, price) => {
                self.marks.entry(*token).or_default().insert(*at, *price) != Some(*price)
            }
        };
        if new
            && log
            && let Some(l) = &mut self.log
        {
            l.push(r);
        }
    }

    /// Whether `t` is on a day [`forget_before`](Self::forget_before) dropped.
    fn forgotten(&self, t: Timestamp) -> bool {
        self.horizon.is_some_and(|h| trading_day(t) < h)
    }

    /// Forgets what no question about `day` or later needs: the fills of earlier days (their
    /// net quantity stays in each ledger's total, the latest one's price as the stand-in
    /// mark) and every mark before `day` but each instrument's latest. A fill or mark of an
    /// earlier day that comes afterwards is ignored, and a question about an earlier day is
    /// answered from what is left (not exactly). Returns whether anything was forgotten now
    /// (`day` is later than the last call's).
    pub fn forget_before(&mut self, day: NaiveDate) -> bool {
        if self.horizon.is_some_and(|h| h >= day) {
            return false;
        }
        self.horizon = Some(day);
        for ledgers in self.ledgers.values_mut() {
            for ledger in ledgers.values_mut() {
                let kept = ledger.days.split_off(&day);
                let old = std::mem::replace(&mut ledger.days, kept);
                if let Some(price) = old
                    .values()
                    .rev()
                    .find_map(|d| d.fills.last_key_value().map(|(_, f)| f.price))
                {
                    ledger.carried_price = Some(price);
                }
            }
        }
        let start = (day_start(day), Uuid::nil());
        for marks in self.marks.values_mut() {
            let kept = marks.split_off(&start);
            let close = marks.pop_last();
            *marks = kept;
            if let Some((at, price)) = close {
                marks.insert(at, price);
            }
        }
        if let Some(log) = &mut self.log {
            let gone: Vec<u64> = log
                .days
                .iter()
                .filter(|(_, latest)| **latest < day)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                log.days.remove(&id);
                log.filled.retain(|(f, _)| *f != id);
                if id == log.open_id {
                    log.open.clear();
                    log.open_changed = false;
                }
                log.removed.push(id);
            }
        }
        true
    }

    /// How many fills and marks are kept (for tests and sizing).
    pub fn records(&self) -> usize {
        let fills: usize = self
            .ledgers
            .values()
            .flat_map(|l| l.values())
            .flat_map(|l| l.days.values())
            .map(|d| d.fills.len())
            .sum();
        fills + self.marks.values().map(BTreeMap::len).sum::<usize>()
    }

    /// A fill of the broker (`id`: its event id). A copy of a fill already applied changes
    /// nothing.
    pub fn fill(&mut self, id: Uuid, f: &OrderFilled) {
        let signed = i128::from(f.side.sign()) * i128::from(f.quantity.get());
        let price = f.fill_price.get();
        let cash = Decimal::try_from_i128_with_scale(-signed, 0)
            .ok()
            .and_then(|q| q.checked_mul(price))
            .and_then(|c| c.checked_sub(f.fees));
        self.apply(
            Logged::F(
                f.strategy_id.clone(),
                f.instrument_token,
                (f.timestamp, id),
                Fill {
                    signed,
                    price,
                    cash,
                },
            ),
            true,
        );
    }

    /// The latest mark of `token` below `upto`, else the strategy's latest fill price there.
    fn mark_below(
        &self,
        token: InstrumentToken,
        ledger: &Ledger,
        upto: Bound<At>,
    ) -> Option<Decimal> {
        self.marks
            .get(&token)
            .and_then(|m| m.range((Bound::Unbounded, upto)).next_back())
            .map(|(_, p)| *p)
            .or_else(|| ledger.last_fill_price(upto))
    }

    /// `strategy`'s PnL on the trading day of `t`, as of `t`; `None` when a figure is
    /// beyond `Decimal`'s range.
    pub fn as_of(&self, strategy: &StrategyId, t: Timestamp) -> Option<Decimal> {
        let Some(ledgers) = self.ledgers.get(strategy) else {
            return Some(Decimal::ZERO);
        };
        let day = trading_day(t);
        let now = Bound::Included((t, Uuid::max()));
        let open = Bound::Excluded((day_start(day), Uuid::nil()));
        let mut pnl = Decimal::ZERO;
        for (token, ledger) in ledgers {
            let carried = ledger.before(day);
            let (qty, cash) = ledger
                .days
                .get(&day)
                .map_or((0, Some(Decimal::ZERO)), |d| d.up_to(t));
            let held = carried + qty;
            let value = |q: i128, mark: Option<Decimal>| {
                if q == 0 {
                    return Some(Decimal::ZERO);
                }
                Decimal::try_from_i128_with_scale(q, 0)
                    .ok()?
                    .checked_mul(mark.unwrap_or_default())
            };
            let close = value(carried, self.mark_below(*token, ledger, open));
            let marked = value(held, self.mark_below(*token, ledger, now));
            pnl = pnl
                .checked_add(cash?)?
                .checked_add(marked?)?
                .checked_sub(close?)?;
        }
        Some(pnl)
    }
}

/// The instant NSE day `day` starts (00:00 IST): records before it belong to earlier days.
fn day_start(day: NaiveDate) -> Timestamp {
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_local_timezone(crate::risk::ist())
        .single()
        .map(|t| t.to_utc())
        .unwrap_or_default();
    Timestamp(midnight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alpha_panda_core::{AccountId, BrokerName, ExecutionMode, OrderId, Price, Quantity, Side};
    use proptest::prelude::*;

    /// 2024-01-15 09:30 IST plus `secs`.
    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_705_291_200_000 + secs * 1000).unwrap()
    }

    const DAY: i64 = 24 * 3600;

    fn fill(
        strategy: &str,
        token: u32,
        side: Side,
        qty: u64,
        price: Decimal,
        fees: Decimal,
        secs: i64,
    ) -> OrderFilled {
        OrderFilled {
            order_id: OrderId::new("o").unwrap(),
            instrument_token: InstrumentToken(token),
            side,
            quantity: Quantity::new(qty).unwrap(),
            fill_price: Price::new(price).unwrap(),
            fees,
            strategy_id: StrategyId::new(strategy).unwrap(),
            account: AccountId::new("acc").unwrap(),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: at(secs),
            trade_id: None,
        }
    }

    fn d(n: i64) -> Decimal {
        Decimal::from(n)
    }

    #[test]
    fn realized_and_marked_pnl_of_the_day_count_a_carried_position_from_the_previous_close() {
        let s = StrategyId::new("s").unwrap();
        let mut p = DayPnl::default();
        // Day 1: buy 10 at 100 (fees 1), marked at 90 later that day.
        p.fill(
            Uuid::from_u128(1),
            &fill("s", 1, Side::Buy, 10, d(100), d(1), 0),
        );
        assert_eq!(
            p.as_of(&s, at(0)),
            Some(d(-1)),
            "only the fees: marked at its own price"
        );
        p.mark(InstrumentToken(1), at(60), Uuid::from_u128(2), d(90));
        assert_eq!(
            p.as_of(&s, at(59)),
            Some(d(-1)),
            "the mark after 59 s is left out"
        );
        assert_eq!(p.as_of(&s, at(60)), Some(d(-101)));
        // Day 2: the 10 carried are worth 90 at the open; marked at 95, then 5 sold at 97
        // (fees 2): 5 × (97 − 90) realized, 5 × (95 − 90) marked, less 2.
        p.mark(InstrumentToken(1), at(DAY + 10), Uuid::from_u128(3), d(95));
        assert_eq!(p.as_of(&s, at(DAY)), Some(d(0)), "a new day starts at zero");
        assert_eq!(p.as_of(&s, at(DAY + 10)), Some(d(50)));
        p.fill(
            Uuid::from_u128(4),
            &fill("s", 1, Side::Sell, 5, d(97), d(2), DAY + 20),
        );
        assert_eq!(p.as_of(&s, at(DAY + 20)), Some(d(5 * 7 + 5 * 5 - 2)));
        // A copy of a fill changes nothing; another strategy has nothing.
        p.fill(
            Uuid::from_u128(4),
            &fill("s", 1, Side::Sell, 5, d(97), d(2), DAY + 20),
        );
        assert_eq!(p.as_of(&s, at(DAY + 20)), Some(d(58)));
        assert_eq!(
            p.as_of(&StrategyId::new("t").unwrap(), at(DAY + 20)),
            Some(d(0))
        );
        // Day 1 asked again later: the same figure as before.
        assert_eq!(p.as_of(&s, at(60)), Some(d(-101)));
    }

    /// A record: a fill (strategy, token, buy, qty, price in paise, fees in paise) or a
    /// mark (token, price in paise), at (seconds, id).
    #[derive(Debug, Clone)]
    enum Rec {
        Fill(usize, u32, bool, u64, i64, i64, i64, u128),
        Mark(u32, i64, i64, u128),
    }

    fn secs() -> impl Strategy<Value = i64> {
        // Three days, with ties.
        (
            0i64..3,
            prop::sample::select(vec![0i64, 10, 10, 500, 20_000]),
        )
            .prop_map(|(day, s)| day * DAY + s)
    }

    fn rec() -> impl Strategy<Value = Rec> {
        prop_oneof![
            (
                0usize..2,
                1u32..3,
                any::<bool>(),
                1u64..50,
                1i64..100_000,
                0i64..500,
                secs(),
                0u128..20
            )
                .prop_map(|(s, t, b, q, p, f, at, id)| Rec::Fill(s, t, b, q, p, f, at, id)),
            (1u32..3, 1i64..100_000, secs(), 0u128..20).prop_map(|(t, p, at, id)| Rec::Mark(
                t,
                p,
                at,
                id + 100
            )),
        ]
    }

    fn apply(p: &mut DayPnl, r: &Rec) {
        match *r {
            Rec::Fill(s, t, buy, q, price, fees, secs, id) => p.fill(
                Uuid::from_u128(id),
                &fill(
                    ["s1", "s2"][s],
                    t,
                    if buy { Side::Buy } else { Side::Sell },
                    q,
                    Decimal::new(price, 2),
                    Decimal::new(fees, 2),
                    secs,
                ),
            ),
            Rec::Mark(t, price, secs, id) => p.mark(
                InstrumentToken(t),
                at(secs),
                Uuid::from_u128(id),
                Decimal::new(price, 2),
            ),
        }
    }

    /// The figure computed from the whole set of records by a plain scan, as the module
    /// docs define it.
    fn reference(recs: &[Rec], s: usize, t: Timestamp) -> Decimal {
        // The first copy of an id wins (a fill is applied once).
        let mut fills: BTreeMap<(u32, At), (i128, Decimal, Decimal)> = BTreeMap::new();
        for r in recs {
            if let Rec::Fill(fs, tok, buy, q, price, fees, secs, id) = *r {
                let key = (tok, (at(secs), Uuid::from_u128(id)));
                if fs == s {
                    fills.entry(key).or_insert((
                        if buy { i128::from(q) } else { -i128::from(q) },
                        Decimal::new(price, 2),
                        Decimal::new(fees, 2),
                    ));
                }
            }
        }
        let mut marks: BTreeMap<(u32, At), Decimal> = BTreeMap::new();
        for r in recs {
            if let Rec::Mark(tok, price, secs, id) = *r {
                marks.insert(
                    (tok, (at(secs), Uuid::from_u128(id))),
                    Decimal::new(price, 2),
                );
            }
        }
        let day = trading_day(t);
        let start = day_start(day);
        let mut pnl = Decimal::ZERO;
        for tok in 1u32..3 {
            let own: Vec<_> = fills.iter().filter(|((k, _), _)| *k == tok).collect();
            if own.is_empty() {
                continue;
            }
            let price_below = |before: &dyn Fn(&At) -> bool| {
                marks
                    .iter()
                    .filter(|((k, a), _)| *k == tok && before(a))
                    .map(|(_, p)| *p)
                    .next_back()
                    .or_else(|| {
                        own.iter()
                            .filter(|((_, a), _)| before(a))
                            .map(|(_, f)| f.1)
                            .next_back()
                    })
                    .unwrap_or_default()
            };
            let carried: i128 = own
                .iter()
                .filter(|((_, a), _)| a.0 < start)
                .map(|(_, f)| f.0)
                .sum();
            let today: Vec<_> = own
                .iter()
                .filter(|((_, a), _)| a.0 >= start && a.0 <= t)
                .collect();
            let held = carried + today.iter().map(|(_, f)| f.0).sum::<i128>();
            for (_, (q, price, fees)) in &today {
                pnl += -Decimal::from(*q as i64) * *price - *fees;
            }
            pnl += Decimal::from(held as i64) * price_below(&|a: &At| a.0 <= t);
            pnl -= Decimal::from(carried as i64) * price_below(&|a: &At| a.0 < start);
        }
        pnl
    }

    /// Applies the chunks that changed to a checkpoint's parts, as the unit does.
    fn take(p: &mut DayPnl, parts: &mut BTreeMap<String, String>) {
        for (name, json) in p.changed_chunks() {
            match json {
                Some(json) => parts.insert(name, json),
                None => parts.remove(&name),
            };
        }
    }

    /// A day PnL made from `p`'s serialized rest and these parts, logging to chunks of `size`
    /// as a risk stage's would.
    fn restored(p: &DayPnl, parts: &BTreeMap<String, String>, size: usize) -> DayPnl {
        let mut q: DayPnl = serde_json::from_value(serde_json::to_value(p).unwrap()).unwrap();
        q.log_chunks_of(size);
        q.restore_chunks(parts.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .unwrap();
        q
    }

    #[test]
    fn a_checkpoint_writes_the_records_since_the_last_one_not_the_days_every_record() {
        let mut p = DayPnl::default();
        p.log_chunks();
        let mut parts = BTreeMap::new();
        let mut largest = 0;
        for i in 0..20_000i64 {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            p.fill(
                Uuid::from_u128(i as u128),
                &fill("s", (i % 12) as u32, side, 1, d(100 + i % 7), d(1), i),
            );
            p.mark(
                InstrumentToken((i % 12) as u32),
                at(i),
                Uuid::from_u128(1_000_000 + i as u128),
                d(100 + i % 5),
            );
            if i % 50 == 0 {
                let written: usize = p
                    .changed_chunks()
                    .into_iter()
                    .map(|(name, json)| {
                        let n = json.as_ref().map_or(0, String::len);
                        match json {
                            Some(json) => parts.insert(name, json),
                            None => parts.remove(&name),
                        };
                        n
                    })
                    .sum();
                largest = largest.max(written + serde_json::to_string(&p).unwrap().len());
            }
        }
        take(&mut p, &mut parts);
        assert_eq!(p.records(), 40_000);
        // 100 records a batch, and at most one filled chunk besides the open one.
        assert!(
            largest < 2 * CHUNK_RECORDS * 200,
            "a checkpoint wrote {largest} bytes"
        );
        let total: usize = parts.values().map(String::len).sum();
        assert!(total > 20 * largest, "the day's records: {total} bytes");
        let q = restored(&p, &parts, CHUNK_RECORDS);
        assert_eq!(q.records(), p.records());
        let s = StrategyId::new("s").unwrap();
        for t in [0, 7_777, 19_999] {
            assert_eq!(q.as_of(&s, at(t)), p.as_of(&s, at(t)));
        }
    }

    #[test]
    fn a_day_pnl_saved_whole_before_chunks_reads_and_is_logged_to_chunks() {
        let mut p = DayPnl::default();
        for i in 0..9i64 {
            p.fill(
                Uuid::from_u128(i as u128),
                &fill("s", 1, Side::Buy, 1, d(100 + i), d(0), i * 3_600 * 5),
            );
            p.mark(
                InstrumentToken(1),
                at(i * 3_600 * 5 + 1),
                Uuid::from_u128(100 + i as u128),
                d(99 + i),
            );
        }
        p.forget_before(trading_day(at(DAY)));
        #[derive(serde::Serialize)]
        struct Whole<'a> {
            ledgers: &'a HashMap<StrategyId, BTreeMap<InstrumentToken, Ledger>>,
            #[serde(with = "marks")]
            marks: &'a HashMap<InstrumentToken, BTreeMap<At, Decimal>>,
            horizon: Option<NaiveDate>,
        }
        let whole = serde_json::to_value(Whole {
            ledgers: &p.ledgers,
            marks: &p.marks,
            horizon: p.horizon,
        })
        .unwrap();
        let mut q: DayPnl = serde_json::from_value(whole).unwrap();
        q.log_chunks_of(4);
        let mut parts = BTreeMap::new();
        take(&mut q, &mut parts);
        assert!(parts.len() >= 2, "every kept record is logged: {parts:?}");
        let r = restored(&q, &parts, 4);
        let s = StrategyId::new("s").unwrap();
        for t in [DAY, DAY + 3_600 * 6, 2 * DAY, 3 * DAY] {
            assert_eq!(r.as_of(&s, at(t)), p.as_of(&s, at(t)), "at {t}");
        }
        assert_eq!(r.records(), p.records());
    }

    proptest! {
        /// A day PnL restored from any checkpoint (its rest and its chunks), with the
        /// records since that checkpoint applied again, answers as the one that went on,
        /// whatever the chunk size, the days forgotten and the copies among the records.
        #[test]
        fn a_day_pnl_restored_from_its_chunks_answers_as_the_one_that_went_on(
            recs in prop::collection::vec(rec(), 1..60),
            size in 1usize..6,
            checkpoints in prop::collection::vec(any::<bool>(), 60),
            crash in any::<prop::sample::Index>(),
            cut in prop::option::of(1i64..3),
            queries in prop::collection::vec((0usize..2, secs()), 1..10),
        ) {
            let mut seen = std::collections::HashSet::new();
            let recs: Vec<Rec> = recs
                .into_iter()
                .filter(|r| match r {
                    Rec::Fill(s, t, _, _, _, _, secs, id) => seen.insert((*s, *t, *secs, *id)),
                    Rec::Mark(t, _, secs, id) => seen.insert((9, *t, *secs, *id)),
                })
                .collect();
            let forget_at = recs.len() / 2;
            let mut went_on = DayPnl::default();
            for (i, r) in recs.iter().enumerate() {
                if i == forget_at && let Some(cut) = cut {
                    went_on.forget_before(trading_day(at(cut * DAY)));
                }
                apply(&mut went_on, r);
            }
            let mut p = DayPnl::default();
            p.log_chunks_of(size);
            let mut parts = BTreeMap::new();
            // The last checkpoint: the rest, the parts and the records it holds.
            let mut saved = (serde_json::to_value(&p).unwrap(), parts.clone(), 0usize);
            let crash = crash.index(recs.len());
            let mut i = 0;
            let mut crashed = false;
            while i < recs.len() {
                if i == forget_at && let Some(cut) = cut {
                    p.forget_before(trading_day(at(cut * DAY)));
                }
                apply(&mut p, &recs[i]);
                i += 1;
                if checkpoints[i % checkpoints.len()] {
                    take(&mut p, &mut parts);
                    saved = (serde_json::to_value(&p).unwrap(), parts.clone(), i);
                }
                if i == crash + 1 && !crashed {
                    // A crash: restore the last checkpoint and handle what follows it again.
                    crashed = true;
                    let mut q: DayPnl = serde_json::from_value(saved.0.clone()).unwrap();
                    q.log_chunks_of(size);
                    q.restore_chunks(saved.1.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
                    parts = saved.1.clone();
                    p = q;
                    i = saved.2;
                }
            }
            take(&mut p, &mut parts);
            let r = restored(&p, &parts, size);
            for (s, secs) in queries {
                if cut.is_some_and(|c| secs / DAY < c) {
                    continue;
                }
                let strategy = StrategyId::new(["s1", "s2"][s]).unwrap();
                let t = at(secs);
                let want = went_on.as_of(&strategy, t);
                prop_assert_eq!(p.as_of(&strategy, t), want);
                prop_assert_eq!(r.as_of(&strategy, t), want);
            }
        }

        /// Whatever order the fills and marks arrive in (copies included), each strategy's
        /// figure at any time is the one a plain scan of the records gives, and only records
        /// at or before that time count.
        #[test]
        fn day_pnl_depends_on_the_records_and_their_times_not_on_arrival_order(
            recs in prop::collection::vec(rec(), 1..40),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
            queries in prop::collection::vec((0usize..2, secs()), 1..10),
        ) {
            // One event id is one record: drop generated records that reuse another's
            // (time, id) with other contents.
            let mut seen = std::collections::HashSet::new();
            let recs: Vec<Rec> = recs
                .into_iter()
                .filter(|r| match r {
                    Rec::Fill(s, t, _, _, _, _, secs, id) => seen.insert((*s, *t, *secs, *id)),
                    Rec::Mark(t, _, secs, id) => seen.insert((9, *t, *secs, *id)),
                })
                .collect();
            let mut arrived = recs.clone();
            for (i, pick) in order.iter().enumerate() {
                let n = arrived.len();
                arrived.swap(i % n, pick.index(n));
            }
            // Copies of some records arrive again.
            arrived.extend(order.iter().take(5).map(|pick| recs[pick.index(recs.len())].clone()));
            let (mut first, mut shuffled) = (DayPnl::default(), DayPnl::default());
            recs.iter().for_each(|r| apply(&mut first, r));
            arrived.iter().for_each(|r| apply(&mut shuffled, r));
            for (s, secs) in queries {
                let strategy = StrategyId::new(["s1", "s2"][s]).unwrap();
                let t = at(secs);
                let want = reference(&recs, s, t);
                prop_assert_eq!(first.as_of(&strategy, t), Some(want));
                prop_assert_eq!(shuffled.as_of(&strategy, t), Some(want));
            }
        }

        /// Forgetting the days before `cut` changes no answer about `cut` or later: the
        /// records of earlier days came before the cut (copies of them may come after, and
        /// are ignored), those of later days before or after it.
        #[test]
        fn forgetting_earlier_days_changes_no_answer_about_later_ones(
            recs in prop::collection::vec(rec(), 1..40),
            cut in 1i64..3,
            late in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
            queries in prop::collection::vec((0usize..2, secs()), 1..10),
        ) {
            let mut seen = std::collections::HashSet::new();
            let recs: Vec<Rec> = recs
                .into_iter()
                .filter(|r| match r {
                    Rec::Fill(s, t, _, _, _, _, secs, id) => seen.insert((*s, *t, *secs, *id)),
                    Rec::Mark(t, _, secs, id) => seen.insert((9, *t, *secs, *id)),
                })
                .collect();
            let day_of = |r: &Rec| match *r {
                Rec::Fill(.., secs, _) | Rec::Mark(_, _, secs, _) => secs / DAY,
            };
            let (before, after): (Vec<&Rec>, Vec<&Rec>) =
                recs.iter().partition(|r| day_of(r) < cut);
            let mut whole = DayPnl::default();
            recs.iter().for_each(|r| apply(&mut whole, r));
            let mut kept = DayPnl::default();
            // Chunks of two: the days' chunks are dropped as a whole or kept.
            kept.log_chunks_of(2);
            let mut parts = BTreeMap::new();
            before.iter().for_each(|r| apply(&mut kept, r));
            take(&mut kept, &mut parts);
            prop_assert!(kept.forget_before(trading_day(at(cut * DAY))));
            prop_assert!(!kept.forget_before(trading_day(at(cut * DAY))), "once a day");
            after.iter().for_each(|r| apply(&mut kept, r));
            for pick in &late {
                if !before.is_empty() {
                    apply(&mut kept, before[pick.index(before.len())]);
                }
            }
            take(&mut kept, &mut parts);
            let kept = restored(&kept, &parts, 2);
            prop_assert!(kept.records() <= whole.records());
            for (s, secs) in queries {
                if secs / DAY < cut {
                    continue;
                }
                let strategy = StrategyId::new(["s1", "s2"][s]).unwrap();
                let t = at(secs);
                prop_assert_eq!(kept.as_of(&strategy, t), whole.as_of(&strategy, t));
            }
        }
    }
}
