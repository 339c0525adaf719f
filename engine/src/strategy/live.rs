//! The running strategy definitions, shared between whoever reloads them (the admin API,
//! SIGHUP) and the stages that run them: a validated set and a generation number.
//!
//! Contract:
//! - [`Live`] holds only definitions that passed the start-up rules; validating is the
//!   reloader's job, never the stage's.
//! - A stage checks [`Live::generation`] (one atomic load) at the start of each record and,
//!   when it moved, takes the new definitions and calls [`StrategySet::reconfigure`]: the
//!   switch happens between records, never inside one.
//! - On reconfigure a strategy whose id and whole definition (kind, parameters, instruments,
//!   brokers, order type, offset) are unchanged keeps its instance and so its indicator
//!   state; a new or changed strategy starts fresh, exactly as at start-up; a removed one is
//!   dropped. The buffer of recent ticks (for rebuilding a strategy that panicked) is kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use alpha_panda_config::Settings;

use super::StrategySet;

/// The current validated settings of the strategies (the running settings with their
/// `strategies` replaced) and their generation, cheap to clone and to check.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    generation: AtomicU64,
    current: RwLock<Arc<Settings>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Generation 0: the set the daemon started with.
    pub fn new(settings: Arc<Settings>) -> Self {
        Self {
            inner: Arc::new(Inner {
                generation: AtomicU64::new(0),
                current: RwLock::new(settings),
            }),
        }
    }

    /// Bumped by every [`replace`](Self::replace).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The current settings and their generation, read together.
    pub fn current(&self) -> (u64, Arc<Settings>) {
        let guard = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
        (self.generation(), guard.clone())
    }

    /// Installs a validated set; returns its generation.
    pub fn replace(&self, settings: Arc<Settings>) -> u64 {
        let mut guard = self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *guard = settings;
        // Bumped under the write lock, so `current` never pairs a new generation with an
        // old set.
        self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether `id` is among the current strategies (enabled or not).
    pub fn knows(&self, id: &str) -> bool {
        self.current()
            .1
            .strategies
            .iter()
            .any(|s| s.id.as_str() == id)
    }
}

/// What a reconfiguration did, by strategy id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// Same definition: instance and state carried over.
    pub kept: Vec<String>,
    /// New or changed: a fresh instance.
    pub fresh: Vec<String>,
    /// No longer in the set (or no longer enabled on an active broker).
    pub dropped: Vec<String>,
}

