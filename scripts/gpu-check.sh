#!/usr/bin/env bash
# Every GPU path of gpudiag, run from a checkout on a GPU machine, offline, without installing it
# (issues 16, 26). Each step writes into OUT_DIR and has its own time limit, so a late failure still
# leaves the earlier results. The whole script takes about 5 minutes (step limits 270 s before the
# optional --full), so a 15-minute device budget holds a machine start, one run, a fix and a rerun.
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
BUDGET_S="${BUDGET_S:-300}"  # stop starting new steps after this many seconds
mkdir -p "$OUT_DIR"
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
step() { echo "== $1 ($(left) s left)"; }
status=0

step "1/6 gpu-marked tests"
timeout 75 "$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$OUT_DIR/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}
echo "pytest exit code: $tests_rc" | tee -a "$OUT_DIR/gpu-tests.txt"
[ "$tests_rc" -eq 0 ] || status=1

step "2/6 gpudiag report --quick"
timeout 60 "$PY" -m gpudiag report --quick --json "$OUT_DIR/gpu-report.json" \
    -o "$OUT_DIR/gpu-report.html" --markdown "$OUT_DIR/gpu-report.md" 2>&1 | tee "$OUT_DIR/gpu-report.txt"
echo "report exit code: ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/gpu-report.txt"

step "3/6 independent cross-check"
timeout 30 "$PY" scripts/gpu_crosscheck.py "$OUT_DIR/gpu-report.json" > "$OUT_DIR/gpu-crosscheck.json" \
    2> "$OUT_DIR/gpu-crosscheck.err"
echo "cross-check exit code: $?"; cat "$OUT_DIR/gpu-crosscheck.json"

step "4/6 gpudiag watch of a 30 s GPU training loop fed by a DataLoader with workers"
cat > "$OUT_DIR/gpu_loop.py" <<'EOF'
# 30 s of a small training loop fed by a DataLoader with 2 workers and pinned memory, with a host
# round trip per step (the seed story's pattern).
import time
import torch
from torch.utils.data import DataLoader, Dataset


class Synthetic(Dataset):
    def __len__(self):
        return 1 << 20

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(1024, generator=g), i % 10


if __name__ == "__main__":
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(Synthetic(), batch_size=256, num_workers=2, pin_memory=True, persistent_workers=True)
    t0 = time.time()
    for x, y in loader:
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if time.time() - t0 > 30:
            break
EOF
timeout 45 "$PY" -m gpudiag watch --json "$OUT_DIR/gpu-watch.json" -o "$OUT_DIR/gpu-watch.html" \
    --markdown "$OUT_DIR/gpu-watch.md" -- "$PY" "$OUT_DIR/gpu_loop.py" 2>&1 | tail -25
echo "watch exit code: ${PIPESTATUS[0]}"

step "5/6 gpudiag fleet, one rank"
timeout 60 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m gpudiag fleet \
    --json "$OUT_DIR/gpu-fleet.json" -o "$OUT_DIR/gpu-fleet.html" 2>&1 | tail -25
echo "fleet exit code: ${PIPESTATUS[0]}"

if [ "$(left)" -gt 90 ]; then
  step "6/6 gpudiag report --full (only in the time left)"
  timeout $(( $(left) - 10 )) "$PY" -m gpudiag report --full --timeout $(( $(left) / 3 )) --json "$OUT_DIR/gpu-report-full.json" \
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
