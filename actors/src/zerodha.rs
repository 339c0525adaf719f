//! The zerodha trader: a thin shell over `alpha_panda_kite::trader` — a stage actor that
//! turns `{broker}.signals.validated` into Kite orders, and a follower task that turns
//! Kite's order updates (WebSocket messages and the polled order book) into
//! `orders.ack`, `orders.filled` and `orders.failed`.
//!
//! Contract:
//! - The trader's whole state (`TraderState`: intents, MIS positions) is one JSON value in
//!   the store under `{broker}:trader:intents` ([`state_key`]). An intent is written there
//!   **before** its order call; the reply is recorded after it. A crash between the two
//!   leaves the intent `Recorded` (or `Unknown` after a timeout or a 5xx): it is resolved by
//!   reading Kite's order book and matching its tag — the shell sends an order only for a
//!   `Recorded` intent, and for one found again after a restart only once the book shows
//!   that Kite does not have it.
//! - A validated signal handled again (redelivery after a crash) finds its intent and
//!   re-emits the same events (`orders.submitted`, or `orders.failed`) with the same ids.
//! - The follower publishes events before it records that it did (a crash in between
//!   publishes them again with the same ids: duplicates downstream, never losses). Fills
//!   carry the Kite trade id in their event id.
//! - Replayed records (warm-up) are ignored: the state comes from the store, not the log.
//! - A token error HALTS the broker (the record is retried after a new session); a signal
//!   that arrives while the broker or its strategy is HALTED fails (`orders.failed`).
//! - One zerodha trader per broker per deployment: the state is not partitioned yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use alpha_panda_core::{AccountId, BrokerName, Classify, EventData, FailureClass, TradingState};
use alpha_panda_kite::KiteClient;
use alpha_panda_kite::intent::{IntentEvent, IntentState, Step};
use alpha_panda_kite::trader::{Emission, InstrumentSpec, Intent, TraderState, plan};
use alpha_panda_kite::types::order::{Exchange, Order};
use alpha_panda_topics::TopicName;
use chrono::{NaiveTime, Utc};
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::control::Control;
use crate::delivery::worker::StageFactory;
use crate::delivery::{Deliver, EventProducer, Handled, Output, StageError};
use crate::instruments::InstrumentMaster;
use crate::store::Store;

/// The store key of a zerodha broker's trader state.
pub fn state_key(broker: &BrokerName) -> String {
    format!("{broker}:trader:intents")
}

/// How the follower runs.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// How often the order book is read while an intent waits for Kite.
    pub poll: Duration,
    /// MIS square-off time, IST.
    pub square_off_at: NaiveTime,
}

/// The trader of one zerodha broker, shared by its stage actors and its follower.
#[derive(Clone)]
pub struct ZerodhaTrader {
    broker: BrokerName,
    account: AccountId,
    client: KiteClient,
    store: Store,
    control: Arc<Control>,
    state: Arc<Mutex<TraderState>>,
    instruments: Arc<Mutex<Option<HashMap<u32, InstrumentSpec>>>>,
    grace: chrono::Duration,
}

fn kite_failure(what: &str, e: &alpha_panda_kite::KiteError) -> StageError {
    StageError::new(e.class(), format!("{what}: {e}"))
}

fn store_failure(e: crate::store::StoreError) -> StageError {
    StageError::new(e.class(), e.to_string())
}

