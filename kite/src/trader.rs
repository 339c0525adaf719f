//! The zerodha trader's state and decisions, without I/O: order intents of validated
//! signals, what each Kite reply, order update and trade turns into, and the MIS square-off.
//! The actor shell (`alpha_panda_actors::zerodha`) makes the calls and the writes.
//!
//! Contract:
//! - [`plan`] turns a validated signal into an [`Intent`] (id and tag from
//!   [`crate::intent`]): the instrument master supplies exchange, tradingsymbol, tick and lot
//!   size; LIMIT/SL prices are rounded to the tick in the order's favour, quantities down to
//!   whole lots. A signal that cannot become an order (unknown instrument, less than one lot)
//!   gives an intent that is already `Failed`, so it is answered by one `order_failed`.
//! - [`TraderState`] holds every intent (and the MIS positions the trader's own fills made)
//!   and is plain serde data: the shell writes it to the store before each order call, so an
//!   intent is durable before Kite can see it. A known intent is never planned again.
//! - Intent states change only through [`crate::intent::transition`]. An intent whose call
//!   was lost is resolved by the order book ([`TraderState::resolve_from_book`]): found by tag
//!   → placed; absent after `grace` → failed. Nothing here ever asks to send an order twice.
//! - Order updates (WebSocket or the polled book) and trades become emissions through
//!   [`crate::intent::Progress`]: one `order_ack`, one `order_filled` per Kite trade (the
//!   trade id is in the event id), one `order_failed`. Every event id is derived from the
//!   intent, every event is a child of the validated signal (`causation_id` = its id), so a
//!   repetition after a crash is a duplicate downstream.
//! - MIS square-off: at the configured IST time ([`square_off_due`]) each non-zero MIS
//!   position of a strategy becomes one MARKET intent in the other direction, its id derived
//!   from the day, the strategy and the instrument (once per day, whatever restarts).

use std::collections::BTreeMap;

use alpha_panda_core::envelope::ENVELOPE_VERSION;
use alpha_panda_core::events::{OrderAck, OrderFailed, OrderFilled, OrderPlaced};
use alpha_panda_core::{
    AccountId, BrokerName, EventBroker, EventData, EventEnvelope, ExecutionMode, InstrumentToken,
    OrderId, Price, Quantity, Side, StrategyId, Timestamp,
};
use alpha_panda_topics::{BrokerTopic, keys};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::intent::{
    IntentEvent, IntentState, Progress, Resolution, STAGE, Step, event_id, intent_id, resolve,
    round_price, round_quantity, tag_for, transition,
};
use crate::limits::ist;
use crate::types::order::{
    Exchange, Order, OrderType, PlaceOrder, Product, Trade, TransactionType, Validity,
};

/// What the instrument master says about an instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentSpec {
    pub exchange: Exchange,
    pub tradingsymbol: String,
    pub tick_size: Decimal,
    pub lot_size: u64,
}

/// The order an intent sends: Kite's fields, already rounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    pub exchange: Exchange,
    pub tradingsymbol: String,
    pub transaction_type: TransactionType,
    pub order_type: OrderType,
    pub quantity: u64,
    pub product: Product,
    pub validity: Validity,
    pub price: Option<Decimal>,
    pub trigger_price: Option<Decimal>,
}

impl OrderSpec {
    /// The `POST /orders/regular` request, tagged.
    pub fn to_place(&self, tag: &str) -> PlaceOrder {
        let mut p = PlaceOrder::new(
            self.exchange,
            self.tradingsymbol.clone(),
            self.transaction_type,
            self.order_type,
            self.quantity,
            self.product,
        );
        p.validity = Some(self.validity);
        p.price = self.price;
        p.trigger_price = self.trigger_price;
        p.tag = Some(tag.to_owned());
        p
    }
}

/// The event an intent comes from: its events are children of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub event_id: Uuid,
    pub correlation_id: Uuid,
    pub trace_id: Uuid,
}

/// Why an intent exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A validated signal.
    Signal,
    /// The daily MIS square-off.
    SquareOff,
}

