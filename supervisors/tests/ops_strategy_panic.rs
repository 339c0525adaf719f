//! Supervision of strategies (issue 5), over Apache Kafka and redis-server: a strategy that panics on
//! one particular tick is rebuilt alone, three times, and then that tick goes to
//! `market.ticks.dlq` for it; the other strategies' signals are exactly those of a run
//! without the fault, and both brokers keep trading.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::delivery::Output;
use alpha_panda_actors::metrics::metrics;
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_actors::strategy::{Builder, Decision, Strategy, StrategySet, build};
use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{EventData, FailureClass, Timestamp};
use alpha_panda_supervisors::pipeline::{Assembly, Transport};
use alpha_panda_tests::ops::{fresh_redis_db, read_envelopes, two_paper_brokers};
use alpha_panda_tests::{PrivateKafka, eventually, ticks};
use alpha_panda_topics::{TopicName, topics_for};

/// The real strategy, except that it panics on one tick.
struct PanicsOn(
    Box<dyn Strategy>,
    Timestamp,
    alpha_panda_core::InstrumentToken,
);

impl Strategy for PanicsOn {
    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        if tick.timestamp == self.1 && tick.instrument_token == self.2 {
            panic!("injected fault on the tick at {}", self.1);
        }
        self.0.on_tick(tick)
    }

    fn save(&self) -> serde_json::Value {
        self.0.save()
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), String> {
        self.0.restore(saved)
    }
}

#[test]
fn a_strategy_that_panics_on_one_tick_restarts_alone_and_the_tick_reaches_the_dlq() {
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(11);
    let settings = Arc::new(two_paper_brokers(&[
        ("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers),
        ("ALPHA_PANDA__REDIS__URL", &redis),
    ]));
    let ticks = ticks::numbered(&settings, 300);
    // The victim is a strategy other than the first (momentum, the busiest), so the others'
    // signals are plenty; the bad tick is one of its instruments', mid-way.
    let victim = settings.strategies[1].clone();
    let (bad_index, bad) = ticks
        .iter()
        .enumerate()
        .skip(ticks.len() / 2)
        .find(|(_, t)| matches!(&t.data, EventData::MarketTick(k) if victim.instruments.contains(&k.instrument_token)))
        .expect("a tick of the victim's");
    let EventData::MarketTick(bad_tick) = &bad.data else {
        unreachable!()
    };
    let (bad_ts, bad_token, bad_id) = (bad_tick.timestamp, bad_tick.instrument_token, bad.id);

    // What the other strategies emit without any fault.
    let mut reference = StrategySet::from_settings(&settings).unwrap();
    let all = |_: &_, _: &_| true;
    let expected: BTreeSet<uuid::Uuid> = ticks
        .iter()
        .flat_map(|t| reference.on_tick(t, &all).outputs)
        .filter(|o| o.envelope.source != format!("strategy:{}", victim.id))
        .map(|o| o.envelope.id)
        .collect();
    assert!(expected.len() > 20, "the others trade: {}", expected.len());

    actix_rt::System::new().block_on(async move {
        alpha_panda_actors::kafka::admin::ensure(
            &kafka.servers,
            "ops",
            &topics_for(&settings.active_brokers),
        )
        .await
        .unwrap();
        let producer = alpha_panda_tests::producer(&kafka.servers, "ops");
        let store = Store::Redis(RedisStore::connect(&redis).await.unwrap());
        let mut a = Assembly::new(
            settings.clone(),
            Transport::Kafka(kafka.servers.clone()),
            producer.clone(),
            store,
        );
        let v = victim.id.clone();
        let builder: Builder = Arc::new(move |id, p| {
            if *id == v {
                Box::new(PanicsOn(build(p), bad_ts, bad_token))
            } else {
                build(p)
            }
        });
        a.strategies = builder;
        let counters = Arc::new(Counters::default());
        let members = a.start_stages(&counters).unwrap();
        for t in &ticks {
            producer
                .send_all(&[Output {
                    topic: TopicName::market_ticks(),
                    envelope: t.clone(),
                }])
                .await
                .unwrap();
        }
        let n = ticks.len() as u64;
        eventually(Duration::from_secs(120), || {
            (counters.ticks.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(())
        })
        .await
        .expect("every tick reaches the strategies");

        // The tick is in the DLQ once, for the victim, after three panics.
        let servers = kafka.servers.clone();
        let dlq = eventually(Duration::from_secs(30), || {
            let r = read_envelopes(&servers, "market.ticks.dlq");
            (!r.is_empty()).then_some(r)
        })
        .await
        .expect("the bad tick is dead-lettered");
        assert_eq!(dlq.len(), 1, "one DLQ record");
        let EventData::SystemError(e) = &dlq[0].2.data else {
            panic!("not a system_error: {:?}", dlq[0].2)
        };
        assert_eq!(e.stage, format!("strategy:{}", victim.id));
        assert_eq!(e.error_class, FailureClass::Poison);
        assert_eq!(e.retry_count, 2, "three panics: two retries");
        assert!(
            e.error_message.contains("injected fault"),
            "{}",
            e.error_message
        );
        assert_eq!(dlq[0].2.causation_id, Some(bad_id));
        let original = alpha_panda_core::EventEnvelope::decode(
            e.original_value.as_deref().unwrap_or_default().as_bytes(),
        )
        .unwrap();
        assert_eq!(original.id, bad_id, "the DLQ keeps the tick whole");

        // Only the victim was restarted: three times, and no partition worker at all.
        assert_eq!(
            metrics()
                .restarts
                .with_label_values(&["strategy", "market"])
                .get(),
            3
        );
        for (key, w) in a.control.workers() {
            assert_eq!(w.restarts, 0, "{key:?} restarted");
        }

        // The other strategies' signals are exactly those of a run without the fault, on
        // both brokers.
        let mut got = BTreeSet::new();
        for topic in ["paper.signals.raw", "paper2.signals.raw"] {
            for (_, _, env) in read_envelopes(&kafka.servers, topic) {
                if env.source != format!("strategy:{}", victim.id) {
                    got.insert(env.id);
                }
            }
        }
        assert_eq!(got, expected, "the other strategies' signals");
        // Both brokers go on filling orders after the bad tick.
        for broker in ["paper", "paper2"] {
            let servers = kafka.servers.clone();
            let topic = format!("{broker}.orders.filled");
            eventually(Duration::from_secs(60), || {
                read_envelopes(&servers, &topic)
                    .iter()
                    .any(|(_, _, f)| f.ts > bad_ts)
                    .then_some(())
            })
            .await
            .unwrap_or_else(|| panic!("{broker} filled nothing after the bad tick"));
        }
        let _ = bad_index;
        for m in members {
            m.shutdown().await;
        }
    });
}
