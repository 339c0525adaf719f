//! A Kite Connect simulator on loopback: REST, ticker, a matching engine on its own tick
//! stream, and fault injection. Used by the tests and by `alpha-panda kite-sim`.
//!
//! Contract: one TCP port serves both the REST API (Kite's routes and reply shapes,
//! `X-Kite-Version` and `Authorization: token key:access` checked) and the ticker (a
//! WebSocket upgrade on any path, `?api_key=&access_token=` checked, 403 when wrong).
//! Sessions: `GET /connect/login` answers a fresh request token; `POST /session/token`
//! checks the SHA-256 checksum with the simulator's api secret and issues an access token.
//! Every `tick_interval` each instrument moves up to two ticks (a seeded walk), open orders
//! are matched ([`book`]), subscribers get binary packets in their modes and `{"type":"order"}`
//! text updates; an idle connection gets a 1-byte heartbeat every `heartbeat_interval`.
//! Faults ([`Fault`]) apply to the next order placement (429, 500, accept-then-timeout,
//! rejection) or at once (token expiry, dropped sockets), and every order placement is
//! recorded with its arrival time so tests can count and time them.

pub mod book;
mod http;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};

use crate::checksum::session_checksum;
use crate::error::ErrorType;
use crate::limits::ist;
use crate::ticker::packet::{Mode, Packet, encode_frame};
use crate::ticker::text::Request as TickerRequest;
use crate::types::order::{Exchange, Order};
use book::{Book, SimError, SimInstrument};

/// A fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The next order placement gets HTTP 429 `NetworkException` (nothing booked).
    RateLimited,
    /// The next order placement gets HTTP 500 `GeneralException` (nothing booked).
    ServerError,
    /// The next order placement is booked, then the reply is held for this long and the
    /// connection dropped without an answer.
    TimeoutAfterAccept(Duration),
    /// The next order placement is booked and then REJECTED with this message.
    Reject(String),
    /// The access token expires now: every call gets 403 `TokenException` and ticker
    /// connections close until a new session.
    ExpireToken,
    /// Every ticker connection is dropped now (no close frame).
    DropSockets,
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub api_key: String,
    pub api_secret: String,
    pub instruments: Vec<SimInstrument>,
    pub tick_interval: Duration,
    pub heartbeat_interval: Duration,
    pub seed: u64,
    /// Most quantity filled per order per tick (`None`: all at once).
    pub fill_chunk: Option<u64>,
    /// An access token valid from the start (skips the login in tests).
    pub access_token: Option<String>,
}

fn d(units: i64, scale: u32) -> Decimal {
    Decimal::new(units, scale)
}

