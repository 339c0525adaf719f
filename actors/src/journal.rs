//! The embedded default's durability hook: every change the in-process transport
//! (`InProcessBus`) and the memory store (`MemoryStore`) make is handed, as a `JournalOp`,
//! to a `Journal` that writes it somewhere lasting (the SQLite file of
//! `alpha_panda_db::embedded`), and what a journal kept is handed back at start as a
//! `Restored` to rebuild both.
//!
//! Contract:
//! - An op is handed to the journal **while the lock that made the change is held**, so the
//!   journal sees changes in an order consistent with what happened: a change that caused
//!   another (a fill appended, then the checkpoint that counted it) is journalled first.
//!   A journal that keeps a prefix of its ops (a crash loses the tail) therefore keeps a
//!   state the process really passed through: no checkpoint without the records it
//!   covers, no commit beyond the records it committed.
//! - The ops of one `record` call are one change (a checkpoint with its dedup marks and
//!   effects): kept together or not at all.
//! - `Journal::record` never blocks on I/O: it queues. Writing happens elsewhere, batched.
//! - Nothing here does I/O; the journal is a trait so the actors crate stays free of any
//!   database.

use std::sync::Arc;

use crate::delivery::inprocess::StoredRecord;
use crate::delivery::origin::Position;

/// One change to the in-process transport or the memory store.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalOp {
    /// A topic was created with this many partitions.
    Topic { topic: String, partitions: usize },
    /// A record was appended at this offset.
    Append {
        topic: String,
        partition: i32,
        offset: i64,
        record: StoredRecord,
    },
    /// The partition's records below `below` were read by every group and dropped.
    Trimmed {
        topic: String,
        partition: i32,
        below: i64,
    },
    /// A consumer group's committed offset moved to `next`.
    Commit {
        group: String,
        topic: String,
        partition: i32,
        next: i64,
    },
    /// A store value was set (a checkpoint, an effect's result, operator state).
    Value { key: String, value: String },
    /// A store value was removed (a checkpoint part that is gone).
    Removed { key: String },
    /// A dedup mark, valid until this time (Unix milliseconds).
    Mark { key: String, expires_unix_ms: i64 },
    /// An input partition's watermark for `source` moved to `position`.
    Watermark {
        key: String,
        source: String,
        position: Position,
    },
}

/// Where the ops go. Implementations queue and return at once.
pub trait Journal: Send + Sync {
    /// Ops that happened together (a checkpoint with its marks and effects): a journal
    /// keeps all of them or none.
    fn record(&self, ops: Vec<JournalOp>);
}

/// A shared journal, as the bus and the store hold it.
pub type SharedJournal = Arc<dyn Journal>;

/// What a journal kept, to rebuild the bus and the store at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restored {
    /// Topic → its partitions.
    pub topics: Vec<(String, Vec<RestoredPartition>)>,
    /// (group, topic, partition, next offset).
    pub committed: Vec<(String, String, i32, i64)>,
    pub values: Vec<(String, String)>,
    /// (key, expiry in Unix milliseconds), oldest mark first.
    pub marks: Vec<(String, i64)>,
    /// (key, source, position).
    pub watermarks: Vec<(String, String, Position)>,
}

/// A partition as a journal keeps it: the offset of its first record kept (those before
/// were trimmed) and its records from there, in offset order.
pub type RestoredPartition = (i64, Vec<StoredRecord>);

