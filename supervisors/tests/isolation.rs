//! Broker isolation (DESIGN §3.3): with paper and zerodha active, a zerodha risk stage that
//! fails on every record leaves paper trading, and nothing of one broker appears under the
//! other's topics or store keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use alpha_panda_actors::delivery::inprocess::InProcessBus;
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::{Deliver, EventProducer, StageError};
use alpha_panda_actors::feed::SyntheticFeed;
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_config::{Settings, load};
use alpha_panda_core::{BrokerName, EventBroker, EventData, EventEnvelope, Timestamp};
use alpha_panda_supervisors::pipeline::{Assembly, Transport};
use alpha_panda_topics::{BrokerTopic, TopicName, keys, topics_for};

#[test]
fn a_failing_zerodha_risk_stage_leaves_paper_trading_and_nothing_crosses_namespaces() {
    let env = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let settings: Settings = load(
        None,
        [
            env("ACTIVE_BROKERS", "paper,zerodha"),
            env("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY", "test"),
            env("ALPHA_PANDA__SYNTHETIC__VOLATILITY", "0.003"),
            env(
                "ALPHA_PANDA__STRATEGIES__0__BROKERS",
                r#"["paper","zerodha"]"#,
            ),
            env(
                "ALPHA_PANDA__STRATEGIES__1__BROKERS",
                r#"["paper","zerodha"]"#,
            ),
            env(
                "ALPHA_PANDA__STRATEGIES__2__BROKERS",
                r#"["paper","zerodha"]"#,
            ),
        ],
    )
    .unwrap();
    actix_rt::System::new().block_on(async move {
        let settings = Arc::new(settings);
        let bus = InProcessBus::new();
        bus.create_topics(&topics_for(&settings.active_brokers));
        let memory = MemoryStore::default();
        let a = Assembly::new(
            settings.clone(),
            Transport::InProcess(bus.clone()),
            EventProducer::InProcess(bus.clone()),
            Store::Memory(memory.clone()),
        );
        let zerodha = BrokerName::zerodha();
        let broken = {
            let zerodha = zerodha.clone();
            move |b: &BrokerName, stage: &str| {
                (b == &zerodha && stage == "risk").then(|| {
                    let f: alpha_panda_actors::delivery::worker::StageFactory = Arc::new(|| {
                        FnStage::new(|_: &Deliver| {
                            Err(StageError::infrastructure("zerodha risk is down"))
                        })
                        .start()
                        .recipient()
                    });
                    f
                })
            }
        };
        let members = a
            .start_stages_with(&Arc::new(Counters::default()), &broken)
            .unwrap();

        // Feed ticks as the daemon's synthetic feed would.
        let mut feed = SyntheticFeed::new(&settings.synthetic);
        let ticks = TopicName::market_ticks();
        let paper_fills = TopicName::broker(&BrokerName::paper(), BrokerTopic::OrdersFilled);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0i64;
        while bus.records(&paper_fills).len() < 10 {
            assert!(Instant::now() < deadline, "paper stopped trading");
            let ts = Timestamp::from_unix_millis(1_705_290_000_000 + i * 200).unwrap();
            i += 1;
            for tick in feed.next_ticks(ts) {
                let env = EventEnvelope::root(
                    EventBroker::Shared,
                    "feed",
                    keys::tick(tick.instrument_token),
                    ts,
                    EventData::MarketTick(tick),
                );
                a.producer
                    .send_all(&[alpha_panda_actors::delivery::Output {
                        topic: ticks.clone(),
                        envelope: env,
                    }])
                    .await
                    .unwrap();
            }
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let zerodha_raw = TopicName::broker(&zerodha, BrokerTopic::SignalsRaw);
        assert!(
            !bus.records(&zerodha_raw).is_empty(),
            "zerodha got signals too"
        );
        for t in [BrokerTopic::SignalsValidated, BrokerTopic::OrdersFilled] {
            assert!(
                bus.records(&TopicName::broker(&zerodha, t)).is_empty(),
                "zerodha's failing risk stage let nothing through to {t:?}"
            );
        }
        for m in members {
            m.shutdown().await;
        }

        // No record of one broker under the other's topics.
        for broker in [BrokerName::paper(), zerodha.clone()] {
            for t in BrokerTopic::ALL {
                for (_, _, r) in bus.records(&TopicName::broker(&broker, t)) {
                    let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
                    assert_eq!(env.broker, EventBroker::Broker(broker.clone()), "{t:?}");
                }
            }
        }
        // Every store key is under its broker's prefix, and zerodha has no portfolio.
        let keys = memory.keys();
        assert!(keys.iter().any(|k| k.starts_with("paper:portfolio:")));
        for k in &keys {
            assert!(
                k.starts_with("paper:") || k.starts_with("zerodha:") || k.starts_with("market:"),
                "key outside any namespace: {k}"
            );
            assert!(!k.starts_with("zerodha:portfolio:"), "{k}");
        }
    });
}
