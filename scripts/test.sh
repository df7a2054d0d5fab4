#!/usr/bin/env bash
# Every test: unit, doc, property, scenario and stress tests (release build, so the stress
# tests see real concurrency), then the loom models (scripts/loom.sh) when they exist.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
if [ -f scripts/loom.sh ]; then
  bash scripts/loom.sh
fi
