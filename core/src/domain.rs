//! Domain newtypes and enums: one name per trading thing, validated on construction.
//!
//! Every type here deserializes through its validating constructor, so a value that exists
//! is a valid one: a `Quantity` is positive, a `Price` is not negative, a `BrokerName` is a
//! lowercase identifier.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a domain value was refused. Carries the offending value and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

impl InvalidValue {
    fn new(what: &'static str, value: impl fmt::Display, rule: &'static str) -> Self {
        Self {
            what,
            value: value.to_string(),
            rule,
        }
    }
}

/// Broker names that would make topic names ambiguous (`market.ticks`) or that the envelope
/// reserves (`shared` marks market data, which belongs to no broker).
pub const RESERVED_BROKER_NAMES: [&str; 2] = ["market", "shared"];

/// Name of a broker namespace (`paper`, `zerodha`, …): the first segment of its topics, the
/// prefix of its Redis keys. A lowercase ASCII identifier: `[a-z][a-z0-9_]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BrokerName(String);

impl BrokerName {
    pub const MAX_LEN: usize = 32;

    pub fn new(name: impl Into<String>) -> Result<Self, InvalidValue> {
        let name = name.into();
        let what = "broker name";
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(InvalidValue::new(what, &name, "must not be empty")),
            Some(c) if !c.is_ascii_lowercase() => {
                return Err(InvalidValue::new(
                    what,
                    &name,
                    "must start with a lowercase ASCII letter (a-z)",
                ));
            }
            Some(_) => {}
        }
        if name.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(
                what,
                &name,
                "must be at most 32 characters",
            ));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(InvalidValue::new(
                what,
                &name,
                "may contain only lowercase ASCII letters, digits and '_'",
            ));
        }
        if RESERVED_BROKER_NAMES.contains(&name.as_str()) {
            return Err(InvalidValue::new(
                what,
                &name,
                "is reserved ('market' and 'shared' name market data, not a broker)",
            ));
        }
        Ok(Self(name))
    }

    pub fn paper() -> Self {
        Self("paper".to_owned())
    }

    pub fn zerodha() -> Self {
        Self("zerodha".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BrokerName {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<BrokerName> for String {
    fn from(value: BrokerName) -> Self {
        value.0
    }
}

impl FromStr for BrokerName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for BrokerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Defines a non-empty, trimmed string identifier newtype.
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = 128;

            pub fn new(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                if value.is_empty() {
                    return Err(InvalidValue::new($what, &value, "must not be empty"));
                }
                if value.len() > Self::MAX_LEN {
                    return Err(InvalidValue::new($what, &value, "must be at most 128 bytes"));
                }
                if value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '|') {
                    return Err(InvalidValue::new(
                        $what,
                        &value,
                        "must not contain whitespace, control characters or '|'",
                    ));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// Identifier of a configured strategy (`momentum_nifty`). Part of signal keys
    /// (`strategy_id|instrument`), so it may not contain `|` or whitespace.
    StrategyId,
    "strategy id"
);
string_id!(
    /// Identifier of an order, assigned by the runtime when the order is placed (the broker's
    /// own id travels separately as `broker_order_id`).
    OrderId,
    "order id"
);
string_id!(
    /// Trading account within a broker (a Kite user id, or `paper` accounts by name). Orders
    /// and fills are keyed by `account|strategy`.
    AccountId,
    "account id"
);

/// Exchange instrument token as Kite Connect numbers it (e.g. 256265 for NIFTY 50).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct InstrumentToken(pub u32);

impl fmt::Display for InstrumentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for InstrumentToken {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u32>().map(Self).map_err(|_| {
            InvalidValue::new("instrument token", s, "must be an unsigned 32-bit integer")
        })
    }
}

/// Number of shares/contracts in an order or fill: a whole number above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Quantity(u64);

impl Quantity {
    pub fn new(value: u64) -> Result<Self, InvalidValue> {
        if value == 0 {
            return Err(InvalidValue::new(
                "quantity",
                value,
                "must be greater than zero",
            ));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Quantity {
    type Error = InvalidValue;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Quantity> for u64 {
    fn from(value: Quantity) -> Self {
        value.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A price in the instrument's currency (INR for NSE). Decimal, never `f64`; not negative.
/// On the wire a JSON string (`"2450.05"`); a JSON number is accepted when reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Price(Decimal);

impl Price {
    pub fn new(value: Decimal) -> Result<Self, InvalidValue> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(InvalidValue::new("price", value, "must not be negative"));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Price {
    type Error = InvalidValue;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Price> for Decimal {
    fn from(value: Price) -> Self {
        value.0
    }
}

impl FromStr for Price {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = Decimal::from_str(s)
            .map_err(|_| InvalidValue::new("price", s, "must be a decimal number"))?;
        Self::new(d)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Defines a closed enum with fixed wire spellings.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(InvalidValue::new(
                        $what,
                        s,
                        concat!("must be one of: ", $($wire, " "),+),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Direction of a signal or order. Signals call it `signal_type`, orders `side`.
    Side, "side" {
        Buy => "BUY",
        Sell => "SELL",
    }
);

impl Side {
    /// +1 for BUY, -1 for SELL: the sign a fill of this side gives a position.
    pub fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }
}

wire_enum!(
    /// Kite Connect order types.
    OrderType, "order type" {
        /// Fill at the best available price.
        Market => "MARKET",
        /// Fill at `price` or better.
        Limit => "LIMIT",
        /// Stop-loss limit: becomes a LIMIT at `price` once `trigger_price` trades.
        StopLoss => "SL",
        /// Stop-loss market: becomes a MARKET order once `trigger_price` trades.
        StopLossMarket => "SL-M",
    }
);

wire_enum!(
    /// Kite Connect product (margin treatment) of an order.
    Product, "product" {
        /// Cash and carry: delivery equity.
        Cnc => "CNC",
        /// Margin intraday square-off: closed by the broker before the close.
        Mis => "MIS",
        /// Normal: overnight F&O positions.
        Nrml => "NRML",
    }
);

wire_enum!(
    /// How long an order stays open.
    Validity, "validity" {
        /// Until the end of the trading day.
        Day => "DAY",
        /// Immediate or cancel: whatever does not fill at once is cancelled.
        Ioc => "IOC",
    }
);

wire_enum!(
    /// Whether an order went to the paper simulator or to a live broker.
    ExecutionMode, "execution mode" {
        Paper => "paper",
        Live => "live",
    }
);

wire_enum!(
    /// Whether a broker, or a strategy on it, may trade.
    TradingState, "trading state" {
        /// Trading normally.
        Active => "ACTIVE",
        /// Only orders that reduce an existing position.
        Reducing => "REDUCING",
        /// No new orders.
        Halted => "HALTED",
    }
);

impl TradingState {
    /// The stricter of two states: a HALTED broker halts its strategies, whatever theirs.
    pub fn strictest(self, other: TradingState) -> TradingState {
        self.max(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strictest_trading_state_wins() {
        use TradingState::*;
        assert_eq!(Active.strictest(Reducing), Reducing);
        assert_eq!(Halted.strictest(Reducing), Halted);
        assert_eq!(Active.strictest(Active), Active);
        assert_eq!("REDUCING".parse::<TradingState>().unwrap(), Reducing);
        assert!("halted".parse::<TradingState>().is_err());
    }

    #[test]
    fn broker_names_follow_the_identifier_rule() {
        assert!(BrokerName::new("paper").is_ok());
        assert!(BrokerName::new("zerodha_2").is_ok());
        let err = BrokerName::new("Paper!").unwrap_err();
        assert!(err.to_string().contains("Paper!"), "{err}");
        assert!(err.to_string().contains("lowercase"), "{err}");
        assert!(BrokerName::new("").is_err());
        assert!(BrokerName::new("9lives").is_err());
        assert!(BrokerName::new("pa-per").is_err());
        assert!(BrokerName::new("market").is_err());
        assert!(BrokerName::new("shared").is_err());
        assert!(BrokerName::new("a".repeat(33)).is_err());
    }

    #[test]
    fn quantities_are_positive_and_prices_not_negative() {
        assert!(Quantity::new(0).is_err());
        assert_eq!(Quantity::new(5).map(Quantity::get), Ok(5));
        assert!(Price::new(Decimal::new(-1, 2)).is_err());
        assert!(Price::new(Decimal::ZERO).is_ok());
        let p: Price = serde_json::from_str("\"2450.05\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"2450.05\"");
        let p: Price = serde_json::from_str("2450.05").unwrap();
        assert_eq!(p.to_string(), "2450.05");
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Price>("\"-3\"").is_err());
    }

    #[test]
    fn enums_use_kite_spellings() {
        assert_eq!(
            serde_json::to_string(&OrderType::StopLossMarket).unwrap(),
            "\"SL-M\""
        );
        assert_eq!("SL".parse::<OrderType>(), Ok(OrderType::StopLoss));
        assert!("HOLD".parse::<Side>().is_err());
        assert_eq!(Side::Sell.sign(), -1);
    }

    #[test]
    fn identifiers_refuse_separators() {
        assert!(StrategyId::new("momentum_1").is_ok());
        assert!(StrategyId::new("a|b").is_err());
        assert!(StrategyId::new("a b").is_err());
        assert!(OrderId::new("").is_err());
    }
}
