//! Session: the login URL, the token exchange reply, the user profile.
//!
//! Contract: [`login_url`] builds Kite's login address for an api key; [`Session`] is the
//! `data` of `POST /session/token`. Its `Debug` masks the access token, so logging a session
//! never shows it.

use std::fmt;

use serde::Deserialize;

/// Where a user logs in; Kite redirects back with `request_token`.
pub const LOGIN_BASE: &str = "https://kite.zerodha.com/connect/login";

/// The login address for `api_key` (`v=3`).
pub fn login_url(api_key: &str) -> String {
    let q = serde_urlencoded::to_string([("v", "3"), ("api_key", api_key)]).unwrap_or_default();
    format!("{LOGIN_BASE}?{q}")
}

/// Shows the first and last two characters of a secret and the length, never the rest.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 6 {
        return "*".repeat(n);
    }
    let head: String = secret.chars().take(2).collect();
    let tail: String = secret.chars().skip(n - 2).collect();
    format!("{head}…{tail} ({n} chars)")
}

/// `data` of `POST /session/token`.
#[derive(Clone, PartialEq, Deserialize)]
pub struct Session {
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    pub api_key: String,
    pub access_token: String,
    #[serde(default)]
    pub public_token: Option<String>,
    #[serde(default)]
    pub login_time: Option<String>,
    #[serde(default)]
    pub exchanges: Vec<String>,
    #[serde(default)]
    pub products: Vec<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("api_key", &self.api_key)
            .field("access_token", &mask(&self.access_token))
            .field("login_time", &self.login_time)
            .finish_non_exhaustive()
    }
}

/// `data` of `GET /user/profile`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Profile {
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub broker: Option<String>,
    #[serde(default)]
    pub exchanges: Vec<String>,
    #[serde(default)]
    pub products: Vec<String>,
    #[serde(default)]
    pub order_types: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_url_carries_version_three_and_the_api_key() {
        assert_eq!(
            login_url("abc123"),
            "https://kite.zerodha.com/connect/login?v=3&api_key=abc123"
        );
    }

    #[test]
    fn a_session_debug_line_never_shows_the_access_token() {
        let s = Session {
            user_id: "AB1234".into(),
            user_name: None,
            api_key: "key".into(),
            access_token: "supersecretaccesstoken".into(),
            public_token: None,
            login_time: None,
            exchanges: vec![],
            products: vec![],
        };
        let line = format!("{s:?}");
        assert!(!line.contains("supersecretaccesstoken"), "{line}");
        assert!(line.contains("su…en (22 chars)"), "{line}");
        assert_eq!(mask("short"), "*****");
    }
}
