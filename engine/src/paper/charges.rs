//! Charges of a fill, shaped like Indian equity intraday charges. Pure.

use alpha_panda_config::Charges;
use alpha_panda_core::{Decimal, Side};

/// The charges of one fill, itemised; `total` is rounded to the paisa.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeBreakdown {
    pub brokerage: Decimal,
    pub stt: Decimal,
    pub exchange_txn: Decimal,
    pub sebi: Decimal,
    pub gst: Decimal,
    pub stamp: Decimal,
    pub total: Decimal,
}

/// Charges of `quantity` at `price` on `side`:
/// brokerage = min(turnover × brokerage_pct %, brokerage_cap); STT on sells; exchange
/// transaction charge; SEBI fee per crore; GST on brokerage + exchange charge + SEBI fee;
/// stamp duty on buys. `None` when a figure is beyond `Decimal`'s range (an absurd price or
/// quantity): the caller fails the order instead of charging a wrong amount.
pub fn charges(side: Side, quantity: u64, price: Decimal, c: &Charges) -> Option<ChargeBreakdown> {
    let pct = |p: Decimal| p / Decimal::ONE_HUNDRED;
    let turnover = price.checked_mul(Decimal::from(quantity))?;
    let brokerage = turnover
        .checked_mul(pct(c.brokerage_pct))?
        .min(c.brokerage_cap);
    let stt = match side {
        Side::Sell => turnover.checked_mul(pct(c.stt_sell_pct))?,
        Side::Buy => Decimal::ZERO,
    };
    let exchange_txn = turnover.checked_mul(pct(c.exchange_txn_pct))?;
    let sebi = turnover
        .checked_mul(c.sebi_per_crore)?
        .checked_div(Decimal::from(10_000_000))?;
    let gst = brokerage
        .checked_add(exchange_txn)?
        .checked_add(sebi)?
        .checked_mul(pct(c.gst_pct))?;
    let stamp = match side {
        Side::Buy => turnover.checked_mul(pct(c.stamp_buy_pct))?,
        Side::Sell => Decimal::ZERO,
    };
    // To the paisa, always written with two decimals.
    let mut total = [stt, exchange_txn, sebi, gst, stamp]
        .into_iter()
        .try_fold(brokerage, Decimal::checked_add)?
        .round_dp(2);
    total.rescale(2);
    Some(ChargeBreakdown {
        brokerage,
        stt,
        exchange_txn,
        sebi,
        gst,
        stamp,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn a_buy_of_10_reliance_at_2450_05_by_hand() {
        // turnover 24 500.50; brokerage 0.03 % = 7.35015 (< ₹20); exchange 0.00297 % =
        // 0.727664850; SEBI 10/crore = 0.0245005; GST 18 % of 8.1023153500 = 1.45841676300;
        // stamp 0.003 % = 0.73501500; no STT on a buy. Total 10.2957471... → 10.30.
        let c = charges(Side::Buy, 10, d("2450.05"), &Charges::default()).unwrap();
        assert_eq!(c.brokerage, d("7.3501500"));
        assert_eq!(c.stt, Decimal::ZERO);
        assert_eq!(c.total, d("10.30"));
    }

    #[test]
    fn brokerage_is_capped_and_stt_is_on_sells() {
        // turnover 1 000 000: brokerage 300 → capped at 20; STT 0.025 % = 250.
        let c = charges(Side::Sell, 1000, d("1000"), &Charges::default()).unwrap();
        assert_eq!(c.brokerage, d("20"));
        assert_eq!(c.stt, d("250"));
        assert_eq!(c.stamp, Decimal::ZERO);
    }

    proptest! {
        #[test]
        fn charges_are_non_negative_and_grow_with_turnover(q in 1u64..10_000, p in 1i64..1_000_000) {
            let price = Decimal::new(p, 2);
            for side in [Side::Buy, Side::Sell] {
                let one = charges(side, q, price, &Charges::default()).unwrap().total;
                let two = charges(side, q * 2, price, &Charges::default()).unwrap().total;
                prop_assert!(one >= Decimal::ZERO);
                prop_assert!(two >= one);
            }
        }
    }
}
