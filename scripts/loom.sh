#!/usr/bin/env bash
# Runs viommu's loom models (loom-tests/, described in docs/loom.md).
#
# The library is rebuilt with `--cfg viommu_loom` (src/sync.rs switches every primitive to
# loom's and the group cell to an atomic-pointer stand-in for arc-swap; readers use the
# symmetric grace-period protocol, which loom models), in a target directory of its own so the
# normal build is not invalidated. Release mode: loom runs every
# model tens of thousands of times.
#
# Environment:
#   LOOM_MAX_PREEMPTIONS   preemption bound (default 3; 4 takes about twice as long)
#   LOOM_MAX_BRANCHES      scheduling points per execution (default: loom-tests' 20000)
#   LOOM_TEST_THREADS      models run at once within a test binary (default: cargo's choice)
#   LOOM_TARGET_DIR        cargo target directory (default target-loom)
#   LOOM_LOG, LOOM_LOCATION, LOOM_CHECKPOINT_FILE: loom's own debugging aids
# Extra arguments go to `cargo test`, e.g. `scripts/loom.sh --test unmap`.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export RUSTFLAGS="--cfg viommu_loom -C debug-assertions=on"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target-loom}"

harness_args=()
if [ -n "${LOOM_TEST_THREADS:-}" ]; then
  harness_args+=("--test-threads=${LOOM_TEST_THREADS}")
fi

start=$(date +%s)
echo "== loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS}, target dir ${CARGO_TARGET_DIR})"
status=0
cargo test -p viommu-loom-tests --release "$@" -- --nocapture ${harness_args[@]+"${harness_args[@]}"} || status=$?
elapsed=$(( $(date +%s) - start ))
printf '== loom: %s in %dm%02ds (build included)\n' \
  "$([ "$status" -eq 0 ] && echo passed || echo FAILED)" $((elapsed / 60)) $((elapsed % 60))
exit "$status"
