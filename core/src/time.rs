//! Event time. RFC 3339 on the wire, always written in UTC with a `Z`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, UTC. Reads any RFC 3339 timestamp (an offset is converted to UTC);
/// writes `YYYY-MM-DDTHH:MM:SS[.fff…]Z`, with as many fractional digits as it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now())
    }

    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(ms).map(Self)
    }

    pub fn unix_millis(self) -> i64 {
        self.0.timestamp_millis()
    }
}

impl FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s).map(|t| Self(t.with_timezone(&Utc)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid timestamp {s:?}: {e} (expected RFC 3339, e.g. 2024-01-15T09:15:00Z)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_utc_with_z_and_reads_offsets() {
        let t: Timestamp = serde_json::from_str("\"2024-01-15T14:45:00.5+05:30\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2024-01-15T09:15:00.500Z\""
        );
        assert!(serde_json::from_str::<Timestamp>("\"2024-01-15 09:15:00\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("1705310100").is_err());
    }
}
