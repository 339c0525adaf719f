//! Risk rules for one broker. Pure: a signal, the limits, and what the stage has seen (its
//! own fills and what it already validated) in; every rule's verdict out.
//!
//! Positions count what was validated (reserved) as well as what filled, so a decision does
//! not depend on when fills arrive relative to signals. Counters and the rate window use the
//! signal's event time, never the wall clock. The trading day is the NSE day (Asia/Kolkata,
//! UTC+05:30, no DST).

use std::collections::{BTreeMap, HashSet, VecDeque};

use alpha_panda_config::RiskSettings;
use alpha_panda_core::events::{OrderFilled, RejectedSignal, TradingSignal, ValidatedSignal};
use alpha_panda_core::{
    BrokerName, Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, Lineage,
    OrderType, StrategyId, Timestamp, TradingState,
};
use alpha_panda_topics::BrokerTopic;
use chrono::{Datelike, FixedOffset, NaiveDate, NaiveTime, Weekday};
use uuid::Uuid;

use crate::day_pnl::DayPnl;

/// IST: UTC+05:30.
pub(crate) fn ist() -> FixedOffset {
    // Truly unreachable: +05:30 is within the ±24 h `east_opt` accepts.
    FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap_or_else(|| unreachable!("valid offset"))
}

/// The NSE trading day of an instant.
pub fn trading_day(t: Timestamp) -> NaiveDate {
    t.0.with_timezone(&ist()).date_naive()
}

/// Whether NSE's cash market is open: 09:15–15:30 IST on a weekday that is not a holiday.
pub fn market_open(t: Timestamp, holidays: &HashSet<NaiveDate>) -> bool {
    let local = t.0.with_timezone(&ist());
    let weekday = !matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
    let (open, close) = (
        NaiveTime::from_hms_opt(9, 15, 0).unwrap_or_default(),
        NaiveTime::from_hms_opt(15, 30, 0).unwrap_or_default(),
    );
    let time = local.time();
    weekday && !holidays.contains(&local.date_naive()) && time >= open && time <= close
}

/// The limits that apply to one strategy: the broker's, with the strategy's overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_position_per_instrument: u64,
    pub max_order_notional: Decimal,
    pub max_gross_exposure: Decimal,
    pub max_daily_loss: Decimal,
    pub max_orders_per_day: u32,
    pub max_orders_per_second: u32,
    pub price_band_pct: Decimal,
    pub kill_switch: bool,
    pub allowed_instruments: Vec<InstrumentToken>,
    pub market_hours: bool,
    pub holidays: HashSet<NaiveDate>,
}

impl Limits {
    pub fn for_strategy(r: &RiskSettings, strategy: &StrategyId) -> Self {
        let o = r.strategies.get(strategy).cloned().unwrap_or_default();
        Self {
            max_position_per_instrument: o
                .max_position_per_instrument
                .unwrap_or(r.max_position_per_instrument),
            max_order_notional: o.max_order_notional.unwrap_or(r.max_order_notional),
            max_gross_exposure: o.max_gross_exposure.unwrap_or(r.max_gross_exposure),
            max_daily_loss: o.max_daily_loss.unwrap_or(r.max_daily_loss),
            max_orders_per_day: o.max_orders_per_day.unwrap_or(r.max_orders_per_day),
            max_orders_per_second: o.max_orders_per_second.unwrap_or(r.max_orders_per_second),
            price_band_pct: o.price_band_pct.unwrap_or(r.price_band_pct),
            kill_switch: r.kill_switch || o.kill_switch,
            allowed_instruments: r.allowed_instruments.clone(),
            market_hours: r.market_hours,
            // Holidays are validated as YYYY-MM-DD when settings load.
            holidays: r
                .holidays
                .iter()
                .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .collect(),
        }
    }
}

/// What one broker's risk stage knows. It serializes whole (`save`, `restore`) for the
/// stage's checkpoint.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RiskBook {
    /// Net position per (strategy, instrument): fills plus validated-but-unfilled orders.
    #[serde(with = "crate::pairs")]
    positions: crate::FastMap<(StrategyId, InstrumentToken), i64>,
    last_price: crate::FastMap<InstrumentToken, Decimal>,
    #[serde(with = "crate::pairs")]
    orders_per_day: crate::FastMap<(StrategyId, NaiveDate), u32>,
    /// Event times of recently validated orders, for the per-second rate.
    recent: VecDeque<Timestamp>,
    /// Each strategy's PnL per trading day, from the broker's fills and the marks seen.
    pnl: DayPnl,
    /// Validated orders not yet filled or failed, by the validated signal's event id (the
    /// causation id of the order's events): their strategy, instrument and signed quantity.
    open: crate::FastMap<Uuid, (StrategyId, InstrumentToken, i64)>,
    /// Outcomes that came before their order's validation (records of different partitions
    /// are replayed in any order): `true` if the order failed.
    settled_early: crate::FastMap<Uuid, bool>,
}

/// The verdict on a signal: every rule and whether it passed, and the reasons of failures.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub checks: BTreeMap<String, bool>,
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// What the risk stage emits for one signal: `signals.validated` or `signals.rejected`, as
/// the signal's child.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskOutput {
    pub topic: BrokerTopic,
    pub envelope: EventEnvelope,
}

