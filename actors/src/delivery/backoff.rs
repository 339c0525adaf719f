//! Exponential backoff with jitter, as a pure function of the attempt number and a random
//! draw, so it is tested without clocks.

use std::time::Duration;

/// Retry schedule: `initial`, doubled each attempt up to `max`, each delay scaled by a random
/// factor in `[1 - jitter, 1 + jitter]`, for at most `tries` attempts in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Attempts in all, the first included. A record still failing after these goes to the DLQ.
    pub tries: u32,
    /// 0.0 – 1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    /// The transient-failure policy of DESIGN §3.5: 100 ms → 10 s, 5 tries, ±20 %.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            tries: 5,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 = the first retry), given a uniform draw
    /// `unit` in [0, 1).
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(exp).unwrap_or(u32::MAX))
            .min(self.max);
        let factor = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor)
            .min(self.max.mul_f64(1.0 + self.jitter.clamp(0.0, 1.0)))
    }

    /// Whether another attempt is allowed after `attempts` have failed.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.tries
    }
}

/// A cheap uniform draw in [0, 1) for jitter; not for anything that must be unpredictable.
pub fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_the_initial_delay_up_to_the_cap() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let ms = |r| b.delay(r, 0.5).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4)], [100, 200, 400, 800]);
        assert_eq!(ms(8), 10_000);
        assert_eq!(ms(1000), 10_000);
        assert!(b.may_retry(4));
        assert!(!b.may_retry(5));
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_band(retry in 1u32..50, unit in 0.0f64..1.0) {
            let b = Backoff::default();
            let plain = Backoff { jitter: 0.0, ..b }.delay(retry, unit);
            let d = b.delay(retry, unit);
            prop_assert!(d >= plain.mul_f64(0.8) && d <= plain.mul_f64(1.2));
        }
    }

    #[test]
    fn draws_are_in_the_unit_interval() {
        for _ in 0..1000 {
            let u = jitter_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
