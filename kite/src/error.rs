//! Kite errors and their failure classes.
//!
//! Contract: every way a Kite call can fail is one [`KiteError`], and [`Classify::class`]
//! decides what the runtime does with it. The table (also in `docs/zerodha.md`):
//!
//! | what failed | class | what happens |
//! |---|---|---|
//! | `TokenException` (any status), HTTP 403 without a known type | infrastructure | the zerodha broker HALTS until a new session; never retried |
//! | `NetworkException`, HTTP 429, HTTP 5xx, connect/read timeout, connection reset | transient | retried with backoff (orders: only after reading the order book) |
//! | `InputException`, `OrderException`, `MarginException`, `HoldingException`, `UserException`, `PermissionException` | business | the order fails (`orders.failed`) |
//! | `DataException`, `GeneralException`, unknown types, other 4xx | business | as above, with the message |
//! | a local cap refused the call (orders per minute/day) | business | refused before Kite sees it |
//! | a body that does not decode (`Decode`) | poison | the reply is malformed; logged with the route |
//!
//! A 5xx wins over the body's `error_type` only when that type is unknown or general: a
//! `TokenException` on any status is always infrastructure.

use std::fmt;
use std::time::Duration;

use alpha_panda_core::{Classify, FailureClass};

/// Kite's `error_type` values. Unknown ones are kept as `Other` and treated like `General`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorType {
    Token,
    User,
    Order,
    Input,
    Margin,
    Holding,
    Network,
    Data,
    General,
    Permission,
    Other(String),
}

