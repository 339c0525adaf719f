//! The trading stages as actors: thin shells around the pure logic (strategy, risk, paper
//! fills and charges, portfolio maths). Each factory makes a fresh actor per partition; the
//! delivery bridge feeds it records and publishes what it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alpha_panda_config::Settings;
use alpha_panda_core::events::PnlSnapshot;
use alpha_panda_core::{BrokerName, EventBroker, EventData, StrategyId};
use alpha_panda_topics::{BrokerTopic, TopicName, keys};

use crate::control::Control;
use crate::delivery::{Deliver, Handled, Output, StageError};
use crate::paper::trader::PaperTrader;
use crate::portfolio::Book;
use crate::risk::{Limits, RiskBook};
use crate::store::Effect;
use crate::strategy::StrategySet;

/// Records handled per stage, for the daemon's periodic log line.
#[derive(Debug, Default)]
pub struct Counters {
    pub ticks: AtomicU64,
    pub signals: AtomicU64,
    pub orders: AtomicU64,
    pub fills: AtomicU64,
    pub rejections: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> [u64; 5] {
        [
            self.ticks.load(Ordering::Relaxed),
            self.signals.load(Ordering::Relaxed),
            self.orders.load(Ordering::Relaxed),
            self.fills.load(Ordering::Relaxed),
            self.rejections.load(Ordering::Relaxed),
        ]
    }
}

fn out(
    broker: &BrokerName,
    topic: BrokerTopic,
    envelope: alpha_panda_core::EventEnvelope,
) -> Output {
    Output {
        topic: TopicName::broker(broker, topic),
        envelope,
    }
}

fn wrong_type(d: &Deliver) -> StageError {
    StageError::poison(format!(
        "{} on {} is not what this stage reads",
        d.envelope.event_type(),
        d.topic
    ))
}

fn broker_of(d: &Deliver) -> Result<BrokerName, StageError> {
    d.topic
        .broker_name()
        .cloned()
        .ok_or_else(|| StageError::poison(format!("{} belongs to no broker", d.topic)))
}

/// Strategies: `market.ticks` → `{broker}.signals.raw`, as a checkpointed unit per
/// `market.ticks` partition (delivery v2): each partition's actor owns a `StrategySet` that
/// sees the ticks of that partition's instruments (an instrument's ticks are in one
/// partition), saved in the partition's checkpoint, so a restart or a move to another
/// daemon goes on from there and reads no history.
///
/// Strategies run isolated (see `StrategySet`): one that panics is rebuilt alone and, after
/// three panics on a tick, the tick goes to `market.ticks.dlq` for that strategy (stage
/// `strategy:{id}`) while the other strategies' signals for it go out. Signals of a disabled
/// strategy, or of one paused on a broker, are held back.
///
/// The strategies are those of `live` (`strategy::Live`): a unit made after a reload starts
/// with the reloaded set, and at the start of each record a unit checks the generation and,
/// when a reload moved it, reconfigures its set before the record (unchanged strategies keep
/// their state, new or changed ones start fresh). A checkpointed state goes back only to a
/// strategy with the same parameters.
pub fn strategy_units(
    settings: &Settings,
    counters: Arc<Counters>,
    control: Arc<Control>,
    builder: crate::strategy::Builder,
    live: crate::strategy::Live,
) -> Result<crate::delivery::unit::CheckpointedFactory, String> {
    // Checked once here, so that making a unit's set from these settings cannot fail later.
    StrategySet::from_settings_with(&live.current().1, builder.clone())?;
    let group = format!("{}.market.strategy", settings.kafka.group_prefix);
    Ok(Arc::new(move |_unit, saved| {
        let (generation, current) = live.current();
        let mut set = StrategySet::from_settings_with(&current, builder.clone())?;
        if let Some(saved) = saved {
            set.restore(saved)
                .map_err(|e| format!("the strategies' checkpointed state does not read: {e}"))?;
        }
        Ok(Box::new(StrategyStage {
            set,
            generation,
            live: live.clone(),
            counters: counters.clone(),
            control: control.clone(),
            group: group.clone(),
        })
            as Box<dyn crate::delivery::unit::CheckpointedStage>)
    }))
}

