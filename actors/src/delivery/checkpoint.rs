//! Checkpoints (DESIGN §3.4): a unit's stage state, the next offset of each input partition
//! it owns and the watermarks of what it applied, saved together after each batch whose
//! outputs the broker acknowledged. A member that takes the unit over loads the checkpoint
//! and seeks to its offsets: it reads no history.
//!
//! A unit is one partition (a stage whose state splits by partition, like the strategies':
//! `{namespace}:checkpoint:{group}:{topic}:{partition}`) or a whole stage (a broker stage
//! whose state spans its partitions and which runs on one member at a time, see `lease`:
//! `{namespace}:checkpoint:{group}`). Stored as one JSON value (the head), its version
//! (`{key}:version`) and, for a stage that saves a large state in parts, its parts
//! (`{key}:parts`, a hash: a batch writes only the parts it changed), written in one store
//! round trip together with the event-id marks of the batch's foreign records and the
//! batch's store effects (`Store::save_checkpoint`).
//!
//! Any checkpoint is a consistent pair (state, offset): the state is exactly that of the
//! records before the offset. A write is made only over the version its writer started from
//! (compare-and-set), so a member that lost the unit (a zombie) can neither move the pair
//! back nor mix its parts with its successor's: its write is refused, and it goes on from
//! the stored checkpoint (`CheckpointWorker::superseded`). Handling records again from an
//! older pair re-emits the same outputs with the same origins, which downstream drops.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::origin::Position;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Per input partition (`topic/partition`), the first offset not reflected in `state`.
    pub offsets: BTreeMap<String, i64>,
    /// Per input partition and source (`topic/partition>group|topic|partition`), the highest
    /// origin applied.
    #[serde(default)]
    pub watermarks: BTreeMap<String, Position>,
    /// The stage's own state (outside its parts).
    pub state: serde_json::Value,
    /// The version of the write that made this checkpoint (kept beside it in the store): the
    /// next write is made only over it.
    #[serde(skip)]
    pub version: u64,
    /// The state's parts, for a stage that saves a large state in parts so that a batch
    /// writes only what it changed: name → JSON (kept beside the checkpoint in the store).
    #[serde(skip)]
    pub parts: BTreeMap<String, String>,
}

/// The name of an input partition in a checkpoint: `topic/partition`.
pub fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The watermark entry of a source as seen on one input partition. Origins of one source
/// grow within each partition they reach, not across partitions, so each input partition
/// keeps its own.
pub fn watermark_name(input: &str, source: &str) -> String {
    format!("{input}>{source}")
}

impl Checkpoint {
    /// Where an input partition starts: its offset here, else its beginning.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(&partition_name(topic, partition)).copied()
    }

    pub fn encode(&self) -> String {
        // A Value and plain maps always serialize.
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("checkpoint encodes: {e}"))
    }

    pub fn decode(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// A checkpoint as the store holds it.
    pub fn from_stored(stored: crate::store::StoredCheckpoint) -> Result<Self, serde_json::Error> {
        let mut c = Self::decode(&stored.head)?;
        c.version = stored.version;
        c.parts = stored.parts.into_iter().collect();
        Ok(c)
    }
}

/// The store key of a partition's checkpoint.
pub fn checkpoint_key(namespace: &str, group: &str, topic: &str, partition: i32) -> String {
    format!("{namespace}:checkpoint:{group}:{topic}:{partition}")
}

/// The store key of a whole stage's checkpoint.
pub fn stage_checkpoint_key(namespace: &str, group: &str) -> String {
    format!("{namespace}:checkpoint:{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back() {
        let c = Checkpoint {
            offsets: [("market.ticks/3".to_owned(), 42)].into(),
            watermarks: [("p.signals.raw/1>g|t|1".to_owned(), (7, 2))].into(),
            state: serde_json::json!({"prices": ["1.5", "2"]}),
            version: 0,
            parts: BTreeMap::new(),
        };
        assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn a_checkpoint_without_watermarks_reads() {
        let c = Checkpoint::decode(r#"{"offsets":{"t/0":3},"state":null}"#).unwrap();
        assert_eq!(c.next_offset("t", 0), Some(3));
        assert_eq!(c.next_offset("t", 1), None);
        assert!(c.watermarks.is_empty());
    }
}
