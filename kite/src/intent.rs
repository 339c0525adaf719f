//! Order intents: the pure decisions of the zerodha trader that do not need I/O.
//!
//! Contract: an intent's id is derived from the validated signal's event id
//! (`ids::child_id(signal, "zerodha.trader", 0)`), so handling the same signal again yields
//! the same intent; its Kite `tag` is derived from the id ([`tag_for`]: `ap` and 18 hex
//! digits of the id's random part, 20 characters, Kite's limit). An intent goes
//! `Recorded` (written before the HTTP call) → `Placed` (Kite answered an order id) or
//! `Unknown` (the call may have reached Kite: timeout, 5xx, a crash before the reply was
//! recorded) or `Failed` (Kite refused it, nothing placed). An `Unknown` intent is resolved
//! by reading the order book and matching the tag ([`resolve`]), never by sending again
//! blindly. Prices of LIMIT/SL orders are rounded to the instrument's tick size (a BUY down,
//! a SELL up: never worse than the strategy asked), quantities down to the lot size.
//! [`transition`] is the life cycle table; anything else is refused. A placed intent only
//! takes confirmations of its own order id (the reply and an order update race), and a
//! recorded intent the book does not hold stays recorded: its call never reached Kite, so
//! sending it is safe — after the book was read, never before. [`Progress`] turns an
//! order's updates and trades into what the trader emits — one ack, one fill per Kite trade
//! (partial fills), one failure for REJECTED or CANCELLED — each once, whatever order and
//! how often updates arrive (WebSocket and polling both deliver them), with event ids
//! derived from the intent ([`event_id`]).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::order::{Order, TransactionType};

/// The stage name the intent id is derived with.
pub const STAGE: &str = "zerodha.trader";

/// The intent id of a validated signal.
pub fn intent_id(signal_event_id: Uuid) -> Uuid {
    alpha_panda_core::ids::child_id(signal_event_id, STAGE, 0)
}

/// The Kite tag of an intent: `ap` + 18 lowercase hex digits of the id's last 9 bytes (the
/// derived, random part of a v7 id). Always 20 ASCII letters and digits.
pub fn tag_for(intent: Uuid) -> String {
    let b = intent.as_bytes();
    let mut tag = String::with_capacity(20);
    tag.push_str("ap");
    for byte in &b[7..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag
}

/// Where an intent is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IntentState {
    /// Written to the store; the HTTP call comes next.
    Recorded,
    /// Kite answered with this order id.
    Placed { order_id: String },
    /// The call may or may not have reached Kite.
    Unknown,
    /// Kite refused it; nothing was placed.
    Failed { reason: String },
}

/// What happened to an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentEvent {
    Replied {
        order_id: String,
    },
    OutcomeLost,
    Refused {
        reason: String,
    },
    /// The order book holds an order with the intent's tag.
    FoundInBook {
        order_id: String,
    },
    /// The order book (read after the call could have landed) has no such tag.
    AbsentFromBook,
}

/// The life cycle table: the next state, or `None` when the event cannot happen in `state`.
pub fn transition(state: &IntentState, event: &IntentEvent) -> Option<IntentState> {
    use IntentEvent as E;
    use IntentState as S;
    match (state, event) {
        (S::Recorded, E::Replied { order_id }) | (S::Recorded, E::FoundInBook { order_id }) => {
            Some(S::Placed {
                order_id: order_id.clone(),
            })
        }
        (S::Recorded, E::OutcomeLost) => Some(S::Unknown),
        (S::Recorded, E::Refused { reason }) => Some(S::Failed {
            reason: reason.clone(),
        }),
        (S::Unknown, E::FoundInBook { order_id }) => Some(S::Placed {
            order_id: order_id.clone(),
        }),
        (S::Unknown, E::AbsentFromBook) => Some(S::Failed {
            reason: "not in Kite's order book after the call".into(),
        }),
        (S::Unknown, E::OutcomeLost) => Some(S::Unknown),
        (S::Recorded, E::AbsentFromBook) => Some(S::Recorded),
        (S::Placed { order_id: a }, E::Replied { order_id: b })
        | (S::Placed { order_id: a }, E::FoundInBook { order_id: b })
            if a == b =>
        {
            Some(S::Placed {
                order_id: a.clone(),
            })
        }
        _ => None,
    }
}

