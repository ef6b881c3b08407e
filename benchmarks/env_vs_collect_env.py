"""Wall time of `gpudiag env` vs `python -m torch.utils.collect_env` on this machine.

    python benchmarks/env_vs_collect_env.py [-n 9] [--no-bytecode-cache]

Each command runs N times in a fresh interpreter (what a user pays), interleaved round by round
(gpudiag, collect_env, gpudiag, ...) so that load from other processes hits both alike. Prints
each command's median / p10 / p90, the ratio of medians, and the per-round ratios' p10-p90
interval; the 1-minute load average before and after says how busy the machine was.

Bytecode: a pip-installed gpudiag is byte-compiled at install time, like torch. A checkout run
with PYTHONDONTWRITEBYTECODE=1 recompiles gpudiag's ~40 modules on every start (torch's are
already compiled), which is not what a user pays; by default both commands therefore get a
temporary PYTHONPYCACHEPREFIX (filled by the warm-up run, removed afterwards).
--no-bytecode-cache measures the checkout condition instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpudiag.measure.stats import median, percentile  # noqa: E402

COMMANDS = {
    "gpudiag env": [sys.executable, "-m", "gpudiag", "env"],
    "torch.utils.collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
}


def time_once(cmd, env) -> float:
    """Seconds one command takes from spawn to exit; a failure stops the benchmark with its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # Windows has no load average
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=9)
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as it is (a checkout's condition)")
    args = ap.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else ROOT
    cache = None
    if not args.no_bytecode_cache:
        cache = tempfile.mkdtemp(prefix="gpudiag-bench-pyc-")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
    try:
        load_before = _load()
        for cmd in COMMANDS.values():  # one untimed warm-up each (file cache, bytecode)
            time_once(cmd, env)
        times = {name: [] for name in COMMANDS}
        for _ in range(args.runs):
            for name, cmd in COMMANDS.items():
                times[name].append(time_once(cmd, env))
        load_after = _load()
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}")
    print(f"runs per command: {args.runs}, interleaved, after one warm-up each; bytecode cache: "
          f"{'off (PYTHONDONTWRITEBYTECODE as set)' if args.no_bytecode_cache else 'on (temporary PYTHONPYCACHEPREFIX)'}")
    print(f"1-minute load average: {load_before} before, {load_after} after")
    for name, ts in times.items():
        print(f"  {name:<26} median {median(ts):6.3f} s   p10 {percentile(ts, 10):6.3f} s   "
              f"p90 {percentile(ts, 90):6.3f} s   min {min(ts):6.3f} s   max {max(ts):6.3f} s")
    env_t, ce_t = times["gpudiag env"], times["torch.utils.collect_env"]
    ratios = [a / b for a, b in zip(env_t, ce_t)]
    ratio = median(env_t) / median(ce_t)
    print(f"ratio of medians: gpudiag env takes {ratio:.1%} of collect_env's time ({1 / ratio:.1f}x faster); "
          f"per-round ratios p10-p90 {percentile(ratios, 10):.1%}-{percentile(ratios, 90):.1%} (n={len(ratios)})")
    spread = max(max(ts) / min(ts) for ts in times.values())
    if spread > 1.5:
        print(f"note: the slowest run of a command took {spread:.1f}x its fastest: the machine was busy, "
              "trust the ratio (both commands were measured in the same rounds) more than the seconds")


if __name__ == "__main__":
    main()
