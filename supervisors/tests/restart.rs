//! A restarted process rebuilds its portfolio from the stored snapshot: fills before and
//! after the restart are each applied exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::inprocess::InProcessBus;
use alpha_panda_actors::delivery::{EventProducer, Output};
use alpha_panda_actors::feed::SyntheticFeed;
use alpha_panda_actors::portfolio::Book;
use alpha_panda_actors::stages::{Counters, portfolio_key};
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_config::{Settings, load};
use alpha_panda_core::events::PnlSnapshot;
use alpha_panda_core::{BrokerName, EventBroker, EventData, EventEnvelope, StrategyId, Timestamp};
use alpha_panda_supervisors::pipeline::{Assembly, Transport};
use alpha_panda_topics::{BrokerTopic, TopicName, keys, topics_for};

fn assembly(settings: &Arc<Settings>, bus: &InProcessBus, store: &MemoryStore) -> Assembly {
    Assembly::new(
        settings.clone(),
        Transport::InProcess(bus.clone()),
        EventProducer::InProcess(bus.clone()),
        Store::Memory(store.clone()),
    )
}

async fn feed(a: &Assembly, f: &mut SyntheticFeed, from: i64, n: i64) {
    for i in from..from + n {
        let ts = Timestamp::from_unix_millis(1_705_290_000_000 + i * 200).unwrap();
        for tick in f.next_ticks(ts) {
            let env = EventEnvelope::root(
                EventBroker::Shared,
                "feed",
                keys::tick(tick.instrument_token),
                ts,
                EventData::MarketTick(tick),
            );
            a.producer
                .send_all(&[Output {
                    topic: TopicName::market_ticks(),
                    envelope: env,
                }])
                .await
                .unwrap();
        }
    }
}

async fn settle(a: &Assembly, bus: &InProcessBus) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 3 {
        assert!(Instant::now() < deadline, "the pipeline never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let idle = a.consumed().iter().all(|(g, t)| {
            bus.end_offsets(t)
                .iter()
                .enumerate()
                .all(|(p, end)| *end == 0 || bus.committed(g, t, p as i32) == Some(*end))
        });
        quiet = if idle { quiet + 1 } else { 0 };
    }
}

/// One in-process run of `n` synthetic ticks through every stage, to the end.
async fn trade(settings: &Arc<Settings>, n: i64) -> (InProcessBus, Assembly) {
    let bus = InProcessBus::new();
    bus.create_topics(&topics_for(&settings.active_brokers));
    let store = MemoryStore::default();
    let a = assembly(settings, &bus, &store);
    let members = a.start_stages(&Arc::new(Counters::default())).unwrap();
    feed(&a, &mut SyntheticFeed::new(&settings.synthetic), 0, n).await;
    settle(&a, &bus).await;
    for m in members {
        m.shutdown().await;
    }
    (bus, a)
}

