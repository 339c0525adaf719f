//! The console book keeps what it shows, newest first, and never grows past its limits.

use alpha_panda_core::{Decimal, EventData, EventEnvelope, Timestamp};
use proptest::prelude::*;

use super::{ConsoleBook, Limits};

fn fixture(name: &str) -> EventEnvelope {
    let text = match name {
        "pnl_snapshot" => include_str!("../../../../docs/events/pnl_snapshot.json"),
        "order_filled" => include_str!("../../../../docs/events/order_filled.json"),
        "order_failed" => include_str!("../../../../docs/events/order_failed.json"),
        "rejected_signal" => include_str!("../../../../docs/events/rejected_signal.json"),
        "market_tick" => include_str!("../../../../docs/events/market_tick.json"),
        other => panic!("no fixture {other}"),
    };
    EventEnvelope::decode(text.as_bytes()).unwrap()
}

/// The snapshot fixture with its total PnL set to `total`, `total` seconds after the
/// fixture's time.
fn snapshot(total: i64) -> EventEnvelope {
    let mut e = fixture("pnl_snapshot");
    if let EventData::PnlSnapshot(s) = &mut e.data {
        s.total_pnl = Decimal::from(total);
        s.timestamp = Timestamp(s.timestamp.0 + chrono::Duration::seconds(total));
    }
    e
}

fn totals(book: &ConsoleBook) -> Vec<i64> {
    book.brokers["paper"].equity["momentum_1"]
        .iter()
        .map(|p| p.total.try_into().unwrap())
        .collect()
}

#[test]
fn snapshots_fills_and_rejections_land_under_their_broker_and_ticks_are_ignored() {
    let mut book = ConsoleBook::new(Limits::default());
    for name in [
        "pnl_snapshot",
        "order_filled",
        "order_failed",
        "rejected_signal",
        "market_tick",
    ] {
        book.apply("paper", &fixture(name));
    }
    let paper = &book.brokers["paper"];
    assert_eq!(paper.equity["momentum_1"].len(), 1);
    assert_eq!(paper.equity["momentum_1"][0].total, Decimal::new(-864, 2));
    assert_eq!(paper.fills.len(), 1);
    let stages: Vec<&str> = paper.rejections.iter().map(|r| r.stage).collect();
    assert_eq!(stages, ["trader", "risk"], "newest event time first");
    assert_eq!(book.brokers.len(), 1);
}

#[test]
fn a_full_equity_curve_halves_keeping_its_first_and_newest_points() {
    let mut book = ConsoleBook::new(Limits {
        equity_points: 4,
        rows: 2,
    });
    for t in 0..5 {
        book.apply("paper", &snapshot(t));
    }
    assert_eq!(totals(&book), [0, 2, 4]);
    for t in 5..7 {
        book.apply("paper", &snapshot(t));
    }
    assert_eq!(totals(&book), [0, 4, 6]);
}

#[test]
fn only_the_newest_fills_are_kept() {
    let mut book = ConsoleBook::new(Limits {
        equity_points: 4,
        rows: 2,
    });
    for i in 0..3 {
        let mut f = fixture("order_filled");
        if let EventData::OrderFilled(o) = &mut f.data {
            o.fees = Decimal::from(i);
        }
        book.apply("paper", &f);
    }
    let fees: Vec<Decimal> = book.brokers["paper"].fills.iter().map(|f| f.fees).collect();
    assert_eq!(fees, [Decimal::from(2), Decimal::from(1)]);
}

#[test]
fn snapshots_that_arrive_out_of_order_are_drawn_in_time_order() {
    let mut book = ConsoleBook::new(Limits::default());
    for t in [3, 1, 4, 0, 2] {
        book.apply("paper", &snapshot(t));
    }
    assert_eq!(totals(&book), [0, 1, 2, 3, 4]);
}

#[test]
fn fills_that_arrive_out_of_order_are_listed_newest_first() {
    let mut book = ConsoleBook::new(Limits::default());
    for secs in [2, 5, 1] {
        let mut f = fixture("order_filled");
        if let EventData::OrderFilled(o) = &mut f.data {
            o.timestamp = Timestamp(o.timestamp.0 + chrono::Duration::seconds(secs));
            o.fees = Decimal::from(secs);
        }
        book.apply("paper", &f);
    }
    let fees: Vec<Decimal> = book.brokers["paper"].fills.iter().map(|f| f.fees).collect();
    assert_eq!(fees, [Decimal::from(5), Decimal::from(2), Decimal::from(1)]);
}

proptest! {
    #[test]
    fn curves_stay_within_their_limit_and_keep_the_first_and_newest_point(
        cap in 2usize..40,
        n in 1usize..400,
    ) {
        let mut book = ConsoleBook::new(Limits { equity_points: cap, rows: 1 });
        for t in 0..n {
            book.apply("paper", &snapshot(t as i64));
        }
        prop_assert!(book.brokers["paper"].fills.is_empty());
        let got = totals(&book);
        prop_assert!(got.len() <= cap);
        prop_assert_eq!(got[0], 0);
        prop_assert_eq!(*got.last().unwrap(), n as i64 - 1);
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "in time order: {:?}", got);
    }
}
