//! The `EventEnvelope`: the JSON record on every topic (DESIGN §3.1).
//!
//! Decoding is strict and total: any byte string gives an envelope or a [`DecodeError`] that
//! names the field and the problem. An unknown `type`, an unsupported `version`, a missing,
//! unknown or ill-typed field are all errors; nothing panics.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::domain::{BrokerName, InvalidValue};
use crate::events::{
    MarketTick, OrderAck, OrderFailed, OrderFilled, OrderPlaced, PnlSnapshot, RejectedSignal,
    SystemError, TradingSignal, ValidatedSignal,
};
use crate::failure::{Classify, FailureClass};
use crate::ids;
use crate::time::Timestamp;

/// The schema version this build writes and the only one it reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The wire name of an event's payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    MarketTick,
    TradingSignal,
    ValidatedSignal,
    RejectedSignal,
    /// On `orders.submitted`.
    OrderPlaced,
    OrderAck,
    OrderFilled,
    OrderFailed,
    PnlSnapshot,
    /// A dead-letter record.
    SystemError,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::MarketTick,
        EventType::TradingSignal,
        EventType::ValidatedSignal,
        EventType::RejectedSignal,
        EventType::OrderPlaced,
        EventType::OrderAck,
        EventType::OrderFilled,
        EventType::OrderFailed,
        EventType::PnlSnapshot,
        EventType::SystemError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MarketTick => "market_tick",
            EventType::TradingSignal => "trading_signal",
            EventType::ValidatedSignal => "validated_signal",
            EventType::RejectedSignal => "rejected_signal",
            EventType::OrderPlaced => "order_placed",
            EventType::OrderAck => "order_ack",
            EventType::OrderFilled => "order_filled",
            EventType::OrderFailed => "order_failed",
            EventType::PnlSnapshot => "pnl_snapshot",
            EventType::SystemError => "system_error",
        }
    }
}

impl FromStr for EventType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed payload: the envelope's `data`, selected by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    MarketTick(MarketTick),
    TradingSignal(TradingSignal),
    ValidatedSignal(ValidatedSignal),
    RejectedSignal(RejectedSignal),
    OrderPlaced(OrderPlaced),
    OrderAck(OrderAck),
    OrderFilled(OrderFilled),
    OrderFailed(OrderFailed),
    PnlSnapshot(PnlSnapshot),
    SystemError(SystemError),
}

impl EventData {
    pub fn event_type(&self) -> EventType {
        match self {
            EventData::MarketTick(_) => EventType::MarketTick,
            EventData::TradingSignal(_) => EventType::TradingSignal,
            EventData::ValidatedSignal(_) => EventType::ValidatedSignal,
            EventData::RejectedSignal(_) => EventType::RejectedSignal,
            EventData::OrderPlaced(_) => EventType::OrderPlaced,
            EventData::OrderAck(_) => EventType::OrderAck,
            EventData::OrderFilled(_) => EventType::OrderFilled,
            EventData::OrderFailed(_) => EventType::OrderFailed,
            EventData::PnlSnapshot(_) => EventType::PnlSnapshot,
            EventData::SystemError(_) => EventType::SystemError,
        }
    }

    fn serialize_into<S: serde::ser::SerializeStruct>(&self, s: &mut S) -> Result<(), S::Error> {
        match self {
            EventData::MarketTick(d) => s.serialize_field("data", d),
            EventData::TradingSignal(d) => s.serialize_field("data", d),
            EventData::ValidatedSignal(d) => s.serialize_field("data", d),
            EventData::RejectedSignal(d) => s.serialize_field("data", d),
            EventData::OrderPlaced(d) => s.serialize_field("data", d),
            EventData::OrderAck(d) => s.serialize_field("data", d),
            EventData::OrderFilled(d) => s.serialize_field("data", d),
            EventData::OrderFailed(d) => s.serialize_field("data", d),
            EventData::PnlSnapshot(d) => s.serialize_field("data", d),
            EventData::SystemError(d) => s.serialize_field("data", d),
        }
    }

