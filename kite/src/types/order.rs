//! Orders: the place / modify requests and the order, trade and order-id replies.
//!
//! Contract: requests are typed (every enum is Kite's wire string) and serialise to the
//! form fields Kite documents, omitting what is unset; `tag` is checked to be ≤ 20 ASCII
//! alphanumeric characters before anything is sent (Kite rejects, never truncates). Replies
//! keep the fields the runtime uses, accept Kite's extra fields, and keep statuses open
//! (`OrderStatus::Other`) because Kite adds transient ones.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::KiteError;

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $name {
            type Err = KiteError;
            fn from_str(s: &str) -> Result<Self, KiteError> {
                match s {
                    $($wire => Ok(Self::$variant),)+
                    other => Err(KiteError::Invalid(format!(
                        concat!(stringify!($name), " {:?} is not one of {}"),
                        other,
                        [$($wire),+].join(", ")
                    ))),
                }
            }
        }
    };
}

wire_enum!(
    /// The URL segment of an order call.
    Variety { Regular = "regular", Amo = "amo", Co = "co", Iceberg = "iceberg", Auction = "auction" }
);
wire_enum!(
    Exchange { Nse = "NSE", Bse = "BSE", Nfo = "NFO", Bfo = "BFO", Cds = "CDS", Bcd = "BCD", Mcx = "MCX" }
);
wire_enum!(TransactionType { Buy = "BUY", Sell = "SELL" });
wire_enum!(OrderType { Market = "MARKET", Limit = "LIMIT", Sl = "SL", SlM = "SL-M" });
wire_enum!(Product { Cnc = "CNC", Nrml = "NRML", Mis = "MIS", Mtf = "MTF" });
wire_enum!(Validity { Day = "DAY", Ioc = "IOC", Ttl = "TTL" });

/// The longest tag Kite accepts.
pub const MAX_TAG_LEN: usize = 20;

/// Checks a tag the way Kite does: 1 to 20 ASCII letters and digits.
pub fn check_tag(tag: &str) -> Result<(), KiteError> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN || !tag.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(KiteError::Invalid(format!(
            "order tag {tag:?} must be 1 to {MAX_TAG_LEN} ASCII letters or digits"
        )));
    }
    Ok(())
}

/// `POST /orders/{variety}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaceOrder {
    #[serde(skip)]
    pub variety: Variety,
    pub exchange: Exchange,
    pub tradingsymbol: String,
    pub transaction_type: TransactionType,
    pub order_type: OrderType,
    pub quantity: u64,
    pub product: Product,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disclosed_quantity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validity: Option<Validity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validity_ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iceberg_legs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iceberg_quantity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auction_number: Option<String>,
    /// −1 lets Kite choose; 1 to 100 is a percentage. Only for MARKET and SL-M orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market_protection: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl PlaceOrder {
    /// A regular DAY order with nothing optional set.
    pub fn new(
        exchange: Exchange,
        tradingsymbol: impl Into<String>,
        transaction_type: TransactionType,
        order_type: OrderType,
        quantity: u64,
        product: Product,
    ) -> Self {
        Self {
            variety: Variety::Regular,
            exchange,
            tradingsymbol: tradingsymbol.into(),
            transaction_type,
            order_type,
            quantity,
            product,
            price: None,
            trigger_price: None,
            disclosed_quantity: None,
            validity: Some(Validity::Day),
            validity_ttl: None,
            iceberg_legs: None,
            iceberg_quantity: None,
            auction_number: None,
            market_protection: None,
            tag: None,
        }
    }

    /// Checks what Kite would refuse: a tag, a price for LIMIT/SL, a trigger for SL/SL-M,
    /// iceberg legs for iceberg, a market protection in range, a positive quantity.
    pub fn validate(&self) -> Result<(), KiteError> {
        if let Some(tag) = &self.tag {
            check_tag(tag)?;
        }
        if self.quantity == 0 {
            return Err(KiteError::Invalid("order quantity must be positive".into()));
        }
        if matches!(self.order_type, OrderType::Limit | OrderType::Sl) && self.price.is_none() {
            return Err(KiteError::Invalid(format!(
                "a {} order needs a price",
                self.order_type
            )));
        }
        if matches!(self.order_type, OrderType::Sl | OrderType::SlM) && self.trigger_price.is_none()
        {
            return Err(KiteError::Invalid(format!(
                "a {} order needs a trigger_price",
                self.order_type
            )));
        }
        if self.variety == Variety::Iceberg
            && (self.iceberg_legs.is_none() || self.iceberg_quantity.is_none())
        {
            return Err(KiteError::Invalid(
                "an iceberg order needs iceberg_legs and iceberg_quantity".into(),
            ));
        }
        if let Some(mp) = self.market_protection
            && mp != -1
            && !(1..=100).contains(&mp)
        {
            return Err(KiteError::Invalid(format!(
                "market_protection {mp} must be -1 or 1 to 100"
            )));
        }
        Ok(())
    }
}

/// `PUT /orders/{variety}/{order_id}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ModifyOrder {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_type: Option<OrderType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disclosed_quantity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validity: Option<Validity>,
}

