//! The Kite Connect v3 REST client.
//!
//! Contract: one [`KiteClient`] per Kite account. Every call sends `X-Kite-Version: 3`;
//! authenticated calls add `Authorization: token api_key:access_token`. GET and DELETE take
//! query parameters, POST and PUT form bodies. Each call waits for its endpoint class's rate
//! limit; an order placement is also counted against the per-minute and per-day caps and
//! refused locally (`KiteError::Refused`) when they are used up. Replies go through
//! [`crate::envelope::decode`]. The access token is never logged; it can be replaced while
//! the client is in use (a new session).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::checksum::session_checksum;
use crate::envelope::decode;
use crate::error::KiteError;
use crate::limits::{EndpointClass, RateLimiter};
use crate::types::margins::{Margins, SegmentMargins};
use crate::types::market::{
    LtpQuotes, MAX_LTP_INSTRUMENTS, MAX_QUOTE_INSTRUMENTS, OhlcQuotes, Quotes,
};
use crate::types::order::{Exchange, ModifyOrder, Order, OrderIdReply, PlaceOrder, Trade, Variety};
use crate::types::portfolio::{Holding, Positions};
use crate::types::session::{Profile, Session, login_url};

/// What a client needs to know.
#[derive(Clone)]
pub struct KiteConfig {
    /// `https://api.kite.trade`, or a simulator's `http://127.0.0.1:PORT`.
    pub api_url: String,
    pub api_key: String,
    pub access_token: Option<String>,
    /// Whole-request timeout (connect, send, reply).
    pub timeout: Duration,
    pub orders_per_minute: usize,
    pub orders_per_day: usize,
}

impl std::fmt::Debug for KiteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KiteConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key)
            .field(
                "access_token",
                &self.access_token.as_deref().map(crate::mask),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KiteConfig {
    /// Defaults: 7 s timeout, 200 orders a minute, 3000 a day (Kite's documented caps).
    pub fn new(api_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            api_key: api_key.into(),
            access_token: None,
            timeout: Duration::from_secs(7),
            orders_per_minute: 200,
            orders_per_day: 3000,
        }
    }
}

/// A Kite Connect client.
#[derive(Clone)]
pub struct KiteClient {
    http: reqwest::Client,
    base: Arc<str>,
    api_key: Arc<str>,
    access_token: Arc<RwLock<Option<String>>>,
    limiter: Arc<RateLimiter>,
}

impl std::fmt::Debug for KiteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KiteClient")
            .field("base", &self.base)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

fn form<T: serde::Serialize>(value: &T) -> Result<String, KiteError> {
    serde_urlencoded::to_string(value)
        .map_err(|e| KiteError::Invalid(format!("cannot encode the request: {e}")))
}

