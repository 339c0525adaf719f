//! The zerodha trader's shell against the loopback Kite simulator with the in-memory store:
//! the intent is in the store before the call, a 5xx leaves it UNKNOWN and the order book
//! resolves it, a 429 (nothing sent) is retried only after the book shows Kite lacks the
//! order, a handled signal handled again sends nothing, a HALTED broker sends nothing.
//! The instrument master Kite serves sets the order's tick and lot grid; the orders-per-minute
//! cap refuses before Kite; the follower squares MIS positions off at `square_off_at`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::EventProducer;
use alpha_panda_actors::delivery::Output;
use alpha_panda_actors::delivery::inprocess::InProcessBus;
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_actors::zerodha::FollowConfig;
use alpha_panda_actors::zerodha::{ZerodhaTrader, state_key};
use alpha_panda_core::events::{TradingSignal, ValidatedSignal};
use alpha_panda_core::{
    AccountId, BrokerName, EventBroker, EventData, EventEnvelope, InstrumentToken, OrderType,
    Price, Product, Quantity, Side, StrategyId, Timestamp, Validity,
};
use alpha_panda_kite::sim::book::SimInstrument;
use alpha_panda_kite::sim::{Fault, SimConfig, Simulator};
use alpha_panda_kite::types::order::{Exchange, TransactionType};
use alpha_panda_kite::{KiteClient, KiteConfig};
use alpha_panda_topics::{BrokerTopic, TopicName};
use chrono::NaiveTime;
use tokio::sync::mpsc;

const TOKEN: &str = "simaccesstoken1";

fn signal() -> EventEnvelope {
    // Off the tick grid: the trader rounds a BUY down to 3499.95.
    signal_on(2953217, OrderType::Limit, 3, "3499.97")
}

fn d(s: &str) -> alpha_panda_core::Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A validated MIS BUY of `quantity` on `token` at `price`.
fn signal_on(token: u32, order_type: OrderType, quantity: u64, price: &str) -> EventEnvelope {
    let at = Timestamp::now();
    let s = TradingSignal {
        strategy_id: StrategyId::new("momentum_1").unwrap_or_else(|e| panic!("{e}")),
        instrument_token: InstrumentToken(token),
        signal_type: Side::Buy,
        quantity: Quantity::new(quantity).unwrap_or_else(|e| panic!("{e}")),
        price: Price::new(d(price)).unwrap_or_else(|e| panic!("{e}")),
        timestamp: at,
        confidence: None,
        metadata: BTreeMap::new(),
        order_type,
        product: Product::Mis,
        validity: Validity::Day,
        trigger_price: None,
    };
    EventEnvelope::root(
        EventBroker::Broker(BrokerName::zerodha()),
        "risk",
        "k",
        at,
        EventData::ValidatedSignal(ValidatedSignal {
            validated_quantity: s.quantity,
            validated_price: s.price,
            original_signal: s,
            risk_checks: BTreeMap::new(),
            timestamp: at,
        }),
    )
}

struct Rig {
    sim: Simulator,
    store: Store,
    trader: ZerodhaTrader,
}

async fn rig(grace: Duration) -> Rig {
    // No matching during the test: orders stay OPEN.
    rig_with(grace, Duration::from_secs(3600), |_| {}, |_| {}).await
}

