#!/usr/bin/env bash
# Train the three curricula one after another (FF first), one CPU thread each.
# Re-running resumes every run from its last.pt; finished runs are skipped quickly.
# Usage: engines/harmonizer/run_curricula.sh [STEPS] [RUN_ROOT] [extra train.py options...]
set -euo pipefail
steps="${1:-10000}"
root="${2:-/work/runs/harmonizer}"
shift $(( $# > 2 ? 2 : $# ))
cd "$(dirname "$0")/../.."
python="${PYTHON:-.venv/bin/python}"
for curriculum in ff random10 midpoint; do
    out="$root/$curriculum"
    mkdir -p "$out"
    if grep -q '"event": "done"' "$out/log.jsonl" 2>/dev/null; then
        echo "$(date -u +%FT%TZ) $curriculum already done" >> "$root/logs/driver.log"
        continue
    fi
    echo "$(date -u +%FT%TZ) start $curriculum ($steps steps)" >> "$root/logs/driver.log"
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 "$python" -m engines.harmonizer.train \
        --curriculum "$curriculum" --steps "$steps" --out "$out" "$@" >> "$root/logs/train_$curriculum.out" 2>&1
    echo "$(date -u +%FT%TZ) end $curriculum" >> "$root/logs/driver.log"
done
