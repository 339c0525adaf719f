//! `alpha-panda run`: the long-lived daemon.
//!
//! Assembles the pipeline on the configured transport: the feed publishes ticks; the
//! strategy stage (shared by all brokers) turns them into signals; per active broker a risk
//! stage, a trader (the paper simulator; a live Zerodha trader is not built yet) and a
//! portfolio stage follow. Every stage consumes through the delivery bridge. The operations
//! HTTP server serves the operator console, `/healthz`, `/status`, `/portfolio/{broker}` and
//! the admin commands; a console reader follows the snapshot, fill, rejection and DLQ
//! topics for the console (outside every consumer group). With Kafka and a PostgreSQL
//! `database.url`, a recorder per active broker copies its order, fill, snapshot and
//! rejection topics into the broker's schema (`alpha_panda_db::recorder`). On the in-process
//! transport the bus and the memory store are rebuilt from `data_dir` and journal every change
//! there (`crate::data_dir`, locked: one daemon per directory), unless `--ephemeral`; a
//! recorder per broker fills the broker's SQLite file there (or in a `sqlite://`
//! `database.url`). Every admin call and trading-state change is written by the audit writer
//! (`alpha_panda_db::audit`); `POST /admin/strategies/reload` and SIGHUP reload the
//! strategies (`crate::reload`). SIGTERM/SIGINT stop the feed, drain every
//! stage (in-flight records finish, offsets are committed), write the data directory last and
//! exit 0.

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::console::{Console, Limits, tail};
use alpha_panda_actors::delivery::origin::FeedOrigin;
use alpha_panda_actors::delivery::threads::WorkerThreads;
use alpha_panda_actors::delivery::{EventProducer, Output, inprocess};
use alpha_panda_actors::feed::SyntheticFeed;
use alpha_panda_actors::http::{self, View};
use alpha_panda_actors::stages::{self, Counters};
use alpha_panda_actors::store::{MemoryStore, RedisStore, Store};
use alpha_panda_config::{Feed, Settings};
use alpha_panda_core::{EventBroker, EventData, EventEnvelope, Timestamp};
use alpha_panda_db::audit::{AuditTarget, AuditWriter};
use alpha_panda_db::recorder::sqlite::{SqliteRecorder, SqliteRecorderConfig};
use alpha_panda_db::recorder::{Recorder, RecorderConfig};
use alpha_panda_topics::{BrokerTopic, TopicName, keys, topics_for};
use anyhow::Context;

use crate::pipeline::{Assembly, Transport};

/// What the embedded default (the in-process transport) keeps between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Everything in `data_dir` (`transport.sqlite`): a restart continues where it stopped.
    DataDir,
    /// `--ephemeral`: memory only; a restart starts afresh.
    Nothing,
}

/// Runs the daemon until SIGTERM/SIGINT; `reload` is where `POST /admin/strategies/reload`
/// and SIGHUP read new strategies.
pub fn run(settings: Settings, keep: Keep, reload: crate::reload::Source) -> anyhow::Result<()> {
    let system = actix_rt::System::new();
    system.block_on(run_async(Arc::new(settings), keep, reload))
}

