"""Does `--cycle` give the same answer five times running on a real model step? (issue 22)

    python benchmarks/cycle_repeatability.py [-n 5] [--python NAME=INTERPRETER ...] [--mode quick]

Runs `gpudiag report --quick --only cycle --cycle examples.transformer_step:make_step` n times back
to back (fresh interpreters, from a temporary folder holding a copy of examples/transformer_step.py,
so the gpudiag that runs is the interpreter's own: this one's by default; with --python, others in
turn, e.g. a venv whose gpudiag is an older commit), and prints each run's answer (confidence,
strategy, tied strategies), the plain loop's rate, its spread and its drift (the median of its second
half of rounds over the first half), the one-thread plain loop where the report has it, each parallel
strategy's speedup and interval, the cycles per timed run, the rounds, the other programs' load and
the machine's 1-minute load average. Done when some strategy A is named in at least 4 of n runs, as
"clear: A" or in a tie that contains A; "too noisy" never counts as agreeing. Timing goals live
here, not in tests.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = "examples.transformer_step:make_step"


def one_run(python: str, out_dir: str, tag: str, mode: str) -> dict:
    """Run the report once; the figures this benchmark prints."""
    js = os.path.join(out_dir, tag + ".json")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-m", "gpudiag", "report", f"--{mode}", "--only", "cycle", "--cycle", STEP,
                           "--json", js, "-o", os.path.join(out_dir, tag + ".html")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=out_dir, timeout=900)
    wall = time.perf_counter() - t0
    if not os.path.exists(js):
        raise SystemExit(f"report failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    with open(js, encoding="utf-8") as fh:
        rep = json.load(fh)
    rec = rep.get("recommendation") or {}
    cyc = (rep["probes"].get("cycle") or {}).get("data") or {}
    rows = {r["name"]: r for r in cyc.get("strategies") or []}
    named = set()
    if rec.get("confidence") in ("clear", "tie") and rec.get("strategy"):
        named = {rec["strategy"], *(rec.get("tied_with") or [])}
    return {"rec": rec, "rows": rows, "named": named, "load": load, "wall": wall,
            "cycles": (cyc.get("workload") or {}).get("cycles"), "rounds": cyc.get("rounds") or {},
            "other": (cyc.get("load") or {}).get("other_busy_cores"),
            "codes": [f["code"] for f in (rep["probes"].get("cycle") or {}).get("findings") or []]}


def drift(row: dict, cycles) -> str:
    """'+12 %': the median of the second half of a row's rounds over the first half's ('' with too few)."""
    rates = [cycles / w for w in row.get("wall_s") or [] if w]
    if len(rates) < 4:
        return ""
    h = len(rates) // 2
    return f"{100 * (statistics.median(rates[-h:]) / statistics.median(rates[:h]) - 1):+.0f} %"


def answer(r: dict) -> str:
    """'clear: threads', 'tie: serial, threads', 'too noisy' ..."""
    rec = r["rec"]
    conf = rec.get("confidence")
    if conf == "clear":
        return f"clear: {rec.get('strategy')}"
    if conf == "tie":
        return "tie: " + ", ".join([rec.get("strategy")] + list(rec.get("tied_with") or []))
    return {"too_noisy": "too noisy"}.get(conf, str(conf))


def _rate(row: dict) -> str:
    if not row or row.get("status") != "ok":
        return f"{(row or {}).get('status', '-')}"
    ci = row.get("speedup_ci95")
    ci_text = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""
    return f"{row['speedup_vs_serial']:.2f}x{ci_text}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--python", action="append", default=[], metavar="NAME=INTERPRETER",
                    help="an interpreter whose gpudiag to run (repeatable; runs alternate); default: this one")
    ap.add_argument("--keep", metavar="DIR", help="also copy each run's JSON report into DIR")
    args = ap.parse_args()
    variants = dict(v.split("=", 1) for v in args.python) or {"this checkout": sys.executable}
    results = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="gpudiag-repeat-") as tmp:
        os.makedirs(os.path.join(tmp, "examples"))
        shutil.copy(os.path.join(HERE, "examples", "transformer_step.py"), os.path.join(tmp, "examples"))
        for i in range(args.runs):
            for name, python in variants.items():
                tag = f"{name.replace(' ', '_')}-{i}"
                results[name].append(one_run(python, tmp, tag, args.mode))
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    shutil.copy(os.path.join(tmp, tag + ".json"), args.keep)
    print(f"{args.runs} runs of `gpudiag report --{args.mode} --only cycle --cycle {STEP}`, "
          f"{os.cpu_count()} logical CPUs; load = 1-minute load average at each run's start")
    for name, runs in results.items():
        print(f"== {name}")
        for j, r in enumerate(runs):
            s = r["rows"].get("serial") or {}
            one = s.get("one_thread") or {}
            one_text = (f"; 1 thread {one['cycles_per_s']:.1f}, spread {one.get('spread_fraction')}"
                        if one.get("cycles_per_s") else "")
            print(f"  run {j + 1}: {answer(r)}")
            print(f"     plain loop {s.get('cycles_per_s') or 0:.1f} cycles/s (torch threads {s.get('torch_threads')}, "
                  f"spread {s.get('spread_fraction')}, drift {drift(s, r['cycles']) or '-'}{one_text}); threads "
                  f"{_rate(r['rows'].get('threads'))}, processes {_rate(r['rows'].get('processes'))}")
            print(f"     {r['cycles']} cycles per run, {r['rounds'].get('rounds')} rounds "
                  f"({r['rounds'].get('stopped_because')}, {r['rounds'].get('rejected')} rejected), other load "
                  f"{r['other']}, load average {r['load']:.2f}, wall {r['wall']:.1f} s"
                  + (f", findings {', '.join(c for c in r['codes'] if c != 'CYCLE_FASTEST_STRATEGY')}"
                     if any(c != "CYCLE_FASTEST_STRATEGY" for c in r["codes"]) else ""))
        counts = collections.Counter(a for r in runs for a in r["named"])
        best, n = counts.most_common(1)[0] if counts else ("-", 0)
        rates = [(r["rows"].get("serial") or {}).get("cycles_per_s") or 0 for r in runs]
        print(f"  plain loop across runs: {', '.join(f'{x:.0f}' for x in rates)} cycles/s")
        print(f"  named most often: {best} in {n} of {len(runs)} -> "
              + ("REPEATABLE" if n >= max(1, len(runs) - 1) else "NOT repeatable"))


if __name__ == "__main__":
    main()