impl RiskOutput {
    pub fn passed(&self) -> bool {
        self.topic == BrokerTopic::SignalsValidated
    }
}

impl RiskBook {
    /// The book as JSON, for a checkpoint.
    pub fn save(&self) -> serde_json::Value {
        // Maps with string or integer keys (tuple-keyed ones as pairs), decimals, integers
        // and timestamps always serialize.
        serde_json::to_value(self).unwrap_or_else(|e| unreachable!("a risk book serializes: {e}"))
    }

    /// A book from what [`save`](Self::save) made.
    pub fn restore(saved: serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(saved).map_err(|e| format!("the risk book does not read: {e}"))
    }

    /// Turns on saving in parts: from now on the day PnL's fills and marks go to chunks
    /// that a checkpoint writes once (`changed_parts`), not with the rest of the book
    /// (`save`). What the book holds already is logged first.
    pub fn log_parts(&mut self) {
        self.pnl.log_chunks();
    }

    /// The parts of the book that changed since the last call (name and JSON; `None`: the
    /// part is gone).
    pub fn changed_parts(&mut self) -> Vec<(String, Option<String>)> {
        self.pnl.changed_chunks()
    }

    /// Takes back the parts of a checkpoint, into a book restored from its `save`.
    pub fn restore_parts(&mut self, parts: &BTreeMap<String, String>) -> Result<(), String> {
        if let Some(name) = parts.keys().find(|n| !DayPnl::is_chunk(n)) {
            return Err(format!(
                "the risk checkpoint has a part {name:?} that is not a day-PnL chunk"
            ));
        }
        self.pnl
            .restore_chunks(parts.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// Handles a `trading_signal` (`signal_env`, whose payload is `signal`) on `broker`:
    /// notes its price, evaluates every rule under `state`, reserves the order if it passes,
    /// and returns the validated or rejected signal as the signal's child (stage `risk`,
    /// ordinal 0, the signal's key and event time).
    pub fn on_signal(
        &mut self,
        signal_env: &EventEnvelope,
        signal: &TradingSignal,
        broker: &BrokerName,
        limits: &Limits,
        state: TradingState,
    ) -> RiskOutput {
        self.decide(
            signal_env.lineage(),
            signal_env.key.clone(),
            std::borrow::Cow::Borrowed(signal),
            broker,
            limits,
            state,
        )
    }

    /// As [`on_signal`](Self::on_signal), for a driver that owns the signal's envelope:
    /// the signal moves into the validated or rejected signal rather than being copied.
    /// `None` when the envelope's payload is not a `trading_signal`.
    pub fn on_signal_owned(
        &mut self,
        signal_env: EventEnvelope,
        broker: &BrokerName,
        limits: &Limits,
        state: TradingState,
    ) -> Option<RiskOutput> {
        let parent = signal_env.lineage();
        let EventEnvelope { key, data, .. } = signal_env;
        let EventData::TradingSignal(signal) = data else {
            return None;
        };
        Some(self.decide(
            parent,
            key,
            std::borrow::Cow::Owned(signal),
            broker,
            limits,
            state,
        ))
    }

    fn decide(
        &mut self,
        parent: Lineage,
        key: String,
        signal: std::borrow::Cow<'_, TradingSignal>,
        broker: &BrokerName,
        limits: &Limits,
        state: TradingState,
    ) -> RiskOutput {
        self.seen(signal.timestamp);
        self.on_price(signal.instrument_token, signal.price.get());
        if signal.order_type == OrderType::Market {
            // A MARKET signal's price is its tick's: a mark for the day PnL.
            self.pnl.mark(
                signal.instrument_token,
                signal.timestamp,
                parent.id,
                signal.price.get(),
            );
        }
        let verdict = self.evaluate_in(&signal, limits, state);
        let timestamp = signal.timestamp;
        let (topic, data) = if verdict.passed() {
            let (quantity, price) = (signal.quantity, signal.price);
            (
                BrokerTopic::SignalsValidated,
                EventData::ValidatedSignal(ValidatedSignal {
                    original_signal: signal.into_owned(),
                    validated_quantity: quantity,
                    validated_price: price,
                    risk_checks: verdict.checks,
                    timestamp,
                }),
            )
        } else {
            (
                BrokerTopic::SignalsRejected,
                EventData::RejectedSignal(RejectedSignal {
                    original_signal: signal.into_owned(),
                    rejection_reason: verdict.reasons.join("; "),
                    risk_checks: verdict.checks,
                    timestamp,
                }),
            )
        };
        let envelope = parent.child(
            EventBroker::Broker(broker.clone()),
            "risk",
            0,
            key,
            timestamp,
            data,
        );
        if let EventData::ValidatedSignal(v) = &envelope.data {
            self.reserve(&v.original_signal, envelope.id);
        }
        RiskOutput { topic, envelope }
    }

    /// Event time `t` was seen: what only days before the day before `t`'s needed is
    /// forgotten (the day-PnL ledger's fills and marks, the orders per day), so the book
    /// keeps about two days, not every day since the stage started. A record more than a
    /// day late in event time is then not counted in the day PnL.
    fn seen(&mut self, t: Timestamp) {
        let Some(keep_from) = trading_day(t).pred_opt() else {
            return;
        };
        if self.pnl.forget_before(keep_from) {
            self.orders_per_day.retain(|(_, day), _| *day >= keep_from);
        }
    }

    pub fn on_price(&mut self, token: InstrumentToken, price: Decimal) {
        self.last_price.insert(token, price);
    }

    /// `strategy`'s PnL on the trading day of `t`, as of `t` (see [`DayPnl`]); `None` when
    /// a figure is beyond `Decimal`'s range.
    pub fn day_pnl(&self, strategy: &StrategyId, t: Timestamp) -> Option<Decimal> {
        self.pnl.as_of(strategy, t)
    }

    fn position(&self, s: &StrategyId, t: InstrumentToken) -> i64 {
        self.positions.get(&(s.clone(), t)).copied().unwrap_or(0)
    }

    /// Evaluates every rule; changes nothing.
    pub fn evaluate(&self, signal: &TradingSignal, limits: &Limits) -> Verdict {
        let mut checks = BTreeMap::new();
        let mut reasons = Vec::new();
        // The reason is only written for a rule that fails.
        let mut rule = |name: &str, ok: bool, why: &dyn Fn() -> String| {
            checks.insert(name.to_owned(), ok);
            if !ok {
                reasons.push(format!("{name}: {}", why()));
            }
        };
        let t = signal.timestamp;
        let qty = signal.quantity.get();
        let price = signal.price.get();
        // Figures from a signal are counted with checked arithmetic: one beyond `Decimal`'s
        // range (`None`) fails the rule that reads it.
        let notional = price.checked_mul(Decimal::from(qty));
        let token = signal.instrument_token;
        let uncountable = || format!("{qty} at {price} is beyond what can be counted");

        rule("kill_switch", !limits.kill_switch, &|| {
            "trading is switched off".into()
        });
        rule(
            "allowed_instrument",
            limits.allowed_instruments.is_empty() || limits.allowed_instruments.contains(&token),
            &|| format!("{token} is not in allowed_instruments"),
        );
        rule(
            "market_hours",
            !limits.market_hours || market_open(t, &limits.holidays),
            &|| format!("NSE is closed at {t}"),
        );
        let band_ok = match self.last_price.get(&token) {
            Some(last) if !last.is_zero() => (price - last)
                .abs()
                .checked_div(*last)
                .and_then(|r| r.checked_mul(Decimal::ONE_HUNDRED))
                .is_some_and(|pct| pct <= limits.price_band_pct),
            _ => true,
        };
        rule("price_band", band_ok, &|| {
            format!(
                "{price} is more than {}% from the last tick",
                limits.price_band_pct
            )
        });
        rule(
            "max_order_notional",
            notional.is_some_and(|n| n <= limits.max_order_notional),
            &|| match notional {
                Some(n) => format!("{n} exceeds {}", limits.max_order_notional),
                None => uncountable(),
            },
        );
        let after = i128::from(self.position(&signal.strategy_id, token))
            + i128::from(signal.signal_type.sign()) * i128::from(qty);
        rule(
            "max_position_per_instrument",
            after.unsigned_abs() <= u128::from(limits.max_position_per_instrument),
            &|| {
                format!(
                    "position would be {after}, limit {}",
                    limits.max_position_per_instrument
                )
            },
        );
        let this = Decimal::try_from_i128_with_scale(after, 0)
            .ok()
            .and_then(|q| q.abs().checked_mul(price));
        let gross = this.and_then(|this| {
            self.positions
                .iter()
                .filter(|((s, t), _)| !(s == &signal.strategy_id && *t == token))
                .try_fold(this, |sum, ((_, t), q)| {
                    let mark = self.last_price.get(t).copied().unwrap_or(price);
                    sum.checked_add(Decimal::from(q.unsigned_abs()).checked_mul(mark)?)
                })
        });
        rule(
            "max_gross_exposure",
            gross.is_some_and(|g| g <= limits.max_gross_exposure),
            &|| match gross {
                Some(g) => format!(
                    "gross exposure would be {g}, limit {}",
                    limits.max_gross_exposure
                ),
                None => format!("gross exposure with {}", uncountable()),
            },
        );
        let day = trading_day(t);
        let pnl = self.pnl.as_of(&signal.strategy_id, t);
        rule(
            "max_daily_loss",
            pnl.is_some_and(|p| p >= -limits.max_daily_loss),
            &|| match pnl {
                Some(p) => format!(
                    "{}'s PnL on {day} is {p}, beyond the loss limit {}",
                    signal.strategy_id, limits.max_daily_loss
                ),
                None => format!(
                    "{}'s PnL on {day} is beyond what can be counted",
                    signal.strategy_id
                ),
            },
        );
        let today = self
            .orders_per_day
            .get(&(signal.strategy_id.clone(), day))
            .copied()
            .unwrap_or(0);
        rule(
            "max_orders_per_day",
            today < limits.max_orders_per_day,
            &|| {
                format!(
                    "{today} orders already today, limit {}",
                    limits.max_orders_per_day
                )
            },
        );
        let window_start = t.0 - chrono::Duration::seconds(1);
        let in_window = self
            .recent
            .iter()
            .filter(|r| r.0 > window_start && r.0 <= t.0)
            .count();
        rule(
            "max_orders_per_second",
            in_window < limits.max_orders_per_second as usize,
            &|| {
                format!(
                    "{in_window} orders in the last second, limit {}",
                    limits.max_orders_per_second
                )
            },
        );
        Verdict { checks, reasons }
    }

    /// Whether a signal only reduces the strategy's (reserved) position in its instrument.
    pub fn reduces(&self, signal: &TradingSignal) -> bool {
        let held = self.position(&signal.strategy_id, signal.instrument_token);
        let qty = signal.quantity.get() as i64;
        held != 0 && signal.signal_type.sign() * held < 0 && qty <= held.abs()
    }

    /// Every rule of [`evaluate`](Self::evaluate), and the trading state the strategy
    /// trades under on this broker: HALTED refuses everything, REDUCING all but orders that
    /// reduce a position.
    pub fn evaluate_in(
        &self,
        signal: &TradingSignal,
        limits: &Limits,
        state: TradingState,
    ) -> Verdict {
        let mut v = self.evaluate(signal, limits);
        let (ok, why) = match state {
            TradingState::Active => (true, String::new()),
            TradingState::Halted => (false, "trading is HALTED".to_owned()),
            TradingState::Reducing => (
                self.reduces(signal),
                format!(
                    "trading is REDUCING and this order does not reduce the position of {}",
                    self.position(&signal.strategy_id, signal.instrument_token)
                ),
            ),
        };
        v.checks.insert("trading_state".to_owned(), ok);
        if !ok {
            v.reasons.push(format!("trading_state: {why}"));
        }
        v
    }

    /// Records a validated order (`order`: the validated signal's event id): its position is
    /// reserved until it fails, it counts for today and for the rate window.
    pub fn reserve(&mut self, signal: &TradingSignal, order: Uuid) {
        let key = (signal.strategy_id.clone(), signal.instrument_token);
        // Positions saturate at i64's range: a validated position is within
        // max_position_per_instrument, which only an absurd setting puts beyond it.
        let qty = i64::try_from(signal.quantity.get()).unwrap_or(i64::MAX);
        let signed = signal.signal_type.sign().saturating_mul(qty);
        match self.settled_early.remove(&order) {
            Some(true) => {}
            Some(false) => {
                let p = self.positions.entry(key).or_insert(0);
                *p = p.saturating_add(signed);
            }
            None => {
                let p = self.positions.entry(key.clone()).or_insert(0);
                *p = p.saturating_add(signed);
                self.open.insert(order, (key.0, key.1, signed));
            }
        }
        *self
            .orders_per_day
            .entry((signal.strategy_id.clone(), trading_day(signal.timestamp)))
            .or_insert(0) += 1;
        self.recent.push_back(signal.timestamp);
        let horizon = signal.timestamp.0 - chrono::Duration::seconds(1);
        while self.recent.front().is_some_and(|r| r.0 <= horizon) {
            self.recent.pop_front();
        }
    }

    /// The broker filled a validated order (`order`: the validated signal's event id; `id`:
    /// the fill's event id): its reservation is now a position (no change), and the fill
    /// counts in its strategy's day PnL.
    pub fn on_filled(&mut self, order: Uuid, id: Uuid, fill: &OrderFilled) {
        self.seen(fill.timestamp);
        self.pnl.fill(id, fill);
        if self.open.remove(&order).is_none() {
            self.settled_early.insert(order, false);
        }
    }

    /// The broker failed a validated order (refused, cancelled, expired): its reservation is
    /// released.
    pub fn on_failed(&mut self, order: Uuid) {
        match self.open.remove(&order) {
            Some((s, t, signed)) => {
                let p = self.positions.entry((s, t)).or_insert(0);
                *p = p.saturating_sub(signed);
            }
            None => {
                self.settled_early.insert(order, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alpha_panda_core::{OrderType, Price, Product, Quantity, Side, Validity};
    use proptest::prelude::*;

    #[test]
    fn trading_states_refuse_what_they_forbid() {
        let limits = limits();
        let mut book = RiskBook::default();
        let buy = sig(Side::Buy, 10, 100, OPEN);
        book.on_price(buy.instrument_token, Decimal::from(100));
        let active = book.evaluate_in(&buy, &limits, TradingState::Active);
        assert_eq!(active.checks.get("trading_state"), Some(&true));
        let halted = book.evaluate_in(&buy, &limits, TradingState::Halted);
        assert!(!halted.passed());
        assert!(halted.reasons.iter().any(|r| r.contains("HALTED")));
        // REDUCING: nothing held, so a BUY opens a position: refused.
        assert!(
            !book
                .evaluate_in(&buy, &limits, TradingState::Reducing)
                .checks["trading_state"]
        );
        book.reserve(&buy, Uuid::from_u128(1));
        let sell = sig(Side::Sell, 10, 100, "2024-01-15T04:00:01Z");
        assert!(
            book.evaluate_in(&sell, &limits, TradingState::Reducing)
                .checks["trading_state"]
        );
        let oversell = sig(Side::Sell, 11, 100, "2024-01-15T04:00:01Z");
        assert!(
            !book
                .evaluate_in(&oversell, &limits, TradingState::Reducing)
                .checks["trading_state"]
        );
        let more = sig(Side::Buy, 1, 100, "2024-01-15T04:00:01Z");
        assert!(
            !book
                .evaluate_in(&more, &limits, TradingState::Reducing)
                .checks["trading_state"]
        );
    }

    fn sig(side: Side, qty: u64, price: i64, ts: &str) -> TradingSignal {
        TradingSignal {
            strategy_id: StrategyId::new("m").unwrap(),
            instrument_token: InstrumentToken(1),
            signal_type: side,
            quantity: Quantity::new(qty).unwrap(),
            price: Price::new(Decimal::from(price)).unwrap(),
            timestamp: ts.parse().unwrap(),
            confidence: None,
            metadata: BTreeMap::new(),
            order_type: OrderType::Market,
            product: Product::Mis,
            validity: Validity::Day,
            trigger_price: None,
        }
    }

    fn fill(strategy: &str, side: Side, qty: u64, price: i64, ts: &str) -> OrderFilled {
        OrderFilled {
            order_id: alpha_panda_core::OrderId::new("o").unwrap(),
            instrument_token: InstrumentToken(1),
            side,
            quantity: Quantity::new(qty).unwrap(),
            fill_price: Price::new(Decimal::from(price)).unwrap(),
            fees: Decimal::ZERO,
            strategy_id: StrategyId::new(strategy).unwrap(),
            account: alpha_panda_core::AccountId::new("acc").unwrap(),
            execution_mode: alpha_panda_core::ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: ts.parse().unwrap(),
            trade_id: None,
        }
    }

    fn signal_env(s: TradingSignal) -> EventEnvelope {
        EventEnvelope::root(
            EventBroker::Shared,
            "strategy",
            "m|1".to_owned(),
            s.timestamp,
            EventData::TradingSignal(s),
        )
    }

    fn on(book: &mut RiskBook, s: TradingSignal, l: &Limits) -> RiskOutput {
        book.on_signal(
            &signal_env(s.clone()),
            &s,
            &BrokerName::paper(),
            l,
            TradingState::Active,
        )
    }

    /// A book that trades every weekday for 400 days keeps about two days of fills, marks and
    /// order counts: its checkpoint does not grow with the days, and the day PnL and the
    /// daily order cap still decide as on the first day.
    #[test]
    fn a_book_keeps_about_two_days_whatever_the_days_it_has_traded() {
        let mut l = limits();
        l.max_orders_per_day = 120;
        l.max_gross_exposure = Decimal::from(1_000_000_000);
        let mut book = RiskBook::default();
        book.log_parts();
        let mut parts: BTreeMap<String, String> = BTreeMap::new();
        let monday = chrono::NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        let mut sizes = Vec::new();
        let mut n = 0u128;
        for day in 0..400 {
            let date = monday + chrono::Duration::days(day);
            if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
                continue;
            }
            for i in 0..60 {
                let ts = format!("{date}T04:{i:02}:00Z");
                let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
                let out = on(&mut book, sig(side, 10, 100 + i as i64, &ts), &l);
                assert!(
                    out.passed(),
                    "day {day}, order {i}: {:?}",
                    out.envelope.data
                );
                n += 1;
                book.on_filled(
                    out.envelope.id,
                    Uuid::from_u128(n),
                    &fill("m", side, 10, 100 + i as i64, &ts),
                );
            }
            for (name, json) in book.changed_parts() {
                match json {
                    Some(json) => parts.insert(name, json),
                    None => parts.remove(&name),
                };
            }
            sizes.push(book.save().to_string().len());
            // The day-PnL chunks kept: about two days of fills (60 a day), in chunks of 256
            // that go once all their records are forgotten (a week fills one).
            assert!(parts.len() <= 2, "day {day}: {} chunks", parts.len());
            assert!(
                book.orders_per_day.len() <= 2,
                "day {day}: {:?}",
                book.orders_per_day
            );
            assert!(
                book.pnl.records() <= 2 * 60 * 2 + 1,
                "day {day}: {}",
                book.pnl.records()
            );
        }
        let (third, last) = (sizes[2], sizes[sizes.len() - 1]);
        assert!(
            last <= third + third / 10,
            "the checkpoint grew from {third} to {last} bytes over the days"
        );
        // Flat at the close each day (30 buys, 30 sells): the last day's PnL is its own
        // fills' cash: 30 × (sell − buy) × 10.
        let last = monday + chrono::Duration::days(399); // a Monday
        let t: Timestamp = format!("{last}T05:00:00Z").parse().unwrap();
        assert_eq!(
            book.day_pnl(&StrategyId::new("m").unwrap(), t),
            Some(Decimal::from(300))
        );
    }

    #[test]
    fn a_losing_strategys_next_signal_is_rejected_for_the_day_and_no_other_strategy_or_day_is() {
        let mut l = limits();
        l.max_daily_loss = Decimal::from(500);
        let mut book = RiskBook::default();
        // m buys 100 at 100 and it fills.
        let buy = on(&mut book, sig(Side::Buy, 100, 100, OPEN), &l);
        assert!(buy.passed());
        let bought = fill("m", Side::Buy, 100, 100, OPEN);
        book.on_filled(buy.envelope.id, Uuid::from_u128(1), &bought);
        // At 96 the position has lost 400: within the limit.
        let first = on(&mut book, sig(Side::Buy, 1, 96, "2024-01-15T04:01:00Z"), &l);
        assert!(first.passed(), "{:?}", first.envelope.data);
        book.on_failed(first.envelope.id);
        // At 94.99 it has lost 501: m's next signal is refused for the daily loss only.
        let mut lower = sig(Side::Sell, 1, 100, "2024-01-15T04:02:00Z");
        lower.price = Price::new(Decimal::new(9499, 2)).unwrap();
        let refused = on(&mut book, lower, &l);
        assert!(!refused.passed());
        let EventData::RejectedSignal(r) = &refused.envelope.data else {
            panic!("{:?}", refused.envelope.data)
        };
        assert_eq!(
            r.rejection_reason,
            "max_daily_loss: m's PnL on 2024-01-15 is -501.00, beyond the loss limit 500"
        );
        assert_eq!(r.risk_checks.values().filter(|ok| !**ok).count(), 1);
        // Another strategy trades on.
        let mut other = sig(Side::Buy, 1, 95, "2024-01-15T04:03:00Z");
        other.strategy_id = StrategyId::new("n").unwrap();
        assert!(book.evaluate(&other, &l).passed());
        // The next day starts at zero for m, its carried position marked from the close.
        let tomorrow = sig(Side::Buy, 1, 95, "2024-01-16T04:00:00Z");
        assert!(on(&mut book, tomorrow.clone(), &l).passed());
        assert_eq!(
            book.day_pnl(&StrategyId::new("m").unwrap(), tomorrow.timestamp),
            Some(Decimal::from(100) * (Decimal::from(95) - Decimal::new(9499, 2)))
        );
    }

    fn limits() -> Limits {
        Limits::for_strategy(&RiskSettings::default(), &StrategyId::new("m").unwrap())
    }

    // 2024-01-15 is a Monday; 04:00Z is 09:30 IST.
    const OPEN: &str = "2024-01-15T04:00:00Z";

    #[test]
    fn every_rule_is_reported_and_a_clean_signal_passes() {
        let v = RiskBook::default().evaluate(&sig(Side::Buy, 10, 100, OPEN), &limits());
        assert!(v.passed(), "{:?}", v.reasons);
        assert_eq!(v.checks.len(), 10);
        assert!(v.checks.values().all(|ok| *ok));
    }

    #[test]
    fn market_hours_follow_ist_weekdays_and_holidays() {
        let none = HashSet::new();
        assert!(
            market_open("2024-01-15T03:45:00Z".parse().unwrap(), &none),
            "09:15 IST opens"
        );
        assert!(!market_open("2024-01-15T03:44:59Z".parse().unwrap(), &none));
        assert!(
            market_open("2024-01-15T10:00:00Z".parse().unwrap(), &none),
            "15:30 IST"
        );
        assert!(!market_open("2024-01-15T10:00:01Z".parse().unwrap(), &none));
        assert!(
            !market_open("2024-01-13T05:00:00Z".parse().unwrap(), &none),
            "Saturday"
        );
        let holiday = HashSet::from([NaiveDate::from_ymd_opt(2024, 1, 26).unwrap()]);
        assert!(!market_open(
            "2024-01-26T05:00:00Z".parse().unwrap(),
            &holiday
        ));
        // 20:00Z on the 15th is already the 16th in India.
        assert_eq!(
            trading_day("2024-01-15T20:00:00Z".parse().unwrap()),
            NaiveDate::from_ymd_opt(2024, 1, 16).unwrap()
        );
        let mut l = limits();
        l.market_hours = true;
        let v = RiskBook::default().evaluate(&sig(Side::Buy, 1, 100, "2024-01-13T05:00:00Z"), &l);
        assert!(!v.checks["market_hours"]);
    }

    #[test]
    fn reserved_orders_count_towards_position_day_and_rate_limits() {
        let mut l = limits();
        l.max_position_per_instrument = 15;
        l.max_orders_per_second = 2;
        l.max_orders_per_day = 3;
        let mut book = RiskBook::default();
        let first = sig(Side::Buy, 10, 100, "2024-01-15T04:00:00.000Z");
        assert!(book.evaluate(&first, &l).passed());
        book.reserve(&first, Uuid::from_u128(2));
        // Not yet filled, but reserved: 10 + 10 > 15.
        let v = book.evaluate(&sig(Side::Buy, 10, 100, "2024-01-15T04:00:00.100Z"), &l);
        assert!(!v.checks["max_position_per_instrument"]);
        let small = sig(Side::Buy, 1, 100, "2024-01-15T04:00:00.200Z");
        book.reserve(&small, Uuid::from_u128(3));
        let v = book.evaluate(&sig(Side::Sell, 1, 100, "2024-01-15T04:00:00.300Z"), &l);
        assert!(!v.checks["max_orders_per_second"], "2 in the last second");
        let later = sig(Side::Sell, 1, 100, "2024-01-15T04:00:01.250Z");
        assert!(book.evaluate(&later, &l).checks["max_orders_per_second"]);
        book.reserve(&later, Uuid::from_u128(4));
        let v = book.evaluate(&sig(Side::Sell, 1, 100, OPEN), &l);
        assert!(!v.checks["max_orders_per_day"], "3 already today");
        let tomorrow = sig(Side::Sell, 1, 100, "2024-01-16T04:00:00Z");
        assert!(book.evaluate(&tomorrow, &l).checks["max_orders_per_day"]);
    }

    #[test]
    fn a_failed_order_gives_its_reservation_back_and_a_filled_one_keeps_it() {
        let mut l = limits();
        l.max_position_per_instrument = 15;
        let next = || sig(Side::Buy, 10, 100, "2024-01-15T04:00:01Z");
        let (filled, failed) = (Uuid::from_u128(7), Uuid::from_u128(8));
        let mut book = RiskBook::default();
        book.reserve(&sig(Side::Buy, 10, 100, OPEN), failed);
        assert!(!book.evaluate(&next(), &l).checks["max_position_per_instrument"]);
        book.on_failed(failed);
        assert!(
            book.evaluate(&next(), &l).passed(),
            "the failed order holds nothing"
        );
        book.reserve(&sig(Side::Buy, 10, 100, OPEN), filled);
        book.on_filled(
            filled,
            Uuid::from_u128(70),
            &fill("m", Side::Buy, 10, 100, OPEN),
        );
        assert!(
            !book.evaluate(&next(), &l).checks["max_position_per_instrument"],
            "a fill is a position"
        );
        // Replayed in another order (outcomes before their validation): the same book.
        let mut replayed = RiskBook::default();
        replayed.on_failed(failed);
        replayed.on_filled(
            filled,
            Uuid::from_u128(70),
            &fill("m", Side::Buy, 10, 100, OPEN),
        );
        replayed.reserve(&sig(Side::Buy, 10, 100, OPEN), failed);
        replayed.reserve(&sig(Side::Buy, 10, 100, OPEN), filled);
        assert_eq!(replayed.positions, book.positions);
        assert!(replayed.open.is_empty() && replayed.settled_early.is_empty());
    }

    #[test]
    fn notional_band_exposure_loss_and_switches() {
        let mut l = limits();
        l.max_order_notional = Decimal::from(1_000);
        l.max_gross_exposure = Decimal::from(5_000);
        l.price_band_pct = Decimal::from(5);
        l.allowed_instruments = vec![InstrumentToken(1)];
        let mut book = RiskBook::default();
        book.on_price(InstrumentToken(1), Decimal::from(100));
        assert!(!book.evaluate(&sig(Side::Buy, 11, 100, OPEN), &l).checks["max_order_notional"]);
        assert!(!book.evaluate(&sig(Side::Buy, 1, 106, OPEN), &l).checks["price_band"]);
        assert!(book.evaluate(&sig(Side::Buy, 1, 104, OPEN), &l).checks["price_band"]);
        for i in 0..5 {
            book.reserve(&sig(Side::Buy, 10, 100, OPEN), Uuid::from_u128(50 + i));
        }
        assert!(!book.evaluate(&sig(Side::Buy, 1, 100, OPEN), &l).checks["max_gross_exposure"]);
        assert!(
            book.evaluate(&sig(Side::Sell, 1, 100, OPEN), &l).checks["max_gross_exposure"],
            "reducing is fine"
        );
        // 1 000 bought at 160, marked at 100: 60 000 lost today (the default limit is 50 000).
        let bought = fill("m", Side::Buy, 1_000, 160, "2024-01-15T03:50:00Z");
        book.on_filled(Uuid::from_u128(60), Uuid::from_u128(61), &bought);
        book.on_signal(
            &signal_env(sig(Side::Sell, 1, 100, OPEN)),
            &sig(Side::Sell, 1, 100, OPEN),
            &BrokerName::paper(),
            &l,
            TradingState::Active,
        );
        assert!(!book.evaluate(&sig(Side::Sell, 1, 100, OPEN), &l).checks["max_daily_loss"]);
        l.kill_switch = true;
        let v = book.evaluate(&sig(Side::Sell, 1, 100, OPEN), &l);
        assert!(!v.passed());
        assert!(v.reasons.iter().any(|r| r.starts_with("kill_switch")));
        let mut other = sig(Side::Buy, 1, 100, OPEN);
        other.instrument_token = InstrumentToken(2);
        assert!(!book.evaluate(&other, &l).checks["allowed_instrument"]);
    }

    #[test]
    fn strategy_overrides_replace_only_what_they_set() {
        let mut r = RiskSettings::default();
        r.strategies.insert(
            StrategyId::new("m").unwrap(),
            alpha_panda_config::StrategyRiskOverride {
                max_order_notional: Some(Decimal::from(10)),
                kill_switch: false,
                ..Default::default()
            },
        );
        let l = Limits::for_strategy(&r, &StrategyId::new("m").unwrap());
        assert_eq!(l.max_order_notional, Decimal::from(10));
        assert_eq!(l.max_position_per_instrument, r.max_position_per_instrument);
    }

    proptest! {
        /// Signals with any price and quantity (prices over `Decimal`'s whole range,
        /// quantities up to `u64::MAX`), after fills and marks of any size: risk never
        /// panics, and a figure it cannot count fails its rule.
        #[test]
        fn signals_with_extreme_prices_and_quantities_never_panic_risk(
            signals in proptest::collection::vec(
                (
                    proptest::bool::ANY,
                    proptest::prop_oneof![1u64..1_000, proptest::strategy::Just(u64::MAX), 1u64..u64::MAX],
                    proptest::prop_oneof![
                        (1i64..10_000_000).prop_map(|p| Decimal::new(p, 2)),
                        proptest::strategy::Just(Decimal::MAX),
                        (proptest::num::u32::ANY, proptest::num::u32::ANY, proptest::num::u32::ANY, 0u32..=28)
                            .prop_map(|(lo, mid, hi, scale)| Decimal::from_parts(lo, mid, hi, false, scale)),
                    ],
                    proptest::bool::ANY,
                ),
                1..30,
            ),
            generous in proptest::bool::ANY,
        ) {
            let mut l = limits();
            if generous {
                l.max_position_per_instrument = u64::MAX;
                l.max_order_notional = Decimal::MAX;
                l.max_gross_exposure = Decimal::MAX;
                l.max_daily_loss = Decimal::MAX;
                l.price_band_pct = Decimal::MAX;
                l.max_orders_per_second = u32::MAX;
                l.max_orders_per_day = u32::MAX;
            }
            let mut book = RiskBook::default();
            for (i, (buy, qty, price, fills)) in signals.into_iter().enumerate() {
                let mut s = sig(if buy { Side::Buy } else { Side::Sell }, 1, 1, OPEN);
                s.quantity = Quantity::new(qty).unwrap();
                s.price = Price::new(price).unwrap();
                let out = on(&mut book, s.clone(), &l);
                if out.passed() && fills {
                    let mut f = fill("m", s.signal_type, 1, 1, OPEN);
                    f.quantity = s.quantity;
                    f.fill_price = s.price;
                    book.on_filled(out.envelope.id, Uuid::from_u128(i as u128), &f);
                }
                prop_assert!(out.passed() || matches!(out.envelope.data, EventData::RejectedSignal(_)));
            }
        }
    }

    proptest! {
        /// A book saved at any point (the risk stage's checkpoint) and restored decides
        /// every later signal as the book that went on: the same verdicts and envelopes.
        #[test]
        fn a_restored_book_decides_as_the_book_that_went_on(
            steps in proptest::collection::vec(
                (proptest::bool::ANY, 1u64..40, 9_000i64..11_000, 0u8..3, 0i64..7_200),
                1..60,
            ),
            cut in 0usize..60,
        ) {
            let mut l = limits();
            l.max_position_per_instrument = 100;
            l.max_daily_loss = Decimal::from(500);
            let base = Timestamp::from_unix_millis(1_705_290_300_000).unwrap();
            let mut went_on = RiskBook::default();
            went_on.log_parts();
            let mut restored: Option<RiskBook> = None;
            for (i, (buy, qty, price, outcome, secs)) in steps.into_iter().enumerate() {
                if i == cut.min(59) {
                    let saved = serde_json::to_string(&went_on.save()).unwrap();
                    let parts: BTreeMap<String, String> = went_on
                        .changed_parts()
                        .into_iter()
                        .filter_map(|(n, v)| Some((n, v?)))
                        .collect();
                    let mut book = RiskBook::restore(serde_json::from_str(&saved).unwrap()).unwrap();
                    book.log_parts();
                    book.restore_parts(&parts).unwrap();
                    restored = Some(book);
                }
                let mut s = sig(if buy { Side::Buy } else { Side::Sell }, qty, 1, OPEN);
                s.price = Price::new(Decimal::new(price, 1)).unwrap();
                s.timestamp = Timestamp(base.0 + chrono::Duration::seconds(secs));
                let books: Vec<&mut RiskBook> = std::iter::once(&mut went_on).chain(restored.as_mut()).collect();
                let env = signal_env(s.clone());
                let mut outs = Vec::new();
                for book in books {
                    let out = book.on_signal(&env, &s, &BrokerName::paper(), &l, TradingState::Active);
                    if out.passed() {
                        let order = out.envelope.id;
                        match outcome {
                            0 => {
                                let mut f = fill("m", s.signal_type, 1, 1, OPEN);
                                f.quantity = s.quantity;
                                f.fill_price = s.price;
                                f.timestamp = s.timestamp;
                                book.on_filled(order, Uuid::from_u128(1_000 + i as u128), &f);
                            }
                            1 => book.on_failed(order),
                            _ => {}
                        }
                    }
                    outs.push(out.envelope.encode());
                }
                if let [a, b] = outs.as_slice() {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }
}
