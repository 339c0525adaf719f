//! Test support: where the real services are, and a private namespace on each of them per
//! test, so tests run in parallel without seeing each other.
//!
//! `scripts/test.sh` starts the services and exports their addresses. Run outside it, a test
//! that needs a service fails and says so: it never skips silently.

use std::time::Duration;

use alpha_panda_core::BrokerName;
use alpha_panda_topics::TopicName;
use diesel::{Connection, PgConnection, RunQueryDsl};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs a real service. Run `bash scripts/test.sh`, \
             or `. scripts/services.sh` in your shell before `cargo test`."
        )
    })
}

/// `host:port` of the Kafka broker of this test run (`ALPHA_PANDA_TEST_KAFKA`).
pub fn kafka_servers() -> String {
    required_env("ALPHA_PANDA_TEST_KAFKA")
}

/// The daemon's Kafka settings as this process's environment sets them
/// (`ALPHA_PANDA__KAFKA__LINGER_MS=1 target/release/bench-broker` measures another linger),
/// else the defaults.
fn kafka_settings() -> alpha_panda_config::KafkaSettings {
    alpha_panda_config::load_from_env(None)
        .map(|s| s.kafka)
        .unwrap_or_default()
}

/// Producer settings of the daemon (`kafka.linger_ms`, `kafka.max_batch_records`), so tests
/// produce as a daemon would.
pub fn producer_config(servers: &str, client_id: &str) -> rdkafka::ClientConfig {
    let k = kafka_settings();
    alpha_panda_actors::kafka::producer_config(servers, client_id, k.linger_ms, k.max_batch_records)
}

/// The runtime's event producer with the daemon's settings.
pub fn producer(servers: &str, client_id: &str) -> alpha_panda_actors::delivery::EventProducer {
    let k = kafka_settings();
    alpha_panda_actors::delivery::EventProducer::kafka(
        servers,
        client_id,
        k.linger_ms,
        k.max_batch_records,
    )
    .unwrap_or_else(|e| panic!("Kafka producer for {servers}: {e}"))
}

/// `redis://` URL of the test redis-server.
pub fn redis_url() -> String {
    required_env("ALPHA_PANDA_TEST_REDIS")
}

/// `postgres://` URL of the test PostgreSQL (trust auth).
pub fn database_url() -> String {
    required_env("ALPHA_PANDA_TEST_DATABASE")
}

/// One test's private corner of every service: a broker name of its own (so its topics are
/// `{broker}.…`), consumer groups, a Redis key prefix and a PostgreSQL schema, all derived
/// from a fresh id.
pub struct Namespace {
    /// Short unique id, lowercase alphanumeric.
    pub id: String,
    pub broker: BrokerName,
}

impl Namespace {
    pub fn new() -> Self {
        // The tail of a v7 id is random; its head is the clock, shared by tests started together.
        let uuid = uuid::Uuid::now_v7().simple().to_string();
        let id = uuid[20..].to_owned();
        let broker = BrokerName::new(format!("t{id}"))
            .unwrap_or_else(|e| unreachable!("generated broker name: {e}"));
        Self { id, broker }
    }

    /// A consumer group of this test.
    pub fn group(&self, name: &str) -> String {
        format!("test-{}-{name}", self.id)
    }

    /// The prefix of this test's Redis keys, in the place of the broker prefix.
    pub fn redis_prefix(&self) -> String {
        self.broker.to_string()
    }

    /// The PostgreSQL schema of this test.
    pub fn schema(&self) -> String {
        format!("test_{}", self.id)
    }

    /// Creates these topics on the test broker and waits until they can be used.
    pub async fn create_topics(&self, topics: &[TopicName]) {
        alpha_panda_actors::kafka::admin::ensure(&kafka_servers(), "alpha-panda-test", topics)
            .await
            .unwrap_or_else(|e| panic!("creating test topics: {e}"));
    }

    /// A connection whose `search_path` is this test's own schema, created if needed.
    /// The schema is dropped when the returned guard is dropped.
    pub fn postgres(&self) -> PgSchema {
        let url = database_url();
        let mut conn = PgConnection::establish(&url)
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
        let schema = self.schema();
        diesel::sql_query(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
        diesel::sql_query(format!("SET search_path TO {schema}"))
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("selecting schema {schema}: {e}"));
        PgSchema { conn, schema }
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

/// A PostgreSQL connection confined to one test's schema; drops the schema on drop.
pub struct PgSchema {
    pub conn: PgConnection,
    pub schema: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .execute(&mut self.conn);
    }
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub mod bench;
pub mod ops;
pub mod signals;
pub mod stages;
pub mod ticks;
pub mod transport;

/// A record read back by a test: (partition, offset, key, value).
pub type ReadRecord = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Reads `topic` from the beginning with a fresh consumer group until `want` records have
/// arrived or `timeout` passed. Runs on a blocking thread, so the caller's runtime (an actix
/// system with the stages under test) keeps running.
pub async fn read_topic(topic: &TopicName, want: usize, timeout: Duration) -> Vec<ReadRecord> {
    let topic = topic.clone();
    tokio::task::spawn_blocking(move || read_topic_blocking(&topic, want, timeout))
        .await
        .unwrap_or_else(|e| panic!("reader thread: {e}"))
}

fn read_topic_blocking(topic: &TopicName, want: usize, timeout: Duration) -> Vec<ReadRecord> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer =
        alpha_panda_actors::kafka::consumer_config(&kafka_servers(), "test-reader", &group)
            .create()
            .unwrap_or_else(|e| panic!("reader: {e}"));
    consumer
        .subscribe(&[&topic.to_string()])
        .unwrap_or_else(|e| panic!("subscribe {topic}: {e}"));
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.partition(),
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

/// An Apache Kafka broker of one test's own (KRaft, one node, `scripts/kafka.sh run`), on its
/// own loopback ports, for tests that need the shared topic names (`market.ticks`, `paper.*`)
/// or want to stop, stall or restart the broker. Killed, and its log directory removed, on drop.
pub struct PrivateKafka {
    pub servers: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl PrivateKafka {
    /// The broker's process id: the JVM itself (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh");
        let dir = std::env::temp_dir().join(format!(
            "alpha-panda-kafka-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // Both ports are held until both are chosen, so they differ.
        let (port, controller_port) = {
            let bind = || {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap_or_else(|e| panic!("no free port: {e}"))
            };
            let (a, b) = (bind(), bind());
            let port = |l: &std::net::TcpListener| {
                l.local_addr()
                    .unwrap_or_else(|e| panic!("no free port: {e}"))
                    .port()
            };
            (port(&a), port(&b))
        };
        let log_path = dir.join("kafka.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let child = std::process::Command::new("bash")
            .arg(script)
            .arg("run")
            .arg(&dir)
            .args([port.to_string(), controller_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script}: {e}"));
        let mut kafka = Self {
            servers: format!("127.0.0.1:{port}"),
            child,
            dir,
        };
        kafka.wait_started(&log_path);
        kafka
    }

    /// The last `lines` lines of the broker's own log (for a test's failure message).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn wait_started(&mut self, log_path: &std::path::Path) {
        // A JVM start on a loaded 2-core machine can take tens of seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if log.contains("Kafka Server started") {
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || std::time::Instant::now() >= deadline {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "Apache Kafka did not start on {} ({}; `bash scripts/kafka.sh install` \
                     fetches it). Its log:\n{}",
                    self.servers,
                    exited.map_or("no start within 120 s".to_owned(), |s| s.to_string()),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
