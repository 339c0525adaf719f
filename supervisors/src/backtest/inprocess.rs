//! The reference driver of the backtest's equivalence test: the same stages as actors on the
//! in-process transport, fed the ticks as the old `backtest` command did (each tick an
//! envelope appended to `market.ticks`, ids derived from its position in the file). The
//! event-time loop (`event_loop`) must give exactly these fills and summaries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::EventProducer;
use alpha_panda_actors::delivery::inprocess::{InProcessBus, StoredRecord};
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_config::{Feed, Settings};
use alpha_panda_core::{EventBroker, EventData, EventEnvelope};
use alpha_panda_topics::{BrokerTopic, TopicName, keys, topics_for};

use super::{BacktestReport, Outcome, event_loop::tick_id};
use crate::pipeline::{Assembly, Transport};

/// Runs `ticks` through the actors on the in-process transport.
pub fn run_in_process(
    mut settings: Settings,
    ticks: Vec<alpha_panda_core::events::MarketTick>,
) -> anyhow::Result<BacktestReport> {
    settings.kafka.bootstrap_servers = None;
    settings.redis.url = None;
    settings.database.url = None;
    settings.feed = Feed::None;
    actix_rt::System::new().block_on(run_async(Arc::new(settings), ticks))
}

async fn run_async(
    settings: Arc<Settings>,
    ticks: Vec<alpha_panda_core::events::MarketTick>,
) -> anyhow::Result<BacktestReport> {
    let bus = InProcessBus::new();
    bus.create_topics(&topics_for(&settings.active_brokers));
    let a = Assembly::new(
        settings.clone(),
        Transport::InProcess(bus.clone()),
        EventProducer::InProcess(bus.clone()),
        Store::Memory(MemoryStore::default()),
    );
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let members = a.start_stages(&counters)?;
    let mut last_prices = HashMap::new();
    let ticks_topic = TopicName::market_ticks().to_string();
    for (i, tick) in ticks.iter().enumerate() {
        last_prices.insert(tick.instrument_token, tick.last_price.get());
        // Replayed ticks get ids derived from their position in the file, so a backtest of
        // the same file produces the same event ids every time.
        let id = tick_id(i as u64);
        let mut env = EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            keys::tick(tick.instrument_token),
            tick.timestamp,
            EventData::MarketTick(tick.clone()),
        );
        (env.id, env.correlation_id, env.trace_id) = (id, id, id);
        bus.append(
            &ticks_topic,
            StoredRecord {
                key: Some(env.key.clone().into_bytes()),
                value: Some(env.encode()),
                headers: Vec::new(),
            },
        )?;
    }
    // Done when every stage has committed everything on its topic, twice in a row (a stage
    // that just finished may have produced more for the next one).
    let consumed = a.consumed();
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let idle = consumed.iter().all(|(group, topic)| {
            bus.end_offsets(topic)
                .iter()
                .enumerate()
                .all(|(p, end)| *end == 0 || bus.committed(group, topic, p as i32) == Some(*end))
        });
        quiet = if idle { quiet + 1 } else { 0 };
    }
    let elapsed = started.elapsed();
    for m in members {
        m.shutdown().await;
    }
    let mut fills = Vec::new();
    for broker in &settings.active_brokers {
        for (_, _, rec) in bus.records(&TopicName::broker(broker, BrokerTopic::OrdersFilled)) {
            let env = EventEnvelope::decode(rec.value.as_deref().unwrap_or_default())?;
            if let EventData::OrderFilled(f) = env.data {
                fills.push((broker.to_string(), f));
            }
        }
    }
    Ok(Outcome::report(
        &settings,
        fills,
        &last_prices,
        ticks.len(),
        elapsed,
    ))
}
