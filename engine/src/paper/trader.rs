//! The paper trader of one broker: validated signals become orders, orders fill at once or
//! rest until a later tick reaches them, and each strategy's holdings and cash follow the
//! fills. Pure and deterministic: no I/O, no clock; the trader stage feeds it
//! `{broker}.signals.validated` and `market.ticks` and publishes what it emits.
//!
//! Results depend on the records and their event times, never on how the two topics
//! interleave on arrival:
//! - An order placed at event time `T` (its signal's tick) fills at once against that tick
//!   (the first of its instrument's ticks at `T` when several share that time), or rests
//!   and is matched against its instrument's ticks *after* `T`, in event time.
//!   Ticks are buffered per instrument (the last [`TICK_WINDOW_SECS`] of event time), so an
//!   order that arrives after later ticks is matched against them as if it had come first.
//! - An order that needs its instrument's ticks up to `T` (any non-MARKET order, or any
//!   order of a strategy with orders resting or waiting on that instrument) waits until a
//!   tick at or after `T` arrives.
//! - The short-selling check counts the strategy's holding *as of `T`*: fills of resting
//!   orders later than `T` are left out, resting SELLs open at `T` are counted.
//! - Cash spans a strategy's instruments, which sit in different partitions: a BUY blocks
//!   its estimated cost (limit or slipped reference price, with charges) when placed, as a
//!   broker blocks margin, and is charged its real cost when it fills. Whether a BUY finds
//!   enough cash can depend on how two instruments' records interleave; while cash does
//!   not bind, nothing does.
//! - A figure that cannot be counted (a price, cost, charge or cash beyond `Decimal`'s
//!   range, a quantity beyond `i64`, a SELL slipped below zero) fails the order
//!   (`orders.failed`, naming the figure); every figure of a fill is computed before
//!   holdings and cash change, so such a failure leaves them as they were.
//!
//! Replays: records replayed to rebuild the state emit nothing new, except where a record
//! handled live in this run took part (a resting order replayed after the live tick that
//! fills it): those emissions are marked `live` and must still be published. Their ids
//! are the order's deterministic child ids, so a copy already published is a duplicate.

use std::collections::VecDeque;

use crate::{FastMap, FastSet};

use alpha_panda_config::FillModel;
use alpha_panda_core::events::{
    MarketTick, OrderAck, OrderFailed, OrderFilled, OrderPlaced, ValidatedSignal,
};
use alpha_panda_core::{
    AccountId, BrokerName, Decimal, EventBroker, EventData, EventEnvelope, ExecutionMode,
    InstrumentToken, Lineage, OrderId, OrderType, Price, Side, StrategyId, Timestamp,
};
use alpha_panda_topics::{BrokerTopic, keys};

use super::charges::charges;
use super::fills::{PaperBook, PaperEvent, PaperOrder};

/// How much event time of ticks the trader keeps per instrument. A DAY order can only fill
/// before the close of its day, so a day's worth covers any order that arrives less than a
/// day of event time behind its instrument's ticks.
pub const TICK_WINDOW_SECS: i64 = 24 * 60 * 60;

/// At most this many ticks are kept per instrument, so the trader's checkpoint stays
/// bounded (about 30 bytes a tick): a LIMIT or SL order arriving further behind its
/// instrument's ticks than this fails with the reason, as one older than the event-time
/// window does. MARKET orders never need the buffer.
pub const TICK_WINDOW_TICKS: usize = 1024;

/// Ticks per checkpoint part of an instrument's buffer (see [`PaperTrader::log_parts`]):
/// a checkpoint rewrites at most this many of an instrument's ticks, about 30 bytes each.
pub const TICK_CHUNK: u64 = 64;

/// The part name of a chunk of an instrument's ticks: `ticks.{token}.{chunk}`.
const TICKS_PREFIX: &str = "ticks.";

/// What saving in parts keeps: the tick chunks changed and gone since the last
/// `changed_parts`.
#[derive(Debug, Default)]
struct TickParts {
    changed: FastSet<(InstrumentToken, u64)>,
    removed: Vec<(InstrumentToken, u64)>,
}

/// A chunk of an instrument's ticks as a part: the sequence number of its first tick, and
/// the ticks.
#[derive(serde::Serialize, serde::Deserialize)]
struct TickChunk {
    from: u64,
    ticks: Vec<SeenTick>,
}

/// An event the trader produced: an order lifecycle event as a child of its validated
/// signal. `live`: a record handled live in this run took part (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub topic: BrokerTopic,
    pub envelope: EventEnvelope,
    pub live: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(
    into = "(i64, u32, Decimal, bool)",
    try_from = "(i64, u32, Decimal, bool)"
)]
struct SeenTick {
    at: Timestamp,
    price: Decimal,
    live: bool,
}

/// A tick in a checkpoint: `[seconds, nanoseconds, price, live]`, about 30 bytes.
impl From<SeenTick> for (i64, u32, Decimal, bool) {
    fn from(t: SeenTick) -> Self {
        (
            t.at.0.timestamp(),
            t.at.0.timestamp_subsec_nanos(),
            t.price,
            t.live,
        )
    }
}

impl TryFrom<(i64, u32, Decimal, bool)> for SeenTick {
    type Error = String;
    fn try_from((secs, nanos, price, live): (i64, u32, Decimal, bool)) -> Result<Self, String> {
        let at = chrono::DateTime::from_timestamp(secs, nanos)
            .ok_or_else(|| format!("a tick time of {secs} s {nanos} ns is out of range"))?;
        Ok(Self {
            at: Timestamp(at),
            price,
            live,
        })
    }
}

/// A validated signal on its way to becoming an order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Incoming {
    /// The validated signal's envelope, as far as its children need it.
    parent: Lineage,
    signal: ValidatedSignal,
    live: bool,
    /// Trading was HALTED for its broker or strategy when it arrived.
    halted: bool,
}

impl Incoming {
    fn strategy(&self) -> &StrategyId {
        &self.signal.original_signal.strategy_id
    }
    fn token(&self) -> InstrumentToken {
        self.signal.original_signal.instrument_token
    }
    fn side(&self) -> Side {
        self.signal.original_signal.signal_type
    }
    fn at(&self) -> Timestamp {
        self.signal.timestamp
    }
    fn order_id(&self) -> OrderId {
        // Derived from the validated signal's id: stable across replays. Truly unreachable:
        // "paper-" and 32 hex digits are 38 bytes without whitespace, control characters or
        // '|', which is all `OrderId::new` refuses.
        OrderId::new(format!("paper-{}", self.parent.id.simple()))
            .unwrap_or_else(|e| unreachable!("a uuid makes a valid order id: {e}"))
    }
}

/// A resting order: what settling it needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Open {
    order: Incoming,
    /// Cash blocked for it (BUY).
    blocked: Decimal,
}

/// A resting order that settled after it was placed: what it changed, and when, so a later
/// order can see the strategy's holding as it was at its own time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Change {
    at: Timestamp,
    held: i64,
    sells_released: u64,
}

type Holding = (StrategyId, InstrumentToken);

/// The trader's state in a checkpoint: everything but its configuration (broker, account,
/// fill model, instruments), which comes from the settings it is restored with.
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    resting_orders: &'a PaperBook,
    open: Vec<&'a Open>,
    waiting: Vec<(&'a InstrumentToken, &'a Vec<Incoming>)>,
    ticks: Vec<(&'a InstrumentToken, &'a VecDeque<SeenTick>)>,
    pruned: Vec<(&'a InstrumentToken, &'a Timestamp)>,
    holdings: Vec<(&'a Holding, &'a i64)>,
    resting_sells: Vec<(&'a Holding, &'a u128)>,
    resting: Vec<(&'a Holding, &'a usize)>,
    changes: Vec<(&'a Holding, &'a VecDeque<Change>)>,
    cash: Vec<(&'a StrategyId, &'a Decimal)>,
    blocked: Vec<(&'a StrategyId, &'a Decimal)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    front: Vec<(&'a InstrumentToken, &'a u64)>,
}

/// What [`SavedRef`] wrote, read back.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    resting_orders: PaperBook,
    open: Vec<Open>,
    #[serde(with = "crate::pairs")]
    waiting: FastMap<InstrumentToken, Vec<Incoming>>,
    #[serde(with = "crate::pairs")]
    ticks: FastMap<InstrumentToken, VecDeque<SeenTick>>,
    #[serde(with = "crate::pairs")]
    pruned: FastMap<InstrumentToken, Timestamp>,
    #[serde(with = "crate::pairs")]
    holdings: FastMap<Holding, i64>,
    #[serde(with = "crate::pairs")]
    resting_sells: FastMap<Holding, u128>,
    #[serde(with = "crate::pairs")]
    resting: FastMap<Holding, usize>,
    #[serde(with = "crate::pairs")]
    changes: FastMap<Holding, VecDeque<Change>>,
    #[serde(with = "crate::pairs")]
    cash: FastMap<StrategyId, Decimal>,
    #[serde(with = "crate::pairs")]
    blocked: FastMap<StrategyId, Decimal>,
    #[serde(default, with = "crate::pairs")]
    front: FastMap<InstrumentToken, u64>,
}

