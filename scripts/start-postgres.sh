#!/usr/bin/env bash
# Start a local PostgreSQL server for tests and development: the tidegate meta store can live in
# PostgreSQL (tidegate start --meta-store postgresql://...), and its tests need a real server.
#
#   scripts/start-postgres.sh            start it (or find it running); print its URL on the last line
#   scripts/start-postgres.sh --stop     stop it (nothing to do if it is not running)
#
# The server listens on 127.0.0.1:$TIDEGATE_PG_PORT (default 54329) only, with trust authentication,
# and has a database named tidegate_test. Its files are in $TIDEGATE_PG_DIR (default
# ~/.cache/tidegate/pg): the cluster in data/, the server log in postgres.log. It keeps running after
# this script returns; whoever started it stops it with --stop (same TIDEGATE_PG_DIR).
#
# PostgreSQL refuses to run as root. Run as root, the script runs the server as the unprivileged user
# $TIDEGATE_PG_USER (default postgres, created if missing), and the default directory is in that
# user's home, since root's home is usually closed to other users.
#
# The binaries come from the Debian packages (/usr/lib/postgresql/VERSION/bin) or from
# $TIDEGATE_PG_BIN. When they are missing, root installs them with apt-get; anyone else is told what
# to install.
# Exit status: 0 running (or stopped), 3 PostgreSQL is not installed here and cannot be installed,
# 1 anything else (it did not start, the port is taken, ...).
set -euo pipefail

PORT="${TIDEGATE_PG_PORT:-54329}"
DATABASE="tidegate_test"
READY_TIMEOUT_S="${TIDEGATE_PG_READY_TIMEOUT_S:-60}"
SERVER_USER="$(id -un)"
IS_ROOT=0
if [[ "$(id -u)" == 0 ]]; then
    IS_ROOT=1
    SERVER_USER="${TIDEGATE_PG_USER:-postgres}"
fi

fail() {
    echo "start-postgres: $*" >&2
    exit 1
}

# The directory holding pg_ctl, initdb, postgres and psql, or nothing.
find_binaries() {
    local candidates=()
    if [[ -n "${TIDEGATE_PG_BIN:-}" ]]; then
        candidates+=("$TIDEGATE_PG_BIN")
    else
        # Newest major version first.
        local dir
        while IFS= read -r dir; do
            candidates+=("$dir")
        done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5nr)
        if command -v pg_config >/dev/null; then
            candidates+=("$(pg_config --bindir)")
        fi
        if command -v pg_ctl >/dev/null; then
            # /usr/local/bin/pg_ctl may be a link into a versioned directory.
            candidates+=("$(dirname "$(readlink -f "$(command -v pg_ctl)")")")
        fi
    fi
    local candidate
    for candidate in "${candidates[@]}"; do
        if [[ -x "$candidate/pg_ctl" && -x "$candidate/initdb" && -x "$candidate/postgres" && -x "$candidate/psql" ]]; then
            echo "$candidate"
            return 0
        fi
    done
}

PG_BIN="$(find_binaries)"
if [[ -z "$PG_BIN" ]]; then
    if [[ -n "${TIDEGATE_PG_BIN:-}" ]]; then
        fail "TIDEGATE_PG_BIN=$TIDEGATE_PG_BIN does not hold pg_ctl, initdb, postgres and psql"
    fi
    if [[ "$IS_ROOT" == 1 ]] && command -v apt-get >/dev/null; then
        echo "start-postgres: PostgreSQL is not installed; installing the Debian package postgresql" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package lists may be missing or stale on a fresh machine: update them once if needed.
        if ! apt-get install -y -q postgresql >&2; then
            apt-get update -q >&2 && apt-get install -y -q postgresql >&2 || true
        fi
        PG_BIN="$(find_binaries)"
    fi
    if [[ -z "$PG_BIN" ]]; then
        echo "start-postgres: PostgreSQL is not installed here. Install it with" >&2
        echo "    sudo apt-get install -y postgresql" >&2
        echo "(Debian/Ubuntu), or point TIDEGATE_PG_BIN at a directory with pg_ctl, initdb, postgres, psql." >&2
        exit 3
    fi
fi

