#!/usr/bin/env bash
# Start a local Apache Kafka broker for tests and development: tidegate reads Kafka sources and
# writes Kafka sinks (transactionally, exactly once), and their tests need a real broker.
#
#   scripts/start-kafka.sh                start it (or find it running); print its bootstrap address on the last line
#   scripts/start-kafka.sh --stop         stop it and wait until it has exited (nothing to do if it is not running)
#   scripts/start-kafka.sh --build-only   only make sure the jars are fetched (CI warms the cache)
#
# It is one KRaft node, broker and controller in one JVM, listening on 127.0.0.1:$TIDEGATE_KAFKA_PORT
# (default 29092) for clients and on the next port for its controller, without authentication. It is
# set up for one node with transactions: every internal topic has one replica, consumer groups
# rebalance at once, and a topic is created when first used (one partition unless asked otherwise).
# Its files are in $TIDEGATE_KAFKA_DIR (default ~/.cache/tidegate/kafka-run): the config in
# server.properties, the partitions in data/, the pid in kafka.pid and the broker's log in kafka.log
# (the previous start's in kafka.log.1). The storage is formatted on the first start and kept after
# that. It keeps running after this script returns; whoever started it stops it with --stop (same
# TIDEGATE_KAFKA_DIR).
#
# The broker is Apache Kafka's own server (the org.apache.kafka:kafka_2.13 jars and their runtime
# dependencies), fetched once from Maven Central with `mvn dependency:copy-dependencies` into
# ~/.cache/tidegate/kafka/VERSION/libs and reused after that. It needs Java 17 or newer ($JAVA_HOME
# or java on PATH) and, for the first fetch, Maven; run as root, the script installs what is missing
# with apt-get. Kafka runs as whoever runs this script, root included.
# Exit status: 0 running (or stopped, or fetched), 3 Java or Maven is missing here and cannot be
# installed, 1 anything else (the jars cannot be fetched, it did not start, the port is taken, ...).
set -euo pipefail

# The first version is the one wanted; the second is used when the first cannot be fetched.
KAFKA_VERSIONS=("${TIDEGATE_KAFKA_VERSION:-4.4.0}" "4.3.1")
# Kafka logs through slf4j 1.7; this binding sends that to log4j 2, which writes kafka.log.
LOG4J_VERSION="2.25.5"
PORT="${TIDEGATE_KAFKA_PORT:-29092}"
CONTROLLER_PORT="$((PORT + 1))"
READY_TIMEOUT_S="${TIDEGATE_KAFKA_READY_TIMEOUT_S:-120}"
STOP_TIMEOUT_S="${TIDEGATE_KAFKA_STOP_TIMEOUT_S:-60}"
HEAP_MAX="${TIDEGATE_KAFKA_HEAP_MAX:-512m}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/kafka"
RUN_DIR="${TIDEGATE_KAFKA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/kafka-run}"
ADDRESS="127.0.0.1:$PORT"
MAIN_CLASS="kafka.Kafka"
STORAGE_TOOL_CLASS="kafka.tools.StorageTool"

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

fail() {
    echo "start-kafka: $*" >&2
    exit 1
}

# Install Debian packages when run as root; false when that is not possible or did not work.
apt_install() {
    [[ "$IS_ROOT" == 1 ]] && command -v apt-get >/dev/null || return 1
    echo "start-kafka: installing the Debian packages $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: update them once if needed.
    apt-get install -y -q "$@" >&2 || { apt-get update -q >&2 && apt-get install -y -q "$@" >&2; }
}

# The java command of Java 17 or newer, or nothing.
find_java() {
    local candidate version
    for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)"; do
        [[ -n "$candidate" && -x "$candidate" ]] || continue
        # 'openjdk version "17.0.15" ...' or, before Java 9, '"1.8.0_392"'.
        version="$("$candidate" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
        if [[ -n "$version" && "$version" -ge 17 ]]; then
            echo "$candidate"
            return 0
        fi
    done
}

require_java() {
    JAVA="$(find_java)"
    if [[ -z "$JAVA" ]]; then
        apt_install default-jre-headless || true
        JAVA="$(find_java)"
    fi
    if [[ -z "$JAVA" ]]; then
        echo "start-kafka: Kafka needs Java 17 or newer, and none is here. Install it with" >&2
        echo "    sudo apt-get install -y openjdk-17-jre-headless" >&2
        echo "(Debian/Ubuntu), or point JAVA_HOME at one." >&2
        exit 3
    fi
}

