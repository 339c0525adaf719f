//! The REST client and the ticker connection against the loopback simulator: sessions,
//! orders and fills, every injected fault, rate limits and caps, reconnects.

use std::time::Duration;

use alpha_panda_core::{Classify, FailureClass};
use alpha_panda_kite::sim::{Fault, SimConfig, Simulator};
use alpha_panda_kite::ticker::connection::{TickerConfig, TickerEvent, run};
use alpha_panda_kite::ticker::packet::Mode;
use alpha_panda_kite::types::order::{
    Exchange, OrderStatus, OrderType, PlaceOrder, Product, TransactionType,
};
use alpha_panda_kite::{KiteClient, KiteConfig, KiteError};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, watch};

const KEY: &str = "simkey";
const SECRET: &str = "simsecret";

async fn sim(tick_ms: u64) -> Simulator {
    let mut c = SimConfig::new(KEY, SECRET);
    c.tick_interval = Duration::from_millis(tick_ms);
    c.heartbeat_interval = Duration::from_millis(200);
    c.access_token = Some("tok0".into());
    Simulator::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), c)
        .await
        .unwrap_or_else(|e| panic!("simulator: {e}"))
}

fn client(sim: &Simulator, token: Option<&str>) -> KiteClient {
    let mut c = KiteConfig::new(sim.api_url(), KEY);
    c.access_token = token.map(str::to_owned);
    c.timeout = Duration::from_millis(800);
    KiteClient::new(c).unwrap_or_else(|e| panic!("{e}"))
}

