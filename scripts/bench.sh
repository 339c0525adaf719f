#!/usr/bin/env bash
# The project's bench command: starts the test services (as scripts/test.sh does) and prints
# throughput figures. Record them in docs/performance.md with the date and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh || { echo "bench services could not be started" >&2; exit 1; }
cargo build --release -p alpha-panda-tests --bin bench-bridge
for transport in kafka memory; do
  target/release/bench-bridge "$transport" "${BENCH_RECORDS:-20000}"
done