impl ZerodhaTrader {
    /// Loads the broker's trader state from the store.
    pub async fn load(
        broker: BrokerName,
        account: AccountId,
        client: KiteClient,
        store: Store,
        control: Arc<Control>,
        grace: Duration,
    ) -> Result<Self, StageError> {
        let key = state_key(&broker);
        let state = match store.get(&key).await.map_err(store_failure)? {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                StageError::infrastructure(format!("the trader state {key} is unreadable: {e}"))
            })?,
            None => TraderState::default(),
        };
        Ok(Self {
            broker,
            account,
            client,
            store,
            control,
            state: Arc::new(Mutex::new(state)),
            instruments: Arc::default(),
            grace: chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::seconds(30)),
        })
    }

    pub fn client(&self) -> &KiteClient {
        &self.client
    }

    async fn persist(&self, state: &TraderState) -> Result<(), StageError> {
        let json = serde_json::to_string(state)
            .map_err(|e| StageError::infrastructure(format!("trader state: {e}")))?;
        self.store
            .set(&state_key(&self.broker), &json)
            .await
            .map_err(store_failure)
    }

    async fn halt(&self, why: &str) {
        let broker = self.broker.as_str();
        tracing::error!(
            broker,
            why,
            "zerodha HALTED: run `alpha-panda kite login-url`, log in, then `alpha-panda kite session --request-token T`; then set the broker ACTIVE again (docs/zerodha.md)"
        );
        if let Err(e) = self
            .control
            .set_trading_state(broker, None, TradingState::Halted)
            .await
        {
            tracing::error!(broker, error = %e, "cannot record the HALTED state");
        }
    }

    /// A Kite error of a call: token errors halt the broker.
    async fn failed_call(&self, what: &str, e: &alpha_panda_kite::KiteError) -> StageError {
        if e.is_token_error() {
            self.halt(&e.to_string()).await;
        }
        kite_failure(what, e)
    }

    /// The instrument master from Kite (`GET /instruments`), loaded once.
    async fn instrument(&self, token: u32) -> Result<Option<InstrumentSpec>, StageError> {
        let mut cache = self.instruments.lock().await;
        if cache.is_none() {
            let csv = match self.client.instruments(None).await {
                Ok(csv) => csv,
                Err(e) => return Err(self.failed_call("GET /instruments", &e).await),
            };
            let master = InstrumentMaster::parse("GET /instruments", &csv)
                .map_err(|e| StageError::transient(e.to_string()))?;
            let specs = master
                .iter()
                .filter_map(|i| {
                    Some((
                        i.instrument_token.0,
                        InstrumentSpec {
                            exchange: i.exchange.parse::<Exchange>().ok()?,
                            tradingsymbol: i.tradingsymbol.clone(),
                            tick_size: i.tick_size,
                            lot_size: u64::from(i.lot_size),
                        },
                    ))
                })
                .collect::<HashMap<_, _>>();
            tracing::info!(broker = %self.broker, instruments = specs.len(), "Kite instrument master loaded");
            *cache = Some(specs);
        }
        Ok(cache.as_ref().and_then(|m| m.get(&token).cloned()))
    }

    fn outputs(&self, emissions: impl IntoIterator<Item = Emission>) -> Vec<Output> {
        emissions
            .into_iter()
            .map(|e| Output {
                topic: TopicName::broker(&self.broker, e.topic),
                envelope: e.envelope,
            })
            .collect()
    }

    /// What an intent's state says to publish for the call (submitted, or failed), at the
    /// signal's event time: handled again, it publishes the same events.
    fn call_events(&self, intent: &Intent) -> Vec<Emission> {
        let at = intent.at;
        intent
            .submitted(&self.broker, at)
            .into_iter()
            .chain(intent.refused(&self.broker, at))
            .collect()
    }

    /// Applies an event to an intent and writes the state; returns the intent.
    async fn apply(&self, id: Uuid, event: &IntentEvent) -> Result<Intent, StageError> {
        let mut st = self.state.lock().await;
        let intent = st
            .apply(id, event, Utc::now())
            .map_err(|e| StageError::infrastructure(e.to_string()))?
            .clone();
        self.persist(&st).await?;
        Ok(intent)
    }

    /// Reads the order book and resolves the unresolved intents from it.
    async fn resolve(&self) -> Result<(), StageError> {
        let book = match self.client.orders().await {
            Ok(b) => b,
            Err(e) => return Err(self.failed_call("GET /orders", &e).await),
        };
        let mut st = self.state.lock().await;
        let resolved = st.resolve_from_book(&book, Utc::now(), self.grace);
        for r in &resolved {
            if !r.duplicates.is_empty() {
                tracing::error!(broker = %self.broker, intent = %r.intent, duplicates = ?r.duplicates,
                    "orders with the same intent tag at Kite: cancel the duplicates by hand");
            }
        }
        if !resolved.is_empty() {
            self.persist(&st).await?;
        }
        Ok(())
    }

    /// Sends a `Recorded` intent's order (it is in the store already) and records the reply.
    async fn send(&self, intent: &Intent) -> Result<Intent, StageError> {
        let Some(place) = intent.place_order() else {
            return Ok(intent.clone());
        };
        match self.client.place_order(&place).await {
            Ok(reply) => {
                self.apply(
                    intent.id,
                    &IntentEvent::Replied {
                        order_id: reply.order_id,
                    },
                )
                .await
            }
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(broker = %self.broker, intent = %intent.id, tag = intent.tag, error = %e,
                    "order call outcome unknown: resolving from the order book");
                self.apply(intent.id, &IntentEvent::OutcomeLost).await?;
                // Resolve now if the book already shows it; otherwise the follower does.
                if let Err(e) = self.resolve().await {
                    tracing::warn!(broker = %self.broker, error = %e, "order book not read");
                }
                self.current(intent.id).await
            }
            Err(e) if e.class() == FailureClass::Business => {
                self.apply(
                    intent.id,
                    &IntentEvent::Refused {
                        reason: e.to_string(),
                    },
                )
                .await
            }
            // Not sent (429, connection refused) or the session is gone: the intent stays
            // recorded; the record is retried and the book is read before sending again.
            Err(e) => Err(self.failed_call("placing an order", &e).await),
        }
    }

    async fn current(&self, id: Uuid) -> Result<Intent, StageError> {
        self.state
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| StageError::infrastructure(format!("intent {id} vanished")))
    }

    /// Handles a validated signal: its intent is recorded, then its order sent once.
    pub async fn on_signal(
        &self,
        signal: &alpha_panda_core::EventEnvelope,
        halted: bool,
    ) -> Result<Vec<Output>, StageError> {
        let EventData::ValidatedSignal(v) = &signal.data else {
            return Err(StageError::poison(format!(
                "{} is not a validated signal",
                signal.event_type()
            )));
        };
        let spec = self
            .instrument(v.original_signal.instrument_token.0)
            .await?;
        let mut planned = plan(&self.account, signal, spec.as_ref())
            .map_err(|e| StageError::poison(e.to_string()))?;
        if halted {
            planned.refuse("trading is HALTED");
        }
        let (intent, known) = {
            let mut st = self.state.lock().await;
            let known = st.get(planned.id).is_some();
            let intent = st.admit(planned).clone();
            if !known {
                // Durable before the call.
                self.persist(&st).await?;
            }
            (intent, known)
        };
        let intent = match intent.state {
            IntentState::Recorded if known => {
                // Seen before (a crash or a retry): the book decides whether Kite has it.
                self.resolve().await?;
                let now = self.current(intent.id).await?;
                match now.state {
                    IntentState::Recorded if halted => {
                        self.apply(
                            now.id,
                            &IntentEvent::Refused {
                                reason: "trading is HALTED".into(),
                            },
                        )
                        .await?
                    }
                    IntentState::Recorded => self.send(&now).await?,
                    _ => now,
                }
            }
            IntentState::Recorded => self.send(&intent).await?,
            IntentState::Unknown => {
                self.resolve().await?;
                self.current(intent.id).await?
            }
            IntentState::Placed { .. } | IntentState::Failed { .. } => intent,
        };
        Ok(self.outputs(self.call_events(&intent)))
    }

    /// Follows Kite until the process stops: order updates from `updates`, the order book
    /// every `config.poll` while an intent waits, the MIS square-off at its time.
    pub async fn follow(
        self,
        mut updates: mpsc::UnboundedReceiver<Order>,
        producer: EventProducer,
        config: FollowConfig,
    ) {
        let mut tick = tokio::time::interval(config.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                Some(o) = updates.recv() => self.follow_orders(&[o], &producer).await,
                _ = tick.tick() => self.poll(&producer, &config).await,
            };
            if let Err(e) = result {
                tracing::warn!(broker = %self.broker, error = %e, "zerodha trader follower");
            }
        }
    }

    async fn poll(
        &self,
        producer: &EventProducer,
        config: &FollowConfig,
    ) -> Result<(), StageError> {
        let (waiting, done) = {
            let st = self.state.lock().await;
            (st.waiting(), st.squared_off())
        };
        if let Some(day) =
            alpha_panda_kite::trader::square_off_due(Utc::now(), config.square_off_at, done)
        {
            self.square_off(day, producer).await?;
        }
        if !waiting || !self.client.has_access_token() {
            return Ok(());
        }
        let book = match self.client.orders().await {
            Ok(b) => b,
            Err(e) => return Err(self.failed_call("GET /orders", &e).await),
        };
        let failed: Vec<Intent> = {
            let mut st = self.state.lock().await;
            st.resolve_from_book(&book, Utc::now(), self.grace)
                .into_iter()
                .filter(|r| matches!(r.state, IntentState::Failed { .. }))
                .filter_map(|r| st.get(r.intent).cloned())
                .collect()
        };
        if !failed.is_empty() {
            let events: Vec<Emission> = failed.iter().flat_map(|i| self.call_events(i)).collect();
            producer
                .send_all(&self.outputs(events))
                .await
                .map_err(|e| StageError::transient(e.to_string()))?;
            let st = self.state.lock().await;
            self.persist(&st).await?;
        }
        self.follow_orders(&book, producer).await
    }

    /// Order updates into events: published first, then the state that records them.
    async fn follow_orders(
        &self,
        orders: &[Order],
        producer: &EventProducer,
    ) -> Result<(), StageError> {
        let mut st = self.state.lock().await;
        let mut next = st.clone();
        let mut events = Vec::new();
        let at = alpha_panda_core::Timestamp::now();
        for o in orders {
            let Some((id, steps)) = next.on_order(o, Utc::now()) else {
                continue;
            };
            for step in steps {
                let steps = match &step {
                    Step::FetchTrades { broker_order_id } => {
                        let trades = match self.client.order_trades(broker_order_id).await {
                            Ok(t) => t,
                            Err(e) => {
                                return Err(self.failed_call("GET /orders/{id}/trades", &e).await);
                            }
                        };
                        next.on_trades(id, &trades)
                            .map_err(|e| StageError::infrastructure(e.to_string()))?
                    }
                    _ => vec![step],
                };
                let Some(intent) = next.get(id) else { continue };
                events.extend(
                    steps
                        .iter()
                        .filter_map(|s| intent.emission(&self.broker, s, at)),
                );
            }
        }
        if next == *st {
            return Ok(());
        }
        if !events.is_empty() {
            producer
                .send_all(&self.outputs(events))
                .await
                .map_err(|e| StageError::transient(e.to_string()))?;
        }
        next.prune(alpha_panda_core::Timestamp(
            Utc::now() - chrono::Duration::days(3),
        ));
        self.persist(&next).await?;
        *st = next;
        Ok(())
    }

    /// The day's MIS square-off: intents recorded (durably), then sent.
    async fn square_off(
        &self,
        day: chrono::NaiveDate,
        producer: &EventProducer,
    ) -> Result<(), StageError> {
        let intents = {
            let mut st = self.state.lock().await;
            let new = st.square_off(day, alpha_panda_core::Timestamp::now());
            self.persist(&st).await?;
            new
        };
        for intent in intents {
            tracing::info!(broker = %self.broker, strategy = %intent.strategy_id,
                instrument = intent.instrument_token.0, side = intent.side.as_str(),
                "MIS square-off");
            let done = self.send(&intent).await?;
            producer
                .send_all(&self.outputs(self.call_events(&done)))
                .await
                .map_err(|e| StageError::transient(e.to_string()))?;
        }
        Ok(())
    }
}

