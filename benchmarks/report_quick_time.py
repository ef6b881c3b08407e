"""Wall time of `gpudiag report --quick` against `python -m torch.utils.collect_env`, and where it goes.

    PYTHONPATH=. python benchmarks/report_quick_time.py [-n 5] [--variant NAME=PATH ...] [--python NAME=EXE ...]
        [--no-bytecode-cache]

Each round runs collect_env and then every variant once (fresh interpreters, interleaved, so load
from elsewhere hits all alike); after one untimed warm-up of each. A variant is a gpudiag source
tree put first on PYTHONPATH (default: this checkout); e.g. an older commit unpacked with
`git archive <commit> | tar -x -C /tmp/old` gives `--variant old=/tmp/old`. In a venv where gpudiag is
installed editable, its import hook wins over PYTHONPATH (every variant would run the installed
checkout): name an interpreter instead, `--python old=/path/to/venv/bin/python`, whose own gpudiag
runs (e.g. a venv without gpudiag whose .pth lists the old tree and this venv's site-packages). Prints, per variant,
the median wall time and its ratio to collect_env's median, each round's pair (collect_env's time, the
variant's, their ratio) and the median of those ratios, the median duration of each probe (from the
report JSON), the recommendation's outcome per run, and the machine's load average around each round.
Timing goals live here, not in tests: the figures depend on the machine and on what else runs.

Bytecode, as in env_vs_collect_env.py: a pip-installed gpudiag is byte-compiled at install time, like
torch, while a checkout run under PYTHONDONTWRITEBYTECODE=1 recompiles gpudiag's modules in every
process it starts. By default every command therefore gets a temporary PYTHONPYCACHEPREFIX (filled by
the warm-up runs, removed afterwards); --no-bytecode-cache measures the checkout condition instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from gpudiag.measure.stats import median  # noqa: E402


def _run(cmd, env, cwd=None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900, env=env,
                          cwd=cwd)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return elapsed


_BASE_ENV = dict(os.environ)  # with PYTHONPYCACHEPREFIX set in main() unless --no-bytecode-cache


def _report(path: str, out_dir: str, tag: str) -> tuple:
    python = sys.executable
    if path.startswith("python:"):  # an interpreter whose own gpudiag runs
        python, path = path[len("python:"):], ""
    env = dict(_BASE_ENV, PYTHONPATH=path)
    js, html = os.path.join(out_dir, tag + ".json"), os.path.join(out_dir, tag + ".html")
    # cwd outside any checkout: `python -m` puts the current folder first on sys.path
    wall = _run([python, "-m", "gpudiag", "report", "--quick", "--json", js, "-o", html], env, cwd=out_dir)
    with open(js, encoding="utf-8") as fh:
        rep = json.load(fh)
    durations = {name: res.get("duration_s") for name, res in rep["probes"].items()}
    rec = rep.get("recommendation") or {}
    load = ((rep["probes"].get("cycle") or {}).get("data") or {}).get("load") or {}
    outcome = (rec.get("confidence") or "(no confidence field)", rec.get("strategy"), rec.get("workers"),
               tuple(rec.get("tied_with") or ()), load.get("other_busy_cores"))
    return wall, durations, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="a gpudiag source tree to time (repeatable); default: this checkout")
    ap.add_argument("--python", action="append", default=[], metavar="NAME=EXE",
                    help="an interpreter whose own gpudiag to time (repeatable)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="recompile gpudiag in every process, as a checkout under PYTHONDONTWRITEBYTECODE=1 does")
    args = ap.parse_args()
    cache = None
    if not args.no_bytecode_cache:
        cache = tempfile.mkdtemp(prefix="gpudiag-bench-pyc-")
        _BASE_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        _BASE_ENV["PYTHONPYCACHEPREFIX"] = cache
    try:
        _main(args)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def _main(args) -> None:
    variants = dict(v.split("=", 1) for v in args.variant)
    variants.update((k, "python:" + v) for k, v in (p.split("=", 1) for p in args.python))
    variants = variants or {"this checkout": HERE}
    collect = [sys.executable, "-m", "torch.utils.collect_env"]
    times = {"collect_env": []}
    probes = {name: {} for name in variants}
    outcomes = {name: [] for name in variants}
    loads = []
    with tempfile.TemporaryDirectory(prefix="gpudiag-bench-") as tmp:
        _run(collect, dict(_BASE_ENV), cwd=tmp)  # warm-up: file cache, .pyc
        for name, path in variants.items():
            _report(path, tmp, "warmup")
            times[name] = []
        for i in range(args.runs):
            before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            times["collect_env"].append(_run(collect, dict(_BASE_ENV), cwd=tmp))
            for name, path in variants.items():
                wall, durations, outcome = _report(path, tmp, f"run{i}")
                times[name].append(wall)
                outcomes[name].append(outcome)
                for probe, d in durations.items():
                    probes[name].setdefault(probe, []).append(d or 0.0)
            after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            loads.append((before, after))
    print(f"machine: {platform.platform()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}; "
          f"bytecode cache: {'on (temporary PYTHONPYCACHEPREFIX)' if 'PYTHONPYCACHEPREFIX' in _BASE_ENV else 'off'}")
    print(f"runs: {args.runs} rounds (after one warm-up each); 1-minute load average before/after each round: "
          + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in loads if a is not None))
    ce = median(times["collect_env"])
    print(f"  {'collect_env':<16} median {ce:6.2f} s   min {min(times['collect_env']):6.2f}   "
          f"max {max(times['collect_env']):6.2f}")
    for name in variants:
        ts = times[name]
        print(f"  {name:<16} median {median(ts):6.2f} s   min {min(ts):6.2f}   max {max(ts):6.2f}   "
              f"= {median(ts) / ce:.2f}x collect_env")
        pairs = list(zip(times["collect_env"], ts))
        print("      pairs (collect_env s, this s, ratio): " + ", ".join(f"({c:.2f}, {t:.2f}, {t / c:.2f}x)"
                                                                     for c, t in pairs)
              + f"; median ratio {median([t / c for c, t in pairs]):.2f}x")
        print("      probes (median s): " + ", ".join(f"{p} {median(v):.2f}" for p, v in probes[name].items()))
        for j, o in enumerate(outcomes[name]):
            other = f"{o[4]:.2f} cores of other load" if isinstance(o[4], (int, float)) else "load not recorded"
            print(f"      run {j + 1}: {o[0]}, {o[1]} x{o[2]}" + (f", tied with {', '.join(o[3])}" if o[3] else "")
                  + f" ({other})")


if __name__ == "__main__":
    main()
