//! The simulator's matching engine: instruments, orders, trades. Pure: time and prices are
//! passed in.
//!
//! Contract: `place` checks an order the way Kite does (known instrument, tag, quantity a
//! multiple of the lot size, a LIMIT price on the tick grid, a price for LIMIT/SL, a trigger
//! for SL/SL-M) and answers an error of Kite's shape, or books it OPEN (or TRIGGER PENDING)
//! and returns its id. `step` moves every instrument one tick of its own random walk and
//! fills what the new price reaches: MARKET orders at the new price, LIMIT orders at their
//! price or better, SL/SL-M once triggered; at most `fill_chunk` per order per step, so a
//! large order fills in several trades. Every state change is appended to the order's
//! history and returned as an update. Ids are sequential and unique per simulator.

use rust_decimal::Decimal;

use crate::error::ErrorType;
use crate::ticker::packet::{Mode, Ohlc, Packet};
use crate::types::order::{
    Exchange, Order, OrderStatus, OrderType, Trade, TransactionType, check_tag,
};

/// One tradable instrument of the simulator.
#[derive(Debug, Clone)]
pub struct SimInstrument {
    pub token: u32,
    pub exchange: Exchange,
    pub tradingsymbol: String,
    pub tick_size: Decimal,
    pub lot_size: u64,
    pub price: Decimal,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    volume: u32,
}

impl SimInstrument {
    pub fn new(
        token: u32,
        exchange: Exchange,
        tradingsymbol: &str,
        tick_size: Decimal,
        lot_size: u64,
        price: Decimal,
    ) -> Self {
        Self {
            token,
            exchange,
            tradingsymbol: tradingsymbol.to_owned(),
            tick_size,
            lot_size,
            price,
            open: price,
            high: price,
            low: price,
            volume: 0,
        }
    }

    /// The packet of this instrument in `mode` at `ts` (Unix seconds).
    pub fn packet(&self, mode: Mode, ts: u32) -> Packet {
        Packet {
            token: self.token,
            mode,
            tradable: true,
            last_price: self.price,
            last_quantity: (mode != Mode::Ltp).then_some(1),
            average_price: (mode != Mode::Ltp).then_some(self.price),
            volume: (mode != Mode::Ltp).then_some(self.volume),
            total_buy_quantity: (mode != Mode::Ltp).then_some(0),
            total_sell_quantity: (mode != Mode::Ltp).then_some(0),
            ohlc: (mode != Mode::Ltp).then_some(Ohlc {
                open: self.open,
                high: self.high,
                low: self.low,
                close: self.open,
            }),
            index_change: None,
            last_trade_time: (mode == Mode::Full).then_some(ts).filter(|t| *t != 0),
            oi: (mode == Mode::Full).then_some(0),
            oi_day_high: (mode == Mode::Full).then_some(0),
            oi_day_low: (mode == Mode::Full).then_some(0),
            exchange_timestamp: (mode == Mode::Full).then_some(ts).filter(|t| *t != 0),
            depth: None,
        }
    }
}

/// A refusal in Kite's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SimError {
    pub status: u16,
    pub error_type: ErrorType,
    pub message: String,
}

fn input(message: impl Into<String>) -> SimError {
    SimError {
        status: 400,
        error_type: ErrorType::Input,
        message: message.into(),
    }
}

/// A place request as form fields.
pub type Form = Vec<(String, String)>;

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(form: &'a Form, name: &str) -> Result<&'a str, SimError> {
    field(form, name).ok_or_else(|| input(format!("Missing {name}")))
}

fn parsed<T: std::str::FromStr>(form: &Form, name: &str) -> Result<Option<T>, SimError> {
    match field(form, name) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| input(format!("Invalid `{name}`: {v}"))),
    }
}

struct SimOrder {
    history: Vec<Order>,
    trades: Vec<Trade>,
}

impl SimOrder {
    fn current(&self) -> &Order {
        // Every order is created with one state, and states are only appended.
        &self.history[self.history.len() - 1]
    }
}

/// Instruments, orders and trades.
pub struct Book {
    pub instruments: Vec<SimInstrument>,
    orders: Vec<SimOrder>,
    next_order: u64,
    next_trade: u64,
    /// Most quantity filled per order per step (`None`: all at once).
    pub fill_chunk: Option<u64>,
}

impl Book {
    pub fn new(instruments: Vec<SimInstrument>) -> Self {
        Self {
            instruments,
            orders: Vec::new(),
            next_order: 0,
            next_trade: 0,
            fill_chunk: None,
        }
    }

    pub fn instrument_by_symbol(&self, exchange: &str, symbol: &str) -> Option<&SimInstrument> {
        self.instruments
            .iter()
            .find(|i| i.exchange.as_str() == exchange && i.tradingsymbol == symbol)
    }

