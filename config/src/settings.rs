//! The settings tree. Every struct refuses unknown keys; every field has a default, so an
//! empty file (or none) is the embedded default: in-process transport, in-memory store,
//! synthetic feed, the paper broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use alpha_panda_core::{AccountId, BrokerName, Decimal, InstrumentToken, OrderType, StrategyId};
use serde::{Deserialize, Serialize};

use crate::de;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Brokers that trade in this process. `ACTIVE_BROKERS=paper,zerodha` sets it too.
    #[serde(deserialize_with = "de::broker_list")]
    pub active_brokers: Vec<BrokerName>,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub feed: Feed,
    pub synthetic: SyntheticFeed,
    /// Broker definitions by name. `paper` (kind paper) and `zerodha` (kind zerodha) exist
    /// by default; define more (`[brokers.paper2] kind = "paper"`) to run them side by side.
    pub brokers: BTreeMap<BrokerName, BrokerSettings>,
    pub strategies: Vec<StrategySettings>,
    /// Risk limits per broker (`[risk.paper]`); a broker without a section gets the defaults.
    pub risk: BTreeMap<BrokerName, RiskSettings>,
    pub portfolio: PortfolioSettings,
    pub delivery: DeliverySettings,
    /// Where the embedded default keeps what must survive a restart (the in-process
    /// transport's log, the stage checkpoints and dedup marks, in `transport.sqlite`). Used
    /// only with the in-process transport and without `--ephemeral`.
    pub data_dir: PathBuf,
}

/// Default of `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "./alpha-panda-data";

/// How checkpointed stages batch their records (delivery v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Most records a checkpointed unit handles between two checkpoints. A batch is what is
    /// queued when the unit is free, plus what comes within `batch_max_ms` of its first
    /// record; under load batches grow to this bound.
    pub batch_max_records: usize,
    /// Longest a checkpointed unit holds a batch open for more records after its first one.
    /// 0: never (at a trickle each record is its own batch, with no added latency).
    pub batch_max_ms: u64,
    /// Threads (actix arbiters) the Kafka transport's partition workers and stage actors run
    /// on; partition `p` of every stage runs on thread `p mod threads`. Default: the number of
    /// cores.
    pub threads: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            batch_max_records: 500,
            batch_max_ms: 0,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortfolioSettings {
    /// Besides one on each fill, the daemon publishes every strategy's `pnl_snapshot` (marked
    /// to the latest ticks) this often. 0: only on fills.
    pub snapshot_interval_secs: u64,
}

