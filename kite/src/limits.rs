//! Rate limits and order caps, enforced before a request leaves the process.
//!
//! Contract: every call belongs to an [`EndpointClass`] with Kite's documented rate
//! (orders 10/s, quote 1/s, historical 3/s, others 10/s). Each class is a sliding-window
//! limit: never more than `n` requests in any window of one second — stricter than a token
//! bucket of the same rate, which would allow a burst of `2n` across a window boundary. A
//! request holds its place from when it is sent until its reply (or failure) and is then
//! stamped with the time of the reply, so however the network delays requests, Kite can
//! never receive more than `n` in one second: whatever time Kite saw a request, it lies
//! between its start and its stamp.
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
    /// Finished requests, stamped when they finished (in order).
    times: VecDeque<Instant>,
    /// Started, not finished: each counts as inside every window.
    pending: usize,
}

impl WindowLimit {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            times: VecDeque::with_capacity(max),
            pending: 0,
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

    /// How long until one more request fits; zero when it fits now.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.expire(now);
        let used = self.times.len() + self.pending;
        if used < self.max {
            return Duration::ZERO;
        }
        // This many finished requests must leave the window first.
        let must_expire = used - self.max + 1;
        match self.times.get(must_expire - 1) {
            Some(t) => self
                .window
                .saturating_sub(now.saturating_duration_since(*t)),
            // Requests in flight hold the places: look again shortly.
            None => Duration::from_millis(10),
        }
    }

    /// Starts a request now (it holds a place until [`WindowLimit::finish`]), or says how
    /// long to wait.
    pub fn try_begin(&mut self, now: Instant) -> Result<(), Duration> {
        if self.max == 0 {
            return Err(self.window);
        }
        let w = self.wait(now);
        if w.is_zero() {
            self.pending += 1;
            Ok(())
        } else {
            Err(w)
        }
    }

    /// Finishes a started request at `now`.
    pub fn finish(&mut self, now: Instant) {
        self.pending = self.pending.saturating_sub(1);
        let stamp = self.times.back().map_or(now, |last| now.max(*last));
        self.times.push_back(stamp);
    }

    /// Starts and finishes an instantaneous event now, or says how long to wait.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.try_begin(now)?;
        self.finish(now);
        Ok(())
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
    // Truly unreachable: +05:30 is within the ±24 h `east_opt` accepts.
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

    /// Waits until a request of `class` may go; the request holds its place until the
    /// permit is dropped (after its reply).
    pub async fn acquire(&self, class: EndpointClass) -> Permit<'_> {
        loop {
            let wait = {
                let mut c = self.classes.lock().unwrap_or_else(|p| p.into_inner());
                match c[class.index()].try_begin(Instant::now()) {
                    Ok(()) => {
                        return Permit {
                            limiter: self,
                            class,
                        };
                    }
                    Err(w) => w,
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// A started request; dropping it finishes the request at that moment.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    class: EndpointClass,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut c = self
            .limiter
            .classes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c[self.class.index()].finish(Instant::now());
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

    #[test]
    fn a_request_in_flight_holds_its_place_and_counts_from_when_it_finished() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = WindowLimit::new(2, Duration::from_secs(1));
        assert_eq!(w.try_begin(t0), Ok(()));
        assert_eq!(w.try_begin(t0), Ok(()));
        // Both in flight for five seconds: nothing else may start.
        assert!(w.try_begin(t0 + ms(5000)).is_err());
        w.finish(t0 + ms(5000));
        // One finished at 5.0 s and one still in flight: still full.
        assert!(w.try_begin(t0 + ms(5500)).is_err());
        w.finish(t0 + ms(5600));
        // Stamped 5.0 s and 5.6 s: one place frees at 6.0 s, the other at 6.6 s.
        assert!(w.try_begin(t0 + ms(5900)).is_err());
        assert_eq!(w.try_begin(t0 + ms(6000)), Ok(()));
        assert_eq!(w.try_begin(t0 + ms(6100)), Err(ms(500)));
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
