//! The `{status, data}` envelope of every Kite JSON reply.
//!
//! Contract: [`decode`] turns an HTTP status and body into the typed `data` or a
//! [`KiteError`]: `{"status":"success","data":…}` with a 2xx is the value;
//! `{"status":"error","message":…,"error_type":…}` (any status) is `KiteError::Api`; a
//! non-2xx without a readable error body is `KiteError::Api` with `GeneralException` (so the
//! status decides the class); a 2xx body of another shape is `KiteError::Decode` naming the
//! JSON path that failed. Decoding never panics.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ErrorType, KiteError};

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct SuccessBody<T> {
    #[serde(default)]
    status: Option<String>,
    data: T,
}

/// Decodes one reply of `route` (used in messages, e.g. `GET /orders`).
pub fn decode<T: DeserializeOwned>(route: &str, status: u16, body: &[u8]) -> Result<T, KiteError> {
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(body)
        && (err.status.as_deref() == Some("error") || !(200..300).contains(&status))
    {
        return Err(KiteError::Api {
            route: route.to_owned(),
            status,
            error_type: ErrorType::parse(err.error_type.as_deref().unwrap_or("GeneralException")),
            message: err
                .message
                .unwrap_or_else(|| format!("HTTP {status} without a message")),
        });
    }
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(KiteError::Api {
            route: route.to_owned(),
            status,
            error_type: ErrorType::General,
            message: format!("HTTP {status}: {text}"),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: SuccessBody<T> =
        serde_path_to_error::deserialize(de).map_err(|e| KiteError::Decode {
            route: route.to_owned(),
            message: format!("at {}: {}", e.path(), e.inner()),
        })?;
    match parsed.status.as_deref() {
        Some("success") | None => Ok(parsed.data),
        Some(other) => Err(KiteError::Decode {
            route: route.to_owned(),
            message: format!("status is {other:?}, expected \"success\""),
        }),
    }
}

#[cfg(test)]
mod tests {
    use alpha_panda_core::{Classify, FailureClass};

    use super::*;

    #[test]
    fn a_success_envelope_yields_its_data() {
        let v: bool = decode(
            "DELETE /session/token",
            200,
            br#"{"status":"success","data":true}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(v);
    }

    #[test]
    fn an_error_envelope_names_its_type_message_and_class() {
        let body = br#"{"status":"error","message":"Incorrect `api_key` or `access_token`.","data":null,"error_type":"TokenException"}"#;
        let err = decode::<bool>("GET /orders", 403, body).err();
        match err {
            Some(e @ KiteError::Api { .. }) => {
                assert_eq!(e.class(), FailureClass::Infrastructure);
                assert!(e.is_token_error());
                assert!(e.to_string().contains("Incorrect `api_key`"), "{e}");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn a_gateway_error_without_a_json_body_is_transient() {
        let err = decode::<bool>("GET /orders", 502, b"<html>Bad Gateway</html>").err();
        match err {
            Some(e) => assert_eq!(e.class(), FailureClass::Transient, "{e}"),
            None => panic!("a 502 decoded"),
        }
    }

    #[test]
    fn a_success_body_of_the_wrong_shape_names_the_path_that_failed() {
        #[derive(Debug, Deserialize)]
        struct Id {
            #[allow(dead_code)]
            order_id: String,
        }
        let err = decode::<Id>(
            "POST /orders/regular",
            200,
            br#"{"status":"success","data":{"order_id":5}}"#,
        )
        .err();
        match err {
            Some(KiteError::Decode { message, .. }) => {
                assert!(message.contains("order_id"), "{message}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_not_json_never_panic() {
        assert!(decode::<bool>("GET /x", 200, b"\xff\x00{").is_err());
        assert!(decode::<bool>("GET /x", 200, b"").is_err());
    }
}
