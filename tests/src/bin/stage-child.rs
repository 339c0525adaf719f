//! A consume → handle → produce stage in its own process, for the kill -9 test: consumes
//! `{CHILD_BROKER}.signals.raw` in group `CHILD_GROUP`, emits one validated signal per input
//! and increments the Redis counter `CHILD_COUNTER` once per input. SIGTERM or SIGINT drain
//! it: in-flight records finish, offsets are committed, the group is left, exit status 0.

use std::time::Duration;

use alpha_panda_actors::delivery::DeliveryPolicy;
use alpha_panda_actors::delivery::kafka::{ConsumerSpec, start};
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_core::BrokerName;
use alpha_panda_tests::stages::validate_factory;
use alpha_panda_topics::{BrokerTopic, TopicName};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set"))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("CHILD_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let servers = var("ALPHA_PANDA_TEST_KAFKA");
    let broker = BrokerName::new(var("CHILD_BROKER")).expect("broker name");
    let group = var("CHILD_GROUP");
    let counter = var("CHILD_COUNTER");
    let system = actix_rt::System::new();
    system.block_on(async move {
        let producer = alpha_panda_tests::producer(&servers, "stage-child");
        let store = Store::Redis(
            RedisStore::connect(&var("ALPHA_PANDA_TEST_REDIS"))
                .await
                .expect("redis"),
        );
        let mut policy = DeliveryPolicy::new(group, "risk", broker.as_str());
        policy.commit_interval = Duration::from_millis(200);
        // The test kills this process: let the group fail over quickly.
        policy.session_timeout = Duration::from_secs(10);
        // Static membership (`kafka.instance_id`): the restarted child takes the killed one's
        // place at once, instead of waiting out the dead member's session.
        policy.instance_id = Some(format!("{}-child", policy.group));
        let handle = start(ConsumerSpec {
            servers: servers.clone(),
            client_id: "stage-child".into(),
            topics: vec![TopicName::broker(&broker, BrokerTopic::SignalsRaw)],
            policy,
            producer,
            store,
            factory: validate_factory(counter),
            arbiters: alpha_panda_actors::delivery::threads::Arbiters::current(),
        })
        .expect("consumer");
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        handle.shutdown().await;
    });
}
