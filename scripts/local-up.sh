#!/usr/bin/env bash
# The README's first command: builds the broker and the operator, then runs
# `mqtt-operator local up` (default: the quickstart). Extra arguments go to `local up`, e.g.
#   bash scripts/local-up.sh -f my-manifests/ -d /tmp/mqtt-local --base-port 28830
# Installs what it needs first (protoc for rmqtt, mosquitto-clients; Rust must be present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --local
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mqtt-operator/target}"
cargo build -p broker --bin mqtt-broker -p operator --bin mqtt-operator
args=("$@")
if [[ ! " ${args[*]-} " =~ " -f " && ! " ${args[*]-} " =~ " --filename " ]]; then
  args=(-f manifests/examples/quickstart/ "${args[@]}")
fi
exec "$CARGO_TARGET_DIR/debug/mqtt-operator" local up "${args[@]}"
