//! Where an internal record came from, and the watermark that drops its re-emissions
//! (DESIGN §3.4, "Dedup by source watermark").
//!
//! Every event a stage emits while handling a record carries an `origin` header: the
//! producing consumer group, the topic, partition and offset of the record it handled, and
//! the event's ordinal among that record's outputs. A consumer keeps, per input partition,
//! the highest origin it applied per (source group, topic, partition) and drops a record at
//! or below it.
//!
//! Why this is exact: a source partition is handled by one member at a time, in offset
//! order, and each record's outputs are produced in ordinal order by an idempotent producer,
//! which keeps per-partition order. So the origins one source partition sends into one
//! destination partition only grow, except for a re-emission: a record handled again after
//! a crash (or by a zombie member after a rebalance) re-emits the same origins with the same
//! deterministic ids, all at or below what the destination already applied. A zombie is
//! bounded by this too: whatever it emits after losing the partition is a copy of what the
//! new owner emits for the same records.
//!
//! The runtime's feeds stamp an origin too ([`FeedOrigin`]): source group `feed.{id}`, topic
//! `feed`, partition 0, and a sequence that only grows, across the feed's restarts too. One
//! feed sends its ticks in order, so every partition of `market.ticks` sees a growing
//! subsequence of that sequence: the watermark drops only what was sent before.
//!
//! Records without an origin (ticks of a feed outside the runtime, DLQ replays, records
//! republished by hand) keep the event-id dedup mark.

use std::fmt;

use crate::store::{Store, StoreError};

/// The header that carries a record's origin.
pub const ORIGIN_HEADER: &str = "origin";

/// A record's place in its source's order: the source record's offset, then the ordinal of
/// the output among that record's outputs.
pub type Position = (i64, u32);

/// Where an emitted record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The consumer group of the stage that emitted it.
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub ordinal: u32,
}

impl Origin {
    /// The source a watermark is kept for: `{group}|{topic}|{partition}`.
    pub fn source(&self) -> String {
        format!("{}|{}|{}", self.group, self.topic, self.partition)
    }

    pub fn position(&self) -> Position {
        (self.offset, self.ordinal)
    }

    /// Reads an origin header's value; `None` for anything that is not one (a foreign
    /// producer's header of the same name is then treated as no origin: event-id dedup).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(value).ok()?;
        // Group and topic contain no '|': split from the right.
        let mut parts = s.rsplitn(4, '|');
        let ordinal = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        let (group, topic) = parts.next()?.split_once('|')?;
        if group.is_empty() || topic.is_empty() || offset < 0 || partition < 0 {
            return None;
        }
        Some(Self {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            offset,
            ordinal,
        })
    }

    /// The origin of a record, from its headers.
    pub fn of(headers: &[(String, Option<Vec<u8>>)]) -> Option<Self> {
        headers
            .iter()
            .find(|(k, _)| k == ORIGIN_HEADER)
            .and_then(|(_, v)| v.as_deref())
            .and_then(Self::parse)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}|{}",
            self.group, self.topic, self.partition, self.offset, self.ordinal
        )
    }
}

/// The record a stage handled, whose outputs it stamps with their ordinals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Source {
    pub fn output(&self, ordinal: u32) -> Origin {
        Origin {
            group: self.group.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            ordinal,
        }
    }
}

/// Sequence numbers a feed reserves in the store at a time.
pub const FEED_BLOCK: i64 = 100_000;

/// The origin a feed of the runtime stamps on its ticks.
///
/// The sequence comes from blocks reserved in the store (`market:feed:{id}:sequence`,
/// `INCRBY`), so a restarted feed continues above anything its previous run can have used,
/// whatever the clock says. The id must be unique among the feeds running at once: the
/// daemon uses `kafka.instance_id`, or, without one, an id of its own run (each run is then a
/// new source, one more watermark entry per input partition).
pub struct FeedOrigin {
    group: String,
    store: Store,
    key: String,
    next: i64,
    end: i64,
}

