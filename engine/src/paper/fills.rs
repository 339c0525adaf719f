//! The paper fill model: when and at what price a simulated order fills. Pure and
//! deterministic: prices come from ticks, time from the ticks' event time.
//!
//! - MARKET fills at once at the reference price (the tick that caused the signal) moved
//!   against the order by `slippage_bps`.
//! - LIMIT fills at once if the reference price is at or through the limit (at the slipped
//!   reference price, never worse than the limit); otherwise it rests and fills at its limit
//!   price on the first later tick at or through it.
//! - SL triggers when a tick trades at or through `trigger_price` (up for BUY, down for
//!   SELL) and then behaves as a LIMIT at `price`; SL-M triggers the same way and fills as
//!   a MARKET at that tick.
//! - IOC: what does not fill at placement is cancelled. DAY: a resting order expires at the
//!   close (15:30 IST) of the day it was placed.

use std::collections::BTreeMap;

use alpha_panda_core::{Decimal, InstrumentToken, OrderId, OrderType, Side, Timestamp, Validity};
use chrono::NaiveTime;

use crate::risk::trading_day;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PaperOrder {
    pub order_id: OrderId,
    pub instrument_token: InstrumentToken,
    pub side: Side,
    pub quantity: u64,
    pub order_type: OrderType,
    /// Limit price (LIMIT, SL).
    pub price: Decimal,
    pub trigger_price: Option<Decimal>,
    pub validity: Validity,
    pub placed_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaperEvent {
    Filled {
        order_id: OrderId,
        price: Decimal,
        quantity: u64,
        at: Timestamp,
    },
    Cancelled {
        order_id: OrderId,
        reason: String,
        at: Timestamp,
    },
}

/// Resting paper orders per instrument, in placement order.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PaperBook {
    /// Configuration, not state: not in a checkpoint ([`PaperBook::set_slippage`]).
    #[serde(skip)]
    slippage_bps: Decimal,
    resting: BTreeMap<InstrumentToken, Vec<Resting>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Resting {
    order: PaperOrder,
    triggered: bool,
}

fn crosses(side: Side, price: Decimal, limit: Decimal) -> bool {
    match side {
        Side::Buy => price <= limit,
        Side::Sell => price >= limit,
    }
}

fn triggers(side: Side, price: Decimal, trigger: Decimal) -> bool {
    match side {
        Side::Buy => price >= trigger,
        Side::Sell => price <= trigger,
    }
}

/// Why an order of `side` cannot fill at `price` moved `slippage_bps` against it.
fn unslippable(slippage_bps: Decimal, side: Side, price: Decimal) -> String {
    format!("no fill price: {price} moved {slippage_bps} bps against a {side} is not a valid price")
}

/// The close of the NSE day of `t`, 15:30 IST, in UTC.
fn close_of(t: Timestamp) -> Timestamp {
    let day = trading_day(t);
    let close = day.and_time(NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default());
    Timestamp(close.and_utc())
}

impl PaperBook {
    pub fn new(slippage_bps: Decimal) -> Self {
        Self {
            slippage_bps,
            resting: BTreeMap::new(),
        }
    }

    /// Sets the slippage of a book read from a checkpoint.
    pub(crate) fn set_slippage(&mut self, slippage_bps: Decimal) {
        self.slippage_bps = slippage_bps;
    }

    /// `price` moved against an order of `side` by the slippage, to the paisa; `None` when
    /// that price is not a price: beyond `Decimal`'s range, or below zero (a SELL slipped by
    /// more than 10 000 bps; settings bound the slippage, this does not rely on it).
    pub fn slipped(&self, side: Side, price: Decimal) -> Option<Decimal> {
        let f = self.slippage_bps / Decimal::from(10_000);
        let factor = match side {
            Side::Buy => Decimal::ONE.checked_add(f)?,
            Side::Sell => Decimal::ONE.checked_sub(f)?,
        };
        let slipped = price.checked_mul(factor)?.round_dp(2);
        (!slipped.is_sign_negative() || slipped.is_zero()).then_some(slipped)
    }

    /// Places an order against the reference tick price `reference` at `at`.
    pub fn place(
        &mut self,
        order: PaperOrder,
        reference: Decimal,
        at: Timestamp,
    ) -> Vec<PaperEvent> {
        let fill = |price| PaperEvent::Filled {
            order_id: order.order_id.clone(),
            price,
            quantity: order.quantity,
            at,
        };
        let slipped = self.slipped(order.side, reference);
        let immediate = match (order.order_type, slipped) {
            (OrderType::Market, Some(slipped)) => Some(slipped),
            (OrderType::Market, None) => {
                return vec![PaperEvent::Cancelled {
                    reason: unslippable(self.slippage_bps, order.side, reference),
                    order_id: order.order_id,
                    at,
                }];
            }
            // A slipped price out of range is beyond the limit: the limit bounds the fill.
            (OrderType::Limit, _) if crosses(order.side, reference, order.price) => {
                Some(match (order.side, slipped) {
                    (Side::Buy, Some(slipped)) => slipped.min(order.price),
                    (Side::Sell, Some(slipped)) => slipped.max(order.price),
                    (_, None) => order.price,
                })
            }
            _ => None,
        };
        if let Some(price) = immediate {
            return vec![fill(price)];
        }
        if order.validity == Validity::Ioc {
            return vec![PaperEvent::Cancelled {
                order_id: order.order_id,
                reason: "IOC order not marketable at placement".into(),
                at,
            }];
        }
        self.resting
            .entry(order.instrument_token)
            .or_default()
            .push(Resting {
                order,
                triggered: false,
            });
        Vec::new()
    }

    /// A tick of `token` at `price`: expires DAY orders past their close, triggers stops and
    /// fills what the price reaches. Only orders placed before `at` take part: a tick at the
    /// placement time is the order's reference, not a later price.
    pub fn on_tick(
        &mut self,
        token: InstrumentToken,
        price: Decimal,
        at: Timestamp,
    ) -> Vec<PaperEvent> {
        if self.resting.get(&token).is_none_or(Vec::is_empty) {
            return Vec::new();
        }
        // Only a tick that has resting orders to reach pays for the slipped prices.
        let slipped_buy = self.slipped(Side::Buy, price);
        let slipped_sell = self.slipped(Side::Sell, price);
        let bps = self.slippage_bps;
        let unslippable = |side| unslippable(bps, side, price);
        let Some(orders) = self.resting.get_mut(&token) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        orders.retain_mut(|r| {
            let o = &r.order;
            if o.placed_at >= at {
                return true;
            }
            if at > close_of(o.placed_at) {
                events.push(PaperEvent::Cancelled {
                    order_id: o.order_id.clone(),
                    reason: "DAY order expired at the close".into(),
                    at,
                });
                return false;
            }
            if let (false, Some(trigger)) = (r.triggered, o.trigger_price) {
                if !triggers(o.side, price, trigger) {
                    return true;
                }
                r.triggered = true;
            }
            let fill_price = match o.order_type {
                OrderType::StopLossMarket => match o.side {
                    Side::Buy => slipped_buy,
                    Side::Sell => slipped_sell,
                }
                .ok_or_else(|| unslippable(o.side))
                .map(Some),
                _ if crosses(o.side, price, o.price) => Ok(Some(o.price)),
                _ => Ok(None),
            };
            let fill_price = match fill_price {
                Ok(p) => p,
                Err(reason) => {
                    events.push(PaperEvent::Cancelled {
                        order_id: o.order_id.clone(),
                        reason,
                        at,
                    });
                    return false;
                }
            };
            match fill_price {
                Some(p) => {
                    events.push(PaperEvent::Filled {
                        order_id: o.order_id.clone(),
                        price: p,
                        quantity: o.quantity,
                        at,
                    });
                    false
                }
                None => true,
            }
        });
        events
    }

    /// Takes over `other`'s resting orders, after this book's own.
    pub fn absorb(&mut self, other: PaperBook) {
        for (token, orders) in other.resting {
            self.resting.entry(token).or_default().extend(orders);
        }
    }

    pub fn resting(&self) -> usize {
        self.resting.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: InstrumentToken = InstrumentToken(1);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn order(
        side: Side,
        ty: OrderType,
        price: &str,
        trigger: Option<&str>,
        validity: Validity,
    ) -> PaperOrder {
        PaperOrder {
            order_id: OrderId::new("o1").unwrap(),
            instrument_token: T,
            side,
            quantity: 10,
            order_type: ty,
            price: d(price),
            trigger_price: trigger.map(d),
            validity,
            placed_at: at("2024-01-15T04:00:00Z"),
        }
    }

    fn filled_at(events: &[PaperEvent]) -> Option<Decimal> {
        match events {
            [PaperEvent::Filled { price, .. }] => Some(*price),
            _ => None,
        }
    }

    #[test]
    fn market_orders_fill_at_the_reference_price_with_slippage() {
        let mut b = PaperBook::new(d("5"));
        let t = at("2024-01-15T04:00:00Z");
        // 2450.05 × 1.0005 = 2451.275025 → 2451.28; sell: 2448.824975 → 2448.82.
        let buy = b.place(
            order(Side::Buy, OrderType::Market, "0", None, Validity::Day),
            d("2450.05"),
            t,
        );
        assert_eq!(filled_at(&buy), Some(d("2451.28")));
        let sell = b.place(
            order(Side::Sell, OrderType::Market, "0", None, Validity::Day),
            d("2450.05"),
            t,
        );
        assert_eq!(filled_at(&sell), Some(d("2448.82")));
    }

    #[test]
    fn limits_rest_until_a_tick_reaches_them() {
        let mut b = PaperBook::new(d("5"));
        let t = at("2024-01-15T04:00:00Z");
        assert!(
            b.place(
                order(Side::Buy, OrderType::Limit, "99", None, Validity::Day),
                d("100"),
                t
            )
            .is_empty()
        );
        assert!(
            b.on_tick(T, d("99.50"), at("2024-01-15T04:00:01Z"))
                .is_empty()
        );
        let e = b.on_tick(T, d("98.90"), at("2024-01-15T04:00:02Z"));
        assert_eq!(filled_at(&e), Some(d("99")), "fills at its limit");
        assert_eq!(b.resting(), 0);
        // A marketable limit fills at once, never worse than its limit.
        let e = b.place(
            order(Side::Buy, OrderType::Limit, "100.02", None, Validity::Day),
            d("100"),
            t,
        );
        assert_eq!(
            filled_at(&e),
            Some(d("100.02")),
            "100.05 slipped is capped at the limit"
        );
    }

    #[test]
    fn stops_trigger_then_fill() {
        let mut b = PaperBook::new(d("0"));
        let t = at("2024-01-15T04:00:00Z");
        // SELL SL-M below 95: nothing at 96, triggers and fills at 94.
        b.place(
            order(
                Side::Sell,
                OrderType::StopLossMarket,
                "0",
                Some("95"),
                Validity::Day,
            ),
            d("100"),
            t,
        );
        assert!(b.on_tick(T, d("96"), at("2024-01-15T04:01:00Z")).is_empty());
        assert_eq!(
            filled_at(&b.on_tick(T, d("94"), at("2024-01-15T04:02:00Z"))),
            Some(d("94"))
        );
        // BUY SL: trigger 105, limit 106: triggered at 105.5 → fills at limit 106 when ≤ 106.
        b.place(
            order(
                Side::Buy,
                OrderType::StopLoss,
                "106",
                Some("105"),
                Validity::Day,
            ),
            d("100"),
            t,
        );
        assert!(
            b.on_tick(T, d("104"), at("2024-01-15T04:03:00Z"))
                .is_empty()
        );
        let e = b.on_tick(T, d("107"), at("2024-01-15T04:04:00Z"));
        assert!(e.is_empty(), "triggered, but 107 is above the limit");
        assert_eq!(
            filled_at(&b.on_tick(T, d("105.5"), at("2024-01-15T04:05:00Z"))),
            Some(d("106"))
        );
    }

    #[test]
    fn ioc_cancels_and_day_orders_expire_at_the_close() {
        let mut b = PaperBook::new(d("0"));
        let t = at("2024-01-15T04:00:00Z");
        let e = b.place(
            order(Side::Buy, OrderType::Limit, "90", None, Validity::Ioc),
            d("100"),
            t,
        );
        assert!(matches!(e.as_slice(), [PaperEvent::Cancelled { .. }]));
        b.place(
            order(Side::Buy, OrderType::Limit, "90", None, Validity::Day),
            d("100"),
            t,
        );
        assert!(
            b.on_tick(T, d("95"), at("2024-01-15T10:00:00Z")).is_empty(),
            "15:30 IST: still open"
        );
        let e = b.on_tick(T, d("85"), at("2024-01-15T10:00:01Z"));
        assert!(
            matches!(e.as_slice(), [PaperEvent::Cancelled { reason, .. }] if reason.contains("expired"))
        );
    }
}