/// One order the trader means to have at Kite, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub id: Uuid,
    pub tag: String,
    pub origin: Origin,
    pub purpose: Purpose,
    pub strategy_id: StrategyId,
    pub account: AccountId,
    pub instrument_token: InstrumentToken,
    pub side: Side,
    /// The quantity and price the signal asked for (the `order_failed` of a refusal
    /// reports them).
    pub requested_quantity: Quantity,
    pub reference_price: Price,
    /// `None` when the signal could not become an order (the intent is `Failed`).
    pub order: Option<OrderSpec>,
    pub state: IntentState,
    pub progress: Progress,
    /// Event time of the signal.
    pub at: Timestamp,
    /// Wall time the call's outcome was lost (the intent became `Unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_since: Option<DateTime<Utc>>,
}

/// An event the trader publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub topic: BrokerTopic,
    pub envelope: EventEnvelope,
}

/// A failure of the trader's logic (a bug or a record it cannot read), never a refusal of an
/// order (that is an `order_failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraderError {
    #[error("event {event_id} is a {kind}, not a validated signal")]
    NotValidated { event_id: Uuid, kind: String },
    #[error("intent {0} is not in the trader's state")]
    UnknownIntent(Uuid),
    #[error("intent {intent}: {event:?} cannot happen in state {state:?}")]
    Transition {
        intent: Uuid,
        state: IntentState,
        event: IntentEvent,
    },
}

fn kite_side(side: Side) -> TransactionType {
    match side {
        Side::Buy => TransactionType::Buy,
        Side::Sell => TransactionType::Sell,
    }
}

fn kite_order_type(t: alpha_panda_core::OrderType) -> OrderType {
    use alpha_panda_core::OrderType as C;
    match t {
        C::Market => OrderType::Market,
        C::Limit => OrderType::Limit,
        C::StopLoss => OrderType::Sl,
        C::StopLossMarket => OrderType::SlM,
    }
}

fn kite_product(p: alpha_panda_core::Product) -> Product {
    use alpha_panda_core::Product as C;
    match p {
        C::Cnc => Product::Cnc,
        C::Mis => Product::Mis,
        C::Nrml => Product::Nrml,
    }
}

fn kite_validity(v: alpha_panda_core::Validity) -> Validity {
    use alpha_panda_core::Validity as C;
    match v {
        C::Day => Validity::Day,
        C::Ioc => Validity::Ioc,
    }
}

/// The order a validated signal asks for on this instrument, or why there is none.
fn order_for(
    v: &alpha_panda_core::events::ValidatedSignal,
    instrument: Option<&InstrumentSpec>,
) -> Result<OrderSpec, String> {
    let s = &v.original_signal;
    let Some(i) = instrument else {
        return Err(format!(
            "instrument {} is not in the instrument master",
            s.instrument_token.0
        ));
    };
    let side = kite_side(s.signal_type);
    let order_type = kite_order_type(s.order_type);
    let Some(quantity) = round_quantity(v.validated_quantity.get(), i.lot_size) else {
        return Err(format!(
            "quantity {} of {}:{} is less than one lot of {}",
            v.validated_quantity.get(),
            i.exchange,
            i.tradingsymbol,
            i.lot_size
        ));
    };
    let round = |p: Decimal| round_price(p, i.tick_size, side);
    let price = match order_type {
        OrderType::Limit | OrderType::Sl => {
            let p = round(v.validated_price.get());
            if p <= Decimal::ZERO {
                return Err(format!(
                    "price {} rounds to {p} on the tick of {}",
                    v.validated_price.get(),
                    i.tick_size
                ));
            }
            Some(p)
        }
        OrderType::Market | OrderType::SlM => None,
    };
    let trigger_price = match order_type {
        OrderType::Sl | OrderType::SlM => match s.trigger_price {
            // A trigger is a threshold, not a fill price: the nearest tick either way is
            // as good, so it is rounded like the price (in the order's favour).
            Some(t) => Some(round(t.get())),
            None => return Err(format!("a {order_type} signal has no trigger price")),
        },
        OrderType::Market | OrderType::Limit => None,
    };
    Ok(OrderSpec {
        exchange: i.exchange,
        tradingsymbol: i.tradingsymbol.clone(),
        transaction_type: side,
        order_type,
        quantity,
        product: kite_product(s.product),
        validity: kite_validity(v.original_signal.validity),
        price,
        trigger_price,
    })
}

