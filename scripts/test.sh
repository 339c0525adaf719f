#!/usr/bin/env bash
# Every test, on a fresh Debian machine or a used one: installs and starts what is missing
# (Tansu, redis-server, PostgreSQL), then formatting, lints and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh || { echo "test services could not be started" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked
