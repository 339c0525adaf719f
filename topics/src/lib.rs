//! The topic taxonomy (DESIGN §3.2).
//!
//! `{broker}.{domain}.{event}[.dlq]` for everything a broker owns, and the shared
//! `market.ticks[.dlq]`. Topic names are parsed, never pattern-matched: a stage learns the
//! broker of a record from the name of the topic it came from, and subscriptions list topics
//! explicitly, so a wildcard or any unknown shape is an error here.

use std::fmt;
use std::str::FromStr;

use alpha_panda_core::{AccountId, BrokerName, EventType, InstrumentToken, StrategyId};

/// A topic a broker owns, without its broker and DLQ suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BrokerTopic {
    SignalsRaw,
    SignalsValidated,
    SignalsRejected,
    OrdersSubmitted,
    OrdersAck,
    OrdersFilled,
    OrdersFailed,
    PnlSnapshots,
}

impl BrokerTopic {
    pub const ALL: [BrokerTopic; 8] = [
        BrokerTopic::SignalsRaw,
        BrokerTopic::SignalsValidated,
        BrokerTopic::SignalsRejected,
        BrokerTopic::OrdersSubmitted,
        BrokerTopic::OrdersAck,
        BrokerTopic::OrdersFilled,
        BrokerTopic::OrdersFailed,
        BrokerTopic::PnlSnapshots,
    ];

    pub fn domain(self) -> &'static str {
        match self {
            BrokerTopic::SignalsRaw
            | BrokerTopic::SignalsValidated
            | BrokerTopic::SignalsRejected => "signals",
            BrokerTopic::OrdersSubmitted
            | BrokerTopic::OrdersAck
            | BrokerTopic::OrdersFilled
            | BrokerTopic::OrdersFailed => "orders",
            BrokerTopic::PnlSnapshots => "pnl",
        }
    }

    pub fn event(self) -> &'static str {
        match self {
            BrokerTopic::SignalsRaw => "raw",
            BrokerTopic::SignalsValidated => "validated",
            BrokerTopic::SignalsRejected => "rejected",
            BrokerTopic::OrdersSubmitted => "submitted",
            BrokerTopic::OrdersAck => "ack",
            BrokerTopic::OrdersFilled => "filled",
            BrokerTopic::OrdersFailed => "failed",
            BrokerTopic::PnlSnapshots => "snapshots",
        }
    }

    /// The one event type this topic carries.
    pub fn event_type(self) -> EventType {
        match self {
            BrokerTopic::SignalsRaw => EventType::TradingSignal,
            BrokerTopic::SignalsValidated => EventType::ValidatedSignal,
            BrokerTopic::SignalsRejected => EventType::RejectedSignal,
            BrokerTopic::OrdersSubmitted => EventType::OrderPlaced,
            BrokerTopic::OrdersAck => EventType::OrderAck,
            BrokerTopic::OrdersFilled => EventType::OrderFilled,
            BrokerTopic::OrdersFailed => EventType::OrderFailed,
            BrokerTopic::PnlSnapshots => EventType::PnlSnapshot,
        }
    }

    /// Whether a stage of the runtime consumes this topic, and so whether it has a DLQ.
    /// Risk reads `signals.raw`, the trader `signals.validated`, the portfolio the order
    /// topics. Rejected signals and PnL snapshots are outputs only.
    pub fn is_consumed(self) -> bool {
        !matches!(
            self,
            BrokerTopic::SignalsRejected | BrokerTopic::PnlSnapshots
        )
    }

    fn parse(domain: &str, event: &str) -> Option<Self> {
        BrokerTopic::ALL
            .into_iter()
            .find(|t| t.domain() == domain && t.event() == event)
    }
}

/// A parsed, valid topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicName {
    /// `market.ticks`, or `market.ticks.dlq`: shared by every broker.
    MarketTicks { dlq: bool },
    /// `{broker}.{domain}.{event}`, or its `.dlq`.
    Broker {
        broker: BrokerName,
        topic: BrokerTopic,
        dlq: bool,
    },
}

