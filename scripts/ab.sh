#!/usr/bin/env bash
# Side-by-side runs of two broker binaries: alternates A and B for ROUNDS rounds of one
# workload, each against a fresh broker (config/bench.toml, a fresh data directory), and
# prints one line per run. On a shared, noisy machine only alternating runs compare.
#
#   scripts/ab.sh BROKER_A BROKER_B WORKLOAD [ROUNDS=3] [SECONDS=20]
#   LOADGEN=path/to/weir-loadgen  (default: target/release/weir-loadgen)
#   AB_PORT=29092                 (loopback port for the brokers)
#   WORKLOAD_B=FILE               (B runs this workload instead: two workloads, one binary)
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); WORKLOAD=$(realpath "$3"); ROUNDS=${4:-3}; SECS=${5:-20}
WORKLOAD_B=$(realpath "${WORKLOAD_B:-$3}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LOADGEN=$(realpath "${LOADGEN:-target/release/weir-loadgen}")
PORT=${AB_PORT:-29092}
TMP=$(mktemp -d -t weir-ab.XXXXXX)
BROKER_PID=
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

one_run() { # label binary workload
    rm -rf "$TMP/data"
    "$2" serve --config config/bench.toml --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" 2> "$TMP/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 1 300); do grep -q "weir is ready" "$TMP/broker.log" && break; sleep 0.1; done
    grep -q "weir is ready" "$TMP/broker.log" || { cat "$TMP/broker.log" >&2; exit 1; }
    local before after dir
    before=$(cpu_ticks "$BROKER_PID")
    "$LOADGEN" run --bootstrap "127.0.0.1:$PORT" --workload "$3" --duration "$SECS" --warmup 3 \
        --out "$TMP/out" --unpinned > "$TMP/loadgen.out" 2>&1 || { cat "$TMP/loadgen.out" >&2; exit 1; }
    after=$(cpu_ticks "$BROKER_PID")
    kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=
    dir=$(sed -n 's/^Results: //p' "$TMP/loadgen.out" | tail -1)
    python3 - "$1" "$dir/summary.json" $((after - before)) "$(getconf CLK_TCK)" <<'PY'
import json, sys
label, path, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = json.load(open(path))
wall = s["loadgenCpu"]["wallSeconds"]
p, e = s["publishLatencyUs"], s["endToEndLatencyUs"]
ms = lambda v: "%.2f" % (v / 1000)
d = s["delivery"]
t = s["throughput"]
cpu = ticks / hz / wall
# Broker CPU per MB produced and consumed (issue 15's target 4): consumers that fall behind
# move fewer bytes, so CPU per produced MB alone would flatter a slower fetch path.
moved = t["publishMBPerSec"] + t["consumeMBPerSec"]
per_mb = f"{cpu * 1e6 / moved:.0f}" if moved else "-"
print(f"{label}\tmsg/s {t['publishMsgsPerSec']:.0f}\tMB/s {t['publishMBPerSec']:.1f} in, {t['consumeMBPerSec']:.1f} out"
      f"\tbroker CPU {100 * cpu:.0f}% ({per_mb} µs/MB in+out)\tloadgen CPU {s['loadgenCpu']['percentOfRun']:.0f}%"
      f"\tpublish p50/p99/p99.99 {ms(p['p50'])}/{ms(p['p99'])}/{ms(p['p99.99'])} ms"
      f"\te2e p50/p99 {ms(e['p50'])}/{ms(e['p99'])} ms\tmissing {d['missing']} dup {d['duplicates']}")
PY
}

for i in $(seq 1 "$ROUNDS"); do
    one_run "A-$i" "$A" "$WORKLOAD"
    one_run "B-$i" "$B" "$WORKLOAD_B"
done
