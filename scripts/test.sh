#!/usr/bin/env bash
# The whole test suite: the house rules (rustfmt, clippy with warnings denied), unit and
# integration tests (Rust, against the real `weir` binary;
# the broker's and weir-loadgen's) and the client compatibility tests (kcat,
# confluent-kafka, kafka-python, kafkajs). Installs what it needs: kcat from Debian, a
# Python venv (.venv) with the pinned clients, the pinned Node modules (npm ci), and, as
# root, iproute2 for the network namespaces of the partition tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v kcat >/dev/null 2>&1; then
    log "installing kcat (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq kcat >/dev/null
fi

# The network-partition tests make network namespaces (as root; skipped otherwise).
if [ "$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1; then
    log "installing iproute2 (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

REQ=tests/compat/requirements.txt
STAMP=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s "$REQ" "$STAMP"; then
    log "creating .venv with the pinned clients"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$STAMP"
fi

NODE_DIR=tests/compat/node
NODE_STAMP=$NODE_DIR/node_modules/.package-lock.json
if ! command -v npm >/dev/null 2>&1; then
    log "installing Node.js and npm (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -f "$NODE_STAMP" ] || ! cmp -s "$NODE_DIR/package-lock.json" "$NODE_STAMP.lock"; then
    log "installing the pinned Node modules (kafkajs)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --silent)
    cp "$NODE_DIR/package-lock.json" "$NODE_STAMP.lock"
fi

log "house rules: cargo fmt --check, cargo clippy --all-targets -D warnings"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "building (release): the broker and the load generator"
cargo build --release --bins --workspace --quiet

log "unit and integration tests (broker and load generator)"
WEIR_BIN="$PWD/target/release/weir" cargo test --release --workspace --quiet -- --test-threads=2

log "client compatibility tests"
WEIR_BIN="$PWD/target/release/weir" .venv/bin/python -m pytest -q tests/compat "$@"
