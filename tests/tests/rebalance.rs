//! Two members of one consumer group share the partitions; when one stops, the other takes
//! its partitions over from the committed offsets, with no record lost or handled twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use alpha_panda_actors::delivery::kafka::{ConsumerHandle, ConsumerSpec, start};
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{Deliver, DeliveryPolicy, EventProducer};
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_core::EventEnvelope;
use alpha_panda_tests::stages::validate;
use alpha_panda_tests::{Namespace, kafka_servers, read_topic, redis_url, signals};
use alpha_panda_topics::{BrokerTopic, TopicName};
use uuid::Uuid;

const INPUTS: usize = 4_000;

type Calls = Arc<Mutex<HashMap<Uuid, u32>>>;

fn member(
    ns: &Namespace,
    raw: &TopicName,
    store: &Store,
    counter: &str,
    calls: &Calls,
    name: &str,
) -> ConsumerHandle {
    let (counter, calls) = (counter.to_owned(), calls.clone());
    let factory: StageFactory = Arc::new(move || {
        let (counter, calls) = (counter.clone(), calls.clone());
        FnStage::new(move |d: &Deliver| {
            *calls.lock().unwrap().entry(d.envelope.id).or_insert(0) += 1;
            // Slow enough that the handover happens mid-stream.
            std::thread::sleep(Duration::from_micros(500));
            validate(d, &counter)
        })
        .start()
        .recipient()
    });
    start(ConsumerSpec {
        servers: kafka_servers(),
        client_id: format!("rebalance-{name}"),
        topics: vec![raw.clone()],
        policy: DeliveryPolicy::new(ns.group("risk"), "risk", ns.broker.as_str()),
        producer: EventProducer::kafka(&kafka_servers(), name, 1, 1).unwrap(),
        store: store.clone(),
        factory,
        arbiter: actix_rt::Arbiter::current(),
    })
    .unwrap()
}

async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn stopping_one_member_hands_its_partitions_to_the_other_without_loss_or_repeats() {
    actix_rt::System::new().block_on(async {
        let ns = Namespace::new();
        let raw = TopicName::broker(&ns.broker, BrokerTopic::SignalsRaw);
        let validated = TopicName::broker(&ns.broker, BrokerTopic::SignalsValidated);
        ns.create_topics(&[raw.clone(), raw.dlq().unwrap(), validated.clone()])
            .await;
        let inputs = signals::produce(&ns.broker, &raw, INPUTS).await;
        let store = Store::Redis(RedisStore::connect(&redis_url()).await.unwrap());
        let counter = format!("{}:test:effects", ns.redis_prefix());
        let calls: Calls = Arc::default();

        let a = member(&ns, &raw, &store, &counter, &calls, "a");
        until("a's assignment", Duration::from_secs(30), || {
            a.assignment().len() == 6
        })
        .await;
        let b = member(&ns, &raw, &store, &counter, &calls, "b");
        until("the split", Duration::from_secs(60), || {
            !a.assignment().is_empty() && !b.assignment().is_empty()
        })
        .await;
        let (pa, pb) = (a.assignment(), b.assignment());
        eprintln!("split: a {pa:?}, b {pb:?}");
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) =
            (pa.into_iter().collect(), pb.into_iter().collect());
        assert!(sa.is_disjoint(&sb), "no partition is owned twice");
        assert_eq!(sa.len() + sb.len(), 6, "every partition is owned");

        let handled = || calls.lock().unwrap().len();
        assert!(handled() < INPUTS, "stop a while records remain");
        a.shutdown().await;
        eprintln!("a stopped after {} records", handled());
        until("b takes everything", Duration::from_secs(60), || {
            b.assignment().len() == 6
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while store
            .get(&counter)
            .await
            .unwrap()
            .map_or(0, |v| v.parse::<usize>().unwrap())
            < INPUTS
        {
            assert!(Instant::now() < deadline, "not all records were handled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.shutdown().await;

        let effects: usize = store.get(&counter).await.unwrap().unwrap().parse().unwrap();
        assert_eq!(effects, INPUTS, "every record's effect exactly once");
        let calls = calls.lock().unwrap().clone();
        let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "records handled twice: {twice:?}");
        let ids: BTreeSet<Uuid> = inputs.iter().map(|e| e.id).collect();
        assert_eq!(
            calls.keys().copied().collect::<BTreeSet<_>>(),
            ids,
            "no record lost"
        );
        let out = read_topic(&validated, INPUTS, Duration::from_secs(60)).await;
        let causes: BTreeSet<Uuid> = out
            .iter()
            .filter_map(|(_, _, _, v)| EventEnvelope::decode(v.as_deref()?).ok()?.causation_id)
            .collect();
        assert_eq!(causes, ids, "every input's output is on the topic");
    });
}