/// The strategies of one `market.ticks` partition.
struct StrategyStage {
    set: StrategySet,
    /// The generation of `live` the set was made or reconfigured for.
    generation: u64,
    live: crate::strategy::Live,
    counters: Arc<Counters>,
    control: Arc<Control>,
    group: String,
}

impl crate::delivery::unit::CheckpointedStage for StrategyStage {
    fn save(&self) -> serde_json::Value {
        self.set.save()
    }

    fn handle(&mut self, d: &Deliver) -> Result<Handled, StageError> {
        if !matches!(d.envelope.data, EventData::MarketTick(_)) {
            return Err(wrong_type(d));
        }
        if self.live.generation() != self.generation {
            let (generation, current) = self.live.current();
            match self.set.reconfigure(&current) {
                Ok(r) => {
                    tracing::info!(generation, kept = ?r.kept, fresh = ?r.fresh, dropped = ?r.dropped, "strategies reloaded")
                }
                Err(e) => {
                    tracing::error!(generation, error = %e, "reloaded strategies not applied")
                }
            }
            self.generation = generation;
        }
        let counters = &self.counters;
        counters.ticks.fetch_add(1, Ordering::Relaxed);
        let control = &self.control;
        let emits = |s: &StrategyId, b: &BrokerName| control.strategy_emits(s.as_str(), b.as_str());
        let outcome = self.set.on_tick(&d.envelope, &emits);
        let mut outputs = outcome.outputs;
        counters
            .signals
            .fetch_add(outputs.len() as u64, Ordering::Relaxed);
        for fault in outcome.faults {
            crate::metrics::metrics()
                .restarts
                .with_label_values(&["strategy", "market"])
                .inc();
            if !fault.gave_up {
                continue;
            }
            let record = crate::delivery::Record {
                topic: d.topic.clone(),
                partition: d.partition,
                offset: d.offset,
                key: Some(d.envelope.key.clone().into_bytes()),
                value: Some(d.envelope.encode()),
                headers: Vec::new(),
            };
            let stage = format!("strategy:{}", fault.strategy);
            if let Some(dlq) = crate::delivery::dlq::dead_letter_as(
                &record,
                Some(&d.envelope),
                &self.group,
                &stage,
                alpha_panda_core::FailureClass::Poison,
                &format!(
                    "strategy panicked {} times: {}",
                    fault.panics, fault.message
                ),
                fault.panics - 1,
            ) {
                crate::metrics::metrics()
                    .dead_lettered
                    .with_label_values(&[d.topic.to_string().as_str(), &stage, "poison"])
                    .inc();
                outputs.push(dlq);
            }
        }
        Ok(Handled {
            outputs,
            ..Handled::default()
        })
    }
}

/// Risk: `{broker}.signals.raw` → `signals.validated` or `signals.rejected`, as a
/// checkpointed whole-stage unit (delivery v2): the broker's risk book is the unit's state,
/// saved with the offsets of every partition it read, so a restart or a move to another
/// daemon goes on from there and reads no history.
///
/// It also reads the broker's `orders.filled` and `orders.failed`: a validated order's
/// position is reserved when it is validated and stays counted once it fills; an order that
/// fails (refused, cancelled, expired) gives its reservation back. So a position is the
/// broker's own fills plus its orders still open. Fills also feed each strategy's day PnL
/// (`max_daily_loss`), marked to the prices of MARKET signals (engine/src/day_pnl.rs).
///
/// The broker's and the strategy's trading states are a rule too (`trading_state`): HALTED
/// refuses every signal, REDUCING all that do not reduce a position.
pub fn risk_units(
    settings: Arc<Settings>,
    broker: BrokerName,
    counters: Arc<Counters>,
    control: Arc<Control>,
) -> crate::delivery::unit::CheckpointedFactory {
    Arc::new(move |_unit, saved| {
        let mut book = match saved {
            None => RiskBook::default(),
            Some(v) => RiskBook::restore(v)?,
        };
        book.log_parts();
        Ok(Box::new(RiskStage {
            limits: settings.risk_for(&broker),
            broker: broker.clone(),
            book,
            counters: counters.clone(),
            control: control.clone(),
        })
            as Box<dyn crate::delivery::unit::CheckpointedStage>)
    })
}