/// The intent of a validated signal: `Recorded` with its order, or `Failed` with the reason
/// it cannot be one.
pub fn plan(
    account: &AccountId,
    signal: &EventEnvelope,
    instrument: Option<&InstrumentSpec>,
) -> Result<Intent, TraderError> {
    let EventData::ValidatedSignal(v) = &signal.data else {
        return Err(TraderError::NotValidated {
            event_id: signal.id,
            kind: signal.event_type().to_string(),
        });
    };
    let id = intent_id(signal.id);
    let (order, state) = match order_for(v, instrument) {
        Ok(o) => (Some(o), IntentState::Recorded),
        Err(reason) => (None, IntentState::Failed { reason }),
    };
    Ok(Intent {
        id,
        tag: tag_for(id),
        origin: Origin {
            event_id: signal.id,
            correlation_id: signal.correlation_id,
            trace_id: signal.trace_id,
        },
        purpose: Purpose::Signal,
        strategy_id: v.original_signal.strategy_id.clone(),
        account: account.clone(),
        instrument_token: v.original_signal.instrument_token,
        side: v.original_signal.signal_type,
        requested_quantity: v.validated_quantity,
        reference_price: v.validated_price,
        order,
        state,
        progress: Progress::default(),
        at: v.timestamp,
        unknown_since: None,
    })
}

impl Intent {
    /// Refuses a recorded intent before anything is sent (the broker is HALTED).
    pub fn refuse(&mut self, reason: impl Into<String>) {
        if self.state == IntentState::Recorded {
            self.state = IntentState::Failed {
                reason: reason.into(),
            };
        }
    }

    /// The runtime's order id of the intent.
    pub fn order_id(&self) -> OrderId {
        OrderId::new(format!("kite-{}", self.id.simple()))
            .unwrap_or_else(|e| unreachable!("a uuid makes a valid order id: {e}"))
    }

    /// The request to send, when the intent has an order.
    pub fn place_order(&self) -> Option<PlaceOrder> {
        self.order.as_ref().map(|o| o.to_place(&self.tag))
    }

    /// Nothing more will come of it: failed before or at Kite, or final and fully filled.
    pub fn is_closed(&self) -> bool {
        match self.state {
            IntentState::Failed { .. } => true,
            IntentState::Placed { .. } => self.progress.is_closed(),
            IntentState::Recorded | IntentState::Unknown => false,
        }
    }

    fn quantity(&self) -> Quantity {
        self.order
            .as_ref()
            .and_then(|o| Quantity::new(o.quantity).ok())
            .unwrap_or(self.requested_quantity)
    }

    fn envelope(
        &self,
        broker: &BrokerName,
        what: &str,
        at: Timestamp,
        data: EventData,
    ) -> EventEnvelope {
        EventEnvelope {
            id: event_id(self.id, what),
            correlation_id: self.origin.correlation_id,
            causation_id: Some(self.origin.event_id),
            trace_id: self.origin.trace_id,
            parent_trace_id: Some(self.origin.event_id),
            broker: EventBroker::Broker(broker.clone()),
            ts: at,
            key: keys::order(&self.account, &self.strategy_id),
            source: STAGE.to_owned(),
            version: ENVELOPE_VERSION,
            data,
        }
    }

    /// `order_placed` on `orders.submitted`: the call was made (placed, or outcome unknown).
    pub fn submitted(&self, broker: &BrokerName, at: Timestamp) -> Option<Emission> {
        let o = self.order.as_ref()?;
        if !matches!(
            self.state,
            IntentState::Placed { .. } | IntentState::Unknown
        ) {
            return None;
        }
        let data = EventData::OrderPlaced(OrderPlaced {
            order_id: self.order_id(),
            instrument_token: self.instrument_token,
            side: self.side,
            quantity: self.quantity(),
            price: o
                .price
                .and_then(|p| Price::new(p).ok())
                .unwrap_or(self.reference_price),
            order_type: core_order_type(o.order_type),
            product: core_product(o.product),
            validity: core_validity(o.validity),
            trigger_price: o.trigger_price.and_then(|p| Price::new(p).ok()),
            strategy_id: self.strategy_id.clone(),
            account: self.account.clone(),
            execution_mode: ExecutionMode::Live,
            broker: broker.clone(),
            timestamp: at,
        });
        Some(Emission {
            topic: BrokerTopic::OrdersSubmitted,
            envelope: self.envelope(broker, "submitted", at, data),
        })
    }

    /// `order_failed` of an intent that failed before or at the call.
    pub fn refused(&self, broker: &BrokerName, at: Timestamp) -> Option<Emission> {
        match &self.state {
            IntentState::Failed { reason } => Some(self.failed(broker, reason, at)),
            _ => None,
        }
    }