# The directory of the jars of one Kafka version, fetched into the cache if they are not there yet.
# Returns 1 when Maven could not fetch them.
fetch_version() {
    local version="$1"
    local version_dir="$CACHE_DIR/$version"
    if [[ -f "$version_dir/libs/.complete" ]]; then
        echo "$version_dir/libs"
        return 0
    fi
    if ! command -v mvn >/dev/null; then
        apt_install maven || true
    fi
    if ! command -v mvn >/dev/null; then
        echo "start-kafka: fetching the Kafka jars needs Maven ('mvn'), which is not here. Install it with" >&2
        echo "    sudo apt-get install -y maven" >&2
        exit 3
    fi
    mkdir -p "$version_dir"
    cat >"$version_dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by tidegate's scripts/start-kafka.sh: the jars of Kafka's server, to run it from. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tidegate.dev</groupId>
  <artifactId>kafka-server-jars</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    local staging
    staging="$(mktemp -d "$version_dir/.libs.XXXXXX")"
    echo "start-kafka: fetching the jars of Kafka $version from Maven Central into $version_dir/libs (once; cached after)" >&2
    if ! mvn -q -B -Dstyle.color=never -f "$version_dir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$staging" >&2; then
        rm -rf "$staging"
        echo "start-kafka: Maven could not fetch org.apache.kafka:kafka_2.13:$version" >&2
        return 1
    fi
    touch "$staging/.complete"
    # Rename into place, so a concurrent run never uses a half-fetched directory.
    rm -rf "$version_dir/libs"
    mv "$staging" "$version_dir/libs"
    echo "$version_dir/libs"
}

# Sets KAFKA_VERSION and LIBS_DIR to the first version that is cached or can be fetched.
fetch() {
    mkdir -p "$CACHE_DIR"
    # One fetch at a time: two concurrent runs must not both write the same directory.
    exec 8>>"$CACHE_DIR/fetch.lock"
    flock 8
    local version status
    for version in "${KAFKA_VERSIONS[@]}"; do
        LIBS_DIR="$(fetch_version "$version")" && status=0 || status=$?
        if [[ "$status" == 0 ]]; then
            KAFKA_VERSION="$version"
            exec 8>&-
            return 0
        fi
        # No Maven here: no other version can be fetched either.
        [[ "$status" == 3 ]] && exit 3
    done
    fail "could not fetch the Kafka jars of any of ${KAFKA_VERSIONS[*]} with Maven (see its messages above)"
}

port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when the broker answers a Metadata request (v4, all topics) listing at least one live broker:
# the node has joined its own quorum and is unfenced, so clients can use it.
metadata_works() {
    python3 - "$PORT" <<'EOF'
import socket
import struct
import sys

port = int(sys.argv[1])
client_id = b"tidegate-start-kafka"
# Request header v1 (api key 3 = Metadata, version 4, correlation id, client id), then
# topics = null (all of them) and allow_auto_topic_creation = false.
body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">i?", -1, False)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(struct.pack(">i", len(body)) + body)
        received = b""
        while len(received) < 16:
            chunk = connection.recv(4096)
            if not chunk:
                sys.exit(1)
            received += chunk
except OSError:
    sys.exit(1)
# Size, correlation id, throttle time, then the number of brokers.
_, correlation_id, _, broker_count = struct.unpack(">iiii", received[:16])
sys.exit(0 if correlation_id == 7 and broker_count >= 1 else 1)
EOF
}

# The pid of the broker started from RUN_DIR if it is alive, or nothing.
running_pid() {
    local pid
    pid="$(cat "$RUN_DIR/kafka.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] || return 0
    # A pid file can outlive its process, and the pid be reused by another program.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q " $MAIN_CLASS "; then
        echo "$pid"
    fi
}

stop() {
    local pid waited_s=0
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        echo "start-kafka: no broker is running from $RUN_DIR" >&2
        rm -f "$RUN_DIR/kafka.pid"
        return 0
    fi
    # SIGTERM: a controlled shutdown, which flushes the logs and closes the quorum cleanly.
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if [[ "$waited_s" -ge "$STOP_TIMEOUT_S" ]]; then
            echo "start-kafka: the broker (pid $pid) did not stop in ${STOP_TIMEOUT_S}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
        waited_s=$((waited_s + 1))
    done
    rm -f "$RUN_DIR/kafka.pid"
}

