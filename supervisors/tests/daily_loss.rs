//! The daily-loss limit through the daemon's stages on the in-process transport (issue 13,
//! defect 1): once a strategy's fills and the market have lost more than `max_daily_loss`
//! on the trading day, its next signal goes to `signals.rejected` with the daily-loss
//! reason; the risk stage learns the loss from the broker's own `orders.filled`.

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::delivery::EventProducer;
use alpha_panda_actors::delivery::inprocess::{InProcessBus, StoredRecord};
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_config::{Feed, Settings};
use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{
    Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, Price, Side, Timestamp,
};
use alpha_panda_supervisors::backtest::event_loop::tick_id;
use alpha_panda_supervisors::pipeline::{Assembly, Transport};
use alpha_panda_topics::{BrokerTopic, TopicName, keys, topics_for};

/// 2024-01-15 09:30 IST.
const START_MS: i64 = 1_705_291_200_000;

/// One momentum strategy (lookback 1) buying or selling 1 000 shares of instrument 1 on
/// every move of more than 0.1 %, no slippage, and a daily-loss limit of 500.
fn settings() -> Settings {
    let path = std::env::temp_dir().join(format!("ap-daily-loss-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"active_brokers = ["paper"]

[[strategies]]
id = "loser"
kind = "momentum"
instruments = [1]
params = { lookback = 1, threshold = "0.001", quantity = 1000 }

[brokers.paper.fill_model]
slippage_bps = "0"

[risk.paper]
max_daily_loss = "500"
"#,
    )
    .unwrap();
    let mut s = alpha_panda_config::load(Some(&path), std::iter::empty()).unwrap();
    let _ = std::fs::remove_file(&path);
    s.kafka.bootstrap_servers = None;
    s.redis.url = None;
    s.database.url = None;
    s.feed = Feed::None;
    s
}

fn tick(n: usize, price: &str) -> EventEnvelope {
    let at = Timestamp::from_unix_millis(START_MS + n as i64 * 60_000).unwrap();
    let tick = MarketTick::new(
        InstrumentToken(1),
        Price::new(price.parse().unwrap()).unwrap(),
        at,
    );
    let id = tick_id(n as u64);
    let mut env = EventEnvelope::root(
        EventBroker::Shared,
        "feed",
        keys::tick(tick.instrument_token),
        at,
        EventData::MarketTick(tick),
    );
    (env.id, env.correlation_id, env.trace_id) = (id, id, id);
    env
}

/// Waits until every stage has committed everything on its topics, twice in a row.
async fn settle(a: &Assembly, bus: &InProcessBus) {
    let consumed = a.consumed();
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let idle = consumed.iter().all(|(group, topic)| {
            bus.end_offsets(topic)
                .iter()
                .enumerate()
                .all(|(p, end)| *end == 0 || bus.committed(group, topic, p as i32) == Some(*end))
        });
        quiet = if idle { quiet + 1 } else { 0 };
    }
}

fn payloads(bus: &InProcessBus, topic: BrokerTopic) -> Vec<EventData> {
    bus.records(&TopicName::broker(
        &alpha_panda_core::BrokerName::paper(),
        topic,
    ))
    .into_iter()
    .map(|(_, _, r)| {
        EventEnvelope::decode(r.value.as_deref().unwrap_or_default())
            .unwrap()
            .data
    })
    .collect()
}

#[test]
fn a_strategy_that_lost_more_than_the_daily_limit_has_its_next_signal_rejected_for_it() {
    actix_rt::System::new().block_on(async {
        let settings = Arc::new(settings());
        let bus = InProcessBus::new();
        bus.create_topics(&topics_for(&settings.active_brokers));
        let a = Assembly::new(
            settings.clone(),
            Transport::InProcess(bus.clone()),
            EventProducer::InProcess(bus.clone()),
            Store::Memory(MemoryStore::default()),
        );
        let members = a.start_stages(&Arc::new(Counters::default())).unwrap();
        let append = |env: EventEnvelope| {
            bus.append(
                &TopicName::market_ticks().to_string(),
                StoredRecord {
                    key: Some(env.key.clone().into_bytes()),
                    value: Some(env.encode()),
                    headers: Vec::new(),
                },
            )
            .unwrap();
        };
        // 100 → 101: the strategy buys 1 000 at 101, and the order fills.
        append(tick(0, "100"));
        append(tick(1, "101"));
        settle(&a, &bus).await;
        let fills = payloads(&bus, BrokerTopic::OrdersFilled);
        assert!(
            matches!(fills.as_slice(), [EventData::OrderFilled(f)] if f.side == Side::Buy && f.fill_price.get() == Decimal::from(101)),
            "{fills:?}"
        );
        // A minute later at 100.40 it has lost 600 and the charges: its SELL is refused.
        append(tick(2, "100.40"));
        settle(&a, &bus).await;
        for m in members {
            m.shutdown().await;
        }
        let rejected = payloads(&bus, BrokerTopic::SignalsRejected);
        let [EventData::RejectedSignal(r)] = rejected.as_slice() else {
            panic!(
                "one rejected signal expected, got {rejected:?}; validated: {:?}",
                payloads(&bus, BrokerTopic::SignalsValidated)
            );
        };
        assert_eq!(r.original_signal.signal_type, Side::Sell);
        assert!(
            r.rejection_reason.starts_with("max_daily_loss: loser's PnL on 2024-01-15 is -6")
                && r.rejection_reason.ends_with("beyond the loss limit 500"),
            "{}",
            r.rejection_reason
        );
        assert_eq!(
            r.risk_checks.iter().filter(|(_, ok)| !**ok).count(),
            1,
            "only the daily loss fails: {:?}",
            r.risk_checks
        );
        assert_eq!(payloads(&bus, BrokerTopic::SignalsValidated).len(), 1);
    });
}