    fn decode(ty: EventType, raw: &serde_json::value::RawValue) -> Result<Self, DecodeError> {
        fn typed<T: serde::de::DeserializeOwned>(
            raw: &serde_json::value::RawValue,
        ) -> Result<T, DecodeError> {
            // As for the envelope: the path is tracked only to name what is wrong.
            if let Ok(data) = serde_json::from_str(raw.get()) {
                return Ok(data);
            }
            let mut de = serde_json::Deserializer::from_str(raw.get());
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let problem = e.into_inner().to_string();
                DecodeError::Field {
                    field: field_path(Some("data"), &path, &problem),
                    problem,
                }
            })
        }
        Ok(match ty {
            EventType::MarketTick => EventData::MarketTick(typed(raw)?),
            EventType::TradingSignal => EventData::TradingSignal(typed(raw)?),
            EventType::ValidatedSignal => EventData::ValidatedSignal(typed(raw)?),
            EventType::RejectedSignal => EventData::RejectedSignal(typed(raw)?),
            EventType::OrderPlaced => EventData::OrderPlaced(typed(raw)?),
            EventType::OrderAck => EventData::OrderAck(typed(raw)?),
            EventType::OrderFilled => EventData::OrderFilled(typed(raw)?),
            EventType::OrderFailed => EventData::OrderFailed(typed(raw)?),
            EventType::PnlSnapshot => EventData::PnlSnapshot(typed(raw)?),
            EventType::SystemError => EventData::SystemError(typed(raw)?),
        })
    }
}

/// Whose event this is, for audit. Never used for routing: stages learn the broker from the
/// topic they consume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventBroker {
    /// Market data and other events that belong to no broker (`"shared"` on the wire).
    Shared,
    Broker(BrokerName),
}

impl EventBroker {
    pub fn as_str(&self) -> &str {
        match self {
            EventBroker::Shared => "shared",
            EventBroker::Broker(b) => b.as_str(),
        }
    }
}

impl FromStr for EventBroker {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "shared" {
            Ok(EventBroker::Shared)
        } else {
            BrokerName::new(s).map(EventBroker::Broker)
        }
    }
}

impl fmt::Display for EventBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventBroker {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventBroker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// The record on every topic. Construct roots with [`EventEnvelope::root`] and everything
/// else with [`EventEnvelope::child`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    /// Unique id, used for dedup. UUID v7 for roots; derived for children (see [`ids`]).
    pub id: Uuid,
    /// One per originating tick or request; every descendant inherits it.
    pub correlation_id: Uuid,
    /// The id of the event that caused this one; `None` for a root.
    pub causation_id: Option<Uuid>,
    pub trace_id: Uuid,
    /// The parent event's id; `None` for a root.
    pub parent_trace_id: Option<Uuid>,
    pub broker: EventBroker,
    pub ts: Timestamp,
    /// The partition key the record was produced with.
    pub key: String,
    /// The producing stage (`feed`, `strategy:momentum_1`, `risk`, …).
    pub source: String,
    pub version: u32,
    pub data: EventData,
}

/// All that a child envelope takes from its parent: the parent's id, correlation id and
/// trace id. A stage that keeps a record only to emit its children later keeps this rather
/// than the whole envelope; [`Lineage::child`] makes exactly what [`EventEnvelope::child`]
/// makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lineage {
    pub id: Uuid,
    pub correlation_id: Uuid,
    pub trace_id: Uuid,
}

impl Lineage {
    /// The `ordinal`-th event that `source` emits while handling the parent: as
    /// [`EventEnvelope::child`].
    pub fn child(
        &self,
        broker: EventBroker,
        source: impl Into<String>,
        ordinal: u32,
        key: impl Into<String>,
        ts: Timestamp,
        data: EventData,
    ) -> EventEnvelope {
        let source = source.into();
        EventEnvelope {
            id: ids::child_id(self.id, &source, ordinal),
            correlation_id: self.correlation_id,
            causation_id: Some(self.id),
            trace_id: self.trace_id,
            parent_trace_id: Some(self.id),
            broker,
            ts,
            key: key.into(),
            source,
            version: ENVELOPE_VERSION,
            data,
        }
    }
}

