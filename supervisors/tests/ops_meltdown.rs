//! Order-path meltdown (issue 5), over Apache Kafka and redis-server: paper2's execution stage fails
//! on every record. After more than five restarts in a minute paper2 is HALTED — in
//! `/status`, in the metric and in readiness — while paper trades on. A restarted daemon
//! keeps paper2 HALTED (nothing reaches its market) until an operator sets it ACTIVE.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{Deliver, Output, StageError};
use alpha_panda_actors::http::{self, View};
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{RedisStore, Store};
use alpha_panda_config::Settings;
use alpha_panda_core::{BrokerName, EventData, EventEnvelope, TradingState};
use alpha_panda_supervisors::pipeline::{Assembly, Member, Transport};
use alpha_panda_tests::ops::{
    free_port, fresh_redis_db, get_json, get_json_as, http, read_envelopes, two_paper_brokers,
};
use alpha_panda_tests::{PrivateKafka, eventually, ticks};
use alpha_panda_topics::{TopicName, topics_for};

const TOKEN: &str = "meltdown-test-token-0123456789";

async fn assemble(settings: &Arc<Settings>, servers: &str, redis: &str) -> Assembly {
    let producer = alpha_panda_tests::producer(servers, "ops");
    let store = Store::Redis(RedisStore::connect(redis).await.unwrap());
    let a = Assembly::new(
        settings.clone(),
        Transport::Kafka(servers.to_owned()),
        producer,
        store,
    );
    a.load_control().await.unwrap();
    a
}

fn serve(a: &Assembly) -> (SocketAddr, actix_web::dev::ServerHandle) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = http::server(
        addr,
        View {
            settings: a.settings.clone(),
            store: a.store.clone(),
            control: a.control.clone(),
            stages: a.stages(),
            services: alpha_panda_actors::readiness::ServiceChecks::services(
                a.settings.kafka.bootstrap_servers.clone(),
                &a.settings.kafka.client_id,
                a.store.clone(),
            ),
            console: Default::default(),
        },
    )
    .unwrap();
    let handle = server.handle();
    actix_rt::spawn(server);
    (addr, handle)
}

async fn feed(a: &Assembly, ticks: &[EventEnvelope]) {
    for t in ticks {
        a.producer
            .send_all(&[Output {
                topic: TopicName::market_ticks(),
                envelope: t.clone(),
            }])
            .await
            .unwrap();
    }
}

fn count(servers: &str, topic: &str, pred: impl Fn(&EventEnvelope) -> bool) -> usize {
    read_envelopes(servers, topic)
        .iter()
        .filter(|(_, _, e)| pred(e))
        .count()
}

async fn shutdown(members: Vec<Member>, http: actix_web::dev::ServerHandle) {
    for m in members {
        m.shutdown().await;
    }
    http.stop(true).await;
}

