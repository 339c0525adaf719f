//! Zerodha wiring: the Kite client and session of the active zerodha broker, and the
//! `kite` feed.
//!
//! Contract: the access token lives in the store under `{broker}:kite:session` as JSON
//! `{access_token, login_time}` (written by `alpha-panda kite session`), or in the setting
//! `brokers.NAME.kite.access_token`; the store wins. It is never logged, only masked. A
//! session from before the latest 06:00 IST has expired (Kite's daily expiry). The feed
//! subscribes `ticker_instruments` in `ticker_mode` and publishes each packet as a
//! `market_tick` on `market.ticks`, keyed by instrument, at the exchange time; the messages
//! that queued up while one batch was published go out together as the next batch, so the
//! ticker's other events (a refused token, a reconnect) wait behind at most one publish, not
//! a backlog. It checks the store for a new session every 5 s. When the ticker refuses the token, or the session
//! expires, the zerodha broker is set HALTED (its risk stage then refuses its signals) with a
//! log line saying what to run; other brokers are not touched. Every ticker event is counted
//! in `alpha_panda_kite_ticker_events_total{event}`; order updates go to the zerodha trader.
//!
//! [`trader`] builds the zerodha broker's trader (`alpha_panda_actors::zerodha`): its client
//! takes the session from the store at start and every 5 s after (with a feed other than
//! `kite`, a session that expires sets the broker HALTED there); its follower reads the
//! order book every `order_poll_ms` while an order waits and squares MIS positions off at
//! `square_off_at` IST.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::{EventProducer, Output};
use alpha_panda_actors::metrics::metrics;
use alpha_panda_actors::store::Store;
use alpha_panda_actors::zerodha::{FollowConfig, ZerodhaTrader};
use alpha_panda_config::{BrokerKind, KiteSettings, Settings, TickerMode};
use alpha_panda_core::{BrokerName, EventBroker, EventData, EventEnvelope, TradingState};
use alpha_panda_kite::limits::ist;
use alpha_panda_kite::ticker::connection::{TickerConfig, TickerEvent, run};
use alpha_panda_kite::ticker::packet::{Mode, Packet};
use alpha_panda_kite::ticker::tick::to_market_tick;
use alpha_panda_kite::types::order::Order;
use alpha_panda_kite::{KiteClient, KiteConfig, mask};
use alpha_panda_topics::{TopicName, keys};
use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// A stored Kite session.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    pub access_token: String,
    pub login_time: DateTime<Utc>,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("access_token", &mask(&self.access_token))
            .field("login_time", &self.login_time)
            .finish()
    }
}

/// The store key of a broker's Kite session.
pub fn session_key(broker: &str) -> String {
    format!("{broker}:kite:session")
}

/// The latest 06:00 IST at or before `now`: sessions from before it have expired.
pub fn last_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&ist());
    let six = local
        .date_naive()
        .and_hms_opt(6, 0, 0)
        .and_then(|t| t.and_local_timezone(ist()).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    if six <= now {
        six
    } else {
        six - chrono::Duration::days(1)
    }
}

/// True when a session logged in at `login_time` is still valid at `now`.
pub fn session_valid(login_time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    login_time >= last_expiry(now)
}

/// The first active broker of kind zerodha.
pub fn zerodha(settings: &Settings) -> Option<(BrokerName, &KiteSettings)> {
    settings.active_brokers.iter().find_map(|b| {
        settings
            .brokers
            .get(b)
            .filter(|d| d.kind == BrokerKind::Zerodha)
            .map(|d| (b.clone(), &d.kite))
    })
}

/// A REST client for these settings (no access token yet).
pub fn client(kite: &KiteSettings) -> anyhow::Result<KiteClient> {
    let api_key = kite.api_key.clone().ok_or_else(|| {
        anyhow::anyhow!("brokers.NAME.kite.api_key is not set for the zerodha broker")
    })?;
    let mut c = KiteConfig::new(kite.api_url.clone(), api_key);
    c.timeout = Duration::from_millis(kite.request_timeout_ms);
    c.orders_per_minute = kite.orders_per_minute as usize;
    c.orders_per_day = kite.orders_per_day as usize;
    Ok(KiteClient::new(c)?)
}

