#!/usr/bin/env bash
# A real Confluent-compatible schema registry (Apicurio Registry 3.3.3) for tests and benchmarks.
#
#   scripts/schema-registry.sh start    fetch the app if needed, start it, wait until it answers
#   scripts/schema-registry.sh stop     stop the registry started by this script
#   scripts/schema-registry.sh status   exit 0 if the registry answers, 1 otherwise
#
# The app comes from Maven Central (io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all,
# `mvn dependency:copy`) and is unpacked into .apicurio/app-3.3.3, which is git-ignored and
# reused by every later start. It needs a JDK >= 21 (the newest one under /usr/lib/jvm is
# picked; the machine's default OpenJDK 17 cannot run it). Its Confluent-compatible API is
# http://127.0.0.1:$PORT/apis/ccompat/v7. Storage is the app's default in-memory database:
# a restart forgets every schema, which suits tests (each test registers what it reads).
#   .apicurio/app-3.3.3/              the unpacked app (quarkus-run.jar)
#   .apicurio/registry-<port>/        registry.log, registry.pid
#
# Environment: SCHEMA_REGISTRY_PORT (HTTP, default 8081), SCHEMA_REGISTRY_MANAGEMENT_PORT
# (Quarkus management interface: health and metrics, default SCHEMA_REGISTRY_PORT + 1000;
# it listens on 0.0.0.0:9000 unless told otherwise, so it is bound to 127.0.0.1 here too),
# SCHEMA_REGISTRY_HEAP (default -Xms64m -Xmx384m), SCHEMA_REGISTRY_START_TIMEOUT (seconds,
# default 90), SCHEMA_REGISTRY_DIR (default <repo>/.apicurio), JAVA_HOME (a JDK >= 21 to use
# instead of the one found under /usr/lib/jvm).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION=3.3.3
ARTIFACT="io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all"
REG_DIR="${SCHEMA_REGISTRY_DIR:-$ROOT/.apicurio}"
PORT="${SCHEMA_REGISTRY_PORT:-8081}"
MANAGEMENT_PORT="${SCHEMA_REGISTRY_MANAGEMENT_PORT:-$((PORT + 1000))}"
HEAP="${SCHEMA_REGISTRY_HEAP:--Xms64m -Xmx384m}"
TIMEOUT="${SCHEMA_REGISTRY_START_TIMEOUT:-90}"
APP="$REG_DIR/app-$VERSION"
RUN="$REG_DIR/registry-$PORT"
PID_FILE="$RUN/registry.pid"
LOG="$RUN/registry.log"
PROBE_URL="http://127.0.0.1:$PORT/apis/ccompat/v7/subjects"

say() { echo "schema-registry.sh: $*" >&2; }
die() { say "FATAL: $*"; exit 1; }

pid_alive() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# True when the Confluent-compatible API answers its subject list.
answers() {
  curl -fsS --max-time 2 "$PROBE_URL" >/dev/null 2>&1
}

# The major version of the java binary $1 (17, 21, 25...).
java_major() {
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
  echo "${v:-0}"
}