impl StrategySet {
    /// Switches to the enabled strategies of `settings` (already validated): unchanged ones
    /// keep their instance, new or changed ones start fresh, removed ones are dropped.
    pub fn reconfigure(&mut self, settings: &Settings) -> Result<Reconfigured, String> {
        let mut next = StrategySet::from_settings_with(settings, self.builder.clone())?;
        let mut old: Vec<Option<super::Entry>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        let mut report = Reconfigured::default();
        for entry in &mut next.entries {
            let same = old.iter_mut().find(|o| {
                o.as_ref().is_some_and(|o| {
                    o.id == entry.id
                        && o.params == entry.params
                        && o.instruments == entry.instruments
                        && o.brokers == entry.brokers
                        && o.order_type == entry.order_type
                        && o.limit_offset_bps == entry.limit_offset_bps
                })
            });
            match same.and_then(Option::take) {
                Some(previous) => {
                    entry.strategy = previous.strategy;
                    report.kept.push(entry.id.to_string());
                }
                None => report.fresh.push(entry.id.to_string()),
            }
        }
        report.dropped = old
            .into_iter()
            .flatten()
            .filter(|o| !next.entries.iter().any(|n| n.id == o.id))
            .map(|o| o.id.to_string())
            .collect();
        next.recent = std::mem::take(&mut self.recent);
        *self = next;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use alpha_panda_core::events::MarketTick;
    use alpha_panda_core::{
        BrokerName, Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, Price,
        StrategyId, Timestamp,
    };

    /// The default strategies, all on instrument 1.
    fn settings() -> Settings {
        let mut s = Settings::default();
        for st in &mut s.strategies {
            st.instruments = vec![InstrumentToken(1)];
        }
        s
    }

    /// `settings()` with the first strategy's `lookback` set.
    fn with_lookback(lookback: i64) -> Settings {
        let mut s = settings();
        s.strategies[0]
            .params
            .insert("lookback".into(), toml::Value::Integer(lookback));
        s
    }

    fn ids(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn tick(i: i64, price: i64) -> EventEnvelope {
        let ts = Timestamp::from_unix_millis(1_705_290_000_000 + i * 1000)
            .unwrap_or_else(|| panic!("a time in range"));
        let price = Price::new(Decimal::from(price)).unwrap_or_else(|e| panic!("{e}"));
        EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            "1".to_owned(),
            ts,
            EventData::MarketTick(MarketTick::new(InstrumentToken(1), price, ts)),
        )
    }

    fn set(s: &Settings) -> StrategySet {
        StrategySet::from_settings(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_unchanged_strategy_keeps_its_instance_and_a_changed_one_starts_fresh() {
        let mut running = set(&settings());
        let r = running
            .reconfigure(&with_lookback(7))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(&r.fresh), vec!["momentum_1"]);
        assert_eq!(ids(&r.kept), vec!["mean_reversion_1", "rsi_1"]);
        assert!(r.dropped.is_empty());
    }

    #[test]
    fn a_removed_strategy_is_dropped_and_the_rest_kept() {
        let mut running = set(&settings());
        let mut fewer = settings();
        fewer.strategies.retain(|s| s.id.as_str() != "rsi_1");
        let r = running
            .reconfigure(&fewer)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(&r.kept), vec!["momentum_1", "mean_reversion_1"]);
        assert_eq!(ids(&r.dropped), vec!["rsi_1"]);
        assert_eq!(running.len(), 2);
    }

    /// Signals per tick of a series, with `reload` applied to one of two sets at tick 60.
    fn signals_with_reload_at_60(reload: &Settings) -> (Vec<usize>, Vec<usize>) {
        let s = settings();
        let mut reloaded = set(&s);
        let mut untouched = set(&s);
        let all = |_: &StrategyId, _: &BrokerName| true;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..200 {
            if i == 60 {
                reloaded
                    .reconfigure(reload)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let p = 100 + ((i * 7) % 23) - 11 + (i / 40) % 3 * 5;
            let t = tick(i, p);
            a.push(reloaded.on_tick(&t, &all).outputs.len());
            b.push(untouched.on_tick(&t, &all).outputs.len());
        }
        (a, b)
    }

    #[test]
    fn a_reload_of_the_same_set_changes_no_signal() {
        let (a, b) = signals_with_reload_at_60(&settings());
        assert!(b.iter().sum::<usize>() > 0, "the series must cause signals");
        assert_eq!(a, b);
    }

    #[test]
    fn a_changed_strategy_starts_fresh_so_its_signals_change_after_the_reload() {
        let (a, b) = signals_with_reload_at_60(&with_lookback(3));
        assert_eq!(a[..60], b[..60], "nothing changes before the reload");
        assert_ne!(a[60..], b[60..], "a shorter lookback trades differently");
    }

    #[test]
    fn a_replaced_set_is_read_back_with_the_next_generation() {
        let live = Live::new(Arc::new(settings()));
        assert_eq!(live.generation(), 0);
        assert!(live.knows("rsi_1"));
        let mut next = settings();
        next.strategies.retain(|s| s.id.as_str() == "momentum_1");
        assert_eq!(live.replace(Arc::new(next)), 1);
        let (g, current) = live.current();
        assert_eq!(g, 1);
        assert_eq!(current.strategies.len(), 1);
        assert!(!live.knows("rsi_1"));
    }
}
