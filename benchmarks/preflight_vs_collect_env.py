"""Wall time of `gpudiag preflight --json` against `python -m torch.utils.collect_env`, same machine.

Each command runs as a fresh process (what a user pays), alternating so both see the same machine
state, after one untimed warm-up of each (disk cache). Prints every run, the medians and the ratio;
the goal is preflight < 1/4 of collect_env.

    python benchmarks/preflight_vs_collect_env.py [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpudiag.measure.stats import median, summarize  # noqa: E402

COMMANDS = {
    "preflight": [sys.executable, "-m", "gpudiag", "preflight", "--json"],
    "collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
}


def time_once(cmd, cwd, env):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    elapsed = time.perf_counter() - t0
    # preflight exits 1 when not ready (e.g. no GPU): that is a result, not a failure of the command
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd[2:]} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    times = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:  # no saved reports, no local modules in the way
        for cmd in COMMANDS.values():
            time_once(cmd, cwd, env)
        for i in range(args.runs):
            for name, cmd in COMMANDS.items():
                times[name].append(time_once(cmd, cwd, env))
                if not args.json:
                    print(f"run {i + 1}/{args.runs} {name:<12} {times[name][-1]:.3f} s", flush=True)

    med = {name: median(v) for name, v in times.items()}
    ratio = med["preflight"] / med["collect_env"]
    out = {
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} logical CPUs, "
                   f"Python {platform.python_version()}",
        "runs": args.runs,
        "seconds": {name: summarize(v) for name, v in times.items()},
        "median_s": med,
        "ratio_preflight_to_collect_env": ratio,
        "goal_met": ratio < 0.25,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"\n{out['machine']}; {args.runs} runs each, fresh processes")
    for name in COMMANDS:
        s = out["seconds"][name]
        print(f"  {name:<12} median {s['median']:.3f} s  (min {s['min']:.3f}, max {s['max']:.3f})")
    print(f"  ratio preflight / collect_env = {ratio:.3f} (goal < 0.25: {'met' if ratio < 0.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
