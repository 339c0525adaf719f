//! The persistence layer against the real PostgreSQL of `scripts/services.sh`
//! (ALPHA_PANDA_TEST_DATABASE): migrations, per-broker roles, and the recorder over the
//! real Kafka. Every test uses schema and role names of its own (`t{id}_…`), so tests run
//! in parallel; the schemas are dropped at the end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_config::Charges;
use alpha_panda_core::{
    AccountId, BrokerName, EventBroker, EventData, EventEnvelope, ExecutionMode, InstrumentToken,
    OrderId, OrderType, Price, Product, Quantity, Side, StrategyId, Timestamp, Validity,
    events::{OrderFilled, OrderPlaced},
};
use alpha_panda_db::recorder::{Recorder, RecorderConfig};
use alpha_panda_db::{Layout, Target, migrate};
use alpha_panda_tests::{Namespace, database_url, kafka_servers};
use alpha_panda_topics::{BrokerTopic, TopicName};
use diesel::{Connection, PgConnection, RunQueryDsl};

/// Schemas and roles of one test, dropped at the end.
struct Scratch {
    layout: Layout,
    brokers: Vec<BrokerName>,
}

impl Scratch {
    fn new(ns: &Namespace, brokers: &[&str]) -> Self {
        Self {
            layout: Layout::new(format!("t{}_", ns.id)),
            brokers: brokers
                .iter()
                .map(|b| BrokerName::new(*b).expect("broker name"))
                .collect(),
        }
    }

    fn target(&self) -> Target {
        Target::parse(&database_url()).expect("test database URL")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(mut c) = PgConnection::establish(&database_url()) else {
            return;
        };
        let mut schemas = vec![self.layout.shared_schema()];
        schemas.extend(self.brokers.iter().map(|b| self.layout.broker_schema(b)));
        for s in schemas {
            let _ =
                diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE")).execute(&mut c);
        }
        for b in &self.brokers {
            let r = self.layout.writer_role(b);
            let _ = diesel::sql_query(format!("DROP OWNED BY \"{r}\"")).execute(&mut c);
            let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{r}\"")).execute(&mut c);
        }
    }
}

#[derive(diesel::QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_schema: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data_type: String,
}

fn columns(prefix: &str) -> Vec<Column> {
    let mut c = PgConnection::establish(&database_url()).expect("connect");
    diesel::sql_query(
        "SELECT table_schema::text, table_name::text, column_name::text, data_type::text \
         FROM information_schema.columns WHERE table_schema LIKE $1 \
         ORDER BY 1, 2, 3",
    )
    .bind::<diesel::sql_types::Text, _>(format!("{prefix}%"))
    .load(&mut c)
    .expect("columns")
}

#[test]
fn migrations_applied_twice_change_nothing_and_status_shows_them_applied() {
    let ns = Namespace::new();
    let s = Scratch::new(&ns, &["paper", "zerodha"]);
    let before = migrate::status(&s.target(), &s.layout, &s.brokers).expect("status");
    assert!(
        before
            .iter()
            .all(|r| !r.pending.is_empty() && r.present.is_empty()),
        "{before:?}"
    );

    let first = migrate::migrate(&s.target(), &s.layout, &s.brokers).expect("first migrate");
    assert_eq!(first.len(), 3, "shared + two brokers: {first:?}");
    // The shared set has two migrations, a broker's one.
    let applied: Vec<usize> = first.iter().map(|r| r.applied.len()).collect();
    assert_eq!(applied, vec![2, 1, 1], "{first:?}");
    let tables = columns(&s.layout.prefix);
    assert!(
        tables
            .iter()
            .any(|c| c.table_schema == s.layout.broker_schema(&s.brokers[1])
                && c.table_name == "fills"
                && c.column_name == "stamp"
                && c.data_type == "numeric")
    );

    let second = migrate::migrate(&s.target(), &s.layout, &s.brokers).expect("second migrate");
    assert!(second.iter().all(|r| r.applied.is_empty()), "{second:?}");
    let present: Vec<usize> = second.iter().map(|r| r.present.len()).collect();
    assert_eq!(present, applied, "{second:?}");
    assert_eq!(
        columns(&s.layout.prefix),
        tables,
        "a second migrate changed the tables"
    );
    let after = migrate::status(&s.target(), &s.layout, &s.brokers).expect("status");
    assert!(after.iter().all(|r| r.pending.is_empty()), "{after:?}");
}

