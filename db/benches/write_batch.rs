//! The recorder's write path against the real PostgreSQL of `scripts/services.sh`
//! (ALPHA_PANDA_TEST_DATABASE): one transaction of 500 fill events (500 `orders` rows,
//! 500 `fills` rows) and their offsets, as the recorder writes a full batch. Figures in
//! docs/performance.md ("Recorder"). The schemas and role are dropped at the end.

use std::collections::BTreeMap;

use alpha_panda_config::Charges;
use alpha_panda_core::events::OrderFilled;
use alpha_panda_core::{
    AccountId, BrokerName, Decimal, EventBroker, EventData, EventEnvelope, ExecutionMode,
    InstrumentToken, OrderId, Price, Quantity, Side, StrategyId, Timestamp,
};
use alpha_panda_db::recorder::write::write_batch;
use alpha_panda_db::rows::Rows;
use alpha_panda_db::{Layout, Target, migrate};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use diesel::{Connection, PgConnection, RunQueryDsl};

const BATCH: usize = 500;

fn rows(n0: usize, broker: &BrokerName) -> Rows {
    let mut rows = Rows::default();
    for n in n0..n0 + BATCH {
        let ts = Timestamp::from_unix_millis(1_705_291_200_000 + n as i64)
            .unwrap_or_else(Timestamp::now);
        let fill = OrderFilled {
            order_id: OrderId::new(format!("o{n}")).unwrap_or_else(|e| panic!("{e}")),
            instrument_token: InstrumentToken(738561),
            side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
            quantity: Quantity::new(10).unwrap_or_else(|e| panic!("{e}")),
            fill_price: Price::new(Decimal::new(245005, 2)).unwrap_or_else(|e| panic!("{e}")),
            fees: Decimal::new(1030, 2),
            strategy_id: StrategyId::new("mom").unwrap_or_else(|e| panic!("{e}")),
            account: AccountId::new("paper_main").unwrap_or_else(|e| panic!("{e}")),
            execution_mode: ExecutionMode::Paper,
            broker: broker.clone(),
            timestamp: ts,
            trade_id: None,
        };
        let env = EventEnvelope::root(
            EventBroker::Broker(broker.clone()),
            "bench",
            "738561".to_owned(),
            ts,
            EventData::OrderFilled(fill),
        );
        rows.add(&env, &Charges::default());
    }
    rows
}

fn bench(c: &mut Criterion) {
    let url = std::env::var("ALPHA_PANDA_TEST_DATABASE")
        .unwrap_or_else(|_| panic!("ALPHA_PANDA_TEST_DATABASE is not set: run scripts/bench.sh"));
    let layout = Layout::new(format!("bench{}_", std::process::id()));
    let broker = BrokerName::paper();
    let target = Target::parse(&url).unwrap_or_else(|e| panic!("{e}"));
    migrate::migrate(&target, &layout, std::slice::from_ref(&broker))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut conn = alpha_panda_db::target::connect_as_writer(&url, &layout, &broker)
        .unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("recorder");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let mut next = 0usize;
    group.bench_function("write_batch_500_fills", |b| {
        b.iter_batched(
            || {
                next += BATCH;
                let offsets: BTreeMap<(String, i32), i64> =
                    [(("paper.orders.filled".to_owned(), 0), next as i64)].into();
                (rows(next, &broker), offsets)
            },
            |(rows, offsets)| {
                write_batch(&mut conn, &rows, &offsets).unwrap_or_else(|e| panic!("{e}"))
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("rows_of_500_fill_events", |b| b.iter(|| rows(0, &broker)));
    group.finish();
    drop(conn);

    if let Ok(mut admin) = PgConnection::establish(&url) {
        for s in [layout.shared_schema(), layout.broker_schema(&broker)] {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                .execute(&mut admin);
        }
        let role = layout.writer_role(&broker);
        let _ = diesel::sql_query(format!("DROP OWNED BY \"{role}\"")).execute(&mut admin);
        let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{role}\"")).execute(&mut admin);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
