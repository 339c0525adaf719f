#!/usr/bin/env bash
# Installs what the tests need and starts the services, reusing what is already there.
# Source it (`. scripts/services.sh`): it exports
#   ALPHA_PANDA_TEST_KAFKA     host:port of an Apache Kafka broker started for this run
#   ALPHA_PANDA_TEST_REDIS     redis:// URL of a running redis-server
#   ALPHA_PANDA_TEST_DATABASE  postgres:// URL of a running PostgreSQL (trust auth)
#   PROMTOOL_BIN               Prometheus' promtool, to check the /metrics exposition
#   CHROMIUM_BIN, CHROMEDRIVER_BIN  headless Chromium and its WebDriver, for page tests
# and stops the broker it started (and removes its data) when the calling shell exits.
# Tests that start brokers of their own run `scripts/kafka.sh run`; it is installed here.
# Everything listens on 127.0.0.1 only.

STATE_DIR="${ALPHA_PANDA_STATE_DIR:-$PWD/.test-services}"
mkdir -p "$STATE_DIR"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[services] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "missing $*: install it (apt-get install $*) or run as root"; return 1
  fi
  if [ $apt_updated = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

have() { command -v "$1" >/dev/null 2>&1; }

# A free TCP port on loopback.
free_port() {
  python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

ensure_build_tools() {
  local pkgs=()
  have cc || pkgs+=(build-essential)
  have make || pkgs+=(make)
  have pkg-config || pkgs+=(pkg-config)
  have python3 || pkgs+=(python3)
  [ -e /usr/include/zlib.h ] || pkgs+=(zlib1g-dev)
  [ -e /usr/include/postgresql/libpq-fe.h ] || pkgs+=(libpq-dev)
  if [ ${#pkgs[@]} -gt 0 ]; then apt_install "${pkgs[@]}"; fi
  if ! have cargo; then
    log "no Rust toolchain: install rustup (https://rustup.rs) with Rust 1.85 or newer"; return 1
  fi
}

# Apache Kafka from Maven Central (scripts/kafka.sh): Java and Maven from Debian if missing.
ensure_kafka() {
  have java || apt_install openjdk-17-jre-headless || return 1
  have mvn || apt_install maven || return 1
  bash scripts/kafka.sh install >/dev/null || return 1
  if [ -n "${ALPHA_PANDA_TEST_KAFKA:-}" ]; then
    log "reusing Kafka at $ALPHA_PANDA_TEST_KAFKA"; return 0
  fi
  local dir="$STATE_DIR/kafka-$$" started
  rm -rf "$dir"
  started=$(bash scripts/kafka.sh start "$dir") || return 1
  KAFKA_PID=${started#* }
  trap 'kill $KAFKA_PID 2>/dev/null; sleep 1; kill -9 $KAFKA_PID 2>/dev/null; rm -rf "'"$dir"'"' EXIT
  export ALPHA_PANDA_TEST_KAFKA=${started% *}
  log "Apache Kafka on $ALPHA_PANDA_TEST_KAFKA (pid $KAFKA_PID, log $dir/kafka.log)"
}

ensure_redis() {
  if [ -n "${ALPHA_PANDA_TEST_REDIS:-}" ]; then log "reusing Redis at $ALPHA_PANDA_TEST_REDIS"; return 0; fi
  have redis-server || apt_install redis-server || return 1
  if have redis-cli && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; then
    export ALPHA_PANDA_TEST_REDIS="redis://127.0.0.1:6379"
    log "reusing redis-server on 127.0.0.1:6379"; return 0
  fi
  local port=16379
  if [ "$(redis-cli -h 127.0.0.1 -p $port ping 2>/dev/null)" != PONG ]; then
    redis-server --daemonize yes --bind 127.0.0.1 --port $port --save "" --appendonly no \
      --dir "$STATE_DIR" --logfile "$STATE_DIR/redis.log" --pidfile "$STATE_DIR/redis.pid" >&2
    wait_port 127.0.0.1 $port 10 || { log "redis-server did not start"; return 1; }
    log "started redis-server on 127.0.0.1:$port"
  fi
  export ALPHA_PANDA_TEST_REDIS="redis://127.0.0.1:$port"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

ensure_postgres() {
  if [ -n "${ALPHA_PANDA_TEST_DATABASE:-}" ]; then log "reusing PostgreSQL at $ALPHA_PANDA_TEST_DATABASE"; return 0; fi
  have psql || apt_install postgresql-client || return 1
  if psql "postgres://postgres@127.0.0.1:5432/postgres" -tAc 'select 1' >/dev/null 2>&1; then
    export ALPHA_PANDA_TEST_DATABASE="postgres://postgres@127.0.0.1:5432/postgres"
    log "reusing PostgreSQL on 127.0.0.1:5432"; return 0
  fi
  # A private cluster with trust auth, owned by the postgres user, in the state dir.
  [ -n "$(pg_bin)" ] || apt_install postgresql || return 1
  local bin; bin=$(pg_bin)
  local port=15432 data="$STATE_DIR/pg"
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data" && chown postgres "$STATE_DIR" "$data"
    runuser -u postgres -- "$bin/initdb" -D "$data" -A trust -U postgres >"$STATE_DIR/initdb.log" 2>&1 \
      || { log "initdb failed:"; cat "$STATE_DIR/initdb.log" >&2; return 1; }
  fi
  if ! psql "postgres://postgres@127.0.0.1:$port/postgres" -tAc 'select 1' >/dev/null 2>&1; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$STATE_DIR/pg.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data" start >&2 \
      || { log "PostgreSQL did not start:"; cat "$STATE_DIR/pg.log" >&2; return 1; }
    log "started PostgreSQL on 127.0.0.1:$port"
  fi
  export ALPHA_PANDA_TEST_DATABASE="postgres://postgres@127.0.0.1:$port/postgres"
}

# promtool checks the /metrics exposition in the operations tests (Debian's prometheus).
ensure_promtool() {
  have promtool || apt_install prometheus || return 1
  PROMTOOL_BIN=$(command -v promtool)
  export PROMTOOL_BIN
}

# Headless Chromium and its WebDriver, for tests of the pages the project shows a person
# (Debian's chromium and chromium-driver).
ensure_chromium() {
  have chromium && have chromedriver || apt_install chromium chromium-driver || return 1
  CHROMIUM_BIN=$(command -v chromium)
  CHROMEDRIVER_BIN=$(command -v chromedriver)
  export CHROMIUM_BIN CHROMEDRIVER_BIN
}

ensure_build_tools && ensure_kafka && ensure_redis && ensure_postgres && ensure_promtool && ensure_chromium
