#!/usr/bin/env bash
# Start a local S3-compatible server for tests: gofakes3 (github.com/johannesboyne/gofakes3), a Go
# implementation of the S3 HTTP API, with its in-memory backend. Not its 'fs' or 'bolt' backends: both
# break S3's atomic PUT when a GET races a PUT of the same key ('fs' overwrites in place and serves a
# truncated body; 'bolt' served a body mixing the two versions), and the object-store tests check that.
# The objects therefore live only as long as the server; DATA_DIR holds its pid and its log.
#
#   scripts/start-s3.sh PORT DATA_DIR      start it on 127.0.0.1:PORT; print its endpoint and return
#   scripts/start-s3.sh --build-only       only make sure the binary is built (CI warms the cache)
#
# The binary is built once with `go install` from the Go module proxy into
# $TIDEGATE_CACHE_DIR (default ~/.cache/tidegate) and reused after that.
# The server runs in the background; its pid is in DATA_DIR/s3.pid and its log in DATA_DIR/s3.log:
# whoever started it stops it (kill "$(cat DATA_DIR/s3.pid)").
# Exit status: 0 started (or built), 3 the server cannot be built here (no Go, no module proxy),
# 1 anything else (it did not start, or the port did not answer in time).
set -euo pipefail

GOFAKES3_VERSION="v1.2.0"
CACHE_DIR="${TIDEGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}"
BIN_DIR="$CACHE_DIR/bin"
BIN="$BIN_DIR/gofakes3-$GOFAKES3_VERSION"
READY_TIMEOUT_S="${TIDEGATE_S3_READY_TIMEOUT_S:-20}"

build() {
    [[ -x "$BIN" ]] && return 0
    local go_cmd
    go_cmd="$(command -v go || true)"
    if [[ -z "$go_cmd" && -x /usr/local/go/bin/go ]]; then
        go_cmd=/usr/local/go/bin/go
    fi
    if [[ -z "$go_cmd" ]]; then
        echo "start-s3: cannot build gofakes3: no 'go' command on PATH or in /usr/local/go/bin" >&2
        return 3
    fi
    mkdir -p "$BIN_DIR"
    local staging
    staging="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
    echo "start-s3: building gofakes3 $GOFAKES3_VERSION into $BIN (once; cached after)" >&2
    # GOTOOLCHAIN=local: never download another Go toolchain, build with the installed one.
    if ! GOBIN="$staging" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
        "$go_cmd" install "github.com/johannesboyne/gofakes3/cmd/gofakes3@$GOFAKES3_VERSION" >&2; then
        rm -rf "$staging"
        echo "start-s3: cannot build gofakes3: 'go install github.com/johannesboyne/gofakes3/cmd/gofakes3@$GOFAKES3_VERSION' failed" >&2
        return 3
    fi
    # Rename into place, so a concurrent run never sees a half-written binary.
    mv -f "$staging/gofakes3" "$BIN"
    rm -rf "$staging"
}

port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if [[ "${1:-}" == "--build-only" ]]; then
    build
    echo "$BIN"
    exit 0
fi
if [[ $# -ne 2 ]]; then
    echo "usage: $0 PORT DATA_DIR | $0 --build-only" >&2
    exit 1
fi
PORT="$1"
DATA_DIR="$2"

build || exit $?
mkdir -p "$DATA_DIR"
if port_answers "$PORT"; then
    echo "start-s3: port $PORT on 127.0.0.1 is already taken" >&2
    exit 1
fi
# stdin/stdout/stderr away from the caller's pipes, so that a caller reading our output is not held open.
"$BIN" -backend memory -host "127.0.0.1:$PORT" \
    </dev/null >"$DATA_DIR/s3.log" 2>&1 &
PID=$!
echo "$PID" >"$DATA_DIR/s3.pid"

deadline=$((SECONDS + READY_TIMEOUT_S))
until port_answers "$PORT"; do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "start-s3: gofakes3 exited before it answered; its log:" >&2
        cat "$DATA_DIR/s3.log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "start-s3: gofakes3 did not answer on 127.0.0.1:$PORT within ${READY_TIMEOUT_S}s; its log:" >&2
        cat "$DATA_DIR/s3.log" >&2
        kill "$PID" 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
done
echo "http://127.0.0.1:$PORT"
