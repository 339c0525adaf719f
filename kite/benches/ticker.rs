//! KiteTicker parsing throughput: one message of 50 full (184-byte) packets, and the same
//! packets converted to `MarketTick`s. Figures in docs/performance.md.

use alpha_panda_core::Timestamp;
use alpha_panda_kite::ticker::packet::{Frame, Mode, encode_frame, parse_frame, parse_packet};
use alpha_panda_kite::ticker::tick::to_market_tick;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn message() -> Vec<u8> {
    let packets: Vec<_> = (0..50u32)
        .filter_map(|i| {
            let mut b: Vec<u8> = [
                (i << 8) | 1,
                141_295 + i,
                5,
                141_247,
                7_360_198,
                10,
                20,
                139_600,
                142_175,
                139_555,
                138_965,
                1_767_600_000,
                0,
                0,
                0,
                1_767_600_001,
            ]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
            b.resize(184, 1);
            parse_packet(&b).map(|mut p| {
                p.mode = Mode::Full;
                p
            })
        })
        .collect();
    encode_frame(&packets)
}

fn bench(c: &mut Criterion) {
    let msg = message();
    let received = Timestamp::from_unix_millis(1_767_600_000_000).unwrap_or_else(Timestamp::now);
    let mut g = c.benchmark_group("kite_ticker");
    g.throughput(Throughput::Elements(50));
    g.bench_function("parse_50_full_packets", |b| {
        b.iter(|| parse_frame(std::hint::black_box(&msg)))
    });
    g.bench_function("parse_and_convert_50_full_packets", |b| {
        b.iter(|| match parse_frame(std::hint::black_box(&msg)) {
            Ok(Frame::Packets { packets, .. }) => packets
                .iter()
                .filter_map(|p| to_market_tick(p, received))
                .count(),
            _ => 0,
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