struct RiskStage {
    broker: BrokerName,
    limits: alpha_panda_config::RiskSettings,
    book: RiskBook,
    counters: Arc<Counters>,
    control: Arc<Control>,
}

impl crate::delivery::unit::CheckpointedStage for RiskStage {
    fn save(&self) -> serde_json::Value {
        self.book.save()
    }

    fn changed_parts(&mut self) -> Vec<(String, Option<String>)> {
        self.book.changed_parts()
    }

    fn restore_parts(
        &mut self,
        parts: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        self.book.restore_parts(parts)
    }

    fn handle(&mut self, d: &Deliver) -> Result<Handled, StageError> {
        if broker_of(d)? != self.broker {
            return Err(StageError::poison(format!(
                "{} is not {}'s",
                d.topic, self.broker
            )));
        }
        let signal = match &d.envelope.data {
            EventData::TradingSignal(signal) => signal,
            EventData::OrderFilled(_) | EventData::OrderFailed(_) => {
                // The order's events are children of its validated signal.
                let Some(order) = d.envelope.causation_id else {
                    return Err(StageError::poison(format!(
                        "{} on {} has no causation id: which order it settles is unknown",
                        d.envelope.event_type(),
                        d.topic
                    )));
                };
                match &d.envelope.data {
                    EventData::OrderFilled(f) => self.book.on_filled(order, d.envelope.id, f),
                    _ => self.book.on_failed(order),
                }
                return Ok(Handled::default());
            }
            _ => return Err(wrong_type(d)),
        };
        let broker = &self.broker;
        let limits = Limits::for_strategy(&self.limits, &signal.strategy_id);
        let state = self
            .control
            .trading_state(broker.as_str(), Some(signal.strategy_id.as_str()));
        let decided = self
            .book
            .on_signal(&d.envelope, signal, broker, &limits, state);
        if !decided.passed() {
            self.counters.rejections.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Handled {
            outputs: vec![out(broker, decided.topic, decided.envelope)],
            ..Handled::default()
        })
    }
}

/// The paper trader of one broker: `{broker}.signals.validated` and `market.ticks` →
/// `orders.submitted`, `orders.ack` and `orders.filled` (or `orders.failed`), as a
/// checkpointed whole-stage unit (delivery v2): the trader's books, resting orders and tick
/// buffer are the unit's state (`PaperTrader::save`), saved with the offsets of every
/// partition it read. The logic is `PaperTrader` (engine/src/paper/trader.rs): MARKET
/// orders fill against the signal's price; LIMIT, SL and SL-M orders rest and fill against
/// later ticks in event time; IOC cancels what does not fill at once; DAY orders expire at
/// the close.
///
/// Without `fill_model.allow_short`, a SELL larger than the strategy's holding fails
/// (`orders.failed`). A BUY whose estimated cost (with charges) exceeds the strategy's cash
/// fails too: cash per (broker, strategy) starts at `fill_model.starting_cash`, resting
/// BUYs block their estimated cost, fills charge their real cost.
///
/// A validated signal that arrives while its broker or strategy is HALTED is not placed: it
/// fails (`orders.failed`, "trading is HALTED"), so signals validated before a halt do not
/// reach the market after it.
///
/// An error if `broker` is not a configured paper broker.
pub fn paper_trader_units(
    settings: Arc<Settings>,
    broker: BrokerName,
    counters: Arc<Counters>,
    control: Arc<Control>,
) -> Result<crate::delivery::unit::CheckpointedFactory, String> {
    PaperTrader::for_broker(&settings, &broker)?;
    Ok(Arc::new(move |_unit, saved| {
        let mut trader = PaperTrader::for_broker(&settings, &broker)?;
        if let Some(saved) = saved {
            trader.restore(saved)?;
        }
        trader.log_parts();
        Ok(Box::new(PaperTraderStage {
            trader,
            broker: broker.clone(),
            counters: counters.clone(),
            control: control.clone(),
        })
            as Box<dyn crate::delivery::unit::CheckpointedStage>)
    }))
}

struct PaperTraderStage {
    trader: PaperTrader,
    broker: BrokerName,
    counters: Arc<Counters>,
    control: Arc<Control>,
}

