//! Tests of the trader's pure core: planning, resolution, updates, square-off, and a state
//! that survives being written and read back at any point.

use std::collections::{BTreeMap, BTreeSet};

use alpha_panda_core::events::{TradingSignal, ValidatedSignal};
use alpha_panda_core::{AccountId, BrokerName, EventBroker, EventData, EventEnvelope, Timestamp};
use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn account() -> AccountId {
    AccountId::new("ZT0001").unwrap_or_else(|e| panic!("{e}"))
}

fn broker() -> BrokerName {
    BrokerName::zerodha()
}

fn tcs(lot: u64) -> InstrumentSpec {
    InstrumentSpec {
        exchange: Exchange::Nse,
        tradingsymbol: "TCS".into(),
        tick_size: d("0.05"),
        lot_size: lot,
    }
}

fn validated(
    side: Side,
    qty: u64,
    price: &str,
    order_type: alpha_panda_core::OrderType,
) -> EventEnvelope {
    let at = Timestamp(Utc.with_ymd_and_hms(2026, 1, 5, 4, 0, 0).unwrap());
    let signal = TradingSignal {
        strategy_id: StrategyId::new("momentum_1").unwrap_or_else(|e| panic!("{e}")),
        instrument_token: InstrumentToken(2953217),
        signal_type: side,
        quantity: Quantity::new(qty).unwrap_or_else(|e| panic!("{e}")),
        price: Price::new(d(price)).unwrap_or_else(|e| panic!("{e}")),
        timestamp: at,
        confidence: None,
        metadata: BTreeMap::new(),
        order_type,
        product: alpha_panda_core::Product::Mis,
        validity: alpha_panda_core::Validity::Day,
        trigger_price: None,
    };
    EventEnvelope::root(
        EventBroker::Broker(broker()),
        "risk",
        "k",
        at,
        EventData::ValidatedSignal(ValidatedSignal {
            validated_quantity: signal.quantity,
            validated_price: signal.price,
            original_signal: signal,
            risk_checks: BTreeMap::new(),
            timestamp: at,
        }),
    )
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 4, 0, 1).unwrap()
}

fn ts() -> Timestamp {
    Timestamp(now())
}