impl ErrorType {
    pub fn parse(s: &str) -> Self {
        match s {
            "TokenException" => Self::Token,
            "UserException" => Self::User,
            "OrderException" => Self::Order,
            "InputException" => Self::Input,
            "MarginException" => Self::Margin,
            "HoldingException" => Self::Holding,
            "NetworkException" => Self::Network,
            "DataException" => Self::Data,
            "GeneralException" => Self::General,
            "PermissionException" => Self::Permission,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Token => "TokenException",
            Self::User => "UserException",
            Self::Order => "OrderException",
            Self::Input => "InputException",
            Self::Margin => "MarginException",
            Self::Holding => "HoldingException",
            Self::Network => "NetworkException",
            Self::Data => "DataException",
            Self::General => "GeneralException",
            Self::Permission => "PermissionException",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed Kite call.
#[derive(Debug, thiserror::Error)]
pub enum KiteError {
    /// Kite answered `{"status":"error"}` (or a non-2xx status).
    #[error("kite {route}: HTTP {status} {error_type}: {message}")]
    Api {
        route: String,
        status: u16,
        error_type: ErrorType,
        message: String,
    },
    /// The request did not complete: connect, TLS, timeout, reset.
    #[error("kite {route}: {message}")]
    Transport {
        route: String,
        message: String,
        /// The request may have reached Kite (it was sent, the reply was lost).
        maybe_sent: bool,
    },
    /// A 2xx body that is not the documented shape.
    #[error("kite {route}: reply does not decode: {message}")]
    Decode { route: String, message: String },
    /// A local limit refused the call before it was sent.
    #[error("kite {route}: refused locally: {reason}")]
    Refused { route: String, reason: String },
    /// A request the client cannot build (a bad setting or argument).
    #[error("kite: {0}")]
    Invalid(String),
    /// The rate limiter asks the caller to wait (only from `try_` calls).
    #[error("kite {route}: rate limited locally, retry in {wait:?}")]
    Throttled { route: String, wait: Duration },
}

impl KiteError {
    /// The class of an API error from its type and HTTP status (the table above).
    pub fn api_class(error_type: &ErrorType, status: u16) -> FailureClass {
        match error_type {
            ErrorType::Token => FailureClass::Infrastructure,
            ErrorType::Network => FailureClass::Transient,
            ErrorType::Input
            | ErrorType::Order
            | ErrorType::Margin
            | ErrorType::Holding
            | ErrorType::User
            | ErrorType::Permission => FailureClass::Business,
            ErrorType::Data | ErrorType::General | ErrorType::Other(_) => match status {
                429 | 500..=599 => FailureClass::Transient,
                403 => FailureClass::Infrastructure,
                _ => FailureClass::Business,
            },
        }
    }

    /// True for a `TokenException` (or a bare 403): the session is gone and the broker halts.
    pub fn is_token_error(&self) -> bool {
        matches!(
            self,
            Self::Api {
                error_type: ErrorType::Token,
                ..
            }
        ) || matches!(
            self,
            Self::Api {
                status: 403,
                error_type: ErrorType::General | ErrorType::Other(_),
                ..
            }
        )
    }

    /// True when the request may have reached Kite although no reply was read: an order
    /// call that fails this way leaves its intent UNKNOWN.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Transport { maybe_sent, .. } => *maybe_sent,
            Self::Api { status, .. } => *status >= 500,
            Self::Decode { .. } => true,
            _ => false,
        }
    }
}

impl Classify for KiteError {
    fn class(&self) -> FailureClass {
        match self {
            Self::Api {
                error_type, status, ..
            } => Self::api_class(error_type, *status),
            Self::Transport { .. } | Self::Throttled { .. } => FailureClass::Transient,
            Self::Decode { .. } => FailureClass::Poison,
            Self::Refused { .. } => FailureClass::Business,
            Self::Invalid(_) => FailureClass::Business,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_error_type_maps_to_the_class_of_the_table() {
        use FailureClass::*;
        let cases = [
            ("TokenException", 403, Infrastructure),
            ("TokenException", 500, Infrastructure),
            ("NetworkException", 429, Transient),
            ("NetworkException", 503, Transient),
            ("InputException", 400, Business),
            ("OrderException", 400, Business),
            ("MarginException", 400, Business),
            ("HoldingException", 400, Business),
            ("UserException", 403, Business),
            ("PermissionException", 403, Business),
            ("GeneralException", 500, Transient),
            ("GeneralException", 502, Transient),
            ("GeneralException", 504, Transient),
            ("GeneralException", 429, Transient),
            ("GeneralException", 400, Business),
            ("DataException", 502, Transient),
            ("SomethingNewException", 404, Business),
            ("SomethingNewException", 403, Infrastructure),
        ];
        for (ty, status, class) in cases {
            assert_eq!(
                KiteError::api_class(&ErrorType::parse(ty), status),
                class,
                "{ty} at HTTP {status}"
            );
        }
    }

    #[test]
    fn error_type_names_round_trip_and_unknown_names_are_kept() {
        for name in [
            "TokenException",
            "UserException",
            "OrderException",
            "InputException",
            "MarginException",
            "HoldingException",
            "NetworkException",
            "DataException",
            "GeneralException",
            "PermissionException",
            "BrandNewException",
        ] {
            assert_eq!(ErrorType::parse(name).as_str(), name);
        }
        assert_eq!(
            ErrorType::parse("BrandNewException"),
            ErrorType::Other("BrandNewException".into())
        );
    }

    #[test]
    fn a_lost_reply_or_a_server_error_leaves_an_order_outcome_unknown_but_a_refusal_does_not() {
        let lost = KiteError::Transport {
            route: "POST /orders/regular".into(),
            message: "timed out".into(),
            maybe_sent: true,
        };
        let refused_connect = KiteError::Transport {
            route: "POST /orders/regular".into(),
            message: "connection refused".into(),
            maybe_sent: false,
        };
        let server = KiteError::Api {
            route: "POST /orders/regular".into(),
            status: 502,
            error_type: ErrorType::General,
            message: "OMS down".into(),
        };
        let rejected = KiteError::Api {
            route: "POST /orders/regular".into(),
            status: 400,
            error_type: ErrorType::Margin,
            message: "insufficient funds".into(),
        };
        assert!(lost.outcome_unknown());
        assert!(!refused_connect.outcome_unknown());
        assert!(server.outcome_unknown());
        assert!(!rejected.outcome_unknown());
        assert!(!rejected.is_token_error());
    }
}