impl SimConfig {
    /// RELIANCE, INFY and TCS on NSE (tick 0.05, lot 1), one tick a second.
    pub fn new(api_key: impl Into<String>, api_secret: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            instruments: vec![
                SimInstrument::new(738561, Exchange::Nse, "RELIANCE", d(5, 2), 1, d(2450, 0)),
                SimInstrument::new(408065, Exchange::Nse, "INFY", d(5, 2), 1, d(1500, 0)),
                SimInstrument::new(2953217, Exchange::Nse, "TCS", d(5, 2), 1, d(3500, 0)),
            ],
            tick_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            seed: 7,
            fill_chunk: None,
            access_token: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Broadcast {
    Step { packets: Vec<Packet> },
    Order(Box<Order>),
    Drop,
}

struct State {
    book: Book,
    access_token: Option<String>,
    request_tokens: Vec<String>,
    issued: u64,
    faults: VecDeque<Fault>,
    placements: Vec<(Instant, String)>,
    connections: usize,
    subscribes: usize,
}

struct Shared {
    config: SimConfig,
    state: Mutex<State>,
    events: broadcast::Sender<Broadcast>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator. Dropping it stops it.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn ist_now() -> String {
    Utc::now()
        .with_timezone(&ist())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Simulator {
    /// Binds `listen` and starts serving.
    pub async fn start(listen: SocketAddr, config: SimConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(1024);
        let mut book = Book::new(config.instruments.clone());
        book.fill_chunk = config.fill_chunk;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                book,
                access_token: config.access_token.clone(),
                request_tokens: Vec::new(),
                issued: 0,
                faults: VecDeque::new(),
                placements: Vec::new(),
                connections: 0,
                subscribes: 0,
            }),
            config,
            events,
        });
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, shared.clone()));
                }
            })
        };
        let ticks = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut rng = Rng(shared.config.seed);
                let mut interval = tokio::time::interval(shared.config.tick_interval);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let now = ist_now();
                    let ts = u32::try_from(Utc::now().timestamp()).unwrap_or(0);
                    let (packets, updates) = {
                        let mut st = shared.lock();
                        let moves: Vec<i64> = (0..st.book.instruments.len())
                            .map(|_| (rng.next() % 5) as i64 - 2)
                            .collect();
                        let updates = st.book.step(&moves, &now);
                        let packets: Vec<Packet> = st
                            .book
                            .instruments
                            .iter()
                            .map(|i| i.packet(Mode::Full, ts))
                            .collect();
                        (packets, updates)
                    };
                    let _ = shared.events.send(Broadcast::Step { packets });
                    for u in updates {
                        let _ = shared.events.send(Broadcast::Order(Box::new(u)));
                    }
                }
            })
        };
        Ok(Self {
            addr,
            shared,
            tasks: vec![accept, ticks],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The REST base URL (`api_url`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The ticker URL (`ticker_url`).
    pub fn ticker_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn inject(&self, fault: Fault) {
        match fault {
            Fault::ExpireToken => {
                self.shared.lock().access_token = None;
                let _ = self.shared.events.send(Broadcast::Drop);
            }
            Fault::DropSockets => {
                let _ = self.shared.events.send(Broadcast::Drop);
            }
            other => self.shared.lock().faults.push_back(other),
        }
    }

    /// A request token as a login would hand back.
    pub fn issue_request_token(&self) -> String {
        issue_request_token(&self.shared)
    }

    pub fn access_token(&self) -> Option<String> {
        self.shared.lock().access_token.clone()
    }

    /// Every order's current state.
    pub fn orders(&self) -> Vec<Order> {
        self.shared.lock().book.orders()
    }

    /// When each order placement arrived (including refused ones), with its tag.
    pub fn placements(&self) -> Vec<(Instant, String)> {
        self.shared.lock().placements.clone()
    }

    /// Ticker connections accepted so far, and subscribe requests received.
    pub fn ticker_stats(&self) -> (usize, usize) {
        let st = self.shared.lock();
        (st.connections, st.subscribes)
    }
}

fn issue_request_token(shared: &Shared) -> String {
    let mut st = shared.lock();
    st.issued += 1;
    let t = format!("simreq{}", st.issued);
    st.request_tokens.push(t.clone());
    t
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut peek = [0u8; 4096];
    let mut upgrade = false;
    for _ in 0..50 {
        let n = match stream.peek(&mut peek).await {
            Ok(n) => n,
            Err(_) => return,
        };
        let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
        if head.contains("\r\n\r\n") || n == peek.len() {
            upgrade = head.contains("upgrade: websocket");
            break;
        }
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if upgrade {
        ticker(stream, shared).await;
    } else {
        rest(stream, shared).await;
    }
}

fn error_body(e: &SimError) -> Vec<u8> {
    json!({"status": "error", "message": e.message, "data": null, "error_type": e.error_type.as_str()})
        .to_string()
        .into_bytes()
}

fn ok(data: serde_json::Value) -> (u16, Vec<u8>) {
    (
        200,
        json!({"status": "success", "data": data})
            .to_string()
            .into_bytes(),
    )
}

fn err(status: u16, error_type: ErrorType, message: impl Into<String>) -> (u16, Vec<u8>) {
    let e = SimError {
        status,
        error_type,
        message: message.into(),
    };
    (status, error_body(&e))
}

async fn rest(mut stream: TcpStream, shared: Arc<Shared>) {
    let req = match http::read_request(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let (s, b) = err(400, ErrorType::Input, e);
            let _ = http::write_response(&mut stream, s, "application/json", &b).await;
            return;
        }
    };
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if req.method == "GET" && segments == ["connect", "login"] {
        let t = issue_request_token(&shared);
        let body = format!("request_token={t}\n");
        let _ = http::write_response(&mut stream, 200, "text/plain", body.as_bytes()).await;
        return;
    }
    if req.headers.get("x-kite-version").map(String::as_str) != Some("3") {
        let (s, b) = err(
            400,
            ErrorType::Input,
            "Missing or wrong X-Kite-Version header",
        );
        let _ = http::write_response(&mut stream, s, "application/json", &b).await;
        return;
    }
    let (status, body, content_type) = match route(&req, &segments, &shared).await {
        Reply::Json(s, b) => (s, b, "application/json"),
        Reply::Csv(b) => (200, b, "text/csv"),
        Reply::Hang(delay) => {
            tokio::time::sleep(delay).await;
            return;
        }
    };
    let _ = http::write_response(&mut stream, status, content_type, &body).await;
}

enum Reply {
    Json(u16, Vec<u8>),
    Csv(Vec<u8>),
    Hang(Duration),
}

impl From<(u16, Vec<u8>)> for Reply {
    fn from((s, b): (u16, Vec<u8>)) -> Self {
        Reply::Json(s, b)
    }
}

fn authorised(req: &http::Request, shared: &Shared) -> bool {
    let st = shared.lock();
    match (&st.access_token, req.headers.get("authorization")) {
        (Some(t), Some(h)) => *h == format!("token {}:{}", shared.config.api_key, t),
        _ => false,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

async fn route(req: &http::Request, seg: &[&str], shared: &Shared) -> Reply {
    let m = req.method.as_str();
    if (m, seg) == ("POST", &["session", "token"][..]) {
        return session(req, shared).into();
    }
    if !authorised(req, shared) {
        return err(
            403,
            ErrorType::Token,
            "Incorrect `api_key` or `access_token`.",
        )
        .into();
    }
    match (m, seg) {
        ("DELETE", ["session", "token"]) => {
            shared.lock().access_token = None;
            ok(json!(true)).into()
        }
        ("GET", ["user", "profile"]) => ok(json!({
            "user_id": "SIM001", "user_name": "Simulator", "email": "sim@localhost",
            "broker": "ZERODHA", "exchanges": ["NSE"], "products": ["CNC", "MIS", "NRML"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"]
        }))
        .into(),
        ("GET", ["user", "margins"]) => {
            let seg = json!({"enabled": true, "net": 1_000_000,
                "available": {"cash": 1_000_000, "opening_balance": 1_000_000, "live_balance": 1_000_000, "collateral": 0},
                "utilised": {"debits": 0, "exposure": 0, "span": 0}});
            ok(json!({"equity": seg, "commodity": seg})).into()
        }
        ("POST", ["orders", variety]) => place(req, variety, shared),
        ("PUT", ["orders", _variety, id]) => {
            let r = shared.lock().book.modify(id, &req.form());
            match r {
                Ok(o) => {
                    let _ = shared.events.send(Broadcast::Order(Box::new(o.clone())));
                    ok(json!({"order_id": o.order_id})).into()
                }
                Err(e) => (e.status, error_body(&e)).into(),
            }
        }
        ("DELETE", ["orders", _variety, id]) => {
            let r = shared.lock().book.cancel(id);
            match r {
                Ok(o) => {
                    let _ = shared.events.send(Broadcast::Order(Box::new(o.clone())));
                    ok(json!({"order_id": o.order_id})).into()
                }
                Err(e) => (e.status, error_body(&e)).into(),
            }
        }
        ("GET", ["orders"]) => ok(to_json(&shared.lock().book.orders())).into(),
        ("GET", ["orders", id]) => match shared.lock().book.order_history(id) {
            Some(h) => ok(to_json(&h)).into(),
            None => err(400, ErrorType::Input, format!("Invalid order_id {id}")).into(),
        },
        ("GET", ["orders", id, "trades"]) => match shared.lock().book.order_trades(id) {
            Some(t) => ok(to_json(&t)).into(),
            None => err(400, ErrorType::Input, format!("Invalid order_id {id}")).into(),
        },
        ("GET", ["trades"]) => ok(to_json(&shared.lock().book.trades())).into(),
        ("GET", ["portfolio", "positions"]) => ok(positions(shared)).into(),
        ("GET", ["portfolio", "holdings"]) => ok(json!([])).into(),
        ("GET", ["quote"]) | ("GET", ["quote", "ltp"]) | ("GET", ["quote", "ohlc"]) => {
            quotes(req, seg, shared).into()
        }
        ("GET", ["instruments"]) | ("GET", ["instruments", _]) => {
            let mut csv = String::from(
                "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n",
            );
            for i in &shared.lock().book.instruments {
                csv.push_str(&format!(
                    "{},{},{},{},{},,0.0,{},{},EQ,{},{}\n",
                    i.token,
                    i.token >> 8,
                    i.tradingsymbol,
                    i.tradingsymbol,
                    i.price,
                    i.tick_size,
                    i.lot_size,
                    i.exchange,
                    i.exchange
                ));
            }
            Reply::Csv(csv.into_bytes())
        }
        _ => err(
            404,
            ErrorType::General,
            format!("Route not found: {m} {}", req.path),
        )
        .into(),
    }
}

fn session(req: &http::Request, shared: &Shared) -> (u16, Vec<u8>) {
    let form: HashMap<String, String> = req.form().into_iter().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let cfg = &shared.config;
    if get("api_key") != cfg.api_key {
        return err(403, ErrorType::Token, "Invalid `api_key`.");
    }
    let mut st = shared.lock();
    let rt = get("request_token");
    let Some(pos) = st.request_tokens.iter().position(|t| t == rt) else {
        return err(403, ErrorType::Token, "Token is invalid or has expired.");
    };
    if get("checksum") != session_checksum(&cfg.api_key, rt, &cfg.api_secret) {
        return err(403, ErrorType::Token, "Invalid checksum.");
    }
    st.request_tokens.remove(pos);
    st.issued += 1;
    let token = format!("simacc{}x{}", st.issued, Utc::now().timestamp_millis());
    st.access_token = Some(token.clone());
    ok(json!({
        "user_id": "SIM001", "user_name": "Simulator", "api_key": cfg.api_key,
        "access_token": token, "public_token": "simpub", "login_time": ist_now(),
        "exchanges": ["NSE"], "products": ["CNC", "MIS", "NRML"]
    }))
}

fn place(req: &http::Request, variety: &str, shared: &Shared) -> Reply {
    let form = req.form();
    let mut st = shared.lock();
    let tag = form
        .iter()
        .find(|(k, _)| k == "tag")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    st.placements.push((Instant::now(), tag));
    match st.faults.front() {
        Some(Fault::RateLimited) => {
            st.faults.pop_front();
            return err(429, ErrorType::Network, "Too many requests").into();
        }
        Some(Fault::ServerError) => {
            st.faults.pop_front();
            return err(500, ErrorType::General, "Something went wrong (injected)").into();
        }
        _ => {}
    }
    let placed = st.book.place(variety, &form, &ist_now());
    let order = match placed {
        Ok(o) => o,
        Err(e) => return (e.status, error_body(&e)).into(),
    };
    let mut updates = vec![order.clone()];
    let reply = match st.faults.pop_front() {
        Some(Fault::TimeoutAfterAccept(delay)) => Reply::Hang(delay),
        Some(Fault::Reject(message)) => {
            if let Some(r) = st.book.reject(&order.order_id, &message) {
                updates.push(r);
            }
            ok(json!({"order_id": order.order_id})).into()
        }
        Some(other) => {
            st.faults.push_front(other);
            ok(json!({"order_id": order.order_id})).into()
        }
        None => ok(json!({"order_id": order.order_id})).into(),
    };
    drop(st);
    for u in updates {
        let _ = shared.events.send(Broadcast::Order(Box::new(u)));
    }
    reply
}

fn positions(shared: &Shared) -> serde_json::Value {
    let st = shared.lock();
    let mut net: Vec<serde_json::Value> = Vec::new();
    for i in &st.book.instruments {
        let (mut qty, mut buy_q, mut sell_q) = (0i64, 0i64, 0i64);
        let (mut buy_v, mut sell_v) = (Decimal::ZERO, Decimal::ZERO);
        for t in st
            .book
            .trades()
            .iter()
            .filter(|t| t.instrument_token == i.token)
        {
            let q = i64::try_from(t.quantity).unwrap_or(i64::MAX);
            if t.transaction_type == crate::types::order::TransactionType::Buy {
                qty += q;
                buy_q += q;
                buy_v += t.average_price * Decimal::from(q);
            } else {
                qty -= q;
                sell_q += q;
                sell_v += t.average_price * Decimal::from(q);
            }
        }
        if buy_q == 0 && sell_q == 0 {
            continue;
        }
        let avg = if qty > 0 && buy_q > 0 {
            buy_v / Decimal::from(buy_q)
        } else if qty < 0 && sell_q > 0 {
            sell_v / Decimal::from(sell_q)
        } else {
            Decimal::ZERO
        };
        let pnl = sell_v - buy_v + Decimal::from(qty) * i.price;
        net.push(json!({
            "tradingsymbol": i.tradingsymbol, "exchange": i.exchange.as_str(),
            "instrument_token": i.token, "product": "MIS", "quantity": qty,
            "multiplier": 1, "average_price": avg.round_dp(4), "last_price": i.price, "pnl": pnl,
            "buy_quantity": buy_q, "sell_quantity": sell_q
        }));
    }
    json!({"net": net.clone(), "day": net})
}

fn quotes(req: &http::Request, seg: &[&str], shared: &Shared) -> (u16, Vec<u8>) {
    let st = shared.lock();
    let mut out = serde_json::Map::new();
    for (k, v) in &req.query {
        if k != "i" {
            continue;
        }
        let Some((ex, sym)) = v.split_once(':') else {
            continue;
        };
        let Some(i) = st.book.instrument_by_symbol(ex, sym) else {
            continue;
        };
        let ohlc = json!({"open": i.price, "high": i.price, "low": i.price, "close": i.price});
        let q = match seg {
            [_, "ltp"] => json!({"instrument_token": i.token, "last_price": i.price}),
            [_, "ohlc"] => {
                json!({"instrument_token": i.token, "last_price": i.price, "ohlc": ohlc})
            }
            _ => json!({"instrument_token": i.token, "timestamp": ist_now(), "last_price": i.price,
                "last_quantity": 1, "volume": 0, "average_price": i.price, "ohlc": ohlc}),
        };
        out.insert(v.clone(), q);
    }
    ok(serde_json::Value::Object(out))
}

async fn ticker(stream: TcpStream, shared: Arc<Shared>) {
    let expected = {
        let st = shared.lock();
        st.access_token.clone()
    };
    let api_key = shared.config.api_key.clone();
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let check = move |req: &WsRequest, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        let q: Vec<(String, String)> = req
            .uri()
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let good = get("api_key").as_deref() == Some(api_key.as_str())
            && expected.is_some()
            && get("access_token") == expected;
        if good {
            Ok(resp)
        } else {
            let mut r = ErrorResponse::new(Some("invalid access token".into()));
            *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            Err(r)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    shared.lock().connections += 1;
    let mut events = shared.events.subscribe();
    let (mut sink, mut source) = ws.split();
    let mut modes: HashMap<u32, Mode> = HashMap::new();
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat_interval);
    loop {
        tokio::select! {
            msg = source.next() => match msg {
                Some(Ok(Message::Text(t))) => match TickerRequest::parse(&t) {
                    Some(TickerRequest::Subscribe(tokens)) => {
                        shared.lock().subscribes += 1;
                        for t in tokens {
                            modes.entry(t).or_insert(Mode::Quote);
                        }
                    }
                    Some(TickerRequest::Unsubscribe(tokens)) => {
                        for t in tokens {
                            modes.remove(&t);
                        }
                    }
                    Some(TickerRequest::Mode(m, tokens)) => {
                        for t in tokens {
                            modes.insert(t, m);
                        }
                    }
                    None => {
                        let e = json!({"type": "error", "data": "Invalid message"}).to_string();
                        if sink.send(Message::text(e)).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            ev = events.recv() => match ev {
                Ok(Broadcast::Step { packets }) => {
                    let mine: Vec<Packet> = packets
                        .into_iter()
                        .filter_map(|mut p| {
                            p.mode = *modes.get(&p.token)?;
                            Some(p)
                        })
                        .collect();
                    if !mine.is_empty() {
                        if sink.send(Message::binary(encode_frame(&mine))).await.is_err() {
                            return;
                        }
                        heartbeat.reset();
                    }
                }
                Ok(Broadcast::Order(o)) => {
                    let t = json!({"type": "order", "data": to_json(&o)}).to_string();
                    if sink.send(Message::text(t)).await.is_err() {
                        return;
                    }
                }
                Ok(Broadcast::Drop) | Err(broadcast::error::RecvError::Closed) => return,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
            _ = heartbeat.tick() => {
                if sink.send(Message::binary(vec![0u8])).await.is_err() {
                    return;
                }
            }
        }
    }
}
