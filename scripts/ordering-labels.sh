#!/usr/bin/env bash
# Checks the ordering labels of `// ORDERING:` notes (docs/design.md, "Orderings").
#
# A note that explains a non-Relaxed atomic access or fence starts with the labels of the
# pairs it is an end of: `// ORDERING: [EPOCH] Acquire pairs with the bump ...`. A label is
# `[` + an upper-case letter + upper-case letters, digits or `-` + `]`, and is the same at every
# end of its pair, so an end can be found with `grep -rn '\[EPOCH\]' src`, whatever the
# functions at either end are called today. This script fails if
#
#   * a label appears on fewer than two notes (every pair has two ends at least), unless the
#     label is in PENDING below, whose other end lies in a file not yet labelled, or in
#     EXTERNAL, whose other end is not in this library at all (the guest's virtio driver);
#   * a PENDING label is on a note in the file named for its other end (drop it from PENDING);
#   * a PENDING or EXTERNAL label is on no note;
#   * a note in a labelled file carries no label and does not begin with `Relaxed` (a Relaxed
#     access pairs with nothing; it may still carry a label when a fence makes it an end).
#
# bash, grep and awk only. Run from the repository root (.ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

# The files whose notes are labelled. The rest of src/ is not yet: src/ioas and src/iommu.
LABELLED=(
  src/grace src/device.rs src/snapshot.rs src/group.rs src/sync.rs src/pasid.rs src/nested
  src/pagetable src/virtio_iommu
)

# Labels with one labelled end; the other end is in a file not yet labelled.
PENDING=(
  "ATTACHED src/iommu/attach.rs (the Release store of a device's attached flag)"
)

# Labels with one end in the library; the other is outside it, in the guest.
EXTERNAL=(
  "AVAIL-IDX (the virtio driver's Release store of avail.idx; tests/virtqueue.rs plays it)"
)

label_re='\[[A-Z][A-Z0-9-]*\]'
status=0

# Every note in src/ with its leading labels: "file:line LABEL LABEL ..." (none: "file:line").
notes=$(grep -rn --include='*.rs' '^[[:space:]]*// ORDERING:' src | awk -v re="$label_re" '{
  split($0, f, ":"); loc = f[1] ":" f[2]
  rest = $0; sub(/^[^:]*:[^:]*:[ \t]*\/\/ ORDERING:[ \t]*/, "", rest)
  out = loc
  while (match(rest, "^" re "[ \t]*")) {
    lab = substr(rest, RSTART, RLENGTH); gsub(/[][ \t]/, "", lab)
    out = out " " lab
    rest = substr(rest, RSTART + RLENGTH)
  }
  print out "\t" rest
}')

# Unlabelled non-Relaxed notes in labelled files.
for path in "${LABELLED[@]}"; do
  while IFS=$'\t' read -r head text; do
    [ -z "$head" ] && continue
    case "$head" in *" "*) continue ;; esac
    case "$text" in Relaxed*) continue ;; esac
    echo "ordering-labels: $head: a note that is not Relaxed needs a label: $text" >&2
    status=1
  done < <(printf '%s\n' "$notes" | grep -E "^$path(/|:)" || true)
done

# Ends per label.
counts=$(printf '%s\n' "$notes" | cut -f1 | awk '{ for (i = 2; i <= NF; i++) n[$i]++ }
  END { for (l in n) print l, n[l] }' | sort)

is_pending() {
  local p
  for p in "${PENDING[@]}" "${EXTERNAL[@]}"; do
    [ "${p%% *}" = "$1" ] && return 0
  done
  return 1
}

while read -r label n; do
  [ -z "$label" ] && continue
  if [ "$n" -lt 2 ] && ! is_pending "$label"; then
    where=$(printf '%s\n' "$notes" | cut -f1 | grep -E " $label( |\$)" | cut -d' ' -f1)
    echo "ordering-labels: [$label] has one end only ($where): label its pair" >&2
    status=1
  fi
done <<<"$counts"

for p in "${PENDING[@]}"; do
  label=${p%% *}
  other=${p#* }
  other=${other%% *}
  if ! printf '%s\n' "$counts" | grep -q "^$label "; then
    echo "ordering-labels: PENDING [$label] is on no note: drop it" >&2
    status=1
  elif printf '%s\n' "$notes" | cut -f1 | grep -E "^$other:" | grep -qE " $label( |\$)"; then
    echo "ordering-labels: [$label] is labelled in $other now: drop it from PENDING" >&2
    status=1
  fi
done

for p in "${EXTERNAL[@]}"; do
  label=${p%% *}
  if ! printf '%s\n' "$counts" | grep -q "^$label "; then
    echo "ordering-labels: EXTERNAL [$label] is on no note: drop it" >&2
    status=1
  fi
done

if [ "$status" -eq 0 ]; then
  echo "ordering-labels: $(printf '%s\n' "$counts" | grep -c .) labels, every one with its ends"
fi
exit "$status"