/// A rig whose simulator ticks every `tick` and whose simulator and client settings
/// `sim_cfg` and `client_cfg` change.
async fn rig_with(
    grace: Duration,
    tick: Duration,
    sim_cfg: impl FnOnce(&mut SimConfig),
    client_cfg: impl FnOnce(&mut KiteConfig),
) -> Rig {
    let mut cfg = SimConfig::new("simkey", "simsecret");
    cfg.tick_interval = tick;
    cfg.access_token = Some(TOKEN.to_owned());
    sim_cfg(&mut cfg);
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut kc = KiteConfig::new(sim.api_url(), "simkey");
    kc.access_token = Some(TOKEN.to_owned());
    kc.timeout = Duration::from_secs(2);
    client_cfg(&mut kc);
    let client = KiteClient::new(kc).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::Memory(MemoryStore::default());
    let trader = ZerodhaTrader::load(
        BrokerName::zerodha(),
        AccountId::new("ZT0001").unwrap_or_else(|e| panic!("{e}")),
        client,
        store.clone(),
        Arc::new(Control::detached()),
        grace,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Rig { sim, store, trader }
}

fn topics(outputs: &[Output]) -> Vec<String> {
    outputs.iter().map(|o| o.topic.to_string()).collect()
}

async fn stored_state(store: &Store) -> serde_json::Value {
    let json = store
        .get(&state_key(&BrokerName::zerodha()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no trader state stored"));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_placed_once_on_the_tick_grid_and_handling_it_again_sends_nothing() {
    let r = rig(Duration::from_secs(30)).await;
    let s = signal();
    let out = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.submitted"]);
    let again = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, out, "the same events with the same ids");
    let orders = r.sim.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(r.sim.placements().len(), 1);
    assert_eq!(
        orders[0].price,
        "3499.95".parse().unwrap_or_else(|e| panic!("{e}"))
    );
    let state = stored_state(&r.store).await;
    let intent = state["intents"]
        .as_object()
        .and_then(|m| m.values().next())
        .cloned()
        .unwrap_or_default();
    assert_eq!(intent["state"]["state"], "placed");
    assert_eq!(intent["state"]["order_id"], orders[0].order_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_leaves_the_intent_unknown_until_the_book_resolves_it_and_nothing_is_resent() {
    // A zero grace: an unknown intent absent from the book fails at the next reading.
    let r = rig(Duration::ZERO).await;
    r.sim.inject(Fault::ServerError);
    let s = signal();
    let out = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The 500 booked nothing; the book read at once shows no order with the tag.
    assert_eq!(topics(&out), vec!["zerodha.orders.failed"]);
    assert!(r.sim.orders().is_empty());
    // Handled again: the intent is failed, nothing is sent.
    let again = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, out);
    assert_eq!(r.sim.placements().len(), 1, "one call, never a second");

    // With a grace, the same fault leaves the intent UNKNOWN (submitted, outcome open).
    let r = rig(Duration::from_secs(60)).await;
    r.sim.inject(Fault::ServerError);
    let out = r
        .trader
        .on_signal(&signal(), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.submitted"]);
    let state = stored_state(&r.store).await;
    let states: Vec<String> = state["intents"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|i| i["state"]["state"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(states, vec!["unknown".to_owned()]);
    assert_eq!(r.sim.placements().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_the_book_shows_kite_lacks_the_order() {
    let r = rig(Duration::from_secs(30)).await;
    r.sim.inject(Fault::RateLimited);
    let s = signal();
    let err = r
        .trader
        .on_signal(&s, false)
        .await
        .err()
        .unwrap_or_else(|| panic!("a 429 is a transient failure"));
    assert_eq!(
        err.class,
        alpha_panda_core::FailureClass::Transient,
        "{err}"
    );
    assert!(r.sim.orders().is_empty());
    // The delivery retries the record: the book is read, then the order sent once.
    let out = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.submitted"]);
    assert_eq!(r.sim.orders().len(), 1);
    assert_eq!(
        r.sim.placements().len(),
        2,
        "the refused call and the placing one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_on_a_halted_broker_fails_without_a_call() {
    let r = rig(Duration::from_secs(30)).await;
    let out = r
        .trader
        .on_signal(&signal(), true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.failed"]);
    let EventData::OrderFailed(f) = &out[0].envelope.data else {
        panic!("{out:?}")
    };
    assert!(f.error_message.contains("HALTED"), "{f:?}");
    assert!(r.sim.placements().is_empty());
}

/// An NFO future on the simulator: tick 0.05, lot 50.
const NIFTY_FUT: u32 = 13_238_786;

fn with_a_future(cfg: &mut SimConfig) {
    cfg.instruments.push(SimInstrument::new(
        NIFTY_FUT,
        Exchange::Nfo,
        "NIFTY26JANFUT",
        d("0.05"),
        50,
        d("24000"),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instrument_master_kite_serves_sets_the_lot_and_tick_of_the_order() {
    let r = rig_with(
        Duration::from_secs(30),
        Duration::from_secs(3600),
        with_a_future,
        |_| {},
    )
    .await;
    // 120 is two whole lots of 50 and a remainder; 24000.07 is off the 0.05 grid.
    let out = r
        .trader
        .on_signal(
            &signal_on(NIFTY_FUT, OrderType::Limit, 120, "24000.07"),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.submitted"]);
    let orders = r.sim.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].exchange, "NFO");
    assert_eq!(orders[0].tradingsymbol, "NIFTY26JANFUT");
    assert_eq!(orders[0].quantity, 100, "whole lots of 50");
    assert_eq!(orders[0].price, d("24000.05"), "a BUY rounded down");

    // Below one lot: failed, no call.
    let out = r
        .trader
        .on_signal(&signal_on(NIFTY_FUT, OrderType::Limit, 30, "24000"), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.failed"]);
    // An instrument Kite's master lacks: failed, no call.
    let out = r
        .trader
        .on_signal(&signal_on(5_633, OrderType::Market, 1, "100"), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.failed"]);
    assert_eq!(r.sim.placements().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_per_minute_cap_fails_the_signal_before_kite_sees_it() {
    let r = rig_with(
        Duration::from_secs(30),
        Duration::from_secs(3600),
        |_| {},
        |kc| kc.orders_per_minute = 2,
    )
    .await;
    for _ in 0..2 {
        let out = r
            .trader
            .on_signal(&signal(), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(topics(&out), vec!["zerodha.orders.submitted"]);
    }
    let s = signal();
    let out = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(topics(&out), vec!["zerodha.orders.failed"]);
    let EventData::OrderFailed(f) = &out[0].envelope.data else {
        panic!("{out:?}")
    };
    assert!(f.error_message.contains("orders_per_minute"), "{f:?}");
    assert_eq!(r.sim.placements().len(), 2, "the third never reached Kite");
    // Handled again (a redelivery): the same failure, still no call.
    let again = r
        .trader
        .on_signal(&s, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, out);
    assert_eq!(r.sim.placements().len(), 2);
}

fn order_bus() -> (InProcessBus, EventProducer) {
    let bus = InProcessBus::new();
    let topics: Vec<TopicName> = BrokerTopic::ALL
        .iter()
        .map(|t| TopicName::broker(&BrokerName::zerodha(), *t))
        .collect();
    bus.create_topics(&topics);
    (bus.clone(), EventProducer::InProcess(bus))
}

fn events_on(bus: &InProcessBus, topic: BrokerTopic) -> Vec<EventEnvelope> {
    bus.records(&TopicName::broker(&BrokerName::zerodha(), topic))
        .into_iter()
        .filter_map(|(_, _, r)| EventEnvelope::decode(&r.value.unwrap_or_default()).ok())
        .collect()
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latest time of day: the square-off is not due before it.
fn never_today() -> NaiveTime {
    NaiveTime::from_hms_milli_opt(23, 59, 59, 999).unwrap_or_else(|| panic!("a time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_squares_a_filled_mis_position_off_once_at_the_configured_time() {
    let r = rig_with(
        Duration::from_secs(30),
        Duration::from_millis(50),
        |_| {},
        |_| {},
    )
    .await;
    let (bus, producer) = order_bus();
    let poll = Duration::from_millis(100);
    // Before the square-off time: the BUY fills and the follower records the position.
    let (_tx, rx) = mpsc::unbounded_channel();
    let before = tokio::spawn(r.trader.clone().follow(
        rx,
        producer.clone(),
        FollowConfig {
            poll,
            square_off_at: never_today(),
        },
    ));
    r.trader
        .on_signal(&signal_on(2953217, OrderType::Market, 3, "3500"), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the BUY's fill", || {
        !events_on(&bus, BrokerTopic::OrdersFilled).is_empty()
    })
    .await;
    tokio::time::sleep(poll * 3).await;
    before.abort();
    assert_eq!(
        r.sim.orders().len(),
        1,
        "nothing squared off before its time"
    );

    // Past the square-off time (any time of day is at or after 00:00): one SELL MARKET MIS
    // of the position, through the trader's own intent, once.
    let (_tx, rx) = mpsc::unbounded_channel();
    let after = tokio::spawn(r.trader.clone().follow(
        rx,
        producer,
        FollowConfig {
            poll,
            square_off_at: NaiveTime::MIN,
        },
    ));
    wait_until("the square-off's fill", || {
        events_on(&bus, BrokerTopic::OrdersFilled).len() >= 2
    })
    .await;
    tokio::time::sleep(poll * 5).await;
    after.abort();
    let orders = r.sim.orders();
    assert_eq!(orders.len(), 2, "{orders:?}");
    let sell = &orders[1];
    assert_eq!(
        (
            sell.transaction_type,
            sell.order_type.as_str(),
            sell.product.as_str(),
            sell.quantity
        ),
        (TransactionType::Sell, "MARKET", "MIS", 3)
    );
    assert!(sell.tag.as_deref().is_some_and(|t| t.starts_with("ap")));
    let submitted = events_on(&bus, BrokerTopic::OrdersSubmitted);
    assert_eq!(submitted.len(), 1, "the square-off's orders.submitted");
    assert_eq!(events_on(&bus, BrokerTopic::OrdersFilled).len(), 2);
    let state = stored_state(&r.store).await;
    assert!(state["squared_off"].is_string(), "{state}");
}