impl Default for PortfolioSettings {
    fn default() -> Self {
        Self {
            snapshot_interval_secs: 10,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let mut brokers = BTreeMap::new();
        brokers.insert(BrokerName::paper(), BrokerSettings::paper());
        brokers.insert(BrokerName::zerodha(), BrokerSettings::zerodha());
        Self {
            active_brokers: vec![BrokerName::paper()],
            kafka: KafkaSettings::default(),
            redis: RedisSettings::default(),
            database: DatabaseSettings::default(),
            http: HttpSettings::default(),
            admin: AdminSettings::default(),
            log: LogSettings::default(),
            feed: Feed::Synthetic,
            synthetic: SyntheticFeed::default(),
            brokers,
            strategies: StrategySettings::defaults(),
            risk: BTreeMap::new(),
            portfolio: PortfolioSettings::default(),
            delivery: DeliverySettings::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

impl Settings {
    /// The risk limits of a broker: its `[risk.NAME]` section or the defaults.
    pub fn risk_for(&self, broker: &BrokerName) -> RiskSettings {
        self.risk.get(broker).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`. Absent: the in-process transport.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    pub client_id: String,
    /// Consumer groups are `{group_prefix}.{broker}.{stage}`.
    pub group_prefix: String,
    /// Producer `linger.ms`: how long a record may wait for others to share its produce
    /// request. 0 by default: the stages await each record's ack, so any linger is added
    /// to every hop (docs/configuration.md has the measurements).
    pub linger_ms: u32,
    /// Most records in one produce batch (librdkafka `batch.num.messages`).
    pub max_batch_records: u32,
    /// Consumer `session.timeout.ms` (also `max.poll.interval.ms`): how long the group
    /// waits for a silent member before giving its partitions to others. Longer rides out
    /// broker stalls without a rebalance; shorter fails over faster after a crash.
    pub session_timeout_ms: u32,
    /// Static group membership (`group.instance.id`): a stable name of this daemon, unique
    /// among the daemons sharing a consumer group. A daemon restarted with the same name
    /// takes its partitions back at once instead of waiting for its old session to expire.
    /// Absent: dynamic membership.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            client_id: "alpha-panda".to_owned(),
            group_prefix: "alpha-panda".to_owned(),
            linger_ms: 0,
            max_batch_records: 10_000,
            session_timeout_ms: 30_000,
            instance_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`. Absent: the in-memory store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long a processed event id is remembered for dedup (seconds; default 7 days).
    pub dedup_ttl_secs: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            dedup_ttl_secs: 7 * 24 * 60 * 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://user[:password]@host:port/db`, or `sqlite://DIR` (one SQLite file per
    /// broker plus `shared.sqlite` in DIR). Absent: no database (nothing recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Put before every schema (PostgreSQL) or file (SQLite) and role name: the broker
    /// `paper` lives in schema `{schema_prefix}paper`, written by role
    /// `{schema_prefix}paper_writer`; shared tables in `{schema_prefix}shared`. Lowercase
    /// letters, digits and `_`; empty by default.
    pub schema_prefix: String,
    /// Most records the recorder writes in one transaction.
    pub batch_records: u32,
    /// Longest the recorder waits to fill a batch, in milliseconds.
    pub batch_ms: u64,
    /// Start with the strategies stored by `alpha-panda strategies import` (PostgreSQL)
    /// instead of the `strategies` of the settings.
    pub strategies_from_database: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            schema_prefix: String::new(),
            batch_records: 500,
            batch_ms: 200,
            strategies_from_database: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address of the admin and metrics HTTP server.
    pub listen: SocketAddr,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer token for `/admin/*` and, when set, for the read routes that show positions
    /// and PnL (`/status`, `/portfolio/{broker}`, the console's data). At least 24
    /// characters. Absent: admin routes answer 403 and read routes are open.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_lenient_string"
    )]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `alpha_panda=debug,rdkafka=warn`, …
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where ticks come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// `feed = "synthetic"`: seeded random walks, see `[synthetic]`.
    Synthetic,
    /// `feed = { replay = "FILE", speed = 10.0 }`: ticks from a CSV or JSONL file; no
    /// `speed` means as fast as possible.
    Replay { file: PathBuf, speed: Option<f64> },
    /// `feed = "kite"`: the KiteTicker WebSocket of the zerodha broker.
    Kite,
    /// `feed = "none"`: ticks arrive on `market.ticks` from elsewhere.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticFeed {
    pub seed: u64,
    /// Ticks per second for each instrument.
    pub ticks_per_second: f64,
    /// Standard deviation of one tick's log return.
    pub volatility: f64,
    pub instruments: Vec<SyntheticInstrument>,
}

impl Default for SyntheticFeed {
    fn default() -> Self {
        let i = |token, symbol: &str, price: i64| SyntheticInstrument {
            instrument_token: InstrumentToken(token),
            symbol: symbol.to_owned(),
            start_price: Decimal::new(price, 2),
        };
        Self {
            seed: 42,
            ticks_per_second: 5.0,
            volatility: 0.001,
            instruments: vec![
                i(738561, "RELIANCE", 245005),
                i(408065, "INFY", 150020),
                i(2953217, "TCS", 352575),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticInstrument {
    pub instrument_token: InstrumentToken,
    pub symbol: String,
    pub start_price: Decimal,
}

/// What executes a broker's orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    Paper,
    Zerodha,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub kind: BrokerKind,
    /// The trading account orders are placed in (orders are keyed `account|strategy`).
    pub account: AccountId,
    /// Paper brokers: how orders fill.
    #[serde(default)]
    pub fill_model: FillModel,
    /// Zerodha brokers: Kite Connect credentials and endpoint.
    #[serde(default)]
    pub kite: KiteSettings,
}

impl BrokerSettings {
    fn paper() -> Self {
        Self {
            kind: BrokerKind::Paper,
            // Truly unreachable: a constant id that `AccountId::new` accepts (unit-tested by
            // `Settings::default()` in every test).
            account: AccountId::new("paper_main").unwrap_or_else(|e| unreachable!("{e}")),
            fill_model: FillModel::default(),
            kite: KiteSettings::default(),
        }
    }

    fn zerodha() -> Self {
        Self {
            kind: BrokerKind::Zerodha,
            // Truly unreachable: a constant id, as above.
            account: AccountId::new("zerodha_main").unwrap_or_else(|e| unreachable!("{e}")),
            fill_model: FillModel::default(),
            kite: KiteSettings::default(),
        }
    }
}

/// Paper fills: slippage, charges, cash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FillModel {
    /// Seed of the simulator's random choices.
    pub seed: u64,
    /// Market orders fill at the reference price ± this many basis points.
    pub slippage_bps: Decimal,
    /// Cash each strategy starts with.
    pub starting_cash: Decimal,
    /// Whether a strategy may sell what it does not hold.
    pub allow_short: bool,
    pub charges: Charges,
}

impl Default for FillModel {
    fn default() -> Self {
        Self {
            seed: 7,
            slippage_bps: Decimal::new(5, 0),
            starting_cash: Decimal::new(1_000_000, 0),
            allow_short: false,
            charges: Charges::default(),
        }
    }
}

/// Charges per fill, shaped like Indian equity intraday charges. Percentages are of the
/// fill's turnover (price × quantity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Charges {
    /// Brokerage: this percentage of turnover…
    pub brokerage_pct: Decimal,
    /// …capped at this amount per order.
    pub brokerage_cap: Decimal,
    /// Securities transaction tax, on the sell side.
    pub stt_sell_pct: Decimal,
    /// Exchange transaction charge, both sides.
    pub exchange_txn_pct: Decimal,
    /// GST on brokerage + exchange charge + SEBI fee.
    pub gst_pct: Decimal,
    /// SEBI turnover fee per crore (10 000 000) of turnover.
    pub sebi_per_crore: Decimal,
    /// Stamp duty, on the buy side.
    pub stamp_buy_pct: Decimal,
}

impl Default for Charges {
    fn default() -> Self {
        Self {
            brokerage_pct: Decimal::new(3, 2),      // 0.03 %
            brokerage_cap: Decimal::new(20, 0),     // ₹20
            stt_sell_pct: Decimal::new(25, 3),      // 0.025 %
            exchange_txn_pct: Decimal::new(297, 5), // 0.00297 %
            gst_pct: Decimal::new(18, 0),           // 18 %
            sebi_per_crore: Decimal::new(10, 0),    // ₹10 / crore
            stamp_buy_pct: Decimal::new(3, 3),      // 0.003 %
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KiteSettings {
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_lenient_string"
    )]
    pub api_key: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_lenient_string"
    )]
    pub api_secret: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_lenient_string"
    )]
    pub access_token: Option<String>,
    /// REST endpoint; a simulator's address in tests.
    pub api_url: String,
    /// KiteTicker WebSocket endpoint.
    pub ticker_url: String,
    /// Order placements allowed per minute (sliding) before Kite's own cap; refused locally.
    pub orders_per_minute: u32,
    /// Order placements allowed per IST day; refused locally.
    pub orders_per_day: u32,
    /// Whole-request timeout of a REST call, in milliseconds.
    pub request_timeout_ms: u64,
    /// Instrument tokens the `kite` feed subscribes to.
    pub ticker_instruments: Vec<u32>,
    /// The mode of those subscriptions.
    pub ticker_mode: TickerMode,
    /// Seconds without any ticker message (data or heartbeat) before reconnecting.
    pub ticker_read_timeout_secs: u64,
    /// How often the trader reads the order book while an order waits for Kite (ms).
    pub order_poll_ms: u64,
    /// IST time (`HH:MM`) at which the trader squares off the MIS positions its fills made.
    pub square_off_at: String,
}

impl KiteSettings {
    /// `square_off_at` as (hour, minute), or `None` when it is not `HH:MM`.
    pub fn square_off_time(&self) -> Option<(u32, u32)> {
        let (h, m) = self.square_off_at.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some((h, m))
    }
}

/// KiteTicker subscription modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TickerMode {
    Ltp,
    Quote,
    Full,
}

