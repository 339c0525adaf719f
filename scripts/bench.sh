#!/usr/bin/env bash
# The project's bench command: starts the test services (as scripts/test.sh does: Apache
# Kafka, redis-server) and prints throughput figures. Record them in docs/performance.md with the date and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh || { echo "bench services could not be started" >&2; exit 1; }
cargo build --release -p alpha-panda-tests --bin bench-broker --bin bench-bridge
# The bare broker with the runtime's client settings: produce/s, consume/s, one-hop p50/p99
# of a tick-sized record at a steady rate (one JSON line each).
target/release/bench-broker "${BENCH_BROKER_RECORDS:-200000}" "${BENCH_HOP_RATE:-1000}" "${BENCH_HOP_SECONDS:-10}"
for transport in kafka memory; do
  target/release/bench-bridge "$transport" "${BENCH_RECORDS:-20000}"
done
# The backtest on a 1 000 000-tick file (docs/performance.md, "Backtest").
ticks="${BENCH_TICKS_FILE:-target/bench-ticks-1m.csv}"
[ -f "$ticks" ] || python3 scripts/make_ticks.py "${BENCH_TICKS:-1000000}" "$ticks"
cargo build --release -p alpha-panda-supervisors
out="$(mktemp -d)"
/usr/bin/time -f "backtest wall %e s, peak RSS %M KB" target/release/alpha-panda backtest --ticks "$ticks" --out "$out" | tail -n 20
