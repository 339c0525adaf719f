//! The trade book: fills with their charges and realized PnL per round trip. Pure.
//!
//! A round trip of a (strategy, instrument) runs from a flat position to the next flat
//! position, in fill-time order. A fill that takes the position through zero closes the
//! trip with the part that flattens it and opens the next with the rest, its charges split
//! in proportion. Gross PnL = sell value − buy value; net PnL = gross − the fills' fees
//! (the `fees` each fill event carried, which is what the portfolio charged).

use std::collections::BTreeMap;

use alpha_panda_core::{Decimal, Side};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One fill as the trade book shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TradeFill {
    pub event_id: String,
    pub order_id: String,
    pub trade_id: Option<String>,
    pub strategy_id: String,
    pub instrument_token: i64,
    pub side: Side,
    pub quantity: u64,
    pub price: Decimal,
    pub brokerage: Decimal,
    pub stt: Decimal,
    pub exchange_txn: Decimal,
    pub gst: Decimal,
    pub sebi: Decimal,
    pub stamp: Decimal,
    /// The fill's charges as its event carried them (rounded to the paisa).
    pub fees: Decimal,
    pub ts: DateTime<Utc>,
}

impl TradeFill {
    pub fn turnover(&self) -> Decimal {
        self.price * Decimal::from(self.quantity)
    }
}

/// A round trip, closed or still open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundTrip {
    pub strategy_id: String,
    pub instrument_token: i64,
    pub opened: DateTime<Utc>,
    /// `None` while the position is open.
    pub closed: Option<DateTime<Utc>>,
    pub bought_quantity: u64,
    pub sold_quantity: u64,
    pub buy_value: Decimal,
    pub sell_value: Decimal,
    pub charges: Decimal,
    pub gross_pnl: Decimal,
    pub net_pnl: Decimal,
}

impl RoundTrip {
    fn open(f: &TradeFill) -> Self {
        Self {
            strategy_id: f.strategy_id.clone(),
            instrument_token: f.instrument_token,
            opened: f.ts,
            closed: None,
            bought_quantity: 0,
            sold_quantity: 0,
            buy_value: Decimal::ZERO,
            sell_value: Decimal::ZERO,
            charges: Decimal::ZERO,
            gross_pnl: Decimal::ZERO,
            net_pnl: Decimal::ZERO,
        }
    }

    fn take(&mut self, side: Side, quantity: u64, price: Decimal, charges: Decimal) {
        let value = price * Decimal::from(quantity);
        match side {
            Side::Buy => {
                self.bought_quantity += quantity;
                self.buy_value += value;
            }
            Side::Sell => {
                self.sold_quantity += quantity;
                self.sell_value += value;
            }
        }
        self.charges += charges;
        self.gross_pnl = self.sell_value - self.buy_value;
        self.net_pnl = self.gross_pnl - self.charges;
    }
}

