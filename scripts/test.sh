#!/usr/bin/env bash
# Installs the test dependencies, then runs every check and test: formatting, lints, unit,
# property and end-to-end tests (the e2e tests drive the real kubectl against berth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
