//! The trading stages as actors: thin shells around the pure logic (strategy, risk, paper
//! fills and charges, portfolio maths). Each factory makes a fresh actor per partition; the
//! delivery bridge feeds it records and publishes what it returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::Actor;
use alpha_panda_config::{BrokerKind, Settings};
use alpha_panda_core::events::{
    OrderAck, OrderFilled, OrderPlaced, PnlSnapshot, RejectedSignal, ValidatedSignal,
};
use alpha_panda_core::{BrokerName, EventBroker, EventData, ExecutionMode, OrderId, StrategyId};
use alpha_panda_topics::{BrokerTopic, TopicName, keys};

use crate::control::Control;
use crate::delivery::stage::FnStage;
use crate::delivery::worker::StageFactory;
use crate::delivery::{Deliver, Handled, Output, StageError};
use crate::paper::charges::charges;
use crate::paper::fills::{PaperBook, PaperEvent, PaperOrder};
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

/// Strategies: `market.ticks` → `{broker}.signals.raw`.
/// State lives outside the actors, so a restarted actor carries on where its predecessor
/// stopped (history is per instrument, and an instrument is in one partition).
///
/// Strategies run isolated (see `StrategySet`): one that panics is rebuilt alone and, after
/// three panics on a tick, the tick goes to `market.ticks.dlq` for that strategy (stage
/// `strategy:{id}`) while the other strategies' signals for it go out. Signals of a disabled
/// strategy, or of one paused on a broker, are held back.
pub fn strategy_factory(
    settings: &Settings,
    counters: Arc<Counters>,
    control: Arc<Control>,
    builder: crate::strategy::Builder,
) -> Result<StageFactory, String> {
    let set = Arc::new(Mutex::new(StrategySet::from_settings_with(
        settings, builder,
    )?));
    let group = format!("{}.market.strategy", settings.kafka.group_prefix);
    Ok(Arc::new(move || {
        let set = set.clone();
        let counters = counters.clone();
        let control = control.clone();
        let group = group.clone();
        FnStage::new(move |d: &Deliver| {
            if !matches!(d.envelope.data, EventData::MarketTick(_)) {
                return Err(wrong_type(d));
            }
            counters.ticks.fetch_add(1, Ordering::Relaxed);
            let emits = |s: &StrategyId, b: &BrokerName| {
                d.replay || control.strategy_emits(s.as_str(), b.as_str())
            };
            let outcome = set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .on_tick(&d.envelope, &emits);
            let mut outputs = outcome.outputs;
            counters
                .signals
                .fetch_add(outputs.len() as u64, Ordering::Relaxed);
            for fault in outcome.faults {
                if d.replay {
                    continue;
                }
                crate::metrics::metrics()
                    .restarts
                    .with_label_values(&["strategy", "market"])
                    .inc();
                if fault.gave_up {
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
                        &group,
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
            }
            Ok(Handled {
                outputs,
                effects: Vec::new(),
            })
        })
        .start()
        .recipient()
    }))
}

/// Risk: `{broker}.signals.raw` → `signals.validated` or `signals.rejected`.
/// One risk book per broker, shared by the broker's partition actors.
///
/// The broker's and the strategy's trading states are a rule too (`trading_state`): HALTED
/// refuses every signal, REDUCING all that do not reduce a position. Records replayed to
/// rebuild the book are evaluated as ACTIVE: trading states are operator state outside the
/// log (docs/operations.md).
pub fn risk_factory(
    settings: Arc<Settings>,
    counters: Arc<Counters>,
    control: Arc<Control>,
) -> StageFactory {
    let books: Arc<Mutex<HashMap<BrokerName, RiskBook>>> = Arc::default();
    Arc::new(move || {
        let settings = settings.clone();
        let counters = counters.clone();
        let books = books.clone();
        let control = control.clone();
        FnStage::new(move |d: &Deliver| {
            let EventData::TradingSignal(signal) = &d.envelope.data else {
                return Err(wrong_type(d));
            };
            let broker = broker_of(d)?;
            let limits = Limits::for_strategy(&settings.risk_for(&broker), &signal.strategy_id);
            let mut books = books.lock().unwrap_or_else(|p| p.into_inner());
            let book = books.entry(broker.clone()).or_default();
            book.on_price(signal.instrument_token, signal.price.get());
            let state = if d.replay {
                alpha_panda_core::TradingState::Active
            } else {
                control.trading_state(broker.as_str(), Some(signal.strategy_id.as_str()))
            };
            let verdict = book.evaluate_in(signal, &limits, state);
            let eb = EventBroker::Broker(broker.clone());
            let output = if verdict.passed() {
                book.reserve(signal);
                let data = EventData::ValidatedSignal(ValidatedSignal {
                    original_signal: signal.clone(),
                    validated_quantity: signal.quantity,
                    validated_price: signal.price,
                    risk_checks: verdict.checks,
                    timestamp: signal.timestamp,
                });
                let env = d.envelope.child(
                    eb,
                    "risk",
                    0,
                    d.envelope.key.clone(),
                    signal.timestamp,
                    data,
                );
                out(&broker, BrokerTopic::SignalsValidated, env)
            } else {
                counters.rejections.fetch_add(1, Ordering::Relaxed);
                let data = EventData::RejectedSignal(RejectedSignal {
                    original_signal: signal.clone(),
                    rejection_reason: verdict.reasons.join("; "),
                    risk_checks: verdict.checks,
                    timestamp: signal.timestamp,
                });
                let env = d.envelope.child(
                    eb,
                    "risk",
                    0,
                    d.envelope.key.clone(),
                    signal.timestamp,
                    data,
                );
                out(&broker, BrokerTopic::SignalsRejected, env)
            };
            Ok(Handled {
                outputs: vec![output],
                effects: Vec::new(),
            })
        })
        .start()
        .recipient()
    })
}

/// The paper trader: `{broker}.signals.validated` → `orders.submitted`, `orders.ack` and
/// `orders.filled` (or `orders.failed`). Orders are placed against the signal's reference
/// price (the tick that caused it), so results do not depend on when ticks arrive.
///
/// Without `fill_model.allow_short`, a SELL larger than the strategy's filled holding fails
/// (`orders.failed`): holdings are kept per (broker, strategy, instrument) outside the actors.
/// A BUY whose fill (with charges) costs more than the strategy's cash fails too: cash per
/// (broker, strategy) starts at `fill_model.starting_cash` and follows the fills.
///
/// A validated signal that arrives while its broker or strategy is HALTED is not placed: it
/// fails (`orders.failed`, "trading is HALTED"), so signals validated before a halt do not
/// reach the market after it. (Replayed records, which only rebuild holdings, are exempt.)
pub fn paper_trader_factory(
    settings: Arc<Settings>,
    counters: Arc<Counters>,
    control: Arc<Control>,
) -> StageFactory {
    type Holdings = HashMap<(BrokerName, StrategyId, alpha_panda_core::InstrumentToken), i64>;
    let holdings: Arc<Mutex<Holdings>> = Arc::default();
    // Cash per (broker, strategy): starting cash, less what BUY fills cost with their fees,
    // plus what SELL fills bring in net of fees.
    let cash: Arc<Mutex<HashMap<(BrokerName, StrategyId), rust_decimal::Decimal>>> = Arc::default();
    Arc::new(move || {
        let settings = settings.clone();
        let counters = counters.clone();
        let holdings = holdings.clone();
        let cash = cash.clone();
        let control = control.clone();
        FnStage::new(move |d: &Deliver| {
            let EventData::ValidatedSignal(v) = &d.envelope.data else {
                return Err(wrong_type(d));
            };
            let broker = broker_of(d)?;
            let Some(def) = settings.brokers.get(&broker).filter(|b| b.kind == BrokerKind::Paper)
            else {
                return Err(StageError::poison(format!("{broker} is not a paper broker")));
            };
            let s = &v.original_signal;
            let eb = EventBroker::Broker(broker.clone());
            let key = keys::order(&def.account, &s.strategy_id);
            // The order id is derived from the validated signal's id: stable across replays.
            let order_id = OrderId::new(format!("paper-{}", d.envelope.id.simple()))
                .map_err(|e| StageError::poison(e.to_string()))?;
            let at = v.timestamp;
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
                account: def.account.clone(),
                execution_mode: ExecutionMode::Paper,
                broker: broker.clone(),
                timestamp: at,
            };
            let held_key = (broker.clone(), s.strategy_id.clone(), s.instrument_token);
            let mut holdings = holdings.lock().unwrap_or_else(|p| p.into_inner());
            let held = holdings.get(&held_key).copied().unwrap_or(0);
            let qty = v.validated_quantity.get() as i64;
            let short = s.signal_type == alpha_panda_core::Side::Sell && qty > held;
            let mut book = PaperBook::new(def.fill_model.slippage_bps);
            let halted = !d.replay
                && control.trading_state(broker.as_str(), Some(s.strategy_id.as_str()))
                    == alpha_panda_core::TradingState::Halted;
            let events = if halted {
                vec![PaperEvent::Cancelled {
                    order_id: order_id.clone(),
                    reason: format!("trading is HALTED on {broker} for {}: not placed", s.strategy_id),
                    at,
                }]
            } else if short && !def.fill_model.allow_short {
                vec![PaperEvent::Cancelled {
                    order_id: order_id.clone(),
                    reason: format!(
                        "short selling is not allowed: selling {qty} with {held} held (fill_model.allow_short = false)"
                    ),
                    at,
                }]
            } else {
                book.place(
                PaperOrder {
                    order_id: order_id.clone(),
                    instrument_token: s.instrument_token,
                    side: s.signal_type,
                    quantity: v.validated_quantity.get(),
                    order_type: s.order_type,
                    price: v.validated_price.get(),
                    trigger_price: s.trigger_price.map(|p| p.get()),
                    validity: s.validity,
                    placed_at: at,
                },
                v.validated_price.get(),
                at,
                )
            };
            let child = |i: u32, topic: BrokerTopic, data: EventData| {
                out(&broker, topic, d.envelope.child(eb.clone(), "trader", i, key.clone(), at, data))
            };
            // A halted order is not placed: only its failure goes out.
            let mut outputs = if halted {
                Vec::new()
            } else {
                vec![
                child(0, BrokerTopic::OrdersSubmitted, EventData::OrderPlaced(placed.clone())),
                child(
                    1,
                    BrokerTopic::OrdersAck,
                    EventData::OrderAck(OrderAck {
                        order_id: order_id.clone(),
                        broker_order_id: order_id.to_string(),
                        instrument_token: s.instrument_token,
                        side: s.signal_type,
                        quantity: v.validated_quantity,
                        strategy_id: s.strategy_id.clone(),
                        account: def.account.clone(),
                        execution_mode: ExecutionMode::Paper,
                        broker: broker.clone(),
                        timestamp: at,
                    }),
                ),
                ]
            };
            if !halted {
                counters.orders.fetch_add(1, Ordering::Relaxed);
            }
            let mut cash = cash.lock().unwrap_or_else(|p| p.into_inner());
            let cash = cash
                .entry((broker.clone(), s.strategy_id.clone()))
                .or_insert(def.fill_model.starting_cash);
            for e in events {
                // A BUY the strategy's cash cannot pay for (with its charges) fails.
                let e = match e {
                    PaperEvent::Filled { order_id, price, quantity, at }
                        if s.signal_type == alpha_panda_core::Side::Buy =>
                    {
                        let fees = charges(s.signal_type, quantity, price, &def.fill_model.charges).total;
                        let cost = price * rust_decimal::Decimal::from(quantity) + fees;
                        if cost > *cash {
                            PaperEvent::Cancelled {
                                order_id,
                                reason: format!(
                                    "insufficient cash for {}: the fill costs {cost} with charges, {} is left",
                                    s.strategy_id, *cash
                                ),
                                at,
                            }
                        } else {
                            PaperEvent::Filled { order_id, price, quantity, at }
                        }
                    }
                    other => other,
                };
                match e {
                    PaperEvent::Filled { price, quantity, at, .. } => {
                        *holdings.entry(held_key.clone()).or_insert(0) +=
                            s.signal_type.sign() * quantity as i64;
                        let fees = charges(s.signal_type, quantity, price, &def.fill_model.charges).total;
                        let notional = price * rust_decimal::Decimal::from(quantity);
                        *cash += match s.signal_type {
                            alpha_panda_core::Side::Buy => -(notional + fees),
                            alpha_panda_core::Side::Sell => notional - fees,
                        };
                        let fill_price = alpha_panda_core::Price::new(price)
                            .map_err(|e| StageError::poison(e.to_string()))?;
                        counters.fills.fetch_add(1, Ordering::Relaxed);
                        outputs.push(child(
                            2,
                            BrokerTopic::OrdersFilled,
                            EventData::OrderFilled(OrderFilled {
                                order_id: order_id.clone(),
                                instrument_token: s.instrument_token,
                                side: s.signal_type,
                                quantity: v.validated_quantity,
                                fill_price,
                                fees,
                                strategy_id: s.strategy_id.clone(),
                                account: def.account.clone(),
                                execution_mode: ExecutionMode::Paper,
                                broker: broker.clone(),
                                timestamp: at,
                                trade_id: Some(format!("{order_id}-1")),
                            }),
                        ));
                    }
                    PaperEvent::Cancelled { reason, at, .. } => {
                        outputs.push(child(
                            2,
                            BrokerTopic::OrdersFailed,
                            EventData::OrderFailed(alpha_panda_core::events::OrderFailed {
                                order_id: order_id.clone(),
                                instrument_token: s.instrument_token,
                                side: s.signal_type,
                                quantity: v.validated_quantity,
                                price: v.validated_price,
                                strategy_id: s.strategy_id.clone(),
                                account: def.account.clone(),
                                execution_mode: ExecutionMode::Paper,
                                broker: broker.clone(),
                                timestamp: at,
                                error_message: reason,
                            }),
                        ));
                    }
                }
            }
            Ok(Handled {
                outputs,
                effects: Vec::new(),
            })
        })
        .start()
        .recipient()
    })
}

