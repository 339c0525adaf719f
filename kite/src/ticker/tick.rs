//! From a ticker packet to the runtime's `MarketTick`.
//!
//! Contract: the tick's event time is the packet's exchange timestamp, or the time the
//! message was received when the packet carries none (LTP and quote packets). `change` is
//! the percent change from the previous close (none when the close is zero). Prices and
//! OHLC of zero ("not traded yet") are left out rather than sent as zero prices.

use alpha_panda_core::events::{Depth, DepthLevel, MarketTick, Ohlc, TickMode};
use alpha_panda_core::{InstrumentToken, Price, Timestamp};
use rust_decimal::Decimal;

use super::packet::{Level, Mode, Packet};

fn ts(secs: u32) -> Option<Timestamp> {
    Timestamp::from_unix_millis(i64::from(secs) * 1000)
}

fn price(d: Decimal) -> Option<Price> {
    Price::new(d).ok()
}

fn level(l: &Level) -> Option<DepthLevel> {
    Some(DepthLevel {
        price: price(l.price)?,
        quantity: u64::from(l.quantity),
        orders: u32::from(l.orders),
    })
}

/// The tick of one packet received at `received`.
pub fn to_market_tick(p: &Packet, received: Timestamp) -> Option<MarketTick> {
    let exchange_timestamp = p.exchange_timestamp.and_then(ts);
    let mut t = MarketTick::new(
        InstrumentToken(p.token),
        price(p.last_price)?,
        exchange_timestamp.unwrap_or(received),
    );
    t.exchange_timestamp = exchange_timestamp;
    t.mode = Some(match p.mode {
        Mode::Ltp => TickMode::Ltp,
        Mode::Quote => TickMode::Quote,
        Mode::Full => TickMode::Full,
    });
    t.tradable = Some(p.tradable);
    t.last_traded_quantity = p.last_quantity.map(u64::from);
    t.average_traded_price = p.average_price.and_then(price);
    t.volume_traded = p.volume.map(u64::from);
    t.total_buy_quantity = p.total_buy_quantity.map(u64::from);
    t.total_sell_quantity = p.total_sell_quantity.map(u64::from);
    if let Some(o) = p.ohlc {
        if !o.close.is_zero() {
            t.change =
                Some(((p.last_price - o.close) * Decimal::ONE_HUNDRED / o.close).round_dp(4));
        }
        if !(o.open.is_zero() && o.high.is_zero() && o.low.is_zero() && o.close.is_zero()) {
            t.ohlc = Some(Ohlc {
                open: price(o.open)?,
                high: price(o.high)?,
                low: price(o.low)?,
                close: price(o.close)?,
            });
        }
    }
    t.last_trade_time = p.last_trade_time.and_then(ts);
    t.oi = p.oi.map(u64::from);
    t.oi_day_high = p.oi_day_high.map(u64::from);
    t.oi_day_low = p.oi_day_low.map(u64::from);
    if let Some((bids, asks)) = &p.depth {
        t.depth = Some(Depth {
            buy: bids.iter().filter_map(level).collect(),
            sell: asks.iter().filter_map(level).collect(),
        });
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticker::packet::parse_packet;

    #[test]
    fn a_full_packet_becomes_a_tick_at_its_exchange_time_with_percent_change() {
        let mut b: Vec<u8> = [
            408065u32,
            110_000,
            5,
            0,
            10,
            0,
            0,
            100_000,
            110_000,
            100_000,
            100_000,
            0,
            0,
            0,
            0,
            1_767_600_000,
        ]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
        b.resize(184, 0);
        let p = parse_packet(&b).unwrap_or_else(|| panic!("no packet"));
        let received = Timestamp::from_unix_millis(1).unwrap_or_else(|| panic!("ts"));
        let t = to_market_tick(&p, received).unwrap_or_else(|| panic!("no tick"));
        assert_eq!(t.timestamp.unix_millis(), 1_767_600_000_000);
        assert_eq!(t.change, Some(Decimal::TEN));
        assert_eq!(t.mode, Some(TickMode::Full));
        assert_eq!(t.depth.map(|d| d.buy.len()), Some(5));
    }

    #[test]
    fn an_ltp_packet_takes_the_receive_time() {
        let b: Vec<u8> = [408065u32, 141_295]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        let p = parse_packet(&b).unwrap_or_else(|| panic!("no packet"));
        let received = Timestamp::from_unix_millis(42_000).unwrap_or_else(|| panic!("ts"));
        let t = to_market_tick(&p, received).unwrap_or_else(|| panic!("no tick"));
        assert_eq!(t.timestamp, received);
        assert_eq!(t.ohlc, None);
    }
}