    fn failed(&self, broker: &BrokerName, reason: &str, at: Timestamp) -> Emission {
        let data = EventData::OrderFailed(OrderFailed {
            order_id: self.order_id(),
            instrument_token: self.instrument_token,
            side: self.side,
            quantity: self.quantity(),
            price: self.reference_price,
            strategy_id: self.strategy_id.clone(),
            account: self.account.clone(),
            execution_mode: ExecutionMode::Live,
            broker: broker.clone(),
            timestamp: at,
            error_message: reason.to_owned(),
        });
        Emission {
            topic: BrokerTopic::OrdersFailed,
            envelope: self.envelope(broker, "failed", at, data),
        }
    }

    /// The event of a step (`None` for `FetchTrades`, which asks for a call instead).
    pub fn emission(&self, broker: &BrokerName, step: &Step, at: Timestamp) -> Option<Emission> {
        match step {
            Step::Ack { broker_order_id } => {
                let data = EventData::OrderAck(OrderAck {
                    order_id: self.order_id(),
                    broker_order_id: broker_order_id.clone(),
                    instrument_token: self.instrument_token,
                    side: self.side,
                    quantity: self.quantity(),
                    strategy_id: self.strategy_id.clone(),
                    account: self.account.clone(),
                    execution_mode: ExecutionMode::Live,
                    broker: broker.clone(),
                    timestamp: at,
                });
                Some(Emission {
                    topic: BrokerTopic::OrdersAck,
                    envelope: self.envelope(broker, "ack", at, data),
                })
            }
            Step::Fill {
                trade_id,
                quantity,
                price,
            } => {
                let data = EventData::OrderFilled(OrderFilled {
                    order_id: self.order_id(),
                    instrument_token: self.instrument_token,
                    side: self.side,
                    quantity: Quantity::new(*quantity).ok()?,
                    fill_price: Price::new(*price).ok()?,
                    // Kite's trades carry no charges; they come with the contract note.
                    fees: Decimal::ZERO,
                    strategy_id: self.strategy_id.clone(),
                    account: self.account.clone(),
                    execution_mode: ExecutionMode::Live,
                    broker: broker.clone(),
                    timestamp: at,
                    trade_id: Some(trade_id.clone()),
                });
                Some(Emission {
                    topic: BrokerTopic::OrdersFilled,
                    envelope: self.envelope(broker, &format!("fill:{trade_id}"), at, data),
                })
            }
            Step::Failed { reason } => Some(self.failed(broker, reason, at)),
            Step::FetchTrades { .. } => None,
        }
    }
}

fn core_order_type(t: OrderType) -> alpha_panda_core::OrderType {
    use alpha_panda_core::OrderType as C;
    match t {
        OrderType::Market => C::Market,
        OrderType::Limit => C::Limit,
        OrderType::Sl => C::StopLoss,
        OrderType::SlM => C::StopLossMarket,
    }
}

fn core_product(p: Product) -> alpha_panda_core::Product {
    use alpha_panda_core::Product as C;
    match p {
        Product::Cnc | Product::Mtf => C::Cnc,
        Product::Mis => C::Mis,
        Product::Nrml => C::Nrml,
    }
}

fn core_validity(v: Validity) -> alpha_panda_core::Validity {
    use alpha_panda_core::Validity as C;
    match v {
        Validity::Ioc => C::Ioc,
        Validity::Day | Validity::Ttl => C::Day,
    }
}

/// A strategy's MIS position in one instrument, from the trader's own fills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisPosition {
    pub strategy_id: StrategyId,
    pub account: AccountId,
    pub instrument_token: InstrumentToken,
    pub exchange: Exchange,
    pub tradingsymbol: String,
    /// Net quantity: positive long, negative short.
    pub quantity: i64,
    pub last_price: Price,
}

/// What resolving an intent from the order book did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub intent: Uuid,
    pub state: IntentState,
    /// Other orders that carry the intent's tag (it reached Kite more than once): for an
    /// operator to cancel.
    pub duplicates: Vec<String>,
}

/// Every intent of one zerodha broker, and the MIS positions its fills made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraderState {
    intents: BTreeMap<Uuid, Intent>,
    /// By `strategy|instrument_token`.
    #[serde(default)]
    mis: BTreeMap<String, MisPosition>,
    /// The IST day whose square-off was done.
    #[serde(default)]
    squared_off: Option<NaiveDate>,
}

