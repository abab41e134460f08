#!/usr/bin/env bash
# Replication on three local nodes (scripts/cluster.sh, config/cluster/): each workload
# config/workloads/cluster-rf{1,3}-acks-{1,all}.toml against a fresh cluster, with the CPU
# each node's control shard (where the replica fetchers run) and data shard used, and the
# bytes the followers stored per byte the leaders stored (2 on RF=3: records travel and are
# stored as produced). RF=3 runs keep the configs' min.insync.replicas=2; RF=1 runs set 1.
#
#   scripts/bench-cluster.sh [ROUNDS=1] [SECONDS=20]
#   LOADGEN=path/to/weir-loadgen (default target/release/weir-loadgen)
set -euo pipefail
ROUNDS=${1:-1}; SECS=${2:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LOADGEN=$(realpath "${LOADGEN:-target/release/weir-loadgen}")
TMP=$(mktemp -d -t weir-bench-cluster.XXXXXX)
BOOT=127.0.0.1:19092  # the load generator learns the others from Metadata
cleanup() { scripts/cluster.sh -d "$TMP/c" stop >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT

# user+system ticks of a process's threads whose name starts with a prefix (glommio names an
# executor's thread, and its blocking-work thread, "<name>-<id>")
thread_ticks() { # pid prefix
    local total=0 t
    for t in /proc/"$1"/task/*; do
        if [[ "$(cat "$t/comm" 2>/dev/null)" == "$2"* ]]; then
            total=$((total + $(sed 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')))
        fi
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

echo "disk (4 KiB O_DIRECT, us: write p50 p99, write+fdatasync p50 p99): $(python3 ../shared/tools/disk-limit.py "$TMP/limit" --fallocated)"
for round in $(seq 1 "$ROUNDS"); do
    for wl in cluster-rf1-acks-1 cluster-rf3-acks-1 cluster-rf1-acks-all cluster-rf3-acks-all; do
        scripts/cluster.sh -d "$TMP/c" stop >/dev/null 2>&1 || true
        rm -rf "$TMP/c"
        # The configs ask acks=all for two in-sync replicas; a single replica has only one.
        settings=""
        [[ $wl == *rf1* ]] && settings="min.insync.replicas=1"
        WEIR_SETTINGS="$settings" scripts/cluster.sh -d "$TMP/c" start >/dev/null
        for _ in $(seq 1 300); do
            [ "$(grep -l 'weir is ready' "$TMP"/c/node*.log 2>/dev/null | wc -l)" = 3 ] && break
            sleep 0.1
        done
        pids=$(cat "$TMP"/c/node*.pid)
        declare -A c0 d0
        for p in $pids; do c0[$p]=$(thread_ticks "$p" weir-control); d0[$p]=$(thread_ticks "$p" weir-shard-); done
        "$LOADGEN" run --bootstrap "$BOOT" --workload "config/workloads/$wl.toml" --duration "$SECS" --warmup 5 \
            --out "$TMP/results" --unpinned > "$TMP/run.txt" 2>&1 || { cat "$TMP/run.txt"; exit 1; }
        control=0; data=0
        for p in $pids; do
            control=$((control + $(thread_ticks "$p" weir-control) - c0[$p]))
            data=$((data + $(thread_ticks "$p" weir-shard-) - d0[$p]))
        done
        # Stored bytes: a partition's leader is its first replica; the rest are followers.
        stored=$(python3 - "$TMP/c" <<'EOF'
import glob, os, sys, struct
base = sys.argv[1]
sizes = {}  # partition -> {node: bytes}
for seg in glob.glob(f"{base}/node*/lg-cluster-*/*.log"):
    node = seg.split("/")[-3]
    part = seg.split("/")[-2]
    data = open(seg, "rb").read()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">i", data[pos + 8:pos + 12])
        if length <= 0 or pos + 12 + length > len(data):
            break
        pos += 12 + length
    per_node = sizes.setdefault(part, {})
    per_node[node] = per_node.get(node, 0) + pos
total = sum(sum(v.values()) for v in sizes.values())
one = sum(max(v.values()) for v in sizes.values())
print(f"{(total - one) / one:.3f}" if one else "-")
EOF
)
        summary=$(sed -n '/^Throughput/,$p' "$TMP/run.txt" | tr -s ' ' | paste -sd' ' -)
        printf '%s round %s: control shards %.1f s, data shards %.1f s CPU (control share %.0f%%); follower bytes per leader byte %s\n  %s\n' \
            "$wl" "$round" "$(echo "$control/$hz" | bc -l)" "$(echo "$data/$hz" | bc -l)" \
            "$(echo "100*$control/($control+$data+1)" | bc -l)" "$stored" "$summary"
    done
done
