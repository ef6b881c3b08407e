#!/usr/bin/env bash
# Run gpudiag's GPU checks from a checkout on a GPU machine, offline, without installing it.
#
#   scripts/gpu-check.sh            # writes sample_reports/gpu-report.{json,html,md}
#   OUT_DIR=/tmp/r scripts/gpu-check.sh
#
# 1. the `gpu`-marked tests (pytest -m gpu), exit code remembered;
# 2. `gpudiag report --full` for this machine (JSON, HTML, Markdown), written even when tests fail;
# 3. when $OUT is set (a collection folder), the reports are copied there too.
# Exits with pytest's code. Needs python with torch (CUDA build), click, jinja2, psutil, pytest.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-sample_reports}"
mkdir -p "$OUT_DIR"

echo "== gpu-marked tests"
timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$OUT_DIR/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}
echo "== pytest exit code: $tests_rc"

echo "== gpudiag report --full"
timeout 300 "$PY" -m gpudiag report --full --json "$OUT_DIR/gpu-report.json" \
    -o "$OUT_DIR/gpu-report.html" --markdown "$OUT_DIR/gpu-report.md"
report_rc=$?
echo "== report exit code: $report_rc"

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp -f "$OUT_DIR"/gpu-report.json "$OUT_DIR"/gpu-report.html "$OUT_DIR"/gpu-report.md \
        "$OUT_DIR"/gpu-tests.txt "$OUT"/ 2>/dev/null || true
fi
exit "$tests_rc"