impl EventEnvelope {
    /// A new event with no parent: a fresh v7 id that is also its correlation and trace id.
    pub fn root(
        broker: EventBroker,
        source: impl Into<String>,
        key: impl Into<String>,
        ts: Timestamp,
        data: EventData,
    ) -> Self {
        let id = ids::root_id();
        Self {
            id,
            correlation_id: id,
            causation_id: None,
            trace_id: id,
            parent_trace_id: None,
            broker,
            ts,
            key: key.into(),
            source: source.into(),
            version: ENVELOPE_VERSION,
            data,
        }
    }

    /// The `ordinal`-th event that `source` emits while handling `self`. Its id is
    /// deterministic in (`self.id`, `source`, `ordinal`); correlation and trace are
    /// inherited; causation and parent trace point at `self`.
    pub fn child(
        &self,
        broker: EventBroker,
        source: impl Into<String>,
        ordinal: u32,
        key: impl Into<String>,
        ts: Timestamp,
        data: EventData,
    ) -> Self {
        self.lineage().child(broker, source, ordinal, key, ts, data)
    }

    /// The ids a child of this envelope inherits (see [`Lineage`]).
    pub fn lineage(&self) -> Lineage {
        Lineage {
            id: self.id,
            correlation_id: self.correlation_id,
            trace_id: self.trace_id,
        }
    }

    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    /// The compact JSON written to Kafka.
    pub fn encode(&self) -> Vec<u8> {
        // Truly unreachable: serializing these types cannot fail, as every map key is a
        // string and no Serialize impl here returns an error.
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("envelope serialization: {e}"))
    }

    /// Strict decode of one record's value.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::Malformed {
            problem: format!("not UTF-8: {e}"),
        })?;
        // The plain parse first: tracking the path costs an allocation per field, so it is
        // paid only to name what is wrong in a record that fails.
        let raw: RawEnvelope<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(plain) => return Err(Self::decode_error(text, plain)),
        };
        if raw.version != ENVELOPE_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                version: raw.version,
            });
        }
        let ty: EventType = raw
            .r#type
            .parse()
            .map_err(|()| DecodeError::UnknownType { r#type: raw.r#type })?;
        let data = EventData::decode(ty, raw.data)?;
        Ok(Self {
            id: raw.id,
            correlation_id: raw.correlation_id,
            causation_id: raw.causation_id,
            trace_id: raw.trace_id,
            parent_trace_id: raw.parent_trace_id,
            broker: raw.broker,
            ts: raw.ts,
            key: raw.key,
            source: raw.source,
            version: raw.version,
            data,
        })
    }

    /// Why `text`, which the plain parse refused (`plain`), is not an envelope: the same
    /// parse again, tracking the path to name the field.
    #[cold]
    fn decode_error(text: &str, plain: serde_json::Error) -> DecodeError {
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed: Result<RawEnvelope<'_>, _> = serde_path_to_error::deserialize(&mut de);
        let checked = parsed.map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let problem = inner.to_string();
            let field = field_path(None, &path, &problem);
            if inner.is_syntax() || inner.is_eof() || field.is_empty() {
                DecodeError::Malformed { problem }
            } else {
                DecodeError::Field { field, problem }
            }
        });
        match checked.and_then(|_| {
            de.end().map_err(|e| DecodeError::Malformed {
                problem: e.to_string(),
            })
        }) {
            Err(e) => e,
            // The same parser: it cannot accept what it refused.
            Ok(()) => DecodeError::Malformed {
                problem: plain.to_string(),
            },
        }
    }
}

impl Serialize for EventEnvelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("EventEnvelope", 12)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("correlation_id", &self.correlation_id)?;
        st.serialize_field("causation_id", &self.causation_id)?;
        st.serialize_field("trace_id", &self.trace_id)?;
        st.serialize_field("parent_trace_id", &self.parent_trace_id)?;
        st.serialize_field("broker", &self.broker)?;
        st.serialize_field("type", &self.event_type())?;
        st.serialize_field("ts", &self.ts)?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("version", &self.version)?;
        self.data.serialize_into(&mut st)?;
        st.end()
    }
}

/// The dotted path of the field an error is about. serde reports a missing field at its
/// parent's path, naming it only in the message; this puts it back into the path.
fn field_path(prefix: Option<&str>, path: &str, problem: &str) -> String {
    let mut parts: Vec<&str> = prefix.into_iter().collect();
    if path != "." {
        parts.push(path);
    }
    let missing = problem
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    if let Some(name) = missing {
        parts.push(name);
    }
    parts.join(".")
}

