//! The console's reader follows the topics it shows on both transports (issue 14): records
//! published before it starts are read back, records published after are followed, and
//! each DLQ topic is counted — over the in-process bus and over Apache Kafka.

use std::time::Duration;

use alpha_panda_actors::console::{Console, tail};
use alpha_panda_actors::delivery::inprocess::InProcessBus;
use alpha_panda_actors::delivery::{EventProducer, Output};
use alpha_panda_core::{BrokerName, EventEnvelope};
use alpha_panda_tests::{PrivateKafka, eventually};
use alpha_panda_topics::{BrokerTopic, TopicName, topics_for};

fn fixture(bytes: &[u8]) -> EventEnvelope {
    EventEnvelope::decode(bytes).unwrap()
}

async fn send(producer: &EventProducer, topic: TopicName, envelope: EventEnvelope) {
    producer
        .send_all(&[Output { topic, envelope }])
        .await
        .unwrap();
}

/// Publishes a snapshot, starts the reader, publishes a fill, a failed order and a DLQ
/// record, and waits for the book to hold all of them.
async fn follows(producer: EventProducer, start: impl FnOnce(Console) -> tail::TailHandle) {
    let paper = BrokerName::paper();
    let snapshot = fixture(include_bytes!("../../docs/events/pnl_snapshot.json"));
    let fill = fixture(include_bytes!("../../docs/events/order_filled.json"));
    let failed = fixture(include_bytes!("../../docs/events/order_failed.json"));
    send(
        &producer,
        TopicName::broker(&paper, BrokerTopic::PnlSnapshots),
        snapshot,
    )
    .await;
    let console = Console::default();
    let reader = start(console.clone());
    send(
        &producer,
        TopicName::broker(&paper, BrokerTopic::OrdersFilled),
        fill.clone(),
    )
    .await;
    send(
        &producer,
        TopicName::broker(&paper, BrokerTopic::OrdersFailed),
        failed,
    )
    .await;
    let dlq = TopicName::broker(&paper, BrokerTopic::OrdersFilled)
        .dlq()
        .unwrap();
    send(&producer, dlq.clone(), fill).await;
    let seen = eventually(Duration::from_secs(60), || {
        let book = console.book();
        let p = book.brokers.get("paper")?;
        (p.equity.get("momentum_1").map(|c| c.len()) == Some(1)
            && p.fills.len() == 1
            && p.rejections.len() == 1
            && book.dlq.get(&dlq.to_string()) == Some(&1))
        .then_some(())
    })
    .await;
    let book = format!("{:?}", *console.book());
    reader.shutdown().await;
    assert!(
        seen.is_some(),
        "the console did not see every record: {book}"
    );
}

#[actix_rt::test]
async fn the_console_reader_follows_the_in_process_bus() {
    let bus = InProcessBus::new();
    let brokers = vec![BrokerName::paper()];
    bus.create_topics(&topics_for(&brokers));
    let reader_bus = bus.clone();
    follows(EventProducer::InProcess(bus), move |console| {
        tail::spawn_inprocess(reader_bus, &brokers, console)
    })
    .await;
}

#[actix_rt::test]
async fn the_console_reader_follows_kafka() {
    let kafka = PrivateKafka::start();
    let brokers = vec![BrokerName::paper()];
    alpha_panda_actors::kafka::admin::ensure(&kafka.servers, "console", &topics_for(&brokers))
        .await
        .unwrap();
    let servers = kafka.servers.clone();
    follows(
        alpha_panda_tests::producer(&kafka.servers, "console"),
        move |console| {
            tail::spawn_kafka(
                servers,
                "console".to_owned(),
                "alpha-panda.console".to_owned(),
                &brokers,
                console,
            )
        },
    )
    .await;
}
