//! The per-tick path of each stage, one criterion bench each (docs/performance.md,
//! "Backtest"): every strategy kind on a tick, risk evaluation of a signal, the paper
//! trader's tick (nothing resting) and placement of a MARKET order, a portfolio mark and fill.
//! `cargo bench -p alpha-panda-engine`.

use std::collections::BTreeMap;
use std::hint::black_box;

use alpha_panda_config::{
    EmaCrossoverParams, FillModel, MeanReversionParams, MomentumParams, RiskSettings, RsiParams,
    SmaCrossoverParams,
};
use alpha_panda_core::events::{MarketTick, OrderFilled, TradingSignal, ValidatedSignal};
use alpha_panda_core::{
    AccountId, BrokerName, Decimal, EventBroker, EventData, EventEnvelope, ExecutionMode,
    InstrumentToken, OrderId, OrderType, Price, Product, Quantity, Side, StrategyId, Timestamp,
    TradingState, Validity,
};
use alpha_panda_engine::paper::trader::PaperTrader;
use alpha_panda_engine::portfolio::Book;
use alpha_panda_engine::risk::{Limits, RiskBook};
use alpha_panda_engine::strategy::{
    EmaCrossover, MeanReversion, Momentum, Rsi, SmaCrossover, Strategy,
};
use criterion::{Criterion, criterion_group, criterion_main};

const T: InstrumentToken = InstrumentToken(738561);

/// A walk of `n` ticks, 250 ms apart, from 2026-01-05 09:20 IST.
fn ticks(n: usize) -> Vec<MarketTick> {
    let mut paise = 250_000i64;
    let mut seed = 42u64;
    (0..n)
        .map(|i| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            paise = (paise + (seed >> 33) as i64 % 11 - 5).max(100);
            MarketTick::new(
                T,
                Price::new(Decimal::new(paise, 2)).expect("a valid constant"),
                Timestamp::from_unix_millis(1_767_585_000_000 + 250 * i as i64)
                    .expect("a valid constant"),
            )
        })
        .collect()
}

fn strategies(c: &mut Criterion) {
    let ts = ticks(4096);
    let kinds: Vec<(&str, Box<dyn Strategy>)> = vec![
        (
            "momentum",
            Box::new(Momentum::new(MomentumParams::default())),
        ),
        (
            "mean_reversion",
            Box::new(MeanReversion::new(MeanReversionParams::default())),
        ),
        ("rsi", Box::new(Rsi::new(RsiParams::default()))),
        (
            "sma_crossover",
            Box::new(SmaCrossover::new(SmaCrossoverParams::default())),
        ),
        (
            "ema_crossover",
            Box::new(EmaCrossover::new(EmaCrossoverParams::default())),
        ),
    ];
    for (name, mut s) in kinds {
        let mut i = 0;
        c.bench_function(&format!("strategy_on_tick/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % ts.len();
                black_box(s.on_tick(&ts[i]))
            })
        });
    }
}

fn signal(side: Side, at: Timestamp, price: Price) -> TradingSignal {
    TradingSignal {
        strategy_id: StrategyId::new("ema").expect("a valid constant"),
        instrument_token: T,
        signal_type: side,
        quantity: Quantity::new(10).expect("a valid constant"),
        price,
        timestamp: at,
        confidence: None,
        metadata: BTreeMap::new(),
        order_type: OrderType::Market,
        product: Product::Mis,
        validity: Validity::Day,
        trigger_price: None,
    }
}

