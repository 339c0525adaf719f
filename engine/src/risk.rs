//! Risk rules for one broker. Pure: a signal, the limits, and what the stage has seen (its
//! own fills and what it already validated) in; every rule's verdict out.
//!
//! Positions count what was validated (reserved) as well as what filled, so a decision does
//! not depend on when fills arrive relative to signals. Counters and the rate window use the
//! signal's event time, never the wall clock. The trading day is the NSE day (Asia/Kolkata,
//! UTC+05:30, no DST).

use std::collections::{BTreeMap, HashSet, VecDeque};

use alpha_panda_config::RiskSettings;
use alpha_panda_core::events::{RejectedSignal, TradingSignal, ValidatedSignal};
use alpha_panda_core::{
    BrokerName, Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, StrategyId,
    Timestamp, TradingState,
};
use alpha_panda_topics::BrokerTopic;
use chrono::{Datelike, FixedOffset, NaiveDate, NaiveTime, Weekday};
use uuid::Uuid;

/// IST: UTC+05:30.
fn ist() -> FixedOffset {
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

/// What one broker's risk stage knows.
#[derive(Debug, Clone, Default)]
pub struct RiskBook {
    /// Net position per (strategy, instrument): fills plus validated-but-unfilled orders.
    positions: crate::FastMap<(StrategyId, InstrumentToken), i64>,
    last_price: crate::FastMap<InstrumentToken, Decimal>,
    orders_per_day: crate::FastMap<(StrategyId, NaiveDate), u32>,
    /// Event times of recently validated orders, for the per-second rate.
    recent: VecDeque<Timestamp>,
    /// Realized + unrealized PnL of the current trading day, as reported by the portfolio.
    day_pnl: crate::FastMap<NaiveDate, Decimal>,
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
        self.on_price(signal.instrument_token, signal.price.get());
        let verdict = self.evaluate_in(signal, limits, state);
        let (topic, data) = if verdict.passed() {
            (
                BrokerTopic::SignalsValidated,
                EventData::ValidatedSignal(ValidatedSignal {
                    original_signal: signal.clone(),
                    validated_quantity: signal.quantity,
                    validated_price: signal.price,
                    risk_checks: verdict.checks,
                    timestamp: signal.timestamp,
                }),
            )
        } else {
            (
                BrokerTopic::SignalsRejected,
                EventData::RejectedSignal(RejectedSignal {
                    original_signal: signal.clone(),
                    rejection_reason: verdict.reasons.join("; "),
                    risk_checks: verdict.checks,
                    timestamp: signal.timestamp,
                }),
            )
        };
        let envelope = signal_env.child(
            EventBroker::Broker(broker.clone()),
            "risk",
            0,
            signal_env.key.clone(),
            signal.timestamp,
            data,
        );
        if topic == BrokerTopic::SignalsValidated {
            self.reserve(signal, envelope.id);
        }
        RiskOutput { topic, envelope }
    }

    pub fn on_price(&mut self, token: InstrumentToken, price: Decimal) {
        self.last_price.insert(token, price);
    }

    pub fn set_day_pnl(&mut self, day: NaiveDate, pnl: Decimal) {
        self.day_pnl.insert(day, pnl);
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
        let notional = price * Decimal::from(qty);
        let token = signal.instrument_token;

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
            Some(last) if !last.is_zero() => {
                ((price - last).abs() / last) * Decimal::ONE_HUNDRED <= limits.price_band_pct
            }
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
            notional <= limits.max_order_notional,
            &|| format!("{notional} exceeds {}", limits.max_order_notional),
        );
        let after =
            self.position(&signal.strategy_id, token) + signal.signal_type.sign() * qty as i64;
        rule(
            "max_position_per_instrument",
            after.unsigned_abs() <= limits.max_position_per_instrument,
            &|| {
                format!(
                    "position would be {after}, limit {}",
                    limits.max_position_per_instrument
                )
            },
        );
        let gross: Decimal = self
            .positions
            .iter()
            .filter(|((s, t), _)| !(s == &signal.strategy_id && *t == token))
            .map(|((_, t), q)| {
                Decimal::from(q.unsigned_abs()) * self.last_price.get(t).copied().unwrap_or(price)
            })
            .sum::<Decimal>()
            + Decimal::from(after.unsigned_abs()) * price;
        rule(
            "max_gross_exposure",
            gross <= limits.max_gross_exposure,
            &|| {
                format!(
                    "gross exposure would be {gross}, limit {}",
                    limits.max_gross_exposure
                )
            },
        );
        let day = trading_day(t);
        let pnl = self.day_pnl.get(&day).copied().unwrap_or_default();
        rule("max_daily_loss", pnl >= -limits.max_daily_loss, &|| {
            format!(
                "today's PnL {pnl} is beyond the loss limit {}",
                limits.max_daily_loss
            )
        });
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
        let signed = signal.signal_type.sign() * signal.quantity.get() as i64;
        match self.settled_early.remove(&order) {
            Some(true) => {}
            Some(false) => *self.positions.entry(key).or_insert(0) += signed,
            None => {
                *self.positions.entry(key.clone()).or_insert(0) += signed;
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

    /// The broker filled a validated order: its reservation is now a position (no change).
    pub fn on_filled(&mut self, order: Uuid) {
        if self.open.remove(&order).is_none() {
            self.settled_early.insert(order, false);
        }
    }

    /// The broker failed a validated order (refused, cancelled, expired): its reservation is
    /// released.
    pub fn on_failed(&mut self, order: Uuid) {
        match self.open.remove(&order) {
            Some((s, t, signed)) => *self.positions.entry((s, t)).or_insert(0) -= signed,
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
        book.on_filled(filled);
        assert!(
            !book.evaluate(&next(), &l).checks["max_position_per_instrument"],
            "a fill is a position"
        );
        // Replayed in another order (outcomes before their validation): the same book.
        let mut replayed = RiskBook::default();
        replayed.on_failed(failed);
        replayed.on_filled(filled);
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
        book.set_day_pnl(
            NaiveDate::from_ymd_opt(2024, 1, 15).unwrap(),
            Decimal::from(-60_000),
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
}
