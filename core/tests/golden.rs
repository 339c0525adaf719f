//! Golden fixtures: one envelope per event type in `docs/events/<type>.json`.
//!
//! Each fixture must decode, re-encode to the same bytes, equal the envelope built here, and
//! have exactly the fields `docs/events.md` documents for its type. The fixtures are the wire
//! contract: if this test fails after a change, the change broke compatibility.
//!
//! To regenerate after an intended, versioned change: `UPDATE_GOLDEN=1 cargo test -p
//! alpha-panda-core --test golden`, then review the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use alpha_panda_core::events::*;
use alpha_panda_core::*;
use uuid::Uuid;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn price(s: &str) -> Price {
    s.parse().unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn paper() -> EventBroker {
    EventBroker::Broker(BrokerName::paper())
}

/// The fixtures, as a causal chain: tick → signal → validated → placed → ack → filled →
/// snapshot; and a rejected signal, a failed order (live broker) and a DLQ record beside it.
fn fixtures() -> Vec<EventEnvelope> {
    let strategy = StrategyId::new("momentum_1").unwrap();
    let account = AccountId::new("paper_main").unwrap();
    let reliance = InstrumentToken(738561);
    let order_id = OrderId::new("ord-20240115-000001").unwrap();

    let mut tick = EventEnvelope::root(
        EventBroker::Shared,
        "feed",
        "738561",
        ts("2024-01-15T04:00:00.250Z"),
        EventData::MarketTick(MarketTick {
            instrument_token: reliance,
            last_price: price("2450.05"),
            timestamp: ts("2024-01-15T04:00:00.250Z"),
            symbol: Some("RELIANCE".into()),
            volume_traded: Some(1_250_000),
            last_traded_quantity: Some(25),
            average_traded_price: Some(price("2447.80")),
            total_buy_quantity: Some(310_450),
            total_sell_quantity: Some(295_120),
            change: Some(dec("-0.35")),
            ohlc: Some(Ohlc {
                open: price("2455.00"),
                high: price("2461.40"),
                low: price("2441.10"),
                close: price("2458.65"),
            }),
            oi: Some(0),
            oi_day_high: Some(0),
            oi_day_low: Some(0),
            last_trade_time: Some(ts("2024-01-15T04:00:00Z")),
            exchange_timestamp: Some(ts("2024-01-15T04:00:00.200Z")),
            depth: Some(Depth {
                buy: vec![
                    DepthLevel {
                        price: price("2450.00"),
                        quantity: 120,
                        orders: 4,
                    },
                    DepthLevel {
                        price: price("2449.95"),
                        quantity: 310,
                        orders: 7,
                    },
                ],
                sell: vec![
                    DepthLevel {
                        price: price("2450.10"),
                        quantity: 95,
                        orders: 3,
                    },
                    DepthLevel {
                        price: price("2450.15"),
                        quantity: 240,
                        orders: 5,
                    },
                ],
            }),
            mode: Some(TickMode::Full),
            tradable: Some(true),
        }),
    );
    // Fixed ids so the fixtures are stable; children are derived as the runtime derives them.
    tick.id = Uuid::parse_str("018d0b0a-6f3a-7c21-8e4b-1f2a3b4c5d6e").unwrap();
    tick.correlation_id = tick.id;
    tick.trace_id = tick.id;

    let signal = TradingSignal {
        strategy_id: strategy.clone(),
        instrument_token: reliance,
        signal_type: Side::Buy,
        quantity: Quantity::new(10).unwrap(),
        price: price("2450.05"),
        timestamp: ts("2024-01-15T04:00:00.250Z"),
        confidence: Some(dec("0.72")),
        metadata: BTreeMap::from([
            ("lookback".to_owned(), serde_json::json!(20)),
            ("momentum".to_owned(), serde_json::json!("0.0041")),
        ]),
        order_type: OrderType::Limit,
        product: Product::Mis,
        validity: Validity::Day,
        trigger_price: Some(price("2449.00")),
    };
    let signal_key = "momentum_1|738561";
    let signal_env = tick.child(
        paper(),
        "strategy:momentum_1",
        0,
        signal_key,
        ts("2024-01-15T04:00:00.251Z"),
        EventData::TradingSignal(signal.clone()),
    );
    let checks = BTreeMap::from([
        ("market_hours".to_owned(), true),
        ("max_order_notional".to_owned(), true),
        ("max_position_per_instrument".to_owned(), true),
        ("price_band".to_owned(), true),
    ]);
    let validated = signal_env.child(
        paper(),
        "risk",
        0,
        signal_key,
        ts("2024-01-15T04:00:00.252Z"),
        EventData::ValidatedSignal(ValidatedSignal {
            original_signal: signal.clone(),
            validated_quantity: Quantity::new(10).unwrap(),
            validated_price: price("2450.05"),
            risk_checks: checks.clone(),
            timestamp: ts("2024-01-15T04:00:00.252Z"),
        }),
    );
    let mut rejected_checks = checks;
    rejected_checks.insert("max_order_notional".to_owned(), false);
    let rejected = signal_env.child(
        paper(),
        "risk",
        0,
        signal_key,
        ts("2024-01-15T04:00:00.252Z"),
        EventData::RejectedSignal(RejectedSignal {
            original_signal: signal,
            rejection_reason: "max_order_notional: 24500.50 exceeds 20000".into(),
            risk_checks: rejected_checks,
            timestamp: ts("2024-01-15T04:00:00.252Z"),
        }),
    );
    let order_key = "paper_main|momentum_1";
    let placed = validated.child(
        paper(),
        "trader",
        0,
        order_key,
        ts("2024-01-15T04:00:00.253Z"),
        EventData::OrderPlaced(OrderPlaced {
            order_id: order_id.clone(),
            instrument_token: reliance,
            side: Side::Buy,
            quantity: Quantity::new(10).unwrap(),
            price: price("2450.05"),
            order_type: OrderType::Limit,
            product: Product::Mis,
            validity: Validity::Day,
            trigger_price: Some(price("2449.00")),
            strategy_id: strategy.clone(),
            account: account.clone(),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: ts("2024-01-15T04:00:00.253Z"),
        }),
    );
    let ack = placed.child(
        paper(),
        "trader",
        0,
        order_key,
        ts("2024-01-15T04:00:00.254Z"),
        EventData::OrderAck(OrderAck {
            order_id: order_id.clone(),
            broker_order_id: "paper-000001".into(),
            instrument_token: reliance,
            side: Side::Buy,
            quantity: Quantity::new(10).unwrap(),
            strategy_id: strategy.clone(),
            account: account.clone(),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: ts("2024-01-15T04:00:00.254Z"),
        }),
    );
    let filled = placed.child(
        paper(),
        "trader",
        1,
        order_key,
        ts("2024-01-15T04:00:00.255Z"),
        EventData::OrderFilled(OrderFilled {
            order_id: order_id.clone(),
            instrument_token: reliance,
            side: Side::Buy,
            quantity: Quantity::new(10).unwrap(),
            fill_price: price("2450.05"),
            fees: dec("8.64"),
            strategy_id: strategy.clone(),
            account: account.clone(),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: ts("2024-01-15T04:00:00.255Z"),
            trade_id: Some("paper-trade-000001".into()),
        }),
    );
    let snapshot = filled.child(
        paper(),
        "portfolio",
        0,
        "paper_main",
        ts("2024-01-15T04:00:00.256Z"),
        EventData::PnlSnapshot(PnlSnapshot {
            broker: BrokerName::paper(),
            account: account.clone(),
            strategy_id: strategy.clone(),
            positions: vec![PositionSnapshot {
                instrument_token: reliance,
                quantity: 10,
                average_price: dec("2450.05"),
                last_price: dec("2450.05"),
                realized_pnl: dec("0"),
                unrealized_pnl: dec("0"),
            }],
            realized_pnl: dec("-8.64"),
            unrealized_pnl: dec("0"),
            total_pnl: dec("-8.64"),
            fees: dec("8.64"),
            cash: dec("975490.86"),
            timestamp: ts("2024-01-15T04:00:00.256Z"),
        }),
    );
    let live = EventBroker::Broker(BrokerName::zerodha());
    let failed = validated.child(
        live,
        "trader",
        0,
        "ZX1234|momentum_1",
        ts("2024-01-15T04:00:00.380Z"),
        EventData::OrderFailed(OrderFailed {
            order_id: OrderId::new("ord-20240115-000002").unwrap(),
            instrument_token: reliance,
            side: Side::Buy,
            quantity: Quantity::new(10).unwrap(),
            price: price("2450.05"),
            strategy_id: strategy,
            account: AccountId::new("ZX1234").unwrap(),
            execution_mode: ExecutionMode::Live,
            broker: BrokerName::zerodha(),
            timestamp: ts("2024-01-15T04:00:00.380Z"),
            error_message: "InputException: Insufficient funds. Required margin is 24500.50".into(),
        }),
    );
    let dlq = signal_env.child(
        paper(),
        "dlq:risk",
        0,
        signal_key,
        ts("2024-01-15T04:00:01.900Z"),
        EventData::SystemError(SystemError {
            original_topic: "paper.signals.raw".into(),
            original_partition: 3,
            original_offset: 4711,
            original_key: Some(signal_key.into()),
            original_value: Some(String::from_utf8(signal_env.encode()).unwrap()),
            value_encoding: ValueEncoding::Utf8,
            original_headers: vec![
                RecordHeader {
                    key: "event_id".into(),
                    value: Some(signal_env.id.to_string()),
                },
                RecordHeader {
                    key: "event_type".into(),
                    value: Some("trading_signal".into()),
                },
            ],
            error_class: FailureClass::Transient,
            error_message: "Redis at redis://127.0.0.1:6379 timed out".into(),
            retry_count: 4,
            consumer_group: "alpha-panda.paper.risk".into(),
            stage: "risk".into(),
            failed_at: ts("2024-01-15T04:00:01.900Z"),
        }),
    );
    vec![
        tick, signal_env, validated, rejected, placed, ack, filled, failed, snapshot, dlq,
    ]
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn canonical(env: &EventEnvelope) -> String {
    let mut s = serde_json::to_string_pretty(env).unwrap();
    s.push('\n');
    s
}

#[test]
fn every_event_type_has_a_fixture_that_decodes_and_reencodes_byte_for_byte() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let built = fixtures();
    let types: BTreeSet<EventType> = built.iter().map(EventEnvelope::event_type).collect();
    assert_eq!(
        types.len(),
        EventType::ALL.len(),
        "one fixture per event type"
    );
    for env in built {
        let path = docs().join(format!("events/{}.json", env.event_type()));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, canonical(&env)).unwrap();
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let decoded = EventEnvelope::decode(text.as_bytes())
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
        assert_eq!(decoded.event_type(), env.event_type(), "{}", path.display());
        assert_eq!(
            decoded,
            env,
            "{} differs from the built envelope",
            path.display()
        );
        assert_eq!(
            canonical(&decoded),
            text,
            "{} does not re-encode byte for byte",
            path.display()
        );
        let compact = decoded.encode();
        assert_eq!(
            EventEnvelope::decode(&compact).unwrap(),
            decoded,
            "{}",
            path.display()
        );
    }
}