/// Reads the broker's session: the store's if valid, else the setting's.
pub async fn current_token(
    store: &Store,
    broker: &str,
    kite: &KiteSettings,
) -> anyhow::Result<Option<String>> {
    if let Some(raw) = store.get(&session_key(broker)).await? {
        let s: StoredSession = serde_json::from_str(&raw).map_err(|e| {
            anyhow::anyhow!(
                "the stored session {} is unreadable: {e}",
                session_key(broker)
            )
        })?;
        if session_valid(s.login_time, Utc::now()) {
            return Ok(Some(s.access_token));
        }
        return Ok(None);
    }
    Ok(kite.access_token.clone())
}

fn events() -> &'static IntCounterVec {
    static C: OnceLock<IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        let c = IntCounterVec::new(
            Opts::new(
                "alpha_panda_kite_ticker_events_total",
                "KiteTicker events: ticks, heartbeat, malformed, skipped, connected, disconnected, token_rejected, order_update",
            ),
            &["event"],
        )
        // Truly unreachable: a literal name, help and label that prometheus accepts.
        .unwrap_or_else(|e| unreachable!("a valid metric: {e}"));
        let _ = metrics().registry.register(Box::new(c.clone()));
        c
    })
}

fn mode(m: TickerMode) -> Mode {
    match m {
        TickerMode::Ltp => Mode::Ltp,
        TickerMode::Quote => Mode::Quote,
        TickerMode::Full => Mode::Full,
    }
}

async fn halt(control: &Control, broker: &str, why: &str) {
    tracing::error!(
        broker,
        why,
        "zerodha HALTED: run `alpha-panda kite login-url`, log in, then `alpha-panda kite session --request-token T`; \
         then set the broker ACTIVE again (docs/zerodha.md)"
    );
    if let Err(e) = control
        .set_trading_state(broker, None, TradingState::Halted)
        .await
    {
        tracing::error!(broker, error = %e, "cannot record the HALTED state");
    }
}

/// The active zerodha broker's trader, running.
pub struct Trader {
    pub trader: Arc<ZerodhaTrader>,
    /// Order updates for the trader (the `kite` feed's WebSocket messages).
    pub updates: mpsc::UnboundedSender<Order>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Trader {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Builds and starts the trader of the active zerodha broker, if there is one: its state
/// loaded from the store, its follower and its session refresher running.
pub async fn trader(
    settings: &Settings,
    store: &Store,
    control: Arc<Control>,
    producer: EventProducer,
) -> anyhow::Result<Option<Trader>> {
    let Some((broker, kite)) = zerodha(settings) else {
        return Ok(None);
    };
    let account = settings
        .brokers
        .get(&broker)
        .map(|b| b.account.clone())
        .ok_or_else(|| anyhow::anyhow!("broker {broker} is not configured"))?;
    let client = client(kite)?;
    let token = current_token(store, broker.as_str(), kite).await?;
    // With the `kite` feed, its session watcher halts the broker; with any other feed, the
    // trader does.
    let halts_on_expiry = settings.feed != alpha_panda_config::Feed::Kite;
    if token.is_none() && halts_on_expiry {
        halt(&control, broker.as_str(), "no valid Kite session").await;
    }
    let mut had_session = token.is_some();
    client.set_access_token(token);
    let timeout = Duration::from_millis(kite.request_timeout_ms);
    // An order Kite accepted is in its book at once: an UNKNOWN intent absent twice the
    // request timeout after its call failed was never received.
    let grace = (timeout * 2).max(Duration::from_secs(5));
    let trader = Arc::new(
        ZerodhaTrader::load(
            broker.clone(),
            account,
            client.clone(),
            store.clone(),
            control.clone(),
            grace,
        )
        .await
        .map_err(|e| anyhow::anyhow!("loading the {broker} trader state: {e}"))?,
    );
    let (square_h, square_m) = kite
        .square_off_time()
        .ok_or_else(|| anyhow::anyhow!("brokers.{broker}.kite.square_off_at is not HH:MM"))?;
    let config = FollowConfig {
        poll: Duration::from_millis(kite.order_poll_ms),
        square_off_at: chrono::NaiveTime::from_hms_opt(square_h, square_m, 0)
            .ok_or_else(|| anyhow::anyhow!("square_off_at is not a time of day"))?,
    };
    let (updates, rx) = mpsc::unbounded_channel();
    let follower = tokio::spawn(trader.as_ref().clone().follow(rx, producer, config));
    let refresher = {
        let (store, broker, kite) = (store.clone(), broker.clone(), kite.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match current_token(&store, broker.as_str(), &kite).await {
                    Ok(t) => {
                        if halts_on_expiry && had_session && t.is_none() {
                            halt(
                                &control,
                                broker.as_str(),
                                "the Kite session expired (06:00 IST)",
                            )
                            .await;
                        }
                        had_session = t.is_some();
                        client.set_access_token(t)
                    }
                    Err(e) => {
                        tracing::warn!(broker = %broker, error = %e, "cannot read the Kite session")
                    }
                }
            }
        })
    };
    tracing::info!(broker = %broker, "zerodha trader started");
    Ok(Some(Trader {
        trader,
        updates,
        tasks: vec![follower, refresher],
    }))
}

