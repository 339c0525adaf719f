//! Deterministic ticks and settings for restart tests.

use alpha_panda_actors::feed::SyntheticFeed;
use alpha_panda_config::Settings;
use alpha_panda_core::{EventBroker, EventData, EventEnvelope, Timestamp};
use alpha_panda_topics::keys;

/// Settings overrides that lift the risk limits spanning partitions: with them binding,
/// which of two simultaneous signals on different partitions is refused depends on arrival
/// order (docs/architecture.md), and two runs could differ.
pub fn generous_limits() -> Vec<(String, String)> {
    [
        ("ALPHA_PANDA__SYNTHETIC__VOLATILITY", "0.003"),
        ("ALPHA_PANDA__RISK__PAPER__MAX_ORDERS_PER_SECOND", "100000"),
        ("ALPHA_PANDA__RISK__PAPER__MAX_ORDERS_PER_DAY", "100000"),
        (
            "ALPHA_PANDA__RISK__PAPER__MAX_GROSS_EXPOSURE",
            "\"1000000000\"",
        ),
        ("ALPHA_PANDA__RISK__PAPER__MAX_DAILY_LOSS", "\"1000000000\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Ticks with ids derived from their position, so two runs of the same ticks make the same
/// event ids all the way down.
pub fn numbered(settings: &Settings, n: i64) -> Vec<EventEnvelope> {
    let mut f = SyntheticFeed::new(&settings.synthetic);
    let mut out = Vec::new();
    for i in 0..n {
        let ts = Timestamp::from_unix_millis(1_705_290_000_000 + i * 200).unwrap();
        for tick in f.next_ticks(ts) {
            let id =
                alpha_panda_core::ids::child_id(uuid::Uuid::nil(), "test:tick", out.len() as u32);
            let mut env = EventEnvelope::root(
                EventBroker::Shared,
                "feed",
                keys::tick(tick.instrument_token),
                ts,
                EventData::MarketTick(tick),
            );
            (env.id, env.correlation_id, env.trace_id) = (id, id, id);
            out.push(env);
        }
    }
    out
}