#[test]
fn the_portfolio_survives_a_process_restart_with_every_fill_applied_once() {
    let settings: Settings = load(
        None,
        [(
            "ALPHA_PANDA__SYNTHETIC__VOLATILITY".to_owned(),
            "0.003".to_owned(),
        )],
    )
    .unwrap();
    let settings = Arc::new(settings);
    actix_rt::System::new().block_on(async move {
        let bus = InProcessBus::new();
        bus.create_topics(&topics_for(&settings.active_brokers));
        let store = MemoryStore::default();
        let mut ticks = SyntheticFeed::new(&settings.synthetic);
        let fills = TopicName::broker(&BrokerName::paper(), BrokerTopic::OrdersFilled);

        let first = assembly(&settings, &bus, &store);
        let members = first.start_stages(&Arc::new(Counters::default())).unwrap();
        feed(&first, &mut ticks, 0, 400).await;
        settle(&first, &bus).await;
        for m in members {
            m.shutdown().await;
        }
        let before = bus.records(&fills).len();
        assert!(before >= 3, "some fills before the restart ({before})");

        // A new process: fresh stage state, the same logs and store.
        let second = assembly(&settings, &bus, &store);
        let members = second.start_stages(&Arc::new(Counters::default())).unwrap();
        feed(&second, &mut ticks, 400, 400).await;
        settle(&second, &bus).await;
        for m in members {
            m.shutdown().await;
        }
        let all = bus.records(&fills);
        assert!(all.len() > before, "fills after the restart too");

        // Recompute every strategy's book from all fills on the topic.
        let mut books: HashMap<StrategyId, Book> = HashMap::new();
        for (_, _, r) in &all {
            let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
            let EventData::OrderFilled(f) = env.data else {
                unreachable!()
            };
            books
                .entry(f.strategy_id.clone())
                .or_insert_with(|| {
                    Book::new(
                        settings.brokers[&BrokerName::paper()]
                            .fill_model
                            .starting_cash,
                    )
                })
                .apply_fill(
                    f.instrument_token,
                    f.side,
                    f.quantity.get(),
                    f.fill_price.get(),
                    f.fees,
                );
        }
        // The latest tick price per instrument, for the marks.
        let mut last_tick = HashMap::new();
        for (_, _, r) in bus.records(&TopicName::market_ticks()) {
            let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
            if let EventData::MarketTick(t) = env.data {
                let e = last_tick
                    .entry(t.instrument_token)
                    .or_insert((t.timestamp, t.last_price));
                if t.timestamp >= e.0 {
                    *e = (t.timestamp, t.last_price);
                }
            }
        }
        let mut open_positions = 0;
        for (strategy, book) in books {
            let stored = Store::Memory(store.clone())
                .get(&portfolio_key(&BrokerName::paper(), &strategy))
                .await
                .unwrap()
                .unwrap();
            let snap: PnlSnapshot = serde_json::from_str(&stored).unwrap();
            assert_eq!(snap.cash, book.cash, "{strategy}: cash");
            assert_eq!(snap.fees, book.fees, "{strategy}: fees");
            assert_eq!(
                snap.realized_pnl,
                book.realized_pnl(),
                "{strategy}: realized"
            );
            // Open positions are marked to the latest tick, and unrealized PnL follows.
            for p in snap.positions.iter().filter(|p| p.quantity != 0) {
                open_positions += 1;
                let (_, price) = last_tick[&p.instrument_token];
                assert_eq!(
                    p.last_price,
                    price.get(),
                    "{strategy}: marked to the last tick"
                );
                assert_eq!(
                    p.unrealized_pnl,
                    (p.last_price - p.average_price) * rust_decimal::Decimal::from(p.quantity)
                );
            }
            // Marks follow ticks, so compare what fills alone decide.
            let held = |ps: &[alpha_panda_core::events::PositionSnapshot]| {
                ps.iter()
                    .map(|p| {
                        (
                            p.instrument_token,
                            p.quantity,
                            p.average_price,
                            p.realized_pnl,
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                held(&snap.positions),
                held(&book.snapshot_positions()),
                "{strategy}: positions"
            );
        }
        assert!(
            open_positions > 0,
            "some position stayed open to check its marks"
        );
    });
}

/// Fill ids and each strategy's stored (cash, realized, fees) after a run.
async fn outcome(
    bus: &InProcessBus,
    store: &MemoryStore,
    settings: &Settings,
) -> (Vec<uuid::Uuid>, Vec<String>) {
    let fills = TopicName::broker(&BrokerName::paper(), BrokerTopic::OrdersFilled);
    let mut ids: Vec<uuid::Uuid> = bus
        .records(&fills)
        .iter()
        .map(|(_, _, r)| {
            EventEnvelope::decode(r.value.as_deref().unwrap())
                .unwrap()
                .id
        })
        .collect();
    ids.sort();
    ids.dedup();
    let mut books = Vec::new();
    for st in &settings.strategies {
        if let Some(json) = Store::Memory(store.clone())
            .get(&portfolio_key(&BrokerName::paper(), &st.id))
            .await
            .unwrap()
        {
            let s: PnlSnapshot = serde_json::from_str(&json).unwrap();
            books.push(format!(
                "{} cash {} realized {} fees {}",
                st.id, s.cash, s.realized_pnl, s.fees
            ));
        }
    }
    (ids, books)
}

#[test]
fn a_restart_in_the_middle_gives_the_same_fills_and_pnl_as_an_uninterrupted_run() {
    // Limits that span partitions are lifted: with them binding, which of two simultaneous
    // signals on different partitions is refused depends on arrival order
    // (docs/architecture.md).
    let settings: Settings = load(None, alpha_panda_tests::ticks::generous_limits()).unwrap();
    let settings = Arc::new(settings);
    let ticks = alpha_panda_tests::ticks::numbered(&settings, 600);
    actix_rt::System::new().block_on(async move {
        let run = |interrupt: bool| {
            let settings = settings.clone();
            let ticks = ticks.clone();
            async move {
                let bus = InProcessBus::new();
                bus.create_topics(&topics_for(&settings.active_brokers));
                let store = MemoryStore::default();
                let a = assembly(&settings, &bus, &store);
                for env in &ticks {
                    a.producer
                        .send_all(&[Output {
                            topic: TopicName::market_ticks(),
                            envelope: env.clone(),
                        }])
                        .await
                        .unwrap();
                }
                let members = a.start_stages(&Arc::new(Counters::default())).unwrap();
                if interrupt {
                    let fills = TopicName::broker(&BrokerName::paper(), BrokerTopic::OrdersFilled);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while bus.records(&fills).len() < 4 {
                        assert!(
                            Instant::now() < deadline,
                            "no fills before the interruption"
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    for m in members {
                        m.shutdown().await;
                    }
                    // A new process: fresh stages over the same logs and store.
                    let b = assembly(&settings, &bus, &store);
                    let members = b.start_stages(&Arc::new(Counters::default())).unwrap();
                    settle(&b, &bus).await;
                    for m in members {
                        m.shutdown().await;
                    }
                } else {
                    settle(&a, &bus).await;
                    for m in members {
                        m.shutdown().await;
                    }
                }
                outcome(&bus, &store, &settings).await
            }
        };
        let whole = run(false).await;
        let interrupted = run(true).await;
        assert!(
            whole.0.len() >= 6,
            "enough fills to compare ({})",
            whole.0.len()
        );
        assert_eq!(interrupted.0, whole.0, "the same fill ids");
        assert_eq!(
            interrupted.1, whole.1,
            "the same cash, PnL and fees per strategy"
        );
    });
}

#[test]
fn a_strategy_cannot_buy_more_than_its_cash_pays_for() {
    let mut env = alpha_panda_tests::ticks::generous_limits();
    env.push((
        "ALPHA_PANDA__BROKERS__PAPER__FILL_MODEL__STARTING_CASH".to_owned(),
        "\"20000\"".to_owned(),
    ));
    let settings = Arc::new(load(None, env).unwrap());
    actix_rt::System::new().block_on(async move {
        let (bus, _) = trade(&settings, 600).await;
        let paper = BrokerName::paper();
        let failed = bus.records(&TopicName::broker(&paper, BrokerTopic::OrdersFailed));
        let refused = failed
            .iter()
            .filter(|(_, _, r)| {
                String::from_utf8_lossy(r.value.as_deref().unwrap()).contains("insufficient cash")
            })
            .count();
        assert!(refused > 0, "some BUYs exceed 20 000 of cash");
        let fills = bus.records(&TopicName::broker(&paper, BrokerTopic::OrdersFilled));
        assert!(
            !fills.is_empty(),
            "the strategies still trade within their cash"
        );
        // Replaying the fills in order, no strategy's cash ever goes below zero.
        let mut cash: HashMap<StrategyId, rust_decimal::Decimal> = HashMap::new();
        let mut ordered: Vec<_> = fills
            .iter()
            .map(|(_, _, r)| EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap())
            .collect();
        ordered.sort_by_key(|e| e.ts);
        for env in ordered {
            let EventData::OrderFilled(f) = env.data else {
                unreachable!()
            };
            let c = cash
                .entry(f.strategy_id.clone())
                .or_insert(rust_decimal::Decimal::from(20_000));
            let notional = f.fill_price.get() * rust_decimal::Decimal::from(f.quantity.get());
            *c += match f.side {
                alpha_panda_core::Side::Buy => -(notional + f.fees),
                alpha_panda_core::Side::Sell => notional - f.fees,
            };
            assert!(
                *c >= rust_decimal::Decimal::ZERO,
                "{} overdrawn: {c}",
                f.strategy_id
            );
        }
    });
}

#[test]
fn the_daemon_publishes_every_strategys_book_between_fills() {
    let settings: Settings = load(None, alpha_panda_tests::ticks::generous_limits()).unwrap();
    let settings = Arc::new(settings);
    actix_rt::System::new().block_on(async move {
        let (bus, a) = trade(&settings, 300).await;
        let paper = BrokerName::paper();
        let topic = TopicName::broker(&paper, BrokerTopic::PnlSnapshots);
        let on_fills = bus.records(&topic).len();
        let books: Vec<(StrategyId, String)> = {
            let mut v = Vec::new();
            for st in &settings.strategies {
                if let Some(json) = a.store.get(&portfolio_key(&paper, &st.id)).await.unwrap() {
                    v.push((st.id.clone(), json));
                }
            }
            v
        };
        assert!(!books.is_empty(), "some strategy traded");
        let sent =
            alpha_panda_supervisors::daemon::publish_snapshots(&settings, &a.store, &a.producer)
                .await
                .unwrap();
        assert_eq!(sent, books.len());
        let all = bus.records(&topic);
        assert_eq!(
            all.len(),
            on_fills + books.len(),
            "one more snapshot per strategy with a book"
        );
        for (_, _, r) in &all[on_fills..] {
            let env = EventEnvelope::decode(r.value.as_deref().unwrap()).unwrap();
            assert_eq!(env.source, "portfolio");
            let EventData::PnlSnapshot(s) = env.data else {
                panic!("not a pnl_snapshot")
            };
            let (_, stored) = books.iter().find(|(id, _)| *id == s.strategy_id).unwrap();
            let mut stored: PnlSnapshot = serde_json::from_str(stored).unwrap();
            stored.timestamp = s.timestamp;
            assert_eq!(s, stored, "the stored book, stamped now");
        }
    });
}