/// Runs the `kite` feed until the process stops; order updates go to `orders`.
pub async fn feed(
    settings: Arc<Settings>,
    producer: EventProducer,
    store: Store,
    control: Arc<Control>,
    orders: Option<mpsc::UnboundedSender<Order>>,
) {
    let Some((broker, kite)) = zerodha(&settings) else {
        tracing::error!("feed = \"kite\" without an active zerodha broker");
        return;
    };
    let broker = broker.as_str().to_owned();
    let kite = kite.clone();
    let mut origin = crate::daemon::feed_origin(&settings, &store);
    let mut cfg = TickerConfig::new(
        kite.ticker_url.clone(),
        kite.api_key.clone().unwrap_or_default(),
    );
    cfg.read_timeout = Duration::from_secs(kite.ticker_read_timeout_secs);
    cfg.subscriptions = kite
        .ticker_instruments
        .iter()
        .map(|t| (*t, mode(kite.ticker_mode)))
        .collect();
    let first = current_token(&store, &broker, &kite)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(broker, error = %e, "cannot read the Kite session");
            None
        });
    if first.is_none() {
        halt(&control, &broker, "no valid Kite session").await;
    }
    let (token_tx, token_rx) = watch::channel(first);
    let watcher = {
        let (store, broker, kite, control) =
            (store.clone(), broker.clone(), kite.clone(), control.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let Ok(now) = current_token(&store, &broker, &kite).await else {
                    continue;
                };
                let before = token_tx.borrow().clone();
                if now != before {
                    if now.is_none() {
                        halt(&control, &broker, "the Kite session expired (06:00 IST)").await;
                    } else {
                        tracing::info!(broker, "a new Kite session: reconnecting the ticker");
                    }
                    if token_tx.send(now).is_err() {
                        return;
                    }
                }
            }
        })
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let conn = tokio::spawn(run(cfg, token_rx, tx));
    let counter = events();
    let mut next: Option<TickerEvent> = None;
    loop {
        let ev = match next.take() {
            Some(ev) => ev,
            None => match rx.recv().await {
                Some(ev) => ev,
                None => break,
            },
        };
        match ev {
            TickerEvent::Ticks { packets, received } => {
                // What queued up behind this message while the last batch was published
                // goes out with it, so a slow publish cannot build a queue that a refused
                // token or a reconnect waits behind.
                let mut batch = TickBatch {
                    ticks: vec![(packets, received)],
                    heartbeats: 0,
                };
                next = batch.take_queued(&mut rx);
                let packets: usize = batch.ticks.iter().map(|(p, _)| p.len()).sum();
                counter.with_label_values(&["ticks"]).inc_by(packets as u64);
                counter
                    .with_label_values(&["heartbeat"])
                    .inc_by(batch.heartbeats);
                let outputs: Vec<Output> = batch
                    .ticks
                    .iter()
                    .flat_map(|(packets, received)| {
                        packets.iter().filter_map(|p| to_market_tick(p, *received))
                    })
                    .map(|tick| Output {
                        topic: TopicName::market_ticks(),
                        envelope: EventEnvelope::root(
                            EventBroker::Shared,
                            "feed",
                            keys::tick(tick.instrument_token),
                            tick.timestamp,
                            EventData::MarketTick(tick),
                        ),
                    })
                    .collect();
                if let Err(e) = crate::daemon::send_ticks(&producer, &mut origin, &outputs).await {
                    tracing::warn!(error = %e, "publishing Kite ticks failed");
                }
            }
            TickerEvent::Heartbeat => counter.with_label_values(&["heartbeat"]).inc(),
            TickerEvent::Skipped(n) => counter.with_label_values(&["skipped"]).inc_by(n as u64),
            TickerEvent::Malformed(why) => {
                counter.with_label_values(&["malformed"]).inc();
                tracing::warn!(error = %why, "malformed KiteTicker message dropped");
            }
            TickerEvent::Connected { attempt } => {
                counter.with_label_values(&["connected"]).inc();
                tracing::info!(
                    attempt,
                    instruments = kite.ticker_instruments.len(),
                    "KiteTicker connected"
                );
            }
            TickerEvent::Disconnected { reason, retry_in } => {
                counter.with_label_values(&["disconnected"]).inc();
                tracing::warn!(reason, retry_in = ?retry_in, "KiteTicker disconnected");
            }
            TickerEvent::TokenRejected { reason } => {
                counter.with_label_values(&["token_rejected"]).inc();
                halt(&control, &broker, &reason).await;
            }
            TickerEvent::Order(o) => {
                counter.with_label_values(&["order_update"]).inc();
                tracing::info!(order_id = o.order_id, status = o.status.as_str(), tag = ?o.tag, "Kite order update");
                if let Some(tx) = &orders {
                    let _ = tx.send(*o);
                }
            }
            TickerEvent::ServerError(e) => tracing::warn!(error = e, "KiteTicker error message"),
            TickerEvent::ServerMessage(m) => tracing::info!(message = m, "KiteTicker message"),
        }
    }
    watcher.abort();
    conn.abort();
}