/// The store key of a strategy's portfolio: `{broker}:portfolio:{strategy}`.
pub fn portfolio_key(broker: &BrokerName, strategy: &StrategyId) -> String {
    format!("{broker}:portfolio:{strategy}")
}

/// The portfolio: `{broker}.orders.filled` → `pnl.snapshots`, and the strategy's book as
/// JSON under `{broker}:portfolio:{strategy}` (written with the dedup mark, once per fill).
///
/// Books are kept per (broker, strategy) outside the actors, so an actor restart keeps them.
/// After a process restart a book is loaded from its stored snapshot before its first fill:
/// the snapshot was written atomically with the mark of the last fill applied, so fills the
/// store has seen are skipped as duplicates and the rest apply on top: exactly once.
///
/// It also reads `market.ticks`: positions are marked to the latest price in event time
/// (a tick or a fill, whichever is later), and each strategy holding the instrument has its
/// stored snapshot refreshed.
pub fn portfolio_factory(
    settings: Arc<Settings>,
    store: crate::store::Store,
    broker: BrokerName,
) -> StageFactory {
    let state: Arc<Mutex<PortfolioState>> = Arc::default();
    Arc::new(move || {
        PortfolioStage {
            settings: settings.clone(),
            state: state.clone(),
            store: store.clone(),
            broker: broker.clone(),
        }
        .start()
        .recipient()
    })
}

