#!/usr/bin/env bash
# Every test: unit, doc, property, scenario and stress tests with every feature on (release
# build, so the stress tests see real concurrency), then the loom models (scripts/loom.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release --all-features
if [ -f scripts/loom.sh ]; then
  bash scripts/loom.sh
fi