fn order(tag: &str, id: &str, status: &str, filled: u64) -> Order {
    serde_json::from_value(serde_json::json!({
        "order_id": id, "status": status, "variety": "regular", "exchange": "NSE",
        "tradingsymbol": "TCS", "instrument_token": 2953217, "order_type": "MARKET",
        "transaction_type": "BUY", "validity": "DAY", "product": "MIS", "quantity": 10,
        "price": 0, "filled_quantity": filled, "tag": tag
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn trade(id: &str, order_id: &str, qty: u64) -> Trade {
    serde_json::from_value(serde_json::json!({
        "trade_id": id, "order_id": order_id, "exchange": "NSE", "tradingsymbol": "TCS",
        "instrument_token": 2953217, "product": "MIS", "average_price": 3500.05,
        "quantity": qty, "transaction_type": "BUY"
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn market_buy(qty: u64) -> (TraderState, Intent) {
    let signal = validated(Side::Buy, qty, "3500", alpha_panda_core::OrderType::Market);
    let intent = plan(&account(), &signal, Some(&tcs(1))).unwrap_or_else(|e| panic!("{e}"));
    let mut state = TraderState::default();
    state.admit(intent.clone());
    (state, intent)
}

#[test]
fn a_validated_limit_signal_becomes_a_recorded_intent_on_the_tick_and_lot_grid() {
    let signal = validated(
        Side::Buy,
        130,
        "3500.07",
        alpha_panda_core::OrderType::Limit,
    );
    let intent = plan(&account(), &signal, Some(&tcs(50))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(intent.state, IntentState::Recorded);
    assert_eq!(intent.id, intent_id(signal.id));
    assert_eq!(intent.tag, tag_for(intent.id));
    let place = intent.place_order().unwrap_or_else(|| panic!("an order"));
    assert_eq!(place.quantity, 100);
    assert_eq!(place.price, Some(d("3500.05")));
    assert_eq!(place.tag.as_deref(), Some(intent.tag.as_str()));
    assert_eq!(place.product, Product::Mis);
    assert!(place.validate().is_ok());
    // Planning the same signal again gives the same intent.
    assert_eq!(
        plan(&account(), &signal, Some(&tcs(50))).unwrap_or_else(|e| panic!("{e}")),
        intent
    );
}

#[test]
fn a_signal_below_one_lot_or_on_an_unknown_instrument_fails_without_an_order() {
    let signal = validated(Side::Buy, 30, "3500", alpha_panda_core::OrderType::Market);
    let small = plan(&account(), &signal, Some(&tcs(50))).unwrap_or_else(|e| panic!("{e}"));
    assert!(small.place_order().is_none());
    let failed = small
        .refused(&broker(), ts())
        .unwrap_or_else(|| panic!("a failure"));
    assert_eq!(failed.topic, BrokerTopic::OrdersFailed);
    let EventData::OrderFailed(f) = &failed.envelope.data else {
        panic!("{failed:?}")
    };
    assert!(f.error_message.contains("less than one lot of 50"), "{f:?}");
    assert_eq!(failed.envelope.causation_id, Some(signal.id));
    let unknown = plan(&account(), &signal, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&unknown.state, IntentState::Failed { reason } if reason.contains("2953217")));
    // Not a validated signal at all: an error naming the event.
    let mut raw = signal.clone();
    if let EventData::ValidatedSignal(v) = &signal.data {
        raw.data = EventData::TradingSignal(v.original_signal.clone());
    }
    assert!(matches!(
        plan(&account(), &raw, None),
        Err(TraderError::NotValidated { .. })
    ));
}

#[test]
fn the_same_signal_admitted_again_keeps_the_first_intent_and_its_state() {
    let (mut state, intent) = market_buy(10);
    state
        .apply(
            intent.id,
            &IntentEvent::Replied {
                order_id: "1".into(),
            },
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let again = state.admit(intent.clone());
    assert_eq!(
        again.state,
        IntentState::Placed {
            order_id: "1".into()
        }
    );
    assert_eq!(state.len(), 1);
}

#[test]
fn an_unknown_intent_is_placed_by_its_tag_and_failed_only_after_the_grace() {
    let (mut state, intent) = market_buy(10);
    state
        .apply(intent.id, &IntentEvent::OutcomeLost, now())
        .unwrap_or_else(|e| panic!("{e}"));
    let grace = chrono::Duration::seconds(10);
    // Not in the book yet, within the grace: still unknown.
    assert!(state.resolve_from_book(&[], now(), grace).is_empty());
    // In the book under its tag: placed, and the duplicate reported.
    let mut copy = state.clone();
    let book = [
        order(&intent.tag, "11", "OPEN", 0),
        order("other", "12", "OPEN", 0),
        order(&intent.tag, "13", "OPEN", 0),
    ];
    let r = copy.resolve_from_book(&book, now(), grace);
    assert_eq!(
        r,
        vec![Resolved {
            intent: intent.id,
            state: IntentState::Placed {
                order_id: "11".into()
            },
            duplicates: vec!["13".into()],
        }]
    );
    // Absent after the grace: failed, one order_failed.
    let later = now() + chrono::Duration::seconds(11);
    let r = state.resolve_from_book(&[], later, grace);
    assert!(matches!(r[0].state, IntentState::Failed { .. }), "{r:?}");
    // A recorded intent absent from the book is left to the shell (to send).
    let (mut fresh, _) = market_buy(10);
    assert!(fresh.resolve_from_book(&[], later, grace).is_empty());
}

#[test]
fn updates_become_one_ack_and_one_fill_per_trade_with_ids_from_the_intent_and_trade() {
    let (mut state, intent) = market_buy(10);
    state
        .apply(
            intent.id,
            &IntentEvent::Replied {
                order_id: "11".into(),
            },
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let (id, steps) = state
        .on_order(&order(&intent.tag, "11", "OPEN", 4), now())
        .unwrap_or_else(|| panic!("ours"));
    assert_eq!(id, intent.id);
    assert_eq!(steps.len(), 2, "{steps:?}");
    let fills = state
        .on_trades(id, &[trade("T1", "11", 4)])
        .unwrap_or_else(|e| panic!("{e}"));
    let i = state.get(id).unwrap_or_else(|| panic!("kept"));
    let ack = i
        .emission(&broker(), &steps[0], ts())
        .unwrap_or_else(|| panic!("an ack"));
    assert_eq!(ack.topic, BrokerTopic::OrdersAck);
    let fill = i
        .emission(&broker(), &fills[0], ts())
        .unwrap_or_else(|| panic!("a fill"));
    assert_eq!(fill.topic, BrokerTopic::OrdersFilled);
    assert_eq!(fill.envelope.id, event_id(intent.id, "fill:T1"));
    assert_eq!(fill.envelope.causation_id, Some(intent.origin.event_id));
    assert_eq!(fill.envelope.key, "ZT0001|momentum_1");
    assert!(!i.is_closed());
    // COMPLETE with the rest: one more fill, then closed; an order without our tag: nothing.
    let (_, steps) = state
        .on_order(&order(&intent.tag, "11", "COMPLETE", 10), now())
        .unwrap_or_else(|| panic!("ours"));
    assert!(matches!(steps[..], [Step::FetchTrades { .. }]));
    let fills = state
        .on_trades(id, &[trade("T1", "11", 4), trade("T2", "11", 6)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fills.len(), 1);
    assert!(state.get(id).is_some_and(Intent::is_closed));
    assert!(
        state
            .on_order(&order("nottrader", "99", "OPEN", 0), now())
            .is_none()
    );
    // The fills made a MIS position of 10.
    let p: Vec<&MisPosition> = state.mis_positions().collect();
    assert_eq!(p[0].quantity, 10);
}

#[test]
fn an_update_before_the_reply_places_the_intent_and_the_reply_confirms_it() {
    let (mut state, intent) = market_buy(10);
    let (_, steps) = state
        .on_order(&order(&intent.tag, "11", "OPEN", 0), now())
        .unwrap_or_else(|| panic!("ours"));
    assert_eq!(steps.len(), 1);
    let replied = IntentEvent::Replied {
        order_id: "11".into(),
    };
    assert!(state.apply(intent.id, &replied, now()).is_ok());
    // A second order carrying the tag is not followed.
    assert!(
        state
            .on_order(&order(&intent.tag, "12", "OPEN", 0), now())
            .is_none()
    );
}

#[test]
fn mis_positions_are_squared_off_once_a_day_after_the_configured_ist_time() {
    let at = NaiveTime::from_hms_opt(15, 20, 0).unwrap_or_else(|| panic!("a time"));
    // 15:19 IST is 09:49 UTC.
    let before = Utc.with_ymd_and_hms(2026, 1, 5, 9, 49, 0).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 1, 5, 9, 50, 0).unwrap();
    assert_eq!(square_off_due(before, at, None), None);
    let day = square_off_due(after, at, None).unwrap_or_else(|| panic!("due"));
    assert_eq!(day, NaiveDate::from_ymd_opt(2026, 1, 5).unwrap());
    assert_eq!(square_off_due(after, at, Some(day)), None);

    let (mut state, intent) = market_buy(10);
    state
        .apply(
            intent.id,
            &IntentEvent::Replied {
                order_id: "11".into(),
            },
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    state.on_order(&order(&intent.tag, "11", "COMPLETE", 10), now());
    state
        .on_trades(intent.id, &[trade("T1", "11", 10)])
        .unwrap_or_else(|e| panic!("{e}"));
    let new = state.square_off(day, ts());
    assert_eq!(new.len(), 1);
    let o = new[0].place_order().unwrap_or_else(|| panic!("an order"));
    assert_eq!(
        (o.transaction_type, o.order_type, o.quantity, o.product),
        (TransactionType::Sell, OrderType::Market, 10, Product::Mis)
    );
    assert_eq!(state.squared_off(), Some(day));
    // The same day again (a restart): nothing new.
    assert!(state.square_off(day, ts()).is_empty());
}

#[test]
fn pruning_forgets_only_closed_intents_older_than_the_cutoff() {
    let (mut state, intent) = market_buy(10);
    let later = Timestamp(now() + chrono::Duration::days(1));
    state.prune(later);
    assert_eq!(state.len(), 1, "an open intent stays");
    state
        .apply(
            intent.id,
            &IntentEvent::Refused {
                reason: "no".into(),
            },
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    state.prune(intent.at);
    assert_eq!(state.len(), 1, "not older than the cutoff");
    state.prune(later);
    assert!(state.is_empty());
}

/// One thing that can happen to an order at Kite, as the trader sees it.
#[derive(Debug, Clone)]
enum Seen {
    Update {
        status: &'static str,
        filled: u64,
    },
    Trades(u64),
    /// The state is written to JSON and read back (a restart).
    Restart,
}

fn seen() -> impl Strategy<Value = Seen> {
    prop_oneof![
        (
            prop::sample::select(vec!["OPEN", "COMPLETE", "CANCELLED", "UPDATE"]),
            0u64..=10
        )
            .prop_map(|(status, filled)| Seen::Update { status, filled }),
        (0u64..=5).prop_map(Seen::Trades),
        Just(Seen::Restart),
    ]
}

proptest! {
    /// Whatever order and how often updates and trades arrive, and wherever the state is
    /// written and read back: at most one ack, one fill per distinct trade, every event id
    /// distinct, and the filled quantity never more than the trades Kite reported.
    #[test]
    fn updates_in_any_order_with_restarts_emit_each_event_once(events in prop::collection::vec(seen(), 1..40)) {
        let (mut state, intent) = market_buy(10);
        state.apply(intent.id, &IntentEvent::Replied { order_id: "11".into() }, now()).unwrap_or_else(|e| panic!("{e}"));
        let mut ids = BTreeSet::new();
        let mut acks = 0;
        let mut filled = 0u64;
        // Kite's trades so far: trade i has quantity 1.
        let mut kite_trades: Vec<Trade> = Vec::new();
        for e in events {
            let steps = match e {
                Seen::Update { status, filled } => state
                    .on_order(&order(&intent.tag, "11", status, filled), now())
                    .map(|(_, s)| s)
                    .unwrap_or_default(),
                Seen::Trades(n) => {
                    for _ in 0..n {
                        let i = kite_trades.len();
                        kite_trades.push(trade(&format!("T{i}"), "11", 1));
                    }
                    state.on_trades(intent.id, &kite_trades).unwrap_or_else(|e| panic!("{e}"))
                }
                Seen::Restart => {
                    let json = serde_json::to_string(&state).unwrap_or_else(|e| panic!("{e}"));
                    state = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
                    Vec::new()
                }
            };
            let i = state.get(intent.id).unwrap_or_else(|| panic!("kept")).clone();
            for s in steps {
                if let Some(em) = i.emission(&broker(), &s, ts()) {
                    prop_assert!(ids.insert(em.envelope.id), "{:?} emitted twice", em.envelope.data);
                    match em.envelope.data {
                        EventData::OrderAck(_) => acks += 1,
                        EventData::OrderFilled(f) => filled += f.quantity.get(),
                        _ => {}
                    }
                }
            }
        }
        prop_assert!(acks <= 1);
        prop_assert_eq!(filled, kite_trades.len() as u64);
    }
}