#[derive(Debug)]
pub struct PaperTrader {
    broker: BrokerName,
    account: AccountId,
    model: FillModel,
    /// Instruments the broker's strategies trade: the ones whose ticks are followed.
    instruments: FastSet<InstrumentToken>,
    book: PaperBook,
    open: FastMap<OrderId, Open>,
    waiting: FastMap<InstrumentToken, Vec<Incoming>>,
    ticks: FastMap<InstrumentToken, VecDeque<SeenTick>>,
    /// Per instrument, the newest tick dropped from the buffer.
    pruned: FastMap<InstrumentToken, Timestamp>,
    /// Per instrument, the sequence number of the buffer's first tick (how many were
    /// dropped before it).
    front: FastMap<InstrumentToken, u64>,
    /// Saving in parts, when on: the tick chunks to write.
    parts: Option<TickParts>,
    holdings: FastMap<Holding, i64>,
    /// Quantity of resting SELLs (each at most `i64::MAX`, so their sum fits in a `u128`).
    resting_sells: FastMap<Holding, u128>,
    resting: FastMap<Holding, usize>,
    changes: FastMap<Holding, VecDeque<Change>>,
    cash: FastMap<StrategyId, Decimal>,
    blocked: FastMap<StrategyId, Decimal>,
    /// Emit `order_placed` and `order_ack` (see [`PaperTrader::fills_and_failures_only`]).
    lifecycle: bool,
}

impl PaperTrader {
    pub fn new(
        broker: BrokerName,
        account: AccountId,
        model: FillModel,
        instruments: impl IntoIterator<Item = InstrumentToken>,
    ) -> Self {
        Self {
            broker,
            account,
            book: PaperBook::new(model.slippage_bps),
            model,
            instruments: instruments.into_iter().collect(),
            open: FastMap::default(),
            waiting: FastMap::default(),
            ticks: FastMap::default(),
            pruned: FastMap::default(),
            front: FastMap::default(),
            parts: None,
            holdings: FastMap::default(),
            resting_sells: FastMap::default(),
            resting: FastMap::default(),
            changes: FastMap::default(),
            cash: FastMap::default(),
            blocked: FastMap::default(),
            lifecycle: true,
        }
    }

    /// The trader of a paper broker of `settings`, following the instruments of every
    /// strategy that names the broker; an error if `broker` is not a configured paper broker.
    pub fn for_broker(
        settings: &alpha_panda_config::Settings,
        broker: &BrokerName,
    ) -> Result<Self, String> {
        let def = settings
            .brokers
            .get(broker)
            .filter(|b| b.kind == alpha_panda_config::BrokerKind::Paper)
            .ok_or_else(|| format!("{broker} is not a paper broker"))?;
        let instruments = settings
            .strategies
            .iter()
            .filter(|s| s.brokers.contains(broker))
            .flat_map(|s| s.instruments.iter().copied());
        Ok(Self::new(
            broker.clone(),
            def.account.clone(),
            def.fill_model.clone(),
            instruments,
        ))
    }

    /// A trader that emits only what settles an order (`order_filled`, `order_failed`),
    /// not `order_placed` and `order_ack`: for a driver that reads nothing else (the
    /// backtest loop). Every other emission, id and state change is the same.
    pub fn fills_and_failures_only(mut self) -> Self {
        self.lifecycle = false;
        self
    }

    /// The trader's state as JSON, for a checkpoint (its configuration is not in it).
    pub fn save(&self) -> serde_json::Value {
        let saved = SavedRef {
            resting_orders: &self.book,
            open: self.open.values().collect(),
            waiting: self.waiting.iter().collect(),
            // Saved in parts, the ticks are not in the state.
            ticks: if self.parts.is_some() {
                Vec::new()
            } else {
                self.ticks.iter().collect()
            },
            pruned: self.pruned.iter().collect(),
            holdings: self.holdings.iter().collect(),
            resting_sells: self.resting_sells.iter().collect(),
            resting: self.resting.iter().collect(),
            changes: self.changes.iter().collect(),
            cash: self.cash.iter().collect(),
            blocked: self.blocked.iter().collect(),
            front: self.front.iter().collect(),
        };
        // Lists, decimals, integers, ids and timestamps always serialize.
        serde_json::to_value(saved)
            .unwrap_or_else(|e| unreachable!("a paper trader's state serializes: {e}"))
    }

    /// Takes the state [`save`](Self::save) made; this trader's configuration stays. An
    /// error says what does not read, and leaves the trader as it was.
    pub fn restore(&mut self, saved: serde_json::Value) -> Result<(), String> {
        let s: Saved = serde_json::from_value(saved)
            .map_err(|e| format!("the paper trader's state does not read: {e}"))?;
        let mut book = s.resting_orders;
        book.set_slippage(self.model.slippage_bps);
        self.book = book;
        self.open = s
            .open
            .into_iter()
            .map(|o| (o.order.order_id(), o))
            .collect();
        self.waiting = s.waiting;
        self.ticks = s.ticks;
        self.pruned = s.pruned;
        self.holdings = s.holdings;
        self.resting_sells = s.resting_sells;
        self.resting = s.resting;
        self.changes = s.changes;
        self.cash = s.cash;
        self.blocked = s.blocked;
        self.front = s.front;
        Ok(())
    }

    /// Turns on saving in parts: from now on [`save`](Self::save) leaves the tick buffers
    /// out, and [`changed_parts`](Self::changed_parts) gives the chunks of
    /// [`TICK_CHUNK`] ticks that changed, so a checkpoint writes the ticks since the last one
    /// and not every instrument's whole buffer. What the buffers hold now (a state restored
    /// from a whole checkpoint) is all changed.
    pub fn log_parts(&mut self) {
        if self.parts.is_some() {
            return;
        }
        let mut parts = TickParts::default();
        for (token, buffer) in &self.ticks {
            let front = self.front.get(token).copied().unwrap_or(0);
            let end = front + buffer.len() as u64;
            parts
                .changed
                .extend((front / TICK_CHUNK..end.div_ceil(TICK_CHUNK)).map(|k| (*token, k)));
        }
        self.parts = Some(parts);
    }

    /// The parts that changed since the last call (name and JSON; `None`: gone). Empty
    /// unless saving in parts is on.
    pub fn changed_parts(&mut self) -> Vec<(String, Option<String>)> {
        let Some(parts) = &mut self.parts else {
            return Vec::new();
        };
        let name = |(token, k): (InstrumentToken, u64)| format!("{TICKS_PREFIX}{}.{k}", token.0);
        let mut out: Vec<(String, Option<String>)> =
            parts.removed.drain(..).map(|c| (name(c), None)).collect();
        let mut changed: Vec<(InstrumentToken, u64)> = parts.changed.drain().collect();
        changed.sort();
        for (token, k) in changed {
            let buffer = self.ticks.get(&token);
            let front = self.front.get(&token).copied().unwrap_or(0);
            let from = (k * TICK_CHUNK).max(front);
            let to = ((k + 1) * TICK_CHUNK).min(front + buffer.map_or(0, |b| b.len() as u64));
            let ticks: Vec<SeenTick> = (from..to)
                .filter_map(|seq| buffer?.get((seq - front) as usize).cloned())
                .collect();
            if ticks.is_empty() {
                out.push((name((token, k)), None));
                continue;
            }
            // Lists of numbers and decimals always serialize.
            let json = serde_json::to_string(&TickChunk { from, ticks })
                .unwrap_or_else(|e| unreachable!("a tick chunk serializes: {e}"));
            out.push((name((token, k)), Some(json)));
        }
        out
    }