fn risk(c: &mut Criterion) {
    let ts = ticks(2);
    let s = signal(Side::Buy, ts[1].timestamp, ts[1].last_price);
    let limits = Limits::for_strategy(&RiskSettings::default(), &s.strategy_id);
    let mut book = RiskBook::default();
    book.on_price(T, ts[0].last_price.get());
    c.bench_function("risk_evaluate", |b| {
        b.iter(|| black_box(book.evaluate_in(&s, &limits, TradingState::Active)))
    });
    // A day's worth of MARKET signals (200, the default max_orders_per_day), each filled:
    // the daily-loss rule reads the strategy's fills and marks.
    let day = ticks(201);
    let mut book = RiskBook::default();
    for (i, t) in day.iter().take(200).enumerate() {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let s = signal(side, t.timestamp, t.last_price);
        let env = EventEnvelope::root(
            EventBroker::Broker(BrokerName::paper()),
            "strategy",
            "k",
            t.timestamp,
            EventData::TradingSignal(s.clone()),
        );
        let out = book.on_signal(
            &env,
            &s,
            &BrokerName::paper(),
            &limits,
            TradingState::Active,
        );
        let fill = OrderFilled {
            order_id: OrderId::new(format!("o{i}")).expect("a valid id"),
            instrument_token: T,
            side,
            quantity: s.quantity,
            fill_price: s.price,
            fees: Decimal::new(1234, 2),
            strategy_id: s.strategy_id.clone(),
            account: AccountId::new("acc").expect("a valid constant"),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: t.timestamp,
            trade_id: None,
        };
        book.on_filled(out.envelope.id, uuid::Uuid::from_u128(i as u128), &fill);
    }
    let last = &day[200];
    let s = signal(Side::Buy, last.timestamp, last.last_price);
    c.bench_function("risk_evaluate_after_200_fills", |b| {
        b.iter(|| black_box(book.evaluate_in(&s, &limits, TradingState::Active)))
    });
}

fn trader() -> PaperTrader {
    let model = FillModel {
        slippage_bps: Decimal::ZERO,
        starting_cash: Decimal::new(1_000_000_000, 0),
        ..FillModel::default()
    };
    PaperTrader::new(
        BrokerName::paper(),
        AccountId::new("acc").expect("a valid constant"),
        model,
        [T],
    )
}

fn paper(c: &mut Criterion) {
    let ts = ticks(1 << 16);
    let mut t = trader();
    let mut i = 0;
    c.bench_function("paper_on_tick", |b| {
        b.iter(|| {
            // Event time must not go back: wrap onto a fresh trader.
            if i == ts.len() {
                i = 0;
                t = trader();
            }
            i += 1;
            black_box(t.on_market_tick(&ts[i - 1], true))
        })
    });
    let mut t = trader();
    let mut k = 0u64;
    let last = ts[ts.len() - 1].clone();
    t.on_market_tick(&last, true);
    c.bench_function("paper_place_market", |b| {
        b.iter(|| {
            k += 1;
            let side = if k % 2 == 0 { Side::Sell } else { Side::Buy };
            let s = signal(side, last.timestamp, last.last_price);
            let env = EventEnvelope::root(
                EventBroker::Broker(BrokerName::paper()),
                "risk",
                "k",
                last.timestamp,
                EventData::ValidatedSignal(ValidatedSignal {
                    validated_quantity: s.quantity,
                    validated_price: s.price,
                    risk_checks: BTreeMap::new(),
                    timestamp: s.timestamp,
                    original_signal: s,
                }),
            );
            black_box(t.on_validated(&env, true, false))
        })
    });
}

fn portfolio(c: &mut Criterion) {
    let ts = ticks(4096);
    let mut book = Book::new(Decimal::new(1_000_000, 0));
    book.apply_fill(T, Side::Buy, 10, ts[0].last_price.get(), Decimal::ZERO);
    let mut i = 0;
    c.bench_function("portfolio_mark", |b| {
        b.iter(|| {
            i = (i + 1) % ts.len();
            book.mark(T, ts[i].last_price.get());
            black_box(book.total_pnl())
        })
    });
    c.bench_function("portfolio_apply_fill", |b| {
        b.iter(|| {
            i = (i + 1) % ts.len();
            let side = if i % 2 == 0 { Side::Sell } else { Side::Buy };
            book.apply_fill(T, side, 10, ts[i].last_price.get(), Decimal::ZERO);
        })
    });
}

criterion_group!(benches, strategies, risk, paper, portfolio);
criterion_main!(benches);
