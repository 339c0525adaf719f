//! Prometheus metrics of the process (`GET /metrics`). Every name starts with `alpha_panda_`;
//! docs/operations.md lists them with their labels and docs/prometheus-rules.yml alerts on
//! them.
//!
//! The metrics live in one registry per process: stages, bridges and the HTTP server all
//! reach it through [`metrics()`].

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use alpha_panda_core::{EventData, EventEnvelope};

use crate::delivery::Output;
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets, in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Order statuses counted by `alpha_panda_orders_total`.
pub const ORDER_STATUSES: &[&str] = &["placed", "acknowledged", "filled", "failed", "rejected"];

pub struct Metrics {
    pub registry: Registry,
    /// Records taken off a topic by a stage (before dedup), by `topic`, `stage`.
    pub consumed: IntCounterVec,
    /// Events a stage published, by destination `topic` and `stage`.
    pub produced: IntCounterVec,
    /// Transient failures retried in place, by `topic`, `stage`.
    pub retried: IntCounterVec,
    /// Records sent to a DLQ, by original `topic`, `stage` and failure `class`.
    pub dead_lettered: IntCounterVec,
    /// Time a stage actor took to handle a record, by `stage`.
    pub handling: HistogramVec,
    pub checkpoint_bytes: HistogramVec,
    pub tick_to_signal: Histogram,
    pub signal_to_fill: Histogram,
    pub tick_to_fill: Histogram,
    /// Records between a group's committed offset and the partition's end, by `group`,
    /// `topic`, `partition`.
    pub consumer_lag: IntGaugeVec,
    /// Records handled per partition, by `stage`, `topic`, `partition`.
    pub partition_records: IntCounterVec,
    /// Records per second per partition over the last sampling period.
    pub partition_rate: GaugeVec,
    /// 1 when a partition takes more than twice its fair share of its topic's records.
    pub hot_partition: IntGaugeVec,
    /// Actor restarts, by actor `kind` (stage or `strategy`) and `broker`.
    pub restarts: IntCounterVec,
    /// Records skipped because their id was already processed, by `stage`.
    pub dedup_hits: IntCounterVec,
    /// Orders by `broker` and `status`.
    pub orders: IntCounterVec,
    /// PnL by `broker`, `strategy` and `kind` (realized, unrealized, total).
    pub pnl: GaugeVec,
    /// 1 for the current trading state of a broker (`strategy` = "") or strategy, by
    /// `broker`, `strategy`, `state`.
    pub trading_state: IntGaugeVec,
    /// 1 while a broker (or `market`, the shared stages) is degraded.
    pub degraded: IntGaugeVec,
    /// 1 while an operator holds a part paused, by `broker` and `target`.
    pub paused: IntGaugeVec,
    /// Admin commands, by `action` and `outcome`.
    pub admin_actions: IntCounterVec,
}

