"""What `gpudiag watch` costs the job it watches: the job's throughput watched vs not, alternating.

    PYTHONPATH=. python benchmarks/watch_overhead.py [--pairs 6] [--seconds 4] [--interval 0.5]
        [--native-every 4 0 1] [--workload threads3 single procs]

For each workload and each --native-every value, runs `pairs` pairs (plain, watched) back to back,
in alternating order (plain first in even pairs, watched first in odd ones), so drift and other
programs' load hit both alike. The job measures its own throughput (iterations per second of a
pure-Python loop over its timed window, start-up excluded) and prints it; the watched run is
`python -m gpudiag watch --interval I --native-every N -- python job.py`.

Prints per configuration: the median throughput of each side, the overhead as 1 - median of the
paired ratios watched/plain, its 95 % bootstrap interval over the pairs, the number of pairs and
the machine's load average before and after (a shared machine adds noise: quote it with that
caveat). "tie" is printed when the interval contains 0.

Workloads: single (one thread), threads3 (three threads sharing the GIL), procs (one process
per logical core: nothing left idle for the watcher), stall (one thread timing its own stalls:
the extra stall time of a watched run divided by its native dumps estimates how long one
native dump stops the job).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOB = textwrap.dedent("""
    import multiprocessing as mp, sys, threading, time
    def loop(secs, out, i):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < secs:
            for _ in range(2000):
                n += 1
        out[i] = n / (time.perf_counter() - t0)
    def run_threads(k, secs):
        out = [0.0] * k
        ts = [threading.Thread(target=loop, args=(secs, out, i)) for i in range(k)]
        [t.start() for t in ts]; [t.join() for t in ts]
        return sum(out)
    def stall(secs):
        # One thread checking the clock in a tight loop: a gap longer than 0.5 ms is a stall (the OS
        # preempting it, or py-spy stopping the process for a native dump).
        n, gaps, t0 = 0, 0.0, time.perf_counter()
        last = t0
        while last - t0 < secs:
            now = time.perf_counter()
            if now - last > 0.0005:
                gaps += now - last
            last = now
            n += 1
        print("STALL_MS", gaps * 1e3, flush=True)
        return n / (last - t0)
    def proc(secs, q):
        out = [0.0]
        loop(secs, out, 0)
        q.put(out[0])
    if __name__ == "__main__":
        kind, secs = sys.argv[1], float(sys.argv[2])
        if kind == "procs":
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            k = mp.cpu_count()
            ps = [ctx.Process(target=proc, args=(secs, q)) for _ in range(k)]
            [p.start() for p in ps]
            total = sum(q.get() for _ in ps)
            [p.join() for p in ps]
        elif kind == "stall":
            total = stall(secs)
        else:
            total = run_threads(3 if kind == "threads3" else 1, secs)
        print("THROUGHPUT", total, flush=True)