async fn run_async(
    settings: Arc<Settings>,
    keep: Keep,
    reload: crate::reload::Source,
) -> anyhow::Result<()> {
    let topics = topics_for(&settings.active_brokers);
    let data_dir = match (&settings.kafka.bootstrap_servers, keep) {
        (None, Keep::DataDir) => Some(crate::data_dir::open(&settings.data_dir)?),
        _ => None,
    };
    let (transport, producer) = match &settings.kafka.bootstrap_servers {
        Some(servers) => {
            alpha_panda_actors::kafka::admin::ensure(servers, &settings.kafka.client_id, &topics)
                .await
                .with_context(|| format!("creating the topics on Kafka at {servers}"))?;
            let producer = EventProducer::kafka(
                servers,
                &settings.kafka.client_id,
                settings.kafka.linger_ms,
                settings.kafka.max_batch_records,
            )
            .context("creating the Kafka producer")?;
            (Transport::Kafka(servers.clone()), producer)
        }
        None => {
            let bus = match &data_dir {
                Some(d) => d.bus(),
                None => inprocess::InProcessBus::new(),
            };
            // A long-lived daemon keeps, of the ticks and signals (read by consumer groups
            // alone), only what its groups have still to read; the orders, fills and PnL
            // the recorder and the console read, and the DLQs, are kept.
            let trimmed: Vec<TopicName> = topics
                .iter()
                .filter(|t| {
                    matches!(
                        t,
                        TopicName::MarketTicks { dlq: false }
                            | TopicName::Broker {
                                topic: BrokerTopic::SignalsRaw | BrokerTopic::SignalsValidated,
                                dlq: false,
                                ..
                            }
                    )
                })
                .cloned()
                .collect();
            bus.trim_consumed(&trimmed);
            bus.create_topics(&topics);
            (
                Transport::InProcess(bus.clone()),
                EventProducer::InProcess(bus),
            )
        }
    };
    let store = match &settings.redis.url {
        Some(url) => Store::Redis(
            RedisStore::connect(url)
                .await
                .context("connecting to Redis")?,
        ),
        None => Store::Memory(match &data_dir {
            Some(d) => d.store(),
            None => MemoryStore::default(),
        }),
    };
    let (data_dir, _data_dir_lock) = match data_dir.map(crate::data_dir::DataDir::into_journal) {
        Some((journal, lock)) => (Some(journal), Some(lock)),
        None => (None, None),
    };
    tracing::info!(
        transport = match &transport { Transport::Kafka(s) => format!("kafka at {s}"), Transport::InProcess(_) => "in-process".to_owned() },
        store = if settings.redis.url.is_some() { "redis" } else { "in-memory" },
        data_dir = %data_dir.as_ref().map_or_else(|| "none (memory only)".to_owned(), |j| j.path().display().to_string()),
        brokers = ?settings.active_brokers.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
        strategies = settings.strategies.iter().filter(|s| s.enabled).count(),
        http = %settings.http.listen,
        "alpha-panda starting"
    );
    let mut a = Assembly::new(settings.clone(), transport, producer.clone(), store.clone());
    let audit = start_audit(&settings, data_dir.is_some(), &a.control)?;
    a.control.set_reloader(
        crate::reload::reloader(settings.clone(), reload, a.live.clone()),
        a.live.clone(),
    );
    a.load_control().await?;
    let zerodha =
        crate::kite::trader(&settings, &store, a.control.clone(), producer.clone()).await?;
    a.zerodha = zerodha.as_ref().map(|z| z.trader.clone());
    // Over Kafka, partition workers spread over `delivery.threads` arbiters.
    let workers = matches!(a.transport, Transport::Kafka(_))
        .then(|| WorkerThreads::start(settings.delivery.threads));
    if let Some(w) = &workers {
        a.workers = w.arbiters();
    }
    for (broker, strategy, state) in a.control.trading_states() {
        if state != alpha_panda_core::TradingState::Active {
            tracing::warn!(
                broker,
                strategy,
                state = state.as_str(),
                "trading state kept from before the restart"
            );
        }
    }
    let counters = Arc::new(Counters::default());
    let members = a.start_stages(&counters)?;
    let recorders = start_recorders(&settings, &a.transport, data_dir.as_ref(), &a.control)?;

    let console = Console::new(Limits::default());
    let console_reader = match &a.transport {
        Transport::InProcess(bus) => {
            tail::spawn_inprocess(bus.clone(), &settings.active_brokers, console.clone())
        }
        Transport::Kafka(servers) => tail::spawn_kafka(
            servers.clone(),
            settings.kafka.client_id.clone(),
            format!("{}.console", settings.kafka.group_prefix),
            &settings.active_brokers,
            console.clone(),
        ),
    };
    let server = http::server(
        settings.http.listen,
        View {
            settings: settings.clone(),
            store: store.clone(),
            control: a.control.clone(),
            stages: a.stages(),
            services: alpha_panda_actors::readiness::ServiceChecks::services(
                settings.kafka.bootstrap_servers.clone(),
                &settings.kafka.client_id,
                store.clone(),
            ),
            console,
        },
    )
    .with_context(|| format!("cannot listen on http.listen = {}", settings.http.listen))?;
    let http_handle = server.handle();
    actix_rt::spawn(server);
    let sampler = actix_rt::spawn(sample(
        a.control.clone(),
        match &a.transport {
            Transport::InProcess(bus) => Some(bus.clone()),
            Transport::Kafka(_) => None,
        },
        a.strategy_ids(),
        a.live.clone(),
    ));

    let feed = match &settings.feed {
        Feed::Synthetic => Some(actix_rt::spawn(synthetic_feed(
            settings.clone(),
            producer.clone(),
            feed_origin(&settings, &store),
        ))),
        Feed::None => None,
        Feed::Replay { file, speed } => {
            let ticks = alpha_panda_actors::feed::load_ticks(file)?;
            tracing::info!(file = %file.display(), ticks = ticks.len(), speed = ?speed, "replaying ticks");
            Some(actix_rt::spawn(replay_feed(
                ticks,
                *speed,
                producer.clone(),
                feed_origin(&settings, &store),
            )))
        }
        Feed::Kite => Some(actix_rt::spawn(crate::kite::feed(
            settings.clone(),
            producer.clone(),
            store.clone(),
            a.control.clone(),
            zerodha.as_ref().map(|z| z.updates.clone()),
        ))),
    };
    let stats = actix_rt::spawn(report(settings.clone(), store.clone(), counters.clone()));
    let snapshots = (settings.portfolio.snapshot_interval_secs > 0).then(|| {
        let (settings, store, producer) = (settings.clone(), store.clone(), producer.clone());
        let live = a.live.clone();
        actix_rt::spawn(async move {
            let period = Duration::from_secs(settings.portfolio.snapshot_interval_secs);
            loop {
                tokio::time::sleep(period).await;
                let current = with_reloaded(&settings, &live);
                if let Err(e) = publish_snapshots(&current, &store, &producer).await {
                    tracing::warn!(error = %e, "periodic PnL snapshots not published");
                }
            }
        })
    });

    let sighup = actix_rt::spawn({
        let control = a.control.clone();
        async move {
            if let Err(e) = crate::reload::on_sighup(control).await {
                tracing::error!(error = %e, "SIGHUP does not reload the strategies");
            }
        }
    });

    shutdown_signal().await?;
    tracing::info!("shutdown requested; draining");
    sighup.abort();
    if let Some(f) = feed {
        f.abort();
    }
    stats.abort();
    sampler.abort();
    if let Some(s) = snapshots {
        s.abort();
    }
    // Each step's time is logged, so a stop that hangs names the step it hangs in.
    let stopping = std::time::Instant::now();
    let step = |what: &str| {
        tracing::info!(
            elapsed_ms = stopping.elapsed().as_millis() as u64,
            "shutdown: {what} stopped"
        );
    };
    // The consumers drain at the same time: each finishes its in-flight batch, commits and
    // leaves its group on its own, and a stop takes the slowest one's time, not their sum.
    let n = members.len();
    let draining: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            actix_rt::spawn(async move {
                m.shutdown().await;
                tracing::info!(
                    elapsed_ms = stopping.elapsed().as_millis() as u64,
                    "shutdown: consumer {} of {n} stopped",
                    i + 1
                );
            })
        })
        .collect();
    for d in draining {
        let _ = d.await;
    }
    if let Some(w) = workers {
        let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        step("worker threads");
    }
    if let Some(z) = zerodha {
        z.stop();
        step("zerodha trader");
    }
    http_handle.stop(true).await;
    step("http server");
    console_reader.shutdown().await;
    step("console reader");
    // Each recorder finishes the batch in hand; joining its thread blocks, so not here.
    let _ =
        tokio::task::spawn_blocking(move || recorders.into_iter().for_each(Recording::stop)).await;
    if let Some(writer) = audit {
        let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
    }
    if let Some(journal) = data_dir {
        // Last: every stage has drained, so what is queued is everything.
        let closed =
            tokio::task::spawn_blocking(move || journal.close(Duration::from_secs(30))).await;
        match closed {
            Ok(Ok(())) => tracing::info!("data directory written"),
            Ok(Err(e)) => tracing::error!(error = %e, "data directory not fully written"),
            Err(e) => tracing::error!(error = %e, "data directory writer failed"),
        }
    }
    tracing::info!("alpha-panda stopped");
    Ok(())
}