/// Field paths of a JSON value: objects flatten with dots, arrays as `name[]`; `metadata` and
/// `risk_checks` are free maps and count as one field.
fn paths(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if k == "metadata" || k == "risk_checks" {
                    out.insert(p);
                } else {
                    paths(&p, v, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            let p = format!("{prefix}[]");
            match items.first() {
                Some(first @ serde_json::Value::Object(_)) => paths(&p, first, out),
                _ => {
                    out.insert(p);
                }
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The backticked first cells of the table rows in the section `### `<type>``.
fn documented(md: &str, heading: &str) -> BTreeSet<String> {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("docs/events.md has no section {heading}"));
    let rest = &md[start + heading.len()..];
    let end = rest.find("\n### ").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn docs_events_md_documents_exactly_the_fields_of_each_fixture() {
    let md = std::fs::read_to_string(docs().join("events.md")).unwrap();
    let envelope_fields = documented(&md, "## Envelope");
    let mut envelope_expected = BTreeSet::new();
    for env in fixtures() {
        let value: serde_json::Value = serde_json::to_value(&env).unwrap();
        let serde_json::Value::Object(top) = &value else {
            unreachable!()
        };
        envelope_expected.extend(top.keys().cloned());
        let mut have = BTreeSet::new();
        paths("", &top["data"], &mut have);
        let heading = format!("### `{}`", env.event_type());
        let doc = documented(&md, &heading);
        let missing: Vec<_> = have.difference(&doc).collect();
        let stale: Vec<_> = doc.difference(&have).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "{heading}: undocumented fields {missing:?}; documented but absent {stale:?}"
        );
    }
    assert_eq!(envelope_fields, envelope_expected, "## Envelope table");
}