#[test]
fn the_paper_writer_role_cannot_read_or_write_zerodha_rows() {
    let ns = Namespace::new();
    let s = Scratch::new(&ns, &["paper", "zerodha"]);
    migrate::migrate(&s.target(), &s.layout, &s.brokers).expect("migrate");
    let zerodha = s.layout.broker_schema(&s.brokers[1]);

    let mut paper =
        alpha_panda_db::target::connect_as_writer(&database_url(), &s.layout, &s.brokers[0])
            .expect("paper writer");
    // Its own schema: it writes and reads.
    diesel::sql_query(
        "INSERT INTO admin_audit (actor, remote_addr, action, target, outcome) \
         VALUES ('test', '127.0.0.1', 'pause', 'paper', 'ok')",
    )
    .execute(&mut paper)
    .expect("the paper writer writes paper rows");

    let read =
        diesel::sql_query(format!("SELECT event_id FROM \"{zerodha}\".fills")).execute(&mut paper);
    let err = read
        .expect_err("the paper writer read zerodha fills")
        .to_string();
    assert!(err.contains("permission denied"), "{err}");
    let write = diesel::sql_query(format!(
        "INSERT INTO \"{zerodha}\".admin_audit (actor, remote_addr, action, target, outcome) \
         VALUES ('x', 'x', 'x', 'x', 'x')"
    ))
    .execute(&mut paper);
    let err = write
        .expect_err("the paper writer wrote a zerodha row")
        .to_string();
    assert!(err.contains("permission denied"), "{err}");

    // The zerodha writer reads its own table (the refusal above is about roles, not the table).
    let mut z =
        alpha_panda_db::target::connect_as_writer(&database_url(), &s.layout, &s.brokers[1])
            .expect("zerodha writer");
    diesel::sql_query("SELECT event_id FROM fills")
        .execute(&mut z)
        .expect("zerodha reads zerodha");
}

fn filled(broker: &BrokerName, n: usize) -> (EventEnvelope, EventEnvelope) {
    let ts = Timestamp::from_unix_millis(1_705_291_200_000 + n as i64 * 1000).expect("ts");
    let order_id = OrderId::new(format!("o{n}")).expect("order id");
    let strategy = StrategyId::new("mom").expect("strategy");
    let account = AccountId::new("paper_main").expect("account");
    let placed = EventEnvelope::root(
        EventBroker::Broker(broker.clone()),
        "trader",
        "738561".to_owned(),
        ts,
        EventData::OrderPlaced(OrderPlaced {
            order_id: order_id.clone(),
            instrument_token: InstrumentToken(738561),
            side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
            quantity: Quantity::new(10).expect("qty"),
            price: Price::new("2450.05".parse().expect("price")).expect("price"),
            order_type: OrderType::Market,
            product: Product::Mis,
            validity: Validity::Day,
            trigger_price: None,
            strategy_id: strategy.clone(),
            account: account.clone(),
            execution_mode: ExecutionMode::Paper,
            broker: broker.clone(),
            timestamp: ts,
        }),
    );
    let fill = EventEnvelope::root(
        EventBroker::Broker(broker.clone()),
        "trader",
        "738561".to_owned(),
        ts,
        EventData::OrderFilled(OrderFilled {
            order_id,
            instrument_token: InstrumentToken(738561),
            side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
            quantity: Quantity::new(10).expect("qty"),
            fill_price: Price::new("2450.05".parse().expect("price")).expect("price"),
            fees: "10.30".parse().expect("fees"),
            strategy_id: strategy,
            account,
            execution_mode: ExecutionMode::Paper,
            broker: broker.clone(),
            timestamp: ts,
            trade_id: None,
        }),
    );
    (placed, fill)
}