/// The audit writer (`alpha_panda_db::audit`): into PostgreSQL or a `sqlite://` directory
/// when `database.url` is set, else into the data directory's broker files on the embedded
/// default (migrated here: the daemon owns those files); without either, audit events are
/// logged only.
fn start_audit(
    settings: &Settings,
    embedded: bool,
    control: &Arc<alpha_panda_actors::control::Control>,
) -> anyhow::Result<Option<AuditWriter>> {
    let layout = alpha_panda_db::Layout::new(settings.database.schema_prefix.clone());
    let target = match alpha_panda_db::Target::from_settings(&settings.database)? {
        Some(alpha_panda_db::Target::Postgres { url }) => AuditTarget::Postgres { url },
        _ => match sqlite_dir(settings, embedded)? {
            Some(dir) => AuditTarget::Sqlite { dir },
            None => return Ok(None),
        },
    };
    if let AuditTarget::Sqlite { dir } = &target {
        alpha_panda_db::migrate::migrate(
            &alpha_panda_db::Target::Sqlite { dir: dir.clone() },
            &layout,
            &settings.active_brokers,
        )
        .with_context(|| format!("migrating the broker files in {}", dir.display()))?;
    }
    let (sink, events) =
        alpha_panda_actors::audit::AuditSink::channel(alpha_panda_actors::audit::QUEUE);
    let writer = AuditWriter::spawn(target, layout, settings.active_brokers.clone(), events)?;
    control.set_audit(sink);
    Ok(Some(writer))
}