impl TraderState {
    pub fn get(&self, id: Uuid) -> Option<&Intent> {
        self.intents.get(&id)
    }

    pub fn len(&self) -> usize {
        self.intents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }

    /// Adds a new intent. A known id keeps what it has (the same signal again never makes a
    /// second intent); returns the intent as it now stands.
    pub fn admit(&mut self, intent: Intent) -> &Intent {
        self.intents.entry(intent.id).or_insert(intent)
    }

    /// Moves an intent through the life cycle table.
    pub fn apply(
        &mut self,
        id: Uuid,
        event: &IntentEvent,
        now: DateTime<Utc>,
    ) -> Result<&Intent, TraderError> {
        let intent = self
            .intents
            .get_mut(&id)
            .ok_or(TraderError::UnknownIntent(id))?;
        let next = transition(&intent.state, event).ok_or_else(|| TraderError::Transition {
            intent: id,
            state: intent.state.clone(),
            event: event.clone(),
        })?;
        intent.unknown_since = match (&intent.state, &next) {
            (IntentState::Unknown, IntentState::Unknown) => intent.unknown_since.or(Some(now)),
            (_, IntentState::Unknown) => Some(now),
            _ => None,
        };
        intent.state = next;
        Ok(intent)
    }

    /// Intents whose call may have reached Kite without a recorded reply, or not yet made.
    pub fn unresolved(&self) -> impl Iterator<Item = &Intent> {
        self.intents
            .values()
            .filter(|i| matches!(i.state, IntentState::Recorded | IntentState::Unknown))
    }

    /// True when some intent still waits for Kite (resolution, updates or trades).
    pub fn waiting(&self) -> bool {
        self.intents.values().any(|i| !i.is_closed())
    }