/// The reply of place, modify and cancel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderIdReply {
    pub order_id: String,
}

/// An order's status. Open: statuses Kite adds are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Open,
    Complete,
    Cancelled,
    Rejected,
    TriggerPending,
    Update,
    Other(String),
}

impl OrderStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "OPEN" => Self::Open,
            "COMPLETE" => Self::Complete,
            "CANCELLED" => Self::Cancelled,
            "REJECTED" => Self::Rejected,
            "TRIGGER PENDING" => Self::TriggerPending,
            "UPDATE" => Self::Update,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Open => "OPEN",
            Self::Complete => "COMPLETE",
            Self::Cancelled => "CANCELLED",
            Self::Rejected => "REJECTED",
            Self::TriggerPending => "TRIGGER PENDING",
            Self::Update => "UPDATE",
            Self::Other(s) => s,
        }
    }

    /// No further change will happen to the order.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Complete | Self::Cancelled | Self::Rejected)
    }
}

impl Serialize for OrderStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OrderStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

/// One order of the order book, one state of an order's history, or the `data` of an
/// order update (postback / WebSocket `{"type":"order"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    #[serde(default)]
    pub exchange_order_id: Option<String>,
    #[serde(default)]
    pub parent_order_id: Option<String>,
    pub status: OrderStatus,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub order_timestamp: Option<String>,
    #[serde(default)]
    pub exchange_timestamp: Option<String>,
    pub variety: String,
    pub exchange: String,
    pub tradingsymbol: String,
    pub instrument_token: u32,
    pub order_type: String,
    pub transaction_type: TransactionType,
    pub validity: String,
    pub product: String,
    pub quantity: u64,
    #[serde(default)]
    pub disclosed_quantity: u64,
    pub price: Decimal,
    #[serde(default)]
    pub trigger_price: Decimal,
    #[serde(default)]
    pub average_price: Decimal,
    #[serde(default)]
    pub filled_quantity: u64,
    #[serde(default)]
    pub pending_quantity: u64,
    #[serde(default)]
    pub cancelled_quantity: u64,
    #[serde(default)]
    pub tag: Option<String>,
    /// Present in order updates only: SHA-256(order_id + order_timestamp + api_secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// One execution (`GET /trades`, `GET /orders/{id}/trades`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    pub trade_id: String,
    pub order_id: String,
    #[serde(default)]
    pub exchange_order_id: Option<String>,
    pub exchange: String,
    pub tradingsymbol: String,
    pub instrument_token: u32,
    pub product: String,
    pub average_price: Decimal,
    pub quantity: u64,
    pub transaction_type: TransactionType,
    #[serde(default)]
    pub fill_timestamp: Option<String>,
    #[serde(default)]
    pub exchange_timestamp: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_limit_order_serialises_to_the_documented_form_fields_without_unset_ones() {
        let mut o = PlaceOrder::new(
            Exchange::Nse,
            "INFY",
            TransactionType::Buy,
            OrderType::Limit,
            5,
            Product::Mis,
        );
        o.price = Some(d("1412.95"));
        o.tag = Some("ap1a2b3c".into());
        let form = serde_urlencoded::to_string(&o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            form,
            "exchange=NSE&tradingsymbol=INFY&transaction_type=BUY&order_type=LIMIT&quantity=5\
             &product=MIS&price=1412.95&validity=DAY&tag=ap1a2b3c"
        );
        assert!(o.validate().is_ok());
    }

    #[test]
    fn a_tag_longer_than_twenty_or_not_alphanumeric_is_refused() {
        assert!(check_tag("abcdefghij0123456789").is_ok());
        assert!(check_tag("abcdefghij01234567890").is_err());
        assert!(check_tag("has-dash").is_err());
        assert!(check_tag("").is_err());
    }

    #[test]
    fn orders_missing_what_their_type_needs_are_refused_with_the_field_named() {
        let mut o = PlaceOrder::new(
            Exchange::Nse,
            "INFY",
            TransactionType::Sell,
            OrderType::Sl,
            1,
            Product::Cnc,
        );
        o.price = Some(d("10"));
        let e = o
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("trigger_price"), "{e}");
        o.trigger_price = Some(d("10.5"));
        o.market_protection = Some(0);
        let e = o
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("market_protection"), "{e}");
    }

    #[test]
    fn unknown_order_statuses_are_kept_verbatim() {
        let s: OrderStatus =
            serde_json::from_str("\"AMO REQ RECEIVED\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, OrderStatus::Other("AMO REQ RECEIVED".into()));
        assert!(!s.is_final());
        assert!(OrderStatus::parse("REJECTED").is_final());
    }

    #[test]
    fn wire_enums_parse_their_wire_strings_and_name_the_choices_otherwise() {
        assert_eq!("SL-M".parse::<OrderType>().ok(), Some(OrderType::SlM));
        let e = "XYZ"
            .parse::<Exchange>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("NSE") && e.contains("XYZ"), "{e}");
    }
}
