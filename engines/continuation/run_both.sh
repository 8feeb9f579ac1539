#!/usr/bin/env bash
# Smart then plain-embedding training, same seed, data and budget, one core at low priority.
#   nohup engines/continuation/run_both.sh STEPS [D_MODEL] > /work/runs/continuation/logs/driver.log 2>&1 &
# Re-running resumes each run from its last.pt (a finished run returns at once).
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-600}"
d_model="${2:-160}"
root=/work/runs/continuation
export OMP_NUM_THREADS=1
for embedding in smart plain; do
  echo "$(date -u +%FT%TZ) start $embedding ($steps steps, d_model $d_model)"
  nice -n 10 .venv/bin/python -m engines.continuation.train --embedding "$embedding" --steps "$steps" \
    --d-model "$d_model" --eval-every 200 --seed 1234 --threads 1 --out "$root/$embedding"
  echo "$(date -u +%FT%TZ) done $embedding"
done