/// An UNKNOWN intent looked up in the order book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly one order carries the tag.
    Placed { order_id: String },
    /// Several orders carry the tag (it was sent more than once): the first is the intent's,
    /// the others are listed for an operator to cancel.
    Duplicated {
        order_id: String,
        extra: Vec<String>,
    },
    /// No order carries it.
    NotPlaced,
}

/// Finds the intent's order in the order book by its tag.
pub fn resolve(tag: &str, book: &[Order]) -> Resolution {
    let mut ids = book
        .iter()
        .filter(|o| o.tag.as_deref() == Some(tag))
        .map(|o| o.order_id.clone());
    match ids.next() {
        None => Resolution::NotPlaced,
        Some(order_id) => {
            let extra: Vec<String> = ids.collect();
            if extra.is_empty() {
                Resolution::Placed { order_id }
            } else {
                Resolution::Duplicated { order_id, extra }
            }
        }
    }
}

/// A price on the tick grid, never worse for the side: a BUY rounds down, a SELL up.
pub fn round_price(price: Decimal, tick_size: Decimal, side: TransactionType) -> Decimal {
    if tick_size <= Decimal::ZERO {
        return price;
    }
    let ticks = price / tick_size;
    let whole = match side {
        TransactionType::Buy => ticks.floor(),
        TransactionType::Sell => ticks.ceil(),
    };
    (whole * tick_size).normalize()
}

/// A quantity rounded down to whole lots; `None` when less than one lot.
pub fn round_quantity(quantity: u64, lot_size: u64) -> Option<u64> {
    let lot = lot_size.max(1);
    let q = quantity - quantity % lot;
    (q > 0).then_some(q)
}

/// What the trader emits for an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Kite accepted the order (`order_ack`).
    Ack { broker_order_id: String },
    /// One Kite trade (`order_filled`).
    Fill {
        trade_id: String,
        quantity: u64,
        price: Decimal,
    },
    /// The order's filled quantity grew: read `GET /orders/{id}/trades` for the fills.
    FetchTrades { broker_order_id: String },
    /// REJECTED, or CANCELLED with nothing left to fill (`order_failed`).
    Failed { reason: String },
}

/// The deterministic id of an emitted event: `what` is `ack`, `failed` or `fill:{trade_id}`.
pub fn event_id(intent: Uuid, what: &str) -> Uuid {
    alpha_panda_core::ids::child_id(intent, &format!("{STAGE}:{what}"), 0)
}

/// What has been emitted for one intent so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    acked: bool,
    failed: bool,
    filled_seen: u64,
    trades: std::collections::BTreeSet<String>,
    /// Kite reported a final status (COMPLETE, CANCELLED, REJECTED).
    #[serde(default)]
    final_status: bool,
    /// Quantity of the trades turned into fills.
    #[serde(default)]
    traded: u64,
}

impl Progress {
    /// Nothing more will come of the order: Kite reported a final status and every traded
    /// quantity it reported has become a fill.
    pub fn is_closed(&self) -> bool {
        self.final_status && self.traded >= self.filled_seen
    }

    /// Quantity filled so far.
    pub fn traded(&self) -> u64 {
        self.traded
    }

    /// An order update (WebSocket text message, postback or a row of the order history).
    pub fn on_order(&mut self, o: &Order) -> Vec<Step> {
        use crate::types::order::OrderStatus as S;
        let mut out = Vec::new();
        let accepted = matches!(
            o.status,
            S::Open | S::Complete | S::TriggerPending | S::Update
        ) || (o.status == S::Cancelled && o.filled_quantity > 0);
        if accepted && !self.acked {
            self.acked = true;
            out.push(Step::Ack {
                broker_order_id: o.order_id.clone(),
            });
        }
        if o.filled_quantity > self.filled_seen {
            self.filled_seen = o.filled_quantity;
            out.push(Step::FetchTrades {
                broker_order_id: o.order_id.clone(),
            });
        }
        if o.status.is_final() {
            self.final_status = true;
        }
        if matches!(o.status, S::Rejected | S::Cancelled) && !self.failed {
            self.failed = true;
            let reason = o
                .status_message
                .clone()
                .unwrap_or_else(|| o.status.as_str().to_owned());
            out.push(Step::Failed {
                reason: format!("{}: {reason}", o.status.as_str()),
            });
        }
        out
    }

