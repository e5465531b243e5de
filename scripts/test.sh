#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Build output lives outside the clone so fresh clones (CI) reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mqtt-operator/target}"
# Incremental caches only help edit-compile loops; in a test run they just fill the disk.
export CARGO_INCREMENTAL=0
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