/// Now, in Unix milliseconds.
pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Restored {
    fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut RestoredPartition> {
        self.topics
            .iter_mut()
            .find(|(t, _)| t == topic)
            .and_then(|(_, ps)| ps.get_mut(usize::try_from(partition).ok()?))
    }

    /// Folds one op into what a journal keeps: what a journal that kept every op up to
    /// here would hand back (the SQLite journal's tables hold the same).
    pub fn apply(&mut self, op: JournalOp) {
        match op {
            JournalOp::Topic { topic, partitions } => {
                if !self.topics.iter().any(|(t, _)| *t == topic) {
                    self.topics
                        .push((topic, vec![(0, Vec::new()); partitions.max(1)]));
                }
            }
            JournalOp::Append {
                topic,
                partition,
                offset,
                record,
            } => {
                if let Some(log) = self.partition_mut(&topic, partition)
                    && offset == log.0 + log.1.len() as i64
                {
                    log.1.push(record);
                }
            }
            JournalOp::Trimmed {
                topic,
                partition,
                below,
            } => {
                if let Some(log) = self.partition_mut(&topic, partition)
                    && below > log.0
                {
                    let n = usize::try_from(below - log.0).unwrap_or(0).min(log.1.len());
                    log.1.drain(..n);
                    log.0 = below;
                }
            }
            JournalOp::Commit {
                group,
                topic,
                partition,
                next,
            } => {
                match self
                    .committed
                    .iter_mut()
                    .find(|(g, t, p, _)| *g == group && *t == topic && *p == partition)
                {
                    Some(c) => c.3 = next,
                    None => self.committed.push((group, topic, partition, next)),
                }
            }
            JournalOp::Removed { key } => self.values.retain(|(k, _)| *k != key),
            JournalOp::Value { key, value } => {
                match self.values.iter_mut().find(|(k, _)| *k == key) {
                    Some(v) => v.1 = value,
                    None => self.values.push((key, value)),
                }
            }
            JournalOp::Mark {
                key,
                expires_unix_ms,
            } => {
                self.marks.retain(|(k, _)| *k != key);
                self.marks.push((key, expires_unix_ms));
            }
            JournalOp::Watermark {
                key,
                source,
                position,
            } => {
                match self
                    .watermarks
                    .iter_mut()
                    .find(|(k, s, _)| *k == key && *s == source)
                {
                    Some(w) => w.2 = position,
                    None => self.watermarks.push((key, source, position)),
                }
            }
        }
    }
}

/// A journal that keeps its ops in memory: for tests of the bus and the store, and to see
/// what a journal is handed.
#[derive(Default)]
pub struct VecJournal {
    ops: std::sync::Mutex<Vec<JournalOp>>,
}

impl VecJournal {
    /// Every op recorded so far, in order.
    pub fn ops(&self) -> Vec<JournalOp> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What a journal that kept every op so far would hand back.
    pub fn restored(&self) -> Restored {
        let mut r = Restored::default();
        for op in self.ops() {
            r.apply(op);
        }
        r
    }
}

impl Journal for VecJournal {
    fn record(&self, ops: Vec<JournalOp>) {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ops);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use alpha_panda_topics::TopicName;

    use super::*;
    use crate::delivery::inprocess::InProcessBus;
    use crate::store::{CheckpointWrite, Effect, MemoryStore, Store, Written};

    fn record(n: u8) -> StoredRecord {
        StoredRecord {
            key: Some(vec![n]),
            value: Some(vec![n, n]),
            headers: vec![("h".into(), Some(vec![n]))],
        }
    }

    #[test]
    fn a_bus_rebuilt_from_its_journal_has_the_same_topics_and_logs() {
        let journal = Arc::new(VecJournal::default());
        let bus = InProcessBus::journalled(journal.clone(), &Restored::default());
        let ticks = TopicName::market_ticks();
        bus.create_topic(&ticks, 3);
        bus.create_topic(&ticks, 3);
        for n in 0..10 {
            bus.append(&ticks.to_string(), record(n)).unwrap();
        }
        let again = InProcessBus::journalled(journal.clone(), &journal.restored());
        assert_eq!(again.records(&ticks), bus.records(&ticks));
        assert_eq!(again.end_offsets(&ticks), bus.end_offsets(&ticks));
        let topics = journal
            .ops()
            .iter()
            .filter(|o| matches!(o, JournalOp::Topic { .. }))
            .count();
        assert_eq!(topics, 1, "a topic created twice is journalled once");
    }