impl TopicName {
    pub fn market_ticks() -> Self {
        TopicName::MarketTicks { dlq: false }
    }

    pub fn broker(broker: &BrokerName, topic: BrokerTopic) -> Self {
        TopicName::Broker {
            broker: broker.clone(),
            topic,
            dlq: false,
        }
    }

    /// The broker that owns the topic; `None` for the shared market data topics.
    pub fn broker_name(&self) -> Option<&BrokerName> {
        match self {
            TopicName::MarketTicks { .. } => None,
            TopicName::Broker { broker, .. } => Some(broker),
        }
    }

    pub fn is_dlq(&self) -> bool {
        match self {
            TopicName::MarketTicks { dlq } | TopicName::Broker { dlq, .. } => *dlq,
        }
    }

    /// Whether a stage consumes this topic (and so it has a DLQ). DLQs themselves are read
    /// only by the `dlq` CLI.
    pub fn is_consumed(&self) -> bool {
        match self {
            TopicName::MarketTicks { dlq } => !dlq,
            TopicName::Broker { topic, dlq, .. } => !dlq && topic.is_consumed(),
        }
    }

    /// The dead-letter topic of a consumed topic; `None` for a DLQ or an unconsumed topic.
    pub fn dlq(&self) -> Option<TopicName> {
        if !self.is_consumed() {
            return None;
        }
        Some(match self {
            TopicName::MarketTicks { .. } => TopicName::MarketTicks { dlq: true },
            TopicName::Broker { broker, topic, .. } => TopicName::Broker {
                broker: broker.clone(),
                topic: *topic,
                dlq: true,
            },
        })
    }

    /// The topic a DLQ holds the failures of; `None` if this is not a DLQ.
    pub fn origin(&self) -> Option<TopicName> {
        match self {
            TopicName::MarketTicks { dlq: true } => Some(TopicName::market_ticks()),
            TopicName::Broker {
                broker,
                topic,
                dlq: true,
            } => Some(TopicName::broker(broker, *topic)),
            _ => None,
        }
    }

    /// The event type the topic carries (`system_error` for every DLQ).
    pub fn event_type(&self) -> EventType {
        match self {
            _ if self.is_dlq() => EventType::SystemError,
            TopicName::MarketTicks { .. } => EventType::MarketTick,
            TopicName::Broker { topic, .. } => topic.event_type(),
        }
    }

    /// Schema registry subject of the record values (`{topic}-value`, the TopicNameStrategy).
    pub fn schema_subject(&self) -> String {
        format!("{self}-value")
    }

    /// Default partitions and retention of the topic.
    pub fn spec(&self) -> TopicSpec {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        if self.is_dlq() {
            return TopicSpec {
                partitions: 1,
                retention_ms: 30 * DAY_MS,
            };
        }
        match self {
            TopicName::MarketTicks { .. } => TopicSpec {
                partitions: 12,
                retention_ms: 7 * DAY_MS,
            },
            TopicName::Broker { topic, .. } => match topic {
                BrokerTopic::SignalsRaw
                | BrokerTopic::SignalsValidated
                | BrokerTopic::SignalsRejected => TopicSpec {
                    partitions: 6,
                    retention_ms: 7 * DAY_MS,
                },
                // Fills are the ledger the portfolio rebuilds from: kept for ever.
                BrokerTopic::OrdersFilled => TopicSpec {
                    partitions: 6,
                    retention_ms: -1,
                },
                BrokerTopic::OrdersSubmitted
                | BrokerTopic::OrdersAck
                | BrokerTopic::OrdersFailed => TopicSpec {
                    partitions: 6,
                    retention_ms: 30 * DAY_MS,
                },
                BrokerTopic::PnlSnapshots => TopicSpec {
                    partitions: 3,
                    retention_ms: 30 * DAY_MS,
                },
            },
        }
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self {
            TopicName::MarketTicks { .. } => "market.ticks".to_owned(),
            TopicName::Broker { broker, topic, .. } => {
                format!("{broker}.{}.{}", topic.domain(), topic.event())
            }
        };
        let suffix = if self.is_dlq() { ".dlq" } else { "" };
        // `pad` so that width and alignment work in tables.
        f.pad(&format!("{base}{suffix}"))
    }
}