    /// Resolves the `Recorded` and `Unknown` intents from Kite's order book: an order with
    /// the tag places the intent; an `Unknown` intent absent for `grace` since its outcome
    /// was lost failed. A `Recorded` intent stays recorded (its call is the shell's to make).
    pub fn resolve_from_book(
        &mut self,
        book: &[Order],
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Vec<Resolved> {
        let pending: Vec<(Uuid, String, IntentState, Option<DateTime<Utc>>)> = self
            .unresolved()
            .map(|i| (i.id, i.tag.clone(), i.state.clone(), i.unknown_since))
            .collect();
        let mut out = Vec::new();
        for (id, tag, state, since) in pending {
            let (event, duplicates) = match resolve(&tag, book) {
                Resolution::Placed { order_id } => (IntentEvent::FoundInBook { order_id }, vec![]),
                Resolution::Duplicated { order_id, extra } => {
                    (IntentEvent::FoundInBook { order_id }, extra)
                }
                Resolution::NotPlaced => {
                    let overdue =
                        state == IntentState::Unknown && since.is_none_or(|s| now - s >= grace);
                    if !overdue {
                        continue;
                    }
                    (IntentEvent::AbsentFromBook, vec![])
                }
            };
            if let Ok(i) = self.apply(id, &event, now) {
                out.push(Resolved {
                    intent: id,
                    state: i.state.clone(),
                    duplicates,
                });
            }
        }
        out
    }

    /// An order update (WebSocket message or a row of the polled book): the steps of the
    /// intent whose tag it carries, or nothing for an order that is not the trader's. An
    /// update of an unresolved intent places it first (it proves the order is at Kite).
    pub fn on_order(&mut self, order: &Order, now: DateTime<Utc>) -> Option<(Uuid, Vec<Step>)> {
        let tag = order.tag.as_deref()?;
        let id = self.intents.values().find(|i| i.tag == tag)?.id;
        let found = IntentEvent::FoundInBook {
            order_id: order.order_id.clone(),
        };
        let state = &self.intents.get(&id)?.state;
        match state {
            IntentState::Recorded | IntentState::Unknown => {
                self.apply(id, &found, now).ok()?;
            }
            IntentState::Placed { order_id } if *order_id == order.order_id => {}
            // Another order with the tag (a duplicate) or an intent that failed: not ours
            // to follow.
            IntentState::Placed { .. } | IntentState::Failed { .. } => return None,
        }
        let intent = self.intents.get_mut(&id)?;
        Some((id, intent.progress.on_order(order)))
    }

    /// The trades of an intent's order: a fill step for each one not seen yet. Fills of MIS
    /// orders move the strategy's MIS position.
    pub fn on_trades(&mut self, id: Uuid, trades: &[Trade]) -> Result<Vec<Step>, TraderError> {
        let intent = self
            .intents
            .get_mut(&id)
            .ok_or(TraderError::UnknownIntent(id))?;
        let steps = intent.progress.on_trades(trades);
        if let Some(order) = intent.order.as_ref().filter(|o| o.product == Product::Mis) {
            for step in &steps {
                if let Step::Fill {
                    quantity, price, ..
                } = step
                {
                    let key = format!("{}|{}", intent.strategy_id, intent.instrument_token.0);
                    let p = self.mis.entry(key).or_insert_with(|| MisPosition {
                        strategy_id: intent.strategy_id.clone(),
                        account: intent.account.clone(),
                        instrument_token: intent.instrument_token,
                        exchange: order.exchange,
                        tradingsymbol: order.tradingsymbol.clone(),
                        quantity: 0,
                        last_price: intent.reference_price,
                    });
                    p.quantity += intent.side.sign() * i64::try_from(*quantity).unwrap_or(0);
                    if let Ok(px) = Price::new(*price) {
                        p.last_price = px;
                    }
                }
            }
        }
        Ok(steps)
    }

    /// The MIS positions the trader's fills made.
    pub fn mis_positions(&self) -> impl Iterator<Item = &MisPosition> {
        self.mis.values()
    }

    /// The day's square-off: one MARKET MIS intent per non-zero MIS position, in the other
    /// direction. Ids derive from the day, the strategy and the instrument, so a second call
    /// the same day (after a restart) admits nothing new. Returns the new intents.
    pub fn square_off(&mut self, day: NaiveDate, at: Timestamp) -> Vec<Intent> {
        self.squared_off = Some(day);
        let mut new = Vec::new();
        let positions: Vec<MisPosition> = self
            .mis
            .values()
            .filter(|p| p.quantity != 0)
            .cloned()
            .collect();
        for p in positions {
            let root = alpha_panda_core::ids::child_id(
                SQUARE_OFF_ROOT,
                &format!("squareoff:{day}:{}:{}", p.strategy_id, p.instrument_token.0),
                0,
            );
            let id = intent_id(root);
            if self.intents.contains_key(&id) {
                continue;
            }
            let side = if p.quantity > 0 {
                Side::Sell
            } else {
                Side::Buy
            };
            let quantity = p.quantity.unsigned_abs();
            let Ok(q) = Quantity::new(quantity) else {
                continue;
            };
            let intent = Intent {
                id,
                tag: tag_for(id),
                origin: Origin {
                    event_id: root,
                    correlation_id: root,
                    trace_id: root,
                },
                purpose: Purpose::SquareOff,
                strategy_id: p.strategy_id.clone(),
                account: p.account.clone(),
                instrument_token: p.instrument_token,
                side,
                requested_quantity: q,
                reference_price: p.last_price,
                order: Some(OrderSpec {
                    exchange: p.exchange,
                    tradingsymbol: p.tradingsymbol.clone(),
                    transaction_type: kite_side(side),
                    order_type: OrderType::Market,
                    quantity,
                    product: Product::Mis,
                    validity: Validity::Day,
                    price: None,
                    trigger_price: None,
                }),
                state: IntentState::Recorded,
                progress: Progress::default(),
                at,
                unknown_since: None,
            };
            self.intents.insert(id, intent.clone());
            new.push(intent);
        }
        new
    }

    /// The IST day whose square-off is done.
    pub fn squared_off(&self) -> Option<NaiveDate> {
        self.squared_off
    }

    /// Forgets closed intents of signals older than `before` (their signals are long marked
    /// processed, so none can come again). MIS positions stay.
    pub fn prune(&mut self, before: Timestamp) {
        self.intents
            .retain(|_, i| !(i.is_closed() && i.at < before));
    }
}

/// The root the square-off intents derive from (a fixed v7-shaped id).
const SQUARE_OFF_ROOT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_5155_4152_454f);

/// The IST day to square off now, if `now` is at or past `at` (IST) and that day's square-off
/// is not done yet.
pub fn square_off_due(
    now: DateTime<Utc>,
    at: NaiveTime,
    done: Option<NaiveDate>,
) -> Option<NaiveDate> {
    let local = now.with_timezone(&ist());
    let day = local.date_naive();
    (local.time() >= at && done != Some(day)).then_some(day)
}

#[cfg(test)]
#[path = "trader_tests.rs"]
mod tests;