    /// Every order's current state, in placement order.
    pub fn orders(&self) -> Vec<Order> {
        self.orders.iter().map(|o| o.current().clone()).collect()
    }

    pub fn order_history(&self, id: &str) -> Option<Vec<Order>> {
        self.find(id).map(|o| o.history.clone())
    }

    pub fn order_trades(&self, id: &str) -> Option<Vec<Trade>> {
        self.find(id).map(|o| o.trades.clone())
    }

    pub fn trades(&self) -> Vec<Trade> {
        self.orders.iter().flat_map(|o| o.trades.clone()).collect()
    }

    fn find(&self, id: &str) -> Option<&SimOrder> {
        self.orders.iter().find(|o| o.current().order_id == id)
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut SimOrder> {
        self.orders.iter_mut().find(|o| o.current().order_id == id)
    }

    /// Books an order from its form fields; `now` is the IST time as Kite prints it.
    pub fn place(&mut self, variety: &str, form: &Form, now: &str) -> Result<Order, SimError> {
        let exchange = required(form, "exchange")?;
        let symbol = required(form, "tradingsymbol")?;
        let inst = self
            .instrument_by_symbol(exchange, symbol)
            .ok_or_else(|| input(format!("Invalid `tradingsymbol`: {exchange}:{symbol}")))?
            .clone();
        let side: TransactionType =
            parsed(form, "transaction_type")?.ok_or_else(|| input("Missing transaction_type"))?;
        let order_type: OrderType =
            parsed(form, "order_type")?.ok_or_else(|| input("Missing order_type"))?;
        let quantity: u64 = parsed(form, "quantity")?.ok_or_else(|| input("Missing quantity"))?;
        let product = required(form, "product")?;
        let price: Option<Decimal> = parsed(form, "price")?;
        let trigger: Option<Decimal> = parsed(form, "trigger_price")?;
        let tag = field(form, "tag").filter(|t| !t.is_empty());
        if let Some(tag) = tag {
            check_tag(tag).map_err(|e| input(e.to_string()))?;
        }
        if quantity == 0 || quantity % inst.lot_size.max(1) != 0 {
            return Err(input(format!(
                "Quantity should be a multiple of the lot size {}",
                inst.lot_size
            )));
        }
        if matches!(order_type, OrderType::Limit | OrderType::Sl) {
            let p = price.ok_or_else(|| input("Missing price"))?;
            if inst.tick_size > Decimal::ZERO && !(p % inst.tick_size).is_zero() {
                return Err(input(format!(
                    "Tick size for this script is {}. Kindly enter the price in the multiple of tick size",
                    inst.tick_size
                )));
            }
        }
        if matches!(order_type, OrderType::Sl | OrderType::SlM) && trigger.is_none() {
            return Err(input("Missing trigger_price"));
        }
        self.next_order += 1;
        let order = Order {
            order_id: format!("26{:013}", self.next_order),
            exchange_order_id: Some(format!("13{:014}", self.next_order)),
            parent_order_id: None,
            status: if matches!(order_type, OrderType::Sl | OrderType::SlM) {
                OrderStatus::TriggerPending
            } else {
                OrderStatus::Open
            },
            status_message: None,
            order_timestamp: Some(now.to_owned()),
            exchange_timestamp: Some(now.to_owned()),
            variety: variety.to_owned(),
            exchange: exchange.to_owned(),
            tradingsymbol: symbol.to_owned(),
            instrument_token: inst.token,
            order_type: order_type.as_str().to_owned(),
            transaction_type: side,
            validity: field(form, "validity").unwrap_or("DAY").to_owned(),
            product: product.to_owned(),
            quantity,
            disclosed_quantity: 0,
            price: price.unwrap_or_default(),
            trigger_price: trigger.unwrap_or_default(),
            average_price: Decimal::ZERO,
            filled_quantity: 0,
            pending_quantity: quantity,
            cancelled_quantity: 0,
            tag: tag.map(str::to_owned),
            checksum: None,
        };
        let mut received = order.clone();
        received.status = OrderStatus::Other("PUT ORDER REQ RECEIVED".into());
        received.exchange_order_id = None;
        self.orders.push(SimOrder {
            history: vec![received, order.clone()],
            trades: Vec::new(),
        });
        Ok(order)
    }

    /// Moves an order to REJECTED with `message` (the exchange or RMS refused it).
    pub fn reject(&mut self, id: &str, message: &str) -> Option<Order> {
        let o = self.find_mut(id)?;
        let mut next = o.current().clone();
        next.status = OrderStatus::Rejected;
        next.status_message = Some(message.to_owned());
        next.pending_quantity = 0;
        o.history.push(next.clone());
        Some(next)
    }

    /// Cancels what is left of an open order.
    pub fn cancel(&mut self, id: &str) -> Result<Order, SimError> {
        let o = self
            .find_mut(id)
            .ok_or_else(|| input(format!("Invalid order_id {id}")))?;
        if o.current().status.is_final() {
            return Err(SimError {
                status: 400,
                error_type: ErrorType::Order,
                message: format!(
                    "Order cannot be cancelled as it is {}",
                    o.current().status.as_str()
                ),
            });
        }
        let mut next = o.current().clone();
        next.status = OrderStatus::Cancelled;
        next.cancelled_quantity = next.pending_quantity;
        next.pending_quantity = 0;
        o.history.push(next.clone());
        Ok(next)
    }

    /// Changes price, quantity or trigger of an open order.
    pub fn modify(&mut self, id: &str, form: &Form) -> Result<Order, SimError> {
        let price: Option<Decimal> = parsed(form, "price")?;
        let trigger: Option<Decimal> = parsed(form, "trigger_price")?;
        let quantity: Option<u64> = parsed(form, "quantity")?;
        let o = self
            .find_mut(id)
            .ok_or_else(|| input(format!("Invalid order_id {id}")))?;
        if o.current().status.is_final() {
            return Err(SimError {
                status: 400,
                error_type: ErrorType::Order,
                message: format!(
                    "Order cannot be modified as it is {}",
                    o.current().status.as_str()
                ),
            });
        }
        let mut next = o.current().clone();
        if let Some(p) = price {
            next.price = p;
        }
        if let Some(t) = trigger {
            next.trigger_price = t;
        }
        if let Some(q) = quantity {
            if q < next.filled_quantity {
                return Err(input("Quantity is less than the filled quantity"));
            }
            next.quantity = q;
            next.pending_quantity = q - next.filled_quantity;
        }
        o.history.push(next.clone());
        Ok(next)
    }

    /// One step of the tick stream: each instrument's price moves by `moves[i]` ticks
    /// (missing entries: no move), then open orders are matched. Returns the packets of the
    /// step and the updated orders.
    pub fn step(&mut self, moves: &[i64], now: &str) -> Vec<Order> {
        for (i, inst) in self.instruments.iter_mut().enumerate() {
            let m = moves.get(i).copied().unwrap_or(0);
            let next = inst.price + inst.tick_size * Decimal::from(m);
            if next > inst.tick_size {
                inst.price = next;
            }
            inst.high = inst.high.max(inst.price);
            inst.low = inst.low.min(inst.price);
        }
        let mut updates = Vec::new();
        for idx in 0..self.orders.len() {
            if let Some(u) = self.match_order(idx, now) {
                updates.push(u);
            }
        }
        updates
    }

    fn match_order(&mut self, idx: usize, now: &str) -> Option<Order> {
        let cur = self.orders[idx].current().clone();
        if cur.status.is_final() || cur.pending_quantity == 0 {
            return None;
        }
        let inst = self
            .instruments
            .iter()
            .find(|i| i.token == cur.instrument_token)?;
        let ltp = inst.price;
        let buy = cur.transaction_type == TransactionType::Buy;
        let reached = |limit: Decimal| if buy { ltp <= limit } else { ltp >= limit };
        let mut next = cur.clone();
        let fill_price = match cur.order_type.as_str() {
            "MARKET" => Some(ltp),
            "LIMIT" => reached(cur.price).then_some(if buy {
                ltp.min(cur.price)
            } else {
                ltp.max(cur.price)
            }),
            "SL" | "SL-M" => {
                let triggered = cur.status == OrderStatus::Open
                    || if buy {
                        ltp >= cur.trigger_price
                    } else {
                        ltp <= cur.trigger_price
                    };
                if !triggered {
                    return None;
                }
                if cur.status == OrderStatus::TriggerPending {
                    next.status = OrderStatus::Open;
                }
                if cur.order_type == "SL-M" {
                    Some(ltp)
                } else {
                    reached(cur.price).then_some(cur.price)
                }
            }
            _ => None,
        };
        let Some(px) = fill_price else {
            if next != cur {
                self.orders[idx].history.push(next.clone());
                return Some(next);
            }
            return None;
        };
        let qty = self
            .fill_chunk
            .map(|c| c.max(1).min(cur.pending_quantity))
            .unwrap_or(cur.pending_quantity);
        let filled_before = Decimal::from(cur.filled_quantity);
        next.average_price = ((cur.average_price * filled_before + px * Decimal::from(qty))
            / Decimal::from(cur.filled_quantity + qty))
        .round_dp(4);
        next.filled_quantity += qty;
        next.pending_quantity -= qty;
        next.status = if next.pending_quantity == 0 {
            OrderStatus::Complete
        } else {
            OrderStatus::Open
        };
        self.next_trade += 1;
        let inst_volume = self
            .instruments
            .iter_mut()
            .find(|i| i.token == cur.instrument_token);
        if let Some(i) = inst_volume {
            i.volume = i
                .volume
                .saturating_add(u32::try_from(qty).unwrap_or(u32::MAX));
        }
        let o = &mut self.orders[idx];
        o.trades.push(Trade {
            trade_id: format!("{:08}", self.next_trade),
            order_id: cur.order_id.clone(),
            exchange_order_id: cur.exchange_order_id.clone(),
            exchange: cur.exchange.clone(),
            tradingsymbol: cur.tradingsymbol.clone(),
            instrument_token: cur.instrument_token,
            product: cur.product.clone(),
            average_price: px,
            quantity: qty,
            transaction_type: cur.transaction_type,
            fill_timestamp: Some(now.to_owned()),
            exchange_timestamp: Some(now.to_owned()),
        });
        o.history.push(next.clone());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn book() -> Book {
        Book::new(vec![SimInstrument::new(
            408065,
            Exchange::Nse,
            "INFY",
            d("0.05"),
            1,
            d("1500"),
        )])
    }

    fn form(pairs: &[(&str, &str)]) -> Form {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn limit_buy(price: &str, qty: &str) -> Form {
        form(&[
            ("exchange", "NSE"),
            ("tradingsymbol", "INFY"),
            ("transaction_type", "BUY"),
            ("order_type", "LIMIT"),
            ("quantity", qty),
            ("product", "MIS"),
            ("price", price),
            ("tag", "t1"),
        ])
    }

    #[test]
    fn a_limit_buy_rests_until_the_price_comes_down_then_fills_at_its_price_or_better() {
        let mut b = book();
        let o = b
            .place("regular", &limit_buy("1499.90", "2"), "2026-01-05 09:15:00")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.status, OrderStatus::Open);
        assert!(b.step(&[-1], "t").is_empty()); // 1499.95: not reached
        let u = b.step(&[-3], "t"); // 1499.80
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].status, OrderStatus::Complete);
        assert_eq!(u[0].average_price, d("1499.8"));
        assert_eq!(b.trades().len(), 1);
        assert!(b.step(&[-1], "t").is_empty());
    }