impl Default for KiteSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            api_secret: None,
            access_token: None,
            api_url: "https://api.kite.trade".to_owned(),
            ticker_url: "wss://ws.kite.trade".to_owned(),
            orders_per_minute: 200,
            orders_per_day: 3000,
            request_timeout_ms: 7000,
            ticker_instruments: Vec::new(),
            ticker_mode: TickerMode::Full,
            ticker_read_timeout_secs: 10,
            order_poll_ms: 1000,
            square_off_at: "15:20".to_owned(),
        }
    }
}

/// The built-in strategy kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Momentum,
    MeanReversion,
    Rsi,
    SmaCrossover,
    EmaCrossover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySettings {
    pub id: StrategyId,
    pub kind: StrategyKind,
    pub instruments: Vec<InstrumentToken>,
    /// Parameters of the kind; each kind documents its own and their defaults.
    #[serde(default)]
    pub params: toml::Table,
    /// Brokers the strategy's signals go to (those of them that are active).
    #[serde(default = "default_strategy_brokers")]
    pub brokers: Vec<BrokerName>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How the strategy's signals are placed: `MARKET` (default) fills against the tick
    /// that caused the signal; `LIMIT` is priced `limit_offset_bps` better than that tick
    /// (below it for a BUY, above it for a SELL) and rests until a later tick reaches it.
    #[serde(default = "default_order_type")]
    pub order_type: OrderType,
    /// LIMIT orders: how far from the tick, in basis points (0 ≤ x < 10000).
    #[serde(default)]
    pub limit_offset_bps: Decimal,
}

