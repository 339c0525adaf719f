//! Deserialization helpers for values that arrive as text from the environment.

use std::fmt;
use std::path::PathBuf;

use alpha_panda_core::BrokerName;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::settings::Feed;

/// A list of broker names, as a TOML array or as `paper,zerodha` (how environment
/// variables give it).
pub fn broker_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BrokerName>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<BrokerName>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(
                "a list of broker names, e.g. [\"paper\", \"zerodha\"] or \"paper,zerodha\"",
            )
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| BrokerName::new(s).map_err(E::custom))
                .collect()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<BrokerName>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// An optional string that also takes a bare number or boolean (`ALPHA_PANDA__ADMIN__TOKEN=1234`
/// reads as the integer 1234, but a token is text).
pub fn opt_lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_any(V)
}

const FEED_EXPECTED: &str =
    "\"synthetic\", \"kite\", \"none\", or { replay = \"FILE\", speed = FACTOR }";

impl Serialize for Feed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Feed::Synthetic => s.serialize_str("synthetic"),
            Feed::Kite => s.serialize_str("kite"),
            Feed::None => s.serialize_str("none"),
            Feed::Replay { file, speed } => {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("replay", file)?;
                if let Some(speed) = speed {
                    m.serialize_entry("speed", speed)?;
                }
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Feed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Feed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(FEED_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Feed, E> {
                match v {
                    "synthetic" => Ok(Feed::Synthetic),
                    "kite" => Ok(Feed::Kite),
                    "none" => Ok(Feed::None),
                    other => Err(E::custom(format!(
                        "unknown feed {other:?}, expected {FEED_EXPECTED}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Feed, A::Error> {
                let mut file: Option<PathBuf> = None;
                let mut speed: Option<f64> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "replay" => file = Some(map.next_value()?),
                        "speed" => {
                            let v: f64 = map.next_value()?;
                            if !(v.is_finite() && v > 0.0) {
                                return Err(de::Error::custom(format!(
                                    "feed speed {v} must be a number above 0 (1 = real time)"
                                )));
                            }
                            speed = Some(v);
                        }
                        other => {
                            return Err(de::Error::unknown_field(other, &["replay", "speed"]));
                        }
                    }
                }
                let file = file.ok_or_else(|| de::Error::missing_field("replay"))?;
                Ok(Feed::Replay { file, speed })
            }
        }
        d.deserialize_any(V)
    }
}