#[derive(Default)]
struct PortfolioState {
    books: HashMap<StrategyId, Book>,
    /// Latest price per instrument, and its event time.
    marks: HashMap<
        alpha_panda_core::InstrumentToken,
        (alpha_panda_core::Timestamp, rust_decimal::Decimal),
    >,
}

struct PortfolioStage {
    settings: Arc<Settings>,
    state: Arc<Mutex<PortfolioState>>,
    store: crate::store::Store,
    broker: BrokerName,
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

impl Actor for PortfolioStage {
    type Context = actix::Context<Self>;
}

/// The book a stored snapshot describes.
fn book_from(snapshot: &PnlSnapshot) -> Book {
    let mut book = Book::new(snapshot.cash);
    book.fees = snapshot.fees;
    for p in &snapshot.positions {
        book.positions.insert(
            p.instrument_token,
            crate::portfolio::Position {
                quantity: p.quantity,
                average_price: p.average_price,
                realized: p.realized_pnl,
                last_price: p.last_price,
            },
        );
    }
    book
}

impl actix::Handler<Deliver> for PortfolioStage {
    type Result = actix::AtomicResponse<Self, Result<Handled, StageError>>;

    fn handle(&mut self, d: Deliver, _ctx: &mut Self::Context) -> Self::Result {
        use actix::WrapFuture;
        let (settings, state, store, broker) = (
            self.settings.clone(),
            self.state.clone(),
            self.store.clone(),
            self.broker.clone(),
        );
        actix::AtomicResponse::new(Box::pin(
            async move {
                let account = settings
                    .brokers
                    .get(&broker)
                    .map(|b| b.account.clone())
                    .ok_or_else(|| StageError::poison(format!("{broker} is not configured")))?;
                match &d.envelope.data {
                    EventData::MarketTick(t) => {
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        let newer = st
                            .marks
                            .get(&t.instrument_token)
                            .is_none_or(|(at, _)| *at <= t.timestamp);
                        if !newer {
                            return Ok(Handled::default());
                        }
                        st.marks
                            .insert(t.instrument_token, (t.timestamp, t.last_price.get()));
                        let mut effects = Vec::new();
                        for (strategy, book) in st.books.iter_mut() {
                            if book
                                .positions
                                .get(&t.instrument_token)
                                .is_some_and(|p| p.quantity != 0)
                            {
                                book.mark(t.instrument_token, t.last_price.get());
                                let snap =
                                    snapshot_of(&broker, &account, strategy, book, t.timestamp);
                                effects.push(Effect::Set {
                                    key: portfolio_key(&broker, strategy),
                                    value: serde_json::to_string(&snap).map_err(|e| {
                                        StageError::poison(format!("snapshot: {e}"))
                                    })?,
                                });
                            }
                        }
                        Ok(Handled {
                            outputs: Vec::new(),
                            effects,
                        })
                    }
                    EventData::OrderFilled(f) => {
                        if d.topic.broker_name() != Some(&broker) {
                            return Err(StageError::poison(format!(
                                "{} is not {broker}'s",
                                d.topic
                            )));
                        }
                        let known = state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .books
                            .contains_key(&f.strategy_id);
                        if !known {
                            let stored = store
                                .get(&portfolio_key(&broker, &f.strategy_id))
                                .await
                                .map_err(|e| StageError::infrastructure(e.to_string()))?;
                            let book = match stored.map(|j| serde_json::from_str::<PnlSnapshot>(&j))
                            {
                                Some(Ok(snapshot)) => book_from(&snapshot),
                                Some(Err(e)) => {
                                    return Err(StageError::infrastructure(format!(
                                        "stored portfolio of {} is unreadable: {e}",
                                        f.strategy_id
                                    )));
                                }
                                None => Book::new(
                                    settings
                                        .brokers
                                        .get(&broker)
                                        .map(|b| b.fill_model.starting_cash)
                                        .unwrap_or_default(),
                                ),
                            };
                            state
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .books
                                .entry(f.strategy_id.clone())
                                .or_insert(book);
                        }
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        let latest = st.marks.get(&f.instrument_token).copied();
                        let book = st
                            .books
                            .get_mut(&f.strategy_id)
                            .unwrap_or_else(|| unreachable!("inserted above"));
                        book.apply_fill(
                            f.instrument_token,
                            f.side,
                            f.quantity.get(),
                            f.fill_price.get(),
                            f.fees,
                        );
                        if let Some((at, price)) = latest
                            && at > f.timestamp
                        {
                            book.mark(f.instrument_token, price);
                        }
                        let snapshot =
                            snapshot_of(&broker, &f.account, &f.strategy_id, book, f.timestamp);
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
                            outputs: vec![out(&broker, BrokerTopic::PnlSnapshots, env)],
                            effects: vec![Effect::Set {
                                key: portfolio_key(&broker, &f.strategy_id),
                                value: json,
                            }],
                        })
                    }
                    _ => Err(wrong_type(&d)),
                }
            }
            .into_actor(self),
        ))
    }
}