/// Blocking HTTP from the actix thread would stall the server it talks to: run it aside.
async fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[test]
fn a_failing_execution_stage_halts_its_broker_until_an_operator_sets_it_active() {
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(12);
    let servers = kafka.servers.clone();
    let settings = Arc::new(two_paper_brokers(&[
        ("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &servers),
        ("ALPHA_PANDA__REDIS__URL", &redis),
        ("ALPHA_PANDA__ADMIN__TOKEN", TOKEN),
    ]));
    let all = ticks::numbered(&settings, 900);
    let thirds: Vec<&[EventEnvelope]> = all.chunks(all.len() / 3 + 1).collect();
    let paper2 = BrokerName::new("paper2").unwrap();
    let is_fill = |e: &EventEnvelope| matches!(e.data, EventData::OrderFilled(_));

    actix_rt::System::new().block_on(async move {
        alpha_panda_actors::kafka::admin::ensure(&servers, "ops", &topics_for(&settings.active_brokers))
            .await
            .unwrap();

        // 1. paper2's trader fails on every record.
        let a = assemble(&settings, &servers, &redis).await;
        let broken = {
            let paper2 = paper2.clone();
            move |b: &BrokerName, stage: &str| {
                (b == &paper2 && stage == "trader").then(|| {
                    let f: StageFactory = Arc::new(|| {
                        FnStage::new(|_: &Deliver| {
                            Err(StageError::infrastructure("paper2 execution is down"))
                        })
                        .start()
                        .recipient()
                    });
                    f
                })
            }
        };
        let members = a.start_stages_with(&Arc::new(Counters::default()), &broken).unwrap();
        let (addr, handle) = serve(&a);
        feed(&a, thirds[0]).await;
        let control = a.control.clone();
        eventually(Duration::from_secs(90), || {
            (control.trading_state("paper2", None) == TradingState::Halted).then_some(())
        })
        .await
        .expect("paper2 is halted after repeated restarts");

        let (code, status) = call(move || get_json_as(addr, "/status", TOKEN)).await;
        assert_eq!(code, 200);
        assert_eq!(status["brokers"]["paper2"]["trading_state"], "HALTED", "{status}");
        assert!(status["brokers"]["paper2"]["degraded"]["trader"].as_str().is_some_and(|r| r.contains("paper2 execution is down")), "{status}");
        assert_eq!(status["brokers"]["paper"]["trading_state"], "ACTIVE");
        let trader = &status["brokers"]["paper2"]["stages"]["trader"]["partitions"];
        assert!(trader.as_array().unwrap().iter().any(|p| p["state"] == "halted"), "{status}");
        let (_, metrics) = call(move || http(addr, "GET", "/metrics", None, None)).await;
        assert!(metrics.contains(r#"alpha_panda_trading_state{broker="paper2",state="HALTED",strategy=""} 1"#), "{metrics}");
        assert!(metrics.contains(r#"alpha_panda_broker_degraded{broker="paper2"} 1"#));
        let (code, ready) = call(move || get_json(addr, "/readyz")).await;
        assert_eq!(code, 503);
        assert_eq!(ready["checks"]["brokers"]["ok"], false, "{ready}");

        // paper trades on meanwhile.
        let before = count(&servers, "paper.orders.filled", is_fill);
        assert!(before > 0, "paper filled orders");
        feed(&a, thirds[1]).await;
        let s = servers.clone();
        eventually(Duration::from_secs(60), || (count(&s, "paper.orders.filled", is_fill) > before).then_some(()))
            .await
            .expect("paper keeps filling while paper2 is halted");
        assert_eq!(count(&servers, "paper2.orders.filled", is_fill), 0);
        shutdown(members, handle).await;

        // 2. A restart (working trader now) keeps paper2 HALTED.
        let a = assemble(&settings, &servers, &redis).await;
        assert_eq!(a.control.trading_state("paper2", None), TradingState::Halted);
        let members = a.start_stages(&Arc::new(Counters::default())).unwrap();
        let (addr, handle) = serve(&a);
        let (_, status) = call(move || get_json_as(addr, "/status", TOKEN)).await;
        assert_eq!(status["brokers"]["paper2"]["trading_state"], "HALTED");
        let before = count(&servers, "paper.orders.filled", is_fill);
        feed(&a, &thirds[2][..thirds[2].len() / 2]).await;
        let s = servers.clone();
        eventually(Duration::from_secs(90), || (count(&s, "paper.orders.filled", is_fill) > before).then_some(()))
            .await
            .expect("paper fills after the restart");
        // Signals validated before the halt are refused by the trader, new ones by risk.
        let s = servers.clone();
        eventually(Duration::from_secs(60), || {
            let refused = count(&s, "paper2.orders.failed", |e| matches!(&e.data, EventData::OrderFailed(f) if f.error_message.contains("HALTED")));
            let rejected = count(&s, "paper2.signals.rejected", |e| matches!(&e.data, EventData::RejectedSignal(r) if r.rejection_reason.contains("trading_state")));
            (refused > 0 && rejected > 0).then_some(())
        })
        .await
        .expect("paper2 refuses orders while halted");
        assert_eq!(count(&servers, "paper2.orders.filled", is_fill), 0, "nothing reached paper2's market");

        // 3. The operator sets ACTIVE: paper2 trades again.
        let (code, body) = call(move || {
            http(addr, "POST", "/admin/trading-state", Some(TOKEN), Some(r#"{"broker":"paper2","state":"ACTIVE"}"#))
        })
        .await;
        assert_eq!(code, 200, "{body}");
        feed(&a, &thirds[2][thirds[2].len() / 2..]).await;
        let s = servers.clone();
        eventually(Duration::from_secs(90), || (count(&s, "paper2.orders.filled", is_fill) > 0).then_some(()))
            .await
            .expect("paper2 fills once ACTIVE");
        let (_, metrics) = call(move || http(addr, "GET", "/metrics", None, None)).await;
        assert!(metrics.contains(r#"alpha_panda_trading_state{broker="paper2",state="ACTIVE",strategy=""} 1"#));
        shutdown(members, handle).await;
    });
}