    /// Takes back the tick chunks of a checkpoint, into a trader restored from its
    /// [`save`](Self::save). An error names a part that does not read or a tick missing
    /// between two chunks, and leaves the buffers as they were.
    pub fn restore_parts(
        &mut self,
        parts: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut chunks: Vec<(InstrumentToken, TickChunk)> = Vec::with_capacity(parts.len());
        for (name, json) in parts {
            let token = name
                .strip_prefix(TICKS_PREFIX)
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(token, _)| token.parse().ok())
                .map(InstrumentToken)
                .ok_or_else(|| {
                    format!("the trader's checkpoint has a part {name:?} that is not a tick chunk")
                })?;
            let chunk: TickChunk = serde_json::from_str(json)
                .map_err(|e| format!("the trader's tick chunk {name} does not read: {e}"))?;
            chunks.push((token, chunk));
        }
        chunks.sort_by_key(|(token, c)| (*token, c.from));
        let mut buffers: FastMap<InstrumentToken, VecDeque<SeenTick>> = FastMap::default();
        for (token, chunk) in chunks {
            let front = self.front.get(&token).copied().unwrap_or(0);
            let buffer = buffers.entry(token).or_default();
            let next = front + buffer.len() as u64;
            if chunk.from > next {
                return Err(format!(
                    "the trader's ticks of instrument {} miss numbers {next}..{}: a tick chunk is missing",
                    token.0,
                    chunk.from - 1
                ));
            }
            for (i, tick) in chunk.ticks.into_iter().enumerate() {
                if chunk.from + i as u64 == front + buffer.len() as u64 {
                    buffer.push_back(tick);
                }
            }
        }
        self.ticks.extend(buffers);
        Ok(())
    }

    /// Orders resting in the book.
    pub fn resting(&self) -> usize {
        self.open.len()
    }

    /// Orders waiting for their instrument's ticks to reach their time.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }

    /// A strategy's filled net quantity of an instrument.
    pub fn holding(&self, strategy: &StrategyId, token: InstrumentToken) -> i64 {
        self.holdings
            .get(&(strategy.clone(), token))
            .copied()
            .unwrap_or(0)
    }

    /// A strategy's cash: starting cash, less BUY fills with their charges, plus SELL fills
    /// net of charges (blocked amounts not deducted).
    pub fn cash(&self, strategy: &StrategyId) -> Decimal {
        self.cash
            .get(strategy)
            .copied()
            .unwrap_or(self.model.starting_cash)
    }

    fn last_tick(&self, token: InstrumentToken) -> Option<Timestamp> {
        self.ticks.get(&token).and_then(|t| t.back()).map(|t| t.at)
    }

    /// A validated signal (`envelope`), handled live or replayed; `halted`: its broker or
    /// strategy was HALTED when it arrived.
    pub fn on_validated(
        &mut self,
        envelope: &EventEnvelope,
        live: bool,
        halted: bool,
    ) -> Vec<Emission> {
        let EventData::ValidatedSignal(signal) = &envelope.data else {
            return Vec::new();
        };
        self.on_validated_signal(envelope.lineage(), signal.clone(), live, halted)
    }

    /// As [`on_validated`](Self::on_validated), for a driver that owns the validated
    /// signal's envelope: the signal is moved in rather than copied.
    pub fn on_validated_owned(
        &mut self,
        envelope: EventEnvelope,
        live: bool,
        halted: bool,
    ) -> Vec<Emission> {
        let parent = envelope.lineage();
        let EventData::ValidatedSignal(signal) = envelope.data else {
            return Vec::new();
        };
        self.on_validated_signal(parent, signal, live, halted)
    }

    fn on_validated_signal(
        &mut self,
        parent: Lineage,
        signal: ValidatedSignal,
        live: bool,
        halted: bool,
    ) -> Vec<Emission> {
        let order = Incoming {
            parent,
            signal,
            live,
            halted,
        };
        let token = order.token();
        let behind = self.last_tick(token).is_none_or(|t| t < order.at());
        let market = order.signal.original_signal.order_type == OrderType::Market;
        let holding = (order.strategy().clone(), token);
        let queued = self.resting.get(&holding).copied().unwrap_or(0) > 0
            || self
                .waiting
                .get(&token)
                .is_some_and(|w| w.iter().any(|o| o.strategy() == order.strategy()));
        let followed = self.instruments.contains(&token);
        if !halted && followed && behind && (!market || queued) {
            self.waiting.entry(token).or_default().push(order);
            return Vec::new();
        }
        self.place(order, false)
    }

    /// A tick of `market.ticks` (an envelope whose payload is a `market_tick`), handled live
    /// or replayed.
    pub fn on_tick(&mut self, envelope: &EventEnvelope, live: bool) -> Vec<Emission> {
        match &envelope.data {
            EventData::MarketTick(tick) => self.on_market_tick(tick, live),
            _ => Vec::new(),
        }
    }

    /// A tick, handled live or replayed: the resting orders it reaches settle and the
    /// orders waiting for its time are placed. The tick's own envelope is not needed: the
    /// trader's events are children of their validated signals.
    pub fn on_market_tick(&mut self, tick: &MarketTick, live: bool) -> Vec<Emission> {
        let token = tick.instrument_token;
        if !self.instruments.contains(&token) {
            return Vec::new();
        }
        let (at, price) = (tick.timestamp, tick.last_price.get());
        if self.last_tick(token).is_some_and(|last| at < last) {
            // Ticks of an instrument arrive in event-time order; an older one is a copy.
            return Vec::new();
        }
        // Orders placed before this tick, then the tick against the book, then orders
        // placed at this tick's time (it is their reference, not a later price).
        let mut out = self.release(token, |t| t < at, live);
        for event in self.book.on_tick(token, price, at) {
            let Some(open) = self.open.remove(event_order(&event)) else {
                continue;
            };
            let was_live = open.order.live || live;
            out.push(self.settle(open, event, was_live));
        }
        let buffer = self.ticks.entry(token).or_default();
        let front = self.front.entry(token).or_default();
        buffer.push_back(SeenTick { at, price, live });
        if let Some(parts) = &mut self.parts {
            parts
                .changed
                .insert((token, (*front + buffer.len() as u64 - 1) / TICK_CHUNK));
        }
        let horizon = Timestamp(at.0 - chrono::Duration::seconds(TICK_WINDOW_SECS));
        let mut dropped = None;
        while buffer.front().is_some_and(|t| t.at < horizon) || buffer.len() > TICK_WINDOW_TICKS {
            dropped = buffer.pop_front().map(|t| t.at).or(dropped);
            *front += 1;
            // A chunk all of whose ticks are dropped is gone.
            if *front % TICK_CHUNK == 0
                && let Some(parts) = &mut self.parts
            {
                let gone = (token, *front / TICK_CHUNK - 1);
                parts.changed.remove(&gone);
                parts.removed.push(gone);
            }
        }
        if let Some(dropped) = dropped {
            self.pruned.insert(token, dropped);
        }
        out.extend(self.release(token, |t| t <= at, live));
        out
    }

    /// Places the waiting orders of `token` whose time satisfies `ready`, in arrival order.
    fn release(
        &mut self,
        token: InstrumentToken,
        ready: impl Fn(Timestamp) -> bool,
        live: bool,
    ) -> Vec<Emission> {
        let Some(waiting) = self.waiting.get_mut(&token).filter(|w| !w.is_empty()) else {
            return Vec::new();
        };
        let (now, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|o| ready(o.at()));
        *waiting = later;
        now.into_iter().flat_map(|o| self.place(o, live)).collect()
    }

    /// The strategy's holding of the instrument and its resting SELL quantity, as they were
    /// at `at`: resting orders that settled later are taken back out.
    /// Counted in `i128`: sums of `i64` holdings and `u64` quantities cannot overflow it.
    fn as_of(&self, holding: &Holding, at: Timestamp) -> (i128, i128) {
        let mut held = i128::from(self.holdings.get(holding).copied().unwrap_or(0));
        let sells = self.resting_sells.get(holding).copied().unwrap_or(0);
        let mut sells = i128::try_from(sells).unwrap_or(i128::MAX);
        for c in self.changes.get(holding).into_iter().flatten() {
            if c.at > at {
                held -= i128::from(c.held);
                sells = sells.saturating_add(i128::from(c.sells_released));
            }
        }
        (held, sells)
    }

    /// The instrument's price at `at`: its last buffered tick at or before then.
    /// The price of the instrument at `at`: its first tick at that time, else its last
    /// before. Several ticks of one instrument can share a time (Kite's exchange timestamps
    /// are whole seconds); taking the first of them, not the latest seen, makes an order's
    /// reference the same whether it arrives before or after the others.
    fn price_at(&self, token: InstrumentToken, at: Timestamp) -> Option<Decimal> {
        let ticks = self.ticks.get(&token)?;
        let first = ticks.partition_point(|t| t.at < at);
        match ticks.get(first) {
            Some(t) if t.at == at => Some(t.price),
            _ => first
                .checked_sub(1)
                .and_then(|i| ticks.get(i))
                .map(|t| t.price),
        }
    }

    fn emit(
        &self,
        order: &Incoming,
        ordinal: u32,
        topic: BrokerTopic,
        at: Timestamp,
        data: EventData,
        live: bool,
    ) -> Emission {
        let key = keys::order(&self.account, order.strategy());
        Emission {
            topic,
            envelope: order.parent.child(
                EventBroker::Broker(self.broker.clone()),
                "trader",
                ordinal,
                key,
                at,
                data,
            ),
            live,
        }
    }

    fn failed(&self, order: &Incoming, reason: String, at: Timestamp, live: bool) -> Emission {
        let s = &order.signal.original_signal;
        self.emit(
            order,
            2,
            BrokerTopic::OrdersFailed,
            at,
            EventData::OrderFailed(OrderFailed {
                order_id: order.order_id(),
                instrument_token: s.instrument_token,
                side: s.signal_type,
                quantity: order.signal.validated_quantity,
                price: order.signal.validated_price,
                strategy_id: s.strategy_id.clone(),
                account: self.account.clone(),
                execution_mode: ExecutionMode::Paper,
                broker: self.broker.clone(),
                timestamp: at,
                error_message: reason,
            }),
            live,
        )
    }

    /// Places an order whose instrument's ticks are far enough (or that need none):
    /// `order_placed` and `order_ack`, then a fill or failure now, or a resting order.
    /// `trigger_live`: the record that released it was handled live.
    fn place(&mut self, order: Incoming, trigger_live: bool) -> Vec<Emission> {
        let live = order.live || trigger_live;
        let at = order.at();
        let order_id = order.order_id();
        let s = &order.signal.original_signal;
        let v = &order.signal;
        if order.halted {
            // Not placed: only its failure goes out.
            let reason = format!(
                "trading is HALTED on {} for {}: not placed",
                self.broker, s.strategy_id
            );
            return vec![self.failed(&order, reason, at, live)];
        }
        let mut out = if self.lifecycle {
            let placed = OrderPlaced {
                order_id: order_id.clone(),
                instrument_token: s.instrument_token,
                side: s.signal_type,
                quantity: v.validated_quantity,
                price: v.validated_price,
                order_type: s.order_type,
                product: s.product,
                validity: s.validity,
                trigger_price: s.trigger_price,
                strategy_id: s.strategy_id.clone(),
                account: self.account.clone(),
                execution_mode: ExecutionMode::Paper,
                broker: self.broker.clone(),
                timestamp: at,
            };
            let ack = OrderAck {
                order_id: order_id.clone(),
                broker_order_id: order_id.to_string(),
                instrument_token: s.instrument_token,
                side: s.signal_type,
                quantity: v.validated_quantity,
                strategy_id: s.strategy_id.clone(),
                account: self.account.clone(),
                execution_mode: ExecutionMode::Paper,
                broker: self.broker.clone(),
                timestamp: at,
            };
            vec![
                self.emit(
                    &order,
                    0,
                    BrokerTopic::OrdersSubmitted,
                    at,
                    EventData::OrderPlaced(placed),
                    live,
                ),
                self.emit(
                    &order,
                    1,
                    BrokerTopic::OrdersAck,
                    at,
                    EventData::OrderAck(ack),
                    live,
                ),
            ]
        } else {
            Vec::new()
        };
        let qty = v.validated_quantity.get();
        let holding = (s.strategy_id.clone(), s.instrument_token);
        let market = s.order_type == OrderType::Market;
        if i64::try_from(qty).is_err() {
            let reason = format!(
                "quantity {qty} is more than a holding can count ({})",
                i64::MAX
            );
            out.push(self.failed(&order, reason, at, live));
            return out;
        }
        if !market && !self.instruments.contains(&s.instrument_token) {
            let reason = format!(
                "no strategy on {} trades instrument {}, so the paper trader does not follow its ticks: a {} order cannot rest on it",
                self.broker, s.instrument_token, s.order_type
            );
            out.push(self.failed(&order, reason, at, live));
            return out;
        }
        let (held, selling) = self.as_of(&holding, at);
        let free = held - selling;
        if s.signal_type == Side::Sell && i128::from(qty) > free && !self.model.allow_short {
            let reason = if selling > 0 {
                format!(
                    "short selling is not allowed: selling {qty} with {held} held, {selling} of it in resting sells (fill_model.allow_short = false)"
                )
            } else {
                format!(
                    "short selling is not allowed: selling {qty} with {held} held (fill_model.allow_short = false)"
                )
            };
            out.push(self.failed(&order, reason, at, live));
            return out;
        }
        // MARKET orders fill at the signal's price; the others compare their limit or
        // trigger with the price of the tick at their time.
        let reference = if market {
            v.validated_price.get()
        } else {
            match self.price_at(s.instrument_token, at) {
                Some(price) => price,
                // Its tick, and the ticks after it, are no longer kept.
                None if self.pruned.contains_key(&s.instrument_token) => {
                    let reason = format!(
                        "arrived more than {} h of event time or {TICK_WINDOW_TICKS} ticks behind instrument {}'s ticks: they are no longer kept, so its fill cannot be simulated",
                        TICK_WINDOW_SECS / 3600,
                        s.instrument_token
                    );
                    out.push(self.failed(&order, reason, at, live));
                    return out;
                }
                None => v.validated_price.get(),
            }
        };
        let mut blocked = Decimal::ZERO;
        if s.signal_type == Side::Buy {
            let estimate = match s.order_type {
                OrderType::Market => self.book.slipped(Side::Buy, reference),
                OrderType::Limit | OrderType::StopLoss => Some(v.validated_price.get()),
                OrderType::StopLossMarket => self
                    .book
                    .slipped(Side::Buy, s.trigger_price.map_or(reference, |p| p.get())),
            };
            let blocked_now = self
                .blocked
                .get(&s.strategy_id)
                .copied()
                .unwrap_or_default();
            let figures = estimate.and_then(|estimate| {
                let charged = charges(Side::Buy, qty, estimate, &self.model.charges)?.total;
                let cost = estimate
                    .checked_mul(Decimal::from(qty))?
                    .checked_add(charged)?;
                let left = self.cash(&s.strategy_id).checked_sub(blocked_now)?;
                Some((cost, left))
            });
            let Some((cost, left)) = figures else {
                let reason = format!(
                    "the cost of buying {qty} of {} at about {reference} is beyond what the paper trader can count",
                    s.instrument_token
                );
                out.push(self.failed(&order, reason, at, live));
                return out;
            };
            if cost > left {
                let reason = format!(
                    "insufficient cash for {}: the fill costs {cost} with charges, {left} is left",
                    s.strategy_id
                );
                out.push(self.failed(&order, reason, at, live));
                return out;
            }
            blocked = cost;
        }
        let mut solo = PaperBook::new(self.model.slippage_bps);
        let mut events = solo.place(
            PaperOrder {
                order_id,
                instrument_token: s.instrument_token,
                side: s.signal_type,
                quantity: qty,
                order_type: s.order_type,
                price: v.validated_price.get(),
                trigger_price: s.trigger_price.map(|p| p.get()),
                validity: s.validity,
                placed_at: at,
            },
            reference,
            at,
        );
        let mut settle_live = live;
        if events.is_empty() {
            // Resting: match it against the ticks after its time that came before it (its
            // own tick is in the buffer, so they all are).
            let ticks = self.ticks.get(&s.instrument_token);
            let first = ticks.map_or(0, |t| t.partition_point(|t| t.at <= at));
            for t in ticks.into_iter().flat_map(|t| t.range(first..)) {
                events = solo.on_tick(s.instrument_token, t.price, t.at);
                if !events.is_empty() {
                    settle_live = live || t.live;
                    break;
                }
            }
        }
        let open = Open { order, blocked };
        match events.into_iter().next() {
            Some(event) => {
                if event_at(&event) > at {
                    self.rest(&open);
                }
                out.push(self.settle(open, event, settle_live));
            }
            None => {
                self.rest(&open);
                self.book.absorb(solo);
                self.open.insert(open.order.order_id(), open);
            }
        }
        out
    }

    /// Counts a resting order: its cash block and resting SELL quantity.
    fn rest(&mut self, open: &Open) {
        let o = &open.order;
        let holding = (o.strategy().clone(), o.token());
        *self.resting.entry(holding.clone()).or_default() += 1;
        match o.side() {
            Side::Buy => *self.blocked.entry(o.strategy().clone()).or_default() += open.blocked,
            Side::Sell => {
                *self.resting_sells.entry(holding).or_default() +=
                    u128::from(o.signal.validated_quantity.get())
            }
        }
    }

    /// Notes what a resting order's settlement changed, dropping changes older than the
    /// tick window (no order that old can still be placed).
    fn record_change(&mut self, holding: Holding, change: Change) {
        let horizon = Timestamp(change.at.0 - chrono::Duration::seconds(TICK_WINDOW_SECS));
        let changes = self.changes.entry(holding).or_default();
        while changes.front().is_some_and(|c| c.at < horizon) {
            changes.pop_front();
        }
        changes.push_back(change);
    }

    /// What a fill of `qty` at `price` makes of the strategy's books, computed without
    /// changing them: the fill price, the signed quantity, the holding after it, the
    /// charges and the cash after it. An error names the figure that cannot be counted.
    fn fill_figures(
        &self,
        holding: &Holding,
        strategy: &StrategyId,
        side: Side,
        qty: u64,
        price: Decimal,
    ) -> Result<(Price, i64, i64, Decimal, Decimal), String> {
        let fill_price =
            Price::new(price).map_err(|e| format!("no fill: the fill price is invalid: {e}"))?;
        let beyond =
            |what: &str| format!("no fill: {what} is beyond what the paper trader can count");
        let signed = i64::try_from(qty)
            .ok()
            .and_then(|q| q.checked_mul(side.sign()))
            .ok_or_else(|| beyond(&format!("a quantity of {qty}")))?;
        let held = self
            .holdings
            .get(holding)
            .copied()
            .unwrap_or(0)
            .checked_add(signed)
            .ok_or_else(|| beyond("the holding after it"))?;
        let fees = charges(side, qty, price, &self.model.charges)
            .ok_or_else(|| beyond(&format!("the charges of {qty} at {price}")))?
            .total;
        let notional = price
            .checked_mul(Decimal::from(qty))
            .ok_or_else(|| beyond(&format!("the notional of {qty} at {price}")))?;
        let cash = self.cash(strategy);
        let cash = match side {
            Side::Buy => notional
                .checked_add(fees)
                .and_then(|cost| cash.checked_sub(cost)),
            Side::Sell => notional
                .checked_sub(fees)
                .and_then(|proceeds| cash.checked_add(proceeds)),
        }
        .ok_or_else(|| beyond("the cash after it"))?;
        Ok((fill_price, signed, held, fees, cash))
    }

    /// Applies a fill or a cancellation: holdings, cash, blocks; emits `order_filled` or
    /// `order_failed`.
    fn settle(&mut self, open: Open, event: PaperEvent, live: bool) -> Emission {
        let o = &open.order;
        let holding = (o.strategy().clone(), o.token());
        let qty = o.signal.validated_quantity.get();
        let at = event_at(&event);
        let rested = at > o.at();
        if rested {
            if let Some(n) = self.resting.get_mut(&holding) {
                *n = n.saturating_sub(1);
            }
            match o.side() {
                Side::Buy => {
                    if let Some(b) = self.blocked.get_mut(o.strategy()) {
                        *b -= open.blocked;
                    }
                }
                Side::Sell => {
                    if let Some(s) = self.resting_sells.get_mut(&holding) {
                        *s = s.saturating_sub(u128::from(qty));
                    }
                }
            }
        }
        match event {
            PaperEvent::Filled {
                order_id, price, ..
            } => {
                // Everything that can fail is computed before anything changes: a fill whose
                // figures cannot be counted fails the order and leaves holdings and cash as
                // they were.
                let side = o.side();
                let (fill_price, signed, held, fees, cash) =
                    match self.fill_figures(&holding, o.strategy(), side, qty, price) {
                        Ok(figures) => figures,
                        Err(reason) => {
                            if rested && side == Side::Sell {
                                self.record_change(
                                    holding,
                                    Change {
                                        at,
                                        held: 0,
                                        sells_released: qty,
                                    },
                                );
                            }
                            return self.failed(o, reason, at, live);
                        }
                    };
                self.holdings.insert(holding.clone(), held);
                self.cash.insert(o.strategy().clone(), cash);
                if rested {
                    self.record_change(
                        holding,
                        Change {
                            at,
                            held: signed,
                            sells_released: if side == Side::Sell { qty } else { 0 },
                        },
                    );
                }
                let s = &o.signal.original_signal;
                self.emit(
                    o,
                    2,
                    BrokerTopic::OrdersFilled,
                    at,
                    EventData::OrderFilled(OrderFilled {
                        order_id: order_id.clone(),
                        instrument_token: s.instrument_token,
                        side,
                        quantity: o.signal.validated_quantity,
                        fill_price,
                        fees,
                        strategy_id: s.strategy_id.clone(),
                        account: self.account.clone(),
                        execution_mode: ExecutionMode::Paper,
                        broker: self.broker.clone(),
                        timestamp: at,
                        trade_id: Some(format!("{order_id}-1")),
                    }),
                    live,
                )
            }
            PaperEvent::Cancelled { reason, .. } => {
                if rested && o.side() == Side::Sell {
                    self.record_change(
                        holding,
                        Change {
                            at,
                            held: 0,
                            sells_released: qty,
                        },
                    );
                }
                self.failed(o, reason, at, live)
            }
        }
    }
}

