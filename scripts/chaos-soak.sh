#!/usr/bin/env bash
# Many SIGKILL/restart cycles against a real server fed by continuous INSERTs, UPDATEs and DELETEs;
# after every restart each view must equal the ground truth of the acknowledged statements.
#   scripts/chaos-soak.sh [KILLS] [SEED]      (defaults: 50 kills, a random seed that is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
export TIDEGATE_CHAOS_KILLS="${1:-50}"
if [[ $# -ge 2 ]]; then export TIDEGATE_CHAOS_SEED="$2"; fi
exec python3 -m pytest -q -s -p no:cacheprovider tests/chaos