write_config() {
    cat >"$RUN_DIR/server.properties" <<EOF
# Written by tidegate's scripts/start-kafka.sh at each start: one KRaft node for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN_DIR/data
num.partitions=1
auto.create.topics.enable=true
# One node: every internal topic has one replica, and one in-sync replica is enough.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer partitions than the default 50 for the internal topics: each is created on first use, which
# takes seconds per dozen partitions on a small machine.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
# Tests start and stop consumers all the time: a group rebalances as soon as a member joins.
group.initial.rebalance.delay.ms=0
EOF
    cat >"$RUN_DIR/log4j2.properties" <<EOF
# Written by tidegate's scripts/start-kafka.sh: everything to standard output, which is kafka.log.
status = warn
appender.console.type = Console
appender.console.name = stdout
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = stdout
# Every request and every partition state change would drown the rest.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

java_options() {
    echo "-Xms128m -Xmx$HEAP_MAX -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError"
    echo "-Djava.awt.headless=true -Dlog4j2.configurationFile=file:$RUN_DIR/log4j2.properties"
}

format_storage() {
    [[ -f "$RUN_DIR/data/meta.properties" ]] && return 0
    rm -rf "$RUN_DIR/data"
    local cluster_id
    # shellcheck disable=SC2046
    # The tool's log lines go to standard output too: keep the id, 16 bytes in URL-safe base64.
    cluster_id="$("$JAVA" $(java_options) -cp "$LIBS_DIR/*" "$STORAGE_TOOL_CLASS" random-uuid 2>>"$LOG_FILE" |
        grep -E '^[A-Za-z0-9_-]{22}$' | tail -n 1 || true)"
    [[ -n "$cluster_id" ]] || fail "could not make a cluster id with $STORAGE_TOOL_CLASS random-uuid; see $LOG_FILE"
    echo "start-kafka: formatting the storage in $RUN_DIR/data (cluster $cluster_id)" >&2
    # shellcheck disable=SC2046
    if ! "$JAVA" $(java_options) -cp "$LIBS_DIR/*" "$STORAGE_TOOL_CLASS" format \
        --config "$RUN_DIR/server.properties" --cluster-id "$cluster_id" --ignore-formatted \
        >>"$LOG_FILE" 2>&1; then
        rm -rf "$RUN_DIR/data"
        echo "start-kafka: formatting the storage failed; the end of $LOG_FILE:" >&2
        tail -n 30 "$LOG_FILE" >&2 || true
        exit 1
    fi
}

start() {
    if port_answers "$PORT"; then
        fail "port $PORT on 127.0.0.1 is already taken by another program; set TIDEGATE_KAFKA_PORT to a free port"
    fi
    if port_answers "$CONTROLLER_PORT"; then
        fail "port $CONTROLLER_PORT on 127.0.0.1 (the controller's) is already taken by another program; set TIDEGATE_KAFKA_PORT to another free port"
    fi
    write_config
    [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
    echo "start-kafka: starting Kafka $KAFKA_VERSION on $ADDRESS; log in $LOG_FILE" >&2
    format_storage
    # 9>&-: the broker must not inherit the lock, or it would hold it for as long as it runs.
    # shellcheck disable=SC2046
    nohup "$JAVA" $(java_options) -cp "$LIBS_DIR/*" "$MAIN_CLASS" "$RUN_DIR/server.properties" \
        </dev/null >>"$LOG_FILE" 2>&1 9>&- &
    echo "$!" >"$RUN_DIR/kafka.pid"
}

wait_until_ready() {
    local pid="$1" waited_s=0
    until port_answers "$PORT" && metadata_works; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "start-kafka: Kafka exited while starting; the end of $LOG_FILE:" >&2
            tail -n 30 "$LOG_FILE" >&2 || true
            rm -f "$RUN_DIR/kafka.pid"
            exit 1
        fi
        if [[ "$waited_s" -ge "$READY_TIMEOUT_S" ]]; then
            echo "start-kafka: Kafka did not answer on $ADDRESS within ${READY_TIMEOUT_S}s; the end of $LOG_FILE:" >&2
            tail -n 30 "$LOG_FILE" >&2 || true
            exit 1
        fi
        sleep 1
        waited_s=$((waited_s + 1))
    done
}

MODE="start"
case "${1:-}" in
    "") ;;
    --stop) MODE="stop" ;;
    --build-only) MODE="build-only" ;;
    *) echo "usage: $0 [--stop | --build-only]" >&2; exit 1 ;;
esac
if [[ $# -gt 1 ]]; then
    echo "usage: $0 [--stop | --build-only]" >&2
    exit 1
fi

if [[ "$MODE" == "build-only" ]]; then
    fetch
    echo "$LIBS_DIR"
    exit 0
fi

mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
LOG_FILE="$RUN_DIR/kafka.log"
# One run at a time per directory: two concurrent starts must not both format or start a broker.
exec 9>>"$RUN_DIR/start.lock"
flock 9

if [[ "$MODE" == "stop" ]]; then
    stop
    exit 0
fi

PID="$(running_pid)"
if [[ -n "$PID" ]]; then
    running_port="$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$RUN_DIR/server.properties")"
    if [[ "$running_port" != "$PORT" ]]; then
        fail "the broker of $RUN_DIR already runs on port $running_port, not $PORT; stop it with --stop or set TIDEGATE_KAFKA_PORT=$running_port"
    fi
else
    require_java
    fetch
    start
    PID="$(cat "$RUN_DIR/kafka.pid")"
fi
wait_until_ready "$PID"
echo "$ADDRESS"