fn event_order(e: &PaperEvent) -> &OrderId {
    match e {
        PaperEvent::Filled { order_id, .. } | PaperEvent::Cancelled { order_id, .. } => order_id,
    }
}

fn event_at(e: &PaperEvent) -> Timestamp {
    match e {
        PaperEvent::Filled { at, .. } | PaperEvent::Cancelled { at, .. } => *at,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use alpha_panda_core::events::TradingSignal;
    use alpha_panda_core::{Product, Quantity, Validity};
    use proptest::prelude::*;

    use super::*;

    const A: InstrumentToken = InstrumentToken(1);
    const B: InstrumentToken = InstrumentToken(2);

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// 2024-01-15 09:30 IST plus `secs`.
    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_705_291_200_000 + secs * 1000).unwrap()
    }

    fn broker() -> BrokerName {
        BrokerName::paper()
    }

    fn trader(cash: &str) -> PaperTrader {
        let model = FillModel {
            slippage_bps: Decimal::ZERO,
            starting_cash: d(cash),
            ..FillModel::default()
        };
        PaperTrader::new(broker(), AccountId::new("acc").unwrap(), model, [A, B])
    }

    fn tick(token: InstrumentToken, secs: i64, price: &str) -> EventEnvelope {
        EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            token.to_string(),
            at(secs),
            EventData::MarketTick(MarketTick::new(
                token,
                Price::new(d(price)).unwrap(),
                at(secs),
            )),
        )
    }

    struct Order<'a> {
        strategy: &'a str,
        token: InstrumentToken,
        side: Side,
        qty: u64,
        order_type: OrderType,
        price: &'a str,
        trigger: Option<&'a str>,
        validity: Validity,
        secs: i64,
    }

    impl Order<'_> {
        fn envelope(&self) -> EventEnvelope {
            let strategy = StrategyId::new(self.strategy).unwrap();
            let signal = TradingSignal {
                strategy_id: strategy.clone(),
                instrument_token: self.token,
                signal_type: self.side,
                quantity: Quantity::new(self.qty).unwrap(),
                price: Price::new(d(self.price)).unwrap(),
                timestamp: at(self.secs),
                confidence: None,
                metadata: BTreeMap::new(),
                order_type: self.order_type,
                product: Product::Mis,
                validity: self.validity,
                trigger_price: self.trigger.map(|p| Price::new(d(p)).unwrap()),
            };
            EventEnvelope::root(
                EventBroker::Broker(broker()),
                "risk",
                keys::signal(&strategy, self.token),
                at(self.secs),
                EventData::ValidatedSignal(ValidatedSignal {
                    validated_quantity: signal.quantity,
                    validated_price: signal.price,
                    risk_checks: BTreeMap::new(),
                    timestamp: signal.timestamp,
                    original_signal: signal,
                }),
            )
        }
    }

    fn order(side: Side, order_type: OrderType, price: &str, secs: i64) -> Order<'_> {
        Order {
            strategy: "s1",
            token: A,
            side,
            qty: 10,
            order_type,
            price,
            trigger: None,
            validity: Validity::Day,
            secs,
        }
    }

    /// What the emissions say, in order: (type, price, event time in seconds).
    fn said(es: &[Emission]) -> Vec<(String, String, i64)> {
        es.iter()
            .map(|e| {
                let secs = (e.envelope.ts.0.timestamp_millis() - 1_705_291_200_000) / 1000;
                let price = match &e.envelope.data {
                    EventData::OrderFilled(f) => f.fill_price.to_string(),
                    EventData::OrderFailed(f) => f.error_message.clone(),
                    _ => String::new(),
                };
                (e.envelope.event_type().to_string(), price, secs)
            })
            .collect()
    }

    fn s(t: &str, p: &str, secs: i64) -> (String, String, i64) {
        (t.to_owned(), p.to_owned(), secs)
    }

    #[test]
    fn a_limit_buy_rests_until_a_later_tick_reaches_it() {
        let mut t = trader("1000000");
        assert!(t.on_tick(&tick(A, 0, "100"), true).is_empty());
        let buy = order(Side::Buy, OrderType::Limit, "99", 0).envelope();
        let placed = t.on_validated(&buy, true, false);
        assert_eq!(
            said(&placed),
            vec![s("order_placed", "", 0), s("order_ack", "", 0)]
        );
        assert_eq!(t.resting(), 1);
        assert!(t.on_tick(&tick(A, 1, "99.50"), true).is_empty());
        assert!(
            t.on_tick(&tick(B, 2, "50"), true).is_empty(),
            "another instrument"
        );
        let filled = t.on_tick(&tick(A, 3, "98.90"), true);
        assert_eq!(said(&filled), vec![s("order_filled", "99", 3)]);
        assert_eq!(t.resting(), 0);
        assert_eq!(t.holding(&StrategyId::new("s1").unwrap(), A), 10);
        // The fill is the order's deterministic child, whatever record carried it.
        assert_eq!(filled[0].envelope.causation_id, Some(buy.id));
        assert_eq!(
            filled[0].envelope.id,
            alpha_panda_core::ids::child_id(buy.id, "trader", 2)
        );
    }

    #[test]
    fn an_order_that_arrives_after_later_ticks_is_matched_against_them() {
        let buy = order(Side::Buy, OrderType::Limit, "99", 0).envelope();
        let ticks = [
            tick(A, 0, "100"),
            tick(A, 1, "99.50"),
            tick(A, 2, "98.90"),
            tick(A, 3, "97"),
        ];
        let mut early = trader("1000000");
        let mut first = early.on_tick(&ticks[0], true);
        first.extend(early.on_validated(&buy, true, false));
        for t in &ticks[1..] {
            first.extend(early.on_tick(t, true));
        }
        let mut late = trader("1000000");
        let mut second = Vec::new();
        for t in &ticks {
            second.extend(late.on_tick(t, true));
        }
        second.extend(late.on_validated(&buy, true, false));
        assert_eq!(
            said(&second),
            vec![
                s("order_placed", "", 0),
                s("order_ack", "", 0),
                s("order_filled", "99", 2)
            ]
        );
        assert_eq!(first, second, "same events, same ids");
    }

    #[test]
    fn ticks_sharing_an_order_s_time_give_it_the_first_as_reference_whenever_it_arrives() {
        // Two ticks of A at 2 s; a LIMIT BUY at 200.34 made at 2 s. Against the first
        // (200.44) it rests; the second (200.05) is not after its time, so it waits for 5 s.
        let buy = order(Side::Buy, OrderType::Limit, "200.34", 2).envelope();
        let ticks = [
            tick(A, 0, "200"),
            tick(A, 2, "200.44"),
            tick(A, 2, "200.05"),
            tick(A, 5, "199.98"),
        ];
        let runs: Vec<Vec<(String, String, i64)>> = (2..=4)
            .map(|arrives_after| {
                let mut t = trader("1000000");
                let mut out = Vec::new();
                for tk in &ticks[..arrives_after] {
                    out.extend(t.on_tick(tk, true));
                }
                out.extend(t.on_validated(&buy, true, false));
                for tk in &ticks[arrives_after..] {
                    out.extend(t.on_tick(tk, true));
                }
                said(&out)
            })
            .collect();
        assert_eq!(
            runs[0],
            vec![
                s("order_placed", "", 2),
                s("order_ack", "", 2),
                s("order_filled", "200.34", 5)
            ]
        );
        assert_eq!(runs[1], runs[0], "arriving after both ticks of 2 s");
        assert_eq!(runs[2], runs[0], "arriving after the tick of 5 s");
    }

    #[test]
    fn a_limit_order_ahead_of_its_tick_waits_for_it() {
        let mut t = trader("1000000");
        let buy = order(Side::Buy, OrderType::Limit, "99", 5).envelope();
        assert!(t.on_validated(&buy, true, false).is_empty());
        assert_eq!(t.waiting(), 1);
        assert!(
            t.on_tick(&tick(A, 4, "98"), true).is_empty(),
            "a tick before the order's time is not its price"
        );
        let placed = t.on_tick(&tick(A, 5, "100"), true);
        assert_eq!(
            said(&placed),
            vec![s("order_placed", "", 5), s("order_ack", "", 5)]
        );
        assert_eq!(
            said(&t.on_tick(&tick(A, 6, "99"), true)),
            vec![s("order_filled", "99", 6)]
        );
    }

    #[test]
    fn stops_trigger_on_later_ticks_and_ioc_never_rests() {
        let mut t = trader("1000000");
        t.on_tick(&tick(A, 0, "100"), true);
        t.on_validated(
            &order(Side::Buy, OrderType::Market, "100", 0).envelope(),
            true,
            false,
        );
        let stop = Order {
            trigger: Some("95"),
            ..order(Side::Sell, OrderType::StopLossMarket, "95", 0)
        };
        assert_eq!(
            t.on_validated(&stop.envelope(), true, false).len(),
            2,
            "placed and acked"
        );
        assert!(t.on_tick(&tick(A, 1, "96"), true).is_empty());
        assert_eq!(
            said(&t.on_tick(&tick(A, 2, "94"), true)),
            vec![s("order_filled", "94", 2)]
        );
        let ioc = Order {
            validity: Validity::Ioc,
            ..order(Side::Buy, OrderType::Limit, "90", 2)
        };
        let e = t.on_validated(&ioc.envelope(), true, false);
        assert_eq!(e[2].envelope.event_type().to_string(), "order_failed");
        assert_eq!(t.resting(), 0);
    }

    #[test]
    fn day_orders_expire_on_the_first_tick_after_the_close() {
        let mut t = trader("1000000");
        t.on_tick(&tick(A, 0, "100"), true);
        t.on_validated(
            &order(Side::Buy, OrderType::Limit, "90", 0).envelope(),
            true,
            false,
        );
        // 09:30 IST + 6 h = 15:30: still open; one second later it expires.
        assert!(t.on_tick(&tick(A, 6 * 3600, "95"), true).is_empty());
        let e = t.on_tick(&tick(A, 6 * 3600 + 1, "85"), true);
        assert_eq!(e.len(), 1);
        assert!(said(&e)[0].1.contains("expired"), "{:?}", said(&e));
        assert_eq!(
            t.cash(&StrategyId::new("s1").unwrap()),
            d("1000000"),
            "nothing charged"
        );
        assert_eq!(
            t.blocked.values().copied().sum::<Decimal>(),
            Decimal::ZERO,
            "block released"
        );
    }

    #[test]
    fn a_sell_sees_the_holding_as_it_was_at_its_own_time() {
        // BUY LIMIT 99 at 0 fills at 3; a MARKET SELL at 2 comes after the fill arrived.
        // At 2 nothing was held: the SELL fails, as it would had it arrived before tick 3.
        let buy = order(Side::Buy, OrderType::Limit, "99", 0).envelope();
        let sell = order(Side::Sell, OrderType::Market, "99.5", 2).envelope();
        let ticks = [tick(A, 0, "100"), tick(A, 2, "99.5"), tick(A, 3, "98")];
        let run = |sell_first: bool| {
            let mut t = trader("1000000");
            let mut out = t.on_tick(&ticks[0], true);
            out.extend(t.on_validated(&buy, true, false));
            out.extend(t.on_tick(&ticks[1], true));
            if sell_first {
                out.extend(t.on_validated(&sell, true, false));
                out.extend(t.on_tick(&ticks[2], true));
            } else {
                out.extend(t.on_tick(&ticks[2], true));
                out.extend(t.on_validated(&sell, true, false));
            }
            let mut ids: Vec<_> = out
                .iter()
                .map(|e| (e.envelope.id, said(std::slice::from_ref(e))))
                .collect();
            ids.sort_by_key(|(id, _)| *id);
            ids
        };
        let a = run(true);
        assert_eq!(a, run(false));
        assert!(
            a.iter()
                .any(|(_, s)| s[0].1.contains("short selling is not allowed"))
        );
    }

    #[test]
    fn resting_buys_block_cash_and_a_second_buy_that_exceeds_it_fails() {
        // 10 × 99 = 990 (+ charges) blocked of 1 500; a second 10 × 99 cannot be paid.
        let mut t = trader("1500");
        t.on_tick(&tick(A, 0, "100"), true);
        assert_eq!(
            t.on_validated(
                &order(Side::Buy, OrderType::Limit, "99", 0).envelope(),
                true,
                false
            )
            .len(),
            2
        );
        let second = Order {
            token: B,
            ..order(Side::Buy, OrderType::Market, "99", 0)
        };
        t.on_tick(&tick(B, 0, "99"), true);
        let e = t.on_validated(&second.envelope(), true, false);
        assert!(
            said(&e)[2].1.contains("insufficient cash"),
            "{:?}",
            said(&e)
        );
    }

    #[test]
    fn a_replayed_order_owes_the_fill_of_a_tick_handled_live() {
        let buy = order(Side::Buy, OrderType::Limit, "99", 0).envelope();
        let mut t = trader("1000000");
        t.on_tick(&tick(A, 0, "100"), false);
        t.on_tick(&tick(A, 1, "98"), true);
        let e = t.on_validated(&buy, false, false);
        assert_eq!(
            e.iter().map(|e| e.live).collect::<Vec<_>>(),
            [false, false, true],
            "only the fill is owed"
        );
        let mut t = trader("1000000");
        t.on_tick(&tick(A, 0, "100"), false);
        t.on_tick(&tick(A, 1, "98"), false);
        assert!(
            t.on_validated(&buy, false, false).iter().all(|e| !e.live),
            "all replayed: all published before"
        );
    }

    #[test]
    fn resting_orders_on_untraded_instruments_fail_clearly() {
        let mut t = trader("1000000");
        let o = Order {
            token: InstrumentToken(77),
            ..order(Side::Buy, OrderType::Limit, "99", 0)
        };
        let e = t.on_validated(&o.envelope(), true, false);
        assert!(
            said(&e)[2].1.contains("does not follow its ticks"),
            "{:?}",
            said(&e)
        );
    }

    /// A random trading session: ticks on A and B, and orders of two strategies, each
    /// caused by a tick (its time and price), in the order the pipeline would emit them.
    fn session()
    -> impl Strategy<Value = (Vec<EventEnvelope>, Vec<EventEnvelope>, Vec<EventEnvelope>)> {
        let step = (
            0..2usize,
            -30i64..=30,
            prop::option::of((0..2usize, 0..2usize, 0..4usize, 0..3usize, 1..4u64)),
        );
        prop::collection::vec(step, 1..60).prop_map(|steps| {
            let (mut a, mut b, mut orders) = (Vec::new(), Vec::new(), Vec::new());
            let mut price = [10_000i64, 5_000i64];
            for (i, (inst, delta, decision)) in steps.into_iter().enumerate() {
                let secs = i as i64;
                price[inst] = (price[inst] + delta).max(100);
                let p = Decimal::new(price[inst], 2);
                let token = [A, B][inst];
                let t = tick(token, secs, &p.to_string());
                [&mut a, &mut b][inst].push(t);
                if let Some((strategy, side, kind, validity, lots)) = decision {
                    let side = [Side::Buy, Side::Sell][side];
                    let (order_type, offset) = [
                        (OrderType::Market, 0),
                        (OrderType::Limit, 20),
                        (OrderType::Limit, -5),
                        (OrderType::StopLossMarket, 20),
                    ][kind];
                    // LIMIT below (BUY) or above (SELL) the market by `offset` paise; stops
                    // beyond it the other way.
                    let away = match (side, order_type) {
                        (Side::Buy, OrderType::StopLossMarket) | (Side::Sell, OrderType::Limit) => {
                            offset
                        }
                        _ => -offset,
                    };
                    let level = Decimal::new(price[inst] + away, 2).to_string();
                    let market = p.to_string();
                    let o = Order {
                        strategy: ["s1", "s2"][strategy],
                        token,
                        side,
                        qty: lots * 5,
                        order_type,
                        price: if order_type == OrderType::Limit {
                            &level
                        } else {
                            &market
                        },
                        trigger: (order_type == OrderType::StopLossMarket)
                            .then_some(level.as_str()),
                        validity: [Validity::Day, Validity::Day, Validity::Ioc][validity],
                        secs,
                    };
                    orders.push(o.envelope());
                }
            }
            (a, b, orders)
        })
    }

    fn by_id(es: Vec<Emission>) -> Vec<(uuid::Uuid, Vec<u8>)> {
        let mut v: Vec<_> = es
            .into_iter()
            .map(|e| (e.envelope.id, e.envelope.encode()))
            .collect();
        v.sort();
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever way the three streams (A's ticks, B's ticks, the orders) interleave on
        /// arrival, the trader emits the same events with the same ids, times and prices,
        /// and never sells what a strategy does not hold.
        #[test]
        fn results_do_not_depend_on_how_ticks_and_orders_interleave(
            (a, b, orders) in session(),
            picks in prop::collection::vec(0..3usize, 0..400),
        ) {
            // Canonical: each order right after the tick that caused it.
            let mut canonical = trader("100000000");
            let mut expected = Vec::new();
            let mut ticks: Vec<&EventEnvelope> = a.iter().chain(b.iter()).collect();
            ticks.sort_by_key(|t| t.ts);
            let mut next = 0;
            for t in ticks {
                expected.extend(canonical.on_tick(t, true));
                while next < orders.len() && orders[next].ts <= t.ts {
                    expected.extend(canonical.on_validated(&orders[next], true, false));
                    next += 1;
                }
            }
            // Shuffled: take from the streams in the order `picks` says, then the rest.
            let mut shuffled = trader("100000000");
            let mut got = Vec::new();
            let streams = [&a, &b, &orders];
            let mut at = [0usize; 3];
            let order = picks.into_iter().chain((0..3).flat_map(|s| std::iter::repeat_n(s, streams[s].len())));
            for s in order {
                let Some(e) = streams[s].get(at[s]) else { continue };
                at[s] += 1;
                got.extend(if s == 2 { shuffled.on_validated(e, true, false) } else { shuffled.on_tick(e, true) });
            }
            prop_assert_eq!(shuffled.waiting(), 0);
            for strategy in ["s1", "s2"] {
                for token in [A, B] {
                    prop_assert!(shuffled.holding(&StrategyId::new(strategy).unwrap(), token) >= 0);
                }
            }
            prop_assert_eq!(by_id(got), by_id(expected));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// A trader saved at any point (its checkpoint) and restored into a fresh one goes
        /// on emitting exactly what the trader that went on emits: same ids, times, prices,
        /// holdings and cash.
        #[test]
        fn a_restored_trader_emits_as_the_trader_that_went_on(
            (a, b, orders) in session(),
            picks in prop::collection::vec(0..3usize, 0..400),
            cut in 0usize..200,
            every in 1usize..20,
        ) {
            let streams = [&a, &b, &orders];
            let mut at = [0usize; 3];
            let sequence: Vec<&EventEnvelope> = picks
                .into_iter()
                .chain((0..3).flat_map(|s| std::iter::repeat_n(s, streams[s].len())))
                .filter_map(|s| {
                    let e = streams[s].get(at[s])?;
                    at[s] += 1;
                    Some(e)
                })
                .collect();
            let feed = |t: &mut PaperTrader, e: &EventEnvelope| match e.data {
                EventData::ValidatedSignal(_) => t.on_validated(e, true, false),
                _ => t.on_tick(e, true),
            };
            let cut = cut.min(sequence.len());
            let mut went_on = trader("100000");
            let mut restored = trader("100000");
            // Saved in parts, with a checkpoint every `every` records before the cut.
            let mut in_parts = trader("100000");
            in_parts.log_parts();
            let mut parts = std::collections::BTreeMap::new();
            for (i, e) in sequence[..cut].iter().enumerate() {
                feed(&mut went_on, e);
                feed(&mut in_parts, e);
                if i % every == 0 {
                    take(&mut in_parts, &mut parts);
                }
            }
            take(&mut in_parts, &mut parts);
            let saved = serde_json::to_string(&went_on.save()).unwrap();
            restored.restore(serde_json::from_str(&saved).unwrap()).unwrap();
            let saved = serde_json::to_string(&in_parts.save()).unwrap();
            let mut from_parts = trader("100000");
            from_parts.restore(serde_json::from_str(&saved).unwrap()).unwrap();
            from_parts.log_parts();
            from_parts.restore_parts(&parts).unwrap();
            let (mut expected, mut got, mut got_from_parts) = (Vec::new(), Vec::new(), Vec::new());
            for e in &sequence[cut..] {
                expected.extend(feed(&mut went_on, e));
                got.extend(feed(&mut restored, e));
                got_from_parts.extend(feed(&mut from_parts, e));
            }
            prop_assert_eq!(by_id(got_from_parts), by_id(expected.clone()));
            prop_assert_eq!(by_id(got), by_id(expected));
            for strategy in ["s1", "s2"] {
                let s = StrategyId::new(strategy).unwrap();
                prop_assert_eq!(restored.cash(&s), went_on.cash(&s));
                for token in [A, B] {
                    prop_assert_eq!(restored.holding(&s, token), went_on.holding(&s, token));
                }
            }
            prop_assert_eq!(restored.resting(), went_on.resting());
            prop_assert_eq!(restored.waiting(), went_on.waiting());
        }
    }

    /// Applies the parts that changed to a checkpoint's parts, as the unit does.
    fn take(t: &mut PaperTrader, parts: &mut std::collections::BTreeMap<String, String>) {
        for (name, json) in t.changed_parts() {
            match json {
                Some(json) => parts.insert(name, json),
                None => parts.remove(&name),
            };
        }
    }

    /// Saved in parts, a checkpoint writes the ticks since the last one, not the buffers;
    /// the parts kept follow the buffers as ticks are dropped from them (by count, and by
    /// the event-time window), and a trader restored from them has the same buffers.
    #[test]
    fn a_checkpoint_in_parts_writes_the_new_ticks_and_keeps_what_the_buffers_hold() {
        let mut t = trader("100000000");
        t.log_parts();
        let mut parts = std::collections::BTreeMap::new();
        let mut largest = 0;
        // Three instruments' worth of ticks past the window, then a day's gap on A.
        let mut secs = 0;
        for i in 0..3 * TICK_WINDOW_TICKS as i64 {
            secs = i;
            t.on_tick(&tick(A, secs, "100"), true);
            t.on_tick(&tick(B, secs, "200"), true);
            if i % 50 == 0 {
                let written: usize = t
                    .changed_parts()
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
                largest = largest.max(written);
            }
        }
        t.on_tick(&tick(A, secs + TICK_WINDOW_SECS + 1, "101"), true);
        take(&mut t, &mut parts);
        assert_eq!(t.ticks[&A].len(), 1, "the window dropped the day before");
        assert_eq!(t.ticks[&B].len(), TICK_WINDOW_TICKS);
        // Two instruments, 50 ticks each, across at most two chunks each.
        assert!(
            largest < 4 * TICK_CHUNK as usize * 40,
            "a checkpoint wrote {largest} bytes"
        );
        let per_instrument = TICK_WINDOW_TICKS / TICK_CHUNK as usize + 1;
        assert!(
            parts.len() <= per_instrument + 1,
            "{} parts for {} and 1 ticks",
            parts.len(),
            TICK_WINDOW_TICKS
        );
        assert!(
            !t.save().to_string().contains("\"ticks\":[["),
            "the buffers are not in the state"
        );
        let mut r = trader("100000000");
        r.restore(t.save()).unwrap();
        r.log_parts();
        r.restore_parts(&parts).unwrap();
        for token in [A, B] {
            let got: Vec<_> = r.ticks[&token].iter().map(|t| (t.at, t.price)).collect();
            let want: Vec<_> = t.ticks[&token].iter().map(|t| (t.at, t.price)).collect();
            assert_eq!(got, want);
        }
        // A chunk missing in the middle is named, not skipped.
        let middle = parts
            .keys()
            .filter(|k| k.starts_with(&format!("ticks.{}.", B.0)))
            .nth(3)
            .unwrap()
            .clone();
        parts.remove(&middle);
        let mut r = trader("100000000");
        r.restore(t.save()).unwrap();
        let err = r.restore_parts(&parts).unwrap_err();
        assert!(err.contains("a tick chunk is missing"), "{err}");
    }

    #[test]
    fn a_trader_keeps_at_most_the_tick_window_per_instrument_and_says_so_to_an_order_behind_it() {
        let mut t = trader("100000000");
        let n = TICK_WINDOW_TICKS as i64 + 10;
        for secs in 0..n {
            t.on_tick(&tick(A, secs, "100"), true);
        }
        assert_eq!(t.ticks[&A].len(), TICK_WINDOW_TICKS);
        // A LIMIT BUY at second 5, under the market: it would rest and match the ticks
        // after it, which are gone.
        let e = t.on_validated(
            &order(Side::Buy, OrderType::Limit, "99", 5).envelope(),
            true,
            false,
        );
        let said = said(&e);
        assert!(said.last().unwrap().1.contains("ticks behind"), "{said:?}");
    }

    /// A price anywhere in `Decimal`'s range: ordinary prices, and huge or finely scaled
    /// ones that overflow a product.
    fn any_price() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (1i64..10_000_000).prop_map(|p| Decimal::new(p, 2)),
            Just(Decimal::MAX),
            (any::<u32>(), any::<u32>(), any::<u32>(), 0u32..=28)
                .prop_map(|(lo, mid, hi, scale)| Decimal::from_parts(lo, mid, hi, false, scale)),
        ]
    }

    fn any_quantity() -> impl Strategy<Value = u64> {
        prop_oneof![
            1u64..1_000,
            Just(u64::MAX),
            Just(i64::MAX as u64 + 1),
            1u64..u64::MAX
        ]
    }

    /// One input of the trader: a tick (token, price, secs) or a validated signal.
    #[derive(Debug, Clone)]
    enum Input {
        Tick(InstrumentToken, Decimal, i64),
        Signal {
            strategy: usize,
            token: InstrumentToken,
            side: Side,
            qty: u64,
            order_type: OrderType,
            price: Decimal,
            trigger: Decimal,
            secs: i64,
        },
    }

    fn any_input() -> impl Strategy<Value = Input> {
        let token = prop_oneof![Just(A), Just(B)];
        prop_oneof![
            (token.clone(), any_price(), 0i64..60).prop_map(|(t, p, s)| Input::Tick(t, p, s)),
            (
                (0usize..2, token, any::<bool>(), any_quantity()),
                (0usize..4, any_price(), any_price(), 0i64..60),
            )
                .prop_map(
                    |((strategy, token, buy, qty), (kind, price, trigger, secs))| {
                        Input::Signal {
                            strategy,
                            token,
                            side: if buy { Side::Buy } else { Side::Sell },
                            qty,
                            order_type: [
                                OrderType::Market,
                                OrderType::Limit,
                                OrderType::StopLoss,
                                OrderType::StopLossMarket,
                            ][kind],
                            price,
                            trigger,
                            secs,
                        }
                    }
                ),
        ]
    }

    fn validated(input: &Input) -> Option<EventEnvelope> {
        let Input::Signal {
            strategy,
            token,
            side,
            qty,
            order_type,
            price,
            trigger,
            secs,
        } = input
        else {
            return None;
        };
        let strategy = StrategyId::new(["s1", "s2"][*strategy]).unwrap();
        let signal = TradingSignal {
            strategy_id: strategy.clone(),
            instrument_token: *token,
            signal_type: *side,
            quantity: Quantity::new(*qty).unwrap(),
            price: Price::new(*price).unwrap(),
            timestamp: at(*secs),
            confidence: None,
            metadata: BTreeMap::new(),
            order_type: *order_type,
            product: Product::Mis,
            validity: Validity::Day,
            trigger_price: matches!(order_type, OrderType::StopLoss | OrderType::StopLossMarket)
                .then(|| Price::new(*trigger).unwrap()),
        };
        Some(EventEnvelope::root(
            EventBroker::Broker(broker()),
            "risk",
            keys::signal(&strategy, *token),
            at(*secs),
            EventData::ValidatedSignal(ValidatedSignal {
                validated_quantity: signal.quantity,
                validated_price: signal.price,
                risk_checks: BTreeMap::new(),
                timestamp: signal.timestamp,
                original_signal: signal,
            }),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// With any prices, quantities and slippage (even beyond the settings' bound: the
        /// trader does not rely on validation), the trader never panics; every input moves
        /// each strategy's cash and holdings by exactly the fills it emits, so a fill that
        /// fails (`order_failed`) leaves them as they were.
        #[test]
        fn extreme_prices_and_slippage_never_panic_and_a_failed_fill_changes_nothing(
            slippage in prop_oneof![0u32..=1_000, 1_000u32..=30_000],
            short in any::<bool>(),
            cash in any_price(),
            inputs in prop::collection::vec(any_input(), 1..40),
        ) {
            let model = FillModel {
                slippage_bps: Decimal::from(slippage),
                starting_cash: cash,
                allow_short: short,
                ..FillModel::default()
            };
            let mut t = PaperTrader::new(broker(), AccountId::new("acc").unwrap(), model, [A, B]);
            let strategies = [StrategyId::new("s1").unwrap(), StrategyId::new("s2").unwrap()];
            let state = |t: &PaperTrader| {
                let mut v = Vec::new();
                for s in &strategies {
                    v.push((t.cash(s), t.holding(s, A), t.holding(s, B)));
                }
                v
            };
            for input in &inputs {
                let before = state(&t);
                let emitted = match (input, validated(input)) {
                    (_, Some(env)) => t.on_validated(&env, true, false),
                    (Input::Tick(token, price, secs), None) => {
                        let env = EventEnvelope::root(
                            EventBroker::Shared,
                            "feed",
                            token.to_string(),
                            at(*secs),
                            EventData::MarketTick(MarketTick::new(*token, Price::new(*price).unwrap(), at(*secs))),
                        );
                        t.on_tick(&env, true)
                    }
                    _ => unreachable!("a signal input makes an envelope"),
                };
                // What the fills emitted should have changed, computed on i128 and
                // checked decimals (a fill the trader emitted was computable).
                let mut expected: Vec<(Decimal, i128, i128)> = before
                    .iter()
                    .map(|(c, a, b)| (*c, i128::from(*a), i128::from(*b)))
                    .collect();
                for e in &emitted {
                    if let EventData::OrderFilled(f) = &e.envelope.data {
                        let i = strategies.iter().position(|s| *s == f.strategy_id).unwrap();
                        let q = f.quantity.get();
                        let notional = f.fill_price.get().checked_mul(Decimal::from(q)).unwrap();
                        let row = &mut expected[i];
                        let signed = i128::from(f.side.sign()) * i128::from(q);
                        if f.instrument_token == A { row.1 += signed } else { row.2 += signed }
                        // As the trader counts it (at 28 digits the grouping rounds).
                        row.0 = match f.side {
                            Side::Buy => notional.checked_add(f.fees).and_then(|c| row.0.checked_sub(c)),
                            Side::Sell => notional.checked_sub(f.fees).and_then(|p| row.0.checked_add(p)),
                        }
                        .unwrap();
                    }
                }
                let after: Vec<(Decimal, i128, i128)> = state(&t)
                    .into_iter()
                    .map(|(c, a, b)| (c, i128::from(a), i128::from(b)))
                    .collect();
                prop_assert_eq!(after, expected, "after {:?}", input);
            }
        }
    }
}
