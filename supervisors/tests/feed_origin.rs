//! The runtime's own feed stamps an origin on its ticks (`delivery::origin::FeedOrigin`), so
//! the three groups reading `market.ticks` keep a watermark per partition instead of a dedup
//! key per tick, and the feed's sequence keeps growing across a restart of the daemon (were
//! it to start again from zero, every new tick would fall below the watermark and be
//! dropped). Over Apache Kafka (a broker of the test's own: the topic names are shared) and
//! redis-server (database 7).

use std::process::Stdio;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::origin::FEED_BLOCK;
use alpha_panda_tests::PrivateKafka;
use alpha_panda_tests::ops::{Daemon, daemon_command, free_port, fresh_redis_db, signal};

fn start(kafka: &PrivateKafka, redis: &str) -> Daemon {
    let child = daemon_command(env!("CARGO_BIN_EXE_alpha-panda"))
        .env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", &kafka.servers)
        .env("ALPHA_PANDA__KAFKA__INSTANCE_ID", "feed-origin")
        .env("ALPHA_PANDA__KAFKA__GROUP_PREFIX", "feed-origin")
        .env("ALPHA_PANDA__REDIS__URL", redis)
        .env("ALPHA_PANDA__FEED", "synthetic")
        .env("ALPHA_PANDA__SYNTHETIC__TICKS_PER_SECOND", "20")
        .env(
            "ALPHA_PANDA__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ALPHA_PANDA__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("daemon starts");
    Daemon(child)
}

/// The highest feed position the strategy group applied, over its partitions of
/// `market.ticks`: the strategies are a checkpointed unit per partition, which keeps its
/// watermarks in its checkpoint.
fn strategy_watermark(conn: &mut redis::Connection) -> Option<i64> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("market:checkpoint:feed-origin.market.strategy:market.ticks:*")
        .query(conn)
        .unwrap();
    keys.iter()
        .filter_map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(k).query(conn).unwrap();
            let checkpoint: serde_json::Value = serde_json::from_str(&v?).unwrap();
            checkpoint["watermarks"]
                .as_object()?
                .iter()
                .filter(|(name, _)| name.ends_with(">feed.feed-origin|feed|0"))
                .filter_map(|(_, position)| position[0].as_i64())
                .max()
        })
        .max()
}

fn wait_for(conn: &mut redis::Connection, what: &str, ok: impl Fn(i64) -> bool) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(w) = strategy_watermark(conn).filter(|w| ok(*w)) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: watermark {:?}",
            strategy_watermark(conn)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_feed_stamps_origins_so_ticks_leave_no_dedup_keys_and_its_sequence_survives_a_restart() {
    let kafka = PrivateKafka::start();
    let redis = fresh_redis_db(7);
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut daemon = start(&kafka, &redis);
    let before = wait_for(&mut conn, "ticks handled by the first run", |w| w >= 100);
    signal(daemon.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let daemon = start(&kafka, &redis);
    // The second run reserved a new block: its ticks lie above everything of the first.
    let after = wait_for(&mut conn, "ticks handled after the restart", |w| {
        w >= FEED_BLOCK + 50
    });
    assert!(after > before);
    let sequence: i64 = redis::cmd("GET")
        .arg("market:feed:feed-origin:sequence")
        .query(&mut conn)
        .unwrap();
    assert_eq!(sequence, 2 * FEED_BLOCK, "one block per run");
    // Fills keep an event-id mark in the portfolio (a fill can come once with an origin and
    // once without); ticks and every other internal record leave none.
    let dedup: Vec<String> = redis::cmd("KEYS")
        .arg("*:dedup:*")
        .query::<Vec<String>>(&mut conn)
        .unwrap()
        .into_iter()
        .filter(|k| !k.contains(".portfolio:"))
        .collect();
    assert!(
        dedup.is_empty(),
        "internal records left dedup keys: {:?}",
        &dedup[..dedup.len().min(5)]
    );
    drop(daemon);
}