""")


def _run(argv, env, stalls=None) -> float:
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("STALL_MS") and stalls is not None:
            stalls.append(float(line.split()[1]))
        if line.startswith("THROUGHPUT"):
            return float(line.split()[1])
    raise RuntimeError(f"no throughput from {argv[:4]}: rc={out.returncode} {out.stderr[-500:]}")


def _native_dumps(path) -> int:
    with open(path) as fh:
        return json.load(fh)["probes"]["watch"]["data"]["sampling"]["overhead"]["py_spy_native_dumps"]


def _bootstrap(ratios, reps=2000, seed=1):
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(reps))
    return meds[int(0.025 * reps)], meds[int(0.975 * reps) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--native-every", type=int, nargs="+", default=[4])
    ap.add_argument("--workload", nargs="+", default=["threads3", "single", "procs"])
    ap.add_argument("--watch-args", default="", help="extra `gpudiag watch` options, e.g. '--no-gil' as a control")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=ROOT)
    tmp = tempfile.mkdtemp(prefix="gpudiag-bench-")
    job = os.path.join(tmp, "job.py")
    with open(job, "w") as fh:
        fh.write(JOB)
    results = []
    for workload in args.workload:
        for ne in args.native_every:
            plain_argv = [sys.executable, job, workload, str(args.seconds)]
            watch_argv = [sys.executable, "-m", "gpudiag", "watch", "--no-gpu", "--interval", str(args.interval),
                          "--native-every", str(ne), "--json", os.path.join(tmp, "w.json"),
                          "-o", os.path.join(tmp, "w.html")] + args.watch_args.split() + ["--"] + plain_argv
            load0 = os.getloadavg()
            plain, watched = [], []
            stall_plain, stall_watched, pauses = [], [], []
            for i in range(args.pairs):
                order = [("plain", plain_argv), ("watched", watch_argv)]
                if i % 2:
                    order.reverse()
                for name, argv in order:
                    if name == "plain":
                        plain.append(_run(argv, env, stall_plain))
                    else:
                        watched.append(_run(argv, env, stall_watched))
                if workload == "stall" and stall_plain and stall_watched:
                    dumps = _native_dumps(os.path.join(tmp, "w.json"))
                    if dumps:
                        pauses.append((stall_watched[-1] - stall_plain[-1]) / dumps)
            load1 = os.getloadavg()
            with open(os.path.join(tmp, "w.json")) as fh:
                samp = json.load(fh)["probes"]["watch"]["data"]["sampling"]
            ratios = [w / p for p, w in zip(plain, watched)]
            lo, hi = _bootstrap(ratios)
            row = {"workload": workload, "interval_s": args.interval, "native_every": ne, "pairs": args.pairs,
                   "watch_args": args.watch_args,
                   "seconds_per_run": args.seconds, "plain_median": statistics.median(plain),
                   "watched_median": statistics.median(watched),
                   "overhead": 1 - statistics.median(ratios), "overhead_ci95": [1 - hi, 1 - lo],
                   "py_spy_dumps_last_run": samp["overhead"]["py_spy_dumps"],
                   "watch_cpu_cores_last_run": samp["overhead"]["cpu_cores"],
                   "loadavg_before": round(load0[0], 2), "loadavg_after": round(load1[0], 2)}
            if pauses:
                row["stall_ms_plain_median"] = statistics.median(stall_plain)
                row["stall_ms_watched_median"] = statistics.median(stall_watched)
                row["extra_stall_ms_per_native_dump_median"] = statistics.median(pauses)
                row["extra_stall_ms_per_native_dump_ci95"] = list(_bootstrap(pauses))
            row["verdict"] = "tie (no measurable overhead)" if row["overhead_ci95"][0] <= 0 <= row["overhead_ci95"][1] \
                else "measurable"
            results.append(row)
            print(f"{workload:9} interval {args.interval:g} s native every {ne} {args.watch_args}: plain {row['plain_median']:,.0f}/s, "
                  f"watched {row['watched_median']:,.0f}/s, overhead {row['overhead'] * 100:+.1f} % "
                  f"(95 % CI {row['overhead_ci95'][0] * 100:+.1f} .. {row['overhead_ci95'][1] * 100:+.1f} %, "
                  f"{args.pairs} pairs x {args.seconds:g} s) {row['verdict']}; watcher {row['watch_cpu_cores_last_run']} "
                  f"cores, {row['py_spy_dumps_last_run']} dumps; load {row['loadavg_before']} -> {row['loadavg_after']}",
                  flush=True)
            if pauses:
                print(f"{'':9} stalls: plain {row['stall_ms_plain_median']:.1f} ms, watched "
                      f"{row['stall_ms_watched_median']:.1f} ms per run: {row['extra_stall_ms_per_native_dump_median']:.2f} ms "
                      f"more per native dump (95 % CI {row['extra_stall_ms_per_native_dump_ci95'][0]:.2f} .. "
                      f"{row['extra_stall_ms_per_native_dump_ci95'][1]:.2f})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
