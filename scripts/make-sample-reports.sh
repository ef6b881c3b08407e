#!/usr/bin/env bash
# Regenerates sample_reports/ from real runs on THIS machine (never by hand):
#   cpu-linux.{json,html,md}        `gpudiag report` as a user runs it
#   cpu-linux-1cpu.{json,html,md}   the same, pinned to one CPU (taskset) with CUDA_LAUNCH_BLOCKING=1,
#                                   so the comparison has a real difference to show
#   compare-cpu.{html,md}           `gpudiag compare` of the two
#   compare-gpu-cpu.{html,md}       when sample_reports/gpu-report.json exists (written by
#                                   scripts/gpu-check.sh on a GPU machine): that report vs this one
#   watch-cpu-linux.{json,html,md}  `gpudiag watch` of examples/watch_demo.py (GIL-bound threads,
#                                   workers whose memory grows); its terminal output goes to stderr
# Usage: scripts/make-sample-reports.sh [--full]     (PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
MODE="${1:---quick}"
OUT=sample_reports
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
gd() { "$PY" -m gpudiag "$@"; }

echo "== 1/3 report on this machine ($MODE)" >&2
gd report "$MODE" --json "$OUT/cpu-linux.json" -o "$OUT/cpu-linux.html" --markdown "$OUT/cpu-linux.md"

echo "== 2/3 the same pinned to one CPU, with CUDA_LAUNCH_BLOCKING=1" >&2
PIN=()
if command -v taskset >/dev/null 2>&1 && [ "$("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))')" -gt 1 ]; then
  PIN=(taskset -c 0)
else
  echo "   (taskset missing or only one CPU: only the environment variable differs)" >&2
fi
CUDA_LAUNCH_BLOCKING=1 "${PIN[@]}" "$PY" -m gpudiag report "$MODE" --json "$OUT/cpu-linux-1cpu.json" \
  -o "$OUT/cpu-linux-1cpu.html" --markdown "$OUT/cpu-linux-1cpu.md"

echo "== 3/3 comparisons" >&2
gd compare "$OUT/cpu-linux.json" "$OUT/cpu-linux-1cpu.json" -o "$OUT/compare-cpu.html"
gd compare "$OUT/cpu-linux.json" "$OUT/cpu-linux-1cpu.json" -o "$OUT/compare-cpu.md"
if [ -f "$OUT/gpu-report.json" ]; then
  gd compare "$OUT/gpu-report.json" "$OUT/cpu-linux.json" -o "$OUT/compare-gpu-cpu.html"
  gd compare "$OUT/gpu-report.json" "$OUT/cpu-linux.json" -o "$OUT/compare-gpu-cpu.md"
fi

echo "== 4/4 gpudiag watch on examples/watch_demo.py" >&2
gd watch --interval 0.25 --json "$OUT/watch-cpu-linux.json" -o "$OUT/watch-cpu-linux.html" \
  --markdown "$OUT/watch-cpu-linux.md" -- "$PY" examples/watch_demo.py --seconds 12
ls -l "$OUT" >&2
