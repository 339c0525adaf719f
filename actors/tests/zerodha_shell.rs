//! The zerodha trader's shell against the loopback Kite simulator with the in-memory store:
//! the intent is in the store before the call, a 5xx leaves it UNKNOWN and the order book
//! resolves it, a 429 (nothing sent) is retried only after the book shows Kite lacks the
//! order, a handled signal handled again sends nothing, a HALTED broker sends nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::Output;
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_actors::zerodha::{ZerodhaTrader, state_key};
use alpha_panda_core::events::{TradingSignal, ValidatedSignal};
use alpha_panda_core::{
    AccountId, BrokerName, EventBroker, EventData, EventEnvelope, InstrumentToken, OrderType,
    Price, Product, Quantity, Side, StrategyId, Timestamp, Validity,
};
use alpha_panda_kite::sim::{Fault, SimConfig, Simulator};
use alpha_panda_kite::{KiteClient, KiteConfig};

const TOKEN: &str = "simaccesstoken1";

fn signal() -> EventEnvelope {
    let at = Timestamp::now();
    let s = TradingSignal {
        strategy_id: StrategyId::new("momentum_1").unwrap_or_else(|e| panic!("{e}")),
        instrument_token: InstrumentToken(2953217),
        signal_type: Side::Buy,
        quantity: Quantity::new(3).unwrap_or_else(|e| panic!("{e}")),
        price: Price::new(3500.into()).unwrap_or_else(|e| panic!("{e}")),
        timestamp: at,
        confidence: None,
        metadata: BTreeMap::new(),
        order_type: OrderType::Limit,
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
            // Off the tick grid: the trader rounds a BUY down to 3499.95.
            validated_price: Price::new("3499.97".parse().unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}")),
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
    let mut cfg = SimConfig::new("simkey", "simsecret");
    // No matching during the test: orders stay OPEN.
    cfg.tick_interval = Duration::from_secs(3600);
    cfg.access_token = Some(TOKEN.to_owned());
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut kc = KiteConfig::new(sim.api_url(), "simkey");
    kc.access_token = Some(TOKEN.to_owned());
    kc.timeout = Duration::from_secs(2);
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
