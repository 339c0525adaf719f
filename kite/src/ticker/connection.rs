//! The KiteTicker WebSocket connection: connect, subscribe, read, reconnect.
//!
//! Contract: [`run`] keeps one connection to `{url}?api_key=K&access_token=T` alive for as
//! long as someone receives its [`TickerEvent`]s. On every (re)connect it subscribes every
//! configured token and sets each token's mode, so a reconnect resubscribes in the same
//! modes. Any message — data, heartbeat, text, ping — is liveness; no message for
//! `read_timeout` drops the connection. After a drop it waits `backoff_min`, doubling up to
//! `backoff_max` (1, 2, 4 … 60 s by default), and the wait starts over once a connection
//! has delivered a message. A 403 on the upgrade (a bad or expired token) is reported as
//! [`TickerEvent::TokenRejected`] and nothing is retried until the token changes; a new
//! token also replaces a live connection. Malformed binary or text messages are reported
//! ([`TickerEvent::Malformed`]) and the connection goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use alpha_panda_core::Timestamp;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message};

use super::packet::{Frame, Mode, Packet, parse_frame};
use super::text::{Request, ServerText, parse_text};
use crate::types::order::Order;

/// How to reach the ticker and what to subscribe.
#[derive(Debug, Clone)]
pub struct TickerConfig {
    /// `wss://ws.kite.trade`, or a simulator's `ws://127.0.0.1:PORT`.
    pub url: String,
    pub api_key: String,
    pub read_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub subscriptions: Vec<(u32, Mode)>,
}

impl TickerConfig {
    /// Kite's defaults: 10 s read timeout, backoff 1 s doubling to 60 s.
    pub fn new(url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: api_key.into(),
            read_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            subscriptions: Vec::new(),
        }
    }

    /// The requests that set up the subscriptions: one subscribe, then one mode per mode.
    pub fn subscribe_requests(&self) -> Vec<Request> {
        if self.subscriptions.is_empty() {
            return Vec::new();
        }
        let tokens: Vec<u32> = self.subscriptions.iter().map(|(t, _)| *t).collect();
        let mut by_mode: BTreeMap<&str, (Mode, Vec<u32>)> = BTreeMap::new();
        for (t, m) in &self.subscriptions {
            by_mode
                .entry(m.as_str())
                .or_insert((*m, Vec::new()))
                .1
                .push(*t);
        }
        let mut out = vec![Request::Subscribe(tokens)];
        out.extend(by_mode.into_values().map(|(m, t)| Request::Mode(m, t)));
        out
    }
}

/// What the connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TickerEvent {
    Connected {
        attempt: u32,
    },
    Ticks {
        packets: Vec<Packet>,
        received: Timestamp,
    },
    /// Packets of unknown length in a message.
    Skipped(usize),
    Heartbeat,
    Order(Box<Order>),
    ServerError(String),
    ServerMessage(String),
    /// A message that did not parse; the connection goes on.
    Malformed(String),
    Disconnected {
        reason: String,
        retry_in: Duration,
    },
    /// The upgrade was refused with 403: the access token is bad or expired.
    TokenRejected {
        reason: String,
    },
}

/// The next wait after `current` (doubling, capped).
pub fn next_backoff(current: Duration, max: Duration) -> Duration {
    (current * 2).min(max)
}

enum End {
    /// The receiver is gone: stop.
    Stop,
    /// Reconnect; `alive` when the connection delivered a message.
    Lost {
        reason: String,
        alive: bool,
    },
    TokenRejected(String),
    TokenChanged,
}

