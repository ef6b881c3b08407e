"""Shared helpers for the benchmark scripts: time a command several times, report medians."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpudiag.stats import median  # noqa: E402


def time_command(argv: Sequence[str], runs: int, env=None) -> List[float]:
    """Wall seconds of each run (stdout discarded); fails loudly if the command fails."""
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return times


def compare(label_a: str, argv_a: Sequence[str], label_b: str, argv_b: Sequence[str], runs: int) -> None:
    a = time_command(argv_a, runs)
    b = time_command(argv_b, runs)
    ma, mb = median(a), median(b)
    print(f"{label_a:<40} median {ma * 1000:8.0f} ms  (runs: {', '.join(f'{x * 1000:.0f}' for x in a)})")
    print(f"{label_b:<40} median {mb * 1000:8.0f} ms  (runs: {', '.join(f'{x * 1000:.0f}' for x in b)})")
    print(f"ratio {label_a} / {label_b}: {ma / mb:.3f}")
