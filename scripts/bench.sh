#!/usr/bin/env bash
# The project's bench command: starts the test services (as scripts/test.sh does: Apache
# Kafka, redis-server) and prints throughput figures. Record them in docs/performance.md with the date and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
# `bash scripts/bench.sh chaos` runs only the seeded chaos run over many seeds
# (docs/testing.md, "The chaos run"): ALPHA_PANDA_CHAOS_SEEDS, default 1..50.
if [ "${1:-}" = chaos ]; then
  . scripts/services.sh || { echo "chaos services could not be started" >&2; exit 1; }
  cargo test -p alpha-panda-supervisors --test chaos --no-run
  start="$(date +%s)"
  status=0
  # Every seed's schedule, events and verdict go to target/chaos.log; its summary lines here.
  ALPHA_PANDA_CHAOS_SEEDS="${ALPHA_PANDA_CHAOS_SEEDS:-1..50}" \
    cargo test -p alpha-panda-supervisors --test chaos -- --nocapture >target/chaos.log 2>&1 || status=1
  grep -E '^chaos' target/chaos.log || true
  echo "{\"bench\":\"chaos\",\"seeds\":\"${ALPHA_PANDA_CHAOS_SEEDS:-1..50}\",\"wall_s\":$(( $(date +%s) - start ))}"
  exit "$status"
fi
# `bash scripts/bench.sh backtest` runs only the backtest part (no services needed).
if [ "${1:-}" != backtest ]; then
. scripts/services.sh || { echo "bench services could not be started" >&2; exit 1; }
cargo build --release -p alpha-panda-tests --bin bench-broker --bin bench-bridge --bin bench-pipeline
cargo build --release -p alpha-panda-supervisors
# The bare broker with the runtime's client settings: produce/s, consume/s, one-hop p50/p99
# of a tick-sized record at a steady rate (one JSON line each).
broker="$(target/release/bench-broker "${BENCH_BROKER_RECORDS:-200000}" "${BENCH_HOP_RATE:-1000}" "${BENCH_HOP_SECONDS:-10}")"
echo "$broker"
# The whole daemon over Kafka and Redis, measured from outside (docs/performance.md,
# "Pipeline"): a burst, tick→fill at a steady rate, memory over the steady run; its lines
# carry the targets, relative to the bare broker above.
field() { echo "$broker" | grep "\"figure\":\"$1\"" | sed -E "s/.*\"$2\":([0-9.]+).*/\1/"; }
BENCH_BARE_PRODUCE_PER_S="$(field broker_produce records_per_s)" BENCH_BARE_HOP_P50_MS="$(field broker_hop p50_ms)" \
  target/release/bench-pipeline "${BENCH_BURST_TICKS:-100000}" "${BENCH_STEADY_RATE:-1000}" "${BENCH_STEADY_SECONDS:-600}"
for transport in kafka kafka-checkpointed memory; do
  target/release/bench-bridge "$transport" "${BENCH_RECORDS:-20000}"
done
# The KiteTicker packet parser (criterion; docs/performance.md, "Kite ticker").
cargo bench -p alpha-panda-kite --bench ticker 2>&1 | grep -E '^kite_ticker|time:|thrpt:'
# The recorder's write path into PostgreSQL (criterion; docs/performance.md, "Recorder").
cargo bench -p alpha-panda-db --bench write_batch 2>&1 | grep -E '^recorder|time:|thrpt:'
fi
# The embedded default's data directory: what the journal costs per tick (criterion, no
# services; docs/performance.md, "Data directory").
cargo bench -p alpha-panda-db --bench data_dir 2>&1 | grep -E '^data_dir|time:|thrpt:'

# The backtest (docs/performance.md, "Backtest"): the reference file (the project's own
# generator, its sha256 checked), the reference workload (bench/ema.toml), the default
# config, and a 12-run sweep against 12 runs one after the other. One JSON line per figure.
ticks="${BENCH_TICKS_FILE:-target/bench/ticks-1m.csv}"
reference_sha=2b12425307e210d0597e75226f883492490596e5a8996814f6f6ee3d1e0d3c2d
mkdir -p "$(dirname "$ticks")"
[ -f "$ticks" ] || python3 scripts/make_ticks.py 1000000 "$ticks"
if [ -z "${BENCH_TICKS_FILE:-}" ]; then
  got="$(sha256sum "$ticks" | cut -d' ' -f1)"
  [ "$got" = "$reference_sha" ] || { echo "$ticks: sha256 $got, expected $reference_sha" >&2; exit 1; }
fi
cargo build --release -p alpha-panda-supervisors
bt_out="$(mktemp -d)"
rows="$(grep -vc '^instrument_token' "$ticks")"
# timed NAME ARGS…: runs alpha-panda ARGS… under /usr/bin/time and prints one JSON line.
timed() {
  local name="$1"; shift
  local t; t="$(mktemp)"
  /usr/bin/time -f "%e %M %U %S" -o "$t" target/release/alpha-panda "$@" >"$bt_out/$name.stdout"
  read -r wall rss_kb user sys <"$t"; rm -f "$t"
  local fills; fills="$( [ -f "$bt_out/$name/fills.jsonl" ] && wc -l <"$bt_out/$name/fills.jsonl" || echo null)"
  # cpu_s (user + system, all threads) says what the command cost when the machine is shared.
  awk -v n="$name" -v w="$wall" -v r="$rss_kb" -v ticks="$rows" -v f="$fills" -v c="$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" 'BEGIN {
    printf "{\"bench\":\"%s\",\"ticks\":%d,\"wall_s\":%.2f,\"ticks_per_s\":%.0f,\"cpu_s\":%.2f,\"peak_rss_mib\":%.1f,\"fills\":%s}\n", n, ticks, w, ticks / (w > 0 ? w : 0.001), c, r / 1024, f }'
  echo "$wall" >"$bt_out/$name.wall"
}
timed backtest_reference backtest --config bench/ema.toml --ticks "$ticks" --out "$bt_out/backtest_reference"
timed backtest_default backtest --ticks "$ticks" --out "$bt_out/backtest_default"
fasts=(5 10 15 20); slows=(30 40 50)
timed backtest_sweep_12 backtest --config bench/ema.toml --ticks "$ticks" --out "$bt_out/backtest_sweep_12" \
  --sweep "strategies.0.params.fast=$(IFS=,; echo "${fasts[*]}")" --sweep "strategies.0.params.slow=$(IFS=,; echo "${slows[*]}")"
seq_start="$(date +%s.%N)"
for f in "${fasts[@]}"; do for s in "${slows[@]}"; do
  target/release/alpha-panda backtest --config bench/ema.toml --ticks "$ticks" --out "$bt_out/seq" \
    --sweep "strategies.0.params.fast=$f" --sweep "strategies.0.params.slow=$s" >/dev/null
done; done
seq_end="$(date +%s.%N)"
awk -v a="$seq_start" -v b="$seq_end" -v sw="$(cat "$bt_out/backtest_sweep_12.wall")" 'BEGIN {
  printf "{\"bench\":\"backtest_sequential_12\",\"wall_s\":%.2f}\n", b - a
  printf "{\"bench\":\"backtest_sweep_speedup\",\"runs\":12,\"speedup\":%.2f}\n", (b - a) / (sw > 0 ? sw : 0.001) }'
rm -rf "$bt_out"
