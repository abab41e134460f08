#!/usr/bin/env bash
# A three-node Weir cluster on this machine (combined mode, config/cluster/node{1,2,3}.toml):
#
#   scripts/cluster.sh [-d DIR] start            start every node that is not running
#   scripts/cluster.sh [-d DIR] stop             stop every node (SIGTERM: controlled shutdown)
#   scripts/cluster.sh [-d DIR] status           which nodes run, then `weir cluster status`
#   scripts/cluster.sh [-d DIR] kill N           kill -9 node N
#   scripts/cluster.sh [-d DIR] start N          start node N alone
#
# Data, logs (nodeN.log) and pid files live under DIR (default: $TMPDIR/weir-cluster).
# Clients bootstrap on 127.0.0.1:19092, :29092 or :39092. Uses target/release/weir
# (built when missing; WEIR=path overrides). WEIR_SETTINGS="key=value ..." adds settings
# to every node started.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${TMPDIR:-/tmp}/weir-cluster"
if [ "${1:-}" = "-d" ]; then DIR="$2"; shift 2; fi
WEIR="${WEIR:-target/release/weir}"
NODES=(1 2 3)

ensure_binary() {
    if [ ! -x "$WEIR" ]; then cargo build --release --bin weir; fi
}

pid_of() { cat "$DIR/node$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start_node() {
    local n=$1
    if running "$n"; then echo "node $n already runs (pid $(pid_of "$n"))"; return; fi
    mkdir -p "$DIR"
    local extra=()
    for kv in ${WEIR_SETTINGS:-}; do extra+=(--set "$kv"); done
    nohup "$WEIR" serve --config "config/cluster/node$n.toml" --set "log.dirs=$DIR/node$n" "${extra[@]}" \
        >>"$DIR/node$n.log" 2>&1 &
    echo $! >"$DIR/node$n.pid"
    echo "node $n started (pid $!, log $DIR/node$n.log)"
}

stop_node() {
    local n=$1 pid
    pid=$(pid_of "$n")
    if ! running "$n"; then return; fi
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "node $n did not stop; kill -9"; kill -9 "$pid"; fi
    rm -f "$DIR/node$n.pid"
    echo "node $n stopped"
}

case "${1:-}" in
    start)
        ensure_binary
        if [ -n "${2:-}" ]; then start_node "$2"; else for n in "${NODES[@]}"; do start_node "$n"; done; fi
        ;;
    stop)
        for n in "${NODES[@]}"; do stop_node "$n"; done
        ;;
    kill)
        n="${2:?kill needs a node number}"
        if running "$n"; then kill -9 "$(pid_of "$n")"; rm -f "$DIR/node$n.pid"; echo "node $n killed"; else echo "node $n is not running"; fi
        ;;
    status)
        up=""
        for n in "${NODES[@]}"; do
            if running "$n"; then echo "node $n: running (pid $(pid_of "$n"))"; up="${up:-$n}"; else echo "node $n: down"; fi
        done
        if [ -n "$up" ]; then "$WEIR" cluster status --bootstrap "127.0.0.1:${up}9092"; fi
        ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