    #[test]
    fn a_chunked_fill_makes_one_trade_per_step_until_complete() {
        let mut b = book();
        b.fill_chunk = Some(2);
        let mut f = limit_buy("0", "5");
        f.retain(|(k, _)| k != "price");
        f.iter_mut()
            .filter(|(k, _)| k == "order_type")
            .for_each(|(_, v)| *v = "MARKET".into());
        let o = b
            .place("regular", &f, "t")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let statuses: Vec<(OrderStatus, u64)> = (0..4)
            .flat_map(|_| b.step(&[1], "t"))
            .map(|u| (u.status, u.filled_quantity))
            .collect();
        assert_eq!(
            statuses,
            [
                (OrderStatus::Open, 2),
                (OrderStatus::Open, 4),
                (OrderStatus::Complete, 5)
            ]
        );
        assert_eq!(b.order_trades(&o.order_id).map(|t| t.len()), Some(3));
    }

    #[test]
    fn orders_kite_would_refuse_get_kites_input_errors() {
        let mut b = book();
        let e = b.place("regular", &limit_buy("1499.93", "1"), "t").err();
        assert!(e.is_some_and(|e| e.message.contains("Tick size")));
        let mut f = limit_buy("1500", "1");
        f.retain(|(k, _)| k != "tradingsymbol");
        let e = b.place("regular", &f, "t").err();
        assert!(e.is_some_and(|e| e.message.contains("tradingsymbol")));
        let mut f = limit_buy("1500", "1");
        f.push(("tag".into(), "x".into()));
        f.retain(|(k, v)| !(k == "tag" && v == "t1"));
        f.iter_mut()
            .filter(|(k, _)| k == "tag")
            .for_each(|(_, v)| *v = "waytoolongtag0123456789".into());
        assert!(b.place("regular", &f, "t").is_err());
    }

    #[test]
    fn a_cancelled_or_rejected_order_no_longer_fills() {
        let mut b = book();
        let o = b
            .place("regular", &limit_buy("1500", "1"), "t")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let c = b.cancel(&o.order_id).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.status, OrderStatus::Cancelled);
        assert!(b.step(&[-5], "t").is_empty());
        assert!(b.cancel(&o.order_id).is_err());
        let o = b
            .place("regular", &limit_buy("1500", "1"), "t")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            b.reject(&o.order_id, "RMS").map(|o| o.status),
            Some(OrderStatus::Rejected)
        );
        assert!(b.step(&[-5], "t").is_empty());
        assert_eq!(b.order_history(&o.order_id).map(|h| h.len()), Some(3));
    }
}
