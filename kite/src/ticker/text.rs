//! KiteTicker text frames, both directions.
//!
//! Contract: the server's JSON text messages — `{"type":"order","data":{order}}`,
//! `{"type":"error","data":"…"}`, `{"type":"message","data":"…"}` — parse into a
//! [`ServerText`] or a [`TextError`]; an unknown `type` is kept, not an error. The client's
//! requests (`subscribe`, `unsubscribe`, `mode`) are written by [`Request::to_json`].

use serde::Deserialize;
use serde_json::Value;

use super::packet::Mode;
use crate::types::order::Order;

/// A text message from the ticker.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerText {
    /// An order update (the postback object).
    Order(Box<Order>),
    Error(String),
    Message(String),
    /// A `type` this client does not know, kept for the log.
    Other {
        kind: String,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TextError {
    #[error("ticker text message is not JSON with a \"type\": {0}")]
    NotJson(String),
    #[error("ticker order update does not decode: {0}")]
    BadOrder(String),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Parses one text message.
pub fn parse_text(s: &str) -> Result<ServerText, TextError> {
    let raw: Raw = serde_json::from_str(s).map_err(|e| TextError::NotJson(e.to_string()))?;
    Ok(match raw.kind.as_str() {
        "order" => ServerText::Order(Box::new(
            serde_json::from_value(raw.data).map_err(|e| TextError::BadOrder(e.to_string()))?,
        )),
        "error" => ServerText::Error(text_of(raw.data)),
        "message" => ServerText::Message(text_of(raw.data)),
        other => ServerText::Other {
            kind: other.to_owned(),
        },
    })
}

/// A request the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe(Vec<u32>),
    Unsubscribe(Vec<u32>),
    Mode(Mode, Vec<u32>),
}

impl Request {
    pub fn to_json(&self) -> String {
        match self {
            Self::Subscribe(t) => serde_json::json!({"a": "subscribe", "v": t}).to_string(),
            Self::Unsubscribe(t) => serde_json::json!({"a": "unsubscribe", "v": t}).to_string(),
            Self::Mode(m, t) => serde_json::json!({"a": "mode", "v": [m.as_str(), t]}).to_string(),
        }
    }

    /// Parses a client request (the simulator's side).
    pub fn parse(s: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(s).ok()?;
        let tokens = |v: &Value| -> Option<Vec<u32>> {
            v.as_array()?
                .iter()
                .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                .collect()
        };
        match v.get("a")?.as_str()? {
            "subscribe" => Some(Self::Subscribe(tokens(v.get("v")?)?)),
            "unsubscribe" => Some(Self::Unsubscribe(tokens(v.get("v")?)?)),
            "mode" => {
                let arr = v.get("v")?.as_array()?;
                let mode = match arr.first()?.as_str()? {
                    "ltp" => Mode::Ltp,
                    "quote" => Mode::Quote,
                    "full" => Mode::Full,
                    _ => return None,
                };
                Some(Self::Mode(mode, tokens(arr.get(1)?)?))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::order::OrderStatus;

    #[test]
    fn requests_are_written_in_the_documented_shapes_and_parse_back() {
        let cases = [
            (
                Request::Subscribe(vec![408065, 884737]),
                r#"{"a":"subscribe","v":[408065,884737]}"#,
            ),
            (
                Request::Unsubscribe(vec![408065]),
                r#"{"a":"unsubscribe","v":[408065]}"#,
            ),
            (
                Request::Mode(Mode::Full, vec![408065]),
                r#"{"a":"mode","v":["full",[408065]]}"#,
            ),
        ];
        for (req, json) in cases {
            assert_eq!(req.to_json(), json);
            assert_eq!(Request::parse(json), Some(req));
        }
        assert_eq!(Request::parse(r#"{"a":"mode","v":["fast",[1]]}"#), None);
    }

    #[test]
    fn an_order_text_message_carries_the_order_update() {
        let s = r#"{"type":"order","data":{"order_id":"1","status":"COMPLETE","variety":"regular",
            "exchange":"NSE","tradingsymbol":"TCS","instrument_token":2953217,"order_type":"MARKET",
            "transaction_type":"SELL","validity":"DAY","product":"MIS","quantity":2,"price":0,
            "filled_quantity":2,"average_price":3500.5,"tag":"ap1"}}"#;
        match parse_text(s) {
            Ok(ServerText::Order(o)) => {
                assert_eq!(o.status, OrderStatus::Complete);
                assert_eq!(o.tag.as_deref(), Some("ap1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_and_message_texts_and_unknown_types_are_kept() {
        assert_eq!(
            parse_text(r#"{"type":"error","data":"Invalid token"}"#),
            Ok(ServerText::Error("Invalid token".into()))
        );
        assert_eq!(
            parse_text(r#"{"type":"message","data":"hello"}"#),
            Ok(ServerText::Message("hello".into()))
        );
        assert_eq!(
            parse_text(r#"{"type":"instruments_meta","data":{}}"#),
            Ok(ServerText::Other {
                kind: "instruments_meta".into()
            })
        );
        assert!(parse_text("not json").is_err());
        assert!(matches!(
            parse_text(r#"{"type":"order","data":{"order_id":5}}"#),
            Err(TextError::BadOrder(_))
        ));
    }
}