/// The directory of the broker SQLite files: a `sqlite://` `database.url`, else the data
/// directory on the embedded default; `None` with PostgreSQL or with neither.
fn sqlite_dir(settings: &Settings, embedded: bool) -> anyhow::Result<Option<std::path::PathBuf>> {
    Ok(
        match alpha_panda_db::Target::from_settings(&settings.database)? {
            Some(alpha_panda_db::Target::Sqlite { dir }) => Some(dir),
            Some(alpha_panda_db::Target::Postgres { .. }) => None,
            None => embedded.then(|| settings.data_dir.clone()),
        },
    )
}

/// A running recorder of either kind.
enum Recording {
    Kafka(Recorder),
    Sqlite(SqliteRecorder),
}

impl Recording {
    fn stop(self) {
        match self {
            Recording::Kafka(r) => r.stop(),
            Recording::Sqlite(r) => r.stop(),
        }
    }
}

/// One recorder per active broker: over Kafka into PostgreSQL (`db migrate` must have run:
/// a recorder acts as its broker's writer role), or over the in-process bus into the broker
/// SQLite files (the data directory on the embedded default, or a `sqlite://` URL).
fn start_recorders(
    settings: &Settings,
    transport: &Transport,
    journal: Option<&Arc<alpha_panda_db::embedded::SqliteJournal>>,
    control: &Arc<alpha_panda_actors::control::Control>,
) -> anyhow::Result<Vec<Recording>> {
    let charges_of = |b: &alpha_panda_core::BrokerName| {
        settings
            .brokers
            .get(b)
            .map(|bs| bs.fill_model.charges.clone())
            .unwrap_or_default()
    };
    if let Transport::InProcess(bus) = transport
        && let Some(dir) = sqlite_dir(settings, journal.is_some())?
    {
        let layout = alpha_panda_db::Layout::new(settings.database.schema_prefix.clone());
        return settings
            .active_brokers
            .iter()
            .map(|b| {
                let cfg = SqliteRecorderConfig {
                    dir: dir.clone(),
                    layout: layout.clone(),
                    broker: b.clone(),
                    charges: charges_of(b),
                    batch_records: settings.database.batch_records as usize,
                    batch_wait: Duration::from_millis(settings.database.batch_ms),
                    journal: journal.cloned(),
                };
                SqliteRecorder::spawn(cfg, bus.clone(), control.clone())
                    .map(Recording::Sqlite)
                    .with_context(|| format!("starting the recorder of {b}"))
            })
            .collect();
    }
    let target = alpha_panda_db::Target::from_settings(&settings.database)?;
    let (servers, url) = match (transport, target) {
        (Transport::Kafka(servers), Some(alpha_panda_db::Target::Postgres { url })) => {
            (servers.clone(), url)
        }
        (_, None) => return Ok(Vec::new()),
        (_, Some(t)) => {
            tracing::warn!(
                database = %t.describe(),
                "nothing is recorded: a recorder runs over Kafka into PostgreSQL, or in-process into SQLite"
            );
            return Ok(Vec::new());
        }
    };
    let layout = alpha_panda_db::Layout::new(settings.database.schema_prefix.clone());
    settings
        .active_brokers
        .iter()
        .map(|b| {
            let charges = charges_of(b);
            let cfg = RecorderConfig {
                kafka_servers: servers.clone(),
                client_id: settings.kafka.client_id.clone(),
                group: format!("{}.{b}.recorder", settings.kafka.group_prefix),
                session_timeout_ms: settings.kafka.session_timeout_ms,
                broker: b.clone(),
                database_url: url.clone(),
                layout: layout.clone(),
                charges,
                batch_records: settings.database.batch_records as usize,
                batch_wait: Duration::from_millis(settings.database.batch_ms),
            };
            Recorder::spawn(cfg, control.clone())
                .map(Recording::Kafka)
                .with_context(|| format!("starting the recorder of {b}"))
        })
        .collect()
}