/// The round trips of `fills` (any order; sorted here by time, then event id), closed
/// ones first by close time, then the open ones; and for each fill (in the order given)
/// the index of the round trip its last part belongs to.
pub fn round_trips(fills: &[TradeFill]) -> (Vec<RoundTrip>, Vec<usize>) {
    let mut order: Vec<usize> = (0..fills.len()).collect();
    order.sort_by(|&a, &b| {
        (fills[a].ts, &fills[a].event_id).cmp(&(fills[b].ts, &fills[b].event_id))
    });
    let mut trips: Vec<RoundTrip> = Vec::new();
    let mut open: BTreeMap<(String, i64), (usize, i128)> = BTreeMap::new();
    let mut of_fill = vec![0; fills.len()];
    for i in order {
        let f = &fills[i];
        let key = (f.strategy_id.clone(), f.instrument_token);
        let signed = |q: u64| match f.side {
            Side::Buy => i128::from(q),
            Side::Sell => -i128::from(q),
        };
        let (trip, position) = *open.entry(key.clone()).or_insert_with(|| {
            trips.push(RoundTrip::open(f));
            (trips.len() - 1, 0)
        });
        let after = position + signed(f.quantity);
        let crosses = position != 0 && (after != 0) && (after.signum() != position.signum());
        if crosses {
            // The part that flattens the position closes this trip; the rest opens the next.
            let closing = u64::try_from(position.unsigned_abs()).unwrap_or(u64::MAX);
            let rest = f.quantity - closing;
            // To the paisa, so the two parts add up to the fill's fees exactly.
            let share = (f.fees * Decimal::from(closing) / Decimal::from(f.quantity)).round_dp(2);
            trips[trip].take(f.side, closing, f.price, share);
            trips[trip].closed = Some(f.ts);
            let mut next = RoundTrip::open(f);
            next.take(f.side, rest, f.price, f.fees - share);
            trips.push(next);
            open.insert(key, (trips.len() - 1, after));
            of_fill[i] = trips.len() - 1;
        } else {
            trips[trip].take(f.side, f.quantity, f.price, f.fees);
            of_fill[i] = trip;
            if after == 0 {
                trips[trip].closed = Some(f.ts);
                open.remove(&key);
            } else {
                open.insert(key, (trip, after));
            }
        }
    }
    (trips, of_fill)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fill(n: u32, side: Side, qty: u64, price: &str, fees: &str) -> TradeFill {
        let d = |s: &str| s.parse::<Decimal>().unwrap_or_default();
        TradeFill {
            event_id: format!("e{n:04}"),
            order_id: format!("o{n}"),
            trade_id: None,
            strategy_id: "s".into(),
            instrument_token: 1,
            side,
            quantity: qty,
            price: d(price),
            brokerage: Decimal::ZERO,
            stt: Decimal::ZERO,
            exchange_txn: Decimal::ZERO,
            gst: Decimal::ZERO,
            sebi: Decimal::ZERO,
            stamp: Decimal::ZERO,
            fees: d(fees),
            ts: DateTime::<Utc>::from_timestamp(i64::from(n), 0).unwrap_or_default(),
        }
    }

    #[test]
    fn a_buy_then_a_sell_of_the_same_quantity_is_one_closed_round_trip_net_of_fees() {
        // The golden run's `mom`: BUY 10 @ 102.10 (fees 0.10), SELL 10 @ 100.90 (fees 0).
        let (trips, of) = round_trips(&[
            fill(1, Side::Buy, 10, "102.10", "0.10"),
            fill(2, Side::Sell, 10, "100.90", "0.00"),
        ]);
        assert_eq!(trips.len(), 1);
        assert_eq!(of, vec![0, 0]);
        assert_eq!(
            trips[0].gross_pnl,
            "-12.00".parse::<Decimal>().unwrap_or_default()
        );
        assert_eq!(
            trips[0].net_pnl,
            "-12.10".parse::<Decimal>().unwrap_or_default()
        );
        assert!(trips[0].closed.is_some());
    }

    #[test]
    fn a_sell_through_zero_closes_one_trip_and_opens_a_short_one_with_fees_split() {
        let (trips, of) = round_trips(&[
            fill(1, Side::Buy, 10, "100", "1"),
            fill(2, Side::Sell, 15, "110", "3"),
        ]);
        assert_eq!(trips.len(), 2);
        assert_eq!(of, vec![0, 1]);
        assert_eq!(trips[0].gross_pnl, Decimal::from(100));
        assert_eq!(trips[0].net_pnl, Decimal::from(97)); // fees 1 + 2 of the 3
        assert_eq!(trips[1].sold_quantity, 5);
        assert_eq!(trips[1].charges, Decimal::ONE);
        assert!(trips[1].closed.is_none());
    }

    proptest! {
        #[test]
        fn trips_add_up_to_the_fills_and_closed_trips_are_flat(
            moves in proptest::collection::vec((any::<bool>(), 1u64..50, 1i64..1000, 0i64..100), 1..40)
        ) {
            let fills: Vec<TradeFill> = moves.iter().enumerate().map(|(n, (buy, q, p, fee))| {
                let mut f = fill(n as u32, if *buy { Side::Buy } else { Side::Sell }, *q, "0", "0");
                f.price = Decimal::from(*p);
                f.fees = Decimal::new(*fee, 2);
                f
            }).collect();
            let (trips, _) = round_trips(&fills);
            let sells: Decimal = fills.iter().filter(|f| f.side == Side::Sell).map(TradeFill::turnover).sum();
            let buys: Decimal = fills.iter().filter(|f| f.side == Side::Buy).map(TradeFill::turnover).sum();
            let fees: Decimal = fills.iter().map(|f| f.fees).sum();
            let gross: Decimal = trips.iter().map(|t| t.gross_pnl).sum();
            let net: Decimal = trips.iter().map(|t| t.net_pnl).sum();
            prop_assert_eq!(gross, sells - buys);
            prop_assert_eq!(net, sells - buys - fees);
            for t in trips.iter().filter(|t| t.closed.is_some()) {
                prop_assert_eq!(t.bought_quantity, t.sold_quantity);
            }
            prop_assert!(trips.iter().filter(|t| t.closed.is_none()).count() <= 1);
        }
    }
}
