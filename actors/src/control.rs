//! What operators and supervision change at run time, shared by a daemon's stages and its
//! HTTP server: trading states, pauses, disabled strategies, degraded brokers, and the
//! status of every partition worker (DESIGN §3.6, §3.7).
//!
//! Trading states, pauses and disabled strategies are persisted in the store (Redis, or the
//! in-memory store on the embedded default) under the broker's prefix, so a restart keeps
//! them; [`Control::refresh`] reloads them, so daemons sharing a Redis see each other's
//! changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;
use std::time::{Duration, Instant};

use alpha_panda_core::TradingState;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditSink, StateChange};
use crate::metrics::metrics;
use crate::reload::Reloader;
use crate::store::{Store, StoreError};
use crate::strategy::Live;

/// Restarts of one actor (a stage's partition worker) within [`ESCALATION_WINDOW`] beyond
/// which its broker is degraded.
pub const MAX_RESTARTS: usize = 5;
pub const ESCALATION_WINDOW: Duration = Duration::from_secs(60);

/// Stages on the order path: escalation halts their broker instead of restarting on.
pub const ORDER_PATH: &[&str] = &["risk", "trader"];

/// A part an operator paused. `broker` alone: every stage of the broker; with `stage`: that
/// stage (records wait in Kafka); with `strategy`: that strategy's signals to this broker
/// are held back (its indicators keep following the ticks). `market` is the shared stages'
/// namespace (the strategy stage).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pause {
    pub broker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

/// What supervision did about a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// Within limits: restart with backoff.
    None,
    /// Too many restarts: the broker is marked degraded; restart on with backoff.
    Degraded,
    /// Too many restarts on the order path: the broker is HALTED; do not restart until an
    /// operator sets it ACTIVE again.
    Halted,
}

/// One partition worker, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// running, paused, restarting, halted or released.
    pub state: &'static str,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// Next offset to handle.
    pub next_offset: Option<i64>,
}

/// (namespace, stage, topic, partition).
pub type WorkerKey = (String, String, String, i32);

#[derive(Default)]
struct State {
    paused: BTreeSet<Pause>,
    /// (broker, strategy or "") → state; absent means ACTIVE.
    trading: BTreeMap<(String, String), TradingState>,
    /// broker → stage → why it is degraded.
    degraded: BTreeMap<String, BTreeMap<String, String>>,
    disabled: BTreeSet<String>,
    /// (namespace, stage, actor) → recent restarts of that actor.
    restarts: HashMap<(String, String, String), VecDeque<Instant>>,
    /// (namespace, stage) → the last restart of any of its actors.
    last_restart: HashMap<(String, String), Instant>,
    workers: BTreeMap<WorkerKey, WorkerStatus>,
    /// (group, topic, partition) → lag.
    lag: BTreeMap<(String, String, i32), i64>,
}

pub struct Control {
    store: Store,
    /// Brokers whose persisted state is loaded and refreshed.
    brokers: Vec<String>,
    state: Mutex<State>,
    /// Where admin calls and trading-state changes are reported (set once by the daemon).
    audit: OnceLock<AuditSink>,
    /// How the running strategies are reloaded, and the running set (set once by the daemon).
    reloader: OnceLock<(Reloader, Live)>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("brokers", &self.brokers)
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

fn trading_key(broker: &str, strategy: &str) -> String {
    if strategy.is_empty() {
        format!("{broker}:trading_state")
    } else {
        format!("{broker}:trading_state:{strategy}")
    }
}

fn paused_key(broker: &str) -> String {
    format!("{broker}:paused")
}

const DISABLED_KEY: &str = "strategies:disabled";

impl Control {
    /// A control over `brokers` (plus `market`, the shared stages) with nothing loaded yet.
    pub fn new(store: Store, brokers: Vec<String>) -> Self {
        let c = Self {
            store,
            brokers,
            state: Mutex::new(State::default()),
            audit: OnceLock::new(),
            reloader: OnceLock::new(),
        };
        for b in &c.brokers {
            c.publish_trading(b, "", TradingState::Active);
        }
        c
    }

