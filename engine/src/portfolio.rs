//! Portfolio maths for one (broker, strategy): positions per instrument, average price,
//! realized PnL net of fees, unrealized PnL marked to the last tick, cash. Pure.

use std::collections::BTreeMap;

use alpha_panda_core::events::PositionSnapshot;
use alpha_panda_core::{Decimal, InstrumentToken, Side};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Net quantity: positive long, negative short.
    pub quantity: i64,
    /// Average entry price of the open quantity (0 when flat).
    pub average_price: Decimal,
    /// Realized PnL of closed quantity, before fees.
    pub realized: Decimal,
    /// The last price seen (mark).
    pub last_price: Decimal,
}

impl Position {
    pub fn unrealized(&self) -> Decimal {
        (self.last_price - self.average_price) * Decimal::from(self.quantity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Book {
    pub cash: Decimal,
    pub fees: Decimal,
    pub positions: BTreeMap<InstrumentToken, Position>,
}

impl Book {
    pub fn new(starting_cash: Decimal) -> Self {
        Self {
            cash: starting_cash,
            fees: Decimal::ZERO,
            positions: BTreeMap::new(),
        }
    }

    /// Applies a fill: cash moves by the signed notional and the fees; the position grows
    /// (new average price) or shrinks (realizing PnL against the average), and may flip.
    pub fn apply_fill(
        &mut self,
        token: InstrumentToken,
        side: Side,
        quantity: u64,
        price: Decimal,
        fees: Decimal,
    ) {
        let q = Decimal::from(quantity);
        match side {
            Side::Buy => self.cash -= price * q,
            Side::Sell => self.cash += price * q,
        }
        self.cash -= fees;
        self.fees += fees;
        let pos = self.positions.entry(token).or_default();
        pos.last_price = price;
        let signed = side.sign() * quantity as i64;
        if pos.quantity == 0 || pos.quantity.signum() == signed.signum() {
            let held = Decimal::from(pos.quantity.abs());
            pos.average_price = (pos.average_price * held + price * q) / (held + q);
            pos.quantity += signed;
            return;
        }
        let closing = quantity.min(pos.quantity.unsigned_abs());
        let direction = Decimal::from(pos.quantity.signum());
        pos.realized += (price - pos.average_price) * Decimal::from(closing) * direction;
        pos.quantity += signed;
        if pos.quantity == 0 {
            pos.average_price = Decimal::ZERO;
        } else if pos.quantity.signum() == signed.signum() {
            // Flipped: what is left was opened at this fill's price.
            pos.average_price = price;
        }
    }

    /// Marks an instrument to a tick's price.
    pub fn mark(&mut self, token: InstrumentToken, price: Decimal) {
        if let Some(p) = self.positions.get_mut(&token) {
            p.last_price = price;
        }
    }

    /// Realized PnL net of all fees.
    pub fn realized_pnl(&self) -> Decimal {
        self.positions.values().map(|p| p.realized).sum::<Decimal>() - self.fees
    }

    pub fn unrealized_pnl(&self) -> Decimal {
        self.positions.values().map(Position::unrealized).sum()
    }

    pub fn total_pnl(&self) -> Decimal {
        self.realized_pnl() + self.unrealized_pnl()
    }

    pub fn snapshot_positions(&self) -> Vec<PositionSnapshot> {
        self.positions
            .iter()
            .map(|(token, p)| PositionSnapshot {
                instrument_token: *token,
                quantity: p.quantity,
                average_price: p.average_price,
                last_price: p.last_price,
                realized_pnl: p.realized,
                unrealized_pnl: p.unrealized(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: InstrumentToken = InstrumentToken(738561);

    fn d(n: i64) -> Decimal {
        Decimal::from(n)
    }

    #[test]
    fn buy_add_sell_part_then_flip_by_hand() {
        let mut b = Book::new(d(100_000));
        b.apply_fill(T, Side::Buy, 10, d(100), d(1)); // long 10 @ 100
        b.apply_fill(T, Side::Buy, 10, d(110), d(1)); // long 20 @ 105
        assert_eq!(b.positions[&T].average_price, d(105));
        b.apply_fill(T, Side::Sell, 5, d(120), d(1)); // realize (120-105)*5 = 75; long 15 @ 105
        assert_eq!(b.positions[&T].realized, d(75));
        assert_eq!(b.positions[&T].quantity, 15);
        b.apply_fill(T, Side::Sell, 25, d(90), d(1)); // close 15: (90-105)*15 = -225; short 10 @ 90
        let p = &b.positions[&T];
        assert_eq!(
            (p.quantity, p.average_price, p.realized),
            (-10, d(90), d(-150))
        );
        b.mark(T, d(80)); // short 10 from 90 marked at 80: +100
        assert_eq!(b.unrealized_pnl(), d(100));
        assert_eq!(b.realized_pnl(), d(-154), "-150 realized, 4 of fees");
        // cash: -1000 -1100 +600 +2250 - 4 fees
        assert_eq!(b.cash, d(100_000 - 1000 - 1100 + 600 + 2250 - 4));
    }

    fn fills() -> impl Strategy<Value = Vec<(bool, u64, i64, i64)>> {
        proptest::collection::vec(
            (any::<bool>(), 1u64..500, 1i64..100_000, 0i64..2_000),
            1..60,
        )
    }

    proptest! {
        /// cash change = −Σ signed fill notional − fees; and realized + unrealized equals a
        /// mark-to-market recomputation from the fills alone.
        #[test]
        fn cash_and_pnl_agree_with_a_recomputation_from_fills(fs in fills(), mark in 1i64..100_000) {
            let start = d(1_000_000);
            let mut b = Book::new(start);
            let (mut notional, mut fees, mut net_qty) = (Decimal::ZERO, Decimal::ZERO, 0i64);
            for (buy, q, p, f) in &fs {
                let side = if *buy { Side::Buy } else { Side::Sell };
                let (price, fee) = (Decimal::new(*p, 2), Decimal::new(*f, 2));
                b.apply_fill(T, side, *q, price, fee);
                notional += Decimal::from(side.sign() * *q as i64) * price;
                fees += fee;
                net_qty += side.sign() * *q as i64;
            }
            prop_assert_eq!(b.cash - start, -notional - fees);
            prop_assert_eq!(b.positions[&T].quantity, net_qty);
            let mark = Decimal::new(mark, 2);
            b.mark(T, mark);
            let mtm = -notional + Decimal::from(net_qty) * mark - fees;
            prop_assert_eq!(b.total_pnl().round_dp(8), mtm.round_dp(8));
        }
    }
}