impl KiteClient {
    pub fn new(config: KiteConfig) -> Result<Self, KiteError> {
        let base = config.api_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(KiteError::Invalid(format!(
                "api_url {:?} must start with https:// or http://",
                config.api_url
            )));
        }
        if config.api_key.is_empty() {
            return Err(KiteError::Invalid("api_key is empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| KiteError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.into(),
            api_key: config.api_key.into(),
            access_token: Arc::new(RwLock::new(config.access_token)),
            limiter: Arc::new(RateLimiter::new(
                config.orders_per_minute,
                config.orders_per_day,
            )),
        })
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Replaces the access token (a new session), or clears it.
    pub fn set_access_token(&self, token: Option<String>) {
        let mut t = self.access_token.write().unwrap_or_else(|p| p.into_inner());
        *t = token;
    }

    pub fn has_access_token(&self) -> bool {
        self.access_token
            .read()
            .map(|t| t.is_some())
            .unwrap_or(false)
    }

    /// Where the user logs in to get a request token.
    pub fn login_url(&self) -> String {
        login_url(&self.api_key)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        class: EndpointClass,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<T, KiteError> {
        let route = format!("{method} {path}");
        let _permit = self.limiter.acquire(class).await;
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("X-Kite-Version", "3");
        if !query.is_empty() {
            req = req.query(query);
        }
        let token = self.access_token.read().map(|t| t.clone()).unwrap_or(None);
        if let Some(token) = token {
            req = req.header("Authorization", format!("token {}:{}", self.api_key, token));
        }
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let (status, bytes) = self.send(&route, req).await?;
        decode(&route, status, &bytes)
    }

    async fn send(
        &self,
        route: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), KiteError> {
        let transport = |e: reqwest::Error| KiteError::Transport {
            route: route.to_owned(),
            maybe_sent: !e.is_connect(),
            message: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        Ok((status, bytes.to_vec()))
    }

    /// `POST /session/token`: exchanges a request token for a session and keeps its access
    /// token for later calls.
    pub async fn generate_session(
        &self,
        request_token: &str,
        api_secret: &str,
    ) -> Result<Session, KiteError> {
        let checksum = session_checksum(&self.api_key, request_token, api_secret);
        let body = form(&[
            ("api_key", &*self.api_key),
            ("request_token", request_token),
            ("checksum", &checksum),
        ])?;
        let session: Session = self
            .call(
                EndpointClass::Other,
                Method::POST,
                "/session/token",
                &[],
                Some(body),
            )
            .await?;
        self.set_access_token(Some(session.access_token.clone()));
        Ok(session)
    }

    /// `DELETE /session/token`: ends the current session.
    pub async fn invalidate_session(&self) -> Result<bool, KiteError> {
        let token = self
            .access_token
            .read()
            .map(|t| t.clone())
            .unwrap_or(None)
            .ok_or_else(|| KiteError::Invalid("no access token to invalidate".into()))?;
        let done = self
            .call(
                EndpointClass::Other,
                Method::DELETE,
                "/session/token",
                &[("api_key", &*self.api_key), ("access_token", &token)],
                None,
            )
            .await?;
        self.set_access_token(None);
        Ok(done)
    }

    /// `GET /user/profile`.
    pub async fn profile(&self) -> Result<Profile, KiteError> {
        self.call(
            EndpointClass::Other,
            Method::GET,
            "/user/profile",
            &[],
            None,
        )
        .await
    }

    /// `POST /orders/{variety}`. Checked first ([`PlaceOrder::validate`]), then counted
    /// against the order caps, then rate limited.
    pub async fn place_order(&self, order: &PlaceOrder) -> Result<OrderIdReply, KiteError> {
        order.validate()?;
        let path = format!("/orders/{}", order.variety);
        self.limiter.place_order().map_err(|e| KiteError::Refused {
            route: format!("POST {path}"),
            reason: e.to_string(),
        })?;
        let body = form(order)?;
        self.call(EndpointClass::Order, Method::POST, &path, &[], Some(body))
            .await
    }

    /// `PUT /orders/{variety}/{order_id}`.
    pub async fn modify_order(
        &self,
        variety: Variety,
        order_id: &str,
        changes: &ModifyOrder,
    ) -> Result<OrderIdReply, KiteError> {
        let path = format!("/orders/{variety}/{}", path_segment(order_id)?);
        let body = form(changes)?;
        self.call(EndpointClass::Order, Method::PUT, &path, &[], Some(body))
            .await
    }

    /// `DELETE /orders/{variety}/{order_id}` (with `parent_order_id` for a CO leg).
    pub async fn cancel_order(
        &self,
        variety: Variety,
        order_id: &str,
        parent_order_id: Option<&str>,
    ) -> Result<OrderIdReply, KiteError> {
        let path = format!("/orders/{variety}/{}", path_segment(order_id)?);
        let query: Vec<(&str, &str)> = parent_order_id
            .map(|p| vec![("parent_order_id", p)])
            .unwrap_or_default();
        self.call(EndpointClass::Order, Method::DELETE, &path, &query, None)
            .await
    }

    /// `GET /orders`: the day's order book.
    pub async fn orders(&self) -> Result<Vec<Order>, KiteError> {
        self.call(EndpointClass::Other, Method::GET, "/orders", &[], None)
            .await
    }

    /// `GET /orders/{order_id}`: every state the order went through, oldest first.
    pub async fn order_history(&self, order_id: &str) -> Result<Vec<Order>, KiteError> {
        let path = format!("/orders/{}", path_segment(order_id)?);
        self.call(EndpointClass::Other, Method::GET, &path, &[], None)
            .await
    }

    /// `GET /orders/{order_id}/trades`.
    pub async fn order_trades(&self, order_id: &str) -> Result<Vec<Trade>, KiteError> {
        let path = format!("/orders/{}/trades", path_segment(order_id)?);
        self.call(EndpointClass::Other, Method::GET, &path, &[], None)
            .await
    }

    /// `GET /trades`: the day's executions.
    pub async fn trades(&self) -> Result<Vec<Trade>, KiteError> {
        self.call(EndpointClass::Other, Method::GET, "/trades", &[], None)
            .await
    }

    /// `GET /portfolio/positions`.
    pub async fn positions(&self) -> Result<Positions, KiteError> {
        self.call(
            EndpointClass::Other,
            Method::GET,
            "/portfolio/positions",
            &[],
            None,
        )
        .await
    }

    /// `GET /portfolio/holdings`.
    pub async fn holdings(&self) -> Result<Vec<Holding>, KiteError> {
        self.call(
            EndpointClass::Other,
            Method::GET,
            "/portfolio/holdings",
            &[],
            None,
        )
        .await
    }

    /// `GET /user/margins`.
    pub async fn margins(&self) -> Result<Margins, KiteError> {
        self.call(
            EndpointClass::Other,
            Method::GET,
            "/user/margins",
            &[],
            None,
        )
        .await
    }

    /// `GET /user/margins/{segment}` (`equity` or `commodity`).
    pub async fn segment_margins(&self, segment: &str) -> Result<SegmentMargins, KiteError> {
        let path = format!("/user/margins/{}", path_segment(segment)?);
        self.call(EndpointClass::Other, Method::GET, &path, &[], None)
            .await
    }

    async fn quotes<T: DeserializeOwned>(
        &self,
        path: &str,
        instruments: &[&str],
        max: usize,
    ) -> Result<T, KiteError> {
        if instruments.is_empty() || instruments.len() > max {
            return Err(KiteError::Invalid(format!(
                "{path} takes 1 to {max} instruments, got {}",
                instruments.len()
            )));
        }
        let query: Vec<(&str, &str)> = instruments.iter().map(|i| ("i", *i)).collect();
        self.call(EndpointClass::Quote, Method::GET, path, &query, None)
            .await
    }

    /// `GET /quote?i=EXCHANGE:SYMBOL…` (at most 500 instruments).
    pub async fn quote(&self, instruments: &[&str]) -> Result<Quotes, KiteError> {
        self.quotes("/quote", instruments, MAX_QUOTE_INSTRUMENTS)
            .await
    }

    /// `GET /quote/ohlc` (at most 1000 instruments).
    pub async fn ohlc(&self, instruments: &[&str]) -> Result<OhlcQuotes, KiteError> {
        self.quotes("/quote/ohlc", instruments, MAX_LTP_INSTRUMENTS)
            .await
    }

    /// `GET /quote/ltp` (at most 1000 instruments).
    pub async fn ltp(&self, instruments: &[&str]) -> Result<LtpQuotes, KiteError> {
        self.quotes("/quote/ltp", instruments, MAX_LTP_INSTRUMENTS)
            .await
    }

    /// `GET /instruments[/{exchange}]`: the instrument dump as CSV text (Kite serves it
    /// gzipped; the client inflates it). `alpha_panda_actors::instruments::InstrumentMaster::parse` types it.
    pub async fn instruments(&self, exchange: Option<Exchange>) -> Result<String, KiteError> {
        let path = match exchange {
            Some(e) => format!("/instruments/{e}"),
            None => "/instruments".to_owned(),
        };
        let route = format!("GET {path}");
        let _permit = self.limiter.acquire(EndpointClass::Other).await;
        let mut req = self
            .http
            .get(format!("{}{}", self.base, path))
            .header("X-Kite-Version", "3");
        let token = self.access_token.read().map(|t| t.clone()).unwrap_or(None);
        if let Some(token) = token {
            req = req.header("Authorization", format!("token {}:{}", self.api_key, token));
        }
        let (status, bytes) = self.send(&route, req).await?;
        if !(200..300).contains(&status) {
            return decode::<serde_json::Value>(&route, status, &bytes).map(|_| String::new());
        }
        String::from_utf8(bytes).map_err(|e| KiteError::Decode {
            route,
            message: format!("the CSV is not UTF-8: {e}"),
        })
    }
}

/// An id placed in a URL path must be a plain token.
fn path_segment(s: &str) -> Result<&str, KiteError> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(KiteError::Invalid(format!(
            "{s:?} is not a valid id for a URL path (letters, digits, '_' and '-')"
        )));
    }
    Ok(s)
}
