//! Support for the operations tests: two paper brokers, a private Redis database or
//! redis-server, a tiny HTTP client, and the daemon's HTTP server on a free port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alpha_panda_config::{Settings, load};

use crate::redis_url;

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Settings with two paper brokers, `paper` and `paper2`, every strategy trading on both,
/// with the limits that span partitions lifted (see `ticks::generous_limits`), plus `extra`.
pub fn two_paper_brokers(extra: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = crate::ticks::generous_limits();
    for (k, v) in env.clone() {
        if k.contains("__RISK__PAPER__") {
            env.push((k.replace("__RISK__PAPER__", "__RISK__PAPER2__"), v));
        }
    }
    let mut add = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
    add("ACTIVE_BROKERS", "paper,paper2");
    add("ALPHA_PANDA__BROKERS__PAPER2__KIND", "paper");
    add("ALPHA_PANDA__BROKERS__PAPER2__ACCOUNT", "PAPER2");
    for i in 0..3 {
        add(
            &format!("ALPHA_PANDA__STRATEGIES__{i}__BROKERS"),
            r#"["paper","paper2"]"#,
        );
    }
    for (k, v) in extra {
        add(k, v);
    }
    load(None, env).unwrap_or_else(|e| panic!("test settings: {e}"))
}

/// A Redis URL on database `db` of the test redis-server, emptied first. The daemon's keys
/// (`paper:…`) are not namespaced by test, so each test binary takes a database of its own.
pub fn fresh_redis_db(db: u8) -> String {
    let url = format!("{}/{db}", redis_url().trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut conn).unwrap();
    url
}

/// One HTTP/1.1 exchange: (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n..];
        s = s.strip_prefix("\r\n").unwrap_or(s);
    }
    out
}

/// GET returning parsed JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(addr, "GET", path, None, None);
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

/// GET with the admin token, returning parsed JSON.
pub fn get_json_as(addr: SocketAddr, path: &str, token: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(addr, "GET", path, Some(token), None);
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

/// A redis-server of the test's own, on a private port, with an append-only file fsynced on
/// every write, so stopping and starting it loses nothing.
pub struct PrivateRedis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("alpha-panda-redis-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Self {
            port,
            dir,
            child: None,
        };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and data directory.
    pub fn resume(&mut self) {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends a signal to a process (SIGSTOP, SIGCONT, …) with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Every record of a topic on `servers`, read from the beginning up to the current end of
/// each partition: (partition, offset, envelope). Records that do not decode are skipped.
pub fn read_envelopes(
    servers: &str,
    topic: &str,
) -> Vec<(i32, i64, alpha_panda_core::EventEnvelope)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = alpha_panda_actors::kafka::client_config(servers, "ops-reader")
        .set("group.id", "ops-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if let Ok(env) =
                alpha_panda_core::EventEnvelope::decode(m.payload().unwrap_or_default())
            {
                out.push((m.partition(), m.offset(), env));
            }
            if ends
                .get(&m.partition())
                .is_some_and(|h| m.offset() + 1 >= *h)
            {
                ends.remove(&m.partition());
            }
        }
    }
    out
}

/// A daemon child process, killed when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `alpha-panda run` at `bin` with no settings inherited from the caller's shell, and the
/// limits that span partitions lifted (`ticks::generous_limits`).
pub fn daemon_command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("ALPHA_PANDA__") || k == "ACTIVE_BROKERS" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in crate::ticks::generous_limits() {
        cmd.env(k, v);
    }
    // Never the data directory: these daemons keep their state in Redis or nowhere.
    cmd.args(["run", "--ephemeral"]);
    cmd
}