    /// A control for tests and tools that steer nothing.
    pub fn detached() -> Self {
        Self::new(Store::Memory(Default::default()), Vec::new())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    // ---- audit and reload ----

    /// Reports admin calls and trading-state changes to `sink` from now on (first call wins).
    pub fn set_audit(&self, sink: AuditSink) {
        if self.audit.set(sink).is_err() {
            tracing::warn!("an audit sink was set twice; the first one stays");
        }
    }

    /// Reports `event` (a log line always; a database row when a sink is set).
    pub fn record(&self, event: AuditEvent) {
        match &event {
            AuditEvent::Admin(c) => {
                tracing::info!(target: "alpha_panda::audit", who = c.who, from = c.from, what = c.what, summary = c.summary, outcome = c.outcome, "admin call")
            }
            AuditEvent::TradingState(c) => {
                tracing::info!(target: "alpha_panda::audit", broker = c.broker, strategy = ?c.strategy, state = c.state, by = c.changed_by, reason = c.reason, "trading state changed")
            }
        }
        if let Some(sink) = self.audit.get() {
            sink.record(event);
        }
    }

    /// Lets `POST /admin/strategies/reload` and SIGHUP reload `live` with `reloader` (first
    /// call wins).
    pub fn set_reloader(&self, reloader: Reloader, live: Live) {
        if self.reloader.set((reloader, live)).is_err() {
            tracing::warn!("a strategy reloader was set twice; the first one stays");
        }
    }

    /// The running strategy set, when the daemon set a reloader.
    pub fn live(&self) -> Option<Live> {
        self.reloader.get().map(|(_, l)| l.clone())
    }

    /// The reloader, when the daemon set one.
    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader.get().map(|(r, _)| r.clone())
    }

    /// Whether `id` is a running strategy: of the reloaded set when there is one, else of
    /// `configured` (the settings' ids).
    pub fn knows_strategy<'a>(
        &self,
        id: &str,
        mut configured: impl Iterator<Item = &'a str>,
    ) -> bool {
        match self.reloader.get() {
            Some((_, live)) => live.knows(id),
            None => configured.any(|c| c == id),
        }
    }

