//! Every REST reply shape the client uses decodes with the crate's types.
//!
//! The fixtures in `tests/fixtures/` are the project's own, written in the shapes Kite
//! documents. `KITE_FIXTURES_DIR=DIR` runs the same checks over another folder of replies
//! with the same file names (e.g. Zerodha's published mocks), skipping files it lacks.

use std::path::PathBuf;

use alpha_panda_core::{Classify, FailureClass};
use alpha_panda_kite::checksum::postback_checksum;
use alpha_panda_kite::envelope::decode;
use alpha_panda_kite::error::{ErrorType, KiteError};
use alpha_panda_kite::types::margins::{Margins, SegmentMargins};
use alpha_panda_kite::types::market::{LtpQuotes, OhlcQuotes, Quotes};
use alpha_panda_kite::types::order::{Order, OrderIdReply, OrderStatus, Trade, TransactionType};
use alpha_panda_kite::types::portfolio::{Holding, Positions};
use alpha_panda_kite::types::session::{Profile, Session};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

fn dir() -> (PathBuf, bool) {
    match std::env::var_os("KITE_FIXTURES_DIR") {
        Some(d) => (PathBuf::from(d), true),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
            false,
        ),
    }
}

fn read(name: &str) -> Option<Vec<u8>> {
    let (dir, foreign) = dir();
    match std::fs::read(dir.join(name)) {
        Ok(b) => Some(b),
        Err(_) if foreign => None,
        Err(e) => panic!("fixture {name}: {e}"),
    }
}