# Run a command as the user that owns the server.
as_server() {
    if [[ "$IS_ROOT" == 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null; then
        runuser -u "$SERVER_USER" -- "$@"
    else
        su -s /bin/sh "$SERVER_USER" -c "$(printf '%q ' "$@")"
    fi
}

if [[ "$IS_ROOT" == 1 ]]; then
    if ! id -u "$SERVER_USER" >/dev/null 2>&1; then
        echo "start-postgres: creating the unprivileged user $SERVER_USER to run PostgreSQL" >&2
        useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVER_USER"
    fi
    SERVER_HOME="$(getent passwd "$SERVER_USER" | cut -d: -f6)"
    if [[ -z "${TIDEGATE_PG_DIR:-}" ]]; then
        if [[ -d "$SERVER_HOME" && "$(stat -c %U "$SERVER_HOME")" == "$SERVER_USER" ]]; then
            TIDEGATE_PG_DIR="$SERVER_HOME/.cache/tidegate/pg"
        else
            TIDEGATE_PG_DIR="/var/tmp/tidegate-pg-$SERVER_USER"
        fi
    fi
fi
PG_DIR="${TIDEGATE_PG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/pg}"
if [[ ! -d "$PG_DIR" ]]; then
    # Made by the server user where it can, so that the directories it makes are its own.
    as_server mkdir -p "$PG_DIR" 2>/dev/null || mkdir -p "$PG_DIR"
fi
if [[ "$IS_ROOT" == 1 && -z "$(ls -A "$PG_DIR")" ]]; then
    # A new or empty directory becomes the server user's; any other keeps its owner.
    chown "$SERVER_USER:" "$PG_DIR"
fi
PG_DIR="$(cd "$PG_DIR" && pwd)"
DATA_DIR="$PG_DIR/data"
LOG_FILE="$PG_DIR/postgres.log"
URL="postgresql://$SERVER_USER@127.0.0.1:$PORT/$DATABASE"

if [[ "$IS_ROOT" == 1 ]]; then
    as_server test -w "$PG_DIR" ||
        fail "the user $SERVER_USER cannot write $PG_DIR (is a parent directory closed to it?); set TIDEGATE_PG_DIR elsewhere"
fi
# The server must not inherit a working directory its user cannot enter.
cd "$PG_DIR"

# One run at a time per directory: two concurrent starts must not both run initdb or createdb.
[[ -e "$PG_DIR/start.lock" ]] || as_server touch "$PG_DIR/start.lock"
exec 9>>"$PG_DIR/start.lock"
flock 9

is_running() {
    as_server "$PG_BIN/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1
}

port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if [[ "${1:-}" == "--stop" ]]; then
    if ! is_running; then
        echo "start-postgres: no server is running from $DATA_DIR" >&2
        exit 0
    fi
    as_server "$PG_BIN/pg_ctl" stop -D "$DATA_DIR" -m fast -w -t "$READY_TIMEOUT_S" >&2
    exit 0
fi
if [[ $# -ne 0 ]]; then
    echo "usage: $0 [--stop]" >&2
    exit 1
fi

if [[ ! -f "$DATA_DIR/PG_VERSION" ]]; then
    rm -rf "$DATA_DIR"
    echo "start-postgres: creating a cluster in $DATA_DIR" >&2
    as_server "$PG_BIN/initdb" -D "$DATA_DIR" -U "$SERVER_USER" --auth=trust -E UTF8 --locale=C --no-instructions >&2
    # TCP on the loopback only; no Unix socket, whose default directory a normal user cannot write.
    cat >>"$DATA_DIR/postgresql.conf" <<EOF

# Written by tidegate's scripts/start-postgres.sh.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
EOF
fi

if is_running; then
    running_port="$(sed -n 4p "$DATA_DIR/postmaster.pid")"
    if [[ "$running_port" != "$PORT" ]]; then
        fail "the server of $DATA_DIR already runs on port $running_port, not $PORT; stop it with --stop or set TIDEGATE_PG_PORT=$running_port"
    fi
else
    if port_answers "$PORT"; then
        fail "port $PORT on 127.0.0.1 is already taken by another program; set TIDEGATE_PG_PORT to a free port"
    fi
    # 9>&-: the server must not inherit the lock, or it would hold it for as long as it runs.
    if ! as_server "$PG_BIN/pg_ctl" start -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$READY_TIMEOUT_S" -o "-p $PORT" \
        </dev/null >&2 9>&-; then
        echo "start-postgres: PostgreSQL did not start; the end of $LOG_FILE:" >&2
        tail -n 30 "$LOG_FILE" >&2 || true
        exit 1
    fi
fi

psql_admin() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$SERVER_USER" -d postgres -tA "$@"
}
if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE $DATABASE" >&2
fi
echo "$URL"