/// Why a string is not a topic name of this runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic {topic:?}: {reason}")]
pub struct TopicError {
    pub topic: String,
    pub reason: String,
}

impl FromStr for TopicName {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| TopicError {
            topic: s.to_owned(),
            reason,
        };
        if let Some(c) = s.chars().find(|c| "*?^$[]()|+{}".contains(*c)) {
            return Err(err(format!(
                "contains {c:?}: topics are named explicitly, never by pattern or wildcard"
            )));
        }
        let mut parts: Vec<&str> = s.split('.').collect();
        let dlq = parts.last() == Some(&"dlq");
        if dlq {
            parts.pop();
        }
        let name = match parts.as_slice() {
            ["market", "ticks"] => TopicName::MarketTicks { dlq: false },
            [broker, domain, event] => {
                let broker = BrokerName::new(*broker).map_err(|e| err(e.to_string()))?;
                let topic = BrokerTopic::parse(domain, event).ok_or_else(|| {
                    err(format!(
                        "unknown topic `{domain}.{event}` (a broker's topics are: {})",
                        BrokerTopic::ALL
                            .iter()
                            .map(|t| format!("{}.{}", t.domain(), t.event()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                TopicName::Broker {
                    broker,
                    topic,
                    dlq: false,
                }
            }
            _ => {
                return Err(err(
                    "expected `market.ticks` or `{broker}.{domain}.{event}`, optionally followed by `.dlq`"
                        .to_owned(),
                ));
            }
        };
        match (dlq, name.dlq()) {
            (false, _) => Ok(name),
            (true, Some(dlq_name)) => Ok(dlq_name),
            (true, None) => Err(err(format!(
                "`{name}` is not consumed by any stage, so it has no DLQ"
            ))),
        }
    }
}

/// Default partition count and retention of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: i32,
    /// `-1` keeps records for ever.
    pub retention_ms: i64,
}

/// Every topic the runtime needs for these brokers: `market.ticks`, its DLQ, and for each
/// broker its eight topics and the DLQs of the consumed ones. Sorted, without duplicates.
pub fn topics_for(brokers: &[BrokerName]) -> Vec<TopicName> {
    let mut all = vec![TopicName::market_ticks()];
    for broker in brokers {
        all.extend(
            BrokerTopic::ALL
                .iter()
                .map(|t| TopicName::broker(broker, *t)),
        );
    }
    let dlqs: Vec<TopicName> = all.iter().filter_map(TopicName::dlq).collect();
    all.extend(dlqs);
    all.sort();
    all.dedup();
    all
}

/// Partition keys (DESIGN §3.2). One key, one partition, one actor at a time: these decide
/// what is processed in order.
pub mod keys {
    use super::*;

    /// Ticks by instrument token: an instrument's ticks stay in order.
    pub fn tick(token: InstrumentToken) -> String {
        token.to_string()
    }

    /// Signals by `strategy_id|instrument`.
    pub fn signal(strategy: &StrategyId, token: InstrumentToken) -> String {
        format!("{strategy}|{token}")
    }

    /// Orders and fills by `account|strategy`: one strategy's orders in an account stay in
    /// order, which the position and cash checks rely on.
    pub fn order(account: &AccountId, strategy: &StrategyId) -> String {
        format!("{account}|{strategy}")
    }

    /// PnL snapshots by account.
    pub fn snapshot(account: &AccountId) -> String {
        account.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn broker_name() -> impl Strategy<Value = BrokerName> {
        "[a-z][a-z0-9_]{0,31}".prop_filter_map("reserved", |s| BrokerName::new(s).ok())
    }

    fn topic_name() -> impl Strategy<Value = TopicName> {
        prop_oneof![
            any::<bool>().prop_map(|dlq| TopicName::MarketTicks { dlq }),
            (broker_name(), 0..BrokerTopic::ALL.len(), any::<bool>()).prop_map(
                |(broker, i, dlq)| {
                    let topic = BrokerTopic::ALL[i];
                    TopicName::Broker {
                        broker,
                        topic,
                        dlq: dlq && topic.is_consumed(),
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn parse_inverts_format(t in topic_name()) {
            prop_assert_eq!(t.to_string().parse::<TopicName>(), Ok(t));
        }

        #[test]
        fn parsing_any_string_never_panics_and_accepts_only_canonical_names(s in "\\PC{0,40}") {
            if let Ok(t) = s.parse::<TopicName>() {
                prop_assert_eq!(t.to_string(), s);
            }
        }
    }

    #[test]
    fn formats_the_design_names() {
        let paper = BrokerName::paper();
        assert_eq!(TopicName::market_ticks().to_string(), "market.ticks");
        assert_eq!(
            TopicName::broker(&paper, BrokerTopic::OrdersSubmitted).to_string(),
            "paper.orders.submitted"
        );
        assert_eq!(
            TopicName::broker(&paper, BrokerTopic::PnlSnapshots).to_string(),
            "paper.pnl.snapshots"
        );
        assert_eq!(
            TopicName::broker(&paper, BrokerTopic::SignalsRaw)
                .dlq()
                .map(|t| t.to_string()),
            Some("paper.signals.raw.dlq".to_owned())
        );
        let dlq: TopicName = "zerodha.orders.filled.dlq".parse().unwrap();
        assert_eq!(dlq.broker_name(), Some(&BrokerName::zerodha()));
        assert_eq!(dlq.event_type(), EventType::SystemError);
        assert_eq!(
            dlq.origin().map(|t| t.to_string()),
            Some("zerodha.orders.filled".to_owned())
        );
    }

    #[test]
    fn rejects_wildcards_unknown_shapes_and_bad_brokers() {
        for (bad, says) in [
            ("paper.signals.*", "wildcard"),
            ("^paper\\..*", "pattern"),
            ("paper.signals", "expected"),
            ("paper.signals.cooked", "unknown topic `signals.cooked`"),
            ("Paper!.signals.raw", "lowercase"),
            ("market.signals.raw", "reserved"),
            ("paper.pnl.snapshots.dlq", "no DLQ"),
            ("market.ticks.dlq.dlq", "reserved"),
            ("", "expected"),
        ] {
            let err = bad.parse::<TopicName>().unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_full_set_has_every_topic_and_dlq_of_each_broker() {
        let set = topics_for(&[BrokerName::paper(), BrokerName::zerodha()]);
        let names: Vec<String> = set.iter().map(ToString::to_string).collect();
        // market.ticks + dlq, and per broker 8 topics + 6 DLQs.
        assert_eq!(names.len(), 2 + 2 * (8 + 6), "{names:?}");
        for expected in [
            "market.ticks",
            "market.ticks.dlq",
            "paper.signals.raw",
            "paper.signals.rejected",
            "zerodha.orders.ack.dlq",
            "zerodha.pnl.snapshots",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        assert!(!names.iter().any(|n| n == "paper.signals.rejected.dlq"));
    }

    #[test]
    fn keys_follow_the_design() {
        let s = StrategyId::new("momentum_1").unwrap();
        let a = AccountId::new("paper_main").unwrap();
        assert_eq!(keys::tick(InstrumentToken(738561)), "738561");
        assert_eq!(
            keys::signal(&s, InstrumentToken(738561)),
            "momentum_1|738561"
        );
        assert_eq!(keys::order(&a, &s), "paper_main|momentum_1");
        assert_eq!(keys::snapshot(&a), "paper_main");
    }

    #[test]
    fn specs_keep_fills_for_ever_and_dlqs_in_order() {
        let paper = BrokerName::paper();
        assert_eq!(
            TopicName::broker(&paper, BrokerTopic::OrdersFilled)
                .spec()
                .retention_ms,
            -1
        );
        assert_eq!(
            "paper.orders.filled.dlq"
                .parse::<TopicName>()
                .unwrap()
                .spec()
                .partitions,
            1
        );
    }
}