async fn produce(topic: &TopicName, envs: &[EventEnvelope]) {
    let producer = alpha_panda_tests::producer(&kafka_servers(), "db-test");
    let outputs: Vec<_> = envs
        .iter()
        .map(|e| alpha_panda_actors::delivery::Output {
            topic: topic.clone(),
            envelope: e.clone(),
        })
        .collect();
    producer.send_all(&outputs).await.expect("produce");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(sql: &str) -> i64 {
    let mut c = PgConnection::establish(&database_url()).expect("connect");
    diesel::sql_query(sql)
        .get_result::<Count>(&mut c)
        .expect(sql)
        .n
}

fn recorder_config(ns: &Namespace, s: &Scratch, url: String) -> RecorderConfig {
    RecorderConfig {
        kafka_servers: kafka_servers(),
        client_id: "db-test".into(),
        group: ns.group("recorder"),
        session_timeout_ms: 10_000,
        broker: ns.broker.clone(),
        database_url: url,
        layout: s.layout.clone(),
        charges: Charges::default(),
        batch_records: 50,
        batch_wait: Duration::from_millis(100),
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Orders and fills with duplicates and a poison record: one row per event, the charges
/// broken down; a restarted recorder starts at the offsets in the database, reading nothing
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_writes_one_row_per_event_and_restarts_at_its_stored_offsets() {
    let ns = Namespace::new();
    let s = Scratch::new(&ns, &[ns.broker.as_str()]);
    migrate::migrate(&s.target(), &s.layout, &s.brokers).expect("migrate");
    let topics: Vec<TopicName> = alpha_panda_db::recorder::RECORDED
        .iter()
        .map(|t| TopicName::broker(&ns.broker, *t))
        .collect();
    ns.create_topics(&topics).await;
    let submitted = TopicName::broker(&ns.broker, BrokerTopic::OrdersSubmitted);
    let fills_topic = TopicName::broker(&ns.broker, BrokerTopic::OrdersFilled);
    let (placed, fills): (Vec<_>, Vec<_>) = (0..40).map(|n| filled(&ns.broker, n)).unzip();
    produce(&submitted, &placed).await;
    produce(&fills_topic, &fills).await;
    produce(&fills_topic, &fills[..10]).await; // duplicates: the same event ids again

    let control = Arc::new(Control::detached());
    let rec = Recorder::spawn(recorder_config(&ns, &s, database_url()), control.clone())
        .expect("recorder");
    let schema = s.layout.broker_schema(&ns.broker);
    wait_for("90 records", Duration::from_secs(60), || {
        rec.stats.records.load(Ordering::Relaxed) >= 90
    });
    assert_eq!(
        count(&format!("SELECT count(*) AS n FROM \"{schema}\".fills")),
        40
    );
    assert_eq!(
        count(&format!("SELECT count(*) AS n FROM \"{schema}\".orders")),
        80
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) AS n FROM \"{schema}\".orders WHERE state = 'filled'"
        )),
        40
    );
    // 10 × 2450.05, a sell: STT 0.025 % of 24 500.50 = 6.125125; the breakdown of the model.
    assert_eq!(
        count(&format!(
            "SELECT count(*) AS n FROM \"{schema}\".fills WHERE side = 'SELL' AND stt = 6.125125 AND stamp = 0"
        )),
        20
    );
    tokio::task::spawn_blocking(move || rec.stop())
        .await
        .expect("stop");

    // Ten more fills, then a new recorder: it reads only those.
    let (_, more): (Vec<_>, Vec<_>) = (40..50).map(|n| filled(&ns.broker, n)).unzip();
    produce(&fills_topic, &more).await;
    let rec = Recorder::spawn(recorder_config(&ns, &s, database_url()), control).expect("recorder");
    wait_for("50 fills", Duration::from_secs(60), || {
        count(&format!("SELECT count(*) AS n FROM \"{schema}\".fills")) == 50
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rec.stats.records.load(Ordering::Relaxed),
        10,
        "the restart re-read records"
    );
    tokio::task::spawn_blocking(move || rec.stop())
        .await
        .expect("stop");
}

/// A TCP proxy in front of PostgreSQL that can be cut: while down, it refuses new
/// connections and closes the open ones, as a stopped database would.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let clones = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                );
                if let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = clones {
                    open2.lock().expect("lock").extend([c3, s3]);
                    pipe(client, server);
                    pipe(s2, c2);
                }
            }
        });
        Self { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The database away for 10 s: the recorder pauses, the broker is degraded with the
/// reason, nothing is lost; when it is back every row is there and the degradation ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_for_10_s_pauses_the_recorder_and_loses_nothing() {
    let ns = Namespace::new();
    let s = Scratch::new(&ns, &[ns.broker.as_str()]);
    migrate::migrate(&s.target(), &s.layout, &s.brokers).expect("migrate");
    let topics: Vec<TopicName> = alpha_panda_db::recorder::RECORDED
        .iter()
        .map(|t| TopicName::broker(&ns.broker, *t))
        .collect();
    ns.create_topics(&topics).await;
    let fills_topic = TopicName::broker(&ns.broker, BrokerTopic::OrdersFilled);

    let real = database_url();
    let (before_host, after_host) = real.split_once('@').expect("user@host in the test URL");
    let host_port = after_host.split('/').next().expect("host:port");
    let upstream: std::net::SocketAddr = host_port.parse().expect("host:port of the test database");
    let proxy = Proxy::start(upstream);
    let via_proxy = format!(
        "{before_host}@127.0.0.1:{}/{}",
        proxy.port,
        after_host.split_once('/').map_or("", |(_, db)| db)
    );

    let control = Arc::new(Control::detached());
    let rec =
        Recorder::spawn(recorder_config(&ns, &s, via_proxy), control.clone()).expect("recorder");
    let schema = s.layout.broker_schema(&ns.broker);
    let (_, first): (Vec<_>, Vec<_>) = (0..20).map(|n| filled(&ns.broker, n)).unzip();
    produce(&fills_topic, &first).await;
    wait_for("20 fills", Duration::from_secs(60), || {
        count(&format!("SELECT count(*) AS n FROM \"{schema}\".fills")) == 20
    });

    proxy.cut();
    let (_, during): (Vec<_>, Vec<_>) = (20..60).map(|n| filled(&ns.broker, n)).unzip();
    produce(&fills_topic, &during).await;
    wait_for("the broker degraded", Duration::from_secs(20), || {
        control
            .degraded()
            .get(ns.broker.as_str())
            .is_some_and(|stages| {
                stages
                    .get("recorder")
                    .is_some_and(|why| why.contains("recorder paused"))
            })
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        count(&format!("SELECT count(*) AS n FROM \"{schema}\".fills")),
        20
    );
    proxy.restore();

    wait_for("60 fills", Duration::from_secs(60), || {
        count(&format!("SELECT count(*) AS n FROM \"{schema}\".fills")) == 60
    });
    wait_for("the degradation to end", Duration::from_secs(10), || {
        control.degraded().is_empty()
    });
    assert!(
        rec.stats.failed_writes.load(Ordering::Relaxed) > 0,
        "no write ever failed"
    );
    tokio::task::spawn_blocking(move || rec.stop())
        .await
        .expect("stop");
}

#[test]
fn stored_strategies_come_back_in_their_order_and_an_import_replaces_the_whole_set() {
    let ns = Namespace::new();
    let s = Scratch::new(&ns, &["paper"]);
    migrate::migrate(&s.target(), &s.layout, &s.brokers).expect("migrate");
    let url = database_url();
    let set = alpha_panda_config::Settings::default().strategies;
    assert!(set.len() >= 3);
    let n = alpha_panda_db::strategies::replace_all(&url, &s.layout, &set, "test").expect("store");
    assert_eq!(n, set.len());
    let back = alpha_panda_db::strategies::load_all(&url, &s.layout).expect("load");
    assert_eq!(back, set, "the same strategies, in the same order");

    let one = vec![set[2].clone()];
    alpha_panda_db::strategies::replace_all(&url, &s.layout, &one, "test").expect("store");
    let back = alpha_panda_db::strategies::load_all(&url, &s.layout).expect("load");
    assert_eq!(
        back, one,
        "an import replaces the set, it does not add to it"
    );
}