/// The origin this daemon's feed stamps on its ticks (`delivery::origin::FeedOrigin`): named
/// after `kafka.instance_id`; without one, `embedded` on the in-process transport (one daemon
/// per data directory), else after this run (two daemons sharing Kafka must not share it).
pub(crate) fn feed_origin(settings: &Settings, store: &Store) -> FeedOrigin {
    let id = match (
        &settings.kafka.instance_id,
        &settings.kafka.bootstrap_servers,
    ) {
        (Some(id), _) => id.clone(),
        (None, None) => "embedded".to_owned(),
        (None, Some(_)) => format!("run-{}", uuid::Uuid::now_v7().simple()),
    };
    FeedOrigin::new(store.clone(), &id)
}

/// Sends one batch of a feed's ticks, stamped with the feed's next origin (or none, with
/// event-id dedup downstream, when the store cannot reserve a sequence block).
pub(crate) async fn send_ticks(
    producer: &EventProducer,
    origin: &mut FeedOrigin,
    outputs: &[Output],
) -> Result<(), alpha_panda_actors::delivery::producer::ProduceError> {
    let source = match origin.next().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no feed sequence: ticks go out without an origin");
            None
        }
    };
    producer.send_all_from(outputs, source.as_ref()).await
}

async fn synthetic_feed(settings: Arc<Settings>, producer: EventProducer, mut origin: FeedOrigin) {
    let mut feed = SyntheticFeed::new(&settings.synthetic);
    let period = Duration::from_secs_f64(1.0 / settings.synthetic.ticks_per_second);
    let mut interval = tokio::time::interval(period);
    loop {
        interval.tick().await;
        let now = Timestamp::now();
        let outputs: Vec<Output> = feed
            .next_ticks(now)
            .into_iter()
            .map(|tick| Output {
                topic: TopicName::market_ticks(),
                envelope: EventEnvelope::root(
                    EventBroker::Shared,
                    "feed",
                    keys::tick(tick.instrument_token),
                    now,
                    EventData::MarketTick(tick),
                ),
            })
            .collect();
        if let Err(e) = send_ticks(&producer, &mut origin, &outputs).await {
            tracing::warn!(error = %e, "publishing ticks failed");
        }
    }
}

/// Publishes a tick file in order: as fast as possible without `speed`, else pacing the
/// event-time gaps between ticks divided by `speed` (1 = real time).
async fn replay_feed(
    ticks: Vec<alpha_panda_core::events::MarketTick>,
    speed: Option<f64>,
    producer: EventProducer,
    mut origin: FeedOrigin,
) {
    let started = tokio::time::Instant::now();
    let first = ticks.first().map(|t| t.timestamp);
    for tick in ticks {
        if let (Some(speed), Some(first)) = (speed, first) {
            let offset = (tick.timestamp.0 - first.0).to_std().unwrap_or_default();
            tokio::time::sleep_until(started + offset.div_f64(speed)).await;
        }
        let out = Output {
            topic: TopicName::market_ticks(),
            envelope: EventEnvelope::root(
                EventBroker::Shared,
                "feed",
                keys::tick(tick.instrument_token),
                tick.timestamp,
                EventData::MarketTick(tick),
            ),
        };
        if let Err(e) = send_ticks(&producer, &mut origin, &[out]).await {
            tracing::warn!(error = %e, "publishing a replayed tick failed");
        }
    }
    tracing::info!("replay finished");
}

