#!/usr/bin/env bash
# The model-v2 pilot (issue 17): each candidate trains for the same wall-clock
# budget (max_seconds in its config, 35 min) on split_v2's training part and is
# scored on the tune split. Run in the background; logs in runs/pilot/NAME.log.
#   bash scripts/pilot.sh [NAME ...]    (default: all four, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pneumo fetch-encoder efficientnet_lite0
mkdir -p runs/pilot
for name in "${@:-lite0_384 lite0_512 scratch_256 scratch_384}"; do
  for n in $name; do
    echo "== $n $(date -u +%FT%TZ)"
    .venv/bin/pneumo train --config "configs/pilot/$n.json" --out "runs/pilot/$n" \
      > "runs/pilot/$n.log" 2>&1 || echo "!! $n failed (see runs/pilot/$n.log)"
  done
done
echo "== done $(date -u +%FT%TZ)"
