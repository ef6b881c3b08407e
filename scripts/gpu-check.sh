#!/usr/bin/env bash
# Every GPU path of gpudiag, run from a checkout on a GPU machine, offline, without installing it
# (issue 16). Each step writes into OUT_DIR and has its own time limit, so a late failure still
# leaves the earlier results; the whole script fits in one 10-minute command.
#
#   scripts/gpu-check.sh                  # writes into sample_reports/
#   OUT_DIR=/tmp/r scripts/gpu-check.sh   # ... or there; $OUT (a collection folder) gets a copy
#
# Order: 1 the gpu-marked tests; 2 `report --quick`; 3 an independent cross-check of the pinned H2D
# peak and synchronize latency (scripts/gpu_crosscheck.py, none of gpudiag's code); 4 `watch` of a
# short GPU loop; 5 a one-rank `fleet`; 6 `report --full` if SECONDS_LEFT allows.
# Needs python with torch (a CUDA build), click, jinja2, psutil, pynvml, pytest.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-sample_reports}"
BUDGET_S="${BUDGET_S:-540}"  # stop starting new steps after this many seconds
mkdir -p "$OUT_DIR"
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
step() { echo "== $1 ($(left) s left)"; }
status=0

step "1/6 gpu-marked tests"
timeout 180 "$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$OUT_DIR/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}
echo "pytest exit code: $tests_rc" | tee -a "$OUT_DIR/gpu-tests.txt"
[ "$tests_rc" -eq 0 ] || status=1

step "2/6 gpudiag report --quick"
timeout 150 "$PY" -m gpudiag report --quick --json "$OUT_DIR/gpu-report.json" \
    -o "$OUT_DIR/gpu-report.html" --markdown "$OUT_DIR/gpu-report.md" 2>&1 | tee "$OUT_DIR/gpu-report.txt"
echo "report exit code: ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/gpu-report.txt"

step "3/6 independent cross-check"
timeout 60 "$PY" scripts/gpu_crosscheck.py "$OUT_DIR/gpu-report.json" > "$OUT_DIR/gpu-crosscheck.json" \
    2> "$OUT_DIR/gpu-crosscheck.err"
echo "cross-check exit code: $?"; cat "$OUT_DIR/gpu-crosscheck.json"

step "4/6 gpudiag watch of a short GPU loop"
cat > "$OUT_DIR/gpu_loop.py" <<'EOF'
# 6 s of a small training-like loop with a host round trip per step (the seed story's pattern).
import time
import torch
model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10)).cuda()
x = torch.randn(256, 1024, device="cuda")
t0 = time.time()
while time.time() - t0 < 6:
    loss = model(x).square().mean()
    loss.backward()
    loss.item()
EOF
timeout 60 "$PY" -m gpudiag watch --json "$OUT_DIR/gpu-watch.json" -o "$OUT_DIR/gpu-watch.html" \
    --markdown "$OUT_DIR/gpu-watch.md" -- "$PY" "$OUT_DIR/gpu_loop.py" 2>&1 | tail -25
echo "watch exit code: ${PIPESTATUS[0]}"

step "5/6 gpudiag fleet, one rank"
timeout 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m gpudiag fleet \
    --json "$OUT_DIR/gpu-fleet.json" -o "$OUT_DIR/gpu-fleet.html" 2>&1 | tail -25
echo "fleet exit code: ${PIPESTATUS[0]}"

if [ "$(left)" -gt 200 ]; then
  step "6/6 gpudiag report --full"
  timeout $(( $(left) - 20 )) "$PY" -m gpudiag report --full --json "$OUT_DIR/gpu-report-full.json" \
      -o "$OUT_DIR/gpu-report-full.html" --markdown "$OUT_DIR/gpu-report-full.md" 2>&1 | tail -25
  echo "full report exit code: ${PIPESTATUS[0]}"
else
  echo "== 6/6 skipped: $(left) s left"
fi

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp -f "$OUT_DIR"/gpu-* "$OUT"/ 2>/dev/null || true
fi
exit "$status"