    /// Loads the persisted trading states, pauses and disabled strategies of `strategies`.
    pub async fn refresh(&self, strategies: &[String]) -> Result<(), StoreError> {
        let mut trading = BTreeMap::new();
        let mut paused = BTreeSet::new();
        let namespaces = self
            .brokers
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("market"));
        for b in namespaces {
            for s in std::iter::once("").chain(strategies.iter().map(String::as_str)) {
                if let Some(v) = self.store.get(&trading_key(b, s)).await? {
                    match v.parse::<TradingState>() {
                        Ok(state) => {
                            trading.insert((b.to_owned(), s.to_owned()), state);
                        }
                        Err(e) => {
                            tracing::error!(key = trading_key(b, s), error = %e, "ignoring a stored trading state")
                        }
                    }
                }
            }
            if let Some(v) = self.store.get(&paused_key(b)).await? {
                match serde_json::from_str::<Vec<Pause>>(&v) {
                    Ok(list) => paused.extend(list.into_iter().filter(|p| p.broker == b)),
                    Err(e) => {
                        tracing::error!(key = paused_key(b), error = %e, "ignoring stored pauses")
                    }
                }
            }
        }
        let disabled: BTreeSet<String> = match self.store.get(DISABLED_KEY).await? {
            Some(v) => serde_json::from_str(&v).unwrap_or_else(|e| {
                tracing::error!(key = DISABLED_KEY, error = %e, "ignoring stored disabled strategies");
                BTreeSet::new()
            }),
            None => BTreeSet::new(),
        };
        let mut st = self.lock();
        for ((b, s), old) in &st.trading {
            if !trading.contains_key(&(b.clone(), s.clone())) {
                metrics()
                    .trading_state
                    .with_label_values(&[b.as_str(), s.as_str(), old.as_str()])
                    .set(0);
            }
        }
        for ((b, s), state) in &trading {
            self.publish_trading(b, s, *state);
        }
        publish_pauses(&st.paused, &paused);
        st.trading = trading;
        st.paused = paused;
        st.disabled = disabled;
        Ok(())
    }

    fn publish_trading(&self, broker: &str, strategy: &str, state: TradingState) {
        for s in TradingState::ALL {
            metrics()
                .trading_state
                .with_label_values(&[broker, strategy, s.as_str()])
                .set((*s == state) as i64);
        }
    }

    // ---- trading states ----

    /// The state a strategy trades under on a broker: the stricter of the broker's and the
    /// strategy's.
    pub fn trading_state(&self, broker: &str, strategy: Option<&str>) -> TradingState {
        let st = self.lock();
        let of = |s: &str| {
            st.trading
                .get(&(broker.to_owned(), s.to_owned()))
                .copied()
                .unwrap_or(TradingState::Active)
        };
        let b = of("");
        match strategy {
            Some(s) => b.strictest(of(s)),
            None => b,
        }
    }

    /// Sets and persists a trading state (`strategy` None: the broker's), reported as
    /// changed by `system`.
    pub async fn set_trading_state(
        &self,
        broker: &str,
        strategy: Option<&str>,
        state: TradingState,
    ) -> Result<(), StoreError> {
        self.set_trading_state_by(broker, strategy, state, "system", "")
            .await
    }

    /// Sets and persists a trading state; a change (a state other than the one before) is
    /// reported as made by `by` for `reason` (`trading_state_changes`).
    pub async fn set_trading_state_by(
        &self,
        broker: &str,
        strategy: Option<&str>,
        state: TradingState,
        by: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let s = strategy.unwrap_or("");
        self.store
            .set(&trading_key(broker, s), state.as_str())
            .await?;
        let before = self
            .lock()
            .trading
            .insert((broker.to_owned(), s.to_owned()), state)
            .unwrap_or(TradingState::Active);
        self.publish_trading(broker, s, state);
        if before != state {
            self.record_state_change(broker, strategy, state, by, reason);
        }
        if state == TradingState::Active && strategy.is_none() {
            // An operator who sets a broker ACTIVE takes it out of degradation: supervision
            // starts counting restarts afresh.
            let mut st = self.lock();
            st.degraded.remove(broker);
            st.restarts.retain(|(ns, _, _), _| ns != broker);
            st.last_restart.retain(|(ns, _), _| ns != broker);
            metrics().degraded.with_label_values(&[broker]).set(0);
        }
        Ok(())
    }

    fn record_state_change(
        &self,
        broker: &str,
        strategy: Option<&str>,
        state: TradingState,
        by: &str,
        reason: &str,
    ) {
        self.record(AuditEvent::TradingState(StateChange {
            broker: broker.to_owned(),
            strategy: strategy.map(str::to_owned),
            state: state.as_str().to_owned(),
            changed_by: by.to_owned(),
            reason: reason.to_owned(),
            at: SystemTime::now(),
        }));
    }

    /// Every non-ACTIVE state: (broker, strategy or "", state).
    pub fn trading_states(&self) -> Vec<(String, String, TradingState)> {
        self.lock()
            .trading
            .iter()
            .map(|((b, s), st)| (b.clone(), s.clone(), *st))
            .collect()
    }

    // ---- pauses ----

    pub async fn pause(&self, p: Pause) -> Result<bool, StoreError> {
        self.change_pauses(&p.broker.clone(), |set| set.insert(p))
            .await
    }

    pub async fn resume(&self, p: Pause) -> Result<bool, StoreError> {
        self.change_pauses(&p.broker.clone(), |set| set.remove(&p))
            .await
    }

    async fn change_pauses(
        &self,
        broker: &str,
        change: impl FnOnce(&mut BTreeSet<Pause>) -> bool,
    ) -> Result<bool, StoreError> {
        let (changed, list, all) = {
            let st = self.lock();
            let mut set = st.paused.clone();
            let changed = change(&mut set);
            let list: Vec<Pause> = set.iter().filter(|p| p.broker == broker).cloned().collect();
            (changed, list, set)
        };
        let json = serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_owned());
        self.store.set(&paused_key(broker), &json).await?;
        let mut st = self.lock();
        publish_pauses(&st.paused, &all);
        st.paused = all;
        Ok(changed)
    }

    /// Whether a stage of a namespace (broker or `market`) is held: paused as a whole or
    /// by its broker.
    pub fn stage_paused(&self, namespace: &str, stage: &str) -> bool {
        self.lock().paused.iter().any(|p| {
            p.broker == namespace
                && p.strategy.is_none()
                && p.stage.as_deref().is_none_or(|s| s == stage)
        })
    }

    pub fn pauses(&self) -> Vec<Pause> {
        self.lock().paused.iter().cloned().collect()
    }

    // ---- strategies ----

    /// Whether a strategy's signals to a broker go out now: it is enabled and not paused
    /// there.
    pub fn strategy_emits(&self, strategy: &str, broker: &str) -> bool {
        let st = self.lock();
        !st.disabled.contains(strategy)
            && !st
                .paused
                .iter()
                .any(|p| p.broker == broker && p.strategy.as_deref() == Some(strategy))
    }

    pub async fn set_strategy_enabled(
        &self,
        strategy: &str,
        enabled: bool,
    ) -> Result<(), StoreError> {
        let mut set = self.lock().disabled.clone();
        if enabled {
            set.remove(strategy);
        } else {
            set.insert(strategy.to_owned());
        }
        let json = serde_json::to_string(&set).unwrap_or_else(|_| "[]".to_owned());
        self.store.set(DISABLED_KEY, &json).await?;
        self.lock().disabled = set;
        Ok(())
    }

    pub fn disabled_strategies(&self) -> Vec<String> {
        self.lock().disabled.iter().cloned().collect()
    }

    // ---- supervision ----

    /// Counts a restart of one of a stage's actors (`actor`: which one, e.g. its partition)
    /// and escalates when that actor restarted more than [`MAX_RESTARTS`] times in
    /// [`ESCALATION_WINDOW`]: the namespace is degraded; on the order path the broker is
    /// also HALTED (persisted). A short outage that makes every partition restart a few
    /// times does not escalate; an actor that keeps failing does.
    pub async fn record_restart(
        &self,
        namespace: &str,
        stage: &str,
        actor: &str,
        error: &str,
    ) -> Escalation {
        let kind = stage.split(':').next().unwrap_or(stage);
        metrics()
            .restarts
            .with_label_values(&[kind, namespace])
            .inc();
        let now = Instant::now();
        let too_many = {
            let mut st = self.lock();
            st.last_restart
                .insert((namespace.to_owned(), stage.to_owned()), now);
            let window = st
                .restarts
                .entry((namespace.to_owned(), stage.to_owned(), actor.to_owned()))
                .or_default();
            window.push_back(now);
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) > ESCALATION_WINDOW)
            {
                window.pop_front();
            }
            let n = window.len();
            if n > MAX_RESTARTS {
                let reason = format!(
                    "{stage} ({actor}): {n} restarts in {} s; last error: {error}",
                    ESCALATION_WINDOW.as_secs()
                );
                let fresh = st
                    .degraded
                    .entry(namespace.to_owned())
                    .or_default()
                    .insert(stage.to_owned(), reason.clone())
                    .is_none();
                if fresh {
                    tracing::error!(broker = namespace, stage, reason, "broker degraded");
                }
                true
            } else {
                false
            }
        };
        if !too_many {
            return Escalation::None;
        }
        metrics().degraded.with_label_values(&[namespace]).set(1);
        if ORDER_PATH.contains(&kind) && namespace != "market" {
            if self.trading_state(namespace, None) != TradingState::Halted {
                tracing::error!(
                    broker = namespace,
                    stage,
                    "order path keeps failing: trading HALTED until an operator sets it ACTIVE"
                );
            }
            let reason = format!("{stage} keeps failing on the order path");
            if let Err(e) = self
                .set_trading_state_by(
                    namespace,
                    None,
                    TradingState::Halted,
                    "supervision",
                    &reason,
                )
                .await
            {
                // Still halted in this process; persisting is retried on the next restart.
                tracing::error!(broker = namespace, error = %e, "cannot persist HALTED");
                let before = self
                    .lock()
                    .trading
                    .insert((namespace.to_owned(), String::new()), TradingState::Halted);
                self.publish_trading(namespace, "", TradingState::Halted);
                if before != Some(TradingState::Halted) {
                    self.record_state_change(
                        namespace,
                        None,
                        TradingState::Halted,
                        "supervision",
                        &reason,
                    );
                }
            }
            return Escalation::Halted;
        }
        Escalation::Degraded
    }

    /// Degrades the namespace for a reason only an operator clears (it does not end when the
    /// stage goes on handling records): the daemon's restart clears it.
    pub fn degrade(&self, namespace: &str, stage: &str, reason: String) {
        tracing::error!(broker = namespace, stage, reason, "broker degraded");
        self.lock()
            .degraded
            .entry(namespace.to_owned())
            .or_default()
            .insert(format!("{stage}:operator"), reason);
        metrics().degraded.with_label_values(&[namespace]).set(1);
    }

    /// A stage handled a record: once it has gone a whole window without restarts, its
    /// degradation ends.
    pub fn record_healthy(&self, namespace: &str, stage: &str) {
        let mut st = self.lock();
        let Some(stages) = st.degraded.get(namespace) else {
            return;
        };
        if !stages.contains_key(stage) {
            return;
        }
        let now = Instant::now();
        let recent = st
            .last_restart
            .get(&(namespace.to_owned(), stage.to_owned()))
            .is_some_and(|t| now.duration_since(*t) <= ESCALATION_WINDOW);
        if recent {
            return;
        }
        if let Some(stages) = st.degraded.get_mut(namespace) {
            stages.remove(stage);
            if stages.is_empty() {
                st.degraded.remove(namespace);
                metrics().degraded.with_label_values(&[namespace]).set(0);
                tracing::info!(broker = namespace, stage, "broker no longer degraded");
            }
        }
    }

    /// A stage outside the delivery bridge (the recorder) reports that it cannot work and
    /// why: the namespace is degraded (readiness fails and says why) until
    /// [`Control::clear_degraded`]. Nothing is halted: trading goes on.
    pub fn mark_degraded(&self, namespace: &str, stage: &str, reason: &str) {
        let fresh = self
            .lock()
            .degraded
            .entry(namespace.to_owned())
            .or_default()
            .insert(stage.to_owned(), reason.to_owned())
            .is_none();
        metrics().degraded.with_label_values(&[namespace]).set(1);
        if fresh {
            tracing::error!(broker = namespace, stage, reason, "broker degraded");
        }
    }

    /// The stage of [`Control::mark_degraded`] works again.
    pub fn clear_degraded(&self, namespace: &str, stage: &str) {
        let mut st = self.lock();
        let Some(stages) = st.degraded.get_mut(namespace) else {
            return;
        };
        if stages.remove(stage).is_none() {
            return;
        }
        tracing::info!(broker = namespace, stage, "stage works again");
        if stages.is_empty() {
            st.degraded.remove(namespace);
            metrics().degraded.with_label_values(&[namespace]).set(0);
        }
    }

    /// Degraded namespaces, each with the reason per stage.
    pub fn degraded(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.lock().degraded.clone()
    }

    // ---- status ----

    pub fn worker(&self, key: WorkerKey, update: impl FnOnce(&mut WorkerStatus)) {
        let mut st = self.lock();
        let w = st.workers.entry(key).or_insert(WorkerStatus {
            state: "running",
            restarts: 0,
            last_error: None,
            next_offset: None,
        });
        update(w);
    }

    pub fn workers(&self) -> BTreeMap<WorkerKey, WorkerStatus> {
        self.lock().workers.clone()
    }

    pub fn set_lag(&self, group: &str, topic: &str, partition: i32, lag: i64) {
        self.lock()
            .lag
            .insert((group.to_owned(), topic.to_owned(), partition), lag);
        metrics()
            .consumer_lag
            .with_label_values(&[group, topic, &partition.to_string()])
            .set(lag);
    }

    pub fn lags(&self) -> BTreeMap<(String, String, i32), i64> {
        self.lock().lag.clone()
    }
}