    #[actix_rt::test]
    async fn a_store_rebuilt_from_its_journal_has_the_same_values_marks_and_watermarks() {
        let journal = Arc::new(VecJournal::default());
        let store = Store::Memory(MemoryStore::journalled(
            journal.clone(),
            &Restored::default(),
        ));
        let ttl = Duration::from_secs(60);
        let fx = [Effect::IncrBy {
            key: "n".into(),
            by: 3,
        }];
        store.mark("m1", ttl, &fx).await.unwrap();
        let write = |head, expected, parts| CheckpointWrite {
            key: "cp",
            head,
            expected,
            parts,
            replace_parts: false,
            marks: &[],
            ttl,
            effects: &[],
        };
        let parts = [
            ("a".to_owned(), Some("[1]".to_owned())),
            ("b".to_owned(), Some("[2]".to_owned())),
        ];
        assert_eq!(
            store
                .save_checkpoint(&write("{\"at\":0}", 0, &parts))
                .await
                .unwrap(),
            Written::Done
        );
        let marks = [("m2".to_owned(), "t/0@0".to_owned())];
        let parts = [("a".to_owned(), None)];
        let w = CheckpointWrite {
            marks: &marks,
            effects: &fx,
            ..write("{\"at\":1}", 1, &parts)
        };
        assert_eq!(store.save_checkpoint(&w).await.unwrap(), Written::Done);
        store.advance("wm", "risk", (7, 2), &fx).await.unwrap();
        store.set("state", "halted").await.unwrap();
        let again = Store::Memory(MemoryStore::journalled(
            journal.clone(),
            &journal.restored(),
        ));
        for key in ["n", "cp", "state"] {
            assert_eq!(again.get(key).await.unwrap(), store.get(key).await.unwrap());
        }
        let cp = again.load_checkpoint("cp").await.unwrap().unwrap();
        assert_eq!(cp, store.load_checkpoint("cp").await.unwrap().unwrap());
        assert_eq!(
            (cp.head.as_str(), cp.version, cp.parts),
            ("{\"at\":1}", 2, vec![("b".to_owned(), "[2]".to_owned())]),
            "the head, the version and the parts left after a removal come back"
        );
        assert_eq!(again.get("n").await.unwrap().as_deref(), Some("9"));
        assert!(again.is_marked("m1").await.unwrap());
        assert!(again.is_marked("m2").await.unwrap());
        assert!(!again.is_marked("m3").await.unwrap());
        assert_eq!(
            again.watermarks("wm").await.unwrap().get("risk"),
            Some(&(7, 2))
        );
        assert!(
            !again.advance("wm", "risk", (7, 2), &fx).await.unwrap(),
            "an origin applied before the restart is a duplicate after it"
        );
    }

    #[test]
    fn expired_marks_do_not_come_back() {
        let journal = Arc::new(VecJournal::default());
        journal.record(vec![
            JournalOp::Mark {
                key: "old".into(),
                expires_unix_ms: unix_ms_now() - 1,
            },
            JournalOp::Mark {
                key: "new".into(),
                expires_unix_ms: unix_ms_now() + 60_000,
            },
        ]);
        let store = MemoryStore::journalled(journal.clone(), &journal.restored());
        assert_eq!(store.keys(), vec!["new".to_owned()]);
    }

    #[actix_rt::test]
    async fn a_checkpoint_and_its_marks_and_effects_are_one_journal_entry() {
        struct Calls(std::sync::Mutex<Vec<usize>>);
        impl Journal for Calls {
            fn record(&self, ops: Vec<JournalOp>) {
                self.0.lock().unwrap().push(ops.len());
            }
        }
        let calls = Arc::new(Calls(Default::default()));
        let store = MemoryStore::journalled(calls.clone(), &Restored::default());
        let fx = [Effect::Set {
            key: "p".into(),
            value: "1".into(),
        }];
        let s = Store::Memory(store);
        s.save_checkpoint(&CheckpointWrite {
            key: "cp",
            head: "x",
            expected: 0,
            parts: &[("p1".into(), Some("{}".into()))],
            replace_parts: false,
            marks: &[("a".into(), "t/0@0".into()), ("b".into(), "t/0@1".into())],
            ttl: Duration::from_secs(5),
            effects: &fx,
        })
        .await
        .unwrap();
        assert_eq!(
            *calls.0.lock().unwrap(),
            vec![6],
            "two marks, the checkpoint, its version, its part and the effect in one call"
        );
    }
}