/// The stage actors of a zerodha trader: `{broker}.signals.validated` → `orders.submitted`
/// (or `orders.failed`).
pub fn trader_factory(trader: Arc<ZerodhaTrader>) -> StageFactory {
    Arc::new(move || {
        TraderStage {
            trader: trader.clone(),
        }
        .start()
        .recipient()
    })
}

struct TraderStage {
    trader: Arc<ZerodhaTrader>,
}

impl Actor for TraderStage {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Deliver> for TraderStage {
    type Result = actix::AtomicResponse<Self, Result<Handled, StageError>>;

    fn handle(&mut self, d: Deliver, _ctx: &mut Self::Context) -> Self::Result {
        use actix::WrapFuture;
        let trader = self.trader.clone();
        actix::AtomicResponse::new(Box::pin(
            async move {
                if d.topic.broker_name() != Some(&trader.broker) {
                    return Err(StageError::poison(format!(
                        "{} is not {}'s",
                        d.topic, trader.broker
                    )));
                }
                let strategy = match &d.envelope.data {
                    EventData::ValidatedSignal(v) => v.original_signal.strategy_id.clone(),
                    _ => {
                        return Err(StageError::poison(format!(
                            "{} on {} is not what this stage reads",
                            d.envelope.event_type(),
                            d.topic
                        )));
                    }
                };
                let halted = trader
                    .control
                    .trading_state(trader.broker.as_str(), Some(strategy.as_str()))
                    == TradingState::Halted;
                let outputs = trader.on_signal(&d.envelope, halted).await?;
                Ok(Handled {
                    outputs,
                    ..Handled::default()
                })
            }
            .into_actor(self),
        ))
    }
}