/// Sets the `paused` gauges: 0 for what was paused and no longer is, 1 for what is.
fn publish_pauses(before: &BTreeSet<Pause>, now: &BTreeSet<Pause>) {
    for (set, value) in [
        (before.difference(now).collect::<Vec<_>>(), 0),
        (now.iter().collect(), 1),
    ] {
        for p in set {
            metrics()
                .paused
                .with_label_values(&[p.broker.as_str(), &pause_target(p)])
                .set(value);
        }
    }
}

fn pause_target(p: &Pause) -> String {
    match (&p.stage, &p.strategy) {
        (Some(s), _) => format!("stage:{s}"),
        (None, Some(s)) => format!("strategy:{s}"),
        (None, None) => "all".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_trading_state_change_is_reported_once_with_who_made_it() {
        rt().block_on(async {
            let c = Control::new(Store::Memory(Default::default()), vec!["b1".into()]);
            let (sink, rx) = AuditSink::channel(16);
            c.set_audit(sink);
            c.set_trading_state_by("b1", Some("s1"), TradingState::Halted, "token:ab", "why")
                .await
                .unwrap();
            c.set_trading_state_by("b1", Some("s1"), TradingState::Halted, "token:ab", "again")
                .await
                .unwrap();
            c.set_trading_state("b1", None, TradingState::Reducing)
                .await
                .unwrap();
            let got: Vec<_> = rx
                .try_iter()
                .map(|e| match e {
                    AuditEvent::TradingState(s) => (s.strategy, s.state, s.changed_by, s.reason),
                    other => panic!("not a state change: {other:?}"),
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (
                        Some("s1".into()),
                        "HALTED".into(),
                        "token:ab".into(),
                        "why".into()
                    ),
                    (None, "REDUCING".into(), "system".into(), String::new()),
                ]
            );
        });
    }

    #[test]
    fn more_than_five_restarts_in_a_minute_degrade_and_on_the_order_path_halt() {
        rt().block_on(async {
            let c = Control::new(Store::Memory(Default::default()), vec!["b1".into()]);
            // Every partition restarting a few times (an outage) is no escalation.
            for p in 0..6 {
                for _ in 0..3 {
                    let actor = format!("t/{p}");
                    let e = c.record_restart("b1", "portfolio", &actor, "x").await;
                    assert_eq!(e, Escalation::None);
                }
            }
            // One actor failing again and again is.
            for _ in 0..MAX_RESTARTS - 3 {
                let e = c.record_restart("b1", "portfolio", "t/0", "x").await;
                assert_eq!(e, Escalation::None);
            }
            let e = c.record_restart("b1", "portfolio", "t/0", "x").await;
            assert_eq!(e, Escalation::Degraded);
            assert!(c.degraded().contains_key("b1"));
            assert_eq!(c.trading_state("b1", None), TradingState::Active);
            for _ in 0..MAX_RESTARTS {
                c.record_restart("b1", "trader", "t/1", "x").await;
            }
            let e = c.record_restart("b1", "trader", "t/1", "x").await;
            assert_eq!(e, Escalation::Halted);
            assert_eq!(c.trading_state("b1", Some("s1")), TradingState::Halted);
            // Persisted: a new control over the same store reads it back.
            let again = Control::new(c.store().clone(), vec!["b1".into()]);
            again.refresh(&["s1".into()]).await.unwrap();
            assert_eq!(again.trading_state("b1", None), TradingState::Halted);
            // An operator's ACTIVE clears the degradation.
            again
                .set_trading_state("b1", None, TradingState::Active)
                .await
                .unwrap();
            assert!(again.degraded().is_empty());
        });
    }

    #[test]
    fn pauses_hold_the_stages_they_name_and_survive_a_reload() {
        rt().block_on(async {
            let c = Control::new(Store::Memory(Default::default()), vec!["b2".into()]);
            let trader = Pause {
                broker: "b2".into(),
                stage: Some("trader".into()),
                strategy: None,
            };
            assert!(c.pause(trader.clone()).await.unwrap());
            assert!(c.stage_paused("b2", "trader"));
            assert!(!c.stage_paused("b2", "risk"));
            let strategy = Pause {
                broker: "b2".into(),
                stage: None,
                strategy: Some("s1".into()),
            };
            c.pause(strategy).await.unwrap();
            assert!(!c.strategy_emits("s1", "b2"));
            assert!(c.strategy_emits("s1", "other"));
            assert!(
                !c.stage_paused("b2", "risk"),
                "a strategy pause holds no stage"
            );
            let again = Control::new(c.store().clone(), vec!["b2".into()]);
            again.refresh(&[]).await.unwrap();
            assert!(again.stage_paused("b2", "trader"));
            assert!(again.resume(trader).await.unwrap());
            assert!(!again.stage_paused("b2", "trader"));
            c.set_strategy_enabled("s9", false).await.unwrap();
            assert!(!c.strategy_emits("s9", "b2"));
        });
    }
}