fn market_buy(symbol: &str, qty: u64, tag: &str) -> PlaceOrder {
    let mut o = PlaceOrder::new(
        Exchange::Nse,
        symbol,
        TransactionType::Buy,
        OrderType::Market,
        qty,
        Product::Mis,
    );
    o.tag = Some(tag.to_owned());
    o
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_request_token_becomes_a_session_whose_token_authorises_later_calls() {
    let sim = sim(1000).await;
    let kite = client(&sim, None);
    let e = kite.profile().await.err();
    assert!(e.as_ref().is_some_and(KiteError::is_token_error), "{e:?}");
    let rt = sim.issue_request_token();
    let wrong = kite.generate_session(&rt, "not-the-secret").await.err();
    assert!(wrong.is_some_and(|e| e.class() == FailureClass::Infrastructure));
    let session = kite
        .generate_session(&rt, SECRET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Some(session.access_token.clone()), sim.access_token());
    let profile = kite.profile().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(profile.user_id, "SIM001");
    assert!(
        kite.invalidate_session()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(sim.access_token(), None);
}

#[tokio::test]
async fn a_market_order_fills_on_the_next_tick_and_shows_in_book_history_trades_and_positions() {
    let sim = sim(50).await;
    let kite = client(&sim, Some("tok0"));
    let id = kite
        .place_order(&market_buy("INFY", 3, "apt1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .order_id;
    wait_for("the fill", || {
        sim.orders()
            .iter()
            .any(|o| o.order_id == id && o.status == OrderStatus::Complete)
    })
    .await;
    let book = kite.orders().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(book.len(), 1);
    assert_eq!(book[0].tag.as_deref(), Some("apt1"));
    let history = kite
        .order_history(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        history.last().map(|o| o.status.clone()),
        Some(OrderStatus::Complete)
    );
    let trades = kite
        .order_trades(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trades.iter().map(|t| t.quantity).sum::<u64>(), 3);
    assert_eq!(kite.trades().await.map(|t| t.len()).ok(), Some(1));
    let pos = kite.positions().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pos.net.iter().map(|p| p.quantity).sum::<i64>(), 3);
    let ltp = kite
        .ltp(&["NSE:INFY"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ltp["NSE:INFY"].last_price > Decimal::ZERO);
    let csv = kite
        .instruments(None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(csv.contains("408065,1594,INFY"), "{csv}");
    assert!(kite.margins().await.is_ok());
}

#[tokio::test]
async fn a_limit_order_can_be_modified_and_cancelled() {
    let sim = sim(1000).await;
    let kite = client(&sim, Some("tok0"));
    let mut o = market_buy("TCS", 1, "apt2");
    o.order_type = OrderType::Limit;
    o.price = Some(Decimal::new(100, 0));
    let id = kite
        .place_order(&o)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .order_id;
    let changes = alpha_panda_kite::types::order::ModifyOrder {
        price: Some(Decimal::new(101, 0)),
        ..Default::default()
    };
    kite.modify_order(o.variety, &id, &changes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    kite.cancel_order(o.variety, &id, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let h = kite
        .order_history(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        h.last().map(|o| (o.status.clone(), o.price)),
        Some((OrderStatus::Cancelled, Decimal::new(101, 0)))
    );
    let again = kite.cancel_order(o.variety, &id, None).await.err();
    assert!(again.is_some_and(|e| e.class() == FailureClass::Business));
}

#[tokio::test]
async fn injected_faults_surface_with_their_classes() {
    let sim = sim(1000).await;
    let kite = client(&sim, Some("tok0"));
    sim.inject(Fault::RateLimited);
    let e = kite.place_order(&market_buy("INFY", 1, "f1")).await.err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.class() == FailureClass::Transient && !e.outcome_unknown()),
        "{e:?}"
    );
    sim.inject(Fault::ServerError);
    let e = kite.place_order(&market_buy("INFY", 1, "f2")).await.err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.class() == FailureClass::Transient && e.outcome_unknown()),
        "{e:?}"
    );
    sim.inject(Fault::Reject("Insufficient funds".into()));
    let id = kite
        .place_order(&market_buy("INFY", 1, "f3"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .order_id;
    let o = kite
        .order_history(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        o.last().map(|o| o.status.clone()),
        Some(OrderStatus::Rejected)
    );
    let mut bad = market_buy("NOSUCH", 1, "f4");
    bad.tradingsymbol = "NOSUCH".into();
    let e = kite.place_order(&bad).await.err();
    assert!(e.is_some_and(|e| e.class() == FailureClass::Business));
    sim.inject(Fault::ExpireToken);
    let e = kite.orders().await.err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.is_token_error() && e.class() == FailureClass::Infrastructure),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_timeout_after_accept_leaves_the_outcome_unknown_and_the_order_book_holds_it_once_by_tag()
{
    let sim = sim(1000).await;
    let kite = client(&sim, Some("tok0"));
    sim.inject(Fault::TimeoutAfterAccept(Duration::from_secs(3)));
    let e = kite
        .place_order(&market_buy("INFY", 1, "aptimeout1"))
        .await
        .err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.outcome_unknown() && e.class() == FailureClass::Transient),
        "{e:?}"
    );
    let book = kite.orders().await.unwrap_or_else(|e| panic!("{e}"));
    let tagged: Vec<_> = book
        .iter()
        .filter(|o| o.tag.as_deref() == Some("aptimeout1"))
        .collect();
    assert_eq!(tagged.len(), 1);
}

#[tokio::test]
async fn fifty_orders_reach_kite_at_no_more_than_ten_in_any_second() {
    let sim = sim(1000).await;
    let kite = client(&sim, Some("tok0"));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let k = kite.clone();
        tasks.push(tokio::spawn(async move {
            k.place_order(&market_buy("RELIANCE", 1, &format!("burst{i}")))
                .await
        }));
    }
    for t in tasks {
        assert!(t.await.map(|r| r.is_ok()).unwrap_or(false));
    }
    let times: Vec<_> = sim.placements().into_iter().map(|(t, _)| t).collect();
    assert_eq!(times.len(), 50);
    let mut sorted = times.clone();
    sorted.sort();
    for (i, a) in sorted.iter().enumerate() {
        let n = sorted[i..]
            .iter()
            .take_while(|b| b.duration_since(*a) < Duration::from_millis(990))
            .count();
        assert!(n <= 10, "{n} orders within one second starting at #{i}");
    }
}

#[tokio::test]
async fn the_orders_per_minute_cap_refuses_locally_before_kite_sees_the_order() {
    let sim = sim(1000).await;
    let mut c = KiteConfig::new(sim.api_url(), KEY);
    c.access_token = Some("tok0".into());
    c.orders_per_minute = 3;
    let kite = KiteClient::new(c).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        assert!(
            kite.place_order(&market_buy("TCS", 1, &format!("cap{i}")))
                .await
                .is_ok()
        );
    }
    let e = kite.place_order(&market_buy("TCS", 1, "cap3")).await.err();
    assert!(matches!(e, Some(KiteError::Refused { .. })), "{e:?}");
    assert_eq!(sim.placements().len(), 3);
}

async fn next_matching(
    rx: &mut mpsc::Receiver<TickerEvent>,
    what: &str,
    f: impl Fn(&TickerEvent) -> bool,
) -> TickerEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if f(&e) => return e,
            Ok(Some(other)) => eprintln!("skipped {other:?}"),
            Ok(None) => panic!("ticker stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[tokio::test]
async fn the_ticker_streams_subscribed_packets_in_their_modes_and_order_updates() {
    let sim = sim(50).await;
    let mut cfg = TickerConfig::new(sim.ticker_url(), KEY);
    cfg.subscriptions = vec![(408065, Mode::Full), (738561, Mode::Ltp)];
    let (_token_tx, token_rx) = watch::channel(Some("tok0".to_owned()));
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(run(cfg, token_rx, tx));
    next_matching(&mut rx, "connected", |e| {
        matches!(e, TickerEvent::Connected { attempt: 1 })
    })
    .await;
    // Kite subscribes a token in quote mode and the mode requests follow the subscribe, so
    // a tick or two can come in quote mode first; after that, each token is in its own mode.
    next_matching(&mut rx, "ticks of both in their modes", |e| {
        let TickerEvent::Ticks { packets, .. } = e else {
            return false;
        };
        let modes: Vec<(u32, Mode)> = packets.iter().map(|p| (p.token, p.mode)).collect();
        modes.len() == 2
            && modes.contains(&(408065, Mode::Full))
            && modes.contains(&(738561, Mode::Ltp))
    })
    .await;
    let kite = client(&sim, Some("tok0"));
    kite.place_order(&market_buy("INFY", 1, "wsupd"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    next_matching(&mut rx, "a COMPLETE order update", |e| {
        matches!(e, TickerEvent::Order(o) if o.status == OrderStatus::Complete && o.tag.as_deref() == Some("wsupd"))
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_dropped_socket_reconnects_and_resubscribes_and_an_expired_token_waits_for_a_new_one() {
    let sim = sim(100).await;
    let mut cfg = TickerConfig::new(sim.ticker_url(), KEY);
    cfg.subscriptions = vec![(2953217, Mode::Quote)];
    cfg.backoff_min = Duration::from_millis(50);
    cfg.read_timeout = Duration::from_secs(2);
    let (token_tx, token_rx) = watch::channel(Some("tok0".to_owned()));
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(run(cfg, token_rx, tx));
    next_matching(&mut rx, "connected", |e| {
        matches!(e, TickerEvent::Connected { .. })
    })
    .await;
    next_matching(&mut rx, "a tick", |e| {
        matches!(e, TickerEvent::Ticks { .. })
    })
    .await;
    sim.inject(Fault::DropSockets);
    next_matching(&mut rx, "the drop", |e| {
        matches!(e, TickerEvent::Disconnected { .. })
    })
    .await;
    next_matching(&mut rx, "the reconnect", |e| {
        matches!(e, TickerEvent::Connected { attempt: 2 })
    })
    .await;
    next_matching(&mut rx, "a tick after the reconnect", |e| {
        matches!(e, TickerEvent::Ticks { packets, .. } if packets.iter().all(|p| p.mode == Mode::Quote))
    })
    .await;
    assert_eq!(sim.ticker_stats(), (2, 2));

    sim.inject(Fault::ExpireToken);
    next_matching(&mut rx, "the token rejection", |e| {
        matches!(e, TickerEvent::TokenRejected { .. })
    })
    .await;
    let kite = client(&sim, None);
    let rt = sim.issue_request_token();
    let s = kite
        .generate_session(&rt, SECRET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = token_tx.send(Some(s.access_token));
    next_matching(&mut rx, "the reconnect with the new token", |e| {
        matches!(e, TickerEvent::Connected { .. })
    })
    .await;
    next_matching(&mut rx, "ticks again", |e| {
        matches!(e, TickerEvent::Ticks { .. })
    })
    .await;
    task.abort();
}