    /// The order's trades (`GET /orders/{id}/trades`): a fill for each trade not seen yet.
    pub fn on_trades(&mut self, trades: &[crate::types::order::Trade]) -> Vec<Step> {
        trades
            .iter()
            .filter(|t| self.trades.insert(t.trade_id.clone()))
            .inspect(|t| self.traded += t.quantity)
            .map(|t| Step::Fill {
                trade_id: t.trade_id.clone(),
                quantity: t.quantity,
                price: t.average_price,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::order::check_tag;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_same_signal_gives_the_same_intent_and_tag() {
        let signal = Uuid::now_v7();
        assert_eq!(intent_id(signal), intent_id(signal));
        assert_eq!(tag_for(intent_id(signal)), tag_for(intent_id(signal)));
        assert_ne!(intent_id(signal), intent_id(Uuid::now_v7()));
    }

    proptest! {
        #[test]
        fn every_tag_is_twenty_letters_and_digits_kite_accepts(bytes in any::<[u8; 16]>()) {
            let tag = tag_for(Uuid::from_bytes(bytes));
            prop_assert_eq!(tag.len(), 20);
            prop_assert!(check_tag(&tag).is_ok());
        }

        #[test]
        fn intents_of_different_signals_get_different_tags(a in any::<[u8; 16]>(), b in any::<[u8; 16]>()) {
            prop_assume!(a != b);
            let (ta, tb) = (tag_for(intent_id(Uuid::from_bytes(a))), tag_for(intent_id(Uuid::from_bytes(b))));
            prop_assert_ne!(ta, tb);
        }
    }

    #[test]
    fn an_unknown_intent_is_resolved_by_the_book_never_by_sending_again() {
        let s = transition(&IntentState::Recorded, &IntentEvent::OutcomeLost);
        assert_eq!(s, Some(IntentState::Unknown));
        let found = IntentEvent::FoundInBook {
            order_id: "1".into(),
        };
        assert_eq!(
            transition(&IntentState::Unknown, &found),
            Some(IntentState::Placed {
                order_id: "1".into()
            })
        );
        // A placed intent is never sent again nor changed by a late lookup.
        let placed = IntentState::Placed {
            order_id: "1".into(),
        };
        assert_eq!(transition(&placed, &IntentEvent::AbsentFromBook), None);
        assert_eq!(transition(&placed, &IntentEvent::OutcomeLost), None);
        // The reply and an order update race: a confirmation of the same order is no
        // change, another order id is refused.
        let same = IntentEvent::Replied {
            order_id: "1".into(),
        };
        assert_eq!(transition(&placed, &same), Some(placed.clone()));
        let other = IntentEvent::FoundInBook {
            order_id: "2".into(),
        };
        assert_eq!(transition(&placed, &other), None);
        // A recorded intent the book does not hold was never received: it may be sent.
        assert_eq!(
            transition(&IntentState::Recorded, &IntentEvent::AbsentFromBook),
            Some(IntentState::Recorded)
        );
        assert!(matches!(
            transition(&IntentState::Unknown, &IntentEvent::AbsentFromBook),
            Some(IntentState::Failed { .. })
        ));
    }

    #[test]
    fn the_book_lookup_finds_the_tag_and_reports_duplicates() {
        let book: Vec<Order> = serde_json::from_str(
            r#"[{"order_id":"1","status":"OPEN","variety":"regular","exchange":"NSE","tradingsymbol":"TCS",
                "instrument_token":2953217,"order_type":"MARKET","transaction_type":"BUY","validity":"DAY",
                "product":"MIS","quantity":1,"price":0,"tag":"apx"},
               {"order_id":"2","status":"OPEN","variety":"regular","exchange":"NSE","tradingsymbol":"TCS",
                "instrument_token":2953217,"order_type":"MARKET","transaction_type":"BUY","validity":"DAY",
                "product":"MIS","quantity":1,"price":0,"tag":"apy"},
               {"order_id":"3","status":"OPEN","variety":"regular","exchange":"NSE","tradingsymbol":"TCS",
                "instrument_token":2953217,"order_type":"MARKET","transaction_type":"BUY","validity":"DAY",
                "product":"MIS","quantity":1,"price":0,"tag":"apy"}]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            resolve("apx", &book),
            Resolution::Placed {
                order_id: "1".into()
            }
        );
        assert_eq!(
            resolve("apy", &book),
            Resolution::Duplicated {
                order_id: "2".into(),
                extra: vec!["3".into()]
            }
        );
        assert_eq!(resolve("apz", &book), Resolution::NotPlaced);
    }

    fn order(status: &str, filled: u64, msg: Option<&str>) -> Order {
        let mut o: Order = serde_json::from_value(serde_json::json!({
            "order_id": "26001", "status": status, "variety": "regular", "exchange": "NSE",
            "tradingsymbol": "TCS", "instrument_token": 2953217, "order_type": "LIMIT",
            "transaction_type": "BUY", "validity": "DAY", "product": "MIS", "quantity": 5,
            "price": 3500, "filled_quantity": filled
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        o.status_message = msg.map(str::to_owned);
        o
    }

    fn trade(id: &str, qty: u64) -> crate::types::order::Trade {
        serde_json::from_value(serde_json::json!({
            "trade_id": id, "order_id": "26001", "exchange": "NSE", "tradingsymbol": "TCS",
            "instrument_token": 2953217, "product": "MIS", "average_price": 3499.5,
            "quantity": qty, "transaction_type": "BUY"
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn updates_become_one_ack_one_fill_per_trade_and_nothing_twice() {
        let mut p = Progress::default();
        assert_eq!(
            p.on_order(&order("PUT ORDER REQ RECEIVED", 0, None)),
            vec![]
        );
        let ack = Step::Ack {
            broker_order_id: "26001".into(),
        };
        assert_eq!(p.on_order(&order("OPEN", 0, None)), vec![ack]);
        assert_eq!(p.on_order(&order("OPEN", 0, None)), vec![]);
        let fetch = Step::FetchTrades {
            broker_order_id: "26001".into(),
        };
        assert_eq!(p.on_order(&order("OPEN", 2, None)), vec![fetch.clone()]);
        assert_eq!(p.on_trades(&[trade("t1", 2)]).len(), 1);
        assert_eq!(p.on_order(&order("COMPLETE", 5, None)), vec![fetch]);
        let fills = p.on_trades(&[trade("t1", 2), trade("t2", 3)]);
        assert_eq!(
            fills,
            vec![Step::Fill {
                trade_id: "t2".into(),
                quantity: 3,
                price: d("3499.5")
            }]
        );
        // The same updates again (polling after the WebSocket): nothing new.
        assert_eq!(p.on_order(&order("COMPLETE", 5, None)), vec![]);
        assert_eq!(p.on_trades(&[trade("t1", 2), trade("t2", 3)]), vec![]);
    }

    #[test]
    fn a_rejection_is_one_failure_with_kites_message() {
        let mut p = Progress::default();
        let steps = p.on_order(&order("REJECTED", 0, Some("Insufficient funds")));
        assert_eq!(
            steps,
            vec![Step::Failed {
                reason: "REJECTED: Insufficient funds".into()
            }]
        );
        assert_eq!(
            p.on_order(&order("REJECTED", 0, Some("Insufficient funds"))),
            vec![]
        );
    }

    #[test]
    fn event_ids_are_stable_and_distinct_per_trade() {
        let i = intent_id(Uuid::now_v7());
        assert_eq!(event_id(i, "fill:t1"), event_id(i, "fill:t1"));
        assert_ne!(event_id(i, "fill:t1"), event_id(i, "fill:t2"));
        assert_ne!(event_id(i, "ack"), event_id(i, "failed"));
    }

    #[test]
    fn prices_round_to_the_tick_in_the_sides_favour_and_quantities_to_whole_lots() {
        assert_eq!(
            round_price(d("1412.97"), d("0.05"), TransactionType::Buy),
            d("1412.95")
        );
        assert_eq!(
            round_price(d("1412.97"), d("0.05"), TransactionType::Sell),
            d("1413")
        );
        assert_eq!(
            round_price(d("1412.95"), d("0.05"), TransactionType::Sell),
            d("1412.95")
        );
        assert_eq!(
            round_price(d("83.25251"), d("0.0025"), TransactionType::Buy),
            d("83.2525")
        );
        assert_eq!(round_quantity(130, 50), Some(100));
        assert_eq!(round_quantity(49, 50), None);
        assert_eq!(round_quantity(7, 1), Some(7));
    }

    proptest! {
        #[test]
        fn a_rounded_price_is_on_the_grid_and_within_one_tick(units in 1i64..100_000_000, tick in prop::sample::select(vec!["0.05", "0.01", "0.0025", "1"])) {
            let tick = d(tick);
            let price = Decimal::new(units, 4);
            for side in [TransactionType::Buy, TransactionType::Sell] {
                let r = round_price(price, tick, side);
                prop_assert!((r % tick).is_zero());
                prop_assert!((r - price).abs() < tick);
                match side {
                    TransactionType::Buy => prop_assert!(r <= price),
                    TransactionType::Sell => prop_assert!(r >= price),
                }
            }
        }
    }
}