/// Ticker messages published together: each message's packets with its receive time, and
/// the heartbeats that came between them.
struct TickBatch {
    ticks: Vec<(Vec<Packet>, alpha_panda_core::Timestamp)>,
    heartbeats: u64,
}

impl TickBatch {
    /// Takes the tick messages and heartbeats already queued in `rx`, without waiting, up to
    /// the first other event, which it returns to be handled next (events keep their order).
    fn take_queued(&mut self, rx: &mut mpsc::Receiver<TickerEvent>) -> Option<TickerEvent> {
        while let Ok(ev) = rx.try_recv() {
            match ev {
                TickerEvent::Ticks { packets, received } => self.ticks.push((packets, received)),
                TickerEvent::Heartbeat => self.heartbeats += 1,
                other => return Some(other),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticker message of one 8-byte LTP packet of `token`.
    fn ticks(token: u32) -> TickerEvent {
        let mut frame = vec![0, 1, 0, 8];
        frame.extend(token.to_be_bytes());
        frame.extend(250_000u32.to_be_bytes());
        match alpha_panda_kite::ticker::packet::parse_frame(&frame) {
            Ok(alpha_panda_kite::ticker::packet::Frame::Packets { packets, .. }) => {
                TickerEvent::Ticks {
                    packets,
                    received: alpha_panda_core::Timestamp::now(),
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queued_ticks_join_one_batch_up_to_the_first_other_event_which_is_handled_next() {
        let (tx, mut rx) = mpsc::channel(16);
        for ev in [
            ticks(2),
            TickerEvent::Heartbeat,
            ticks(3),
            TickerEvent::TokenRejected {
                reason: "403".into(),
            },
            ticks(4),
        ] {
            tx.try_send(ev).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut batch = TickBatch {
            ticks: Vec::new(),
            heartbeats: 0,
        };
        let next = batch.take_queued(&mut rx);
        let tokens: Vec<u32> = batch
            .ticks
            .iter()
            .flat_map(|(p, _)| p.iter().map(|p| p.token))
            .collect();
        assert_eq!(tokens, vec![2, 3]);
        assert_eq!(batch.heartbeats, 1);
        assert!(matches!(next, Some(TickerEvent::TokenRejected { .. })));
        // What follows the returned event stays queued, in order.
        assert!(matches!(rx.try_recv(), Ok(TickerEvent::Ticks { .. })));
        assert!(batch.take_queued(&mut rx).is_none());
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_session_expires_at_the_next_six_am_ist() {
        // 06:00 IST is 00:30 UTC.
        let login = utc("2026-01-05T03:15:00Z"); // 08:45 IST
        assert!(session_valid(login, utc("2026-01-05T20:00:00Z")));
        assert!(session_valid(login, utc("2026-01-06T00:29:59Z")));
        assert!(!session_valid(login, utc("2026-01-06T00:30:00Z")));
        // Logged in at 05:00 IST: expires an hour later.
        let early = utc("2026-01-05T23:30:00Z");
        assert!(!session_valid(early, utc("2026-01-06T00:31:00Z")));
    }

    #[test]
    fn a_stored_session_debug_line_masks_the_token() {
        let s = StoredSession {
            access_token: "verysecrettokenvalue".into(),
            login_time: utc("2026-01-05T03:15:00Z"),
        };
        assert!(!format!("{s:?}").contains("verysecrettokenvalue"));
    }
}
