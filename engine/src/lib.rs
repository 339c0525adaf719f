//! Alpha Panda's trading logic, one crate for its two drivers: the daemon's actors
//! (`alpha-panda-actors`, over Kafka or the in-process transport) and the backtest loop
//! (`alpha-panda-supervisors::backtest`) call the same functions.
//!
//! Pure: no I/O, no clock, no actix. Time comes from the events' event time; every
//! decision is a function of the events handed in, in the order they are handed in.
//! - `strategy`: the strategy kinds and their indicators, routed by instrument.
//! - `risk`: the risk rules of one broker and the book they read.
//! - `day_pnl`: each strategy's PnL per trading day, from fills and marks, for risk.
//! - `paper`: the paper trader (fill model, charges, orders resting per instrument).
//! - `portfolio`: positions, PnL and cash of one (broker, strategy).

pub mod day_pnl;
pub mod paper;
pub mod portfolio;
pub mod risk;
pub mod strategy;

use alpha_panda_core::EventEnvelope;

/// The hash maps of the per-tick path: keyed by instrument tokens, strategy ids and order
/// ids, looked up several times per tick. Fx hashing is several times cheaper than the
/// standard SipHash; its weakness (keys chosen to collide) does not apply to keys that
/// come from the configuration and the engine's own ids. Nothing is emitted in a map's
/// iteration order.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;
/// A set hashed as [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;

/// Serde for a map whose keys JSON cannot name (tuples): a list of `[key, value]` pairs.
/// For checkpointed state (`#[serde(with = "crate::pairs")]`).
pub(crate) mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, M, K, V, S>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
use alpha_panda_topics::TopicName;

/// An event the logic emits, and the topic it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: TopicName,
    pub envelope: EventEnvelope,
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
