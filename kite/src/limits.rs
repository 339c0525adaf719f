//! Rate limits and order caps, enforced before a request leaves the process.
//!
//! Contract: every call belongs to an [`EndpointClass`] with Kite's documented rate
//! (orders 10/s, quote 1/s, historical 3/s, others 10/s). Each class is a sliding-window
//! limit: never more than `n` requests in any window of one second — stricter than a token
//! bucket of the same rate, which would allow a burst of `2n` across a window boundary.
//! [`OrderCaps`] refuses an order placement once the configured orders per minute (sliding)
//! or per IST trading day are used, before Kite would. The logic is pure: time is passed in,
//! so it is tested without sleeping; [`RateLimiter`] is the shared async shell.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// Which of Kite's rate limits a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointClass {
    /// Place, modify, cancel.
    Order,
    /// `/quote`, `/quote/ohlc`, `/quote/ltp`.
    Quote,
    /// `/instruments/historical/…`.
    Historical,
    /// Everything else.
    Other,
}

impl EndpointClass {
    pub const ALL: [EndpointClass; 4] = [Self::Order, Self::Quote, Self::Historical, Self::Other];

    /// Requests per second Kite documents for the class.
    pub fn per_second(self) -> usize {
        match self {
            Self::Order => 10,
            Self::Quote => 1,
            Self::Historical => 3,
            Self::Other => 10,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Order => 0,
            Self::Quote => 1,
            Self::Historical => 2,
            Self::Other => 3,
        }
    }
}

/// At most `max` events in any `window`.
#[derive(Debug, Clone)]
pub struct WindowLimit {
    max: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl WindowLimit {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            times: VecDeque::with_capacity(max),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.times.front() {
            if now.saturating_duration_since(*first) >= self.window {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }

    /// How long until one more event fits; zero when it fits now.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.expire(now);
        if self.times.len() < self.max {
            return Duration::ZERO;
        }
        match self.times.front() {
            Some(first) => self
                .window
                .saturating_sub(now.saturating_duration_since(*first)),
            None => Duration::ZERO,
        }
    }

    /// Takes a place now, or says how long to wait.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let w = self.wait(now);
        if w.is_zero() && self.max > 0 {
            self.times.push_back(now);
            Ok(())
        } else if self.max == 0 {
            Err(self.window)
        } else {
            Err(w)
        }
    }
}

/// Why an order was refused locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    #[error("{0} orders were placed in the last minute (orders_per_minute)")]
    PerMinute(usize),
    #[error("{0} orders were placed today (orders_per_day)")]
    PerDay(usize),
}

/// The orders-per-minute and per-day caps.
#[derive(Debug, Clone)]
pub struct OrderCaps {
    minute: WindowLimit,
    per_minute: usize,
    per_day: usize,
    day: Option<NaiveDate>,
    today: usize,
}

/// India Standard Time, UTC+05:30.
pub fn ist() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).unwrap_or_else(|| unreachable!("a valid offset"))
}

/// The IST calendar date of a UTC time.
pub fn ist_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&ist()).date_naive()
}

impl OrderCaps {
    pub fn new(per_minute: usize, per_day: usize) -> Self {
        Self {
            minute: WindowLimit::new(per_minute, Duration::from_secs(60)),
            per_minute,
            per_day,
            day: None,
            today: 0,
        }
    }

    /// Counts one placement at `now` (wall time `wall` decides the IST day), or refuses it.
    pub fn try_place(&mut self, now: Instant, wall: DateTime<Utc>) -> Result<(), CapExceeded> {
        let day = ist_date(wall);
        if self.day != Some(day) {
            self.day = Some(day);
            self.today = 0;
        }
        if self.today >= self.per_day {
            return Err(CapExceeded::PerDay(self.today));
        }
        self.minute
            .try_take(now)
            .map_err(|_| CapExceeded::PerMinute(self.per_minute))?;
        self.today += 1;
        Ok(())
    }
}

