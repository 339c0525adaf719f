#!/usr/bin/env bash
# Apache Kafka (KRaft, one node) for tests and benchmarks, from Maven Central jars.
#
#   bash scripts/kafka.sh install
#       Resolves the jars pinned in scripts/kafka/pom.xml into the cache folder (once) and
#       formats a log-directory template there (once). Prints the cache folder.
#   bash scripts/kafka.sh run DIR BROKER_PORT CONTROLLER_PORT
#       Runs a broker in the foreground (exec: the caller's child is the JVM itself) on
#       127.0.0.1:BROKER_PORT, with its configuration and log directory under DIR (which must
#       not hold an earlier instance's data). Logs to stderr; ready once it prints
#       "Kafka Server started". SIGTERM stops it.
#   bash scripts/kafka.sh start DIR
#       Starts a broker in the background on free ports, waits until it is ready, and prints
#       `host:port pid` (for scripts; tests start theirs through `run`).
#
# The cache folder is $ALPHA_PANDA_KAFKA_HOME, default ~/.cache/alpha-panda/kafka-VERSION.
# The broker's heap is $ALPHA_PANDA_KAFKA_HEAP (default "-Xms256m -Xmx1g").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION=$(grep -A1 '<artifactId>kafka_2.13<' "$here/kafka/pom.xml" | sed -n 's:.*<version>\(.*\)</version>.*:\1:p')
KAFKA_HOME="${ALPHA_PANDA_KAFKA_HOME:-$HOME/.cache/alpha-panda/kafka-$KAFKA_VERSION}"
HEAP="${ALPHA_PANDA_KAFKA_HEAP:--Xms256m -Xmx1g}"
# A fixed cluster id (16 bytes, URL-safe base64): every instance is its own one-node cluster.
CLUSTER_ID=AlphaPandaTestKafka0Aw

log() { printf '[kafka] %s\n' "$*" >&2; }

jvm_args() { # the JVM options of every broker and tool run, as a java @argfile
  cat <<EOF
-cp
$KAFKA_HOME/libs/*
$HEAP
-XX:+UseG1GC
-XX:MaxGCPauseMillis=20
-Djava.awt.headless=true
-Dlog4j2.configurationFile=$here/kafka/log4j2.properties
EOF
}

config() { # DIR BROKER_PORT CONTROLLER_PORT: writes DIR/server.properties
  sed -e "s|@BROKER_PORT@|$2|g" -e "s|@CONTROLLER_PORT@|$3|g" -e "s|@LOG_DIR@|$1/data|g" \
    "$here/kafka/server.properties" >"$1/server.properties"
}

install() {
  if ! command -v java >/dev/null 2>&1; then
    log "no java: install OpenJDK 17 or newer (apt-get install openjdk-17-jre-headless)"; return 1
  fi
  if [ ! -f "$KAFKA_HOME/libs/.complete" ]; then
    command -v mvn >/dev/null 2>&1 || { log "no mvn: install Maven (apt-get install maven)"; return 1; }
    log "resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME/libs"
    rm -rf "$KAFKA_HOME/libs"
    mkdir -p "$KAFKA_HOME"
    mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$KAFKA_HOME/libs" >&2
    touch "$KAFKA_HOME/libs/.complete"
  fi
  jvm_args >"$KAFKA_HOME/jvm.args"
  # Format one log directory; each instance starts from a copy (a format is a JVM start).
  if [ ! -f "$KAFKA_HOME/template/meta.properties" ]; then
    local tmp; tmp=$(mktemp -d)
    config "$tmp" 1 2
    rm -rf "$KAFKA_HOME/template"
    java @"$KAFKA_HOME/jvm.args" kafka.tools.StorageTool format -t "$CLUSTER_ID" \
      -c "$tmp/server.properties" >&2
    mv "$tmp/data" "$KAFKA_HOME/template"
    rm -rf "$tmp"
  fi
  echo "$KAFKA_HOME"
}

run() { # DIR BROKER_PORT CONTROLLER_PORT
  [ -f "$KAFKA_HOME/template/meta.properties" ] || install >/dev/null
  mkdir -p "$1"
  local dir; dir="$(cd "$1" && pwd)"
  [ ! -e "$dir/data" ] || { log "$dir/data exists: give each broker a fresh folder"; return 1; }
  config "$dir" "$2" "$3"
  cp -r "$KAFKA_HOME/template" "$dir/data"
  jvm_args >"$dir/jvm.args"
  exec java @"$dir/jvm.args" kafka.Kafka "$dir/server.properties"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() { # DIR
  mkdir -p "$1"
  local bport cport pid i
  bport=$(free_port); cport=$(free_port)
  while [ "$cport" = "$bport" ]; do cport=$(free_port); done
  bash "${BASH_SOURCE[0]}" run "$1" "$bport" "$cport" >/dev/null 2>"$1/kafka.log" &
  pid=$!
  for ((i = 0; i < 1200; i++)); do
    grep -q 'Kafka Server started' "$1/kafka.log" 2>/dev/null && { echo "127.0.0.1:$bport $pid"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  log "the broker did not start within 60 s; its log ($1/kafka.log):"
  tail -n 30 "$1/kafka.log" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

case "${1:-}" in
  install) install ;;
  run) shift; [ $# = 3 ] || { log "usage: kafka.sh run DIR BROKER_PORT CONTROLLER_PORT"; exit 2; }; run "$@" ;;
  start) shift; [ $# = 1 ] || { log "usage: kafka.sh start DIR"; exit 2; }; start "$1" ;;
  *) log "usage: kafka.sh install | run DIR BROKER_PORT CONTROLLER_PORT | start DIR"; exit 2 ;;
esac
