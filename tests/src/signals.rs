//! Trading signals to feed delivery tests.

use std::collections::BTreeMap;
use std::time::Duration;

use alpha_panda_core::events::TradingSignal;
use alpha_panda_core::{
    BrokerName, EventBroker, EventData, EventEnvelope, InstrumentToken, OrderType, Price, Product,
    Quantity, Side, StrategyId, Timestamp, Validity,
};
use alpha_panda_topics::{TopicName, keys};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The `i`-th test signal: a root envelope, keyed `strategy|instrument` over 4 strategies
/// and 3 instruments.
pub fn signal(broker: &BrokerName, i: usize) -> EventEnvelope {
    let strategy = StrategyId::new(format!("s{}", i % 4)).unwrap_or_else(|e| unreachable!("{e}"));
    let token = InstrumentToken(738561 + (i % 3) as u32);
    let ts = Timestamp::from_unix_millis(1_705_310_100_000 + i as i64)
        .unwrap_or_else(|| unreachable!("valid time"));
    EventEnvelope::root(
        EventBroker::Broker(broker.clone()),
        format!("strategy:{strategy}"),
        keys::signal(&strategy, token),
        ts,
        EventData::TradingSignal(TradingSignal {
            strategy_id: strategy,
            instrument_token: token,
            signal_type: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            quantity: Quantity::new(1 + (i % 100) as u64).unwrap_or_else(|e| unreachable!("{e}")),
            price: Price::new(rust_decimal::Decimal::new(245005, 2))
                .unwrap_or_else(|e| unreachable!("{e}")),
            timestamp: ts,
            confidence: None,
            metadata: BTreeMap::new(),
            order_type: OrderType::Market,
            product: Product::Mis,
            validity: Validity::Day,
            trigger_price: None,
        }),
    )
}

/// Produces `n` signals to `topic` on the test broker and waits for all acknowledgements.
pub async fn produce(broker: &BrokerName, topic: &TopicName, n: usize) -> Vec<EventEnvelope> {
    let producer: FutureProducer = crate::producer_config(&crate::kafka_servers(), "test-feeder")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let envs: Vec<EventEnvelope> = (0..n).map(|i| signal(broker, i)).collect();
    let name = topic.to_string();
    let mut pending = Vec::with_capacity(n);
    for env in &envs {
        let payload = env.encode();
        let fut = producer
            .send_result(FutureRecord::to(&name).key(&env.key).payload(&payload))
            .map_err(|(e, _)| e);
        match fut {
            Ok(f) => pending.push(f),
            Err(_) => {
                // Local queue full: wait for what is in flight, then send this one.
                for f in pending.drain(..) {
                    if !matches!(f.await, Ok(Ok(_))) {
                        panic!("delivery failed");
                    }
                }
                let d = producer
                    .send(
                        FutureRecord::to(&name).key(&env.key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await;
                d.unwrap_or_else(|(e, _)| panic!("delivery: {e}"));
            }
        }
    }
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("delivery: {e}"),
            Err(_) => panic!("delivery cancelled"),
        }
    }
    envs
}