/// The per-class limits and the order caps of one Kite account, shared by its callers.
#[derive(Debug)]
pub struct RateLimiter {
    classes: Mutex<[WindowLimit; 4]>,
    caps: Mutex<OrderCaps>,
}

impl RateLimiter {
    pub fn new(orders_per_minute: usize, orders_per_day: usize) -> Self {
        let w = |c: EndpointClass| WindowLimit::new(c.per_second(), Duration::from_secs(1));
        Self {
            classes: Mutex::new(EndpointClass::ALL.map(w)),
            caps: Mutex::new(OrderCaps::new(orders_per_minute, orders_per_day)),
        }
    }

    /// Counts an order placement against the caps (refuses without waiting).
    pub fn place_order(&self) -> Result<(), CapExceeded> {
        let mut caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        caps.try_place(Instant::now(), Utc::now())
    }

    /// Waits until a request of `class` may go.
    pub async fn acquire(&self, class: EndpointClass) {
        loop {
            let wait = {
                let mut c = self.classes.lock().unwrap_or_else(|p| p.into_inner());
                match c[class.index()].try_take(Instant::now()) {
                    Ok(()) => return,
                    Err(w) => w,
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_documented_rates_per_endpoint_class() {
        assert_eq!(EndpointClass::Order.per_second(), 10);
        assert_eq!(EndpointClass::Quote.per_second(), 1);
        assert_eq!(EndpointClass::Historical.per_second(), 3);
        assert_eq!(EndpointClass::Other.per_second(), 10);
    }

    #[test]
    fn an_eleventh_order_in_one_second_waits_until_the_first_leaves_the_window() {
        let t0 = Instant::now();
        let mut w = WindowLimit::new(10, Duration::from_secs(1));
        for i in 0..10 {
            assert_eq!(w.try_take(t0 + Duration::from_millis(i * 10)), Ok(()));
        }
        assert_eq!(
            w.try_take(t0 + Duration::from_millis(500)),
            Err(Duration::from_millis(500))
        );
        assert_eq!(w.try_take(t0 + Duration::from_millis(1000)), Ok(()));
    }

    #[test]
    fn the_minute_cap_refuses_and_the_day_cap_resets_at_ist_midnight() {
        let t0 = Instant::now();
        // 2026-01-05 18:29:00 UTC is 23:59 IST; 18:31 UTC is 00:01 IST the next day.
        let before = DateTime::parse_from_rfc3339("2026-01-05T18:29:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{e}"));
        let after = before + chrono::Duration::minutes(2);
        let mut caps = OrderCaps::new(2, 3);
        assert_eq!(caps.try_place(t0, before), Ok(()));
        assert_eq!(caps.try_place(t0, before), Ok(()));
        assert_eq!(caps.try_place(t0, before), Err(CapExceeded::PerMinute(2)));
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(caps.try_place(t1, before), Ok(()));
        assert_eq!(
            caps.try_place(t1 + Duration::from_secs(61), before),
            Err(CapExceeded::PerDay(3))
        );
        assert_eq!(caps.try_place(t1 + Duration::from_secs(122), after), Ok(()));
    }

    proptest! {
        /// Whatever the arrival times, no window of one second ever holds more than `max`
        /// admitted requests.
        #[test]
        fn no_one_second_window_ever_admits_more_than_the_limit(
            max in 1usize..12,
            gaps in proptest::collection::vec(0u64..300, 1..200),
        ) {
            let t0 = Instant::now();
            let mut w = WindowLimit::new(max, Duration::from_secs(1));
            let mut at = t0;
            let mut admitted: Vec<Instant> = Vec::new();
            for g in gaps {
                at += Duration::from_millis(g);
                if w.try_take(at).is_ok() {
                    admitted.push(at);
                }
            }
            for (i, a) in admitted.iter().enumerate() {
                let in_window = admitted[i..]
                    .iter()
                    .take_while(|b| b.duration_since(*a) < Duration::from_secs(1))
                    .count();
                prop_assert!(in_window <= max);
            }
        }
    }
}