fn default_order_type() -> OrderType {
    OrderType::Market
}

fn default_strategy_brokers() -> Vec<BrokerName> {
    vec![BrokerName::paper()]
}

fn default_true() -> bool {
    true
}

impl StrategySettings {
    /// The three strategies of the embedded default, over the synthetic instruments.
    fn defaults() -> Vec<Self> {
        let s = |id: &str, kind, instruments: &[u32]| StrategySettings {
            // Truly unreachable: `id` is one of the constant ids below.
            id: StrategyId::new(id).unwrap_or_else(|e| unreachable!("{e}")),
            kind,
            instruments: instruments.iter().copied().map(InstrumentToken).collect(),
            params: toml::Table::new(),
            brokers: default_strategy_brokers(),
            enabled: true,
            order_type: OrderType::Market,
            limit_offset_bps: Decimal::ZERO,
        };
        vec![
            s("momentum_1", StrategyKind::Momentum, &[738561, 408065]),
            s(
                "mean_reversion_1",
                StrategyKind::MeanReversion,
                &[408065, 2953217],
            ),
            s("rsi_1", StrategyKind::Rsi, &[738561, 2953217]),
        ]
    }
}

/// Risk limits of one broker. Every limit has a default; raise one to effectively lift it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskSettings {
    /// Largest absolute net position per instrument (shares).
    pub max_position_per_instrument: u64,
    /// Largest price × quantity of one order.
    pub max_order_notional: Decimal,
    /// Largest Σ |position| × price over all instruments.
    pub max_gross_exposure: Decimal,
    /// Largest loss (realized + unrealized) in a trading day, as a positive amount.
    pub max_daily_loss: Decimal,
    /// Most orders per strategy per NSE trading day.
    pub max_orders_per_day: u32,
    /// Most orders per second.
    pub max_orders_per_second: u32,
    /// Largest distance of the order price from the last tick, in percent.
    pub price_band_pct: Decimal,
    /// Refuse every new order of this broker.
    pub kill_switch: bool,
    /// Instruments this broker may trade; empty means any.
    pub allowed_instruments: Vec<InstrumentToken>,
    /// Check NSE hours (09:15–15:30 IST, weekdays, not on `holidays`). Off for backtests and
    /// round-the-clock testing.
    pub market_hours: bool,
    /// Exchange holidays, `YYYY-MM-DD`.
    pub holidays: Vec<String>,
    /// Per-strategy overrides: `[risk.paper.strategies.momentum_1]`.
    pub strategies: BTreeMap<StrategyId, StrategyRiskOverride>,
}

impl Default for RiskSettings {
    fn default() -> Self {
        Self {
            max_position_per_instrument: 1_000,
            max_order_notional: Decimal::new(500_000, 0),
            max_gross_exposure: Decimal::new(2_000_000, 0),
            max_daily_loss: Decimal::new(50_000, 0),
            max_orders_per_day: 200,
            max_orders_per_second: 10,
            price_band_pct: Decimal::new(5, 0),
            kill_switch: false,
            allowed_instruments: Vec::new(),
            market_hours: false,
            holidays: Vec::new(),
            strategies: BTreeMap::new(),
        }
    }
}

/// A strategy's overrides of its broker's limits: only what it sets replaces the broker's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyRiskOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_position_per_instrument: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_order_notional: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gross_exposure: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_daily_loss: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_orders_per_day: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_orders_per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_band_pct: Option<Decimal>,
    /// Refuse every new order of this strategy on this broker.
    pub kill_switch: bool,
}