fn ticker_url(config: &TickerConfig, token: &str) -> String {
    let q = serde_urlencoded::to_string([
        ("api_key", config.api_key.as_str()),
        ("access_token", token),
    ])
    .unwrap_or_default();
    let mut url = config.url.clone();
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(&url);
    if !after_scheme.contains('/') {
        // A request needs a path: `wss://ws.kite.trade` → `wss://ws.kite.trade/`.
        match url.find('?') {
            Some(q) => url.insert(q, '/'),
            None => url.push('/'),
        }
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

/// Runs the connection until `events` is closed.
pub async fn run(
    config: TickerConfig,
    mut token: watch::Receiver<Option<String>>,
    events: mpsc::Sender<TickerEvent>,
) {
    let mut backoff = config.backoff_min;
    let mut attempt: u32 = 0;
    loop {
        let current = token.borrow_and_update().clone();
        let Some(access_token) = current else {
            if token.changed().await.is_err() {
                return;
            }
            continue;
        };
        attempt = attempt.saturating_add(1);
        match connection(&config, &access_token, attempt, &mut token, &events).await {
            End::Stop => return,
            End::TokenChanged => {
                backoff = config.backoff_min;
                continue;
            }
            End::TokenRejected(reason) => {
                if events
                    .send(TickerEvent::TokenRejected { reason })
                    .await
                    .is_err()
                {
                    return;
                }
                if token.changed().await.is_err() {
                    return;
                }
                backoff = config.backoff_min;
            }
            End::Lost { reason, alive } => {
                if alive {
                    backoff = config.backoff_min;
                }
                let retry_in = backoff;
                if events
                    .send(TickerEvent::Disconnected { reason, retry_in })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    changed = token.changed() => if changed.is_err() { return },
                }
                backoff = next_backoff(backoff, config.backoff_max);
            }
        }
    }
}

async fn connection(
    config: &TickerConfig,
    access_token: &str,
    attempt: u32,
    token: &mut watch::Receiver<Option<String>>,
    events: &mpsc::Sender<TickerEvent>,
) -> End {
    let url = ticker_url(config, access_token);
    let lost = |reason: String| End::Lost {
        reason,
        alive: false,
    };
    let ws = match tokio::time::timeout(config.read_timeout, tokio_tungstenite::connect_async(url))
        .await
    {
        Err(_) => return lost(format!("connect timed out after {:?}", config.read_timeout)),
        Ok(Err(tungstenite::Error::Http(resp))) if resp.status().as_u16() == 403 => {
            return End::TokenRejected("the ticker refused the access token (HTTP 403)".into());
        }
        Ok(Err(e)) => return lost(format!("connect failed: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    let (mut sink, mut stream) = ws.split();
    for req in config.subscribe_requests() {
        if let Err(e) = sink.send(Message::text(req.to_json())).await {
            return lost(format!("subscribe failed: {e}"));
        }
    }
    if events
        .send(TickerEvent::Connected { attempt })
        .await
        .is_err()
    {
        return End::Stop;
    }
    let mut alive = false;
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(config.read_timeout, stream.next()) => n,
            changed = token.changed() => {
                let _ = sink.close().await;
                return if changed.is_err() { End::Stop } else { End::TokenChanged };
            }
        };
        let msg = match next {
            Err(_) => {
                return End::Lost {
                    reason: format!("no message for {:?}", config.read_timeout),
                    alive,
                };
            }
            Ok(None) => {
                return End::Lost {
                    reason: "the server closed the connection".into(),
                    alive,
                };
            }
            Ok(Some(Err(e))) => {
                return End::Lost {
                    reason: format!("read failed: {e}"),
                    alive,
                };
            }
            Ok(Some(Ok(m))) => m,
        };
        alive = true;
        let event = match msg {
            Message::Binary(b) => match parse_frame(&b) {
                Ok(Frame::Heartbeat) => TickerEvent::Heartbeat,
                Ok(Frame::Packets { packets, skipped }) => {
                    if skipped > 0 && events.send(TickerEvent::Skipped(skipped)).await.is_err() {
                        return End::Stop;
                    }
                    TickerEvent::Ticks {
                        packets,
                        received: Timestamp::now(),
                    }
                }
                Err(e) => TickerEvent::Malformed(e.to_string()),
            },
            Message::Text(t) => match parse_text(&t) {
                Ok(ServerText::Order(o)) => TickerEvent::Order(o),
                Ok(ServerText::Error(e)) => TickerEvent::ServerError(e),
                Ok(ServerText::Message(m)) => TickerEvent::ServerMessage(m),
                Ok(ServerText::Other { kind }) => TickerEvent::ServerMessage(format!("({kind})")),
                Err(e) => TickerEvent::Malformed(e.to_string()),
            },
            Message::Close(frame) => {
                return End::Lost {
                    reason: format!(
                        "the server closed the connection{}",
                        frame
                            .map(|f| format!(": {} {}", f.code, f.reason))
                            .unwrap_or_default()
                    ),
                    alive,
                };
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if events.send(event).await.is_err() {
            return End::Stop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_one_second_to_a_minute() {
        let mut b = Duration::from_secs(1);
        let mut seen = vec![b.as_secs()];
        for _ in 0..8 {
            b = next_backoff(b, Duration::from_secs(60));
            seen.push(b.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn subscriptions_are_one_subscribe_and_one_mode_request_per_mode() {
        let mut c = TickerConfig::new("ws://127.0.0.1:1", "k");
        c.subscriptions = vec![(1, Mode::Full), (2, Mode::Ltp), (3, Mode::Full)];
        assert_eq!(
            c.subscribe_requests(),
            vec![
                Request::Subscribe(vec![1, 2, 3]),
                Request::Mode(Mode::Full, vec![1, 3]),
                Request::Mode(Mode::Ltp, vec![2]),
            ]
        );
    }

    #[test]
    fn the_url_carries_the_api_key_and_the_token() {
        let c = TickerConfig::new("wss://ws.kite.trade", "key1");
        assert_eq!(
            ticker_url(&c, "t/ok"),
            "wss://ws.kite.trade/?api_key=key1&access_token=t%2Fok"
        );
    }
}