/// The envelope with its payload still raw, so the payload is decoded by its `type` after
/// the envelope fields have been checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    id: Uuid,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    trace_id: Uuid,
    parent_trace_id: Option<Uuid>,
    broker: EventBroker,
    r#type: String,
    ts: Timestamp,
    key: String,
    source: String,
    version: u32,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// Why a record is not a valid envelope. Always [`FailureClass::Poison`]: retrying cannot
/// change the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not a JSON envelope: {problem}")]
    Malformed { problem: String },
    #[error("field `{field}`: {problem}")]
    Field { field: String, problem: String },
    #[error(
        "unknown event type {type:?} (known: market_tick, trading_signal, validated_signal, rejected_signal, order_placed, order_ack, order_filled, order_failed, pnl_snapshot, system_error)"
    )]
    UnknownType { r#type: String },
    #[error("unsupported envelope version {version} (this build reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion { version: u32 },
}

impl DecodeError {
    /// The field the error is about, when there is one (`data.ohlc.open`, `version`, `type`).
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::Malformed { .. } => None,
            DecodeError::Field { field, .. } => Some(field),
            DecodeError::UnknownType { .. } => Some("type"),
            DecodeError::UnsupportedVersion { .. } => Some("version"),
        }
    }
}

impl Classify for DecodeError {
    fn class(&self) -> FailureClass {
        FailureClass::Poison
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TICK: &str = include_str!("../../docs/events/market_tick.json");
    const FILL: &str = include_str!("../../docs/events/order_filled.json");

    fn with(json: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn field_of(bytes: &[u8]) -> Option<String> {
        EventEnvelope::decode(bytes)
            .unwrap_err()
            .field()
            .map(str::to_owned)
    }

    #[test]
    fn each_error_names_its_field() {
        let missing = with(TICK, |v| {
            v["data"].as_object_mut().unwrap().remove("last_price");
        });
        assert_eq!(field_of(&missing).as_deref(), Some("data.last_price"));
        let ill_typed = with(FILL, |v| v["data"]["quantity"] = "abc".into());
        assert_eq!(field_of(&ill_typed).as_deref(), Some("data.quantity"));
        let zero = with(FILL, |v| v["data"]["quantity"] = 0.into());
        let err = EventEnvelope::decode(&zero).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
        let nested = with(TICK, |v| v["data"]["ohlc"]["open"] = "-1".into());
        assert_eq!(field_of(&nested).as_deref(), Some("data.ohlc.open"));
        let extra = with(TICK, |v| v["surprise"] = 1.into());
        let err = EventEnvelope::decode(&extra).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
        let extra_in_data = with(FILL, |v| v["data"]["surprise"] = 1.into());
        assert!(
            EventEnvelope::decode(&extra_in_data)
                .unwrap_err()
                .to_string()
                .contains("surprise")
        );
        let bad_id = with(TICK, |v| v["id"] = "not-a-uuid".into());
        assert_eq!(field_of(&bad_id).as_deref(), Some("id"));
        let bad_broker = with(FILL, |v| v["broker"] = "Paper!".into());
        assert_eq!(field_of(&bad_broker).as_deref(), Some("broker"));
    }

    #[test]
    fn unknown_types_wrong_versions_and_garbage_are_typed_errors() {
        let unknown = with(TICK, |v| v["type"] = "market_tock".into());
        assert!(matches!(
            EventEnvelope::decode(&unknown),
            Err(DecodeError::UnknownType { r#type }) if r#type == "market_tock"
        ));
        let v2 = with(TICK, |v| v["version"] = 2.into());
        assert_eq!(
            EventEnvelope::decode(&v2),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );
        assert!(matches!(
            EventEnvelope::decode(&[0xff, 0xfe, b'{']),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            EventEnvelope::decode(&TICK.as_bytes()[..40]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            EventEnvelope::decode(format!("{TICK} {{}}").as_bytes()),
            Err(DecodeError::Malformed { .. })
        ));
        // The payload must match the type.
        let swapped = with(TICK, |v| v["type"] = "order_filled".into());
        assert!(field_of(&swapped).unwrap().starts_with("data"));
        assert_eq!(
            EventEnvelope::decode(b"{}").unwrap_err().class(),
            FailureClass::Poison
        );
    }

    #[test]
    fn a_child_inherits_correlation_and_trace_and_points_at_its_parent() {
        let parent = EventEnvelope::decode(TICK.as_bytes()).unwrap();
        let make = || {
            parent.child(
                EventBroker::Broker(BrokerName::paper()),
                "strategy:momentum_1",
                0,
                "momentum_1|738561",
                parent.ts,
                parent.data.clone(),
            )
        };
        let (a, b) = (make(), make());
        assert_eq!(
            a.id, b.id,
            "the same parent, stage and ordinal give the same id"
        );
        assert_ne!(a.id, parent.id);
        assert_eq!(a.correlation_id, parent.correlation_id);
        assert_eq!(a.trace_id, parent.trace_id);
        assert_eq!(a.causation_id, Some(parent.id));
        assert_eq!(a.parent_trace_id, Some(parent.id));
        assert_eq!(a.id, ids::child_id(parent.id, "strategy:momentum_1", 0));
    }

    /// A mutation of a valid record.
    #[derive(Debug, Clone)]
    enum Mutation {
        Delete(usize, usize),
        Insert(usize, Vec<u8>),
        Flip(usize, u8),
        ReplaceValue(usize, serde_json::Value),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let scalar = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        prop_oneof![
            (any::<usize>(), 1usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
            (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
                .prop_map(|(a, b)| Mutation::Insert(a, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
            (any::<usize>(), scalar).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        ]
    }

    fn apply(base: &str, m: &Mutation) -> Vec<u8> {
        let mut b = base.as_bytes().to_vec();
        let len = b.len();
        match m {
            Mutation::Delete(at, n) => {
                let at = at % len;
                b.drain(at..(at + n).min(len));
            }
            Mutation::Insert(at, bytes) => {
                let at = at % len;
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Flip(at, x) => b[at % len] ^= x | 1,
            Mutation::ReplaceValue(i, v) => {
                let mut doc: serde_json::Value = serde_json::from_str(base).unwrap();
                let mut leaves = Vec::new();
                collect_leaves(&doc, String::new(), &mut leaves);
                let ptr = &leaves[i % leaves.len()];
                if let Some(slot) = doc.pointer_mut(ptr) {
                    *slot = v.clone();
                }
                b = serde_json::to_vec(&doc).unwrap();
            }
        }
        b
    }

    fn collect_leaves(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    collect_leaves(x, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    collect_leaves(x, format!("{at}/{i}"), out);
                }
            }
            _ => out.push(at),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = EventEnvelope::decode(&bytes);
        }

        #[test]
        fn mutated_records_decode_to_an_error_or_a_stable_envelope(
            base in prop_oneof![Just(TICK), Just(FILL)], m in mutation()
        ) {
            let bytes = apply(base, &m);
            if let Ok(env) = EventEnvelope::decode(&bytes) {
                let again = EventEnvelope::decode(&env.encode()).unwrap();
                prop_assert_eq!(again, env);
            }
        }

        #[test]
        fn generated_fills_round_trip(
            qty in 1u64..1_000_000, units in 0i64..100_000_000, scale in 0u32..6,
            fee_units in -1_000_000i64..1_000_000, ms in 0i64..4_102_444_800_000,
            buy in any::<bool>()
        ) {
            let mut env = EventEnvelope::decode(FILL.as_bytes()).unwrap();
            let EventData::OrderFilled(fill) = &mut env.data else { unreachable!() };
            fill.quantity = crate::Quantity::new(qty).unwrap();
            fill.fill_price = crate::Price::new(rust_decimal::Decimal::new(units, scale)).unwrap();
            fill.fees = rust_decimal::Decimal::new(fee_units, 2);
            fill.timestamp = Timestamp::from_unix_millis(ms).unwrap();
            fill.side = if buy { crate::Side::Buy } else { crate::Side::Sell };
            prop_assert_eq!(EventEnvelope::decode(&env.encode()).unwrap(), env);
        }
    }
}
