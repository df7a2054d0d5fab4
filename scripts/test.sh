#!/usr/bin/env bash
# Every test: unit, doc, property, scenario and stress tests with every feature on (release
# build, so the stress tests see real concurrency), then the deterministic targets again in the
# debug profile, where the library's `debug_assert!` invariants are checked (a map never lands
# over a mapping, every empty page table is counted, pooled tables are zero), and the stress
# tests too, so that those invariants are checked under real concurrency with the production
# page-table shape (kept emptied tables, the pool), which loom's default shape does not have
# (both stress files take under ten seconds in debug on 2 cores), then the loom models
# (scripts/loom.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release --all-features
cargo test -p viommu --all-features --lib --test scenarios --test leak --test nesting \
  --test model --test pasid --test readside --test stress --test nesting_stress
if [ -f scripts/loom.sh ]; then
  bash scripts/loom.sh
fi