// The `expect`s below are truly unreachable: every name, help text and label set is a
// literal that prometheus accepts, and `Metrics::new` runs once (behind `metrics()`'s
// `OnceLock`) with each name used once, so registering never meets a duplicate.

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn fgauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "alpha_panda_handling_seconds",
                "Time a stage actor took to handle one record.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        r.register(Box::new(handling.clone()))
            .expect("unique metric");
        let checkpoint_bytes = HistogramVec::new(
            HistogramOpts::new(
                "alpha_panda_checkpoint_bytes",
                "Size of each checkpoint a partition wrote (state, offset and watermarks).",
            )
            .buckets(vec![
                256.0,
                1024.0,
                4096.0,
                16384.0,
                65536.0,
                262_144.0,
                1_048_576.0,
                4_194_304.0,
            ]),
            &["stage"],
        )
        .expect("valid metric");
        r.register(Box::new(checkpoint_bytes.clone()))
            .expect("unique metric");
        Self {
            checkpoint_bytes,
            consumed: counter(
                &r,
                "alpha_panda_records_consumed_total",
                "Records a stage took off a topic, duplicates included.",
                &["topic", "stage"],
            ),
            produced: counter(
                &r,
                "alpha_panda_records_produced_total",
                "Events a stage published and the transport acknowledged.",
                &["topic", "stage"],
            ),
            retried: counter(
                &r,
                "alpha_panda_records_retried_total",
                "Transient failures retried in place.",
                &["topic", "stage"],
            ),
            dead_lettered: counter(
                &r,
                "alpha_panda_records_dead_lettered_total",
                "Records sent to a dead-letter topic.",
                &["topic", "stage", "class"],
            ),
            handling,
            tick_to_signal: histogram(
                &r,
                "alpha_panda_tick_to_signal_seconds",
                "Wall time from a tick's event time to the signals it caused.",
            ),
            signal_to_fill: histogram(
                &r,
                "alpha_panda_signal_to_fill_seconds",
                "Wall time from a signal's emission to its fill (strategy and trader in one process).",
            ),
            tick_to_fill: histogram(
                &r,
                "alpha_panda_tick_to_fill_seconds",
                "Wall time from a tick's event time to the fills it caused.",
            ),
            consumer_lag: gauge(
                &r,
                "alpha_panda_consumer_lag",
                "Records between a consumer group's committed offset and the end of the partition.",
                &["group", "topic", "partition"],
            ),
            partition_records: counter(
                &r,
                "alpha_panda_partition_records_total",
                "Records handled per partition.",
                &["stage", "topic", "partition"],
            ),
            partition_rate: fgauge(
                &r,
                "alpha_panda_partition_records_per_second",
                "Records handled per second per partition over the last sampling period.",
                &["stage", "topic", "partition"],
            ),
            hot_partition: gauge(
                &r,
                "alpha_panda_hot_partition",
                "1 when a partition takes more than twice its fair share of its topic's records.",
                &["stage", "topic", "partition"],
            ),
            restarts: counter(
                &r,
                "alpha_panda_actor_restarts_total",
                "Actor restarts after infrastructure failures or panics.",
                &["kind", "broker"],
            ),
            dedup_hits: counter(
                &r,
                "alpha_panda_dedup_hits_total",
                "Records skipped because their id was already processed by the group.",
                &["stage"],
            ),
            orders: counter(
                &r,
                "alpha_panda_orders_total",
                "Orders by broker and status.",
                &["broker", "status"],
            ),
            pnl: fgauge(
                &r,
                "alpha_panda_pnl",
                "PnL in rupees by broker, strategy and kind (realized, unrealized, total).",
                &["broker", "strategy", "kind"],
            ),
            trading_state: gauge(
                &r,
                "alpha_panda_trading_state",
                "1 for the current trading state of a broker (strategy=\"\") or of a strategy.",
                &["broker", "strategy", "state"],
            ),
            degraded: gauge(
                &r,
                "alpha_panda_broker_degraded",
                "1 while a broker (or market, the shared stages) is degraded by escalated restarts.",
                &["broker"],
            ),
            paused: gauge(
                &r,
                "alpha_panda_paused",
                "1 while an operator holds a part of a broker paused.",
                &["broker", "target"],
            ),
            admin_actions: counter(
                &r,
                "alpha_panda_admin_actions_total",
                "Admin commands by action and outcome.",
                &["action", "outcome"],
            ),
            registry: r,
        }
    }

    /// Prometheus text exposition of every metric.
    /// The exposition text. Every family is in it from the first scrape: one with no series
    /// yet (consumer lag before its first sample, say) appears with its `# HELP` and
    /// `# TYPE` lines, so dashboards and alerts built on the first scrape see it.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        for family in self.collectors().iter().flat_map(|c| c.collect()) {
            if family.get_metric().is_empty() {
                let kind = match family.get_field_type() {
                    MetricType::COUNTER => "counter",
                    MetricType::GAUGE => "gauge",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                };
                let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
                let name = family.name();
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }

    /// Every family of the registry.
    fn collectors(&self) -> [&dyn Collector; 21] {
        [
            &self.checkpoint_bytes,
            &self.consumed,
            &self.produced,
            &self.retried,
            &self.dead_lettered,
            &self.handling,
            &self.tick_to_signal,
            &self.signal_to_fill,
            &self.tick_to_fill,
            &self.consumer_lag,
            &self.partition_records,
            &self.partition_rate,
            &self.hot_partition,
            &self.restarts,
            &self.dedup_hits,
            &self.orders,
            &self.pnl,
            &self.trading_state,
            &self.degraded,
            &self.paused,
            &self.admin_actions,
        ]
    }

    /// Makes a stage's series visible (at zero) before its first record, so dashboards and
    /// alerts see them from the start.
    pub fn register_stage(&self, stage: &str, broker: &str, topics: &[String]) {
        for t in topics {
            self.consumed.with_label_values(&[t.as_str(), stage]);
            self.retried.with_label_values(&[t.as_str(), stage]);
            for class in ["transient", "poison"] {
                self.dead_lettered
                    .with_label_values(&[t.as_str(), stage, class]);
            }
        }
        self.restarts.with_label_values(&[stage, broker]);
        self.dedup_hits.with_label_values(&[stage]);
        self.handling.with_label_values(&[stage]);
        self.checkpoint_bytes.with_label_values(&[stage]);
        self.degraded.with_label_values(&[broker]);
        if stage == "trader" {
            for s in ORDER_STATUSES {
                self.orders.with_label_values(&[broker, s]);
            }
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Seconds from an event time to now, when that is a live latency (between 0 and an hour);
/// `None` for replayed history, whose event times are far in the past.
pub fn live_latency(event_time: alpha_panda_core::Timestamp) -> Option<f64> {
    let ms = chrono::Utc::now()
        .signed_duration_since(event_time.0)
        .num_microseconds()?;
    (0..3_600_000_000)
        .contains(&ms)
        .then_some(ms as f64 / 1_000_000.0)
}

/// When each recent signal was emitted, for `signal_to_fill` (bounded: the oldest are
/// forgotten first).
type EmissionTimes = (HashMap<uuid::Uuid, Instant>, VecDeque<uuid::Uuid>);
static SIGNALS_EMITTED: LazyLock<Mutex<EmissionTimes>> = LazyLock::new(Mutex::default);
const SIGNALS_REMEMBERED: usize = 100_000;

/// Counts what a handled record produced: orders by status, PnL, and the tick→signal,
/// signal→fill and tick→fill latencies. Called once per handled record (by a checkpointed
/// unit once its batch is checkpointed).
pub fn observe_outputs(input: &EventEnvelope, outputs: &[Output]) {
    let m = metrics();
    for o in outputs {
        let broker = o.topic.broker_name().map(|b| b.as_str()).unwrap_or("");
        match &o.envelope.data {
            EventData::TradingSignal(_) => {
                if let Some(s) = live_latency(o.envelope.ts) {
                    m.tick_to_signal.observe(s);
                }
                let mut g = SIGNALS_EMITTED.lock().unwrap_or_else(|p| p.into_inner());
                let (at, order) = &mut *g;
                if at.insert(o.envelope.id, Instant::now()).is_none() {
                    order.push_back(o.envelope.id);
                }
                while order.len() > SIGNALS_REMEMBERED {
                    if let Some(old) = order.pop_front() {
                        at.remove(&old);
                    }
                }
            }
            EventData::RejectedSignal(_) => m.orders.with_label_values(&[broker, "rejected"]).inc(),
            EventData::OrderPlaced(_) => m.orders.with_label_values(&[broker, "placed"]).inc(),
            EventData::OrderAck(_) => m.orders.with_label_values(&[broker, "acknowledged"]).inc(),
            EventData::OrderFailed(_) => m.orders.with_label_values(&[broker, "failed"]).inc(),
            EventData::OrderFilled(_) => {
                m.orders.with_label_values(&[broker, "filled"]).inc();
                if let Some(s) = live_latency(o.envelope.ts) {
                    m.tick_to_fill.observe(s);
                }
                // The trader's input is the validated signal, caused by the signal.
                let emitted = input.causation_id.and_then(|signal| {
                    let g = SIGNALS_EMITTED.lock().unwrap_or_else(|p| p.into_inner());
                    g.0.get(&signal).copied()
                });
                if let Some(t) = emitted {
                    m.signal_to_fill.observe(t.elapsed().as_secs_f64());
                }
            }
            EventData::PnlSnapshot(p) => set_pnl(broker, p),
            _ => {}
        }
    }
}

/// Sets the PnL gauges of a strategy from its snapshot.
pub fn set_pnl(broker: &str, p: &alpha_panda_core::events::PnlSnapshot) {
    use rust_decimal::prelude::ToPrimitive;
    let m = metrics();
    let strategy = p.strategy_id.as_str();
    for (kind, v) in [
        ("realized", p.realized_pnl),
        ("unrealized", p.unrealized_pnl),
        ("total", p.total_pnl),
    ] {
        m.pnl
            .with_label_values(&[broker, strategy, kind])
            .set(v.to_f64().unwrap_or(f64::NAN));
    }
}

/// Per-partition rates and the hot-partition flag, from `alpha_panda_partition_records_total`
/// sampled every `period`.
#[derive(Default)]
pub struct PartitionRates {
    last: Mutex<HashMap<(String, String, String), u64>>,
}

impl PartitionRates {
    /// Takes one sample: sets each partition's rate and whether it is hot. A partition is
    /// hot when its share of its (stage, topic) records exceeds twice the fair share
    /// (1 / partitions seen) and the topic is busy enough to tell (≥ 1 record/s).
    pub fn sample(&self, period: Duration) {
        let m = metrics();
        let mut now: HashMap<(String, String, String), u64> = HashMap::new();
        for family in m.registry.gather() {
            if family.name() != "alpha_panda_partition_records_total" {
                continue;
            }
            for metric in family.get_metric() {
                let label = |n: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                now.insert(
                    (label("stage"), label("topic"), label("partition")),
                    metric.get_counter().get_value() as u64,
                );
            }
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let secs = period.as_secs_f64().max(0.001);
        let mut per_topic: HashMap<(String, String), Vec<(String, f64)>> = HashMap::new();
        for (key, value) in &now {
            let before = last.get(key).copied().unwrap_or(0);
            let rate = value.saturating_sub(before) as f64 / secs;
            per_topic
                .entry((key.0.clone(), key.1.clone()))
                .or_default()
                .push((key.2.clone(), rate));
        }
        for ((stage, topic), parts) in per_topic {
            let total: f64 = parts.iter().map(|(_, r)| r).sum();
            let fair = 1.0 / parts.len() as f64;
            for (partition, rate) in parts {
                let labels = [stage.as_str(), topic.as_str(), partition.as_str()];
                m.partition_rate.with_label_values(&labels).set(rate);
                let hot = total >= 1.0 && rate / total > 2.0 * fair;
                m.hot_partition.with_label_values(&labels).set(hot as i64);
            }
        }
        *last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dashboard built on the first scrape sees every family, series or not: each metric
    /// of docs/operations.md's table is declared by a registry that has recorded nothing.
    #[test]
    fn every_documented_family_is_on_the_first_scrape() {
        let fresh = Metrics::new();
        let text = fresh.render();
        let docs = include_str!("../../docs/operations.md");
        let table = docs
            .split("## Metrics")
            .nth(1)
            .and_then(|t| t.split("\n## ").next())
            .unwrap_or_default();
        let names: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert!(names.len() >= 20, "the docs table lists {names:?}");
        for name in names {
            let full = format!("alpha_panda_{name}");
            assert!(
                text.contains(&format!("# TYPE {full} ")),
                "{full} is missing from a fresh scrape:\n{text}"
            );
        }
    }

    #[test]
    fn a_partition_with_more_than_twice_its_fair_share_is_hot() {
        let m = metrics();
        let rates = PartitionRates::default();
        rates.sample(Duration::from_secs(1));
        let c = |p: &str| {
            m.partition_records
                .with_label_values(&["hot-test", "t.hot", p])
        };
        // Four partitions: fair share 25 %. Partition 0 takes 70 %.
        c("0").inc_by(70);
        c("1").inc_by(10);
        c("2").inc_by(10);
        c("3").inc_by(10);
        rates.sample(Duration::from_secs(1));
        let hot = |p: &str| {
            m.hot_partition
                .with_label_values(&["hot-test", "t.hot", p])
                .get()
        };
        assert_eq!((hot("0"), hot("1"), hot("2"), hot("3")), (1, 0, 0, 0));
        assert_eq!(
            m.partition_rate
                .with_label_values(&["hot-test", "t.hot", "0"])
                .get(),
            70.0
        );
        // Even load: nobody is hot.
        for p in ["0", "1", "2", "3"] {
            c(p).inc_by(25);
        }
        rates.sample(Duration::from_secs(1));
        assert_eq!(hot("0"), 0);
    }

    #[test]
    fn replayed_history_is_not_a_latency() {
        let old = alpha_panda_core::Timestamp::from_unix_millis(1_705_290_000_000).unwrap();
        assert_eq!(live_latency(old), None);
        let now = alpha_panda_core::Timestamp::now();
        assert!(live_latency(now).is_some_and(|s| (0.0..1.0).contains(&s)));
    }
}