impl crate::delivery::unit::CheckpointedStage for PaperTraderStage {
    fn save(&self) -> serde_json::Value {
        self.trader.save()
    }

    fn changed_parts(&mut self) -> Vec<(String, Option<String>)> {
        self.trader.changed_parts()
    }

    fn restore_parts(
        &mut self,
        parts: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        self.trader.restore_parts(parts)
    }

    fn handle(&mut self, d: &Deliver) -> Result<Handled, StageError> {
        let broker = &self.broker;
        let emissions = match &d.envelope.data {
            EventData::ValidatedSignal(v) => {
                if broker_of(d)? != *broker {
                    return Err(StageError::poison(format!("{} is not {broker}'s", d.topic)));
                }
                let halted = self.control.trading_state(
                    broker.as_str(),
                    Some(v.original_signal.strategy_id.as_str()),
                ) == alpha_panda_core::TradingState::Halted;
                self.trader.on_validated(&d.envelope, true, halted)
            }
            EventData::MarketTick(_) => self.trader.on_tick(&d.envelope, true),
            _ => return Err(wrong_type(d)),
        };
        let mut handled = Handled::default();
        for e in emissions {
            match e.envelope.data {
                EventData::OrderPlaced(_) => self.counters.orders.fetch_add(1, Ordering::Relaxed),
                EventData::OrderFilled(_) => self.counters.fills.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            handled.outputs.push(out(broker, e.topic, e.envelope));
        }
        Ok(handled)
    }
}

/// The store key of a strategy's portfolio: `{broker}:portfolio:{strategy}`.
pub fn portfolio_key(broker: &BrokerName, strategy: &StrategyId) -> String {
    format!("{broker}:portfolio:{strategy}")
}

/// The portfolio: `{broker}.orders.filled` → `pnl.snapshots`, and each strategy's book as
/// JSON under `{broker}:portfolio:{strategy}` (for `/portfolio` and operators).
///
/// A checkpointed whole-stage unit (delivery v2): the books and the latest marks are the
/// unit's state, saved in its checkpoint with the offsets of every partition it read, so a
/// restart or a move to another daemon goes on from there and reads no history; the
/// stored books are written with the checkpoint (the last of a batch per strategy).
///
/// It also reads `market.ticks`: positions are marked to the latest price in event time
/// (a tick or a fill, whichever is later; a tick at a fill's time wins, in either order), and
/// each strategy holding the instrument has its stored book refreshed.
pub fn portfolio_factory(
    settings: Arc<Settings>,
    broker: BrokerName,
) -> crate::delivery::unit::CheckpointedFactory {
    Arc::new(move |_unit, saved| {
        let def = settings
            .brokers
            .get(&broker)
            .ok_or_else(|| format!("{broker} is not configured"))?;
        let state = match saved {
            None => PortfolioState::default(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| format!("the portfolio's checkpointed state does not read: {e}"))?,
        };
        Ok(Box::new(PortfolioStage {
            broker: broker.clone(),
            account: def.account.clone(),
            starting_cash: def.fill_model.starting_cash,
            state,
            marked: Default::default(),
        })
            as Box<dyn crate::delivery::unit::CheckpointedStage>)
    })
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct PortfolioState {
    books: std::collections::BTreeMap<StrategyId, Book>,
    /// Latest price per instrument, and its event time.
    marks: std::collections::BTreeMap<
        alpha_panda_core::InstrumentToken,
        (alpha_panda_core::Timestamp, rust_decimal::Decimal),
    >,
}

struct PortfolioStage {
    broker: BrokerName,
    account: alpha_panda_core::AccountId,
    starting_cash: rust_decimal::Decimal,
    state: PortfolioState,
    /// Strategies whose book a tick marked since the batch began and no fill followed, with
    /// that tick's time: their stored book is written once, at the batch's end
    /// (`batch_effects`), instead of once per tick.
    marked: std::collections::BTreeMap<StrategyId, alpha_panda_core::Timestamp>,
}

fn snapshot_of(
    broker: &BrokerName,
    account: &alpha_panda_core::AccountId,
    strategy: &StrategyId,
    book: &Book,
    at: alpha_panda_core::Timestamp,
) -> PnlSnapshot {
    PnlSnapshot {
        broker: broker.clone(),
        account: account.clone(),
        strategy_id: strategy.clone(),
        positions: book.snapshot_positions(),
        realized_pnl: book.realized_pnl(),
        unrealized_pnl: book.unrealized_pnl(),
        total_pnl: book.total_pnl(),
        fees: book.fees,
        cash: book.cash,
        timestamp: at,
    }
}

impl crate::delivery::unit::CheckpointedStage for PortfolioStage {
    fn save(&self) -> serde_json::Value {
        // Plain maps of decimals and strings always serialize.
        serde_json::to_value(&self.state)
            .unwrap_or_else(|e| unreachable!("the portfolio's state serializes: {e}"))
    }

    fn batch_effects(&mut self) -> Vec<Effect> {
        let marked = std::mem::take(&mut self.marked);
        marked
            .into_iter()
            .filter_map(|(strategy, at)| {
                let book = self.state.books.get(&strategy)?;
                let snap = snapshot_of(&self.broker, &self.account, &strategy, book, at);
                // Decimals, strings and times always serialize.
                let value = serde_json::to_string(&snap)
                    .unwrap_or_else(|e| unreachable!("a PnL snapshot serializes: {e}"));
                Some(Effect::Set {
                    key: portfolio_key(&self.broker, &strategy),
                    value,
                })
            })
            .collect()
    }

    fn handle(&mut self, d: &Deliver) -> Result<Handled, StageError> {
        let broker = &self.broker;
        match &d.envelope.data {
            EventData::MarketTick(t) => {
                let st = &mut self.state;
                let newer = st
                    .marks
                    .get(&t.instrument_token)
                    .is_none_or(|(at, _)| *at <= t.timestamp);
                if !newer {
                    return Ok(Handled::default());
                }
                st.marks
                    .insert(t.instrument_token, (t.timestamp, t.last_price.get()));
                for (strategy, book) in st.books.iter_mut() {
                    if book
                        .positions
                        .get(&t.instrument_token)
                        .is_some_and(|p| p.quantity != 0)
                    {
                        book.mark(t.instrument_token, t.last_price.get());
                        match self.marked.get_mut(strategy) {
                            Some(at) => *at = t.timestamp,
                            None => {
                                self.marked.insert(strategy.clone(), t.timestamp);
                            }
                        }
                    }
                }
                Ok(Handled::default())
            }
            EventData::OrderFilled(f) => {
                if d.topic.broker_name() != Some(broker) {
                    return Err(StageError::poison(format!("{} is not {broker}'s", d.topic)));
                }
                let latest = self.state.marks.get(&f.instrument_token).copied();
                let starting_cash = self.starting_cash;
                let book = self
                    .state
                    .books
                    .entry(f.strategy_id.clone())
                    .or_insert_with(|| Book::new(starting_cash));
                book.apply_fill(
                    f.instrument_token,
                    f.side,
                    f.quantity.get(),
                    f.fill_price.get(),
                    f.fees,
                );
                // A tick of the fill's own time is its market price and wins over the fill's
                // (slipped) price, whichever of the two came first.
                if let Some((at, price)) = latest
                    && at >= f.timestamp
                {
                    book.mark(f.instrument_token, price);
                }
                // The fill's write is the strategy's latest.
                self.marked.remove(&f.strategy_id);
                let snapshot = snapshot_of(broker, &f.account, &f.strategy_id, book, f.timestamp);
                let json = serde_json::to_string(&snapshot)
                    .map_err(|e| StageError::poison(format!("snapshot: {e}")))?;
                let env = d.envelope.child(
                    EventBroker::Broker(broker.clone()),
                    "portfolio",
                    0,
                    keys::snapshot(&f.account),
                    f.timestamp,
                    EventData::PnlSnapshot(snapshot),
                );
                Ok(Handled {
                    outputs: vec![out(broker, BrokerTopic::PnlSnapshots, env)],
                    effects: vec![Effect::Set {
                        key: portfolio_key(broker, &f.strategy_id),
                        value: json,
                    }],
                })
            }
            _ => Err(wrong_type(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use alpha_panda_core::events::{MarketTick, OrderFilled};
    use alpha_panda_core::{
        AccountId, Decimal, EventEnvelope, ExecutionMode, InstrumentToken, OrderId, Price,
        Quantity, Side, Timestamp,
    };

    use super::*;
    use crate::delivery::unit::Unit;

    const T: InstrumentToken = InstrumentToken(408065);

    fn at() -> Timestamp {
        Timestamp::from_unix_millis(1_705_290_399_800).unwrap()
    }

    fn deliver(topic: &str, data: EventData) -> Deliver {
        Deliver {
            envelope: EventEnvelope::root(EventBroker::Shared, "test", "k", at(), data),
            topic: topic.parse().unwrap(),
            partition: 0,
            offset: 0,
        }
    }

    fn tick(price: i64) -> Deliver {
        let p = Price::new(Decimal::from(price)).unwrap();
        deliver(
            "market.ticks",
            EventData::MarketTick(MarketTick::new(T, p, at())),
        )
    }

    fn fill() -> Deliver {
        deliver(
            "paper.orders.filled",
            EventData::OrderFilled(OrderFilled {
                order_id: OrderId::new("o1").unwrap(),
                instrument_token: T,
                side: Side::Buy,
                quantity: Quantity::new(10).unwrap(),
                fill_price: Price::new(Decimal::new(1001, 1)).unwrap(),
                fees: Decimal::ZERO,
                strategy_id: StrategyId::new("s").unwrap(),
                account: AccountId::new("PAPER").unwrap(),
                execution_mode: ExecutionMode::Paper,
                broker: BrokerName::paper(),
                timestamp: at(),
                trade_id: None,
            }),
        )
    }

    fn portfolio() -> Box<dyn crate::delivery::unit::CheckpointedStage> {
        let settings = Arc::new(alpha_panda_config::load(None, std::iter::empty()).unwrap());
        let make = portfolio_factory(settings, BrokerName::paper());
        make(&Unit::Stage, None).unwrap()
    }

    fn sets(effects: Vec<Effect>) -> Vec<String> {
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Set { value, .. } => Some(value),
                _ => None,
            })
            .collect()
    }

    /// The unrealized PnL of the last book the stage stored after `records`, as one batch.
    fn unrealized(records: &[Deliver]) -> Decimal {
        let mut stage = portfolio();
        let mut last = None;
        for d in records {
            last = sets(stage.handle(d).unwrap().effects).pop().or(last);
        }
        last = sets(stage.batch_effects()).pop().or(last);
        let snap: PnlSnapshot = serde_json::from_str(&last.unwrap()).unwrap();
        snap.unrealized_pnl
    }

    #[test]
    fn ticks_store_a_strategys_book_once_per_batch_at_the_last_price() {
        let mut stage = portfolio();
        assert_eq!(sets(stage.handle(&fill()).unwrap().effects).len(), 1);
        for price in [99, 101, 102] {
            let per_tick = stage.handle(&tick(price)).unwrap().effects;
            assert!(per_tick.is_empty(), "a tick writes nothing of its own");
        }
        let stored = sets(stage.batch_effects());
        assert_eq!(stored.len(), 1, "one write for the batch");
        let snap: PnlSnapshot = serde_json::from_str(&stored[0]).unwrap();
        // Bought 10 at 100.1, marked to 102.
        assert_eq!(snap.unrealized_pnl, Decimal::from(19));
        assert!(
            stage.batch_effects().is_empty(),
            "the next batch starts clean"
        );
        // A fill after the ticks is the latest write: the batch adds none.
        stage.handle(&tick(103)).unwrap();
        assert_eq!(sets(stage.handle(&fill()).unwrap().effects).len(), 1);
        assert!(stage.batch_effects().is_empty());
    }

    #[test]
    fn a_tick_and_a_fill_of_one_time_mark_the_position_to_the_tick_in_either_order() {
        // Bought 10 at 100.1 on a tick at 100: marked to 100, whichever came first.
        let tick_first = unrealized(&[tick(100), fill()]);
        let fill_first = unrealized(&[fill(), tick(100)]);
        assert_eq!(tick_first, Decimal::from(-1));
        assert_eq!(fill_first, Decimal::from(-1));
    }
}