impl FeedOrigin {
    pub fn new(store: Store, id: &str) -> Self {
        Self {
            group: format!("feed.{id}"),
            key: format!("market:feed:{id}:sequence"),
            store,
            next: 0,
            end: 0,
        }
    }

    /// The source of the next batch of ticks (one `send_all_from`): its ticks take ordinals
    /// 0, 1, … A store failure is the caller's: the ticks go out without an origin (event-id
    /// dedup) rather than not at all.
    pub async fn next(&mut self) -> Result<Source, StoreError> {
        if self.next >= self.end {
            self.next = self.store.reserve(&self.key, FEED_BLOCK).await?;
            self.end = self.next + FEED_BLOCK;
        }
        let offset = self.next;
        self.next += 1;
        Ok(Source {
            group: self.group.clone(),
            topic: "feed".to_owned(),
            partition: 0,
            offset,
        })
    }
}

/// Encodes a watermark position for the store: `{offset}:{ordinal}`.
pub fn encode_position(p: Position) -> String {
    format!("{}:{}", p.0, p.1)
}

pub fn decode_position(s: &str) -> Option<Position> {
    let (o, n) = s.split_once(':')?;
    Some((o.parse().ok()?, n.parse().ok()?))
}

/// The store key of an input partition's watermarks (a hash: source → position):
/// `{namespace}:watermark:{group}:{topic}:{partition}`.
pub fn watermark_key(namespace: &str, group: &str, topic: &str, partition: i32) -> String {
    format!("{namespace}:watermark:{group}:{topic}:{partition}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_origin_reads_back_from_its_header() {
        let o = Origin {
            group: "alpha-panda.market.strategy".into(),
            topic: "market.ticks".into(),
            partition: 7,
            offset: 123_456,
            ordinal: 2,
        };
        assert_eq!(
            o.to_string(),
            "alpha-panda.market.strategy|market.ticks|7|123456|2"
        );
        assert_eq!(Origin::parse(o.to_string().as_bytes()), Some(o.clone()));
        assert_eq!(o.source(), "alpha-panda.market.strategy|market.ticks|7");
    }

    #[test]
    fn what_is_not_an_origin_is_none() {
        for bad in [
            "",
            "x",
            "g|t|1|2",
            "g|t|-1|2|0",
            "g|t|1|-2|0",
            "|t|1|2|0",
            "g||1|2|0",
            "g|t|a|2|0",
        ] {
            assert_eq!(Origin::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Origin::parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn positions_order_by_offset_then_ordinal() {
        assert!((5, 9) < (6, 0));
        assert!((6, 0) < (6, 1));
        assert_eq!(decode_position(&encode_position((6, 1))), Some((6, 1)));
        assert_eq!(decode_position("6"), None);
    }

    #[tokio::test]
    async fn a_feed_sequence_keeps_growing_across_restarts() {
        let store = Store::Memory(crate::store::MemoryStore::default());
        let mut first = FeedOrigin::new(store.clone(), "a");
        let a = first.next().await.unwrap();
        let b = first.next().await.unwrap();
        assert_eq!(
            (a.group.as_str(), a.topic.as_str(), a.partition),
            ("feed.a", "feed", 0)
        );
        assert!(b.offset > a.offset);
        // A restart: the new run's numbers lie above the whole block the first one took.
        let mut again = FeedOrigin::new(store.clone(), "a");
        let c = again.next().await.unwrap();
        assert!(c.offset >= a.offset + FEED_BLOCK, "{c:?}");
        // Another feed has its own source.
        let other = FeedOrigin::new(store, "b").next().await.unwrap();
        assert_ne!(other.output(0).source(), c.output(0).source());
    }

    proptest! {
        #[test]
        fn any_origin_round_trips(
            group in "[a-z][a-z0-9._-]{0,30}",
            topic in "[a-z][a-z0-9._-]{0,30}",
            partition in 0i32..10_000,
            offset in 0i64..i64::MAX,
            ordinal in any::<u32>(),
        ) {
            let o = Origin { group, topic, partition, offset, ordinal };
            prop_assert_eq!(Origin::parse(o.to_string().as_bytes()), Some(o));
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Origin::parse(&bytes);
        }
    }
}