fn load<T: DeserializeOwned>(name: &str) -> Option<T> {
    let body = read(name)?;
    match decode::<T>(name, 200, &body) {
        Ok(v) => Some(v),
        Err(e) => panic!("{name} does not decode: {e}"),
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn own() -> bool {
    !dir().1
}

#[test]
fn the_session_reply_decodes_and_hides_its_access_token_from_debug() {
    if let Some(s) = load::<Session>("generate_session.json") {
        assert!(!s.access_token.is_empty());
        let line = format!("{s:?}");
        assert!(
            !line.contains(&format!("access_token: \"{}\"", s.access_token)),
            "{line}"
        );
        if own() {
            assert_eq!(s.user_id, "ZZ9999");
            assert_eq!(s.access_token, "acctok1");
        }
    }
    if let Some(done) = load::<bool>("session_logout.json") {
        assert!(done);
    }
    if let Some(p) = load::<Profile>("profile.json") {
        assert!(!p.user_id.is_empty());
    }
}

#[test]
fn margins_decode_with_decimal_amounts() {
    if let Some(m) = load::<Margins>("margins.json") {
        let eq = m.equity.unwrap_or_else(|| panic!("no equity segment"));
        assert!(eq.enabled);
        if own() {
            assert_eq!(eq.net, d("50000.75"));
            assert_eq!(eq.available.cash, d("64000"));
        }
    }
}

#[test]
fn segment_margins_decode_for_equity_and_commodity() {
    if let Some(m) = load::<SegmentMargins>("margins_equity.json") {
        assert!(m.enabled);
    }
    // Float noise (`12345.669999999998`) and a negative zero, as Kite sends them.
    if let Some(m) = load::<SegmentMargins>("margin_commodity.json") {
        assert!(m.enabled);
        if own() {
            assert_eq!(m.net, d("12345.67"));
            assert_eq!(m.available.cash, d("13000.5"));
        }
    }
}

#[test]
fn order_calls_reply_with_an_order_id() {
    for name in [
        "order_response.json",
        "order_modify.json",
        "order_cancel.json",
    ] {
        if let Some(r) = load::<OrderIdReply>(name) {
            assert!(!r.order_id.is_empty(), "{name}");
        }
    }
}

#[test]
fn the_order_book_decodes_every_status_variety_and_long_ids() {
    if let Some(orders) = load::<Vec<Order>>("orders.json") {
        assert!(!orders.is_empty());
        if own() {
            assert_eq!(orders.len(), 5);
            assert_eq!(orders[0].status, OrderStatus::Complete);
            assert_eq!(orders[0].tag.as_deref(), Some("apabc123"));
            assert_eq!(orders[1].status, OrderStatus::Rejected);
            assert_eq!(
                orders[1].status_message.as_deref(),
                Some("Insufficient funds")
            );
            assert_eq!(orders[2].price, d("83.2525"));
            assert_eq!(orders[3].order_id, "2601050000000000004");
            assert_eq!(orders[4].status, OrderStatus::TriggerPending);
        }
    }
    if let Some(history) = load::<Vec<Order>>("order_info.json") {
        assert!(history.len() > 1);
        assert!(history.iter().all(|o| o.order_id == history[0].order_id));
        if own() {
            assert_eq!(
                history[0].status,
                OrderStatus::Other("PUT ORDER REQ RECEIVED".into())
            );
            assert_eq!(history[7].status, OrderStatus::Complete);
        }
    }
}

#[test]
fn trades_decode_with_decimal_prices() {
    for name in ["trades.json", "order_trades.json"] {
        if let Some(trades) = load::<Vec<Trade>>(name) {
            assert!(!trades.is_empty(), "{name}");
            assert!(trades.iter().all(|t| t.quantity > 0), "{name}");
        }
    }
    if own() {
        let trades: Vec<Trade> = load("trades.json").unwrap_or_default();
        assert_eq!(trades[1].average_price, d("3500.45"));
        assert_eq!(trades[1].transaction_type, TransactionType::Buy);
    }
}

#[test]
fn positions_and_holdings_decode_with_signed_quantities() {
    if let Some(p) = load::<Positions>("positions.json") {
        assert!(!p.net.is_empty());
        if own() {
            assert_eq!(p.net[1].quantity, -1);
            assert_eq!(p.net[1].multiplier, d("100"));
        }
    }
    if let Some(h) = load::<Vec<Holding>>("holdings.json") {
        assert!(!h.is_empty());
        if own() {
            assert_eq!(h[0].average_price, d("1450.25"));
        }
    }
}

#[test]
fn quotes_decode_keyed_by_exchange_and_symbol() {
    if let Some(q) = load::<Quotes>("quote.json") {
        let (_, first) = q.iter().next().unwrap_or_else(|| panic!("no quote"));
        assert_eq!(first.depth.as_ref().map(|d| d.buy.len()), Some(5));
        if own() {
            assert_eq!(q["NSE:TCS"].ohlc.high, d("3510.5"));
        }
    }
    if let Some(q) = load::<OhlcQuotes>("ohlc.json") {
        assert!(!q.is_empty());
    }
    if let Some(q) = load::<LtpQuotes>("ltp.json") {
        assert!(!q.is_empty());
        if own() {
            assert_eq!(q["BSE:INFY"].instrument_token, 128053508);
        }
    }
}

#[test]
fn an_order_update_decodes_as_an_order_with_its_checksum() {
    if let Some(body) = read("postback.json") {
        let o: Order = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("postback: {e}"));
        assert!(o.checksum.as_ref().is_some_and(|c| c.len() == 64));
        assert_eq!(o.status, OrderStatus::Complete);
        assert_eq!(postback_checksum("a", "b", "c").len(), 64);
    }
}

#[test]
fn error_replies_decode_to_their_type_and_class() {
    if !own() {
        return;
    }
    for (name, status, ty, class) in [
        (
            "error_token.json",
            403,
            ErrorType::Token,
            FailureClass::Infrastructure,
        ),
        (
            "error_margin.json",
            400,
            ErrorType::Margin,
            FailureClass::Business,
        ),
    ] {
        let body = read(name).unwrap_or_default();
        match decode::<bool>(name, status, &body) {
            Err(e @ KiteError::Api { .. }) => {
                assert_eq!(e.class(), class, "{name}");
                assert!(matches!(&e, KiteError::Api { error_type, .. } if *error_type == ty));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