/// Every second: per-partition rates and hot partitions (every 5 s), in-process consumer
/// lag, and the trading states and pauses other daemons sharing the store have set.
async fn sample(
    control: Arc<alpha_panda_actors::control::Control>,
    bus: Option<inprocess::InProcessBus>,
    started_with: Vec<String>,
    live: alpha_panda_actors::strategy::Live,
) {
    let rates = alpha_panda_actors::metrics::PartitionRates::default();
    let mut last_rates = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if last_rates.elapsed() >= Duration::from_secs(5) {
            rates.sample(last_rates.elapsed());
            last_rates = tokio::time::Instant::now();
        }
        if let Some(bus) = &bus {
            for (group, topic, partition, lag) in bus.lags() {
                control.set_lag(&group, &topic, partition, lag);
            }
        }
        // The states of strategies a reload added are kept too.
        let mut strategies = started_with.clone();
        for s in &live.current().1.strategies {
            if !strategies.iter().any(|x| x == s.id.as_str()) {
                strategies.push(s.id.to_string());
            }
        }
        if let Err(e) = control.refresh(&strategies).await {
            tracing::warn!(error = %e, "cannot reload trading states and pauses from the store");
        }
    }
}

/// The settings the daemon started with, their strategies extended by those a reload added
/// (a strategy a reload removed keeps its book, so it stays listed).
fn with_reloaded(started: &Settings, live: &alpha_panda_actors::strategy::Live) -> Settings {
    let mut out = started.clone();
    for st in &live.current().1.strategies {
        if !out.strategies.iter().any(|s| s.id == st.id) {
            out.strategies.push(st.clone());
        }
    }
    out
}

/// Publishes every strategy's current book (as stored by the portfolio stage, marked to the
/// latest ticks) as a `pnl_snapshot` on `{broker}.pnl.snapshots`, stamped now. Returns how
/// many went out.
pub async fn publish_snapshots(
    settings: &Settings,
    store: &Store,
    producer: &EventProducer,
) -> anyhow::Result<usize> {
    let now = Timestamp::now();
    let mut outputs = Vec::new();
    for broker in &settings.active_brokers {
        for st in settings
            .strategies
            .iter()
            .filter(|s| s.brokers.contains(broker))
        {
            let Some(json) = store.get(&stages::portfolio_key(broker, &st.id)).await? else {
                continue;
            };
            let mut snap: alpha_panda_core::events::PnlSnapshot = serde_json::from_str(&json)
                .with_context(|| format!("stored portfolio of {} on {broker}", st.id))?;
            snap.timestamp = now;
            let key = keys::snapshot(&snap.account);
            outputs.push(Output {
                topic: TopicName::broker(broker, alpha_panda_topics::BrokerTopic::PnlSnapshots),
                envelope: EventEnvelope::root(
                    EventBroker::Broker(broker.clone()),
                    "portfolio",
                    key,
                    now,
                    EventData::PnlSnapshot(snap),
                ),
            });
        }
    }
    producer.send_all(&outputs).await?;
    Ok(outputs.len())
}

/// Every 5 s: ticks, signals, orders and fills per second, and PnL per strategy.
async fn report(settings: Arc<Settings>, store: Store, counters: Arc<Counters>) {
    let period = Duration::from_secs(5);
    let mut last = counters.snapshot();
    loop {
        tokio::time::sleep(period).await;
        let now = counters.snapshot();
        let rate = |i: usize| (now[i] - last[i]) as f64 / period.as_secs_f64();
        tracing::info!(
            ticks_per_s = rate(0),
            signals_per_s = rate(1),
            orders_per_s = rate(2),
            fills_per_s = rate(3),
            rejected_per_s = rate(4),
            "pipeline"
        );
        last = now;
        for broker in &settings.active_brokers {
            for st in settings
                .strategies
                .iter()
                .filter(|s| s.enabled && s.brokers.contains(broker))
            {
                if let Ok(Some(json)) = store.get(&stages::portfolio_key(broker, &st.id)).await
                    && let Ok(snap) =
                        serde_json::from_str::<alpha_panda_core::events::PnlSnapshot>(&json)
                {
                    alpha_panda_actors::metrics::set_pnl(broker.as_str(), &snap);
                    tracing::info!(
                        broker = broker.as_str(),
                        strategy = st.id.as_str(),
                        realized = %snap.realized_pnl,
                        unrealized = %snap.unrealized_pnl,
                        total = %snap.total_pnl,
                        cash = %snap.cash,
                        "pnl"
                    );
                }
            }
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
