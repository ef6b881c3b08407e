"""Wall time of `gpudiag env` vs `python -m torch.utils.collect_env` on this machine.

    python benchmarks/env_vs_collect_env.py [-n 5]

Each command runs N times in a fresh interpreter (what a user pays), alternating so that
caches warm both equally; prints the median, min and max of each and the ratio of medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpudiag.measure.stats import median  # noqa: E402

COMMANDS = {
    "gpudiag env": [sys.executable, "-m", "gpudiag", "env"],
    "torch.utils.collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
}


def time_once(cmd) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=5)
    args = ap.parse_args()
    times = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():  # one untimed warm-up each (file cache, .pyc)
        time_once(cmd)
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            times[name].append(time_once(cmd))
    print(f"machine: {platform.platform()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}")
    print(f"runs per command: {args.runs} (after one warm-up)")
    for name, ts in times.items():
        print(f"  {name:<26} median {median(ts):6.3f} s   min {min(ts):6.3f} s   max {max(ts):6.3f} s")
    env, ce = median(times["gpudiag env"]), median(times["torch.utils.collect_env"])
    print(f"ratio: gpudiag env takes {env / ce:.1%} of collect_env's median time ({ce / env:.1f}x faster)")


if __name__ == "__main__":
    main()