# Sets JAVA to a java binary of a JDK >= 21: JAVA_HOME's if it is one, else the newest under /usr/lib/jvm.
find_java() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ] && [ "$(java_major "$JAVA_HOME/bin/java")" -ge 21 ]; then
    JAVA="$JAVA_HOME/bin/java"
    return 0
  fi
  local best="" best_major=0 candidate major
  for candidate in /usr/lib/jvm/*/bin/java; do
    [ -x "$candidate" ] || continue
    major="$(java_major "$candidate")"
    if [ "$major" -gt "$best_major" ]; then best="$candidate"; best_major="$major"; fi
  done
  [ "$best_major" -ge 21 ] \
    || die "Apicurio Registry $VERSION needs a JDK >= 21 and none was found under /usr/lib/jvm (newest: ${best_major:-none}); install one (e.g. apt-get install temurin-25-jdk from Adoptium, or openjdk-21-jdk-headless) or set JAVA_HOME to it"
  JAVA="$best"
}

fetch_app() {
  [ -f "$APP/quarkus-run.jar" ] && return 0
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) to fetch Apicurio Registry"
  say "fetching $ARTIFACT from Maven Central into $APP (once)"
  local tmp="$REG_DIR/app.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B dependency:copy "-Dartifact=$ARTIFACT" "-DoutputDirectory=$tmp" >"$REG_DIR/mvn.log" 2>&1; then
    tail -n 40 "$REG_DIR/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch $ARTIFACT (full output: $REG_DIR/mvn.log)"
  fi
  if ! tar -xzf "$tmp/apicurio-registry-app-$VERSION-all.tar.gz" -C "$tmp"; then
    rm -rf "$tmp"
    die "could not unpack apicurio-registry-app-$VERSION-all.tar.gz"
  fi
  rm -f "$tmp/apicurio-registry-app-$VERSION-all.tar.gz"
  [ -f "$tmp/quarkus-run.jar" ] || { rm -rf "$tmp"; die "the Apicurio archive has no quarkus-run.jar"; }
  rm -rf "$APP"
  mv "$tmp" "$APP"
}

start() {
  if pid_alive && answers; then
    say "already running on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"))"
    return 0
  fi
  if ! pid_alive && answers; then
    say "a schema registry not started by this script already answers on 127.0.0.1:$PORT; using it"
    return 0
  fi
  local began=$SECONDS
  mkdir -p "$REG_DIR" "$RUN"
  if ! pid_alive; then
    command -v curl >/dev/null || die "curl not found: install it (apt-get install curl); this script probes the registry with it"
    find_java
    fetch_app
    [ -f "$LOG" ] && mv -f "$LOG" "$LOG.1"
    # shellcheck disable=SC2206 # HEAP holds several JVM flags
    local cmd=("$JAVA" $HEAP -XX:+UseSerialGC -Djava.awt.headless=true
      -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$PORT"
      -Dquarkus.management.host=127.0.0.1 "-Dquarkus.management.port=$MANAGEMENT_PORT"
      -jar quarkus-run.jar)
    # setsid: the registry outlives this shell and the caller's process group; cd: the app
    # resolves lib/ and quarkus/ next to quarkus-run.jar.
    (cd "$APP" && exec setsid "${cmd[@]}" >"$LOG" 2>&1 </dev/null) &
    echo $! >"$PID_FILE"
    say "started pid $(cat "$PID_FILE") with $JAVA, log $LOG; waiting up to ${TIMEOUT}s for $PROBE_URL"
  else
    say "pid $(cat "$PID_FILE") is starting; waiting up to ${TIMEOUT}s for $PROBE_URL"
  fi
  local deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if answers; then
      say "ready on 127.0.0.1:$PORT after $((SECONDS - began))s (Confluent-compatible API: http://127.0.0.1:$PORT/apis/ccompat/v7)"
      return 0
    fi
    if ! pid_alive; then
      tail -n 60 "$LOG" >&2 || true
      die "the registry exited during startup (log above, full log: $LOG)"
    fi
    sleep 1
  done
  tail -n 60 "$LOG" >&2 || true
  die "the registry did not answer on $PROBE_URL within ${TIMEOUT}s (log above, full log: $LOG)"
}

stop() {
  if ! pid_alive; then
    rm -f "$PID_FILE"
    say "not running"
    return 0
  fi
  local pid
  pid="$(cat "$PID_FILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; say "stopped"; return 0; }
    sleep 0.5
  done
  say "pid $pid did not stop within 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

status() {
  if answers; then
    if pid_alive; then say "running on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"))"; else say "a registry answers on 127.0.0.1:$PORT (not started by this script)"; fi
    return 0
  fi
  if pid_alive; then say "pid $(cat "$PID_FILE") is alive but $PROBE_URL does not answer (starting?)"; else say "not running"; fi
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
