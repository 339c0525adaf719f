//! CSV row parsing of the backtest's tick reader (docs/performance.md, "Backtest"): a 65 536-row
//! file in the reference file's shape, read through `TickReader`; the figure is per file,
//! divide by 65 536 for a row. `cargo bench -p alpha-panda-supervisors --bench csv_rows`.

use std::hint::black_box;
use std::io::Write;

use alpha_panda_supervisors::backtest::input::{BadRows, TickReader};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: u64 = 65_536;

fn csv_rows(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("ap-bench-csv-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("ticks.csv");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}")));
    let _ = writeln!(f, "instrument_token,timestamp,last_price");
    for i in 0..ROWS {
        let ms = 1_767_585_000_000u64 + 250 * i;
        let secs = (ms / 1000) % 86_400;
        let _ = writeln!(
            f,
            "{},2026-01-05T{:02}:{:02}:{:02}.{:03}Z,{}.{:02}",
            [738561, 2953217][(i % 2) as usize],
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            ms % 1000,
            2500 + i % 97,
            i % 100
        );
    }
    drop(f);
    let mut g = c.benchmark_group("csv_row_parse");
    g.throughput(Throughput::Elements(ROWS));
    g.bench_function("tick_reader_65536_rows", |b| {
        b.iter(|| {
            let mut r = TickReader::open(&path, BadRows::Stop).unwrap_or_else(|e| panic!("{e}"));
            let mut n = 0u64;
            while let Some(row) = r.next() {
                black_box(row.unwrap_or_else(|e| panic!("{e}")));
                n += 1;
            }
            assert_eq!(n, ROWS);
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, csv_rows);
criterion_main!(benches);
